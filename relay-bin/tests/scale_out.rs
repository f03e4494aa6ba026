//! Several relays behind HAProxy, in network namespaces: runs `tests/scale/scale_out.sh` with
//! the binaries cargo built (see that script and docs/scaling.md for what it checks). Needs
//! root and iproute2; installs HAProxy with apt-get when it is missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_test_support::bin;

/// The script takes about 20 s here; this is its hard limit.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(240);

#[test]
fn three_relays_behind_haproxy_share_the_load_and_outlive_a_kill() {
    ensure_haproxy();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scale/scale_out.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_relay"))
        .env("ECHOSERVER_BIN", bin("echoserver"))
        .env("SEND_BIN", bin("send"))
        .env("RECEIVE_BIN", bin("receive"))
        .stdin(Stdio::null())
        .spawn()
        .expect("run tests/scale/scale_out.sh");
    let end = Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break status;
        }
        if Instant::now() > end {
            // TERM first: the script's trap removes its namespaces and stops what it started.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            panic!("scale_out.sh ran longer than {SCRIPT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "scale_out.sh failed ({status}); see its output above"
    );
}

/// HAProxy from Debian, installed as `.ci/run` does when it is missing.
fn ensure_haproxy() {
    let present = || {
        Command::new("haproxy")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return;
    }
    eprintln!("haproxy is missing; trying apt-get install -y haproxy");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "haproxy"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    assert!(
        present(),
        "haproxy is not installed and `apt-get install haproxy` failed: install the Debian package haproxy"
    );
}
