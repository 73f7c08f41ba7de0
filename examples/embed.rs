//! Embedding the agent runtime in an application, with tools and capability tokens.
//!
//! `cargo run --example embed` opens a sled journal in a temporary directory, an
//! [`Authority`] (root key in a `0600` file next to it) and a [`ToolHost`] with `fs.read`
//! and `fs.write` over a temporary files root, and starts a runtime with the host as an
//! extension. A `scribe` agent holds a token scoped to the `fs.*` tools, to itself and to
//! paths under `/notes`: it writes a note and reads it back with `cx.call_tool` (each
//! call journaled intent → result), then tries to write outside `/notes` and is denied,
//! which the example prints with the error's kind; the denial is also in the audit log.
//! Finally the app checks the file on disk and shuts everything down cleanly.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use toka::prelude::*;
use toka::tools::{ReadOutput, WriteOutput};

/// An agent that keeps notes through the `fs.*` tools.
struct Scribe;

/// What a scribe is created with: the capability it acts under.
#[derive(Serialize, Deserialize)]
struct ScribeArgs {
    token: Capability,
}

#[derive(Serialize, Deserialize)]
enum ScribeMsg {
    /// Write `text` to `path` (relative to the files root).
    Write { path: String, text: String },
    /// Read `path` back.
    Read { path: String },
}

impl Agent for Scribe {
    const KIND: &'static str = "scribe";
    type Args = ScribeArgs;
    type Msg = ScribeMsg;
    // A refused tool call is an answer, not a failure of the agent: replying with it
    // (instead of returning `Err`) keeps the agent from being restarted over it.
    type Reply = Result<String, ToolError>;
    type State = Capability;

    fn init(&self, args: &ScribeArgs) -> Result<Capability, AgentError> {
        Ok(args.token.clone())
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        token: &mut Capability,
        msg: ScribeMsg,
    ) -> Result<Self::Reply, AgentError> {
        Ok(match msg {
            ScribeMsg::Write { path, text } => {
                let input = json!({ "path": path, "content": text, "create_dirs": true });
                cx.call_tool::<_, WriteOutput>("fs.write", token, &input)
                    .await
                    .map(|out| format!("wrote {} ({} bytes)", out.path, out.bytes))
            }
            ScribeMsg::Read { path } => cx
                .call_tool::<_, ReadOutput>("fs.read", token, &json!({ "path": path }))
                .await
                .map(|out| out.content),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files)?;

    // The app owns the journal, the key and the tools; the runtime gets them at start.
    let journal = Arc::new(SledJournal::open(
        dir.path().join("journal"),
        JournalConfig::default(),
    )?);
    let authority = Authority::open(&dir.path().join("root.key"), journal.clone())?;
    let host = ToolHost::builder(authority.clone())
        .tool(FsRead::new(&files)?)
        .tool(FsWrite::new(&files)?)
        .start()
        .await?;
    let tools: Vec<String> = host.specs().into_iter().map(|s| s.name).collect();
    println!("tool host started: {}", tools.join(", "));
    let runtime = Runtime::builder(journal)
        .register(Scribe)
        .extension(host.clone())
        .start()
        .await?;

    // A token for the scribe only, for the fs tools only, under /notes only.
    let token = authority.mint([
        Caveat::Tool("fs.*".parse()?),
        Caveat::Agent("scribe".into()),
        Caveat::PathPrefix("/notes".into()),
    ])?;
    println!(
        "token caveats: {:?}",
        token
            .caveats()?
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    let scribe = runtime
        .spawn::<Scribe>(SpawnSpec::new("scribe")?, ScribeArgs { token })
        .await?;

    let t = Duration::from_secs(5);
    let write = ScribeMsg::Write {
        path: "notes/today.md".into(),
        text: "buy milk\n".into(),
    };
    println!("scribe: {}", scribe.ask(write, t).await??);
    let read = ScribeMsg::Read {
        path: "notes/today.md".into(),
    };
    println!("scribe read back: {:?}", scribe.ask(read, t).await??);

    // Outside the token's path prefix: refused before the tool runs.
    let escape = ScribeMsg::Write {
        path: "etc/passwd".into(),
        text: "nope\n".into(),
    };
    match scribe.ask(escape, t).await? {
        Ok(done) => return Err(format!("the write outside /notes was allowed: {done}").into()),
        Err(error) => println!("denied: kind={:?} ({})", error.kind, error.message),
    }
    println!(
        "audit log: {} denial(s) journaled",
        authority.denials()?.len()
    );

    // The app sees what the agent wrote, and nothing else.
    let on_disk = std::fs::read_to_string(files.join("notes/today.md"))?;
    println!(
        "on disk: notes/today.md = {on_disk:?}, etc/passwd exists = {}",
        files.join("etc/passwd").exists()
    );

    runtime.shutdown().await?;
    host.shutdown().await;
    println!("shut down cleanly");
    Ok(())
}
