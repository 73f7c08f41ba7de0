//! The cluster node's HTTP front: every request is routed to the shard it concerns,
//! served in-process when this node holds the shard, forwarded to its holder otherwise.
//!
//! - `/agents/{id}…`: the agent's shard (recorded, else its id's home shard).
//! - `POST /agents`: the parent's shard, or the new id's home shard; the id is recorded
//!   in the cluster's directory first, so it names one shard only.
//! - `GET /agents`, `GET /approvals`: every node's, merged (each node answers for its own
//!   shards); `GET /approvals?agent=ID`: that agent's shard.
//! - `/approvals/{id}`: the first shard that knows the approval (this node's, then the
//!   others').
//! - `GET /cluster`: the members, the shards' holders and epochs (`api.status.read`).
//! - `GET /events?shard=N`, `GET /events/stream?shard=N`: served by this node from a
//!   follower of shard `N`'s journal, wherever the shard is held (so a stream survives
//!   the shard moving; see `streams.rs`).
//! - `GET /health`: this node; anything else: shard `N` with `?shard=N` (its status,
//!   metrics, wherever it is held), else this node's lowest shard (or, holding none, the
//!   first held shard's node).
//!
//! A forwarded request carries `x-toka-forwarded`; a node that gets one for a shard it
//! does not hold (it moved meanwhile) answers 503 instead of forwarding again. A shard
//! being taken over answers 503 with `Retry-After: 1`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::placement::home_shard;
use super::{Cluster, catalog};
use crate::server::auth::{admit, bearer};
use crate::server::{ApiError, BODY_LIMIT};

/// Marks a request forwarded by another node (its value: that node's id).
pub(super) const FORWARDED: HeaderName = HeaderName::from_static("x-toka-forwarded");

/// Asks a node for its own shards' answer only (`GET /agents` merging).
const NODE_SCOPE: HeaderName = HeaderName::from_static("x-toka-node-scope");

/// The front's router: one handler for every path.
pub(crate) fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .fallback(front)
        .layer(axum::middleware::from_fn(crate::otel::http_span))
        .with_state(cluster)
}

async fn front(State(cluster): State<Arc<Cluster>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if path == "/health" {
        return health(&cluster);
    }
    let public = path == "/openapi.json" || path == "/ui" || path.starts_with("/ui/");
    let forwarded = request.headers().contains_key(&FORWARDED);
    if public {
        return home(&cluster, request, forwarded).await;
    }
    let token = match bearer(&cluster.authority, request.headers()) {
        Ok(token) => token,
        Err(message) => return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response(),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["cluster"]) => {
            if let Err(message) = admit(&cluster.authority, &token, "api.status.read", None) {
                return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
            }
            status(&cluster)
        }
        (&Method::POST, ["agents"]) => spawn(&cluster, &token, request, forwarded).await,
        (&Method::POST, ["cluster", "remote"]) => remote(&cluster, &token, request).await,
        (&Method::GET, ["agents"]) => {
            if let Err(message) = admit(&cluster.authority, &token, "api.agents.read", None) {
                return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
            }
            merged(&cluster, request, forwarded, "id").await
        }
        (&Method::GET, ["approvals"]) => match query_param(request.uri(), "agent") {
            Some(agent) => {
                let shard = shard_of(&cluster, &agent).await;
                dispatch(&cluster, shard, request, forwarded).await
            }
            None => merged(&cluster, request, forwarded, "requested_at").await,
        },
        (_, ["approvals", id]) if !id.is_empty() => find(&cluster, request, forwarded).await,
        (_, ["agents", id, ..]) if !id.is_empty() => {
            let shard = shard_of(&cluster, id).await;
            dispatch(&cluster, shard, request, forwarded).await
        }
        // A shard's events: served here, from a follower of its journal (`streams.rs`).
        (&Method::GET, ["events"] | ["events", "stream"]) => {
            match shard_param(request.uri(), cluster.settings.shards) {
                Some(Ok((shard, uri))) => {
                    let stream = segments.len() == 2;
                    super::streams::serve(&cluster, &token, shard, &uri, stream).await
                }
                Some(Err(message)) => ApiError::bad_request(message).into_response(),
                None => home(&cluster, request, forwarded).await,
            }
        }
        _ => match shard_param(request.uri(), cluster.settings.shards) {
            Some(Ok((shard, uri))) => {
                let mut request = request;
                // The shard's own API takes the URI without `shard`; a holder elsewhere
                // gets it whole, so that its front picks the same shard.
                if cluster.local_shard(shard).is_some_and(|s| s.valid()) {
                    *request.uri_mut() = uri;
                }
                dispatch(&cluster, shard, request, forwarded).await
            }
            Some(Err(message)) => ApiError::bad_request(message).into_response(),
            None => home(&cluster, request, forwarded).await,
        },
    }
}

/// `GET /health` of this node.
fn health(cluster: &Cluster) -> Response {
    let shards: Vec<u32> = valid_local(cluster);
    json_response(json!({"status": "ok", "node": cluster.settings.node_id, "shards": shards}))
}

/// `GET /cluster`: what this node last saw of the cluster.
fn status(cluster: &Cluster) -> Response {
    let settings = &cluster.settings;
    let view = cluster
        .view
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let local = valid_local(cluster);
    let members: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "address": m.address,
                "alive": catalog::alive(m, settings.lease),
                "silent_ms": m.silent_ms,
            })
        })
        .collect();
    let shards: Vec<Value> = (0..settings.shards)
        .map(|shard| match view.holders.get(&shard) {
            Some((holder, epoch, remaining)) if *remaining > 0 => json!({
                "shard": shard,
                "holder": holder,
                "epoch": epoch,
                "expires_in_ms": remaining,
                "serving_here": local.contains(&shard),
            }),
            _ => json!({"shard": shard, "holder": null, "serving_here": false}),
        })
        .collect();
    json_response(json!({
        "mode": "cluster",
        "node": settings.node_id,
        "address": settings.advertise,
        "lease_ms": u64::try_from(settings.lease.as_millis()).unwrap_or(u64::MAX),
        "members": members,
        "shards": shards,
    }))
}

/// `POST /agents`: records the id in its shard, then spawns it there.
async fn spawn(
    cluster: &Arc<Cluster>,
    token: &toka_tools::Verified,
    request: Request,
    forwarded: bool,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match whole(body).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let named = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        let id = v.get("id")?.as_str()?.to_owned();
        let parent = v.get("parent").and_then(Value::as_str).map(str::to_owned);
        let anywhere = v.get("placement").and_then(Value::as_str) == Some("anywhere");
        Some((id, parent, anywhere))
    });
    let shard = match named {
        // Malformed: the lowest shard's API says what is wrong with it.
        None => {
            return home(
                cluster,
                Request::from_parts(parts, Body::from(bytes)),
                forwarded,
            )
            .await;
        }
        Some((id, parent, anywhere)) => {
            if let Err(message) = admit(&cluster.authority, token, "api.agents.spawn", Some(&id)) {
                return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
            }
            let home = home_shard(&id, cluster.settings.shards);
            let (runs_in, spawned_in) = match &parent {
                // A remote child: recorded in its own home shard, spawned by its
                // parent's shard (see `link`).
                Some(parent) if anywhere => (home, shard_of(cluster, parent).await),
                Some(parent) => {
                    let shard = shard_of(cluster, parent).await;
                    (shard, shard)
                }
                None => (home, home),
            };
            if !forwarded {
                // The first node records it; a forwarded request was recorded there.
                match reserve(cluster, id, runs_in).await {
                    Ok(shard) if runs_in == spawned_in => shard,
                    Ok(_) => spawned_in,
                    Err(error) => return unavailable(&format!("{error:#}")),
                }
            } else {
                spawned_in
            }
        }
    };
    dispatch(
        cluster,
        shard,
        Request::from_parts(parts, Body::from(bytes)),
        forwarded,
    )
    .await
}

/// `POST /cluster/remote`: a request from another node's shard for an agent of a shard
/// this node holds (see `link`); 503 if it does not hold it (the sender tries again).
async fn remote(
    cluster: &Arc<Cluster>,
    token: &toka_tools::Verified,
    request: Request,
) -> Response {
    if let Err(message) = admit(
        &cluster.authority,
        token,
        super::link::REMOTE_PERMISSION,
        None,
    ) {
        return ApiError::new(StatusCode::FORBIDDEN, message).into_response();
    }
    let bytes = match whole(request.into_body()).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let request: super::link::ShardRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => {
            return ApiError::bad_request(format!("not a shard request: {error}")).into_response();
        }
    };
    let shard = shard_of(cluster, request.target().as_str()).await;
    let Some(local) = cluster.local_shard(shard).filter(|s| s.valid()) else {
        return unavailable(&format!("shard {shard} is not served by this node; retry"));
    };
    match request.apply(local.state.runtime()).await {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(reply)) => axum::Json(super::link::ShardAnswer { reply }).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// A request as parts that can be replayed: to each local shard, then to other nodes.
struct Replayable {
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
    /// Only this node's shards answer (a merging node asked, or it was forwarded).
    node_only: bool,
}

impl Replayable {
    async fn of(request: Request, forwarded: bool) -> Result<Replayable, Response> {
        let node_only = forwarded || request.headers().contains_key(&NODE_SCOPE);
        let (parts, body) = request.into_parts();
        let body = whole(body).await?;
        Ok(Replayable {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
            node_only,
        })
    }

    /// The answers of this node's shards, one by one, until `done` says enough.
    async fn each_local(
        &self,
        cluster: &Cluster,
        mut done: impl FnMut(Response) -> Option<Response>,
    ) -> Option<Response> {
        let local: Vec<_> = cluster
            .local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|shard| shard.valid())
            .cloned()
            .collect();
        for shard in local {
            let mut again = Request::builder()
                .method(self.method.clone())
                .uri(self.uri.clone());
            if let Some(headers) = again.headers_mut() {
                headers.clone_from(&self.headers);
            }
            let Ok(again) = again.body(Body::from(self.body.clone())) else {
                continue;
            };
            if let Some(answer) = done(shard.router.oneshot(again).await.into_response()) {
                return Some(answer);
            }
        }
        None
    }

    /// The answers of the other live nodes (their own shards only), one by one.
    async fn each_remote(
        &self,
        cluster: &Cluster,
        mut done: impl FnMut(reqwest::Response) -> Option<reqwest::Response>,
    ) -> Option<reqwest::Response> {
        if self.node_only {
            return None;
        }
        let others: Vec<String> = {
            let view = cluster.view.read().unwrap_or_else(|e| e.into_inner());
            view.members
                .iter()
                .filter(|m| {
                    m.id != cluster.settings.node_id && catalog::alive(m, cluster.settings.lease)
                })
                .map(|m| m.address.clone())
                .collect()
        };
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        for address in others {
            let mut headers = forwardable(&self.headers);
            headers.insert(NODE_SCOPE, HeaderValue::from_static("1"));
            let sent = cluster
                .http
                .request(self.method.clone(), format!("{address}{path}"))
                .headers(headers)
                .header(&FORWARDED, cluster.settings.node_id.as_str())
                .body(self.body.clone())
                .send()
                .await;
            match sent {
                Ok(answer) => {
                    if let Some(answer) = done(answer) {
                        return Some(answer);
                    }
                }
                Err(error) => {
                    tracing::warn!(%address, error = %error.without_url(), "a node did not answer");
                }
            }
        }
        None
    }
}

/// A list route (`GET /agents`, `GET /approvals`): every node's shards' lists, merged and
/// sorted by `key`.
async fn merged(cluster: &Arc<Cluster>, request: Request, forwarded: bool, key: &str) -> Response {
    let request = match Replayable::of(request, forwarded).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let mut items: Vec<Value> = Vec::new();
    let mut answers = Vec::new();
    let refused = request
        .each_local(cluster, |answer| {
            if answer.status() == StatusCode::OK {
                answers.push(answer);
                None
            } else {
                Some(answer) // 403, say: the same for every shard
            }
        })
        .await;
    if let Some(refused) = refused {
        return refused;
    }
    for answer in answers {
        match json_array(answer).await {
            Some(list) => items.extend(list),
            None => {
                return ApiError::internal("a shard answered a list unreadably").into_response();
            }
        }
    }
    let mut remote = Vec::new();
    request
        .each_remote(cluster, |answer| {
            if answer.status() == StatusCode::OK {
                remote.push(answer);
            } else {
                tracing::warn!(status = %answer.status(), "a node did not answer a list");
            }
            None
        })
        .await;
    for answer in remote {
        match answer.json::<Vec<Value>>().await {
            Ok(list) => items.extend(list),
            Err(error) => {
                tracing::warn!(error = %error.without_url(), "a node's list is unreadable")
            }
        }
    }
    items.sort_by(|a, b| sort_key(&a[key]).cmp(&sort_key(&b[key])));
    json_response(Value::Array(items))
}

/// Orders numbers before strings, each by value.
fn sort_key(value: &Value) -> (u8, i64, String) {
    match value {
        Value::Number(n) => (0, n.as_i64().unwrap_or(i64::MAX), String::new()),
        other => (1, 0, other.as_str().unwrap_or_default().to_owned()),
    }
}

/// A route naming something only one shard knows (`/approvals/{id}`): the first answer
/// that is not 404, from this node's shards, then from the other nodes'.
async fn find(cluster: &Arc<Cluster>, request: Request, forwarded: bool) -> Response {
    let request = match Replayable::of(request, forwarded).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let mut not_found = None;
    let found = request
        .each_local(cluster, |answer| {
            if answer.status() == StatusCode::NOT_FOUND {
                not_found = Some(answer);
                None
            } else {
                Some(answer)
            }
        })
        .await;
    if let Some(answer) = found {
        return answer;
    }
    let found = request
        .each_remote(cluster, |answer| {
            (answer.status() != StatusCode::NOT_FOUND).then_some(answer)
        })
        .await;
    match found {
        Some(answer) => streamed(answer),
        None => not_found.unwrap_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not found on any node").into_response()
        }),
    }
}

/// Sends `request` to this node's lowest shard, or to the node of the lowest held shard.
async fn home(cluster: &Arc<Cluster>, request: Request, forwarded: bool) -> Response {
    let shard = match valid_local(cluster).first() {
        Some(shard) => *shard,
        None => {
            let view = cluster.view.read().unwrap_or_else(|e| e.into_inner());
            match view
                .holders
                .iter()
                .find(|(_, (_, _, remaining))| *remaining > 0)
            {
                Some((shard, _)) => *shard,
                None => return unavailable("no shard is served yet: the cluster is starting"),
            }
        }
    };
    dispatch(cluster, shard, request, forwarded).await
}

/// Serves `request` from `shard`: here if this node holds it, else at its holder.
async fn dispatch(
    cluster: &Arc<Cluster>,
    shard: u32,
    request: Request,
    forwarded: bool,
) -> Response {
    if let Some(local) = cluster.local_shard(shard).filter(|s| s.valid()) {
        return local.router.oneshot(request).await.into_response();
    }
    if forwarded {
        return unavailable(&format!(
            "shard {shard} is not served by this node (it moved); retry"
        ));
    }
    let address = match cluster.holder_address(shard) {
        Some(address) => Some(address),
        // The view is a tick old: the shard may have just moved. Look again.
        None => {
            refresh_view(cluster).await;
            cluster.holder_address(shard)
        }
    };
    match address {
        Some(address) => forward(cluster, &address, request).await,
        None => unavailable(&format!(
            "shard {shard} has no live holder yet (a node is taking it over); retry shortly"
        )),
    }
}

/// Reads the members and the shards' holders again.
pub(super) async fn refresh_view(cluster: &Arc<Cluster>) {
    let reading = Arc::clone(cluster);
    let read = tokio::task::spawn_blocking(move || {
        let members = reading.catalog.members()?;
        let holders = super::holders(&reading.leases.list()?);
        anyhow::Ok(super::View { members, holders })
    })
    .await;
    if let Ok(Ok(view)) = read {
        *cluster.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

/// Forwards `request` to the node at `address`, streaming both bodies.
async fn forward(cluster: &Cluster, address: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Request bodies are small (at most `BODY_LIMIT`): sent whole, with their length.
    let body = match whole(body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let send = || {
        cluster
            .http
            .request(parts.method.clone(), format!("{address}{path}"))
            .headers(forwardable(&parts.headers))
            .header(&FORWARDED, cluster.settings.node_id.as_str())
            .body(body.clone())
            .send()
    };
    let mut sent = send().await;
    // A pooled connection can die unnoticed (a partition, the holder's idle timeout): the
    // request fails without an answer, and may or may not have reached the holder. A read
    // is safe to send again (once; the client drops the failed connection).
    if sent.as_ref().is_err_and(|e| !e.is_connect()) && is_read(&parts.method, parts.uri.path()) {
        sent = send().await;
    }
    match sent {
        Ok(answer) => streamed(answer),
        // Nothing reached the holder: surely not applied; the shard is about to move.
        Err(error) if error.is_connect() => unavailable(
            "the node holding this agent's shard cannot be reached (it may have just died); retry shortly",
        ),
        Err(error) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the node holding this agent's shard did not answer: {}",
                error.without_url()
            ),
        )
        .into_response(),
    }
}

/// Whether a request only reads (a `GET` or `HEAD`, or an agent query), so that sending
/// it twice changes nothing.
fn is_read(method: &Method, path: &str) -> bool {
    *method == Method::GET
        || *method == Method::HEAD
        || (*method == Method::POST && path.starts_with("/agents/") && path.ends_with("/query"))
}

/// Another node's answer as this node's, its body streamed through.
fn streamed(answer: reqwest::Response) -> Response {
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        *headers = forwardable(answer.headers());
        // A body of known length keeps it (streams, such as events, have none).
        if let Some(length) = answer.content_length() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| ApiError::internal("forwarding an answer").into_response())
}

/// `?shard=N` on a route naming no agent (`/events`, `/status`, `/metrics`, …): that shard,
/// and the URI without the parameter (the shard's own API does not know it).
fn shard_param(
    uri: &axum::http::Uri,
    shards: u32,
) -> Option<Result<(u32, axum::http::Uri), String>> {
    let text = query_param(uri, "shard")?;
    let shard = match text.parse::<u32>() {
        Ok(shard) if shard < shards => shard,
        _ => return Some(Err(format!("shard must be 0 to {}", shards - 1))),
    };
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.starts_with("shard=") && !pair.is_empty())
        .collect();
    let path = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    Some(
        path.parse()
            .map(|uri| (shard, uri))
            .map_err(|_| "a malformed URI".to_owned()),
    )
}

/// The value of query parameter `name`, if given once and non-empty.
fn query_param(uri: &axum::http::Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// `headers` without the hop-by-hop ones (and `Host`, which the client sets).
fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in [
        header::HOST,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::CONTENT_LENGTH,
    ] {
        kept.remove(name);
    }
    kept.remove("keep-alive");
    kept
}

/// The shard agent `id` lives in: the directory's record, else its id's home shard.
pub(super) async fn shard_of(cluster: &Arc<Cluster>, id: &str) -> u32 {
    if let Some(shard) = cluster
        .directory
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
    {
        return *shard;
    }
    let (looking, name) = (Arc::clone(cluster), id.to_owned());
    let recorded = tokio::task::spawn_blocking(move || looking.catalog.shard_of(&name))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    match recorded {
        Some(shard) => {
            remember(cluster, id, shard);
            shard
        }
        None => home_shard(id, cluster.settings.shards),
    }
}

/// Records agent `id` in `shard` (or finds the shard it is recorded in).
async fn reserve(cluster: &Arc<Cluster>, id: String, shard: u32) -> anyhow::Result<u32> {
    let reserving = Arc::clone(cluster);
    let name = id.clone();
    let recorded = tokio::task::spawn_blocking(move || reserving.catalog.reserve(&name, shard))
        .await
        .map_err(|e| anyhow::anyhow!("recording the agent's shard: {e}"))??;
    remember(cluster, &id, recorded);
    Ok(recorded)
}

fn remember(cluster: &Cluster, id: &str, shard: u32) {
    let mut directory = cluster.directory.write().unwrap_or_else(|e| e.into_inner());
    if directory.len() >= 100_000 {
        directory.clear(); // a cache: the table has them all
    }
    directory.insert(id.to_owned(), shard);
}

/// The shards this node serves now, lowest first.
fn valid_local(cluster: &Cluster) -> Vec<u32> {
    cluster
        .local
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, shard)| shard.valid())
        .map(|(shard, _)| *shard)
        .collect()
}

/// A request body read whole (at most [`BODY_LIMIT`]); 413 otherwise.
async fn whole(body: Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {BODY_LIMIT} bytes, or did not arrive"),
        )
        .into_response()
    })
}

/// 503 with `Retry-After: 1`.
fn unavailable(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message.to_owned()).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A JSON answer.
fn json_response(value: Value) -> Response {
    axum::Json(value).into_response()
}

/// The JSON array in a response's body.
async fn json_array(response: Response) -> Option<Vec<Value>> {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only requests that change nothing are sent to a holder a second time.
    #[test]
    fn only_reads_are_forwarded_twice() {
        assert!(is_read(&Method::GET, "/agents/c1"));
        assert!(is_read(&Method::HEAD, "/status"));
        assert!(is_read(&Method::POST, "/agents/c1/query"));
        assert!(!is_read(&Method::POST, "/agents/c1/messages"));
        assert!(!is_read(&Method::POST, "/agents/c1/ask"));
        assert!(!is_read(&Method::POST, "/agents"));
        assert!(!is_read(&Method::DELETE, "/agents/c1"));
        assert!(!is_read(&Method::PUT, "/agents/c1/query"));
    }
}
