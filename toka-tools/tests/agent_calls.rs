//! Tool calls made by agents through the runtime (`ToolCalls::call_tool`), over a real
//! sled journal: outputs, the intent → result records, recovery by replay without
//! running an `External` tool again, denials (audited, and recorded as the outcome),
//! crashes, timeouts, the per-tool concurrency limit and unknown tools.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{EffectRecord, FilePut, Ledger, decode_outcome, effect_records, lines, outcome_body};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toka_actors::{
    Agent, AgentError, AgentId, AgentRef, Context, Intensity, Runtime, SpawnSpec, record,
};
use toka_store::{Journal, JournalConfig, SledJournal};
use toka_tools::{
    Authority, Capability, Caveat, SideEffect, Tool, ToolCalls, ToolContext, ToolError,
    ToolErrorKind, ToolHost, ToolLimits, ToolMetrics,
};

/// How long the test waits for an agent's answer.
const T: Duration = Duration::from_secs(10);

/// The caller agent's id.
const CALLER: &str = "caller";

// ---------------------------------------------------------------------------------------
// Test tools.

/// `echo`: returns its input. Pure.
#[derive(Clone)]
struct Echo;

impl Tool for Echo {
    type Input = Value;
    type Output = Value;
    fn name(&self) -> &str {
        "echo"
    }
    fn description(&self) -> &str {
        "Returns its input."
    }
    fn input_schema(&self) -> Value {
        json!({})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::Pure
    }
    async fn invoke(&self, input: Value, _cx: ToolContext) -> Result<Value, ToolError> {
        Ok(input)
    }
}

/// `panicky`: panics on input `"boom"`, else returns the input's length.
#[derive(Clone)]
struct Panicky;

impl Tool for Panicky {
    type Input = String;
    type Output = usize;
    fn name(&self) -> &str {
        "panicky"
    }
    fn description(&self) -> &str {
        "Panics on \"boom\"."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "string"})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::Pure
    }
    async fn invoke(&self, input: String, _cx: ToolContext) -> Result<usize, ToolError> {
        if input == "boom" {
            panic!("panicky was told to panic");
        }
        Ok(input.len())
    }
}

/// `slow`: sleeps the given milliseconds.
#[derive(Clone)]
struct Slow;

impl Tool for Slow {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "slow"
    }
    fn description(&self) -> &str {
        "Sleeps."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "integer"})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::ReadOnly
    }
    async fn invoke(&self, ms: u64, _cx: ToolContext) -> Result<u64, ToolError> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

/// `gauge`: sleeps while counting the calls in flight and their maximum; panics at once
/// if told to.
#[derive(Clone, Default)]
struct Gauge {
    in_flight: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GaugeInput {
    id: u32,
    ms: u64,
    #[serde(default)]
    panic: bool,
}

impl Tool for Gauge {
    type Input = GaugeInput;
    type Output = u32;
    fn name(&self) -> &str {
        "gauge"
    }
    fn description(&self) -> &str {
        "Measures its own concurrency."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::Pure
    }
    async fn invoke(&self, input: GaugeInput, _cx: ToolContext) -> Result<u32, ToolError> {
        if input.panic {
            panic!("gauge was told to panic");
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(input.ms)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(input.id)
    }
}

async fn gauge_host(gauge: &Gauge, concurrency: usize) -> (ToolHost, Capability) {
    let authority = Authority::from_secret(b"a secret for the concurrency test");
    let token = authority
        .mint([Caveat::Tool("gauge".parse().unwrap())])
        .unwrap();
    let host = ToolHost::builder(authority)
        .tool_with_limits(
            gauge.clone(),
            ToolLimits {
                concurrency,
                timeout: Duration::from_secs(10),
                ..ToolLimits::default()
            },
        )
        .start()
        .await
        .unwrap();
    (host, token)
}

fn gauge_call(
    host: &ToolHost,
    token: &Capability,
    id: u32,
    ms: u64,
    panic: bool,
) -> tokio::task::JoinHandle<Result<u32, ToolError>> {
    let host = host.clone();
    let token = token.clone();
    tokio::spawn(async move {
        let input = GaugeInput { id, ms, panic };
        host.call::<_, u32>(&token, None, "gauge", &input).await
    })
}

// ---------------------------------------------------------------------------------------
// The calling agent.

/// Calls the tool a message names, holding the token it names, and keeps a log of
/// every call's outcome (its state, rebuilt by replay).
struct Caller {
    tokens: Arc<HashMap<String, Capability>>,
}

/// A call's outcome as the agent sees it: the output as JSON text, or the error.
type CallOutcome = Result<String, ToolError>;

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// Calls `tool` with the JSON `input` (text), holding the token named `token`.
    Call {
        tool: String,
        token: String,
        input: String,
    },
    /// Returns the log.
    Log,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Reply {
    Called(CallOutcome),
    Log(Vec<(String, CallOutcome)>),
}

impl Agent for Caller {
    const KIND: &'static str = "tools.caller";
    type Args = ();
    type Msg = Msg;
    type Reply = Reply;
    type State = Vec<(String, CallOutcome)>;

    fn init(&self, _: &()) -> Result<Self::State, AgentError> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        log: &mut Self::State,
        msg: Msg,
    ) -> Result<Reply, AgentError> {
        match msg {
            Msg::Call { tool, token, input } => {
                let token = self
                    .tokens
                    .get(&token)
                    .ok_or_else(|| AgentError::msg(format!("no token named {token}")))?;
                let input: Value = serde_json::from_str(&input)?;
                let outcome = cx
                    .call_tool::<Value, Value>(&tool, token, &input)
                    .await
                    .map(|v| v.to_string());
                log.push((tool, outcome.clone()));
                Ok(Reply::Called(outcome))
            }
            Msg::Log => Ok(Reply::Log(log.clone())),
        }
    }
}

// ---------------------------------------------------------------------------------------
// A node: journal, authority, tool host and runtime over one directory.

struct Node {
    journal: Arc<dyn Journal>,
    authority: Authority,
    host: ToolHost,
    runtime: Runtime,
    tokens: Arc<HashMap<String, Capability>>,
    ledger: PathBuf,
}

fn ledger_path(dir: &Path) -> PathBuf {
    dir.join("ledger.txt")
}

fn open_journal(dir: &Path) -> Arc<dyn Journal> {
    // The default durability is Fsync.
    let config = JournalConfig::default();
    assert_eq!(config.get_durability(), toka_store::Durability::Fsync);
    let path = dir.join("journal");
    // A journal closed a moment ago may still be held by a task finishing its drop.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match SledJournal::open(&path, config.clone()) {
            Ok(journal) => return Arc::new(journal),
            Err(e) if Instant::now() < deadline => {
                eprintln!("reopening the journal: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("opening the journal: {e}"),
        }
    }
}

impl Node {
    async fn start(dir: &Path) -> Node {
        let journal = open_journal(dir);
        let authority = Authority::open(&dir.join("root.key"), journal.clone()).unwrap();
        let ledger = ledger_path(dir);
        let host = ToolHost::builder(authority.clone())
            .tool(Echo)
            .tool(Ledger {
                path: ledger.clone(),
                crash_marker: None,
            })
            .tool(FilePut {
                dir: dir.join("files"),
                runs: dir.join("put-runs.log"),
                crash_marker: None,
            })
            .tool_with_limits(
                Panicky,
                ToolLimits {
                    concurrency: 4,
                    timeout: Duration::from_secs(5),
                    restarts: Intensity {
                        max_restarts: 3,
                        within: Duration::from_secs(60),
                    },
                },
            )
            .tool_with_limits(
                Slow,
                ToolLimits {
                    concurrency: 4,
                    timeout: Duration::from_millis(300),
                    ..ToolLimits::default()
                },
            )
            .start()
            .await
            .unwrap();
        let mut tokens = HashMap::new();
        tokens.insert(
            "good".to_owned(),
            authority.mint([Caveat::Agent(CALLER.into())]).unwrap(),
        );
        tokens.insert(
            "other-agent".to_owned(),
            authority
                .mint([Caveat::Agent("someone-else".into())])
                .unwrap(),
        );
        tokens.insert(
            "other-tool".to_owned(),
            authority
                .mint([
                    Caveat::Tool("other".parse().unwrap()),
                    Caveat::Agent(CALLER.into()),
                ])
                .unwrap(),
        );
        let tokens = Arc::new(tokens);
        let runtime = Runtime::builder(journal.clone())
            .extension(host.clone())
            .register(Caller {
                tokens: tokens.clone(),
            })
            .start()
            .await
            .unwrap();
        Node {
            journal,
            authority,
            host,
            runtime,
            tokens,
            ledger,
        }
    }

    async fn stop(self) {
        self.runtime.shutdown().await.unwrap();
        self.host.shutdown().await;
    }

    async fn spawn_caller(&self) -> AgentRef<Caller> {
        self.runtime
            .spawn::<Caller>(SpawnSpec::new(CALLER).unwrap(), ())
            .await
            .unwrap()
    }

    fn caller(&self) -> AgentRef<Caller> {
        self.runtime
            .agent::<Caller>(&AgentId::new(CALLER).unwrap())
            .unwrap()
    }

    fn token(&self, name: &str) -> &Capability {
        &self.tokens[name]
    }
}

async fn call(agent: &AgentRef<Caller>, tool: &str, token: &str, input: Value) -> CallOutcome {
    let msg = Msg::Call {
        tool: tool.into(),
        token: token.into(),
        input: input.to_string(),
    };
    match agent.ask(msg, T).await.unwrap() {
        Reply::Called(outcome) => outcome,
        other => panic!("unexpected reply {other:?}"),
    }
}

async fn log_of(agent: &AgentRef<Caller>) -> Vec<(String, CallOutcome)> {
    match agent.ask(Msg::Log, T).await.unwrap() {
        Reply::Log(log) => log,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn kind_of(outcome: &CallOutcome) -> Option<ToolErrorKind> {
    outcome.as_ref().err().map(|e| e.kind)
}

fn digest(input: &Value) -> [u8; 32] {
    *blake3::hash(&serde_json::to_vec(input).unwrap()).as_bytes()
}

/// A journaled call: its intent's stream seq and record, and its result's, if any.
type JournaledCall = (
    u64,
    record::IntentRecord,
    Option<(u64, record::ReplyRecord)>,
);

/// Pairs every intent with its result; panics on a result without an intent or an
/// effect with two results.
fn calls_in_journal(journal: &dyn Journal) -> Vec<JournaledCall> {
    let mut calls: Vec<JournaledCall> = Vec::new();
    for (seq, rec) in effect_records(journal, CALLER) {
        match rec {
            EffectRecord::Intent(intent) => calls.push((seq, intent, None)),
            EffectRecord::Result(result) => {
                let call = calls
                    .iter_mut()
                    .rev()
                    .find(|(_, i, _)| i.effect == result.effect)
                    .unwrap_or_else(|| panic!("result {result:?} has no intent before it"));
                assert!(call.2.is_none(), "two results for {:?}", result.effect);
                call.2 = Some((seq, result));
            }
        }
    }
    calls
}

// ---------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_returns_its_output_and_journals_intent_before_result() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let caller = node.spawn_caller().await;

    let echo_in = json!({"text": "hi", "n": 3});
    assert_eq!(
        call(&caller, "echo", "good", echo_in.clone()).await,
        Ok(echo_in.to_string())
    );
    let ledger_in = json!({"key": "k1"});
    assert_eq!(
        call(&caller, "ledger.append", "good", ledger_in.clone()).await,
        Ok(json!({"lines": 1}).to_string())
    );
    let put_in = json!({"name": "a.txt", "content": "hello"});
    assert_eq!(
        call(&caller, "file.put", "good", put_in.clone()).await,
        Ok(json!({"bytes": 5}).to_string())
    );
    assert_eq!(lines(&node.ledger), ["k1"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("files/a.txt")).unwrap(),
        "hello"
    );

    // The journal: per call an intent (name, digest of the JSON input) and, after it, a
    // result holding the tool's JSON output.
    let calls = calls_in_journal(node.journal.as_ref());
    let expected = [
        ("echo", &echo_in, echo_in.clone()),
        ("ledger.append", &ledger_in, json!({"lines": 1})),
        ("file.put", &put_in, json!({"bytes": 5})),
    ];
    assert_eq!(calls.len(), expected.len(), "{calls:?}");
    let kinds = common::stream_kinds(node.journal.as_ref(), CALLER);
    for ((intent_seq, intent, result), (name, input, output)) in calls.iter().zip(&expected) {
        assert_eq!(intent.name, *name);
        assert_eq!(intent.input_digest, Some(digest(input)), "{name}");
        let (result_seq, result) = result.as_ref().expect("every call has a result");
        assert!(intent_seq < result_seq, "{name}: intent after result");
        // The message that made the call comes before its intent.
        assert_eq!(
            kinds[(intent.effect.seq - 1) as usize],
            record::RecordKind::Msg.stored()
        );
        assert!(intent.effect.seq < *intent_seq);
        let body = outcome_body(&result.outcome).expect("the effect itself succeeded");
        let recorded: Value = serde_json::from_slice(&decode_outcome(body).unwrap()).unwrap();
        assert_eq!(&recorded, output, "{name}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_state_is_replayed_and_external_tools_do_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let caller = node.spawn_caller().await;
    call(&caller, "ledger.append", "good", json!({"key": "once"}))
        .await
        .unwrap();
    call(&caller, "echo", "good", json!("x")).await.unwrap();
    call(
        &caller,
        "file.put",
        "good",
        json!({"name": "f", "content": "abc"}),
    )
    .await
    .unwrap();
    let before = log_of(&caller).await;
    assert_eq!(before.len(), 3);
    let intents_before = calls_in_journal(node.journal.as_ref()).len();
    drop(caller);
    node.stop().await;
    assert_eq!(lines(&ledger_path(dir.path())), ["once"]);

    let node = Node::start(dir.path()).await;
    let caller = node.caller();
    assert_eq!(log_of(&caller).await, before, "the state replayed");
    assert_eq!(
        lines(&node.ledger),
        ["once"],
        "the external tool did not run again"
    );
    assert_eq!(
        lines(&dir.path().join("put-runs.log")),
        ["f"],
        "no tool ran again"
    );
    assert_eq!(
        calls_in_journal(node.journal.as_ref()).len(),
        intents_before,
        "replay wrote no new intents"
    );
    // New calls run.
    assert_eq!(
        call(&caller, "ledger.append", "good", json!({"key": "twice"})).await,
        Ok(json!({"lines": 2}).to_string())
    );
    assert_eq!(lines(&node.ledger), ["once", "twice"]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_is_audited_and_is_the_recorded_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let caller = node.spawn_caller().await;
    let other_agent = node.token("other-agent").identifier().to_owned();
    let other_tool = node.token("other-tool").identifier().to_owned();
    assert_eq!(node.host.metrics(), ToolMetrics::default());

    let denied = call(
        &caller,
        "ledger.append",
        "other-agent",
        json!({"key": "no"}),
    )
    .await;
    assert_eq!(kind_of(&denied), Some(ToolErrorKind::Denied), "{denied:?}");
    // Journaled in the audit stream before the caller heard of it.
    let denials = node.authority.denials().unwrap();
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0].tool, "ledger.append");
    assert_eq!(denials[0].agent.as_deref(), Some(CALLER));
    assert_eq!(denials[0].token.as_deref(), Some(other_agent.as_str()));

    let denied = call(&caller, "echo", "other-tool", json!("hi")).await;
    assert_eq!(kind_of(&denied), Some(ToolErrorKind::Denied), "{denied:?}");
    let denials = node.authority.denials().unwrap();
    assert_eq!(denials.len(), 2, "{denials:?}");
    assert_eq!(denials[1].tool, "echo");
    assert_eq!(denials[1].agent.as_deref(), Some(CALLER));
    assert_eq!(denials[1].token.as_deref(), Some(other_tool.as_str()));
    assert!(lines(&node.ledger).is_empty(), "a denied tool did not run");
    let metrics = node.host.metrics();
    assert_eq!(metrics.calls, 2, "{metrics:?}");
    assert_eq!(metrics.denials, 2, "{metrics:?}");
    assert_eq!(metrics.failures, 0, "{metrics:?}");

    // The denials are the calls' recorded outcomes.
    let calls = calls_in_journal(node.journal.as_ref());
    assert_eq!(calls.len(), 2);
    for (_, intent, result) in &calls {
        let (_, result) = result.as_ref().expect("a result");
        let outcome = decode_outcome(outcome_body(&result.outcome).unwrap());
        assert_eq!(
            outcome.map_err(|e| e.kind),
            Err(ToolErrorKind::Denied),
            "{}",
            intent.name
        );
    }
    let before = log_of(&caller).await;
    drop(caller);
    node.stop().await;

    // After a restart the agent replays the same denials; nothing new is audited.
    let node = Node::start(dir.path()).await;
    let caller = node.caller();
    let after = log_of(&caller).await;
    assert_eq!(after, before);
    assert_eq!(
        after.iter().map(|(_, o)| kind_of(o)).collect::<Vec<_>>(),
        [Some(ToolErrorKind::Denied), Some(ToolErrorKind::Denied)]
    );
    assert_eq!(node.authority.denials().unwrap().len(), 2, "no new audit");
    assert!(lines(&node.ledger).is_empty());
    // The same agent holding the right token may call.
    assert_eq!(
        call(&caller, "ledger.append", "good", json!({"key": "yes"})).await,
        Ok(json!({"lines": 1}).to_string())
    );
    assert_eq!(node.authority.denials().unwrap().len(), 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_tool_gives_crashed_and_works_again_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let caller = node.spawn_caller().await;
    assert_eq!(
        call(&caller, "panicky", "good", json!("fine")).await,
        Ok("4".into())
    );
    let crashed = call(&caller, "panicky", "good", json!("boom")).await;
    assert_eq!(
        kind_of(&crashed),
        Some(ToolErrorKind::Crashed),
        "{crashed:?}"
    );
    assert!(
        crashed
            .as_ref()
            .unwrap_err()
            .message
            .contains("told to panic"),
        "{crashed:?}"
    );
    // The next call goes to the restarted actor. (Only the journal writes between the
    // two calls give the restart time to finish: see
    // `a_call_right_after_a_crash_is_not_failed_by_the_restart`.)
    let again = call(&caller, "panicky", "good", json!("again")).await;
    assert_eq!(
        again,
        Ok("5".into()),
        "the tool works again after its restart"
    );
    // The crash is the call's recorded outcome: a restart replays it.
    let before = log_of(&caller).await;
    drop(caller);
    node.stop().await;
    let node = Node::start(dir.path()).await;
    assert_eq!(log_of(&node.caller()).await, before);
    node.stop().await;
}

/// A host with only [`Panicky`], restarted at most `max_restarts` times a minute.
async fn panicky_host(max_restarts: u32) -> (ToolHost, Capability) {
    let authority = Authority::from_secret(b"a secret for the panicky tests!!");
    let token = authority.mint([]).unwrap();
    let host = ToolHost::builder(authority)
        .tool_with_limits(
            Panicky,
            ToolLimits {
                concurrency: 1,
                timeout: Duration::from_secs(5),
                restarts: Intensity {
                    max_restarts,
                    within: Duration::from_secs(60),
                },
            },
        )
        .start()
        .await
        .unwrap();
    (host, token)
}

/// Calls `panicky` with a harmless input until it answers (5 s at most); returns the
/// errors seen before.
async fn until_it_works(host: &ToolHost, token: &Capability) -> Vec<ToolErrorKind> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut errors = Vec::new();
    loop {
        match host.call::<_, usize>(token, None, "panicky", &"ok").await {
            Ok(n) => {
                assert_eq!(n, 2);
                return errors;
            }
            Err(e) => errors.push(e.kind),
        }
        assert!(
            Instant::now() < deadline,
            "the tool did not come back: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_failing_past_its_restart_intensity_becomes_unavailable() {
    let (host, token) = panicky_host(2).await;
    for round in 0..2 {
        let crashed = host
            .call::<_, usize>(&token, None, "panicky", &"boom")
            .await;
        assert_eq!(
            crashed.map_err(|e| e.kind),
            Err(ToolErrorKind::Crashed),
            "round {round}"
        );
        let errors = until_it_works(&host, &token).await;
        assert!(
            errors
                .iter()
                .all(|k| matches!(k, ToolErrorKind::Unavailable | ToolErrorKind::Crashed)),
            "round {round}: {errors:?}"
        );
    }
    let crashed = host
        .call::<_, usize>(&token, None, "panicky", &"boom")
        .await;
    assert_eq!(crashed.map_err(|e| e.kind), Err(ToolErrorKind::Crashed));
    // The third failure exceeds 2 restarts in 60 s: the tool stays down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let outcome = host.call::<_, usize>(&token, None, "panicky", &"ok").await;
        assert_eq!(outcome.map_err(|e| e.kind), Err(ToolErrorKind::Unavailable));
    }
    host.shutdown().await;
}

/// A call made right after another call crashed the tool must not fail because the
/// tool's actor is being restarted: it did not crash anything, and through `call_tool`
/// its failure would be recorded for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_right_after_a_crash_is_not_failed_by_the_restart() {
    let (host, token) = panicky_host(100).await;
    let mut failed = Vec::new();
    for round in 0..20 {
        let crashed = host
            .call::<_, usize>(&token, None, "panicky", &"boom")
            .await;
        assert_eq!(crashed.map_err(|e| e.kind), Err(ToolErrorKind::Crashed));
        if let Err(e) = host.call::<_, usize>(&token, None, "panicky", &"ok").await {
            failed.push((round, e));
        }
        // Let the restart finish before the next round either way.
        until_it_works(&host, &token).await;
    }
    host.shutdown().await;
    assert!(
        failed.is_empty(),
        "{} of 20 calls made right after a crash failed although the tool was only \
         restarting: {:?}",
        failed.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let caller = node.spawn_caller().await;
    let started = Instant::now();
    let outcome = call(&caller, "slow", "good", json!(20_000)).await;
    let took = started.elapsed();
    assert_eq!(
        kind_of(&outcome),
        Some(ToolErrorKind::Timeout),
        "{outcome:?}"
    );
    assert!(
        took >= Duration::from_millis(300),
        "timed out before its timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(300) + Duration::from_secs(2),
        "took {took:?}, past timeout + margin"
    );
    // A quick call still works.
    assert_eq!(
        call(&caller, "slow", "good", json!(1)).await,
        Ok("1".into())
    );
    let metrics = node.host.metrics();
    assert_eq!(metrics.calls, 2, "{metrics:?}");
    assert_eq!(metrics.timeouts, 1, "{metrics:?}");
    assert_eq!(metrics.failures, 1, "{metrics:?}");
    assert_eq!(metrics.denials, 0, "{metrics:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_tool_concurrency_limit_holds() {
    let gauge = Gauge::default();
    let (host, token) = gauge_host(&gauge, 2).await;
    let started = Instant::now();
    let calls: Vec<_> = (0..10u32)
        .map(|id| gauge_call(&host, &token, id, 100, false))
        .collect();
    for (id, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), Ok(id as u32));
    }
    let took = started.elapsed();
    assert_eq!(gauge.runs.load(Ordering::SeqCst), 10);
    assert_eq!(
        gauge.max.load(Ordering::SeqCst),
        2,
        "at most 2 in flight, and 2 were"
    );
    assert!(
        took >= Duration::from_millis(450),
        "10 calls of 100 ms, 2 at a time, took only {took:?}"
    );
    host.shutdown().await;
}

/// The limit is the tool's, not its actor's: calls still running when the actor is
/// restarted after a panic count against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds_across_a_restart_of_the_tool() {
    let gauge = Gauge::default();
    let (host, token) = gauge_host(&gauge, 2).await;
    // One long call holds a permit...
    let long = gauge_call(&host, &token, 1, 1_500, false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gauge.in_flight.load(Ordering::SeqCst), 1);
    // ...while another call panics and the tool's actor is restarted.
    let crashed = gauge_call(&host, &token, 2, 0, true).await.unwrap();
    assert_eq!(crashed.map_err(|e| e.kind), Err(ToolErrorKind::Crashed));
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge_call(&host, &token, 3, 0, false)
        .await
        .unwrap()
        .is_err()
    {
        assert!(Instant::now() < deadline, "the tool did not come back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        gauge.in_flight.load(Ordering::SeqCst),
        1,
        "the long call still runs"
    );
    // Two more long calls: with the first still running, only one may start.
    let more: Vec<_> = (4..6)
        .map(|id| gauge_call(&host, &token, id, 300, false))
        .collect();
    for call in more {
        assert!(call.await.unwrap().is_ok());
    }
    assert_eq!(long.await.unwrap(), Ok(1));
    host.shutdown().await;
    assert_eq!(
        gauge.max.load(Ordering::SeqCst),
        2,
        "more calls than the limit of 2 ran at once after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tools_and_bad_inputs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let caller = node.spawn_caller().await;
    let unknown = call(&caller, "no.such.tool", "good", json!({})).await;
    assert_eq!(
        kind_of(&unknown),
        Some(ToolErrorKind::UnknownTool),
        "{unknown:?}"
    );
    let bad = call(&caller, "ledger.append", "good", json!({"nokey": 1})).await;
    assert_eq!(kind_of(&bad), Some(ToolErrorKind::InvalidInput), "{bad:?}");
    assert!(lines(&node.ledger).is_empty());
    // Both are recorded outcomes.
    let calls = calls_in_journal(node.journal.as_ref());
    let recorded: Vec<_> = calls
        .iter()
        .map(|(_, i, r)| {
            let (_, r) = r.as_ref().expect("a result");
            (
                i.name.as_str(),
                decode_outcome(outcome_body(&r.outcome).unwrap()).map_err(|e| e.kind),
            )
        })
        .collect();
    assert_eq!(
        recorded,
        [
            ("no.such.tool", Err(ToolErrorKind::UnknownTool)),
            ("ledger.append", Err(ToolErrorKind::InvalidInput)),
        ]
    );
    // Directly on the host too.
    let direct = node
        .host
        .call::<_, Value>(node.token("good"), Some(CALLER), "no.such.tool", &json!({}))
        .await;
    assert_eq!(direct.map_err(|e| e.kind), Err(ToolErrorKind::UnknownTool));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tool_host_calls_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open_journal(dir.path());
    let authority = Authority::from_secret(b"a secret for the no-host test!!!");
    let mut tokens = HashMap::new();
    tokens.insert("good".to_owned(), authority.mint([]).unwrap());
    let runtime = Runtime::builder(journal)
        .register(Caller {
            tokens: Arc::new(tokens),
        })
        .start()
        .await
        .unwrap();
    let caller = runtime
        .spawn::<Caller>(SpawnSpec::new(CALLER).unwrap(), ())
        .await
        .unwrap();
    let outcome = call(&caller, "echo", "good", json!(1)).await;
    assert_eq!(
        kind_of(&outcome),
        Some(ToolErrorKind::Unavailable),
        "{outcome:?}"
    );
    runtime.shutdown().await.unwrap();
}
