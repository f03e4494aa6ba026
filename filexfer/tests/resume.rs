//! Resume with the real binaries: a receiver killed with `kill -9` keeps what it verified, and
//! the same file sent again with a new code into the same OUTDIR moves only the missing bytes
//! (counted by a forwarder this test owns between `receive` and the relay). A file that
//! changed, or a partial copy that was altered, starts over and says so.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Scratch, largest_file, relay, start_send, visible, wait_until};
use relay_test_support::{DEADLINE, Proc, Relay};

const MIB: u64 = 1024 * 1024;

/// A TCP forwarder to the relay that counts the bytes flowing from the relay to its clients.
struct Forwarder {
    addr: String,
    down: Arc<AtomicU64>,
}

impl Forwarder {
    fn start(relay: &Relay) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let down = Arc::new(AtomicU64::new(0));
        let (target, count) = (relay.addr, down.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let (c2, u2) = (
                    client.try_clone().expect("clone"),
                    upstream.try_clone().expect("clone"),
                );
                let count = count.clone();
                std::thread::spawn(move || pipe(u2, c2, Some(count)));
                std::thread::spawn(move || pipe(client, upstream, None));
            }
        });
        Forwarder { addr, down }
    }

    fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some(c) = &count {
                    c.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// `size` bytes no two MiB of which are alike (one random block, each copy stamped with its
/// number: random data at debug-build speed would dominate the test), written to `path`.
fn make_source(path: &Path, size: u64) {
    let mut f = std::fs::File::create(path).expect("create");
    let mut block = vec![0u8; MIB as usize];
    rand::fill(&mut block[..]);
    for i in 0..size / MIB {
        block[..8].copy_from_slice(&i.to_be_bytes());
        f.write_all(&block).expect("write");
    }
}

/// The partial copy inside the hidden staging directory.
fn partial(out: &Path, name: &str) -> PathBuf {
    let staging = std::fs::read_dir(out)
        .expect("out")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(".filexfer-"))
        .expect("a staging directory");
    staging.path().join("data").join(name)
}

/// Sends `src` and kills the receiver with SIGKILL once more than half of it arrived; the
/// sender fails, no final name exists, the partial copy is kept.
fn interrupted(relay: &Relay, src: &Path, out: &Path) {
    let size = std::fs::metadata(src).expect("src").len();
    let (mut send, code) = start_send(&relay.host_port(), src.to_str().expect("path"), &[]);
    let mut recv = Proc::spawn(
        "receive",
        &[&relay.host_port(), &code, out.to_str().expect("path")],
    );
    // Past half by one checkpoint interval: a kill -9 loses at most that much.
    wait_until("half of the file arriving", DEADLINE * 3, || {
        largest_file(out) > size / 2 + 16 * MIB
    });
    recv.kill();
    assert!(!send.wait_exit(DEADLINE).success(), "send succeeded");
    assert_eq!(
        visible(out),
        Vec::<String>::new(),
        "a final name after kill -9"
    );
}

/// Sends `src` again through a counting forwarder into `out`; returns the bytes that crossed
/// to the receiver and its stderr.
fn again(relay: &Relay, src: &Path, out: &Path) -> (u64, String) {
    let fwd = Forwarder::start(relay);
    let (mut send, code) = start_send(&relay.host_port(), src.to_str().expect("path"), &[]);
    let mut recv = Proc::spawn("receive", &[&fwd.addr, &code, out.to_str().expect("path")]);
    assert!(recv.wait_exit(DEADLINE * 3).success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    let name = src
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(common::entries(out), [name.as_str()], "staging left behind");
    assert!(
        files_equal(src, &out.join(&name)),
        "the result differs from the source"
    );
    (fwd.bytes_down(), recv.stderr())
}

fn files_equal(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).expect("a"),
        std::fs::File::open(b).expect("b"),
    );
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let na = fa.read(&mut ba).expect("read a");
        let nb = fb.read(&mut bb).expect("read b");
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

/// A transfer of a `size`-byte `big.bin` into `out`, interrupted past half by `kill -9`.
struct Interrupted {
    relay: Relay,
    _dir: Scratch,
    src: PathBuf,
    out: PathBuf,
    size: u64,
}

impl Interrupted {
    fn new(name: &str, size: u64) -> Interrupted {
        let relay = relay();
        let dir = Scratch::in_memory(name);
        let src = dir.join("big.bin");
        make_source(&src, size);
        let out = dir.join("out");
        interrupted(&relay, &src, &out);
        Interrupted {
            relay,
            _dir: dir,
            src,
            out,
            size,
        }
    }

    /// Sends the file again; returns the bytes that crossed and the receiver's stderr.
    fn again(&self) -> (u64, String) {
        again(&self.relay, &self.src, &self.out)
    }

    /// Sends the file again and checks that the receiver said `why` and took the whole file.
    fn again_starts_over(&self, why: &str) {
        let (crossed, stderr) = self.again();
        assert!(stderr.contains(why), "{stderr}");
        assert!(
            crossed >= self.size,
            "only {crossed} bytes crossed: not started over"
        );
    }

    /// Opens `path` (the source, or the kept partial copy) for writing.
    fn open(path: &Path) -> std::fs::File {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open")
    }
}

#[test]
fn a_receiver_killed_halfway_resumes_with_only_the_missing_half() {
    let t = Interrupted::new("resume", 512 * MIB);
    let size = t.size;
    let kept = std::fs::metadata(partial(&t.out, "big.bin"))
        .expect("partial")
        .len();
    assert!(kept > size / 2, "only {kept} bytes kept");

    let (crossed, stderr) = t.again();
    assert!(
        stderr.contains("resuming \"big.bin\" after the"),
        "{stderr}"
    );
    // The handshake, the manifest and record framing (21 bytes per 256 KiB) on top of the
    // missing half, and nothing more.
    assert!(
        crossed <= size / 2 + MIB,
        "{crossed} bytes crossed for a {size}-byte file of which more than half was kept"
    );
}

#[test]
fn a_file_changed_between_the_transfers_starts_over() {
    let t = Interrupted::new("resume-changed", 128 * MIB);
    // A new first megabyte: different content, size and modification time.
    let mut f = Interrupted::open(&t.src);
    f.write_all(&vec![7u8; MIB as usize]).expect("rewrite");
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .expect("mtime");
    drop(f);
    t.again_starts_over("\"big.bin\" changed since the interrupted transfer; starting it over");
}

#[test]
fn a_changed_file_with_its_old_time_is_caught_by_the_sender() {
    let t = Interrupted::new("resume-sametime", 128 * MIB);
    let mtime = std::fs::metadata(&t.src).expect("m").modified().expect("t");
    // Same size, same modification time, different bytes: only the prefix hash can tell.
    let mut f = Interrupted::open(&t.src);
    f.seek(SeekFrom::Start(1000)).expect("seek");
    f.write_all(b"different").expect("rewrite");
    f.set_modified(mtime).expect("restore mtime");
    drop(f);
    t.again_starts_over("differs from the partial copy kept here; starting it over");
}

#[test]
fn an_altered_partial_copy_is_detected_and_started_over() {
    let t = Interrupted::new("resume-tampered", 128 * MIB);
    let mut f = Interrupted::open(&partial(&t.out, "big.bin"));
    f.seek(SeekFrom::Start(4096)).expect("seek");
    f.write_all(b"tampered").expect("tamper");
    drop(f);
    t.again_starts_over("the partial copy of \"big.bin\" kept here does not match");
}
