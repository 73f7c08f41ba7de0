//! Jepsen-style histories for crash tests: what clients invoked and had acknowledged,
//! recorded in append-only line logs that a `SIGKILL` cannot undo, and a checker that
//! compares them with what the system under test applied (`notes/testing.md` §4).
//!
//! A crash test's clients record every operation twice: a line in the *invocation log*
//! before they send it, and a line in the *ack log* once the system acknowledged it
//! ([`HistoryLog`]). An invoked operation without an acknowledgement has an unknown outcome
//! (jepsen's `info`): it may or may not have taken effect. After each recovery the test asks
//! every *place* of the system (an actor, a replica, a key) which operations it applied, in
//! order, and [`check`] compares that with the [`History`] read back from the logs and
//! with the previous [`Observation`], which the test stores between child processes.
//!
//! # Anomalies
//!
//! [`CheckReport`] has one list of messages per anomaly; a history is valid iff all are
//! empty ([`CheckReport::is_valid`]):
//!
//! | name | meaning |
//! |------|---------|
//! | `lost` | acknowledged, not applied |
//! | `duplicate` | applied more than once (anywhere) |
//! | `phantom` | applied but never invoked |
//! | `misplaced` | applied on another place than [`Routing::place_of`] says |
//! | `inconsistent` | a place whose state disagrees with its own list ([`PlaceState`]) |
//! | `reordered` | one sender's ops applied on a place out of invocation order (per route) |
//! | `flicker` | applied at the previous observation, not now |
//! | `resurrected` | not applied at the previous observation, applied now |
//!
//! An unacknowledged operation may be applied or not ([`CheckReport::unacked_applied`]
//! counts those that were), but once an observation saw it either way, every later one
//! must agree. An operation invoked after the previous observation is not in it, so it is
//! free until the next one.
//!
//! The model is one place per operation, each applying a list of operations. A journal
//! read back as one log of positioned batches (`toka-store/tests/crash_fsync.rs`) needs
//! other checks (gaps, torn batches, positions the ack named) and has its own checker.
//!
//! # Files
//!
//! All files are text, one record per line, ids in decimal:
//!
//! - invocation log: `id round task` ([`Sender`]), in invocation order;
//! - ack log: `id`;
//! - observation: `id 1` (applied) or `id 0` (not), one line per invoked id, sorted.
//!
//! The logs are [`LineLog`]s: each line is one `write` on an `O_APPEND` file, so a process
//! killed at any point leaves whole lines and at most one cut-short last line, which
//! [`read_lines`] drops. The logs are not fsync'd: they survive the death of the process,
//! not of the machine. An observation is replaced whole ([`write_atomically`]).
//!
//! # Examples
//!
//! ```
//! use toka_test_support::history::{
//!     check, History, Observation, OpId, PlaceState, Routing, Sender,
//! };
//!
//! /// Two places: even ids go to place 0, odd ids to place 1.
//! struct EvenOdd;
//!
//! impl Routing for EvenOdd {
//!     fn place_of(&self, id: OpId) -> usize {
//!         (id % 2) as usize
//!     }
//!     fn place_name(&self, place: usize) -> String {
//!         ["even", "odd"][place].to_owned()
//!     }
//! }
//!
//! /// A place's state: the ids it applied, in order.
//! struct Applied(Vec<OpId>);
//!
//! impl PlaceState for Applied {
//!     fn applied(&self) -> &[OpId] {
//!         &self.0
//!     }
//! }
//!
//! let client = Sender { round: 0, task: 0 };
//! let mut history = History::default();
//! for id in 1..=3 {
//!     history.invoke(id, client);
//! }
//! history.ack(1);
//! history.ack(2);
//! // 3 was sent but not acknowledged: applying it is allowed, not applying it too.
//! let places = [Applied(vec![2]), Applied(vec![1, 3])];
//! let report = check(&EvenOdd, &places, &history, &Observation::default());
//! assert!(report.is_valid(), "{report}");
//! assert_eq!(report.unacked_applied, 1);
//!
//! // After a crash, place 1 lost 1, which was acknowledged, and 3, which it had applied.
//! let previous = Observation::of(&history, &report);
//! let places = [Applied(vec![2]), Applied(vec![])];
//! let report = check(&EvenOdd, &places, &history, &previous);
//! assert_eq!(report.lost, ["id 1 was acknowledged but odd did not apply it"]);
//! assert_eq!(report.flicker.len(), 2);
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[cfg(test)]
mod tests;

/// An operation's id, unique over the whole test (all rounds, all senders).
pub type OpId = u64;

/// Who invoked an operation: a client task of one child process (a *round*). One sender
/// invokes its operations one after the other, so the order of its lines in the invocation
/// log is the order it sent them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sender {
    /// The child process (counted by the parent, from 0).
    pub round: u32,
    /// The client task in that process.
    pub task: u32,
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} of round {}", self.task, self.round)
    }
}

// ---------------------------------------------------------------------------------------
// Line logs.

/// An append-only line log: each [`append`](Self::append) is one `write` of one whole line
/// on an `O_APPEND` file, so a `SIGKILL` leaves whole lines and at most one cut-short last
/// line, and concurrent appenders never interleave within a line. Not fsync'd: the lines
/// survive the death of the process (they are in the page cache), not a machine crash.
#[derive(Debug)]
pub struct LineLog {
    file: Mutex<File>,
    path: PathBuf,
}

impl LineLog {
    /// Opens `path` for appending, creating it if missing.
    ///
    /// # Errors
    /// If the file cannot be opened; the error names the path.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        Ok(LineLog {
            file: Mutex::new(file),
            path: path.to_owned(),
        })
    }

    /// Appends `line` and a newline in one `write`. `line` must not contain a newline.
    ///
    /// # Errors
    /// If the write fails; the error names the path.
    ///
    /// # Panics
    /// If `line` contains a newline (a bug in the caller), or another appender panicked
    /// while holding the log.
    #[track_caller]
    pub fn append(&self, line: &str) -> io::Result<()> {
        assert!(!line.contains('\n'), "a log line with a newline: {line:?}");
        let mut file = self.file.lock().expect("a line log's lock");
        file.write_all(format!("{line}\n").as_bytes()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing a line to {}: {e}", self.path.display()),
            )
        })
    }

    /// The file this log appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The complete lines of a file, without their newlines: a last line cut short by a kill
/// (no newline after it) is dropped. A missing file has no lines.
///
/// # Panics
/// If the file exists but cannot be read, or is not UTF-8.
#[track_caller]
pub fn read_lines(path: &Path) -> Vec<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    lines.pop(); // after the last '\n': empty, or an unfinished line
    lines
}

/// Replaces `path` with `lines` (each followed by a newline) through a rename of
/// `<path>.tmp`, so that a kill leaves either the old or the new file. Not fsync'd (like
/// [`LineLog`]).
///
/// # Panics
/// If the file cannot be written or renamed.
#[track_caller]
pub fn write_atomically(path: &Path, lines: &[String]) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if let Err(e) = std::fs::write(&tmp, text) {
        panic!("writing {}: {e}", tmp.display());
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        panic!("renaming {} to {}: {e}", tmp.display(), path.display());
    }
}

/// Parses one word of a history file, naming the file and line if it is not a number.
#[track_caller]
fn parse_word<T: std::str::FromStr>(word: Option<&str>, path: &Path, line: &str) -> T {
    word.and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Histories.

/// The writing half of a history: the invocation log and the ack log of one test, shared
/// by all the client tasks of a process. [`History::read`] reads them back.
#[derive(Debug)]
pub struct HistoryLog {
    invoked: LineLog,
    acked: LineLog,
}

impl HistoryLog {
    /// Opens (or creates) the invocation log and the ack log, for appending.
    ///
    /// # Errors
    /// If a log cannot be opened; the error names the path.
    pub fn open(invoked: &Path, acked: &Path) -> io::Result<Self> {
        Ok(HistoryLog {
            invoked: LineLog::open(invoked)?,
            acked: LineLog::open(acked)?,
        })
    }

    /// Records that `sender` is about to send operation `id`: call it before the send, so
    /// that whatever the system applies was invoked.
    ///
    /// # Errors
    /// If the line cannot be written.
    pub fn invoked(&self, id: OpId, sender: Sender) -> io::Result<()> {
        self.invoked
            .append(&format!("{id} {} {}", sender.round, sender.task))
    }

    /// Records that the system acknowledged operation `id`: call it only after the send
    /// succeeded, so that every acknowledged operation must have been applied.
    ///
    /// # Errors
    /// If the line cannot be written.
    pub fn acked(&self, id: OpId) -> io::Result<()> {
        self.acked.append(&id.to_string())
    }
}

/// One invocation: who sent the operation, and when relative to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// Who sent it.
    pub sender: Sender,
    /// Its place in the invocation order (0, 1, …, over all senders): among one sender's
    /// operations, the order it sent them.
    pub order: u64,
}

/// What the clients did: every operation invoked (once each), and those acknowledged.
#[derive(Clone, Debug, Default)]
pub struct History {
    invoked: HashMap<OpId, Invocation>,
    acked: Vec<OpId>,
}

impl History {
    /// Reads back what a [`HistoryLog`] wrote (a missing log is empty; a cut-short last
    /// line is dropped).
    ///
    /// # Panics
    /// If a log cannot be read or has a malformed line, or an id was invoked twice: the
    /// test is broken.
    #[track_caller]
    pub fn read(invoked: &Path, acked: &Path) -> Self {
        let mut history = History::default();
        for line in read_lines(invoked) {
            let mut words = line.split(' ');
            let id = parse_word(words.next(), invoked, &line);
            let round = parse_word(words.next(), invoked, &line);
            let task = parse_word(words.next(), invoked, &line);
            if words.next().is_some() {
                panic!("{}: bad line {line:?}", invoked.display());
            }
            history.invoke(id, Sender { round, task });
        }
        for line in read_lines(acked) {
            history.ack(parse_word(Some(&line), acked, &line));
        }
        history
    }

    /// Adds an invocation of `id` by `sender`, after all the others.
    ///
    /// # Panics
    /// If `id` was invoked before: ids are unique, the test is broken.
    #[track_caller]
    pub fn invoke(&mut self, id: OpId, sender: Sender) {
        let order = self.invoked.len() as u64;
        let previous = self.invoked.insert(id, Invocation { sender, order });
        assert!(
            previous.is_none(),
            "id {id} invoked twice: the test is broken"
        );
    }

    /// Adds an acknowledgement of `id`.
    pub fn ack(&mut self, id: OpId) {
        self.acked.push(id);
    }

    /// The invocation of `id`, if it was invoked.
    pub fn invocation(&self, id: OpId) -> Option<&Invocation> {
        self.invoked.get(&id)
    }

    /// Whether `id` was invoked.
    pub fn is_invoked(&self, id: OpId) -> bool {
        self.invoked.contains_key(&id)
    }

    /// How many operations were invoked.
    pub fn invoked_len(&self) -> usize {
        self.invoked.len()
    }

    /// The invoked ids, sorted.
    pub fn invoked_ids(&self) -> Vec<OpId> {
        let mut ids: Vec<OpId> = self.invoked.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The acknowledged ids, in the order acknowledged.
    pub fn acked(&self) -> &[OpId] {
        &self.acked
    }
}

// ---------------------------------------------------------------------------------------
// Observations.

/// What an observation found for every operation invoked by then: applied or not. The
/// checker compares the next observation with it (`flicker`, `resurrected`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation(HashMap<OpId, bool>);

impl Observation {
    /// The observation a check made: for every id of `history`, whether `report` found it
    /// applied.
    pub fn of(history: &History, report: &CheckReport) -> Self {
        Observation(
            history
                .invoked
                .keys()
                .map(|&id| (id, report.applied.contains(&id)))
                .collect(),
        )
    }

    /// Reads an observation [`write`](Self::write) stored (none if the file is missing).
    ///
    /// # Panics
    /// If the file cannot be read or has a malformed line.
    #[track_caller]
    pub fn read(path: &Path) -> Self {
        Observation(
            read_lines(path)
                .iter()
                .map(|line| {
                    let (id, seen) = line
                        .split_once(' ')
                        .filter(|(_, seen)| *seen == "0" || *seen == "1")
                        .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
                    (parse_word(Some(id), path, line), seen == "1")
                })
                .collect(),
        )
    }

    /// Replaces the observation stored at `path` with this one, atomically
    /// ([`write_atomically`]): `id 1` or `id 0` per id, sorted.
    ///
    /// # Panics
    /// If the file cannot be written.
    #[track_caller]
    pub fn write(&self, path: &Path) {
        write_atomically(path, &self.lines());
    }

    /// The observation as it is stored: `id 1` or `id 0` per id, sorted.
    pub fn lines(&self) -> Vec<String> {
        let mut ids: Vec<(OpId, bool)> = self.0.iter().map(|(&id, &seen)| (id, seen)).collect();
        ids.sort_unstable();
        ids.iter()
            .map(|(id, seen)| format!("{id} {}", u8::from(*seen)))
            .collect()
    }

    /// Records that `id` was (`true`) or was not applied.
    pub fn insert(&mut self, id: OpId, applied: bool) {
        self.0.insert(id, applied);
    }

    /// Whether `id` was applied, if it was observed.
    pub fn get(&self, id: OpId) -> Option<bool> {
        self.0.get(&id).copied()
    }

    /// How many ids were observed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no id was observed (no observation yet).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(OpId, bool)> for Observation {
    fn from_iter<I: IntoIterator<Item = (OpId, bool)>>(iter: I) -> Self {
        Observation(iter.into_iter().collect())
    }
}

// ---------------------------------------------------------------------------------------
// The checker (a pure function).

/// What the checker must know of the system under test: where each operation must be
/// applied, what its places are called, and which ops are ordered with respect to each
/// other.
pub trait Routing {
    /// The index (into the `places` given to [`check`]) of the place that must apply `id`.
    fn place_of(&self, id: OpId) -> usize;

    /// The place's name, for messages.
    fn place_name(&self, place: usize) -> String;

    /// The route `id` takes to its place if not the direct one, as a phrase that messages
    /// show as `(both <route>)`, e.g. `"through the mid"`. The system keeps one sender's
    /// operations in order per place *and route* only: an op sent on one route may
    /// overtake an earlier op of the same sender sent on another. The default: one route
    /// (`None`) for every op.
    fn route_of(&self, id: OpId) -> Option<&'static str> {
        let _ = id;
        None
    }
}

/// A place's state as observed: the operations it applied, in the order it applied them,
/// and whether the rest of its state agrees with them.
pub trait PlaceState {
    /// The ids the place applied, in the order applied.
    fn applied(&self) -> &[OpId];

    /// Why the place's state disagrees with [`applied`](Self::applied) (e.g. a sum or
    /// count kept beside the list), if it does; the message follows the place's name. The
    /// default: it never does.
    fn inconsistency(&self) -> Option<String> {
        None
    }
}

/// What a check found: one list of messages per anomaly (see the [module](self) docs),
/// and what was applied.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Acknowledged, not applied.
    pub lost: Vec<String>,
    /// Applied more than once.
    pub duplicate: Vec<String>,
    /// Applied but never invoked.
    pub phantom: Vec<String>,
    /// Applied on another place than it was sent to.
    pub misplaced: Vec<String>,
    /// A place whose state disagrees with its list of applied ids.
    pub inconsistent: Vec<String>,
    /// One sender's ids applied out of the order it sent them (per place and route).
    pub reordered: Vec<String>,
    /// Applied at the previous observation, not now.
    pub flicker: Vec<String>,
    /// Not applied at the previous observation (and not sent since), applied now.
    pub resurrected: Vec<String>,
    /// Ids applied now.
    pub applied: HashSet<OpId>,
    /// Applied although not acknowledged (an unknown outcome that took effect).
    pub unacked_applied: usize,
}

impl CheckReport {
    /// The anomaly lists, with their names: `lost`, `duplicate`, `phantom`, `misplaced`,
    /// `inconsistent`, `reordered`, `flicker`, `resurrected`.
    pub fn anomalies(&self) -> [(&'static str, &[String]); 8] {
        [
            ("lost", &self.lost),
            ("duplicate", &self.duplicate),
            ("phantom", &self.phantom),
            ("misplaced", &self.misplaced),
            ("inconsistent", &self.inconsistent),
            ("reordered", &self.reordered),
            ("flicker", &self.flicker),
            ("resurrected", &self.resurrected),
        ]
    }

    /// Whether no anomaly was found.
    pub fn is_valid(&self) -> bool {
        self.anomalies().iter().all(|(_, list)| list.is_empty())
    }

    /// The anomalies, for a failure message: per kind found, `name (count):` and at most
    /// 10 of its messages, indented.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, list) in self.anomalies() {
            if !list.is_empty() {
                out.push(format!("{name} ({}):", list.len()));
                out.extend(list.iter().take(10).map(|l| format!("  {l}")));
            }
        }
        out
    }
}

/// [`describe`](CheckReport::describe), one line each; nothing for a valid report.
impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.describe() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Checks what the places applied (`places[k]`: place `k` of `routing`) against the
/// history and the previous observation, and finds every anomaly of the [module](self)
/// docs. Messages name places by [`Routing::place_name`]; `flicker` and `resurrected`
/// come in id order.
pub fn check<R, P>(
    routing: &R,
    places: &[P],
    history: &History,
    previous: &Observation,
) -> CheckReport
where
    R: Routing + ?Sized,
    P: PlaceState,
{
    let mut report = CheckReport::default();
    for (k, place) in places.iter().enumerate() {
        let name = routing.place_name(k);
        if let Some(why) = place.inconsistency() {
            report.inconsistent.push(format!("{name}: {why}"));
        }
        // Per sender and route (an op on one route may overtake a later one on another):
        // the last op applied here, with its place in the invocation order.
        let mut last_of_sender: HashMap<(Sender, Option<&'static str>), (u64, OpId)> =
            HashMap::new();
        for &id in place.applied() {
            if !report.applied.insert(id) {
                report
                    .duplicate
                    .push(format!("id {id} applied again (on {name})"));
                continue;
            }
            let target = routing.place_of(id);
            if target != k {
                report.misplaced.push(format!(
                    "id {id} applied on {name}, sent to {}",
                    routing.place_name(target)
                ));
            }
            match history.invocation(id) {
                None => report
                    .phantom
                    .push(format!("id {id} applied on {name} but never sent")),
                Some(invocation) => {
                    let route = routing.route_of(id);
                    let key = (invocation.sender, route);
                    if let Some((order, before)) =
                        last_of_sender.insert(key, (invocation.order, id))
                    {
                        if order > invocation.order {
                            report.reordered.push(format!(
                                "{name}: id {id} applied after id {before}, but {} sent id {id} first{}",
                                invocation.sender,
                                route.map(|r| format!(" (both {r})")).unwrap_or_default()
                            ));
                        }
                    }
                }
            }
        }
    }
    let acked: HashSet<OpId> = history.acked.iter().copied().collect();
    for &id in &history.acked {
        if !report.applied.contains(&id) {
            report.lost.push(format!(
                "id {id} was acknowledged but {} did not apply it",
                routing.place_name(routing.place_of(id))
            ));
        }
    }
    let mut previous: Vec<(OpId, bool)> = previous.0.iter().map(|(&id, &s)| (id, s)).collect();
    previous.sort_unstable();
    for (id, seen) in previous {
        let now = report.applied.contains(&id);
        if seen && !now {
            report
                .flicker
                .push(format!("id {id} was applied before and is not now"));
        }
        if !seen && now {
            report.resurrected.push(format!(
                "id {id} was not applied after an earlier recovery, and is now"
            ));
        }
    }
    report.unacked_applied = report
        .applied
        .iter()
        .filter(|id| !acked.contains(id))
        .count();
    report
}
