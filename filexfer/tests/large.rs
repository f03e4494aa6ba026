//! A file past 4 GiB (32-bit lengths and offsets would wrap). Ignored by default: it writes
//! 4.5 GiB to the scratch directory. Run it with release binaries:
//!
//! ```text
//! cargo test --release -p filexfer --test large -- --ignored
//! ```

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use common::{Scratch, relay, start_send};
use relay_test_support::Proc;

const SIZE: u64 = (4 << 30) + (512 << 20) + 3;
/// Random marks at the start, across the 4 GiB boundary, and at the very end; the rest is a
/// hole (zeros) so the source costs no disk space.
const MARKS: [u64; 3] = [0, (4 << 30) - 100, SIZE - 4096];

#[test]
#[ignore = "writes 4.5 GiB; run with --ignored (release build recommended)"]
fn a_file_over_4_gib_arrives_intact() {
    let relay = relay();
    let dir = Scratch::new("large");
    let src = dir.join("big.img");
    let mut file = File::create(&src).expect("create");
    file.set_len(SIZE).expect("sparse");
    let mut marks = Vec::new();
    for at in MARKS {
        let mut block = vec![0u8; 4096];
        rand::fill(&mut block[..]);
        file.seek(SeekFrom::Start(at)).expect("seek");
        file.write_all(&block).expect("mark");
        marks.push((at, block));
    }
    drop(file);

    let (mut send, code) = start_send(&relay.host_port(), &dir.str("big.img"), &[]);
    let mut recv = Proc::spawn("receive", &[&relay.host_port(), &code, &dir.str("out")]);
    let deadline = Duration::from_secs(600);
    assert!(
        recv.wait_exit(deadline).success(),
        "receive failed:\n{}",
        recv.stderr()
    );
    assert!(
        send.wait_exit(deadline).success(),
        "send failed:\n{}",
        send.stderr()
    );

    let out = dir.join("out/big.img");
    assert_eq!(std::fs::metadata(&out).expect("received").len(), SIZE);
    let mut got = File::open(&out).expect("open");
    for (at, block) in marks {
        let mut back = vec![0u8; block.len()];
        got.seek(SeekFrom::Start(at)).expect("seek");
        got.read_exact(&mut back).expect("read mark");
        assert!(back == block, "bytes at offset {at} differ");
    }
}
