//! Tokens with the real binaries: clients without the right token exit 1 saying
//! authentication failed; `relay --tokens FILE` reloads on SIGHUP, ending only the sessions of
//! removed tokens; secrets never show in logs or `--help`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;

use relay_test_support::{DEADLINE, Proc, Relay};

const SECRET: &str = "relay-secret-0123456789";
const ALICE: &str = "alice-secret-0123456789";
const BOB: &str = "bob-secret-0123456789abc";

fn exchange(addr: &str, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.write_all(data).expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read");
    back
}

fn echoserver(relay: &Relay, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let port = relay.port().to_string();
    let mut args = vec!["127.0.0.1", port.as_str(), "--no-reconnect"];
    args.extend_from_slice(extra);
    Proc::spawn_with("echoserver", &args, env)
}

/// Runs a client that must be refused: exit status 1, one line on stderr saying so.
fn assert_refused(mut client: Proc, program: &str) {
    let status = client.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", client.stderr());
    let stderr = client.stderr();
    let line = stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(line.starts_with(&format!("{program}: ")), "{line}");
    assert!(line.contains("authentication failed"), "{line}");
}

#[test]
fn a_tunnel_client_needs_the_right_token() {
    let relay = Relay::start_with(&[], &[("RELAY_TOKEN", SECRET)]);
    assert_refused(echoserver(&relay, &[], &[]), "echoserver");
    let wrong = "wrong-secret-0123456789";
    assert_refused(echoserver(&relay, &["--token", wrong], &[]), "echoserver");
    assert_refused(
        Proc::spawn(
            "expose",
            &[
                "127.0.0.1",
                &relay.port().to_string(),
                "9",
                "--token",
                wrong,
            ],
        ),
        "expose",
    );

    let mut good = echoserver(&relay, &[], &[("RELAY_TOKEN", SECRET)]);
    let addr = good.first_line();
    assert_eq!(exchange(&addr, b"through"), b"through");
    let mut good = echoserver(&relay, &["--token", SECRET], &[]);
    let addr = good.first_line();
    assert_eq!(exchange(&addr, b"again"), b"again");
    let log = relay.proc.stderr();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(!log.contains(SECRET) && !log.contains(wrong), "{log}");
}

/// A tokens file in a directory of its own, readable by its owner only.
struct TokensFile(PathBuf);

impl TokensFile {
    fn new(test: &str, text: &str) -> TokensFile {
        let dir = std::env::temp_dir().join(format!("relay-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = TokensFile(dir.join("tokens.toml"));
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        // Written beside and renamed, so the relay never reads half a file.
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::rename(&tmp, &self.0).expect("rename");
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }
}

impl Drop for TokensFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn token_entry(name: &str, secret: &str) -> String {
    format!("[[token]]\nname = \"{name}\"\nsecret = \"{secret}\"\n\n")
}

#[test]
fn sighup_ends_the_sessions_of_removed_tokens_and_only_those() {
    let file = TokensFile::new(
        "sighup",
        &(token_entry("alice", ALICE) + &token_entry("bob", BOB)),
    );
    let relay = Relay::start(&["--tokens", file.path()]);
    assert!(
        !relay.proc.stderr().contains("readable by other users"),
        "{}",
        relay.proc.stderr()
    );
    let mut alice = echoserver(&relay, &[], &[("RELAY_TOKEN", ALICE)]);
    let alice_addr = alice.first_line();
    // Bob's client would reconnect after an ordinary loss: it must not need to.
    let port = relay.port().to_string();
    let mut bob = Proc::spawn("echoserver", &["127.0.0.1", &port, "--token", BOB]);
    let bob_addr = bob.first_line();
    assert_eq!(exchange(&alice_addr, b"a"), b"a");

    // A file that does not parse keeps the tokens in force, and the log says why.
    file.write(&(token_entry("bob", BOB) + "bogus_key = 1\n"));
    relay.proc.signal("HUP");
    relay
        .proc
        .wait_stderr("keeping the tokens in force", DEADLINE);
    let log = relay.proc.stderr();
    assert!(log.contains("bogus_key"), "{log}");
    assert_eq!(exchange(&alice_addr, b"still"), b"still");

    // Alice's token removed: her session ends with a clear reason; Bob's goes on.
    file.write(&token_entry("bob", BOB));
    relay.proc.signal("HUP");
    let status = alice.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1));
    let said = alice.stderr();
    assert!(said.contains("no longer accepts token 'alice'"), "{said}");
    assert_eq!(exchange(&bob_addr, b"bob goes on"), b"bob goes on");
    relay.proc.wait_stderr("tokens reloaded", DEADLINE);
    assert_refused(echoserver(&relay, &["--token", ALICE], &[]), "echoserver");
    let log = relay.proc.stderr();
    assert!(!log.contains(ALICE) && !log.contains(BOB), "{log}");
    bob.kill();
}

#[test]
fn a_bad_tokens_file_is_a_clear_error_that_never_shows_a_secret() {
    let file = TokensFile::new(
        "badfile",
        &format!("{}max_tunnel = 3\n", token_entry("ci", SECRET)),
    );
    let mut relay = Proc::spawn("relay", &["127.0.0.1:0", "--tokens", file.path()]);
    let status = relay.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1));
    let err = relay.stderr();
    assert!(err.contains("unknown field `max_tunnel`"), "{err}");
    assert!(err.contains("line 5"), "{err}");
    assert!(!err.contains(SECRET), "{err}");

    // Readable by others: it runs, with a warning.
    file.write(&token_entry("ci", SECRET));
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(&file.0, open).expect("chmod");
    }
    let relay = Relay::start(&["--tokens", file.path()]);
    let log = relay.proc.wait_stderr("readable by other users", DEADLINE);
    assert!(!log.contains(SECRET), "{log}");

    // `--help` never shows the secret from the environment.
    let mut help = Proc::spawn_with("relay", &["--help"], &[("RELAY_TOKEN", SECRET)]);
    let out = help.rest_of_stdout(DEADLINE);
    assert!(out.contains("--tokens"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
}

#[test]
fn an_open_relay_on_a_public_address_warns_at_start() {
    let warning = "no token set";
    // The whole start-up log: stopped with SIGTERM, the relay's last line comes after it.
    let start_up_log = |mut relay: Proc| {
        relay.wait_stderr("relay listening", DEADLINE);
        relay.signal("TERM");
        relay.wait_exit(DEADLINE);
        relay.stderr()
    };
    let log = start_up_log(Proc::spawn("relay", &["0"]));
    assert!(log.contains(warning), "all interfaces, no token: {log}");
    let log = start_up_log(Proc::spawn_with(
        "relay",
        &["0"],
        &[("RELAY_TOKEN", SECRET)],
    ));
    assert!(!log.contains(warning), "with a token: {log}");
    let log = start_up_log(Proc::spawn("relay", &["127.0.0.1:0"]));
    assert!(!log.contains(warning), "loopback only: {log}");
}
