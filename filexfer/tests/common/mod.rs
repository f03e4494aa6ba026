//! Shared helpers for the end-to-end tests: scratch directories, files, and starting `send`
//! the way a user would (the code is the one line on its stdout).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relay_test_support::{DEADLINE, Proc, Relay};

/// A directory of its own for one test; removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("filexfer-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn str(&self, name: &str) -> String {
        self.join(name).to_str().expect("UTF-8 path").to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `len` random bytes to `path` and returns them.
pub fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::fill(&mut data[..]);
    std::fs::write(path, &data).expect("write test file");
    data
}

/// Starts `send RELAY FILE EXTRA...` and returns it with the code it printed.
pub fn start_send(relay: &str, file: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![relay, file];
    args.extend_from_slice(extra);
    let mut send = Proc::spawn("send", &args);
    let code = send.first_line();
    assert!(
        is_code_shaped(&code),
        "send printed {code:?} instead of a code; stderr:\n{}",
        send.stderr()
    );
    (send, code)
}

/// `NUMBER-word-word-word`.
pub fn is_code_shaped(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 4
        && !parts[0].is_empty()
        && parts[0].bytes().all(|b| b.is_ascii_digit())
        && parts[1..]
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Runs `receive` to completion and returns it (exited).
pub fn run_receive(args: &[&str]) -> (Proc, std::process::ExitStatus) {
    let mut recv = Proc::spawn("receive", args);
    let status = recv.wait_exit(DEADLINE);
    (recv, status)
}

/// The names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Waits for `program`'s error line containing `needle` (stderr is read by a thread, so it
/// can lag behind the exit) and returns it. The line must start with `program: `.
pub fn error_line(proc: &Proc, program: &str, needle: &str) -> String {
    let err = proc.wait_stderr(needle, DEADLINE);
    let line = err
        .lines()
        .find(|l| l.contains(needle))
        .expect("line with the needle")
        .to_string();
    assert!(
        line.starts_with(&format!("{program}: ")),
        "not an error line of {program}: {line}"
    );
    line
}

/// Polls `cond` every few milliseconds until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A relay on `[::1]:0`, for the IPv6 address form.
pub fn relay_v6() -> Option<(Proc, String)> {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return None;
    }
    let proc = Proc::spawn("relay", &["[::1]:0"]);
    let log = proc.wait_stderr("relay listening", DEADLINE);
    let addr = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("control="))
        .expect("control= in the relay's log")
        .to_string();
    Some((proc, addr))
}

/// Set (to anything) where every test must really run, as in CI: a test that would skip
/// fails instead.
pub const NO_SKIP: &str = "RELAY_TESTS_NO_SKIP";

/// Ends a test that cannot run on this machine: says so, with the reason, on the real stderr
/// (not through `eprintln!`, which the test harness swallows for a passing test), so a green
/// run never hides a test that did not run. Panics instead when [`NO_SKIP`] is set.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    if std::env::var_os(NO_SKIP).is_some() {
        panic!("{test} cannot run here ({reason}), and {NO_SKIP} is set");
    }
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {reason}");
}

/// A relay as `Relay::start` runs it.
pub fn relay() -> Relay {
    Relay::start(&[])
}
