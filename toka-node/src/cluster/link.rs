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
use toka_actors::record::Origin;
use toka_actors::remote::{RemoteAnswer, RemoteFuture};
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
    /// [`Runtime::remote_ask`].
    Ask { to: AgentId, message: RemoteMessage },
    /// [`Runtime::remote_query`].
    Query {
        to: AgentId,
        query: Vec<u8>,
        timeout_ms: u64,
    },
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
            ShardRequest::Deliver { to, .. }
            | ShardRequest::Ask { to, .. }
            | ShardRequest::Query { to, .. } => to,
            ShardRequest::StartChild { child } => &child.spec.id,
            ShardRequest::HaltChild { id } | ShardRequest::RemoveChild { id } => id,
            ShardRequest::ChildExited { exit } => &exit.supervisor,
        }
    }

    /// Whether applying it twice does no harm (so an attempt whose fate is unknown may be
    /// made again): everything but an ask, and a tell without a durable sender's origin
    /// (which the receiver could not recognize as a copy).
    fn idempotent(&self) -> bool {
        match self {
            ShardRequest::Ask { .. } => false,
            ShardRequest::Deliver { message, .. } => message.origin != Origin::External,
            _ => true,
        }
    }

    /// Applies the request to `runtime`, the runtime of the target's shard; an ask's
    /// reply or a query's answer, encoded.
    pub(crate) async fn apply(self, runtime: &Runtime) -> Result<Option<Vec<u8>>, Error> {
        let done = match self {
            ShardRequest::Deliver { to, message } => runtime.remote_deliver(&to, message).await,
            ShardRequest::Ask { to, message } => {
                return runtime.remote_ask(&to, message).await.map(Some);
            }
            ShardRequest::Query {
                to,
                query,
                timeout_ms,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                return runtime.remote_query(&to, &query, timeout).await.map(Some);
            }
            ShardRequest::StartChild { child } => runtime.remote_start_child(child).await,
            ShardRequest::HaltChild { id } => runtime.remote_halt_child(&id).await,
            ShardRequest::RemoveChild { id } => runtime.remote_remove_child(&id).await,
            ShardRequest::ChildExited { exit } => runtime.remote_child_exited(exit),
        };
        done.map(|()| None)
    }
}

/// The answer of `POST /cluster/remote` to an ask or a query.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ShardAnswer {
    /// The reply or answer, postcard-encoded.
    pub(crate) reply: Vec<u8>,
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
        Box::pin(async move { send(cluster, request).await.map(drop) })
    }

    fn send_for_answer(&self, request: ShardRequest) -> RemoteAnswer {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let target = request.target().clone();
            send(cluster, request).await?.ok_or_else(|| Error::Remote {
                id: target,
                reason: "no reply came back".into(),
            })
        })
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

    fn ask(&self, to: AgentId, message: RemoteMessage) -> RemoteAnswer {
        self.send_for_answer(ShardRequest::Ask { to, message })
    }

    fn query(&self, to: AgentId, query: Vec<u8>, timeout: Duration) -> RemoteAnswer {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.send_for_answer(ShardRequest::Query {
            to,
            query,
            timeout_ms,
        })
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
    /// Nothing was applied: try again.
    Retry(String),
    /// It may have been applied: try again only if that is harmless.
    Unknown(String),
    /// The target's runtime answered with an error.
    Failed(Error),
}

/// Carries `request` to its shard, trying again (see the module docs); an ask's reply or
/// a query's answer.
async fn send(cluster: Weak<Cluster>, request: ShardRequest) -> Result<Option<Vec<u8>>, Error> {
    let target = request.target().clone();
    let idempotent = request.idempotent();
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
        let again = match &attempt {
            Err(Attempt::Retry(_)) | Err(Attempt::Failed(Error::ShuttingDown)) => true,
            Err(Attempt::Unknown(_)) => idempotent,
            _ => false,
        };
        match attempt {
            Ok(answer) => return Ok(answer),
            Err(_) if again && started.elapsed() < patience => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(Attempt::Retry(reason)) | Err(Attempt::Unknown(reason)) => {
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
) -> Result<Option<Vec<u8>>, Attempt> {
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
            let refused = error.is_connect();
            let reason = format!(
                "the holder of shard {shard} did not answer: {}",
                error.without_url()
            );
            // Refused before anything was sent: surely not applied.
            return Err(if refused {
                Attempt::Retry(reason)
            } else {
                Attempt::Unknown(reason)
            });
        }
    };
    let status = answer.status();
    if status == StatusCode::NO_CONTENT {
        return Ok(None);
    }
    if status.is_success() {
        return match answer.json::<ShardAnswer>().await {
            Ok(answer) => Ok(Some(answer.reply)),
            Err(error) => Err(Attempt::Unknown(format!(
                "the holder of shard {shard} answered unreadably: {}",
                error.without_url()
            ))),
        };
    }
    let reason = answer
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| status.to_string());
    match status {
        // 503: the shard is not served there (nothing applied); 502: the holder's own
        // request to a third shard failed.
        StatusCode::SERVICE_UNAVAILABLE => Err(Attempt::Retry(reason)),
        StatusCode::BAD_GATEWAY => Err(Attempt::Unknown(reason)),
        StatusCode::NOT_FOUND => Err(Attempt::Failed(Error::UnknownAgent(target.clone()))),
        StatusCode::CONFLICT => Err(Attempt::Failed(Error::AlreadyExists(target.clone()))),
        _ => Err(Attempt::Failed(Error::Remote {
            id: target.clone(),
            reason,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toka_actors::{EffectId, SpawnSpec};

    fn id(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }

    #[test]
    fn every_request_crosses_as_json_and_names_its_shards_agent() {
        let message = RemoteMessage {
            origin: Origin::Agent {
                from: id("boss"),
                effect: EffectId { seq: 4, n: 1 },
            },
            topic: None,
            body: vec![0, 7, 255],
        };
        let requests = [
            ShardRequest::Deliver {
                to: id("w1"),
                message: message.clone(),
            },
            ShardRequest::Ask {
                to: id("w1"),
                message: message.clone(),
            },
            ShardRequest::Query {
                to: id("w1"),
                query: vec![1, 2],
                timeout_ms: 5_000,
            },
            ShardRequest::StartChild {
                child: RemoteChild {
                    supervisor: id("boss"),
                    kind: "counter".into(),
                    args: vec![],
                    spec: SpawnSpec::new("w1").unwrap().anywhere(),
                },
            },
            ShardRequest::HaltChild { id: id("w1") },
            ShardRequest::RemoveChild { id: id("w1") },
            ShardRequest::ChildExited {
                exit: ChildExit {
                    supervisor: id("boss"),
                    child: id("w1"),
                    failed: true,
                    reason: "told to".into(),
                    halted: false,
                },
            },
        ];
        for request in requests {
            let json = serde_json::to_string(&request).unwrap();
            let back: ShardRequest = serde_json::from_str(&json).unwrap();
            assert_eq!(format!("{back:?}"), format!("{request:?}"), "{json}");
            let expected = if matches!(request, ShardRequest::ChildExited { .. }) {
                "boss"
            } else {
                "w1"
            };
            assert_eq!(back.target().as_str(), expected);
        }
        // Only what may not be applied twice is never tried again blindly.
        let external = RemoteMessage {
            origin: Origin::External,
            ..message.clone()
        };
        let tell = |message| ShardRequest::Deliver {
            to: id("w1"),
            message,
        };
        assert!(tell(message.clone()).idempotent() && !tell(external).idempotent());
        assert!(
            !ShardRequest::Ask {
                to: id("w1"),
                message
            }
            .idempotent()
        );
        let bad = serde_json::from_str::<ShardRequest>(r#"{"op": "reboot"}"#);
        assert!(bad.is_err());
    }
}
