//! OpenTelemetry traces from the real `toka-node` binary (feature `otel`) to a real OTLP
//! receiver: `tests/otel/receiver.py`, built on the official `opentelemetry-proto`
//! bindings (installed by `tests/otel/setup.sh`, which `.ci/run` calls), serving
//! OTLP/HTTP on 127.0.0.1 and writing each span it receives as a JSON line.
//!
//! One assistant (a scripted OpenAI-compatible model server) and `[otel]` in the config:
//! - an ask with a `traceparent` header: one trace from the caller's span through the
//!   HTTP span, the durable append and the handling down to the model calls (GenAI
//!   attributes, token usage) and the tool call the model asked for; a direct tool call
//!   over HTTP;
//! - a message sent with another `traceparent`, `kill -9` while its handling waits for the
//!   model: after the restart the recovery's handling is a new trace *linked* to the
//!   send's append span, and the replay of the first turn emits no handling span (each
//!   message's handling is exported once);
//! - no API key or capability token anywhere in what the receiver got.
//!
//! Without the receiver's venv the test is skipped, unless `TOKA_REQUIRE_OTEL_RECEIVER=1`
//! (CI), where it fails.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Node, admin_token, cli, transcript};
use serde_json::{Value, json};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};

const KEY: &str = "sk-otel-test-8d2f6a1c9e4b7d3a0f5c";

/// The caller's trace (turn 1) and span.
const TRACE_1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_1: &str = "00f067aa0ba902b7";
/// The trace of the message cut by `kill -9`.
const TRACE_2: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_2: &str = "b7ad6b7169203331";

/// The receiver: a Python child writing spans to `out`.
struct Receiver {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts the receiver, or `None` (skip) when its venv is missing and not required.
    fn start(tmp: &Path) -> Option<Receiver> {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel");
        let python = here.join(".venv/bin/python");
        if !python.exists() {
            assert!(
                std::env::var("TOKA_REQUIRE_OTEL_RECEIVER").as_deref() != Ok("1"),
                "the OTLP receiver is missing: run toka-node/tests/otel/setup.sh"
            );
            eprintln!("skipped: no OTLP receiver (toka-node/tests/otel/setup.sh installs it)");
            return None;
        }
        let out = tmp.join("spans.jsonl");
        let mut child = Command::new(python)
            .arg(here.join("receiver.py"))
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver said {line:?}"));
        Some(Receiver { child, out, port })
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (at most 20 s) until `done` holds of the spans received.
    fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "never received {what}: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What a span is: `http.request` (named `METHOD ROUTE`), `gen_ai.chat` (`chat
/// MODEL`), `toka.tool.call` (`tool NAME`), or its name.
fn kind_of(span: &Value) -> &str {
    let attributes = &span["attributes"];
    if attributes.get("http.route").is_some() {
        "http.request"
    } else if attributes["gen_ai.operation.name"] == "chat" {
        "gen_ai.chat"
    } else if attributes.get("tool.name").is_some() {
        "toka.tool.call"
    } else {
        span["name"].as_str().unwrap_or_default()
    }
}

fn named<'a>(spans: &'a [Value], kind: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| kind_of(s) == kind).collect()
}

fn in_trace<'a>(spans: &'a [Value], trace: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["trace_id"] == trace).collect()
}

/// The only span of `spans` satisfying `pick`.
fn one<'a>(spans: &[&'a Value], what: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = spans.iter().copied().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

/// `POST path` with `body`, the token and a `traceparent`; the status and the body.
fn post_traced(
    node: &Node,
    path: &str,
    token: &str,
    body: &Value,
    traceparent: &str,
) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = TcpStream::connect(node.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         traceparent: {traceparent}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn start(tmp: &Path, config: &Path) -> Node {
    let mut command = Command::new(common::BIN);
    command
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.join("data"))
        .arg("--config")
        .arg(config)
        // Export ended spans within 100 ms, so they are out before a kill -9.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    Node::spawn(command)
}

#[test]
fn traces_go_from_the_request_through_the_journal_to_the_handling_and_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(receiver) = Receiver::start(tmp.path()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let dir = tmp.path().join("data");
    let files = common::notes_dir(tmp.path());
    cli(&dir, &["init"]);
    common::set_secret(&dir, "openai-key", KEY);
    let config = tmp.path().join("toka.toml");
    std::fs::write(
        &config,
        format!(
            "log = \"warn\"\n[tools]\nfs_root = {:?}\n\
             [models.local]\nprovider = \"openai\"\nbase_url = {:?}\nmodel = \"scripted\"\n\
             api_key_secret = \"openai-key\"\ntimeout_secs = 30\nmax_retries = 0\n\
             [otel]\nendpoint = \"http://127.0.0.1:{}\"\nservice_name = \"toka-otel-test\"\n",
            files.to_str().unwrap(),
            server.base_url(),
            receiver.port,
        ),
    )
    .unwrap();
    let node = start(tmp.path(), &config);
    let token = admin_token(&dir);
    common::spawn_assistant(
        &node,
        &token,
        &token,
        "You answer questions about files.",
        &["fs.read"],
    );

    // Turn 1: an ask under the caller's trace; the model asks for fs.read, then answers.
    server.push(Reply::Json(chat_tool_calls(
        &[("call_1", "fs_read", json!({"path": "notes.txt"}))],
        60,
        12,
    )));
    server.push(Reply::Json(chat_text("On Thursday, in room B.", 90, 8)));
    let (status, answer) = post_traced(
        &node,
        "/agents/helper/ask",
        &token,
        &json!({"user": "When is the meeting?"}),
        &format!("00-{TRACE_1}-{CALLER_1}-01"),
    );
    assert_eq!(status, 200, "{answer}");
    // A tool called over HTTP (no traceparent: a trace of its own).
    let (status, out) = node.json(
        "POST",
        "/tools/fs.read/invoke",
        &token,
        &json!({"path": "notes.txt"}),
    );
    assert_eq!(status, 200, "{out}");

    let spans = receiver.wait_for("turn 1's spans", |spans| {
        named(spans, "toka.handle")
            .iter()
            .any(|s| s["trace_id"] == TRACE_1)
            && named(spans, "toka.tool.call").len() >= 2
            && named(spans, "gen_ai.chat").len() >= 2
            && named(spans, "http.request").len() >= 3
    });
    assert!(
        spans
            .iter()
            .all(|s| s["resource"]["service.name"] == "toka-otel-test")
    );
    let turn = in_trace(&spans, TRACE_1);
    let http = one(&turn, "the ask's HTTP span", |s| {
        kind_of(s) == "http.request"
    });
    assert_eq!(http["parent_span_id"], CALLER_1, "{http:#}");
    assert_eq!(http["name"], "POST /agents/{id}/ask");
    assert_eq!(http["attributes"]["http.request.method"], "POST");
    assert_eq!(http["attributes"]["http.route"], "/agents/{id}/ask");
    assert_eq!(http["attributes"]["http.response.status_code"], 200);
    let append = one(&turn, "the ask's append", |s| {
        s["name"] == "toka.journal.append"
    });
    assert_eq!(append["parent_span_id"], http["span_id"]);
    assert_eq!(append["attributes"]["agent.id"], "helper");
    let handle = one(&turn, "the ask's handling", |s| s["name"] == "toka.handle");
    assert_eq!(handle["parent_span_id"], append["span_id"], "{handle:#}");
    assert_eq!(handle["attributes"]["agent.id"], "helper");
    assert_eq!(handle["attributes"]["agent.kind"], "assistant");
    assert_eq!(handle["attributes"]["toka.recovered"], false);
    let seq_1 = handle["attributes"]["message.seq"].as_i64().unwrap();
    let chats: Vec<&Value> = turn
        .iter()
        .copied()
        .filter(|s| kind_of(s) == "gen_ai.chat")
        .collect();
    assert_eq!(chats.len(), 2, "{chats:#?}");
    let usage: Vec<(i64, i64)> = chats
        .iter()
        .map(|c| {
            let a = &c["attributes"];
            assert_eq!(c["name"], "chat scripted", "{c:#}");
            assert_eq!(a["gen_ai.operation.name"], "chat");
            assert_eq!(a["gen_ai.system"], "openai");
            assert_eq!(a["gen_ai.request.model"], "scripted");
            assert_eq!(a["toka.model"], "local");
            (
                a["gen_ai.usage.input_tokens"].as_i64().unwrap(),
                a["gen_ai.usage.output_tokens"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        usage.contains(&(60, 12)) && usage.contains(&(90, 8)),
        "{usage:?}"
    );
    let tool = one(&turn, "the assistant's tool call", |s| {
        kind_of(s) == "toka.tool.call"
    });
    assert_eq!(tool["name"], "tool fs.read");
    assert_eq!(tool["attributes"]["tool.name"], "fs.read");
    assert_eq!(tool["attributes"]["tool.outcome"], "ok");
    assert_eq!(tool["attributes"]["tool.side_effect"], "ReadOnly");
    assert_eq!(tool["attributes"]["agent.id"], "helper");
    // The direct call: its tool span under its HTTP span.
    let direct = one(&named(&spans, "http.request"), "the invoke", |s| {
        s["attributes"]["http.route"] == "/tools/{name}/invoke"
    });
    let direct_tool = one(
        &named(&spans, "toka.tool.call"),
        "the direct tool span",
        |s| s["parent_span_id"] == direct["span_id"],
    );
    assert_eq!(direct_tool["trace_id"], direct["trace_id"]);
    assert_eq!(direct_tool["attributes"]["tool.name"], "fs.read");

    // Turn 2: a message under another trace; the model never answers; kill -9.
    server.push(Reply::Hang);
    let (status, body) = post_traced(
        &node,
        "/agents/helper/messages",
        &token,
        &json!({"user": "And who comes?"}),
        &format!("00-{TRACE_2}-{CALLER_2}-01"),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests().len() < 3 {
        assert!(Instant::now() < deadline, "turn 2 never reached the model");
        std::thread::sleep(Duration::from_millis(20));
    }
    let spans = receiver.wait_for("turn 2's append", |spans| {
        in_trace(spans, TRACE_2)
            .iter()
            .any(|s| s["name"] == "toka.journal.append")
    });
    let sent = in_trace(&spans, TRACE_2);
    let append_2 = one(&sent, "turn 2's append", |s| {
        s["name"] == "toka.journal.append"
    });
    let http_2 = one(&sent, "turn 2's request", |s| kind_of(s) == "http.request");
    assert_eq!(http_2["parent_span_id"], CALLER_2);
    assert_eq!(http_2["attributes"]["http.response.status_code"], 202);
    assert_eq!(append_2["parent_span_id"], http_2["span_id"]);
    node.kill_9();

    // The restart recovers the agent: turn 1 is replayed, turn 2 handled again.
    server.push(Reply::Json(chat_text("Everyone.", 40, 3)));
    let node = start(tmp.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = transcript(&node, &token);
        if entries
            .last()
            .is_some_and(|e| e["role"] == "assistant" && e["content"] == "Everyone.")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "turn 2 did not finish: {entries:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.sigterm().success());

    let spans = receiver.wait_for("the recovered handling", |spans| {
        named(spans, "toka.handle")
            .iter()
            .any(|s| s["attributes"]["toka.recovered"] == true)
    });
    let handles = named(&spans, "toka.handle");
    let recovered = one(&handles, "the recovered handling", |s| {
        s["attributes"]["toka.recovered"] == true
    });
    assert_ne!(
        recovered["trace_id"], TRACE_2,
        "a recovery starts a new trace"
    );
    assert_eq!(
        recovered["links"],
        json!([{"trace_id": TRACE_2, "span_id": append_2["span_id"]}]),
        "the recovered handling links to the send"
    );
    let seq_2 = recovered["attributes"]["message.seq"].as_i64().unwrap();
    assert!(seq_2 > seq_1);
    // Each message's handling was exported once: the replay of turn 1 made no span.
    let helper: Vec<i64> = handles
        .iter()
        .filter(|s| s["attributes"]["agent.id"] == "helper")
        .map(|s| s["attributes"]["message.seq"].as_i64().unwrap())
        .collect();
    let mut unique = helper.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        helper.len(),
        unique.len(),
        "a handling was traced twice: {helper:?}"
    );
    assert!(
        helper.contains(&seq_1) && helper.contains(&seq_2),
        "{helper:?}"
    );
    // The model call of the recovered handling is in its trace; turn 1's recorded
    // model answers were reused, not traced again.
    let chats = named(&spans, "gen_ai.chat");
    assert_eq!(chats.len(), 3, "{chats:#?}");
    one(&chats, "the recovered model call", |s| {
        s["trace_id"] == recovered["trace_id"]
    });

    // No secrets in anything exported.
    let raw = std::fs::read_to_string(&receiver.out).unwrap();
    assert!(!raw.contains(KEY), "the API key was exported");
    assert!(!raw.contains(&token), "a capability token was exported");
    assert!(
        !raw.contains("Bearer"),
        "an authorization header was exported"
    );
}
