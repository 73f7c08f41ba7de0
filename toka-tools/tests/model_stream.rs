//! Live events of an agent's model calls (`ModelHost::subscribe`), over a real sled
//! journal and a scripted OpenAI-compatible server on 127.0.0.1 that streams slowly:
//! - a subscriber gets the text deltas while the model generates, before the call
//!   returns; the journal holds the complete answer only (the handling appends the same
//!   records as an unstreamed one, and no delta is a record of its own);
//! - without a subscriber the model is asked without streaming (and after the last
//!   subscription is dropped, again without);
//! - a subscriber that never reads loses events (and learns how many) but never holds
//!   up or fails the call.
#![cfg(feature = "openai")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toka_actors::{Agent, AgentError, AgentRef, Context, Runtime, SpawnSpec};
use toka_store::{Journal, JournalConfig, SledJournal};
use toka_test_support::model_server::{ModelServer, Recorded, Reply, chat_text, sse_text};
use toka_tools::model::{
    ChatMessage, Lagged, ModelCalls, ModelHost, ModelRequest, OpenAiClient, TurnEvent,
};
use toka_tools::{Authority, Capability};

const T: Duration = Duration::from_secs(20);

/// Asks the model once per message; replies with the answer's text.
#[derive(Clone)]
struct Asker;

#[derive(Debug, Serialize, Deserialize)]
struct Ask {
    token: String,
    question: String,
}

impl Agent for Asker {
    const KIND: &'static str = "test.asker";
    type Args = ();
    type Msg = Ask;
    type Reply = Result<String, String>;
    type State = ();

    fn init(&self, (): &()) -> Result<(), AgentError> {
        Ok(())
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        (): &mut (),
        ask: Ask,
    ) -> Result<Self::Reply, AgentError> {
        let token = Capability::parse(&ask.token).map_err(AgentError::msg)?;
        let request = ModelRequest::new(vec![ChatMessage::user(ask.question)]);
        Ok(cx
            .call_model("local", &token, &request)
            .await
            .map(|r| r.content)
            .map_err(|e| e.to_string()))
    }
}

struct Node {
    runtime: Runtime,
    asker: AgentRef<Asker>,
    host: ModelHost,
    journal: Arc<SledJournal>,
    token: String,
}

async fn start(dir: &Path, server: &ModelServer) -> Node {
    let journal =
        Arc::new(SledJournal::open(dir.join("journal"), JournalConfig::default()).unwrap());
    let authority = Authority::open(&dir.join("root.key"), journal.clone()).unwrap();
    let client = OpenAiClient::builder(server.base_url(), "served-model")
        .build()
        .unwrap();
    let host = ModelHost::builder(authority.clone(), journal.clone())
        .model("local", client)
        .build();
    let runtime = Runtime::builder(journal.clone())
        .extension(host.clone())
        .register(Asker)
        .start()
        .await
        .unwrap();
    let asker = runtime
        .spawn::<Asker>(SpawnSpec::new("asker").unwrap(), ())
        .await
        .unwrap();
    let token = authority.mint([]).unwrap().to_string();
    Node {
        runtime,
        asker,
        host,
        journal,
        token,
    }
}

impl Node {
    fn ask(&self, question: &str) -> tokio::task::JoinHandle<Result<String, String>> {
        let asker = self.asker.clone();
        let ask = Ask {
            token: self.token.clone(),
            question: question.to_owned(),
        };
        tokio::spawn(async move { asker.ask(ask, T).await.unwrap() })
    }

    /// The kinds and payloads of the asker's records after position `after` of its stream.
    fn records_after(&self, after: u64) -> Vec<(String, Vec<u8>)> {
        self.journal
            .read_stream("agent/asker", after + 1, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.payload))
            .collect()
    }

    fn version(&self) -> u64 {
        self.journal.stream_version("agent/asker").unwrap()
    }
}

fn streamed(request: &Recorded) -> bool {
    request
        .body
        .get("stream")
        .and_then(serde_json::Value::as_bool)
        == Some(true)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_deltas_before_the_call_returns_and_only_the_answer_is_journaled() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server).await;

    // No subscriber: asked without streaming.
    server.push(Reply::Json(chat_text("Plain answer.", 5, 3)));
    let before = node.version();
    assert_eq!(
        node.ask("First?").await.unwrap(),
        Ok("Plain answer.".into())
    );
    let plain_records = node.records_after(before);
    assert!(!streamed(&server.requests()[0]), "asked with a stream");

    // A subscriber: asked with a stream, the deltas arrive while the model generates.
    let fragments = ["Strea", "ming ", "works", " fine."];
    let full = fragments.concat();
    server.push(Reply::SlowSse {
        events: sse_text(&fragments),
        every: Duration::from_millis(300),
    });
    let mut live = node.host.subscribe("asker");
    let before = node.version();
    let call = node.ask("Second?");
    let first = tokio::time::timeout(T, live.recv()).await.unwrap();
    assert_eq!(
        first,
        Ok(TurnEvent::Delta {
            text: fragments[0].into()
        })
    );
    assert!(
        !call.is_finished(),
        "the call returned before its first delta was seen"
    );
    let mut texts = vec![fragments[0].to_owned()];
    let done = loop {
        match tokio::time::timeout(T, live.recv()).await.unwrap().unwrap() {
            TurnEvent::Delta { text } => texts.push(text),
            done @ TurnEvent::StepDone { .. } => break done,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(texts, fragments, "every delta, in order");
    let TurnEvent::StepDone { finish, usage } = done else {
        unreachable!()
    };
    assert_eq!(finish, "stop");
    assert_eq!(usage.output_tokens, fragments.len() as u64);
    assert_eq!(call.await.unwrap(), Ok(full.clone()));
    assert!(streamed(&server.requests()[1]), "asked without a stream");

    // The journal: the same records as the unstreamed handling, and no delta on its own.
    let streamed_records = node.records_after(before);
    // (A handling's `toka.steps` record may be written after its reply: left out.)
    let kinds = |records: &[(String, Vec<u8>)]| {
        records
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| !k.starts_with("toka.steps"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(&streamed_records),
        kinds(&plain_records),
        "a streamed call journals what an unstreamed one does"
    );
    let all = node.journal.read_all(1, usize::MAX).unwrap();
    assert!(
        all.iter().any(|e| contains(&e.payload, &full)),
        "the complete answer is not journaled"
    );
    for event in &all {
        for fragment in fragments {
            assert!(
                !contains(&event.payload, fragment) || contains(&event.payload, &full),
                "delta {fragment:?} is journaled on its own in {} #{}",
                event.stream,
                event.seq
            );
        }
    }

    // The last subscription gone, the next call is not streamed.
    drop(live);
    server.push(Reply::Json(chat_text("Plain again.", 5, 3)));
    assert_eq!(node.ask("Third?").await.unwrap(), Ok("Plain again.".into()));
    assert!(!streamed(&server.requests()[2]), "asked with a stream");
    assert_eq!(server.requests().len(), 3);
    node.runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_never_holds_up_the_call() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let node = start(tmp.path(), &server).await;
    let extra = 50;
    let chunks: Vec<String> = (0..toka_tools::model::live::LIVE_CAPACITY + extra)
        .map(|i| format!("{} ", i % 10))
        .collect();
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    server.push(Reply::Sse(sse_text(&chunks)));
    let mut stuck = node.host.subscribe("asker");
    let answer = tokio::time::timeout(T, node.ask("Count?"))
        .await
        .expect("the call waited for its subscriber")
        .unwrap();
    assert_eq!(answer, Ok(chunks.concat()));
    // It lost the oldest events (the deltas beyond the channel's capacity, and the end).
    let lost = extra as u64 + 1;
    assert_eq!(stuck.recv().await, Err(Lagged(lost)));
    assert!(matches!(stuck.recv().await, Ok(TurnEvent::Delta { .. })));
    node.runtime.shutdown().await.unwrap();
}
