//! Nameplates: the public, relay-assigned part of a transfer code. The one place their rules
//! live, so the relay that issues them, the relay that checks a claim, and the client that
//! parses a typed code all agree.

/// Longest nameplate, in decimal digits. Relays draw nameplates from
/// `1..=`[`MAX_VALUE`], so every one they issue fits.
pub const MAX_DIGITS: usize = 12;

/// Largest nameplate a relay issues.
pub const MAX_VALUE: u64 = 999_999_999_999;

/// Whether `s` is a nameplate: 1 to [`MAX_DIGITS`] ASCII digits without a leading zero
/// (the relay never issues one, so `007` and `7` cannot both name an offer).
pub fn is_valid(s: &str) -> bool {
    (1..=MAX_DIGITS).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && !s.starts_with('0')
}

/// Why `s` is not a nameplate, phrased for the person who typed it; `None` when it is one.
pub fn problem(s: &str) -> Option<String> {
    if is_valid(s) {
        return None;
    }
    let shown = s.escape_debug().to_string();
    Some(if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        format!("the code must start with the number the sender printed, got \"{shown}\"")
    } else if s.starts_with('0') {
        format!("the number at the start of a code never begins with 0, got \"{shown}\"")
    } else {
        format!(
            "the number at the start of a code has at most {MAX_DIGITS} digits, got {}",
            s.len()
        )
    })
}
