//! Transfer codes: `<nameplate>-<word>-<word>-<word>`.
//!
//! The nameplate is a short number the relay assigns to route the receiver to the offer; it is
//! public. The words are chosen here, by `send`, with a CSPRNG from the BIP39 English list
//! (2048 words, every word identified by its first four letters), and never reach the relay:
//! they only enter the PAKE, which turns the whole code into a key. Three words give 33 bits;
//! since a nameplate allows exactly one pairing attempt, an attacker gets one online guess.

use std::fmt;

use bip39::Language;
use rand::Rng;

use relay_core::protocol::nameplate;

use crate::error::{Error, Result};

/// How many secret words a code has.
pub const WORDS_PER_CODE: usize = 3;

/// The word list codes are drawn from.
pub fn word_list() -> &'static [&'static str; 2048] {
    Language::English.word_list()
}

/// A transfer code. `Debug` hides the words, so a code never lands in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    nameplate: String,
    words: [u16; WORDS_PER_CODE],
}

impl Code {
    /// Makes a fresh code for the offer registered under `nameplate`.
    pub fn generate(nameplate: &str) -> Result<Code> {
        check_nameplate(nameplate)
            .map_err(|e| Error::Protocol(format!("the relay assigned a strange number: {e}")))?;
        let mut rng = rand::rng();
        let words = std::array::from_fn(|_| rng.random_range(0..word_list().len() as u16));
        Ok(Code {
            nameplate: nameplate.to_string(),
            words,
        })
    }

    /// Parses a code as a user typed it: case does not matter, and words may be separated by
    /// `-` or spaces. Unknown words are reported before anything touches the network, so a typo
    /// does not use up the nameplate.
    pub fn parse(text: &str) -> Result<Code> {
        let parts: Vec<&str> = text
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        let shape = || {
            Error::InvalidCode(format!(
                "expected NUMBER-WORD-WORD-WORD (like 42-apple-river-stone), got {:?}",
                text.escape_debug().to_string()
            ))
        };
        let [nameplate, words @ ..] = parts.as_slice() else {
            return Err(shape());
        };
        if words.len() != WORDS_PER_CODE {
            return Err(shape());
        }
        check_nameplate(nameplate).map_err(Error::InvalidCode)?;
        let mut indices = [0u16; WORDS_PER_CODE];
        for (slot, word) in indices.iter_mut().zip(words) {
            let lower = word.to_lowercase();
            *slot = Language::English.find_word(&lower).ok_or_else(|| {
                Error::InvalidCode(format!(
                    "{:?} is not in the word list (check the spelling)",
                    word.escape_debug().to_string()
                ))
            })?;
        }
        Ok(Code {
            nameplate: nameplate.to_string(),
            words: indices,
        })
    }

    /// The public part, shown to the relay.
    pub fn nameplate(&self) -> &str {
        &self.nameplate
    }

    /// The secret words.
    pub fn words(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.words.iter().map(|&i| word_list()[usize::from(i)])
    }
}

impl fmt::Display for Code {
    /// The canonical form, which is also the PAKE password: `42-apple-river-stone`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.nameplate)?;
        for word in self.words() {
            write!(f, "-{word}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Code")
            .field("nameplate", &self.nameplate)
            .field("words", &"<secret>")
            .finish()
    }
}

fn check_nameplate(n: &str) -> std::result::Result<(), String> {
    nameplate::problem(n).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_list_is_large_enough() {
        let list = word_list();
        assert!(list.len() >= 1024);
        let unique: std::collections::HashSet<_> = list.iter().collect();
        assert_eq!(unique.len(), list.len());
        assert!(
            list.iter()
                .all(|w| w.bytes().all(|b| b.is_ascii_lowercase()))
        );
    }

    #[test]
    fn generated_codes_round_trip() {
        let code = Code::generate("4711").expect("code");
        let text = code.to_string();
        assert!(text.starts_with("4711-"));
        assert_eq!(text.split('-').count(), 1 + WORDS_PER_CODE);
        assert_eq!(Code::parse(&text).expect("parse"), code);
    }

    #[test]
    fn generated_words_vary() {
        let codes: std::collections::HashSet<String> = (0..50)
            .map(|_| Code::generate("1").expect("code").to_string())
            .collect();
        assert!(codes.len() > 45, "words look predictable: {codes:?}");
    }

    #[test]
    fn typing_is_forgiving_about_case_and_spaces() {
        let a = Code::parse("12-Apple-RIVER-stone").expect("mixed case");
        let b = Code::parse("  12 apple river  stone\n").expect("spaces");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "12-apple-river-stone");
    }

    #[test]
    fn malformed_codes_are_refused() {
        for bad in [
            "",
            "12",
            "12-apple-river",
            "12-apple-river-stone-extra",
            "apple-12-river-stone",
            "012-apple-river-stone",
            "123456789012345678901-apple-river-stone",
            "12-apple-river-notaword",
            "12-apple-river-st\u{0}one",
        ] {
            let err = Code::parse(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidCode(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_words() {
        let code = Code::parse("12-apple-river-stone").expect("code");
        let shown = format!("{code:?}");
        assert!(shown.contains("12") && !shown.contains("apple"), "{shown}");
    }

    #[test]
    fn relay_nameplates_are_checked() {
        assert!(Code::generate("12-apple").is_err());
        assert!(Code::generate("").is_err());
        // The relay accepts 12 digits at most; a longer code fails here, before any network.
        assert!(Code::parse("1234567890123-apple-river-stone").is_err());
        assert!(Code::parse("123456789012-abandon-ability-able").is_ok());
    }
}
