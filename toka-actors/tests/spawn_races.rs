//! Top-level spawns racing the root supervisor: a spawn starts its agent from the
//! spawner's task (see the `root` module), so storms of spawns run concurrently with
//! root-wide restarts, stops, failures right after the spawn, and shutdown. Checked by
//! what the supervisor restarted ([`AgentInfo::restarts`]), what started (`start:NAME` in
//! the log: one per actor started) and what runs afterwards.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use toka_actors::{AgentInfo, Error, Intensity, Runtime, SpawnSpec, Strategy, SupervisorSpec};

/// Spawner tasks, and agents each spawns.
const SPAWNERS: usize = 4;
const PER_SPAWNER: usize = 40;

/// A root that restarts every top-level agent when one fails, and tolerates many failures.
fn one_for_all_root() -> SupervisorSpec {
    SupervisorSpec::new(Strategy::OneForAll).intensity(Intensity {
        max_restarts: 10_000,
        within: Duration::from_secs(5),
    })
}

fn transient(id: &str) -> SpawnSpec {
    SpawnSpec::new(id).unwrap().transient()
}

/// How often each name was started (`start:NAME` entries).
fn starts(entries: &[String]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for name in entries.iter().filter_map(|e| e.strip_prefix("start:")) {
        *out.entry(name.to_owned()).or_default() += 1;
    }
    out
}

/// Asks `id` to fail; `true` if its handler did (so its actor failed).
async fn fail(rt: &Runtime, id: &str) -> bool {
    let Ok(agent) = rt.agent::<Counter>(&common::id(id)) else {
        return false;
    };
    matches!(agent.ask(Cmd::Fail, T).await, Err(Error::Handler { .. }))
}

/// Waits until every agent in the tree runs and answers; returns the tree.
async fn settled(rt: &Runtime) -> Vec<AgentInfo> {
    eventually(|| rt.tree().iter().all(|a| a.running)).await;
    let tree = rt.tree();
    for agent in &tree {
        let counter = rt.agent::<Counter>(&agent.id).unwrap();
        counter
            .ask(Cmd::Get, T)
            .await
            .unwrap_or_else(|e| panic!("{} does not answer: {e}", agent.id));
    }
    tree
}

/// Spawns `PER_SPAWNER` agents `s{task}-{i}`: some are stopped right after the spawn
/// and spawned again (as `s{task}-{i}#2`, by name), some are told to fail right after the
/// spawn. Returns the ids that must be in the tree at the end and how many failures it
/// caused.
async fn storm(rt: Runtime, task: usize) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut failures = 0;
    for i in 0..PER_SPAWNER {
        let id = format!("s{task}-{i}");
        rt.spawn::<Counter>(transient(&id), id.clone())
            .await
            .unwrap();
        if i % 5 == 0 {
            rt.stop(&common::id(&id)).await.unwrap();
            rt.spawn::<Counter>(transient(&id), format!("{id}#2"))
                .await
                .unwrap();
        }
        if i % 7 == 3 && fail(&rt, &id).await {
            failures += 1;
        }
        ids.push(id);
        tokio::task::yield_now().await;
    }
    (ids, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_storms_during_root_wide_restarts_leave_every_agent_supervised() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log)
        .root_supervision(one_for_all_root())
        .start()
        .await
        .unwrap();
    rt.spawn::<Counter>(transient("crasher"), "crasher".into())
        .await
        .unwrap();
    // The crasher fails again and again: every failure restarts every top-level agent,
    // while the spawners add agents, stop and re-spawn some, and fail others.
    let done = Arc::new(AtomicBool::new(false));
    let crashes = Arc::new(AtomicU64::new(0));
    let crasher = tokio::spawn({
        let (rt, done, crashes) = (rt.clone(), Arc::clone(&done), Arc::clone(&crashes));
        async move {
            while !done.load(Ordering::Acquire) {
                if fail(&rt, "crasher").await {
                    crashes.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let storms: Vec<_> = (0..SPAWNERS)
        .map(|task| tokio::spawn(storm(rt.clone(), task)))
        .collect();
    let mut expected = BTreeSet::from(["crasher".to_owned()]);
    let mut failures = 0;
    for storm in storms {
        let (ids, failed) = storm.await.unwrap();
        expected.extend(ids);
        failures += failed;
    }
    done.store(true, Ordering::Release);
    crasher.await.unwrap();
    let failures = failures + crashes.load(Ordering::Relaxed);
    assert!(failures > 0, "nothing failed: the test tested nothing");

    // Every agent spawned (and not stopped) is in the tree, runs and answers.
    let tree = settled(&rt).await;
    let ids: BTreeSet<String> = tree.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids, expected);
    assert!(rt.failure().is_none());

    // One actor started per spawn and per restart, never more: an agent its spawner
    // started and a restart started too would show a second start.
    let restarts: HashMap<String, u64> = tree
        .iter()
        .map(|a| (a.id.to_string(), a.restarts))
        .collect();
    let started = starts(&log.take());
    for (name, count) in &started {
        if started.contains_key(&format!("{name}#2")) {
            continue; // a stopped incarnation (its restarts were forgotten)
        }
        let restarts = restarts[name.trim_end_matches("#2")];
        assert!(
            (*count as u64) <= restarts + 1,
            "{name} started {count} times, restarted {restarts} times"
        );
    }
    // The crasher runs from before the storm: each of its starts but the first is a
    // restart, and no restart happens without a failure.
    let crasher = tree.iter().find(|a| a.id.as_str() == "crasher").unwrap();
    assert_eq!(started["crasher"] as u64, crasher.restarts + 1);
    assert!(
        crasher.restarts >= 1 && crasher.restarts <= failures,
        "crasher restarted {} times for {failures} failures",
        crasher.restarts
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_failing_right_after_its_spawn_is_restarted() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log)
        .root_supervision(
            SupervisorSpec::new(Strategy::OneForOne).intensity(Intensity {
                max_restarts: 10_000,
                within: Duration::from_secs(5),
            }),
        )
        .start()
        .await
        .unwrap();
    for i in 0..200 {
        let id = format!("f{i}");
        rt.spawn::<Counter>(transient(&id), id.clone())
            .await
            .unwrap();
        // Sent at once: the failure may reach the root before anything else of the agent.
        assert!(fail(&rt, &id).await, "{id} did not fail");
    }
    let tree = settled(&rt).await;
    assert_eq!(tree.len(), 200);
    let started = starts(&log.take());
    for agent in &tree {
        assert_eq!(agent.restarts, 1, "{}", agent.id);
        assert_eq!(started[agent.id.as_str()], 2, "{}", agent.id);
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_racing_shutdown_are_refused_or_stopped() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log)
        .root_supervision(one_for_all_root())
        .start()
        .await
        .unwrap();
    let spawned = Arc::new(AtomicU64::new(0));
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|task| {
            let (rt, spawned) = (rt.clone(), Arc::clone(&spawned));
            tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("z{task}-{i}");
                    match rt.spawn::<Counter>(transient(&id), id.clone()).await {
                        Ok(_) => {
                            spawned.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::ShuttingDown | Error::Spawn { .. }) => return,
                        Err(other) => panic!("spawn {id}: {other}"),
                    }
                    if i % 11 == 5 {
                        let _ = fail(&rt, &id).await;
                    }
                }
            })
        })
        .collect();
    eventually(|| spawned.load(Ordering::Relaxed) >= 100).await;
    let observer = rt.clone();
    tokio::time::timeout(Duration::from_secs(30), rt.shutdown())
        .await
        .expect("shutdown hung")
        .unwrap();
    for spawner in spawners {
        tokio::time::timeout(T, spawner)
            .await
            .expect("a spawner hung")
            .unwrap();
    }
    // Nothing runs after shutdown, and nothing starts any more.
    let running: Vec<_> = observer
        .tree()
        .into_iter()
        .filter(|a| a.running)
        .map(|a| a.id)
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");
    assert!(matches!(
        observer
            .spawn::<Counter>(transient("late"), "late".into())
            .await,
        Err(Error::ShuttingDown)
    ));
}
