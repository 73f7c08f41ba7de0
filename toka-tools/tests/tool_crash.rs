//! Exactly-once tool calls through a real crash: an agent calls an `External` tool that
//! appends a line to a file, the process is killed with `SIGKILL`, and after a restart
//! the file holds the line exactly once.
//!
//! `harness = false`: `main` is the parent unless `TOKA_TOOL_CRASH_DIR` is set, in which
//! case this process is a child. A child opens the sled journal in that directory,
//! starts the tool host and the runtime (recovering the `writer` agent, or spawning it),
//! and, given `TOKA_TOOL_CRASH_KEY`, sends `writer` a message whose handler calls a tool
//! with that key. With `TOKA_CRASH_AT` it then waits to be killed at a chosen point:
//!
//! - `after_result`: the handler, right after `call_tool` returned (the result is
//!   journaled), writes a marker file and hangs;
//! - `in_tool`: the tool itself, after its side effect and before it returns (the intent
//!   is journaled, the result is not), writes the marker and hangs.
//!
//! The parent waits for the marker and kills the child (`Child::kill`, `SIGKILL`), then
//! runs a child without a crash point: recovery handles the unfinished message again, the
//! handler finishes, and the child prints the agent's state (asked with `ask`).
//!
//! Scenarios:
//! 1. killed after the result, five times, a new key each time: every key is in the
//!    ledger exactly once, and the agent records each call's output as first returned;
//! 2. killed between intent and result with the `External` `ledger.append`: after the
//!    restart the call fails with `InDoubt` (the tool is not run again), the ledger holds
//!    the line once, and the journal records the in-doubt outcome (a second restart
//!    replays it);
//! 3. the same crash point with the `Idempotent` `file.put`: it runs again and succeeds.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{
    EffectRecord, FilePut, Ledger, LedgerInput, LedgerOutput, PutInput, PutOutput, decode_outcome,
    effect_records, lines, mark_and_hang, outcome_body,
};
use serde::{Deserialize, Serialize};
use toka_actors::{Agent, AgentError, AgentId, Context, Runtime, SpawnSpec};
use toka_store::{Journal, JournalConfig, SledJournal};
use toka_test_support::child::{child_fail, emit, run_as_test};
use toka_tools::{Authority, Capability, Caveat, ToolCalls, ToolErrorKind, ToolHost, ToolLimits};

/// The test directory; set only in a child.
const DIR_ENV: &str = "TOKA_TOOL_CRASH_DIR";
/// The key to call a tool with (optional).
const KEY_ENV: &str = "TOKA_TOOL_CRASH_KEY";
/// Which tool: `ledger` or `put`.
const TOOL_ENV: &str = "TOKA_TOOL_CRASH_TOOL";
/// Where to hang for the kill: `after_result` or `in_tool` (optional).
const CRASH_ENV: &str = "TOKA_CRASH_AT";

/// A child gives up after this long (e.g. its parent died).
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// How long the parent waits for a child's marker or its end.
const WAIT: Duration = Duration::from_secs(30);

/// The agent's id.
const WRITER: &str = "writer";

fn journal_dir(dir: &Path) -> PathBuf {
    dir.join("journal")
}
fn ledger_file(dir: &Path) -> PathBuf {
    dir.join("ledger.txt")
}
fn files_dir(dir: &Path) -> PathBuf {
    dir.join("files")
}
fn put_runs_file(dir: &Path) -> PathBuf {
    dir.join("put-runs.log")
}
fn marker_file(dir: &Path) -> PathBuf {
    dir.join("crash.marker")
}
fn content_for(key: &str) -> String {
    format!("contents of {key}\n")
}

// ---------------------------------------------------------------------------------------
// The agent.

/// Calls a tool per message and records each outcome.
struct Writer {
    token: Capability,
    /// If set, the handler writes this marker and hangs right after `call_tool` returns.
    crash_after_result: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
enum WriterMsg {
    /// Appends `key` to the ledger (`ledger.append`, `External`).
    Ledger(String),
    /// Writes file `key` (`file.put`, `Idempotent`).
    Put(String),
    /// Returns the state.
    State,
}

/// A call's key and outcome: `lines=N` / `bytes=N`, or the error kind.
type Entry = (String, Result<String, ToolErrorKind>);

impl Agent for Writer {
    const KIND: &'static str = "tools.writer";
    type Args = ();
    type Msg = WriterMsg;
    type Reply = Vec<Entry>;
    type State = Vec<Entry>;

    fn init(&self, _: &()) -> Result<Vec<Entry>, AgentError> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        state: &mut Vec<Entry>,
        msg: WriterMsg,
    ) -> Result<Vec<Entry>, AgentError> {
        let (key, outcome) = match msg {
            WriterMsg::Ledger(key) => {
                let input = LedgerInput { key: key.clone() };
                let outcome = cx
                    .call_tool::<_, LedgerOutput>("ledger.append", &self.token, &input)
                    .await
                    .map(|o| format!("lines={}", o.lines));
                (key, outcome)
            }
            WriterMsg::Put(key) => {
                let input = PutInput {
                    name: key.clone(),
                    content: content_for(&key),
                };
                let outcome = cx
                    .call_tool::<_, PutOutput>("file.put", &self.token, &input)
                    .await
                    .map(|o| format!("bytes={}", o.bytes));
                (key, outcome)
            }
            WriterMsg::State => return Ok(state.clone()),
        };
        if let Some(marker) = &self.crash_after_result
            && !cx.is_replaying()
        {
            mark_and_hang(marker).await;
        }
        state.push((key, outcome.map_err(|e| e.kind)));
        Ok(state.clone())
    }
}

// ---------------------------------------------------------------------------------------
// The child.

fn child_main(dir: PathBuf) {
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        child_fail("was never killed and did not finish");
    });
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| child_fail(&format!("tokio: {e}")));
    tokio.block_on(child(dir));
}

async fn child(dir: PathBuf) {
    emit("START");
    let crash_at = std::env::var(CRASH_ENV).ok();
    let marker = marker_file(&dir);
    let in_tool = (crash_at.as_deref() == Some("in_tool")).then(|| marker.clone());
    let after_result = (crash_at.as_deref() == Some("after_result")).then(|| marker.clone());
    if crash_at.is_some() && in_tool.is_none() && after_result.is_none() {
        child_fail(&format!("unknown {CRASH_ENV} {crash_at:?}"));
    }
    let journal: Arc<dyn Journal> = Arc::new(
        SledJournal::open(journal_dir(&dir), JournalConfig::default())
            .unwrap_or_else(|e| child_fail(&format!("opening the journal: {e}"))),
    );
    let authority = Authority::open(&dir.join("root.key"), journal.clone())
        .unwrap_or_else(|e| child_fail(&format!("opening the authority: {e}")));
    // Long timeouts: a hanging tool must be killed by the parent, not time out.
    let limits = ToolLimits {
        timeout: CHILD_LIFETIME,
        ..ToolLimits::default()
    };
    let host = ToolHost::builder(authority.clone())
        .tool_with_limits(
            Ledger {
                path: ledger_file(&dir),
                crash_marker: in_tool.clone(),
            },
            limits,
        )
        .tool_with_limits(
            FilePut {
                dir: files_dir(&dir),
                runs: put_runs_file(&dir),
                crash_marker: in_tool,
            },
            limits,
        )
        .start()
        .await
        .unwrap_or_else(|e| child_fail(&format!("starting the tool host: {e}")));
    let token = authority
        .mint([Caveat::Agent(WRITER.into())])
        .unwrap_or_else(|e| child_fail(&format!("minting: {e}")));
    let runtime = Runtime::builder(journal)
        .extension(host.clone())
        .register(Writer {
            token,
            crash_after_result: after_result,
        })
        .start()
        .await
        .unwrap_or_else(|e| child_fail(&format!("starting the runtime: {e}")));
    emit("RECOVERED");
    let id = AgentId::new(WRITER).unwrap_or_else(|e| child_fail(&e.to_string()));
    let writer = match runtime.agent::<Writer>(&id) {
        Ok(writer) => writer,
        Err(_) => runtime
            .spawn::<Writer>(SpawnSpec::with_id(id), ())
            .await
            .unwrap_or_else(|e| child_fail(&format!("spawning: {e}"))),
    };
    if let Ok(key) = std::env::var(KEY_ENV) {
        let msg = match std::env::var(TOOL_ENV).as_deref() {
            Ok("ledger") => WriterMsg::Ledger(key),
            Ok("put") => WriterMsg::Put(key),
            other => child_fail(&format!("unknown {TOOL_ENV} {other:?}")),
        };
        writer
            .send(msg)
            .await
            .unwrap_or_else(|e| child_fail(&format!("sending: {e}")));
        emit("SENT");
        if crash_at.is_some() {
            // The handler or the tool hangs at the crash point; wait for the SIGKILL.
            std::future::pending::<()>().await;
        }
    }
    let state = writer
        .ask(WriterMsg::State, WAIT)
        .await
        .unwrap_or_else(|e| child_fail(&format!("asking for the state: {e}")));
    let state = serde_json::to_string(&state).unwrap_or_else(|e| child_fail(&e.to_string()));
    emit(&format!("STATE {state}"));
    drop(writer);
    runtime
        .shutdown()
        .await
        .unwrap_or_else(|e| child_fail(&format!("shutting down: {e}")));
    host.shutdown().await;
    emit("DONE");
}

// ---------------------------------------------------------------------------------------
// The parent.

/// Starts a child over `dir` with these extra environment variables; a thread forwards
/// its stdout lines.
fn spawn_child(dir: &Path, envs: &[(&str, &str)]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env(DIR_ENV, dir)
        .env_remove(KEY_ENV)
        .env_remove(TOOL_ENV)
        .env_remove(CRASH_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn errors(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("ERR")).collect()
}

/// Runs a child that must reach the crash point; SIGKILLs it there.
fn run_killed(dir: &Path, envs: &[(&str, &str)]) {
    use std::os::unix::process::ExitStatusExt;

    let marker = marker_file(dir);
    let _ = std::fs::remove_file(&marker);
    let (mut child, rx) = spawn_child(dir, envs);
    let deadline = Instant::now() + WAIT;
    let reached = loop {
        if marker.exists() {
            break true;
        }
        if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let printed: Vec<String> = rx.try_iter().collect();
    assert!(
        errors(&printed).is_empty(),
        "{envs:?}: the child reported errors: {printed:?}"
    );
    assert!(
        reached,
        "{envs:?}: the child did not reach its crash point ({status}); it printed {printed:?}"
    );
    assert_eq!(
        status.signal(),
        Some(9),
        "{envs:?}: the child ended by itself ({status}) instead of by SIGKILL"
    );
    assert!(
        printed.iter().any(|l| l == "SENT"),
        "{envs:?}: the message was not sent: {printed:?}"
    );
    std::fs::remove_file(&marker).unwrap();
}

/// Runs a child without a crash point to its end; returns the agent's state it printed.
fn run_to_end(dir: &Path) -> Vec<Entry> {
    let (mut child, rx) = spawn_child(dir, &[]);
    let deadline = Instant::now() + WAIT;
    let mut printed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line == "DONE" || line.starts_with("ERR");
                printed.push(line);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    printed.extend(rx.try_iter());
    assert!(
        errors(&printed).is_empty(),
        "the recovering child reported errors: {printed:?}"
    );
    assert!(
        status.success() && printed.iter().any(|l| l == "DONE"),
        "the recovering child did not finish ({status}): {printed:?}"
    );
    assert!(
        !marker_file(dir).exists(),
        "a child without a crash point hung"
    );
    let state = printed
        .iter()
        .find_map(|l| l.strip_prefix("STATE "))
        .unwrap_or_else(|| panic!("no STATE line: {printed:?}"));
    serde_json::from_str(state).unwrap()
}

/// The writer's intents `(name, digest)` and results (`Ok(outcome)` or the effect's
/// error text), read from the journal while no child runs.
struct Recorded {
    intents: Vec<(String, Option<[u8; 32]>)>,
    results: Vec<Result<Result<Vec<u8>, ToolErrorKind>, String>>,
}

fn recorded(dir: &Path) -> Recorded {
    let journal = SledJournal::open(journal_dir(dir), JournalConfig::default()).unwrap();
    let mut out = Recorded {
        intents: Vec::new(),
        results: Vec::new(),
    };
    for (_, record) in effect_records(&journal, WRITER) {
        match record {
            EffectRecord::Intent(i) => out.intents.push((i.name, i.input_digest)),
            EffectRecord::Result(r) => out.results.push(
                outcome_body(&r.outcome).map(|body| decode_outcome(body).map_err(|e| e.kind)),
            ),
        }
    }
    out
}

fn digest<T: Serialize>(input: &T) -> Option<[u8; 32]> {
    Some(*blake3::hash(&serde_json::to_vec(input).unwrap()).as_bytes())
}

/// Scenario 1: killed right after the result is journaled, `rounds` times.
fn killed_after_the_result(rounds: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let keys: Vec<String> = (1..=rounds).map(|i| format!("key-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        run_killed(
            dir,
            &[
                (KEY_ENV, key),
                (TOOL_ENV, "ledger"),
                (CRASH_ENV, "after_result"),
            ],
        );
        assert_eq!(
            lines(&ledger_file(dir)),
            keys[..=i],
            "round {i}: the tool ran once before the kill"
        );
        let state = run_to_end(dir);
        let expected: Vec<Entry> = keys[..=i]
            .iter()
            .enumerate()
            .map(|(j, k)| (k.clone(), Ok(format!("lines={}", j + 1))))
            .collect();
        assert_eq!(
            state, expected,
            "round {i}: the agent finished each call once, with the recorded output"
        );
        assert_eq!(
            lines(&ledger_file(dir)),
            keys[..=i],
            "round {i}: every key exactly once"
        );
    }
    let recorded = recorded(dir);
    let expected_intents: Vec<_> = keys
        .iter()
        .map(|k| {
            (
                "ledger.append".to_owned(),
                digest(&LedgerInput { key: k.clone() }),
            )
        })
        .collect();
    assert_eq!(recorded.intents, expected_intents, "one intent per call");
    let expected_results: Vec<_> = (1..=rounds)
        .map(|n| Ok(Ok(serde_json::to_vec(&LedgerOutput { lines: n }).unwrap())))
        .collect();
    assert_eq!(recorded.results, expected_results, "one result per call");
    format!("{rounds} kills after the result, {rounds} keys once each")
}

/// Scenario 2: killed between intent and result; `External` → `InDoubt`.
fn killed_in_an_external_tool() -> String {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run_killed(
        dir,
        &[(KEY_ENV, "x"), (TOOL_ENV, "ledger"), (CRASH_ENV, "in_tool")],
    );
    assert_eq!(lines(&ledger_file(dir)), ["x"], "the side effect happened");
    let before = recorded(dir);
    assert_eq!(before.intents.len(), 1, "the intent is journaled");
    assert!(
        before.results.is_empty(),
        "the result is not: {:?}",
        before.results
    );

    let expected: Vec<Entry> = vec![("x".into(), Err(ToolErrorKind::InDoubt))];
    assert_eq!(run_to_end(dir), expected, "the call is in doubt");
    assert_eq!(
        lines(&ledger_file(dir)),
        ["x"],
        "the tool did not run again"
    );
    let after = recorded(dir);
    assert_eq!(
        after.intents,
        [(
            "ledger.append".to_owned(),
            digest(&LedgerInput { key: "x".into() })
        )]
    );
    assert_eq!(after.results.len(), 1, "{:?}", after.results);
    assert!(
        matches!(&after.results[0], Err(reason) if reason.contains("in doubt")),
        "the in-doubt outcome is journaled: {:?}",
        after.results
    );

    // Another restart replays the recorded outcome.
    assert_eq!(run_to_end(dir), expected);
    assert_eq!(lines(&ledger_file(dir)), ["x"]);
    let again = recorded(dir);
    assert_eq!((again.intents.len(), again.results.len()), (1, 1));
    "an external call cut off by a kill is in doubt, not re-run".into()
}

/// Scenario 3: killed between intent and result; `Idempotent` → run again.
fn killed_in_an_idempotent_tool() -> String {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run_killed(
        dir,
        &[(KEY_ENV, "y"), (TOOL_ENV, "put"), (CRASH_ENV, "in_tool")],
    );
    assert_eq!(lines(&put_runs_file(dir)), ["y"]);
    let before = recorded(dir);
    assert_eq!((before.intents.len(), before.results.len()), (1, 0));

    let bytes = content_for("y").len();
    let expected: Vec<Entry> = vec![("y".into(), Ok(format!("bytes={bytes}")))];
    assert_eq!(
        run_to_end(dir),
        expected,
        "the call was re-run and succeeded"
    );
    assert_eq!(lines(&put_runs_file(dir)), ["y", "y"], "it ran again");
    assert_eq!(
        std::fs::read_to_string(files_dir(dir).join("y")).unwrap(),
        content_for("y")
    );
    let after = recorded(dir);
    let input = PutInput {
        name: "y".into(),
        content: content_for("y"),
    };
    assert_eq!(
        after.intents,
        vec![("file.put".to_owned(), digest(&input)); 2],
        "a new intent for the re-run"
    );
    assert_eq!(
        after.results,
        [Ok(Ok(serde_json::to_vec(&PutOutput {
            bytes: bytes as u64
        })
        .unwrap()))]
    );
    "an idempotent call cut off by a kill is re-run".into()
}

fn parent() {
    let started = Instant::now();
    type Scenario = (&'static str, Box<dyn Fn() -> String>);
    let scenarios: Vec<Scenario> = vec![
        ("after_result", Box::new(|| killed_after_the_result(5))),
        ("in_external_tool", Box::new(killed_in_an_external_tool)),
        ("in_idempotent_tool", Box::new(killed_in_an_idempotent_tool)),
    ];
    let mut failed = Vec::new();
    let mut passed = Vec::new();
    for (name, scenario) in &scenarios {
        let t = Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario)) {
            Ok(summary) => {
                println!(
                    "tool_crash {name}: ok in {:.1} s: {summary}",
                    t.elapsed().as_secs_f64()
                );
                passed.push(*name);
            }
            Err(_) => {
                println!("tool_crash {name}: FAILED (see the panic above)");
                failed.push(*name);
            }
        }
    }
    println!(
        "tool_crash: {} of {} scenarios passed in {:.1} s{}",
        passed.len(),
        scenarios.len(),
        started.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(", "))
        }
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

fn main() {
    if let Ok(dir) = std::env::var(DIR_ENV) {
        child_main(PathBuf::from(dir));
        return;
    }
    run_as_test("tool_crash", parent);
}
