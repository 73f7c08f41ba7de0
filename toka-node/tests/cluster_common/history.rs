//! A history checker over a cluster's shard journals (issue 15: "no agent ever running on
//! two nodes at once, checked by a history checker over the journal").
//!
//! What it reads:
//! - each shard journal's **holdings** (stream `toka/cluster`, kind `cluster.holding`: the
//!   node id, epoch, process id and start time a node journals, fenced, before it recovers
//!   the shard), in log order;
//! - the journaled **work** that names the process that did it: effect outcomes (`toka.result`
//!   records of agent streams) whose output carries a mark `holder-check AGENT EVENT PID
//!   MICROS` (the test's tool command prints its agent, its event, `$PPID` — the node
//!   process that ran it — and the wall-clock time);
//! - the **ledger** the same command appends to, outside every journal (one line `AGENT
//!   EVENT PID MICROS` per run): the real-time order of the effects (all nodes share the
//!   machine's clock).
//!
//! What it checks ([`check_history`]):
//! 1. per shard, holdings come in strictly increasing epochs (and start times), each by a
//!    process of the node it names, and the first one precedes every runtime record;
//! 2. every journaled work record lies after a holding of the process that did the work,
//!    before the next holding (attribution in log order);
//! 3. every ledger line comes from the process whose holding was in force at its time,
//!    so per agent the lines, sorted by time, change process only where the holding
//!    changes (never two nodes within one holding, never a node that did not hold it);
//! 4. every journaled work record is the ledger line of the same run.
//!
//! The checker is a pure function over [`ShardHistory`]s and [`LedgerEntry`]s, so
//! `tests/cluster.rs` also feeds it broken histories it must reject.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The stream of a shard journal with its holdings (`toka-node/src/cluster.rs`).
pub(crate) const HOLDINGS_STREAM: &str = "toka/cluster";
/// The kind of a holding record.
pub(crate) const HOLDING_KIND: &str = "cluster.holding";
/// What a tool's output begins its mark with.
pub(crate) const WORK_MARK: &str = "holder-check";

/// The `sh -c` script of a `shell.exec` reactor whose events carry `/id` and `/to` (its own
/// agent id): appends `AGENT EVENT PID MICROS` to `ledger.txt` in its working directory
/// and prints it after [`WORK_MARK`], so the outcome journaled names the node process
/// (`$PPID`: the sandbox starts `sh` straight from the node) and the time.
pub(crate) const MARKING_SCRIPT: &str = "l=\"{{/to}} {{/id}} $PPID $(date +%s%6N)\"; echo \"$l\" >> ledger.txt; echo \"holder-check $l\"";

/// One holding, as journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holding {
    /// Its log position in the shard journal.
    pub(crate) position: u64,
    pub(crate) node: String,
    pub(crate) epoch: i64,
    pub(crate) pid: u32,
    /// When the node started serving (µs since the Unix epoch).
    pub(crate) started_micros: u64,
}

/// One run of the marking command, as journaled or as the ledger has it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Run {
    pub(crate) agent: String,
    pub(crate) event: String,
    /// The node process that ran it.
    pub(crate) pid: u32,
    /// When it ran (µs since the Unix epoch).
    pub(crate) at_micros: u64,
}

/// One journaled outcome carrying a mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Work {
    /// Its log position in the shard journal.
    pub(crate) position: u64,
    pub(crate) run: Run,
}

/// One ledger line.
pub(crate) type LedgerEntry = Run;

/// What the checker needs of one shard journal.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShardHistory {
    pub(crate) shard: u32,
    /// In log order.
    pub(crate) holdings: Vec<Holding>,
    /// The position of the first runtime record (`toka/tree`, `toka/progress`, `agent/…`).
    pub(crate) first_runtime: Option<u64>,
    /// The agents whose streams the journal holds.
    pub(crate) agents: BTreeSet<String>,
    /// In log order.
    pub(crate) work: Vec<Work>,
    /// Records of its holdings stream it could not read (each a complaint).
    pub(crate) unreadable: Vec<String>,
}

/// Parses the runs marked in `text` (`holder-check AGENT EVENT PID MICROS`, ended by
/// anything but a word or a space: a newline, an escaped one, a quote).
pub(crate) fn marked_runs(text: &str) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(WORK_MARK) {
        rest = &rest[at + WORK_MARK.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == ' ' || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        if let Some(run) = parse_run(&rest[..end]) {
            runs.push(run);
        }
    }
    runs
}

/// `AGENT EVENT PID MICROS`.
fn parse_run(text: &str) -> Option<Run> {
    let mut words = text.split_whitespace();
    let run = Run {
        agent: words.next()?.to_owned(),
        event: words.next()?.to_owned(),
        pid: words.next()?.parse().ok()?,
        at_micros: words.next()?.parse().ok()?,
    };
    words.next().is_none().then_some(run)
}

/// The ledger's lines (`AGENT EVENT PID MICROS`); an unreadable line is an `Err`.
pub(crate) fn parse_ledger(text: &str) -> Result<Vec<LedgerEntry>, String> {
    text.lines()
        .map(|line| parse_run(line).ok_or_else(|| format!("unreadable ledger line {line:?}")))
        .collect()
}

/// Reads what the checker needs from a shard journal (nothing is written).
pub(crate) fn read_shard_history(
    journal: &dyn toka_store::Journal,
    shard: u32,
) -> Result<ShardHistory, toka_store::Error> {
    let mut history = ShardHistory {
        shard,
        ..ShardHistory::default()
    };
    for event in journal.iter_all(1) {
        let event = event?;
        if event.stream == HOLDINGS_STREAM {
            if event.kind != HOLDING_KIND {
                continue;
            }
            match holding(&event) {
                Some(holding) => history.holdings.push(holding),
                None => history.unreadable.push(format!(
                    "shard {shard}: the holding at {} is unreadable: {}",
                    event.position,
                    String::from_utf8_lossy(&event.payload)
                )),
            }
            continue;
        }
        let agent = event.stream.strip_prefix("agent/");
        if agent.is_none() && !event.stream.starts_with("toka/") {
            continue;
        }
        let runtime =
            agent.is_some() || event.stream == "toka/tree" || event.stream == "toka/progress";
        if runtime && history.first_runtime.is_none() {
            history.first_runtime = Some(event.position);
        }
        let Some(agent) = agent else { continue };
        history.agents.insert(agent.to_owned());
        let is_result = matches!(
            toka_actors::record::RecordKind::parse(&event.kind, &event.stream, event.seq),
            Ok(Some((toka_actors::record::RecordKind::Result, _)))
        );
        if is_result {
            for run in marked_runs(&String::from_utf8_lossy(&event.payload)) {
                history.work.push(Work {
                    position: event.position,
                    run,
                });
            }
        }
    }
    Ok(history)
}

fn holding(event: &toka_store::RecordedEvent) -> Option<Holding> {
    let payload: Value = serde_json::from_slice(&event.payload).ok()?;
    Some(Holding {
        position: event.position,
        node: payload["node"].as_str()?.to_owned(),
        epoch: payload["epoch"].as_i64()?,
        pid: u32::try_from(payload["pid"].as_u64()?).ok()?,
        started_micros: payload["started_micros"].as_u64()?,
    })
}

/// Reads the shard journals at `urls` (shard `i` at `urls[i]`; the nodes stopped).
pub(crate) fn read_shard_histories(urls: impl IntoIterator<Item = String>) -> Vec<ShardHistory> {
    urls.into_iter()
        .enumerate()
        .map(|(shard, url)| {
            let shard = u32::try_from(shard).unwrap();
            // The blocking PostgreSQL client runs its own runtime: off the test's thread.
            std::thread::spawn(move || {
                let journal =
                    toka_store::PgJournal::connect(&url, toka_store::JournalConfig::default())
                        .unwrap();
                read_shard_history(&journal, shard).unwrap()
            })
            .join()
            .unwrap()
        })
        .collect()
}

/// What a history that passed held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checked {
    pub(crate) holdings: usize,
    pub(crate) work: usize,
    pub(crate) ledger: usize,
    /// Ledger lines of an agent that ran on another process than its previous line.
    pub(crate) moves: usize,
}

/// The holding in force at log position `position`: the last one before it.
fn at_position(holdings: &[Holding], position: u64) -> Option<&Holding> {
    holdings.iter().rev().find(|h| h.position < position)
}

/// The index of the holding in force at time `micros`: the last one started by then.
fn at_time(holdings: &[Holding], micros: u64) -> Option<usize> {
    holdings.iter().rposition(|h| h.started_micros <= micros)
}

/// Checks the histories of every shard of a cluster against each other and the ledger
/// (see the module docs); `processes` maps each node process id the test started to its
/// node id. `Err`: every violation found.
pub(crate) fn check_history(
    shards: &[ShardHistory],
    ledger: &[LedgerEntry],
    processes: &BTreeMap<u32, String>,
) -> Result<Checked, Vec<String>> {
    let mut bad = Vec::new();
    let mut checked = Checked::default();
    // 1. Holdings.
    for history in shards {
        let shard = history.shard;
        bad.extend(history.unreadable.iter().cloned());
        checked.holdings += history.holdings.len();
        match (history.holdings.first(), history.first_runtime) {
            (None, Some(first)) => bad.push(format!(
                "shard {shard}: runtime records (from position {first}) but no holding"
            )),
            (Some(holding), Some(first)) if holding.position > first => bad.push(format!(
                "shard {shard}: a runtime record at {first} precedes the first holding ({holding:?})"
            )),
            _ => {}
        }
        for pair in history.holdings.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            if after.epoch <= before.epoch {
                bad.push(format!(
                    "shard {shard}: epochs out of order: {before:?} then {after:?}"
                ));
            }
            if after.started_micros < before.started_micros {
                bad.push(format!(
                    "shard {shard}: a holding started before the one it follows: {before:?} then {after:?}"
                ));
            }
        }
        for holding in &history.holdings {
            if processes.get(&holding.pid) != Some(&holding.node) {
                bad.push(format!(
                    "shard {shard}: {holding:?} names a process the test did not start as {:?} (it started {:?})",
                    holding.node,
                    processes.get(&holding.pid)
                ));
            }
        }
        // 2. Work in log order.
        for work in &history.work {
            checked.work += 1;
            match at_position(&history.holdings, work.position) {
                Some(holding) if holding.pid == work.run.pid => {}
                holding => bad.push(format!(
                    "shard {shard}: {work:?} was done by process {} but journaled under {holding:?}",
                    work.run.pid
                )),
            }
        }
    }
    // 3. The ledger in real time.
    let mut by_agent: BTreeMap<&str, Vec<&LedgerEntry>> = BTreeMap::new();
    for entry in ledger {
        by_agent.entry(&entry.agent).or_default().push(entry);
    }
    for (agent, mut entries) in by_agent {
        let homes: Vec<&ShardHistory> =
            shards.iter().filter(|h| h.agents.contains(agent)).collect();
        let [home] = homes[..] else {
            bad.push(format!(
                "agent {agent}: its stream is in {} shard journals, not one",
                homes.len()
            ));
            continue;
        };
        entries.sort_by_key(|e| e.at_micros);
        let mut previous: Option<(&LedgerEntry, usize)> = None;
        for entry in entries {
            checked.ledger += 1;
            if !processes.contains_key(&entry.pid) {
                bad.push(format!(
                    "{entry:?}: run by process {}, which is no node the test started",
                    entry.pid
                ));
            }
            let Some(index) = at_time(&home.holdings, entry.at_micros) else {
                bad.push(format!(
                    "{entry:?}: ran before any holding of shard {}",
                    home.shard
                ));
                continue;
            };
            let holding = &home.holdings[index];
            if holding.pid != entry.pid {
                bad.push(format!(
                    "{entry:?}: ran on process {} while shard {} was held by {holding:?}",
                    entry.pid, home.shard
                ));
            }
            if let Some((last, last_index)) = previous
                && last.pid != entry.pid
            {
                checked.moves += 1;
                if last_index == index {
                    bad.push(format!(
                        "agent {agent}: ran on two processes within one holding of shard {} ({holding:?}): {last:?} then {entry:?}",
                        home.shard
                    ));
                }
            }
            previous = Some((entry, index));
        }
    }
    // 4. The journal and the ledger agree on each run.
    let lines: BTreeSet<&Run> = ledger.iter().collect();
    for history in shards {
        for work in &history.work {
            if !lines.contains(&work.run) {
                bad.push(format!(
                    "shard {}: {work:?} has no such line in the ledger",
                    history.shard
                ));
            }
        }
    }
    if bad.is_empty() {
        Ok(checked)
    } else {
        Err(bad)
    }
}

/// Reads the shard journals at `urls` (shard `i` at `urls[i]`; the nodes stopped) and
/// checks their history against `ledger`, attributing the processes of `nodes`; panics
/// with every violation, or prints what was checked.
pub(crate) fn check_cluster_history(
    nodes: &[super::ClusterNode],
    urls: impl IntoIterator<Item = String>,
    ledger: &[LedgerEntry],
) -> Checked {
    let processes: BTreeMap<u32, String> = nodes
        .iter()
        .flat_map(|node| node.pids().iter().map(|pid| (*pid, node.id.to_owned())))
        .collect();
    let histories = read_shard_histories(urls);
    match check_history(&histories, ledger, &processes) {
        Ok(checked) => {
            eprintln!(
                "history: {} holdings in increasing epochs; {} journaled effects and {} ledger lines attributed to their holders; {} moves of an agent between processes",
                checked.holdings, checked.work, checked.ledger, checked.moves
            );
            checked
        }
        Err(bad) => panic!(
            "the history checker found {} violations:\n{}",
            bad.len(),
            bad.join("\n")
        ),
    }
}
