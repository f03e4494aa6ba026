//! Helpers for end-to-end tests: run the real binaries as a user would, read what they print
//! with deadlines, and clean up on drop. Plain threads and std types, so sync and async tests can
//! both use it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod forwarder;
pub use forwarder::Forwarder;

/// Generous deadline for anything a test waits on; a wait that hits it fails the test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A loopback port that is free right now, drawn below the usual ephemeral range (32768 and up)
/// so that the outgoing connections of tests running alongside cannot be holding it by the time
/// it is used.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
    for attempt in 0u64..1000 {
        seed.write_u64(attempt);
        let port = 20_000 + (seed.finish() % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found in 20000-29999");
}

/// Sends `data`, half-closes, and reads until the far end closes.
pub fn exchange(addr: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.write_all(data)?;
    s.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back)
}

/// Like [`exchange`], for a visitor that should be reset: whether any step (connect, write,
/// half-close, read) reported the reset, and the bytes read. Linux reports a received reset to
/// exactly one call on the socket and a clean end to those after it, so every step counts.
pub fn exchange_reset(addr: &str, data: &[u8]) -> (bool, Vec<u8>) {
    let reset = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionReset;
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (reset(&e), Vec::new()),
    };
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    let mut was_reset = false;
    if let Err(e) = s.write_all(data) {
        was_reset |= reset(&e);
    }
    if let Err(e) = s.shutdown(Shutdown::Write) {
        was_reset |= reset(&e);
    }
    let mut back = Vec::new();
    if let Err(e) = s.read_to_end(&mut back) {
        assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "no end within {DEADLINE:?}"
        );
        was_reset |= reset(&e);
    }
    (was_reset, back)
}

/// Path of a workspace binary, freshly built.
///
/// `cargo test --workspace` builds a package's binaries only for that package's own tests, so
/// `relay-bin`'s tests could otherwise run a missing or stale `echoserver`. The first call in
/// each test process therefore runs `cargo build` for every binary (a no-op when up to date).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> (a test) or target/<profile>/<bin> (a bench tool) ->
    // target/<profile>/<name>
    let parent = exe.parent().expect("target directory");
    let dir = if parent.file_name().is_some_and(|d| d == "deps") {
        parent.parent().expect("target directory")
    } else {
        parent
    };
    BUILT.get_or_init(|| {
        let mut cargo = Command::new(env_or("CARGO", "cargo"));
        cargo.args([
            "build",
            "--quiet",
            "--workspace",
            "--exclude",
            "relay-benches",
            "--bins",
        ]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "building the workspace's binaries failed");
    });
    dir.join(name)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// A running binary. Killed when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stdout: Receiver<Vec<u8>>,
    stderr: Arc<Mutex<String>>,
    stderr_closed: Arc<AtomicBool>,
}

impl Proc {
    /// Starts `name` with `args`, stdin closed, stdout and stderr captured.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Self::spawn_with(name, args, &[])
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_with(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin(name));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let (tx, rx) = channel();
        let mut out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        let stderr_closed = Arc::new(AtomicBool::new(false));
        let closed = stderr_closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().expect("stderr log");
                s.push_str(&line);
                s.push('\n');
            }
            closed.store(true, Ordering::Release);
        });
        Proc {
            name: name.to_string(),
            child,
            stdout: rx,
            stderr,
            stderr_closed,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr log").clone()
    }

    /// Reads stdout until `n` newline-terminated lines arrived or the deadline passed; returns
    /// all stdout read so far.
    pub fn stdout_lines(&mut self, n: usize, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        let mut got = Vec::new();
        while got.iter().filter(|&&b| b == b'\n').count() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no {n} stdout lines within {deadline:?}; got {:?}; stderr:\n{}",
                    self.name,
                    String::from_utf8_lossy(&got),
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        String::from_utf8(got).expect("stdout is UTF-8")
    }

    /// The first stdout line, without its newline.
    pub fn first_line(&mut self) -> String {
        let out = self.stdout_lines(1, DEADLINE);
        out.lines().next().unwrap_or_default().to_string()
    }

    /// All stdout until the process closes it (normally: exits).
    pub fn rest_of_stdout(&mut self, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => got.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: stdout still open after {deadline:?}", self.name)
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// All of stderr, once the process has closed it (normally: exited). Use it to check what
    /// a process did *not* print.
    pub fn stderr_to_end(&self, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        while !self.stderr_closed.load(Ordering::Acquire) {
            assert!(
                Instant::now() < end,
                "{}: stderr still open after {deadline:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stderr()
    }

    /// Waits until stderr contains `needle`; returns the stderr so far.
    pub fn wait_stderr(&self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            let s = self.stderr();
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "{}: stderr never contained {needle:?} within {deadline:?}:\n{s}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit and for its stderr to be read to the end.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // So that `stderr()` is complete once this returns.
                self.stderr_to_end(end.saturating_duration_since(Instant::now()));
                return status;
            }
            assert!(
                Instant::now() < end,
                "{} did not exit within {deadline:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) through `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `relay` process listening on a port the system chose.
#[derive(Debug)]
pub struct Relay {
    /// The process.
    pub proc: Proc,
    /// Its control address.
    pub addr: SocketAddr,
}

impl Relay {
    /// Starts `relay 127.0.0.1:0 EXTRA...` and reads back the control port from its log.
    pub fn start(extra: &[&str]) -> Relay {
        Self::start_with(extra, &[])
    }

    /// Like [`Relay::start`], with extra environment variables (`RUST_LOG=debug` for the
    /// per-visitor lines).
    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Relay {
        Self::start_at("127.0.0.1:0", extra, env)
    }

    /// Starts `relay CONTROL EXTRA...`: a fixed control address, for a relay restarted on the
    /// port its clients know.
    pub fn start_at(control: &str, extra: &[&str], env: &[(&str, &str)]) -> Relay {
        let mut args = vec![control];
        args.extend_from_slice(extra);
        let proc = Proc::spawn_with("relay", &args, env);
        let log = proc.wait_stderr("relay listening", DEADLINE);
        let addr = log
            .split_whitespace()
            .find_map(|w| w.strip_prefix("control="))
            .expect("control= in the relay's log")
            .parse()
            .expect("control address");
        Relay { proc, addr }
    }

    /// The control port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT` of the control port.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }
}
