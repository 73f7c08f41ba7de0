//! Messaging through the public API: send/ask, agent-to-agent effects, topics, transient
//! agents, errors.

mod common;

use common::*;
use toka_actors::{Error, SpawnSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_ask_a_durable_agent() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let c = rt
        .spawn::<Counter>(SpawnSpec::new("c").unwrap(), "c".into())
        .await
        .unwrap();
    for n in 1..=10 {
        c.send(Cmd::Add(n)).await.unwrap();
    }
    assert_eq!(c.ask(Cmd::Get, T).await.unwrap(), 55);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_agents_work_and_are_not_recovered() {
    let log = Log::default();
    let journal = memory_journal();
    let rt = builder(journal.clone(), &log).start().await.unwrap();
    let t = rt
        .spawn::<Counter>(SpawnSpec::new("t").unwrap().transient(), "t".into())
        .await
        .unwrap();
    t.send(Cmd::Add(4)).await.unwrap();
    assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 4);
    assert_eq!(
        journal.head_position(),
        0,
        "transient agents journal nothing"
    );
    rt.shutdown().await.unwrap();
    let rt = builder(journal, &log).start().await.unwrap();
    assert!(matches!(
        rt.agent::<Counter>(&id("t")),
        Err(Error::UnknownAgent(_))
    ));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_send_ask_and_spawn_through_their_context() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let a = rt
        .spawn::<Counter>(SpawnSpec::new("a").unwrap(), "a".into())
        .await
        .unwrap();
    a.send(Cmd::Spawn("kid".into())).await.unwrap();
    a.send(Cmd::SendTo("kid".into(), 7)).await.unwrap();
    a.send(Cmd::AskAndAdd("kid".into())).await.unwrap();
    assert_eq!(a.ask(Cmd::Get, T).await.unwrap(), 7);
    let tree = rt.tree();
    let kid = tree.iter().find(|i| i.id == id("kid")).unwrap();
    assert_eq!(kid.parent, Some(id("a")));
    // Spawning the same child again (a re-run handler) returns it instead of failing.
    a.ask(Cmd::Spawn("kid".into()), T).await.unwrap();
    // A stop removes it from the tree.
    a.ask(Cmd::StopChild("kid".into()), T).await.unwrap();
    assert!(rt.tree().iter().all(|i| i.id != id("kid")));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_reach_durable_and_transient_subscribers() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let d = rt
        .spawn::<Counter>(SpawnSpec::new("d").unwrap(), "d".into())
        .await
        .unwrap();
    let t = rt
        .spawn::<Counter>(SpawnSpec::new("t").unwrap().transient(), "t".into())
        .await
        .unwrap();
    assert_eq!(rt.publish(&ticks(), &5).await.unwrap(), 2);
    // `send` returns once journaled; ask to wait for the handling (and its publish).
    d.ask(Cmd::Publish(1), T).await.unwrap();
    assert_eq!(d.ask(Cmd::Get, T).await.unwrap(), 6);
    eventually(|| log.count("handled:t") >= 2).await;
    assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 6);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_went_wrong() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    rt.spawn::<Counter>(SpawnSpec::new("x").unwrap(), "x".into())
        .await
        .unwrap();
    let again = rt
        .spawn::<Counter>(SpawnSpec::new("x").unwrap(), "x".into())
        .await;
    assert!(matches!(again, Err(Error::AlreadyExists(i)) if i == id("x")));
    assert!(matches!(
        rt.agent::<Counter>(&id("nope")),
        Err(Error::UnknownAgent(_))
    ));
    assert!(matches!(
        rt.spawn_json(
            None,
            "no-such-kind",
            SpawnSpec::new("y").unwrap(),
            serde_json::json!(null)
        )
        .await,
        Err(Error::UnknownKind(_))
    ));
    assert!(matches!(
        rt.spawn_json(
            None,
            "counter",
            SpawnSpec::new("y").unwrap(),
            serde_json::json!({"not": "a string"})
        )
        .await,
        Err(Error::BadJson { .. })
    ));
    let x = rt.agent::<Counter>(&id("x")).unwrap();
    let failed = x.ask(Cmd::Fail, T).await;
    assert!(matches!(failed, Err(Error::Handler { .. })), "{failed:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_messages_for_apis() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    rt.spawn_json(
        None,
        "counter",
        SpawnSpec::new("j").unwrap(),
        serde_json::json!("j"),
    )
    .await
    .unwrap();
    rt.send_json(&id("j"), serde_json::json!({"Add": 3}))
        .await
        .unwrap();
    let v = rt
        .ask_json(&id("j"), serde_json::json!("Get"), T)
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!(3));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_messages_appends_flushes_waits_and_restarts() {
    const N: u64 = 20;
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let before = rt.metrics();
    let head_before = rt.journal().head_position();
    let c = rt
        .spawn::<Counter>(SpawnSpec::new("c").unwrap(), "c".into())
        .await
        .unwrap();
    let t = rt
        .spawn::<Counter>(SpawnSpec::new("t").unwrap().transient(), "t".into())
        .await
        .unwrap();
    for n in 1..=N {
        c.send(Cmd::Add(n.try_into().unwrap())).await.unwrap();
        t.send(Cmd::Add(1)).await.unwrap();
    }
    // The asks are handled after every message sent before them.
    c.ask(Cmd::Get, T).await.unwrap();
    t.ask(Cmd::Get, T).await.unwrap();
    let m = rt.metrics();
    assert!(
        m.messages_handled >= before.messages_handled + 2 * N,
        "{m:?}"
    );
    assert!(m.journal_appends >= N, "{m:?}");
    assert!(m.journal_group_writes >= 1, "{m:?}");
    assert!(m.journal_group_writes <= m.journal_appends, "{m:?}");
    assert!(m.flush_waits >= N, "{m:?}");
    // The durable sends were flushed; every flush covered at least one new record.
    let flushes = m.journal_flushes - before.journal_flushes;
    let records = rt.journal().head_position() - head_before;
    assert!((1..=records).contains(&flushes), "{records} records: {m:?}");
    // A failing handler makes the root restart the agent.
    assert!(c.ask(Cmd::Fail, T).await.is_err());
    let deadline = std::time::Instant::now() + T;
    while rt.metrics().agent_restarts == before.agent_restarts {
        assert!(std::time::Instant::now() < deadline, "no restart counted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The tree counts it for the agent that restarted, and only for it.
    let restarts = |agent: &str| {
        rt.tree()
            .into_iter()
            .find(|info| info.id.as_str() == agent)
            .map(|info| info.restarts)
    };
    // (The failing message is tried again after each restart, so there may be several.)
    let counted = restarts("c").unwrap();
    assert!(counted >= 1);
    assert!(counted <= rt.metrics().agent_restarts - before.agent_restarts);
    assert_eq!(restarts("t"), Some(0));
    rt.shutdown().await.unwrap();
}

/// Counts the drops of [`Tracked`] values (one test uses it).
static TRACKED_DROPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A value whose drops are counted: a message dropped twice, or never, shows in the count.
#[derive(serde::Serialize, serde::Deserialize)]
struct Tracked(u64);

impl Drop for Tracked {
    fn drop(&mut self) {
        TRACKED_DROPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sums what it is sent. `Msg` is the message type: small ones travel inline (up to four
/// words), larger ones on the heap; so do replies (`R`).
struct Summer<M, R>(std::marker::PhantomData<fn(M) -> R>);

/// A message with a counted drop and a number to add.
trait Addend {
    /// The kind name of the agent summing these.
    const KIND: &'static str;
    fn value(&self) -> u64;
}

/// Two words: travels inline.
type SmallMsg = (Tracked, u64);
/// Seventeen words: travels on the heap.
type LargeMsg = (Tracked, [u64; 16]);

impl Addend for SmallMsg {
    const KIND: &'static str = "sum-small";
    fn value(&self) -> u64 {
        self.0.0 + self.1
    }
}

impl Addend for LargeMsg {
    const KIND: &'static str = "sum-large";
    fn value(&self) -> u64 {
        self.0.0 + self.1.iter().sum::<u64>()
    }
}

/// A reply built from the sum.
trait FromSum {
    fn from_sum(sum: u64) -> Self;
}

impl FromSum for u64 {
    fn from_sum(sum: u64) -> Self {
        sum
    }
}

impl FromSum for (String, [u64; 8]) {
    fn from_sum(sum: u64) -> Self {
        (sum.to_string(), [sum; 8])
    }
}

impl<M, R> toka_actors::Agent for Summer<M, R>
where
    M: Addend + serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: FromSum + serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    const KIND: &'static str = M::KIND;
    type Args = ();
    type Msg = M;
    type Reply = R;
    type State = u64;

    fn init(&self, _: &()) -> Result<u64, toka_actors::AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: &mut toka_actors::Context<'_, Self>,
        sum: &mut u64,
        msg: M,
    ) -> Result<R, toka_actors::AgentError> {
        *sum += msg.value();
        Ok(R::from_sum(*sum))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_messages_and_replies_inline_or_boxed_arrive_whole() {
    type Small = Summer<SmallMsg, u64>;
    type Large = Summer<LargeMsg, (String, [u64; 8])>;
    let rt = toka_actors::Runtime::builder(memory_journal())
        .register(Small::default())
        .register(Large::default())
        .start()
        .await
        .unwrap();
    let transient = |name: &str| SpawnSpec::new(name).unwrap().transient();
    let small = rt.spawn::<Small>(transient("small"), ()).await.unwrap();
    let large = rt.spawn::<Large>(transient("large"), ()).await.unwrap();
    let (mut small_sum, mut large_sum) = (0, 0);
    for round in 1..=100u64 {
        small.send((Tracked(round), 1)).await.unwrap();
        large.send((Tracked(round), [round; 16])).await.unwrap();
        small_sum += round + 1;
        large_sum += round + 16 * round;
    }
    assert_eq!(small.ask((Tracked(0), 0), T).await.unwrap(), small_sum);
    let (text, array) = large.ask((Tracked(0), [0; 16]), T).await.unwrap();
    assert_eq!(text, large_sum.to_string());
    assert_eq!(array, [large_sum; 8]);
    assert_eq!(
        TRACKED_DROPS.load(std::sync::atomic::Ordering::SeqCst),
        202,
        "every message, inline or boxed, is dropped once"
    );
    rt.shutdown().await.unwrap();
}

impl<M, R> Default for Summer<M, R> {
    fn default() -> Self {
        Summer(std::marker::PhantomData)
    }
}

/// A sender reaches the transient agent it sent to last without the directory; that must
/// never outlive the agent's actor: after the target is restarted, and after its id is
/// stopped and spawned again as a durable agent, the sender's messages reach the agent
/// that runs under the id now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_reaches_whatever_runs_under_the_id_now() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let transient = |name: &str| SpawnSpec::new(name).unwrap().transient();
    let s = rt
        .spawn::<Counter>(transient("s"), "s".into())
        .await
        .unwrap();
    let t = rt
        .spawn::<Counter>(transient("t"), "t".into())
        .await
        .unwrap();
    for _ in 0..3 {
        s.ask(Cmd::SendTo("t".into(), 1), T).await.unwrap();
    }
    assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 3);

    // Restarted by the root: a new actor, with a fresh state (transient). An ask that
    // reached the failing incarnation is answered at once with an error (what was left in
    // its inbox is dropped with it), not left to time out.
    assert!(t.ask(Cmd::Panic, T).await.is_err());
    let restarting = std::time::Instant::now();
    while t.ask(Cmd::Get, T).await.is_err() {
        assert!(restarting.elapsed() < T, "an ask waited out its timeout");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(restarting.elapsed() < T, "an ask waited out its timeout");
    s.ask(Cmd::SendTo("t".into(), 5), T).await.unwrap();
    assert_eq!(t.ask(Cmd::Get, T).await.unwrap(), 5);

    // Stopped, then spawned again as a durable agent: the message is journaled for it.
    rt.stop(&id("t")).await.unwrap();
    assert!(
        t.send(Cmd::Add(1)).await.is_err(),
        "a stopped agent took a message"
    );
    let durable = rt
        .spawn::<Counter>(SpawnSpec::new("t").unwrap(), "t".into())
        .await
        .unwrap();
    s.ask(Cmd::SendTo("t".into(), 2), T).await.unwrap();
    assert_eq!(durable.ask(Cmd::Get, T).await.unwrap(), 2);
    rt.shutdown().await.unwrap();
}

/// A transient agent flooded by senders that never pause still stops when told: its
/// actor takes at most a batch from its inbox per wake-up, so the stop is not held up
/// behind the flood; and every ask answered before the stop was handled in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_transient_agent_stops_when_told() {
    let log = Log::default();
    let rt = builder(memory_journal(), &log).start().await.unwrap();
    let t = rt
        .spawn::<Counter>(SpawnSpec::new("flooded").unwrap().transient(), "t".into())
        .await
        .unwrap();
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                // Until the agent is gone, faster than it handles them. A send to a
                // transient agent never waits, so the loop yields now and then to let the
                // runtime's two workers run anything else.
                'flood: loop {
                    for _ in 0..1_000 {
                        if t.send(Cmd::Add(1)).await.is_err() {
                            break 'flood;
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = t.ask(Cmd::Get, T).await.unwrap();
    assert!(before > 0, "the flood reached the agent");
    let stopping = std::time::Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(10), rt.stop(&id("flooded")))
        .await
        .expect("the stop was held up by the flood")
        .unwrap();
    assert!(stopping.elapsed() < std::time::Duration::from_secs(10));
    for flooder in flooders {
        tokio::time::timeout(std::time::Duration::from_secs(10), flooder)
            .await
            .expect("a sender still sends to a stopped agent")
            .unwrap();
    }
    rt.shutdown().await.unwrap();
}
