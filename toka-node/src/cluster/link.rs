//! How the shards reach each other: each shard's runtime gets a [`ShardLink`], the
//! [`Remote`] that carries its requests for agents of other shards (a remote child's
//! start, halt and removal, its exits back to its supervisor, tells to agents elsewhere;
//! see [`toka_actors::remote`]) to the runtime of the shard holding them: in-process when
//! this node holds that shard too, otherwise to its holder's `POST /cluster/remote`.
//!
//! Every request is idempotent where it arrives, so a request that found no holder (the
//! shard is moving), could not reach it, or was answered 503 is tried again until about
//! two lease periods have passed, the time a shard takes to move.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use toka_actors::remote::RemoteFuture;
use toka_actors::{AgentId, ChildExit, Error, Remote, RemoteChild, RemoteMessage, Runtime};
use toka_tools::{Caveat, NamePattern};

use super::Cluster;
use super::placement::home_shard;

/// The permission `POST /cluster/remote` needs; nodes mint themselves a short-lived token
/// with only this one.
pub(crate) const REMOTE_PERMISSION: &str = "api.cluster.remote";

/// How long a node's own token for `POST /cluster/remote` is valid.
const TOKEN_LIFE: Duration = Duration::from_secs(60);

/// A request from one shard's runtime to another's (the body of `POST /cluster/remote`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ShardRequest {
    /// [`Runtime::remote_deliver`].
    Deliver { to: AgentId, message: RemoteMessage },
    /// [`Runtime::remote_start_child`].
    StartChild { child: RemoteChild },
    /// [`Runtime::remote_halt_child`].
    HaltChild { id: AgentId },
    /// [`Runtime::remote_remove_child`].
    RemoveChild { id: AgentId },
    /// [`Runtime::remote_child_exited`].
    ChildExited { exit: ChildExit },
}

impl ShardRequest {
    /// The agent whose shard serves the request.
    pub(crate) fn target(&self) -> &AgentId {
        match self {
            ShardRequest::Deliver { to, .. } => to,
            ShardRequest::StartChild { child } => &child.spec.id,
            ShardRequest::HaltChild { id } | ShardRequest::RemoveChild { id } => id,
            ShardRequest::ChildExited { exit } => &exit.supervisor,
        }
    }

    /// Applies the request to `runtime`, the runtime of the target's shard.
    pub(crate) async fn apply(self, runtime: &Runtime) -> Result<(), Error> {
        match self {
            ShardRequest::Deliver { to, message } => runtime.remote_deliver(&to, message).await,
            ShardRequest::StartChild { child } => runtime.remote_start_child(child).await,
            ShardRequest::HaltChild { id } => runtime.remote_halt_child(&id).await,
            ShardRequest::RemoveChild { id } => runtime.remote_remove_child(&id).await,
            ShardRequest::ChildExited { exit } => runtime.remote_child_exited(exit),
        }
    }
}

/// The [`Remote`] of one shard's runtime.
pub(crate) struct ShardLink {
    /// Weak: the cluster holds the shards' runtimes, which hold their links.
    cluster: Weak<Cluster>,
    shard: u32,
}

impl ShardLink {
    /// The link of shard `shard`.
    pub(crate) fn new(cluster: &Arc<Cluster>, shard: u32) -> Self {
        ShardLink {
            cluster: Arc::downgrade(cluster),
            shard,
        }
    }

    fn send(&self, request: ShardRequest) -> RemoteFuture {
        let cluster = self.cluster.clone();
        Box::pin(send(cluster, request))
    }
}

impl Remote for ShardLink {
    fn is_elsewhere(&self, id: &AgentId) -> bool {
        let Some(cluster) = self.cluster.upgrade() else {
            return false;
        };
        let recorded = cluster
            .directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id.as_str())
            .copied();
        recorded.unwrap_or_else(|| home_shard(id.as_str(), cluster.settings.shards)) != self.shard
    }

    fn deliver(&self, to: AgentId, message: RemoteMessage) -> RemoteFuture {
        self.send(ShardRequest::Deliver { to, message })
    }

    fn start_child(&self, child: RemoteChild) -> RemoteFuture {
        self.send(ShardRequest::StartChild { child })
    }

    fn halt_child(&self, id: AgentId) -> RemoteFuture {
        self.send(ShardRequest::HaltChild { id })
    }

    fn remove_child(&self, id: AgentId) -> RemoteFuture {
        self.send(ShardRequest::RemoveChild { id })
    }

    fn child_exited(&self, exit: ChildExit) -> RemoteFuture {
        self.send(ShardRequest::ChildExited { exit })
    }
}

/// Why an attempt did not settle a request.
enum Attempt {
    /// Nothing was applied, or applying again is harmless: try again.
    Retry(String),
    /// The target's runtime answered with an error.
    Failed(Error),
}

/// Carries `request` to its shard, trying again (see the module docs).
async fn send(cluster: Weak<Cluster>, request: ShardRequest) -> Result<(), Error> {
    let target = request.target().clone();
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let body = serde_json::to_vec(&request).map_err(|e| Error::Internal(e.to_string()))?;
    let mut request = Some(request);
    loop {
        let Some(cluster) = cluster.upgrade() else {
            return Err(Error::ShuttingDown);
        };
        let patience = cluster.settings.lease * 2 + Duration::from_secs(2);
        let shard = super::front::shard_of(&cluster, target.as_str()).await;
        let attempt = match cluster.local_shard(shard).filter(|s| s.valid()) {
            Some(local) => match request.take() {
                Some(request) => request
                    .apply(local.state.runtime())
                    .await
                    .map_err(Attempt::Failed),
                // Applied in-process once already; the rest go over HTTP.
                None => post(&cluster, shard, &target, &body).await,
            },
            None => post(&cluster, shard, &target, &body).await,
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(Attempt::Failed(Error::ShuttingDown)) | Err(Attempt::Retry(_))
                if started.elapsed() < patience =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(Attempt::Retry(reason)) => {
                return Err(Error::Remote { id: target, reason });
            }
            Err(Attempt::Failed(error)) => return Err(error),
        }
    }
}

/// One attempt over HTTP at the holder of `shard`.
async fn post(
    cluster: &Arc<Cluster>,
    shard: u32,
    target: &AgentId,
    body: &[u8],
) -> Result<(), Attempt> {
    let address = match cluster.holder_address(shard) {
        Some(address) => address,
        None => {
            super::front::refresh_view(cluster).await;
            cluster
                .holder_address(shard)
                .ok_or_else(|| Attempt::Retry(format!("shard {shard} has no live holder")))?
        }
    };
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(TOKEN_LIFE).unwrap_or_default())
        .map_err(|e| Attempt::Retry(e.to_string()))?;
    let token = cluster
        .authority
        .mint([
            Caveat::Tool(NamePattern::Exact(REMOTE_PERMISSION.into())),
            Caveat::Expires(expires),
        ])
        .map_err(|d| Attempt::Retry(d.reason))?;
    let sent = cluster
        .http
        .post(format!("{address}/cluster/remote"))
        .bearer_auth(token.to_string())
        .header(super::front::FORWARDED, cluster.settings.node_id.as_str())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => {
            return Err(Attempt::Retry(format!(
                "the holder of shard {shard} did not answer: {}",
                error.without_url()
            )));
        }
    };
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let reason = answer
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| status.to_string());
    match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => Err(Attempt::Retry(reason)),
        StatusCode::NOT_FOUND => Err(Attempt::Failed(Error::UnknownAgent(target.clone()))),
        StatusCode::CONFLICT => Err(Attempt::Failed(Error::AlreadyExists(target.clone()))),
        _ => Err(Attempt::Failed(Error::Remote {
            id: target.clone(),
            reason,
        })),
    }
}
