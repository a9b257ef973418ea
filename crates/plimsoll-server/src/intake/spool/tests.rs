use super::*;
use crate::intake::frame::MAGIC;

fn record(i: u64) -> SpoolRecord {
    SpoolRecord {
        queue: "hooks.github".into(),
        idempotency_key: i.is_multiple_of(2).then(|| format!("delivery-{i}")),
        received_at_ms: 1_700_000_000_000 + i,
        payload: format!("{{\"n\":{i}}}").into_bytes(),
    }
}

fn encoded(i: u64) -> Vec<u8> {
    frame(&record(i).encode_body())
}

fn only_segment(dir: &Path) -> PathBuf {
    let segments = list_segments(dir).unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segment_path(dir, segments[0])
}

fn append_raw(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

async fn read_all(spool: &Spool) -> Vec<SpoolRecord> {
    spool.read_batch(100_000).await.unwrap().records
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
    let path = only_segment(dir.path());
    let mut frame = encoded(3);
    frame.truncate(frame.len() / 2);
    append_raw(&path, &frame);

    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.stats().records, 3);
    let batch = spool.read_batch(10).await.unwrap();
    assert_eq!(batch.records.len(), 3);
    // And appends after the cut are readable.
    spool.append(&record(4)).await.unwrap();
    spool.commit(&batch, 3).await.unwrap();
    assert_eq!(read_all(&spool).await, vec![record(4)]);
}

/// Disk full mid-write: the next batch was appended after the torn
/// frame, replay stopped there and a restart cut the file at it,
/// deleting every acknowledged record behind it.
#[tokio::test]
async fn a_failed_append_never_hides_the_records_after_it() {
    for fault in [
        WriteFault::TornWrite { after: 20 },
        WriteFault::TornWriteAndFailedCut { after: 20 },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&record(0)).await.unwrap();
        spool.inject_write_fault(fault);
        let err = spool.append(&record(1)).await.unwrap_err();
        assert!(matches!(err, SpoolError::Io(_)), "{err}");
        for i in 2..7 {
            spool.append(&record(i)).await.unwrap();
        }
        let kept = [0, 2, 3, 4, 5, 6].map(record).to_vec();
        assert_eq!(
            read_all(&spool).await,
            kept,
            "{fault:?}: replay reads past it"
        );
        assert_eq!(spool.stats().records, 6);
        spool.close();
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats().records, 6, "{fault:?}: a restart keeps them");
        assert_eq!(read_all(&spool).await, kept, "{fault:?}");
    }
}

/// A spool written before failed writes were cut back: a torn frame
/// with acknowledged records after it. Open used to cut the file at the
/// torn frame.
#[tokio::test]
async fn recovery_keeps_the_valid_records_after_a_torn_one() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(&record(0)).await.unwrap();
    spool.close();
    drop(spool);
    let path = only_segment(dir.path());
    let mut torn = encoded(1);
    torn.truncate(torn.len() - 3);
    append_raw(&path, &torn);
    // A length that would allocate gigabytes if believed.
    append_raw(&path, &[MAGIC, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4]);
    for i in 2..5 {
        append_raw(&path, &encoded(i));
    }
    let mut torn_tail = encoded(5);
    torn_tail.truncate(7);
    append_raw(&path, &torn_tail);

    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.stats().records, 4);
    let kept = [0, 2, 3, 4].map(record).to_vec();
    assert_eq!(read_all(&spool).await, kept);
    // The unacknowledged tail is cut, so appends land right after.
    spool.append(&record(6)).await.unwrap();
    let batch = spool.read_batch(10).await.unwrap();
    assert_eq!(batch.records.last(), Some(&record(6)));
    spool.commit(&batch, 5).await.unwrap();
    assert!(spool.is_empty());
    assert_eq!(spool.stats().bytes, 0);
}

#[tokio::test]
async fn a_commit_that_cannot_persist_still_moves_replay_on() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..4 {
        spool.append(&record(i)).await.unwrap();
    }
    // A folder where the new cursor is written: persisting fails.
    fs::create_dir(dir.path().join("cursor.tmp")).unwrap();
    let batch = spool.read_batch(2).await.unwrap();
    assert!(spool.commit(&batch, 2).await.is_err());
    assert!(spool.cursor_behind());
    assert_eq!(
        read_all(&spool).await,
        [2, 3].map(record).to_vec(),
        "committed records are not read again"
    );
    fs::remove_dir(dir.path().join("cursor.tmp")).unwrap();
    spool.persist_cursor().await.unwrap();
    assert!(!spool.cursor_behind());
    spool.close();
    drop(spool);
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.stats().records, 2);
}

#[tokio::test]
async fn replay_moves_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(&record(0)).await.unwrap();
    // A failed cut seals segment 1; the rest go to segment 2.
    spool.inject_write_fault(WriteFault::TornWriteAndFailedCut { after: 5 });
    spool.append(&record(1)).await.unwrap_err();
    spool.append(&record(2)).await.unwrap();
    assert_eq!(list_segments(dir.path()).unwrap().len(), 2);
    let batch = spool.read_batch(10).await.unwrap();
    assert_eq!(batch.records, [0, 2].map(record).to_vec());
    spool.commit(&batch, 2).await.unwrap();
    assert_eq!(
        list_segments(dir.path()).unwrap().len(),
        1,
        "a replayed segment is deleted"
    );
}

#[tokio::test]
async fn past_its_bound_the_spool_refuses_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let frame = encoded(0).len() as u64;
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut bytes = frame(&r.encode_body());
    fs::write(&path, &bytes).unwrap();
    let file = File::open(&path).unwrap();
    let Step::Frame { body, .. } = Frames::new(&file, 0, bytes.len() as u64).next().unwrap() else {
        panic!("a frame");
    };
    assert_eq!(SpoolRecord::decode(&body).unwrap(), r);
    *bytes.last_mut().unwrap() ^= 1;
    fs::write(&path, &bytes).unwrap();
    let file = File::open(&path).unwrap();
    assert!(
        matches!(
            Frames::new(&file, 0, bytes.len() as u64).next().unwrap(),
            Step::Skipped { .. }
        ),
        "checksum catches it"
    );
}
