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
//! [`SEGMENT_BYTES`]), and a `cursor` file naming the segment and offset up to
//! which records have been handed to Redis. A record is
//! `[0xA5][len: u32][crc32: u32][body]`, body =
//! `[queue len: u16][queue][key len: u16][key][received at ms: u64][payload]`.
//! At open, a torn record at the end (a crash mid-write) is cut off: it was
//! never acknowledged.
//!
//! The log is bounded by bytes: an append that would pass the bound fails, and
//! the intake answers 503 so that the sender retries later — never a 2xx for
//! something not kept.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

/// Size at which the writer starts a new segment; fully replayed segments
/// are deleted whole.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Appends waiting for the writer at most; beyond, callers wait.
const QUEUE_DEPTH: usize = 65_536;
const MAGIC: u8 = 0xA5;
const FRAME_HEADER: usize = 9;
/// Longest queue name or key a record holds (the intake checks earlier).
const MAX_FIELD: usize = u16::MAX as usize;

/// One spooled webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub queue: String,
    pub idempotency_key: Option<String>,
    pub received_at_ms: u64,
    pub payload: Vec<u8>,
}

impl SpoolRecord {
    fn encode(&self) -> Vec<u8> {
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
        let mut frame = Vec::with_capacity(FRAME_HEADER + body.len());
        frame.push(MAGIC);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        frame
    }

    fn decode(body: &[u8]) -> Option<Self> {
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

/// Why an append failed. The webhook was not kept.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool is at its byte bound.
    #[error("the spool is full ({bytes} of {max} bytes)")]
    Full { bytes: u64, max: u64 },
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
    /// Records handed to Redis since the process started.
    pub replayed: u64,
}

/// A position in the log: segment number and byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

/// Records read for replay, in order, each with the position after it and
/// the size of its frame, so that a prefix can be committed.
#[derive(Debug, Default)]
pub struct ReplayBatch {
    pub records: Vec<SpoolRecord>,
    ends: Vec<Cursor>,
    sizes: Vec<u64>,
}

struct Append {
    frame: Vec<u8>,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    bytes: AtomicU64,
    records: AtomicU64,
    appended: AtomicU64,
    replayed: AtomicU64,
    /// Where replay has reached (persisted in `cursor`).
    cursor: Mutex<Cursor>,
    /// The segment being written.
    head: AtomicU64,
    sender: Mutex<Option<mpsc::Sender<Append>>>,
    /// Woken after every append, for the replayer.
    appended_notify: Notify,
}

/// The spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what is there: counts
    /// the records not yet replayed and cuts off a torn last record.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let cursor = read_cursor(dir)?;
        let mut segments = list_segments(dir)?;
        segments.retain(|n| *n >= cursor.segment);
        let mut bytes = 0;
        let mut records = 0;
        for &segment in &segments {
            let path = segment_path(dir, segment);
            let from = if segment == cursor.segment {
                cursor.offset
            } else {
                0
            };
            let (valid_len, count_after, bytes_after) = scan(&path, from)?;
            let len = fs::metadata(&path)?.len();
            if valid_len < len {
                tracing::warn!(segment = %path.display(), kept = valid_len, cut = len - valid_len,
                    "cutting a torn record off the spool (it was never acknowledged)");
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(valid_len)?;
                File::open(&path)?.sync_all()?;
            }
            bytes += bytes_after;
            records += count_after;
        }
        // Segments before the cursor are fully replayed leftovers.
        for segment in list_segments(dir)? {
            if segment < cursor.segment {
                let _ = fs::remove_file(segment_path(dir, segment));
            }
        }
        let head = segments.last().copied().unwrap_or(cursor.segment.max(1));
        let first = segments.first().copied().unwrap_or(head);
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            max_bytes,
            bytes: AtomicU64::new(bytes),
            records: AtomicU64::new(records),
            appended: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            cursor: Mutex::new(if cursor.segment == 0 {
                Cursor {
                    segment: first,
                    offset: 0,
                }
            } else {
                cursor
            }),
            head: AtomicU64::new(head),
            sender: Mutex::new(None),
            appended_notify: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        *inner.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let writer_inner = inner.clone();
        std::thread::Builder::new()
            .name("plimsoll-spool".into())
            .spawn(move || writer(writer_inner, rx))?;
        if records > 0 {
            tracing::warn!(records, bytes, dir = %dir.display(), "the spool holds webhooks from before; they will be replayed");
        }
        Ok(Self { inner })
    }

    /// Appends a record and returns once it is on disk.
    pub async fn append(&self, record: &SpoolRecord) -> Result<(), SpoolError> {
        let frame = record.encode();
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
        let sender = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
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
        match &result {
            Ok(()) => {
                self.inner.records.fetch_add(1, Ordering::SeqCst);
                self.inner.appended.fetch_add(1, Ordering::Relaxed);
                self.inner.appended_notify.notify_one();
            }
            Err(_) => {
                self.inner.bytes.fetch_sub(len, Ordering::SeqCst);
            }
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

    /// Marks the first `count` records of a batch as handed to Redis:
    /// persists the cursor and deletes segments wholly behind it.
    pub async fn commit(&self, batch: &ReplayBatch, count: usize) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        let inner = self.inner.clone();
        let end = batch.ends[count - 1];
        let bytes = batch.sizes[..count].iter().sum();
        tokio::task::spawn_blocking(move || commit(&inner, end, count as u64, bytes))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Stops the writer after the appends already queued.
    pub fn close(&self) {
        self.inner
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
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

/// Walks a segment: (length of its valid prefix, records from `from` on,
/// their bytes).
fn scan(path: &Path, from: u64) -> io::Result<(u64, u64, u64)> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut at = 0u64;
    let (mut count, mut bytes) = (0u64, 0u64);
    loop {
        match read_frame(&mut reader)? {
            Some(body) => {
                let len = (FRAME_HEADER + body.len()) as u64;
                if at >= from {
                    count += 1;
                    bytes += len;
                }
                at += len;
            }
            None => return Ok((at, count, bytes)),
        }
    }
}

/// One frame's body, or None at the end or at a torn or corrupt frame.
fn read_frame(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; FRAME_HEADER];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    if header[0] != MAGIC {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes"));
    let mut body = vec![0u8; len];
    match reader.read_exact(&mut body) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    Ok((crc32fast::hash(&body) == crc).then_some(body))
}

/// The writer thread: group commit of everything queued, then one sync.
fn writer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Append>) {
    let mut head = inner.head.load(Ordering::SeqCst);
    let mut file: Option<File> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
            if batch.len() >= 4096 {
                break;
            }
        }
        let result = (|| -> io::Result<()> {
            let mut f = match file.take() {
                Some(f) => f,
                None => open_segment(&inner.dir, head)?,
            };
            if f.metadata()?.len() >= SEGMENT_BYTES {
                f.sync_data()?;
                head += 1;
                inner.head.store(head, Ordering::SeqCst);
                f = open_segment(&inner.dir, head)?;
                File::open(&inner.dir)?.sync_all()?;
            }
            let mut buffer = Vec::with_capacity(batch.iter().map(|a| a.frame.len()).sum());
            for append in &batch {
                buffer.extend_from_slice(&append.frame);
            }
            f.write_all(&buffer)?;
            f.sync_data()?;
            file = Some(f);
            Ok(())
        })();
        let reply = |r: &io::Result<()>| match r {
            Ok(()) => Ok(()),
            Err(e) => Err(SpoolError::Io(e.to_string())),
        };
        if let Err(err) = &result {
            tracing::error!(error = %err, "spool write failed; those webhooks were refused");
            // Start from a fresh handle next time; a failed write may have
            // left a torn frame, which the next open cuts off.
            file = None;
        }
        for append in batch {
            let _ = append.done.send(reply(&result));
        }
    }
    if let Some(f) = file {
        let _ = f.sync_all();
    }
}

fn open_segment(dir: &Path, segment: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, segment))
}

fn read_batch(inner: &Inner, max: usize) -> io::Result<ReplayBatch> {
    let mut cursor = *inner.cursor.lock().unwrap_or_else(|e| e.into_inner());
    let head = inner.head.load(Ordering::SeqCst);
    let mut batch = ReplayBatch::default();
    while batch.records.len() < max && cursor.segment <= head {
        let path = segment_path(&inner.dir, cursor.segment);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if cursor.segment < head {
                    cursor = Cursor {
                        segment: cursor.segment + 1,
                        offset: 0,
                    };
                    continue;
                }
                break;
            }
            Err(err) => return Err(err),
        };
        file.seek(SeekFrom::Start(cursor.offset))?;
        let mut reader = BufReader::new(file);
        while batch.records.len() < max {
            match read_frame(&mut reader)? {
                Some(body) => {
                    let len = (FRAME_HEADER + body.len()) as u64;
                    cursor.offset += len;
                    match SpoolRecord::decode(&body) {
                        Some(record) => {
                            batch.records.push(record);
                            batch.ends.push(cursor);
                            batch.sizes.push(len);
                        }
                        None => tracing::error!(
                            segment = cursor.segment,
                            "a spool record with a valid checksum does not decode; skipped"
                        ),
                    }
                }
                None => break,
            }
        }
        if batch.records.len() < max && cursor.segment < head {
            // This segment is done; the writer has moved on.
            cursor = Cursor {
                segment: cursor.segment + 1,
                offset: 0,
            };
        } else {
            break;
        }
    }
    Ok(batch)
}

fn commit(inner: &Inner, end: Cursor, records: u64, bytes: u64) -> io::Result<()> {
    let tmp = inner.dir.join("cursor.tmp");
    {
        let mut f = File::create(&tmp)?;
        write!(f, "{} {}", end.segment, end.offset)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, inner.dir.join("cursor"))?;
    File::open(&inner.dir)?.sync_all()?;
    *inner.cursor.lock().unwrap_or_else(|e| e.into_inner()) = end;
    inner.records.fetch_sub(records, Ordering::SeqCst);
    inner.bytes.fetch_sub(bytes, Ordering::SeqCst);
    inner.replayed.fetch_add(records, Ordering::Relaxed);
    for segment in list_segments(&inner.dir)? {
        if segment < end.segment {
            fs::remove_file(segment_path(&inner.dir, segment))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> SpoolRecord {
        SpoolRecord {
            queue: "hooks.github".into(),
            idempotency_key: i.is_multiple_of(2).then(|| format!("delivery-{i}")),
            received_at_ms: 1_700_000_000_000 + i,
            payload: format!("{{\"n\":{i}}}").into_bytes(),
        }
    }

    #[tokio::test]
    async fn records_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..100 {
            spool.append(&record(i)).await.unwrap();
        }
        assert_eq!(spool.stats().records, 100);
        spool.close();
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats().records, 100, "the count is recovered");
        let first = spool.read_batch(60).await.unwrap();
        assert_eq!(first.records, (0..60).map(record).collect::<Vec<_>>());
        spool.commit(&first, 60).await.unwrap();
        spool.close();
        drop(spool);

        // Only what was not committed is replayed after a restart.
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats().records, 40);
        let rest = spool.read_batch(1000).await.unwrap();
        assert_eq!(rest.records, (60..100).map(record).collect::<Vec<_>>());
        spool.commit(&rest, 40).await.unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.stats().bytes, 0);
    }

    #[tokio::test]
    async fn a_torn_last_record_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..3 {
            spool.append(&record(i)).await.unwrap();
        }
        spool.close();
        drop(spool);
        // A crash mid-write leaves half a frame.
        let segment = list_segments(dir.path()).unwrap()[0];
        let path = segment_path(dir.path(), segment);
        let mut frame = record(3).encode();
        frame.truncate(frame.len() / 2);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&frame)
            .unwrap();

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats().records, 3);
        let batch = spool.read_batch(10).await.unwrap();
        assert_eq!(batch.records.len(), 3);
        // And appends after the cut are readable.
        spool.append(&record(4)).await.unwrap();
        spool.commit(&batch, 3).await.unwrap();
        assert_eq!(spool.read_batch(10).await.unwrap().records, vec![record(4)]);
    }

    #[tokio::test]
    async fn past_its_bound_the_spool_refuses_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let frame = record(0).encode().len() as u64;
        let spool = Spool::open(dir.path(), frame * 3).unwrap();
        for i in 0..3 {
            spool.append(&record(i)).await.unwrap();
        }
        let err = spool.append(&record(3)).await.unwrap_err();
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert_eq!(spool.stats().records, 3);
    }

    #[test]
    fn records_round_trip_through_their_encoding() {
        let r = record(7);
        let frame = r.encode();
        let body = read_frame(&mut &frame[..]).unwrap().unwrap();
        assert_eq!(SpoolRecord::decode(&body).unwrap(), r);
        let mut corrupt = frame.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert!(
            read_frame(&mut &corrupt[..]).unwrap().is_none(),
            "checksum catches it"
        );
    }
}
