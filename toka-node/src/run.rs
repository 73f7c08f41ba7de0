//! `run`: initialise the data directory if needed, open the journal and the authority,
//! recover the runtime, serve the HTTP API until SIGINT or SIGTERM, then shut down
//! gracefully (drain the agents, flush the journal) and exit 0.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use toka_actors::{AgentId, Runtime, SpawnSpec};
use toka_store::{JournalConfig, SledJournal};
use toka_tools::{
    Authority, FsList, FsRead, FsRoot, FsWrite, ShellExec, ToolHost, ToolHostBuilder,
};

use crate::cli::{DataDir, InitArgs, RunArgs, read_encryption_key};
use crate::config::{Config, LogFormat, ToolsConfig};
use crate::server::{AppState, app};

/// Where the API listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// How long an ask waits for its reply unless told otherwise.
const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref())?;
    // Flags (and their TOKA_* variables) override the config file.
    if args.durability.is_some() {
        config.durability = args.durability;
    }
    if args.log.is_some() {
        config.log.clone_from(&args.log);
    }
    if args.ask_timeout_ms.is_some() {
        config.ask_timeout_ms = args.ask_timeout_ms;
    }
    let json = args.log_json || config.log_format == Some(LogFormat::Json);
    init_logging(config.log.as_deref(), json);
    let mut dir = args.dir.clone();
    if dir.key_file.is_none() {
        dir.key_file.clone_from(&config.key_file);
    }
    if !dir.root_key_path().exists() || !dir.admin_token_path().exists() {
        crate::init::init(&InitArgs {
            dir: dir.clone(),
            json: false,
        })?;
    }
    let listen = match args.listen.or(config.listen) {
        Some(listen) => listen,
        None => DEFAULT_LISTEN.parse().context("the default address")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(&dir, &config, listen))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(filter: Option<&str>, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| filter.map(str::to_owned))
        .unwrap_or_else(|| "warn".to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn serve(dir: &DataDir, config: &Config, listen: SocketAddr) -> anyhow::Result<()> {
    let mut journal_config = JournalConfig::default();
    if let Some(durability) = config.durability {
        journal_config = journal_config.durability(durability.into());
    }
    if let Some(key_file) = &dir.key_file {
        journal_config = journal_config.encryption(read_encryption_key(key_file)?);
    }
    let journal_path = dir.journal_path();
    let journal = Arc::new(
        SledJournal::open(&journal_path, journal_config).with_context(|| {
            format!(
                "opening the journal at {} (is another node running on it?)",
                journal_path.display()
            )
        })?,
    );
    let authority = Authority::open(&dir.root_key_path(), journal.clone())
        .with_context(|| format!("opening the authority of {}", dir.data_dir.display()))?;
    let host = tool_host(authority.clone(), &config.tools)?
        .start()
        .await
        .context("starting the tool host")?;

    let started = Instant::now();
    let start = crate::kinds::register(Runtime::builder(journal.clone()))
        .extension(host.clone())
        .start();
    let runtime = with_progress(start)
        .await
        .context("recovering the runtime from the journal")?;
    let recovery = started.elapsed();
    eprintln!(
        "toka-node: recovered {} agents in {} ms",
        runtime.tree().len(),
        recovery.as_millis()
    );

    start_boot_agents(&runtime, config).await?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr().context("the bound address")?;
    println!("listening on {bound}");
    let _ = std::io::stdout().flush();

    let ask_timeout = config
        .ask_timeout_ms
        .map_or(DEFAULT_ASK_TIMEOUT, Duration::from_millis);
    let state = AppState::new(
        runtime.clone(),
        authority,
        host.clone(),
        ask_timeout,
        recovery,
    );
    let served = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            state.close_streams();
        })
        .await;

    eprintln!("toka-node: shutting down");
    // Shut down whatever happened to the server: the journal must be flushed.
    let stopped = runtime.shutdown().await;
    host.shutdown().await;
    toka_store::Journal::flush(&*journal)
        .await
        .context("flushing the journal")?;
    served.context("serving the HTTP API")?;
    stopped.context("shutting the runtime down")?;
    eprintln!("toka-node: stopped; the journal is flushed");
    Ok(())
}

/// Awaits `work` (recovery), saying on stderr every two seconds that it is still going.
async fn with_progress<F: Future>(work: F) -> F::Output {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(2));
    ticks.tick().await;
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => eprintln!(
                "toka-node: recovering the agent tree from the journal ({} s)",
                started.elapsed().as_secs()
            ),
        }
    }
}

/// Spawns the config file's `[[agents]]` that the tree does not hold yet.
async fn start_boot_agents(runtime: &Runtime, config: &Config) -> anyhow::Result<()> {
    for agent in &config.agents {
        let context = || format!("starting agent {:?} of the config file", agent.id);
        let spec = SpawnSpec::new(&agent.id).with_context(context)?;
        if runtime.tree().iter().any(|info| info.id == spec.id) {
            continue;
        }
        let spec = crate::kinds::supervisor::spawn_spec(spec, &agent.kind, &agent.args)
            .map_err(anyhow::Error::msg)
            .with_context(context)?;
        let parent = agent
            .parent
            .as_deref()
            .map(AgentId::new)
            .transpose()
            .with_context(context)?;
        runtime
            .spawn_json(parent.as_ref(), &agent.kind, spec, agent.args.clone())
            .await
            .with_context(context)?;
    }
    Ok(())
}

/// The tool host's builder with the tools `config` asks for.
fn tool_host(authority: Authority, config: &ToolsConfig) -> anyhow::Result<ToolHostBuilder> {
    let mut builder = ToolHost::builder(authority);
    if let Some(path) = &config.fs_root {
        let mut root = FsRoot::new(path)
            .with_context(|| format!("opening the tools' fs_root {}", path.display()))?;
        if let Some(bytes) = config.fs_max_file_bytes {
            root = root.max_file_bytes(bytes);
        }
        builder = builder
            .tool(FsRead::with_root(root.clone()))
            .tool(FsList::with_root(root.clone()));
        if !config.fs_read_only {
            builder = builder.tool(FsWrite::with_root(root));
        }
    }
    if let Some(jail) = &config.shell_jail {
        let shell = ShellExec::new(config.sandbox_policy(jail)?, &config.shell_allow)
            .with_context(|| format!("setting up shell.exec jailed in {}", jail.display()))?;
        builder = builder.tool(shell);
    }
    Ok(builder)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
