//! The node's HTTP API (axum, JSON): [`app`] builds the router over a running runtime.
//!
//! # Routes
//!
//! | Route | Success | Capability request (`tool`, `agent`) |
//! |---|---|---|
//! | `GET /health` | 200 `{"status": "ok"}` | none: no token needed |
//! | `GET /openapi.json` | 200 this API's OpenAPI 3.1 description ([`openapi`]) | none: no token needed |
//! | `POST /agents` `{"id", "kind", "args"?, "parent"?}` | 201 | `api.agents.spawn`, the new id |
//! | `GET /agents` | 200 `[{"id", "kind", "parent", "status", "durable", "restarts", "halted"?}]` | `api.agents.read`, none |
//! | `GET /agents/{id}` | 200 `{"id", "kind", "parent", "status", "durable", "restarts", "halted"?, "snapshot"}`: `status` is `running`, `down` or `halted` (its handler does not replay its journal; `halted` says how); `restarts` counts its supervisor's restarts of it since the node started; `snapshot` is `{"seq", "bytes", "timestamp_micros"}` of its latest snapshot, or `null` | `api.agents.read`, `id` |
//! | `POST /agents/{id}/messages` | 202 once durably journaled | `api.agents.send`, `id` |
//! | `POST /agents/{id}/ask` (`?timeout_ms=N`, at most 5 min) | 200 the reply; with `Accept: text/event-stream`, server-sent events: the agent's live model events, then `answer` (the reply) or `error` ([`turns`]) | `api.agents.ask`, `id` |
//! | `POST /agents/{id}/query` (`?timeout_ms=N`) | 200 the answer; nothing journaled | `api.agents.query`, `id` |
//! | `GET /agents/{id}/turn` (`?timeout_ms=N`) | 200 server-sent events: an assistant's live model events, then `answer`, how its last turn ended, once it is idle; starts nothing ([`turns`]) | `api.agents.query`, `id` |
//! | `DELETE /agents/{id}` | 200 (it and its children stopped) | `api.agents.stop`, `id` |
//! | `GET /tools` | 200 the tools' specs | `api.tools.read`, none |
//! | `POST /tools/{name}/invoke` | 200 the tool's output; 202 `{"approval": ID, "status": "pending"}` if the call waits for a human decision | the tool's own name, none (checked by the tool host) |
//! | `GET /approvals` (`?agent=ID`, `?status=S`) | 200 the approvals, oldest first ([`approvals`]) | `api.approvals.read`, `ID` or none |
//! | `GET /approvals/{id}` | 200 `{"id", "status", "tool", "agent"?, "input", "token" (its id), "requested_at", "expires_at", "decided_by"?, "reason"?, "started", "output"?, "error"?}`; `status` is `pending`, `approved`, `denied` or `expired` | `api.approvals.read`, the approval's agent |
//! | `POST /approvals/{id}` `{"decision": "approve" \| "deny", "reason"?}` | 200 the decided approval; 409 if not pending | `api.approvals.decide.<TOOL>` (the waiting tool's name), the approval's agent |
//! | `GET /events?from=N&limit=M&stream=S` | 200 a JSON list (at most 1,000); with `stream`, that stream's events from sequence number N; on a cluster node, `&shard=K` reads shard K's journal through a follower on the node asked | `api.events.read`, none |
//! | `GET /events/stream?from=N` | 200 server-sent events: catch-up, then live; on a cluster node, `&shard=K` streams shard K from a follower on the node asked, across the shard moving | `api.events.read`, none |
//! | `GET /metrics` | 200 Prometheus text | `api.metrics.read`, none |
//! | `GET /status` | 200 `{"version", "uptime_secs", "agents": {"total", "running", "down", "halted"}, "journal": {"head_position", "acknowledged_head", "size_bytes", "durability", "writable"}, "recovery_ms", "tools", "models"}` | `api.status.read`, none |
//! | `GET /cluster` | 200 `{"mode": "cluster", "node", "address", "lease_ms", "members": [{"id", "address", "alive", "silent_ms"}], "shards": [{"shard", "holder", "epoch", "expires_in_ms", "serving_here"}]}` on a cluster node (see `cluster.rs`); `{"mode": "standalone"}` otherwise | `api.status.read`, none |
//! | `POST /tokens` `{"caveats": ["tool = fs.read", ...]}` | 201 `{"token", "identifier", "caveats"}`: a new token (a root power: the caveats are the caller's choice) | `api.tokens.mint`, none |
//! | `POST /tokens/attenuate` `{"token", "caveats"}` | 201 `{"token", "identifier", "caveats"}`; 400 if the token is forged, revoked or not understood | `api.tokens.mint`, none |
//! | `POST /tokens/revoke` `{"identifier", "reason"?}` (an identifier or a whole token) | 200 `{"identifier", "already_revoked"}`: journaled, refused (401) from the next request on | `api.tokens.revoke`, none |
//! | `GET /tokens/revocations` | 200 `[{"identifier", "reason", "at", "at_micros"}]`, oldest first | `api.audit.read`, none |
//! | `GET /audit/denials?limit=N` | 200 the last N (default 100, at most 1,000) capability denials `[{"at", "at_micros", "tool", "agent", "token" (its identifier), "reason"}]`, oldest first | `api.audit.read`, none |
//! | `GET /audit/tokens` | 200 every token issued `[{"at", "at_micros", "identifier", "caveats", "issued_by"}]`, oldest first; never a token | `api.audit.read`, none |
//! | `GET /events/export` | 200 JSON lines (`application/x-ndjson`), streamed: every acknowledged event as `events export` prints it | `api.events.read`, none |
//! | `GET /events/verify` | 200 JSON lines, streamed: `{"progress": {"elapsed_ms", "head_position"}}` while the hash chain is walked, then `{"report": {"intact", "records", "pruned", "head_position", "head_hash", "first_bad"}}` | `api.events.verify`, none |
//! | `GET /ui`, `GET /ui/{file}` | 200 the operator console (HTML, JS, CSS compiled in); `/ui/` redirects to `/ui` | none: no token needed (the page holds no data; its API calls carry the operator's token) |
//! | `POST /mcp` | the MCP server (feature `mcp`): streamable HTTP, stateless, JSON responses | per MCP request: `tools/list` shows what the token could call; `tools/call` as `POST /tools/{name}/invoke`, `agents.ask` as `POST /agents/{id}/ask` (see `mcp.rs`) |
//!
//! # Authorization
//!
//! Every route but `/health`, `/openapi.json` and the console (`/ui`) needs `Authorization: Bearer
//! <token>`, a capability token minted by the node's root key. A token that is missing, unreadable, forged, revoked,
//! expired or carries a caveat Toka does not understand gets 401. A valid token whose caveats refuse
//! the route's request (table above, `path` and `bytes` unset) gets 403. So `tool =
//! api.agents.*` allows the agent routes only, and `agent = X` allows only the routes that
//! name agent `X` (an id-less route such as `GET /agents` is refused: the caller is not
//! that agent). `POST /tools/{name}/invoke` is checked by the tool host against the tool's
//! own name (`tool = fs.read` lets the holder call `fs.read`), as agents' calls are.
//! `POST /approvals/{id}` is checked against `api.approvals.decide.<TOOL>`, the name of the
//! tool the approval is for (`tool = api.approvals.decide.*` decides any tool's calls,
//! `tool = api.approvals.decide.fs.*` only the file tools'), for the approval's agent.
//!
//! # Errors
//!
//! Every error is JSON `{"error": "..."}` with `application/json`: 400 malformed JSON (or
//! a repeated key), an unknown kind, arguments or a message that do not fit the kind
//! (`args` must be an object), an invalid id or path, an out-of-range number; 401 and 403
//! as above; 404 an unknown agent, parent, tool or route; 405 a method the route does not
//! have; 408 a body that did not arrive within the body timeout; 409 an id already taken;
//! 413 a body over [`BODY_LIMIT`] (refused at once when `Content-Length` declares it); 422
//! the agent's handler failed; 503 the node is shutting down or its journal refuses writes
//! (a full disk: the message says what to do); 504 an ask that got no reply in time.
//! Internal errors are logged and answered with a generic 500. Even the responses hyper
//! sends on its own for unparseable requests (400, 414, 431) get a JSON body
//! ([`wire::JsonErrorIo`]), and [`error::json_errors`] turns any other non-JSON error into
//! JSON.
//!
//! `GET /health` answers 503 `{"status": "unwritable", "reason"}` once the journal refuses
//! writes, and 503 `{"status": "failed"}` once the runtime gave up.
//!
//! # Secrets
//!
//! Capability tokens in a spawn's `args` or a message body are sealed
//! ([`toka_tools::Sealer`]) before they are journaled, and the events routes redact any
//! token found in a record, so a token that may read events cannot harvest other tokens.
//!
//! # Connections and shutdown
//!
//! [`serve`] drives hyper with a header read timeout, a connection cap and a graceful
//! shutdown that drops the connections still open after its deadline (see `listen.rs`).
//!
//! [`AppState::close_streams`] ends every event stream response (`/events/stream`, streamed
//! asks, `/turn`) (they would otherwise
//! keep the server's graceful shutdown waiting forever); the node calls it when it stops
//! accepting connections.

pub(crate) mod admin;
mod approvals;
pub(crate) mod auth;
mod console;
mod error;
mod listen;
#[cfg(feature = "mcp")]
mod mcp;
pub(crate) mod openapi;
mod routes;
mod strict_json;
mod turns;
mod wire;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::IntoResponse;
use toka_actors::Runtime;
use toka_store::Journal;
use toka_tools::{Authority, Sealer, ToolHost};
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use error::{ApiError, unwritable};
pub(crate) use listen::{ServeLimits, serve};
pub(crate) use routes::{EventsQuery, StreamQuery, event_sse, read_events};

/// The largest request body accepted (1 MiB); larger gets 413.
pub(crate) const BODY_LIMIT: usize = 1 << 20;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    authority: Authority,
    host: ToolHost,
    journal: Arc<dyn Journal>,
    /// Seals capability tokens in bodies before they are journaled.
    sealer: Sealer,
    ask_timeout: Duration,
    /// How long a request body may take to arrive.
    body_timeout: Duration,
    metrics: Metrics,
    /// `true` once event streams must end.
    closing: watch::Sender<bool>,
    /// What `GET /status` reports about the node itself.
    info: NodeInfo,
}

/// What the node says about itself in `GET /status`.
#[derive(Clone, Debug)]
pub(crate) struct NodeInfo {
    /// When the node started (before recovery).
    pub(crate) started: std::time::Instant,
    /// The journal's directory, whose size is reported (none for a memory journal).
    pub(crate) journal_dir: Option<std::path::PathBuf>,
    /// `fsync` or `buffered`.
    pub(crate) durability: &'static str,
    /// The configured models' names.
    pub(crate) models: Vec<String>,
}

/// Counters for `GET /metrics`.
#[derive(Default)]
struct Metrics {
    requests: AtomicU64,
    messages: AtomicU64,
    asks: AtomicU64,
    queries: AtomicU64,
    spawns: AtomicU64,
    stops: AtomicU64,
    tool_calls: AtomicU64,
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
    recovery_millis: AtomicU64,
}

/// What [`AppState::new`] needs besides the runtime.
pub(crate) struct Services {
    /// Checks bearer tokens.
    pub(crate) authority: Authority,
    /// Runs `POST /tools/{name}/invoke`.
    pub(crate) host: ToolHost,
    /// Seals tokens in spawn arguments and messages.
    pub(crate) sealer: Sealer,
    /// How long an ask waits by default.
    pub(crate) ask_timeout: Duration,
    /// How long a request body may take to arrive (then 408).
    pub(crate) body_timeout: Duration,
    /// What `GET /status` reports about the node.
    pub(crate) info: NodeInfo,
}

impl AppState {
    /// The runtime it serves.
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The state over a started runtime; `recovery` is how long its start took.
    pub(crate) fn new(runtime: Runtime, services: Services, recovery: Duration) -> Self {
        let Services {
            authority,
            host,
            sealer,
            ask_timeout,
            body_timeout,
            info,
        } = services;
        let journal = Arc::clone(runtime.journal());
        let metrics = Metrics::default();
        metrics.recovery_millis.store(
            u64::try_from(recovery.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        AppState {
            inner: Arc::new(Inner {
                runtime,
                authority,
                host,
                journal,
                sealer,
                ask_timeout,
                body_timeout,
                metrics,
                closing: watch::channel(false).0,
                info,
            }),
        }
    }

    /// Ends every event stream, now and for streams opened later.
    pub(crate) fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }
}

/// The API's router.
///
/// Layers, outermost first: one span per request, around every error response becoming
/// JSON ([`outermost`]); `/health`, `/openapi.json`, the console and unknown routes need
/// no token; every other route authenticates its bearer token and checks a declared
/// `Content-Length` before its body is read ([`auth::require_token`]).
///
/// Each API route is registered with utoipa-axum's `routes!` from its handler's
/// `#[utoipa::path]` annotation, so it is in [`spec`] by construction; the only routes
/// added without it are `/mcp` (described apart, see [`openapi`]) and the console's
/// (a web page, not an API).
pub(crate) fn app(state: AppState) -> Router {
    let (router, _) = protected().split_for_parts();
    // `/mcp`: the MCP server (see `mcp.rs`), behind the same bearer middleware.
    #[cfg(feature = "mcp")]
    let router = router.route(
        "/mcp",
        axum::routing::any_service(mcp::service(state.clone())).layer(
            middleware::from_fn_with_state(state.clone(), mcp::read_body),
        ),
    );
    let (public, _) = public().split_for_parts();
    router
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .merge(public)
        // `/ui`: the operator console's static files; it calls the routes above with the
        // token the operator pastes (see `console.rs`).
        .merge(console::routes())
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(outermost))
        .with_state(state)
}

/// The outermost layer: one span per request, with the final status (see `otel.rs`),
/// around [`error::json_errors`]. One layer for both: each layer costs every request a
/// boxed future and a clone of the stack below it.
async fn outermost(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    crate::otel::traced(request, |request| async move {
        error::json_errors(next.run(request).await)
    })
    .await
}

/// The routes that need a token, each with its description.
fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(routes::spawn, routes::list_agents))
        .routes(routes!(routes::get_agent, routes::stop_agent))
        .routes(routes!(routes::send))
        .routes(routes!(routes::ask))
        .routes(routes!(routes::query))
        .routes(routes!(turns::turn))
        .routes(routes!(routes::list_tools))
        .routes(routes!(routes::invoke))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::get, approvals::decide))
        .routes(routes!(routes::events))
        .routes(routes!(routes::event_stream))
        .routes(routes!(routes::metrics))
        .routes(routes!(admin::status))
        .routes(routes!(admin::cluster))
        .routes(routes!(admin::mint))
        .routes(routes!(admin::attenuate))
        .routes(routes!(admin::revoke))
        .routes(routes!(admin::revocations))
        .routes(routes!(admin::denials))
        .routes(routes!(admin::issued))
        .routes(routes!(admin::export))
        .routes(routes!(admin::verify))
}

/// The described routes that need no token.
fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(routes::health))
        .routes(routes!(openapi_json))
}

/// The API's OpenAPI 3.1 description, as `GET /openapi.json` serves it: the routes of
/// [`app`] (from their handlers' annotations) and `/mcp`, completed by
/// [`openapi::finish`].
pub(crate) fn spec() -> utoipa::openapi::OpenApi {
    let (_, mut spec) = protected().split_for_parts();
    #[cfg(feature = "mcp")]
    spec.merge(openapi::mcp());
    spec.merge(public().split_for_parts().1);
    openapi::finish(&mut spec);
    spec
}

/// [`spec`] as JSON, made once.
static SPEC_JSON: LazyLock<String> = LazyLock::new(|| {
    openapi::to_json(&spec()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "serializing the OpenAPI description");
        String::from("{}")
    })
});

/// `GET /openapi.json`: this API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "node", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object)))]
async fn openapi_json() -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        SPEC_JSON.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
