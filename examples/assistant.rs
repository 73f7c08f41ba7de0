//! An AI assistant with file tools, answering a question about files: the model decides
//! which tools to call, Toka runs them under a capability token and journals every step.
//!
//! Runs against any OpenAI-compatible Chat Completions endpoint:
//! ```text
//! TOKA_MODEL_BASE_URL=http://127.0.0.1:11434/v1 TOKA_MODEL=llama3.2 \
//!     cargo run --example assistant --features openai
//! ```
//! (`OPENAI_API_KEY` is sent as the bearer key when set; the defaults are a local Ollama.)

use std::sync::Arc;
use std::time::Duration;

use toka::prelude::*;
use toka_tools::Secret;
use toka_tools::model::{
    Assistant, AssistantArgs, AssistantQuery, ModelHost, OpenAiClient, UserTurn,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base_url =
        std::env::var("TOKA_MODEL_BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:11434/v1".into());
    let model = std::env::var("TOKA_MODEL").unwrap_or_else(|_| "llama3.2".into());
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("files"))?;
    std::fs::write(
        dir.path().join("files/notes.txt"),
        "Meeting moved to Thursday 10:00, room B.\n",
    )?;

    // The journal, the root of trust, the tools and the model.
    let journal = Arc::new(SledJournal::open(
        dir.path().join("journal"),
        JournalConfig::default(),
    )?);
    let authority = Authority::open(&dir.path().join("root.key"), journal.clone())?;
    let tools = ToolHost::builder(authority.clone())
        .tool(FsRead::new(dir.path().join("files"))?)
        .tool(FsList::new(dir.path().join("files"))?)
        .start()
        .await?;
    let mut client = OpenAiClient::builder(base_url, model);
    if let Ok(key) = std::env::var("OPENAI_API_KEY") {
        client = client.api_key(Secret::new(key.into_bytes()));
    }
    let models = ModelHost::builder(authority.clone(), journal.clone())
        .model("local", client.build()?)
        .build();
    let runtime = Runtime::builder(journal)
        .extension(tools.clone())
        .extension(models)
        .register_with_queries(Assistant::new())
        .start()
        .await?;

    // The assistant may read and list files, and ask the `local` model: nothing else.
    let token = authority.mint([
        Caveat::Tool("fs.*".parse()?),
        Caveat::Model("local".parse()?),
        Caveat::BudgetTokens(20_000),
    ])?;
    let assistant = runtime
        .spawn::<Assistant>(
            SpawnSpec::new("helper")?,
            AssistantArgs {
                system: "You answer questions about the user's files. Use the tools.".into(),
                tools: vec!["fs.list".into(), "fs.read".into()],
                max_steps: 6,
                ..AssistantArgs::new("local", token.to_string())
            },
        )
        .await?;

    let turn = UserTurn {
        user: "When is the meeting, according to my notes?".into(),
    };
    let answer = assistant.ask(turn.into(), Duration::from_secs(300)).await?;
    println!("answer: {}", answer.answer);
    println!("steps: {}, tokens: {}", answer.steps, answer.usage.total());
    for entry in assistant
        .query(AssistantQuery::Transcript, Duration::from_secs(5))
        .await?
    {
        let calls: Vec<&str> = entry.tool_calls.iter().map(|c| c.name.as_str()).collect();
        println!(
            "  {:<9} {:?} {}",
            entry.role,
            calls,
            entry.content.lines().next().unwrap_or("")
        );
    }
    runtime.shutdown().await?;
    tools.shutdown().await;
    Ok(())
}
