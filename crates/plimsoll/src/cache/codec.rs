//! How values are stored: one format byte, then the value in postcard.
//!
//! postcard is serde's most compact mainstream binary format (varint
//! integers, length-prefixed strings, no field names), with a wire format
//! that is stable and documented since 1.0; decoding is a straight read
//! with no reflection, which matters on a path that is otherwise one Redis
//! round trip. The alternatives weighed: MessagePack (`rmp-serde`) is
//! self-describing and readable from other languages, but repeats field
//! names or needs array mode and is larger and slower; `bincode` writes
//! fixed-width integers by default and its maintenance has ended. JSON
//! would double the size of numeric data.
//!
//! postcard is not self-describing, so the format byte guards the door: a
//! value written by something else under a cache key (or by a later format)
//! is reported as corrupt — a miss for the caller — rather than decoded into
//! nonsense. Decoding also insists on consuming every byte. A type that
//! changes shape between deploys should change its key (or namespace): a
//! reordered struct can still decode.
//!
//! Large values are zstd-compressed (level 1, with the per-thread contexts
//! of `crate::compress` that the queue's records use too) when that saves
//! at least 1/16: Redis memory is the resource Plimsoll exists to protect.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::compress;
use crate::error::{Error, ErrorKind, Result};

/// Format byte of a value stored as postcard.
const PLAIN: u8 = 0xC1;
/// Format byte of a value stored as zstd-compressed postcard.
const ZSTD: u8 = 0xC2;
/// zstd level of cached values: level 1 is fast and close to level 3.
const ZSTD_LEVEL: i32 = 1;

/// Encodes and decodes values within the size limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec {
    pub(crate) max_value_bytes: usize,
    pub(crate) compress_above: Option<usize>,
}

impl Codec {
    /// The stored form of `value`: a format byte and postcard, compressed
    /// when large. Errors: `Serialization`, `PayloadTooLarge` (the encoded
    /// size before compression is over the limit).
    pub(crate) fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        let mut out = Vec::with_capacity(128);
        out.push(PLAIN);
        let mut out = postcard::to_extend(value, out).map_err(|e| {
            Error::new(
                ErrorKind::Serialization,
                format!("cache value does not encode: {e}"),
            )
        })?;
        let size = out.len() - 1;
        if size > self.max_value_bytes {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "cache value is {size} bytes encoded, limit {}",
                    self.max_value_bytes
                ),
            ));
        }
        if self.compress_above.is_some_and(|above| size >= above)
            && let Some(compressed) =
                compress::compress(ZSTD_LEVEL, &out[1..]).filter(|c| c.len() <= size - size / 16)
        {
            out.clear();
            out.push(ZSTD);
            out.extend_from_slice(&compressed);
        }
        Ok(Bytes::from(out))
    }

    /// The value stored in `bytes`. Errors: `Corrupt` (not a value this
    /// codec wrote, or not of type `T`).
    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        let decompressed;
        let body = match bytes.split_first() {
            Some((&PLAIN, body)) => body,
            Some((&ZSTD, body)) => {
                decompressed =
                    compress::decompress_at_most(body, self.max_value_bytes as u64, "cache value")?;
                &decompressed[..]
            }
            _ => {
                return Err(Error::corrupt(
                    "cache value was not written by plimsoll's cache (unknown format byte)",
                ));
            }
        };
        match postcard::take_from_bytes::<T>(body) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(Error::corrupt(format!(
                "cache value has {} bytes more than its type reads",
                rest.len()
            ))),
            Err(e) => Err(Error::corrupt(format!(
                "cache value does not decode as the type asked for: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
    }

    fn codec() -> Codec {
        Codec {
            max_value_bytes: 64 * 1024,
            compress_above: Some(4096),
        }
    }

    #[test]
    fn values_round_trip_compactly() {
        let user = User {
            id: 42,
            name: "ada".into(),
            tags: vec!["a".into()],
        };
        let bytes = codec().encode(&user).unwrap();
        // format byte, varint id, 1+3 name, 1 + 1+1 tags.
        assert_eq!(bytes.len(), 1 + 1 + 4 + 3);
        assert_eq!(codec().decode::<User>(&bytes).unwrap(), user);
    }

    #[test]
    fn large_compressible_values_are_compressed() {
        let text = "the same line again\n".repeat(1000);
        let bytes = codec().encode(&text).unwrap();
        assert_eq!(bytes[0], ZSTD);
        assert!(bytes.len() < 1000, "{}", bytes.len());
        assert_eq!(codec().decode::<String>(&bytes).unwrap(), text);
    }

    #[test]
    fn values_over_the_limit_are_refused_with_their_size() {
        let err = codec().encode(&"x".repeat(70_000)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
        assert!(err.to_string().contains("limit 65536"), "{err}");
    }

    #[test]
    fn foreign_and_mistyped_values_are_corrupt_not_panics() {
        for foreign in [&b""[..], b"hello", b"\xC2garbage", b"\xC1"] {
            let err = codec().decode::<User>(foreign).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{foreign:?}");
        }
        let bytes = codec().encode(&(1u8, 2u8, 3u8)).unwrap();
        let err = codec().decode::<u8>(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }
}
