//! The approval routes: list, show and decide the tool calls that wait for a human
//! decision ([`toka_tools::approval`]).
//!
//! A token may **see** an approval if it may read it, the capability request
//! `api.approvals.read` for the approval's agent (none for an API client's call), or
//! decide it (below): whoever may approve a call may see what they approve.
//!
//! - `GET /approvals` (`?agent=ID`, `?status=pending|approved|denied|expired`): the
//!   approvals the token may see, oldest first (the others are left out, so a token that
//!   may see none gets `[]`).
//! - `GET /approvals/{id}`: one approval (403 if the token may not see it).
//! - `POST /approvals/{id}` `{"decision": "approve" | "deny", "reason"?}`: decides a pending
//!   approval. Checked as tool **`api.approvals.decide.<TOOL>`** (`<TOOL>` the name of the
//!   tool that waits, e.g. `api.approvals.decide.fs.write`) for the approval's agent. So
//!   `tool = api.approvals.decide.*` decides every tool, `tool = api.approvals.decide.fs.*`
//!   only the file tools, `agent = ID` only `ID`'s calls (an `agent` caveat refuses an API
//!   client's calls, which have no agent), `tool = api.approvals.*` reads and decides
//!   everything; an admin token decides anything. The decision is journaled with the
//!   deciding token's id (never the token). An approved API client's call then runs once
//!   in the background (its `output` or `error` shows on `GET /approvals/{id}` when done);
//!   an agent's approval is news for the agent (`{"approval", "status"}`), whose call then
//!   runs when it goes on.
//!
//! Errors (JSON): 400 a malformed body, query or an over-long reason, 403 a token whose
//! caveats refuse the request, 404 an unknown approval (for any valid token: ids are not
//! secret), 409 an approval that is not pending any more (decided, or expired: an expired
//! approval counts as denied).

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use toka_tools::{Approval, ApprovalStatus, Approvals, Decision, Verified};

use super::auth::permit;
use super::openapi as doc;
use super::routes::{JsonBody, path_param};
use super::{ApiError, AppState};

/// The longest reason a decision may give, in bytes.
const MAX_REASON_BYTES: usize = 4096;

/// The node's approvals (the tool host always has them in a running node).
fn approvals(state: &AppState) -> Result<&Approvals, ApiError> {
    state
        .inner
        .host
        .approvals()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this node takes no approvals"))
}

fn view(approval: &Approval) -> Result<Value, ApiError> {
    serde_json::to_value(approval).map_err(ApiError::internal)
}

/// `GET /approvals`'s query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this agent's calls.
    agent: Option<String>,
    /// Only the approvals in this state.
    #[param(value_type = Option<doc::ApprovalStatus>)]
    status: Option<ApprovalStatus>,
}

/// `GET /approvals`.
#[utoipa::path(get, path = "/approvals", tag = "approvals",
    params(ListQuery),
    responses(
        (status = 200, description = "The approvals the token may see, oldest first", body = Vec<doc::Approval>),
        (status = 404, description = "This node takes no approvals", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let listed = approvals(&state)?
        .list()
        .iter()
        .filter(|a| query.agent.is_none() || a.agent == query.agent)
        .filter(|a| query.status.is_none_or(|s| a.status == s))
        .filter(|a| may_see(&state, &token, a))
        .map(view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Value::Array(listed)))
}

/// Whether `token` may see `approval`: read it, or decide it.
fn may_see(state: &AppState, token: &Verified, approval: &Approval) -> bool {
    let decide = decide_request(approval);
    [decide.as_str(), "api.approvals.read"]
        .into_iter()
        .any(|tool| {
            let request = toka_tools::Request {
                tool,
                agent: approval.agent.as_deref(),
                path: None,
                bytes: None,
                now: jiff::Timestamp::now(),
                model: None,
            };
            state.inner.authority.admit(token, &request).is_ok()
        })
}

/// The capability request that deciding `approval` is checked as.
fn decide_request(approval: &Approval) -> String {
    format!("api.approvals.decide.{}", approval.tool)
}

/// Approval `id`, or 404.
fn find(state: &AppState, id: &str) -> Result<Approval, ApiError> {
    approvals(state)?
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no approval {id:?}")))
}

/// `GET /approvals/{id}`.
#[utoipa::path(get, path = "/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    responses(
        (status = 200, description = "The approval", body = doc::Approval),
        (status = 404, description = "No such approval", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_param(id)?;
    let approval = find(&state, &id)?;
    if !may_see(&state, &token, &approval) {
        // Refused: the read request's denial says why (and is counted).
        permit(
            &state,
            &token,
            "api.approvals.read",
            approval.agent.as_deref(),
        )?;
    }
    view(&approval).map(Json)
}

/// `POST /approvals/{id}`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideBody {
    /// `approve` or `deny`.
    #[schema(value_type = doc::Decision)]
    decision: Decision,
    /// Why (at most 4,096 bytes).
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /approvals/{id}`.
#[utoipa::path(post, path = "/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    request_body = DecideBody,
    responses(
        (status = 200, description = "The decided approval", body = doc::Approval),
        (status = 404, description = "No such approval", body = doc::ApiErrorBody),
        (status = 409, description = "Not pending any more", body = doc::ApiErrorBody),
        (status = 503, description = "The journal refuses writes", body = doc::ApiErrorBody),
    ))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    Extension(token): Extension<Verified>,
    id: Result<Path<String>, PathRejection>,
    body: Result<JsonBody<DecideBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let id = path_param(id)?;
    let approval = find(&state, &id)?;
    permit(
        &state,
        &token,
        &decide_request(&approval),
        approval.agent.as_deref(),
    )?;
    let JsonBody(body) = body?;
    let reason = body.reason.unwrap_or_default();
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad_request(format!(
            "reason is {} bytes; at most {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    let decided = approvals(&state)?
        .decide(&id, body.decision, &reason, token.token().identifier())
        .await
        .map_err(|error| match error {
            toka_tools::Error::Approval(message) => ApiError::new(StatusCode::CONFLICT, message),
            toka_tools::Error::Journal(store) => ApiError::from(toka_actors::Error::Journal(store)),
            other => ApiError::internal(other),
        })?;
    if decided.agent.is_some() {
        crate::approvals::tell_agent(&state.inner.runtime, &decided).await;
    } else if decided.status == ApprovalStatus::Approved {
        crate::approvals::run_in_background(&state.inner.host, decided.id.clone());
    }
    view(&decided).map(Json)
}
