use super::*;
use crate::sink::CHECKPOINT;

async fn read_all(source: Source, resume: HashMap<u32, ResumeOffer>) -> Vec<Result<Chunk>> {
    let mut reader = spawn_reader(source, resume);
    let mut out = Vec::new();
    while let Some(item) = reader.filled.recv().await {
        let last = matches!(item, Err(_) | Ok(Chunk::Complete));
        if let Ok(Chunk::Data(buf) | Chunk::Whole(_, Some(buf), _)) = &item {
            let _ = reader.free.send(buf.clone());
        }
        out.push(item);
        if last {
            break;
        }
    }
    out
}

#[tokio::test]
async fn the_reader_hashes_exactly_the_announced_bytes_and_resumes() {
    // Several chunks, one that fits in a single message (`Chunk::Whole`), and checkpoints.
    for len in [DATA_CHUNK * 2 + 17, 3000, 2 * CHECKPOINT as usize + 17] {
        reads_exactly(len).await;
    }
}

async fn reads_exactly(len: usize) {
    let path = std::env::temp_dir().join(format!("filexfer-rd-{}-{len}", std::process::id()));
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).expect("write");
    let whole = <[u8; 32]>::from(blake3::hash(&data));
    let prefix = <[u8; 32]>::from(blake3::hash(&data[..1000]));
    for (offer, from) in [(None, 0), (Some(prefix), 1000), (Some([0; 32]), 0)] {
        let resume = offer
            .map(|prefix| {
                (
                    0,
                    ResumeOffer {
                        index: 0,
                        offset: 1000,
                        prefix,
                    },
                )
            })
            .into_iter()
            .collect();
        let chunks = read_all(Source::open(&path).expect("open"), resume).await;
        let mut got = Vec::new();
        let mut start = None;
        let mut end = None;
        let mut checkpoints = 0;
        for c in chunks {
            match c.expect("ok") {
                Chunk::Start(s) => start = Some(s),
                Chunk::Data(buf) => got.extend_from_slice(buf.payload()),
                Chunk::End(e) => end = Some(e),
                Chunk::Whole(s, buf, e) => {
                    start = Some(s);
                    if let Some(buf) = buf {
                        got.extend_from_slice(buf.payload());
                    }
                    end = Some(e);
                }
                Chunk::Checkpoint(c) => {
                    // After exactly the data it covers, with the hash of the whole prefix.
                    assert_eq!(c.offset, from + got.len() as u64);
                    let prefix = <[u8; 32]>::from(blake3::hash(&data[..c.offset as usize]));
                    assert!(c.prefix == prefix, "wrong checkpoint at {}", c.offset);
                    checkpoints += 1;
                }
                Chunk::Note(_) | Chunk::Complete => {}
            }
        }
        let expected = std::iter::successors(Some(FIRST_CHECKPOINT), |&c| Some(next_checkpoint(c)))
            .take_while(|&c| c < len as u64 - from)
            .count();
        assert_eq!(
            checkpoints, expected,
            "checkpoints of {len} bytes from {from}"
        );
        assert_eq!(start.expect("start").offset, from);
        assert!(got == data[from as usize..], "wrong bytes from {from}");
        let end = end.expect("end");
        assert_eq!((end.len, end.blake3), (data.len() as u64, whole));
    }
    std::fs::remove_file(&path).expect("cleanup");
}

#[tokio::test]
async fn a_file_that_changes_while_it_is_read_is_refused() {
    let path = std::env::temp_dir().join(format!("filexfer-rd-chg-{}", std::process::id()));
    std::fs::write(&path, vec![1u8; 1000]).expect("write");
    let source = Source::open(&path).expect("open");
    // Appended after listing: the size no longer matches what was announced.
    std::fs::write(&path, vec![2u8; 2000]).expect("rewrite");
    let chunks = read_all(source, HashMap::new()).await;
    let err = chunks
        .into_iter()
        .find_map(|c| c.err())
        .expect("a change must be an error");
    assert!(matches!(err, Error::Changed { .. }), "{err}");
    std::fs::remove_file(&path).expect("cleanup");
}
