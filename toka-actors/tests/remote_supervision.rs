//! A supervision tree that spans runtimes, and messages between them (see
//! `toka_actors::remote`): two runtimes over two journals, connected by a `Remote` that
//! places ids beginning with `b-` in runtime `b` and every other id in runtime `a`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::*;
use toka_actors::remote::{RemoteAnswer, RemoteFuture};
use toka_actors::{
    AgentError, AgentId, AgentInfo, ChildExit, Error, Intensity, Queries, Remote, RemoteChild,
    RemoteMessage, Runtime, SpawnSpec, Strategy, SupervisorSpec,
};
use toka_store::Journal;

/// The runtimes that are up, by name.
#[derive(Clone, Default)]
struct World(Arc<RwLock<HashMap<&'static str, Arc<Runtime>>>>);

impl World {
    fn get(&self, name: &'static str, id: &AgentId) -> Result<Arc<Runtime>, Error> {
        self.0
            .read()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Remote {
                id: id.clone(),
                reason: format!("runtime {name} is down"),
            })
    }
}

/// Where an id lives.
fn home(id: &AgentId) -> &'static str {
    if id.as_str().starts_with("b-") {
        "b"
    } else {
        "a"
    }
}

/// Runtime `here`'s connection to the others, in-process.
struct Link {
    here: &'static str,
    world: World,
}

impl Link {
    /// The runtime holding `id`: the one whose tree runs it (a cluster's directory), else
    /// its home.
    fn to(&self, id: &AgentId) -> Result<Arc<Runtime>, Error> {
        let holding = self.world.0.read().unwrap().values().find_map(|rt| {
            rt.tree()
                .iter()
                .any(|a| a.id == *id && !a.elsewhere)
                .then(|| Arc::clone(rt))
        });
        holding.map_or_else(|| self.world.get(home(id), id), Ok)
    }
}

impl Remote for Link {
    fn is_elsewhere(&self, id: &AgentId) -> bool {
        home(id) != self.here
    }

    fn deliver(&self, to: AgentId, message: RemoteMessage) -> RemoteFuture {
        let rt = self.to(&to);
        Box::pin(async move { rt?.remote_deliver(&to, message).await })
    }

    fn ask(&self, to: AgentId, message: RemoteMessage) -> RemoteAnswer {
        let rt = self.to(&to);
        Box::pin(async move { rt?.remote_ask(&to, message).await })
    }

    fn query(&self, to: AgentId, query: Vec<u8>, timeout: Duration) -> RemoteAnswer {
        let rt = self.to(&to);
        Box::pin(async move { rt?.remote_query(&to, &query, timeout).await })
    }

    fn start_child(&self, child: RemoteChild) -> RemoteFuture {
        let rt = self.to(&child.spec.id);
        Box::pin(async move { rt?.remote_start_child(child).await })
    }

    fn halt_child(&self, id: AgentId) -> RemoteFuture {
        let rt = self.to(&id);
        Box::pin(async move { rt?.remote_halt_child(&id).await })
    }

    fn remove_child(&self, id: AgentId) -> RemoteFuture {
        let rt = self.to(&id);
        Box::pin(async move { rt?.remote_remove_child(&id).await })
    }

    fn child_exited(&self, exit: ChildExit) -> RemoteFuture {
        let rt = self.to(&exit.supervisor);
        Box::pin(async move { rt?.remote_child_exited(exit) })
    }
}

/// Counters answer `()` with their value.
impl Queries for Counter {
    type Query = ();
    type Answer = i64;

    fn query(&self, value: &i64, _: ()) -> Result<i64, AgentError> {
        Ok(*value)
    }
}

/// Two runtimes, their journals and the log their counters write.
struct Pair {
    world: World,
    journals: HashMap<&'static str, Arc<dyn Journal>>,
    log: Log,
}

impl Pair {
    fn new() -> Self {
        Pair {
            world: World::default(),
            journals: [("a", memory_journal()), ("b", memory_journal())].into(),
            log: Log::default(),
        }
    }

    /// Starts runtime `name` over its journal (again, after a `down`).
    async fn up(&self, name: &'static str) -> Arc<Runtime> {
        let counter = Counter {
            log: self.log.clone(),
        };
        let rt = Runtime::builder(Arc::clone(&self.journals[name]))
            .register_with_queries(counter)
            .remote(Link {
                here: name,
                world: self.world.clone(),
            })
            .start()
            .await
            .unwrap();
        let rt = Arc::new(rt);
        self.world.0.write().unwrap().insert(name, Arc::clone(&rt));
        rt
    }

    /// Shuts runtime `name` down.
    async fn down(&self, name: &'static str) {
        let rt = self.world.0.write().unwrap().remove(name).unwrap();
        let rt = Arc::into_inner(rt).expect("no other handle");
        rt.shutdown().await.unwrap();
    }

    fn rt(&self, name: &'static str) -> Arc<Runtime> {
        self.world.get(name, &id("x")).unwrap()
    }
}

fn info(rt: &Runtime, agent: &str) -> Option<AgentInfo> {
    rt.tree().into_iter().find(|a| a.id.as_str() == agent)
}

/// Spawns `p` in `a` with `supervision`, and has it spawn `b-w` anywhere.
async fn parent_with_remote_child(pair: &Pair, supervision: SupervisorSpec) {
    let a = pair.rt("a");
    let p = a
        .spawn::<Counter>(
            SpawnSpec::new("p").unwrap().supervise(supervision),
            "p".into(),
        )
        .await
        .unwrap();
    p.ask(Cmd::SpawnAnywhere("b-w".into()), T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_placed_elsewhere_runs_there_and_is_supervised_from_here() {
    let pair = Pair::new();
    let (a, b) = (pair.up("a").await, pair.up("b").await);
    parent_with_remote_child(&pair, SupervisorSpec::default()).await;

    // It runs in b, adopted for p; a lists it as p's child that runs elsewhere.
    let adopted = info(&b, "b-w").expect("b runs the child");
    assert_eq!(adopted.supervisor, Some(id("p")));
    assert!(adopted.running && adopted.parent.is_none() && !adopted.elsewhere);
    let listed = info(&a, "b-w").expect("a lists the child");
    assert!(listed.elsewhere && !listed.running);
    assert_eq!(listed.parent, Some(id("p")));

    // The parent's sends reach it (journaled in b).
    let p = a.agent::<Counter>(&id("p")).unwrap();
    p.ask(Cmd::SendTo("b-w".into(), 5), T).await.unwrap();
    let w = b.agent::<Counter>(&id("b-w")).unwrap();
    assert_eq!(w.ask(Cmd::Get, T).await.unwrap(), 5);

    // It fails in b; p, in a, restarts it there: state recovered from b's journal.
    pair.log.take();
    w.send(Cmd::Fail).await.unwrap();
    eventually(|| pair.log.count("start:b-w") >= 1).await;
    assert_eq!(w.ask(Cmd::Get, T).await.unwrap(), 5);
    let restarts = info(&a, "b-w").unwrap().restarts;
    assert!(restarts >= 1, "a's supervisor restarted it: {restarts}");
    assert!(info(&b, "b-w").unwrap().running);

    // Asks and queries reach it too, from a handler or from outside.
    assert_eq!(p.ask(Cmd::AskAndAdd("b-w".into()), T).await.unwrap(), 5);
    let w_from_a = a.agent::<Counter>(&id("b-w")).unwrap();
    assert_eq!(w_from_a.query((), T).await.unwrap(), 5);
    assert_eq!(w_from_a.ask(Cmd::Add(1), T).await.unwrap(), 6);
    // An agent of the other runtime that is not a child is reached by its id as well.
    b.spawn::<Counter>(SpawnSpec::new("b-x").unwrap(), "b-x".into())
        .await
        .unwrap();
    p.ask(Cmd::SendTo("b-x".into(), 3), T).await.unwrap();
    assert_eq!(p.ask(Cmd::AskAndAdd("b-x".into()), T).await.unwrap(), 8);
    let missing = a
        .agent::<Counter>(&id("b-none"))
        .unwrap()
        .query((), T)
        .await;
    assert!(
        matches!(missing, Err(Error::UnknownAgent(_))),
        "{missing:?}"
    );
    // An agent held by `a` though its id's home is `b` (a child placed with its parent)
    // is reached from `b` too: whatever `b` does not hold goes to the other runtimes.
    p.ask(Cmd::Spawn("b-near".into()), T).await.unwrap();
    let x = b.agent::<Counter>(&id("b-x")).unwrap();
    x.ask(Cmd::SendTo("b-near".into(), 2), T).await.unwrap();
    let near = a.agent::<Counter>(&id("b-near")).unwrap();
    assert_eq!(near.ask(Cmd::Get, T).await.unwrap(), 2);

    // Stopping the parent stops and removes the child in b.
    a.stop(&id("p")).await.unwrap();
    assert!(info(&b, "b-w").is_none(), "{:?}", b.tree());
    assert!(info(&a, "b-w").is_none());
    drop((a, b));
    pair.down("a").await;
    pair.down("b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_child_failing_too_often_escalates_in_its_supervisors_runtime() {
    let pair = Pair::new();
    let (a, b) = (pair.up("a").await, pair.up("b").await);
    let strict = SupervisorSpec::new(Strategy::OneForOne).intensity(Intensity {
        max_restarts: 1,
        within: Duration::from_secs(60),
    });
    parent_with_remote_child(&pair, strict).await;
    pair.log.take();
    // The poison message fails the child at every attempt: more restarts than p allows.
    b.agent::<Counter>(&id("b-w"))
        .unwrap()
        .send(Cmd::Fail)
        .await
        .unwrap();
    // p gives up and fails to a's root, which restarts p, which starts its child again.
    eventually(|| info(&a, "p").is_some_and(|p| p.restarts >= 1)).await;
    eventually(|| pair.log.count("start:p") >= 1).await;
    eventually(|| info(&b, "b-w").is_some_and(|w| w.running)).await;
    drop((a, b));
    pair.down("a").await;
    pair.down("b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runtime_recovers_its_part_of_the_tree_from_its_own_journal() {
    let pair = Pair::new();
    pair.up("a").await;
    pair.up("b").await;
    parent_with_remote_child(&pair, SupervisorSpec::default()).await;
    let p = pair.rt("a").agent::<Counter>(&id("p")).unwrap();
    p.ask(Cmd::SendTo("b-w".into(), 7), T).await.unwrap();
    drop(p);
    pair.down("a").await;
    pair.down("b").await;

    let b = pair.up("b").await;
    let a = pair.up("a").await;
    assert_eq!(info(&b, "b-w").unwrap().supervisor, Some(id("p")));
    assert!(info(&a, "b-w").unwrap().elsewhere);
    let p = a.agent::<Counter>(&id("p")).unwrap();
    p.ask(Cmd::SendTo("b-w".into(), 1), T).await.unwrap();
    let w = b.agent::<Counter>(&id("b-w")).unwrap();
    assert_eq!(w.ask(Cmd::Get, T).await.unwrap(), 8);
    // The child still reports to p after both restarts.
    pair.log.take();
    w.send(Cmd::Fail).await.unwrap();
    eventually(|| info(&a, "b-w").is_some_and(|w| w.restarts >= 1)).await;
    assert_eq!(w.ask(Cmd::Get, T).await.unwrap(), 8);
    drop((a, b, p, w));
    pair.down("a").await;
    pair.down("b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_remote_a_child_placed_anywhere_runs_with_its_parent() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let p = rt
        .spawn::<Counter>(SpawnSpec::new("p").unwrap(), "p".into())
        .await
        .unwrap();
    p.ask(Cmd::SpawnAnywhere("b-w".into()), T).await.unwrap();
    let w = info(&rt, "b-w").unwrap();
    assert!(w.running && !w.elsewhere && w.parent == Some(id("p")));
    rt.shutdown().await.unwrap();
}
