//! Reads the hex examples out of `docs/protocol.md`.
//!
//! An example is a fenced block right after a `<!-- example: NAME -->` line. Each line of the
//! block holds hex bytes (two digits each, separated by spaces); `#` starts a comment. A line
//! may start with a direction such as `client>relay`: the block is then a byte trace, and the
//! bytes of each direction are kept apart.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One example block: its bytes, per direction (`""` for a block without directions).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Block {
    /// Per direction, every byte in the order written; `""` for lines without a direction.
    pub streams: BTreeMap<String, Vec<u8>>,
    /// Per line: its direction and bytes, in the order written.
    pub lines: Vec<(String, Vec<u8>)>,
}

impl Block {
    /// The bytes of a block without directions.
    pub fn bytes(&self) -> Vec<u8> {
        self.streams.get("").cloned().unwrap_or_default()
    }
}

pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")
}

/// Every example of the document, by name. Malformed blocks and duplicate names fail here.
pub fn examples() -> BTreeMap<String, Block> {
    let path = path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse(&text)
}

pub fn parse(text: &str) -> BTreeMap<String, Block> {
    let mut found = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- example:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let name = name.trim().to_string();
        let fence = lines.next().map(|(_, l)| l.trim());
        assert!(
            fence.is_some_and(|f| f.starts_with("```")),
            "line {}: example {name:?} is not followed by a fenced block",
            number + 1
        );
        let mut block = Block::default();
        loop {
            let (at, line) = lines
                .next()
                .unwrap_or_else(|| panic!("example {name:?}: the block never ends"));
            if line.trim().starts_with("```") {
                break;
            }
            let (direction, bytes) = parse_line(line)
                .unwrap_or_else(|e| panic!("line {} (example {name:?}): {e}", at + 1));
            if direction.is_empty() && bytes.is_empty() {
                continue;
            }
            block
                .streams
                .entry(direction.clone())
                .or_default()
                .extend(&bytes);
            block.lines.push((direction, bytes));
        }
        assert!(
            found.insert(name.clone(), block).is_none(),
            "example {name:?} appears twice"
        );
    }
    found
}

fn parse_line(line: &str) -> Result<(String, Vec<u8>), String> {
    let data = line.split('#').next().unwrap_or_default();
    let mut tokens = data.split_whitespace().peekable();
    let direction = match tokens.peek() {
        Some(t) if t.contains('>') => tokens.next().unwrap_or_default().to_string(),
        _ => String::new(),
    };
    let bytes = tokens
        .map(|t| {
            if t.len() != 2 {
                return Err(format!("{t:?} is not one byte in hex"));
            }
            u8::from_str_radix(t, 16).map_err(|_| format!("{t:?} is not hex"))
        })
        .collect::<Result<Vec<u8>, String>>()?;
    Ok((direction, bytes))
}

/// `bytes` as the document writes them: two hex digits per byte, 16 to a line.
pub fn hex_lines(bytes: &[u8], prefix: &str) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            format!("{prefix}{}", hex.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_parser_reads_blocks_directions_and_comments() {
    let text = "x\n<!-- example: a -->\n```text\n00 01  # two\n\nff\n```\n\
                <!-- example: t -->\n```\nc>r 52 45 # magic\nr>c 00\nc>r 02\n```\n";
    let got = parse(text);
    assert_eq!(got["a"].bytes(), vec![0, 1, 0xff]);
    assert_eq!(got["t"].streams["c>r"], vec![0x52, 0x45, 2]);
    assert_eq!(got["t"].streams["r>c"], vec![0]);
    assert!(std::panic::catch_unwind(|| parse("<!-- example: b -->\n```\n0g\n```\n")).is_err());
}
