//! Bearer-token checks: 401 for a token that cannot be trusted (or has expired), 403 for
//! one whose
//! caveats refuse the request (see the table in the [module docs](super)).

use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, StatusCode, header};
use toka_tools::{Capability, Caveat, Request};

use super::{ApiError, AppState};

/// The token in `Authorization: Bearer <token>`, verified (signature, revocation,
/// understood caveats) but not yet checked against a request.
pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Capability, ApiError> {
    let unauthorized = |message: String| {
        state
            .inner
            .metrics
            .unauthorized
            .fetch_add(1, Ordering::Relaxed);
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>".into()))?;
    let text = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`".into()))?;
    let token = Capability::parse(text)
        .map_err(|d| unauthorized(format!("unreadable token: {}", d.reason)))?;
    let caveats = state
        .inner
        .authority
        .verify(&token)
        .map_err(|d| unauthorized(format!("invalid token: {}", d.reason)))?;
    let now = jiff::Timestamp::now();
    if let Some(Caveat::Expires(at)) = caveats
        .iter()
        .find(|c| matches!(c, Caveat::Expires(at) if *at <= now))
    {
        return Err(unauthorized(format!("the token expired at {at}")));
    }
    state.inner.metrics.requests.fetch_add(1, Ordering::Relaxed);
    Ok(token)
}

/// Authenticates, then checks the token's caveats for the request `tool` (an `api.*`
/// name) on `agent`.
pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    tool: &str,
    agent: Option<&str>,
) -> Result<Capability, ApiError> {
    let token = authenticate(state, headers)?;
    permit(state, &token, tool, agent)?;
    Ok(token)
}

/// Checks an authenticated token's caveats for the request `tool` on `agent`.
pub(crate) fn permit(
    state: &AppState,
    token: &Capability,
    tool: &str,
    agent: Option<&str>,
) -> Result<(), ApiError> {
    let request = Request {
        tool,
        agent,
        path: None,
        bytes: None,
        now: jiff::Timestamp::now(),
    };
    state.inner.authority.check(token, &request).map_err(|d| {
        state
            .inner
            .metrics
            .forbidden
            .fetch_add(1, Ordering::Relaxed);
        ApiError::new(StatusCode::FORBIDDEN, format!("forbidden: {}", d.reason))
    })?;
    Ok(())
}
