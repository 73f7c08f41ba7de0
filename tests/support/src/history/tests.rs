//! The checker on hand-made histories (jepsen's `checker_test.clj` style), and the files
//! read back as they were written.

use super::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Three places `p0`, `p1`, `p2`: id `i` goes to `p{i % 3}`; every 4th id through a relay.
struct Mod3;

impl Routing for Mod3 {
    fn place_of(&self, id: OpId) -> usize {
        (id % 3) as usize
    }

    fn place_name(&self, place: usize) -> String {
        format!("p{place}")
    }

    fn route_of(&self, id: OpId) -> Option<&'static str> {
        (id % 4 == 0).then_some("through a relay")
    }
}

/// A place that keeps a count beside its list, as a leaf keeps a sum and a count.
#[derive(Clone, Debug, Default)]
struct Place {
    ids: Vec<OpId>,
    count: u64,
}

impl Place {
    fn apply(&mut self, id: OpId) {
        self.ids.push(id);
        self.count += 1;
    }
}

impl PlaceState for Place {
    fn applied(&self) -> &[OpId] {
        &self.ids
    }

    fn inconsistency(&self) -> Option<String> {
        (self.count != self.ids.len() as u64)
            .then(|| format!("count {} but {} ids", self.count, self.ids.len()))
    }
}

const S0: Sender = Sender { round: 0, task: 0 };
const S1: Sender = Sender { round: 0, task: 1 };
const S2: Sender = Sender { round: 1, task: 0 };

/// Ids 1..=6 invoked by `S0` in that order, 1..=4 acknowledged.
fn history() -> History {
    let mut history = History::default();
    for id in 1..=6 {
        history.invoke(id, S0);
    }
    for id in 1..=4 {
        history.ack(id);
    }
    history
}

/// Ids 1..=5 applied where [`Mod3`] says, in order.
fn good() -> Vec<Place> {
    let mut places = vec![Place::default(); 3];
    for id in 1..=5 {
        places[Mod3.place_of(id)].apply(id);
    }
    places
}

fn run(places: &[Place], history: &History, previous: &Observation) -> CheckReport {
    check(&Mod3, places, history, previous)
}

/// Asserts that `report` found exactly `count` anomalies of kind `kind` and no other kind.
#[track_caller]
fn only(report: &CheckReport, kind: &str, count: usize) {
    for (name, list) in report.anomalies() {
        let want = if name == kind { count } else { 0 };
        assert_eq!(list.len(), want, "{name}:\n{report}");
    }
    assert!(!report.is_valid());
}

#[test]
fn a_valid_history_passes() {
    let history = history();
    let report = run(&good(), &history, &Observation::default());
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.applied, (1..=5).collect());
    // 5 was invoked, not acknowledged, and took effect; 6 did not: both are fine.
    assert_eq!(report.unacked_applied, 1);
    assert!(report.describe().is_empty());
    assert_eq!(report.to_string(), "");

    // The same state observed again after its own observation.
    let observation = Observation::of(&history, &report);
    assert_eq!(observation.len(), 6);
    assert_eq!(
        (observation.get(5), observation.get(6)),
        (Some(true), Some(false))
    );
    assert!(run(&good(), &history, &observation).is_valid());

    // No places, nothing acknowledged: nothing to complain about.
    let mut unacked = History::default();
    unacked.invoke(1, S0);
    let report = check(&Mod3, &[] as &[Place], &unacked, &Observation::default());
    assert!(report.is_valid(), "{report}");
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    let mut acked_6 = history();
    acked_6.ack(6); // acknowledged, never applied
    let report = run(&good(), &acked_6, &Observation::default());
    only(&report, "lost", 1);
    assert_eq!(
        report.lost,
        ["id 6 was acknowledged but p0 did not apply it"]
    );

    // An acknowledged id a place had applied and no longer has.
    let mut places = good();
    places[1].ids.retain(|&id| id != 4);
    places[1].count -= 1;
    let report = run(&places, &history(), &Observation::default());
    only(&report, "lost", 1);
    assert!(report.lost[0].starts_with("id 4 "), "{report}");
}

#[test]
fn a_duplicate_apply_is_caught() {
    let mut places = good();
    places[Mod3.place_of(3)].apply(3);
    let report = run(&places, &history(), &Observation::default());
    only(&report, "duplicate", 1);
    assert_eq!(report.duplicate, ["id 3 applied again (on p0)"]);

    // Applied twice, once at the wrong place: a duplicate, the second copy not misplaced
    // again (it is skipped once it is known to be a duplicate).
    let mut places = good();
    places[2].apply(1);
    let report = run(&places, &history(), &Observation::default());
    only(&report, "duplicate", 1);
    assert_eq!(report.duplicate, ["id 1 applied again (on p2)"]);
}

#[test]
fn an_observed_write_never_invoked_is_caught() {
    let mut places = good();
    places[Mod3.place_of(7)].apply(7);
    let report = run(&places, &history(), &Observation::default());
    only(&report, "phantom", 1);
    assert_eq!(report.phantom, ["id 7 applied on p1 but never sent"]);
    // A phantom is not an acknowledged-or-not outcome of a real op.
    assert_eq!(report.unacked_applied, 2);
}

#[test]
fn a_write_applied_at_the_wrong_place_is_caught() {
    let mut places = good();
    places[(Mod3.place_of(6) + 1) % 3].apply(6);
    let report = run(&places, &history(), &Observation::default());
    only(&report, "misplaced", 1);
    assert_eq!(report.misplaced, ["id 6 applied on p1, sent to p0"]);
}

#[test]
fn a_place_that_disagrees_with_its_own_list_is_caught() {
    let mut places = good();
    places[2].count += 1;
    let report = run(&places, &history(), &Observation::default());
    only(&report, "inconsistent", 1);
    assert_eq!(report.inconsistent, ["p2: count 3 but 2 ids"]);
}

#[test]
fn one_senders_writes_applied_out_of_order_are_caught() {
    // 3 and 6 go to p0 on the direct route; S0 sent 3 first.
    let mut places = good();
    places[0].ids = vec![6, 3];
    places[0].count = 2;
    let report = run(&places, &history(), &Observation::default());
    only(&report, "reordered", 1);
    assert_eq!(
        report.reordered,
        ["p0: id 3 applied after id 6, but task 0 of round 0 sent id 3 first"]
    );

    // The same on the relay route: 4 and 16 go to p1 through the relay.
    let mut history = History::default();
    for id in [4, 16] {
        history.invoke(id, S0);
    }
    let places = vec![
        Place::default(),
        Place {
            ids: vec![16, 4],
            count: 2,
        },
        Place::default(),
    ];
    let report = run(&places, &history, &Observation::default());
    only(&report, "reordered", 1);
    assert_eq!(
        report.reordered,
        [
            "p1: id 4 applied after id 16, but task 0 of round 0 sent id 4 first (both through a relay)"
        ]
    );
}

#[test]
fn order_is_only_checked_per_sender_place_and_route() {
    // 1 (direct), 4 (relay), 7 (direct) and 16 (relay) all go to p1.
    let on_p1 = |ids: Vec<OpId>| {
        let count = ids.len() as u64;
        vec![Place::default(), Place { ids, count }, Place::default()]
    };
    let none = Observation::default();

    // One sender, two routes: a relayed op may come before an earlier direct one and
    // vice versa, as long as each route keeps its own order.
    let mut one_sender = History::default();
    for id in [1, 4, 7, 16] {
        one_sender.invoke(id, S0);
    }
    let report = run(&on_p1(vec![4, 1, 16, 7]), &one_sender, &none);
    assert!(report.is_valid(), "{report}");
    only(
        &run(&on_p1(vec![7, 16, 1, 4]), &one_sender, &none),
        "reordered",
        2,
    );

    // Different senders (another task, or the same task in another round) are not
    // ordered with respect to each other.
    let mut three_senders = History::default();
    three_senders.invoke(1, S0);
    three_senders.invoke(7, S1);
    three_senders.invoke(10, S2);
    let mut places = on_p1(vec![10, 7, 1]);
    assert!(run(&places, &three_senders, &none).is_valid());

    // Different places are not ordered with respect to each other: S0 sent 1 (p1), then
    // 2 (p2); p2 applying 2 before p1 applies 1 is nothing the checker can see.
    let mut two_places = History::default();
    two_places.invoke(1, S0);
    two_places.invoke(2, S0);
    places = on_p1(vec![1]);
    places[2].apply(2);
    assert!(run(&places, &two_places, &none).is_valid());
}

#[test]
fn order_is_the_invocation_order_not_the_id_order() {
    // S0 sent 6 before 3.
    let mut history = History::default();
    history.invoke(6, S0);
    history.invoke(3, S0);
    let places = |ids: Vec<OpId>| {
        let count = ids.len() as u64;
        vec![Place { ids, count }, Place::default(), Place::default()]
    };
    let none = Observation::default();
    assert!(run(&places(vec![6, 3]), &history, &none).is_valid());
    let report = run(&places(vec![3, 6]), &history, &none);
    only(&report, "reordered", 1);
    assert!(report.reordered[0].contains("sent id 6 first"), "{report}");
}

#[test]
fn a_write_that_disappears_after_recovery_is_caught() {
    // 6 was applied (without an acknowledgement) at the previous observation.
    let previous = Observation::from_iter([(5, true), (6, true)]);
    let report = run(&good(), &history(), &previous);
    only(&report, "flicker", 1);
    assert_eq!(report.flicker, ["id 6 was applied before and is not now"]);
}

#[test]
fn a_write_that_appears_after_it_was_seen_absent_is_caught() {
    // 5 was not applied at the previous observation, and is now.
    let previous = Observation::from_iter([(5, false), (6, false)]);
    let report = run(&good(), &history(), &previous);
    only(&report, "resurrected", 1);
    assert_eq!(
        report.resurrected,
        ["id 5 was not applied after an earlier recovery, and is now"]
    );
}

#[test]
fn an_unacknowledged_write_is_free_until_first_observed() {
    // Not in the previous observation (invoked after it): applied or not, both fine.
    let previous = Observation::from_iter([(1, true), (2, true)]);
    assert!(run(&good(), &history(), &previous).is_valid());
    let mut places = good();
    places[2].ids.retain(|&id| id != 5);
    places[2].count -= 1;
    let report = run(&places, &history(), &previous);
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.unacked_applied, 0);
}

#[test]
fn every_anomaly_at_once_and_the_description() {
    let mut history = history();
    history.ack(6);
    let mut places = good();
    places[0].apply(3); // duplicate
    places[0].apply(9); // phantom
    places[1].apply(6); // misplaced (and so 6 is not lost)
    places[2].count = 7; // inconsistent
    places[2].ids.swap(0, 1); // 5 before 2: reordered
    let previous =
        Observation::from_iter([(1, true), (2, true), (3, true), (10, true), (5, false)]);
    let report = run(&places, &history, &previous);
    let counts: Vec<(&str, usize)> = report
        .anomalies()
        .iter()
        .map(|(name, list)| (*name, list.len()))
        .collect();
    assert_eq!(
        counts,
        [
            ("lost", 0),
            ("duplicate", 1),
            ("phantom", 1),
            ("misplaced", 1),
            ("inconsistent", 1),
            ("reordered", 1),
            ("flicker", 1),
            ("resurrected", 1),
        ]
    );
    let text = report.to_string();
    assert!(
        text.starts_with("duplicate (1):\n  id 3 applied again (on p0)\n"),
        "{text}"
    );
    assert!(
        text.contains("flicker (1):\n  id 10 was applied before"),
        "{text}"
    );

    // At most 10 messages of a kind, after its full count.
    let mut history = History::default();
    for id in 1..=30 {
        history.ack(id);
    }
    let report = check(&Mod3, &[] as &[Place], &history, &Observation::default());
    let lines = report.describe();
    assert_eq!(lines.len(), 11, "{lines:?}");
    assert_eq!(lines[0], "lost (30):");
    assert_eq!(lines[1], "  id 1 was acknowledged but p1 did not apply it");
}

// ---------------------------------------------------------------------------------------
// Files.

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "toka-history-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_history_reads_back_as_it_was_logged() {
    let tmp = TempDir::new();
    let (inv, ack) = (tmp.join("invoked.log"), tmp.join("acked.log"));
    let empty = History::read(&inv, &ack);
    assert_eq!((empty.invoked_len(), empty.acked().len()), (0, 0));

    let log = HistoryLog::open(&inv, &ack).unwrap();
    log.invoked(7, S1).unwrap();
    log.invoked(3, S2).unwrap();
    log.acked(3).unwrap();
    drop(log);
    // A second process appends to the same logs.
    let log = HistoryLog::open(&inv, &ack).unwrap();
    log.invoked(5, S0).unwrap();
    log.acked(7).unwrap();
    assert_eq!(
        std::fs::read_to_string(&inv).unwrap(),
        "7 0 1\n3 1 0\n5 0 0\n"
    );
    assert_eq!(std::fs::read_to_string(&ack).unwrap(), "3\n7\n");

    let history = History::read(&inv, &ack);
    assert_eq!(history.invoked_ids(), [3, 5, 7]);
    assert_eq!(history.acked(), [3, 7]);
    assert!(history.is_invoked(5) && !history.is_invoked(4));
    let order = |id| history.invocation(id).map(|i| (i.sender, i.order));
    assert_eq!(order(7), Some((S1, 0)));
    assert_eq!(order(3), Some((S2, 1)));
    assert_eq!(order(5), Some((S0, 2)));
}

#[test]
fn a_line_cut_short_by_a_kill_is_dropped() {
    let tmp = TempDir::new();
    let (inv, ack) = (tmp.join("invoked.log"), tmp.join("acked.log"));
    std::fs::write(&inv, "1 0 0\n2 0 0\n3 0").unwrap();
    std::fs::write(&ack, "1\n2").unwrap();
    assert_eq!(read_lines(&inv), ["1 0 0", "2 0 0"]);
    let history = History::read(&inv, &ack);
    assert_eq!(history.invoked_ids(), [1, 2]);
    assert_eq!(history.acked(), [1]);
    assert!(read_lines(&tmp.join("missing")).is_empty());
}

#[test]
fn concurrent_appends_leave_whole_lines() {
    let tmp = TempDir::new();
    let log = Arc::new(LineLog::open(&tmp.join("lines.log")).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..500 {
                    log.append(&format!("{t} {i} {}", "x".repeat(100))).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let lines = read_lines(log.path());
    assert_eq!(lines.len(), 2000);
    for t in 0..4 {
        let mine: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{t} ")))
            .collect();
        assert_eq!(mine.len(), 500);
        for (i, line) in mine.iter().enumerate() {
            assert_eq!(**line, format!("{t} {i} {}", "x".repeat(100)));
        }
    }
}

#[test]
#[should_panic(expected = "id 2 invoked twice: the test is broken")]
fn an_id_invoked_twice_is_a_broken_test() {
    let tmp = TempDir::new();
    let (inv, ack) = (tmp.join("invoked.log"), tmp.join("acked.log"));
    std::fs::write(&inv, "1 0 0\n2 0 0\n2 1 3\n").unwrap();
    History::read(&inv, &ack);
}

#[test]
#[should_panic(expected = "bad line \"1 0\"")]
fn a_malformed_invocation_line_panics_with_the_line() {
    let tmp = TempDir::new();
    let (inv, ack) = (tmp.join("invoked.log"), tmp.join("acked.log"));
    std::fs::write(&inv, "1 0\n").unwrap();
    History::read(&inv, &ack);
}

#[test]
#[should_panic(expected = "a log line with a newline")]
fn a_log_line_with_a_newline_panics() {
    let tmp = TempDir::new();
    let log = LineLog::open(&tmp.join("lines.log")).unwrap();
    let _ = log.append("1\n2");
}

#[test]
fn opening_a_log_in_a_missing_directory_names_the_path() {
    let tmp = TempDir::new();
    let path = tmp.join("no/such/dir.log");
    let err = LineLog::open(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("no/such/dir.log"), "{err}");
}

#[test]
fn an_observation_is_stored_whole_and_reads_back() {
    let tmp = TempDir::new();
    let path = tmp.join("observed.txt");
    assert!(Observation::read(&path).is_empty());

    let history = history();
    let report = run(&good(), &history, &Observation::default());
    let observation = Observation::of(&history, &report);
    observation.write(&path);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "1 1\n2 1\n3 1\n4 1\n5 1\n6 0\n"
    );
    assert_eq!(Observation::read(&path), observation);
    // The temporary file was renamed over the observation, not left behind.
    let names: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["observed.txt"]);

    // Replaced, not appended to.
    let mut next = Observation::default();
    next.insert(9, false);
    next.write(&path);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "9 0\n");
}

#[test]
#[should_panic(expected = "bad line \"4 yes\"")]
fn a_malformed_observation_line_panics_with_the_line() {
    let tmp = TempDir::new();
    let path = tmp.join("observed.txt");
    std::fs::write(&path, "3 1\n4 yes\n").unwrap();
    Observation::read(&path);
}
