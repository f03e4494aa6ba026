//! Directories and many files with the real binaries: structure, empty directories, the
//! executable bit and modification times arrive; links are skipped with a warning; existing
//! names are refused unless `--force`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Scratch, entries, error_line, random_file, relay, run_receive, start_send};
use relay_test_support::DEADLINE;

/// What a tree looks like, entry by entry: path, kind, mode bits, mtime, contents.
fn snapshot(root: &Path) -> Vec<(String, String, u32, SystemTime, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("meta");
            let rel = path
                .strip_prefix(root)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            let mtime = meta.modified().expect("mtime");
            if meta.is_dir() {
                stack.push(path.clone());
                out.push((rel, "dir".into(), 0, mtime, Vec::new()));
            } else if meta.is_file() {
                let mode = meta.permissions().mode() & 0o777;
                out.push((
                    rel,
                    "file".into(),
                    mode,
                    mtime,
                    std::fs::read(&path).expect("read"),
                ));
            } else {
                out.push((rel, "other".into(), 0, mtime, Vec::new()));
            }
        }
    }
    out.sort();
    out
}

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::open(path)
        .expect("open")
        .set_times(std::fs::FileTimes::new().set_modified(t))
        .expect("set times");
}

/// nested/a/b/deep.txt, empty/, run.sh (executable), plain.txt, link (symlink, skipped),
/// many/ with `count` small files; every file and directory with a distinct old mtime.
fn make_tree(root: &Path, count: usize) {
    std::fs::create_dir_all(root.join("nested/a/b")).expect("nested");
    std::fs::create_dir_all(root.join("empty")).expect("empty");
    std::fs::create_dir_all(root.join("many")).expect("many");
    random_file(&root.join("nested/a/b/deep.txt"), 3000);
    random_file(&root.join("plain.txt"), 100);
    random_file(&root.join("run.sh"), 50);
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(
        root.join("plain.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("/etc/passwd", root.join("link")).expect("link");
    for i in 0..count {
        random_file(&root.join(format!("many/f{i:04}.dat")), (i * 37) % 4096);
    }
    // Files first, then directories deepest first, so filling them does not move their times.
    let base = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    let mut n = 0u64;
    for f in ["nested/a/b/deep.txt", "plain.txt", "run.sh"] {
        n += 1;
        set_mtime(&root.join(f), base + Duration::from_secs(n * 1000));
    }
    for i in 0..count {
        set_mtime(
            &root.join(format!("many/f{i:04}.dat")),
            base + Duration::from_millis(i as u64 * 7),
        );
    }
    for d in ["nested/a/b", "nested/a", "nested", "empty", "many", ""] {
        n += 1;
        set_mtime(&root.join(d), base + Duration::from_secs(n * 1000));
    }
}

#[test]
fn a_tree_of_a_thousand_files_arrives_identical() {
    let relay = relay();
    let dir = Scratch::new("tree");
    let tree = dir.join("photos");
    make_tree(&tree, 1000);
    let (mut send, code) = start_send(&relay.host_port(), &dir.str("photos"), &[]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out")]);
    assert!(status.success(), "receive failed:\n{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert_eq!(
        send.rest_of_stdout(DEADLINE),
        "",
        "more than the code on stdout"
    );
    let warned = send.stderr();
    assert!(
        warned.contains("skipping") && warned.contains("photos/link: it is a symbolic link"),
        "{warned}"
    );

    assert_eq!(entries(&dir.join("out")), ["photos"]);
    let mut want = snapshot(&tree);
    want.retain(|(p, ..)| p != "link");
    let got = snapshot(&dir.join("out/photos"));
    assert_eq!(got.len(), want.len(), "different entries");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (&g.0, &g.1, g.2),
            (&w.0, &w.1, w.2),
            "kind or mode of {}",
            w.0
        );
        assert_eq!(g.3, w.3, "mtime of {}", w.0);
        assert!(g.4 == w.4, "contents of {}", w.0);
    }
    // The tree root's own time too.
    assert_eq!(
        std::fs::metadata(dir.join("out/photos"))
            .expect("root")
            .modified()
            .expect("t"),
        std::fs::metadata(&tree)
            .expect("root")
            .modified()
            .expect("t")
    );
    recv.wait_stderr("received \"photos\" (1003 files", DEADLINE);
}

#[test]
fn several_paths_arrive_side_by_side_and_existing_names_are_named() {
    let relay = relay();
    let dir = Scratch::new("several");
    make_tree(&dir.join("docs"), 3);
    let one = random_file(&dir.join("one.bin"), 70_000);
    let args = [dir.str("one.bin"), dir.str("docs")];
    let (mut send, code) = start_send(&relay.host_port(), &args[0], &[&args[1]]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out")]);
    assert!(status.success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert_eq!(entries(&dir.join("out")), ["docs", "one.bin"]);
    assert!(std::fs::read(dir.join("out/one.bin")).expect("one") == one);

    // Again into the same OUTDIR: refused, naming the name, the code still used up cleanly.
    let (mut send, code) = start_send(&relay.host_port(), &args[1], &[]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out")]);
    assert!(!status.success());
    let line = error_line(&recv, "receive", "already exists");
    assert!(
        line.contains("out/docs already exists; not overwriting it"),
        "{line}"
    );
    assert!(!send.wait_exit(DEADLINE).success());
    error_line(&send, "send", "already has a file of that name");
    assert_eq!(
        entries(&dir.join("out")),
        ["docs", "one.bin"],
        "something left"
    );

    // With --force the tree is merged: changed files replaced, others kept.
    std::fs::write(dir.join("docs/plain.txt"), b"changed").expect("change");
    std::fs::write(dir.join("out/docs/mine.txt"), b"mine").expect("own file");
    let (mut send, code) = start_send(&relay.host_port(), &args[1], &[]);
    let (recv, status) = run_receive(&[&relay.host_port(), &code, &dir.str("out"), "--force"]);
    assert!(status.success(), "{}", recv.stderr());
    assert!(send.wait_exit(DEADLINE).success(), "{}", send.stderr());
    assert_eq!(
        std::fs::read(dir.join("out/docs/plain.txt")).expect("r"),
        b"changed"
    );
    assert_eq!(
        std::fs::read(dir.join("out/docs/mine.txt")).expect("r"),
        b"mine"
    );
    assert_eq!(
        entries(&dir.join("out")),
        ["docs", "one.bin"],
        "staging left"
    );
}
