//! A cluster: several nodes over one PostgreSQL database form one system.
//!
//! # Shards
//! The agents live in a fixed number of **shards** (`[cluster] shards`, default 8, set
//! when the cluster is made). Each shard is a whole Toka runtime over a journal of its own
//! (PostgreSQL schema `<base>_s<N>`), with its own single writer: what a standalone node
//! is, with the same recovery (snapshot + replay), the same exactly-once steps and the
//! same tool host. A top-level agent's shard is a hash of its id; a child lives in its
//! parent's shard, unless it was spawned to run anywhere: then it runs in its own id's
//! shard, supervised across shards by its parent ([`link`], `toka_actors::remote`). The table
//! `<base>_cluster.toka_agents` records each agent's shard; the shard's holder records
//! the agents its agents spawn within a tick.
//!
//! # Who runs a shard: leases with fencing
//! A node runs a shard only while it holds the shard's **lease**
//! ([`toka_store::Leases`], in `<base>_cluster.toka_leases`), and opens the shard's journal
//! **fenced** by it: every transaction commits only if the database finds the lease still
//! held at its epoch. So a node that lost a lease (killed, paused, cut off by a
//! partition) commits nothing more to that shard, and a shard never runs on two nodes at
//! once as far as the journal can tell. A node renews its leases every tick
//! (`lease_ms / 6`); if it cannot, it stops serving a shard before the lease can expire
//! in the database (its own deadline counts from before the last renewal it sent).
//!
//! # Holdings in the journal
//! When a node starts serving a shard at epoch `E` it first appends a **holding** to the
//! shard's journal (stream [`HOLDINGS_STREAM`], kind [`HOLDING_KIND`], a JSON payload: the
//! node id, the epoch, the node's process id and when it started serving), before any
//! agent of the shard recovers or runs. The append is fenced like every other write, so
//! the holdings of a shard journal form its history of holders, in strictly increasing
//! epochs, and every record after a holding (up to the next one) was written by that
//! holder. Operators see them in `GET /events?shard=N&stream=toka/cluster`; the cluster
//! tests check their histories against them. The runtime reads its own streams only
//! (`toka/tree`, `toka/progress`, `agent/…`), so a holding never reaches an agent.
//!
//! # Membership and placement
//! Every node heartbeats in `<base>_cluster.toka_members` (`GET /cluster` shows them). A
//! member silent for a lease period is gone. Shards are dealt round-robin over the live
//! members sorted by id ([`placement::preferred`]): each node takes the free or expired
//! leases of the shards dealt to it and gracefully hands over (stops, then releases) the
//! shards dealt to another live node. So agents spread when a node joins and move when
//! one leaves or dies: within about `lease_ms` plus recovery when it dies, at once when it
//! stops gracefully (it releases its leases and leaves).
//!
//! # Routing
//! Any node takes any request ([`front`]): a request naming an agent goes to the shard the
//! agent lives in, served in-process if this node holds it, otherwise forwarded over HTTP
//! to its holder (the caller's token goes along and is checked there, too). `GET /agents`
//! merges every node's agents. A shard's events (`GET /events?shard=N`,
//! `GET /events/stream?shard=N`) are not forwarded: the node that received the request
//! serves them from a **follower** of the shard's journal ([`toka_store::PgJournal::follow`],
//! woken by the commits' `NOTIFY`; see `streams.rs`), so a stream is not tied to the
//! holder and keeps going, gap-free, when the shard moves. Other routes go to this node's
//! lowest shard. Forwarding
//! over HTTP rather than `ractor_cluster`: the API is already the one typed, authorized,
//! journaled entry point (a remote actor message would need a second authorization path
//! and wire format). The hop costs a second request's CPU: with 3 nodes on one 2-core box
//! the node CPU per message doubled (README's cluster figures); a client that sends to the
//! holder (`GET /cluster` names it) skips it.
//!
//! Between nodes only (not part of the API, nor of its OpenAPI description): `POST
//! /cluster/remote` carries a shard runtime's request for an agent of a shard another node
//! holds ([`link`]), with a token the sending node mints for that one permission
//! (`api.cluster.remote`, valid 60 s).
//!
//! # Tokens
//! Every node verifies tokens with the same root key (one data directory, copied to each
//! node's machine). Issued tokens and denials are journaled in the node's own journal
//! (`<base>_node_<id>`); revocations are shared through `<base>_cluster.toka_revocations`
//! and reach every node within a tick.

mod catalog;
mod front;
mod link;
mod manager;
mod placement;
mod streams;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use toka_store::{Journal, JournalConfig, Leases, PgJournal};
use toka_tools::{Authority, Sealer};

use crate::cli::DataDir;
use crate::config::Config;
use crate::server::{AppState, NodeInfo};
use crate::stack::Shared;

use self::catalog::{Catalog, Member};

/// The stream of a shard journal that holds its holdings (see the module docs).
pub(crate) const HOLDINGS_STREAM: &str = "toka/cluster";

/// The kind of a holding record.
pub(crate) const HOLDING_KIND: &str = "cluster.holding";

/// Appends the holding of `node_id` at `epoch` to a shard's (fenced) journal: called
/// before the shard's runtime recovers, so every record after it is this holder's.
///
/// # Errors
/// The journal's: the lease was lost, the database failed.
pub(crate) async fn record_holding(
    journal: &dyn Journal,
    node_id: &str,
    epoch: i64,
) -> anyhow::Result<()> {
    let payload = serde_json::json!({
        "node": node_id,
        "epoch": epoch,
        "pid": std::process::id(),
        "started_micros": toka_store::Timestamp::now().as_micros(),
    });
    let event = toka_store::NewEvent::new(HOLDING_KIND, payload.to_string().into_bytes());
    journal
        .append(
            HOLDINGS_STREAM,
            toka_store::ExpectedVersion::Any,
            std::slice::from_ref(&event),
        )
        .await
        .context("recording this node's holding in the shard journal")?
        .map_err(|conflict| anyhow::anyhow!("recording the holding: {conflict}"))?;
    Ok(())
}

/// Shards unless `[cluster] shards` says otherwise.
const DEFAULT_SHARDS: u32 = 8;

/// The lease period unless `[cluster] lease_ms` says otherwise.
const DEFAULT_LEASE: Duration = Duration::from_millis(3_000);

/// The cluster settings of one node, checked.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// This node's id: 1 to 32 of `a-z`, `0-9`, `_`.
    pub(crate) node_id: String,
    /// The URL other nodes reach this node's API at (set from the bound address when
    /// not configured).
    pub(crate) advertise: String,
    /// Whether `advertise` was configured (else it follows the bound address).
    advertise_given: bool,
    pub(crate) shards: u32,
    pub(crate) lease: Duration,
    /// The database URL, without a `schema` parameter.
    pub(crate) url: String,
    /// The schema prefix (the URL's `schema`, default `toka`).
    pub(crate) base: String,
}

impl Settings {
    /// The settings from the config and flags; `None` for a standalone node.
    pub(crate) fn resolve(
        config: &Config,
        node_id: Option<&str>,
        advertise: Option<&str>,
        journal_url: Option<&str>,
        listen: SocketAddr,
    ) -> anyhow::Result<Option<Settings>> {
        let section = config.cluster.as_ref();
        let Some(node_id) = node_id.or_else(|| section.and_then(|c| c.node_id.as_deref())) else {
            if section.is_some() {
                anyhow::bail!("[cluster] needs node_id (or --node-id)");
            }
            return Ok(None);
        };
        let valid = !node_id.is_empty()
            && node_id.len() <= 32
            && node_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            anyhow::bail!("invalid node id {node_id:?}: use 1 to 32 of a-z, 0-9 and _");
        }
        let Some(journal_url) = journal_url else {
            anyhow::bail!(
                "a cluster node needs its journal in PostgreSQL: --journal postgres://… (or `journal` in the config)"
            );
        };
        let (url, schema) = toka_store::backend::split_schema(journal_url)?;
        let base = schema.unwrap_or_else(|| toka_store::backend::DEFAULT_PG_SCHEMA.to_owned());
        // `<base>_node_<id>` must stay a valid schema name.
        if base.len() + 6 + node_id.len() > 63 {
            anyhow::bail!("the schema {base:?} and node id {node_id:?} are too long together");
        }
        let given = advertise
            .map(str::to_owned)
            .or_else(|| section.and_then(|c| c.advertise.clone()));
        let advertise_given = given.is_some();
        let advertise = given.unwrap_or_else(|| format!("http://{listen}"));
        let advertise = advertise.trim_end_matches('/').to_owned();
        if !(advertise.starts_with("http://") || advertise.starts_with("https://")) {
            anyhow::bail!("[cluster] advertise must be an http:// or https:// URL");
        }
        let shards = section.and_then(|c| c.shards).unwrap_or(DEFAULT_SHARDS);
        if !(1..=256).contains(&shards) {
            anyhow::bail!("[cluster] shards must be 1 to 256");
        }
        let lease = section
            .and_then(|c| c.lease_ms)
            .map_or(DEFAULT_LEASE, Duration::from_millis);
        if lease < Duration::from_millis(300) || lease > Duration::from_secs(600) {
            anyhow::bail!("[cluster] lease_ms must be 300 to 600000");
        }
        Ok(Some(Settings {
            node_id: node_id.to_owned(),
            advertise,
            advertise_given,
            shards,
            lease,
            url,
            base,
        }))
    }

    fn cluster_schema(&self) -> String {
        format!("{}_cluster", self.base)
    }

    fn shard_schema(&self, shard: u32) -> String {
        format!("{}_s{shard}", self.base)
    }

    fn node_schema(&self) -> String {
        format!("{}_node_{}", self.base, self.node_id)
    }

    fn lease_name(shard: u32) -> String {
        format!("shard/{shard}")
    }

    /// How often leases are renewed and placement is reconsidered.
    fn tick(&self) -> Duration {
        (self.lease / 6).max(Duration::from_millis(50))
    }
}

/// A shard this node serves.
#[derive(Clone)]
pub(crate) struct LocalShard {
    pub(crate) router: axum::Router,
    pub(crate) state: AppState,
    /// Until when its lease is surely held (the manager extends it at each renewal); past
    /// it the front stops serving the shard even if the manager is stuck on the database.
    valid_until: Arc<std::sync::Mutex<Instant>>,
}

impl LocalShard {
    fn new(router: axum::Router, state: AppState, valid_until: Instant) -> Self {
        LocalShard {
            router,
            state,
            valid_until: Arc::new(std::sync::Mutex::new(valid_until)),
        }
    }

    fn extend(&self, until: Instant) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    /// Whether its lease is surely still held.
    pub(crate) fn valid(&self) -> bool {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) > Instant::now()
    }
}

/// The cluster as this node last saw it (refreshed every tick).
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    pub(crate) members: Vec<Member>,
    /// Live holders: shard → (node id, epoch, remaining ms).
    pub(crate) holders: BTreeMap<u32, (String, i64, i64)>,
}

/// The holders of the shards' leases: shard → (node id, epoch, remaining ms).
fn holders(leases: &[toka_store::LeaseState]) -> BTreeMap<u32, (String, i64, i64)> {
    leases
        .iter()
        .filter_map(|lease| {
            let shard = lease.name.strip_prefix("shard/")?.parse().ok()?;
            Some((
                shard,
                (lease.holder.clone()?, lease.epoch, lease.remaining_ms),
            ))
        })
        .collect()
}

/// What the front and the manager share.
pub(crate) struct Cluster {
    pub(crate) settings: Settings,
    pub(crate) catalog: Catalog,
    pub(crate) leases: Leases,
    /// Verifies tokens at the front (the same root key as every shard's).
    pub(crate) authority: Authority,
    pub(crate) local: RwLock<BTreeMap<u32, LocalShard>>,
    pub(crate) view: RwLock<View>,
    /// Agent id → shard, as recorded (a shard never changes for an id).
    pub(crate) directory: RwLock<HashMap<String, u32>>,
    pub(crate) http: reqwest::Client,
    /// Followers of the shards' journals, serving their event reads on this node.
    pub(crate) followers: streams::Followers,
}

impl Cluster {
    /// The address of the live node holding `shard`, unless this node holds it.
    pub(crate) fn holder_address(&self, shard: u32) -> Option<String> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let (holder, _, remaining) = view.holders.get(&shard)?;
        if *remaining <= 0 || holder == &self.settings.node_id {
            return None;
        }
        view.members
            .iter()
            .find(|m| &m.id == holder && catalog::alive(m, self.settings.lease))
            .map(|m| m.address.clone())
    }

    pub(crate) fn local_shard(&self, shard: u32) -> Option<LocalShard> {
        self.local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&shard)
            .cloned()
    }
}

/// Runs a cluster node until SIGINT or SIGTERM, then hands its shards over.
pub(crate) async fn serve(
    mut settings: Settings,
    dir: &DataDir,
    config: &Config,
    limits: &crate::run::Limits,
    listen: SocketAddr,
    traced: bool,
    journal_config: JournalConfig,
) -> anyhow::Result<()> {
    let serve_limits = limits.serve;
    let node_started = Instant::now();
    let stop = crate::run::shutdown_signal();
    let listener = crate::run::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr().context("the bound address")?;
    if !settings.advertise_given {
        settings.advertise = format!("http://{bound}");
    }
    let blocking =
        |what: &'static str| move |e: tokio::task::JoinError| anyhow::anyhow!("{what}: {e}");
    let sealer = Sealer::open(&dir.seal_key_path())
        .with_context(|| format!("opening the seal key of {}", dir.data_dir.display()))?;
    let keys = key_fingerprint(dir)?;
    let (url, s) = (settings.url.clone(), settings.clone());
    let (catalog, leases, node_journal) = tokio::task::spawn_blocking(move || {
        let catalog = Catalog::open(&url, &s.cluster_schema(), s.shards, &keys)?;
        let leases = Leases::connect(&url, &s.cluster_schema())?;
        let node_journal = PgJournal::connect(
            &format!("{url}{}schema={}", sep(&url), s.node_schema()),
            JournalConfig::default(),
        )
        .context(
            "opening this node's own journal (is another process running with this node id?)",
        )?;
        anyhow::Ok((catalog, leases, node_journal))
    })
    .await
    .map_err(blocking("joining the cluster"))??;
    let node_journal: Arc<dyn Journal> = Arc::new(node_journal);
    let authority = Authority::open(&dir.root_key_path(), Arc::clone(&node_journal))
        .with_context(|| format!("opening the authority of {}", dir.data_dir.display()))?;
    let mcp = crate::mcp::start(dir, &config.mcp).await?;
    let shared = Shared {
        dir,
        config,
        authority: authority.clone(),
        sealer,
        mcp: &mcp,
        ask_timeout: limits.ask_timeout,
        body_timeout: limits.body_timeout,
        traced,
        info: NodeInfo::of(config, node_started, None),
    };
    let cluster = Arc::new(Cluster {
        settings: settings.clone(),
        catalog,
        leases,
        authority,
        local: RwLock::new(BTreeMap::new()),
        view: RwLock::new(View::default()),
        directory: RwLock::new(HashMap::new()),
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            // A pooled connection that sat idle through a partition may be dead without
            // either side knowing; under load connections are never idle this long.
            .pool_idle_timeout(Duration::from_secs(1))
            .tcp_keepalive(Duration::from_secs(1))
            .build()
            .context("building the HTTP client for forwarding")?,
        followers: streams::Followers::new(journal_config.clone()),
    });

    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let manager =
        manager::Manager::new(Arc::clone(&cluster), &shared, journal_config, node_journal);
    let router = front::router(Arc::clone(&cluster));
    println!("listening on {bound}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    eprintln!(
        "toka-node: cluster node {:?} ({} shards, leases of {} ms), reached at {}",
        settings.node_id,
        settings.shards,
        settings.lease.as_millis(),
        settings.advertise
    );
    let front_cluster = Arc::clone(&cluster);
    let server = crate::server::serve(listener, router, serve_limits, async move {
        stop.await;
        eprintln!("toka-node: shutting down");
        for shard in front_cluster
            .local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            shard.state.close_streams();
        }
        front_cluster.followers.close_streams();
        let _ = stopping_tx.send(true);
    });
    // The manager runs until the server stops, then hands the shards over.
    let (served, managed) = tokio::join!(server, manager.run(stopping));
    if served.dropped > 0 {
        eprintln!(
            "toka-node: dropped {} connections still open after {} ms",
            served.dropped,
            serve_limits.shutdown_timeout.as_millis()
        );
    }
    crate::mcp::shutdown(&mcp).await;
    managed?;
    eprintln!("toka-node: stopped; its shards are handed over");
    Ok(())
}

/// A fingerprint of the data directory's root and seal keys (a keyed hash: it tells
/// whether two nodes have the same keys and nothing about them).
fn key_fingerprint(dir: &DataDir) -> anyhow::Result<String> {
    let mut hasher = blake3::Hasher::new_derive_key("toka cluster key fingerprint v1");
    for path in [dir.root_key_path(), dir.seal_key_path()] {
        let key = zeroize::Zeroizing::new(
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        );
        hasher.update(&key);
    }
    Ok(hasher.finalize().to_hex()[..32].to_owned())
}

/// `?` or `&`: what joins a parameter to `url`.
fn sep(url: &str) -> char {
    if url.contains('?') { '&' } else { '?' }
}
