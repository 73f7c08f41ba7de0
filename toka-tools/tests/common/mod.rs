//! Tools and journal helpers shared by the tool-call integration tests.
#![allow(dead_code, unreachable_pub)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use toka_actors::AgentId;
use toka_actors::record::{self, IntentRecord, ReplyRecord};
use toka_store::Journal;
use toka_tools::{SideEffect, Tool, ToolContext, ToolError};

/// The outcome `call_tool` records for a call: the tool's JSON output or its error.
pub type Outcome = Result<Vec<u8>, ToolError>;

/// Writes `marker` (for a parent process to see), then never returns: the process is
/// meant to be killed right here.
pub async fn mark_and_hang(marker: &Path) {
    std::fs::write(marker, b"here\n").expect("writing the crash marker");
    std::future::pending::<()>().await;
}

/// The lines of `path` (none if it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

/// Appends `line` and a newline to `path` in one `write` on an `O_APPEND` file, then
/// fsyncs it.
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_all()
}

/// `ledger.append`: appends a key to a ledger file. `External`: a repeat would append
/// the key twice.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub path: PathBuf,
    /// If set, the call appends, then writes this marker and hangs (to be killed between
    /// the intent and the result).
    pub crash_marker: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LedgerInput {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerOutput {
    /// Lines in the ledger right after this append.
    pub lines: usize,
}

impl Tool for Ledger {
    type Input = LedgerInput;
    type Output = LedgerOutput;

    fn name(&self) -> &str {
        "ledger.append"
    }

    fn description(&self) -> &str {
        "Appends a key to the ledger."
    }

    fn input_schema(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]})
    }

    fn side_effect(&self) -> SideEffect {
        SideEffect::External
    }

    async fn invoke(
        &self,
        input: LedgerInput,
        _cx: ToolContext,
    ) -> Result<LedgerOutput, ToolError> {
        let path = self.path.clone();
        let lines = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
            append_line(&path, &input.key)?;
            Ok(std::fs::read_to_string(&path)?.lines().count())
        })
        .await
        .map_err(|e| ToolError::failed(format!("ledger task: {e}")))?
        .map_err(|e| ToolError::failed(format!("ledger: {e}")))?;
        if let Some(marker) = &self.crash_marker {
            mark_and_hang(marker).await;
        }
        Ok(LedgerOutput { lines })
    }
}

/// `file.put`: writes a file with contents fixed by its input. `Idempotent`. Every run
/// is also logged in `runs` (for the test to count runs).
#[derive(Clone, Debug)]
pub struct FilePut {
    pub dir: PathBuf,
    pub runs: PathBuf,
    pub crash_marker: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PutInput {
    pub name: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOutput {
    pub bytes: u64,
}

impl Tool for FilePut {
    type Input = PutInput;
    type Output = PutOutput;

    fn name(&self) -> &str {
        "file.put"
    }

    fn description(&self) -> &str {
        "Writes a file with the given contents."
    }

    fn input_schema(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {
            "name": {"type": "string"}, "content": {"type": "string"}}})
    }

    fn side_effect(&self) -> SideEffect {
        SideEffect::Idempotent
    }

    async fn invoke(&self, input: PutInput, _cx: ToolContext) -> Result<PutOutput, ToolError> {
        if input.name.contains('/') || input.name.starts_with('.') {
            return Err(ToolError::invalid_input("file.put: a plain file name"));
        }
        let path = self.dir.join(&input.name);
        let runs = self.runs.clone();
        let name = input.name.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("a parent"))?;
            let mut file = std::fs::File::create(&path)?;
            file.write_all(input.content.as_bytes())?;
            file.sync_all()?;
            append_line(&runs, &name)
        })
        .await
        .map_err(|e| ToolError::failed(format!("file.put task: {e}")))?
        .map_err(|e| ToolError::failed(format!("file.put: {e}")))?;
        if let Some(marker) = &self.crash_marker {
            mark_and_hang(marker).await;
        }
        let bytes = std::fs::metadata(self.dir.join(&input.name))
            .map_err(|e| ToolError::failed(format!("file.put: {e}")))?
            .len();
        Ok(PutOutput { bytes })
    }
}

/// One record of an agent's stream that concerns effects.
#[derive(Debug)]
pub enum EffectRecord {
    Intent(IntentRecord),
    Result(ReplyRecord),
}

/// The intent and result records of agent `id`'s stream, in journal order, with their
/// stream sequence numbers.
pub fn effect_records(journal: &dyn Journal, id: &str) -> Vec<(u64, EffectRecord)> {
    let id = AgentId::new(id).expect("an agent id");
    let mut out = Vec::new();
    for event in journal
        .iter_stream(id.stream(), 1)
        .expect("reading the stream")
    {
        let event = event.expect("a record");
        let kind = record::RecordKind::parse(&event.kind, id.stream(), event.seq).expect("a kind");
        match kind.map(|(kind, _)| kind) {
            Some(record::RecordKind::Intent) => out.push((
                event.seq,
                EffectRecord::Intent(postcard::from_bytes(&event.payload).expect("an intent")),
            )),
            Some(record::RecordKind::Result) => out.push((
                event.seq,
                EffectRecord::Result(
                    record::decode_reply(&event.kind, id.stream(), event.seq, &event.payload)
                        .expect("a result"),
                ),
            )),
            _ => {}
        }
    }
    out
}

/// The kinds of every record in agent `id`'s stream, in order.
pub fn stream_kinds(journal: &dyn Journal, id: &str) -> Vec<String> {
    let id = AgentId::new(id).expect("an agent id");
    journal
        .iter_stream(id.stream(), 1)
        .expect("reading the stream")
        .map(|e| e.expect("a record").kind)
        .collect()
}

/// Decodes a recorded tool-call outcome (the body of a successful effect result).
pub fn decode_outcome(body: &[u8]) -> Outcome {
    postcard::from_bytes(body).expect("a recorded tool outcome")
}

/// A recorded outcome's value, or its failure as text (an effect in doubt as "in doubt").
pub fn outcome_body(outcome: &record::Outcome) -> Result<&[u8], String> {
    match outcome {
        record::Outcome::Value(body) => Ok(body),
        record::Outcome::Failed(reason) => Err(reason.clone()),
        record::Outcome::InDoubt => Err("in doubt".to_owned()),
    }
}

/// The configured model `local`, answered by the scripted `server`, checking
/// `authority`'s tokens and journaling usage in `journal`.
#[cfg(feature = "openai")]
pub fn local_model(
    authority: &toka_tools::Authority,
    journal: std::sync::Arc<dyn Journal>,
    server: &toka_test_support::model_server::ModelServer,
) -> toka_tools::model::ModelHost {
    let client = toka_tools::model::OpenAiClient::builder(server.base_url(), "served")
        .build()
        .expect("a client for the scripted model server");
    toka_tools::model::ModelHost::builder(authority.clone(), journal)
        .model("local", client)
        .build()
}

/// A runtime over `journal` that runs assistants with `tools` and `models`.
#[cfg(feature = "openai")]
pub async fn assistant_runtime(
    journal: std::sync::Arc<dyn Journal>,
    config: toka_actors::RuntimeConfig,
    tools: &toka_tools::ToolHost,
    models: &toka_tools::model::ModelHost,
) -> toka_actors::Runtime {
    toka_actors::Runtime::builder(journal)
        .config(config)
        .extension(tools.clone())
        .extension(models.clone())
        .register_with_queries(toka_tools::model::Assistant::new())
        .start()
        .await
        .expect("starting the runtime")
}
