//! Recovery through the public API over the real sled journal: the tree, states,
//! snapshots, effects not repeated on replay, durable timers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use toka_actors::{Error, Runtime, SpawnSpec};
use toka_store::{Durability, Journal, JournalConfig, SledJournal};

fn open(dir: &std::path::Path) -> Arc<dyn Journal> {
    let config = JournalConfig::default().durability(Durability::Fsync);
    Arc::new(SledJournal::open(dir, config).unwrap())
}

/// Runs `phase` on a runtime over the journal in `dir`, then shuts it down and closes it.
async fn with_runtime<F, Fut>(dir: &std::path::Path, log: &Log, phase: F)
where
    F: FnOnce(Runtime) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = builder(open(dir), log).start().await.unwrap();
    phase(rt.clone()).await;
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_and_states_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let mut before = Vec::new();
    with_runtime(dir.path(), &log, |rt| async move {
        let top = rt
            .spawn::<Counter>(SpawnSpec::new("top").unwrap(), "top".into())
            .await
            .unwrap();
        top.ask(Cmd::Spawn("mid".into()), T).await.unwrap();
        let mid = rt.agent::<Counter>(&id("mid")).unwrap();
        mid.ask(Cmd::Spawn("leaf".into()), T).await.unwrap();
        let leaf = rt.agent::<Counter>(&id("leaf")).unwrap();
        for n in 0..50 {
            leaf.send(Cmd::Add(n)).await.unwrap();
        }
        top.send(Cmd::Add(7)).await.unwrap();
        rt.spawn::<Counter>(SpawnSpec::new("gone").unwrap(), "gone".into())
            .await
            .unwrap();
        rt.stop(&id("gone")).await.unwrap();
    })
    .await;
    with_runtime(dir.path(), &log, |rt| {
        before = rt.tree();
        async move {
            let names: Vec<_> = rt
                .tree()
                .into_iter()
                .map(|i| (i.id.to_string(), i.parent.map(|p| p.to_string()), i.kind))
                .collect();
            assert_eq!(
                names,
                [
                    ("top".into(), None, "counter".to_owned()),
                    ("mid".into(), Some("top".into()), "counter".into()),
                    ("leaf".into(), Some("mid".into()), "counter".into()),
                ]
            );
            assert!(rt.tree().iter().all(|i| i.running && i.durable));
            let leaf = rt.agent::<Counter>(&id("leaf")).unwrap();
            assert_eq!(leaf.ask(Cmd::Get, T).await.unwrap(), (0..50).sum::<i64>());
            let top = rt.agent::<Counter>(&id("top")).unwrap();
            assert_eq!(top.ask(Cmd::Get, T).await.unwrap(), 7);
        }
    })
    .await;
    assert_eq!(before.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_does_not_repeat_effects() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    with_runtime(dir.path(), &log, |rt| async move {
        let a = rt
            .spawn::<Counter>(SpawnSpec::new("a").unwrap(), "a".into())
            .await
            .unwrap();
        rt.spawn::<Counter>(SpawnSpec::new("b").unwrap(), "b".into())
            .await
            .unwrap();
        for _ in 0..5 {
            a.send(Cmd::SendTo("b".into(), 1)).await.unwrap();
        }
        a.ask(Cmd::AskAndAdd("b".into()), T).await.unwrap();
        let b = rt.agent::<Counter>(&id("b")).unwrap();
        assert_eq!(b.ask(Cmd::Get, T).await.unwrap(), 5);
    })
    .await;
    log.take();
    with_runtime(dir.path(), &log, |rt| async move {
        let b = rt.agent::<Counter>(&id("b")).unwrap();
        assert_eq!(
            b.ask(Cmd::Get, T).await.unwrap(),
            5,
            "a's replay sent nothing again"
        );
        let a = rt.agent::<Counter>(&id("a")).unwrap();
        // a's recorded ask reply (5) is replayed, not asked again.
        assert_eq!(a.ask(Cmd::Get, T).await.unwrap(), 5);
    })
    .await;
    assert_eq!(
        log.count("handled:b"),
        1,
        "b only handled the test's Get: {:?}",
        log.take()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_replay_and_keep_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    with_runtime(dir.path(), &log, |rt| async move {
        let s = rt
            .spawn::<Counter>(SpawnSpec::new("s").unwrap().snapshot_every(10), "s".into())
            .await
            .unwrap();
        for n in 1..=25 {
            s.send(Cmd::Add(n)).await.unwrap();
        }
        assert_eq!(s.ask(Cmd::Get, T).await.unwrap(), 325);
        let snapshot = rt
            .journal()
            .load_snapshot(id("s").stream())
            .unwrap()
            .unwrap();
        assert_eq!(snapshot.seq, 20);
    })
    .await;
    with_runtime(dir.path(), &log, |rt| async move {
        let s = rt.agent::<Counter>(&id("s")).unwrap();
        assert_eq!(s.ask(Cmd::Get, T).await.unwrap(), 325);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_timers_fire_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    with_runtime(dir.path(), &log, |rt| async move {
        let t = rt
            .spawn::<Counter>(SpawnSpec::new("t").unwrap(), "t".into())
            .await
            .unwrap();
        t.ask(Cmd::Schedule(50, 1), T).await.unwrap();
        t.ask(Cmd::Schedule(600, 100), T).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            t.ask(Cmd::Get, T).await.unwrap(),
            1,
            "the short timer fired"
        );
    })
    .await;
    // Down across the long timer's due time: it fires late, after the restart, once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    with_runtime(dir.path(), &log, |rt| async move {
        let t = rt.agent::<Counter>(&id("t")).unwrap();
        let deadline = tokio::time::Instant::now() + T;
        while t.ask(Cmd::Get, T).await.unwrap() != 101 {
            assert!(tokio::time::Instant::now() < deadline, "timer never fired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 101);
    })
    .await;
    with_runtime(dir.path(), &log, |rt| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = rt.agent::<Counter>(&id("t")).unwrap();
        assert_eq!(
            t.ask(Cmd::Get, T).await.unwrap(),
            101,
            "fired timers stay fired"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_naming_an_unregistered_kind_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    with_runtime(dir.path(), &log, |rt| async move {
        rt.spawn::<Counter>(SpawnSpec::new("c").unwrap(), "c".into())
            .await
            .unwrap();
    })
    .await;
    let journal = open(dir.path());
    let started = Runtime::builder(journal).start().await;
    assert!(matches!(started, Err(Error::UnknownKind(k)) if k == "counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_mailboxes_and_refuses_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let rt = builder(open(dir.path()), &log).start().await.unwrap();
    let c = rt
        .spawn::<Counter>(SpawnSpec::new("c").unwrap(), "c".into())
        .await
        .unwrap();
    for n in 0..200 {
        c.send(Cmd::Add(n)).await.unwrap();
    }
    rt.clone().shutdown().await.unwrap();
    assert_eq!(
        log.count("handled:c"),
        200,
        "every queued message was handled before stop"
    );
    assert!(matches!(
        c.send(Cmd::Add(1)).await,
        Err(Error::ShuttingDown)
    ));
}

/// Replays slowly and counts how many agents replay at once.
struct SlowReplay {
    now: Arc<std::sync::atomic::AtomicUsize>,
    max: Arc<std::sync::atomic::AtomicUsize>,
}

impl toka_actors::Agent for SlowReplay {
    const KIND: &'static str = "slow-replay";
    type Args = ();
    type Msg = u8;
    type Reply = ();
    type State = ();

    fn init(&self, _: &()) -> Result<(), toka_actors::AgentError> {
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut toka_actors::Context<'_, Self>,
        _: &mut (),
        _: u8,
    ) -> Result<(), toka_actors::AgentError> {
        use std::sync::atomic::Ordering::SeqCst;
        if ctx.is_replaying() {
            let at_once = self.now.fetch_add(1, SeqCst) + 1;
            self.max.fetch_max(at_once, SeqCst);
            tokio::time::sleep(Duration::from_millis(40)).await;
            self.now.fetch_sub(1, SeqCst);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoveries_run_at_most_recovery_concurrency_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let counters = || SlowReplay {
        now: Arc::default(),
        max: Arc::default(),
    };
    {
        let rt = Runtime::builder(open(dir.path()))
            .register(counters())
            .start()
            .await
            .unwrap();
        for i in 0..8 {
            let a = rt
                .spawn::<SlowReplay>(SpawnSpec::new(format!("s{i}")).unwrap(), ())
                .await
                .unwrap();
            a.ask(1, T).await.unwrap();
        }
        rt.shutdown().await.unwrap();
    }
    let agent = counters();
    let max = agent.max.clone();
    let started = std::time::Instant::now();
    let rt = Runtime::builder(open(dir.path()))
        .register(agent)
        .recovery_concurrency(2)
        .start()
        .await
        .unwrap();
    // `start` returned only once all 8 had replayed, 2 at a time: at least 4 × 40 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(160),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(max.load(std::sync::atomic::Ordering::SeqCst), 2);
    rt.shutdown().await.unwrap();
}

/// A log long enough for the start-up pass to read it in parts at once (over 64k records
/// after the agents' first replayed record), recovered with the default read-ahead budget,
/// with one so small that the first part is cut short (the rest of each history is then
/// read from the streams), and with no read-ahead at all: every counter comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_read_ahead_in_parts_recovers_every_state_whatever_the_budget() {
    const AGENTS: i64 = 4;
    const ADDS: i64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let open = || -> Arc<dyn Journal> {
        let config = JournalConfig::default().durability(Durability::Buffered);
        Arc::new(SledJournal::open(dir.path(), config).unwrap())
    };
    let rt = builder(open(), &log).start().await.unwrap();
    let mut counters = Vec::new();
    for a in 0..AGENTS {
        let name = format!("c{a}");
        counters.push(
            rt.spawn::<Counter>(SpawnSpec::new(&name).unwrap(), name.clone())
                .await
                .unwrap(),
        );
    }
    let sends = counters.iter().enumerate().map(|(a, counter)| async move {
        for n in 0..ADDS {
            counter.send(Cmd::Add(n * (a as i64 + 1))).await.unwrap();
        }
    });
    futures_util::future::join_all(sends).await;
    for (a, counter) in counters.iter().enumerate() {
        let want: i64 = (0..ADDS).map(|n| n * (a as i64 + 1)).sum();
        assert_eq!(counter.ask(Cmd::Get, T).await.unwrap(), want);
    }
    drop(counters);
    rt.shutdown().await.unwrap();

    for budget in [
        toka_actors::RuntimeConfig::default().preload_bytes,
        200 << 10,
        0,
    ] {
        let config = toka_actors::RuntimeConfig {
            preload_bytes: budget,
            ..toka_actors::RuntimeConfig::default()
        };
        let rt = builder(open(), &log).config(config).start().await.unwrap();
        for a in 0..AGENTS {
            let counter = rt.agent::<Counter>(&id(&format!("c{a}"))).unwrap();
            let want: i64 = (0..ADDS).map(|n| n * (a + 1)).sum();
            assert_eq!(
                counter.ask(Cmd::Get, T).await.unwrap(),
                want,
                "c{a} with a read-ahead budget of {budget} bytes"
            );
        }
        rt.shutdown().await.unwrap();
    }
}
