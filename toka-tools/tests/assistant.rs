//! The assistant agent over a real sled journal, a real `fs.read` tool and a scripted
//! OpenAI-compatible server: a turn that calls a tool and answers, the transcript query,
//! a denied tool reported to the model, `max_steps`, and a restart that rebuilds the
//! conversation without asking the model again.
#![cfg(feature = "openai")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use toka_actors::{AgentRef, Runtime, SpawnSpec};
use toka_store::{JournalConfig, SledJournal};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};
use toka_tools::model::{
    Assistant, AssistantArgs, AssistantQuery, ModelHost, OpenAiClient, UserTurn,
};
use toka_tools::{Authority, Caveat, FsRead, ToolHost};

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
    let models = ModelHost::builder(authority.clone(), journal.clone())
        .model(
            "local",
            OpenAiClient::builder(server.base_url(), "served")
                .build()
                .unwrap(),
        )
        .build();
    let runtime = Runtime::builder(journal)
        .extension(tools.clone())
        .extension(models)
        .register_with_queries(Assistant::new())
        .start()
        .await
        .unwrap();
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
