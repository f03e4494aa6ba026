use super::*;
use crate::manifest::Entry;

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("filexfer-stg-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("dir");
    dir
}

fn one_file(size: u64) -> Manifest {
    Manifest::check(vec![Entry {
        kind: EntryKind::File,
        path: "a.bin".into(),
        size: Some(size),
        executable: false,
        mtime: None,
    }])
    .expect("manifest")
}

#[test]
fn a_second_receive_of_the_same_names_is_refused_while_the_first_runs() {
    let dir = scratch("busy");
    let m = one_file(10);
    let first = Staging::open(&dir, &m, false).expect("first");
    let err = Staging::open(&dir, &m, false).expect_err("second");
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    drop(first);
    // Nothing verified: the staging directory went with the first receive.
    assert_eq!(fs::read_dir(&dir).expect("dir").count(), 0);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn only_whole_journal_lines_that_still_hash_right_are_offered() {
    let dir = scratch("journal");
    let m = one_file(10);
    let data = b"0123456789";
    let mut staging = Staging::open(&dir, &m, false).expect("open");
    fs::write(staging.path_of("a.bin").expect("path"), &data[..6]).expect("partial");
    let prefix = |n: usize| -> [u8; 32] { blake3::hash(&data[..n]).into() };
    staging
        .checkpoint("a.bin", 4, 10, None, &prefix(4))
        .expect("cp");
    drop(staging);
    // A torn last line (a crash mid-write) is ignored; the one before it counts.
    let mut journal = OpenOptions::new()
        .append(true)
        .open(dir.join(staging_name(&m)).join("journal"))
        .expect("journal");
    journal.write_all(b"6 10 - abc").expect("torn");
    drop(journal);
    let staging = Staging::open(&dir, &m, false).expect("again");
    let plan = staging.plan_resume(&m);
    assert_eq!(plan.offers.len(), 1, "{:?}", plan.notes);
    assert_eq!(
        (plan.offers[0].offset, plan.offers[0].prefix),
        (4, prefix(4))
    );
    // Altered on disk: no longer offered, and said so.
    fs::write(staging.path_of("a.bin").expect("path"), b"XX2345").expect("tamper");
    let plan = staging.plan_resume(&m);
    assert!(plan.offers.is_empty());
    assert!(plan.notes[0].contains("does not match"), "{:?}", plan.notes);
    // Another size: a changed file.
    let plan = staging.plan_resume(&one_file(11));
    assert!(plan.notes[0].contains("changed since"), "{:?}", plan.notes);
    staging.discard();
    fs::remove_dir_all(&dir).expect("cleanup");
}
