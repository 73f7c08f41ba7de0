//! Streamed turns: `POST /agents/{id}/ask` with `Accept: text/event-stream`, and the
//! reconnect route `GET /agents/{id}/turn`.
//!
//! Both answer with server-sent events. While they last, the agent's model calls are
//! streamed and what the model generates is forwarded as it comes
//! ([`ModelHost::subscribe`]):
//!
//! | Event | Data |
//! |---|---|
//! | `delta` | `{"text"}`: more of the answer's text |
//! | `tool_call` | `{"index", "id", "name"}`: the model began a tool call |
//! | `tool_call_arguments` | `{"index", "fragment"}`: more of that call's arguments (JSON text) |
//! | `step_done` | `{"finish", "usage"}`: one model call ended (a turn may make several) |
//! | `lagged` | `{"skipped"}`: this client read too slowly and missed that many events |
//! | `answer` | the last event: how the turn ended |
//! | `error` | the last event instead of `answer`: `{"error", "status"}` |
//!
//! Deltas are not journaled: they are a view of the generation, and only the complete
//! answer of each model call is recorded. So after a crash nothing regenerates them: the
//! turn finishes on its own after the restart, from the recorded answers, and
//! `GET /agents/{id}/turn` delivers its final answer (and the live events of any model
//! call still to make). Neither route ever starts a generation of its own: the ask's is
//! the message's, and `/turn` only watches and reads.
//!
//! The events are the agent's, not one message's: if the agent is busy with an earlier
//! turn when the stream opens, the rest of that turn's events come first. A keep-alive
//! comment is sent every 15 s of silence; the streams end when the node shuts down.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::{Value, json};
use toka_actors::AgentId;
use toka_tools::Verified;
use toka_tools::model::{ASSISTANT_KIND, Lagged, ModelHost, TurnEvent, TurnSubscription};
use tokio::sync::watch;

use super::auth::permit;
use super::openapi as doc;
use super::routes::{AskQuery, agent_id, path_param, timeout_of};
use super::{ApiError, AppState};

/// Whether the request asks for server-sent events (`Accept: text/event-stream`).
pub(crate) fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// The final event of a stream, made once its turn is over.
type Ending = Pin<Box<dyn Future<Output = Event> + Send>>;

/// `POST /agents/{id}/ask` answered as events: the agent's live events until the reply,
/// then `answer` (the reply, exactly as the plain ask returns it) or `error`. The caller
/// has checked the token, the timeout and the body.
pub(crate) fn streamed_ask(
    state: &AppState,
    id: AgentId,
    msg: Value,
    timeout: Duration,
) -> Result<Response, ApiError> {
    known(state, &id)?;
    // Subscribed before the message is sent: no event of its turn can be missed.
    let live = subscribe(state, &id);
    let runtime = state.inner.runtime.clone();
    let ending: Ending = Box::pin(async move {
        match runtime.ask_json(&id, msg, timeout).await {
            Ok(reply) => Event::default().event("answer").data(reply.to_string()),
            Err(e) => error_event(ApiError::from(e)),
        }
    });
    Ok(events(state, live, ending))
}

/// `GET /agents/{id}/turn`: the assistant's live events until it is idle (a turn in
/// progress ends), then `answer` with how its last turn ended, read from its transcript
/// (`{"answer", "steps", "stopped"}`: the plain ask's reply without `usage`, which the
/// transcript does not keep; `"answer": null` if it had no turn yet). Starts nothing.
#[utoipa::path(get, path = "/agents/{id}/turn", tag = "agents",
    params(("id" = String, Path, description = "The assistant's id", example = "c1"), AskQuery),
    responses(
        (status = 200, description = "Server-sent events: the assistant's live model events, then `answer` (`{\"answer\", \"steps\", \"stopped\"}`) or `error`", body = doc::ServerSentEvent, content_type = "text/event-stream"),
        (status = 400, description = "Not an assistant, or a bad `timeout_ms`", body = doc::ApiErrorBody),
        (status = 404, description = "No such agent", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn turn(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<AskQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_param(id)?;
    permit(&state, &token, "api.agents.query", Some(&id))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let timeout = timeout_of(&state, query)?;
    let id = agent_id(&id)?;
    let kind = known(&state, &id)?;
    if kind != ASSISTANT_KIND {
        return Err(ApiError::bad_request(format!(
            "agent {id} is of kind {kind:?}: only assistants have turns to follow \
             (GET /agents/{{id}}/turn)"
        )));
    }
    let live = subscribe(&state, &id);
    let runtime = state.inner.runtime.clone();
    let ending: Ending = Box::pin(async move {
        // A query is answered between two messages: after the turn in progress, if any.
        match runtime.query_json(&id, json!("transcript"), timeout).await {
            Ok(transcript) => Event::default()
                .event("answer")
                .data(last_turn(&transcript).to_string()),
            Err(e) => error_event(ApiError::from(e)),
        }
    });
    Ok(events(&state, live, ending))
}

/// How the last turn of `transcript` (an assistant's transcript query answer) ended:
/// `{"answer", "steps", "stopped"}`, as an ask's reply says it (without `usage`).
fn last_turn(transcript: &Value) -> Value {
    let entries = transcript.as_array().map_or(&[][..], Vec::as_slice);
    let role = |e: &Value| e.get("role").and_then(Value::as_str).map(str::to_owned);
    let Some(start) = entries
        .iter()
        .rposition(|e| role(e).as_deref() == Some("user"))
    else {
        return json!({ "answer": null, "steps": 0, "stopped": null });
    };
    let turn = &entries[start + 1..];
    let answers: Vec<&Value> = turn
        .iter()
        .filter(|e| role(e).as_deref() == Some("assistant"))
        .collect();
    let answer = answers
        .last()
        .and_then(|e| e.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    // A turn ends on an answer that calls no tool, unless it ran out of steps.
    let finished = turn.last().is_some_and(|e| {
        role(e).as_deref() == Some("assistant")
            && e.get("tool_calls")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
    });
    json!({
        "answer": answer,
        "steps": answers.len(),
        "stopped": if finished { Value::Null } else { json!("max_steps") },
    })
}

/// The kind of agent `id`, or 404.
fn known(state: &AppState, id: &AgentId) -> Result<String, ApiError> {
    state
        .inner
        .runtime
        .tree()
        .into_iter()
        .find(|info| info.id == *id)
        .map(|info| info.kind)
        .ok_or_else(|| toka_actors::Error::UnknownAgent(id.clone()).into())
}

/// A subscription to `id`'s live events (none on a node without models).
fn subscribe(state: &AppState, id: &AgentId) -> Option<TurnSubscription> {
    state
        .inner
        .runtime
        .extension::<ModelHost>()
        .map(|host| host.subscribe(id.as_str()))
}

/// The `error` event of `error`: `{"error", "status"}`.
fn error_event(error: ApiError) -> Event {
    let body = json!({ "error": error.message(), "status": error.status().as_u16() });
    Event::default().event("error").data(body.to_string())
}

/// The SSE event of a live event: named by its type, its fields as data.
fn live_event(event: Result<TurnEvent, Lagged>) -> Event {
    match event {
        Ok(event) => {
            let mut data = serde_json::to_value(&event).unwrap_or(Value::Null);
            if let Some(fields) = data.as_object_mut() {
                fields.remove("type");
            }
            Event::default().event(event.name()).data(data.to_string())
        }
        Err(Lagged(skipped)) => Event::default()
            .event("lagged")
            .data(json!({ "skipped": skipped }).to_string()),
    }
}

/// Where a stream of events is.
struct Turn {
    live: Option<TurnSubscription>,
    /// `Some` until the turn is over.
    ending: Option<Ending>,
    /// The final event, once made, until sent.
    last: Option<Event>,
    closing: watch::Receiver<bool>,
}

/// The response: `live`'s events until `ending` resolves, then the live events already
/// sent by then, then the final event `ending` made. Ends early if the node shuts down.
fn events(state: &AppState, live: Option<TurnSubscription>, ending: Ending) -> Response {
    let turn = Turn {
        live,
        ending: Some(ending),
        last: None,
        closing: state.inner.closing.subscribe(),
    };
    let stream = futures_util::stream::unfold(turn, next);
    let stream: Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(stream);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Tell proxies not to buffer the deltas.
    response
        .headers_mut()
        .insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    *response.status_mut() = StatusCode::OK;
    response
}

async fn next(mut turn: Turn) -> Option<(Result<Event, Infallible>, Turn)> {
    if *turn.closing.borrow() {
        return None;
    }
    if let Some(ending) = turn.ending.as_mut() {
        let live = turn.live.as_mut();
        let closing = &mut turn.closing;
        let event = tokio::select! {
            biased;
            _ = async { closing.wait_for(|closed| *closed).await.is_ok() } => return None,
            event = recv(live) => live_event(event),
            last = ending => {
                turn.ending = None;
                turn.last = Some(last);
                return next_final(turn);
            }
        };
        return Some((Ok(event), turn));
    }
    next_final(turn)
}

/// After the turn: the live events still waiting, then the final event.
fn next_final(mut turn: Turn) -> Option<(Result<Event, Infallible>, Turn)> {
    let last = turn.last.take()?;
    // The events published before the turn was over go first.
    if let Some(event) = turn.live.as_mut().and_then(TurnSubscription::try_recv) {
        turn.last = Some(last);
        return Some((Ok(live_event(event)), turn));
    }
    turn.live = None;
    Some((Ok(last), turn))
}

/// The next live event; never, without a subscription.
async fn recv(live: Option<&mut TurnSubscription>) -> Result<TurnEvent, Lagged> {
    match live {
        Some(live) => live.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_event_stream_accept_asks_for_events() {
        let mut headers = HeaderMap::new();
        assert!(!wants_events(&headers));
        headers.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_events(&headers));
        headers.insert(
            header::ACCEPT,
            "application/json, Text/Event-Stream;q=0.9".parse().unwrap(),
        );
        assert!(wants_events(&headers));
    }

    #[test]
    fn the_last_turn_is_read_from_a_transcript() {
        assert_eq!(
            last_turn(&json!([])),
            json!({"answer": null, "steps": 0, "stopped": null})
        );
        let call = json!([{"id": "c", "name": "fs.read", "arguments": "{}"}]);
        let transcript = json!([
            {"role": "user", "content": "old"},
            {"role": "assistant", "content": "old answer"},
            {"role": "user", "content": "When?"},
            {"role": "assistant", "content": "", "tool_calls": call},
            {"role": "tool", "content": "Thursday", "tool_call_id": "c"},
            {"role": "assistant", "content": "On Thursday."},
        ]);
        assert_eq!(
            last_turn(&transcript),
            json!({"answer": "On Thursday.", "steps": 2, "stopped": null})
        );
        let cut = json!([
            {"role": "user", "content": "When?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": call},
            {"role": "tool", "content": "Thursday", "tool_call_id": "c"},
        ]);
        assert_eq!(
            last_turn(&cut),
            json!({"answer": "Let me look.", "steps": 1, "stopped": "max_steps"})
        );
    }
}
