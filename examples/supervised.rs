//! A supervised tree of durable agents that survives a restart.
//!
//! `cargo run --example supervised` builds a team (a supervisor with two workers) over a
//! sled journal in a temporary directory, sends work, crashes a worker on purpose (its
//! supervisor restarts it and it recovers its state from the journal), shuts the runtime
//! down, then starts a new runtime over the same journal and shows the same tree and
//! states.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toka::prelude::*;

/// A worker that counts the work it was given.
struct Worker;

#[derive(Serialize, Deserialize)]
enum Work {
    Do(u64),
    Crash,
    Total,
}

impl Agent for Worker {
    const KIND: &'static str = "worker";
    type Args = ();
    type Msg = Work;
    type Reply = u64;
    type State = u64;

    fn init(&self, _: &()) -> Result<u64, AgentError> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: &mut Context<'_, Self>,
        total: &mut u64,
        work: Work,
    ) -> Result<u64, AgentError> {
        match work {
            Work::Do(n) => *total += n,
            Work::Crash => return Err(AgentError::msg("crashing on purpose")),
            Work::Total => {}
        }
        Ok(*total)
    }
}

/// A supervisor that starts its workers when told to.
struct Team;

impl Agent for Team {
    const KIND: &'static str = "team";
    type Args = ();
    type Msg = Vec<String>;
    type Reply = ();
    type State = ();

    fn init(&self, _: &()) -> Result<(), AgentError> {
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        _: &mut (),
        workers: Vec<String>,
    ) -> Result<(), AgentError> {
        for id in workers {
            ctx.spawn::<Worker>(SpawnSpec::new(&id)?, ()).await?;
        }
        Ok(())
    }
}

fn runtime(journal: Arc<dyn Journal>) -> toka::actors::RuntimeBuilder {
    Runtime::builder(journal)
        .register(Worker)
        .register(Team)
        // Restart at most 3 times in 5 s, OTP's default, made explicit.
        .root_supervision(SupervisorSpec::new(Strategy::OneForOne))
}

fn print_tree(runtime: &Runtime) {
    for agent in runtime.tree() {
        let parent = agent.parent.map_or("-".to_owned(), |p| p.to_string());
        println!(
            "  {} ({}) parent={parent} running={}",
            agent.id, agent.kind, agent.running
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal");
    let t = Duration::from_secs(5);
    {
        let journal = Arc::new(SledJournal::open(&path, JournalConfig::default())?);
        let runtime = runtime(journal).start().await?;
        let spec = SpawnSpec::new("team")?.supervise(SupervisorSpec::new(Strategy::OneForAll));
        let team = runtime.spawn::<Team>(spec, ()).await?;
        team.ask(vec!["alice".into(), "bob".into()], t).await?;
        let alice = runtime.agent::<Worker>(&AgentId::new("alice")?)?;
        let bob = runtime.agent::<Worker>(&AgentId::new("bob")?)?;
        alice.send(Work::Do(3)).await?;
        bob.send(Work::Do(4)).await?;
        // The handler fails three times; the supervisor restarts alice (and, one-for-all,
        // bob) each time, then the message is dead-lettered and work goes on.
        alice.send(Work::Crash).await?;
        alice.send(Work::Do(5)).await?;
        println!(
            "before restart: alice={} bob={}",
            alice.ask(Work::Total, t).await?,
            bob.ask(Work::Total, t).await?
        );
        println!(
            "dead letters of alice: {}",
            runtime.dead_letters(alice.id())?.len()
        );
        print_tree(&runtime);
        runtime.shutdown().await?;
    }
    let journal = Arc::new(SledJournal::open(&path, JournalConfig::default())?);
    let runtime = runtime(journal).start().await?;
    let alice = runtime.agent::<Worker>(&AgentId::new("alice")?)?;
    let bob = runtime.agent::<Worker>(&AgentId::new("bob")?)?;
    println!(
        "after restart: alice={} bob={}",
        alice.ask(Work::Total, t).await?,
        bob.ask(Work::Total, t).await?
    );
    print_tree(&runtime);
    runtime.shutdown().await?;
    Ok(())
}
