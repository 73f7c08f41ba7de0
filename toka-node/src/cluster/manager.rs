//! The shard manager: every tick it heartbeats, renews the leases it holds, takes the
//! shards dealt to it, hands over the shards dealt to others, stops serving a shard whose
//! lease it lost (or could not renew in time), reopens a shard whose journal lost its
//! connection (the journal refuses writes from then on), records the agents its shards
//! spawned, and shares revocations. Opening a shard (recovering its runtime) runs beside the ticks, so
//! the leases of the other shards keep being renewed meanwhile.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use toka_store::{Journal, JournalConfig, Lease, PgJournal};
use tokio::sync::watch;

use super::catalog::{self, Member};
use super::placement::{home_shard, preferred};
use super::{Cluster, LocalShard, Settings, View};
use crate::stack::{Shared, Stack};

/// A shard this node holds the lease of (its stack is `None` while it opens).
struct Held {
    lease: Lease,
    /// This node's own deadline: the lease is surely valid before it.
    valid_until: Instant,
    stack: Option<Stack>,
    /// The agent ids already recorded in the cluster's directory.
    recorded: HashSet<String>,
}

type Opening<'a> = Pin<Box<dyn Future<Output = (u32, anyhow::Result<Stack>)> + 'a>>;

/// What one blocking round against the database brought back.
struct Round {
    renewed: Vec<(u32, anyhow::Result<bool>)>,
    members: anyhow::Result<Vec<Member>>,
    holders: anyhow::Result<BTreeMap<u32, (String, i64, i64)>>,
}

pub(crate) struct Manager<'a> {
    cluster: Arc<Cluster>,
    shared: &'a Shared<'a>,
    journal_config: JournalConfig,
    node_journal: Arc<dyn Journal>,
    /// Shards being closed in tasks of their own, so that a slow close (agents finishing
    /// their messages) never holds up the renewal of the other leases.
    closing: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl<'a> Manager<'a> {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        shared: &'a Shared<'a>,
        journal_config: JournalConfig,
        node_journal: Arc<dyn Journal>,
    ) -> Self {
        Manager {
            cluster,
            shared,
            journal_config,
            node_journal,
            closing: std::sync::Mutex::default(),
        }
    }

    fn settings(&self) -> &Settings {
        &self.cluster.settings
    }

    /// Runs until `stopping` turns true, then hands every shard over and leaves.
    pub(crate) async fn run(self, mut stopping: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut held: BTreeMap<u32, Held> = BTreeMap::new();
        let mut opening: FuturesUnordered<Opening<'a>> = FuturesUnordered::new();
        let mut backoff = Backoff::default();
        let mut ticks = tokio::time::interval(self.settings().tick());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.tick(&mut held, &mut opening, &mut backoff).await,
                Some((shard, result)) = opening.next(), if !opening.is_empty() => {
                    self.opened(shard, result, &mut held).await;
                }
                _ = stopping.changed() => break,
            }
        }
        // Hand over: let the openings finish, close every stack, release every lease.
        while let Some((shard, result)) = opening.next().await {
            self.opened(shard, result, &mut held).await;
        }
        for (shard, held) in std::mem::take(&mut held) {
            self.close(shard, held, true);
        }
        let closing = std::mem::take(&mut *self.closing.lock().unwrap_or_else(|e| e.into_inner()));
        for task in closing {
            let _ = task.await;
        }
        let cluster = Arc::clone(&self.cluster);
        let _ =
            tokio::task::spawn_blocking(move || cluster.catalog.leave(&cluster.settings.node_id))
                .await;
        Ok(())
    }

    async fn tick(
        &self,
        held: &mut BTreeMap<u32, Held>,
        opening: &mut FuturesUnordered<Opening<'a>>,
        backoff: &mut Backoff,
    ) {
        let settings = self.settings().clone();
        let sent = Instant::now();
        let renewing: Vec<(u32, Lease)> = held
            .iter()
            .map(|(shard, h)| (*shard, h.lease.clone()))
            .collect();
        let cluster = Arc::clone(&self.cluster);
        let round = tokio::task::spawn_blocking(move || {
            if let Err(error) = cluster
                .catalog
                .heartbeat(&settings.node_id, &settings.advertise)
            {
                tracing::warn!(%error, "cluster heartbeat failed");
            }
            let renewed = renewing
                .into_iter()
                .map(|(shard, lease)| {
                    let renewed = cluster.leases.renew(&lease, settings.lease);
                    (shard, renewed.map_err(anyhow::Error::from))
                })
                .collect();
            let members = cluster.catalog.members();
            let holders = cluster
                .leases
                .list()
                .map_err(anyhow::Error::from)
                .map(|list| super::holders(&list));
            Round {
                renewed,
                members,
                holders,
            }
        })
        .await;
        let Ok(round) = round else {
            return;
        };

        // Renewals: a lost lease stops its shard now; an unanswered one at its deadline.
        let mut lost = Vec::new();
        for (shard, renewed) in round.renewed {
            let Some(h) = held.get_mut(&shard) else {
                continue;
            };
            match renewed {
                Ok(true) => {
                    h.valid_until = deadline(sent, self.settings().lease);
                    if let Some(local) = self.cluster.local_shard(shard) {
                        local.extend(h.valid_until);
                    }
                }
                Ok(false) => lost.push(shard),
                Err(error) => tracing::warn!(shard, %error, "could not renew a shard lease"),
            }
        }
        let now = Instant::now();
        lost.extend(
            held.iter()
                .filter(|(_, h)| h.valid_until <= now)
                .map(|(shard, _)| *shard),
        );
        lost.sort_unstable();
        lost.dedup();
        for shard in lost {
            if let Some(h) = held.remove(&shard) {
                tracing::error!(
                    shard,
                    epoch = h.lease.epoch(),
                    "lost the lease of a shard: it stops here"
                );
                self.close(shard, h, false);
            }
        }

        // A journal whose connection was lost refuses writes for good (it does not
        // reconnect), though the lease may still be held: give the shard up, so that it
        // opens again on a fresh connection, at a new epoch, instead of refusing writes
        // until the node restarts.
        let poisoned: Vec<u32> = held
            .iter()
            .filter(|(_, h)| {
                h.stack.as_ref().is_some_and(|stack| {
                    matches!(
                        stack.journal.write_failure(),
                        Some(toka_store::Error::Poisoned(_))
                    )
                })
            })
            .map(|(shard, _)| *shard)
            .collect();
        for shard in poisoned {
            backoff.failed(shard);
            if let Some(h) = held.remove(&shard) {
                tracing::warn!(
                    shard,
                    epoch = h.lease.epoch(),
                    "a shard's journal refuses writes (its connection failed): reopening it"
                );
                self.close(shard, h, true);
            }
        }

        let (Ok(members), Ok(holders)) = (round.members, round.holders) else {
            return; // the database did not answer: decide nothing new
        };
        let lease = self.settings().lease;
        let alive: Vec<&str> = members
            .iter()
            .filter(|m| catalog::alive(m, lease))
            .map(|m| m.id.as_str())
            .collect();
        let me = self.settings().node_id.clone();
        let mut wanted = Vec::new();
        let mut handing_over = Vec::new();
        for shard in 0..self.settings().shards {
            let mine = preferred(shard, &alive) == Some(me.as_str());
            match held.get(&shard) {
                None if mine && backoff.ready(shard) => wanted.push(shard),
                Some(h) if !mine && h.stack.is_some() && !alive.is_empty() => {
                    handing_over.push(shard);
                }
                _ => {}
            }
        }
        *self.cluster.view.write().unwrap_or_else(|e| e.into_inner()) = View { members, holders };
        for shard in handing_over {
            if let Some(h) = held.remove(&shard) {
                tracing::info!(shard, "handing a shard over to its preferred node");
                self.close(shard, h, true);
            }
        }
        if !wanted.is_empty() {
            self.acquire(wanted, held, opening).await;
        }
        self.share(held).await;
    }

    /// Takes the free or expired leases of `shards` and starts opening each one taken.
    async fn acquire(
        &self,
        shards: Vec<u32>,
        held: &mut BTreeMap<u32, Held>,
        opening: &mut FuturesUnordered<Opening<'a>>,
    ) {
        let cluster = Arc::clone(&self.cluster);
        let asked = Instant::now();
        let taken = tokio::task::spawn_blocking(move || {
            let settings = &cluster.settings;
            shards
                .into_iter()
                .filter_map(|shard| {
                    match cluster.leases.try_acquire(
                        &Settings::lease_name(shard),
                        &settings.node_id,
                        settings.lease,
                    ) {
                        Ok(lease) => lease.map(|lease| (shard, lease)),
                        Err(error) => {
                            tracing::warn!(shard, %error, "could not take a shard lease");
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (shard, lease) in taken {
            tracing::info!(
                shard,
                epoch = lease.epoch(),
                "took a shard's lease; recovering it"
            );
            opening.push(self.open(shard, lease.clone()));
            held.insert(
                shard,
                Held {
                    lease,
                    valid_until: deadline(asked, self.settings().lease),
                    stack: None,
                    recorded: HashSet::new(),
                },
            );
        }
    }

    /// Opens the shard's journal fenced by `lease`, records this node's holding in it, and
    /// recovers its runtime.
    fn open(&self, shard: u32, lease: Lease) -> Opening<'a> {
        let shared = self.shared;
        let settings = self.settings().clone();
        let config = self.journal_config.clone();
        let boots = boot_agents_of(shared.config, shard, settings.shards);
        let link: Arc<dyn toka_actors::Remote> =
            Arc::new(super::link::ShardLink::new(&self.cluster, shard));
        let epoch = lease.epoch();
        Box::pin(async move {
            let opened = async {
                let schema = settings.shard_schema(shard);
                let url = settings.url.clone();
                let journal = tokio::task::spawn_blocking(move || {
                    PgJournal::connect_fenced(&url, &schema, &lease, config)
                })
                .await
                .map_err(|e| anyhow::anyhow!("opening shard {shard}: {e}"))??;
                // The holding first: every record after it is this holder's.
                super::record_holding(&journal, &settings.node_id, epoch).await?;
                Stack::open(
                    shared,
                    Arc::new(journal),
                    |id| boots.contains(id),
                    Some(link),
                )
                .await
            };
            (shard, opened.await)
        })
    }

    /// A shard finished opening: serve it, unless its lease was lost meanwhile.
    async fn opened(
        &self,
        shard: u32,
        result: anyhow::Result<Stack>,
        held: &mut BTreeMap<u32, Held>,
    ) {
        let Some(h) = held.get_mut(&shard) else {
            if let Ok(stack) = result {
                let _ = stack.close().await; // its lease was lost while it opened
            }
            return;
        };
        match result {
            Ok(stack) => {
                eprintln!(
                    "toka-node: serving shard {shard} (epoch {}, {} agents)",
                    h.lease.epoch(),
                    stack.runtime.tree().len()
                );
                let local =
                    LocalShard::new(stack.router.clone(), stack.state.clone(), h.valid_until);
                self.cluster
                    .local
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(shard, local);
                h.stack = Some(stack);
            }
            Err(error) => {
                tracing::error!(
                    shard,
                    error = format!("{error:#}"),
                    "could not open a shard"
                );
                if let Some(h) = held.remove(&shard) {
                    self.close(shard, h, true);
                }
            }
        }
    }

    /// Stops serving a shard at once, then closes its stack and, when `release`, gives
    /// its lease up, in a task of its own (the lease stays held, so nobody, this node
    /// included, takes the shard before the close is done).
    fn close(&self, shard: u32, held: Held, release: bool) {
        self.cluster
            .local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&shard);
        let cluster = Arc::clone(&self.cluster);
        let task = tokio::spawn(async move {
            if let Some(stack) = held.stack {
                if let Err(error) = stack.close().await {
                    tracing::warn!(shard, error = format!("{error:#}"), "closing a shard");
                }
            }
            if release {
                let lease = held.lease;
                let _ = tokio::task::spawn_blocking(move || cluster.leases.release(&lease)).await;
            }
        });
        let mut closing = self.closing.lock().unwrap_or_else(|e| e.into_inner());
        closing.retain(|task| !task.is_finished());
        closing.push(task);
    }

    /// Records the agents the held shards spawned, and shares revocations both ways.
    async fn share(&self, held: &mut BTreeMap<u32, Held>) {
        let mut new: Vec<(u32, Vec<String>)> = Vec::new();
        for (shard, h) in held.iter() {
            let Some(stack) = &h.stack else { continue };
            let ids: Vec<String> = stack
                .runtime
                .tree()
                .iter()
                // A remote child is recorded by the shard that runs it.
                .filter(|info| !info.elsewhere)
                .map(|info| info.id.to_string())
                .filter(|id| !h.recorded.contains(id))
                .collect();
            if !ids.is_empty() {
                new.push((*shard, ids));
            }
        }
        let cluster = Arc::clone(&self.cluster);
        let node_journal = Arc::clone(&self.node_journal);
        let shared = tokio::task::spawn_blocking(move || {
            let ours: Vec<(String, String)> =
                toka_tools::capability::revocations_in(&*node_journal)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| (r.identifier, r.reason))
                    .collect();
            for (shard, ids) in &new {
                match cluster.catalog.record_agents(*shard, ids) {
                    Ok(elsewhere) => {
                        for id in elsewhere {
                            tracing::warn!(shard, agent = %id, "an agent id is recorded in another shard; requests for it go there");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not record agents"),
                }
            }
            let all = cluster.catalog.sync_revocations(&ours);
            (new, all)
        })
        .await;
        let Ok((recorded, all)) = shared else { return };
        for (shard, ids) in recorded {
            if let Some(h) = held.get_mut(&shard) {
                h.recorded.extend(ids);
            }
        }
        match all {
            Ok(all) => {
                for (identifier, reason) in all {
                    if !self.cluster.authority.is_revoked(&identifier) {
                        if let Err(error) =
                            self.cluster.authority.revoke(&identifier, &reason).await
                        {
                            tracing::warn!(%error, "could not journal a revocation from the cluster");
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not share revocations"),
        }
    }
}

/// Shards given up because their journal failed wait before they are opened again: 1 s,
/// doubling with each failure that comes within a minute of the previous, up to 30 s (a
/// database that keeps refusing is not hammered with recoveries).
#[derive(Default)]
struct Backoff {
    /// Shard → (not before, the last wait).
    waits: BTreeMap<u32, (Instant, Duration)>,
}

impl Backoff {
    fn failed(&mut self, shard: u32) {
        let now = Instant::now();
        let wait = match self.waits.get(&shard) {
            Some((until, last)) if now < *until + Duration::from_secs(60) => {
                (*last * 2).min(Duration::from_secs(30))
            }
            _ => Duration::from_secs(1),
        };
        self.waits.insert(shard, (now + wait, wait));
    }

    fn ready(&self, shard: u32) -> bool {
        self.waits
            .get(&shard)
            .is_none_or(|(until, _)| Instant::now() >= *until)
    }
}

/// The config file's boot agents that live in `shard`: a top-level one in its id's home
/// shard, a child in its parent's.
fn boot_agents_of(config: &crate::config::Config, shard: u32, shards: u32) -> HashSet<String> {
    let parents: std::collections::HashMap<&str, Option<&str>> = config
        .agents
        .iter()
        .map(|a| (a.id.as_str(), a.parent.as_deref()))
        .collect();
    config
        .agents
        .iter()
        .filter(|agent| {
            let mut root = agent.id.as_str();
            for _ in 0..parents.len() {
                match parents.get(root).copied().flatten() {
                    Some(parent) => root = parent,
                    None => break,
                }
            }
            home_shard(root, shards) == shard
        })
        .map(|agent| agent.id.clone())
        .collect()
}

/// Until when a lease renewed (or taken) by a call sent at `sent` is surely held: the
/// database counts its period from when it ran the call, which is later.
fn deadline(sent: Instant, lease: Duration) -> Instant {
    sent + lease.saturating_sub(lease / 10)
}
