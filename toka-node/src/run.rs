//! `run`: initialise the data directory if needed, open the journal and the authority,
//! recover the runtime, serve the HTTP API until SIGINT or SIGTERM, then shut down
//! gracefully (drain the agents, flush the journal) and exit 0.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use toka_store::{Journal, JournalConfig, SledJournal};
use toka_tools::{
    Authority, FsList, FsRead, FsRoot, FsWrite, Sealer, ShellExec, ToolHost, ToolHostBuilder,
};

use crate::cli::{DataDir, RunArgs, read_encryption_key};
use crate::config::{Config, LogFormat, ToolsConfig};
use crate::server::{NodeInfo, ServeLimits};
use crate::stack::{Shared, Stack};

/// Where the API listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// How long an ask waits for its reply unless told otherwise.
const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request head may take unless told otherwise.
const DEFAULT_HEADER_TIMEOUT_MS: u64 = 5_000;

/// How long a request body may take unless told otherwise.
const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;

/// Connections served at once unless told otherwise.
const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// How long a graceful shutdown waits for connections unless told otherwise.
const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 5_000;

/// The longest any of the timeouts above may be set to (one hour).
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// The most connections that may be allowed at once.
const MAX_CONNECTIONS: usize = 1 << 16;

/// Descriptors kept free for everything but client connections (the journal's files,
/// tool runs, the listener).
const RESERVED_FDS: u64 = 64;

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
    config.header_timeout_ms = args.header_timeout_ms.or(config.header_timeout_ms);
    config.body_timeout_ms = args.body_timeout_ms.or(config.body_timeout_ms);
    config.max_connections = args.max_connections.or(config.max_connections);
    config.shutdown_timeout_ms = args.shutdown_timeout_ms.or(config.shutdown_timeout_ms);
    let json = args.log_json || config.log_format == Some(LogFormat::Json);
    let telemetry = init_logging(config.log.as_deref(), json, config.otel.as_ref())?;
    let limits = Limits::from_config(&config)?;
    let mut dir = args.dir.clone();
    if dir.key_file.is_none() {
        dir.key_file.clone_from(&config.key_file);
    }
    let journal_url = args
        .journal
        .clone()
        .or_else(|| config.journal.clone())
        .filter(|url| !url.is_empty());
    let journal_config = journal_config(&dir, &config)?;
    crate::init::on_first_run(&dir, || match &journal_url {
        Some(url) => open_postgres(url, journal_config.clone()),
        None => Ok(Arc::new(dir.open_or_create_journal()?) as Arc<dyn Journal>),
    })?;
    // Without a config file the node is still useful: fs tools confined to a workspace
    // in the data directory (shell.exec stays off until configured). Made after `init`,
    // so the data directory is created private (0700).
    if args.config.is_none() {
        config.tools.fs_root = Some(default_workspace(&dir)?);
    }
    let listen = match args.listen.or(config.listen) {
        Some(listen) => listen,
        None => DEFAULT_LISTEN.parse().context("the default address")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    #[cfg(feature = "postgres")]
    let cluster = crate::cluster::Settings::resolve(
        &config,
        args.node_id.as_deref(),
        args.advertise.as_deref(),
        journal_url.as_deref(),
        listen,
    )?;
    #[cfg(not(feature = "postgres"))]
    if args.node_id.is_some() || config.cluster.is_some() {
        anyhow::bail!(
            "a cluster node needs the `postgres` feature, which this toka-node was built without"
        );
    }
    let served = runtime.block_on(async {
        #[cfg(feature = "postgres")]
        if let Some(settings) = cluster {
            return crate::cluster::serve(
                settings,
                &dir,
                &config,
                &limits,
                listen,
                telemetry.is_some(),
                journal_config,
            )
            .await;
        }
        serve(
            &dir,
            &config,
            &limits,
            listen,
            telemetry.is_some(),
            journal_url.as_deref(),
            journal_config,
        )
        .await
    });
    drop(runtime);
    // After the runtime: the last spans (the shutdown's) are exported too.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The node's time and connection limits, checked.
pub(crate) struct Limits {
    pub(crate) ask_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) serve: ServeLimits,
}

impl Limits {
    fn from_config(config: &Config) -> anyhow::Result<Limits> {
        let millis = |value: Option<u64>, default: u64, key: &str| -> anyhow::Result<Duration> {
            match value.unwrap_or(default) {
                ms @ 1..=MAX_TIMEOUT_MS => Ok(Duration::from_millis(ms)),
                ms => anyhow::bail!("{key} = {ms}: it must be 1 to {MAX_TIMEOUT_MS} (ms)"),
            }
        };
        let max_connections = match config.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS) {
            n @ 1..=MAX_CONNECTIONS => n,
            n => anyhow::bail!("max_connections = {n}: it must be 1 to {MAX_CONNECTIONS}"),
        };
        let max_connections = within_descriptor_limit(max_connections);
        Ok(Limits {
            ask_timeout: millis(
                config.ask_timeout_ms,
                u64::try_from(DEFAULT_ASK_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
                "ask_timeout_ms",
            )?,
            body_timeout: millis(
                config.body_timeout_ms,
                DEFAULT_BODY_TIMEOUT_MS,
                "body_timeout_ms",
            )?,
            serve: ServeLimits {
                header_read_timeout: millis(
                    config.header_timeout_ms,
                    DEFAULT_HEADER_TIMEOUT_MS,
                    "header_timeout_ms",
                )?,
                max_connections,
                shutdown_timeout: millis(
                    config.shutdown_timeout_ms,
                    DEFAULT_SHUTDOWN_TIMEOUT_MS,
                    "shutdown_timeout_ms",
                )?,
            },
        })
    }
}

/// Logs to stderr under `filter` (`RUST_LOG` overrides it); with `otel`, also exports
/// spans (see `otel.rs`), whose exporter the caller shuts down.
/// `filter`, with the MCP SDK (rmcp) held at `info` when the filter asks for `debug` or
/// `trace` without naming it: rmcp's debug lines carry whole MCP requests and responses,
/// tool arguments and file contents included. `rmcp=debug` in the filter still turns them
/// on.
fn with_quiet_payload_logs(mut filter: String) -> String {
    let verbose = filter.contains("debug") || filter.contains("trace");
    if verbose && !filter.contains("rmcp") {
        filter.push_str(",rmcp=info");
    }
    filter
}

fn init_logging(
    filter: Option<&str>,
    json: bool,
    otel: Option<&crate::otel::OtelConfig>,
) -> anyhow::Result<Option<crate::otel::Telemetry>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = with_quiet_payload_logs(
        std::env::var("RUST_LOG")
            .ok()
            .or_else(|| filter.map(str::to_owned))
            .unwrap_or_else(|| "warn".to_owned()),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(EnvFilter::new(filter)).boxed()
    } else {
        fmt.with_filter(EnvFilter::new(filter)).boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt);
    #[cfg(feature = "otel")]
    {
        let (telemetry, layer) = match otel {
            Some(config) => {
                let (telemetry, layer) = crate::otel::Telemetry::start(config)?;
                (Some(telemetry), Some(layer))
            }
            None => (None, None),
        };
        let _ = registry.with(layer).try_init();
        Ok(telemetry)
    }
    #[cfg(not(feature = "otel"))]
    {
        crate::otel::unsupported(otel)?;
        let _ = registry.try_init();
        Ok(None)
    }
}

/// The journal's settings: durability from the config, the encryption key of the data dir.
fn journal_config(dir: &DataDir, config: &Config) -> anyhow::Result<JournalConfig> {
    let mut journal_config = JournalConfig::default();
    if let Some(durability) = config.durability {
        journal_config = journal_config.durability(durability.into());
    }
    if let Some(micros) = config.commit_linger_us {
        journal_config = journal_config.commit_linger(std::time::Duration::from_micros(micros));
    }
    if let Some(key_file) = &dir.key_file {
        journal_config = journal_config.encryption(read_encryption_key(key_file)?);
    }
    Ok(journal_config)
}

/// Opens the journal in PostgreSQL (`--journal postgres://…`). Errors show the URL with
/// its password redacted.
fn open_postgres(url: &str, config: JournalConfig) -> anyhow::Result<Arc<dyn Journal>> {
    let shown = toka_store::redact_url(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!("unsupported journal URL {shown}: use postgres://user@host/db");
    }
    #[cfg(feature = "postgres")]
    {
        let journal = toka_store::PgJournal::connect(url, config).map_err(|error| {
            anyhow::Error::new(error).context(format!("opening the journal at {shown}"))
        })?;
        Ok(Arc::new(journal))
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = config;
        anyhow::bail!("journal {shown}: this toka-node was built without the `postgres` feature")
    }
}

async fn serve(
    dir: &DataDir,
    config: &Config,
    limits: &Limits,
    listen: SocketAddr,
    traced: bool,
    journal_url: Option<&str>,
    journal_config: JournalConfig,
) -> anyhow::Result<()> {
    let node_started = Instant::now();
    let journal_path = dir.journal_path();
    let journal: Arc<dyn Journal> = match journal_url {
        Some(url) => open_postgres(url, journal_config)?,
        None => Arc::new(
            SledJournal::open(&journal_path, journal_config)
                .map_err(|error| open_error(&journal_path, error))?,
        ),
    };
    let sealer = Sealer::open(&dir.seal_key_path())
        .with_context(|| format!("opening the seal key of {}", dir.data_dir.display()))?;
    let authority = Authority::open(&dir.root_key_path(), journal.clone())
        .with_context(|| format!("opening the authority of {}", dir.data_dir.display()))?;
    let mcp = crate::mcp::start(dir, &config.mcp).await?;
    let shared = Shared {
        dir,
        config,
        authority,
        sealer,
        mcp: &mcp,
        ask_timeout: limits.ask_timeout,
        body_timeout: limits.body_timeout,
        traced,
        info: NodeInfo::of(
            config,
            node_started,
            journal_url.is_none().then(|| journal_path.clone()),
        ),
    };
    let stack = Stack::open(&shared, journal, |_| true, None).await?;

    // Before `listening on`: a signal from then on stops the node gracefully.
    let stop = shutdown_signal();
    let listener = bind(listen).with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr().context("the bound address")?;
    println!("listening on {bound}");
    let _ = std::io::stdout().flush();
    first_run_hints(dir, config, bound);

    let state = stack.state.clone();
    let served = crate::server::serve(listener, stack.router.clone(), limits.serve, async move {
        stop.await;
        eprintln!("toka-node: shutting down");
        state.close_streams();
    })
    .await;
    if served.dropped > 0 {
        eprintln!(
            "toka-node: dropped {} connections still open after {} ms",
            served.dropped,
            limits.serve.shutdown_timeout.as_millis()
        );
    }

    // Shut down whatever happened to the server: the journal must be flushed.
    let journal = Arc::clone(&stack.journal);
    let closed = stack.close().await;
    crate::mcp::shutdown(&mcp).await;
    closed?;
    if journal.write_failure().is_none() {
        eprintln!("toka-node: stopped; the journal is flushed");
    }
    Ok(())
}

/// Awaits `work` (recovery), saying on stderr every two seconds that it is still going.
pub(crate) async fn with_progress<F: Future>(work: F) -> F::Output {
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

/// Connections the kernel may queue before the node accepts them (it caps this at
/// `net.core.somaxconn`). Beyond `max_connections` clients wait here rather than be
/// refused and retried; tokio's default is 128.
const ACCEPT_BACKLOG: u32 = 4096;

/// The data directory's `workspace` (created 0700 if absent), the fs tools' root when no
/// config names one. A workspace that is a symbolic link is refused: the tools would
/// follow it out of the data directory.
fn default_workspace(dir: &DataDir) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let workspace = dir.workspace_path();
    match std::fs::symlink_metadata(&workspace) {
        Ok(meta) if meta.file_type().is_symlink() => anyhow::bail!(
            "the fs workspace {} is a symbolic link: remove it, or name the tools' root with \
             fs_root in a config file",
            workspace.display()
        ),
        Ok(meta) if !meta.is_dir() => {
            anyhow::bail!(
                "the fs workspace {} is not a directory",
                workspace.display()
            )
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&workspace)
            .with_context(|| format!("creating the fs workspace {}", workspace.display()))?,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading the fs workspace {}", workspace.display()));
        }
    }
    Ok(workspace)
}

/// Tells the operator, on stderr, where the console is, how to sign in (where the admin
/// token is: never the token itself) and where the fs tools are confined.
fn first_run_hints(dir: &DataDir, config: &Config, bound: SocketAddr) {
    let console = crate::remote::reachable(bound);
    eprintln!("toka-node: console at http://{console}/ui");
    eprintln!(
        "toka-node: sign in with the admin token: cat {}",
        dir.admin_token_path().display()
    );
    if let Some(root) = &config.tools.fs_root {
        eprintln!("toka-node: fs tools confined to {}", root.display());
    }
}

/// Binds the API's listener (with `SO_REUSEADDR`, as tokio's `bind` does).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Raises the soft limit on open files to the hard one (as Go's runtime does), then caps
/// `wanted` connections so that they cannot take the descriptors the node itself needs:
/// past the limit `accept` fails, and a flood of idle sockets would starve everyone.
fn within_descriptor_limit(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            wanted,
            serving = room,
            open_files_limit = soft,
            "max_connections is over what the open-files limit allows; serving fewer at once"
        );
    }
    wanted.min(room)
}

/// The start-up error for a journal that would not open, naming the real cause: a lock
/// held by another process is the usual one, but a full disk or a permission problem
/// must not be blamed on it.
fn open_error(path: &std::path::Path, error: toka_store::Error) -> anyhow::Error {
    let (mut locked, mut full) = (false, false);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            locked |= io.kind() == std::io::ErrorKind::WouldBlock;
            full |= io.kind() == std::io::ErrorKind::StorageFull;
        }
        let text = cause.to_string();
        locked |= text.contains("could not acquire lock");
        full |= text.contains("No space left on device");
        source = cause.source();
    }
    let hint = if full {
        " (its disk is full: free space on it, then start the node again; nothing acknowledged was lost)"
    } else if locked {
        " (another process holds its lock: is another node running on it?)"
    } else {
        ""
    };
    anyhow::Error::new(error).context(format!("opening the journal at {}{hint}", path.display()))
}

/// The tool host's builder with the tools `config` asks for.
pub(crate) fn tool_host(
    authority: Authority,
    config: &ToolsConfig,
) -> anyhow::Result<ToolHostBuilder> {
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

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed *now*, not
/// when the future is first polled: the node calls this before it says `listening on`,
/// so a signal sent as soon as it serves (its accept loop may not have polled the
/// future yet) stops it gracefully instead of killing it.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Ok(mut term), Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGINT; only SIGTERM stops the node");
                term.recv().await;
            }
            (Err(e), _) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_quiet_payload_logs;

    #[test]
    fn verbose_filters_keep_mcp_payloads_out_unless_asked() {
        assert_eq!(with_quiet_payload_logs("warn".into()), "warn");
        assert_eq!(with_quiet_payload_logs("debug".into()), "debug,rmcp=info");
        assert_eq!(
            with_quiet_payload_logs("info,toka_actors=trace".into()),
            "info,toka_actors=trace,rmcp=info"
        );
        assert_eq!(
            with_quiet_payload_logs("debug,rmcp=debug".into()),
            "debug,rmcp=debug"
        );
    }
}
