use super::*;

fn file(path: &str, size: u64) -> Entry {
    Entry {
        kind: EntryKind::File,
        path: path.into(),
        size: Some(size),
        executable: false,
        mtime: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        path: path.into(),
        size: None,
        executable: true,
        mtime: None,
    }
}

#[test]
fn entries_round_trip_across_records() {
    let mut entries = vec![dir("photos")];
    for i in 0..5000 {
        entries.push(file(&format!("photos/img-{i:05}.jpg"), i));
    }
    entries.push(Entry {
        mtime: Some(UNIX_EPOCH - Duration::new(5, 1)),
        ..file("old", 1)
    });
    let m = Manifest::check(entries.clone()).expect("valid");
    let records = m.encode();
    assert!(records.len() > 1, "5000 entries fit one record?");
    let mut back = Vec::new();
    for r in &records {
        assert!(r.len() <= MANIFEST_PAYLOAD);
        Entry::decode_all(r, &mut back).expect("decode");
    }
    assert_eq!(back, entries);
    assert_eq!(
        ManifestEnd::decode(&m.end().encode()).expect("end"),
        m.end()
    );
}

#[test]
fn hostile_manifests_are_refused() {
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![file("../x", 1)], "escape"),
        (vec![file("/etc/passwd", 1)], "absolute"),
        (vec![file("a/b", 1)], "parent not listed"),
        (vec![file("a", 1), file("a/b", 1)], "parent is a file"),
        (vec![file("a", 1), file("a", 1)], "twice"),
        (vec![file("README", 1), file("readme", 1)], "case"),
        (vec![dir("d"), file("d/CON", 1)], "device"),
        (vec![dir("D"), file("d/x", 1)], "parent differs in case"),
        (vec![file("a", u64::MAX), file("b", 1)], "overflow"),
        (
            vec![
                Entry {
                    kind: EntryKind::Text,
                    ..file("t", 3)
                },
                file("b", 1),
            ],
            "text not alone",
        ),
        (vec![], "empty"),
    ];
    for (entries, why) in cases {
        assert!(Manifest::check(entries).is_err(), "{why}: accepted");
    }
}

#[test]
fn malformed_records_are_refused() {
    let mut good = Vec::new();
    file("a", 1).encode_into(&mut good);
    let mut out = Vec::new();
    assert!(Entry::decode_all(&good[..good.len() - 1], &mut out).is_err());
    let mut bad_kind = good.clone();
    bad_kind[0] = 9;
    assert!(Entry::decode_all(&bad_kind, &mut out).is_err());
    let mut not_utf8 = good.clone();
    *not_utf8.last_mut().expect("byte") = 0xff;
    assert!(matches!(
        Entry::decode_all(&not_utf8, &mut out),
        Err(Error::NameRefused(_))
    ));
}
