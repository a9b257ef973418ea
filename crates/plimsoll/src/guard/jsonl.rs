//! The guard's files of JSON lines (readings, reports, alerts): appended
//! one line at a time and bounded, rewritten with their newest lines only
//! when they grow past twice their limit. A line cut short by a crash is
//! skipped by whoever reads the file.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// Appends `item` as a JSON line to the file that holds `*lines` lines;
/// when it would hold more than twice `limit`, rewrites it with the last
/// `limit` of `all()` instead (write + rename, so a crash leaves the old
/// file or the new, never half of one).
pub(crate) fn append_line<T: Serialize>(
    path: &Path,
    item: &T,
    lines: &mut usize,
    limit: usize,
    all: impl FnOnce() -> Vec<T>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(path, e))?;
    }
    if *lines + 1 > 2 * limit.max(1) {
        let items = all();
        let skip = items.len().saturating_sub(limit);
        let tmp = path.with_extension("tmp");
        let mut out = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        for item in &items[skip..] {
            writeln!(out, "{}", serde_json::to_string(item)?).map_err(|e| io_error(&tmp, e))?;
        }
        out.sync_all().map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        *lines = items.len() - skip;
        return Ok(());
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    writeln!(out, "{}", serde_json::to_string(item)?).map_err(|e| io_error(path, e))?;
    *lines += 1;
    Ok(())
}

/// Lines in the file at `path`; 0 when there is none.
pub(crate) fn count_lines(path: &Path) -> usize {
    std::fs::File::open(path)
        .map(|f| std::io::BufReader::new(f).lines().count())
        .unwrap_or(0)
}

/// An [`Io`](crate::ErrorKind::Io) error about one of the guard's files.
pub(crate) fn io_error(path: &Path, err: std::io::Error) -> Error {
    Error::io("guard history file", path, err)
}
