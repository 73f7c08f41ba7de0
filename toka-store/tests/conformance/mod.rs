//! The journal conformance suite: the same cases, run against every back-end.
//!
//! Modelled on Akka Persistence's TCK (`JournalSpec`, `SnapshotStoreSpec`): a fixed set of
//! behaviours every journal must show, checked where it makes sense both directly after
//! writing and again after the storage was reopened (drop the journal, open the same
//! storage anew), so that nothing depends on in-memory caches.
//!
//! A back-end plugs in through [`Harness`]; a test binary then expands every case into a
//! named `#[tokio::test]` with [`journal_conformance!`]:
//!
//! ```ignore
//! #[macro_use]
//! mod conformance;
//! journal_conformance!(MyHarness::new());
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use toka_store::{
    Appended, Backend, DEFAULT_MAX_RECORD_BYTES, Durability, EncryptionKey, Error, EventId,
    EventJournal, ExpectedVersion, Journal, JournalConfig, MAX_STREAM_ID_BYTES, NewEvent,
    RecordedEvent, Retention, StreamBatch, Subscription, Timestamp, VerifyReport, VersionConflict,
};

/// Expands to one `#[tokio::test]` per conformance case. `$make` is an expression that
/// builds a fresh [`Harness`] (fresh, empty storage); it is evaluated anew for every
/// harness a case needs.
///
/// `journal_conformance!(when $guard => $make)` runs each case only when `$guard` (a `bool`
/// expression, evaluated per case) holds, for back-ends that need an outside service.
macro_rules! journal_conformance {
    (when $guard:expr => $make:expr) => {
        journal_conformance!(@cases $guard, $make;
            append_and_read_back_round_trips_every_field,
            replay_all_events_and_highest_seq,
            replay_honours_bounds_and_limits,
            replay_of_unknown_stream_is_empty,
            replay_with_extreme_bounds_does_not_overflow,
            expected_version_no_stream,
            expected_version_exact,
            expected_version_any,
            version_conflict_converts_to_error,
            oversized_event_rejects_whole_batch,
            default_record_limit_is_one_mib,
            empty_batch_is_rejected,
            invalid_stream_ids_are_rejected,
            streams_are_isolated,
            global_log_reads_across_pages,
            iterators_are_lazy_and_owned,
            iterate_long_stream,
            borrowed_replay_matches_iter_all,
            subscription_catches_up_then_goes_live,
            subscription_from_the_middle,
            slow_subscriber_receives_every_event_once,
            slow_subscriber_receives_every_event_once_buffered,
            subscription_with_buffered_durability,
            subscription_ends_when_journal_is_dropped,
            snapshot_round_trip,
            snapshot_keeps_the_newest,
            snapshot_ahead_of_stream_is_rejected,
            snapshot_size_limits,
            snapshot_survives_reopen,
            retention_prunes_events_covered_by_snapshot,
            retention_keep_all_prunes_nothing,
            retention_pruned_head_survives_reopen,
            verify_fresh_and_populated_journal,
            verify_head_hash_tracks_content,
            fsync_durability_basic_flow,
            buffered_durability_basic_flow,
            buffered_flush_interval_makes_writes_durable,
            encryption_round_trip_and_reopen,
            encryption_rejects_wrong_or_missing_key,
            encryption_key_on_plaintext_journal_is_refused,
            encryption_hides_plaintext_at_rest,
            encryption_never_repeats_ciphertext,
            concurrent_single_event_appends_fsync,
            unsynced_appends_order_then_wait_durable,
            unsynced_fsync_appends_become_acknowledged_in_the_background,
            multi_stream_appends_are_one_ordered_write,
        );
    };
    ($make:expr) => {
        journal_conformance!(when true => $make);
    };
    (@cases $guard:expr, $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !$guard {
                    return;
                }
                conformance::$case(|| $make).await;
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// One back-end's storage, owned by a test: it opens journals over the same storage again
/// and again, and exposes what is stored for inspection.
pub(crate) trait Harness: Sized + Send + Sync + 'static {
    /// The back-end type of the journals it opens.
    type Backend: Backend;

    /// Opens a journal over this harness's storage (creating it if it is new).
    fn open(&self, config: JournalConfig) -> Result<EventJournal<Self::Backend>, Error>;

    /// Closes `journal` and opens the same storage again. The caller must have dropped
    /// every other clone, iterator and subscription of it.
    fn reopen(
        &self,
        journal: EventJournal<Self::Backend>,
        config: JournalConfig,
    ) -> EventJournal<Self::Backend> {
        drop(journal);
        self.open(config).expect("reopening the journal")
    }

    /// Every raw key and value the back-end of `journal` currently holds.
    fn raw_entries(journal: &EventJournal<Self::Backend>) -> Vec<Vec<u8>>;

    /// A new harness over a copy of what the storage holds *now*, taken while the journal
    /// is open: what a crash at this instant would leave behind.
    fn crash_image(&self) -> Self;

    /// The files of the storage on disk (none for in-memory storage). Read them only
    /// after the journal was closed.
    fn stored_files(&self) -> Vec<PathBuf>;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Upper bound for anything a test waits for; only reached if the journal hangs.
const WAIT: Duration = Duration::from_secs(20);

/// A timestamp later than any real clock of the last years: 2020-01-01 in microseconds.
const YEAR_2020_MICROS: u64 = 1_577_836_800_000_000;

fn ev(kind: &str, payload: impl Into<Vec<u8>>) -> NewEvent {
    NewEvent::new(kind, payload)
}

fn config() -> JournalConfig {
    JournalConfig::default()
}

fn buffered(interval: Duration) -> JournalConfig {
    JournalConfig::default()
        .durability(Durability::Buffered)
        .flush_interval(interval)
}

fn key_a() -> EncryptionKey {
    let mut bytes = [0u8; 32];
    for (i, b) in (0u8..).zip(bytes.iter_mut()) {
        *b = i.wrapping_mul(37).wrapping_add(11);
    }
    EncryptionKey::from_bytes(bytes)
}

fn key_b() -> EncryptionKey {
    let mut bytes = key_a().to_bytes();
    bytes[31] ^= 1;
    EncryptionKey::from_bytes(bytes)
}

async fn append_ok(
    journal: &dyn Journal,
    stream: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Appended {
    journal
        .append(stream, expected, events)
        .await
        .unwrap_or_else(|e| panic!("append to {stream:?} failed: {e}"))
        .unwrap_or_else(|c| panic!("unexpected conflict: {c}"))
}

/// Appends one event whose kind and payload are `kind`.
async fn append_one(journal: &dyn Journal, stream: &str, kind: &str) -> Appended {
    append_ok(
        journal,
        stream,
        ExpectedVersion::Any,
        &[ev(kind, kind.as_bytes())],
    )
    .await
}

fn all_events(journal: &dyn Journal) -> Vec<RecordedEvent> {
    journal.read_all(1, usize::MAX).expect("read_all")
}

fn stream_events(journal: &dyn Journal, stream: &str) -> Vec<RecordedEvent> {
    journal
        .read_stream(stream, 1, usize::MAX)
        .unwrap_or_else(|e| panic!("read_stream({stream:?}) failed: {e}"))
}

fn collect(iter: toka_store::EventIter) -> Vec<RecordedEvent> {
    iter.collect::<Result<Vec<_>, _>>().expect("iterator error")
}

fn seqs(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

fn kinds(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn verify_ok(journal: &dyn Journal) -> VerifyReport {
    let report = journal.verify().expect("verify");
    assert!(report.is_intact(), "journal not intact: {report:?}");
    report
}

async fn next_event(sub: &mut Subscription) -> RecordedEvent {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("subscription timed out")
        .expect("subscription ended early")
        .expect("subscription error")
}

async fn assert_no_event(sub: &mut Subscription, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, sub.next()).await {
        panic!("subscription yielded {item:?} although nothing was appended");
    }
}

/// Appends an event that must be refused with a version conflict; checks nothing changed.
async fn assert_conflict(
    journal: &dyn Journal,
    stream: &str,
    expected: ExpectedVersion,
    actual: u64,
) {
    let head = journal.head_position();
    let version = journal.stream_version(stream).expect("stream_version");
    let before = all_events(journal);
    let outcome = journal
        .append(stream, expected, &[ev("rejected", b"rejected".to_vec())])
        .await
        .expect("a conflict is not a storage error");
    assert_eq!(
        outcome,
        Err(VersionConflict {
            stream: stream.to_owned(),
            expected,
            actual,
        })
    );
    assert_eq!(journal.head_position(), head, "head moved on a conflict");
    assert_eq!(journal.stream_version(stream).unwrap(), version);
    assert_eq!(all_events(journal), before, "a conflicting append wrote");
}

// ---------------------------------------------------------------------------------------
// Append and read back
// ---------------------------------------------------------------------------------------

pub(crate) async fn append_and_read_back_round_trips_every_field<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    assert_eq!(j.head_position(), 0);
    assert_eq!(j.stream_version("order-1").unwrap(), 0);
    assert!(all_events(&j).is_empty());

    let cause = EventId::new();
    let correlation = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
    let fixed_id = EventId::from_uuid(uuid::Uuid::from_u128(42));
    let batch = vec![
        ev("order.placed", b"{\"qty\":2}".to_vec()),
        ev(
            "order.paid \u{2713} \u{fc}n\u{ef}c\u{f8}d\u{e9}",
            (0..=255u8).collect::<Vec<_>>(),
        )
        .caused_by(cause)
        .correlated_with(correlation),
        ev("order.noted", Vec::new()).with_id(fixed_id),
    ];
    let before = Timestamp::now().as_micros();
    let first = append_ok(&j, "order-1", ExpectedVersion::NoStream, &batch).await;
    let after = Timestamp::now().as_micros();
    assert_eq!(
        first,
        Appended {
            first_position: 1,
            last_position: 3,
            first_seq: 1,
            last_seq: 3
        }
    );
    assert_eq!(j.head_position(), 3);
    let other_event = ev("other", b"x".to_vec());
    let other = append_ok(
        &j,
        "order-2",
        ExpectedVersion::NoStream,
        std::slice::from_ref(&other_event),
    )
    .await;
    assert_eq!(
        other,
        Appended {
            first_position: 4,
            last_position: 4,
            first_seq: 1,
            last_seq: 1
        }
    );
    let shipped = ev("order.shipped", b"s".to_vec());
    let third = append_ok(
        &j,
        "order-1",
        ExpectedVersion::Exact(3),
        std::slice::from_ref(&shipped),
    )
    .await;
    assert_eq!(
        third,
        Appended {
            first_position: 5,
            last_position: 5,
            first_seq: 4,
            last_seq: 4
        }
    );
    let end = Timestamp::now().as_micros();

    let check = |j: &dyn Journal| {
        assert_eq!(j.head_position(), 5);
        assert_eq!(j.stream_version("order-1").unwrap(), 4);
        assert_eq!(j.stream_version("order-2").unwrap(), 1);
        let events = stream_events(j, "order-1");
        assert_eq!(seqs(&events), vec![1, 2, 3, 4]);
        assert_eq!(positions(&events), vec![1, 2, 3, 5]);
        for (event, new) in events.iter().zip(batch.iter().chain([&shipped])) {
            assert_eq!(event.stream, "order-1");
            assert_eq!(event.id, new.id);
            assert_eq!(event.kind, new.kind);
            assert_eq!(event.causation_id, new.causation_id);
            assert_eq!(event.correlation_id, new.correlation_id);
            assert_eq!(event.payload, new.payload);
            let ts = event.timestamp.as_micros();
            assert!(ts > YEAR_2020_MICROS, "implausible timestamp {ts}");
            assert!(
                ts >= before && ts <= end,
                "timestamp {ts} outside [{before}, {end}]"
            );
        }
        for event in &events[..3] {
            let ts = event.timestamp.as_micros();
            assert!(
                ts <= after,
                "timestamp {ts} after the append returned ({after})"
            );
        }
        assert_eq!(events[1].causation_id, Some(cause));
        assert_eq!(events[1].correlation_id, Some(correlation));
        assert_eq!(events[2].id, fixed_id);
        assert_eq!(events[0].causation_id, None);
        assert_eq!(events[0].correlation_id, None);
        assert!(events[2].payload.is_empty());

        let all = all_events(j);
        assert_eq!(positions(&all), range(1, 5));
        assert_eq!(all[3].stream, "order-2");
        assert_eq!(all[3].kind, "other");
        assert_eq!(all[3].payload, b"x");
        assert_eq!(all[3].id, other_event.id);
        all
    };
    let written = check(&j);
    let j = h.reopen(j, config());
    let reread = check(&j);
    assert_eq!(written, reread, "events changed across reopen");
    // Ids are all distinct.
    let mut ids: Vec<_> = reread.iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
}

// ---------------------------------------------------------------------------------------
// Akka-style replay bounds
// ---------------------------------------------------------------------------------------

const PID: &str = "p-1";

/// Akka's fixture: events 1..=5 of `p-1`, the last two as one atomic write; plus two
/// events of `p-2` in between, so positions and seqs differ.
async fn write_akka_fixture(j: &dyn Journal) {
    append_one(j, "p-2", "noise-1").await; // position 1
    append_ok(
        j,
        PID,
        ExpectedVersion::NoStream,
        &[ev("e1", b"1".to_vec())],
    )
    .await; // 2
    append_ok(
        j,
        PID,
        ExpectedVersion::Exact(1),
        &[ev("e2", b"2".to_vec())],
    )
    .await; // 3
    append_one(j, "p-2", "noise-2").await; // 4
    append_ok(
        j,
        PID,
        ExpectedVersion::Exact(2),
        &[ev("e3", b"3".to_vec())],
    )
    .await; // 5
    let batch = append_ok(
        j,
        PID,
        ExpectedVersion::Exact(3),
        &[ev("e4", b"4".to_vec()), ev("e5", b"5".to_vec())],
    )
    .await;
    assert_eq!(
        batch,
        Appended {
            first_position: 6,
            last_position: 7,
            first_seq: 4,
            last_seq: 5
        }
    );
}

fn read_seqs(j: &dyn Journal, from: u64, limit: usize) -> Vec<u64> {
    seqs(&j.read_stream(PID, from, limit).expect("read_stream"))
}

pub(crate) async fn replay_all_events_and_highest_seq<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    write_akka_fixture(&j).await;
    let check = |j: &dyn Journal| {
        let events = stream_events(j, PID);
        assert_eq!(seqs(&events), vec![1, 2, 3, 4, 5]);
        assert_eq!(kinds(&events), vec!["e1", "e2", "e3", "e4", "e5"]);
        assert_eq!(positions(&events), vec![2, 3, 5, 6, 7]);
        assert!(events.iter().all(|e| e.stream == PID));
        assert_eq!(j.stream_version(PID).unwrap(), 5);
        assert_eq!(j.stream_version("p-2").unwrap(), 2);
        assert_eq!(j.head_position(), 7);
        assert_eq!(collect(j.iter_stream(PID, 1).unwrap()), events);
        let all = all_events(j);
        assert_eq!(positions(&all), range(1, 7));
        assert_eq!(
            kinds(&all),
            vec!["noise-1", "e1", "e2", "noise-2", "e3", "e4", "e5"]
        );
    };
    check(&j);
    let j = h.reopen(j, config());
    check(&j);
}

pub(crate) async fn replay_honours_bounds_and_limits<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    write_akka_fixture(&j).await;
    let check = |j: &dyn Journal| {
        // lower bound
        assert_eq!(read_seqs(j, 3, usize::MAX), vec![3, 4, 5]);
        // lower bound + count ("upper bound" in Akka is a count here)
        assert_eq!(read_seqs(j, 2, 2), vec![2, 3]);
        assert_eq!(read_seqs(j, 2, 3), vec![2, 3, 4]);
        // upper bound only
        assert_eq!(read_seqs(j, 1, 3), vec![1, 2, 3]);
        // from = to
        assert_eq!(read_seqs(j, 3, 1), vec![3]);
        // limit 1
        assert_eq!(read_seqs(j, 1, 1), vec![1]);
        // limit 0: nothing, but the highest is still reported
        assert_eq!(read_seqs(j, 1, 0), Vec::<u64>::new());
        assert_eq!(j.stream_version(PID).unwrap(), 5);
        // starting inside the atomic batch
        assert_eq!(read_seqs(j, 5, 10), vec![5]);
        assert_eq!(read_seqs(j, 4, 1), vec![4]);
        // from > version
        assert_eq!(read_seqs(j, 6, usize::MAX), Vec::<u64>::new());
        assert_eq!(read_seqs(j, 100, 10), Vec::<u64>::new());
        // from 0 reads from the first event
        assert_eq!(read_seqs(j, 0, 2), vec![1, 2]);
        // limit larger than what is there
        assert_eq!(read_seqs(j, 1, 1000), vec![1, 2, 3, 4, 5]);
        // the lazy iterator honours the lower bound too
        assert_eq!(seqs(&collect(j.iter_stream(PID, 4).unwrap())), vec![4, 5]);
        assert_eq!(
            seqs(&collect(j.iter_stream(PID, 6).unwrap())),
            Vec::<u64>::new()
        );
        // global log bounds
        assert_eq!(positions(&j.read_all(3, 2).unwrap()), vec![3, 4]);
        assert_eq!(positions(&j.read_all(7, 5).unwrap()), vec![7]);
        assert_eq!(positions(&j.read_all(8, 5).unwrap()), Vec::<u64>::new());
        assert_eq!(positions(&j.read_all(1, 0).unwrap()), Vec::<u64>::new());
    };
    check(&j);
    let j = h.reopen(j, config());
    check(&j);
}

pub(crate) async fn replay_of_unknown_stream_is_empty<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    // Also on a journal that holds nothing at all.
    assert_eq!(stream_events(&j, "p-3"), Vec::new());
    assert_eq!(j.stream_version("p-3").unwrap(), 0);
    write_akka_fixture(&j).await;
    let check = |j: &dyn Journal| {
        for unknown in ["p-3", "p-", "p", "p-10", "p-1x", "P-1"] {
            assert_eq!(stream_events(j, unknown), Vec::new(), "stream {unknown:?}");
            assert_eq!(j.stream_version(unknown).unwrap(), 0, "stream {unknown:?}");
            assert_eq!(collect(j.iter_stream(unknown, 1).unwrap()), Vec::new());
            assert_eq!(j.load_snapshot(unknown).unwrap(), None);
        }
    };
    check(&j);
    let j = h.reopen(j, config());
    check(&j);
    // An unknown stream accepts NoStream, and its first event gets seq 1.
    let a = append_ok(&j, "p-3", ExpectedVersion::NoStream, &[ev("x", Vec::new())]).await;
    assert_eq!((a.first_seq, a.first_position), (1, 8));
}

pub(crate) async fn replay_with_extreme_bounds_does_not_overflow<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    write_akka_fixture(&j).await;
    let check = |j: &dyn Journal| {
        assert_eq!(read_seqs(j, u64::MAX, usize::MAX), Vec::<u64>::new());
        assert_eq!(read_seqs(j, u64::MAX - 1, usize::MAX), Vec::<u64>::new());
        assert_eq!(read_seqs(j, u64::MAX, 1), Vec::<u64>::new());
        assert_eq!(read_seqs(j, 1, usize::MAX), vec![1, 2, 3, 4, 5]);
        assert_eq!(read_seqs(j, 0, usize::MAX), vec![1, 2, 3, 4, 5]);
        assert_eq!(collect(j.iter_stream(PID, u64::MAX).unwrap()), Vec::new());
        assert_eq!(collect(j.iter_stream("p-3", u64::MAX).unwrap()), Vec::new());
        assert_eq!(j.read_all(u64::MAX, usize::MAX).unwrap(), Vec::new());
        assert_eq!(j.read_all(u64::MAX - 1, usize::MAX).unwrap(), Vec::new());
        assert_eq!(j.read_all(0, usize::MAX).unwrap().len(), 7);
        assert_eq!(collect(j.iter_all(u64::MAX)), Vec::new());
        assert_eq!(collect(j.iter_all(0)).len(), 7);
    };
    check(&j);
    let mut sub = j.subscribe(u64::MAX);
    assert_eq!(sub.position(), u64::MAX);
    assert_no_event(&mut sub, Duration::from_millis(50)).await;
    drop(sub);
    match j.save_snapshot(PID, u64::MAX, b"s").await {
        Err(Error::SnapshotAhead { seq, version, .. }) => {
            assert_eq!((seq, version), (u64::MAX, 5));
        }
        other => panic!("expected SnapshotAhead, got {other:?}"),
    }
    assert_conflict(&j, PID, ExpectedVersion::Exact(u64::MAX), 5).await;
    let j = h.reopen(j, config());
    check(&j);
}

// ---------------------------------------------------------------------------------------
// Expected version
// ---------------------------------------------------------------------------------------

pub(crate) async fn expected_version_no_stream<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    let a = append_ok(&j, "s", ExpectedVersion::NoStream, &[ev("a", Vec::new())]).await;
    assert_eq!((a.first_seq, a.last_seq, a.first_position), (1, 1, 1));
    assert_conflict(&j, "s", ExpectedVersion::NoStream, 1).await;
    append_ok(&j, "s", ExpectedVersion::Exact(1), &[ev("b", Vec::new())]).await;
    assert_conflict(&j, "s", ExpectedVersion::NoStream, 2).await;
    // Another new stream still accepts NoStream.
    let t = append_ok(&j, "t", ExpectedVersion::NoStream, &[ev("c", Vec::new())]).await;
    assert_eq!((t.first_seq, t.first_position), (1, 3));
    // After a reopen the version comes from storage, not from a cache.
    let j = h.reopen(j, config());
    assert_conflict(&j, "s", ExpectedVersion::NoStream, 2).await;
    assert_conflict(&j, "t", ExpectedVersion::NoStream, 1).await;
    let u = append_ok(&j, "u", ExpectedVersion::NoStream, &[ev("d", Vec::new())]).await;
    assert_eq!((u.first_seq, u.first_position), (1, 4));
    assert_eq!(kinds(&all_events(&j)), vec!["a", "b", "c", "d"]);
}

pub(crate) async fn expected_version_exact<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    // Exact(0) on a new stream is NoStream.
    let a = append_ok(&j, "s", ExpectedVersion::Exact(0), &[ev("a", Vec::new())]).await;
    assert_eq!(a.last_seq, 1);
    assert_conflict(&j, "s", ExpectedVersion::Exact(0), 1).await;
    let b = append_ok(
        &j,
        "s",
        ExpectedVersion::Exact(1),
        &[ev("b", Vec::new()), ev("c", Vec::new())],
    )
    .await;
    assert_eq!((b.first_seq, b.last_seq), (2, 3));
    // stale
    assert_conflict(&j, "s", ExpectedVersion::Exact(1), 3).await;
    // ahead
    assert_conflict(&j, "s", ExpectedVersion::Exact(4), 3).await;
    // A conflict on an unknown stream reports version 0.
    assert_conflict(&j, "new", ExpectedVersion::Exact(2), 0).await;
    assert_eq!(j.stream_version("new").unwrap(), 0);

    let j = h.reopen(j, config());
    assert_conflict(&j, "s", ExpectedVersion::Exact(2), 3).await;
    let c = append_ok(&j, "s", ExpectedVersion::Exact(3), &[ev("d", Vec::new())]).await;
    assert_eq!((c.first_seq, c.first_position), (4, 4));
    assert_conflict(&j, "s", ExpectedVersion::Exact(3), 4).await;
    assert_eq!(seqs(&stream_events(&j, "s")), vec![1, 2, 3, 4]);
    assert_eq!(kinds(&stream_events(&j, "s")), vec!["a", "b", "c", "d"]);
}

pub(crate) async fn expected_version_any<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    let a = append_ok(&j, "s", ExpectedVersion::Any, &[ev("a", Vec::new())]).await;
    assert_eq!(a.last_seq, 1);
    append_ok(&j, "t", ExpectedVersion::Exact(0), &[ev("t", Vec::new())]).await;
    let b = append_ok(
        &j,
        "s",
        ExpectedVersion::Any,
        &[ev("b", Vec::new()), ev("c", Vec::new())],
    )
    .await;
    assert_eq!(
        b,
        Appended {
            first_position: 3,
            last_position: 4,
            first_seq: 2,
            last_seq: 3
        }
    );
    let j = h.reopen(j, config());
    let c = append_ok(&j, "s", ExpectedVersion::Any, &[ev("d", Vec::new())]).await;
    assert_eq!((c.first_seq, c.first_position), (4, 5));
    assert_eq!(j.stream_version("s").unwrap(), 4);
    assert_eq!(seqs(&stream_events(&j, "s")), vec![1, 2, 3, 4]);
}

async fn append_flat(
    j: &dyn Journal,
    stream: &str,
    expected: ExpectedVersion,
) -> Result<Appended, Error> {
    Ok(j.append(stream, expected, &[ev("flat", Vec::new())])
        .await??)
}

pub(crate) async fn version_conflict_converts_to_error<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    let ok = append_flat(&j, "s", ExpectedVersion::NoStream)
        .await
        .unwrap();
    assert_eq!(ok.last_seq, 1);
    match append_flat(&j, "s", ExpectedVersion::NoStream).await {
        Err(Error::Conflict(conflict)) => {
            assert_eq!(
                conflict,
                VersionConflict {
                    stream: "s".into(),
                    expected: ExpectedVersion::NoStream,
                    actual: 1,
                }
            );
            let error = Error::Conflict(conflict);
            assert!(error.to_string().contains("version conflict"), "{error}");
        }
        other => panic!("expected Error::Conflict, got {other:?}"),
    }
    match append_flat(&j, "s", ExpectedVersion::Exact(7)).await {
        Err(Error::Conflict(c)) => {
            assert_eq!((c.expected, c.actual), (ExpectedVersion::Exact(7), 1))
        }
        other => panic!("expected Error::Conflict, got {other:?}"),
    }
    assert_eq!(j.head_position(), 1);
}

// ---------------------------------------------------------------------------------------
// Atomicity and limits
// ---------------------------------------------------------------------------------------

pub(crate) async fn oversized_event_rejects_whole_batch<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let cfg = config().max_record_bytes(4096);
    let j = h.open(cfg.clone()).unwrap();
    append_ok(
        &j,
        "s",
        ExpectedVersion::NoStream,
        &[ev("ok-1", vec![1; 100])],
    )
    .await;
    append_ok(
        &j,
        "t",
        ExpectedVersion::NoStream,
        &[ev("ok-2", vec![2; 100])],
    )
    .await;
    let before = all_events(&j);

    // The second event's payload alone is over the limit.
    let batch = [
        ev("small", vec![0; 10]),
        ev("huge", vec![0; 5000]),
        ev("small", vec![0; 10]),
    ];
    match j.append("s", ExpectedVersion::Exact(1), &batch).await {
        Err(Error::RecordTooLarge {
            stream,
            index,
            size,
            max,
        }) => {
            assert_eq!((stream.as_str(), index, max), ("s", 1, 4096));
            assert!(size >= 5000, "size {size}");
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // The first event's payload is under the limit but its encoded record is not.
    match j
        .append("s", ExpectedVersion::Any, &[ev("almost", vec![0; 4090])])
        .await
    {
        Err(Error::RecordTooLarge {
            index, size, max, ..
        }) => {
            assert_eq!((index, max), (0, 4096));
            assert!(size > 4096, "size {size}");
        }
        other => panic!("expected RecordTooLarge for the encoded size, got {other:?}"),
    }
    // On a new stream too: its version stays 0.
    let err = j
        .append(
            "fresh",
            ExpectedVersion::NoStream,
            &[ev("a", Vec::new()), ev("b", vec![0; 4097])],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RecordTooLarge { index: 1, .. }),
        "{err:?}"
    );

    let check = |j: &dyn Journal| {
        assert_eq!(j.head_position(), 2);
        assert_eq!(j.stream_version("s").unwrap(), 1);
        assert_eq!(j.stream_version("fresh").unwrap(), 0);
        assert_eq!(all_events(j), before);
        let report = verify_ok(j);
        assert_eq!(report.records, 2);
    };
    check(&j);
    let j = h.reopen(j, cfg.clone());
    check(&j);
    // Nothing was consumed: the next append continues without gaps.
    let next = append_ok(
        &j,
        "s",
        ExpectedVersion::Exact(1),
        &[ev("ok-3", vec![3; 3000])],
    )
    .await;
    assert_eq!((next.first_position, next.first_seq), (3, 2));
    let fresh = append_ok(
        &j,
        "fresh",
        ExpectedVersion::NoStream,
        &[ev("ok-4", Vec::new())],
    )
    .await;
    assert_eq!((fresh.first_position, fresh.first_seq), (4, 1));
    assert_eq!(positions(&all_events(&j)), range(1, 4));
    assert_eq!(verify_ok(&j).records, 4);
}

pub(crate) async fn default_record_limit_is_one_mib<H: Harness>(make: impl Fn() -> H) {
    assert_eq!(DEFAULT_MAX_RECORD_BYTES, 1024 * 1024);
    assert_eq!(config().get_max_record_bytes(), 1024 * 1024);
    let h = make();
    let j = h.open(config()).unwrap();
    match j
        .append(
            "big",
            ExpectedVersion::Any,
            &[ev("too-big", vec![7; 1024 * 1024 + 1])],
        )
        .await
    {
        Err(Error::RecordTooLarge {
            index, size, max, ..
        }) => {
            assert_eq!((index, max), (0, 1024 * 1024));
            assert!(size > 1024 * 1024, "size {size}");
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(j.head_position(), 0);
    let payload: Vec<u8> = (0..512 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let a = append_ok(
        &j,
        "big",
        ExpectedVersion::NoStream,
        &[ev("half-mib", payload.clone())],
    )
    .await;
    assert_eq!(a.last_position, 1);
    assert_eq!(stream_events(&j, "big")[0].payload, payload);
    let j = h.reopen(j, config());
    let events = stream_events(&j, "big");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload, payload);
    assert_eq!(j.head_position(), 1);
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

pub(crate) async fn empty_batch_is_rejected<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
    ] {
        match j.append("s", expected, &[]).await {
            Err(Error::EmptyBatch { stream }) => assert_eq!(stream, "s"),
            other => panic!("expected EmptyBatch, got {other:?}"),
        }
    }
    assert_eq!(j.head_position(), 0);
    assert_eq!(j.stream_version("s").unwrap(), 0);
    append_ok(&j, "s", ExpectedVersion::NoStream, &[ev("a", Vec::new())]).await;
    // Also when the expectation matches, and when it would conflict.
    for expected in [ExpectedVersion::Exact(1), ExpectedVersion::NoStream] {
        match j.append("s", expected, &[]).await {
            Err(Error::EmptyBatch { stream }) => assert_eq!(stream, "s"),
            other => panic!("expected EmptyBatch, got {other:?}"),
        }
    }
    let j = h.reopen(j, config());
    assert_eq!(j.head_position(), 1);
    assert_eq!(j.stream_version("s").unwrap(), 1);
    assert_eq!(verify_ok(&j).records, 1);
}

fn assert_invalid_id<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
    match result {
        Err(Error::InvalidStreamId { stream, reason }) => {
            assert!(stream.len() <= 64, "{what}: displayed id not truncated");
            assert!(!reason.is_empty());
        }
        other => panic!("{what}: expected InvalidStreamId, got {other:?}"),
    }
}

pub(crate) async fn invalid_stream_ids_are_rejected<H: Harness>(make: impl Fn() -> H) {
    assert_eq!(MAX_STREAM_ID_BYTES, 1024);
    let h = make();
    let j = h.open(config()).unwrap();
    let too_long = "x".repeat(1025);
    // Multi-byte characters: 1026 bytes, truncation for display must respect boundaries.
    let too_long_utf8 = "\u{e9}".repeat(513);
    for bad in ["", too_long.as_str(), too_long_utf8.as_str()] {
        let what = format!("stream id of {} bytes", bad.len());
        assert_invalid_id(
            j.append(bad, ExpectedVersion::Any, &[ev("a", Vec::new())])
                .await,
            &what,
        );
        assert_invalid_id(j.stream_version(bad), &what);
        assert_invalid_id(j.read_stream(bad, 1, 10), &what);
        assert_invalid_id(j.iter_stream(bad, 1).map(|_| ()), &what);
        assert_invalid_id(j.save_snapshot(bad, 0, b"s").await, &what);
        assert_invalid_id(j.load_snapshot(bad), &what);
    }
    assert_eq!(j.head_position(), 0);
    // Exactly the limit is fine.
    let longest = "y".repeat(1024);
    let a = append_ok(
        &j,
        &longest,
        ExpectedVersion::NoStream,
        &[ev("a", b"p".to_vec())],
    )
    .await;
    assert_eq!(a.last_position, 1);
    let j = h.reopen(j, config());
    let events = stream_events(&j, &longest);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stream, longest);
    assert_eq!(j.stream_version(&longest).unwrap(), 1);
    assert_eq!(j.head_position(), 1);
    assert_eq!(verify_ok(&j).records, 1);
}

// ---------------------------------------------------------------------------------------
// Stream isolation
// ---------------------------------------------------------------------------------------

pub(crate) async fn streams_are_isolated<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    let long_255 = "a".repeat(255);
    let long_256 = "a".repeat(256);
    let streams: Vec<(&str, u64)> = vec![
        ("a", 3),
        ("a1", 2),
        ("a\u{0}", 2),
        ("a\u{0}\u{0}", 1),
        ("A", 1),
        (long_255.as_str(), 2),
        (long_256.as_str(), 1),
        ("b", 1),
    ];
    // Interleave: round-robin one event at a time.
    let max = streams.iter().map(|s| s.1).max().unwrap();
    for round in 1..=max {
        for (stream, count) in &streams {
            if round <= *count {
                let kind = format!("{}#{round}", stream.len());
                append_ok(
                    &j,
                    stream,
                    ExpectedVersion::Exact(round - 1),
                    &[ev(&kind, stream.as_bytes())],
                )
                .await;
            }
        }
    }
    j.save_snapshot("a", 3, b"snap-a").await.unwrap();
    let check = |j: &dyn Journal| {
        for (stream, count) in &streams {
            let events = stream_events(j, stream);
            assert_eq!(seqs(&events), range(1, *count), "stream {stream:?}");
            assert!(
                events
                    .iter()
                    .all(|e| e.stream == *stream && e.payload == stream.as_bytes()),
                "stream {stream:?} sees foreign events: {events:?}"
            );
            assert_eq!(j.stream_version(stream).unwrap(), *count, "{stream:?}");
            let from_2 = collect(j.iter_stream(stream, 2).unwrap());
            assert_eq!(seqs(&from_2), range(2, *count), "{stream:?}");
            for e in &events {
                assert_eq!(
                    j.stream_position(stream, e.seq).unwrap(),
                    Some(e.position),
                    "{stream:?} seq {}",
                    e.seq
                );
            }
            assert_eq!(
                j.stream_position(stream, 0).unwrap(),
                Some(events[0].position)
            );
            assert_eq!(j.stream_position(stream, count + 1).unwrap(), None);
        }
        for unknown in ["a11", "a\u{0}1", "a\u{0}\u{0}\u{0}", "aa", "a\u{1}"] {
            assert_eq!(stream_events(j, unknown), Vec::new(), "{unknown:?}");
            assert_eq!(j.stream_version(unknown).unwrap(), 0, "{unknown:?}");
            assert_eq!(j.stream_position(unknown, 1).unwrap(), None, "{unknown:?}");
        }
        assert_eq!(j.load_snapshot("a").unwrap().unwrap().state, b"snap-a");
        assert_eq!(j.load_snapshot("a1").unwrap(), None);
        assert_eq!(j.load_snapshot("a\u{0}").unwrap(), None);
        let total: u64 = streams.iter().map(|s| s.1).sum();
        assert_eq!(all_events(j).len() as u64, total);
    };
    check(&j);
    let j = h.reopen(j, config());
    check(&j);
    // Versions loaded from storage are per stream.
    append_ok(
        &j,
        "a1",
        ExpectedVersion::Exact(2),
        &[ev("a1-3", b"a1".to_vec())],
    )
    .await;
    assert_conflict(&j, "a", ExpectedVersion::Exact(2), 3).await;
    assert_conflict(&j, "a\u{0}", ExpectedVersion::Exact(3), 2).await;
    assert_eq!(j.stream_version("a").unwrap(), 3);
    assert_eq!(j.stream_version("a1").unwrap(), 3);
}

// ---------------------------------------------------------------------------------------
// Global log
// ---------------------------------------------------------------------------------------

pub(crate) async fn global_log_reads_across_pages<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    let streams = ["g-0", "g-1", "g-2"];
    // model[i] = (stream, seq) of position i + 1
    let mut model: Vec<(&str, u64)> = Vec::new();
    let mut versions = [0u64; 3];
    let mut i = 0usize;
    while model.len() < 700 {
        let s = i % 3;
        let size = (i * 7) % 13 + 1;
        let batch: Vec<NewEvent> = (0..size as u64)
            .map(|k| {
                let seq = versions[s] + 1 + k;
                ev("g", format!("{}#{seq}", streams[s]).into_bytes())
            })
            .collect();
        let a = append_ok(&j, streams[s], ExpectedVersion::Exact(versions[s]), &batch).await;
        assert_eq!(a.first_position, model.len() as u64 + 1);
        for k in 0..size as u64 {
            model.push((streams[s], versions[s] + 1 + k));
        }
        versions[s] += size as u64;
        i += 1;
    }
    let n = model.len() as u64;
    let expect = |from: u64, limit: usize| -> Vec<(u64, String, u64, Vec<u8>)> {
        let start = from.max(1);
        (start..=n)
            .take(limit)
            .map(|p| {
                let (s, seq) = model[(p - 1) as usize];
                (p, s.to_owned(), seq, format!("{s}#{seq}").into_bytes())
            })
            .collect()
    };
    let flat = |events: Vec<RecordedEvent>| -> Vec<(u64, String, u64, Vec<u8>)> {
        events
            .into_iter()
            .map(|e| (e.position, e.stream, e.seq, e.payload))
            .collect()
    };
    let check = |j: &dyn Journal| {
        assert_eq!(j.head_position(), n);
        let all = all_events(j);
        assert_eq!(positions(&all), range(1, n));
        assert_eq!(flat(all), expect(1, usize::MAX));
        let cases: &[(u64, usize)] = &[
            (0, 5),
            (1, 0),
            (1, 1),
            (1, 255),
            (1, 256),
            (1, 257),
            (1, 600),
            (2, 512),
            (200, 100),
            (255, 3),
            (256, 1),
            (257, 300),
            (300, usize::MAX),
            (500, 1000),
            (511, 2),
            (513, 256),
            (n - 1, 10),
            (n, 10),
            (n + 1, 10),
            (u64::MAX, usize::MAX),
        ];
        for &(from, limit) in cases {
            let got = j.read_all(from, limit).expect("read_all");
            assert_eq!(flat(got), expect(from, limit), "read_all({from}, {limit})");
            if limit == usize::MAX || from > n {
                let iterated = collect(j.iter_all(from));
                assert_eq!(flat(iterated), expect(from, usize::MAX), "iter_all({from})");
            } else {
                let iterated: Vec<_> = j
                    .iter_all(from)
                    .take(limit)
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(flat(iterated), expect(from, limit), "iter_all({from})");
            }
        }
        for (s, stream) in streams.iter().enumerate() {
            let events = stream_events(j, stream);
            assert_eq!(seqs(&events), range(1, versions[s]), "{stream}");
            assert!(events.windows(2).all(|w| w[0].position < w[1].position));
            assert_eq!(j.stream_version(stream).unwrap(), versions[s]);
            let middle = j.read_stream(stream, 100, 150).unwrap();
            assert_eq!(seqs(&middle), range(100, (100 + 149).min(versions[s])));
        }
    };
    check(&j);
    let j = h.reopen(j, config());
    check(&j);
}

// ---------------------------------------------------------------------------------------
// Iterators
// ---------------------------------------------------------------------------------------

/// `events` holds the first `known` events of a sequence and possibly some later ones;
/// every item must continue the sequence without gaps.
fn assert_prefix_then_contiguous(events: &[RecordedEvent], known: u64, max: u64, what: &str) {
    let got = seqs(events);
    assert!(
        got.len() as u64 >= known && got.len() as u64 <= max,
        "{what}: {} events, expected {known}..={max}",
        got.len()
    );
    assert_eq!(got, range(1, got.len() as u64), "{what}");
}

pub(crate) async fn iterators_are_lazy_and_owned<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    for i in 1..=5 {
        append_one(&j, "s", &format!("e{i}")).await;
    }
    let it_stream = j.iter_stream("s", 1).unwrap();
    let it_all = j.iter_all(1);
    let mut partial = j.iter_stream("s", 1).unwrap();
    let first_two: Vec<_> = partial.by_ref().take(2).map(Result::unwrap).collect();
    assert_eq!(seqs(&first_two), vec![1, 2]);

    for i in 6..=10 {
        append_one(&j, "s", &format!("e{i}")).await;
    }
    let streamed = collect(it_stream);
    assert_prefix_then_contiguous(&streamed, 5, 10, "iter_stream created before appends");
    let all = collect(it_all);
    assert_prefix_then_contiguous(&all, 5, 10, "iter_all created before appends");
    let rest = collect(partial);
    let mut joined = first_two;
    joined.extend(rest);
    assert_prefix_then_contiguous(&joined, 5, 10, "partly consumed iter_stream");

    // Iterators own what they need: they outlive the journal handle and cross threads.
    let it_stream = j.iter_stream("s", 3).unwrap();
    let it_all = j.iter_all(4);
    drop(j);
    let (streamed, all) =
        tokio::task::spawn_blocking(move || (collect(it_stream), collect(it_all)))
            .await
            .unwrap();
    assert_eq!(seqs(&streamed), range(3, 10));
    assert_eq!(positions(&all), range(4, 10));
    assert_eq!(kinds(&streamed)[0], "e3");

    let j = h.open(config()).unwrap();
    assert_eq!(seqs(&collect(j.iter_stream("s", 1).unwrap())), range(1, 10));
    assert_eq!(positions(&collect(j.iter_all(1))), range(1, 10));
}

pub(crate) async fn borrowed_replay_matches_iter_all<H: Harness>(make: impl Fn() -> H) {
    use std::ops::ControlFlow;
    for config in [
        config(),
        config()
            .encryption(key_a())
            .retention(toka_store::Retention::PruneCoveredBySnapshot),
    ] {
        let h = make();
        let j = h.open(config.clone()).unwrap();
        for i in 0..700u64 {
            let stream = if i % 3 == 0 { "x" } else { "y" };
            append_one(&j, stream, &format!("k{i}")).await;
        }
        // With retention on, prune x's first 100 events: replay skips them like iter_all.
        assert!(j.save_snapshot("x", 100, b"state").await.unwrap());
        let check = |j: &dyn Journal| {
            for from in [0, 1, 2, 299, 700, 701, u64::MAX] {
                let mut lent = Vec::new();
                let next = j
                    .replay(from, &mut |e| {
                        lent.push(e.into_owned());
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                let owned = collect(j.iter_all(from));
                assert_eq!(lent, owned, "replay from {from}");
                let expected_next = if from > 700 { from } else { 701 };
                assert_eq!(next, expected_next.max(1), "resume position from {from}");
            }
            // Breaking early reports where to resume; resuming continues without a gap.
            let mut seen = Vec::new();
            let next = j
                .replay(1, &mut |e| {
                    seen.push(e.position);
                    if seen.len() == 50 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .unwrap();
            assert_eq!(next, seen[49] + 1);
            let mut rest = Vec::new();
            j.replay(next, &mut |e| {
                rest.push(e.position);
                ControlFlow::Continue(())
            })
            .unwrap();
            seen.extend(rest);
            assert_eq!(seen, positions(&all_events(j)));
        };
        check(&j);
        let j = h.reopen(j, config);
        check(&j);
    }
}

pub(crate) async fn iterate_long_stream<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    let mut version = 0u64;
    for round in 0..20u64 {
        let batch: Vec<NewEvent> = (1..=100u64)
            .map(|k| ev("long", (round * 100 + k).to_be_bytes().to_vec()))
            .collect();
        append_ok(&j, "long", ExpectedVersion::Exact(version), &batch).await;
        version += 100;
        append_one(&j, "other", "between").await;
    }
    let check = |j: &dyn Journal| {
        let events = collect(j.iter_stream("long", 1).unwrap());
        assert_eq!(events.len(), 2000);
        assert_eq!(seqs(&events), range(1, 2000));
        for e in &events {
            assert_eq!(e.payload, e.seq.to_be_bytes(), "payload of seq {}", e.seq);
            assert_eq!(e.stream, "long");
        }
        assert!(events.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(events[1999].position, 2019);
        assert_eq!(
            seqs(&collect(j.iter_stream("long", 1999).unwrap())),
            vec![1999, 2000]
        );
        assert_eq!(collect(j.iter_stream("long", 2001).unwrap()), Vec::new());
        assert_eq!(
            seqs(&j.read_stream("long", 1500, 10).unwrap()),
            range(1500, 1509)
        );
        assert_eq!(j.stream_version("long").unwrap(), 2000);
        assert_eq!(j.stream_version("other").unwrap(), 20);
    };
    check(&j);
    let j = h.reopen(j, config());
    check(&j);
    // A full replay on a blocking thread, as the docs recommend.
    let it = j.iter_stream("long", 1).unwrap();
    let count = tokio::task::spawn_blocking(move || it.map(Result::unwrap).count())
        .await
        .unwrap();
    assert_eq!(count, 2000);
}

// ---------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------

pub(crate) async fn subscription_catches_up_then_goes_live<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    for i in 1..=10 {
        append_one(&j, "s", &format!("e{i}")).await;
    }
    let mut sub = j.subscribe(1);
    assert_eq!(sub.position(), 1);
    for i in 1..=10u64 {
        let e = next_event(&mut sub).await;
        assert_eq!(
            (e.position, e.seq, e.kind.as_str()),
            (i, i, format!("e{i}").as_str())
        );
        assert_eq!(sub.position(), i + 1);
    }
    let writer = j.clone();
    let task = tokio::spawn(async move {
        for i in 11..=20u64 {
            let stream = if i % 2 == 0 { "s" } else { "t" };
            append_one(&writer, stream, &format!("e{i}")).await;
            if i % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut live = Vec::new();
    for i in 11..=20u64 {
        let e = next_event(&mut sub).await;
        assert_eq!(e.position, i);
        assert_eq!(e.kind, format!("e{i}"));
        assert_eq!(sub.position(), i + 1);
        live.push(e);
    }
    task.await.unwrap();
    assert_eq!(live, j.read_all(11, 10).unwrap());
    assert_no_event(&mut sub, Duration::from_millis(100)).await;
    assert_eq!(sub.position(), 21);
    drop(sub);

    let j = h.reopen(j, config());
    let mut sub = j.subscribe(1);
    let mut replayed = Vec::new();
    for _ in 0..20 {
        replayed.push(next_event(&mut sub).await);
    }
    assert_eq!(replayed, all_events(&j));
    assert_no_event(&mut sub, Duration::from_millis(50)).await;
    append_one(&j, "s", "e21").await;
    assert_eq!(next_event(&mut sub).await.position, 21);
}

pub(crate) async fn subscription_from_the_middle<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    for i in 1..=10 {
        append_one(&j, if i % 2 == 0 { "x" } else { "y" }, &format!("e{i}")).await;
    }
    let mut middle = j.subscribe(6);
    assert_eq!(middle.position(), 6);
    for p in 6..=10 {
        assert_eq!(next_event(&mut middle).await.position, p);
    }
    let mut zero = j.subscribe(0);
    assert_eq!(next_event(&mut zero).await.position, 1);
    let mut at_head = j.subscribe(11);
    let mut ahead = j.subscribe(15);
    assert_eq!(ahead.position(), 15);
    assert_no_event(&mut at_head, Duration::from_millis(50)).await;
    for i in 11..=16 {
        append_one(&j, "x", &format!("e{i}")).await;
    }
    for p in 11..=16 {
        assert_eq!(next_event(&mut at_head).await.position, p);
        assert_eq!(next_event(&mut middle).await.position, p);
    }
    assert_eq!(next_event(&mut ahead).await.position, 15);
    assert_eq!(next_event(&mut ahead).await.position, 16);
    assert_no_event(&mut ahead, Duration::from_millis(20)).await;
    drop((middle, zero, at_head, ahead));

    let j = h.reopen(j, config());
    let mut sub = j.subscribe(4);
    for p in 4..=16 {
        let e = next_event(&mut sub).await;
        assert_eq!((e.position, e.kind.clone()), (p, format!("e{p}")));
    }
}

async fn slow_subscriber<H: Harness>(make: impl Fn() -> H, config: JournalConfig) {
    const TOTAL: u64 = 3000;
    let h = make();
    let j = h.open(config.clone()).unwrap();
    let mut sub = j.subscribe(1);
    let writer = j.clone();
    let task = tokio::spawn(async move {
        let mut n = 0u64;
        let mut round = 0u64;
        while n < TOTAL {
            let size = [1u64, 50, 7, 100, 13][(round % 5) as usize].min(TOTAL - n);
            let batch: Vec<NewEvent> = (n + 1..=n + size)
                .map(|i| ev("slow", i.to_be_bytes().to_vec()))
                .collect();
            append_ok(
                &writer,
                &format!("s{}", round % 4),
                ExpectedVersion::Any,
                &batch,
            )
            .await;
            n += size;
            round += 1;
        }
    });
    // The subscriber sleeps while the writer appends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.await.unwrap();
    j.flush().await.unwrap();
    for p in 1..=TOTAL {
        let e = next_event(&mut sub).await;
        assert_eq!(e.position, p, "subscription skipped or repeated an event");
        assert_eq!(e.payload, p.to_be_bytes());
    }
    assert_eq!(sub.position(), TOTAL + 1);
    assert_no_event(&mut sub, Duration::from_millis(50)).await;
    assert_eq!(j.head_position(), TOTAL);
    drop(sub);
    let j = h.reopen(j, config);
    assert_eq!(j.head_position(), TOTAL);
    assert_eq!(verify_ok(&j).records, TOTAL);
}

pub(crate) async fn slow_subscriber_receives_every_event_once<H: Harness>(make: impl Fn() -> H) {
    slow_subscriber(make, config().durability(Durability::Fsync)).await;
}

pub(crate) async fn slow_subscriber_receives_every_event_once_buffered<H: Harness>(
    make: impl Fn() -> H,
) {
    slow_subscriber(make, buffered(Duration::from_millis(20))).await;
}

pub(crate) async fn subscription_with_buffered_durability<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    // A flush interval far beyond the test's timeouts: buffered events must become
    // visible to subscribers when written, not when flushed.
    let cfg = buffered(Duration::from_secs(3600));
    let j = h.open(cfg.clone()).unwrap();
    let mut sub = j.subscribe(1);
    for i in 1..=5u64 {
        append_one(&j, "b", &format!("e{i}")).await;
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("buffered event not visible to a subscriber before the flush")
            .unwrap()
            .unwrap();
        assert_eq!(e.position, i);
        assert_eq!(sub.position(), i + 1);
    }
    j.flush().await.unwrap();
    let mut again = j.subscribe(1);
    for p in 1..=5 {
        assert_eq!(next_event(&mut again).await.position, p);
    }
    drop((sub, again));
    let j = h.reopen(j, cfg);
    assert_eq!(j.head_position(), 5);
    assert_eq!(seqs(&stream_events(&j, "b")), range(1, 5));
}

pub(crate) async fn subscription_ends_when_journal_is_dropped<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    for i in 1..=3 {
        append_one(&j, "s", &format!("e{i}")).await;
    }
    let mut waiting = j.subscribe(1);
    let mut idle = j.subscribe(1);
    for p in 1..=3 {
        assert_eq!(next_event(&mut waiting).await.position, p);
        assert_eq!(next_event(&mut idle).await.position, p);
    }
    // One subscriber is parked in `next()` when the journal goes away.
    let parked = tokio::spawn(async move { tokio::time::timeout(WAIT, waiting.next()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let clone = j.clone();
    drop(j);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !parked.is_finished(),
        "subscription ended while a clone was alive"
    );
    drop(clone);
    let outcome = parked
        .await
        .unwrap()
        .expect("parked subscription did not end after the journal was dropped");
    assert!(outcome.is_none(), "expected None, got {outcome:?}");
    // The other one was idle: its next call ends too.
    let outcome = tokio::time::timeout(WAIT, idle.next())
        .await
        .expect("idle subscription did not end after the journal was dropped");
    assert!(outcome.is_none(), "expected None, got {outcome:?}");
    drop(idle);

    // A subscriber that had not read anything yet when the journal went away: it may
    // still deliver events (in order, from its start) but must end, not hang or fail.
    let j = h.open(config()).unwrap();
    assert_eq!(j.head_position(), 3);
    let mut behind = j.subscribe(1);
    drop(j);
    let mut delivered = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, behind.next()).await {
            Err(_) => panic!("subscription hangs after the journal was dropped"),
            Ok(None) => break,
            Ok(Some(Ok(e))) => delivered.push(e.position),
            Ok(Some(Err(e))) => panic!("subscription failed after the journal was dropped: {e}"),
        }
    }
    assert_eq!(delivered, range(1, delivered.len() as u64));
    assert!(delivered.len() <= 3);
    drop(behind);
    let j = h.open(config()).unwrap();
    assert_eq!(j.head_position(), 3);
}

// ---------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------

async fn five_events(j: &dyn Journal, stream: &str) {
    for i in 1..=5u64 {
        append_ok(
            j,
            stream,
            ExpectedVersion::Exact(i - 1),
            &[ev(&format!("e{i}"), format!("{stream}:{i}").into_bytes())],
        )
        .await;
    }
}

pub(crate) async fn snapshot_round_trip<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    assert_eq!(j.load_snapshot("s").unwrap(), None);
    five_events(&j, "s").await;
    assert_eq!(j.load_snapshot("s").unwrap(), None);
    let before = Timestamp::now().as_micros();
    assert!(j.save_snapshot("s", 3, b"state-at-3").await.unwrap());
    let after = Timestamp::now().as_micros();
    let check = |j: &dyn Journal| {
        let snap = j.load_snapshot("s").unwrap().expect("snapshot");
        assert_eq!(snap.stream, "s");
        assert_eq!(snap.seq, 3);
        assert_eq!(snap.state, b"state-at-3");
        let ts = snap.timestamp.as_micros();
        assert!(ts >= before && ts <= after, "snapshot timestamp {ts}");
        assert_eq!(j.load_snapshot("t").unwrap(), None);
        // A snapshot does not touch the events.
        assert_eq!(seqs(&stream_events(j, "s")), range(1, 5));
        assert_eq!(j.head_position(), 5);
        snap
    };
    let saved = check(&j);
    let j = h.reopen(j, config());
    assert_eq!(check(&j), saved);
    // Empty state is a valid snapshot.
    assert!(j.save_snapshot("s", 5, b"").await.unwrap());
    let empty = j.load_snapshot("s").unwrap().unwrap();
    assert_eq!((empty.seq, empty.state.len()), (5, 0));
}

pub(crate) async fn snapshot_keeps_the_newest<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    five_events(&j, "s").await;
    assert!(j.save_snapshot("s", 4, b"four").await.unwrap());
    assert!(
        !j.save_snapshot("s", 2, b"two").await.unwrap(),
        "older snapshot was stored"
    );
    let snap = j.load_snapshot("s").unwrap().unwrap();
    assert_eq!((snap.seq, snap.state.as_slice()), (4, b"four".as_slice()));
    assert!(
        j.save_snapshot("s", 4, b"four-again").await.unwrap(),
        "same seq must overwrite"
    );
    let snap = j.load_snapshot("s").unwrap().unwrap();
    assert_eq!(
        (snap.seq, snap.state.as_slice()),
        (4, b"four-again".as_slice())
    );
    let j = h.reopen(j, config());
    assert!(!j.save_snapshot("s", 3, b"three").await.unwrap());
    let snap = j.load_snapshot("s").unwrap().unwrap();
    assert_eq!(
        (snap.seq, snap.state.as_slice()),
        (4, b"four-again".as_slice())
    );
    assert!(j.save_snapshot("s", 5, b"five").await.unwrap());
    let j = h.reopen(j, config());
    let snap = j.load_snapshot("s").unwrap().unwrap();
    assert_eq!((snap.seq, snap.state.as_slice()), (5, b"five".as_slice()));
}

pub(crate) async fn snapshot_ahead_of_stream_is_rejected<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    five_events(&j, "s").await;
    match j.save_snapshot("s", 6, b"future").await {
        Err(Error::SnapshotAhead {
            stream,
            seq,
            version,
        }) => assert_eq!((stream.as_str(), seq, version), ("s", 6, 5)),
        other => panic!("expected SnapshotAhead, got {other:?}"),
    }
    match j.save_snapshot("unknown", 1, b"x").await {
        Err(Error::SnapshotAhead { seq, version, .. }) => assert_eq!((seq, version), (1, 0)),
        other => panic!("expected SnapshotAhead, got {other:?}"),
    }
    assert_eq!(j.load_snapshot("s").unwrap(), None);
    assert_eq!(j.load_snapshot("unknown").unwrap(), None);
    let j = h.reopen(j, config());
    assert!(matches!(
        j.save_snapshot("s", 6, b"future").await,
        Err(Error::SnapshotAhead { version: 5, .. })
    ));
    assert!(j.save_snapshot("s", 5, b"now").await.unwrap());
    assert_eq!(j.load_snapshot("s").unwrap().unwrap().seq, 5);
}

pub(crate) async fn snapshot_size_limits<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    five_events(&j, "s").await;
    let big: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 256) as u8).collect();
    assert!(j.save_snapshot("s", 2, &big).await.unwrap());
    assert_eq!(j.load_snapshot("s").unwrap().unwrap().state, big);
    match j.save_snapshot("s", 3, &vec![1; 1024 * 1024 + 1]).await {
        Err(Error::SnapshotTooLarge { stream, size, max }) => {
            assert_eq!((stream.as_str(), max), ("s", 1024 * 1024));
            assert!(size > 1024 * 1024);
        }
        other => panic!("expected SnapshotTooLarge, got {other:?}"),
    }
    assert_eq!(
        j.load_snapshot("s").unwrap().unwrap().seq,
        2,
        "rejected snapshot replaced the old one"
    );
    let j = h.reopen(j, config());
    assert_eq!(j.load_snapshot("s").unwrap().unwrap().state, big);

    // A configured limit applies to snapshots as well.
    let small = config().max_record_bytes(4096);
    let j = h.reopen(j, small.clone());
    assert!(j.save_snapshot("s", 4, &[9; 4096]).await.unwrap());
    match j.save_snapshot("s", 5, &[9; 4097]).await {
        Err(Error::SnapshotTooLarge { size, max, .. }) => assert_eq!((size, max), (4097, 4096)),
        other => panic!("expected SnapshotTooLarge, got {other:?}"),
    }
    let snap = j.load_snapshot("s").unwrap().unwrap();
    assert_eq!((snap.seq, snap.state.len()), (4, 4096));
}

pub(crate) async fn snapshot_survives_reopen<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    five_events(&j, "s").await;
    five_events(&j, "t").await;
    assert!(j.save_snapshot("s", 5, b"s-5").await.unwrap());
    assert!(j.save_snapshot("t", 2, b"t-2").await.unwrap());
    let s = j.load_snapshot("s").unwrap().unwrap();
    let t = j.load_snapshot("t").unwrap().unwrap();
    let j = h.reopen(j, config());
    assert_eq!(j.load_snapshot("s").unwrap().unwrap(), s);
    assert_eq!(j.load_snapshot("t").unwrap().unwrap(), t);
    assert_eq!(j.load_snapshot("u").unwrap(), None);
    // A crash right after the acknowledged save keeps it too.
    assert!(j.save_snapshot("t", 4, b"t-4").await.unwrap());
    let image = h.crash_image();
    let copy = image.open(config()).unwrap();
    let t4 = copy.load_snapshot("t").unwrap().unwrap();
    assert_eq!((t4.seq, t4.state.as_slice()), (4, b"t-4".as_slice()));
}

// ---------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------

const PRUNE_MARKER: &[u8] = b"PRUNE-ME-MARKER-9876";

pub(crate) async fn retention_prunes_events_covered_by_snapshot<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let cfg = config().retention(Retention::PruneCoveredBySnapshot);
    let j = h.open(cfg.clone()).unwrap();
    for i in 1..=5u64 {
        let mut payload = PRUNE_MARKER.to_vec();
        payload.extend_from_slice(format!("-r{i}").as_bytes());
        append_ok(
            &j,
            "r",
            ExpectedVersion::Exact(i - 1),
            &[ev(&format!("r{i}"), payload)],
        )
        .await;
        append_one(&j, "other", &format!("o{i}")).await;
    }
    // positions: r1=1, o1=2, r2=3, o2=4, ..., r5=9, o5=10
    let others_before = stream_events(&j, "other");
    assert!(j.save_snapshot("r", 3, b"r@3").await.unwrap());

    let check_first_prune = |j: &dyn Journal| {
        let r = stream_events(j, "r");
        assert_eq!(seqs(&r), vec![4, 5]);
        assert_eq!(positions(&r), vec![7, 9]);
        assert_eq!(
            j.stream_version("r").unwrap(),
            5,
            "version must never reset"
        );
        assert_eq!(seqs(&j.read_stream("r", 2, 2).unwrap()), vec![4, 5]);
        assert_eq!(seqs(&collect(j.iter_stream("r", 1).unwrap())), vec![4, 5]);
        let all = all_events(j);
        assert_eq!(positions(&all), vec![2, 4, 6, 7, 8, 9, 10]);
        assert_eq!(
            stream_events(j, "other"),
            others_before,
            "other stream touched"
        );
        assert_eq!(j.head_position(), 10);
        let report = verify_ok(j);
        assert_eq!(
            (report.records, report.pruned, report.head_position),
            (10, 3, 10)
        );
        assert_eq!(j.load_snapshot("r").unwrap().unwrap().seq, 3);
    };
    check_first_prune(&j);
    // The bodies are gone from storage, not merely hidden.
    let raw = H::raw_entries(&j);
    for i in 1..=3 {
        let body = [PRUNE_MARKER, format!("-r{i}").as_bytes()].concat();
        assert!(
            !raw.iter().any(|v| contains(v, &body)),
            "pruned event r{i} still stored"
        );
    }
    let kept = [PRUNE_MARKER, b"-r4"].concat();
    assert!(
        raw.iter().any(|v| contains(v, &kept)),
        "raw inspection sees nothing"
    );

    let j = h.reopen(j, cfg.clone());
    check_first_prune(&j);

    // Subscribers skip the pruned records too.
    let mut sub = j.subscribe(1);
    assert_eq!(next_event(&mut sub).await.position, 2);
    drop(sub);

    assert!(j.save_snapshot("r", 5, b"r@5").await.unwrap());
    assert_eq!(stream_events(&j, "r"), Vec::new());
    assert_eq!(j.stream_version("r").unwrap(), 5);
    let report = verify_ok(&j);
    assert_eq!((report.records, report.pruned), (10, 5));
    let next = append_ok(
        &j,
        "r",
        ExpectedVersion::Exact(5),
        &[ev("r6", b"r6".to_vec())],
    )
    .await;
    assert_eq!((next.first_seq, next.first_position), (6, 11));
    assert_conflict(&j, "r", ExpectedVersion::NoStream, 6).await;

    let j = h.reopen(j, cfg);
    let r = stream_events(&j, "r");
    assert_eq!(seqs(&r), vec![6]);
    assert_eq!(r[0].payload, b"r6");
    assert_eq!(j.stream_version("r").unwrap(), 6);
    assert_eq!(positions(&all_events(&j)), vec![2, 4, 6, 8, 10, 11]);
    let report = verify_ok(&j);
    assert_eq!(
        (report.records, report.pruned, report.head_position),
        (11, 5, 11)
    );
}

pub(crate) async fn retention_keep_all_prunes_nothing<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    five_events(&j, "r").await;
    assert!(j.save_snapshot("r", 3, b"r@3").await.unwrap());
    assert!(j.save_snapshot("r", 5, b"r@5").await.unwrap());
    let check = |j: &dyn Journal| {
        assert_eq!(seqs(&stream_events(j, "r")), range(1, 5));
        assert_eq!(positions(&all_events(j)), range(1, 5));
        let report = verify_ok(j);
        assert_eq!((report.records, report.pruned), (5, 0));
    };
    check(&j);
    let j = h.reopen(j, config());
    check(&j);
}

pub(crate) async fn retention_pruned_head_survives_reopen<H: Harness>(make: impl Fn() -> H) {
    // The newest record of the log is a pruned stub when the journal is reopened: the
    // head and the hash chain must be recovered from it.
    let h = make();
    let cfg = config().retention(Retention::PruneCoveredBySnapshot);
    let j = h.open(cfg.clone()).unwrap();
    append_ok(
        &j,
        "s",
        ExpectedVersion::NoStream,
        &[
            ev("a", b"1".to_vec()),
            ev("b", b"2".to_vec()),
            ev("c", b"3".to_vec()),
        ],
    )
    .await;
    assert!(j.save_snapshot("s", 3, b"s@3").await.unwrap());
    let before = verify_ok(&j);
    assert_eq!(
        (before.records, before.pruned, before.head_position),
        (3, 3, 3)
    );
    let j = h.reopen(j, cfg.clone());
    assert_eq!(j.head_position(), 3);
    assert_eq!(j.stream_version("s").unwrap(), 3);
    assert_eq!(all_events(&j), Vec::new());
    assert_eq!(verify_ok(&j), before);
    let next = append_ok(
        &j,
        "s",
        ExpectedVersion::Exact(3),
        &[ev("d", b"4".to_vec())],
    )
    .await;
    assert_eq!((next.first_position, next.first_seq), (4, 4));
    let report = verify_ok(&j);
    assert_eq!((report.records, report.pruned), (4, 3));
    let j = h.reopen(j, cfg);
    assert_eq!(verify_ok(&j), report);
    assert_eq!(kinds(&stream_events(&j, "s")), vec!["d"]);
}

// ---------------------------------------------------------------------------------------
// verify()
// ---------------------------------------------------------------------------------------

pub(crate) async fn verify_fresh_and_populated_journal<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let j = h.open(config()).unwrap();
    let fresh = verify_ok(&j);
    assert_eq!(
        (fresh.records, fresh.pruned, fresh.head_position),
        (0, 0, 0)
    );
    assert_eq!(fresh.head_hash_hex().len(), 64);
    for round in 0..10u64 {
        let size = round % 3 + 1;
        let batch: Vec<NewEvent> = (0..size)
            .map(|_| ev("v", round.to_le_bytes().to_vec()))
            .collect();
        append_ok(&j, &format!("v{}", round % 3), ExpectedVersion::Any, &batch).await;
    }
    let populated = verify_ok(&j);
    let n = j.head_position();
    assert_eq!(n, 19);
    assert_eq!(
        (populated.records, populated.pruned, populated.head_position),
        (n, 0, n)
    );
    assert_ne!(populated.head_hash, fresh.head_hash);
    // Snapshots are not part of the log.
    assert!(j.save_snapshot("v0", 2, b"s").await.unwrap());
    assert_eq!(verify_ok(&j), populated);
    let j = h.reopen(j, config());
    assert_eq!(
        verify_ok(&j),
        populated,
        "verify report changed across reopen"
    );
}

pub(crate) async fn verify_head_hash_tracks_content<H: Harness>(make: impl Fn() -> H) {
    let h1 = make();
    let h2 = make();
    let j1 = h1.open(config()).unwrap();
    let j2 = h2.open(config()).unwrap();
    let mut hashes = vec![verify_ok(&j1).head_hash];
    for i in 0..5u64 {
        append_ok(
            &j1,
            "h",
            ExpectedVersion::Any,
            &[ev("h", i.to_le_bytes().to_vec())],
        )
        .await;
        hashes.push(verify_ok(&j1).head_hash);
    }
    for i in 0..5u64 {
        append_ok(
            &j2,
            "h",
            ExpectedVersion::Any,
            &[ev("h", (i + 100).to_le_bytes().to_vec())],
        )
        .await;
    }
    let mut distinct = hashes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        hashes.len(),
        "head hash did not change on append"
    );
    let r1 = verify_ok(&j1);
    let r2 = verify_ok(&j2);
    assert_eq!((r1.records, r2.records), (5, 5));
    assert_ne!(
        r1.head_hash, r2.head_hash,
        "different content, same head hash"
    );
    let j1 = h1.reopen(j1, config());
    let j2 = h2.reopen(j2, config());
    assert_eq!(verify_ok(&j1).head_hash, r1.head_hash);
    assert_eq!(verify_ok(&j2).head_hash, r2.head_hash);
    // Appending after a reopen continues the same chain.
    append_ok(&j1, "h", ExpectedVersion::Exact(5), &[ev("h", Vec::new())]).await;
    let r1b = verify_ok(&j1);
    assert_eq!(r1b.records, 6);
    assert!(!hashes.contains(&r1b.head_hash));
}

// ---------------------------------------------------------------------------------------
// Durability modes
// ---------------------------------------------------------------------------------------

/// Appends, reads back, snapshots and verifies; returns the expected log.
async fn basic_flow(j: &dyn Journal) -> Vec<RecordedEvent> {
    let a = append_ok(
        j,
        "acct-1",
        ExpectedVersion::NoStream,
        &[ev("opened", b"{}".to_vec())],
    )
    .await;
    assert_eq!((a.first_position, a.first_seq), (1, 1));
    let b = append_ok(
        j,
        "acct-1",
        ExpectedVersion::Exact(1),
        &[
            ev("deposited", b"10".to_vec()),
            ev("withdrawn", b"3".to_vec()),
        ],
    )
    .await;
    assert_eq!((b.first_position, b.last_position, b.last_seq), (2, 3, 3));
    let c = append_ok(
        j,
        "acct-2",
        ExpectedVersion::NoStream,
        &[ev("opened", b"{}".to_vec())],
    )
    .await;
    assert_eq!((c.first_position, c.first_seq), (4, 1));
    assert_conflict(j, "acct-1", ExpectedVersion::Exact(1), 3).await;
    assert_eq!(
        kinds(&stream_events(j, "acct-1")),
        vec!["opened", "deposited", "withdrawn"]
    );
    assert!(j.save_snapshot("acct-1", 3, b"balance=7").await.unwrap());
    assert_eq!(
        j.load_snapshot("acct-1").unwrap().unwrap().state,
        b"balance=7"
    );
    assert_eq!(verify_ok(j).records, 4);
    let all = all_events(j);
    assert_eq!(positions(&all), range(1, 4));
    all
}

fn assert_basic_flow_stored(j: &dyn Journal, expected: &[RecordedEvent], what: &str) {
    assert_eq!(all_events(j), expected, "{what}: log differs");
    assert_eq!(j.head_position(), 4, "{what}");
    assert_eq!(j.stream_version("acct-1").unwrap(), 3, "{what}");
    assert_eq!(j.stream_version("acct-2").unwrap(), 1, "{what}");
    assert_eq!(
        j.load_snapshot("acct-1").unwrap().unwrap().state,
        b"balance=7",
        "{what}"
    );
    assert_eq!(verify_ok(j).records, 4, "{what}");
}

pub(crate) async fn fsync_durability_basic_flow<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let cfg = config().durability(Durability::Fsync);
    assert_eq!(cfg.get_durability(), Durability::Fsync);
    assert_eq!(
        config().get_durability(),
        Durability::Fsync,
        "Fsync is the default"
    );
    let j = h.open(cfg.clone()).unwrap();
    let expected = basic_flow(&j).await;
    // Acknowledged = on disk: a crash right now keeps everything, no flush, no close.
    let image = h.crash_image();
    {
        let copy = image.open(cfg.clone()).unwrap();
        assert_basic_flow_stored(&copy, &expected, "crash image");
    }
    // Also an append that is the very last thing before the crash (the snapshot of
    // `basic_flow` waited for a flush itself, this one has nothing after it).
    let last = append_ok(
        &j,
        "acct-3",
        ExpectedVersion::NoStream,
        &[ev("opened", b"{}".to_vec())],
    )
    .await;
    assert_eq!(last.first_position, 5);
    let image = h.crash_image();
    {
        let copy = image.open(cfg.clone()).unwrap();
        assert_eq!(
            copy.head_position(),
            5,
            "acknowledged append lost in a crash"
        );
        assert_eq!(stream_events(&copy, "acct-3").len(), 1);
        assert_eq!(all_events(&copy)[..4], expected[..]);
    }
    j.flush().await.unwrap();
    let j = h.reopen(j, cfg.clone());
    assert_eq!(j.head_position(), 5);
    assert_eq!(all_events(&j)[..4], expected[..]);
    assert_eq!(verify_ok(&j).records, 5);
    let d = append_ok(
        &j,
        "acct-2",
        ExpectedVersion::Exact(1),
        &[ev("closed", Vec::new())],
    )
    .await;
    assert_eq!((d.first_position, d.first_seq), (6, 2));
}

pub(crate) async fn buffered_durability_basic_flow<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let cfg = buffered(Duration::from_secs(3600));
    assert_eq!(cfg.get_durability(), Durability::Buffered);
    let j = h.open(cfg.clone()).unwrap();
    tokio::time::timeout(WAIT, j.flush())
        .await
        .expect("flush of an empty journal hangs")
        .expect("flush of an empty journal");
    let expected = basic_flow(&j).await;
    j.flush().await.expect("flush");
    j.flush().await.expect("second flush");
    let image = h.crash_image();
    {
        let copy = image.open(cfg.clone()).unwrap();
        assert_basic_flow_stored(&copy, &expected, "crash image after flush()");
    }
    let j = h.reopen(j, cfg.clone());
    assert_basic_flow_stored(&j, &expected, "reopened");
    let d = append_ok(
        &j,
        "acct-2",
        ExpectedVersion::Exact(1),
        &[ev("closed", Vec::new())],
    )
    .await;
    assert_eq!((d.first_position, d.first_seq), (5, 2));
    // Closing a buffered journal flushes what is still pending.
    let j = h.reopen(j, cfg);
    assert_eq!(j.head_position(), 5);
    assert_eq!(verify_ok(&j).records, 5);
}

pub(crate) async fn buffered_flush_interval_makes_writes_durable<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let cfg = buffered(Duration::from_millis(20));
    let j = h.open(cfg.clone()).unwrap();
    for i in 1..=10 {
        append_one(&j, "b", &format!("e{i}")).await;
    }
    // No explicit flush: the background flush must have run by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let image = h.crash_image();
    {
        let copy = image.open(cfg.clone()).unwrap();
        assert_eq!(
            copy.head_position(),
            10,
            "buffered writes not flushed within the interval"
        );
        assert_eq!(seqs(&stream_events(&copy, "b")), range(1, 10));
    }
    let j = h.reopen(j, cfg);
    assert_eq!(seqs(&stream_events(&j, "b")), range(1, 10));
    assert_eq!(verify_ok(&j).records, 10);
}

// ---------------------------------------------------------------------------------------
// Encryption at rest
// ---------------------------------------------------------------------------------------

const MARKER: &[u8] = b"TOP-SECRET-MARKER-1234";

fn marked(i: u64) -> Vec<u8> {
    let mut payload = b"prefix:".to_vec();
    payload.extend_from_slice(MARKER);
    payload.extend_from_slice(format!(":{i}").as_bytes());
    payload
}

/// Writes marked payloads (single and batched) and a marked snapshot.
async fn write_secrets(j: &dyn Journal) {
    append_ok(
        j,
        "vault",
        ExpectedVersion::NoStream,
        &[ev("secret", marked(1))],
    )
    .await;
    append_ok(
        j,
        "vault",
        ExpectedVersion::Exact(1),
        &[
            ev("secret", marked(2)),
            ev("empty", Vec::new()),
            ev("secret", marked(4)),
        ],
    )
    .await;
    append_ok(j, "other", ExpectedVersion::Any, &[ev("secret", marked(5))]).await;
    let mut state = b"snapshot-state:".to_vec();
    state.extend_from_slice(MARKER);
    assert!(j.save_snapshot("vault", 4, &state).await.unwrap());
}

fn check_secrets(j: &dyn Journal) {
    let vault = stream_events(j, "vault");
    assert_eq!(seqs(&vault), vec![1, 2, 3, 4]);
    assert_eq!(vault[0].payload, marked(1));
    assert_eq!(vault[1].payload, marked(2));
    assert!(vault[2].payload.is_empty());
    assert_eq!(vault[3].payload, marked(4));
    assert_eq!(stream_events(j, "other")[0].payload, marked(5));
    let snap = j.load_snapshot("vault").unwrap().unwrap();
    assert_eq!(snap.seq, 4);
    assert!(contains(&snap.state, MARKER));
    assert_eq!(verify_ok(j).records, 5);
}

pub(crate) async fn encryption_round_trip_and_reopen<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let cfg = config().encryption(key_a());
    let j = h.open(cfg.clone()).unwrap();
    write_secrets(&j).await;
    check_secrets(&j);
    let mut sub = j.subscribe(1);
    assert_eq!(next_event(&mut sub).await.payload, marked(1));
    drop(sub);
    let j = h.reopen(j, cfg.clone());
    check_secrets(&j);
    // Appending after a reopen works and stays readable.
    append_ok(
        &j,
        "vault",
        ExpectedVersion::Exact(4),
        &[ev("secret", marked(6))],
    )
    .await;
    let j = h.reopen(j, cfg.clone());
    assert_eq!(stream_events(&j, "vault")[4].payload, marked(6));
    // Encryption overhead counts against the record limit, but 1000 bytes fit in 4096.
    let j = h.reopen(j, cfg.max_record_bytes(4096));
    append_ok(&j, "vault", ExpectedVersion::Any, &[ev("k", vec![3; 1000])]).await;
    assert!(j.save_snapshot("vault", 6, &[4; 1000]).await.unwrap());
    assert_eq!(
        j.load_snapshot("vault").unwrap().unwrap().state,
        vec![4; 1000]
    );
}

pub(crate) async fn encryption_rejects_wrong_or_missing_key<H: Harness>(make: impl Fn() -> H) {
    // A journal created with a key but still without events already needs the key.
    let empty = make();
    drop(empty.open(config().encryption(key_a())).unwrap());
    assert!(matches!(empty.open(config()), Err(Error::KeyRequired)));
    assert!(matches!(
        empty.open(config().encryption(key_b())),
        Err(Error::WrongKey)
    ));

    let h = make();
    let j = h.open(config().encryption(key_a())).unwrap();
    write_secrets(&j).await;
    drop(j);
    match h.open(config().encryption(key_b())) {
        Err(Error::WrongKey) => {}
        other => panic!("expected WrongKey, got {other:?}"),
    }
    match h.open(config()) {
        Err(Error::KeyRequired) => {}
        other => panic!("expected KeyRequired, got {other:?}"),
    }
    // The failed opens changed nothing.
    let j = h.open(config().encryption(key_a())).unwrap();
    check_secrets(&j);
}

pub(crate) async fn encryption_key_on_plaintext_journal_is_refused<H: Harness>(
    make: impl Fn() -> H,
) {
    let h = make();
    let j = h.open(config()).unwrap();
    five_events(&j, "plain").await;
    drop(j);
    // Snapshot the storage as a clean reopen leaves it (the stream index is checkpointed
    // on open and close), then try the refused open.
    let j = h.open(config()).unwrap();
    let raw_before = H::raw_entries(&j);
    drop(j);
    match h.open(config().encryption(key_a())) {
        Err(Error::NotEncrypted) => {}
        other => panic!("expected NotEncrypted, got {other:?}"),
    }
    let j = h.open(config()).unwrap();
    assert_eq!(
        H::raw_entries(&j),
        raw_before,
        "refused open modified storage"
    );
    assert_eq!(seqs(&stream_events(&j, "plain")), range(1, 5));
    assert_eq!(verify_ok(&j).records, 5);
}

pub(crate) async fn encryption_hides_plaintext_at_rest<H: Harness>(make: impl Fn() -> H) {
    let key = key_a();
    // Control: without encryption the marker is visible, so the inspection works.
    let plain = make();
    let j = plain.open(config()).unwrap();
    write_secrets(&j).await;
    let raw = H::raw_entries(&j);
    assert!(
        raw.iter().any(|v| contains(v, MARKER)),
        "raw inspection is blind"
    );
    drop(j);
    let files = plain.stored_files();
    if !files.is_empty() {
        let found = files
            .iter()
            .any(|f| contains(&std::fs::read(f).unwrap(), MARKER));
        assert!(found, "file inspection is blind");
    }

    let h = make();
    let cfg = config().encryption(key.clone());
    let j = h.open(cfg.clone()).unwrap();
    write_secrets(&j).await;
    // Overwriting the snapshot seals the new state as well.
    assert!(j.save_snapshot("vault", 4, &marked(99)).await.unwrap());
    check_secrets(&j);
    let raw = H::raw_entries(&j);
    assert!(!raw.is_empty());
    for value in &raw {
        assert!(
            !contains(value, MARKER),
            "plaintext marker stored: {value:?}"
        );
        assert!(!contains(value, &key.to_bytes()), "key bytes stored");
    }
    drop(j);
    for file in h.stored_files() {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, MARKER),
            "plaintext marker in {}",
            file.display()
        );
        assert!(
            !contains(&bytes, &key.to_bytes()),
            "key bytes in {}",
            file.display()
        );
    }
    let j = h.open(cfg).unwrap();
    assert_eq!(stream_events(&j, "vault")[0].payload, marked(1));
}

/// Whether some `WINDOW`-byte run occurs in two different entries.
fn repeated_run(entries: &[Vec<u8>]) -> bool {
    const WINDOW: usize = 48;
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        for window in entry.windows(WINDOW) {
            match seen.get(window) {
                Some(&j) if j != i => return true,
                Some(_) => {}
                None => {
                    seen.insert(window, i);
                }
            }
        }
    }
    false
}

async fn write_identical_payloads(j: &dyn Journal, same: &[u8]) {
    for _ in 0..3 {
        append_ok(j, "n", ExpectedVersion::Any, &[ev("n", same.to_vec())]).await;
    }
    let batch: Vec<NewEvent> = (0..3).map(|_| ev("n", same.to_vec())).collect();
    append_ok(j, "n", ExpectedVersion::Any, &batch).await;
    let version = j.stream_version("n").unwrap();
    assert!(j.save_snapshot("n", version, same).await.unwrap());
}

pub(crate) async fn encryption_never_repeats_ciphertext<H: Harness>(make: impl Fn() -> H) {
    // The same plaintext sealed twice must never give the same bytes (nonce reuse), also
    // not across a reopen, where a fresh nonce sequence starts.
    let same: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(7)).collect();
    let plain = make();
    let j = plain.open(config()).unwrap();
    write_identical_payloads(&j, &same).await;
    assert!(
        repeated_run(&H::raw_entries(&j)),
        "control: identical plaintext payloads should repeat at rest"
    );

    let h = make();
    let cfg = config().encryption(key_a());
    let j = h.open(cfg.clone()).unwrap();
    write_identical_payloads(&j, &same).await;
    let first_session = H::raw_entries(&j);
    let j = h.reopen(j, cfg.clone());
    write_identical_payloads(&j, &same).await;
    let mut entries = H::raw_entries(&j);
    assert!(
        !repeated_run(&entries),
        "sealed payloads repeat: nonce reuse"
    );
    // Include the first session's snapshot, which the second one overwrote.
    entries.extend(first_session);
    entries.sort();
    entries.dedup();
    assert!(
        !repeated_run(&entries),
        "sealed values repeat across sessions: nonce reuse"
    );
    let events = stream_events(&j, "n");
    assert_eq!(events.len(), 12);
    assert!(events.iter().all(|e| e.payload == same));
    assert_eq!(j.load_snapshot("n").unwrap().unwrap().state, same);
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

pub(crate) async fn concurrent_single_event_appends_fsync<H: Harness>(make: impl Fn() -> H) {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 100;
    let h = make();
    let cfg = config().durability(Durability::Fsync);
    let j = h.open(cfg.clone()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("c{t}");
            let mut acked = Vec::new();
            for i in 1..=PER_TASK {
                let payload = format!("{t}:{i}").into_bytes();
                let a = append_ok(
                    &j,
                    &stream,
                    ExpectedVersion::Exact(i - 1),
                    &[ev("c", payload)],
                )
                .await;
                assert_eq!((a.first_seq, a.last_seq), (i, i));
                assert_eq!(a.first_position, a.last_position);
                acked.push(a.first_position);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        let positions = task.await.unwrap();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "a task's positions went backwards"
        );
        acked.extend(positions);
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        range(1, TASKS * PER_TASK),
        "acknowledged positions not gap-free"
    );
    // Every acknowledged append is durable without closing the journal.
    let image = h.crash_image();
    let check = |j: &dyn Journal| {
        let all = all_events(j);
        assert_eq!(positions(&all), range(1, TASKS * PER_TASK));
        for t in 0..TASKS {
            let stream = format!("c{t}");
            let events = stream_events(j, &stream);
            assert_eq!(seqs(&events), range(1, PER_TASK), "{stream}");
            for e in &events {
                assert_eq!(e.payload, format!("{t}:{}", e.seq).into_bytes());
            }
            assert!(events.windows(2).all(|w| w[0].position < w[1].position));
            assert_eq!(j.stream_version(&stream).unwrap(), PER_TASK);
        }
        assert_eq!(verify_ok(j).records, TASKS * PER_TASK);
    };
    check(&j);
    {
        let copy = image.open(cfg.clone()).unwrap();
        check(&copy);
    }
    let j = h.reopen(j, cfg);
    check(&j);
}

/// `append_unsynced` writes in order and returns before any flush; `wait_durable` then
/// makes everything up to a position durable (a crash image keeps it). Buffered journals
/// return from `wait_durable` at once.
pub(crate) async fn unsynced_appends_order_then_wait_durable<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let cfg = config().durability(Durability::Fsync);
    let j = h.open(cfg.clone()).unwrap();
    let mut last = None;
    for i in 0..20u8 {
        let stream = if i % 2 == 0 { "even" } else { "odd" };
        let appended = j
            .append_unsynced(stream, ExpectedVersion::Any, &[ev("n", vec![i])])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(appended.first_position, u64::from(i) + 1);
        last = Some(appended);
    }
    let last = last.unwrap();
    // Readable at once, in order.
    let payloads: Vec<u8> = all_events(&j).iter().map(|e| e.payload[0]).collect();
    assert_eq!(payloads, (0..20).collect::<Vec<u8>>());
    // Conflicts are reported as with `append`.
    let conflict = j
        .append_unsynced("even", ExpectedVersion::NoStream, &[ev("n", vec![0])])
        .await
        .unwrap();
    assert!(conflict.is_err());
    j.wait_durable(last.last_position).await.unwrap();
    j.wait_durable(0).await.unwrap();
    let image = h.crash_image();
    {
        let copy = image.open(cfg.clone()).unwrap();
        assert_eq!(
            copy.head_position(),
            20,
            "waited-for appends lost in a crash"
        );
    }
    // Buffered journals promise nothing more on wait: it returns at once.
    drop(j);
    let b = make();
    let j = b.open(buffered(Duration::from_secs(3600))).unwrap();
    let appended = j
        .append_unsynced("s", ExpectedVersion::Any, &[ev("n", vec![1])])
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, j.wait_durable(appended.last_position))
        .await
        .expect("buffered wait_durable returns at once")
        .unwrap();
}

/// An `Fsync` journal's unsynced append that nobody waits for is not acknowledged (not
/// delivered to subscribers, not counted by `acknowledged_head`) until it is flushed, and
/// the background flush does that within the flush interval, without another write.
/// Regression: the node's event stream lagged the journal until the next write.
pub(crate) async fn unsynced_fsync_appends_become_acknowledged_in_the_background<H: Harness>(
    make: impl Fn() -> H,
) {
    let h = make();
    let cfg = config()
        .durability(Durability::Fsync)
        .flush_interval(Duration::from_millis(50));
    let j = h.open(cfg).unwrap();
    assert!(j.write_failure().is_none());
    append_one(&j, "s", "synced").await;
    assert_eq!(j.acknowledged_head(), 1);
    let mut sub = j.subscribe(1);
    assert_eq!(next_event(&mut sub).await.position, 1);
    j.append_unsynced("s", ExpectedVersion::Any, &[ev("lazy", vec![])])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.head_position(), 2);
    assert!(j.acknowledged_head() <= 2);
    let started = std::time::Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an unsynced append stayed invisible: no background flush")
        .unwrap()
        .unwrap();
    assert_eq!((event.position, event.kind.as_str()), (2, "lazy"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(j.acknowledged_head(), 2);
    assert!(j.write_failure().is_none());
}

/// `append_many_unsynced` writes several streams' batches in order as one write; a batch
/// with the wrong expected version is reported and skipped, the rest land; later batches
/// to a stream see earlier ones; everything survives a reopen.
pub(crate) async fn multi_stream_appends_are_one_ordered_write<H: Harness>(make: impl Fn() -> H) {
    let h = make();
    let cfg = config();
    let j = h.open(cfg.clone()).unwrap();
    let a1 = [ev("a", b"1".to_vec()), ev("a", b"2".to_vec())];
    let b1 = [ev("b", b"3".to_vec())];
    let a2 = [ev("a", b"4".to_vec())];
    let bad = [ev("x", b"never".to_vec())];
    let results = j
        .append_many_unsynced(&[
            StreamBatch {
                stream: "a",
                expected: ExpectedVersion::NoStream,
                events: &a1,
            },
            StreamBatch {
                stream: "b",
                expected: ExpectedVersion::Any,
                events: &b1,
            },
            StreamBatch {
                stream: "a",
                expected: ExpectedVersion::Exact(5),
                events: &bad,
            },
            StreamBatch {
                stream: "a",
                expected: ExpectedVersion::Exact(2),
                events: &a2,
            },
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    let ok: Vec<_> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(
        ok[0],
        Some(Appended {
            first_position: 1,
            last_position: 2,
            first_seq: 1,
            last_seq: 2
        })
    );
    assert_eq!(
        ok[1],
        Some(Appended {
            first_position: 3,
            last_position: 3,
            first_seq: 1,
            last_seq: 1
        })
    );
    assert!(matches!(&results[2], Err(c) if c.actual == 2 && c.stream == "a"));
    assert_eq!(
        ok[3],
        Some(Appended {
            first_position: 4,
            last_position: 4,
            first_seq: 3,
            last_seq: 3
        })
    );
    assert!(j.append_many_unsynced(&[]).await.unwrap().is_empty());
    assert!(matches!(
        j.append_many_unsynced(&[StreamBatch {
            stream: "c",
            expected: ExpectedVersion::Any,
            events: &[]
        }])
        .await,
        Err(Error::EmptyBatch { .. })
    ));
    // A write refused part-way (its second batch holds a record too large) leaves the
    // versions it planned for its first batch behind: the next append sees the stream's.
    let big = [ev("a", vec![0; cfg.get_max_record_bytes() + 1])];
    // Two batches to "a" in one write: `a2` at version 3, then `second` at version 4.
    let two = |second| {
        [
            StreamBatch {
                stream: "a",
                expected: ExpectedVersion::Exact(3),
                events: &a2[..],
            },
            StreamBatch {
                stream: "a",
                expected: ExpectedVersion::Exact(4),
                events: second,
            },
        ]
    };
    let refused = j.append_many_unsynced(&two(&big[..])).await;
    assert!(
        matches!(refused, Err(Error::RecordTooLarge { .. })),
        "{refused:?}"
    );
    let several = j.append_many_unsynced(&two(&a2[..])).await.unwrap();
    assert!(several.iter().all(Result::is_ok), "{several:?}");
    assert_eq!(j.stream_version("a").unwrap(), 5);
    assert_eq!(j.head_position(), 6, "a failed write adds nothing");
    j.flush().await.unwrap();
    let j = h.reopen(j, cfg);
    let payloads: Vec<Vec<u8>> = all_events(&j).into_iter().map(|e| e.payload).collect();
    assert_eq!(
        payloads,
        [
            b"1".to_vec(),
            b"2".to_vec(),
            b"3".to_vec(),
            b"4".to_vec(),
            b"4".to_vec(),
            b"4".to_vec()
        ]
    );
    assert_eq!(j.stream_version("a").unwrap(), 5);
    assert!(j.verify().unwrap().first_bad.is_none());
}
