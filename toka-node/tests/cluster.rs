//! A cluster of three real `toka-node` processes over one PostgreSQL database, under load,
//! with nodes killed (`SIGKILL`) and restarted again and again.
//!
//! - `a_cluster_survives_kills_with_every_acknowledged_message_applied_once`: 24 counters
//!   spread over 8 shards; four clients send `{"add": 1}` through random nodes while one
//!   node at a time is killed and restarted (`TOKA_CLUSTER_KILLS`, default 20). After each
//!   kill the dead node's shards must be served again by the others within 10 s (the
//!   figures printed: min, median and max failover time). At the end every counter holds
//!   at least every acknowledged message and at most those plus the ones whose outcome the
//!   client could not know, and every shard journal's hash chain is intact (two writers of
//!   one journal break it: see `toka-store/tests/leases_postgres.rs`). Beside them, 8
//!   reactors run `shell.exec` for each event sent to them (appending `AGENT EVENT PID
//!   MICROS` to `ledger.txt` in one jail all the nodes share: an outside system): no
//!   event's effect ever runs twice, whichever node ran its reactor before and after each
//!   kill, and every acknowledged
//!   event's effect ran, but for the few a kill left in doubt between intent and outcome
//!   (never re-run: at most once). Then the **history checker** (`cluster_common::history`)
//!   reads every shard journal: its holdings (journaled by each node before it recovers a
//!   shard) come in strictly increasing epochs, each by a process of the node it names;
//!   every effect outcome journaled (the command prints `$PPID`, its node's process id,
//!   and the time) lies after a holding of the process that ran it; and every ledger line,
//!   in real time, comes from the process whose holding was in force then — per agent, no
//!   two nodes within one holding, no node that did not hold it.
//!
//! - `the_history_checker_rejects_work_by_a_node_that_did_not_hold_the_shard`: the checker
//!   on hand-made histories: a good one passes; work journaled under another node's
//!   holding, an effect run while another node held the shard, two processes within one
//!   holding, epochs out of order, a runtime record before the first holding, a holding by
//!   a stranger, and a journaled run missing from the ledger each fail it.
//!
//! - `any_node_answers_for_the_whole_cluster`: agents spawned through one node are listed,
//!   sent to and queried through the others (an id taken through another node is 409); an
//!   approval made on one node is listed, read and decided through the others; a token
//!   revoked through one node is refused by every node's front within seconds (and by the
//!   holder of a forwarded request); `GET /cluster` shows every shard held, and each
//!   shard's last holding (`GET /events?shard=N&stream=toka/cluster`) names its holder
//!   and epoch.
//!
//! Needs `TOKA_TEST_POSTGRES` (see `toka-store/tests/postgres/start.sh`); without it the
//! test passes doing nothing, unless `TOKA_REQUIRE_POSTGRES=1` (CI).
#![cfg(feature = "postgres")]

mod cluster_common;
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_common::{
    ClusterNode, Outcome, Schemas, Sent, call, check_counters, eventually, free_port, history,
    init_data_dirs_with, report, retry_503, sep, verify_shards,
};
use common::postgres_url;
use serde_json::{Value, json};
use toka_test_support::model_server::{ModelServer, Reply, chat_text};
use toka_test_support::rng::{Rng, seed_from_env_or_time};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const SHARDS: u32 = 8;
const COUNTERS: usize = 24;

/// The shards each live node serves, from their `/health`.
fn served(nodes: &[SocketAddr]) -> BTreeMap<u32, usize> {
    let mut served = BTreeMap::new();
    for addr in nodes {
        if let Ok((200, health)) = call(*addr, "GET", "/health", "", &Value::Null) {
            for shard in health["shards"].as_array().into_iter().flatten() {
                *served.entry(shard.as_u64().unwrap() as u32).or_insert(0) += 1;
            }
        }
    }
    served
}

/// Waits until every shard is served by exactly one of `nodes`; how long it took.
fn wait_all_served(nodes: &[SocketAddr], limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let served = served(nodes);
        if served.len() == SHARDS as usize && served.values().all(|&n| n == 1) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!("after {limit:?} the shards served are {served:?}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Three nodes on copies of one data directory, over fresh schemas, formed and spread.
struct TestCluster {
    // Field order is drop order: the nodes stop before the schemas go.
    nodes: Vec<ClusterNode>,
    addrs: Vec<SocketAddr>,
    token: String,
    /// A directory every node's tools may use (mode 0777).
    jail: PathBuf,
    url: String,
    base: String,
    _schemas: Schemas,
    _tmp: tempfile::TempDir,
}

impl TestCluster {
    /// Starts the cluster with the config file `config(jail)` for every node.
    fn start(url: &str, tag: &str, config: impl Fn(&Path) -> String) -> TestCluster {
        Self::start_prepared(url, tag, config, |_| {})
    }

    /// As [`TestCluster::start`], with `prepare` run on the data directory before it is
    /// copied to each node.
    fn start_prepared(
        url: &str,
        tag: &str,
        config: impl Fn(&Path) -> String,
        prepare: impl Fn(&Path),
    ) -> TestCluster {
        let base = format!("{tag}_{}", std::process::id());
        let schemas = Schemas {
            url: url.to_owned(),
            base: base.clone(),
        };
        let journal = format!("{url}{}schema={base}", sep(url));
        let tmp = tempfile::tempdir().unwrap();
        // One data directory (one root and seal key), copied to each node.
        let token = init_data_dirs_with(tmp.path(), &NODES, prepare);
        // As root the sandbox runs `sh` as `nobody`: it must reach and write its jail.
        let jail = tmp.path().join("jail");
        std::fs::create_dir(&jail).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&jail, std::fs::Permissions::from_mode(0o777)).unwrap();
        let config_file = tmp.path().join("node.toml");
        std::fs::write(&config_file, config(&jail)).unwrap();
        let nodes: Vec<ClusterNode> = NODES
            .iter()
            .map(|id| {
                ClusterNode::start(
                    id,
                    &tmp.path().join(id),
                    &config_file,
                    &journal,
                    SocketAddr::from(([127, 0, 0, 1], free_port())),
                    None,
                )
            })
            .collect();
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        if let Err(error) = wait_all_served(&addrs, Duration::from_secs(30)) {
            panic!("the cluster did not form: {error}\n{}", report(&nodes));
        }
        // The shards spread: every node serves some (3, 3 and 2).
        let spread_by = Instant::now() + Duration::from_secs(15);
        loop {
            let counts: Vec<usize> = addrs
                .iter()
                .map(|addr| {
                    let (_, health) = call(*addr, "GET", "/health", "", &Value::Null).unwrap();
                    health["shards"].as_array().map_or(0, Vec::len)
                })
                .collect();
            // Dealt evenly (3, 3, 2), not just all served: 4, 2, 2 still has a hand-over
            // to make, during which a shard answers 503.
            let (least, most) = (counts.iter().min(), counts.iter().max());
            let even = least.zip(most).is_some_and(|(l, m)| m - l <= 1);
            if even && counts.iter().sum::<usize>() == SHARDS as usize {
                break;
            }
            assert!(
                Instant::now() < spread_by,
                "the shards did not spread: {counts:?}\n{}",
                report(&nodes)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TestCluster {
            nodes,
            addrs,
            token,
            jail,
            url: url.to_owned(),
            base,
            _schemas: schemas,
            _tmp: tmp,
        }
    }

    /// The URL of shard `shard`'s journal.
    fn shard_url(&self, shard: u32) -> String {
        format!(
            "{}{}schema={}_s{shard}",
            self.url,
            sep(&self.url),
            self.base
        )
    }
}

#[test]
fn a_cluster_survives_kills_with_every_acknowledged_message_applied_once() {
    let Some(url) = postgres_url() else {
        return;
    };
    let kills: usize = std::env::var("TOKA_CLUSTER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = seed_from_env_or_time();
    eprintln!("seed {seed} (TOKA_TEST_SEED to replay)");
    let cluster = TestCluster::start(&url, "clu", |jail| {
        format!(
            "durability = \"fsync\"\n[tools]\nshell_jail = {:?}\nshell_allow = [\"sh\"]\n",
            jail.to_str().unwrap()
        )
    });
    let (token, addrs) = (cluster.token.clone(), cluster.addrs.clone());
    let ledger = cluster.jail.join("ledger.txt");
    let shard_urls: Vec<String> = (0..SHARDS).map(|shard| cluster.shard_url(shard)).collect();
    let mut nodes = cluster.nodes;

    let counters: Vec<String> = (0..COUNTERS).map(|i| format!("c{i}")).collect();
    for (i, id) in counters.iter().enumerate() {
        let (status, body) = call(
            addrs[i % addrs.len()],
            "POST",
            "/agents",
            &token,
            &json!({"id": id, "kind": "counter"}),
        )
        .unwrap();
        assert_eq!(status, 201, "spawning {id}: {body}");
    }
    let reactors: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    for (i, id) in reactors.iter().enumerate() {
        let args = json!({
            "subscribe": format!("unused.{id}"),
            "tool": "shell.exec",
            "input": {"program": "sh", "args": ["-c", history::MARKING_SCRIPT]},
            "token": token,
        });
        let (status, body) = call(
            addrs[i % addrs.len()],
            "POST",
            "/agents",
            &token,
            &json!({"id": id, "kind": "reactor", "args": args}),
        )
        .unwrap();
        assert_eq!(status, 201, "spawning {id}: {body}");
    }
    let (status, cluster) = call(addrs[0], "GET", "/cluster", &token, &Value::Null).unwrap();
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["members"].as_array().unwrap().len(), 3, "{cluster}");
    let (_, listed) = call(addrs[1], "GET", "/agents", &token, &Value::Null).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        COUNTERS + reactors.len(),
        "{listed}"
    );
    let (status, _) = call(addrs[2], "GET", "/cluster", "not-a-token", &Value::Null).unwrap();
    assert_eq!(status, 401);

    // Load: four clients through random nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<BTreeMap<String, Sent>>> = Arc::default();
    let doubts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let (stop, sent, doubts, token, counters, addrs) = (
                Arc::clone(&stop),
                Arc::clone(&sent),
                Arc::clone(&doubts),
                token.clone(),
                counters.clone(),
                addrs.clone(),
            );
            std::thread::spawn(move || {
                let mut rng = Rng::splitmix(seed ^ (c + 1));
                while !stop.load(Ordering::Relaxed) {
                    let id = &counters[rng.below(counters.len() as u64) as usize];
                    let addr = addrs[rng.below(addrs.len() as u64) as usize];
                    let result = call(
                        addr,
                        "POST",
                        &format!("/agents/{id}/messages"),
                        &token,
                        &json!({"add": 1}),
                    );
                    let unreachable = result.is_err();
                    let mut sent = sent.lock().unwrap();
                    match sent.entry(id.clone()).or_default().record(result) {
                        Outcome::Unexpected(status, body) => {
                            panic!("{id} via {addr}: {status} {body}")
                        }
                        Outcome::Doubt(why) => *doubts.lock().unwrap().entry(why).or_insert(0) += 1,
                        Outcome::Acked | Outcome::Refused => {}
                    }
                    drop(sent);
                    if unreachable {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();

    // Events for the reactors: each id once, through random nodes, a few per second.
    let events_acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let eventer = {
        let (stop, acked, token, reactors, addrs) = (
            Arc::clone(&stop),
            Arc::clone(&events_acked),
            token.clone(),
            reactors.clone(),
            addrs.clone(),
        );
        std::thread::spawn(move || {
            let mut rng = Rng::splitmix(seed ^ 0xe7e7);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let event = format!("e{n}");
                let reactor = &reactors[rng.below(reactors.len() as u64) as usize];
                let addr = addrs[rng.below(addrs.len() as u64) as usize];
                let sent = call(
                    addr,
                    "POST",
                    &format!("/agents/{reactor}/messages"),
                    &token,
                    &json!({"id": event, "to": reactor}),
                );
                if let Ok((202, _)) = sent {
                    acked.lock().unwrap().push(event);
                }
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };

    let mut rng = Rng::splitmix(seed);
    let mut failovers = Vec::new();
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        let victim = rng.below(nodes.len() as u64) as usize;
        nodes[victim].kill_9();
        let survivors: Vec<SocketAddr> = addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, a)| *a)
            .collect();
        match wait_all_served(&survivors, Duration::from_secs(10)) {
            Ok(took) => failovers.push(took),
            Err(error) => {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "round {round}: after killing {} its shards did not move within 10 s: {error}\n{}",
                    nodes[victim].id,
                    report(&nodes)
                );
            }
        }
        nodes[victim].restart();
        if let Err(error) = wait_all_served(&addrs, Duration::from_secs(20)) {
            stop.store(true, Ordering::Relaxed);
            panic!(
                "round {round}: the cluster did not settle after a restart: {error}\n{}",
                report(&nodes)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    eventer.join().unwrap();
    wait_all_served(&addrs, Duration::from_secs(20)).unwrap();

    failovers.sort();
    if !failovers.is_empty() {
        eprintln!(
            "failover over {} kills (lease 3 s): min {:?}, median {:?}, max {:?}",
            failovers.len(),
            failovers[0],
            failovers[failovers.len() / 2],
            failovers[failovers.len() - 1]
        );
    }
    let sent = sent.lock().unwrap().clone();
    let total: u64 = sent.values().map(|s| s.acked).sum();
    eprintln!(
        "{total} messages acknowledged, {} refused, {} in doubt",
        sent.values().map(|s| s.refused).sum::<u64>(),
        sent.values().map(|s| s.doubt).sum::<u64>()
    );
    eprintln!("in doubt: {:#?}", doubts.lock().unwrap());
    assert!(
        total > 100,
        "too few messages acknowledged to mean anything"
    );
    check_counters(&addrs, &token, &counters, &sent, String::new);

    // Effects: each event's shell command ran at most once, and every acknowledged one
    // ran unless a kill left it in doubt (then it is never re-run).
    let acked = events_acked.lock().unwrap().clone();
    let settled = Instant::now() + Duration::from_secs(20);
    let read_ledger =
        || history::parse_ledger(&std::fs::read_to_string(&ledger).unwrap_or_default()).unwrap();
    let ran = loop {
        let ran: Vec<String> = read_ledger().into_iter().map(|run| run.event).collect();
        let done = acked.iter().filter(|e| ran.contains(e)).count();
        if done + kills * 2 >= acked.len() || Instant::now() > settled {
            break ran;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut seen = std::collections::BTreeSet::new();
    for event in &ran {
        assert!(seen.insert(event), "the effect of event {event} ran twice");
    }
    let missing: Vec<&String> = acked.iter().filter(|e| !seen.contains(e)).collect();
    eprintln!(
        "{} events acknowledged, {} effects ran, {} acknowledged without an effect (in doubt)",
        acked.len(),
        ran.len(),
        missing.len()
    );
    assert!(acked.len() > 50, "too few events to mean anything");
    assert!(
        missing.len() <= kills * 2,
        "{} acknowledged events never took effect: {missing:?}",
        missing.len()
    );

    // Stop gracefully, then check every shard journal with the store itself, and the
    // history of holders it tells against the work journaled and the ledger.
    for node in &mut nodes {
        node.sigterm();
    }
    verify_shards(shard_urls.clone());
    let checked = history::check_cluster_history(&nodes, shard_urls, &read_ledger());
    assert_eq!(checked.ledger, ran.len());
}

/// The history checker of the failover test passes a good history and rejects each kind
/// of broken one (it needs no database).
#[test]
fn the_history_checker_rejects_work_by_a_node_that_did_not_hold_the_shard() {
    use history::{Holding, Run, ShardHistory, Work, check_history, marked_runs};
    let run = |event: &str, pid: u32, at_micros: u64| Run {
        agent: "r0".into(),
        event: event.into(),
        pid,
        at_micros,
    };
    let holding = |position: u64, node: &str, epoch: i64, pid: u32, started_micros: u64| Holding {
        position,
        node: node.into(),
        epoch,
        pid,
        started_micros,
    };
    // n1 (process 100) holds shard 0 from position 1, n2 (process 200) from position 50.
    let good = ShardHistory {
        shard: 0,
        holdings: vec![
            holding(1, "n1", 1, 100, 1_000),
            holding(50, "n2", 2, 200, 5_000),
        ],
        first_runtime: Some(2),
        agents: ["r0".to_owned()].into(),
        work: vec![
            Work {
                position: 10,
                run: run("e1", 100, 2_000),
            },
            Work {
                position: 60,
                run: run("e2", 200, 6_000),
            },
        ],
        unreadable: Vec::new(),
    };
    let ledger = vec![run("e1", 100, 2_000), run("e2", 200, 6_000)];
    let processes: BTreeMap<u32, String> = [(100, "n1".to_owned()), (200, "n2".to_owned())].into();
    let checked = check_history(std::slice::from_ref(&good), &ledger, &processes).unwrap();
    assert_eq!(
        (
            checked.holdings,
            checked.work,
            checked.ledger,
            checked.moves
        ),
        (2, 2, 2, 1)
    );
    let rejected = |shard: &ShardHistory, ledger: &[Run], why: &str| {
        let bad = check_history(std::slice::from_ref(shard), ledger, &processes)
            .expect_err("a broken history passed");
        assert!(
            bad.iter().any(|b| b.contains(why)),
            "expected {why:?} in {bad:#?}"
        );
    };

    // The old holder's work journaled after the new holding (a fence that let it through).
    let mut stale = good.clone();
    stale.work[1].run.pid = 100;
    let stale_ledger = [ledger[0].clone(), stale.work[1].run.clone()];
    rejected(&stale, &stale_ledger, "journaled under");
    // An effect the journal never saw (in doubt), run by n1 while n2 held the shard.
    let mut late = ledger.clone();
    late.push(run("e3", 100, 7_000));
    rejected(&good, &late, "while shard 0 was held by");
    // Two processes within one holding, in real time.
    let mut both = ledger.clone();
    both.push(run("e3", 100, 5_500));
    both.push(run("e4", 200, 5_600));
    rejected(&good, &both, "on two processes within one holding");
    // Epochs that do not increase.
    let mut epochs = good.clone();
    epochs.holdings[1].epoch = 1;
    rejected(&epochs, &ledger, "epochs out of order");
    // A runtime record before the first holding (recovery before the holding).
    let mut early = good.clone();
    early.first_runtime = Some(1);
    early.holdings[0].position = 3;
    rejected(&early, &ledger, "precedes the first holding");
    // A holding by a process the test never started as that node.
    let mut stranger = good.clone();
    stranger.holdings[1].node = "n3".into();
    rejected(&stranger, &ledger, "names a process the test did not start");
    // A journaled run the ledger does not have.
    rejected(&good, &ledger[..1], "no such line in the ledger");

    // Marks are read out of a journaled tool output (JSON text, newline escaped).
    let output = r#"{"stdout":"holder-check r0 e1 100 2000\n","stderr":"","exit_code":0}"#;
    assert_eq!(marked_runs(output), [run("e1", 100, 2_000)]);
    assert!(marked_runs("holder-check r0 e1 x 2000").is_empty());
}

#[test]
fn any_node_answers_for_the_whole_cluster() {
    let Some(url) = postgres_url() else {
        return;
    };
    let cluster = TestCluster::start(&url, "clr", |jail| {
        format!(
            "durability = \"fsync\"\n[tools]\nfs_root = {:?}\napproval = [\"fs.write\"]\n",
            jail.to_str().unwrap()
        )
    });
    let (a, b, c) = (cluster.addrs[0], cluster.addrs[1], cluster.addrs[2]);
    let token = cluster.token.as_str();

    // Agents spawned through one node are listed, sent to and queried through any other.
    for i in 0..12 {
        let spawn = json!({"id": format!("k{i}"), "kind": "counter"});
        let (status, body) = call(a, "POST", "/agents", token, &spawn).unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = call(
        b,
        "POST",
        "/agents",
        token,
        &json!({"id": "k3", "kind": "counter"}),
    )
    .unwrap();
    assert_eq!(status, 409, "the same id through another node: {body}");
    let (_, listed) = call(c, "GET", "/agents", token, &Value::Null).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 12, "{listed}");
    for i in 0..12 {
        let (status, _) = call(
            b,
            "POST",
            &format!("/agents/k{i}/messages"),
            token,
            &json!({"add": i}),
        )
        .unwrap();
        assert_eq!(status, 202);
    }
    for i in 0..12 {
        let (status, value) = retry_503(|| {
            call(
                c,
                "POST",
                &format!("/agents/k{i}/query"),
                token,
                &json!("get"),
            )
            .unwrap()
        });
        assert_eq!((status, value["value"].as_i64()), (200, Some(i)), "k{i}");
    }
    let (status, _) = call(a, "GET", "/agents/nobody", token, &Value::Null).unwrap();
    assert_eq!(status, 404);

    // An approval made on one node is listed, read and decided on the others.
    let (status, pending) = call(
        a,
        "POST",
        "/tools/fs.write/invoke",
        token,
        &json!({"path": "note.txt", "content": "once"}),
    )
    .unwrap();
    assert_eq!(status, 202, "{pending}");
    let id = pending["approval"].as_str().unwrap().to_owned();
    let (status, list) = call(b, "GET", "/approvals", token, &Value::Null).unwrap();
    assert_eq!(status, 200, "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str()),
        "{list}"
    );
    let (status, one) = call(c, "GET", &format!("/approvals/{id}"), token, &Value::Null).unwrap();
    assert_eq!(
        (status, one["status"].as_str()),
        (200, Some("pending")),
        "{one}"
    );
    let (status, decided) = call(
        b,
        "POST",
        &format!("/approvals/{id}"),
        token,
        &json!({"decision": "approve", "reason": "fine"}),
    )
    .unwrap();
    assert_eq!(
        (status, decided["status"].as_str()),
        (200, Some("approved")),
        "{decided}"
    );
    let (status, _) = call(c, "GET", "/approvals/apr-nothing", token, &Value::Null).unwrap();
    assert_eq!(status, 404);

    // A token revoked through one node is refused by every node soon after.
    let (status, minted) = call(
        a,
        "POST",
        "/tokens",
        token,
        &json!({"caveats": ["tool = api.agents.*"]}),
    )
    .unwrap();
    assert_eq!(status, 201, "{minted}");
    let narrow = minted["token"].as_str().unwrap().to_owned();
    for addr in [a, b, c] {
        let (status, _) = call(addr, "POST", "/agents/k1/query", &narrow, &json!("get")).unwrap();
        assert_eq!(status, 200);
        let (status, _) = call(addr, "GET", "/cluster", &narrow, &Value::Null).unwrap();
        assert_eq!(status, 403);
    }
    let (status, body) = call(
        b,
        "POST",
        "/tokens/revoke",
        token,
        &json!({"identifier": narrow}),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Each node's own front (`GET /cluster` is answered there, never forwarded) must
    // refuse it: 401, where before it said 403 (the token may not read the status).
    for addr in [a, b, c] {
        let refused = || {
            call(addr, "GET", "/cluster", &narrow, &Value::Null)
                .unwrap()
                .0
                == 401
        };
        assert!(
            eventually(Duration::from_secs(5), refused),
            "{addr} still takes a token revoked elsewhere"
        );
    }

    // A shard's own routes (events, status) through any node, with `?shard=N`.
    for shard in [0, 5, 7] {
        let (status, events) = call(
            b,
            "GET",
            &format!("/events?shard={shard}&limit=5"),
            token,
            &Value::Null,
        )
        .unwrap();
        assert_eq!(status, 200, "{events}");
        assert!(
            events.as_array().is_some_and(|e| !e.is_empty()),
            "shard {shard}: {events}"
        );
    }
    let (status, _) = call(b, "GET", "/status?shard=8", token, &Value::Null).unwrap();
    assert_eq!(status, 400);

    // The cluster's own view.
    let (status, view) = call(c, "GET", "/cluster", token, &Value::Null).unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["mode"], "cluster");
    let shards = view["shards"].as_array().unwrap();
    assert_eq!(shards.len(), SHARDS as usize);
    assert!(
        shards
            .iter()
            .all(|s| s["holder"].is_string() && s["epoch"].as_i64() >= Some(1)),
        "{view}"
    );
    // Each shard journal names its holders: the last holding is its current holder's.
    // Asked of another node than the holder: events are read there from a follower of
    // the shard's journal, and a forwarded `/status?shard=N` is the holder's shard N (not
    // its lowest shard).
    for s in shards {
        let shard = s["shard"].as_u64().unwrap();
        let holder = cluster
            .nodes
            .iter()
            .find(|n| s["holder"] == n.id)
            .unwrap_or_else(|| panic!("{s}"));
        let other = cluster.nodes.iter().find(|n| s["holder"] != n.id).unwrap();
        let head = |addr| {
            let path = format!("/status?shard={shard}");
            let (status, body) = call(addr, "GET", &path, token, &Value::Null).unwrap();
            assert_eq!(status, 200, "{body}");
            body["journal"]["head_position"].clone()
        };
        assert_eq!(
            head(other.addr),
            head(holder.addr),
            "shard {shard}'s status"
        );
        let (status, events) = call(
            other.addr,
            "GET",
            &format!("/events?shard={shard}&stream=toka%2Fcluster&limit=1000"),
            token,
            &Value::Null,
        )
        .unwrap();
        assert_eq!(status, 200, "{events}");
        let last = events.as_array().and_then(|e| e.last()).cloned();
        let last = last.unwrap_or_else(|| panic!("shard {shard}: no holding in {events}"));
        assert_eq!(last["kind"], history::HOLDING_KIND, "{last}");
        let holding: Value =
            serde_json::from_str(last["payload"]["utf8"].as_str().unwrap()).unwrap();
        assert_eq!(
            (&holding["node"], &holding["epoch"]),
            (&s["holder"], &s["epoch"]),
            "shard {shard}: {holding} in the journal, {s} in the view; {events}\n{}",
            report(&cluster.nodes)
        );
    }
    // A forwarded request is checked at the holder too: refused everywhere.
    for addr in [a, b, c] {
        let (status, _) = call(addr, "POST", "/agents/k1/query", &narrow, &json!("get")).unwrap();
        assert_eq!(status, 401);
    }
}

/// The shard an agent id hashes to (pinned by the node's own unit test of `home_shard`).
fn home_shard(id: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(SHARDS)) as u32
}

/// The index in `NODES` of the node holding `shard`, as `GET /cluster` says.
fn holder_of(addr: SocketAddr, token: &str, shard: u32) -> Option<usize> {
    let (status, view) = call(addr, "GET", "/cluster", token, &Value::Null).ok()?;
    assert_eq!(status, 200, "{view}");
    let holder = view["shards"]
        .as_array()?
        .iter()
        .find(|s| s["shard"] == shard)?["holder"]
        .as_str()?
        .to_owned();
    NODES.iter().position(|n| *n == holder)
}

/// The index in `NODES` of the node holding `shard`, once `GET /cluster` on `addr` names
/// one (its view is refreshed every tick: a shard just taken may not show yet).
fn holder_now(addr: SocketAddr, token: &str, shard: u32) -> usize {
    let mut holder = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            holder = holder_of(addr, token, shard);
            holder.is_some()
        }),
        "no holder of shard {shard} in {addr}'s view"
    );
    holder.unwrap()
}

#[test]
fn a_parent_supervises_a_child_that_runs_on_another_node() {
    let Some(url) = postgres_url() else {
        return;
    };
    let cluster = TestCluster::start(&url, "cls", |_| "durability = \"fsync\"\n".into());
    let (token, addrs) = (cluster.token.clone(), cluster.addrs.clone());
    let mut nodes = cluster.nodes;
    let token = token.as_str();
    let boss_shard = home_shard("boss");
    let boss_node = holder_now(addrs[0], token, boss_shard);
    // A child id whose own shard another node holds.
    let child = (0..)
        .map(|i| format!("w{i}"))
        .find(|id| holder_of(addrs[0], token, home_shard(id)).is_some_and(|n| n != boss_node))
        .unwrap();
    let child_shard = home_shard(&child);
    let child_node = holder_now(addrs[0], token, child_shard);
    let spawn = json!({"id": "boss", "kind": "supervisor"});
    assert_eq!(
        call(addrs[0], "POST", "/agents", token, &spawn).unwrap().0,
        201
    );
    let spawn = json!({"id": child, "kind": "counter", "parent": "boss", "placement": "anywhere"});
    let (status, body) = call(addrs[1], "POST", "/agents", token, &spawn).unwrap();
    assert_eq!(status, 201, "{body}");

    // Listed once, by the shard that runs it, with its supervisor.
    let listed = |addr: SocketAddr| -> Vec<Value> {
        let (status, list) =
            retry_503(|| call(addr, "GET", "/agents", token, &Value::Null).unwrap());
        assert_eq!(status, 200, "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["id"] == child.as_str())
            .cloned()
            .collect()
    };
    let entries = listed(addrs[2]);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["supervisor"], "boss", "{entries:?}");
    assert_eq!(entries[0]["status"], "running", "{entries:?}");
    // Its own shard's journal has it, adopted; the parent's records it as its child.
    let child_path = format!("/agents/{child}");
    let (status, detail) = call(addrs[boss_node], "GET", &child_path, token, &Value::Null).unwrap();
    assert_eq!(
        (status, &detail["supervisor"]),
        (200, &json!("boss")),
        "{detail}"
    );

    // Messages reach it through any node.
    let send = format!("/agents/{child}/messages");
    let query = format!("/agents/{child}/query");
    let value = |addr: SocketAddr| {
        let (status, answer) =
            retry_503(|| call(addr, "POST", &query, token, &json!("get")).unwrap());
        assert_eq!(status, 200, "{answer}");
        answer["value"].as_i64().unwrap()
    };
    assert_eq!(
        call(addrs[boss_node], "POST", &send, token, &json!({"add": 5}))
            .unwrap()
            .0,
        202
    );
    assert_eq!(value(addrs[0]), 5);

    // The child's node dies: its shard moves, the child comes back elsewhere, still
    // supervised by boss; then boss's node dies, and boss finds its child running.
    nodes[child_node].kill_9();
    let survivor = (0..3).find(|&n| n != child_node).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || holder_of(
            addrs[survivor],
            token,
            child_shard
        )
        .is_some_and(|n| n != child_node)),
        "the child's shard did not move\n{}",
        report(&nodes)
    );
    assert_eq!(value(addrs[survivor]), 5);
    nodes[child_node].restart();
    assert!(wait_all_served(&addrs, Duration::from_secs(30)).is_ok());
    // (Shards may be being handed over to the returning node: wait for a holder.)
    let boss_now = holder_now(addrs[0], token, boss_shard);
    nodes[boss_now].kill_9();
    let survivor = (0..3).find(|&n| n != boss_now).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || holder_of(
            addrs[survivor],
            token,
            boss_shard
        )
        .is_some_and(|n| n != boss_now)),
        "boss's shard did not move\n{}",
        report(&nodes)
    );
    // (The child's shard may have been on that node too, and be moving as well.)
    assert!(
        eventually(Duration::from_secs(20), || {
            let entries = listed(addrs[survivor]);
            entries.len() == 1 && entries[0]["supervisor"] == "boss"
        }),
        "{:?}\n{}",
        listed(addrs[survivor]),
        report(&nodes)
    );
    assert_eq!(value(addrs[survivor]), 5);
    nodes[boss_now].restart();

    // Stopping boss stops and removes its child on whichever node runs it.
    let (status, body) = retry_503(|| {
        call(
            addrs[survivor],
            "DELETE",
            "/agents/boss",
            token,
            &Value::Null,
        )
        .unwrap()
    });
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || listed(addrs[survivor])
            .is_empty()),
        "the child outlived its supervisor\n{}",
        report(&nodes)
    );
    let (status, _) =
        retry_503(|| call(addrs[survivor], "POST", &query, token, &json!("get")).unwrap());
    assert_eq!(status, 404);
}

#[test]
fn a_model_turn_cut_by_kill_9_finishes_on_another_node_asking_each_step_once() {
    let Some(url) = postgres_url() else {
        return;
    };
    const KEY: &str = "sk-cluster-test-9d2e4f6a8b0c1e3f";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let tmp = tempfile::tempdir().unwrap();
    let files = common::notes_dir(tmp.path());
    let config = format!(
        "durability = \"fsync\"\n[tools]\nfs_root = {:?}\n\
         [models.local]\nprovider = \"openai\"\nbase_url = {:?}\nmodel = \"scripted\"\n\
         api_key_secret = \"openai-key\"\ntimeout_secs = 30\nmax_retries = 0\n",
        files.to_str().unwrap(),
        server.base_url(),
    );
    let cluster = TestCluster::start_prepared(
        &url,
        "clm",
        |_| config.clone(),
        |dir| common::set_secret(dir, "openai-key", KEY),
    );
    let (token, addrs) = (cluster.token.clone(), cluster.addrs.clone());
    let mut nodes = cluster.nodes;
    let token = token.as_str();
    let spawn = json!({"id": "helper", "kind": "assistant", "args": {
        "model": "local", "system": "You answer questions about files.",
        "tools": ["fs.read"], "max_steps": 4, "token": token}});
    let (status, body) = call(addrs[0], "POST", "/agents", token, &spawn).unwrap();
    assert_eq!(status, 201, "{body}");
    let shard = home_shard("helper");
    let holder = holder_now(addrs[0], token, shard);
    // Asked through another node than the holder: the ask is forwarded.
    let via = addrs[(holder + 1) % 3];

    // Step 1 answers (a tool call); step 2 hangs: the holder is killed while it waits.
    server.push(common::read_notes());
    server.push(Reply::Hang);
    let asker = {
        let token = token.to_owned();
        std::thread::spawn(move || {
            let question = json!({"user": "When is the meeting?"});
            // The answer may be cut with the forwarded connection; not checked here.
            let _ = call(via, "POST", "/agents/helper/ask", &token, &question);
        })
    };
    assert!(
        eventually(Duration::from_secs(20), || server.requests().len() >= 2),
        "the second step never reached the model\n{}",
        report(&nodes)
    );
    nodes[holder].kill_9();
    server.push(Reply::Json(chat_text("On Thursday, in room B.", 90, 8)));
    let survivor = addrs[(holder + 2) % 3];
    let mut entries = Vec::new();
    let finished = eventually(Duration::from_secs(30), || {
        let (status, body) = call(
            survivor,
            "POST",
            "/agents/helper/query",
            token,
            &json!("transcript"),
        )
        .unwrap_or((0, Value::Null));
        entries = body.as_array().cloned().unwrap_or_default();
        status == 200
            && entries.last().is_some_and(|e| {
                e["role"] == "assistant" && e["content"] == "On Thursday, in room B."
            })
    });
    assert!(
        finished,
        "the turn did not finish on another node: {entries:#?}\n{}",
        report(&nodes)
    );
    let _ = asker.join();
    let sent = server.requests();
    common::assert_cut_turn_finished_once(&entries, &sent);
    // The key reached the model and nothing else: no node's log has it.
    assert_eq!(
        sent[2].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    nodes[holder].restart();
    for node in &nodes {
        assert!(
            !node.log().contains(KEY),
            "a node logged the model's API key"
        );
    }
}
