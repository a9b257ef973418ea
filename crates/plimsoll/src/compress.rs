//! zstd with per-thread contexts, for the queue's job records and the
//! cache's values.
//!
//! Creating a zstd context costs more than compressing a kilobyte, and
//! loading a dictionary into one costs more again, so each thread keeps its
//! contexts: one plain pair, and one pair with [`JSON_DICTIONARY`] loaded.
//! They are kept apart because a frame made without a dictionary must be
//! decoded without one (its repeat offsets start from zstd's defaults).
//! Which frames a record or a cache value holds, and the flags that say so,
//! belong to their formats (`queue::record`, `cache::codec`); this module
//! only compresses and bounds what it decompresses.

use std::cell::RefCell;

use crate::error::{Error, Result};

/// The zstd dictionary of job payloads (8 KiB, made by
/// `scripts/make-json-dictionary` from synthetic webhook-like JSON; see
/// `queue::record` for why). Part of the record format: never edit, records
/// in Redis need these exact bytes to be read.
pub(crate) const JSON_DICTIONARY: &[u8] = include_bytes!("../dict/json-v1.zdict");

type Compressor = zstd::bulk::Compressor<'static>;
type Decompressor = zstd::bulk::Decompressor<'static>;
type DecompressorSlot = std::thread::LocalKey<RefCell<Option<Decompressor>>>;

thread_local! {
    static PLAIN_COMPRESSOR: RefCell<Option<(i32, Compressor)>> = const { RefCell::new(None) };
    static PLAIN_DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    static JSON_COMPRESSOR: RefCell<Option<(i32, Compressor)>> = const { RefCell::new(None) };
    static JSON_DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// `data` as one zstd frame at `level`, without a dictionary; `None` when
/// zstd fails (the caller stores the data as it is).
pub(crate) fn compress(level: i32, data: &[u8]) -> Option<Vec<u8>> {
    PLAIN_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, Compressor::new(level).ok()?));
        }
        let (_, compressor) = slot.as_mut()?;
        compressor.compress(data).ok()
    })
}

/// Appends `data` compressed with [`JSON_DICTIONARY`] to `out` if the frame
/// fits in `max` bytes, and returns whether it did; otherwise `out` is left
/// as it was. Compressing in place saves a buffer and a copy per record.
pub(crate) fn json_compress_into(level: i32, data: &[u8], out: &mut Vec<u8>, max: usize) -> bool {
    let start = out.len();
    out.resize(start + max, 0);
    let written = JSON_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut compressor = Compressor::with_dictionary(level, JSON_DICTIONARY).ok()?;
            // zstd's negative levels skip entropy-coding literals; with the
            // dictionary's ready Huffman table that coding is cheap, and on
            // JSON it is most of the gain, so keep it on at every level.
            compressor
                .set_parameter(zstd::zstd_safe::CParameter::LiteralCompressionMode(
                    zstd::zstd_safe::ParamSwitch::Enable,
                ))
                .ok()?;
            *slot = Some((level, compressor));
        }
        let (_, compressor) = slot.as_mut()?;
        // A frame larger than `max` fails with "destination too small": it
        // would not have paid.
        compressor.compress_to_buffer(data, &mut out[start..]).ok()
    });
    match written {
        Some(n) => {
            out.truncate(start + n);
            true
        }
        None => {
            out.truncate(start);
            false
        }
    }
}

/// Decompresses one frame of at most `max` bytes made without a
/// dictionary; `what` names the data in errors (`Corrupt`).
pub(crate) fn decompress_at_most(data: &[u8], max: u64, what: &str) -> Result<Vec<u8>> {
    decompress_with(&PLAIN_DECOMPRESSOR, &[], data, max, what)
}

/// Decompresses one frame of at most `max` bytes made with
/// [`JSON_DICTIONARY`].
pub(crate) fn json_decompress_at_most(data: &[u8], max: u64, what: &str) -> Result<Vec<u8>> {
    decompress_with(&JSON_DECOMPRESSOR, JSON_DICTIONARY, data, max, what)
}

/// Decompresses one frame of at most `max` bytes with the thread's context
/// in `slot`, made on first use with `dictionary` (none when empty). The
/// size the frame declares is checked before anything is allocated, so a
/// corrupt or hostile frame cannot ask for more than `max`.
fn decompress_with(
    slot: &'static DecompressorSlot,
    dictionary: &[u8],
    data: &[u8],
    max: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let size = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(size)) if size <= max => size as usize,
        _ => return Err(Error::corrupt(format!("{what} is not a valid zstd frame"))),
    };
    slot.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                Decompressor::with_dictionary(dictionary)
                    .map_err(|e| Error::corrupt(format!("zstd: {e}")))?,
            );
        }
        let decompressor = slot.as_mut().expect("set above");
        decompressor
            .decompress(data, size)
            .map_err(|e| Error::corrupt(format!("{what} does not decompress: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_and_without_the_dictionary() {
        let data = br#"{"event":"push","repository":{"name":"plimsoll"}}"#.repeat(20);
        let plain = compress(1, &data).expect("compresses");
        assert_eq!(decompress_at_most(&plain, 1 << 20, "t").unwrap(), data);
        let mut json = Vec::new();
        assert!(json_compress_into(-3, &data, &mut json, data.len()));
        assert_eq!(json_decompress_at_most(&json, 1 << 20, "t").unwrap(), data);
    }

    #[test]
    fn a_frame_larger_than_its_bound_is_refused_before_allocating() {
        let data = vec![b'a'; 10_000];
        let frame = compress(1, &data).expect("compresses");
        let err = decompress_at_most(&frame, 9_999, "cache value").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    }
}
