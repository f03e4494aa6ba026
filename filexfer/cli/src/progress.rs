//! What people see on stderr while a transfer runs: a progress bar when stderr is a terminal
//! (files done of total, bytes, rate, ETA), a line at start and end otherwise, nothing but
//! errors with `--quiet`.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use filexfer::names;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Which end of a transfer this program is: it picks the words on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `send`.
    Send,
    /// `receive`.
    Receive,
}

impl Side {
    /// The program name that prefixes every line.
    pub fn program(self) -> &'static str {
        match self {
            Side::Send => "send",
            Side::Receive => "receive",
        }
    }
}

/// Draws a transfer's [`filexfer::Progress`] on this process's stderr.
#[derive(Debug)]
pub struct StderrProgress {
    mode: Mode,
    side: Side,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When data began to flow.
    started: Option<Instant>,
    /// The first top-level name, for the summary line.
    name: String,
    files: u64,
    done: u64,
    /// Bytes that were already at the receiver (resumed).
    kept: u64,
}

#[derive(Debug)]
enum Mode {
    Silent,
    Lines,
    Bar(ProgressBar),
}

impl StderrProgress {
    /// Chooses the mode for this process's stderr: silent when `quiet`, a bar on a terminal,
    /// plain lines otherwise (logs and pipes).
    pub fn new(side: Side, quiet: bool) -> StderrProgress {
        let mode = if quiet {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            Mode::Bar(ProgressBar::hidden())
        } else {
            Mode::Lines
        };
        StderrProgress {
            mode,
            side,
            state: Mutex::new(State::default()),
        }
    }

    /// One line for people, unless silent; never torn by the bar.
    pub fn line(&self, message: impl Display) {
        let program = self.side.program();
        match &self.mode {
            Mode::Silent => {}
            Mode::Lines => eprintln!("{program}: {message}"),
            Mode::Bar(bar) => bar.suspend(|| eprintln!("{program}: {message}")),
        }
    }

    /// Removes the bar, so an error line printed next stands alone.
    pub fn clear(&self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `"a.txt"`, or `"photos" and 2 more` for several top-level names.
fn what(name: &str, files: u64, bytes: u64) -> String {
    if files == 1 {
        format!("{} ({})", names::quote(name), HumanBytes(bytes))
    } else {
        format!(
            "{} ({files} files, {})",
            names::quote(name.split('/').next().unwrap_or(name)),
            HumanBytes(bytes)
        )
    }
}

impl filexfer::Progress for StderrProgress {
    fn note(&self, message: &str) {
        self.line(message);
    }

    fn start(&self, name: &str, files: u64, bytes: u64) {
        {
            let mut st = self.state();
            st.started = Some(Instant::now());
            st.name = name.to_string();
            st.files = files;
        }
        let verb = match self.side {
            Side::Send => "sending",
            Side::Receive => "receiving",
        };
        self.line(format_args!("{verb} {}", what(name, files, bytes)));
        if let Mode::Bar(bar) = &self.mode {
            bar.set_length(bytes);
            bar.set_position(0);
            bar.set_message(format!("0/{files} files"));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn file(&self, path: &str, _size: Option<u64>, from: u64) {
        if from > 0 {
            self.state().kept += from;
            self.line(format_args!(
                "resuming {} after the {} already received",
                names::quote(path),
                HumanBytes(from)
            ));
            if let Mode::Bar(bar) = &self.mode {
                bar.inc(from);
                // The rate and ETA should reflect what crosses, not what was already there.
                bar.reset_eta();
            }
        }
    }

    fn advance(&self, bytes: u64) {
        if let Mode::Bar(bar) = &self.mode {
            bar.inc(bytes);
        }
    }

    fn file_done(&self) {
        let (done, files) = {
            let mut st = self.state();
            st.done += 1;
            (st.done, st.files)
        };
        if let Mode::Bar(bar) = &self.mode {
            bar.set_message(format!("{done}/{files} files"));
        }
    }

    fn finish(&self, bytes: u64) {
        self.clear();
        let (elapsed, name, files, kept) = {
            let st = self.state();
            (
                st.started.map_or(Duration::ZERO, |t| t.elapsed()),
                st.name.clone(),
                st.files,
                st.kept,
            )
        };
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-6) / 1e6;
        let whole = what(&name, files, bytes + kept);
        let what = match self.side {
            Side::Send => format!("sent and confirmed {whole}"),
            Side::Receive => format!("received {whole}"),
        };
        let resumed = if kept > 0 {
            format!(", {} of it already there", HumanBytes(kept))
        } else {
            String::new()
        };
        self.line(format_args!(
            "{what}: {} crossed in {:.2} s ({rate:.0} MB/s){resumed}",
            HumanBytes(bytes),
            elapsed.as_secs_f64()
        ));
    }

    fn failed(&self) {
        self.clear();
    }
}
