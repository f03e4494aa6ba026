//! `docs/protocol.md` cannot drift from the code: every hex example in it is checked against
//! the real codec, and its tunnel trace against a real relay and client.
//!
//! To print every block as the document must hold it (after a deliberate protocol change):
//! `PROTOCOL_DOC_PRINT=1 cargo test -p relay-core --test protocol_doc -- --nocapture print`

#[path = "../common/mod.rs"]
mod common;
mod doc;
mod examples;
mod live;
mod traces;

use std::collections::BTreeMap;

use doc::{Block, hex_lines};

/// The block the document must hold for a trace.
fn trace_block(steps: &[traces::Step]) -> String {
    let width = steps.iter().map(|(who, _, _)| who.len()).max().unwrap_or(0);
    let mut out = Vec::new();
    for (who, what, bytes) in steps {
        let prefix = format!("{who:<width$} ");
        let mut lines = hex_lines(bytes, &prefix);
        lines.push_str(&format!("  # {what}"));
        out.push(lines);
    }
    out.join("\n")
}

fn expected() -> BTreeMap<String, (Block, String)> {
    let mut all = BTreeMap::new();
    for (name, bytes) in examples::messages() {
        let text = hex_lines(&bytes, "");
        let block = doc::parse(&format!("<!-- example: x -->\n```\n{text}\n```\n"))
            .remove("x")
            .expect("parsed");
        all.insert(name.to_string(), (block, text));
    }
    for (name, steps) in traces::all() {
        let text = trace_block(&steps);
        let block = doc::parse(&format!("<!-- example: x -->\n```\n{text}\n```\n"))
            .remove("x")
            .expect("parsed");
        all.insert(name.to_string(), (block, text));
    }
    all
}

#[test]
fn every_hex_example_in_the_document_is_what_the_code_writes() {
    let documented = doc::examples();
    let expected = expected();
    let mut wrong = Vec::new();
    for (name, (block, text)) in &expected {
        match documented.get(name) {
            None => wrong.push(format!(
                "example {name:?} is missing; it should read:\n{text}"
            )),
            Some(doc) if doc.streams != block.streams => wrong.push(format!(
                "example {name:?} differs from the code; it should read:\n{text}"
            )),
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !expected.contains_key(*n)) {
        wrong.push(format!("example {name:?} is not checked by this test"));
    }
    assert!(
        wrong.is_empty(),
        "{} ({} problems):\n\n{}",
        doc::path().display(),
        wrong.len(),
        wrong.join("\n\n")
    );
}

/// Not a check: prints every block for pasting, when asked to.
#[test]
fn print() {
    if std::env::var_os("PROTOCOL_DOC_PRINT").is_none() {
        return;
    }
    for (name, (_, text)) in expected() {
        println!("<!-- example: {name} -->\n```text\n{text}\n```\n");
    }
}
