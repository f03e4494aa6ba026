//! OUTDIR, checked before anything is received into it: created if missing, a directory, and
//! writable by this process. `receive` runs these checks before it claims the code, so a
//! mistake here costs the user nothing but a second try.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::names::TEMP_PREFIX;
use crate::sink::shown;

/// Creates OUTDIR (and its parents) if needed, and checks that it is a directory this process
/// can create files in, so that a receive that would fail to write fails before it uses up the
/// code. Returns the directories it created, deepest first, so a failed transfer can remove
/// them again ([`remove_created`]).
pub fn prepare_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let bad = |why: String| Error::BadOutdir {
        path: shown(dir),
        why,
    };
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at {
        if p.as_os_str().is_empty() {
            break;
        }
        if p.symlink_metadata().is_ok() {
            // The OS would say "File exists" or "Not a directory"; name the culprit instead.
            if let Ok(meta) = fs::metadata(p)
                && !meta.is_dir()
            {
                let what = if meta.is_file() {
                    "a file"
                } else {
                    "not a directory"
                };
                return Err(bad(if p == dir {
                    format!("it is {what}, not a directory")
                } else {
                    format!("{} is {what}, not a directory", shown(p))
                }));
            }
            break;
        }
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create it: {e}")))?;
    if !fs::metadata(dir).map_err(|e| bad(e.to_string()))?.is_dir() {
        return Err(bad("it is not a directory".into()));
    }
    if let Err(e) = probe_writable(dir) {
        remove_created(&missing);
        return Err(bad(format!("cannot create files in it: {e}")));
    }
    Ok(missing)
}

/// Creates and removes a file in `dir`: the only sure test of writability (permission bits
/// say nothing about read-only mounts, ACLs, or root).
fn probe_writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!("{TEMP_PREFIX}probe-{:016x}", rand::random::<u64>()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

/// Removes directories [`prepare_dir`] created, as long as they are empty.
pub fn remove_created(dirs: &[PathBuf]) {
    for dir in dirs {
        if fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("filexfer-outdir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        prepare_dir(&dir).expect("dir");
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn created_directories_can_be_taken_back() {
        let root = scratch_dir("mkdir");
        let deep = root.join("a/b/c");
        let created = prepare_dir(&deep).expect("create");
        assert_eq!(created, [deep.clone(), root.join("a/b"), root.join("a")]);
        assert!(prepare_dir(&deep).expect("exists").is_empty());
        std::fs::write(root.join("a/keep.txt"), b"x").expect("file");
        remove_created(&created);
        // Empty directories went; the one with a file stayed, and so did its parent.
        assert_eq!(entries(&root.join("a")), ["keep.txt"]);
        fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let root = scratch_dir("file");
        fs::write(root.join("f"), b"x").expect("file");
        let err = prepare_dir(&root.join("f")).expect_err("a file is no OUTDIR");
        assert!(matches!(err, Error::BadOutdir { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with("/f as OUTDIR: it is a file, not a directory"),
            "{err}"
        );
        let err = prepare_dir(&root.join("f/sub")).expect_err("nor a path through one");
        assert!(
            err.to_string().ends_with("/f is a file, not a directory"),
            "{err}"
        );
        // Nothing was created, and the probe left nothing behind either.
        assert_eq!(entries(&root), ["f"]);
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
