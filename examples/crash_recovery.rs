//! Kill -9 and recover: the supervision tree and every agent's state come back from the
//! journal.
//!
//! `cargo run --example crash_recovery` re-runs its own executable as a child process
//! (with `TOKA_CRASH_CHILD` set to a journal directory). The child builds a tree of
//! durable agents over a sled journal there, sends them work, prints the tree and states
//! it sees, prints `ready` and waits. The parent reads `ready`, kills the child with
//! SIGKILL (no shutdown, no flush beyond what each acknowledged send already made
//! durable), then starts a fresh runtime over the same journal in-process, prints the
//! rebuilt tree (ids, kinds, parents) and each agent's recovered state, and checks that
//! they are exactly what the child reported.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toka::prelude::*;

/// Set (to the journal directory) in the child process.
const CHILD_ENV: &str = "TOKA_CRASH_CHILD";
const ASK: Duration = Duration::from_secs(5);

/// A department: hires agents as its children, and remembers whom.
struct Dept;

#[derive(Serialize, Deserialize)]
enum DeptMsg {
    HireDept(String),
    HireCounter(String),
    Describe,
}

impl Agent for Dept {
    const KIND: &'static str = "dept";
    type Args = ();
    type Msg = DeptMsg;
    type Reply = String;
    type State = Vec<String>;

    fn init(&self, _: &()) -> Result<Vec<String>, AgentError> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        members: &mut Vec<String>,
        msg: DeptMsg,
    ) -> Result<String, AgentError> {
        match msg {
            DeptMsg::HireDept(id) => {
                ctx.spawn::<Dept>(SpawnSpec::new(&id)?, ()).await?;
                members.push(id);
            }
            DeptMsg::HireCounter(id) => {
                ctx.spawn::<Counter>(SpawnSpec::new(&id)?, ()).await?;
                members.push(id);
            }
            DeptMsg::Describe => {}
        }
        Ok(format!("members={}", members.join(",")))
    }
}

/// A counter of work done.
struct Counter;

#[derive(Serialize, Deserialize)]
enum CounterMsg {
    Add(u64),
    Describe,
}

impl Agent for Counter {
    const KIND: &'static str = "counter";
    type Args = ();
    type Msg = CounterMsg;
    type Reply = String;
    type State = u64;

    fn init(&self, _: &()) -> Result<u64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: &mut Context<'_, Self>,
        total: &mut u64,
        msg: CounterMsg,
    ) -> Result<String, AgentError> {
        if let CounterMsg::Add(n) = msg {
            *total += n;
        }
        Ok(format!("total={total}"))
    }
}

async fn start(dir: &Path) -> Result<Runtime, Box<dyn Error>> {
    let journal = Arc::new(SledJournal::open(dir, JournalConfig::default())?);
    Ok(Runtime::builder(journal)
        .register(Dept)
        .register(Counter)
        .start()
        .await?)
}

/// One line per agent, in id order: id, kind, parent and state (asked of the agent).
async fn report(runtime: &Runtime) -> Result<Vec<String>, Box<dyn Error>> {
    let mut tree = runtime.tree();
    tree.sort_by(|a, b| a.id.cmp(&b.id));
    let mut lines = Vec::new();
    for agent in tree {
        let state = match agent.kind.as_str() {
            Dept::KIND => {
                let dept = runtime.agent::<Dept>(&agent.id)?;
                dept.ask(DeptMsg::Describe, ASK).await?
            }
            Counter::KIND => {
                let counter = runtime.agent::<Counter>(&agent.id)?;
                counter.ask(CounterMsg::Describe, ASK).await?
            }
            other => return Err(format!("unexpected kind {other}").into()),
        };
        let parent = agent.parent.map_or("-".to_owned(), |p| p.to_string());
        lines.push(format!(
            "{} kind={} parent={parent} {state}",
            agent.id, agent.kind
        ));
    }
    Ok(lines)
}

/// The child: build the tree, do some work, report, say `ready`, wait to be killed.
async fn child(dir: &Path) -> Result<(), Box<dyn Error>> {
    let runtime = start(dir).await?;
    let hq = runtime.spawn::<Dept>(SpawnSpec::new("hq")?, ()).await?;
    hq.ask(DeptMsg::HireDept("eng".into()), ASK).await?;
    hq.ask(DeptMsg::HireCounter("carol".into()), ASK).await?;
    let eng = runtime.agent::<Dept>(&AgentId::new("eng")?)?;
    eng.ask(DeptMsg::HireCounter("alice".into()), ASK).await?;
    eng.ask(DeptMsg::HireCounter("bob".into()), ASK).await?;
    for (id, work) in [("alice", [3, 4]), ("bob", [10, 1]), ("carol", [7, 0])] {
        let counter = runtime.agent::<Counter>(&AgentId::new(id)?)?;
        for n in work {
            // Returns once the message is durable in the journal.
            counter.send(CounterMsg::Add(n)).await?;
        }
    }
    // The asks queue behind the sends, so the report includes all the work.
    for line in report(&runtime).await? {
        println!("child: {line}");
    }
    println!("ready");
    // No shutdown: the parent kills this process.
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// The child's report lines, up to its `ready`.
fn read_report(stdout: ChildStdout) -> Result<Vec<String>, Box<dyn Error>> {
    let mut expected = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("  {line}");
        if line == "ready" {
            return Ok(expected);
        }
        if let Some(agent) = line.strip_prefix("child: ") {
            expected.push(agent.to_owned());
        }
    }
    Err("the child ended before it was ready".into())
}

fn main() -> Result<(), Box<dyn Error>> {
    let tokio = tokio::runtime::Runtime::new()?;
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return tokio.block_on(child(Path::new(&dir)));
    }

    let dir = tempfile::tempdir()?;
    let journal_dir = dir.path().join("journal");
    let mut process = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, &journal_dir)
        .stdout(Stdio::piped())
        .spawn()?;
    println!("started child pid {}", process.id());
    let read = process
        .stdout
        .take()
        .ok_or_else(|| "no stdout from the child".into())
        .and_then(read_report);
    // Kill whatever happened while reading, so no child outlives the example.
    process.kill()?; // SIGKILL
    let status = process.wait()?;
    let expected = read?;
    println!("killed the child: {status}");

    tokio.block_on(async {
        let started = std::time::Instant::now();
        let runtime = start(&journal_dir).await?;
        println!(
            "fresh runtime recovered {} agents in {:?}",
            runtime.tree().len(),
            started.elapsed()
        );
        let recovered = report(&runtime).await?;
        for line in &recovered {
            println!("recovered: {line}");
        }
        runtime.shutdown().await?;
        if recovered != expected {
            return Err(format!(
                "recovered tree differs from the child's:\n{recovered:#?}\n{expected:#?}"
            )
            .into());
        }
        println!(
            "recovered tree and states match the child's ({} agents)",
            recovered.len()
        );
        Ok::<(), Box<dyn Error>>(())
    })
}
