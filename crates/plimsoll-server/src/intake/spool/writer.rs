//! The spool's one writer thread: it takes appends from a queue, writes
//! as many as are waiting in one write and one fsync (group commit), and
//! answers each only once its bytes are durable. A failed write is cut back
//! to the last acknowledged offset, or the segment replaced, before anything
//! else is written (see the module docs of the spool).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use std::sync::atomic::Ordering;

use super::{
    Append, Cursor, GROUP_COMMIT_MAX, Inner, SEGMENT_BYTES, SpoolError, WriteFault, Written, lock,
    segment_path, sync_dir,
};

/// The segment the writer appends to, and the length of its acknowledged
/// prefix: nothing but acknowledged records is ever left before a write.
pub(super) struct SegmentWriter {
    pub(super) dir: PathBuf,
    pub(super) segment: u64,
    pub(super) good_len: u64,
    pub(super) file: Option<File>,
}

impl SegmentWriter {
    fn append(
        &mut self,
        bytes: &[u8],
        fault: Option<WriteFault>,
        written: &Mutex<Written>,
    ) -> io::Result<()> {
        if self.good_len >= SEGMENT_BYTES {
            self.seal_and_roll(written);
        }
        let result = self.write(bytes, fault);
        if result.is_err() {
            let cut_fails = matches!(fault, Some(WriteFault::TornWriteAndFailedCut { .. }));
            self.cut_back(cut_fails, written);
        }
        result
    }

    fn write(&mut self, bytes: &[u8], fault: Option<WriteFault>) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(segment_path(&self.dir, self.segment))?;
                // Once per segment and process, before its first record is
                // acknowledged: the file may have just been created (or
                // created by a process that crashed before syncing).
                sync_dir(&self.dir)?;
                self.file.insert(file)
            }
        };
        if let Some(WriteFault::TornWrite { after } | WriteFault::TornWriteAndFailedCut { after }) =
            fault
        {
            file.write_all(&bytes[..after.min(bytes.len())])?;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected write failure (test hook)",
            ));
        }
        file.write_all(bytes)?;
        file.sync_data()?;
        self.good_len += bytes.len() as u64;
        Ok(())
    }

    /// After a failed write: cut the segment back to its acknowledged
    /// prefix, or, when that fails too, seal it there and go on in a new
    /// segment, so that no record ever follows what the failure left.
    fn cut_back(&mut self, injected_failure: bool, written: &Mutex<Written>) {
        let Some(file) = &self.file else {
            // Nothing was opened, so nothing was written.
            return;
        };
        let cut = if injected_failure {
            Err(io::Error::other("injected cut failure (test hook)"))
        } else {
            file.set_len(self.good_len).and_then(|()| file.sync_all())
        };
        if let Err(err) = cut {
            tracing::error!(segment = self.segment, good_len = self.good_len, error = %err,
                "could not cut a failed spool write back; sealing the segment there and going on in a new one");
            self.seal_and_roll(written);
        }
    }

    fn seal_and_roll(&mut self, written: &Mutex<Written>) {
        let mut written = lock(written);
        written.sealed.insert(self.segment, self.good_len);
        self.segment += 1;
        self.good_len = 0;
        self.file = None;
        written.head = Cursor {
            segment: self.segment,
            offset: 0,
        };
    }
}

/// The writer thread: group commit of everything queued, then one sync.
pub(super) fn writer(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Append>,
    mut segment: SegmentWriter,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut buffer = Vec::with_capacity(batch.iter().map(|a| a.frame.len()).sum());
        for append in &batch {
            buffer.extend_from_slice(&append.frame);
        }
        let fault = lock(&inner.fault).take();
        let result = segment.append(&buffer, fault, &inner.written);
        match &result {
            Ok(()) => {
                // Counted before they become readable, so that a commit
                // never subtracts what was not added.
                inner
                    .records
                    .fetch_add(batch.len() as u64, Ordering::SeqCst);
                inner
                    .appended
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                lock(&inner.written).head = Cursor {
                    segment: segment.segment,
                    offset: segment.good_len,
                };
                inner.appended_notify.notify_one();
            }
            Err(err) => {
                tracing::error!(error = %err, webhooks = batch.len(),
                    "spool write failed; those webhooks were refused");
            }
        }
        for append in batch {
            let _ = append.done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(SpoolError::Io(e.to_string())),
            });
        }
    }
    if let Some(f) = segment.file {
        let _ = f.sync_all();
    }
}
