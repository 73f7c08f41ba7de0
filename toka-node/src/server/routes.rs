//! The handlers behind [`app`](super::app).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, RequestExt as _};
use futures_util::Stream;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use toka_actors::{AgentId, AgentInfo, SpawnSpec};
use toka_store::Journal;
use toka_tools::Verified;

use super::auth::permit;
use super::openapi as doc;
use super::{ApiError, AppState, strict_json};

/// The longest `?timeout_ms=` an ask may wait (5 minutes).
pub(crate) const MAX_ASK_TIMEOUT_MS: u64 = 300_000;

/// Most events one `GET /events` returns.
const MAX_EVENTS: usize = 1_000;

/// A JSON body whose every rejection is an [`ApiError`]: 413 over the body limit, 408
/// if the whole body has not arrived within the node's body read timeout, 400 for
/// anything that is not JSON of the expected shape, or that repeats a key
/// ([`strict_json`]). The `Content-Type` is not checked.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned + 'static> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let mut read = std::pin::pin!(req.extract::<Bytes, _>());
        // A small body usually arrives with its headers: taken at once, it needs no timer
        // (arming and cancelling one was ~4 % of a durable message's instructions).
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        let read = match first {
            Poll::Ready(read) => Ok(read),
            Poll::Pending => tokio::time::timeout(state.inner.body_timeout, read).await,
        };
        let bytes = match read {
            Ok(read) => {
                read.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} ms",
                        state.inner.body_timeout.as_millis()
                    ),
                ));
            }
        };
        strict_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(ApiError::bad_request)
    }
}

/// The `{id}` or `{name}` of a route, with a JSON 400 for a path that does not decode.
pub(super) fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

/// Seals every capability token in a body about to be journaled (spawn arguments, a
/// message), so the journal and the events API never hold it in clear.
fn seal(state: &AppState, value: &mut Value) {
    let sealed = state.inner.sealer.seal_tokens(value);
    if sealed > 0 {
        tracing::debug!(sealed, "sealed capability tokens before journaling");
    }
}

pub(super) fn agent_id(id: &str) -> Result<AgentId, ApiError> {
    AgentId::new(id).map_err(ApiError::from)
}

fn agent_json(info: &AgentInfo) -> Value {
    let status = match (&info.halted, info.running) {
        (Some(_), _) => "halted",
        (None, true) => "running",
        (None, false) => "down",
    };
    let mut json = json!({
        "id": info.id.as_str(),
        "kind": info.kind,
        "parent": info.parent.as_ref().map(AgentId::as_str),
        "status": status,
        "durable": info.durable,
        "restarts": info.restarts,
    });
    if let Some(reason) = &info.halted {
        json["halted"] = Value::String(reason.clone());
    }
    if let Some(supervisor) = &info.supervisor {
        json["supervisor"] = Value::String(supervisor.to_string());
    }
    json
}

/// 200 `{"status": "ok"}` while the node can serve writes; 503 with `status`
/// `"unwritable"` (and a `reason` saying what to do) once the journal refuses writes, or
/// `"failed"` once the runtime's root supervisor gave up.
#[utoipa::path(get, path = "/health", tag = "node", security(()),
    responses(
        (status = 200, description = "The node can serve writes", body = doc::Health),
        (status = 503, description = "The journal refuses writes, or the runtime gave up", body = doc::Health),
    ))]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    if let Some(error) = state.inner.journal.write_failure() {
        let body = json!({ "status": "unwritable", "reason": super::unwritable(error) });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if let Some(reason) = state.inner.runtime.failure() {
        let body = json!({ "status": "failed", "reason": reason });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({ "status": "ok" })).into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

/// `POST /agents`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpawnBody {
    /// The new agent's id.
    #[schema(example = "c1")]
    id: String,
    /// Its kind: `counter`, `supervisor`, `reactor`, `assistant` (with models), ...
    #[schema(example = "counter")]
    kind: String,
    /// Its arguments, as its kind wants them (an object; default `{}`).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    args: Value,
    /// The agent to spawn it under (the token must allow spawning on it too).
    #[serde(default)]
    parent: Option<String>,
    /// Where a child runs: `with_parent` (default), or `anywhere`: in a cluster, in the
    /// shard its own id hashes to, supervised across shards by its parent (on a
    /// standalone node, with its parent).
    #[serde(default)]
    #[schema(value_type = String, example = "anywhere")]
    placement: toka_actors::Placement,
}

fn empty_object() -> Value {
    json!({})
}

/// `POST /agents`: spawns an agent (under `parent`, if given).
#[utoipa::path(post, path = "/agents", tag = "agents",
    request_body = SpawnBody,
    responses(
        (status = 201, description = "Spawned (and journaled)", body = doc::Spawned),
        (status = 400, description = "An unknown kind, arguments that do not fit it, an invalid id", body = doc::ApiErrorBody),
        (status = 404, description = "No such parent", body = doc::ApiErrorBody),
        (status = 409, description = "The id is taken", body = doc::ApiErrorBody),
        (status = 422, description = "The agent failed to start", body = doc::ApiErrorBody),
        (status = 503, description = "The node is shutting down or its journal refuses writes", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn spawn(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    body: Result<JsonBody<SpawnBody>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(mut body) = body?;
    permit(&state, &token, "api.agents.spawn", Some(&body.id))?;
    // Spawning under a parent changes the parent's supervision tree: the token must
    // allow spawning on the parent too.
    if let Some(parent) = &body.parent {
        permit(&state, &token, "api.agents.spawn", Some(parent))?;
    }
    if !body.args.is_object() {
        return Err(ApiError::bad_request("args must be a JSON object"));
    }
    seal(&state, &mut body.args);
    let spec = SpawnSpec::new(&body.id)?;
    // A `supervisor` supervises its children per its args.
    let mut spec = crate::kinds::supervisor::spawn_spec(spec, &body.kind, &body.args)
        .map_err(ApiError::bad_request)?;
    spec.placement = body.placement;
    let parent = body.parent.as_deref().map(agent_id).transpose()?;
    state
        .inner
        .runtime
        .spawn_json(parent.as_ref(), &body.kind, spec, body.args)
        .await?;
    state.inner.metrics.spawns.fetch_add(1, Ordering::Relaxed);
    let created = json!({ "id": body.id, "kind": body.kind, "parent": body.parent });
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /agents`: the supervision tree, as a list.
#[utoipa::path(get, path = "/agents", tag = "agents",
    responses((status = 200, description = "Every agent", body = Vec<doc::Agent>)))]
pub(crate) async fn list_agents(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &token, "api.agents.read", None)?;
    let tree = state.inner.runtime.tree();
    // A remote child is listed by the shard that runs it (with its `supervisor`).
    let listed = tree.iter().filter(|info| !info.elsewhere).map(agent_json);
    Ok(Json(Value::Array(listed.collect())))
}

/// `GET /agents/{id}`: one agent, with its latest snapshot's position.
#[utoipa::path(get, path = "/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "The agent's id", example = "c1")),
    responses(
        (status = 200, description = "The agent", body = doc::AgentDetail),
        (status = 404, description = "No such agent", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn get_agent(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_param(id)?;
    permit(&state, &token, "api.agents.read", Some(&id))?;
    let id = agent_id(&id)?;
    let mut json = state
        .inner
        .runtime
        .tree()
        .iter()
        .find(|info| info.id == id && !info.elsewhere)
        .map(agent_json)
        .ok_or_else(|| ApiError::from(toka_actors::Error::UnknownAgent(id.clone())))?;
    // The latest snapshot's position and size (not its state: that is the agent's).
    let snapshot = state
        .inner
        .journal
        .load_snapshot(id.stream())
        .map_err(ApiError::internal)?;
    json["snapshot"] = snapshot.map_or(Value::Null, |s| {
        json!({ "seq": s.seq, "bytes": s.state.len(), "timestamp_micros": s.timestamp.as_micros() })
    });
    Ok(Json(json))
}

/// `POST /agents/{id}/messages`: journals a message for the agent; answered once it is
/// durable.
#[utoipa::path(post, path = "/agents/{id}/messages", tag = "agents",
    params(("id" = String, Path, description = "The agent's id", example = "c1")),
    request_body(content = Value, description = "The message, as the agent's kind wants it", example = json!({"add": 5})),
    responses(
        (status = 202, description = "Durably journaled", body = doc::Accepted),
        (status = 400, description = "A message that does not fit the agent's kind", body = doc::ApiErrorBody),
        (status = 404, description = "No such agent", body = doc::ApiErrorBody),
        (status = 503, description = "The node is shutting down or its journal refuses writes", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn send(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    id: Result<Path<String>, PathRejection>,
    msg: Result<JsonBody<Value>, ApiError>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    permit(&state, &token, "api.agents.send", Some(&id))?;
    let JsonBody(mut msg) = msg?;
    seal(&state, &mut msg);
    let id = agent_id(&id)?;
    state.inner.runtime.send_json(&id, msg).await?;
    state.inner.metrics.messages.fetch_add(1, Ordering::Relaxed);
    // The same bytes as `Json(json!({"accepted": true}))`, without building a map.
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"accepted":true}"#,
    )
        .into_response())
}

/// `POST /agents/{id}/ask`'s query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AskQuery {
    /// How long to wait for the answer, in milliseconds (1 to 300,000; default: the
    /// node's `ask_timeout`).
    #[param(minimum = 1, maximum = 300_000)]
    timeout_ms: Option<u64>,
}

/// `POST /agents/{id}/ask`: the reply as JSON, or, with `Accept: text/event-stream`, as
/// server-sent events with the agent's live model events first ([`super::turns`]).
#[utoipa::path(post, path = "/agents/{id}/ask", tag = "agents",
    params(("id" = String, Path, description = "The agent's id", example = "c1"), AskQuery),
    request_body(content = Value, description = "The message, as the agent's kind wants it", example = json!("get")),
    responses(
        (status = 200, description = "The agent's reply (JSON); with `Accept: text/event-stream`, server-sent events: the agent's live model events (`delta`, `tool_call`, `tool_call_arguments`, `step_done`, `lagged`), then `answer` (the reply) or `error` (`{\"error\", \"status\"}`)",
            content((Value = "application/json"), (doc::ServerSentEvent = "text/event-stream"))),
        (status = 400, description = "A message that does not fit the agent's kind, or a bad `timeout_ms`", body = doc::ApiErrorBody),
        (status = 404, description = "No such agent", body = doc::ApiErrorBody),
        (status = 422, description = "The agent's handler failed", body = doc::ApiErrorBody),
        (status = 503, description = "The node is shutting down or its journal refuses writes", body = doc::ApiErrorBody),
        (status = 504, description = "No reply in time", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn ask(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<AskQuery>, QueryRejection>,
    msg: Result<JsonBody<Value>, ApiError>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    permit(&state, &token, "api.agents.ask", Some(&id))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let timeout = timeout_of(&state, query)?;
    let JsonBody(mut msg) = msg?;
    seal(&state, &mut msg);
    let id = agent_id(&id)?;
    state.inner.metrics.asks.fetch_add(1, Ordering::Relaxed);
    if super::turns::wants_events(&headers) {
        return super::turns::streamed_ask(&state, id, msg, timeout);
    }
    let reply = state.inner.runtime.ask_json(&id, msg, timeout).await?;
    Ok(Json(reply).into_response())
}

/// The `?timeout_ms=` of an ask or a query: the node's default, or 1 to 5 minutes.
pub(super) fn timeout_of(state: &AppState, query: AskQuery) -> Result<Duration, ApiError> {
    match query.timeout_ms {
        None => Ok(state.inner.ask_timeout),
        Some(ms @ 1..=MAX_ASK_TIMEOUT_MS) => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(ApiError::bad_request(format!(
            "timeout_ms = {ms}: it must be 1 to {MAX_ASK_TIMEOUT_MS}"
        ))),
    }
}

/// `POST /agents/{id}/query`: a read-only question answered from the agent's current
/// state (every message acknowledged before it included); nothing is journaled.
#[utoipa::path(post, path = "/agents/{id}/query", tag = "agents",
    params(("id" = String, Path, description = "The agent's id", example = "c1"), AskQuery),
    request_body(content = Value, description = "The question, as the agent's kind wants it", example = json!("get")),
    responses(
        (status = 200, description = "The answer", body = Value),
        (status = 400, description = "A question that does not fit the agent's kind (or a kind without queries), or a bad `timeout_ms`", body = doc::ApiErrorBody),
        (status = 404, description = "No such agent", body = doc::ApiErrorBody),
        (status = 422, description = "The agent's handler failed", body = doc::ApiErrorBody),
        (status = 503, description = "The node is shutting down", body = doc::ApiErrorBody),
        (status = 504, description = "No answer in time", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn query(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<AskQuery>, QueryRejection>,
    body: Result<JsonBody<Value>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let id = path_param(id)?;
    permit(&state, &token, "api.agents.query", Some(&id))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let timeout = timeout_of(&state, query)?;
    let JsonBody(body) = body?;
    let id = agent_id(&id)?;
    state.inner.metrics.queries.fetch_add(1, Ordering::Relaxed);
    let answer = state.inner.runtime.query_json(&id, body, timeout).await?;
    Ok(Json(answer))
}

/// `DELETE /agents/{id}`: stops the agent and its children.
#[utoipa::path(delete, path = "/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "The agent's id", example = "c1")),
    responses(
        (status = 200, description = "Stopped", body = doc::Stopped),
        (status = 404, description = "No such agent", body = doc::ApiErrorBody),
        (status = 503, description = "The node is shutting down or its journal refuses writes", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn stop_agent(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_param(id)?;
    permit(&state, &token, "api.agents.stop", Some(&id))?;
    let id = agent_id(&id)?;
    state.inner.runtime.stop(&id).await?;
    state.inner.metrics.stops.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({ "stopped": id.as_str() })))
}

/// `GET /tools`: the tools' descriptions.
#[utoipa::path(get, path = "/tools", tag = "tools",
    responses((status = 200, description = "Every tool the node offers", body = Vec<doc::ToolSpec>)))]
pub(crate) async fn list_tools(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &token, "api.tools.read", None)?;
    serde_json::to_value(state.inner.host.specs())
        .map(Json)
        .map_err(ApiError::internal)
}

/// `POST /tools/{name}/invoke`: calls a tool under the caller's token (checked by the tool
/// host against the tool's own name).
#[utoipa::path(post, path = "/tools/{name}/invoke", tag = "tools",
    params(("name" = String, Path, description = "The tool's name", example = "fs.read")),
    request_body(content = Value, description = "The tool's input, per its `input_schema`", example = json!({"path": "notes.txt"})),
    responses(
        (status = 200, description = "The tool's output", body = Value),
        (status = 202, description = "The call waits for a human decision", body = doc::PendingCall),
        (status = 400, description = "Input that does not fit the tool", body = doc::ApiErrorBody),
        (status = 404, description = "No such tool", body = doc::ApiErrorBody),
        (status = 422, description = "The tool failed", body = doc::ApiErrorBody),
        (status = 503, description = "The tool is unavailable", body = doc::ApiErrorBody),
        (status = 504, description = "The tool did not finish in time", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn invoke(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    name: Result<Path<String>, PathRejection>,
    input: Result<JsonBody<Value>, ApiError>,
) -> Result<Response, ApiError> {
    let name = path_param(name)?;
    let JsonBody(input) = input?;
    let input = serde_json::to_vec(&input).map_err(ApiError::internal)?;
    state
        .inner
        .metrics
        .tool_calls
        .fetch_add(1, Ordering::Relaxed);
    let output = state
        .inner
        .host
        .call_json(token.token(), None, &name, &input)
        .await;
    // A call that waits for a human decision: 202 with the approval's id.
    if let Some(id) = output.as_ref().err().and_then(|e| e.pending_approval()) {
        let body = json!({ "approval": id, "status": "pending" });
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let output = output.map_err(|e| {
        let e = ApiError::from(e);
        if e.status() == StatusCode::FORBIDDEN {
            state
                .inner
                .metrics
                .forbidden
                .fetch_add(1, Ordering::Relaxed);
        }
        e
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], output).into_response())
}

/// `GET /events`'s query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// The first position (or, with `stream`, sequence number); default 1.
    from: Option<u64>,
    /// How many at most (default 100, at most 1,000).
    limit: Option<usize>,
    /// Only this stream; `from` is then a sequence number.
    stream: Option<String>,
}

/// `GET /events` (`?stream=S`: that stream's, from sequence number `from`): the
/// acknowledged (durable) records only, as the event stream shows
/// them; a record written but not yet flushed appears once it is.
#[utoipa::path(get, path = "/events", tag = "events",
    params(EventsQuery),
    responses((status = 200, description = "Acknowledged events, oldest first", body = Vec<doc::Event>)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    permit(&state, &token, "api.events.read", None)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    read_events(&*state.inner.journal, &query).map(Json)
}

/// `GET /events`'s answer from `journal` (also a cluster node's follower of a shard).
pub(crate) fn read_events(journal: &dyn Journal, query: &EventsQuery) -> Result<Value, ApiError> {
    let from = query.from.unwrap_or(1).max(1);
    let acknowledged = journal.acknowledged_head();
    let available = usize::try_from((acknowledged + 1).saturating_sub(from)).unwrap_or(usize::MAX);
    let limit = query.limit.unwrap_or(100).min(MAX_EVENTS).min(available);
    let events = if let Some(stream) = &query.stream {
        let limit = query.limit.unwrap_or(100).min(MAX_EVENTS);
        let mut events = journal
            .read_stream(stream, from, limit)
            .map_err(|e| match e {
                toka_store::Error::InvalidStreamId { .. } => ApiError::bad_request(e.to_string()),
                e => ApiError::internal(e),
            })?;
        events.retain(|event| event.position <= acknowledged);
        events
    } else if limit == 0 {
        Vec::new()
    } else {
        journal.read_all(from, limit).map_err(ApiError::internal)?
    };
    Ok(Value::Array(
        events.iter().map(crate::events::event_json).collect(),
    ))
}

/// `GET /events/stream`'s query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamQuery {
    /// The first position to send (default 1).
    from: Option<u64>,
}

/// `GET /events/stream`: every acknowledged event from `from` on, then the live ones, as
/// server-sent events (`event: event`, `id:` the position, `data:` the event as
/// `GET /events` shows it); it ends when the node shuts down.
#[utoipa::path(get, path = "/events/stream", tag = "events",
    params(StreamQuery),
    responses((status = 200, description = "Server-sent events: catch-up, then live", body = doc::ServerSentEvent, content_type = "text/event-stream")))]
pub(crate) async fn event_stream(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    permit(&state, &token, "api.events.read", None)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let subscription = state.inner.journal.subscribe(query.first());
    Ok(event_sse(subscription, state.inner.closing.subscribe()))
}

impl StreamQuery {
    /// The first position to send.
    pub(crate) fn first(&self) -> u64 {
        self.from.unwrap_or(1).max(1)
    }
}

/// `GET /events/stream`'s answer: `subscription`'s events as server-sent events, until
/// `closing` turns true (also a cluster node's stream from a follower of a shard).
pub(crate) fn event_sse(
    subscription: toka_store::Subscription,
    closing: tokio::sync::watch::Receiver<bool>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // `None` after an error: the subscription would retry the same position forever.
    let stream = futures_util::stream::unfold(
        (Some(subscription), closing),
        |(subscription, mut closing)| async move {
            let mut subscription = subscription?;
            if *closing.borrow() {
                return None;
            }
            let next = tokio::select! {
                next = subscription.next() => next?,
                _ = closing.wait_for(|closed| *closed) => return None,
            };
            match next {
                Ok(event) => {
                    let data = crate::events::event_json(&event).to_string();
                    let sse = Event::default()
                        .id(event.position.to_string())
                        .event("event")
                        .data(data);
                    Some((Ok(sse), (Some(subscription), closing)))
                }
                Err(e) => {
                    let sse = Event::default().event("error").data(e.to_string());
                    Some((Ok(sse), (None, closing)))
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `GET /metrics`: the node's counters in Prometheus' text format.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
) -> Result<Response, ApiError> {
    permit(&state, &token, "api.metrics.read", None)?;
    let m = &state.inner.metrics;
    let tree = state.inner.runtime.tree();
    let counters = [
        (
            "toka_api_requests_total",
            "API requests authorized",
            &m.requests,
        ),
        (
            "toka_api_messages_total",
            "messages journaled over the API",
            &m.messages,
        ),
        ("toka_api_asks_total", "asks made over the API", &m.asks),
        (
            "toka_api_queries_total",
            "queries made over the API",
            &m.queries,
        ),
        (
            "toka_api_spawns_total",
            "agents spawned over the API",
            &m.spawns,
        ),
        (
            "toka_api_stops_total",
            "agents stopped over the API",
            &m.stops,
        ),
        (
            "toka_api_tool_calls_total",
            "tool calls over the API",
            &m.tool_calls,
        ),
        (
            "toka_api_unauthorized_total",
            "requests refused with 401",
            &m.unauthorized,
        ),
        (
            "toka_api_forbidden_total",
            "requests refused with 403",
            &m.forbidden,
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in counters {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
    let rt = state.inner.runtime.metrics();
    let tools = state.inner.host.metrics();
    let counters = [
        (
            "toka_messages_handled_total",
            "messages agents handled (live, not replayed)",
            rt.messages_handled,
        ),
        (
            "toka_agent_restarts_total",
            "agents restarted by their supervisor",
            rt.agent_restarts,
        ),
        (
            "toka_journal_appends_total",
            "records appended to agents' streams by the journal writer",
            rt.journal_appends,
        ),
        (
            "toka_journal_group_writes_total",
            "group writes of the journal writer",
            rt.journal_group_writes,
        ),
        (
            "toka_journal_flushes_total",
            "flushes of the journal to disk, each making every append written before it durable",
            rt.journal_flushes,
        ),
        (
            "toka_tool_calls_total",
            "tool calls made through the tool host",
            tools.calls,
        ),
        (
            "toka_tool_denials_total",
            "tool calls refused by the capability check",
            tools.denials,
        ),
        (
            "toka_tool_failures_total",
            "tool calls that failed otherwise (timeouts included)",
            tools.failures,
        ),
        (
            "toka_tool_timeouts_total",
            "tool calls that timed out",
            tools.timeouts,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    if let Some(models) = state
        .inner
        .runtime
        .extension::<toka_tools::model::ModelHost>()
    {
        let models = models.metrics();
        let _ = writeln!(
            text,
            "# HELP toka_model_calls_total model calls answered (live, not replayed)\n# TYPE toka_model_calls_total counter\ntoka_model_calls_total {}\n# HELP toka_model_tokens_total tokens model calls used, by direction\n# TYPE toka_model_tokens_total counter\ntoka_model_tokens_total{{direction=\"input\"}} {}\ntoka_model_tokens_total{{direction=\"output\"}} {}",
            models.calls, models.input_tokens, models.output_tokens
        );
    }
    let _ = writeln!(
        text,
        "# HELP toka_journal_flush_wait_seconds time spent waiting for appends to become durable\n# TYPE toka_journal_flush_wait_seconds summary\ntoka_journal_flush_wait_seconds_sum {}\ntoka_journal_flush_wait_seconds_count {}",
        seconds(rt.flush_wait_micros),
        rt.flush_waits
    );
    let _ = writeln!(
        text,
        "# HELP toka_recovery_seconds time the runtime's start (recovery) took\n# TYPE toka_recovery_seconds gauge\ntoka_recovery_seconds {}",
        seconds(rt.recovery_micros)
    );
    let _ = writeln!(
        text,
        "# HELP toka_recovery_milliseconds time the runtime took to recover at start\n# TYPE toka_recovery_milliseconds gauge\ntoka_recovery_milliseconds {}",
        m.recovery_millis.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        text,
        "# HELP toka_agents agents in the tree\n# TYPE toka_agents gauge\ntoka_agents {}\n# HELP toka_agents_running agents with a running actor\n# TYPE toka_agents_running gauge\ntoka_agents_running {}\n# HELP toka_journal_head_position the journal's last position\n# TYPE toka_journal_head_position gauge\ntoka_journal_head_position {}",
        tree.len(),
        tree.iter().filter(|a| a.running).count(),
        state.inner.journal.head_position()
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Microseconds as Prometheus seconds.
fn seconds(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[cfg(test)]
mod agent_json_tests {
    use super::*;

    #[test]
    fn a_halted_agent_says_so_and_why() {
        let mut info = AgentInfo {
            id: AgentId::new("relay").unwrap(),
            kind: "relay".into(),
            parent: None,
            durable: true,
            running: false,
            incarnation: 0,
            halted: None,
            restarts: 2,
            elsewhere: false,
            supervisor: None,
        };
        assert_eq!(agent_json(&info)["status"], "down");
        assert_eq!(agent_json(&info)["restarts"], 2);
        assert!(agent_json(&info).get("halted").is_none());
        info.running = true;
        assert_eq!(agent_json(&info)["status"], "running");
        info.running = false;
        info.halted = Some("agent relay is not deterministic: ...".into());
        let json = agent_json(&info);
        assert_eq!(json["status"], "halted");
        assert_eq!(json["halted"], "agent relay is not deterministic: ...");
    }
}
