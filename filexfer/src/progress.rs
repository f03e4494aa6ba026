//! What people see on stderr while a transfer runs: a progress bar when stderr is a terminal,
//! a line at start and end otherwise, nothing but errors with `--quiet`.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::names;

/// Reports a transfer's progress to a person.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    /// The program name that prefixes every line (`send`, `receive`).
    program: &'static str,
    started: Mutex<Option<Instant>>,
}

#[derive(Debug)]
enum Mode {
    Silent,
    Lines,
    Bar(ProgressBar),
}

impl Progress {
    /// Chooses the mode for this process's stderr: silent when `quiet`, a bar on a terminal,
    /// plain lines otherwise (logs and pipes).
    pub fn for_stderr(program: &'static str, quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            Mode::Bar(ProgressBar::hidden())
        } else {
            Mode::Lines
        };
        Progress {
            mode,
            program,
            started: Mutex::new(None),
        }
    }

    /// Reports nothing (for tests and embedding).
    pub fn hidden() -> Progress {
        Progress {
            mode: Mode::Silent,
            program: "filexfer",
            started: Mutex::new(None),
        }
    }

    /// One line for people, unless silent.
    pub fn note(&self, message: impl Display) {
        match &self.mode {
            Mode::Silent => {}
            Mode::Lines => eprintln!("{}: {message}", self.program),
            Mode::Bar(bar) => bar.suspend(|| eprintln!("{}: {message}", self.program)),
        }
    }

    /// The data starts to flow.
    pub(crate) fn start(&self, verb: &str, name: &str, size: u64) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.note(format_args!(
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

    /// `bytes` more went through.
    pub(crate) fn advance(&self, bytes: u64) {
        if let Mode::Bar(bar) = &self.mode {
            bar.inc(bytes);
        }
    }

    /// The transfer is over (`what`, e.g. "sent"); prints a summary with the rate.
    pub(crate) fn finish(&self, what: impl Display, bytes: u64) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
        let elapsed = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed());
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-6) / 1e6;
        self.note(format_args!(
            "{what}: {} in {:.2} s ({rate:.0} MB/s)",
            HumanBytes(bytes),
            elapsed.as_secs_f64()
        ));
    }

    /// Clears the bar after a failure, so the error line stands alone.
    pub fn clear(&self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}
