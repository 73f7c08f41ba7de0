//! Streamed turns on the real node binary (issue 12), with a model from `[models.NAME]`
//! (its key in the vault) against a scripted OpenAI-compatible server on 127.0.0.1 that
//! streams slowly:
//! - `POST /agents/{id}/ask` with `Accept: text/event-stream`: tool-call events, then text
//!   deltas arriving well before the `answer` event, whose data is the plain ask's reply
//!   and matches the transcript; no API key in the stream; the same auth as the plain ask;
//! - `GET /agents/{id}/turn` refuses non-assistants and unknown agents with JSON errors;
//! - `kill -9` of the node while an answer streams: after the restart the turn completes
//!   by itself, `/turn` delivers its final answer, every completed model call was asked
//!   once (only the cut-off one again) and reconnecting asked nothing more.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Node, admin_token, cli, transcript};
use serde_json::{Value, json};
use toka_test_support::model_server::{
    ModelServer, Recorded, Reply, chat_text, sse_text, sse_tool_calls,
};

const KEY: &str = "sk-stream-test-9d2e4b7c1a0f6e3d8b5c";
const ANSWER: [&str; 4] = ["On Thurs", "day, in ", "room ", "B."];

/// A data dir with `files/notes.txt`, the key in the vault, and a config naming the model
/// `local` at `server` and the file tools; returns the config file.
fn setup(tmp: &Path, server: &ModelServer) -> std::path::PathBuf {
    let dir = tmp.join("data");
    let files = common::notes_dir(tmp);
    cli(&dir, &["init"]);
    common::set_secret(&dir, "openai-key", KEY);
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
    common::spawn_assistant(
        node,
        token,
        token,
        "You answer questions about files.",
        &["fs.read"],
    );
}

/// Step 1 of a turn, streamed: the model reads the notes.
fn read_notes_streamed() -> Reply {
    Reply::Sse(sse_tool_calls(
        &[("call_1", "fs_read", json!({"path": "notes.txt"}))],
        60,
        12,
    ))
}

/// One server-sent event, and when it arrived.
#[derive(Clone, Debug)]
struct Sse {
    name: String,
    data: String,
    at: Instant,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// A minimal SSE client over HTTP/1.1 (chunked bodies decoded), recording every event
/// and the raw bytes it read.
struct SseClient {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    pending: Vec<u8>,
    /// Decoded body text not yet parsed into events.
    body: String,
    raw: Vec<u8>,
    status: u16,
    chunked: bool,
}

impl SseClient {
    /// Sends `method path` with `body` and reads the response head.
    fn open(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut client = SseClient {
            stream,
            pending: Vec::new(),
            body: String::new(),
            raw: Vec::new(),
            status: 0,
            chunked: false,
        };
        let head = loop {
            if let Some(at) = find(&client.pending, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&client.pending[..at]).into_owned();
                client.pending.drain(..at + 4);
                break head;
            }
            assert!(client.fill(), "closed before the response head");
        };
        client.status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        client.chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        client
    }

    /// Reads more bytes; `false` at the end of the connection.
    fn fill(&mut self) -> bool {
        let mut buf = [0; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Moves the complete chunks read so far into `body`; `false` after the last chunk.
    fn decode(&mut self) -> bool {
        if !self.chunked {
            self.body
                .push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
            return true;
        }
        loop {
            let Some(line) = find(&self.pending, b"\r\n") else {
                return true;
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&self.pending[..line])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            if self.pending.len() < line + 2 + size + 2 {
                return true;
            }
            if size == 0 {
                return false;
            }
            let chunk = self.pending[line + 2..line + 2 + size].to_vec();
            self.body.push_str(&String::from_utf8_lossy(&chunk));
            self.pending.drain(..line + 2 + size + 2);
        }
    }

    /// The next event (comments skipped); `None` at the end of the stream.
    fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(at) = self.body.find("\n\n") {
                let block: String = self.body.drain(..at + 2).collect();
                let (mut name, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Sse {
                    name,
                    data: data.join("\n"),
                    at: Instant::now(),
                });
            }
            let more = self.decode();
            if self.body.contains("\n\n") {
                continue;
            }
            if !more || !self.fill() {
                return None;
            }
        }
    }

    /// Every event until the stream ends.
    fn all(&mut self) -> Vec<Sse> {
        std::iter::from_fn(|| self.next()).collect()
    }

    fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn streamed(request: &Recorded) -> bool {
    request.body.get("stream").and_then(Value::as_bool) == Some(true)
}

/// A request body without its streaming fields: what the model was asked.
fn asked(request: &Recorded) -> Value {
    let mut body = request.body.clone();
    if let Some(fields) = body.as_object_mut() {
        fields.remove("stream");
        fields.remove("stream_options");
    }
    body
}

fn ask_body() -> String {
    json!({"user": "When is the meeting?"}).to_string()
}

#[test]
fn a_streamed_ask_shows_tool_calls_and_deltas_before_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let config = setup(tmp.path(), &server);
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant(&node, &token);

    server.push(read_notes_streamed());
    server.push(Reply::SlowSse {
        events: sse_text(&ANSWER),
        every: Duration::from_millis(200),
    });
    let path = "/agents/helper/ask?timeout_ms=60000";
    let mut client = SseClient::open(node.addr, "POST", path, Some(&token), &ask_body());
    assert_eq!(client.status, 200, "{}", client.raw_text());
    assert!(client.raw_text().contains("text/event-stream"));
    let events = client.all();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.last(), Some(&"answer"), "{names:?}");

    // Step 1: a tool call, its arguments in fragments, then the step's end.
    let call = events
        .iter()
        .find(|e| e.name == "tool_call")
        .unwrap()
        .json();
    assert_eq!(call, json!({"index": 0, "id": "call_1", "name": "fs.read"}));
    let arguments: String = events
        .iter()
        .filter(|e| e.name == "tool_call_arguments")
        .map(|e| e.json()["fragment"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(arguments, json!({"path": "notes.txt"}).to_string());
    let steps: Vec<Value> = events
        .iter()
        .filter(|e| e.name == "step_done")
        .map(Sse::json)
        .collect();
    assert_eq!(steps.len(), 2, "{names:?}");
    assert_eq!(steps[0]["finish"], "tool_calls");
    assert_eq!(steps[1]["finish"], "stop");

    // Step 2: the deltas, in order, well before the answer (the model streams slowly).
    let deltas: Vec<&Sse> = events.iter().filter(|e| e.name == "delta").collect();
    let text: Vec<String> = deltas
        .iter()
        .map(|e| e.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, ANSWER, "{names:?}");
    let answer_event = events.last().unwrap();
    let ahead = answer_event.at - deltas[0].at;
    assert!(
        ahead >= Duration::from_millis(400),
        "the first delta came only {ahead:?} before the answer: not streamed"
    );

    // The answer is the plain ask's reply, and the transcript's last entry.
    let answer = answer_event.json();
    assert_eq!(answer["answer"], ANSWER.concat());
    assert_eq!(answer["steps"], 2);
    assert_eq!(answer["stopped"], Value::Null);
    assert_eq!(answer["usage"]["input_tokens"], 60 + 10);
    let entries = transcript(&node, &token);
    let last = entries.last().unwrap();
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["content"], answer["answer"]);

    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter().all(streamed),
        "a step was asked without a stream"
    );
    assert!(
        !client.raw_text().contains(KEY),
        "the API key is in the stream"
    );

    // The reconnect route of an idle assistant: its last answer at once, nothing asked.
    let mut again = SseClient::open(node.addr, "GET", "/agents/helper/turn", Some(&token), "");
    let events = again.all();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].name, "answer");
    assert_eq!(
        events[0].json(),
        json!({"answer": ANSWER.concat(), "steps": 2, "stopped": null})
    );
    assert_eq!(server.requests().len(), 2, "the reconnect asked the model");

    // The same checks as the plain ask; JSON errors before any stream.
    let refused = SseClient::open(node.addr, "POST", path, None, &ask_body());
    assert_eq!(refused.status, 401);
    assert!(refused.raw_text().contains("application/json"));
    let unknown = SseClient::open(node.addr, "POST", "/agents/nobody/ask", Some(&token), "{}");
    assert_eq!(unknown.status, 404, "{}", unknown.raw_text());
    let (status, body) = node.json(
        "POST",
        "/agents",
        &token,
        &json!({"id": "tally", "kind": "counter"}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = node.get("/agents/tally/turn", &token);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("assistant"),
        "{body}"
    );
    let (status, body) = node.get("/agents/nobody/turn", &token);
    assert_eq!(status, 404, "{body}");
    let (status, _) = node.call("GET", "/agents/helper/turn", None, b"");
    assert_eq!(status, 401);
    assert!(node.sigterm().success());
}

#[test]
fn kill_9_during_a_streamed_answer_the_turn_completes_by_itself_after_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(ModelServer::start()).with_api_key(KEY);
    let config = setup(tmp.path(), &server);
    let node = start(tmp.path(), &config);
    let token = admin_token(&tmp.path().join("data"));
    spawn_assistant(&node, &token);

    // Step 1 answers at once (a tool call); step 2 streams slowly and is cut by the kill.
    server.push(read_notes_streamed());
    let slow: Vec<String> = (0..40).map(|i| format!("word{i} ")).collect();
    let slow: Vec<&str> = slow.iter().map(String::as_str).collect();
    server.push(Reply::SlowSse {
        events: sse_text(&slow),
        every: Duration::from_millis(250),
    });
    let seen = Arc::new(Mutex::new(Vec::<Sse>::new()));
    let raw = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (addr, token, seen, raw) = (node.addr, token.clone(), seen.clone(), raw.clone());
        std::thread::spawn(move || {
            let path = "/agents/helper/ask?timeout_ms=60000";
            let mut client = SseClient::open(addr, "POST", path, Some(&token), &ask_body());
            while let Some(event) = client.next() {
                seen.lock().unwrap().push(event);
            }
            *raw.lock().unwrap() = client.raw_text();
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.name == "delta")
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "no deltas of step 2 arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    node.kill_9();
    reader.join().unwrap();
    let cut: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert!(
        !cut.iter().any(|n| n == "answer"),
        "the answer came before the kill: {cut:?}"
    );
    assert!(
        !raw.lock().unwrap().contains(KEY),
        "the API key is in the stream"
    );
    assert_eq!(server.requests().len(), 2);

    // Restarted: whether the cut step is asked again with a stream (someone watches) or
    // not, the model answers it.
    server.push(Reply::as_asked(
        Reply::SlowSse {
            events: sse_text(&ANSWER),
            every: Duration::from_millis(100),
        },
        Reply::Json(chat_text(&ANSWER.concat(), 90, 8)),
    ));
    let node = start(tmp.path(), &config);
    let mut client = SseClient::open(
        node.addr,
        "GET",
        "/agents/helper/turn?timeout_ms=60000",
        Some(&token),
        "",
    );
    assert_eq!(client.status, 200, "{}", client.raw_text());
    let events = client.all();
    let last = events.last().expect("no event from /turn");
    assert_eq!(last.name, "answer", "{events:?}");
    assert_eq!(
        last.json(),
        json!({"answer": ANSWER.concat(), "steps": 2, "stopped": null})
    );
    assert!(
        !client.raw_text().contains(KEY),
        "the API key is in the stream"
    );
    let entries = transcript(&node, &token);
    let roles: Vec<&str> = entries
        .iter()
        .map(|e| e["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant"],
        "one turn, once"
    );
    assert_eq!(entries[3]["content"], ANSWER.concat());

    // Reconnecting again asks nothing; the model saw step 1 once, step 2 cut and once more.
    let mut again = SseClient::open(node.addr, "GET", "/agents/helper/turn", Some(&token), "");
    assert_eq!(
        again.all().last().map(|e| e.name.clone()),
        Some("answer".into())
    );
    std::thread::sleep(Duration::from_millis(300));
    let sent = server.requests();
    assert_eq!(sent.len(), 3, "{sent:#?}");
    assert_eq!(server.queued(), 0);
    let first = asked(&sent[0]);
    assert_eq!(
        sent.iter().filter(|r| asked(r) == first).count(),
        1,
        "the completed step 1 was asked again"
    );
    assert_eq!(
        asked(&sent[1]),
        asked(&sent[2]),
        "the cut step is asked again as it was"
    );
    assert!(node.sigterm().success());
}
