//! The assistant loop's own cost per step, with the model's latency taken out: a durable
//! assistant over a sled journal (`Fsync`) runs turns against a scripted OpenAI-compatible
//! server on 127.0.0.1 that answers at once (each turn: tool calls to `fs.read`, then an
//! answer), against a baseline that makes the same model calls with the bare client and
//! reads the same file directly, in the same run. Also: journal records and bytes per step
//! (payload + kind of every record the turns appended).
//!
//! ```text
//! cargo bench -p toka-tools --bench assistant --features openai
//! TOKA_BENCH_QUICK=1 cargo bench -p toka-tools --bench assistant --features openai
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use toka_actors::{AgentRef, Runtime, SpawnSpec};
use toka_store::{Durability, Journal, JournalConfig, SledJournal};
use toka_test_support::bench::{BenchResult, median};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, chat_tool_calls};
use toka_tools::model::{
    Assistant, AssistantArgs, ChatMessage, HistoryPolicy, ModelClient, ModelHost, ModelRequest,
    OpenAiClient, UserTurn,
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
        .extension(tools.clone())
        .extension(models)
        .register_with_queries(Assistant::new())
        .start()
        .await?;
    let token = authority.mint([Caveat::Tool("fs.read".parse()?)])?;
    let args = AssistantArgs {
        system: "bench".into(),
        tools: vec!["fs.read".into()],
        max_steps: STEPS,
        // Bounded, so every turn sends about as much as the baseline's.
        history: HistoryPolicy {
            keep_turns: Some(1),
            ..HistoryPolicy::default()
        },
        ..AssistantArgs::new("local", token.to_string())
    };
    let assistant = runtime
        .spawn::<Assistant>(SpawnSpec::new("bench")?, args)
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
        toka.runtime.shutdown().await?;
        toka.tools.shutdown().await;
        Ok(())
    })
}
