//! The quarantine: spooled webhooks that Redis refused for a reason that
//! retrying will not change (the queue's payload limit was lowered while they
//! waited, a key of the queue holds the wrong type, an ACL forbids the
//! write…).
//!
//! Replay hands records to Redis in order, so one record that can never be
//! enqueued would hold back every record behind it. Such a record is moved
//! here instead — appended to `quarantine.log` in the spool's folder and
//! synced before the replay position passes it — and replay moves on. It
//! stays visible: `GET /v1/spool/quarantine`, the dashboard's spool card,
//! `plimsoll_spool_quarantined_total`, a `/readyz` line and an alert. An
//! operator who fixed the cause sends the records back to the spool
//! (`POST /v1/spool/quarantine/retry`) or drops them (`…/purge`).
//!
//! Bounded: at most [`MAX_QUARANTINE_RECORDS`] records and as many bytes as
//! the spool itself may hold (`spool.max_bytes`), so any record the spool
//! kept fits into an empty quarantine. When it is full, replay stops and
//! waits (the records stay in the spool; nothing is dropped) and `/readyz`
//! says so. In memory it keeps only what it lists (a payload's first
//! [`PREVIEW_BYTES`]); payloads stay on disk.
//!
//! A crash between the append here and the spool's commit leaves a record in
//! both: its replay is refused again, and the quarantine, seeing the same
//! queue and identity, keeps one copy.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::frame::{Frames, SpoolRecord, Step, frame, sync_dir};

/// Records the quarantine holds at most.
pub const MAX_QUARANTINE_RECORDS: usize = 10_000;
/// Bytes of each payload kept in memory for listing.
pub const PREVIEW_BYTES: usize = 256;
/// Entry format, the first byte of each entry's body.
const ENTRY_VERSION: u8 = 1;

/// A quarantined record, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedView {
    pub queue: String,
    pub identity: Option<String>,
    pub received_at_ms: u64,
    pub quarantined_at_ms: u64,
    /// Why Redis refused it.
    pub reason: String,
    pub payload_bytes: usize,
    /// The payload's first [`PREVIEW_BYTES`] bytes.
    pub preview: Vec<u8>,
}

/// Counts and bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuarantineStats {
    pub records: u64,
    pub bytes: u64,
    pub max_records: u64,
    pub max_bytes: u64,
    /// Records quarantined since the process started.
    pub added: u64,
}

impl QuarantineStats {
    /// Whether a record of `bytes` more would pass a bound.
    fn refuses(&self, bytes: u64) -> bool {
        self.records >= self.max_records || self.bytes + bytes > self.max_bytes
    }
}

/// Why a record could not be quarantined; it stays in the spool.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error(
        "the quarantine is full ({records} of {max_records} records, {bytes} of {max_bytes} bytes)"
    )]
    Full {
        records: u64,
        max_records: u64,
        bytes: u64,
        max_bytes: u64,
    },
    #[error("the quarantine could not write: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone)]
struct Entry {
    /// Order of arrival in this process, to name entries to remove.
    seq: u64,
    view: QuarantinedView,
    /// Where its frame is in the file, and its length.
    offset: u64,
    size: u64,
}

#[derive(Debug)]
struct State {
    entries: Vec<Entry>,
    /// Length of the file: every byte of it is an entry.
    len: u64,
    next_seq: u64,
    added: u64,
}

/// The quarantine; cheap to clone. Its methods do file I/O: call them from
/// blocking threads.
#[derive(Debug, Clone)]
pub struct Quarantine {
    path: PathBuf,
    max_records: u64,
    max_bytes: u64,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn encode(record: &SpoolRecord, reason: &str, at_ms: u64) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(u16::MAX as usize)];
    let record = record.encode_body();
    let mut body = Vec::with_capacity(1 + 8 + 2 + reason.len() + record.len());
    body.push(ENTRY_VERSION);
    body.extend_from_slice(&at_ms.to_le_bytes());
    body.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    body.extend_from_slice(reason);
    body.extend_from_slice(&record);
    body
}

/// The record, the reason and the time of an entry's body.
fn decode(body: &[u8]) -> Option<(SpoolRecord, String, u64)> {
    if *body.first()? != ENTRY_VERSION {
        return None;
    }
    let at_ms = u64::from_le_bytes(body.get(1..9)?.try_into().ok()?);
    let reason_len = u16::from_le_bytes(body.get(9..11)?.try_into().ok()?) as usize;
    let reason = String::from_utf8_lossy(body.get(11..11 + reason_len)?).into_owned();
    let record = SpoolRecord::decode(body.get(11 + reason_len..)?)?;
    Some((record, reason, at_ms))
}

fn view(record: &SpoolRecord, reason: String, at_ms: u64) -> QuarantinedView {
    QuarantinedView {
        queue: record.queue.clone(),
        identity: record.idempotency_key.clone(),
        received_at_ms: record.received_at_ms,
        quarantined_at_ms: at_ms,
        reason,
        payload_bytes: record.payload.len(),
        preview: record.payload[..record.payload.len().min(PREVIEW_BYTES)].to_vec(),
    }
}

impl Quarantine {
    /// Opens (or creates) the quarantine file at `path`, keeping every valid
    /// entry and cutting off a torn last one.
    pub fn open(path: &Path, max_records: usize, max_bytes: u64) -> io::Result<Self> {
        let mut state = State {
            entries: Vec::new(),
            len: 0,
            next_seq: 0,
            added: 0,
        };
        if let Ok(file) = File::open(path) {
            let file_len = file.metadata()?.len();
            let mut frames = Frames::new(&file, 0, file_len);
            let mut valid_len = 0;
            loop {
                match frames.next()? {
                    Step::Frame { start, end, body } => {
                        valid_len = end;
                        match decode(&body) {
                            Some((record, reason, at_ms)) => {
                                state.entries.push(Entry {
                                    seq: state.next_seq,
                                    view: view(&record, reason, at_ms),
                                    offset: start,
                                    size: end - start,
                                });
                                state.next_seq += 1;
                            }
                            None => tracing::error!(quarantine = %path.display(), at = start,
                                "a quarantine entry with a valid checksum does not decode; skipped"),
                        }
                    }
                    Step::Skipped { from, to } => tracing::warn!(quarantine = %path.display(),
                        at = from, bytes = to - from, "skipped bytes that are not a quarantine entry"),
                    Step::End => break,
                }
            }
            if valid_len < file_len {
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(valid_len)?;
                file.sync_all()?;
            }
            state.len = valid_len;
            if !state.entries.is_empty() {
                tracing::warn!(records = state.entries.len(), quarantine = %path.display(),
                    "the spool's quarantine holds webhooks Redis refused; see GET /v1/spool/quarantine");
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            max_records: max_records as u64,
            max_bytes,
            state: Arc::new(Mutex::new(state)),
        })
    }

    /// Counts and bounds now.
    pub fn stats(&self) -> QuarantineStats {
        let state = lock(&self.state);
        QuarantineStats {
            records: state.entries.len() as u64,
            bytes: state.entries.iter().map(|e| e.size).sum(),
            max_records: self.max_records,
            max_bytes: self.max_bytes,
            added: state.added,
        }
    }

    /// Entries from `offset`, oldest first, at most `limit`.
    pub fn list(&self, offset: usize, limit: usize) -> Vec<QuarantinedView> {
        lock(&self.state)
            .entries
            .iter()
            .skip(offset)
            .take(limit)
            .map(|e| e.view.clone())
            .collect()
    }

    /// Quarantines `record`, durably, for `reason`. Returns false when an
    /// entry of the same queue and identity is there already.
    pub fn add(
        &self,
        record: &SpoolRecord,
        reason: &str,
        at_ms: u64,
    ) -> Result<bool, QuarantineError> {
        let mut state = lock(&self.state);
        if record.idempotency_key.is_some()
            && state
                .entries
                .iter()
                .any(|e| e.view.queue == record.queue && e.view.identity == record.idempotency_key)
        {
            return Ok(false);
        }
        let bytes = frame(&encode(record, reason, at_ms));
        let stats = QuarantineStats {
            records: state.entries.len() as u64,
            bytes: state.entries.iter().map(|e| e.size).sum(),
            max_records: self.max_records,
            max_bytes: self.max_bytes,
            added: state.added,
        };
        if stats.refuses(bytes.len() as u64) {
            return Err(QuarantineError::Full {
                records: stats.records,
                max_records: stats.max_records,
                bytes: stats.bytes,
                max_bytes: stats.max_bytes,
            });
        }
        let created = !self.path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let written = (|| {
            if created && let Some(dir) = self.path.parent() {
                sync_dir(dir)?;
            }
            file.write_all(&bytes)?;
            file.sync_data()
        })();
        if let Err(err) = written {
            // As in the spool: nothing is ever appended after a torn entry.
            if let Err(cut) = file.set_len(state.len).and_then(|()| file.sync_all()) {
                tracing::error!(error = %cut, "could not cut a failed quarantine write back");
            }
            return Err(err.into());
        }
        let (seq, offset) = (state.next_seq, state.len);
        state.next_seq += 1;
        state.entries.push(Entry {
            seq,
            view: view(record, reason.to_string(), at_ms),
            offset,
            size: bytes.len() as u64,
        });
        state.len += bytes.len() as u64;
        state.added += 1;
        Ok(true)
    }

    /// Every entry's record, read back from disk, with the token that
    /// [`remove`](Self::remove) takes.
    pub fn records(&self) -> io::Result<Vec<(u64, SpoolRecord)>> {
        let entries = lock(&self.state).entries.clone();
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut frames = Frames::new(&file, entry.offset, entry.offset + entry.size);
            match frames.next()? {
                Step::Frame { body, .. } => {
                    if let Some((record, _, _)) = decode(&body) {
                        records.push((entry.seq, record));
                    }
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("quarantine entry at {} is unreadable", entry.offset),
                    ));
                }
            }
        }
        Ok(records)
    }

    /// Tokens of every entry there now.
    pub fn tokens(&self) -> Vec<u64> {
        lock(&self.state).entries.iter().map(|e| e.seq).collect()
    }

    /// Removes the entries `tokens` name (rewriting the file: write a new
    /// one, sync, rename over, sync the folder). Returns how many went.
    pub fn remove(&self, tokens: &[u64]) -> io::Result<usize> {
        let mut state = lock(&self.state);
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = state
            .entries
            .iter()
            .cloned()
            .partition(|e| tokens.contains(&e.seq));
        if gone.is_empty() {
            return Ok(0);
        }
        let tmp = self.path.with_extension("log.tmp");
        let mut rewritten = Vec::with_capacity(kept.len());
        {
            let old = File::open(&self.path)?;
            let mut new = File::create(&tmp)?;
            let mut at = 0;
            for entry in kept {
                let mut bytes = vec![0u8; entry.size as usize];
                std::os::unix::fs::FileExt::read_exact_at(&old, &mut bytes, entry.offset)?;
                new.write_all(&bytes)?;
                rewritten.push(Entry {
                    offset: at,
                    ..entry
                });
                at += bytes.len() as u64;
            }
            new.sync_all()?;
            state.len = at;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        state.entries = rewritten;
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> SpoolRecord {
        SpoolRecord {
            queue: "hooks.big".into(),
            idempotency_key: Some(format!("id-{i}")),
            received_at_ms: i,
            payload: vec![b'x'; 100],
        }
    }

    #[test]
    fn entries_survive_a_reopen_once_each_and_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quarantine.log");
        let q = Quarantine::open(&path, 3, 1 << 20).unwrap();
        assert!(q.add(&record(1), "too large", 10).unwrap());
        assert!(
            !q.add(&record(1), "too large", 11).unwrap(),
            "same identity"
        );
        assert!(q.add(&record(2), "too large", 12).unwrap());
        assert!(q.add(&record(3), "too large", 13).unwrap());
        let err = q.add(&record(4), "too large", 14).unwrap_err();
        assert!(matches!(err, QuarantineError::Full { .. }), "{err}");

        let q = Quarantine::open(&path, 3, 1 << 20).unwrap();
        let listed = q.list(0, 10);
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].identity.as_deref(), Some("id-1"));
        assert_eq!(listed[0].reason, "too large");
        assert_eq!(listed[0].payload_bytes, 100);

        let tokens = q.tokens();
        assert_eq!(q.remove(&tokens[..2]).unwrap(), 2);
        let records = q.records().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1, record(3));
        let q = Quarantine::open(&path, 3, 1 << 20).unwrap();
        assert_eq!(q.stats().records, 1);
        assert_eq!(q.records().unwrap()[0].1, record(3));
    }
}
