//! Corruption tests on a real sled journal: damaged, tampered, moved and deleted records
//! (edited through `sled` itself), and random byte flips in sled's own files.
//!
//! The fixture is 50 single-event appends cycling over streams `a`, `b`, `c`, so position
//! `p` holds stream `STREAMS[(p - 1) % 3]`, sequence number `(p - 1) / 3 + 1`. The damaged
//! position 17 is event 6 of stream `b`.
#![cfg(feature = "sled")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::{Rng, copy_dir, files_under, fsync_config, log_key, runtime, with_raw_db};
use toka_store::{
    Error, ExpectedVersion, Journal, NewEvent, RecordedEvent, SledJournal, VerifyReport,
};

const EVENTS: u64 = 50;
const STREAMS: [&str; 3] = ["a", "b", "c"];
/// The damaged position in the mid-log cases.
const BAD: u64 = 17;
/// Offset of the chain hash in a record value (after version, kind and CRC).
const CHAIN_AT: usize = 6;
/// Offset of the postcard body.
const BODY_AT: usize = 38;

fn stream_at(position: u64) -> &'static str {
    STREAMS[((position - 1) % 3) as usize]
}

fn seq_at(position: u64) -> u64 {
    (position - 1) / 3 + 1
}

fn payload_at(position: u64) -> Vec<u8> {
    format!(
        "event {position:03} of stream {}: some payload bytes",
        stream_at(position)
    )
    .into_bytes()
}

/// Opens the journal (`SledJournal::open` itself retries while sled's file lock is still
/// held by a handle that is being torn down).
fn open(dir: &Path) -> Result<SledJournal, Error> {
    SledJournal::open(dir, fsync_config())
}

/// Appends `count` single events (streams cycling a, b, c) to a new journal in `dir` and
/// returns them as read back. The journal is closed on return.
fn populate(dir: &Path, count: u64) -> Vec<RecordedEvent> {
    let journal = SledJournal::open(dir, fsync_config()).unwrap();
    runtime().block_on(async {
        for position in 1..=count {
            let stream = stream_at(position);
            let appended = journal
                .append(
                    stream,
                    ExpectedVersion::Exact(seq_at(position) - 1),
                    &[NewEvent::new("fixture", payload_at(position))],
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(appended.first_position, position);
            assert_eq!(appended.first_seq, seq_at(position));
        }
    });
    let events = journal.read_all(1, usize::MAX).unwrap();
    assert_eq!(events.len() as u64, count);
    assert!(journal.verify().unwrap().is_intact());
    events
}

/// A populated journal in a fresh tempdir, with its events and its intact verify report.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    events: Vec<RecordedEvent>,
    report: VerifyReport,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let events = populate(&dir, EVENTS);
    let report = open(&dir).unwrap().verify().unwrap();
    assert_eq!(report.records, EVENTS);
    Fixture {
        _tmp: tmp,
        dir,
        events,
        report,
    }
}

/// Header of a stored pack value: format 2, then the record count (u32 LE).
const PACK_HEADER: usize = 5;

/// The one record in the pack `value` a single-event append stored.
fn record_of(value: &[u8]) -> &[u8] {
    assert_eq!(value[0], 2, "a pack value");
    assert_eq!(u32::from_le_bytes(value[1..5].try_into().unwrap()), 1);
    let len = u32::from_le_bytes(value[PACK_HEADER..PACK_HEADER + 4].try_into().unwrap());
    let record = &value[PACK_HEADER + 4..];
    assert_eq!(record.len(), len as usize);
    record
}

/// A pack of the one `record`, framed as the journal frames it.
fn pack_of(record: &[u8]) -> Vec<u8> {
    let mut value = vec![2, 1, 0, 0, 0];
    value.extend_from_slice(&(record.len() as u32).to_le_bytes());
    value.extend_from_slice(record);
    value
}

/// Replaces the record at `position` (alone in its pack, as every fixture append is) by
/// `edit(record)`, keeping the pack's framing intact.
fn edit_record(dir: &Path, position: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    with_raw_db(dir, |db| {
        let value = db.get(log_key(position)).unwrap().unwrap();
        let mut record = record_of(&value).to_vec();
        edit(&mut record);
        db.insert(log_key(position), pack_of(&record)).unwrap();
    });
}

/// CRC-32 (IEEE, reflected, polynomial 0xEDB88320), bitwise: what `crc32fast` computes.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Rewrites the stored CRC so that the record passes its checksum again.
fn fix_crc(value: &mut [u8]) {
    let crc = crc32(&value[CHAIN_AT..]);
    value[2..CHAIN_AT].copy_from_slice(&crc.to_le_bytes());
}

/// The error a read is expected to fail with at position 17.
enum Expect {
    /// `Error::Corrupt { position: 17 }` whose reason contains this.
    Corrupt(&'static str),
    /// `Error::UnsupportedFormat` for version byte `found`.
    Unsupported { found: u8 },
}

impl Expect {
    fn assert_matches(&self, error: &Error, position: u64) {
        match (self, error) {
            (
                Expect::Corrupt(reason),
                Error::Corrupt {
                    position: p,
                    reason: r,
                },
            ) => {
                assert_eq!(*p, position, "{error}");
                assert!(r.contains(reason), "reason {r:?} lacks {reason:?}");
            }
            (
                Expect::Unsupported { found },
                Error::UnsupportedFormat {
                    what,
                    found: f,
                    supported,
                },
            ) => {
                assert_eq!(what, &format!("record at position {position}"));
                assert_eq!(f, found);
                assert_eq!(*supported, toka_store::FORMAT_VERSION);
            }
            _ => panic!("unexpected error at position {position}: {error:?}"),
        }
    }

    /// What `verify()`'s `BadRecord::reason` contains.
    fn verify_reason(&self) -> String {
        match self {
            Expect::Corrupt(reason) => (*reason).to_owned(),
            Expect::Unsupported { found } => format!("format version {found}"),
        }
    }
}

/// Reopens a journal whose record 17 was damaged and checks every read path.
fn assert_damaged_at_17(f: &Fixture, expect: &Expect) {
    let journal = open(&f.dir).expect("a damaged record mid-log must not prevent opening");
    assert_eq!(journal.head_position(), EVENTS);

    // verify() names the first bad record; everything before it checked out.
    let report = journal.verify().unwrap();
    let bad = report
        .first_bad
        .clone()
        .expect("verify must report the damage");
    assert_eq!(bad.position, BAD, "{bad}");
    assert!(
        bad.reason.contains(&expect.verify_reason()),
        "verify reason {:?} lacks {:?}",
        bad.reason,
        expect.verify_reason()
    );
    assert_eq!(report.records, BAD - 1);
    assert_eq!(report.head_position, BAD - 1);
    assert!(!report.is_intact());

    // Global reads: fail at 17, work before and after it.
    let error = journal.read_all(1, 100).unwrap_err();
    expect.assert_matches(&error, BAD);
    assert_eq!(journal.read_all(1, 16).unwrap(), f.events[..16]);
    assert_eq!(
        journal.read_all(BAD + 1, 100).unwrap(),
        f.events[BAD as usize..]
    );
    let steps: Vec<Result<RecordedEvent, Error>> = journal.iter_all(1).collect();
    assert_eq!(steps.len(), 17, "iter_all stops after the first error");
    expect.assert_matches(steps[16].as_ref().unwrap_err(), BAD);

    // Stream reads: `b` fails at its event 6 (position 17); `a` and `c` read fine.
    let stream = stream_at(BAD);
    assert_eq!(stream, "b");
    let error = journal.read_stream(stream, 1, 100).unwrap_err();
    expect.assert_matches(&error, BAD);
    let steps: Vec<Result<RecordedEvent, Error>> =
        journal.iter_stream(stream, 1).unwrap().collect();
    assert_eq!(steps.len(), 6);
    assert!(steps[..5].iter().all(Result::is_ok));
    expect.assert_matches(steps[5].as_ref().unwrap_err(), BAD);
    let after: Vec<RecordedEvent> = journal.read_stream(stream, seq_at(BAD) + 1, 100).unwrap();
    let expected: Vec<RecordedEvent> = f
        .events
        .iter()
        .filter(|e| e.stream == stream && e.position > BAD)
        .cloned()
        .collect();
    assert_eq!(after, expected);
    assert_eq!(after.len(), 11);
    for other in ["a", "c"] {
        let expected: Vec<RecordedEvent> = f
            .events
            .iter()
            .filter(|e| e.stream == other)
            .cloned()
            .collect();
        assert_eq!(journal.read_stream(other, 1, 100).unwrap(), expected);
    }
    assert_eq!(journal.stream_version(stream).unwrap(), 17);

    // Observed behaviour: the journal still accepts appends (it only decodes the last
    // record when opening); they continue after position 50 and verify still names 17.
    let appended = runtime()
        .block_on(journal.append(
            stream,
            ExpectedVersion::Exact(17),
            &[NewEvent::new("after-damage", b"x".to_vec())],
        ))
        .unwrap()
        .unwrap();
    assert_eq!(
        (appended.first_position, appended.first_seq),
        (EVENTS + 1, 18)
    );
    assert_eq!(journal.read_all(EVENTS + 1, 10).unwrap()[0].payload, b"x");
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad.map(|b| b.position), Some(BAD));
    assert_eq!(report.records, BAD - 1);
}

#[test]
fn flipped_body_byte_is_reported_at_its_position() {
    let f = fixture();
    edit_record(&f.dir, BAD, |v| *v.last_mut().unwrap() ^= 0x01);
    assert_damaged_at_17(&f, &Expect::Corrupt("checksum mismatch"));
}

#[test]
fn flipped_chain_hash_byte_is_reported_at_its_position() {
    let f = fixture();
    edit_record(&f.dir, BAD, |v| v[CHAIN_AT + 13] ^= 0x80);
    assert_damaged_at_17(&f, &Expect::Corrupt("checksum mismatch"));
}

#[test]
fn unknown_version_byte_is_reported_as_unsupported_format() {
    let f = fixture();
    edit_record(&f.dir, BAD, |v| {
        assert_eq!(v[0], toka_store::FORMAT_VERSION);
        v[0] = 2;
    });
    assert_damaged_at_17(&f, &Expect::Unsupported { found: 2 });
}

#[test]
fn truncated_record_is_reported_at_its_position() {
    let f = fixture();
    edit_record(&f.dir, BAD, |v| v.truncate(10));
    assert_damaged_at_17(&f, &Expect::Corrupt("truncated: 10 bytes"));
}

#[test]
fn record_stored_under_another_position_is_reported() {
    // A valid record (good CRC, good chain value of its own) copied over position 17.
    let f = fixture();
    with_raw_db(&f.dir, |db| {
        let value = db.get(log_key(BAD + 1)).unwrap().unwrap();
        db.insert(log_key(BAD), value).unwrap();
    });
    assert_damaged_at_17(&f, &Expect::Corrupt("body names position 18"));
}

#[test]
fn crc_fixed_tampering_is_caught_by_the_hash_chain() {
    let f = fixture();
    edit_record(&f.dir, BAD, |v| {
        let last = v.len() - 1;
        assert!(last > BODY_AT);
        v[last] ^= 0x01; // last payload byte: 's' -> 'r'
        fix_crc(v);
    });
    let journal = open(&f.dir).unwrap();
    let report = journal.verify().unwrap();
    let bad = report.first_bad.expect("the chain must expose the edit");
    assert_eq!(bad.position, BAD);
    assert!(bad.reason.contains("hash chain broken"), "{bad}");
    assert_eq!(report.records, BAD - 1);

    // By design (codec.rs) reads check only the CRC, so they return the tampered payload;
    // only verify() walks the chain.
    let events = journal.read_all(1, 100).unwrap();
    assert_eq!(events.len() as u64, EVENTS);
    let mut tampered = payload_at(BAD);
    *tampered.last_mut().unwrap() ^= 0x01;
    assert_eq!(events[16].payload, tampered);
    assert_eq!(events[..16], f.events[..16]);
    assert_eq!(events[17..], f.events[17..]);
}

#[test]
fn crc32_helper_matches_the_stored_checksums() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    let f = fixture();
    with_raw_db(&f.dir, |db| {
        for position in 1..=EVENTS {
            let value = db.get(log_key(position)).unwrap().unwrap();
            let record = record_of(&value);
            let stored = u32::from_le_bytes(record[2..6].try_into().unwrap());
            assert_eq!(crc32(&record[CHAIN_AT..]), stored, "position {position}");
        }
    });
}

#[test]
fn deleted_record_is_reported_missing() {
    let f = fixture();
    with_raw_db(&f.dir, |db| {
        assert!(db.remove(log_key(BAD)).unwrap().is_some());
    });
    let journal = open(&f.dir).unwrap();
    assert_eq!(journal.head_position(), EVENTS);
    let report = journal.verify().unwrap();
    let bad = report.first_bad.expect("a hole must be reported");
    assert_eq!(bad.position, BAD);
    assert!(bad.reason.contains("record missing"), "{bad}");
    assert!(
        bad.reason.contains("next stored record is at position 18"),
        "{bad}"
    );
    assert_eq!(report.records, BAD - 1);

    let error = journal.read_all(1, 100).unwrap_err();
    Expect::Corrupt("record missing").assert_matches(&error, BAD);
    assert_eq!(journal.read_all(1, 16).unwrap(), f.events[..16]);
    let error = journal.read_stream("b", 1, 100).unwrap_err();
    Expect::Corrupt("record missing").assert_matches(&error, BAD);
    assert_eq!(
        journal.read_stream("a", 1, 100).unwrap().len(),
        17,
        "stream a is untouched"
    );
}

/// Damage to the last record: the journal opens read-only, names the position, and keeps
/// the good records readable.
#[test]
fn damaged_last_record_opens_read_only_and_names_its_position() {
    for (what, expect, edit) in [
        (
            "flipped body byte",
            Expect::Corrupt("checksum mismatch"),
            Box::new(|v: &mut Vec<u8>| *v.last_mut().unwrap() ^= 0x01) as Box<dyn Fn(&mut Vec<u8>)>,
        ),
        (
            "flipped chain byte",
            Expect::Corrupt("checksum mismatch"),
            Box::new(|v: &mut Vec<u8>| v[CHAIN_AT] ^= 0x01),
        ),
        (
            "truncated",
            Expect::Corrupt("truncated"),
            Box::new(|v: &mut Vec<u8>| v.truncate(10)),
        ),
        (
            "version byte",
            Expect::Unsupported { found: 7 },
            Box::new(|v: &mut Vec<u8>| v[0] = 7),
        ),
    ] {
        let f = fixture();
        edit_record(&f.dir, EVENTS, |v| edit(v));
        let journal = open(&f.dir).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        assert_eq!(journal.head_position(), EVENTS, "{what}");
        let report = journal.verify().unwrap();
        assert_eq!(
            report.first_bad.as_ref().map(|b| b.position),
            Some(EVENTS),
            "{what}"
        );
        assert_eq!(report.records, EVENTS - 1, "{what}");
        assert_eq!(journal.read_all(1, 49).unwrap(), f.events[..49], "{what}");
        let error = journal.read_all(1, 100).unwrap_err();
        expect.assert_matches(&error, EVENTS);
        // Writing on top of damage would bury it: refused with the position.
        let rt = runtime();
        let refused = rt
            .block_on(journal.append("a", ExpectedVersion::Any, &[NewEvent::new("k", vec![])]))
            .unwrap_err();
        assert!(
            matches!(
                refused,
                Error::Damaged {
                    position: EVENTS,
                    ..
                }
            ),
            "{what}: {refused:?}"
        );
        let refused = rt
            .block_on(journal.save_snapshot("a", 1, b"s"))
            .unwrap_err();
        assert!(
            matches!(
                refused,
                Error::Damaged {
                    position: EVENTS,
                    ..
                }
            ),
            "{what}"
        );
    }
}

#[test]
fn crc_fixed_tampering_of_the_last_record_is_caught_by_verify() {
    let f = fixture();
    edit_record(&f.dir, EVENTS, |v| {
        let last = v.len() - 1;
        v[last] ^= 0x01;
        fix_crc(v);
    });
    let journal = open(&f.dir).unwrap();
    assert_eq!(journal.head_position(), EVENTS);
    let report = journal.verify().unwrap();
    assert_eq!(report.first_bad.map(|b| b.position), Some(EVENTS));
    assert_eq!(report.records, EVENTS - 1);
}

#[test]
fn deleted_last_record_is_caught_by_the_anchor() {
    // The log alone is internally consistent after its tail is cut; the anchor (last
    // flushed head, kept beside sled's files) shows that position 50 had been flushed.
    let f = fixture();
    with_raw_db(&f.dir, |db| {
        assert!(db.remove(log_key(EVENTS)).unwrap().is_some());
    });
    let journal = open(&f.dir).unwrap();
    assert_eq!(journal.head_position(), EVENTS - 1);
    let report = journal.verify().unwrap();
    let bad = report.first_bad.expect("verify must see the lost tail");
    assert_eq!(bad.position, EVENTS);
    assert!(bad.reason.contains("record missing"), "{}", bad.reason);
    assert_eq!(report.records, EVENTS - 1);
    assert_eq!(journal.read_all(1, 100).unwrap(), f.events[..49]);
    let refused = runtime()
        .block_on(journal.append("a", ExpectedVersion::Any, &[NewEvent::new("k", vec![])]))
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Damaged {
                position: EVENTS,
                ..
            }
        ),
        "{refused:?}"
    );
}

#[test]
fn deleted_last_record_without_the_anchor_is_only_visible_through_the_head_hash() {
    // The limit of the anchor: whoever can delete both the tail and the anchor file leaves
    // a consistent log. The head hash kept elsewhere still tells.
    let f = fixture();
    with_raw_db(&f.dir, |db| {
        assert!(db.remove(log_key(EVENTS)).unwrap().is_some());
    });
    std::fs::remove_file(f.dir.join(toka_store::backend::ANCHOR_FILE)).unwrap();
    let journal = open(&f.dir).unwrap();
    assert_eq!(journal.head_position(), EVENTS - 1);
    let report = journal.verify().unwrap();
    assert!(report.is_intact());
    assert_eq!(report.records, EVENTS - 1);
    assert_ne!(report.head_hash, f.report.head_hash);
}

#[test]
fn rewritten_history_is_caught_by_the_anchor() {
    // Replace the whole log by a different, internally consistent one of the same length:
    // the chain verifies, but not against the anchor.
    let f = fixture();
    let other = tempfile::tempdir().unwrap();
    populate(other.path(), EVENTS);
    let replacement: Vec<(sled::IVec, sled::IVec)> = {
        let db = sled::open(other.path()).unwrap();
        db.scan_prefix(b"L").map(Result::unwrap).collect()
    };
    with_raw_db(&f.dir, |db| {
        for (key, value) in replacement {
            db.insert(key, value).unwrap();
        }
    });
    let journal = open(&f.dir).unwrap();
    let report = journal.verify().unwrap();
    let bad = report
        .first_bad
        .expect("rewritten history must be reported");
    assert_eq!(bad.position, EVENTS);
    assert!(bad.reason.contains("anchored"), "{}", bad.reason);
}

// ---------------------------------------------------------------------------------------
// Random damage to sled's own files.

/// What one damaged copy did.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    /// Opening returned an error.
    OpenErr,
    /// Opened; reads and verify saw every original event.
    Intact,
    /// Opened; a verifying prefix of the original log (acknowledged events silently lost).
    Prefix,
    /// Opened; reads or verify reported the damage.
    Reported,
}

/// Opens a damaged copy and reads everything; returns the outcome and the recovered head.
/// Panics (failing the test) if the journal returns an event that differs from the
/// original at its position.
fn inspect_damaged(dir: &Path, original: &[RecordedEvent]) -> (Outcome, u64) {
    let journal = match open(dir) {
        Err(_) => return (Outcome::OpenErr, 0),
        Ok(journal) => journal,
    };
    let head = journal.head_position();
    let mut read_ok = 0u64;
    let mut read_err = false;
    for step in journal.iter_all(1) {
        match step {
            Ok(event) => {
                let position = event.position;
                assert!(
                    position >= 1 && position <= original.len() as u64,
                    "invented an event at position {position}"
                );
                assert_eq!(
                    event,
                    original[(position - 1) as usize],
                    "position {position} reads back different from what was written"
                );
                read_ok += 1;
            }
            Err(_) => read_err = true,
        }
    }
    for stream in STREAMS {
        if let Ok(iter) = journal.iter_stream(stream, 1) {
            for event in iter.flatten() {
                assert_eq!(event, original[(event.position - 1) as usize]);
            }
        }
    }
    let report = match journal.verify() {
        Ok(report) => report,
        Err(_) => return (Outcome::Reported, head),
    };
    if !report.is_intact() || read_err {
        return (Outcome::Reported, head);
    }
    assert_eq!(
        report.records, head,
        "verify and head disagree on an intact log"
    );
    assert_eq!(read_ok, head, "reads and head disagree on an intact log");
    let outcome = if head == original.len() as u64 {
        Outcome::Intact
    } else {
        Outcome::Prefix
    };
    (outcome, head)
}

#[test]
fn random_damage_to_sled_files_never_panics_or_invents_events() {
    const TRIALS: u64 = 48;
    const SEED: u64 = 0x5EED_70CA_2024_0001;
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let original = populate(&pristine, 300);
    let files = files_under(&pristine);
    let sizes: Vec<(PathBuf, u64)> = files
        .iter()
        .map(|p| (p.clone(), std::fs::metadata(p).unwrap().len()))
        .filter(|(_, len)| *len > 0)
        .collect();
    println!("sled files: {sizes:?}");
    assert!(!sizes.is_empty());

    // xorshift64* with a fixed seed: the file-level trials are reproducible.
    let mut rng = Rng::with_state(SEED);
    let mut outcomes = std::collections::BTreeMap::<Outcome, u32>::new();
    // sled's recovery stops at the first bad message of its log and drops the rest; the
    // journal's anchor must turn that into reported damage, never a silent `Prefix`.
    let mut lost_by_truncation = Vec::new();
    for trial in 0..TRIALS {
        let copy = tmp.path().join(format!("trial-{trial}"));
        copy_dir(&pristine, &copy);
        // sled keeps its data in `db` (the log); `conf` is a small checksummed header.
        // Hit `db` three times in four.
        let pick = if rng.below(4) == 0 {
            sizes.iter().position(|(p, _)| !p.ends_with("db"))
        } else {
            sizes.iter().position(|(p, _)| p.ends_with("db"))
        };
        let (file, len) = &sizes[pick.unwrap_or(0)];
        let target = copy.join(file.strip_prefix(&pristine).unwrap());
        let mut bytes = std::fs::read(&target).unwrap();
        // Half the trials hit only bytes that hold data (non-zero), where damage matters.
        let nonzero: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != 0).collect();
        let flips = 1 + rng.below(4);
        let mut flipped = Vec::new();
        for _ in 0..flips {
            let at = if trial % 2 == 0 && !nonzero.is_empty() {
                nonzero[rng.below(nonzero.len() as u64) as usize]
            } else {
                rng.below(*len) as usize
            };
            bytes[at] ^= 1 + rng.below(255) as u8;
            flipped.push(at);
        }
        std::fs::write(&target, &bytes).unwrap();
        let name = file.strip_prefix(&pristine).unwrap().display().to_string();

        // Run in a thread: a panic (in toka or sled) or a hang fails the test with the
        // trial's details instead of taking the harness down.
        let (tx, rx) = mpsc::channel();
        let expected = original.clone();
        let dir = copy.clone();
        std::thread::spawn(move || {
            let _ = tx.send(inspect_damaged(&dir, &expected));
        });
        let (outcome, head) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "trial {trial}: panicked after flipping bytes {flipped:?} of {name} (seed {SEED:#x})"
            ),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "trial {trial}: hung after flipping bytes {flipped:?} of {name} (seed {SEED:#x})"
            ),
        };
        println!("trial {trial:2}: {name} bytes {flipped:?} -> {outcome:?}, head {head}");
        if outcome == Outcome::Prefix {
            lost_by_truncation.push(original.len() as u64 - head);
        }
        *outcomes.entry(outcome).or_default() += 1;
        std::fs::remove_dir_all(&copy).unwrap();
    }
    println!(
        "outcomes over {TRIALS} trials: {outcomes:?}; events silently lost per Prefix trial: {lost_by_truncation:?}"
    );
    assert_eq!(outcomes.values().sum::<u32>(), TRIALS as u32);
    assert!(
        lost_by_truncation.is_empty(),
        "acknowledged events vanished without an error or a verify report: {lost_by_truncation:?}"
    );
}
