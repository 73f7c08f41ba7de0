//! The assistant loop's own cost per step, with the model's latency taken out: a durable
//! assistant over a sled journal (`Fsync`) runs turns against a scripted OpenAI-compatible
//! server on 127.0.0.1 that answers at once (each turn: tool calls to `fs.read`, then an
//! answer), against a baseline that makes the same model calls with the bare client and
//! reads the same file directly, in the same run. Also: journal records and bytes per step
//! (payload + kind of every record the turns appended).
//!
//! Second measurement, a long conversation: 1,000 turns (each a tool call, then the
//! answer) per history configuration — `keep_turns = 20` with a snapshot every 50
//! messages, no bound with the same snapshots, no bound without snapshots — then the
//! journal's bytes per turn (records, and the sled directory on disk) and the recovery
//! time (open the journal, start the hosts and the runtime, until the assistant answers a
//! transcript query; median of 3), against a same-run baseline: opening the same journal
//! and reading every record raw.
//!
//! ```text
//! cargo bench -p toka-tools --bench assistant --features openai
//! TOKA_BENCH_QUICK=1 cargo bench -p toka-tools --bench assistant --features openai
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use toka_actors::{AgentRef, Runtime, RuntimeConfig, SpawnSpec};
use toka_store::{Durability, Journal, JournalConfig, SledJournal};
use toka_test_support::bench::{BenchResult, median};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};
use toka_tools::model::{
    Assistant, AssistantArgs, AssistantQuery, ChatMessage, HistoryPolicy, ModelClient, ModelHost,
    ModelRequest, OpenAiClient, UserTurn,
};
use toka_tools::{Authority, Caveat, FsRead, ToolHost};

/// Model calls per turn: `STEPS - 1` tool-calling answers, then the final one.
const STEPS: u32 = 4;
const ROUNDS: usize = 5;

fn push_turn(server: &ModelServer) {
    for i in 1..STEPS {
        server.push(Reply::Json(chat_tool_calls(
            &[(
                &format!("call_{i}"),
                "fs_read",
                json!({"path": "notes.txt"}),
            )],
            100,
            10,
        )));
    }
    server.push(Reply::Json(chat_text("Done.", 120, 3)));
}

struct Toka {
    runtime: Runtime,
    tools: ToolHost,
    assistant: AgentRef<Assistant>,
    journal: Arc<SledJournal>,
}

async fn start(dir: &Path, server: &ModelServer) -> BenchResult<Toka> {
    start_with(
        dir,
        server,
        HistoryPolicy {
            keep_turns: Some(1),
            ..HistoryPolicy::default()
        },
        1_000,
        "bench",
    )
    .await
}

/// The assistant `id` (spawned unless the journal has it) with `history`, snapshots
/// every `snapshot_every` messages.
async fn start_with(
    dir: &Path,
    server: &ModelServer,
    history: HistoryPolicy,
    snapshot_every: u64,
    id: &str,
) -> BenchResult<Toka> {
    let config = JournalConfig::default().durability(Durability::Fsync);
    let journal = Arc::new(SledJournal::open(dir.join("journal"), config)?);
    let authority = Authority::open(&dir.join("root.key"), journal.clone())?;
    let tools = ToolHost::builder(authority.clone())
        .tool(FsRead::new(dir.join("files"))?)
        .start()
        .await?;
    let models = ModelHost::builder(authority.clone(), journal.clone())
        .model(
            "local",
            OpenAiClient::builder(server.base_url(), "m").build()?,
        )
        .build();
    let runtime = Runtime::builder(journal.clone())
        .config(RuntimeConfig {
            snapshot_every,
            ..RuntimeConfig::default()
        })
        .extension(tools.clone())
        .extension(models)
        .register_with_queries(Assistant::new())
        .start()
        .await?;
    if let Ok(assistant) = runtime.agent::<Assistant>(&id.parse()?) {
        return Ok(Toka {
            runtime,
            tools,
            assistant,
            journal,
        });
    }
    let token = authority.mint([Caveat::Tool("fs.read".parse()?)])?;
    let args = AssistantArgs {
        system: "bench".into(),
        tools: vec!["fs.read".into()],
        max_steps: STEPS,
        // The step bench: bounded, so every turn sends about as much as the baseline's.
        history,
        ..AssistantArgs::new("local", token.to_string())
    };
    let assistant = runtime
        .spawn::<Assistant>(SpawnSpec::new(id)?, args)
        .await?;
    Ok(Toka {
        runtime,
        tools,
        assistant,
        journal,
    })
}

/// Seconds per step of `turns` assistant turns.
async fn toka_turns(toka: &Toka, server: &ModelServer, turns: usize) -> BenchResult<f64> {
    for _ in 0..turns {
        push_turn(server);
    }
    let started = Instant::now();
    for _ in 0..turns {
        let answer = toka
            .assistant
            .ask(
                UserTurn {
                    user: "Read my notes.".into(),
                }
                .into(),
                Duration::from_secs(30),
            )
            .await?;
        assert_eq!(answer.steps, STEPS, "{answer:?}");
    }
    Ok(started.elapsed().as_secs_f64() / (turns as f64 * f64::from(STEPS)))
}

/// Seconds per step of the same model calls with the bare client, and the same file
/// reads, in a plain loop.
async fn baseline_turns(
    client: &OpenAiClient,
    server: &ModelServer,
    file: &Path,
    turns: usize,
) -> BenchResult<f64> {
    for _ in 0..turns {
        push_turn(server);
    }
    let started = Instant::now();
    for _ in 0..turns {
        let mut messages = vec![
            ChatMessage::system("bench"),
            ChatMessage::user("Read my notes."),
        ];
        loop {
            let answer = client
                .complete(&ModelRequest::new(messages.clone()))
                .await?;
            if answer.tool_calls.is_empty() {
                break;
            }
            messages.push(ChatMessage::assistant("", answer.tool_calls.clone()));
            for call in answer.tool_calls {
                let content = tokio::fs::read_to_string(file).await?;
                messages.push(ChatMessage::tool_result(call.id, content));
            }
        }
    }
    Ok(started.elapsed().as_secs_f64() / (turns as f64 * f64::from(STEPS)))
}

/// Bytes of the files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => disk_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn stop(toka: Toka) -> BenchResult<()> {
    let Toka {
        runtime,
        tools,
        assistant,
        journal,
    } = toka;
    runtime.shutdown().await?;
    tools.shutdown().await;
    drop((assistant, journal));
    Ok(())
}

/// The long-conversation measurement: one line per history configuration.
async fn conversation(turns: usize) -> BenchResult<()> {
    const KEEP: u32 = 20;
    const EVERY: u64 = 50;
    let configs = [
        ("keep_turns 20, snapshot every 50", Some(KEEP), EVERY),
        ("unbounded, snapshot every 50", None, EVERY),
        ("unbounded, no snapshots", None, u64::MAX),
    ];
    let mut recoveries = Vec::new();
    for (label, keep, every) in configs {
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir(tmp.path().join("files"))?;
        std::fs::write(
            tmp.path().join("files/notes.txt"),
            "Meeting moved to Thursday, room B.",
        )?;
        let server = ModelServer::start().await;
        let history = HistoryPolicy {
            keep_turns: keep,
            ..HistoryPolicy::default()
        };
        let toka = start_with(tmp.path(), &server, history.clone(), every, "long").await?;
        let head_before = toka.journal.head_position();
        let started = Instant::now();
        for i in 0..turns {
            server.push(Reply::Json(chat_tool_calls(
                &[("call_1", "fs_read", json!({"path": "notes.txt"}))],
                100,
                10,
            )));
            server.push(Reply::Json(chat_text(&format!("Noted ({i})."), 120, 3)));
            let answer = toka
                .assistant
                .ask(
                    UserTurn {
                        user: format!("Entry {i}: read my notes."),
                    }
                    .into(),
                    Duration::from_secs(30),
                )
                .await?;
            assert_eq!(answer.steps, 2, "{answer:?}");
        }
        let writing = started.elapsed();
        let records = toka.journal.read_all(head_before + 1, usize::MAX)?;
        let bytes: usize = records.iter().map(|e| e.payload.len() + e.kind.len()).sum();
        stop(toka).await?;
        let disk = disk_bytes(&tmp.path().join("journal"));

        let mut recovery = Vec::new();
        let mut raw = Vec::new();
        let mut kept = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let toka = start_with(tmp.path(), &server, history.clone(), every, "long").await?;
            let transcript = toka
                .assistant
                .query(AssistantQuery::Transcript, Duration::from_secs(60))
                .await?;
            recovery.push(started.elapsed().as_secs_f64());
            kept = transcript.len();
            stop(toka).await?;
            // Baseline: open the same journal and read every record, raw.
            let started = Instant::now();
            let journal = SledJournal::open(tmp.path().join("journal"), JournalConfig::default())?;
            let all = journal.read_all(1, usize::MAX)?;
            raw.push(started.elapsed().as_secs_f64());
            assert!(all.len() >= records.len());
            drop(journal);
        }
        let (recovery, raw) = (median(&recovery), median(&raw));
        println!(
            "{turns} turns, {label}: journal {:.0} bytes/turn in records ({:.1} records/turn), {:.0} bytes/turn on disk; \
             writing {:.2} ms/turn; recovery until a query answers {:.1} ms (transcript {kept} entries); \
             baseline open + raw read of every record {:.1} ms",
            bytes as f64 / turns as f64,
            records.len() as f64 / turns as f64,
            disk as f64 / turns as f64,
            writing.as_secs_f64() * 1e3 / turns as f64,
            recovery * 1e3,
            raw * 1e3,
        );
        recoveries.push((label, recovery));
    }
    let bounded = recoveries[0].1;
    for (label, recovery) in &recoveries[1..] {
        println!(
            "recovery {label} / keep_turns 20 with snapshots: {:.1}x",
            recovery / bounded
        );
    }
    Ok(())
}

fn main() -> BenchResult<()> {
    let quick = std::env::var_os("TOKA_BENCH_QUICK").is_some();
    let turns = if quick { 20 } else { 200 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir(tmp.path().join("files"))?;
        let file = tmp.path().join("files/notes.txt");
        std::fs::write(&file, "Meeting moved to Thursday, room B.")?;
        let server = ModelServer::start().await;
        let toka = start(tmp.path(), &server).await?;
        let client = OpenAiClient::builder(server.base_url(), "m").build()?;
        // Warm-up.
        toka_turns(&toka, &server, 5).await?;
        baseline_turns(&client, &server, &file, 5).await?;

        let head_before = toka.journal.head_position();
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                ours.push(toka_turns(&toka, &server, turns).await?);
                base.push(baseline_turns(&client, &server, &file, turns).await?);
            } else {
                base.push(baseline_turns(&client, &server, &file, turns).await?);
                ours.push(toka_turns(&toka, &server, turns).await?);
            }
        }
        let steps = (ROUNDS * turns) as f64 * f64::from(STEPS);
        let records = toka.journal.read_all(head_before + 1, usize::MAX)?;
        let bytes: usize = records.iter().map(|e| e.payload.len() + e.kind.len()).sum();
        let (toka_step, base_step) = (median(&ours), median(&base));
        let us = |s: f64| s * 1e6;
        println!(
            "assistant step (model call + tool call, journaled, Fsync): {:.0} µs; bare client + file read: {:.0} µs; ratio {:.2}x",
            us(toka_step),
            us(base_step),
            toka_step / base_step
        );
        println!(
            "the loop's own overhead per step: {:.0} µs (rounds toka {:?} µs, baseline {:?} µs)",
            us(toka_step - base_step),
            ours.iter().map(|s| us(*s).round()).collect::<Vec<_>>(),
            base.iter().map(|s| us(*s).round()).collect::<Vec<_>>()
        );
        println!(
            "journal per step: {:.1} records, {:.0} bytes (payload + kind; {} records over {} steps)",
            records.len() as f64 / steps,
            bytes as f64 / steps,
            records.len(),
            steps
        );
        stop(toka).await?;
        conversation(if quick { 100 } else { 1_000 }).await
    })
}
