//! The spool's on-disk format, shared by the spool and its quarantine: each
//! record is one frame — a magic byte, the body's length, its CRC-32, the
//! body — so that a reader can tell a whole record from a torn or corrupt
//! stretch and resynchronise past it (see the spool's module docs for why
//! nothing acknowledged may be lost behind one).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The first byte of every frame.
pub(crate) const MAGIC: u8 = 0xA5;
/// Magic, length and CRC.
pub(crate) const FRAME_HEADER: usize = 9;
/// Longest queue name or key a record holds (the intake checks earlier).
const MAX_FIELD: usize = u16::MAX as usize;
/// The longest frame body the spool writes, and so the longest length it
/// believes when it reads one from disk: a payload at the library's highest
/// limit ([`plimsoll::queue::MAX_PAYLOAD_LIMIT`], 64 MiB; intake never
/// spools a payload its queue would refuse) with the longest queue name and
/// key. A longer length read from disk is corruption and is never allocated.
pub const MAX_RECORD_BODY: usize = plimsoll::queue::MAX_PAYLOAD_LIMIT + 2 * (2 + MAX_FIELD) + 8;
/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 256 << 10;
/// One spooled webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub queue: String,
    /// The record's identity, its idempotency key in Redis: the delivery id
    /// when the webhook has one, else one minted at intake before the first
    /// enqueue attempt. `None` only in records spooled by versions that did
    /// not mint one (those are replayed at least once).
    pub idempotency_key: Option<String>,
    pub received_at_ms: u64,
    pub payload: Vec<u8>,
}

impl SpoolRecord {
    pub(crate) fn encode_body(&self) -> Vec<u8> {
        let key = self.idempotency_key.as_deref().unwrap_or("");
        let queue = &self.queue.as_bytes()[..self.queue.len().min(MAX_FIELD)];
        let key = &key.as_bytes()[..key.len().min(MAX_FIELD)];
        let body_len = 2 + queue.len() + 2 + key.len() + 8 + self.payload.len();
        let mut body = Vec::with_capacity(body_len);
        body.extend_from_slice(&(queue.len() as u16).to_le_bytes());
        body.extend_from_slice(queue);
        body.extend_from_slice(&(key.len() as u16).to_le_bytes());
        body.extend_from_slice(key);
        body.extend_from_slice(&self.received_at_ms.to_le_bytes());
        body.extend_from_slice(&self.payload);
        body
    }

    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let mut at = 0;
        let mut take = |n: usize| -> Option<&[u8]> {
            let slice = body.get(at..at + n)?;
            at += n;
            Some(slice)
        };
        let queue_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let queue = String::from_utf8(take(queue_len)?.to_vec()).ok()?;
        let key_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let key = String::from_utf8(take(key_len)?.to_vec()).ok()?;
        let received_at_ms = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let payload = body.get(at..)?.to_vec();
        Some(Self {
            queue,
            idempotency_key: (!key.is_empty()).then_some(key),
            received_at_ms,
            payload,
        })
    }
}

/// `body` framed: magic, length, CRC, body.
pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER + body.len());
    frame.push(MAGIC);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Makes the folder's entries (a file created or renamed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One step of a walk over frames.
pub(crate) enum Step {
    /// A valid frame at `start..end`.
    Frame {
        start: u64,
        end: u64,
        body: Vec<u8>,
    },
    /// `from..to` holds no valid frame; the next one, if any, starts at `to`.
    Skipped {
        from: u64,
        to: u64,
    },
    End,
}

/// The frames of a file between two offsets, resynchronising past bad
/// stretches on the next offset where a whole valid frame (magic, a length
/// within [`MAX_RECORD_BODY`] and the region, CRC) starts.
pub(crate) struct Frames<'f> {
    file: &'f File,
    at: u64,
    limit: u64,
    buffer: Vec<u8>,
    buffer_at: u64,
}

impl<'f> Frames<'f> {
    pub(crate) fn new(file: &'f File, from: u64, limit: u64) -> Self {
        Self {
            file,
            at: from,
            limit,
            buffer: Vec::new(),
            buffer_at: 0,
        }
    }

    pub(crate) fn next(&mut self) -> io::Result<Step> {
        if self.at >= self.limit {
            return Ok(Step::End);
        }
        let start = self.at;
        if let Some(body) = self.frame_at(start)? {
            let end = start + (FRAME_HEADER + body.len()) as u64;
            self.at = end;
            return Ok(Step::Frame { start, end, body });
        }
        let to = self.resync(start + 1)?.unwrap_or(self.limit);
        self.at = to;
        Ok(Step::Skipped { from: start, to })
    }

    /// The body of the valid frame at `at`, if one starts there.
    fn frame_at(&mut self, at: u64) -> io::Result<Option<Vec<u8>>> {
        if at + FRAME_HEADER as u64 > self.limit {
            return Ok(None);
        }
        let header: [u8; FRAME_HEADER] = self
            .bytes(at, FRAME_HEADER)?
            .try_into()
            .expect("a header's bytes");
        if header[0] != MAGIC {
            return Ok(None);
        }
        let len = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes"));
        // Bounded before anything is allocated for it.
        if len > MAX_RECORD_BODY || at + (FRAME_HEADER + len) as u64 > self.limit {
            return Ok(None);
        }
        let body = self.bytes(at + FRAME_HEADER as u64, len)?;
        Ok((crc32fast::hash(body) == crc).then(|| body.to_vec()))
    }

    /// The next offset from `from` where a valid frame starts.
    fn resync(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut at = from;
        while at + FRAME_HEADER as u64 <= self.limit {
            let len = ((self.limit - at) as usize).min(READ_CHUNK);
            match self.bytes(at, len)?.iter().position(|&b| b == MAGIC) {
                None => at += len as u64,
                Some(i) => {
                    let candidate = at + i as u64;
                    if self.frame_at(candidate)?.is_some() {
                        return Ok(Some(candidate));
                    }
                    at = candidate + 1;
                }
            }
        }
        Ok(None)
    }

    /// `len` bytes at `at` (within the region), read in chunks.
    fn bytes(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let end = at + len as u64;
        let buffer_end = self.buffer_at + self.buffer.len() as u64;
        if at < self.buffer_at || end > buffer_end {
            let want = (len.max(READ_CHUNK) as u64).min(self.limit - at) as usize;
            self.buffer.resize(want, 0);
            self.file.read_exact_at(&mut self.buffer, at)?;
            self.buffer_at = at;
        }
        let start = (at - self.buffer_at) as usize;
        Ok(&self.buffer[start..start + len])
    }
}
