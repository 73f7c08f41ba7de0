//! Regression tests for issue 10 (an attack run on the real binary), one per item, named
//! after it: the real `toka-node` binary, real sockets on 127.0.0.1, a real sled journal.
//!
//! - `i10_1_tokens_are_never_readable_from_the_journal`: tokens in a reactor's spawn
//!   arguments and in a message to a supervisor are sealed before they are journaled (the
//!   sealed tokens still work: both reactors write their files), a token inside other
//!   text is redacted when shown, and no byte of `GET /events`, the event stream, any
//!   other `GET` route, `events export` or `events list` holds a token the test used or
//!   the root or seal key; `fs.write` with an events-only token is 403.
//! - `i10_2_sigterm_finishes_with_stalled_connections`: a half-sent head, a half-sent
//!   body, an idle and a kept-alive connection do not keep SIGTERM from exiting 0 soon
//!   after `--shutdown-timeout-ms`; the data is intact after restart.
//! - `i10_3_slow_clients_are_dropped_others_served`: 300 clients dribbling a request head
//!   are closed after `--header-timeout-ms` while `/health` keeps answering, with 64
//!   connections at most, and again with the node's `RLIMIT_NOFILE` at 256.
//! - `i10_4_token_checked_before_the_body`: 401 and 413 arrive at once, without the body;
//!   200 tokenless near-1-MiB bodies do not grow the node's memory.
//! - (Item 5, a full disk, is tested in `full_disk.rs`.)
//! - `i10_6_a_respawned_id_starts_fresh_and_parents_need_rights`: a re-spawned id starts
//!   from zero (also after `kill -9`), the old incarnation's records stay readable, an id
//!   re-spawned as another kind works; spawning under a parent needs a right on it.
//! - `i10_7_tokens_must_be_canonical`: the admin token with bytes appended is 401.
//! - `i10_8_stream_and_events_show_the_same_durable_records_promptly`: after one message,
//!   `GET /events` soon lists every record the journal holds (the message's progress
//!   record too, written without a sync) and the event stream delivers exactly those
//!   within 2 s (fsync and buffered journals).
//! - `i10_9_every_error_is_json`: 400, 401, 403, 404, 405, 408, 413, 414 and 431, each
//!   `application/json` with `{"error": "..."}`.
//! - `i10_10_strict_input`: non-object args, duplicate keys, bad ids (also as `..` and
//!   `.` path segments), out-of-range supervisor args and ask timeouts are 400, and
//!   change nothing.
//!
//! Tests that measure time or memory (2, 3, 4, 8) run alone; the others may run
//! alongside each other.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use common::{BIN, Node, admin_token, cli, tree, value_of};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Scheduling: timing- and memory-sensitive tests run alone (the machine is small).

static SCHEDULE: RwLock<()> = RwLock::new(());

/// For a test that measures time or memory: no other test of this file runs meanwhile.
fn alone() -> RwLockWriteGuard<'static, ()> {
    SCHEDULE.write().unwrap_or_else(PoisonError::into_inner)
}

/// For a test that may share the machine with other light ones.
fn shared() -> RwLockReadGuard<'static, ()> {
    SCHEDULE.read().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// Raw HTTP.

/// A response as it came off the wire.
struct Response {
    status: u16,
    /// The head, lines after the status line, as text.
    head: String,
    body: Vec<u8>,
}

impl Response {
    /// A header's value (names compared case-insensitively).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The whole response as it came: head and body.
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.head.clone().into_bytes();
        bytes.extend_from_slice(b"\r\n\r\n");
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Asserts the node's error shape: `status`, `Content-Type: application/json` and a
    /// body `{"error": "<non-empty>"}`.
    fn assert_json_error(&self, status: u16, what: &str) {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{what}: {}\n{text}", self.head);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: content-type {content_type:?}\n{}",
            self.head
        );
        let body = self.json();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{what}: body {text:?}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
    }
}

/// A complete response at the start of `raw` (the head and `Content-Length` bytes of body,
/// or everything to `eof` when no length is given).
fn parse_response(raw: &[u8], eof: bool) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let response = Response {
        status,
        head,
        body: Vec::new(),
    };
    let length = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    let rest = &raw[end + 4..];
    let body = match length {
        Some(n) if rest.len() >= n => rest[..n].to_vec(),
        Some(_) => return None,
        None if eof => rest.to_vec(),
        None => return None,
    };
    Some(Response { body, ..response })
}

/// Sends `request` (from another thread, so a server that answers before reading all of
/// it is seen answering) and reads one response for at most `limit`; the response, if a
/// complete one came, and how long it took.
fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (Option<Response>, Duration) {
    let started = Instant::now();
    // A full accept queue drops SYNs: do not wait for the kernel's two-minute give-up.
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, limit) else {
        return (None, started.elapsed());
    };
    stream
        .set_write_timeout(Some(limit + Duration::from_secs(5)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let request = request.to_vec();
    let writing = std::thread::spawn(move || {
        // A server may answer and close before it read everything: not an error here.
        let _ = writer.write_all(&request);
    });
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0; 65536];
    let mut response = None;
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => {
                response = parse_response(&raw, true);
                break;
            }
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if let Some(done) = parse_response(&raw, false) {
                    response = Some(done);
                    break;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => {
                response = parse_response(&raw, true);
                break;
            }
        }
    }
    let took = started.elapsed();
    let _ = stream.shutdown(Shutdown::Both);
    writing.join().unwrap();
    (response, took)
}

/// [`exchange`], asserting a response came.
fn request(addr: SocketAddr, request: &[u8]) -> Response {
    let (response, _) = exchange(addr, request, Duration::from_secs(20));
    response.unwrap_or_else(|| {
        panic!(
            "no response to {:?}",
            String::from_utf8_lossy(&request[..request.len().min(200)])
        )
    })
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A `GET` with `Connection: close` and an optional bearer token.
fn get_request(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n{auth}\r\n").into_bytes()
}

/// `GET /health` on a new connection: its status and how long it took (at most 10 s).
fn health(addr: SocketAddr) -> (Option<u16>, Duration) {
    let (response, took) = exchange(addr, &get_request("/health", None), Duration::from_secs(10));
    (response.map(|r| r.status), took)
}

/// An `/events/stream` response read as it arrives: the raw bytes, and the events parsed
/// from them (`(position, event)`).
struct EventStream {
    stream: TcpStream,
    raw: Vec<u8>,
    /// Where the body starts in `raw`, once the head arrived.
    body_at: Option<usize>,
    chunked: bool,
    /// The next chunk's size line in `raw` (chunked bodies).
    chunk_at: usize,
    /// The de-chunked body, and how much of it was parsed into events.
    body: Vec<u8>,
    parsed: usize,
    events: Vec<(u64, Value)>,
    /// When each event was parsed.
    arrived: Vec<Instant>,
    ended: bool,
}

impl EventStream {
    fn open(addr: SocketAddr, token: &str, from: u64) -> EventStream {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /events/stream?from={from} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        EventStream {
            stream,
            raw: Vec::new(),
            body_at: None,
            chunked: false,
            chunk_at: 0,
            body: Vec::new(),
            parsed: 0,
            events: Vec::new(),
            arrived: Vec::new(),
            ended: false,
        }
    }

    /// Reads what arrives within `wait` and parses it; `false` once the stream ended.
    fn poll(&mut self, wait: Duration) -> bool {
        if self.ended {
            return false;
        }
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) => self.ended = true,
            Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => self.ended = true,
        }
        self.parse();
        !self.ended
    }

    fn parse(&mut self) {
        if self.body_at.is_none() {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "event stream: {head}");
            assert!(head.contains("text/event-stream"), "event stream: {head}");
            self.chunked = head.contains("transfer-encoding: chunked");
            self.body_at = Some(end + 4);
            self.chunk_at = end + 4;
        }
        if self.chunked {
            loop {
                let rest = &self.raw[self.chunk_at..];
                let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                    break;
                };
                let line = String::from_utf8_lossy(&rest[..line_end]);
                let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                let data = line_end + 2;
                if rest.len() < data + size + 2 {
                    break;
                }
                self.body.extend_from_slice(&rest[data..data + size]);
                self.chunk_at += data + size + 2;
                if size == 0 {
                    self.ended = true;
                    break;
                }
            }
        } else if let Some(at) = self.body_at {
            let new = self.raw[at + self.body.len()..].to_vec();
            self.body.extend_from_slice(&new);
        }
        while let Some(end) = self.body[self.parsed..]
            .windows(2)
            .position(|w| w == b"\n\n")
        {
            let block = String::from_utf8_lossy(&self.body[self.parsed..self.parsed + end]);
            self.parsed += end + 2;
            let mut id = None;
            let mut kind = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if kind.as_deref() == Some("error") {
                panic!("the event stream reported an error: {data}");
            }
            if let (Some(id), Some("event")) = (id, kind.as_deref()) {
                let event: Value = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event {id}: {e}: {data}"));
                assert_eq!(event["position"], id, "{event}");
                self.events.push((id, event));
                self.arrived.push(Instant::now());
            }
        }
    }

    /// The last position delivered (0: none).
    fn last(&self) -> u64 {
        self.events.last().map_or(0, |(p, _)| *p)
    }

    /// Reads until `position` was delivered, for at most until `deadline`; when it
    /// arrived (`None`: not by the deadline).
    fn wait_for(&mut self, position: u64, deadline: Instant) -> Option<Instant> {
        while self.last() < position {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.poll(left.min(Duration::from_millis(100))) {
                return None;
            }
        }
        let at = self.events.iter().position(|(p, _)| *p >= position)?;
        Some(self.arrived[at])
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// `toka-node token attenuate TOKEN --caveat C...` (no data dir needed).
fn attenuate(token: &str, caveats: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command.args(["token", "attenuate", token]);
    for caveat in caveats {
        command.args(["--caveat", caveat]);
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An offline command's stdout and stderr, asserting it succeeded.
fn offline(dir: &Path, args: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("TOKA_KEY_FILE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    (out.stdout, out.stderr)
}

/// `GET /events?from=1&limit=1000` as `(position, event)`.
fn events(node: &Node, token: &str) -> Vec<(u64, Value)> {
    let (status, events) = node.get("/events?from=1&limit=1000", token);
    assert_eq!(status, 200, "{events}");
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["position"].as_u64().unwrap(), e.clone()))
        .collect()
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len() % 2 == 0, "odd hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Item 1.

/// What must never be shown: each secret in the forms it could be shown in.
struct Secrets(Vec<(String, Vec<u8>)>);

impl Secrets {
    /// A token: its text, and its signature (the last 32 bytes of the binary macaroon:
    /// what makes it a credential) raw, in hex and in base64.
    fn token(&mut self, label: &str, token: &str) {
        self.0
            .push((format!("{label} (token text)"), token.as_bytes().to_vec()));
        let binary = URL_SAFE_NO_PAD.decode(token).unwrap();
        assert!(binary.len() > 40, "{label}: a short token");
        let signature = &binary[binary.len() - 32..];
        assert_eq!(binary[binary.len() - 33], 32, "{label}: signature length");
        self.bytes(&format!("{label} signature"), signature);
    }

    /// Bytes (a key, a signature): raw, hex (both cases) and base64 (every alphabet).
    fn bytes(&mut self, label: &str, bytes: &[u8]) {
        assert!(bytes.len() >= 16, "{label}: too short to look for");
        let lower = hex(bytes);
        let forms = [
            ("raw", bytes.to_vec()),
            ("hex", lower.clone().into_bytes()),
            ("HEX", lower.to_ascii_uppercase().into_bytes()),
            ("base64", STANDARD_NO_PAD.encode(bytes).into_bytes()),
            ("base64url", URL_SAFE_NO_PAD.encode(bytes).into_bytes()),
        ];
        for (form, value) in forms {
            self.0.push((format!("{label} ({form})"), value));
        }
        // Padded forms contain the unpadded ones; checked anyway for clarity.
        self.0.push((
            format!("{label} (base64=)"),
            STANDARD.encode(bytes).into_bytes(),
        ));
        self.0.push((
            format!("{label} (base64url=)"),
            URL_SAFE.encode(bytes).into_bytes(),
        ));
    }

    /// Asserts that no secret occurs in `output`, nor in anything decoded from it (JSON
    /// strings, `hex` payloads, `payload_base64` payloads of JSON found in it).
    fn assert_absent(&self, what: &str, output: &[u8]) {
        let mut blobs = vec![output.to_vec()];
        decoded(output, &mut blobs);
        for blob in &blobs {
            for (label, secret) in &self.0 {
                assert!(
                    !blob.windows(secret.len()).any(|w| w == secret.as_slice()),
                    "{what} shows {label}: {}",
                    String::from_utf8_lossy(&blob[..blob.len().min(2000)])
                );
            }
        }
    }
}

/// Every JSON document in `output` (the whole of it, or each line, or each SSE `data:`
/// line, or the body after an HTTP head), taken apart: its strings, its `hex` payloads
/// decoded and its `payload_base64` payloads decoded.
fn decoded(output: &[u8], blobs: &mut Vec<Vec<u8>>) {
    let text = String::from_utf8_lossy(output);
    let body = text.split_once("\r\n\r\n").map_or(&*text, |(_, b)| b);
    let mut documents: Vec<&str> = vec![body];
    for line in body.lines() {
        documents.push(line.strip_prefix("data:").unwrap_or(line).trim());
    }
    for document in documents {
        if let Ok(value) = serde_json::from_str::<Value>(document) {
            walk(&value, blobs);
        }
    }
}

fn walk(value: &Value, blobs: &mut Vec<Vec<u8>>) {
    match value {
        Value::String(s) => blobs.push(s.as_bytes().to_vec()),
        Value::Array(items) => items.iter().for_each(|v| walk(v, blobs)),
        Value::Object(fields) => {
            for (key, v) in fields {
                if let Value::String(s) = v {
                    match key.as_str() {
                        "hex" => blobs.push(unhex(s)),
                        "payload_base64" => blobs.push(STANDARD.decode(s).unwrap()),
                        _ => {}
                    }
                }
                walk(v, blobs);
            }
        }
        _ => {}
    }
}

/// An event's payload bytes, as the API (`utf8` or `hex`) or `events export`
/// (`payload_base64`) shows it.
fn payload(event: &Value) -> Vec<u8> {
    if let Some(text) = event["payload"]["utf8"].as_str() {
        text.as_bytes().to_vec()
    } else if let Some(hex) = event["payload"]["hex"].as_str() {
        unhex(hex)
    } else if let Some(base64) = event["payload_base64"].as_str() {
        STANDARD.decode(base64).unwrap()
    } else {
        panic!("no payload in {event}")
    }
}

/// How many of `events` hold a sealed token in their payload.
fn sealed_in<'e>(events: impl IntoIterator<Item = &'e Value>) -> usize {
    let sealed: &[u8] = b"toka-sealed:v1:";
    events
        .into_iter()
        .filter(|e| payload(e).windows(sealed.len()).any(|w| w == sealed))
        .count()
}

#[test]
fn i10_1_tokens_are_never_readable_from_the_journal() {
    let _schedule = shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let config = tmp.path().join("toka.toml");
    std::fs::write(
        &config,
        format!("[tools]\nfs_root = {:?}\n", files.to_str().unwrap()),
    )
    .unwrap();
    cli(&dir, &["init"]);
    let admin = admin_token(&dir);
    let writer_1 = cli(&dir, &["token", "mint", "--caveat", "tool = fs.write"]);
    let writer_2 = cli(&dir, &["token", "mint", "--caveat", "tool = fs.write"]);
    let reader = cli(
        &dir,
        &["token", "mint", "--caveat", "tool = api.events.read"],
    );
    let node = Node::start_with(&dir, &["--config", config.to_str().unwrap()]);
    let addr = node.addr;

    let reactor_args = |token: &str| {
        json!({
            "subscribe": "in",
            "tool": "fs.write",
            "input": {"path": "{{/id}}.txt", "content": "{{/message}}"},
            "token": token,
        })
    };
    // A token in spawn arguments.
    let spawn = json!({"id": "r1", "kind": "reactor", "args": reactor_args(&writer_1)});
    let (status, body) = node.json("POST", "/agents", &admin, &spawn);
    assert_eq!(status, 201, "{body}");
    // A token in a message (a supervisor spawning a reactor).
    let spawn = json!({"id": "ops", "kind": "supervisor"});
    assert_eq!(node.json("POST", "/agents", &admin, &spawn).0, 201);
    let message =
        json!({"spawn": {"id": "r2", "kind": "reactor", "args": reactor_args(&writer_2)}});
    let (status, body) = node.json("POST", "/agents/ops/messages", &admin, &message);
    assert_eq!(status, 202, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || node.get("/agents/r2", &admin).0
            == 200),
        "the supervisor did not spawn r2"
    );

    // The sealed tokens still work: each reactor calls fs.write with its own. The first
    // event also carries the admin token inside other text, which is not a token to
    // seal: the events API must redact it when it shows the record.
    let event = json!({"id": "e1", "message": "hello", "note": format!("leaked: {admin}!")});
    let (status, reply) = node.json("POST", "/agents/r1/ask", &admin, &event);
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["output"].is_object(),
        "r1 did not call fs.write: {reply}"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("e1.txt")).unwrap(),
        "hello"
    );
    let event = json!({"id": "e2", "message": "from r2"});
    assert_eq!(
        node.json("POST", "/agents/r2/messages", &admin, &event).0,
        202
    );
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(
            files.join("e2.txt")
        )
        .is_ok_and(|c| c == "from r2")),
        "r2 did not call fs.write"
    );

    // The events-only token may not write.
    let write = json!({"path": "x.txt", "content": "no"});
    let refused = request(
        addr,
        format!(
            "POST /tools/fs.write/invoke HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\
             Authorization: Bearer {reader}\r\nContent-Length: {}\r\n\r\n{write}",
            write.to_string().len()
        )
        .as_bytes(),
    );
    refused.assert_json_error(403, "fs.write with an events-only token");
    assert!(!files.join("x.txt").exists());

    // Everything the API shows.
    let mut outputs: Vec<(String, Vec<u8>)> = vec![("the 403 of fs.write".into(), refused.bytes())];
    let listed = request(
        addr,
        &get_request("/events?from=1&limit=1000", Some(&reader)),
    );
    assert_eq!(listed.status, 200);
    let all = listed.json();
    let last = all.as_array().unwrap().last().unwrap()["position"]
        .as_u64()
        .unwrap();
    // The three reactor tokens were sealed (r1's args, the message to ops, r2's args),
    // and the token inside the note was redacted.
    let sealed = sealed_in(all.as_array().unwrap());
    assert!(
        sealed >= 3,
        "{sealed} records with a sealed token in GET /events: {all}"
    );
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|e| e["redacted"] == true),
        "nothing redacted: {all}"
    );
    outputs.push(("GET /events".into(), listed.bytes()));
    let mut stream = EventStream::open(addr, &reader, 1);
    assert!(
        stream
            .wait_for(last, Instant::now() + Duration::from_secs(10))
            .is_some(),
        "the event stream did not catch up to {last}: {}",
        String::from_utf8_lossy(&stream.raw)
    );
    outputs.push(("GET /events/stream".into(), stream.raw.clone()));
    drop(stream);
    for path in [
        "/agents",
        "/agents/r1",
        "/agents/r2",
        "/agents/ops",
        "/tools",
        "/metrics",
        "/health",
    ] {
        let response = request(addr, &get_request(path, Some(&admin)));
        assert_eq!(response.status, 200, "{path}");
        outputs.push((format!("GET {path}"), response.bytes()));
    }
    assert!(node.sigterm().success());

    // And what the offline commands show.
    for args in [
        &["events", "export"][..],
        &["events", "list", "--json"],
        &["events", "list"],
        &["agents", "tree"],
    ] {
        let (stdout, stderr) = offline(&dir, args);
        if args == ["events", "export"] {
            let lines: Vec<Value> = String::from_utf8_lossy(&stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(
                lines.iter().any(|l| l["redacted"] == true),
                "export: none redacted"
            );
            assert!(sealed_in(&lines) >= 3, "export: not sealed");
        }
        outputs.push((format!("{args:?} (stdout)"), stdout));
        outputs.push((format!("{args:?} (stderr)"), stderr));
    }

    let mut secrets = Secrets(Vec::new());
    secrets.token("the first fs.write token", &writer_1);
    secrets.token("the second fs.write token", &writer_2);
    secrets.token("the events token", &reader);
    secrets.token("the admin token", &admin);
    secrets.bytes("root.key", &std::fs::read(dir.join("root.key")).unwrap());
    secrets.bytes("seal.key", &std::fs::read(dir.join("seal.key")).unwrap());
    for (what, output) in &outputs {
        assert!(
            what.ends_with("(stderr)") || !output.is_empty(),
            "{what} is empty"
        );
        secrets.assert_absent(what, output);
    }
}

// ---------------------------------------------------------------------------------------
// Item 2.

#[test]
fn i10_2_sigterm_finishes_with_stalled_connections() {
    let _schedule = alone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let flags = [
        "--shutdown-timeout-ms",
        "1000",
        "--header-timeout-ms",
        "60000",
        "--body-timeout-ms",
        "60000",
    ];
    let node = Node::start_with(&dir, &flags);
    let token = admin_token(&dir);
    let spawn = json!({"id": "c", "kind": "counter"});
    assert_eq!(node.json("POST", "/agents", &token, &spawn).0, 201);
    assert_eq!(
        node.json("POST", "/agents/c/messages", &token, &json!({"add": 42}))
            .0,
        202
    );

    let connect = || {
        let stream = TcpStream::connect(node.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    };
    // Half a head.
    let mut half_head = connect();
    half_head.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    // A whole head and a tenth of the body.
    let mut half_body = connect();
    write!(
        half_body,
        "POST /agents/c/messages HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"add\": 1"
    )
    .unwrap();
    // Nothing at all.
    let idle = connect();
    // A request answered, the connection kept alive.
    let mut kept = connect();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: node\r\n\r\n")
        .unwrap();
    let mut buf = [0; 1024];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // An event stream.
    let mut stream = EventStream::open(node.addr, &token, 1);
    assert!(
        stream
            .wait_for(1, Instant::now() + Duration::from_secs(10))
            .is_some()
    );
    // Let the node start reading all of them.
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let status = node.sigterm_within(Duration::from_secs(12));
    let took = started.elapsed();
    assert!(status.success(), "SIGTERM: {status:?}");
    // The stalled requests had their second (they could not finish), then were dropped.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "exit took {took:?} with --shutdown-timeout-ms 1000"
    );
    drop((half_head, half_body, idle, kept, stream));

    // Nothing acknowledged was lost, and the half-sent message was never applied.
    let node = Node::start(&dir);
    assert_eq!(value_of(&node, &token, "c"), json!({"value": 42}));
    assert!(node.sigterm().success());
}

// ---------------------------------------------------------------------------------------
// Item 3.

/// What [`dribble`] saw.
struct Dribbled {
    /// Connections opened.
    opened: usize,
    /// How long each took to be closed by the node (`None`: still open at the end).
    closed_after: Vec<Option<Duration>>,
    /// Connections that got any bytes back (a response to an incomplete head would be a
    /// bug).
    answered: usize,
}

/// A dribbling connection.
struct Dribbler {
    stream: TcpStream,
    opened: Instant,
    sent: usize,
    closed_after: Option<Duration>,
    answered: bool,
}

impl Dribbler {
    fn new((stream, opened): (TcpStream, Instant)) -> Dribbler {
        stream.set_nonblocking(true).unwrap();
        Dribbler {
            stream,
            opened,
            sent: 0,
            closed_after: None,
            answered: false,
        }
    }

    /// Reads what the node sent, and sends the next byte of the head if `send`; notes
    /// when the node closed the connection.
    fn tick(&mut self, send: bool) {
        const HEAD: &[u8] = b"GET /health HTTP/1.1\r\nX-Slow: ";
        let mut buf = [0; 1024];
        let mut closed = match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => {
                self.answered = true;
                false
            }
            Err(e) => !is_timeout(&e),
        };
        if !closed && send {
            let byte = HEAD.get(self.sent).copied().unwrap_or(b'a');
            match self.stream.write(&[byte]) {
                Ok(n) => self.sent += n,
                Err(e) => closed = !is_timeout(&e),
            }
        }
        if closed {
            self.closed_after = Some(self.opened.elapsed());
        }
    }
}

/// Opens `count` connections to `addr` (one after the other, from another thread: the
/// node's accept queue may be full for a while) and sends each a request head one byte
/// every 200 ms (a request line, then a header that never ends) until the node closed
/// them all, or `limit`.
fn dribble(addr: SocketAddr, count: usize, limit: Duration) -> Dribbled {
    let started = Instant::now();
    let (opened, connections) = std::sync::mpsc::channel();
    let connector = std::thread::spawn(move || {
        for _ in 0..count {
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let timeout = left.min(Duration::from_secs(3));
            if let Ok(stream) = TcpStream::connect_timeout(&addr, timeout) {
                let _ = opened.send((stream, Instant::now()));
            }
        }
    });
    let mut conns: Vec<Dribbler> = Vec::new();
    let mut next_byte = started;
    while started.elapsed() < limit {
        let connecting = !connector.is_finished();
        conns.extend(connections.try_iter().map(Dribbler::new));
        if !connecting && conns.iter().all(|c| c.closed_after.is_some()) {
            break;
        }
        let send = Instant::now() >= next_byte;
        if send {
            next_byte += Duration::from_millis(200);
        }
        for conn in conns.iter_mut().filter(|c| c.closed_after.is_none()) {
            conn.tick(send);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    connector.join().unwrap();
    conns.extend(connections.try_iter().map(Dribbler::new));
    Dribbled {
        opened: conns.len(),
        closed_after: conns.iter().map(|c| c.closed_after).collect(),
        answered: conns.iter().filter(|c| c.answered).count(),
    }
}

/// 300 dribblers against `node` while `/health` is checked every 100 ms: each check
/// answers 200 within 5 s, and every dribbler is closed within 10 s of connecting.
fn dribblers_are_dropped_and_health_answers(node: &Node) {
    let addr = node.addr;
    let dribbling = std::thread::spawn(move || dribble(addr, 300, Duration::from_secs(15)));
    let mut checks = Vec::new();
    std::thread::sleep(Duration::from_millis(200));
    while !dribbling.is_finished() && checks.len() < 30 {
        let (status, took) = health(addr);
        assert_eq!(status, Some(200), "/health under dribblers ({took:?})");
        assert!(
            took < Duration::from_secs(5),
            "/health took {took:?} under dribblers"
        );
        checks.push(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    let dribbled = dribbling.join().unwrap();
    assert!(
        checks.len() >= 2,
        "{} /health checks while dribbling",
        checks.len()
    );
    assert_eq!(dribbled.opened, 300, "dribblers could not connect");
    let open = dribbled.closed_after.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} dribblers were never closed");
    let slowest = dribbled.closed_after.iter().flatten().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(10),
        "a dribbler was closed only after {slowest:?}"
    );
    assert_eq!(dribbled.answered, 0, "an incomplete head got an answer");
    eprintln!(
        "dribblers closed within {slowest:?}; /health took at most {:?} ({} checks)",
        checks.iter().max().unwrap(),
        checks.len()
    );
    let (status, _) = health(addr);
    assert_eq!(status, Some(200));
}

#[test]
fn i10_3_slow_clients_are_dropped_others_served() {
    let _schedule = alone();
    let tmp = tempfile::tempdir().unwrap();

    // At most 64 connections at once: the rest wait to be accepted.
    let dir = tmp.path().join("capped");
    let node = Node::start_with(
        &dir,
        &["--header-timeout-ms", "500", "--max-connections", "64"],
    );
    dribblers_are_dropped_and_health_answers(&node);
    assert!(node.sigterm().success());

    // No cap to speak of, but only 256 descriptors: accepting fails for a while.
    let dir = tmp.path().join("nofile");
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\"", BIN])
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args(["--header-timeout-ms", "500"]);
    let node = Node::spawn(command);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.child.id())).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        nofile.split_whitespace().nth(3),
        Some("256"),
        "the limit did not apply: {nofile}"
    );
    dribblers_are_dropped_and_health_answers(&node);
    assert!(node.sigterm().success());
}

// ---------------------------------------------------------------------------------------
// Item 4.

#[test]
fn i10_4_token_checked_before_the_body() {
    let _schedule = alone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // The default body timeout (10 s): an answer well before it did not wait for a body.
    let node = Node::start(&dir);
    let token = admin_token(&dir);
    let addr = node.addr;

    let head = "POST /agents HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n";
    let (response, took) = exchange(
        addr,
        format!("{head}Content-Length: 1000000\r\n\r\n").as_bytes(),
        Duration::from_secs(20),
    );
    let response = response.expect("no answer to a tokenless POST");
    response.assert_json_error(401, "a tokenless 1 MB POST without its body");
    assert!(took < Duration::from_secs(3), "401 took {took:?}");

    let (response, took) = exchange(
        addr,
        format!("{head}Authorization: Bearer {token}\r\nContent-Length: 1099511627776\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(20),
    );
    let response = response.expect("no answer to a 1 TiB POST");
    response.assert_json_error(413, "a 1 TiB POST without its body");
    assert!(took < Duration::from_secs(3), "413 took {took:?}");

    // 200 tokenless bodies of 900 KB out of a declared 1 MiB, at once.
    let before = rss_kib(node.child.id());
    let body = vec![b' '; 900 << 10];
    let flood = format!("{head}Content-Length: {}\r\n\r\n", 1 << 20);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (outcomes, peak) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(node.child.id()));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(rss_kib(node.child.id()))
        });
        let clients: Vec<_> = (0..200)
            .map(|_| {
                let (flood, body) = (&flood, &body);
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(scope, move || {
                        let mut stream =
                            TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
                        stream
                            .set_write_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        let _ = stream
                            .write_all(flood.as_bytes())
                            .and_then(|()| stream.write_all(body));
                        let mut raw = Vec::new();
                        match stream.read_to_end(&mut raw) {
                            Err(e) if is_timeout(&e) => Some("neither answered nor closed".into()),
                            _ => Some(String::from_utf8_lossy(&raw).into_owned()),
                        }
                    })
                    .unwrap()
            })
            .collect();
        let outcomes: Vec<Option<String>> =
            clients.into_iter().map(|c| c.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (outcomes, sampler.join().unwrap())
    });
    eprintln!("RSS {before} KiB before, {peak} KiB at most during the flood");
    // Buffered, the bodies would take 200 × 900 KiB ≈ 176 MiB; an idle node's own RSS
    // (~80 MiB in a debug build) varies with the build, so the bound is on the growth.
    assert!(
        peak.saturating_sub(before) < 48 << 10,
        "the node's RSS reached {peak} KiB (from {before} KiB) under tokenless bodies"
    );
    for outcome in &outcomes {
        let outcome = outcome.as_deref().expect("could not connect");
        // A 401, or a connection the node closed (a reset can swallow the 401).
        if outcome.is_empty() {
            continue;
        }
        let response = parse_response(outcome.as_bytes(), true)
            .unwrap_or_else(|| panic!("not a response: {outcome:?}"));
        response.assert_json_error(401, "a tokenless near-1-MiB body");
    }
    assert_eq!(health(addr).0, Some(200));
    assert!(node.sigterm().success());
}

// ---------------------------------------------------------------------------------------
// Item 6.

#[test]
fn i10_6_a_respawned_id_starts_fresh_and_parents_need_rights() {
    let _schedule = shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir);
    let admin = admin_token(&dir);
    let counter = json!({"id": "a", "kind": "counter"});
    let add = |node: &Node, n: i64| {
        let (status, body) = node.json("POST", "/agents/a/messages", &admin, &json!({"add": n}));
        assert_eq!(status, 202, "{body}");
    };

    assert_eq!(node.json("POST", "/agents", &admin, &counter).0, 201);
    add(&node, 300);
    assert_eq!(value_of(&node, &admin, "a"), json!({"value": 300}));
    assert_eq!(node.call("DELETE", "/agents/a", Some(&admin), b"").0, 200);
    assert_eq!(node.json("POST", "/agents", &admin, &counter).0, 201);
    assert_eq!(value_of(&node, &admin, "a"), json!({"value": 0}));
    // The old incarnation's message is still in the journal, before the new one began.
    let all = events(&node, &admin);
    let of_a: Vec<&Value> = all
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["stream"] == "agent/a")
        .collect();
    let marker = of_a
        .iter()
        .position(|e| e["kind"] == "toka.incarnation@3")
        .unwrap_or_else(|| panic!("no incarnation marker: {of_a:?}"));
    let old = of_a[..marker]
        .iter()
        .filter(|e| e["kind"] == "toka.msg@3")
        .count();
    // `add 300` and the `get`.
    assert_eq!(old, 2, "the old incarnation's messages: {of_a:?}");

    add(&node, 5);
    node.kill_9();
    let node = Node::start(&dir);
    assert_eq!(value_of(&node, &admin, "a"), json!({"value": 5}));

    // The id as another kind: its messages are a supervisor's, no counter's replayed.
    assert_eq!(node.call("DELETE", "/agents/a", Some(&admin), b"").0, 200);
    let supervisor = json!({"id": "a", "kind": "supervisor"});
    assert_eq!(node.json("POST", "/agents", &admin, &supervisor).0, 201);
    let child = json!({"spawn": {"id": "a-kid", "kind": "counter"}});
    let (status, reply) = node.json("POST", "/agents/a/ask", &admin, &child);
    assert_eq!(
        (status, reply),
        (200, json!({"children": ["a-kid"], "error": null}))
    );
    let (status, body) = node.json("POST", "/agents/a-kid/messages", &admin, &json!({"add": 7}));
    assert_eq!(status, 202, "{body}");
    assert_eq!(value_of(&node, &admin, "a-kid"), json!({"value": 7}));
    node.kill_9();
    let node = Node::start(&dir);
    let (status, reply) = node.json("POST", "/agents/a/ask", &admin, &json!("children"));
    assert_eq!(
        (status, reply),
        (200, json!({"children": ["a-kid"], "error": null}))
    );
    assert_eq!(value_of(&node, &admin, "a-kid"), json!({"value": 7}));
    for (id, kind, parent) in tree(&node, &admin) {
        match id.as_str() {
            "a" => assert_eq!((kind.as_str(), parent), ("supervisor", Value::Null)),
            "a-kid" => assert_eq!((kind.as_str(), parent), ("counter", json!("a"))),
            other => panic!("unexpected agent {other}"),
        }
    }
    let (status, agent) = node.get("/agents/a", &admin);
    assert_eq!(
        (status, &agent["status"]),
        (200, &json!("running")),
        "{agent}"
    );
    // The counter's messages were not handed to the supervisor (they would be dead
    // letters: a supervisor cannot decode them).
    let dead: Vec<Value> = events(&node, &admin)
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["kind"] == "toka.dead@3")
        .collect();
    assert!(dead.is_empty(), "dead letters: {dead:?}");

    // Spawning under a parent needs the right on the parent.
    for id in ["s1", "s2"] {
        let spawn = json!({"id": id, "kind": "supervisor"});
        assert_eq!(node.json("POST", "/agents", &admin, &spawn).0, 201);
    }
    let c1 = json!({"id": "c1", "kind": "counter", "parent": "s1"});
    assert_eq!(node.json("POST", "/agents", &admin, &c1).0, 201);
    let only_c1 = attenuate(&admin, &["agent = c1", "tool = api.agents.*"]);
    let (status, body) = node.call("DELETE", "/agents/c1", Some(&only_c1), b"");
    assert_eq!(status, 200, "{body}");
    let under_s2 = json!({"id": "c1", "kind": "counter", "parent": "s2"});
    let (status, body) = node.json("POST", "/agents", &only_c1, &under_s2);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(node.get("/agents/c1", &admin).0, 404);
    // Without a parent the same token may spawn c1.
    let (status, body) = node.json(
        "POST",
        "/agents",
        &only_c1,
        &json!({"id": "c1", "kind": "counter"}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, agent) = node.get("/agents/c1", &admin);
    assert_eq!((status, &agent["parent"]), (200, &Value::Null), "{agent}");
    assert!(node.sigterm().success());
}

// ---------------------------------------------------------------------------------------
// Item 7.

#[test]
fn i10_7_tokens_must_be_canonical() {
    let _schedule = shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir);
    let admin = admin_token(&dir);
    for suffix in ["AA", "xyz1", "ZXZpbA", "A", "="] {
        let response = request(
            node.addr,
            &get_request("/agents", Some(&format!("{admin}{suffix}"))),
        );
        response.assert_json_error(401, &format!("the admin token + {suffix:?}"));
    }
    let response = request(node.addr, &get_request("/agents", Some(&admin)));
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), json!([]));
    assert!(node.sigterm().success());
}

// ---------------------------------------------------------------------------------------
// Item 8.

/// After one message (and nothing else), the stream delivers within 2 s every record up
/// to the last one `GET /events` lists once it is stable, and the two agree exactly.
fn stream_matches_events(durability: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start_with(&dir, &["--durability", durability]);
    let token = admin_token(&dir);
    let spawn = json!({"id": "c", "kind": "counter"});
    assert_eq!(node.json("POST", "/agents", &token, &spawn).0, 201);
    let mut stream = EventStream::open(node.addr, &token, 1);
    assert!(
        stream
            .wait_for(1, Instant::now() + Duration::from_secs(10))
            .is_some(),
        "{durability}: the spawn never came"
    );
    let (status, _) = node.json("POST", "/agents/c/messages", &token, &json!({"add": 1}));
    assert_eq!(status, 202);
    let sent = Instant::now();

    // GET /events until its last position holds still for a second (at most 6 s).
    let mut listed = events(&node, &token);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(1) {
        assert!(
            sent.elapsed() < Duration::from_secs(6),
            "{durability}: GET /events never settled"
        );
        stream.poll(Duration::from_millis(100));
        let now = events(&node, &token);
        if now.last().map(|e| e.0) != listed.last().map(|e| e.0) {
            still_since = Instant::now();
        }
        listed = now;
    }
    let last = listed.last().unwrap().0;
    // No record the journal holds stays unshown: the message's handling is recorded too
    // (a progress record nobody waits for), and it must become durable and shown soon.
    let head = common::journal_head(&node, &token);
    assert_eq!(
        last, head,
        "{durability}: GET /events stops at {last}, the journal holds {head}: {listed:?}"
    );
    let message = listed
        .iter()
        .find(|(_, e)| e["stream"] == "agent/c" && e["kind"] == "toka.msg@3")
        .unwrap_or_else(|| panic!("{durability}: the message is not listed: {listed:?}"))
        .0;
    assert!(last >= message);
    // The stream was read all along: when did `last` arrive?
    let delivered = stream
        .wait_for(last, sent + Duration::from_secs(2))
        .filter(|at| *at <= sent + Duration::from_secs(2));
    assert!(
        delivered.is_some(),
        "{durability}: within 2 s the stream delivered up to {}, GET /events lists up to {last}: {listed:?}",
        stream.last()
    );
    // Anything still coming would be a record GET /events does not show.
    stream.poll(Duration::from_millis(300));
    let listed_again = events(&node, &token);
    assert_eq!(listed_again, listed, "{durability}: GET /events moved");
    let streamed: Vec<u64> = stream.events.iter().map(|e| e.0).collect();
    let positions: Vec<u64> = listed.iter().map(|e| e.0).collect();
    assert_eq!(streamed, positions, "{durability}: stream vs GET /events");
    for ((_, a), (_, b)) in stream.events.iter().zip(&listed) {
        assert_eq!(a, b, "{durability}: the same record shown differently");
    }
    eprintln!(
        "{durability}: {} records; the stream had the last {:?} after the 202",
        positions.len(),
        delivered.unwrap() - sent
    );
    drop(stream);
    assert!(node.sigterm().success());
}

#[test]
fn i10_8_stream_and_events_show_the_same_durable_records_promptly() {
    let _schedule = alone();
    stream_matches_events("fsync");
    stream_matches_events("buffered");
}

// ---------------------------------------------------------------------------------------
// Item 9.

#[test]
fn i10_9_every_error_is_json() {
    let _schedule = shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    cli(&dir, &["init"]);
    let events_only = cli(
        &dir,
        &["token", "mint", "--caveat", "tool = api.events.read"],
    );
    let node = Node::start_with(&dir, &["--body-timeout-ms", "500"]);
    let admin = admin_token(&dir);
    let addr = node.addr;
    let auth = format!("Authorization: Bearer {admin}\r\n");

    // Kept alive: the node's own 405 must be JSON, not only hyper's closing responses
    // (which the connection wrapper rewrites).
    let put = request(
        addr,
        format!("PUT /agents HTTP/1.1\r\nHost: node\r\n{auth}Content-Length: 0\r\n\r\n").as_bytes(),
    );
    put.assert_json_error(405, "PUT /agents");
    let allow = put
        .header("allow")
        .unwrap_or_else(|| panic!("no Allow: {}", put.head));
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );

    request(addr, &get_request("/agents/%FF", Some(&admin)))
        .assert_json_error(400, "GET /agents/%FF");
    request(addr, b"GARBAGE\r\n\r\n").assert_json_error(400, "a garbage request line");
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: node\r\n\r\n",
        "a".repeat(70 << 10)
    );
    request(addr, long_uri.as_bytes()).assert_json_error(414, "a 70 KB URI");
    let big_header = format!(
        "GET /health HTTP/1.1\r\nHost: node\r\nX-Big: {}\r\n\r\n",
        "a".repeat(500 << 10)
    );
    request(addr, big_header.as_bytes()).assert_json_error(431, "a 500 KB header");

    let (stalled, took) = exchange(
        addr,
        format!(
            "POST /agents/x/messages HTTP/1.1\r\nHost: node\r\n{auth}Content-Length: 100\r\n\r\n{{\"add\": 1"
        )
        .as_bytes(),
        Duration::from_secs(20),
    );
    stalled
        .expect("no answer to a stalled body")
        .assert_json_error(408, "a body stalled past --body-timeout-ms 500");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "408 after {took:?}"
    );

    let declared = request(
        addr,
        format!(
            "POST /agents/x/messages HTTP/1.1\r\nHost: node\r\n{auth}Content-Length: {}\r\n\r\n",
            2 << 20
        )
        .as_bytes(),
    );
    declared.assert_json_error(413, "a 2 MiB declared body");
    request(addr, &get_request("/nope", Some(&admin))).assert_json_error(404, "GET /nope");
    request(addr, &get_request("/agents", None)).assert_json_error(401, "no token");
    request(addr, &get_request("/agents", Some(&events_only)))
        .assert_json_error(403, "an events-only token on GET /agents");

    assert_eq!(health(addr).0, Some(200));
    assert!(node.sigterm().success());
}

// ---------------------------------------------------------------------------------------
// Item 10.

#[test]
fn i10_10_strict_input() {
    let _schedule = shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let node = Node::start(&dir);
    let admin = admin_token(&dir);
    let bad_request = |method: &str, path: &str, body: &[u8], what: &str| {
        let (status, reply) = node.call(method, path, Some(&admin), body);
        assert_eq!(status, 400, "{what}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {reply}"
        );
    };

    bad_request(
        "POST",
        "/agents",
        br#"{"id":"k","kind":"counter","args":[]}"#,
        "args as a list",
    );
    assert_eq!(node.get("/agents/k", &admin).0, 404);

    assert_eq!(
        node.json(
            "POST",
            "/agents",
            &admin,
            &json!({"id": "k", "kind": "counter"})
        )
        .0,
        201
    );
    assert_eq!(
        node.json("POST", "/agents/k/messages", &admin, &json!({"add": 5}))
            .0,
        202
    );
    bad_request(
        "POST",
        "/agents/k/messages",
        br#"{"add":1,"add":2}"#,
        "a repeated key",
    );
    bad_request(
        "POST",
        "/agents/k/ask",
        br#"{"add":1,"add":2}"#,
        "a repeated key (ask)",
    );
    assert_eq!(value_of(&node, &admin, "k"), json!({"value": 5}));

    for id in [".", "..", ".x", "-x", "a/b"] {
        let body = json!({"id": id, "kind": "counter"}).to_string();
        bad_request("POST", "/agents", body.as_bytes(), &format!("id {id:?}"));
    }
    for path in [
        "/agents/../messages",
        "/agents/./messages",
        "/agents/%2E%2E/messages",
        "/agents/%2e/messages",
    ] {
        let response = request(
            node.addr,
            format!(
                "POST {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\nAuthorization: Bearer {admin}\r\nContent-Length: 10\r\n\r\n{{\"add\": 1}}"
            )
            .as_bytes(),
        );
        assert!(
            matches!(response.status, 400 | 404),
            "POST {path}: {}",
            response.head
        );
        response.assert_json_error(response.status, &format!("POST {path}"));
    }

    let supervisor = |args: Value| json!({"id": "sup", "kind": "supervisor", "args": args});
    for args in [
        json!({"within_secs": u64::MAX}),
        json!({"max_restarts": u32::MAX}),
    ] {
        let body = supervisor(args.clone()).to_string();
        bad_request(
            "POST",
            "/agents",
            body.as_bytes(),
            &format!("supervisor {args}"),
        );
    }
    assert_eq!(node.get("/agents/sup", &admin).0, 404);

    for timeout in ["0", "999999999"] {
        bad_request(
            "POST",
            &format!("/agents/k/ask?timeout_ms={timeout}"),
            b"\"get\"",
            &format!("timeout_ms={timeout}"),
        );
    }
    let (status, reply) = node.json(
        "POST",
        "/agents/k/ask?timeout_ms=1000",
        &admin,
        &json!("get"),
    );
    assert_eq!((status, reply), (200, json!({"value": 5})));

    // Nothing of the above reached the tree.
    let ids: Vec<String> = tree(&node, &admin)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(ids, ["k"]);
    assert!(node.sigterm().success());
}
