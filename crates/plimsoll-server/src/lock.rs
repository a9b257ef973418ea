//! One `plimsoll serve` per data folder.
//!
//! Two servers on one folder would append to one spool from two writers,
//! each cutting the other's records back as a failed write's leftovers,
//! replay the same records twice, and share one guard history and token. So
//! the server holds an exclusive `flock(2)` on `<data_dir>/lock` for as long
//! as it runs. The kernel drops the lock when the process ends, however it
//! ends, so a crash never leaves a stale lock behind; the pid written into
//! the file is only there to name the holder in the error a second server
//! gives.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name in the data folder.
pub const LOCK_FILE: &str = "lock";

/// Held while the server runs; dropping it releases the folder.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Why the data folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data folder {} is in use by another plimsoll serve{}; give each server its own data folder (--data-dir)",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock the data folder {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Locks `dir` (which must exist) for this process, or says who holds it.
pub fn lock(dir: &Path) -> Result<DataDirLock, LockError> {
    let io_error = |source: io::Error| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io_error)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::InUse {
                dir: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(errno) => return Err(io_error(errno.into())),
    }
    file.set_len(0).map_err(io_error)?;
    file.rewind().map_err(io_error)?;
    writeln!(file, "{}", std::process::id()).map_err(io_error)?;
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_folder_names_its_holder_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        // flock conflicts between open files, in one process too.
        let err = lock(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(held);
        lock(dir.path()).unwrap();
    }
}
