//! Moving verified files and trees to their final names without ever replacing what must not
//! be replaced.

use std::fs;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sink::shown;

/// A verified file to its final name: never replacing anything without `force`, never
/// replacing a directory.
pub(super) fn place_file(from: &Path, to: &Path, force: bool) -> Result<()> {
    let occupied = |to: &Path| {
        if to.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            Error::IsDirectory { path: shown(to) }
        } else {
            Error::Exists { path: shown(to) }
        }
    };
    let failed = |source| Error::Write {
        path: shown(to),
        source,
    };
    if force {
        if to.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            return Err(occupied(to));
        }
        return fs::rename(from, to).map_err(failed);
    }
    match fs::hard_link(from, to) {
        Ok(()) => {
            let _ = fs::remove_file(from);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(occupied(to)),
        // No hard links on this file system: check, then rename (a one-call-wide window).
        Err(_) if to.symlink_metadata().is_err() => fs::rename(from, to).map_err(failed),
        Err(_) => Err(occupied(to)),
    }
}

/// A verified tree to its final name: renamed whole when the name is free; merged into an
/// existing directory (files replaced, directories kept, links never followed) with `force`.
pub(super) fn place_dir(from: &Path, to: &Path, force: bool) -> Result<()> {
    match to.symlink_metadata() {
        Err(_) => match fs::rename(from, to) {
            Ok(()) => Ok(()),
            Err(_) if to.symlink_metadata().is_ok() => place_dir(from, to, force),
            Err(source) => Err(Error::Write {
                path: shown(to),
                source,
            }),
        },
        Ok(meta) if force && meta.is_dir() => {
            let entries = fs::read_dir(from).map_err(|source| Error::Write {
                path: shown(from),
                source,
            })?;
            for entry in entries.flatten() {
                let (src, dst) = (entry.path(), to.join(entry.file_name()));
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    place_dir(&src, &dst, force)?;
                } else {
                    place_file(&src, &dst, force)?;
                }
            }
            Ok(())
        }
        Ok(_) => Err(Error::Exists { path: shown(to) }),
    }
}
