//! Crash test of the actor runtime with real processes and real `SIGKILL`s: a supervision
//! tree of 1,001 durable agents over a sled journal keeps its shape and exactly-once state
//! through kill -9 at random points.
//!
//! `harness = false`: `main` is the parent unless `TOKA_CRASH_TREE_DIR` is set, in which
//! case this process is a child. The parent runs children over one journal directory in
//! rounds and kills each with a real `SIGKILL` ([`std::process::Child::kill`]):
//!
//! - during the first build of the tree (round 0);
//! - right after the spawn (process start-up, sled open);
//! - while the runtime recovers the tree (after the child said the journal is open);
//! - in the middle of the message traffic (after a random number of acknowledgements).
//!
//! Then one *final* child sends the rest of the 100,000 messages and shuts down
//! gracefully, and a last *check* child recovers after that clean shutdown.
//!
//! The tree: `top` (kind `crash.top`) spawns 10 `mid-<m>` (`crash.mid`) through its
//! [`Context`], each of which spawns 99 `leaf-<m>-<j>` (`crash.leaf`) through its own
//! context: 3 levels, 990 leaves, all durable. Leaves take snapshots every
//! [`SNAPSHOT_EVERY`] messages, so recovery mixes snapshots and replay.
//!
//! The messages: ids 1..=100,000, each sent once (`AgentRef::send`, journaled with
//! `Durability::Fsync`) by one of 64 concurrent sender tasks, for the leaf [`leaf_of`]
//! picks: straight to the leaf, or (every [`FORWARD_EVERY`]th id) to the leaf's mid, which
//! forwards it with `Context::send`, an effect the runtime must deduplicate when the mid
//! handles the message again after a crash. A leaf applies `Apply(id)` by appending the id
//! to its list and adding it to its sum and count (no deduplication of its own: that is
//! the runtime's job). Before a send the child appends `id round task` to the *invocation
//! log*; after `send` returned `Ok` it appends `id` to the *ack log* (one `write` per line
//! on an `O_APPEND` file, which a `SIGKILL` cannot undo; only a machine crash could).
//!
//! After every start (and after its traffic) a child checks, jepsen-style, against both
//! logs and what every leaf answers to `Get` (with `toka_test_support::history`'s
//! [`check`], through [`Leaves`]):
//! - the tree the journal records (read before the runtime starts) has only expected
//!   agents and, under every parent, a prefix of the expected children in order; once the
//!   tree was built, it is all of it; the tree right after recovery equals the tree recorded
//!   when it was first built (ids, kinds, parents, order, durability; every agent running),
//!   or, while it is still being built, holds every journaled agent, running;
//! - top says it built 10 mids and every mid 99 leaves;
//! - every acknowledged id is applied, exactly once, on its leaf (`lost`, `duplicate`,
//!   `misplaced`); no id that was never sent is applied (`phantom`); a leaf's sum and count
//!   agree with its list (`inconsistent`); one sender's ids reach a leaf in the order it
//!   sent them, per route (`reordered`);
//! - an unacknowledged id may be applied or not, but once observed either way it stays so
//!   in every later observation (`flicker`, `resurrected`).
//!
//! The last child also counts the forwards the journal holds twice (sent again after a
//! crash and dropped by the leaf), to show that deduplication was exercised. A run takes
//! about 50 s in a debug build on 2 cores.
//!
//! Replay a run with `TOKA_SEED=<seed> cargo test -p toka-actors --test crash_tree`: the
//! seed fixes the schedule (which kills, in which order, and where in the build, the
//! recovery or the traffic they are aimed); timing inside the children still varies.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use toka_actors::record::{self, TreeRecord};
use toka_actors::{Agent, AgentError, AgentId, AgentRef, Context, Runtime, SpawnSpec};
use toka_store::{Durability, Journal, JournalConfig, SledJournal};
use toka_test_support::child::{child_fail, emit, run_as_test};
use toka_test_support::history::{
    History, HistoryLog, Observation, OpId, PlaceState, Routing, Sender, check, read_lines,
    write_atomically,
};
use toka_test_support::rng::{Rng, seed_from_env_or_time};

// ---------------------------------------------------------------------------------------
// Scale.

/// Mid-level agents under `top`.
const MIDS: u32 = 10;
/// Leaves under each mid-level agent.
const LEAVES_PER_MID: u32 = 99;
/// All leaves.
const LEAVES: u32 = MIDS * LEAVES_PER_MID;
/// All agents: top, mids, leaves.
const AGENTS: usize = 1 + MIDS as usize + LEAVES as usize;
/// Message ids 1..=TOTAL are sent, each once, over all rounds.
const TOTAL: u64 = 100_000;
/// Concurrent sender tasks in a child.
const SENDERS: usize = 64;
/// Every this many message ids, one goes through the leaf's mid (an agent-to-agent send).
const FORWARD_EVERY: u64 = 8;
/// A leaf snapshots every this many handled messages.
const SNAPSHOT_EVERY: u64 = 32;
/// A child reports progress every this many acknowledgements.
const PROGRESS_EVERY: u64 = 500;
/// How long an ask may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// A child that was never killed gives up after this long (e.g. its parent died).
const CHILD_LIFETIME: Duration = Duration::from_secs(240);
/// How long the parent waits for an awaited line of a child.
const LINE_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// The child's environment and files.

/// The test directory; set only in a child.
const CHILD_DIR_ENV: &str = "TOKA_CRASH_TREE_DIR";
/// The round number.
const CHILD_ROUND_ENV: &str = "TOKA_CRASH_TREE_ROUND";
/// How many not yet sent ids the child sends.
const CHILD_BUDGET_ENV: &str = "TOKA_CRASH_TREE_BUDGET";
/// `kill`, `final` or `check` (see [`ChildMode`]).
const CHILD_MODE_ENV: &str = "TOKA_CRASH_TREE_MODE";

/// The sled journal, under the test directory.
const JOURNAL_DIR: &str = "journal";
/// `id round task` per line, written before the send.
const INV_LOG: &str = "invoked.log";
/// `id` per line, written after the send returned `Ok`.
const ACK_LOG: &str = "acked.log";
/// The tree as first built: one [`tree_line`] per agent.
const TREE_FILE: &str = "tree.txt";
/// The last observation: `id 1` (applied) or `id 0` (not) per invoked id.
const OBSERVED_FILE: &str = "observed.txt";

// ---------------------------------------------------------------------------------------
// The agents.

fn top_id() -> AgentId {
    AgentId::new("top").unwrap()
}

fn mid_name(m: u32) -> String {
    format!("mid-{m}")
}

fn leaf_name(k: u32) -> String {
    format!("leaf-{}-{}", k / LEAVES_PER_MID, k % LEAVES_PER_MID)
}

/// Whether message `id` goes through the leaf's mid ([`MidMsg::Forward`]) rather than
/// straight to the leaf.
fn forwarded(id: u64) -> bool {
    id % FORWARD_EVERY == 0
}

/// The leaf message `id` goes to.
fn leaf_of(id: u64) -> u32 {
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % u64::from(LEAVES)) as u32
}

/// The root of the test tree: spawns the mids and tells each to build its leaves.
struct Top;

#[derive(Serialize, Deserialize)]
enum TopMsg {
    Build,
    Count,
}

impl Agent for Top {
    const KIND: &'static str = "crash.top";
    type Args = ();
    type Msg = TopMsg;
    type Reply = u32;
    /// Mids built.
    type State = u32;

    fn init(&self, _: &()) -> Result<u32, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        built: &mut u32,
        msg: TopMsg,
    ) -> Result<u32, AgentError> {
        if let TopMsg::Build = msg {
            for m in 0..MIDS {
                let mid = ctx.spawn::<Mid>(SpawnSpec::new(mid_name(m))?, m).await?;
                ctx.send(&mid, MidMsg::Build).await?;
            }
            *built = MIDS;
        }
        Ok(*built)
    }
}

/// A mid-level supervisor of [`LEAVES_PER_MID`] leaves.
struct Mid;

#[derive(Serialize, Deserialize)]
enum MidMsg {
    Build,
    Count,
    /// Send `Apply(id)` to the mid's leaf `slot` (through the context: an effect).
    Forward {
        slot: u32,
        id: u64,
    },
}

struct MidState {
    index: u32,
    built: u32,
    /// The leaves, as `Build` spawned them (rebuilt when it is replayed).
    leaves: Vec<AgentRef<Leaf>>,
}

impl Agent for Mid {
    const KIND: &'static str = "crash.mid";
    type Args = u32;
    type Msg = MidMsg;
    type Reply = u32;
    type State = MidState;

    fn init(&self, index: &u32) -> Result<MidState, AgentError> {
        Ok(MidState {
            index: *index,
            built: 0,
            leaves: Vec::new(),
        })
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        state: &mut MidState,
        msg: MidMsg,
    ) -> Result<u32, AgentError> {
        match msg {
            MidMsg::Build => {
                let mut leaves = Vec::new();
                for j in 0..LEAVES_PER_MID {
                    let k = state.index * LEAVES_PER_MID + j;
                    let spec = SpawnSpec::new(leaf_name(k))?.snapshot_every(SNAPSHOT_EVERY);
                    leaves.push(ctx.spawn::<Leaf>(spec, k).await?);
                }
                state.leaves = leaves;
                state.built = LEAVES_PER_MID;
            }
            MidMsg::Count => {}
            MidMsg::Forward { slot, id } => {
                let leaf = state
                    .leaves
                    .get(slot as usize)
                    .ok_or_else(|| AgentError::msg(format!("no leaf in slot {slot}")))?;
                ctx.send(leaf, LeafMsg::Apply(id)).await?;
            }
        }
        Ok(state.built)
    }
}

/// A leaf: applies message ids.
struct Leaf;

#[derive(Serialize, Deserialize)]
enum LeafMsg {
    Apply(u64),
    Get,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LeafState {
    sum: u64,
    count: u64,
    /// Applied ids, in the order applied.
    ids: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
enum LeafReply {
    Applied(u64),
    State(LeafState),
}

impl Agent for Leaf {
    const KIND: &'static str = "crash.leaf";
    type Args = u32;
    type Msg = LeafMsg;
    type Reply = LeafReply;
    type State = LeafState;

    fn init(&self, _: &u32) -> Result<LeafState, AgentError> {
        Ok(LeafState::default())
    }

    async fn handle(
        &self,
        _: &mut Context<'_, Self>,
        state: &mut LeafState,
        msg: LeafMsg,
    ) -> Result<LeafReply, AgentError> {
        Ok(match msg {
            LeafMsg::Apply(id) => {
                state.sum += id;
                state.count += 1;
                state.ids.push(id);
                LeafReply::Applied(state.count)
            }
            LeafMsg::Get => LeafReply::State(state.clone()),
        })
    }

    fn snapshot(&self, state: &LeafState) -> Option<Vec<u8>> {
        postcard::to_allocvec(state).ok()
    }

    fn restore(&self, _: &u32, snapshot: &[u8]) -> Result<LeafState, AgentError> {
        Ok(postcard::from_bytes(snapshot)?)
    }
}

// ---------------------------------------------------------------------------------------
// Trees.

/// One agent as the test records it: `id kind parent durable` (`-`: no parent).
fn tree_line(id: &str, kind: &str, parent: Option<&str>, durable: bool) -> String {
    format!("{id} {kind} {} {durable}", parent.unwrap_or("-"))
}

/// The full tree, in [`Runtime::tree`] order (depth first, children in start order).
fn expected_tree() -> Vec<String> {
    let mut out = vec![tree_line("top", Top::KIND, None, true)];
    for m in 0..MIDS {
        out.push(tree_line(&mid_name(m), Mid::KIND, Some("top"), true));
        for j in 0..LEAVES_PER_MID {
            let leaf = leaf_name(m * LEAVES_PER_MID + j);
            out.push(tree_line(&leaf, Leaf::KIND, Some(&mid_name(m)), true));
        }
    }
    out
}

/// The runtime's tree as [`tree_line`]s, and the agents not running.
fn runtime_tree(runtime: &Runtime) -> (Vec<String>, Vec<String>) {
    let infos = runtime.tree();
    let lines = infos
        .iter()
        .map(|i| {
            tree_line(
                i.id.as_str(),
                &i.kind,
                i.parent.as_ref().map(AgentId::as_str),
                i.durable,
            )
        })
        .collect();
    let stopped = infos
        .iter()
        .filter(|i| !i.running)
        .map(|i| i.id.to_string())
        .collect();
    (lines, stopped)
}

/// Checks a tree recovered from a crash during the first build: every agent is expected
/// (same kind, parent, durability) and under every parent the children are a prefix of the
/// expected ones (each spawn is journaled before the next starts).
fn check_partial_tree(lines: &[String], expected: &[String]) -> Vec<String> {
    let parent_of = |line: &str| line.split(' ').nth(2).unwrap_or("").to_owned();
    let id_of = |line: &str| line.split(' ').next().unwrap_or("").to_owned();
    let mut errors = Vec::new();
    let known: HashSet<&String> = expected.iter().collect();
    for line in lines {
        if !known.contains(line) {
            errors.push(format!("unexpected agent {line:?}"));
        }
    }
    let children = |lines: &[String]| {
        let mut by_parent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in lines {
            by_parent
                .entry(parent_of(line))
                .or_default()
                .push(id_of(line));
        }
        by_parent
    };
    let want = children(expected);
    for (parent, got) in children(lines) {
        let expected = want.get(&parent).cloned().unwrap_or_default();
        if !expected.starts_with(&got) {
            errors.push(format!(
                "the children of {parent} are {got:?}, not a prefix of {expected:?}"
            ));
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------
// The history and its checker (toka_test_support::history), applied to this tree.

/// The invocation log and the ack log under `dir`, read back.
fn read_history(dir: &Path) -> History {
    History::read(&dir.join(INV_LOG), &dir.join(ACK_LOG))
}

/// Where the checker expects each message id: on the leaf [`leaf_of`] picks, through the
/// leaf's mid for every [`FORWARD_EVERY`]th id (a route of its own: a forwarded id may
/// overtake a later direct one of the same sender).
struct Leaves;

impl Routing for Leaves {
    fn place_of(&self, id: OpId) -> usize {
        leaf_of(id) as usize
    }

    fn place_name(&self, place: usize) -> String {
        leaf_name(place as u32)
    }

    fn route_of(&self, id: OpId) -> Option<&'static str> {
        forwarded(id).then_some("through the mid")
    }
}

impl PlaceState for LeafState {
    fn applied(&self) -> &[OpId] {
        &self.ids
    }

    /// The sum and count must agree with the list of applied ids.
    fn inconsistency(&self) -> Option<String> {
        let sum: u64 = self.ids.iter().sum();
        (self.count != self.ids.len() as u64 || self.sum != sum).then(|| {
            format!(
                "count {} and sum {} but {} ids summing to {sum}",
                self.count,
                self.sum,
                self.ids.len()
            )
        })
    }
}

/// This test's side of the checker ([`Leaves`], [`LeafState`]'s consistency) and the tree
/// checks, on small hand-made states. The checker itself is unit-tested in
/// `toka-test-support`.
fn checker_self_test() {
    // Ids 1..=6, all sent by task 0 of round 0 in that order; 1..=5 applied where
    // `leaf_of` says, 1..=4 acknowledged.
    let sender = Sender { round: 0, task: 0 };
    let mut history = History::default();
    for id in 1..=6 {
        history.invoke(id, sender);
    }
    for id in 1..=4 {
        history.ack(id);
    }
    let apply = |leaves: &mut [LeafState], k: usize, id: u64| {
        leaves[k].ids.push(id);
        leaves[k].sum += id;
        leaves[k].count += 1;
    };
    let good = || {
        let mut leaves = vec![LeafState::default(); LEAVES as usize];
        for id in 1..=5 {
            apply(&mut leaves, leaf_of(id) as usize, id);
        }
        leaves
    };
    let none = Observation::default();
    let report = check(&Leaves, &good(), &history, &none);
    assert!(report.is_valid(), "{report}");
    assert_eq!((report.applied.len(), report.unacked_applied), (5, 1));
    let flagged = |leaves: &[LeafState], kind: &str| {
        let report = check(&Leaves, leaves, &history, &none);
        let found = report
            .anomalies()
            .iter()
            .any(|(name, list)| *name == kind && !list.is_empty());
        assert!(found, "the checker missed {kind}: {report}");
        report
    };
    let mut leaves = good();
    leaves[leaf_of(1) as usize].sum += 1;
    let report = flagged(&leaves, "inconsistent");
    assert!(report.inconsistent[0].starts_with(&leaf_name(leaf_of(1))));
    let mut leaves = good();
    leaves[leaf_of(2) as usize].count += 1;
    flagged(&leaves, "inconsistent");
    let mut leaves = good();
    apply(&mut leaves, (leaf_of(6) as usize + 1) % LEAVES as usize, 6);
    flagged(&leaves, "misplaced");
    let mut leaves = good();
    leaves[leaf_of(4) as usize] = LeafState::default();
    let report = flagged(&leaves, "lost");
    assert!(report.lost[0].contains(&leaf_name(leaf_of(4))), "{report}");

    // Ids one sender sent to one leaf in this order: direct a < b, forwarded f < g.
    let same_leaf = |route: bool| {
        (1..)
            .filter(move |&id: &u64| forwarded(id) == route)
            .flat_map(|b| (1..b).map(move |a| (a, b)))
            .find(|&(a, b)| forwarded(a) == route && leaf_of(a) == leaf_of(b))
            .unwrap()
    };
    let (a, b) = same_leaf(false);
    let (f, g) = same_leaf(true);
    let reordered = |ids: &[u64], k: u32| {
        let mut history = History::default();
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        for &id in &sorted {
            history.invoke(id, sender);
        }
        let mut leaves = vec![LeafState::default(); LEAVES as usize];
        for &id in ids {
            apply(&mut leaves, k as usize, id);
        }
        check(&Leaves, &leaves, &history, &none).reordered
    };
    assert_eq!(reordered(&[b, a], leaf_of(a)).len(), 1);
    assert!(reordered(&[a, b], leaf_of(a)).is_empty());
    let through_mid = reordered(&[g, f], leaf_of(f));
    assert_eq!(through_mid.len(), 1);
    assert!(through_mid[0].ends_with("(both through the mid)"));
    // A forwarded id may overtake an earlier direct one (another route).
    let (c, h) = (1..)
        .flat_map(|h: u64| (1..h).map(move |c| (c, h)))
        .find(|&(c, h)| !forwarded(c) && forwarded(h) && leaf_of(c) == leaf_of(h))
        .unwrap();
    assert!(reordered(&[h, c], leaf_of(c)).is_empty());

    // Trees recovered from a crash during the build: prefixes under every parent only.
    let tree = expected_tree();
    assert!(check_partial_tree(&tree, &tree).is_empty());
    assert!(check_partial_tree(&tree[..150], &tree).is_empty());
    let mut holey = tree[..150].to_vec();
    holey.remove(140);
    assert_eq!(check_partial_tree(&holey, &tree).len(), 1);
    let mut moved = tree[..150].to_vec();
    moved[140] = moved[140].replace(" mid-1 ", " mid-2 ");
    assert!(!check_partial_tree(&moved, &tree).is_empty());
}

// ---------------------------------------------------------------------------------------
// The child.

/// What a child does after recovering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildMode {
    /// Send `budget` messages, check again, then wait to be killed.
    Kill,
    /// Send `budget` messages, check, shut down gracefully and exit.
    Final,
    /// Check only, shut down gracefully and exit.
    Check,
}

impl ChildMode {
    fn name(self) -> &'static str {
        match self {
            ChildMode::Kill => "kill",
            ChildMode::Final => "final",
            ChildMode::Check => "check",
        }
    }

    fn parse(name: &str) -> Self {
        match name {
            "kill" => ChildMode::Kill,
            "final" => ChildMode::Final,
            "check" => ChildMode::Check,
            _ => panic!("bad child mode {name:?}"),
        }
    }
}

fn millis(since: Instant) -> u128 {
    since.elapsed().as_millis()
}

fn child_main(dir: PathBuf) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| child_fail(&format!("{name} is not set")))
    };
    let round: u32 = var(CHILD_ROUND_ENV).parse().unwrap();
    let budget: usize = var(CHILD_BUDGET_ENV).parse().unwrap();
    let mode = ChildMode::parse(&var(CHILD_MODE_ENV));
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        child_fail("was never killed");
    });
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(child(dir, round, budget, mode));
}

async fn child(dir: PathBuf, round: u32, budget: usize, mode: ChildMode) {
    emit("START");
    let config = JournalConfig::default().durability(Durability::Fsync);
    let journal = SledJournal::open(dir.join(JOURNAL_DIR), config)
        .unwrap_or_else(|e| child_fail(&format!("opening the journal: {e}")));
    emit("OPEN");
    // The tree as the journal records it, read before the runtime touches the journal.
    let expected = expected_tree();
    let recorded = read_lines(&dir.join(TREE_FILE));
    let journaled = journaled_tree(&journal);
    let errors = check_partial_tree(&journaled, &expected);
    if !errors.is_empty() {
        child_fail(&format!(
            "the journaled tree is wrong:\n{}",
            errors.join("\n")
        ));
    }
    if !recorded.is_empty() && journaled.len() != recorded.len() {
        child_fail(&format!(
            "the journal records {} agents, {} were built",
            journaled.len(),
            recorded.len()
        ));
    }
    emit(&format!("JOURNALED {}", journaled.len()));
    let started = Instant::now();
    let runtime = Runtime::builder(Arc::new(journal))
        .register(Top)
        .register(Mid)
        .register(Leaf)
        .start()
        .await
        .unwrap_or_else(|e| child_fail(&format!("recovering the runtime: {e}")));
    emit(&format!(
        "RECOVERED {} {}",
        runtime.tree().len(),
        millis(started)
    ));

    // The tree: as recorded, or (re)built.
    let (lines, stopped) = runtime_tree(&runtime);
    if !recorded.is_empty() {
        check_tree(&lines, &stopped, &recorded, "right after recovery");
    } else {
        // Recovery may have gone on building (a Build message journaled but not handled
        // is handled again), so the recovered tree is a superset of the journaled one.
        let mut errors = check_partial_tree(&lines, &expected);
        let have: HashSet<&String> = lines.iter().collect();
        errors.extend(
            journaled
                .iter()
                .filter(|l| !have.contains(l))
                .map(|l| format!("journaled but not recovered: {l}")),
        );
        // Only the journaled agents must run by now: the others are being spawned.
        let id_of = |line: &String| line.split(' ').next().unwrap_or("").to_owned();
        let journaled_ids: HashSet<String> = journaled.iter().map(id_of).collect();
        let not_running: Vec<&String> = stopped
            .iter()
            .filter(|id| journaled_ids.contains(*id))
            .collect();
        if !not_running.is_empty() {
            errors.push(format!(
                "journaled but not running after recovery: {not_running:?}"
            ));
        }
        if !errors.is_empty() {
            child_fail(&format!(
                "the tree recovered from a crash while building it is wrong:\n{}",
                errors.join("\n")
            ));
        }
        let started = Instant::now();
        build(&runtime).await;
        let (lines, stopped) = runtime_tree(&runtime);
        check_tree(&lines, &stopped, &expected, "after building");
        write_atomically(&dir.join(TREE_FILE), &lines);
        emit(&format!("BUILT {}", millis(started)));
    }
    check_counts(&runtime).await;
    let leaves: Vec<AgentRef<Leaf>> = (0..LEAVES)
        .map(|k| {
            runtime
                .agent::<Leaf>(&AgentId::new(leaf_name(k)).unwrap())
                .unwrap_or_else(|e| child_fail(&format!("leaf {k}: {e}")))
        })
        .collect();
    observe(&leaves, &dir, "recovered").await;
    if mode == ChildMode::Check {
        emit(&format!(
            "RESENT {}",
            resent_effects(runtime.journal().as_ref())
        ));
        finish(runtime).await;
        return;
    }

    send(&runtime, &leaves, &dir, round, budget).await;
    // A forward is acknowledged once its mid journaled it; the mid sends it on later. An
    // ask to every mid queues behind its forwards, so once answered they reached the leaves.
    check_counts(&runtime).await;
    observe(&leaves, &dir, "sent").await;
    if mode == ChildMode::Final {
        let (lines, stopped) = runtime_tree(&runtime);
        check_tree(&lines, &stopped, &expected, "at the end");
        finish(runtime).await;
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// The agents the journal's tree stream records, as [`tree_line`]s in spawn order
/// (decoded with the public [`record`](toka_actors::record) layout).
fn journaled_tree(journal: &SledJournal) -> Vec<String> {
    let events = journal
        .iter_stream(record::TREE_STREAM, 1)
        .unwrap_or_else(|e| child_fail(&format!("reading the tree stream: {e}")));
    let mut out = Vec::new();
    for event in events {
        let event = event.unwrap_or_else(|e| child_fail(&format!("reading the tree stream: {e}")));
        match record::decode_tree(&event.kind, event.seq, &event.payload) {
            Ok(TreeRecord::Spawned {
                parent,
                kind,
                spec,
                base: 0,
                ..
            }) => out.push(tree_line(
                spec.id.as_str(),
                &kind,
                parent.as_ref().map(AgentId::as_str),
                spec.durable,
            )),
            Ok(TreeRecord::Stopped { ids }) => {
                child_fail(&format!("the journal says agents stopped: {ids:?}"))
            }
            Ok(TreeRecord::Spawned { spec, .. }) => {
                child_fail(&format!("the journal says {} was spawned again", spec.id))
            }
            Ok(other) => child_fail(&format!("unexpected tree record: {other:?}")),
            Err(e) => child_fail(&format!("tree record {} does not decode: {e}", event.seq)),
        }
    }
    out
}

/// How many message records in the leaves' streams repeat an effect (sender and effect id)
/// recorded earlier in the same stream: forwards a mid sent again when it handled a
/// message again after a crash, which the leaf must have dropped. Shows that the test
/// exercised deduplication.
fn resent_effects(journal: &dyn Journal) -> usize {
    let mut resent = 0;
    for k in 0..LEAVES {
        let id = AgentId::new(leaf_name(k)).unwrap();
        let mut seen = HashSet::new();
        for event in journal.iter_stream(id.stream(), 1).unwrap() {
            let event = event.unwrap();
            if event.kind != record::RecordKind::Msg.stored() {
                continue;
            }
            let msg: record::MsgRecord<'_> = postcard::from_bytes(&event.payload)
                .unwrap_or_else(|e| child_fail(&format!("{id} seq {}: {e}", event.seq)));
            if let record::Origin::Agent { from, effect } = msg.origin {
                if !seen.insert((from, effect)) {
                    resent += 1;
                }
            }
        }
    }
    resent
}

/// Fails unless `lines` equals `want` and every agent runs.
fn check_tree(lines: &[String], stopped: &[String], want: &[String], when: &str) {
    if lines != want {
        let have: HashSet<&String> = lines.iter().collect();
        let wanted: HashSet<&String> = want.iter().collect();
        let missing: Vec<_> = want.iter().filter(|l| !have.contains(l)).take(10).collect();
        let extra: Vec<_> = lines
            .iter()
            .filter(|l| !wanted.contains(l))
            .take(10)
            .collect();
        child_fail(&format!(
            "the tree {when} is wrong: {} agents, {} expected; missing (first 10): {missing:?}; \
             unexpected (first 10): {extra:?}; same set in another order: {}",
            lines.len(),
            want.len(),
            missing.is_empty() && extra.is_empty()
        ));
    }
    if !stopped.is_empty() {
        child_fail(&format!(
            "{} agents are not running {when}, e.g. {:?}",
            stopped.len(),
            &stopped[..stopped.len().min(10)]
        ));
    }
}

/// Builds (or completes) the tree: `top` spawns the mids, the mids their leaves.
async fn build(runtime: &Runtime) {
    // Report the growing tree, so that the parent can aim a kill inside the build.
    let watched = runtime.clone();
    let reporter = tokio::spawn(async move {
        loop {
            emit(&format!("BUILDING {}", watched.tree().len()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let top = match runtime.agent::<Top>(&top_id()) {
        Ok(top) => top,
        Err(_) => runtime
            .spawn::<Top>(SpawnSpec::new("top").unwrap(), ())
            .await
            .unwrap_or_else(|e| child_fail(&format!("spawning top: {e}"))),
    };
    let mids = top
        .ask(TopMsg::Build, ASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| child_fail(&format!("asking top to build: {e}")));
    if mids != MIDS {
        child_fail(&format!("top built {mids} mids"));
    }
    // Each mid had Build journaled before this ask, so it answers once its leaves exist.
    check_counts(runtime).await;
    reporter.abort();
}

/// Asks top and every mid how many children they built.
async fn check_counts(runtime: &Runtime) {
    let top = runtime
        .agent::<Top>(&top_id())
        .unwrap_or_else(|e| child_fail(&format!("top: {e}")));
    let mids = top
        .ask(TopMsg::Count, ASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| child_fail(&format!("asking top: {e}")));
    if mids != MIDS {
        child_fail(&format!("top says it built {mids} mids"));
    }
    let mut asks = tokio::task::JoinSet::new();
    for m in 0..MIDS {
        let mid = runtime
            .agent::<Mid>(&AgentId::new(mid_name(m)).unwrap())
            .unwrap_or_else(|e| child_fail(&format!("mid {m}: {e}")));
        asks.spawn(async move { (m, mid.ask(MidMsg::Count, ASK_TIMEOUT).await) });
    }
    while let Some(answer) = asks.join_next().await {
        match answer.unwrap() {
            (_, Ok(LEAVES_PER_MID)) => {}
            (m, Ok(n)) => child_fail(&format!("{} says it built {n} leaves", mid_name(m))),
            (m, Err(e)) => child_fail(&format!("asking {}: {e}", mid_name(m))),
        }
    }
}

/// Asks every leaf for its state, checks it, and records the observation.
async fn observe(leaves: &[AgentRef<Leaf>], dir: &Path, when: &str) {
    let started = Instant::now();
    let history = read_history(dir);
    let previous = Observation::read(&dir.join(OBSERVED_FILE));
    let states = leaf_states(leaves).await;
    let report = check(&Leaves, &states, &history, &previous);
    if !report.is_valid() {
        child_fail(&format!(
            "observation {when}: {} acknowledged, {} sent, {} applied:\n{}",
            history.acked().len(),
            history.invoked_len(),
            report.applied.len(),
            report.describe().join("\n")
        ));
    }
    Observation::of(&history, &report).write(&dir.join(OBSERVED_FILE));
    emit(&format!(
        "CHECKED {when} acked={} applied={} unacked_applied={} sent={} ms={}",
        history.acked().len(),
        report.applied.len(),
        report.unacked_applied,
        history.invoked_len(),
        millis(started)
    ));
}

/// Every leaf's state, asked concurrently.
async fn leaf_states(leaves: &[AgentRef<Leaf>]) -> Vec<LeafState> {
    let leaves: Arc<Vec<AgentRef<Leaf>>> = Arc::new(leaves.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (leaves, next) = (Arc::clone(&leaves), Arc::clone(&next));
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(leaf) = leaves.get(k) else {
                    return out;
                };
                match leaf.ask(LeafMsg::Get, ASK_TIMEOUT).await {
                    Ok(LeafReply::State(state)) => out.push((k, state)),
                    Ok(LeafReply::Applied(_)) => {
                        child_fail(&format!("{leaf:?} answered Get with Applied"))
                    }
                    Err(e) => child_fail(&format!("asking {leaf:?} for its state: {e}")),
                }
            }
        });
    }
    let mut states = vec![LeafState::default(); leaves.len()];
    while let Some(done) = tasks.join_next().await {
        for (k, state) in done.unwrap() {
            states[k] = state;
        }
    }
    states
}

/// Sends the first `budget` ids not sent yet, from [`SENDERS`] tasks.
async fn send(runtime: &Runtime, leaves: &[AgentRef<Leaf>], dir: &Path, round: u32, budget: usize) {
    let mids: Arc<Vec<AgentRef<Mid>>> = Arc::new(
        (0..MIDS)
            .map(|m| {
                runtime
                    .agent::<Mid>(&AgentId::new(mid_name(m)).unwrap())
                    .unwrap_or_else(|e| child_fail(&format!("mid {m}: {e}")))
            })
            .collect(),
    );
    let invoked = read_history(dir);
    let todo: Arc<Vec<u64>> = Arc::new(
        (1..=TOTAL)
            .filter(|&id| !invoked.is_invoked(id))
            .take(budget)
            .collect(),
    );
    emit(&format!("SENDING {}", todo.len()));
    let started = Instant::now();
    let leaves: Arc<Vec<AgentRef<Leaf>>> = Arc::new(leaves.to_vec());
    let log = Arc::new(
        HistoryLog::open(&dir.join(INV_LOG), &dir.join(ACK_LOG))
            .unwrap_or_else(|e| child_fail(&e.to_string())),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let acks = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..SENDERS {
        let (todo, leaves, next, acks) = (
            Arc::clone(&todo),
            Arc::clone(&leaves),
            Arc::clone(&next),
            Arc::clone(&acks),
        );
        let log = Arc::clone(&log);
        let sender = Sender {
            round,
            task: task as u32,
        };
        let mids = Arc::clone(&mids);
        tasks.spawn(async move {
            loop {
                let Some(&id) = todo.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                log.invoked(id, sender)
                    .unwrap_or_else(|e| child_fail(&e.to_string()));
                let k = leaf_of(id);
                let sent = if forwarded(id) {
                    let mid = &mids[(k / LEAVES_PER_MID) as usize];
                    let slot = k % LEAVES_PER_MID;
                    mid.send(MidMsg::Forward { slot, id }).await
                } else {
                    leaves[k as usize].send(LeafMsg::Apply(id)).await
                };
                if let Err(e) = sent {
                    child_fail(&format!("sending id {id} for {}: {e}", leaf_name(k)));
                }
                log.acked(id).unwrap_or_else(|e| child_fail(&e.to_string()));
                let n = acks.fetch_add(1, Ordering::Relaxed) + 1;
                if n % PROGRESS_EVERY == 0 {
                    emit(&format!("PROGRESS {n}"));
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    emit(&format!("SENT {} {}", todo.len(), millis(started)));
}

/// Shuts the runtime down gracefully and says so.
async fn finish(runtime: Runtime) {
    runtime
        .shutdown()
        .await
        .unwrap_or_else(|e| child_fail(&format!("shutting down: {e}")));
    emit("DONE");
}

// ---------------------------------------------------------------------------------------
// The parent.

/// Where a round's kill is aimed.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// Once the child's tree has this many agents while it builds it, plus a little.
    Building { agents: usize, then: Duration },
    /// This long after spawning the child: process start-up and sled open.
    Startup(Duration),
    /// This long after the child said the journal is open: during recovery.
    Recovery(Duration),
    /// Once the child reported this many acknowledgements, plus a little.
    Traffic { acks: u64, then: Duration },
}

/// A line of a child, when it came.
struct Line {
    at: Duration,
    text: String,
}

/// What a child printed.
#[derive(Default)]
struct ChildRun {
    lines: Vec<Line>,
}

impl ChildRun {
    fn errors(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.text.starts_with("ERR"))
            .map(|l| l.text.as_str())
            .collect()
    }

    fn find(&self, tag: &str) -> Option<&Line> {
        self.lines
            .iter()
            .find(|l| l.text.split(' ').next() == Some(tag))
    }

    /// The last tag the child printed before it died.
    fn last_tag(&self) -> &str {
        self.lines
            .last()
            .and_then(|l| l.text.split(' ').next())
            .unwrap_or("(nothing)")
    }

    /// Milliseconds the child's recovery took, if it finished.
    fn recovery_ms(&self) -> Option<u64> {
        let line = self.find("RECOVERED")?;
        line.text.split(' ').nth(2)?.parse().ok()
    }
}

/// Starts a child and a thread that forwards its stdout lines.
fn spawn_child(
    dir: &Path,
    round: u32,
    budget: usize,
    mode: ChildMode,
) -> (std::process::Child, mpsc::Receiver<Line>) {
    let spawned = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_ROUND_ENV, round.to_string())
        .env(CHILD_BUDGET_ENV, budget.to_string())
        .env(CHILD_MODE_ENV, mode.name())
        .env_remove("TOKA_SEED")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(text) = line else { break };
            if tx
                .send(Line {
                    at: spawned.elapsed(),
                    text,
                })
                .is_err()
            {
                break;
            }
        }
    });
    (child, rx)
}

/// Collects lines until `stop` says so (or an `ERR` line comes) or the child's stdout
/// closes; `false` if `deadline` passed first (the child hangs).
fn collect_until(
    rx: &mpsc::Receiver<Line>,
    run: &mut ChildRun,
    deadline: Instant,
    mut stop: impl FnMut(&Line) -> bool,
) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = stop(&line) || line.text.starts_with("ERR");
                run.lines.push(line);
                if done {
                    return true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return true,
            Err(mpsc::RecvTimeoutError::Timeout) => return false,
        }
    }
}

/// Runs one child and SIGKILLs it as `kill` says; returns what it printed.
fn run_killed(dir: &Path, round: u32, budget: usize, kill: Kill) -> ChildRun {
    use std::os::unix::process::ExitStatusExt;

    let (mut child, rx) = spawn_child(dir, round, budget, ChildMode::Kill);
    let spawned = Instant::now();
    let mut run = ChildRun::default();
    let deadline = spawned + LINE_TIMEOUT;
    let progressed = match kill {
        Kill::Startup(delay) => {
            std::thread::sleep(delay);
            true
        }
        Kill::Building { agents, then } => {
            let progressed = collect_until(&rx, &mut run, deadline, |l| {
                let mut words = l.text.split(' ');
                match (words.next(), words.next()) {
                    (Some("BUILDING"), Some(n)) => n.parse::<usize>().unwrap() >= agents,
                    (Some("BUILT"), _) => true,
                    _ => false,
                }
            });
            std::thread::sleep(then);
            progressed
        }
        Kill::Recovery(delay) => {
            let progressed = collect_until(&rx, &mut run, deadline, |l| l.text == "OPEN");
            std::thread::sleep(delay);
            progressed
        }
        Kill::Traffic { acks, then } => {
            let progressed = collect_until(&rx, &mut run, deadline, |l| {
                let mut words = l.text.split(' ');
                match (words.next(), words.next()) {
                    (Some("PROGRESS"), Some(n)) => n.parse::<u64>().unwrap() >= acks,
                    (Some("SENT"), _) => true,
                    _ => false,
                }
            });
            std::thread::sleep(then);
            progressed
        }
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        run.lines.push(line);
    }
    let errors = run.errors();
    assert!(
        errors.is_empty(),
        "round {round}: the child reported errors:\n{}",
        errors.join("\n")
    );
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: the child ended by itself ({status}) instead of by SIGKILL"
    );
    assert!(
        progressed,
        "round {round}: the child hung: the line awaited for {kill:?} did not come within \
         {LINE_TIMEOUT:?}; its last line: {:?}",
        run.lines.last().map(|l| l.text.as_str())
    );
    run
}

/// Runs a child that must finish by itself.
fn run_to_end(dir: &Path, round: u32, budget: usize, mode: ChildMode) -> ChildRun {
    let (mut child, rx) = spawn_child(dir, round, budget, mode);
    let mut run = ChildRun::default();
    let finished = collect_until(&rx, &mut run, Instant::now() + CHILD_LIFETIME, |l| {
        l.text == "DONE"
    });
    // After DONE the child only exits: give it a while, then kill it.
    let exit_by = Instant::now()
        + if finished {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= exit_by {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        run.lines.push(line);
    }
    let errors = run.errors();
    assert!(
        errors.is_empty(),
        "round {round} ({}): the child reported errors:\n{}",
        mode.name(),
        errors.join("\n")
    );
    assert!(
        status.success() && run.find("DONE").is_some(),
        "round {round} ({}): the child did not finish ({status}); its last line: {:?}",
        mode.name(),
        run.lines.last().map(|l| l.text.as_str())
    );
    run
}

fn print_run(round: u32, what: &str, run: &ChildRun, started: Instant) {
    let lines: Vec<String> = run
        .lines
        .iter()
        .filter(|l| !l.text.starts_with("PROGRESS") && !l.text.starts_with("BUILDING"))
        .map(|l| format!("[{:.2}s] {}", l.at.as_secs_f64(), l.text))
        .collect();
    println!(
        "round {round} ({what}, at {:.1}s): last line {:?}; {}",
        started.elapsed().as_secs_f64(),
        run.lines.last().map_or("", |l| l.text.as_str()),
        lines.join(" | ")
    );
}

fn parent() {
    checker_self_test();
    let seed = seed_from_env_or_time();
    println!("crash_tree seed: TOKA_SEED={seed}");
    let mut rng = Rng::splitmix(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let started = Instant::now();

    // Round 0 kills the first build; then, shuffled, start-up, recovery and traffic kills.
    let mut plan = vec![
        "startup", "recovery", "recovery", "traffic", "traffic", "traffic", "traffic",
    ];
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.range(0, i as u64) as usize);
    }
    plan.insert(0, "building");
    let mut traffic_left = plan
        .iter()
        .filter(|p| **p != "startup" && **p != "recovery")
        .count()
        + 1;
    let mut recovery_ms: u64 = 500;
    let mut kills_during_recovery = 0;
    let mut kills_during_traffic = 0;
    for (round, what) in plan.iter().enumerate() {
        let round = round as u32;
        let sent = read_history(&dir).invoked_len() as u64;
        let budget = ((TOTAL - sent) / traffic_left as u64) as usize;
        let kill = match *what {
            "building" => Kill::Building {
                agents: rng.range(1, AGENTS as u64 - 1) as usize,
                then: Duration::from_millis(rng.range(0, 5)),
            },
            "startup" => Kill::Startup(Duration::from_millis(rng.range(0, 300))),
            // Mostly in recovery; sometimes in the checks right after it.
            "recovery" => Kill::Recovery(Duration::from_millis(rng.range(0, recovery_ms * 3 / 2))),
            _ => {
                let acks = rng.range(budget as u64 / 5, budget as u64 * 9 / 10);
                Kill::Traffic {
                    acks,
                    then: Duration::from_millis(rng.range(0, 20)),
                }
            }
        };
        if *what != "startup" && *what != "recovery" {
            traffic_left -= 1;
        }
        let run = run_killed(&dir, round, budget, kill);
        if let Some(ms) = run.recovery_ms() {
            recovery_ms = ms.max(50);
        }
        match run.last_tag() {
            "START" | "OPEN" | "JOURNALED" => kills_during_recovery += 1,
            "SENDING" | "PROGRESS" => kills_during_traffic += 1,
            _ => {}
        }
        print_run(
            round,
            &format!("{what}, {kill:?}, budget {budget}"),
            &run,
            started,
        );
    }

    let round = plan.len() as u32;
    let run = run_to_end(&dir, round, TOTAL as usize, ChildMode::Final);
    print_run(round, "final", &run, started);
    let run = run_to_end(&dir, round + 1, 0, ChildMode::Check);
    print_run(round + 1, "check after a clean shutdown", &run, started);
    let resent = run
        .find("RESENT")
        .map_or("?", |l| &l.text["RESENT ".len()..]);

    // Every id was sent exactly once (History::read panics on a second send).
    let history = read_history(&dir);
    assert_eq!(history.invoked_len() as u64, TOTAL, "ids sent");
    assert!((1..=TOTAL).all(|id| history.is_invoked(id)));
    let observed = Observation::read(&dir.join(OBSERVED_FILE));
    let applied = (1..=TOTAL)
        .filter(|&id| observed.get(id) == Some(true))
        .count();
    // Start-up and recovery kills are aimed by time, so on a fast machine one may land
    // after recovery; traffic kills are aimed by acknowledgements and always land in it.
    assert!(
        kills_during_traffic >= 4,
        "{kills_during_traffic} kills during traffic"
    );
    println!(
        "crash_tree: OK in {:.1}s: {} agents, {TOTAL} messages sent, {} acknowledged and checked \
         applied exactly once, {} applied in all, {resent} forwards sent again after a crash \
         and dropped, {} kills ({kills_during_recovery} before recovery finished, \
         {kills_during_traffic} during traffic); TOKA_SEED={seed}",
        started.elapsed().as_secs_f64(),
        AGENTS,
        history.acked().len(),
        applied,
        plan.len(),
    );
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        child_main(PathBuf::from(dir));
        return;
    }
    run_as_test("crash_tree", parent);
}
