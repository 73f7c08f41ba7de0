//! The assistant beyond one model and one tool at a time, over a real sled journal, a
//! real `fs.read` tool and a scripted OpenAI-compatible server: the parallel tool calls
//! of one answer run as one concurrent batch; `agents.ask` delegates to another assistant
//! (scoped by the token, denials audited and reported to the model, nothing asked twice
//! after a restart); bounded and summarised history.
#![cfg(feature = "openai")]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use toka_actors::record::RecordKind;
use toka_actors::{AgentId, AgentRef, Runtime, RuntimeConfig, SpawnSpec};
use toka_store::{JournalConfig, SledJournal};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};
use toka_tools::model::{
    AGENTS_ASK, Assistant, AssistantArgs, AssistantMsg, AssistantQuery, HistoryPolicy, UserTurn,
};
use toka_tools::{Authority, Caveat, FsRead, ToolHost};

const T: Duration = Duration::from_secs(10);

struct Node {
    runtime: Runtime,
    tools: ToolHost,
    authority: Authority,
}

/// A runtime with `fs.read` over `dir/files` and the model `local` at `server`.
async fn start(dir: &Path, server: &ModelServer) -> Node {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/a.txt"), "alpha").unwrap();
    std::fs::write(dir.join("files/b.txt"), "beta").unwrap();
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
    Node {
        runtime,
        tools,
        authority,
    }
}

impl Node {
    /// Spawns assistant `id` with `tools`, holding a token with `caveats`, or returns it
    /// if it exists (after a restart).
    async fn assistant(
        &self,
        id: &str,
        tools: &[&str],
        caveats: Vec<Caveat>,
        history: HistoryPolicy,
    ) -> AgentRef<Assistant> {
        if let Ok(existing) = self.runtime.agent::<Assistant>(&id.parse().unwrap()) {
            return existing;
        }
        let token = self.authority.mint(caveats).unwrap();
        let args = AssistantArgs {
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            history,
            ..AssistantArgs::new("local", token.to_string())
        };
        self.runtime
            .spawn::<Assistant>(SpawnSpec::new(id).unwrap(), args)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.runtime.shutdown().await.unwrap();
        self.tools.shutdown().await;
    }

    /// The kinds of agent `id`'s records, in journal order.
    fn record_kinds(&self, id: &str) -> Vec<String> {
        let id: AgentId = id.parse().unwrap();
        self.runtime
            .journal()
            .read_stream(id.stream(), 1, 10_000)
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect()
    }
}

fn user(text: &str) -> AssistantMsg {
    UserTurn { user: text.into() }.into()
}

/// The content of the tool messages of a recorded model request.
fn tool_results(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parallel_tool_calls_of_one_answer_run_as_one_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server).await;
    let a = node
        .assistant("reader", &["fs.read"], vec![], HistoryPolicy::default())
        .await;
    server.push(Reply::Json(chat_tool_calls(
        &[
            ("c1", "fs_read", json!({"path": "a.txt"})),
            ("c2", "fs_read", json!({"path": "b.txt"})),
            ("c3", "fs_read", json!({"path": "../escape"})),
        ],
        30,
        9,
    )));
    server.push(Reply::Json(chat_text("alpha and beta", 60, 4)));
    let answer = a.ask(user("Read both files"), T).await.unwrap();
    assert_eq!(answer.answer, "alpha and beta");
    // The results come back in the calls' order, a failing one reported as an error.
    let results = tool_results(&server.requests()[1].body);
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results[0].contains("alpha"), "{results:?}");
    assert!(results[1].contains("beta"), "{results:?}");
    assert!(results[2].starts_with("error"), "{results:?}");
    // All three intents were journaled before any outcome: one concurrent batch, not
    // three calls one after the other.
    let effects: Vec<String> = node
        .record_kinds("reader")
        .into_iter()
        .filter(|k| *k == RecordKind::Intent.stored() || *k == RecordKind::Result.stored())
        .collect();
    let shape: String = effects
        .iter()
        .map(|k| {
            if *k == RecordKind::Intent.stored() {
                'I'
            } else {
                'R'
            }
        })
        .collect();
    // Model call 1 (intent, result), the batch of three, model call 2.
    assert_eq!(shape, "IRIIIRRRIR");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assistant_asks_another_within_its_token_and_never_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server).await;
    let lead_caveats = || {
        vec![
            Caveat::Agent("lead".into()),
            Caveat::Tool("agents.ask.research.*".parse().unwrap()),
        ]
    };
    let lead = node
        .assistant(
            "lead",
            &[AGENTS_ASK],
            lead_caveats(),
            HistoryPolicy::default(),
        )
        .await;
    let researcher = node
        .assistant("research.one", &[], vec![], HistoryPolicy::default())
        .await;
    node.assistant("outsider", &[], vec![], HistoryPolicy::default())
        .await;
    // The lead's model delegates twice in one answer: to a researcher (allowed) and to
    // an outsider (denied by the token); the researcher's model answers; the lead's
    // model sums up.
    server.push(Reply::Json(chat_tool_calls(
        &[
            (
                "d1",
                "agents_ask",
                json!({"agent": "research.one", "message": {"user": "What is 6 x 7?"}}),
            ),
            (
                "d2",
                "agents_ask",
                json!({"agent": "outsider", "message": {"user": "Hi"}}),
            ),
        ],
        40,
        20,
    )));
    server.push(Reply::Json(chat_text("42", 15, 1)));
    server.push(Reply::Json(chat_text("The researcher says 42.", 80, 6)));
    let answer = lead.ask(user("Ask the team: 6 x 7?"), T).await.unwrap();
    assert_eq!(answer.answer, "The researcher says 42.");
    let sent = server.requests();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].body["tools"][0]["function"]["name"], "agents_ask");
    assert_eq!(sent[1].body["messages"][0]["content"], "What is 6 x 7?");
    let results = tool_results(&sent[2].body);
    assert!(results[0].contains("\"answer\":\"42\""), "{results:?}");
    assert!(results[1].starts_with("denied:"), "{results:?}");
    // The researcher kept its own conversation; the denial was audited once.
    let researched = researcher
        .query(AssistantQuery::Transcript, T)
        .await
        .unwrap();
    assert_eq!(researched.last().unwrap().content, "42");
    let denials = node.authority.denials().unwrap();
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0].tool, "agents.ask.outsider");
    assert_eq!(denials[0].agent.as_deref(), Some("lead"));
    let transcript = lead.query(AssistantQuery::Transcript, T).await.unwrap();
    // Agent references keep the runtime's journal open: drop them to reopen it.
    drop((lead, researcher));
    node.stop().await;

    // After a restart both conversations are rebuilt; nobody is asked again.
    let node = start(tmp.path(), &server).await;
    let lead = node
        .assistant(
            "lead",
            &[AGENTS_ASK],
            lead_caveats(),
            HistoryPolicy::default(),
        )
        .await;
    assert_eq!(
        lead.query(AssistantQuery::Transcript, T).await.unwrap(),
        transcript
    );
    assert_eq!(server.requests().len(), 3, "no model asked again");
    assert_eq!(node.authority.denials().unwrap().len(), 1, "no new denial");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assistant_cannot_ask_itself_or_an_unknown_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server).await;
    let solo = node
        .assistant("solo", &[AGENTS_ASK], vec![], HistoryPolicy::default())
        .await;
    server.push(Reply::Json(chat_tool_calls(
        &[
            (
                "s1",
                "agents_ask",
                json!({"agent": "solo", "message": {"user": "?"}}),
            ),
            (
                "s2",
                "agents_ask",
                json!({"agent": "ghost", "message": {"user": "?"}}),
            ),
            ("s3", "agents_ask", json!({"agent": "solo"})),
        ],
        10,
        10,
    )));
    server.push(Reply::Json(chat_text("I am on my own.", 10, 5)));
    let answer = solo.ask(user("Ask around"), T).await.unwrap();
    assert_eq!(answer.answer, "I am on my own.");
    let results = tool_results(&server.requests()[1].body);
    assert!(results[0].contains("cannot ask itself"), "{results:?}");
    assert!(results[1].contains("ghost"), "{results:?}");
    assert!(
        results[2].contains("missing field `message`"),
        "{results:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summarising_history_folds_old_turns_into_a_summary_that_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server).await;
    let policy = HistoryPolicy {
        keep_turns: Some(2),
        summarize: true,
        ..HistoryPolicy::default()
    };
    let a = node.assistant("memo", &[], vec![], policy.clone()).await;
    for n in 1..=2 {
        server.push(Reply::Json(chat_text(&format!("answer {n}"), 10, 2)));
        a.ask(user(&format!("question {n}")), T).await.unwrap();
    }
    assert_eq!(
        server.requests().len(),
        2,
        "within the limit: no summary yet"
    );
    // The third turn exceeds two kept turns: the two oldest fold into a summary (one
    // model call), leaving one turn.
    server.push(Reply::Json(chat_text("answer 3", 10, 2)));
    server.push(Reply::Json(chat_text(
        "The user asked questions 1 and 2.",
        30,
        8,
    )));
    let third = a.ask(user("question 3"), T).await.unwrap();
    assert_eq!(third.usage.total(), 12 + 38, "the summary's tokens count");
    let sent = server.requests();
    assert_eq!(sent.len(), 4);
    let asked = sent[3].body["messages"][1]["content"].as_str().unwrap();
    assert!(
        asked.contains("user: question 1") && asked.contains("assistant: answer 2"),
        "{asked}"
    );
    assert!(
        !asked.contains("question 3"),
        "the kept turn is not summarised"
    );
    let transcript = a.query(AssistantQuery::Transcript, T).await.unwrap();
    let roles: Vec<&str> = transcript.iter().map(|e| e.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert!(transcript[0].content.contains("questions 1 and 2"));
    drop(a);
    node.stop().await;

    // Rebuilt after a restart; the next turn sends the summary with the system prompt.
    let node = start(tmp.path(), &server).await;
    let a = node.assistant("memo", &[], vec![], policy).await;
    assert_eq!(
        a.query(AssistantQuery::Transcript, T).await.unwrap(),
        transcript
    );
    server.push(Reply::Json(chat_text("answer 4", 10, 2)));
    a.ask(user("question 4"), T).await.unwrap();
    let fifth = &server.requests()[4].body["messages"];
    assert!(
        fifth[0]["content"]
            .as_str()
            .unwrap()
            .contains("Summary of the earlier conversation:\nThe user asked questions 1 and 2."),
        "{fifth}"
    );
    assert_eq!(
        fifth.as_array().unwrap().len(),
        4,
        "system, turn 3, question 4"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_drops_the_oldest_turns_but_keeps_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server).await;
    // About 100 tokens: a turn of two 200-byte messages is ~108 estimated tokens.
    let policy = HistoryPolicy {
        max_tokens: Some(150),
        ..HistoryPolicy::default()
    };
    let a = node.assistant("brief", &[], vec![], policy).await;
    let long = "x".repeat(200);
    for _ in 0..3 {
        server.push(Reply::Json(chat_text(&long, 10, 2)));
        a.ask(user(&long), T).await.unwrap();
    }
    let transcript = a.query(AssistantQuery::Transcript, T).await.unwrap();
    assert_eq!(transcript.len(), 2, "only the newest turn fits the budget");
    // Each request carried at most the previous turn plus the new question.
    let sizes: Vec<usize> = server
        .requests()
        .iter()
        .map(|r| r.body["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [1, 3, 3]);
    node.stop().await;
}
