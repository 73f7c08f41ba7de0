//! Top-level spawns racing the root supervisor: a spawn starts its agent from the
//! spawner's task (see the `root` module), so storms of spawns run concurrently with
//! root-wide restarts, stops, failures right after the spawn, and shutdown. Checked by
//! what the supervisor restarted ([`AgentInfo::restarts`]), how many actors were started
//! for each agent and how many are alive (a [`Probe`]'s state counts itself), and what
//! runs and answers afterwards.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{T, eventually, memory_journal};
use serde::{Deserialize, Serialize};
use toka_actors::{
    Agent, AgentError, AgentInfo, Context, Error, Intensity, Runtime, SpawnSpec, Strategy,
    SupervisorSpec,
};

/// Per agent id: actors started, and actors alive (their state not dropped yet).
#[derive(Clone, Default)]
struct Census(Arc<Mutex<HashMap<String, (u64, i64)>>>);

impl Census {
    fn started(&self, id: &str) -> u64 {
        self.0.lock().unwrap().get(id).map_or(0, |c| c.0)
    }
    fn alive(&self) -> HashMap<String, i64> {
        let census = self.0.lock().unwrap();
        census
            .iter()
            .filter(|(_, c)| c.1 != 0)
            .map(|(id, c)| (id.clone(), c.1))
            .collect()
    }
}

/// A probe agent's state: counts itself alive in the census until dropped.
struct Alive {
    id: String,
    census: Census,
}

impl Drop for Alive {
    fn drop(&mut self) {
        if let Some(c) = self.census.0.lock().unwrap().get_mut(&self.id) {
            c.1 -= 1;
        }
    }
}

/// An agent that answers pings and fails on request; its arguments are its id.
struct Probe {
    census: Census,
}

#[derive(Serialize, Deserialize)]
enum Cmd {
    Ping,
    Fail,
}

impl Agent for Probe {
    const KIND: &'static str = "probe";
    type Args = String;
    type Msg = Cmd;
    type Reply = ();
    type State = Alive;

    fn init(&self, id: &String) -> Result<Alive, AgentError> {
        let mut census = self.census.0.lock().unwrap();
        let c = census.entry(id.clone()).or_default();
        c.0 += 1;
        c.1 += 1;
        Ok(Alive {
            id: id.clone(),
            census: self.census.clone(),
        })
    }

    async fn handle(
        &self,
        _ctx: &mut Context<'_, Self>,
        _: &mut Alive,
        msg: Cmd,
    ) -> Result<(), AgentError> {
        match msg {
            Cmd::Ping => Ok(()),
            Cmd::Fail => Err(AgentError::msg("told to fail")),
        }
    }
}

async fn runtime(census: &Census, root: SupervisorSpec) -> Runtime {
    Runtime::builder(memory_journal())
        .register(Probe {
            census: census.clone(),
        })
        .root_supervision(root)
        .start()
        .await
        .unwrap()
}

async fn spawn(rt: &Runtime, id: &str) -> Result<(), Error> {
    rt.spawn::<Probe>(transient(id), id.to_owned())
        .await
        .map(drop)
}

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

/// Asks `id` to fail; `true` if its handler did (so its actor failed).
async fn fail(rt: &Runtime, id: &str) -> bool {
    let Ok(agent) = rt.agent::<Probe>(&common::id(id)) else {
        return false;
    };
    matches!(agent.ask(Cmd::Fail, T).await, Err(Error::Handler { .. }))
}

/// Waits until every agent in the tree runs and exactly one actor is alive for each
/// (none for agents no longer in the tree), and checks that each answers; returns the
/// tree.
async fn settled(rt: &Runtime, census: &Census) -> Vec<AgentInfo> {
    let one_each = || {
        let tree = rt.tree();
        let expected: HashMap<String, i64> = tree.iter().map(|a| (a.id.to_string(), 1)).collect();
        tree.iter().all(|a| a.running) && census.alive() == expected
    };
    let deadline = tokio::time::Instant::now() + T;
    while !one_each() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not one live actor per agent: tree {:?}, alive {:?}",
            rt.tree()
                .iter()
                .filter(|a| !a.running)
                .map(|a| a.id.to_string())
                .collect::<Vec<_>>(),
            census
                .alive()
                .into_iter()
                .filter(|(_, n)| *n != 1)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tree = rt.tree();
    for agent in &tree {
        let probe = rt.agent::<Probe>(&agent.id).unwrap();
        probe
            .ask(Cmd::Ping, T)
            .await
            .unwrap_or_else(|e| panic!("{} does not answer: {e}", agent.id));
    }
    tree
}

/// Spawns `PER_SPAWNER` agents `s{task}-{i}`: some are stopped right after the spawn
/// and spawned again, some are told to fail right after the spawn. Returns the ids that must be in the tree at the end and how many failures it
/// caused.
async fn storm(rt: Runtime, task: usize) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut failures = 0;
    for i in 0..PER_SPAWNER {
        let id = format!("s{task}-{i}");
        spawn(&rt, &id).await.unwrap();
        if i % 5 == 0 {
            rt.stop(&common::id(&id)).await.unwrap();
            spawn(&rt, &id).await.unwrap();
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
    let census = Census::default();
    let rt = runtime(&census, one_for_all_root()).await;
    spawn(&rt, "crasher").await.unwrap();
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

    // Every agent spawned (and not stopped) is in the tree, runs one actor (an agent its
    // spawner started and a restart started too would run two; one whose failure was
    // lost, none) and answers; no actor of a stopped agent is left.
    let tree = settled(&rt, &census).await;
    let ids: BTreeSet<String> = tree.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids, expected);
    assert!(rt.failure().is_none());
    // The crasher runs from before the storm: each of its starts but the first is a
    // restart, and no restart happens without a failure.
    let crasher = tree.iter().find(|a| a.id.as_str() == "crasher").unwrap();
    assert_eq!(census.started("crasher"), crasher.restarts + 1);
    assert!(
        crasher.restarts >= 1 && crasher.restarts <= failures,
        "crasher restarted {} times for {failures} failures",
        crasher.restarts
    );
    rt.shutdown().await.unwrap();
    // A state is dropped just after its actor ended.
    eventually(|| census.alive().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_failing_right_after_its_spawn_is_restarted() {
    let census = Census::default();
    let root = SupervisorSpec::new(Strategy::OneForOne).intensity(Intensity {
        max_restarts: 10_000,
        within: Duration::from_secs(5),
    });
    let rt = runtime(&census, root).await;
    for i in 0..200 {
        let id = format!("f{i}");
        spawn(&rt, &id).await.unwrap();
        // At once: the failure may reach the root before anything else of the agent.
        assert!(fail(&rt, &id).await, "{id} did not fail");
    }
    // The last failures may still be on their way to the root: each agent is restarted
    // once (a failure the root did not hear of would leave it at 0).
    eventually(|| rt.tree().iter().all(|a| a.restarts == 1)).await;
    let tree = settled(&rt, &census).await;
    assert_eq!(tree.len(), 200);
    for agent in &tree {
        assert_eq!(agent.restarts, 1, "{}", agent.id);
        assert_eq!(census.started(agent.id.as_str()), 2, "{}", agent.id);
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_racing_shutdown_are_refused_or_stopped() {
    let census = Census::default();
    let rt = runtime(&census, one_for_all_root()).await;
    let spawned = Arc::new(AtomicU64::new(0));
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|task| {
            let (rt, spawned) = (rt.clone(), Arc::clone(&spawned));
            tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("z{task}-{i}");
                    match spawn(&rt, &id).await {
                        Ok(()) => {
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
    // Nothing runs after shutdown (no actor is alive), and nothing starts any more.
    let running: Vec<_> = observer
        .tree()
        .into_iter()
        .filter(|a| a.running)
        .map(|a| a.id)
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");
    eventually(|| census.alive().is_empty()).await;
    assert!(matches!(
        spawn(&observer, "late").await,
        Err(Error::ShuttingDown)
    ));
}
