//! The built-in `assistant` kind on the real node binary, with a model from `[models.NAME]`
//! whose API key is in the vault (`secret set`), against a scripted OpenAI-compatible
//! server on 127.0.0.1:
//! - a turn over HTTP (a tool call, then the answer), the transcript query, the key sent
//!   to the model and found in no export of the journal nor in `secret list`;
//! - `kill -9` while the model answers a turn's second step: after the restart the turn
//!   finishes on its own; the completed first step is not asked again.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Node, admin_token, cli};
use serde_json::{Value, json};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};

const KEY: &str = "sk-node-test-4f1c9e2b7a6d3c8e5b0a";

/// A data dir with `files/notes.txt`, the key in the vault, and a config naming the model
/// `local` at `server` and the file tools; returns the config file.
fn setup(tmp: &Path, server: &ModelServer) -> std::path::PathBuf {
    let dir = tmp.join("data");
    let files = tmp.join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(
        files.join("notes.txt"),
        "Meeting moved to Thursday, room B.",
    )
    .unwrap();
    cli(&dir, &["init"]);
    let mut set = Command::new(BIN)
        .args(["secret", "set", "openai-key", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(format!("{KEY}\n").as_bytes())
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains(KEY),
        "secret set echoed the key: {printed}"
    );
    let config = tmp.join("toka.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"warn\"\n[tools]\nfs_root = {:?}\n\
             [models.local]\nprovider = \"openai\"\nbase_url = {:?}\nmodel = \"scripted\"\n\
             api_key_secret = \"openai-key\"\ntimeout_secs = 30\nmax_retries = 0\n",
            files.to_str().unwrap(),
            server.base_url(),
        ),
    )
    .unwrap();
    config
}

fn start(tmp: &Path, config: &Path) -> Node {
    Node::start_with(&tmp.join("data"), &["--config", config.to_str().unwrap()])
}

fn spawn_assistant(node: &Node, token: &str) {
    let spawn = json!({
        "id": "helper",
        "kind": "assistant",
        "args": {
            "model": "local",
            "system": "You answer questions about files.",
            "tools": ["fs.read"],
            "max_steps": 4,
            "token": token,
        }
    });
    let (status, body) = node.json("POST", "/agents", token, &spawn);
    assert_eq!(status, 201, "{body}");
}

fn transcript(node: &Node, token: &str) -> Vec<Value> {
    let (status, body) = node.json("POST", "/agents/helper/query", token, &json!("transcript"));
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

fn read_notes() -> Reply {
    Reply::Json(chat_tool_calls(
        &[("call_1", "fs_read", json!({"path": "notes.txt"}))],
        60,
        12,
    ))
}

#[test]
fn an_assistant_answers_over_http_with_a_key_from_the_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let config = setup(tmp.path(), &server);
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant(&node, &token);

    server.push(read_notes());
    server.push(Reply::Json(chat_text("On Thursday, in room B.", 90, 8)));
    let (status, answer) = node.json(
        "POST",
        "/agents/helper/ask",
        &token,
        &json!({"user": "When is the meeting?"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["answer"], "On Thursday, in room B.");
    assert_eq!(answer["steps"], 2);
    let roles: Vec<String> = transcript(&node, &token)
        .iter()
        .map(|e| e["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);

    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let tool = sent[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert!(
        tool["content"].as_str().unwrap().contains("room B"),
        "{tool}"
    );
    assert!(node.sigterm().success());

    // The key is nowhere in the journal, nor in what `secret list` prints.
    let dir = tmp.path().join("data");
    let export = cli(&dir, &["events", "export", "--json"]);
    assert!(!export.contains(KEY), "the API key is in the journal");
    assert!(
        !export.contains(&token),
        "the assistant's token is in the journal in clear"
    );
    assert_eq!(cli(&dir, &["secret", "list"]), "openai-key");
}

#[test]
fn a_turn_cut_by_kill_9_finishes_on_its_own_after_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let config = setup(tmp.path(), &server);
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant(&node, &token);

    // Step 1 answers (a tool call); step 2 never does: the node is killed while it waits.
    server.push(read_notes());
    server.push(Reply::Hang);
    let addr_token = token.clone();
    let asker = {
        let addr = node.addr;
        std::thread::spawn(move || {
            // The connection dies with the node; nothing to check here.
            let _ = std::net::TcpStream::connect(addr).and_then(|mut s| {
                let body = json!({"user": "When is the meeting?"}).to_string();
                write!(
                    s,
                    "POST /agents/helper/ask HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {addr_token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                let mut sink = Vec::new();
                std::io::Read::read_to_end(&mut s, &mut sink)
            });
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second step never reached the model"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill_9();
    let _ = asker.join();

    server.push(Reply::Json(chat_text("On Thursday, in room B.", 90, 8)));
    let node = start(tmp.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let entries = transcript(&node, &token);
        if entries
            .last()
            .is_some_and(|e| e["role"] == "assistant" && e["content"] == "On Thursday, in room B.")
        {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "the turn did not finish: {entries:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let roles: Vec<&str> = entries
        .iter()
        .map(|e| e["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant"],
        "one turn, once"
    );

    let sent = server.requests();
    assert_eq!(
        sent.len(),
        3,
        "step 1 once, step 2 cut then asked again: {sent:#?}"
    );
    let asked_first = sent.iter().filter(|r| r.body == sent[0].body).count();
    assert_eq!(asked_first, 1, "the answered step was asked again");
    assert_eq!(
        sent[1].body, sent[2].body,
        "the cut step is asked again as it was"
    );
    assert!(node.sigterm().success());
}
