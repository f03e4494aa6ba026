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

    /// Like [`Scratch::new`], on /dev/shm when there is one: for big files that the disk
    /// should not slow down (or wear).
    pub fn in_memory(test: &str) -> Scratch {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("filexfer-{test}-{}", std::process::id()));
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

/// The names in `dir` a user sees: everything but the hidden staging directory of an
/// interrupted transfer.
pub fn visible(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| !n.starts_with(".filexfer-"))
        .collect()
}

/// The size of the largest file anywhere under `dir` (0 if none).
pub fn largest_file(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => largest_file(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
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

/// A binary run with its stdin as a pipe this test writes to (or holds open), and its stdout
/// kept as raw bytes: for `send RELAY -` and `receive RELAY CODE -`. Killed on drop.
#[derive(Debug)]
pub struct Piped {
    child: std::process::Child,
    /// The write end of its stdin; dropping it gives the program EOF.
    pub stdin: Option<std::process::ChildStdin>,
    stdout: std::sync::mpsc::Receiver<Vec<u8>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Piped {
    pub fn spawn(name: &str, args: &[&str]) -> Piped {
        use std::io::Read;
        use std::process::{Command, Stdio};
        let mut child = Command::new(relay_test_support::bin(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let (tx, stdout) = std::sync::mpsc::channel();
        let mut out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        Piped {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Stdout up to the first newline (without it); waits at most [`DEADLINE`].
    pub fn first_line(&mut self) -> String {
        let end = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        while !got.contains(&b'\n') {
            let left = end.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(_) => panic!("no stdout line; stderr:\n{}", self.stderr()),
            }
        }
        let line = got.split(|&b| b == b'\n').next().unwrap_or_default();
        String::from_utf8_lossy(line).into_owned()
    }

    /// All stdout until the program closes it, as raw bytes.
    pub fn all_stdout(&mut self) -> Vec<u8> {
        let end = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return got,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("stdout still open; stderr:\n{}", self.stderr())
                }
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit (at most [`DEADLINE`]).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "did not exit; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The code both ends of an in-memory conversation use.
pub const CODE: &str = "7-abandon-ability-able";

pub fn code() -> filexfer::Code {
    filexfer::Code::parse(CODE).expect("code")
}

/// The two record streams of a scripted sender, a hand-written peer for tests.
pub type Records = (
    filexfer::record::RecordWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
    filexfer::record::RecordReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
);

/// Opens a conversation as a scripted sender: the code's handshake, then `hello` (encoded),
/// and the receiver's answer read into `reply`. `None` when the receiver went away.
pub async fn open_as_sender(
    mut stream: tokio::io::DuplexStream,
    hello: &[u8],
    reply: &mut filexfer::record::RecordBuf,
) -> Option<Records> {
    use filexfer::handshake::{Role, handshake};
    use filexfer::record::{Kind, RecordReader, RecordWriter};
    let keys = handshake(&mut stream, &code(), Role::Sender)
        .await
        .expect("handshake");
    let (rd, wr) = tokio::io::split(stream);
    let mut writer = RecordWriter::new(wr, keys.sealer);
    let mut reader = RecordReader::new(rd, keys.opener);
    writer.send(Kind::Hello, hello).await.ok()?;
    reader.read_record(reply).await.ok()?;
    Some((writer, reader))
}
