//! Model calls made by durable agents (`ModelCalls::call_model`) over a real sled journal
//! and a scripted OpenAI-compatible server on 127.0.0.1: the answer is journaled and a
//! restart replays it without asking the model again; `model`, `max-tokens` and
//! `budget-tokens` caveats are enforced (the budget counted from journaled usage, across
//! restarts) and their denials audited; the API key appears in no journal record.
#![cfg(feature = "openai")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toka_actors::{Agent, AgentError, AgentRef, Context, Runtime, SpawnSpec};
use toka_store::{Journal, JournalConfig, SledJournal};
use toka_test_support::model_server::{ModelServer, Reply, chat_text};
use toka_tools::model::{ChatMessage, ModelCalls, ModelHost, ModelRequest, OpenAiClient};
use toka_tools::{Authority, Capability, Caveat, Secret};

const T: Duration = Duration::from_secs(10);
const KEY: &str = "sk-live-2b7e151628aed2a6abf7158809cf4f3c";

/// Asks the model on each message; keeps every answer (or error).
#[derive(Clone)]
struct Asker;

#[derive(Debug, Serialize, Deserialize)]
struct Ask {
    token: String,
    model: String,
    question: String,
    max_tokens: Option<u32>,
}

impl Agent for Asker {
    const KIND: &'static str = "test.asker";
    type Args = ();
    type Msg = Ask;
    type Reply = Result<String, String>;
    type State = Vec<Result<String, String>>;

    fn init(&self, _: &()) -> Result<Self::State, AgentError> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        state: &mut Self::State,
        ask: Ask,
    ) -> Result<Self::Reply, AgentError> {
        let token = Capability::parse(&ask.token).map_err(AgentError::msg)?;
        let mut request = ModelRequest::new(vec![ChatMessage::user(ask.question)]);
        request.max_tokens = ask.max_tokens;
        let answer = cx
            .call_model(&ask.model, &token, &request)
            .await
            .map(|r| format!("{} [{}]", r.content, r.usage.total()))
            .map_err(|e| e.to_string());
        state.push(answer.clone());
        // Numbered, so a test sees that a restart rebuilt the earlier answers.
        Ok(answer.map(|a| format!("{a} #{}", state.len())))
    }
}

struct Node {
    runtime: Runtime,
    asker: AgentRef<Asker>,
    journal: Arc<SledJournal>,
    authority: Authority,
}

async fn start(dir: &Path, server: &ModelServer) -> Node {
    let journal =
        Arc::new(SledJournal::open(dir.join("journal"), JournalConfig::default()).unwrap());
    let authority = Authority::open(&dir.join("root.key"), journal.clone()).unwrap();
    let client = OpenAiClient::builder(server.base_url(), "served-model")
        .api_key(Secret::new(KEY.as_bytes().to_vec()))
        .build()
        .unwrap();
    let host = ModelHost::builder(authority.clone(), journal.clone())
        .model("local.small", client.clone())
        .model("remote.big", client)
        .build();
    let runtime = Runtime::builder(journal.clone())
        .extension(host)
        .register(Asker)
        .start()
        .await
        .unwrap();
    let asker = match runtime.agent::<Asker>(&"asker".parse().unwrap()) {
        Ok(existing) => existing,
        Err(_) => runtime
            .spawn::<Asker>(SpawnSpec::new("asker").unwrap(), ())
            .await
            .unwrap(),
    };
    Node {
        runtime,
        asker,
        journal,
        authority,
    }
}

/// Shuts the node down and lets go of its journal.
async fn stop(node: Node) {
    let Node {
        runtime,
        asker,
        journal,
        authority,
    } = node;
    runtime.shutdown().await.unwrap();
    drop((asker, authority, journal));
}

fn ask(token: &Capability, model: &str, question: &str) -> Ask {
    Ask {
        token: token.to_string(),
        model: model.into(),
        question: question.into(),
        max_tokens: None,
    }
}

/// Every byte the journal holds, payloads and kinds, for leak checks.
fn journal_bytes(journal: &SledJournal) -> Vec<u8> {
    let mut all = Vec::new();
    for event in journal.read_all(1, usize::MAX).unwrap() {
        all.extend_from_slice(event.kind.as_bytes());
        all.extend_from_slice(&event.payload);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_journaled_and_never_asked_again_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await.with_api_key(KEY);
    let node = start(tmp.path(), &server).await;
    let token = node
        .authority
        .mint([Caveat::Model("local.*".parse().unwrap())])
        .unwrap();
    server.push(Reply::Json(chat_text("Paris.", 12, 3)));
    server.push(Reply::Json(chat_text("Berlin.", 14, 3)));
    for (question, answer) in [
        ("France?", "Paris. [15] #1"),
        ("Germany?", "Berlin. [17] #2"),
    ] {
        let got = node
            .asker
            .ask(ask(&token, "local.small", question), T)
            .await
            .unwrap();
        assert_eq!(got, Ok(answer.to_owned()));
    }
    assert_eq!(server.requests().len(), 2);
    assert_eq!(node.authority.denials().unwrap().len(), 0);
    let metrics = |node: &Node| node.runtime.extension::<ModelHost>().unwrap().metrics();
    let m = metrics(&node);
    assert_eq!(
        (m.calls, m.input_tokens, m.output_tokens),
        (2, 26, 6),
        "{m:?}"
    );
    let Node {
        runtime,
        asker,
        journal,
        authority,
    } = node;
    runtime.shutdown().await.unwrap();
    drop((asker, authority));
    let bytes = journal_bytes(&journal);
    assert!(
        !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
        "the API key is in the journal"
    );
    drop(journal);

    // Restarted: the state is rebuilt from the journal; the model is not asked again.
    let node = start(tmp.path(), &server).await;
    server.push(Reply::Json(chat_text("Rome.", 10, 2)));
    let got = node
        .asker
        .ask(ask(&token, "local.small", "Italy?"), T)
        .await
        .unwrap();
    assert_eq!(
        got,
        Ok("Rome. [12] #3".to_owned()),
        "the earlier answers were replayed"
    );
    let sent = server.requests();
    assert_eq!(sent.len(), 3, "recovery asked the model again: {sent:#?}");
    assert_eq!(sent[2].body["messages"][0]["content"], "Italy?");
    // The replayed answers are not counted again: only what the model answered now.
    let m = metrics(&node);
    assert_eq!(
        (m.calls, m.input_tokens, m.output_tokens),
        (1, 10, 2),
        "{m:?}"
    );
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_token_and_budget_caveats_are_enforced_and_audited_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server).await;
    let token = node
        .authority
        .mint([
            Caveat::Model("local.*".parse().unwrap()),
            Caveat::MaxTokens(64),
            Caveat::BudgetTokens(100),
        ])
        .unwrap();

    // Another model than the token allows: refused before any request, audited.
    let denied = node
        .asker
        .ask(ask(&token, "remote.big", "hi"), T)
        .await
        .unwrap();
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("remote.big")),
        "{denied:?}"
    );
    // More tokens than `max-tokens` allows.
    let mut greedy = ask(&token, "local.small", "hi");
    greedy.max_tokens = Some(65);
    let denied = node.asker.ask(greedy, T).await.unwrap();
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("65")),
        "{denied:?}"
    );
    assert!(server.requests().is_empty(), "denied calls reach no model");

    // Within limits: a call that names no limit is given the token's (64).
    server.push(Reply::Json(chat_text("one", 50, 30)));
    server.push(Reply::Json(chat_text("two", 40, 30)));
    let first = node
        .asker
        .ask(ask(&token, "local.small", "1"), T)
        .await
        .unwrap();
    assert_eq!(first, Ok("one [80] #3".to_owned()));
    assert_eq!(server.requests()[0].body["max_tokens"], 64);
    let second = node
        .asker
        .ask(ask(&token, "local.small", "2"), T)
        .await
        .unwrap();
    assert_eq!(second, Ok("two [70] #4".to_owned()));
    assert_eq!(
        server.requests()[1].body["max_tokens"],
        20,
        "only what is left of the budget (100 - 80)"
    );
    // 150 of 100 spent: refused.
    let spent = node
        .asker
        .ask(ask(&token, "local.small", "3"), T)
        .await
        .unwrap();
    assert!(
        spent.as_ref().is_err_and(|e| e.contains("budget")),
        "{spent:?}"
    );
    assert_eq!(server.requests().len(), 2);
    let denials = node.authority.denials().unwrap();
    assert_eq!(denials.len(), 3, "{denials:?}");
    assert!(
        denials
            .iter()
            .all(|d| d.tool.starts_with("model:") && d.agent.as_deref() == Some("asker"))
    );
    stop(node).await;

    // The budget is counted from the journal: still spent after a restart.
    let node = start(tmp.path(), &server).await;
    let again = node
        .asker
        .ask(ask(&token, "local.small", "4"), T)
        .await
        .unwrap();
    assert!(
        again.as_ref().is_err_and(|e| e.contains("budget")),
        "{again:?}"
    );
    assert_eq!(server.requests().len(), 2);
    // A fresh token with its own budget is not affected by another token's caveats, but
    // the agent's spend is the agent's: 150 tokens already.
    let bigger = node.authority.mint([Caveat::BudgetTokens(1_000)]).unwrap();
    server.push(Reply::Json(chat_text("ok", 1, 1)));
    let ok = node
        .asker
        .ask(ask(&bigger, "remote.big", "5"), T)
        .await
        .unwrap();
    assert_eq!(ok, Ok("ok [2] #7".to_owned()));
    assert_eq!(server.requests()[2].body["max_tokens"], 850);
    stop(node).await;
}
