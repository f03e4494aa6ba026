//! What people see on stderr while a transfer runs: a progress bar when stderr is a terminal,
//! a line at start and end otherwise, nothing but errors with `--quiet`.

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
    /// Set by `start`: when data began to flow, and the file's name for the summary line.
    started: Mutex<Option<(Instant, String)>>,
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
            started: Mutex::new(None),
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
}

impl filexfer::Progress for StderrProgress {
    fn note(&self, message: &str) {
        self.line(message);
    }

    fn start(&self, name: &str, size: u64) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), name.to_string()));
        let verb = match self.side {
            Side::Send => "sending",
            Side::Receive => "receiving",
        };
        self.line(format_args!(
            "{verb} {} ({})",
            names::quote(name),
            HumanBytes(size)
        ));
        if let Mode::Bar(bar) = &self.mode {
            bar.set_length(size);
            bar.set_position(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn advance(&self, bytes: u64) {
        if let Mode::Bar(bar) = &self.mode {
            bar.inc(bytes);
        }
    }

    fn finish(&self, bytes: u64) {
        self.clear();
        let (elapsed, name) = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or((Duration::ZERO, String::new()), |(t, name)| {
                (t.elapsed(), name.clone())
            });
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-6) / 1e6;
        let what = match self.side {
            Side::Send => "sent and confirmed".to_string(),
            Side::Receive => format!("received {}", names::quote(&name)),
        };
        self.line(format_args!(
            "{what}: {} in {:.2} s ({rate:.0} MB/s)",
            HumanBytes(bytes),
            elapsed.as_secs_f64()
        ));
    }

    fn failed(&self) {
        self.clear();
    }
}
