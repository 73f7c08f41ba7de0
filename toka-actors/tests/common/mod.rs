//! Agents and helpers shared by the runtime's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toka_actors::{
    Agent, AgentError, AgentId, AgentRef, Context, Runtime, RuntimeBuilder, StartContext, Topic,
};
use toka_store::{Journal, JournalConfig, MemoryJournal};

pub const T: Duration = Duration::from_secs(5);

/// A log of what agents did, shared with the test.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    pub fn count(&self, entry: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == entry)
            .count()
    }
}

/// The topic counters listen to.
pub fn ticks() -> Topic<i64> {
    Topic::new("ticks")
}

/// A counter that can also be told to fail, spawn, send, ask and schedule.
pub struct Counter {
    pub log: Log,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Cmd {
    Add(i64),
    Get,
    /// Returns an error.
    Fail,
    /// Panics.
    Panic,
    /// Spawns a child counter with this id.
    Spawn(String),
    /// Sends Add(n) to agent id.
    SendTo(String, i64),
    /// Asks agent id for its value and adds it.
    AskAndAdd(String),
    /// Schedules Add(n) after ms milliseconds.
    Schedule(u64, i64),
    /// Publishes n to the ticks topic.
    Publish(i64),
    /// Stops child id.
    StopChild(String),
    /// Spawns a child counter with this id, placed anywhere (see `toka_actors::remote`).
    SpawnAnywhere(String),
}

impl From<i64> for Cmd {
    fn from(n: i64) -> Self {
        Cmd::Add(n)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CounterState {
    pub value: i64,
}

impl Agent for Counter {
    const KIND: &'static str = "counter";
    type Args = String;
    type Msg = Cmd;
    type Reply = i64;
    type State = i64;

    fn init(&self, name: &String) -> Result<i64, AgentError> {
        self.log.push(format!("start:{name}"));
        Ok(0)
    }

    async fn on_start(
        &self,
        ctx: &mut StartContext<'_, Self>,
        _: &mut i64,
    ) -> Result<(), AgentError> {
        ctx.subscribe(&ticks());
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        value: &mut i64,
        msg: Cmd,
    ) -> Result<i64, AgentError> {
        match msg {
            Cmd::Add(n) => *value += n,
            Cmd::Get => {}
            Cmd::Fail => {
                self.log.push(format!("fail:{}", ctx.id()));
                return Err(AgentError::msg("told to fail"));
            }
            Cmd::Panic => {
                self.log.push(format!("panic:{}", ctx.id()));
                panic!("told to panic");
            }
            Cmd::Spawn(id) => {
                ctx.spawn::<Counter>(toka_actors::SpawnSpec::new(&id)?, id.clone())
                    .await?;
            }
            Cmd::SendTo(id, n) => {
                let to: AgentRef<Counter> = ctx_ref(ctx, &id)?;
                ctx.send(&to, Cmd::Add(n)).await?;
            }
            Cmd::AskAndAdd(id) => {
                let to: AgentRef<Counter> = ctx_ref(ctx, &id)?;
                *value += ctx.ask(&to, Cmd::Get, T).await?;
            }
            Cmd::Schedule(ms, n) => {
                ctx.schedule(Duration::from_millis(ms), Cmd::Add(n)).await?;
            }
            Cmd::Publish(n) => {
                ctx.publish(&ticks(), &n).await?;
            }
            Cmd::StopChild(id) => {
                ctx.stop_child(&AgentId::new(&id)?).await?;
            }
            Cmd::SpawnAnywhere(id) => {
                ctx.spawn::<Counter>(toka_actors::SpawnSpec::new(&id)?.anywhere(), id.clone())
                    .await?;
            }
        }
        if !ctx.is_replaying() {
            self.log.push(format!("handled:{}", ctx.id()));
        }
        Ok(*value)
    }

    fn snapshot(&self, value: &i64) -> Option<Vec<u8>> {
        Some(value.to_le_bytes().to_vec())
    }

    fn restore(&self, _: &String, bytes: &[u8]) -> Result<i64, AgentError> {
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| AgentError::msg("bad snapshot"))?;
        Ok(i64::from_le_bytes(bytes))
    }
}

fn ctx_ref(ctx: &Context<'_, Counter>, id: &str) -> Result<AgentRef<Counter>, AgentError> {
    Ok(ctx.agent::<Counter>(&AgentId::new(id)?)?)
}

pub fn memory_journal() -> Arc<dyn Journal> {
    Arc::new(MemoryJournal::new(JournalConfig::default()).unwrap())
}

pub fn builder(journal: Arc<dyn Journal>, log: &Log) -> RuntimeBuilder {
    Runtime::builder(journal).register(Counter { log: log.clone() })
}

pub fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

/// Polls `check` until it holds or 5 s pass.
pub async fn eventually(mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
