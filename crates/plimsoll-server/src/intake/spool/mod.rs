//! The webhook spool: an append-only log on local disk that keeps every
//! accepted webhook Redis could not take, until it can.
//!
//! A webhook answered 2xx must not be lost, so while Redis is down or full the
//! intake appends to this log and answers only after the record is on disk
//! (`fdatasync`). Appends are group-committed: a writer thread takes every
//! append waiting, writes them in one go and syncs once, so thousands of
//! webhooks a second cost a handful of syncs.
//!
//! Layout: segment files `spool-<n>.log` (a new one every
//! [`SEGMENT_BYTES`]), a `cursor` file naming the segment and offset up to
//! which records have been handed to Redis, and the [quarantine]
//! (`quarantine.log`) of records Redis refused for good. A record is
//! `[0xA5][len: u32][crc32: u32][body]`, body =
//! `[queue len: u16][queue][key len: u16][key][received at ms: u64][payload]`,
//! the key being the record's identity (its delivery id, or one minted at
//! intake) that makes its replay idempotent.
//!
//! # Nothing acknowledged behind garbage
//!
//! A write can fail part-way (disk full, EIO) and leave a torn frame. The
//! writer keeps the length of the segment's acknowledged prefix and, after a
//! failed write, cuts the file back to it (`ftruncate` + `fsync`) before
//! anything else is written; if the cut fails too, it seals the segment at
//! that length and goes on in a new one. So no record is ever written after
//! bytes that are not a record. The replayer reads only what the writer has
//! acknowledged (the head segment up to its acknowledged length, sealed
//! segments up to theirs), never bytes a failed write may have left.
//!
//! Recovery at open keeps every record that is there: a bad stretch followed
//! by valid frames (a file written before that rule, or a flipped bit) is
//! skipped by resynchronising on the next frame whose magic, bounded length
//! ([`MAX_RECORD_BODY`]) and CRC hold, and logged; only the bytes after the
//! last valid frame — a write that was never acknowledged — are cut off.
//! Every segment file is made durable in its folder (`fsync` of the folder)
//! before a record in it is acknowledged.
//!
//! # Replay progress
//!
//! The replay position lives in memory and in `cursor`. A commit moves the
//! position in memory first — the records are in Redis, they must not be
//! handed over again — and then persists it; when persisting fails, the
//! next commit (or [`Spool::persist_cursor`]) writes the newer position.
//! After a crash the records behind a stale `cursor` are replayed again, and
//! their identities make Redis drop them as duplicates.
//!
//! The log is bounded by bytes: an append that would pass the bound fails, and
//! the intake answers 503 so that the sender retries later — never a 2xx for
//! something not kept.
//!
//! [quarantine]: super::quarantine

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc, oneshot};

use super::frame::{Frames, Step, frame, sync_dir};
mod writer;

pub use super::frame::{MAX_RECORD_BODY, SpoolRecord};
use super::quarantine::{MAX_QUARANTINE_RECORDS, Quarantine};
use writer::{SegmentWriter, writer};

/// Size at which the writer starts a new segment; fully replayed segments
/// are deleted whole.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Appends waiting for the writer at most; beyond, callers wait.
const QUEUE_DEPTH: usize = 65_536;
/// Appends the writer takes into one write and one sync at most.
const GROUP_COMMIT_MAX: usize = 4096;
/// The name of the quarantine's file in the spool's folder.
const QUARANTINE_FILE: &str = "quarantine.log";

/// Why an append failed. The webhook was not kept.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool is at its byte bound.
    #[error("the spool is full ({bytes} of {max} bytes)")]
    Full { bytes: u64, max: u64 },
    /// The record is longer than any the spool keeps.
    #[error("a record of {bytes} bytes is longer than the spool's {max}")]
    TooLarge { bytes: usize, max: usize },
    /// Writing or syncing failed.
    #[error("the spool could not write: {0}")]
    Io(String),
    /// The spool is closed (shutting down).
    #[error("the spool is closed")]
    Closed,
}

/// Records and bytes held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records not yet handed to Redis.
    pub records: u64,
    /// Bytes of the records not yet handed to Redis: what the bound
    /// applies to. On disk the spool takes at most one segment more, until
    /// replayed segments are deleted.
    pub bytes: u64,
    /// Records appended since the process started.
    pub appended: u64,
    /// Records handed to Redis (or to the quarantine) since the process
    /// started.
    pub replayed: u64,
}

/// A position in the log: segment number and byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

impl Cursor {
    fn next_segment(self) -> Self {
        Self {
            segment: self.segment + 1,
            offset: 0,
        }
    }
}

/// Records read for replay, in order, each with the position after it and
/// the size of its frame, so that a prefix can be committed.
#[derive(Debug, Default)]
pub struct ReplayBatch {
    pub records: Vec<SpoolRecord>,
    ends: Vec<Cursor>,
    sizes: Vec<u64>,
}

/// A fault the writer makes on its next write, for tests on machines where
/// a small file system cannot be mounted. Not for production use.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// Write this many bytes of the next group, then fail as a full disk
    /// does.
    TornWrite { after: usize },
    /// The same, and the cut back after it fails too.
    TornWriteAndFailedCut { after: usize },
}

struct Append {
    frame: Vec<u8>,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// What the writer has acknowledged: the head segment up to its length, and
/// the final length of every older segment still on disk. Readers never
/// read past it.
#[derive(Debug, Clone, Default)]
struct Written {
    head: Cursor,
    sealed: BTreeMap<u64, u64>,
}

impl Written {
    /// How far a reader may read in `segment`; `None` for a segment the
    /// writer has not reached, or one that is gone.
    fn limit(&self, segment: u64) -> Option<u64> {
        if segment == self.head.segment {
            Some(self.head.offset)
        } else {
            self.sealed.get(&segment).copied()
        }
    }
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    bytes: AtomicU64,
    records: AtomicU64,
    appended: AtomicU64,
    replayed: AtomicU64,
    /// Where replay has reached, in this process.
    cursor: Mutex<Cursor>,
    /// Where `cursor` on disk says replay has reached (at most `cursor`).
    persisted: Mutex<Cursor>,
    written: Mutex<Written>,
    sender: Mutex<Option<mpsc::Sender<Append>>>,
    /// Woken after every append, for the replayer.
    appended_notify: Notify,
    fault: Mutex<Option<WriteFault>>,
}

/// The spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
    quarantine: Quarantine,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what is there:
    /// counts the records not yet replayed, skips (and logs) bad stretches
    /// between valid records, and cuts off bytes after the last valid record
    /// of each segment (a write that was never acknowledged). Its quarantine
    /// is bounded by [`MAX_QUARANTINE_RECORDS`] and `max_bytes`, so any
    /// record the spool could hold fits.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let persisted = read_cursor(dir)?;
        // Segments before the cursor are fully replayed leftovers.
        for segment in list_segments(dir)? {
            if segment < persisted.segment {
                let _ = fs::remove_file(segment_path(dir, segment));
            }
        }
        let segments = list_segments(dir)?;
        let cursor = if segments.contains(&persisted.segment) {
            persisted
        } else {
            // A fresh spool, or a cursor whose segment is gone: start at the
            // first segment there is (or a new one), never in the middle of a
            // file the cursor was not counted in.
            Cursor {
                segment: segments
                    .first()
                    .copied()
                    .unwrap_or(persisted.segment.max(1)),
                offset: 0,
            }
        };
        if cursor != persisted {
            // Before anything is appended: a stale cursor file could
            // otherwise name an offset in a segment written from now on.
            write_cursor(dir, cursor)?;
        }
        let mut written = Written::default();
        let (mut bytes, mut records) = (0, 0);
        for &segment in &segments {
            let path = segment_path(dir, segment);
            let from = if segment == cursor.segment {
                cursor.offset
            } else {
                0
            };
            let scan = scan_segment(&path, from)?;
            if scan.valid_len < scan.file_len {
                tracing::warn!(segment = %path.display(), kept = scan.valid_len,
                    cut = scan.file_len - scan.valid_len,
                    "cutting bytes after the last valid record off the spool (a write that was never acknowledged)");
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(scan.valid_len)?;
                file.sync_all()?;
            }
            bytes += scan.bytes;
            records += scan.records;
            written.sealed.insert(segment, scan.valid_len);
        }
        let head = segments.last().copied().unwrap_or(cursor.segment);
        written.head = Cursor {
            segment: head,
            offset: written.sealed.remove(&head).unwrap_or(0),
        };
        let quarantine = Quarantine::open(
            &dir.join(QUARANTINE_FILE),
            MAX_QUARANTINE_RECORDS,
            max_bytes,
        )?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            max_bytes,
            bytes: AtomicU64::new(bytes),
            records: AtomicU64::new(records),
            appended: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            cursor: Mutex::new(cursor),
            persisted: Mutex::new(cursor),
            sender: Mutex::new(None),
            appended_notify: Notify::new(),
            fault: Mutex::new(None),
            written: Mutex::new(written.clone()),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        *lock(&inner.sender) = Some(tx);
        let writer_inner = inner.clone();
        let segment = SegmentWriter {
            dir: dir.to_path_buf(),
            segment: written.head.segment,
            good_len: written.head.offset,
            file: None,
        };
        std::thread::Builder::new()
            .name("plimsoll-spool".into())
            .spawn(move || writer(writer_inner, rx, segment))?;
        if records > 0 {
            tracing::warn!(records, bytes, dir = %dir.display(), "the spool holds webhooks from before; they will be replayed");
        }
        Ok(Self { inner, quarantine })
    }

    /// Appends a record and returns once it is on disk.
    pub async fn append(&self, record: &SpoolRecord) -> Result<(), SpoolError> {
        let body = record.encode_body();
        if body.len() > MAX_RECORD_BODY {
            return Err(SpoolError::TooLarge {
                bytes: body.len(),
                max: MAX_RECORD_BODY,
            });
        }
        let frame = frame(&body);
        let len = frame.len() as u64;
        // Reserve the bytes first, so that concurrent appends cannot pass the
        // bound together.
        let reserved = self
            .inner
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b + len <= self.inner.max_bytes).then_some(b + len)
            });
        if let Err(bytes) = reserved {
            return Err(SpoolError::Full {
                bytes,
                max: self.inner.max_bytes,
            });
        }
        let sender = lock(&self.inner.sender).clone();
        let result = match sender {
            None => Err(SpoolError::Closed),
            Some(sender) => {
                let (done, wait) = oneshot::channel();
                match sender.send(Append { frame, done }).await {
                    Err(_) => Err(SpoolError::Closed),
                    Ok(()) => wait.await.unwrap_or(Err(SpoolError::Closed)),
                }
            }
        };
        if result.is_err() {
            self.inner.bytes.fetch_sub(len, Ordering::SeqCst);
        }
        result
    }

    /// Records and bytes held now.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            records: self.inner.records.load(Ordering::SeqCst),
            bytes: self.inner.bytes.load(Ordering::SeqCst),
            appended: self.inner.appended.load(Ordering::Relaxed),
            replayed: self.inner.replayed.load(Ordering::Relaxed),
        }
    }

    /// Whether every spooled record has been handed to Redis.
    pub fn is_empty(&self) -> bool {
        self.inner.records.load(Ordering::SeqCst) == 0
    }

    /// The records Redis refused for good.
    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }

    /// The folder the spool lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Waits until something is appended.
    pub async fn appended(&self) {
        self.inner.appended_notify.notified().await;
    }

    /// Reads up to `max` records from the replay position, in order.
    pub async fn read_batch(&self, max: usize) -> io::Result<ReplayBatch> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || read_batch(&inner, max))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Marks the first `count` records of a batch as handed over (to Redis
    /// or to the quarantine): they are not read again by this process, and
    /// their bytes leave the bound. Then persists the position and deletes
    /// segments wholly behind it. An error says only that persisting failed:
    /// the records are still marked, and the next commit (or
    /// [`persist_cursor`](Self::persist_cursor)) persists the newer position.
    pub async fn commit(&self, batch: &ReplayBatch, count: usize) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        let end = batch.ends[count - 1];
        let bytes: u64 = batch.sizes[..count].iter().sum();
        {
            let mut cursor = lock(&self.inner.cursor);
            debug_assert!(end > *cursor, "a batch is committed once, in order");
            *cursor = end;
        }
        self.inner.records.fetch_sub(count as u64, Ordering::SeqCst);
        self.inner.bytes.fetch_sub(bytes, Ordering::SeqCst);
        self.inner
            .replayed
            .fetch_add(count as u64, Ordering::Relaxed);
        self.persist_cursor().await
    }

    /// Whether the replay position on disk lags the one in memory (a commit
    /// could not persist it).
    pub fn cursor_behind(&self) -> bool {
        *lock(&self.inner.persisted) < *lock(&self.inner.cursor)
    }

    /// Persists the replay position if the one on disk lags behind.
    pub async fn persist_cursor(&self) -> io::Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || persist_cursor(&inner))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Makes the writer's next write fail, for tests that cannot fill a
    /// disk.
    #[doc(hidden)]
    pub fn inject_write_fault(&self, fault: WriteFault) {
        *lock(&self.inner.fault) = Some(fault);
    }

    /// Stops the writer after the appends already queued.
    pub fn close(&self) {
        lock(&self.inner.sender).take();
    }
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("spool-{segment:020}.log"))
}

fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut segments: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("spool-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    segments.sort_unstable();
    Ok(segments)
}

fn read_cursor(dir: &Path) -> io::Result<Cursor> {
    match fs::read_to_string(dir.join("cursor")) {
        Ok(text) => {
            let mut parts = text.split_whitespace().map(str::parse::<u64>);
            match (parts.next(), parts.next()) {
                (Some(Ok(segment)), Some(Ok(offset))) => Ok(Cursor { segment, offset }),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a spool cursor", dir.join("cursor").display()),
                )),
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Cursor::default()),
        Err(err) => Err(err),
    }
}

/// Replaces `cursor` atomically (write, sync, rename, sync the folder).
fn write_cursor(dir: &Path, cursor: Cursor) -> io::Result<()> {
    let tmp = dir.join("cursor.tmp");
    {
        let mut f = File::create(&tmp)?;
        write!(f, "{} {}", cursor.segment, cursor.offset)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join("cursor"))?;
    sync_dir(dir)
}

/// What a walk over one segment found.
struct Scan {
    file_len: u64,
    /// Where the last valid record ends.
    valid_len: u64,
    /// Records (and their bytes) from the offset asked for on.
    records: u64,
    bytes: u64,
}

/// Walks a segment, counting the records from `from` on and logging every
/// bad stretch that valid records follow.
fn scan_segment(path: &Path, from: u64) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut frames = Frames::new(&file, 0, file_len);
    let mut scan = Scan {
        file_len,
        valid_len: 0,
        records: 0,
        bytes: 0,
    };
    let mut skipped: Option<(u64, u64)> = None;
    loop {
        match frames.next()? {
            Step::Frame { start, end, body } => {
                if let Some((at, to)) = skipped.take() {
                    tracing::warn!(segment = %path.display(), at, bytes = to - at,
                        "skipped bytes that are not a spool record; the records after them are kept");
                }
                if SpoolRecord::decode(&body).is_none() {
                    tracing::error!(segment = %path.display(), at = start,
                        "a spool record with a valid checksum does not decode; skipped");
                } else if start >= from {
                    scan.records += 1;
                    scan.bytes += end - start;
                }
                scan.valid_len = end;
            }
            Step::Skipped { from, to } => skipped = Some((from, to)),
            Step::End => return Ok(scan),
        }
    }
}

fn read_batch(inner: &Inner, max: usize) -> io::Result<ReplayBatch> {
    let mut cursor = *lock(&inner.cursor);
    let written = lock(&inner.written).clone();
    let mut batch = ReplayBatch::default();
    while batch.records.len() < max {
        let before_head = cursor.segment < written.head.segment;
        let limit = match written.limit(cursor.segment) {
            Some(limit) if cursor.offset < limit => limit,
            _ if before_head => {
                cursor = cursor.next_segment();
                continue;
            }
            _ => break,
        };
        let path = segment_path(&inner.dir, cursor.segment);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound && before_head => {
                cursor = cursor.next_segment();
                continue;
            }
            Err(err) => return Err(err),
        };
        let mut frames = Frames::new(&file, cursor.offset, limit);
        while batch.records.len() < max {
            match frames.next()? {
                Step::Frame { start, end, body } => {
                    cursor.offset = end;
                    match SpoolRecord::decode(&body) {
                        Some(record) => {
                            batch.records.push(record);
                            batch.ends.push(cursor);
                            batch.sizes.push(end - start);
                        }
                        // Not counted at open either.
                        None => tracing::error!(
                            segment = cursor.segment,
                            at = start,
                            "a spool record with a valid checksum does not decode; skipped"
                        ),
                    }
                }
                Step::Skipped { from, to } => tracing::warn!(
                    segment = cursor.segment,
                    at = from,
                    bytes = to - from,
                    "skipped bytes that are not a spool record"
                ),
                Step::End => break,
            }
        }
        if batch.records.len() < max && before_head {
            cursor = cursor.next_segment();
        } else {
            break;
        }
    }
    Ok(batch)
}

fn persist_cursor(inner: &Inner) -> io::Result<()> {
    let end = *lock(&inner.cursor);
    if *lock(&inner.persisted) >= end {
        return Ok(());
    }
    write_cursor(&inner.dir, end)?;
    *lock(&inner.persisted) = end;
    // Only segments behind the persisted position: a restart looks for the
    // one it names.
    for segment in list_segments(&inner.dir)? {
        if segment < end.segment {
            fs::remove_file(segment_path(&inner.dir, segment))?;
            lock(&inner.written).sealed.remove(&segment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
