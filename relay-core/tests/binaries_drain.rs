//! The real binaries given SIGTERM while a visitor is mid-transfer: the visitor gets every
//! byte and then a clean end of stream (never a reset), 20 times out of 20.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

use relay_test_support::{DEADLINE, Proc, Relay};

const HALF: usize = 1024 * 1024;
const TRIALS: usize = 20;

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed + i / 253) as u8).collect()
}

/// One visitor echoed 2 MiB by `client` (whose first stdout line is its public address): the
/// first MiB before SIGTERM, the second after it, then a half-close. Returns the exit status.
fn echo_across_sigterm(mut client: Proc, trial: usize) {
    let public = client.first_line();
    let mut visitor = TcpStream::connect(&public).expect("connect");
    visitor.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let data = payload(2 * HALF, trial);
    let first = data[..HALF].to_vec();
    let mut writer = visitor.try_clone().expect("clone");
    let sending = thread::spawn(move || writer.write_all(&first));
    let mut back = vec![0u8; HALF];
    visitor.read_exact(&mut back).expect("first half echoed");
    sending.join().expect("writer").expect("first half sent");

    client.signal("TERM");
    // The client has stopped taking visitors and waits for this one.
    client.wait_stderr("waiting for visitors to finish", DEADLINE);
    let second = data[HALF..].to_vec();
    let mut writer = visitor.try_clone().expect("clone");
    let sending = thread::spawn(move || {
        writer.write_all(&second)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut rest = Vec::new();
    visitor
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("trial {trial}: {e} after {} bytes", HALF + rest.len()));
    sending.join().expect("writer").expect("second half sent");
    back.extend_from_slice(&rest);
    assert_eq!(back.len(), data.len(), "trial {trial}");
    assert!(back == data, "trial {trial}: echo differs");
    drop(visitor);
    let status = client.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "trial {trial}: {status}; {}",
        client.stderr()
    );
}

#[test]
fn echoserver_at_sigterm_finishes_the_echo_in_flight_with_a_clean_end() {
    let relay = Relay::start(&[]);
    let port = relay.port().to_string();
    for trial in 0..TRIALS {
        let client = Proc::spawn("echoserver", &["127.0.0.1", &port]);
        echo_across_sigterm(client, trial);
    }
}

#[test]
fn expose_at_sigterm_finishes_the_transfer_in_flight_with_a_clean_end() {
    // A plain echo server as the local service.
    let local = TcpListener::bind("127.0.0.1:0").expect("bind");
    let local_port = local.local_addr().expect("addr").port().to_string();
    thread::spawn(move || {
        for conn in local.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut out = conn.try_clone().expect("clone");
                let _ = std::io::copy(&mut conn, &mut out);
                let _ = out.shutdown(Shutdown::Write);
            });
        }
    });
    let relay = Relay::start(&[]);
    let port = relay.port().to_string();
    for trial in 0..TRIALS {
        let client = Proc::spawn("expose", &["127.0.0.1", &port, &local_port]);
        echo_across_sigterm(client, trial);
    }
}
