//! File names that cross the wire: what a sender may announce and what a receiver accepts.
//!
//! The receiver trusts nothing about the name: it must be one plain path component, so joining
//! it to OUTDIR can never leave OUTDIR, and it must be printable without letting the peer
//! control the terminal or disguise an extension. The same rules run on the sender first, so a
//! file the receiver would refuse is refused before a code is printed.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Longest name accepted, in bytes (the common `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// Prefix of the receiver's temporary files; refused as a name so a peer cannot target another
/// transfer's temporary file in the same directory.
pub const TEMP_PREFIX: &str = ".filexfer-";

/// Device names Windows reserves in every directory. Refused everywhere, so a file that
/// reaches one receiver reaches all of them.
const RESERVED: [&str; 24] = [
    "CON", "PRN", "AUX", "NUL", "COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Checks a name announced by a peer (or about to be announced by us). Returns it unchanged
/// when it is acceptable.
pub fn check(name: &str) -> Result<&str> {
    let refuse = |why: &str| Err(Error::NameRefused(format!("{} {why}", quote(name))));
    if name.is_empty() {
        return refuse("is empty");
    }
    if name == "." || name == ".." {
        return refuse("refers to a directory");
    }
    if name.len() > MAX_NAME_BYTES {
        return refuse(&format!("is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.contains(['/', '\\']) {
        return refuse("contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    if name.chars().any(is_invisible) {
        return refuse("contains invisible or text-direction characters");
    }
    if cfg!(windows) && name.contains([':', '<', '>', '"', '|', '?', '*']) {
        return refuse("contains a character Windows does not allow in names");
    }
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        return refuse("is a reserved device name on Windows");
    }
    if name.starts_with(TEMP_PREFIX) {
        return refuse("looks like one of receive's temporary files");
    }
    // Belt and braces: whatever the rules above missed, the name must be exactly one normal
    // component, so `dir.join(name)` stays inside `dir`.
    let mut parts = Path::new(name).components();
    if !matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    ) {
        return refuse("is not a plain file name");
    }
    Ok(name)
}

/// Deepest nesting accepted in a relative path (components).
pub const MAX_DEPTH: usize = 64;

/// Longest relative path accepted, in bytes (the common `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Checks a relative path announced by a peer: `/`-separated components, each of which
/// passes [`check`], at most [`MAX_DEPTH`] deep and [`MAX_PATH_BYTES`] long. Returns its
/// components. An absolute path, `..`, `.`, an empty component or a backslash are refused by
/// the component rule, so the joined path cannot leave the directory it is joined to.
pub fn check_path(path: &str) -> Result<Vec<&str>> {
    let refuse = |why: &str| Err(Error::NameRefused(format!("{} {why}", quote(path))));
    if path.len() > MAX_PATH_BYTES {
        return refuse(&format!("is longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return refuse("is an absolute path");
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return refuse(&format!("is nested deeper than {MAX_DEPTH} levels"));
    }
    for part in &parts {
        check(part).map_err(|e| match e {
            Error::NameRefused(why) => Error::NameRefused(format!("in {}: {why}", quote(path))),
            other => other,
        })?;
    }
    Ok(parts)
}

/// Where the relative path `path` lands inside `dir`, once it passed [`check_path`].
pub fn path_in(dir: &Path, path: &str) -> Result<PathBuf> {
    let mut out = dir.to_path_buf();
    for part in check_path(path)? {
        out.push(part);
    }
    debug_assert!(out.starts_with(dir));
    Ok(out)
}

/// Where a file called `name` lands inside `dir`, once `name` passed [`check`].
pub fn target_in(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(check(name)?);
    debug_assert_eq!(path.parent(), Some(dir));
    Ok(path)
}

/// The base name of a local file, checked as a receiver would check it.
pub fn base_name(path: &Path) -> Result<String> {
    let shown = escape(&path.to_string_lossy());
    let name = path
        .file_name()
        .ok_or_else(|| Error::NameRefused(format!("{shown} does not end in a file name")))?;
    let name = name
        .to_str()
        .ok_or_else(|| Error::NameRefused(format!("the name of {shown} is not valid UTF-8")))?;
    check(name).map(str::to_string)
}

/// Escapes a name (or any peer-supplied text) for printing: control, invisible and
/// text-direction characters become `\u{..}`, so the peer cannot move the cursor, clear the
/// screen, or make `exe.txt` display as `txt.exe`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `escape(name)` in double quotes, for messages.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", escape(name))
}

/// Characters that change how surrounding text is displayed without showing themselves:
/// bidirectional controls, zero-width characters, the byte-order mark.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for ok in [
            "corgis.mp4",
            "a",
            ".bashrc",
            "..hidden",
            "rapport été.pdf",
            "名前.txt",
            "x".repeat(255).as_str(),
            "console.log",
        ] {
            assert_eq!(check(ok).expect(ok), ok);
        }
    }

    #[test]
    fn dangerous_names_are_refused() {
        let long = "x".repeat(256);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "..\\x",
            "C:\\x",
            "a\0b",
            "line\nbreak",
            "bell\x07",
            "esc\x1b[2J",
            "del\x7f",
            "c1\u{9b}",
            "gnp\u{202E}.exe",
            "zero\u{200B}width",
            "CON",
            "nul.txt",
            "Com1.tar.gz",
            ".filexfer-0123.part",
            long.as_str(),
        ] {
            let err = check(bad).expect_err(bad);
            assert!(matches!(err, Error::NameRefused(_)), "{bad:?}");
            // The message itself never carries the raw control characters.
            assert!(!err.to_string().chars().any(|c| c.is_control()), "{err}");
        }
    }

    #[test]
    fn targets_stay_in_the_directory() {
        let dir = Path::new("/srv/out");
        assert_eq!(
            target_in(dir, "a.txt").expect("ok"),
            PathBuf::from("/srv/out/a.txt")
        );
        assert!(target_in(dir, "../a.txt").is_err());
        assert!(target_in(dir, "/a.txt").is_err());
    }

    #[test]
    fn relative_paths_are_checked_per_component() {
        assert_eq!(
            check_path("photos/2024/a.jpg").expect("ok"),
            ["photos", "2024", "a.jpg"]
        );
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "",
            "a\\..\\b",
            "photos/CON",
            "photos/nul.txt",
            "a/.filexfer-x",
            "a/b\u{202E}c",
            deep.as_str(),
        ] {
            assert!(
                matches!(check_path(bad), Err(Error::NameRefused(_))),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            path_in(Path::new("/srv/out"), "a/b").expect("ok"),
            PathBuf::from("/srv/out/a/b")
        );
    }

    #[test]
    fn escaping_neutralises_terminal_tricks() {
        assert_eq!(escape("plain.txt"), "plain.txt");
        assert_eq!(escape("a\nb"), "a\\u{a}b");
        assert_eq!(escape("x\u{1b}[31m"), "x\\u{1b}[31m");
        assert_eq!(escape("gnp\u{202E}.exe"), "gnp\\u{202e}.exe");
    }

    #[test]
    fn base_names_of_local_paths() {
        assert_eq!(
            base_name(Path::new("dir/corgis.mp4")).expect("ok"),
            "corgis.mp4"
        );
        assert!(base_name(Path::new("/")).is_err());
        assert!(base_name(Path::new("dir/..")).is_err());
    }
}
