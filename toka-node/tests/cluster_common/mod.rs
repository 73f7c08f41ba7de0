//! What the cluster tests share (`cluster.rs`, `cluster_partition.rs`): node processes
//! (optionally inside a network namespace), a tolerant HTTP client, the schemas a test
//! makes, the client-side accounting of sent messages, and the history checker over the
//! shard journals ([`history`]).
#![allow(dead_code)]

pub(crate) mod history;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::BIN;

/// Every schema of a cluster (`<base>_…`), dropped when the test ends.
pub(crate) struct Schemas {
    pub(crate) url: String,
    pub(crate) base: String,
}

impl Drop for Schemas {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let names: Vec<String> = client
                .query(
                    "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                    &[&format!("{}\\_%", self.base)],
                )
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
            for name in names {
                let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"));
            }
        }
    }
}

/// One `toka-node run --node-id` process (killed when dropped); its stderr goes to
/// `<dir>.log`.
pub(crate) struct ClusterNode {
    pub(crate) id: &'static str,
    pub(crate) addr: SocketAddr,
    dir: PathBuf,
    config: PathBuf,
    journal: String,
    netns: Option<String>,
    log: PathBuf,
    child: Option<Child>,
    /// The process id of each start, in order.
    pids: Vec<u32>,
}

impl ClusterNode {
    /// Starts a node on `dir` with `config` and the journal URL `journal`, listening on
    /// `addr`, inside the network namespace `netns` if given; returns once it listens.
    pub(crate) fn start(
        id: &'static str,
        dir: &Path,
        config: &Path,
        journal: &str,
        addr: SocketAddr,
        netns: Option<&str>,
    ) -> ClusterNode {
        let mut node = ClusterNode {
            id,
            addr,
            dir: dir.to_owned(),
            config: config.to_owned(),
            journal: journal.to_owned(),
            netns: netns.map(str::to_owned),
            log: dir.with_extension("log"),
            child: None,
            pids: Vec::new(),
        };
        node.restart();
        node
    }

    /// Starts the node (again, after a kill), with the same settings.
    pub(crate) fn restart(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, BIN]);
                command
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .args(["run", "--node-id", self.id, "--listen"])
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(&self.config)
            .env("TOKA_JOURNAL", &self.journal)
            .env_remove("TOKA_LISTEN")
            .env_remove("TOKA_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "node {} exited before listening: {}",
                self.id,
                self.log()
            );
            if line.starts_with("listening on ") {
                break;
            }
        }
        // Keep draining stdout so the node never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        // `ip netns exec` execs the node: the same process.
        self.pids.push(child.id());
        self.child = Some(child);
    }

    /// The process id of each of its starts so far, in order.
    pub(crate) fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Its stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits (at most 20 s) for it to stop.
    pub(crate) fn sigterm(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.kill().unwrap();
            panic!("node {} did not stop within 20 s of SIGTERM", self.id);
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Every node's stderr, for a failure message.
pub(crate) fn report(nodes: &[ClusterNode]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {} ---\n{}", n.id, n.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One request with a short timeout; `Err` when the node cannot be reached or did not
/// answer in full (`connect: …` when nothing was sent).
pub(crate) fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let body = body.to_string();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Calls `f` until it answers something else than 503 (a shard moving: `Retry-After`),
/// for at most 10 s.
pub(crate) fn retry_503(mut f: impl FnMut() -> (u16, Value)) -> (u16, Value) {
    let started = Instant::now();
    loop {
        let answer = f();
        if answer.0 != 503 || started.elapsed() > Duration::from_secs(10) {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `check` until it holds, for at most `limit`.
pub(crate) fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// What the clients know of one counter's messages.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Sent {
    /// Answered 202: durably journaled.
    pub(crate) acked: u64,
    /// Refused before reaching any shard: surely not applied.
    pub(crate) refused: u64,
    /// Anything else (a node died or was cut mid-request, a forward got no answer):
    /// applied or not.
    pub(crate) doubt: u64,
}

/// What one message's answer tells its sender.
pub(crate) enum Outcome {
    Acked,
    Refused,
    /// In doubt, and why (a short text, for a histogram).
    Doubt(String),
    /// A 4xx: the test sent something wrong.
    Unexpected(u16, Value),
}

impl Sent {
    /// Counts the answer to one `POST /agents/{id}/messages`.
    pub(crate) fn record(&mut self, result: Result<(u16, Value), String>) -> Outcome {
        let outcome = match result {
            Ok((202, _)) => Outcome::Acked,
            Ok((503, body)) if refused_before_any_shard(&body) => Outcome::Refused,
            Ok((status, body)) if status < 500 => Outcome::Unexpected(status, body),
            Err(error) if error.starts_with("connect:") => Outcome::Refused,
            Ok((status, body)) => Outcome::Doubt(format!("{status} {}", body["error"])),
            Err(error) => Outcome::Doubt(error.chars().take(90).collect()),
        };
        match &outcome {
            Outcome::Acked => self.acked += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Doubt(_) => self.doubt += 1,
            Outcome::Unexpected(..) => {}
        }
        outcome
    }
}

/// Whether a 503's body says the request reached no shard (surely not applied).
pub(crate) fn refused_before_any_shard(body: &Value) -> bool {
    body["error"].as_str().is_some_and(|e| {
        e.contains("has no live holder")
            || e.contains("not served by this node")
            || e.contains("cannot be reached")
    })
}

/// `?` or `&`: what joins a parameter to `url`.
pub(crate) fn sep(url: &str) -> char {
    if url.contains('?') { '&' } else { '?' }
}

/// A port free on 127.0.0.1 now (the nodes need fixed ports: a restarted node keeps its
/// address).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Makes the data directory `<tmp>/<ids[0]>` with `toka-node init` and copies it to each
/// other id (every node of a cluster needs the same root and seal keys); the admin token.
pub(crate) fn init_data_dirs(tmp: &Path, ids: &[&str]) -> String {
    init_data_dirs_with(tmp, ids, |_| {})
}

/// As [`init_data_dirs`], with `prepare` run on the first directory before it is copied
/// (e.g. to put a secret in its vault).
pub(crate) fn init_data_dirs_with(tmp: &Path, ids: &[&str], prepare: impl Fn(&Path)) -> String {
    let first = tmp.join(ids[0]);
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&first)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    prepare(&first);
    for id in &ids[1..] {
        toka_test_support::fs::copy_dir(&first, &tmp.join(id));
    }
    std::fs::read_to_string(first.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Asks every counter its value (counter `i` through `addrs[i % len]`) and checks it lies
/// between its acknowledged messages and those plus the ones in doubt; `context` is added
/// to a failure's message.
pub(crate) fn check_counters(
    addrs: &[SocketAddr],
    token: &str,
    counters: &[String],
    sent: &std::collections::BTreeMap<String, Sent>,
    context: impl Fn() -> String,
) {
    for (i, id) in counters.iter().enumerate() {
        let (status, value) = retry_503(|| {
            call(
                addrs[i % addrs.len()],
                "POST",
                &format!("/agents/{id}/query"),
                token,
                &serde_json::json!("get"),
            )
            .unwrap()
        });
        assert_eq!(status, 200, "{id}: {value}");
        let value = value["value"]
            .as_u64()
            .unwrap_or_else(|| panic!("{id}: no value in {value}"));
        let s = sent.get(id).copied().unwrap_or_default();
        assert!(
            value >= s.acked && value <= s.acked + s.doubt,
            "{id}: value {value}, but {s:?}: an acknowledged message was lost or one applied twice{}",
            context()
        );
    }
}

/// Opens each shard journal (`urls`, the nodes stopped) with the store itself and checks
/// its hash chain is intact.
pub(crate) fn verify_shards(urls: impl IntoIterator<Item = String>) {
    for (shard, url) in urls.into_iter().enumerate() {
        let checked = std::thread::spawn(move || {
            use toka_store::Journal as _;
            toka_store::PgJournal::connect(&url, toka_store::JournalConfig::default())
                .unwrap()
                .verify()
                .unwrap()
        })
        .join()
        .unwrap();
        assert!(
            checked.is_intact(),
            "shard {shard}: {:?}",
            checked.first_bad
        );
    }
}
