//! Writing an agent: a to-do list as an [`Agent`] implementation.
//!
//! `cargo run --example agent` shows the parts of an agent: typed `Args`, `Msg`, `Reply`
//! and `State`; `on_start` (subscribing to a topic); a durable timer
//! ([`Context::schedule`]) that reminds the list of its open items; snapshots
//! ([`Agent::snapshot`] / [`Agent::restore`]); a child agent spawned from a handler and
//! asked for a reply ([`Context::spawn`], [`Context::ask`]); asks from the app for what
//! changes the list, and a query ([`Queries`]) for reading it, which journals nothing. It
//! then stops the runtime with a reminder still pending, starts a new one over the same
//! sled journal (in a temporary directory), and shows the list restored from its
//! snapshot and the reminder firing after the restart.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use toka::prelude::*;

/// Broadcasts to every to-do list (subscribed in `on_start`).
fn announcements() -> Topic<String> {
    Topic::new("todo.announcements")
}

/// A to-do list.
struct Todo;

/// What a list is created with.
#[derive(Serialize, Deserialize)]
struct TodoArgs {
    owner: String,
    /// How long after an item is added the list reminds itself of open items.
    remind_after_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    id: u32,
    text: String,
    done: bool,
}

/// The list's state: everything it needs to answer, rebuilt after a restart.
#[derive(Debug, Serialize, Deserialize)]
struct TodoState {
    /// From the arguments: how long until a reminder.
    remind_after_ms: u64,
    next_id: u32,
    items: Vec<Item>,
    reminders: u32,
    archived: u32,
    news: Vec<String>,
}

#[derive(Serialize, Deserialize)]
enum TodoMsg {
    Add(String),
    Done(u32),
    /// Delivered by the durable timer.
    Remind,
    /// Moves done items to the archive child.
    Archive,
    /// From the announcements topic.
    News(String),
}

/// What the list answers without a message: read-only, nothing journaled.
#[derive(Serialize, Deserialize)]
enum TodoQuery {
    Summary,
}

impl From<String> for TodoMsg {
    fn from(news: String) -> Self {
        TodoMsg::News(news)
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum TodoReply {
    Added(u32),
    Ok,
    Summary {
        open: Vec<String>,
        done: usize,
        reminders: u32,
        archived: u32,
        news: usize,
    },
}

impl Agent for Todo {
    const KIND: &'static str = "todo";
    type Args = TodoArgs;
    type Msg = TodoMsg;
    type Reply = TodoReply;
    type State = TodoState;

    fn init(&self, args: &TodoArgs) -> Result<TodoState, AgentError> {
        Ok(TodoState {
            remind_after_ms: args.remind_after_ms,
            next_id: 0,
            items: Vec::new(),
            reminders: 0,
            archived: 0,
            news: Vec::new(),
        })
    }

    async fn on_start(
        &self,
        ctx: &mut StartContext<'_, Self>,
        _: &mut TodoState,
    ) -> Result<(), AgentError> {
        println!("on_start: {} subscribes to announcements", ctx.id());
        ctx.subscribe(&announcements());
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        state: &mut TodoState,
        msg: TodoMsg,
    ) -> Result<TodoReply, AgentError> {
        // Handlers run again on replay; print only what happens live.
        let live = !ctx.is_replaying();
        match msg {
            TodoMsg::Add(text) => {
                state.next_id += 1;
                let id = state.next_id;
                state.items.push(Item {
                    id,
                    text,
                    done: false,
                });
                // The timer is journaled: it fires after a restart too, exactly once.
                let delay = Duration::from_millis(state.remind_after_ms);
                ctx.schedule(delay, TodoMsg::Remind).await?;
                Ok(TodoReply::Added(id))
            }
            TodoMsg::Done(id) => {
                let item = state
                    .items
                    .iter_mut()
                    .find(|i| i.id == id)
                    .ok_or_else(|| AgentError::msg(format!("no item {id}")))?;
                item.done = true;
                Ok(TodoReply::Ok)
            }
            TodoMsg::Remind => {
                state.reminders += 1;
                if live {
                    let open: Vec<&str> = state
                        .items
                        .iter()
                        .filter(|i| !i.done)
                        .map(|i| i.text.as_str())
                        .collect();
                    println!("reminder #{}: {} open: {open:?}", state.reminders, ctx.id());
                }
                Ok(TodoReply::Ok)
            }
            TodoMsg::Archive => {
                let done: Vec<Item> = state.items.iter().filter(|i| i.done).cloned().collect();
                // Spawning an existing child returns it; on replay, the recorded one.
                let archive_id = format!("{}-archive", ctx.id());
                let archive = ctx
                    .spawn::<Archive>(SpawnSpec::new(&archive_id)?, ())
                    .await?;
                let texts = done.into_iter().map(|i| i.text).collect();
                // The reply is journaled: a replay gets it without asking again.
                let total = ctx
                    .ask(&archive, ArchiveMsg::Store(texts), Duration::from_secs(5))
                    .await?;
                state.items.retain(|i| !i.done);
                state.archived = total;
                if live {
                    println!("archived into {archive_id}: {total} item(s) there now");
                }
                Ok(TodoReply::Ok)
            }
            TodoMsg::News(news) => {
                if live {
                    println!("{} got news: {news}", ctx.id());
                }
                state.news.push(news);
                Ok(TodoReply::Ok)
            }
        }
    }

    fn snapshot(&self, state: &TodoState) -> Option<Vec<u8>> {
        serde_json::to_vec(state).ok()
    }

    fn restore(&self, args: &TodoArgs, snapshot: &[u8]) -> Result<TodoState, AgentError> {
        let state: TodoState = serde_json::from_slice(snapshot)?;
        println!(
            "restore: {}'s list from a snapshot ({} item(s), {} reminder(s))",
            args.owner,
            state.items.len(),
            state.reminders
        );
        Ok(state)
    }
}

/// How long after an item is added its list reminds itself.
const REMIND_AFTER_MS: u64 = 150;

/// A child of a list that keeps its done items.
struct Archive;

#[derive(Serialize, Deserialize)]
enum ArchiveMsg {
    Store(Vec<String>),
}

impl Agent for Archive {
    const KIND: &'static str = "archive";
    type Args = ();
    type Msg = ArchiveMsg;
    type Reply = u32;
    type State = Vec<String>;

    fn init(&self, _: &()) -> Result<Vec<String>, AgentError> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _: &mut Context<'_, Self>,
        kept: &mut Vec<String>,
        msg: ArchiveMsg,
    ) -> Result<u32, AgentError> {
        let ArchiveMsg::Store(items) = msg;
        kept.extend(items);
        Ok(u32::try_from(kept.len())?)
    }
}

impl Queries for Todo {
    type Query = TodoQuery;
    type Answer = TodoReply;

    fn query(
        &self,
        state: &TodoState,
        TodoQuery::Summary: TodoQuery,
    ) -> Result<TodoReply, AgentError> {
        Ok(TodoReply::Summary {
            open: state
                .items
                .iter()
                .filter(|i| !i.done)
                .map(|i| i.text.clone())
                .collect(),
            done: state.items.iter().filter(|i| i.done).count(),
            reminders: state.reminders,
            archived: state.archived,
            news: state.news.len(),
        })
    }
}

fn runtime(journal: Arc<dyn Journal>) -> toka::actors::RuntimeBuilder {
    Runtime::builder(journal).register(Todo).register(Archive)
}

/// Queries the summary until `ready` holds (the timer fires on its own schedule). A query,
/// not an ask: polling writes nothing to the journal.
async fn wait_for(
    list: &AgentRef<Todo>,
    ready: impl Fn(u32) -> bool,
) -> Result<TodoReply, Box<dyn Error>> {
    let started = Instant::now();
    loop {
        let summary = list
            .query(TodoQuery::Summary, Duration::from_secs(5))
            .await?;
        if let TodoReply::Summary { reminders, .. } = &summary
            && ready(*reminders)
        {
            return Ok(summary);
        }
        if started.elapsed() > Duration::from_secs(5) {
            return Err("the reminder did not fire within 5 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("journal");
    let t = Duration::from_secs(5);
    let id = AgentId::new("alice-todo")?;
    {
        let journal = Arc::new(SledJournal::open(&path, JournalConfig::default())?);
        let runtime = runtime(journal).start().await?;
        // A snapshot every 4 handled messages: recovery loads it, then replays the rest.
        let spec = SpawnSpec::with_id(id.clone()).snapshot_every(4);
        let args = TodoArgs {
            owner: "alice".into(),
            remind_after_ms: REMIND_AFTER_MS,
        };
        let list = runtime.spawn::<Todo>(spec, args).await?;
        for text in ["write the report", "water the plants", "call bob"] {
            if let TodoReply::Added(n) = list.ask(TodoMsg::Add(text.into()), t).await? {
                println!("added #{n}: {text}");
            }
        }
        list.send(TodoMsg::Done(2)).await?;
        let subscribers = runtime
            .publish(&announcements(), &"office closed friday".to_owned())
            .await?;
        println!("published to {subscribers} subscriber(s)");
        // Three timers were set; wait until they have fired.
        wait_for(&list, |r| r >= 3).await?;
        list.ask(TodoMsg::Archive, t).await?;
        println!("summary: {:?}", list.query(TodoQuery::Summary, t).await?);
        // One more item: its reminder is still pending when the runtime stops.
        list.ask(TodoMsg::Add("book flights".into()), t).await?;
        println!("tree before restart:");
        print_tree(&runtime);
        runtime.shutdown().await?;
        println!("runtime stopped with a reminder pending");
    }

    let journal = Arc::new(SledJournal::open(&path, JournalConfig::default())?);
    let runtime = runtime(journal).start().await?;
    let list = runtime.agent::<Todo>(&id)?;
    let summary = wait_for(&list, |r| r >= 4).await?;
    println!("after restart: {summary:?}");
    println!("tree after restart:");
    print_tree(&runtime);
    runtime.shutdown().await?;
    Ok(())
}

fn print_tree(runtime: &Runtime) {
    for agent in runtime.tree() {
        let parent = agent.parent.map_or("-".to_owned(), |p| p.to_string());
        println!("  {} ({}) parent={parent}", agent.id, agent.kind);
    }
}
