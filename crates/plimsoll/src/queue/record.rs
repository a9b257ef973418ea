//! The job record: one field of the queue's `jobs` hash per job.
//!
//! A fixed 24-byte header (so Lua can read the priority and attempts with
//! `struct.unpack` without parsing anything), the payload, then the last
//! error. The layout is documented again at the top of `lua/queue/lib.lua`;
//! the two must change together, with a new version byte.
//!
//! Payloads are compressed with zstd when that saves at least 1/16 of their
//! size. On a typical 1 KiB JSON payload this takes the record from a 1,280
//! byte to an 896 byte allocation in Redis: the jemalloc size classes make a
//! few percent of compression worth a quarter of the memory.
//!
//! They are compressed with a built-in dictionary (`dict/json-v1.zdict`,
//! made by `scripts/make-json-dictionary` from synthetic webhook-like JSON).
//! A job payload is one small document; without a dictionary zstd builds
//! and writes fresh Huffman and FSE tables for every frame, most of its
//! time on a kilobyte, and has nothing to match the first bytes against.
//! With it, compression at the same level takes about 0.6× the time and
//! typical webhook JSON comes out a third smaller (see `docs/benchmarks-history.md`, 2026-11-29,
//! and [`DEFAULT_COMPRESSION`]). The dictionary is part of the format: flag
//! bit 1 says a payload needs it (and the zstd frame carries its id), so it
//! never changes in place; records written without it (flag bit 0 alone)
//! are read as before. A worker older than the dictionary cannot read such
//! a record and fails its job for good (it waits in the dead set, from
//! which a newer worker can retry it): upgrade workers before producers.

use crate::compress;
use crate::error::{Error, Result};

/// The record format this version writes and reads.
pub(crate) const RECORD_VERSION: u8 = 1;
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 24;
/// Flag: the payload is a zstd frame.
const FLAG_ZSTD: u8 = 1;
/// Flag, with [`FLAG_ZSTD`]: the frame was made with
/// [`compress::JSON_DICTIONARY`].
const FLAG_JSON_DICTIONARY: u8 = 2;
/// Payloads smaller than this are stored as they are: zstd's frame overhead
/// eats the gain.
pub(crate) const COMPRESS_MIN_BYTES: usize = 128;
/// The largest payload a record may decompress to, whatever a queue's limit:
/// a guard against a corrupt or hostile frame.
const MAX_DECOMPRESSED: u64 = 256 * 1024 * 1024;

/// How payloads are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Payloads are stored as given.
    Off,
    /// zstd at this level (1 is fast and, on JSON, close to level 3;
    /// negative levels are faster and a little larger).
    Zstd {
        /// zstd compression level, -7..=19.
        level: i32,
    },
}

/// zstd level -3 with the dictionary and entropy-coded literals. On
/// webhook-like JSON it stores about 5% more than level 1 (a 975-byte
/// GitHub webhook: 394 bytes against 373; both far below the 538 of level 1
/// without the dictionary) and compresses a kilobyte in about 0.65× the
/// time, which is most of a producer's CPU per job. Level 1 is the choice
/// when memory is tighter than CPU.
pub const DEFAULT_COMPRESSION: Compression = Compression::Zstd { level: -3 };

/// How a record's payload is stored: its flags byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// As given.
    Raw,
    /// A zstd frame made without a dictionary (records written before the
    /// dictionary).
    Zstd,
    /// A zstd frame made with [`compress::JSON_DICTIONARY`].
    ZstdJsonDictionary,
}

impl Stored {
    fn flags(self) -> u8 {
        match self {
            Self::Raw => 0,
            Self::Zstd => FLAG_ZSTD,
            Self::ZstdJsonDictionary => FLAG_ZSTD | FLAG_JSON_DICTIONARY,
        }
    }

    /// The flags byte read back; any other combination is a record this
    /// version cannot read (a later format, or damage), not a payload to
    /// hand out undecoded.
    fn from_flags(flags: u8) -> Result<Self> {
        [Self::Raw, Self::Zstd, Self::ZstdJsonDictionary]
            .into_iter()
            .find(|stored| stored.flags() == flags)
            .ok_or_else(|| Error::corrupt(format!("job record has unknown flags {flags:#04x}")))
    }
}

/// The fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Set by [`encode`] from what paid; ignored on the way in.
    pub(crate) stored: Stored,
    pub(crate) priority: u8,
    pub(crate) attempts: u16,
    pub(crate) max_attempts: u16,
    pub(crate) timeout_ms: u32,
    pub(crate) enqueued_at_ms: u64,
}

/// A decoded record.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) header: Header,
    pub(crate) payload: Vec<u8>,
    pub(crate) last_error: Option<String>,
}

/// The payload as given, decompressed as its record says.
fn payload_decode(stored: Stored, data: &[u8]) -> Result<Vec<u8>> {
    let what = "job payload";
    match stored {
        Stored::Raw => Ok(data.to_vec()),
        Stored::Zstd => compress::decompress_at_most(data, MAX_DECOMPRESSED, what),
        Stored::ZstdJsonDictionary => {
            compress::json_decompress_at_most(data, MAX_DECOMPRESSED, what)
        }
    }
}

/// Builds a record for a new job.
pub(crate) fn encode(payload: &[u8], header: &Header, compression: Compression) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER_LEN + payload.len());
    rec.push(RECORD_VERSION);
    rec.push(0); // flags, set below
    rec.push(header.priority);
    rec.push(0);
    rec.extend_from_slice(&header.attempts.to_be_bytes());
    rec.extend_from_slice(&header.max_attempts.to_be_bytes());
    rec.extend_from_slice(&header.timeout_ms.to_be_bytes());
    rec.extend_from_slice(&header.enqueued_at_ms.to_be_bytes());
    rec.extend_from_slice(&[0; 4]); // payload length, set below
    debug_assert_eq!(rec.len(), HEADER_LEN);
    // Compress straight behind the header: no second buffer, no copy.
    let stored = match compression {
        Compression::Zstd { level } if payload.len() >= COMPRESS_MIN_BYTES => {
            if compress::json_compress_into(
                level,
                payload,
                &mut rec,
                payload.len() - payload.len() / 16,
            ) {
                Stored::ZstdJsonDictionary
            } else {
                Stored::Raw
            }
        }
        _ => Stored::Raw,
    };
    if stored == Stored::Raw {
        rec.truncate(HEADER_LEN);
        rec.extend_from_slice(payload);
    }
    rec[1] = stored.flags();
    let len = u32::try_from(rec.len() - HEADER_LEN).expect("payload limit is far below 4 GiB");
    rec[20..24].copy_from_slice(&len.to_be_bytes());
    rec
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads the header alone (no decompression).
pub(crate) fn decode_header(bytes: &[u8]) -> Result<(Header, usize)> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::corrupt(format!(
            "job record of {} bytes is shorter than its header",
            bytes.len()
        )));
    }
    if bytes[0] != RECORD_VERSION {
        return Err(Error::corrupt(format!(
            "job record has format version {}, this Plimsoll reads {RECORD_VERSION}",
            bytes[0]
        )));
    }
    let payload_len = be_u32(bytes, 20) as usize;
    if HEADER_LEN + payload_len > bytes.len() {
        return Err(Error::corrupt(
            "job record is shorter than its payload length",
        ));
    }
    let header = Header {
        stored: Stored::from_flags(bytes[1])?,
        priority: bytes[2],
        attempts: be_u16(bytes, 4),
        max_attempts: be_u16(bytes, 6),
        timeout_ms: be_u32(bytes, 8),
        enqueued_at_ms: u64::from_be_bytes(bytes[12..20].try_into().expect("8 bytes")),
    };
    Ok((header, payload_len))
}

/// Decodes a record, decompressing its payload.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record> {
    let (header, payload_len) = decode_header(bytes)?;
    let stored = &bytes[HEADER_LEN..HEADER_LEN + payload_len];
    let payload = payload_decode(header.stored, stored)?;
    let error = &bytes[HEADER_LEN + payload_len..];
    let last_error = (!error.is_empty()).then(|| String::from_utf8_lossy(error).into_owned());
    Ok(Record {
        header,
        payload,
        last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            stored: Stored::Raw,
            priority: 3,
            attempts: 0,
            max_attempts: 7,
            timeout_ms: 30_000,
            enqueued_at_ms: 1_732_512_345_678,
        }
    }

    #[test]
    fn small_payloads_round_trip_uncompressed() {
        let rec = encode(b"hello", &header(), DEFAULT_COMPRESSION);
        assert_eq!(rec.len(), HEADER_LEN + 5);
        let decoded = decode(&rec).unwrap();
        assert_eq!(decoded.payload, b"hello");
        assert_eq!(decoded.header.stored, Stored::Raw);
        assert_eq!(decoded.header.priority, 3);
        assert_eq!(decoded.header.max_attempts, 7);
        assert_eq!(decoded.header.enqueued_at_ms, 1_732_512_345_678);
        assert_eq!(decoded.last_error, None);
    }

    #[test]
    fn compressible_payloads_are_compressed_and_round_trip() {
        let payload = br#"{"event":"push","repo":"acme/widgets"}"#.repeat(40);
        let rec = encode(&payload, &header(), DEFAULT_COMPRESSION);
        assert!(rec.len() < payload.len() / 4, "{} bytes", rec.len());
        let decoded = decode(&rec).unwrap();
        assert_eq!(decoded.header.stored, Stored::ZstdJsonDictionary);
        assert_eq!(decoded.payload, payload);
    }

    /// A webhook as GitHub sends it, written by hand for this test (not
    /// from the dictionary's corpus).
    const GITHUB_WEBHOOK: &str = r#"{"action":"opened","issue":{"url":"https://api.github.com/repos/northwind/ledger/issues/318","repository_url":"https://api.github.com/repos/northwind/ledger","html_url":"https://github.com/northwind/ledger/issues/318","id":2791044123,"node_id":"I_kwDOLq3x8s6mXq1b","number":318,"title":"Exports drop the last row when the sheet has a footer","user":{"login":"hannah-k","id":9120443,"node_id":"MDQ6VXNlcjkxMjA0NDM=","avatar_url":"https://avatars.githubusercontent.com/u/9120443?v=4","type":"User","site_admin":false},"labels":[{"id":6120931,"name":"bug","color":"d73a4a","default":true}],"state":"open","locked":false,"comments":0,"created_at":"2026-11-02T09:14:27Z","updated_at":"2026-11-02T09:14:27Z","body":"Steps: export a ledger with a footer row to CSV. The file ends one row early; without the footer it is complete."},"repository":{"id":771203344,"name":"ledger","full_name":"northwind/ledger","private":false},"sender":{"login":"hannah-k","id":9120443,"type":"User"}}"#;

    #[test]
    fn the_dictionary_makes_webhook_json_smaller_than_plain_zstd() {
        let payload = GITHUB_WEBHOOK.as_bytes();
        let with_dictionary = encode(payload, &header(), DEFAULT_COMPRESSION).len() - HEADER_LEN;
        let without = compress::compress(1, payload).unwrap().len();
        assert!(
            with_dictionary * 10 <= without * 9,
            "{with_dictionary} bytes with the dictionary, {without} without, of {}",
            payload.len()
        );
        assert_eq!(
            decode(&encode(payload, &header(), DEFAULT_COMPRESSION))
                .unwrap()
                .payload,
            payload
        );
    }

    #[test]
    fn records_compressed_without_the_dictionary_still_decode() {
        // As Plimsoll wrote compressed records before the dictionary: flag
        // bit 0 alone and a plain zstd frame.
        let payload = GITHUB_WEBHOOK.as_bytes();
        let frame = compress::compress(1, payload).unwrap();
        let mut rec = encode(b"", &header(), Compression::Off);
        rec[1] = FLAG_ZSTD;
        rec[20..24].copy_from_slice(&(frame.len() as u32).to_be_bytes());
        rec.extend_from_slice(&frame);
        rec.extend_from_slice(b"timed out");
        let decoded = decode(&rec).unwrap();
        assert_eq!(decoded.header.stored, Stored::Zstd);
        assert_eq!(decoded.payload, payload);
        assert_eq!(decoded.last_error.as_deref(), Some("timed out"));
    }

    #[test]
    fn the_dictionary_was_not_made_from_the_benchmark_payload() {
        // shared/BENCH.md's payload is compared across queues; a dictionary
        // that knew it would flatter Plimsoll's figures.
        let body = include_str!("../../../../bench/payload_body.txt").trim();
        let contains = |needle: &[u8]| {
            crate::compress::JSON_DICTIONARY
                .windows(needle.len())
                .any(|w| w == needle)
        };
        for piece in body.as_bytes().chunks(24).filter(|c| c.len() == 24) {
            assert!(!contains(piece), "{:?}", String::from_utf8_lossy(piece));
        }
        for word in ["settings panel", "startup", "acme", "widgets", "triage"] {
            assert!(!contains(word.as_bytes()), "{word}");
        }
    }

    #[test]
    fn incompressible_payloads_are_stored_as_they_are() {
        // A xorshift stream: no redundancy for zstd to find.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let payload: Vec<u8> = (0..2048)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let rec = encode(&payload, &header(), DEFAULT_COMPRESSION);
        assert_eq!(rec.len(), HEADER_LEN + payload.len());
        assert_eq!(decode(&rec).unwrap().payload, payload);
    }

    #[test]
    fn the_last_error_follows_the_payload() {
        let mut rec = encode(b"job", &header(), Compression::Off);
        rec.extend_from_slice(b"connection reset");
        let decoded = decode(&rec).unwrap();
        assert_eq!(decoded.payload, b"job");
        assert_eq!(decoded.last_error.as_deref(), Some("connection reset"));
    }

    #[test]
    fn truncated_and_foreign_records_are_corrupt_not_panics() {
        let rec = encode(b"payload", &header(), Compression::Off);
        for bad in [&rec[..10], &rec[..HEADER_LEN + 2]] {
            assert_eq!(decode(bad).unwrap_err().kind(), crate::ErrorKind::Corrupt);
        }
        let mut unknown_flags = rec.clone();
        unknown_flags[1] = FLAG_JSON_DICTIONARY;
        let err = decode(&unknown_flags).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        assert!(err.to_string().contains("unknown flags 0x02"), "{err}");
        let mut other_version = rec.clone();
        other_version[0] = 9;
        assert_eq!(
            decode(&other_version).unwrap_err().kind(),
            crate::ErrorKind::Corrupt
        );
    }
}
