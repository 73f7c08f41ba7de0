//! Incarnations over the real sled journal: an id stopped and spawned again is a new agent
//! (fresh state; nothing its predecessor journaled is applied, replayed, fired, counted or
//! returned), across restarts too, while the predecessor's records stay in the stream.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use toka_actors::record::{self, IncarnationRecord, IntentRecord, MsgRecord, Origin};
use toka_actors::{
    Agent, AgentError, AgentId, Context, Error, OnDoubt, Runtime, RuntimeConfig, SpawnSpec,
};
use toka_store::{Durability, Journal, JournalConfig, RecordedEvent, SledJournal};

fn open(dir: &std::path::Path) -> Arc<dyn Journal> {
    let config = JournalConfig::default().durability(Durability::Fsync);
    Arc::new(SledJournal::open(dir, config).unwrap())
}

/// Another kind, whose message type cannot decode the counter's messages.
struct Other;

/// Four varints: at least 4 bytes, more than any `Cmd::Add`/`Get`/`Fail` this file sends.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    a: u64,
    b: u64,
    c: u64,
    d: u64,
}

fn stamp(a: u64) -> Stamp {
    Stamp {
        a,
        b: 0,
        c: 0,
        d: 0,
    }
}

impl Agent for Other {
    const KIND: &'static str = "other";
    type Args = ();
    type Msg = Stamp;
    type Reply = Vec<u64>;
    type State = Vec<u64>;

    fn init(&self, _: &()) -> Result<Vec<u64>, AgentError> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _: &mut Context<'_, Self>,
        seen: &mut Vec<u64>,
        msg: Stamp,
    ) -> Result<Vec<u64>, AgentError> {
        if msg.a != 0 {
            seen.push(msg.a);
        }
        Ok(seen.clone())
    }
}

/// Runs a journaled effect that counts its runs, and keeps the outcomes it got.
struct Effector {
    runs: Arc<AtomicU32>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Op {
    Run,
    Get,
}

impl Agent for Effector {
    const KIND: &'static str = "effector";
    type Args = ();
    type Msg = Op;
    type Reply = Vec<u32>;
    type State = Vec<u32>;

    fn init(&self, _: &()) -> Result<Vec<u32>, AgentError> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        outcomes: &mut Vec<u32>,
        op: Op,
    ) -> Result<Vec<u32>, AgentError> {
        if let Op::Run = op {
            let runs = self.runs.clone();
            let n: u32 = ctx
                .effect("count", OnDoubt::Fail, || async move {
                    Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
                })
                .await?;
            outcomes.push(n);
        }
        Ok(outcomes.clone())
    }
}

/// The agent kinds of this file, over the journal in `dir`.
struct Env {
    log: Log,
    runs: Arc<AtomicU32>,
}

impl Env {
    fn new() -> Self {
        Env {
            log: Log::default(),
            runs: Arc::default(),
        }
    }

    async fn start(&self, dir: &std::path::Path, config: RuntimeConfig) -> Runtime {
        builder(open(dir), &self.log)
            .register(Other)
            .register(Effector {
                runs: self.runs.clone(),
            })
            .config(config)
            .start()
            .await
            .unwrap()
    }

    /// Runs `phase` on a runtime over the journal in `dir`, then shuts it down and
    /// closes the journal (the next phase reopens it: a restart).
    async fn phase<F, Fut>(&self, dir: &std::path::Path, phase: F)
    where
        F: FnOnce(Runtime) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.phase_with(dir, RuntimeConfig::default(), phase).await;
    }

    async fn phase_with<F, Fut>(&self, dir: &std::path::Path, config: RuntimeConfig, phase: F)
    where
        F: FnOnce(Runtime) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let rt = self.start(dir, config).await;
        phase(rt.clone()).await;
        rt.shutdown().await.unwrap();
    }
}

/// Recovery without the start-up read-ahead: agents read their own streams.
fn no_preload() -> RuntimeConfig {
    RuntimeConfig {
        preload_bytes: 0,
        ..RuntimeConfig::default()
    }
}

fn events(rt: &Runtime, id: &AgentId) -> Vec<RecordedEvent> {
    rt.journal()
        .iter_stream(id.stream(), 1)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The incarnation (base) the runtime lists for `id`.
fn incarnation(rt: &Runtime, id: &AgentId) -> u64 {
    rt.tree()
        .into_iter()
        .find(|i| &i.id == id)
        .map(|i| i.incarnation)
        .unwrap()
}

/// Checks that the stream holds an incarnation marker of `kind` at `base`.
fn assert_marker(rt: &Runtime, id: &AgentId, base: u64, kind: &str) {
    let events = events(rt, id);
    let marker = events.iter().find(|e| e.seq == base).unwrap();
    assert_eq!(marker.kind, record::RecordKind::Incarnation.stored());
    let decoded: IncarnationRecord = postcard::from_bytes(&marker.payload).unwrap();
    assert_eq!(decoded.kind, kind);
}

/// The bodies of the message records of `id`'s stream in `range` of sequence numbers.
fn messages(
    rt: &Runtime,
    id: &AgentId,
    range: impl std::ops::RangeBounds<u64>,
) -> Vec<(Origin, Vec<u8>)> {
    events(rt, id)
        .into_iter()
        .filter(|e| e.kind == record::RecordKind::Msg.stored() && range.contains(&e.seq))
        .map(|e| {
            let msg: MsgRecord<'_> = postcard::from_bytes(&e.payload).unwrap();
            (msg.origin, msg.body.to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_respawned_counter_starts_fresh_and_the_old_records_stay() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    let a = id("a");
    env.phase(dir.path(), |rt| async move {
        let spec = || SpawnSpec::new("a").unwrap().max_attempts(1);
        let old = rt.spawn::<Counter>(spec(), "a".into()).await.unwrap();
        assert_eq!(
            rt.tree()[0].incarnation,
            0,
            "a first incarnation has base 0"
        );
        old.send(Cmd::Add(300)).await.unwrap();
        assert!(old.ask(Cmd::Fail, T).await.is_err());
        eventually(|| rt.dead_letters(&a).unwrap().len() == 1).await;
        assert_eq!(old.ask(Cmd::Get, T).await.unwrap(), 300);
        rt.stop(&a).await.unwrap();
        assert!(matches!(
            old.send(Cmd::Add(1)).await,
            Err(Error::UnknownAgent(_))
        ));
        let old_records = events(&rt, &a);

        let new = rt.spawn::<Counter>(spec(), "a".into()).await.unwrap();
        assert_eq!(new.ask(Cmd::Get, T).await.unwrap(), 0, "fresh state");
        assert!(
            rt.dead_letters(&a).unwrap().is_empty(),
            "no old dead letter"
        );
        let base = incarnation(&rt, &a);
        assert_eq!(base, old_records.last().unwrap().seq + 1);
        assert_marker(&rt, &a, base, "counter");
        // The old incarnation's records are all still there, unchanged.
        let now = events(&rt, &a);
        assert_eq!(
            now[..old_records.len()]
                .iter()
                .map(|e| (e.seq, e.kind.clone(), e.payload.clone()))
                .collect::<Vec<_>>(),
            old_records
                .iter()
                .map(|e| (e.seq, e.kind.clone(), e.payload.clone()))
                .collect::<Vec<_>>()
        );
        assert!(
            old_records
                .iter()
                .any(|e| e.kind == record::RecordKind::Dead.stored())
        );
        assert_eq!(messages(&rt, &a, ..base).len(), 3, "Add(300), Fail, Get");

        new.send(Cmd::Add(5)).await.unwrap();
        assert_eq!(new.ask(Cmd::Get, T).await.unwrap(), 5);
        assert!(new.ask(Cmd::Fail, T).await.is_err());
        eventually(|| rt.dead_letters(&a).unwrap().len() == 1).await;
        assert!(rt.dead_letters(&a).unwrap()[0].seq > base);

        // A third incarnation, after the second.
        rt.stop(&a).await.unwrap();
        assert_eq!(
            rt.dead_letters(&a).unwrap().len(),
            1,
            "the last one's, once stopped"
        );
        let third = rt.spawn::<Counter>(spec(), "a".into()).await.unwrap();
        assert!(incarnation(&rt, &a) > base);
        assert_eq!(third.ask(Cmd::Get, T).await.unwrap(), 0);
        assert!(rt.dead_letters(&a).unwrap().is_empty());
        third.send(Cmd::Add(7)).await.unwrap();
    })
    .await;
    for config in [RuntimeConfig::default(), no_preload()] {
        env.phase_with(dir.path(), config, |rt| async move {
            let a = rt.agent::<Counter>(&id("a")).unwrap();
            assert_eq!(a.ask(Cmd::Get, T).await.unwrap(), 7, "only its own state");
            assert!(rt.dead_letters(a.id()).unwrap().is_empty());
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_an_earlier_incarnation_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    let s = id("s");
    env.phase(dir.path(), |rt| async move {
        let spec = || SpawnSpec::new("s").unwrap().snapshot_every(10);
        let old = rt.spawn::<Counter>(spec(), "s".into()).await.unwrap();
        for n in 1..=25 {
            old.send(Cmd::Add(n)).await.unwrap();
        }
        assert_eq!(old.ask(Cmd::Get, T).await.unwrap(), 325);
        let snapshot = rt.journal().load_snapshot(s.stream()).unwrap().unwrap();
        assert_eq!(snapshot.seq, 20);
        rt.stop(&s).await.unwrap();

        let new = rt.spawn::<Counter>(spec(), "s".into()).await.unwrap();
        assert_eq!(
            new.ask(Cmd::Get, T).await.unwrap(),
            0,
            "old snapshot ignored"
        );
        let base = incarnation(&rt, &s);
        assert!(base > 26);
        // The old snapshot is still the latest: the new incarnation has not made one.
        assert_eq!(
            rt.journal().load_snapshot(s.stream()).unwrap().unwrap().seq,
            20
        );
    })
    .await;
    // Across a restart, with only the old incarnation's snapshot in the journal.
    env.phase(dir.path(), |rt| async move {
        let s = rt.agent::<Counter>(&id("s")).unwrap();
        assert_eq!(s.ask(Cmd::Get, T).await.unwrap(), 0);
        for _ in 0..12 {
            s.send(Cmd::Add(1)).await.unwrap();
        }
        assert_eq!(s.ask(Cmd::Get, T).await.unwrap(), 12);
        let snapshot = rt
            .journal()
            .load_snapshot(s.id().stream())
            .unwrap()
            .unwrap();
        assert!(snapshot.seq > incarnation(&rt, s.id()), "its own snapshot");
    })
    .await;
    // And with its own snapshot.
    for config in [RuntimeConfig::default(), no_preload()] {
        env.phase_with(dir.path(), config, |rt| async move {
            let s = rt.agent::<Counter>(&id("s")).unwrap();
            assert_eq!(s.ask(Cmd::Get, T).await.unwrap(), 12);
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_respawn_with_another_kind_does_not_see_the_old_messages() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    let c = id("c");
    env.phase(dir.path(), |rt| async move {
        let old = rt
            .spawn::<Counter>(SpawnSpec::new("c").unwrap(), "c".into())
            .await
            .unwrap();
        old.send(Cmd::Add(300)).await.unwrap();
        old.send(Cmd::Add(-1)).await.unwrap();
        assert_eq!(old.ask(Cmd::Get, T).await.unwrap(), 299);
        rt.stop(&c).await.unwrap();
        // The test means something only if the old messages cannot be read as `Stamp`s.
        for (_, body) in messages(&rt, &c, ..) {
            assert!(postcard::from_bytes::<Stamp>(&body).is_err());
        }

        let new = rt
            .spawn::<Other>(SpawnSpec::new("c").unwrap(), ())
            .await
            .unwrap();
        assert_eq!(new.ask(stamp(0), T).await.unwrap(), Vec::<u64>::new());
        assert_eq!(new.ask(stamp(7), T).await.unwrap(), [7]);
        assert!(
            rt.dead_letters(&c).unwrap().is_empty(),
            "nothing undecodable"
        );
        assert!(
            events(&rt, &c)
                .iter()
                .all(|e| e.kind != record::RecordKind::Dead.stored()),
            "no dead letter journaled at all"
        );
        assert_marker(&rt, &c, incarnation(&rt, &c), "other");
        // A restart right after a respawn recovers the new kind too.
        new.send(stamp(8)).await.unwrap();
    })
    .await;
    for config in [RuntimeConfig::default(), no_preload()] {
        env.phase_with(dir.path(), config, |rt| async move {
            let c = rt.agent::<Other>(&id("c")).unwrap();
            assert_eq!(c.ask(stamp(0), T).await.unwrap(), [7, 8]);
            assert!(rt.dead_letters(c.id()).unwrap().is_empty());
            assert!(
                rt.agent::<Counter>(c.id()).is_err(),
                "the tree has the new kind"
            );
        })
        .await;
    }
    env.phase(dir.path(), |rt| async move {
        assert!(
            events(&rt, &id("c"))
                .iter()
                .all(|e| e.kind != record::RecordKind::Dead.stored()),
            "the restarts dead-lettered nothing either"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_id_stays_stopped_and_can_be_respawned_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    env.phase(dir.path(), |rt| async move {
        let g = rt
            .spawn::<Counter>(SpawnSpec::new("g").unwrap(), "g".into())
            .await
            .unwrap();
        g.send(Cmd::Add(300)).await.unwrap();
        g.ask(Cmd::Schedule(60_000, 1), T).await.unwrap();
        rt.stop(g.id()).await.unwrap();
    })
    .await;
    env.phase(dir.path(), |rt| async move {
        let g = id("g");
        assert!(matches!(
            rt.agent::<Counter>(&g),
            Err(Error::UnknownAgent(_))
        ));
        assert!(rt.tree().is_empty(), "stopped stays stopped");
        let g = rt
            .spawn::<Counter>(SpawnSpec::new("g").unwrap(), "g".into())
            .await
            .unwrap();
        assert_eq!(g.ask(Cmd::Get, T).await.unwrap(), 0);
        assert_marker(&rt, g.id(), incarnation(&rt, g.id()), "counter");
        g.send(Cmd::Add(2)).await.unwrap();
    })
    .await;
    env.phase(dir.path(), |rt| async move {
        let g = rt.agent::<Counter>(&id("g")).unwrap();
        assert_eq!(g.ask(Cmd::Get, T).await.unwrap(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_respawn_under_another_parent_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    env.phase(dir.path(), |rt| async move {
        let x = rt
            .spawn::<Counter>(SpawnSpec::new("x").unwrap(), "x".into())
            .await
            .unwrap();
        x.send(Cmd::Add(300)).await.unwrap();
        rt.stop(x.id()).await.unwrap();
        let p = rt
            .spawn::<Counter>(SpawnSpec::new("p").unwrap(), "p".into())
            .await
            .unwrap();
        // Spawned by a handler (`Context::spawn`), as p's child.
        p.ask(Cmd::Spawn("x".into()), T).await.unwrap();
        let x = rt.agent::<Counter>(&id("x")).unwrap();
        assert_eq!(x.ask(Cmd::Get, T).await.unwrap(), 0);
        assert!(incarnation(&rt, x.id()) > 0);
        x.send(Cmd::Add(4)).await.unwrap();
    })
    .await;
    env.phase(dir.path(), |rt| async move {
        let x = rt.agent::<Counter>(&id("x")).unwrap();
        assert_eq!(x.ask(Cmd::Get, T).await.unwrap(), 4);
        let info = rt.tree().into_iter().find(|i| i.id == id("x")).unwrap();
        assert_eq!(info.parent, Some(id("p")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_a_new_incarnation_pass_the_receivers_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    let a = id("a");
    env.phase(dir.path(), |rt| async move {
        let old = rt
            .spawn::<Counter>(SpawnSpec::new("a").unwrap(), "a".into())
            .await
            .unwrap();
        let b = rt
            .spawn::<Counter>(SpawnSpec::new("b").unwrap(), "b".into())
            .await
            .unwrap();
        old.send(Cmd::Add(300)).await.unwrap();
        for _ in 0..3 {
            old.send(Cmd::SendTo("b".into(), 1)).await.unwrap();
        }
        old.ask(Cmd::Get, T).await.unwrap();
        eventually_value(&b, 3).await;
        rt.stop(&a).await.unwrap();

        let new = rt
            .spawn::<Counter>(SpawnSpec::new("a").unwrap(), "a".into())
            .await
            .unwrap();
        assert_eq!(new.ask(Cmd::Get, T).await.unwrap(), 0);
        new.send(Cmd::SendTo("b".into(), 10)).await.unwrap();
        eventually_value(&b, 13).await;
        // What b got from a: three from the old incarnation, one from the new, whose
        // effect id is newer than any of the old's.
        let base = incarnation(&rt, &a);
        let effects: Vec<_> = messages(&rt, b.id(), ..)
            .into_iter()
            .filter_map(|(origin, _)| match origin {
                Origin::Agent { from, effect } if from == a => Some(effect),
                _ => None,
            })
            .collect();
        assert_eq!(effects.len(), 4);
        assert!(effects[..3].iter().all(|e| e.seq < base));
        assert!(effects[3].seq > base);
    })
    .await;
    env.phase(dir.path(), |rt| async move {
        let b = rt.agent::<Counter>(&id("b")).unwrap();
        assert_eq!(b.ask(Cmd::Get, T).await.unwrap(), 13, "nothing sent again");
        let a = rt.agent::<Counter>(&id("a")).unwrap();
        a.send(Cmd::SendTo("b".into(), 100)).await.unwrap();
        eventually_value(&b, 113).await;
        assert_eq!(a.ask(Cmd::Get, T).await.unwrap(), 0);
    })
    .await;
}

async fn eventually_value(counter: &toka_actors::AgentRef<Counter>, value: i64) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let now = counter.ask(Cmd::Get, T).await.unwrap();
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} is {now}, not {value}",
            counter.id()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_effect_of_a_new_incarnation_runs() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    let e = id("e");
    env.phase(dir.path(), |rt| async move {
        let old = rt
            .spawn::<Effector>(SpawnSpec::new("e").unwrap(), ())
            .await
            .unwrap();
        assert_eq!(old.ask(Op::Run, T).await.unwrap(), [1]);
        rt.stop(&e).await.unwrap();

        let new = rt
            .spawn::<Effector>(SpawnSpec::new("e").unwrap(), ())
            .await
            .unwrap();
        assert_eq!(new.ask(Op::Get, T).await.unwrap(), Vec::<u32>::new());
        assert_eq!(
            new.ask(Op::Run, T).await.unwrap(),
            [2],
            "it ran: not the old 1"
        );
        let base = incarnation(&rt, &e);
        let intents: Vec<IntentRecord> = events(&rt, &e)
            .into_iter()
            .filter(|r| r.kind == record::RecordKind::Intent.stored())
            .map(|r| postcard::from_bytes(&r.payload).unwrap())
            .collect();
        assert_eq!(intents.len(), 2, "both intents stay journaled");
        assert!(intents[0].effect.seq < base && intents[1].effect.seq > base);
    })
    .await;
    assert_eq!(env.runs.load(Ordering::SeqCst), 2);
    for config in [RuntimeConfig::default(), no_preload()] {
        env.phase_with(dir.path(), config, |rt| async move {
            let e = rt.agent::<Effector>(&id("e")).unwrap();
            assert_eq!(e.ask(Op::Get, T).await.unwrap(), [2]);
        })
        .await;
    }
    assert_eq!(env.runs.load(Ordering::SeqCst), 2, "replays ran nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_of_an_earlier_incarnation_never_fire() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    env.phase(dir.path(), |rt| async move {
        let t = rt
            .spawn::<Counter>(SpawnSpec::new("t").unwrap(), "t".into())
            .await
            .unwrap();
        t.ask(Cmd::Schedule(300, 1000), T).await.unwrap();
        t.ask(Cmd::Schedule(900, 1000), T).await.unwrap();
        rt.stop(t.id()).await.unwrap();
        let t = rt
            .spawn::<Counter>(SpawnSpec::new("t").unwrap(), "t".into())
            .await
            .unwrap();
        t.ask(Cmd::Schedule(100, 1), T).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 1, "only its own timer");
    })
    .await;
    // Down across the second old timer's due time.
    tokio::time::sleep(Duration::from_millis(600)).await;
    env.phase(dir.path(), |rt| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = rt.agent::<Counter>(&id("t")).unwrap();
        assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_replaying_the_spawn_of_an_id_now_used_elsewhere_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
    env.phase(dir.path(), |rt| async move {
        let p = rt
            .spawn::<Counter>(SpawnSpec::new("p").unwrap(), "p".into())
            .await
            .unwrap();
        p.ask(Cmd::Spawn("x".into()), T).await.unwrap();
        p.send(Cmd::Add(1)).await.unwrap();
        rt.stop(&id("x")).await.unwrap();
        let x = rt
            .spawn::<Other>(SpawnSpec::new("x").unwrap(), ())
            .await
            .unwrap();
        x.send(stamp(3)).await.unwrap();
        assert_eq!(p.ask(Cmd::Get, T).await.unwrap(), 1);
    })
    .await;
    // p replays its handling of `Spawn("x")`: x is now a top-level agent of another kind.
    env.phase(dir.path(), |rt| async move {
        let p = rt.agent::<Counter>(&id("p")).unwrap();
        assert_eq!(p.ask(Cmd::Get, T).await.unwrap(), 1);
        let x = rt.agent::<Other>(&id("x")).unwrap();
        assert_eq!(x.ask(stamp(0), T).await.unwrap(), [3]);
        assert!(rt.dead_letters(p.id()).unwrap().is_empty());
        let parents: Vec<_> = rt.tree().into_iter().map(|i| (i.id, i.parent)).collect();
        assert_eq!(parents, [(id("p"), None), (id("x"), None)]);
    })
    .await;
}
