//! The end-to-end harness shared by the node's integration tests: the real `toka-node`
//! binary on 127.0.0.1 (port 0), a temporary data directory, and a minimal HTTP/1.1
//! client over `TcpStream`.
//!
//! Each test file that uses it says `mod common;`; not every file uses every item.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The `toka-node` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_toka-node");

/// A running node.
pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// Kept open so the node's stdout never breaks.
    pub(crate) stdout: BufReader<ChildStdout>,
}

impl Node {
    /// `toka-node run` on `dir` (initialised if it never was).
    pub(crate) fn start(dir: &Path) -> Node {
        Self::start_with(dir, &[])
    }

    /// `toka-node run` on `dir` with `extra` flags.
    pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> Node {
        let mut command = Command::new(BIN);
        command
            .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra);
        Self::spawn(command)
    }

    /// Starts `command` (a `toka-node run`, possibly behind a wrapper that `exec`s it) and
    /// waits for its `listening on ADDR` line. `TOKA_LISTEN` and `TOKA_CONFIG` are
    /// removed from its environment; stdin is null, stderr discarded.
    pub(crate) fn spawn(mut command: Command) -> Node {
        let mut child = command
            .env_remove("TOKA_LISTEN")
            .env_remove("TOKA_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting toka-node run");
        let stdout = child.stdout.take().unwrap();
        Self::listening(child, BufReader::new(stdout))
    }

    /// The node `child` once it printed `listening on ADDR` on `stdout`.
    pub(crate) fn listening(child: Child, mut stdout: BufReader<ChildStdout>) -> Node {
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "toka-node run exited before listening");
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse().unwrap();
            }
        };
        Node {
            child,
            addr,
            stdout,
        }
    }

    /// The node's process id.
    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    pub(crate) fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits (at most 15 s) for the node to exit.
    pub(crate) fn sigterm(self) -> ExitStatus {
        self.sigterm_within(Duration::from_secs(15))
    }

    /// Sends SIGTERM and waits at most `limit` for the node to exit; kills it and panics
    /// otherwise.
    pub(crate) fn sigterm_within(mut self, limit: Duration) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().unwrap();
        let _ = self.child.wait();
        panic!("toka-node did not exit within {limit:?} of SIGTERM");
    }

    /// One request (`Connection: close`); the status and the body as JSON (`null` if
    /// it is not JSON).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        // The server may answer (413) and close before it reads a large body.
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no HTTP response: {text:?}"));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Opens `GET /events/stream?from=1` and reads until `events` events arrived; the
    /// connection stays open.
    pub(crate) fn stream_events(&self, token: &str, events: usize) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "GET /events/stream?from=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0; 4096];
        while String::from_utf8_lossy(&seen)
            .matches("event: event")
            .count()
            < events
        {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("text/event-stream"), "{text}");
        stream
    }

    pub(crate) fn json(&self, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.call(method, path, Some(token), body.to_string().as_bytes())
    }

    pub(crate) fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), b"")
    }
}

/// A node still running when its test ends (a failed assertion, say) is killed, so no
/// test leaves a node behind.
impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The admin token `run` (or `init`) wrote to `dir/admin.token`.
pub(crate) fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// `[(id, kind, parent)]` of `GET /agents`.
pub(crate) fn tree(node: &Node, token: &str) -> Vec<(String, String, Value)> {
    let (status, agents) = node.get("/agents", token);
    assert_eq!(status, 200, "{agents}");
    agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["kind"].as_str().unwrap().to_owned(),
                a["parent"].clone(),
            )
        })
        .collect()
}

/// The journal's head position, as `GET /metrics` reports it.
pub(crate) fn journal_head(node: &Node, token: &str) -> u64 {
    let mut stream = TcpStream::connect(node.addr).unwrap();
    stream
        .write_all(
            format!(
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("toka_journal_head_position "))
        .and_then(|v| v.trim().parse().ok())
        .expect("no toka_journal_head_position in /metrics")
}

/// A counter's reply to `"get"` (asserting 200).
pub(crate) fn value_of(node: &Node, token: &str, id: &str) -> Value {
    let (status, reply) = node.json("POST", &format!("/agents/{id}/ask"), token, &json!("get"));
    assert_eq!(status, 200, "{reply}");
    reply
}

/// Runs an offline command on `dir`; its stdout, trimmed.
pub(crate) fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Stores `value` as the vault secret `name` of data directory `dir` with
/// `toka-node secret set` (the value on stdin), and checks that nothing echoed it.
pub(crate) fn set_secret(dir: &Path, name: &str, value: &str) {
    let mut set = Command::new(BIN)
        .args(["secret", "set", name, "--data-dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(format!("{value}\n").as_bytes())
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains(value),
        "secret set echoed the secret: {printed}"
    );
}

/// Spawns the assistant `helper` on the configured model `local`, with `system` and
/// `tools`, holding `token`; the request is made with `auth`.
pub(crate) fn spawn_assistant(node: &Node, auth: &str, token: &str, system: &str, tools: &[&str]) {
    let spawn = json!({
        "id": "helper",
        "kind": "assistant",
        "args": {
            "model": "local",
            "system": system,
            "tools": tools,
            "max_steps": 4,
            "token": token,
        }
    });
    let (status, body) = node.json("POST", "/agents", auth, &spawn);
    assert_eq!(status, 201, "{body}");
}

/// Checks a turn cut while the model answered its second step, then finished after a
/// restart (or elsewhere): one turn (`entries`: user, assistant, tool, assistant), and the
/// model (`sent`) asked step 1 once and step 2 twice, the second time as the first.
pub(crate) fn assert_cut_turn_finished_once(
    entries: &[Value],
    sent: &[toka_test_support::model_server::Recorded],
) {
    let roles: Vec<&str> = entries
        .iter()
        .map(|e| e["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant"],
        "one turn, once"
    );
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
}

/// A model's answer that calls `fs.read` on `notes.txt` (see [`notes_dir`]).
pub(crate) fn read_notes() -> toka_test_support::model_server::Reply {
    toka_test_support::model_server::Reply::Json(toka_test_support::model_server::chat_tool_calls(
        &[("call_1", "fs_read", json!({"path": "notes.txt"}))],
        60,
        12,
    ))
}

/// The transcript of the assistant `helper`.
pub(crate) fn transcript(node: &Node, token: &str) -> Vec<Value> {
    let (status, body) = node.json("POST", "/agents/helper/query", token, &json!("transcript"));
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("a transcript is a list: {body}"))
}

/// `tmp/files` with the assistant tests' `notes.txt` ("Meeting moved to Thursday, room B."):
/// the fs tools' root of a node under test.
pub(crate) fn notes_dir(tmp: &Path) -> std::path::PathBuf {
    let files = tmp.join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(
        files.join("notes.txt"),
        "Meeting moved to Thursday, room B.",
    )
    .unwrap();
    files
}

/// The URL of the PostgreSQL test database (`TOKA_TEST_POSTGRES`, see
/// `toka-store/tests/postgres/start.sh`), or `None` (after saying so) when the test should
/// skip.
///
/// # Panics
/// When `TOKA_REQUIRE_POSTGRES=1` and `TOKA_TEST_POSTGRES` is not set (CI).
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var("TOKA_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("TOKA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "TOKA_REQUIRE_POSTGRES=1 but TOKA_TEST_POSTGRES is not set"
            );
            eprintln!("skipped: TOKA_TEST_POSTGRES is not set");
            None
        }
    }
}
