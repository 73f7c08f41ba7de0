//! The assistant agent over a real sled journal, a real `fs.read` tool and a scripted
//! OpenAI-compatible server: a turn that calls a tool and answers, the transcript query,
//! a denied tool reported to the model, `max_steps`, and a restart that rebuilds the
//! conversation without asking the model again; with `keep_turns` and snapshots, a
//! restart reads only a bounded tail of a long conversation; the journal reopens in the
//! same process right after a shutdown that cut off a turn stuck in a model or tool call.
#![cfg(feature = "openai")]

use std::ops::ControlFlow;
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toka_actors::{AgentRef, Runtime, RuntimeConfig, SpawnSpec};
use toka_store::{
    AppendResult, Error as StoreError, EventIter, EventRef, ExpectedVersion, Journal,
    JournalConfig, NewEvent, SledJournal, Snapshot, StreamBatch, Subscription, VerifyReport,
};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};
use toka_tools::model::{Assistant, AssistantArgs, AssistantQuery, HistoryPolicy, UserTurn};
use toka_tools::{Authority, Caveat, FsRead, SideEffect, Tool, ToolContext, ToolError, ToolHost};

const T: Duration = Duration::from_secs(10);

struct Node {
    runtime: Runtime,
    tools: ToolHost,
    assistant: AgentRef<Assistant>,
}

/// A node with `fs.read` over `dir/files` and the model `local` at `server`, running the
/// assistant `helper` holding a token with `caveats` (spawned on first start).
async fn start(dir: &Path, server: &ModelServer, caveats: Vec<Caveat>, max_steps: u32) -> Node {
    let journal =
        Arc::new(SledJournal::open(dir.join("journal"), JournalConfig::default()).unwrap());
    let authority = Authority::open(&dir.join("root.key"), journal.clone()).unwrap();
    let tools = ToolHost::builder(authority.clone())
        .tool(FsRead::new(dir.join("files")).unwrap())
        .start()
        .await
        .unwrap();
    let models = common::local_model(&authority, journal.clone(), server);
    let runtime =
        common::assistant_runtime(journal, RuntimeConfig::default(), &tools, &models).await;
    let id = "helper".parse().unwrap();
    let assistant = match runtime.agent::<Assistant>(&id) {
        Ok(existing) => existing,
        Err(_) => {
            let token = authority.mint(caveats).unwrap();
            let args = AssistantArgs {
                system: "You answer questions about files.".into(),
                tools: vec!["fs.read".into()],
                max_steps,
                ..AssistantArgs::new("local", token.to_string())
            };
            runtime
                .spawn::<Assistant>(SpawnSpec::new("helper").unwrap(), args)
                .await
                .unwrap()
        }
    };
    Node {
        runtime,
        tools,
        assistant,
    }
}

async fn stop(node: Node) {
    let Node {
        runtime,
        tools,
        assistant,
    } = node;
    runtime.shutdown().await.unwrap();
    tools.shutdown().await;
    drop(assistant);
}

fn files(dir: &Path) {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/todo.txt"), "buy milk").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_reads_a_file_answers_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    files(tmp.path());
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server, vec![], 4).await;
    server.push(Reply::Json(chat_tool_calls(
        &[("call_1", "fs_read", json!({"path": "todo.txt"}))],
        50,
        10,
    )));
    server.push(Reply::Json(chat_text("Your list says: buy milk.", 70, 8)));
    let answer = node
        .assistant
        .ask(
            UserTurn {
                user: "What is on my list?".into(),
            }
            .into(),
            T,
        )
        .await
        .unwrap();
    assert_eq!(answer.answer, "Your list says: buy milk.");
    assert_eq!((answer.steps, answer.stopped.as_deref()), (2, None));
    assert_eq!(answer.usage.total(), 138);

    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body["tools"][0]["function"]["name"], "fs_read");
    assert_eq!(sent[0].body["messages"][0]["role"], "system");
    let second = sent[1].body["messages"].as_array().unwrap();
    let tool = second.iter().find(|m| m["role"] == "tool").unwrap();
    assert_eq!(tool["tool_call_id"], "call_1");
    assert!(
        tool["content"].as_str().unwrap().contains("buy milk"),
        "{tool}"
    );

    let transcript = node
        .assistant
        .query(AssistantQuery::Transcript, T)
        .await
        .unwrap();
    let roles: Vec<&str> = transcript.iter().map(|e| e.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(transcript[1].tool_calls[0].name, "fs.read");
    assert_eq!(transcript[3].content, "Your list says: buy milk.");
    let as_json = serde_json::to_value(&transcript).unwrap();
    assert!(
        as_json[0].get("tool_calls").is_none(),
        "empty fields are left out: {as_json}"
    );
    stop(node).await;

    // After a restart the conversation is rebuilt from the journal, the model is not
    // asked again, and the next turn sends the whole kept conversation.
    let node = start(tmp.path(), &server, vec![], 4).await;
    let again = node
        .assistant
        .query(AssistantQuery::Transcript, T)
        .await
        .unwrap();
    assert_eq!(again, transcript);
    assert_eq!(server.requests().len(), 2);
    server.push(Reply::Json(chat_text("Nothing else.", 90, 3)));
    let next = node
        .assistant
        .ask(
            UserTurn {
                user: "Anything else?".into(),
            }
            .into(),
            T,
        )
        .await
        .unwrap();
    assert_eq!(next.answer, "Nothing else.");
    let third = server.requests()[2].body["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        third.len(),
        6,
        "system + 4 kept + the new question: {third:#?}"
    );
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tool_is_reported_to_the_model_and_steps_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    files(tmp.path());
    let server = ModelServer::start().await;
    // The token allows listing only: reading is denied, and the model is told.
    let node = start(
        tmp.path(),
        &server,
        vec![Caveat::Tool("fs.list".parse().unwrap())],
        2,
    )
    .await;
    let read = || {
        Reply::Json(chat_tool_calls(
            &[("call_x", "fs_read", json!({"path": "todo.txt"}))],
            20,
            5,
        ))
    };
    server.push(read());
    server.push(read());
    let answer = node
        .assistant
        .ask(
            UserTurn {
                user: "Read my list".into(),
            }
            .into(),
            T,
        )
        .await
        .unwrap();
    assert_eq!(answer.steps, 2);
    assert_eq!(answer.stopped.as_deref(), Some("max_steps"));
    let second = server.requests()[1].body["messages"].clone();
    let tool = second
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    let content = tool["content"].as_str().unwrap();
    assert!(content.starts_with("denied:"), "{content}");
    assert!(!content.contains("buy milk"));
    stop(node).await;
}

/// A journal that counts the records of `agent/helper` read through it (by stream reads,
/// log scans and replays), around the real sled journal.
struct Counting {
    inner: Arc<SledJournal>,
    read: Arc<AtomicU64>,
}

const HELPER_STREAM: &str = "agent/helper";

impl Counting {
    fn new(inner: Arc<SledJournal>) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            read: Arc::default(),
        })
    }

    /// Records of `agent/helper` read so far.
    fn helper_reads(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn counted_stream(&self, events: EventIter) -> EventIter {
        let read = Arc::clone(&self.read);
        Box::new(events.inspect(move |e| {
            if e.as_ref().is_ok_and(|e| e.stream == HELPER_STREAM) {
                read.fetch_add(1, Ordering::Relaxed);
            }
        }))
    }
}

#[async_trait::async_trait]
impl Journal for Counting {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        self.inner.append(stream, expected, events).await
    }
    async fn append_unsynced(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        self.inner.append_unsynced(stream, expected, events).await
    }
    async fn append_many_unsynced(
        &self,
        batches: &[StreamBatch<'_>],
    ) -> Result<Vec<AppendResult>, StoreError> {
        self.inner.append_many_unsynced(batches).await
    }
    async fn wait_durable(&self, position: u64) -> Result<(), StoreError> {
        self.inner.wait_durable(position).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        Journal::flush(&*self.inner).await
    }
    fn flushes(&self) -> u64 {
        self.inner.flushes()
    }
    fn head_position(&self) -> u64 {
        self.inner.head_position()
    }
    fn acknowledged_head(&self) -> u64 {
        self.inner.acknowledged_head()
    }
    fn write_failure(&self) -> Option<StoreError> {
        self.inner.write_failure()
    }
    fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.inner.stream_version(stream)
    }
    fn stream_position(&self, stream: &str, from_seq: u64) -> Result<Option<u64>, StoreError> {
        self.inner.stream_position(stream, from_seq)
    }
    fn iter_stream(&self, stream: &str, from_seq: u64) -> Result<EventIter, StoreError> {
        let events = self.inner.iter_stream(stream, from_seq)?;
        Ok(self.counted_stream(events))
    }
    fn iter_all(&self, from_position: u64) -> EventIter {
        self.counted_stream(self.inner.iter_all(from_position))
    }
    fn replay(
        &self,
        from_position: u64,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<u64, StoreError> {
        self.inner.replay(from_position, &mut |event| {
            if event.stream == HELPER_STREAM {
                self.read.fetch_add(1, Ordering::Relaxed);
            }
            visit(event)
        })
    }
    fn subscribe(&self, from_position: u64) -> Subscription {
        self.inner.subscribe(from_position)
    }
    async fn save_snapshot(
        &self,
        stream: &str,
        seq: u64,
        state: &[u8],
    ) -> Result<bool, StoreError> {
        self.inner.save_snapshot(stream, seq, state).await
    }
    fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream)
    }
    fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.inner.verify()
    }
}

/// A read-only tool whose first call never answers (within a minute); later calls
/// answer at once. Counts its calls.
#[derive(Clone)]
struct Stuck;

static STUCK_CALLS: AtomicU32 = AtomicU32::new(0);

impl Tool for Stuck {
    type Input = Value;
    type Output = Value;
    fn name(&self) -> &str {
        "stuck.read"
    }
    fn description(&self) -> &str {
        "Reads something that never comes."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::ReadOnly
    }
    async fn invoke(&self, _input: Value, _cx: ToolContext) -> Result<Value, ToolError> {
        if STUCK_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(json!("it came"))
    }
}

/// An assistant `helper` over a sled journal (seen through [`Counting`]), with `fs.read`
/// and `stuck.read`, the model `local` at `server`, `history`, snapshots every
/// `snapshot_every` messages (none: never) and a drain timeout of 200 ms.
struct Rig {
    runtime: Runtime,
    tools: ToolHost,
    journal: Arc<Counting>,
    assistant: AgentRef<Assistant>,
}

async fn open_rig(
    dir: &Path,
    server: &ModelServer,
    history: HistoryPolicy,
    snapshot_every: Option<u64>,
) -> Rig {
    let sled = Arc::new(SledJournal::open(dir.join("journal"), JournalConfig::default()).unwrap());
    let journal = Counting::new(sled);
    let authority = Authority::open(&dir.join("root.key"), journal.clone()).unwrap();
    let tools = ToolHost::builder(authority.clone())
        .tool(FsRead::new(dir.join("files")).unwrap())
        .tool(Stuck)
        .start()
        .await
        .unwrap();
    let models = common::local_model(&authority, journal.clone(), server);
    let config = RuntimeConfig {
        snapshot_every: snapshot_every.unwrap_or(u64::MAX),
        drain_timeout: Duration::from_millis(200),
        ..RuntimeConfig::default()
    };
    let runtime = common::assistant_runtime(journal.clone(), config, &tools, &models).await;
    let id = "helper".parse().unwrap();
    let assistant = match runtime.agent::<Assistant>(&id) {
        Ok(existing) => existing,
        Err(_) => {
            let args = AssistantArgs {
                system: "You keep a diary.".into(),
                tools: vec!["fs.read".into(), "stuck.read".into()],
                max_steps: 4,
                history,
                ..AssistantArgs::new("local", authority.mint([]).unwrap().to_string())
            };
            runtime
                .spawn::<Assistant>(SpawnSpec::new("helper").unwrap(), args)
                .await
                .unwrap()
        }
    };
    Rig {
        runtime,
        tools,
        journal,
        assistant,
    }
}

async fn close_rig(rig: Rig) {
    let Rig {
        runtime,
        tools,
        journal,
        assistant,
    } = rig;
    runtime.shutdown().await.unwrap();
    tools.shutdown().await;
    drop((assistant, journal));
}

async fn say(rig: &Rig, server: &ModelServer, i: usize) {
    server.push(Reply::Json(chat_text(&format!("Noted, entry {i}."), 40, 5)));
    let answer = rig
        .assistant
        .ask(
            UserTurn {
                user: format!("Diary entry {i}: nothing happened."),
            }
            .into(),
            T,
        )
        .await
        .unwrap();
    assert_eq!(answer.answer, format!("Noted, entry {i}."));
}

/// 200 turns with `keep_turns = 20` and a snapshot every 50 messages: after a restart
/// the transcript holds exactly the last 20 turns, and recovery read at most the 50
/// messages' worth of records after the last snapshot, not the whole conversation. The
/// same conversation without a bound and without snapshots reads every record, so the
/// count does see a full replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keep_turns_and_snapshots_a_restart_reads_a_bounded_tail() {
    const TURNS: usize = 210;
    const KEEP: u32 = 20;
    const EVERY: u64 = 50;
    let mut reads = Vec::new();
    for bounded in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        files(tmp.path());
        let server = ModelServer::start().await;
        let (history, snapshots) = if bounded {
            (
                HistoryPolicy {
                    keep_turns: Some(KEEP),
                    ..HistoryPolicy::default()
                },
                Some(EVERY),
            )
        } else {
            (HistoryPolicy::default(), None)
        };
        let rig = open_rig(tmp.path(), &server, history.clone(), snapshots).await;
        for i in 0..TURNS {
            say(&rig, &server, i).await;
        }
        let written = rig.journal.stream_version(HELPER_STREAM).unwrap();
        close_rig(rig).await;

        let rig = open_rig(tmp.path(), &server, history, snapshots).await;
        let transcript = rig
            .assistant
            .query(AssistantQuery::Transcript, T)
            .await
            .unwrap();
        let read = rig.journal.helper_reads();
        let per_turn = written / TURNS as u64;
        if bounded {
            assert_eq!(
                transcript.len(),
                2 * KEEP as usize,
                "user + answer per kept turn"
            );
            assert_eq!(
                transcript[0].content,
                format!("Diary entry {}: nothing happened.", TURNS - KEEP as usize)
            );
            assert!(
                read <= (EVERY + 1) * per_turn,
                "recovery read {read} records of {written} ({per_turn} per turn): more than the tail after the last snapshot"
            );
        } else {
            assert_eq!(transcript.len(), 2 * TURNS);
            assert!(
                read >= written,
                "recovery without snapshots read {read} records of {written}"
            );
        }
        assert_eq!(server.requests().len(), TURNS, "nothing asked again");
        reads.push((read, written));
        close_rig(rig).await;
    }
    eprintln!("records read by recovery (bounded, unbounded) of written: {reads:?}");
}

/// Issue 12, item 3: the journal could not be reopened in the same process for 10 s or
/// more after a shutdown that cut off a turn waiting on its model or on a tool, because
/// the stuck handler (holding the runtime's kernel, its extensions and so the journal)
/// outlived `Runtime::shutdown` by ~10 s, and the tool's call task (holding the authority,
/// so the journal) outlived `ToolHost::shutdown` until the tool returned. Now both
/// shutdowns end what they started, and the journal opens at once; the cut-off turn then
/// finishes on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_reopens_in_process_right_after_a_shutdown_that_cut_off_a_turn() {
    for stuck_in in ["model", "tool"] {
        let tmp = tempfile::tempdir().unwrap();
        files(tmp.path());
        let server = ModelServer::start().await;
        let rig = open_rig(tmp.path(), &server, HistoryPolicy::default(), None).await;
        STUCK_CALLS.store(0, Ordering::SeqCst);
        if stuck_in == "model" {
            server.push(Reply::Hang);
        } else {
            server.push(Reply::Json(chat_tool_calls(
                &[("call_s", "stuck_read", json!({}))],
                20,
                5,
            )));
        }
        let asking = {
            let assistant = rig.assistant.clone();
            tokio::spawn(async move {
                let turn = UserTurn {
                    user: "Read it.".into(),
                };
                let _ = assistant.ask(turn.into(), Duration::from_secs(60)).await;
            })
        };
        let deadline = Instant::now() + T;
        while !(server.queued() == 0
            && (stuck_in == "model" || STUCK_CALLS.load(Ordering::SeqCst) == 1))
        {
            assert!(
                Instant::now() < deadline,
                "{stuck_in}: the turn never got stuck"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let weak = Arc::downgrade(&rig.journal.inner);
        let started = Instant::now();
        close_rig(rig).await;
        let _ = asking.await;
        let shut_in = started.elapsed();
        // Ractor reports an actor stopped just before its task drops its state: allow
        // that instant (the bug held the journal for 10 s and more).
        let t = Instant::now();
        while weak.strong_count() > 0 && t.elapsed() < Duration::from_millis(500) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            weak.strong_count(),
            0,
            "{stuck_in}: the journal is still held 500 ms after both shutdowns ({shut_in:?})"
        );
        assert!(
            shut_in < Duration::from_secs(8),
            "{stuck_in}: shutdown took {shut_in:?}"
        );
        SledJournal::open(tmp.path().join("journal"), JournalConfig::default())
            .unwrap_or_else(|e| panic!("{stuck_in}: reopening right after shutdown: {e}"));

        // The cut-off turn finishes on its own after the restart.
        if stuck_in == "model" {
            server.push(Reply::Json(chat_text("Done.", 20, 3)));
        } else {
            server.push(Reply::Json(chat_text("It never came.", 20, 3)));
        }
        let rig = open_rig(tmp.path(), &server, HistoryPolicy::default(), None).await;
        let deadline = Instant::now() + T;
        loop {
            let transcript = rig
                .assistant
                .query(AssistantQuery::Transcript, T)
                .await
                .unwrap();
            if transcript
                .last()
                .is_some_and(|e| e.role == "assistant" && e.tool_calls.is_empty())
            {
                break;
            }
            assert!(Instant::now() < deadline, "{stuck_in}: {transcript:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if stuck_in == "tool" {
            // The cut-off read-only call ran again (and answered), once.
            assert_eq!(STUCK_CALLS.load(Ordering::SeqCst), 2);
        }
        assert_eq!(server.requests().len(), 2, "{stuck_in}: step 1 again, once");
        close_rig(rig).await;
    }
}
