//! One journal's services: the runtime recovered from it, its tool host (approvals
//! included), its model host, the API state over them, and the tasks watching it. A
//! standalone node runs one stack over its journal; a cluster node runs one per shard it
//! holds (see `cluster`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use toka_actors::{AgentId, Runtime, SpawnSpec};
use toka_store::Journal;
use toka_tools::mcp::McpServer;
use toka_tools::{Approvals, Authority, Sealer, ToolHost};

use crate::cli::DataDir;
use crate::config::Config;
use crate::server::{AppState, NodeInfo, Services, app, unwritable};

/// How often a stack checks whether its journal still accepts writes.
const JOURNAL_CHECK: Duration = Duration::from_secs(1);

/// What every stack of a node shares.
pub(crate) struct Shared<'a> {
    pub(crate) dir: &'a DataDir,
    pub(crate) config: &'a Config,
    /// Checks tokens (over the node's own journal in a cluster, the stack's otherwise).
    pub(crate) authority: Authority,
    pub(crate) sealer: Sealer,
    pub(crate) mcp: &'a [McpServer],
    pub(crate) ask_timeout: Duration,
    pub(crate) body_timeout: Duration,
    /// Message records keep the trace context of their send (`[otel]`).
    pub(crate) traced: bool,
    pub(crate) info: NodeInfo,
}

impl NodeInfo {
    /// What `GET /status` says of a node started at `started` with `config`;
    /// `journal_dir`: a sled journal's directory, whose size is reported.
    pub(crate) fn of(
        config: &Config,
        started: Instant,
        journal_dir: Option<std::path::PathBuf>,
    ) -> NodeInfo {
        NodeInfo {
            started,
            journal_dir,
            durability: match config.durability {
                Some(crate::config::DurabilitySetting::Buffered) => "buffered",
                _ => "fsync",
            },
            models: config.models.keys().cloned().collect(),
        }
    }
}

/// A running stack.
pub(crate) struct Stack {
    pub(crate) runtime: Runtime,
    pub(crate) host: ToolHost,
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) state: AppState,
    /// The API over this stack alone.
    pub(crate) router: Router,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    /// Recovers the runtime from `journal` and starts everything over it; spawns the
    /// config file's boot agents for which `boots` says yes. `remote`: how the runtime
    /// reaches the other shards' agents (a cluster's shard; see `toka_actors::remote`).
    pub(crate) async fn open(
        shared: &Shared<'_>,
        journal: Arc<dyn Journal>,
        boots: impl Fn(&str) -> bool,
        remote: Option<Arc<dyn toka_actors::Remote>>,
    ) -> anyhow::Result<Stack> {
        let config = shared.config;
        let (always_approve, approval_ttl) = crate::approvals::settings(&config.tools)?;
        let approvals = Approvals::open(Arc::clone(&journal), approval_ttl)
            .context("reading the approvals from the journal")?;
        let mut host = crate::mcp::register(
            shared.mcp,
            crate::run::tool_host(shared.authority.clone(), &config.tools)?,
        )
        .approvals(approvals);
        for pattern in always_approve {
            host = host.approval_required(pattern);
        }
        let host = host.start().await.context("starting the tool host")?;
        let models = crate::secrets::model_host(
            shared.dir,
            &config.models,
            shared.authority.clone(),
            Arc::clone(&journal),
        )?;

        let started = Instant::now();
        let builder = crate::kinds::register(
            Runtime::builder(Arc::clone(&journal)),
            Some(shared.sealer.clone()),
        )
        .extension(host.clone())
        .extension(models);
        let builder = match remote {
            Some(remote) => builder.remote(remote),
            None => builder,
        };
        // With `[otel]`, message records keep the trace context of their send.
        #[cfg(feature = "otel")]
        let builder = if shared.traced {
            builder.trace_propagator(crate::otel::TraceContextCarrier)
        } else {
            builder
        };
        let runtime = crate::run::with_progress(builder.start())
            .await
            .context("recovering the runtime from the journal")?;
        let recovery = started.elapsed();
        eprintln!(
            "toka-node: recovered {} agents in {} ms",
            runtime.tree().len(),
            recovery.as_millis()
        );
        start_boot_agents(&runtime, config, &shared.sealer, boots).await?;
        let sweeper = crate::approvals::resume(&runtime, &host).await?;
        let watch = tokio::spawn(watch_journal(Arc::clone(&journal)));
        let services = Services {
            authority: shared.authority.clone(),
            host: host.clone(),
            sealer: shared.sealer.clone(),
            ask_timeout: shared.ask_timeout,
            body_timeout: shared.body_timeout,
            info: shared.info.clone(),
        };
        let state = AppState::new(runtime.clone(), services, recovery);
        let router = app(state.clone());
        Ok(Stack {
            runtime,
            host,
            journal,
            state,
            router,
            tasks: vec![sweeper, watch],
        })
    }

    /// Stops the agents, the tools and the tasks, and flushes the journal (unless it
    /// refuses writes: then what was acknowledged is already stored).
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        self.state.close_streams();
        for task in &self.tasks {
            task.abort();
        }
        let stopped = self.runtime.shutdown().await;
        self.host.shutdown().await;
        if let Some(error) = self.journal.write_failure() {
            eprintln!("toka-node: {}", unwritable(error));
            return Ok(());
        }
        Journal::flush(&*self.journal)
            .await
            .context("flushing the journal")?;
        stopped.context("shutting the runtime down")
    }
}

/// Watches the journal: the moment it stops accepting writes (a full disk, an I/O error)
/// the node says so once, with what to do; `/health` reports it from then on.
async fn watch_journal(journal: Arc<dyn Journal>) {
    let mut ticks = tokio::time::interval(JOURNAL_CHECK);
    loop {
        ticks.tick().await;
        if let Some(error) = journal.write_failure() {
            tracing::error!("{}", unwritable(error));
            return;
        }
    }
}

/// Spawns the config file's `[[agents]]` that the tree does not hold yet (and `boots`
/// accepts); tokens in their args are sealed before they are journaled.
async fn start_boot_agents(
    runtime: &Runtime,
    config: &Config,
    sealer: &Sealer,
    boots: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    for agent in config.agents.iter().filter(|agent| boots(&agent.id)) {
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
        if !agent.args.is_object() {
            anyhow::bail!("{}: args must be a table", context());
        }
        let mut args = agent.args.clone();
        sealer.seal_tokens(&mut args);
        runtime
            .spawn_json(parent.as_ref(), &agent.kind, spec, args)
            .await
            .with_context(context)?;
    }
    Ok(())
}
