//! Packed group writes on a real sled journal: a group write stores its records in packs
//! (one sled value per up to 64 records), and everything that reads, prunes, verifies or
//! recovers the log works record by record across them. Journals written before packs (one
//! record per value) keep working, also with packs appended after them.
#![cfg(feature = "sled")]

mod common;

use std::path::Path;

use common::{fsync_config, log_key, runtime, stored_records, with_raw_db};
use toka_store::{
    Error, ExpectedVersion, Journal, NewEvent, RecordedEvent, Retention, SledJournal, StreamBatch,
};

const STREAMS: [&str; 3] = ["a", "b", "c"];
/// Events per stream in the group write.
const PER_STREAM: u64 = 50;
/// Records in the group write: 150, so at least three packs.
const RECORDS: u64 = PER_STREAM * STREAMS.len() as u64;

fn payload(stream: &str, seq: u64) -> Vec<u8> {
    format!("{stream}:{seq}: a payload of some length").into_bytes()
}

/// Opens a journal at `dir`, makes ONE group write of 50 events to each of a, b, c, and
/// returns the journal and everything it holds.
fn group_written(dir: &Path) -> (SledJournal, Vec<RecordedEvent>) {
    let journal = SledJournal::open(dir, fsync_config()).unwrap();
    let events: Vec<Vec<NewEvent>> = STREAMS
        .iter()
        .map(|s| {
            (1..=PER_STREAM)
                .map(|seq| NewEvent::new("pack.test", payload(s, seq)))
                .collect()
        })
        .collect();
    let batches: Vec<StreamBatch<'_>> = STREAMS
        .iter()
        .zip(&events)
        .map(|(stream, events)| StreamBatch {
            stream,
            expected: ExpectedVersion::Exact(0),
            events,
        })
        .collect();
    runtime().block_on(async {
        let results = journal.append_many_unsynced(&batches).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
        journal.wait_durable(RECORDS).await.unwrap();
    });
    let all = journal.read_all(1, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, RECORDS);
    (journal, all)
}

/// `(first position, record count)` of every stored log value.
fn stored_values(db: &sled::Db) -> Vec<(u64, u32)> {
    db.scan_prefix(b"L")
        .map(|entry| {
            let (key, value) = entry.unwrap();
            let first = u64::from_be_bytes(key[1..9].try_into().unwrap());
            let count = match value[0] {
                2 => u32::from_le_bytes(value[1..5].try_into().unwrap()),
                _ => 1,
            };
            (first, count)
        })
        .collect()
}

#[test]
fn a_group_write_is_stored_in_packs_and_reads_back_record_by_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let (journal, all) = group_written(&dir);
    for (i, e) in all.iter().enumerate() {
        let stream = STREAMS[i / PER_STREAM as usize];
        let seq = i as u64 % PER_STREAM + 1;
        assert_eq!(
            (e.position, e.stream.as_str(), e.seq),
            (i as u64 + 1, stream, seq)
        );
        assert_eq!(e.payload, payload(stream, seq));
    }
    // Reads that start inside a pack, cross pack boundaries, or read one stream.
    for from in [1, 2, 63, 64, 65, 100, 128, 129, RECORDS] {
        let read = journal.read_all(from, usize::MAX).unwrap();
        assert_eq!(read, all[(from - 1) as usize..], "read_all from {from}");
        let first_two = journal.read_all(from, 2).unwrap();
        assert_eq!(first_two, all[(from - 1) as usize..][..first_two.len()]);
    }
    for (i, stream) in STREAMS.iter().enumerate() {
        let expected = &all[i * PER_STREAM as usize..(i + 1) * PER_STREAM as usize];
        assert_eq!(
            journal.read_stream(stream, 1, usize::MAX).unwrap(),
            expected
        );
        assert_eq!(
            journal.read_stream(stream, 30, usize::MAX).unwrap(),
            expected[29..]
        );
    }
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!(report.records, RECORDS);
    drop(journal);

    with_raw_db(&dir, |db| {
        let values = stored_values(db);
        assert_eq!(stored_records(db), RECORDS);
        assert!(
            values.len() >= 3 && values.len() < 10,
            "150 records of one group write in a few packs: {values:?}"
        );
        assert!(values.iter().all(|(_, count)| *count <= 64), "{values:?}");
        // Packs are contiguous: each starts where the previous one ended.
        let mut next = 1;
        for (first, count) in values {
            assert_eq!(first, next);
            next += u64::from(count);
        }
    });

    // Reopened: the same log, and appends continue after it.
    let journal = SledJournal::open(&dir, fsync_config()).unwrap();
    assert_eq!(journal.head_position(), RECORDS);
    assert_eq!(journal.read_all(1, usize::MAX).unwrap(), all);
    let appended = runtime()
        .block_on(journal.append(
            "b",
            ExpectedVersion::Exact(PER_STREAM),
            &[NewEvent::new("k", b"x".to_vec())],
        ))
        .unwrap()
        .unwrap();
    assert_eq!(
        (appended.first_position, appended.first_seq),
        (RECORDS + 1, PER_STREAM + 1)
    );
    assert!(journal.verify().unwrap().is_intact());
}

#[test]
fn pruning_one_stream_rewrites_shared_packs_and_keeps_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let (journal, all) = group_written(&dir);
    drop(journal);
    let config = fsync_config().retention(Retention::PruneCoveredBySnapshot);
    let journal = SledJournal::open(&dir, config).unwrap();
    let rt = runtime();
    assert!(
        rt.block_on(journal.save_snapshot("b", 40, b"state of b"))
            .unwrap()
    );
    // b's events 1..=40 are erased; a, c and b's 41..=50 read as before.
    let kept: Vec<RecordedEvent> = all
        .iter()
        .filter(|e| e.stream != "b" || e.seq > 40)
        .cloned()
        .collect();
    assert_eq!(journal.read_all(1, usize::MAX).unwrap(), kept);
    assert_eq!(
        journal.read_stream("b", 1, usize::MAX).unwrap(),
        all[90..100]
    );
    for (i, stream) in [(0, "a"), (2, "c")] {
        assert_eq!(
            journal.read_stream(stream, 1, usize::MAX).unwrap(),
            all[i * 50..(i + 1) * 50]
        );
    }
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!((report.records, report.pruned), (RECORDS, 40));
    // An erased event still has its place in the log.
    assert_eq!(journal.stream_position("b", 1).unwrap(), Some(51));
    assert_eq!(journal.stream_position("b", 41).unwrap(), Some(91));
    // A second snapshot prunes the rest of b, in the same packs.
    assert!(
        rt.block_on(journal.save_snapshot("b", 50, b"all of b"))
            .unwrap()
    );
    assert!(journal.read_stream("b", 1, usize::MAX).unwrap().is_empty());
    drop(journal);
    let journal = SledJournal::open(&dir, fsync_config()).unwrap();
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!(report.pruned, 50);
    assert_eq!(journal.read_all(1, usize::MAX).unwrap().len(), 100);
}

/// Replaces the value stored under `first` by `edit(value)`.
fn edit_value(dir: &Path, first: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    with_raw_db(dir, |db| {
        let mut value = db.get(log_key(first)).unwrap().unwrap().to_vec();
        edit(&mut value);
        db.insert(log_key(first), value).unwrap();
    });
}

/// Byte offset of record `index` of the pack `value` and its length.
fn record_span(value: &[u8], index: usize) -> (usize, usize) {
    let mut at = 5;
    for _ in 0..index {
        let len = u32::from_le_bytes(value[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    let len = u32::from_le_bytes(value[at..at + 4].try_into().unwrap()) as usize;
    (at + 4, len)
}

#[test]
fn a_damaged_record_inside_a_pack_is_named_and_its_neighbours_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let (journal, all) = group_written(&dir);
    drop(journal);
    // Position 10: the tenth record of the first pack; flip its last payload byte.
    edit_value(&dir, 1, |value| {
        let (at, len) = record_span(value, 9);
        value[at + len - 1] ^= 0x01;
    });
    let journal = SledJournal::open(&dir, fsync_config()).unwrap();
    assert_eq!(journal.head_position(), RECORDS);
    let report = journal.verify().unwrap();
    let bad = report.first_bad.expect("verify must name the damage");
    assert_eq!(bad.position, 10, "{bad}");
    assert!(bad.reason.contains("checksum mismatch"), "{bad}");
    assert_eq!(report.records, 9);
    match journal.read_all(1, usize::MAX) {
        Err(Error::Corrupt { position: 10, .. }) => {}
        other => panic!("expected the damage at 10, got {other:?}"),
    }
    assert_eq!(journal.read_all(1, 9).unwrap(), all[..9]);
    assert_eq!(journal.read_all(11, usize::MAX).unwrap(), all[10..]);
    let a: Vec<Result<RecordedEvent, Error>> = journal.iter_stream("a", 1).unwrap().collect();
    assert_eq!(a.len(), 10, "stream a stops at its damaged event 10");
    assert!(matches!(a[9], Err(Error::Corrupt { position: 10, .. })));
    assert_eq!(
        journal.read_stream("a", 11, usize::MAX).unwrap(),
        all[10..50]
    );
}

#[test]
fn a_truncated_last_pack_opens_read_only_naming_its_first_unreadable_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let (journal, all) = group_written(&dir);
    drop(journal);
    let (last_first, last_count) = with_raw_db(&dir, |db| *stored_values(db).last().unwrap());
    assert!(last_count > 3);
    // Cut the last pack inside its third record.
    edit_value(&dir, last_first, |value| {
        let (at, _) = record_span(value, 2);
        value.truncate(at + 3);
    });
    let journal = SledJournal::open(&dir, fsync_config()).unwrap();
    let bad_at = last_first + 2;
    let report = journal.verify().unwrap();
    let bad = report.first_bad.expect("verify must name the damage");
    assert_eq!(bad.position, bad_at, "{bad}");
    assert!(bad.reason.contains("truncated"), "{bad}");
    let before = (bad_at - 1) as usize;
    assert_eq!(journal.read_all(1, before).unwrap(), all[..before]);
    let refused = runtime()
        .block_on(journal.append("a", ExpectedVersion::Any, &[NewEvent::new("k", vec![])]))
        .unwrap_err();
    assert!(matches!(refused, Error::Damaged { .. }), "{refused:?}");
}

/// A journal as written before packs: every record its own value (format 1), made from a
/// packed journal of single-record packs by unwrapping each.
fn unpack_to_format_one(dir: &Path) {
    with_raw_db(dir, |db| {
        let values: Vec<(sled::IVec, sled::IVec)> =
            db.scan_prefix(b"L").map(Result::unwrap).collect();
        for (key, value) in values {
            assert_eq!((value[0], value[1]), (2, 1), "single-record packs only");
            db.insert(key, &value[9..]).unwrap();
        }
    });
}

#[test]
fn a_journal_of_single_records_reads_and_takes_packs_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let journal = SledJournal::open(&dir, fsync_config()).unwrap();
    let rt = runtime();
    for seq in 1..=20 {
        let stream = STREAMS[(seq % 3) as usize];
        rt.block_on(journal.append(
            stream,
            ExpectedVersion::Any,
            &[NewEvent::new("k", payload(stream, seq))],
        ))
        .unwrap()
        .unwrap();
    }
    let old = journal.read_all(1, usize::MAX).unwrap();
    drop(journal);
    unpack_to_format_one(&dir);
    with_raw_db(&dir, |db| {
        assert!(db.scan_prefix(b"L").values().all(|v| v.unwrap()[0] == 1));
    });

    let journal = SledJournal::open(&dir, fsync_config()).unwrap();
    assert_eq!(journal.head_position(), 20);
    assert_eq!(journal.read_all(1, usize::MAX).unwrap(), old);
    assert!(journal.verify().unwrap().is_intact());
    // A group write after the old records goes into a pack; both read as one log.
    let events: Vec<NewEvent> = (0..30).map(|i| NewEvent::new("k", vec![i])).collect();
    let appended = rt
        .block_on(journal.append("a", ExpectedVersion::Any, &events))
        .unwrap()
        .unwrap();
    assert_eq!(appended.first_position, 21);
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!(report.records, 50);
    drop(journal);
    let config = fsync_config().retention(Retention::PruneCoveredBySnapshot);
    let journal = SledJournal::open(&dir, config).unwrap();
    let a_version = journal.stream_version("a").unwrap();
    // Pruning covers old single records and the new pack alike.
    assert!(
        rt.block_on(journal.save_snapshot("a", a_version, b"s"))
            .unwrap()
    );
    assert!(journal.read_stream("a", 1, usize::MAX).unwrap().is_empty());
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!(report.records, 50);
    assert_eq!(report.pruned, a_version);
    let rest = journal.read_all(1, usize::MAX).unwrap();
    assert!(rest.iter().all(|e| e.stream != "a"));
    assert_eq!(
        rest,
        old.iter()
            .filter(|e| e.stream != "a")
            .cloned()
            .collect::<Vec<_>>()
    );
}
