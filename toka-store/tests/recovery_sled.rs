//! Recovery tests of the sled journal: a batch torn by a crash (with and without an anchor
//! that covers it), the stream index rebuilt after a real `SIGKILL` lost its in-memory part,
//! and stream reads racing index checkpoints.
//!
//! Everything runs on real sled databases in temporary directories; crashes are real
//! processes killed with `SIGKILL` (the test binary re-runs itself, as in `crash_fsync.rs`),
//! torn batches are cut out of a closed database through `sled` itself.
#![cfg(all(unix, feature = "sled"))]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Rng, child_fail, emit, fsync_config, log_key, multi_thread_runtime, runtime, self_command,
    stored_records, with_raw_db,
};
use toka_store::backend::ANCHOR_FILE;
use toka_store::{
    Appended, Durability, Error, ExpectedVersion, Journal, JournalConfig, NewEvent, RecordedEvent,
    SledJournal,
};

/// The metadata key of the stream-index checkpoint (u64 BE position).
const INDEX_THROUGH: &[u8] = b"M/index-through";

/// The sled key prefix of the stored index entries of `stream`.
fn index_prefix(stream: &str) -> Vec<u8> {
    let mut key = vec![b'S'];
    key.extend_from_slice(&u16::try_from(stream.len()).unwrap().to_be_bytes());
    key.extend_from_slice(stream.as_bytes());
    key
}

/// Decodes a stored `M/index-through` value.
fn through_value(value: Option<sled::IVec>) -> Option<u64> {
    value.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap()))
}

/// Opens the journal (`SledJournal::open` itself retries briefly while sled's file lock is
/// still held by a handle that is going away).
fn open(dir: &Path, config: JournalConfig) -> SledJournal {
    SledJournal::open(dir, config).unwrap_or_else(|e| panic!("opening the journal failed: {e}"))
}

/// The payload of event `seq` of `stream` in these tests.
fn payload(stream: &str, seq: u64) -> Vec<u8> {
    format!("{stream}:{seq}").into_bytes()
}

/// Events `first_seq..first_seq + n` of `stream`.
fn events(stream: &str, first_seq: u64, n: u64) -> Vec<NewEvent> {
    (first_seq..first_seq + n)
        .map(|seq| NewEvent::new("recovery.test", payload(stream, seq)))
        .collect()
}

/// Events like [`events`] whose payloads are too large to share a pack (32 KiB), so each
/// is stored as a value of its own and a test can cut their batch between them, as a crash
/// can cut a large group write between its packs.
fn unpackable_events(stream: &str, first_seq: u64, n: u64) -> Vec<NewEvent> {
    (first_seq..first_seq + n)
        .map(|seq| {
            let mut payload = payload(stream, seq);
            payload.resize(40 * 1024, b'.');
            NewEvent::new("recovery.test", payload)
        })
        .collect()
}

/// Appends `n` events to `stream` at version `version` and returns where they landed.
async fn append(journal: &SledJournal, stream: &str, version: u64, n: u64) -> Appended {
    journal
        .append(
            stream,
            ExpectedVersion::Exact(version),
            &events(stream, version + 1, n),
        )
        .await
        .unwrap()
        .unwrap()
}

/// `(position, stream, seq)` of each event, for compact comparisons.
fn shape(events: &[RecordedEvent]) -> Vec<(u64, String, u64)> {
    events
        .iter()
        .map(|e| (e.position, e.stream.clone(), e.seq))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Torn batch.
//
// The fixture: single events to s, o, s, o, s (positions 1..=5), then one batch of 5 events
// to `s` at positions 6..=10 (seqs 4..=8). The journal is closed, and the last 2 records of
// the batch (positions 9, 10) are removed from the raw database.

/// Position of the first record of the torn batch.
const BATCH_FIRST: u64 = 6;
/// Records of the batch.
const BATCH_LEN: u64 = 5;
/// Records of the batch that survive the cut.
const BATCH_KEPT: u64 = 3;
/// Version of `s` before the batch.
const S_BEFORE: u64 = 3;

struct TornFixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// All 10 events as read back before the cut.
    events: Vec<RecordedEvent>,
}

fn torn_fixture() -> TornFixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let journal = open(&dir, fsync_config());
    runtime().block_on(async {
        let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
        for (position, stream) in (1u64..).zip(["s", "o", "s", "o", "s"]) {
            let version = versions.entry(stream).or_insert(0);
            let a = append(&journal, stream, *version, 1).await;
            assert_eq!(a.first_position, position);
            *version = a.last_seq;
        }
        let a = journal
            .append(
                "s",
                ExpectedVersion::Exact(S_BEFORE),
                &unpackable_events("s", S_BEFORE + 1, BATCH_LEN),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.first_position, a.last_position, a.first_seq, a.last_seq),
            (
                BATCH_FIRST,
                BATCH_FIRST + BATCH_LEN - 1,
                S_BEFORE + 1,
                S_BEFORE + BATCH_LEN
            )
        );
    });
    let events = journal.read_all(1, usize::MAX).unwrap();
    assert_eq!(events.len() as u64, BATCH_FIRST + BATCH_LEN - 1);
    assert!(journal.verify().unwrap().is_intact());
    drop(journal);
    // The crash cut the batch after its third record.
    with_raw_db(&dir, |db| {
        for position in BATCH_FIRST + BATCH_KEPT..BATCH_FIRST + BATCH_LEN {
            assert!(db.remove(log_key(position)).unwrap().is_some());
        }
    });
    TornFixture {
        _tmp: tmp,
        dir,
        events,
    }
}

/// The checks after the torn batch was dropped: back to the state before the batch, then
/// writable from position 6 / seq 4 on, and consistent across another reopen.
fn assert_torn_batch_dropped(f: &TornFixture) {
    let before = &f.events[..(BATCH_FIRST - 1) as usize];
    let journal = open(&f.dir, fsync_config());
    assert_eq!(
        journal.head_position(),
        BATCH_FIRST - 1,
        "head after the drop"
    );
    assert_eq!(journal.read_all(1, usize::MAX).unwrap(), before);
    assert_eq!(
        journal.stream_version("s").unwrap(),
        S_BEFORE,
        "stream_version(s) must be back to its value before the dropped batch"
    );
    assert_eq!(journal.stream_version("o").unwrap(), 2);
    let s_before: Vec<RecordedEvent> = before.iter().filter(|e| e.stream == "s").cloned().collect();
    assert_eq!(
        journal.read_stream("s", 1, usize::MAX).unwrap(),
        s_before,
        "read_stream(s) after the drop"
    );
    assert!(
        journal
            .read_stream("s", S_BEFORE + 1, usize::MAX)
            .unwrap()
            .is_empty()
    );
    assert_eq!(journal.iter_stream("s", S_BEFORE + 1).unwrap().count(), 0);
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!(
        (report.records, report.head_position),
        (BATCH_FIRST - 1, BATCH_FIRST - 1)
    );

    // Appends continue where the log now ends.
    runtime().block_on(async {
        let a = append(&journal, "s", S_BEFORE, 1).await;
        assert_eq!(
            (a.first_position, a.last_position, a.first_seq, a.last_seq),
            (6, 6, 4, 4)
        );
        let a = append(&journal, "s", 4, 2).await;
        assert_eq!(
            (a.first_position, a.last_position, a.first_seq, a.last_seq),
            (7, 8, 5, 6)
        );
        let a = append(&journal, "o", 2, 1).await;
        assert_eq!(
            (a.first_position, a.last_position, a.first_seq, a.last_seq),
            (9, 9, 3, 3)
        );
    });
    drop(journal);

    // A second reopen sees exactly the new history.
    let expected = vec![
        (1, "s".to_owned(), 1),
        (2, "o".to_owned(), 1),
        (3, "s".to_owned(), 2),
        (4, "o".to_owned(), 2),
        (5, "s".to_owned(), 3),
        (6, "s".to_owned(), 4),
        (7, "s".to_owned(), 5),
        (8, "s".to_owned(), 6),
        (9, "o".to_owned(), 3),
    ];
    let journal = open(&f.dir, fsync_config());
    assert_eq!(journal.head_position(), 9);
    let all = journal.read_all(1, usize::MAX).unwrap();
    assert_eq!(shape(&all), expected);
    for e in &all {
        assert_eq!(
            e.payload,
            payload(&e.stream, e.seq),
            "position {}",
            e.position
        );
    }
    assert_eq!(
        all[..5],
        *before,
        "the events before the batch are unchanged"
    );
    assert_eq!(journal.stream_version("s").unwrap(), 6);
    assert_eq!(journal.stream_version("o").unwrap(), 3);
    let s: Vec<(u64, u64)> = journal
        .read_stream("s", 1, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| (e.position, e.seq))
        .collect();
    assert_eq!(s, [(1, 1), (3, 2), (5, 3), (6, 4), (7, 5), (8, 6)]);
    let s_from_4: Vec<u64> = journal
        .iter_stream("s", 4)
        .unwrap()
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(s_from_4, [6, 7, 8]);
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!((report.records, report.head_position), (9, 9));
    drop(journal);

    // No stale record of the dropped batch is left behind the new ones.
    with_raw_db(&f.dir, |db| {
        assert_eq!(stored_records(db), 9);
        assert!(db.get(log_key(10)).unwrap().is_none());
    });
}

/// The brief's scenario: the journal was closed cleanly (so the close checkpointed the
/// batch's stream-index entry and `M/index-through` = 10), then the tail of the batch and
/// the anchor were lost.
#[test]
fn torn_batch_is_dropped_on_open_when_no_anchor_covers_it() {
    let f = torn_fixture();
    std::fs::remove_file(f.dir.join(ANCHOR_FILE)).unwrap();
    assert_torn_batch_dropped(&f);
}

/// The same cut as a crash leaves it: sled recovers a prefix of the writes, and the stream
/// index checkpoint (written on close, after the batch's records) is not part of that
/// prefix; neither was the anchor ever written for the batch.
#[test]
fn torn_batch_cut_by_a_crash_before_its_index_checkpoint_is_dropped_on_open() {
    let f = torn_fixture();
    with_raw_db(&f.dir, |db| {
        let index: Vec<sled::IVec> = db.scan_prefix(b"S").keys().map(Result::unwrap).collect();
        assert!(
            !index.is_empty(),
            "the close should have stored index entries"
        );
        for key in index {
            db.remove(key).unwrap();
        }
        assert_eq!(
            through_value(db.remove(INDEX_THROUGH).unwrap()),
            Some(BATCH_FIRST + BATCH_LEN - 1)
        );
    });
    std::fs::remove_file(f.dir.join(ANCHOR_FILE)).unwrap();
    assert_torn_batch_dropped(&f);
}

/// The batch had been flushed (the anchor says position 10), so its loss is damage, not a
/// crash: the journal opens read-only, names the position, and keeps the rest readable.
#[test]
fn torn_batch_that_had_been_flushed_opens_read_only() {
    let f = torn_fixture();
    let last_kept = BATCH_FIRST + BATCH_KEPT - 1; // 8
    let anchored = BATCH_FIRST + BATCH_LEN - 1; // 10
    for attempt in 0..2 {
        let journal = open(&f.dir, fsync_config());
        assert_eq!(journal.head_position(), last_kept, "attempt {attempt}");

        let report = journal.verify().unwrap();
        let bad = report
            .first_bad
            .clone()
            .expect("verify must report the loss");
        assert_eq!(bad.position, last_kept + 1, "attempt {attempt}: {bad}");
        assert!(bad.reason.contains("record missing"), "{}", bad.reason);
        assert!(
            bad.reason
                .contains(&format!("flushed up to position {anchored}")),
            "the reason names the flushed position: {}",
            bad.reason
        );
        assert!(
            bad.reason.contains(&format!("ends at {last_kept}")),
            "the reason names where the log ends: {}",
            bad.reason
        );
        assert_eq!(
            (report.records, report.head_position),
            (last_kept, last_kept)
        );

        let rt = runtime();
        let refused = rt
            .block_on(journal.append("s", ExpectedVersion::Any, &events("s", 99, 1)))
            .unwrap_err();
        match &refused {
            Error::Damaged { position, reason } => {
                assert_eq!(*position, last_kept + 1, "{refused}");
                assert!(
                    reason.contains(&format!("batch {BATCH_FIRST}..={anchored}")),
                    "{reason}"
                );
                assert!(
                    reason.contains(&format!("position {anchored} was flushed")),
                    "{reason}"
                );
            }
            other => panic!("expected Error::Damaged, got {other:?}"),
        }
        let refused = rt
            .block_on(journal.save_snapshot("o", 1, b"state"))
            .unwrap_err();
        assert!(
            matches!(refused, Error::Damaged { position, .. } if position == last_kept + 1),
            "{refused:?}"
        );

        // The intact prefix reads as before.
        let before = (BATCH_FIRST - 1) as usize;
        assert_eq!(journal.read_all(1, before).unwrap(), f.events[..before]);
        assert_eq!(
            journal.read_all(1, usize::MAX).unwrap(),
            f.events[..last_kept as usize]
        );
        let s: Vec<RecordedEvent> = f.events[..before]
            .iter()
            .filter(|e| e.stream == "s")
            .cloned()
            .collect();
        assert_eq!(journal.read_stream("s", 1, S_BEFORE as usize).unwrap(), s);
        let o: Vec<RecordedEvent> = f
            .events
            .iter()
            .filter(|e| e.stream == "o")
            .cloned()
            .collect();
        assert_eq!(journal.read_stream("o", 1, usize::MAX).unwrap(), o);
        drop(journal);
        // Opening read-only removed nothing: the next open finds the same damage.
        with_raw_db(&f.dir, |db| {
            assert_eq!(stored_records(db), last_kept);
        });
    }
}

// ---------------------------------------------------------------------------------------
// Index rebuild after a real crash.
//
// The child appends a fixed plan in two phases with `Durability::Buffered` and an
// hour-long flush interval, so nothing is flushed (or checkpointed) behind its back:
// - phase A (streams a, b, c), then 1.1 s of quiet, then `flush()`: the commit thread
//   checkpoints the stream index first (the oldest pending entry is ≥ 1 s old), so
//   `M/index-through` = head of phase A;
// - phase C (streams a, b, d), then `flush()`: the records are durable, their index entries
//   (≤ 1 s old, < 4096 of them) live in memory only.
// It prints `DONE` and sleeps until the parent SIGKILLs it.

const CHILD_DIR_ENV: &str = "TOKA_RECOVERY_CHILD_DIR";
/// A child that was never killed gives up after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// The appends of one phase: (stream, batch size).
fn rebuild_phase(phase_c: bool) -> Vec<(&'static str, u64)> {
    if phase_c {
        (0..120u64)
            .map(|k| {
                (
                    ["a", "b", "d"][((k * 5 + k / 4) % 3) as usize],
                    1 + k * 3 % 4,
                )
            })
            .collect()
    } else {
        (0..150u64)
            .map(|k| {
                (
                    ["a", "b", "c"][((k * k + k / 2) % 3) as usize],
                    1 + k * 7 % 5,
                )
            })
            .collect()
    }
}

/// The expected log after `appends`: `(stream, seq)` at positions 1, 2, …
fn model<'a>(appends: impl IntoIterator<Item = &'a (&'static str, u64)>) -> Vec<(String, u64)> {
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    let mut log = Vec::new();
    for &(stream, n) in appends {
        let version = versions.entry(stream).or_insert(0);
        for _ in 0..n {
            *version += 1;
            log.push((stream.to_owned(), *version));
        }
    }
    log
}

async fn child_run_phase(
    journal: &SledJournal,
    plan: &[(&'static str, u64)],
    versions: &mut BTreeMap<&'static str, u64>,
) {
    for &(stream, n) in plan {
        let version = versions.entry(stream).or_insert(0);
        match journal
            .append(
                stream,
                ExpectedVersion::Exact(*version),
                &events(stream, *version + 1, n),
            )
            .await
        {
            Ok(Ok(a)) => *version = a.last_seq,
            other => child_fail(&format!("append to {stream}: {other:?}")),
        }
    }
}

/// The child half of [`stream_index_is_rebuilt_after_a_crash_lost_it`]; a no-op unless
/// `TOKA_RECOVERY_CHILD_DIR` is set.
#[test]
fn child_index_rebuild() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        child_fail("was never killed");
    });
    let config = JournalConfig::default()
        .durability(Durability::Buffered)
        .flush_interval(Duration::from_secs(3600));
    let journal = SledJournal::open(&dir, config).unwrap_or_else(|e| child_fail(&format!("{e}")));
    runtime().block_on(async {
        let mut versions = BTreeMap::new();
        child_run_phase(&journal, &rebuild_phase(false), &mut versions).await;
        let head_a = journal.head_position();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        journal
            .flush()
            .await
            .unwrap_or_else(|e| child_fail(&format!("flush: {e}")));
        let started = Instant::now();
        child_run_phase(&journal, &rebuild_phase(true), &mut versions).await;
        journal
            .flush()
            .await
            .unwrap_or_else(|e| child_fail(&format!("flush: {e}")));
        emit(&format!(
            "DONE {head_a} {} {}",
            journal.head_position(),
            started.elapsed().as_millis()
        ));
        std::future::pending::<()>().await;
    });
}

/// What the index-rebuild child reported: (head after phase A, final head, phase C in ms).
fn run_index_child(dir: &Path) -> (u64, u64, u64) {
    let mut child = self_command("child_index_rebuild")
        .env(CHILD_DIR_ENV, dir)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // libtest's "test child_index_rebuild ... " is glued to the first line.
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(at) = words.iter().position(|w| *w == "DONE" || *w == "ERR") {
                let _ = tx.send(words[at..].join(" "));
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the child never reported DONE");
    // Records are flushed, the index lives in the child's memory: crash now.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child ended by itself: {status}"
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "DONE", "the child failed: {line}");
    let num = |i: usize| -> u64 { words[i].parse().unwrap() };
    (num(1), num(2), num(3))
}

/// Checks every read path of `journal` against `model`.
fn assert_matches_model(journal: &SledJournal, model: &[(String, u64)], context: &str) {
    let head = model.len() as u64;
    assert_eq!(journal.head_position(), head, "{context}");
    let all = journal.read_all(1, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, head, "{context}: read_all");
    let mut streams: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for ((position, (stream, seq)), e) in (1u64..).zip(model).zip(&all) {
        assert_eq!(
            (e.position, e.stream.as_str(), e.seq),
            (position, stream.as_str(), *seq),
            "{context}: read_all"
        );
        assert_eq!(
            e.payload,
            payload(stream, *seq),
            "{context}: position {position}"
        );
        streams.entry(stream).or_default().push(e);
    }
    for (stream, expected) in &streams {
        let version = expected.len() as u64;
        assert_eq!(
            journal.stream_version(stream).unwrap(),
            version,
            "{context}: stream_version({stream})"
        );
        let read = journal.read_stream(stream, 1, usize::MAX).unwrap();
        assert_eq!(
            read.iter().collect::<Vec<_>>(),
            *expected,
            "{context}: read_stream({stream}, 1)"
        );
        // Every start seq, a few events each (the boundaries between stored and rebuilt
        // entries are among them).
        for from in 0..=version + 1 {
            let skip = from.max(1) as usize - 1;
            let read = journal.read_stream(stream, from, 3).unwrap();
            let want: Vec<&RecordedEvent> = expected.iter().skip(skip).take(3).copied().collect();
            assert_eq!(
                read.iter().collect::<Vec<_>>(),
                want,
                "{context}: read_stream({stream}, {from}, 3)"
            );
        }
        // Whole iterators from a few start seqs.
        for from in [
            0,
            1,
            2,
            version / 3,
            version / 2,
            version - 1,
            version,
            version + 1,
        ] {
            let skip = from.max(1) as usize - 1;
            let got: Vec<RecordedEvent> = journal
                .iter_stream(stream, from)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                got.iter().collect::<Vec<_>>(),
                expected.iter().skip(skip).copied().collect::<Vec<_>>(),
                "{context}: iter_stream({stream}, {from})"
            );
        }
    }
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{context}: {:?}", report.first_bad);
    assert_eq!(
        (report.records, report.head_position),
        (head, head),
        "{context}: verify"
    );
}

#[test]
fn stream_index_is_rebuilt_after_a_crash_lost_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let (phase_a, phase_c) = (rebuild_phase(false), rebuild_phase(true));
    let model_a = model(&phase_a);
    let mut expected = model(phase_a.iter().chain(&phase_c));

    let (head_a, head, phase_c_ms) = run_index_child(&dir);
    println!("child: head {head_a} after phase A, {head} after phase C ({phase_c_ms} ms)");
    assert_eq!(head_a, model_a.len() as u64, "head after phase A");
    assert_eq!(head, expected.len() as u64, "head after phase C");

    // What the crash left: the index checkpointed through phase A only.
    with_raw_db(&dir, |db| {
        assert_eq!(stored_records(db), head);
        let through = through_value(db.get(INDEX_THROUGH).unwrap());
        if phase_c_ms < 900 {
            assert_eq!(through, Some(head_a), "checkpoint before the crash");
            assert_eq!(
                db.scan_prefix(index_prefix("d")).count(),
                0,
                "stream d was never checkpointed"
            );
        } else {
            // A slow machine may have checkpointed again during phase C.
            println!("phase C took {phase_c_ms} ms; a second checkpoint was allowed");
            assert!(through.is_some_and(|t| t >= head_a), "{through:?}");
        }
        assert!(db.scan_prefix(index_prefix("c")).count() > 0);
    });

    let journal = open(&dir, fsync_config());
    // The open stored the rebuilt entries and moved the checkpoint to the head.
    assert_eq!(
        through_value(journal.backend().db().get(INDEX_THROUGH).unwrap()),
        Some(head),
        "the open checkpoints the rebuilt index"
    );
    assert_matches_model(&journal, &expected, "after the crash");
    drop(journal);
    with_raw_db(&dir, |db| {
        assert_eq!(through_value(db.get(INDEX_THROUGH).unwrap()), Some(head));
        assert!(db.scan_prefix(index_prefix("d")).count() > 0);
    });

    // Appends continue with the right versions, and another reopen agrees.
    let journal = open(&dir, fsync_config());
    runtime().block_on(async {
        for stream in ["a", "b", "c", "d"] {
            let version = expected.iter().filter(|(s, _)| s == stream).count() as u64;
            let a = append(&journal, stream, version, 2).await;
            assert_eq!(
                (a.first_position, a.first_seq),
                (expected.len() as u64 + 1, version + 1),
                "{stream}"
            );
            expected.push((stream.to_owned(), version + 1));
            expected.push((stream.to_owned(), version + 2));
        }
    });
    assert_matches_model(&journal, &expected, "after appending");
    drop(journal);
    let journal = open(&dir, fsync_config());
    assert_matches_model(&journal, &expected, "after another reopen");
}

// ---------------------------------------------------------------------------------------
// Stream reads racing index checkpoints.

const RACE_WRITERS: u64 = 4;
const RACE_READERS: u64 = 3;
const RACE_FOR: Duration = Duration::from_secs(2);

/// Checks one stream read: `events` are `stream`'s events from `from` on, contiguous, and
/// at least `at_least` of them.
fn check_read(
    stream: &str,
    from: u64,
    events: &[RecordedEvent],
    at_least: u64,
) -> Result<(), String> {
    if (events.len() as u64) < at_least {
        return Err(format!(
            "{stream} from {from}: {} events, at least {at_least} were acknowledged",
            events.len()
        ));
    }
    let mut previous_position = 0;
    for (seq, e) in (from.max(1)..).zip(events) {
        if e.stream != stream || e.seq != seq || e.payload != payload(stream, seq) {
            return Err(format!(
                "{stream} from {from}: expected seq {seq}, read {:?} seq {} at position {} ({:?})",
                e.stream,
                e.seq,
                e.position,
                String::from_utf8_lossy(&e.payload)
            ));
        }
        if e.position <= previous_position {
            return Err(format!(
                "{stream} from {from}: position {} after {previous_position}",
                e.position
            ));
        }
        previous_position = e.position;
    }
    Ok(())
}

#[test]
fn stream_reads_stay_contiguous_while_the_index_is_checkpointed() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("race seed {seed}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let journal = open(&dir, fsync_config());
    let rt = multi_thread_runtime(4);
    let stop = Arc::new(AtomicBool::new(false));
    let appends = Arc::new(AtomicU64::new(0));
    // Every checkpoint position the readers saw.
    let checkpoints = Arc::new(Mutex::new(BTreeSet::new()));

    let writers: Vec<_> = (0..RACE_WRITERS)
        .map(|w| {
            let (journal, stop, appends) =
                (journal.clone(), Arc::clone(&stop), Arc::clone(&appends));
            rt.spawn(async move {
                let stream = format!("w{w}");
                let mut rng = Rng::golden(seed ^ w);
                let mut version = 0;
                while !stop.load(Ordering::Relaxed) {
                    let a = append(&journal, &stream, version, 1 + rng.below(4)).await;
                    version = a.last_seq;
                    appends.fetch_add(1, Ordering::Relaxed);
                }
                version
            })
        })
        .collect();

    let readers: Vec<_> = (0..RACE_READERS)
        .map(|r| {
            let (journal, stop, checkpoints) =
                (journal.clone(), Arc::clone(&stop), Arc::clone(&checkpoints));
            // (checked reads, reads during which the checkpoint moved)
            std::thread::spawn(move || -> Result<(u64, u64), String> {
                let mut rng = Rng::golden(seed ^ (r + 100));
                let (mut reads, mut spanning) = (0u64, 0u64);
                let through = || through_value(journal.backend().db().get(INDEX_THROUGH).unwrap());
                while !stop.load(Ordering::Relaxed) {
                    let stream = format!("w{}", rng.below(RACE_WRITERS));
                    let version = journal.stream_version(&stream).unwrap();
                    let from = rng.below(version + 2); // 0 ..= version + 1
                    // Every event up to `version` was written when the read started.
                    let written = (version + 1).saturating_sub(from.max(1));
                    let through_before = through();
                    let context = |e: Error| format!("{stream} from {from}: {e}");
                    if rng.below(2) == 0 {
                        // Lazily, with pauses, so that checkpoints land mid-walk.
                        let mut events = Vec::new();
                        for e in journal.iter_stream(&stream, from).map_err(context)? {
                            events.push(e.map_err(context)?);
                            if rng.below(16) == 0 {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                        }
                        check_read(&stream, from, &events, written)?;
                    } else {
                        let limit = 1 + rng.below(64);
                        let events = journal
                            .read_stream(&stream, from, limit as usize)
                            .map_err(context)?;
                        if events.len() as u64 > limit {
                            return Err(format!(
                                "{stream}: {} events over limit {limit}",
                                events.len()
                            ));
                        }
                        check_read(&stream, from, &events, written.min(limit))?;
                    }
                    reads += 1;
                    let through_after = through();
                    if through_after != through_before {
                        spanning += 1;
                    }
                    checkpoints.lock().unwrap().extend(through_after);
                }
                Ok((reads, spanning))
            })
        })
        .collect();

    std::thread::sleep(RACE_FOR);
    stop.store(true, Ordering::Relaxed);
    let mut versions = BTreeMap::new();
    for (w, writer) in (0..).zip(writers) {
        versions.insert(format!("w{w}"), rt.block_on(writer).unwrap());
    }
    let (mut reads, mut spanning) = (0, 0);
    for reader in readers {
        let (r, s) = reader
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        (reads, spanning) = (reads + r, spanning + s);
    }
    let checkpoints = checkpoints.lock().unwrap().clone();
    let appends = appends.load(Ordering::Relaxed);
    println!(
        "{appends} appends, {reads} checked reads ({spanning} while a checkpoint landed), \
         checkpoints seen at {checkpoints:?}, head {}",
        journal.head_position()
    );
    assert!(appends >= 100, "only {appends} appends");
    assert!(reads >= 100, "only {reads} reads");
    assert!(
        checkpoints.iter().any(|&c| c > 0),
        "no index checkpoint happened while reading"
    );

    // Everything is still there after a close (which checkpoints the rest) and a reopen.
    drop(journal);
    rt.shutdown_timeout(Duration::from_secs(5));
    let journal = open(&dir, fsync_config());
    for (stream, version) in &versions {
        assert_eq!(journal.stream_version(stream).unwrap(), *version);
        let events = journal.read_stream(stream, 1, usize::MAX).unwrap();
        check_read(stream, 1, &events, *version).unwrap();
        assert_eq!(events.len() as u64, *version);
    }
    let report = journal.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_bad);
    assert_eq!(report.records, journal.head_position());
}

/// Regression (issue 10, item 5): a sled snapshot write cut off by a full disk — sled
/// writes one while it opens — leaves `snap.<lsn>.generating`, which sled itself then
/// takes for the newest snapshot and refuses to open ("Read corrupted data"). The journal
/// removes such files (under sled's lock) before opening: nothing is lost.
#[test]
fn an_unfinished_sled_snapshot_does_not_make_the_journal_unopenable() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let journal = open(dir.path(), fsync_config());
        append(&journal, "s", 0, 5).await;
    });
    let unfinished = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    for torn in [&b""[..], b"torn snapshot bytes"] {
        std::fs::write(&unfinished, torn).unwrap();
        // The trap is real: sled alone cannot open the database now.
        let raw = sled::Config::new().path(dir.path()).open();
        assert!(raw.is_err(), "sled opened past an unfinished snapshot");
        drop(raw);
        let journal = open(dir.path(), fsync_config());
        assert!(!unfinished.exists(), "the unfinished snapshot was kept");
        let events: Vec<_> = journal.iter_stream("s", 1).unwrap().collect();
        assert_eq!(events.len(), 5);
        assert!(events.iter().all(Result::is_ok));
        drop(journal);
    }
    // A database held open by another handle is not touched.
    let held = open(dir.path(), fsync_config());
    std::fs::write(&unfinished, b"").unwrap();
    assert!(SledJournal::open(dir.path(), fsync_config()).is_err());
    assert!(
        unfinished.exists(),
        "removed while another handle held the lock"
    );
    drop(held);
}
