//! Bearer-token checks: 401 for a token that cannot be trusted (or has expired), 403 for
//! one whose
//! caveats refuse the request (see the table in the [module docs](super)).

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use toka_tools::{Authority, Caveat, Verified};

use super::{ApiError, AppState, BODY_LIMIT};

/// The token in `Authorization: Bearer <token>`, verified (signature, revocation,
/// understood caveats) but not yet checked against a request. A token seen before is not
/// parsed or verified again ([`toka_tools::Authority::verify_text`]).
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Verified, ApiError> {
    let token = bearer(&state.inner.authority, headers).map_err(|message| {
        state
            .inner
            .metrics
            .unauthorized
            .fetch_add(1, Ordering::Relaxed);
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    })?;
    state.inner.metrics.requests.fetch_add(1, Ordering::Relaxed);
    Ok(token)
}

/// Verifies the request's `Authorization: Bearer <token>` with `authority` (signature,
/// revocation, expiry); the error says why it is refused, without the token.
pub(crate) fn bearer(authority: &Authority, headers: &HeaderMap) -> Result<Verified, String> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| "missing Authorization: Bearer <token>".to_owned())?;
    let text = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| "the Authorization header is not `Bearer <token>`".to_owned())?;
    let token = authority
        .verify_text(text)
        .map_err(|d| format!("invalid token: {}", d.reason))?;
    let now = jiff::Timestamp::now();
    if let Some(Caveat::Expires(at)) = token
        .caveats()
        .iter()
        .find(|c| matches!(c, Caveat::Expires(at) if *at <= now))
    {
        return Err(format!("the token expired at {at}"));
    }
    Ok(token)
}

/// Checks `token`'s caveats for the request `tool` on `agent` with `authority`; the error
/// says why it is refused.
pub(crate) fn admit(
    authority: &Authority,
    token: &Verified,
    tool: &str,
    agent: Option<&str>,
) -> Result<(), String> {
    let request = toka_tools::Request {
        tool,
        agent,
        path: None,
        bytes: None,
        now: jiff::Timestamp::now(),
        model: None,
    };
    authority
        .admit(token, &request)
        .map(drop)
        .map_err(|d| format!("forbidden: {}", d.reason))
}

pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = match authenticate(&state, request.headers()) {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    match declared {
        Some(Ok(length)) if length > BODY_LIMIT as u64 => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body declares {length} bytes; the limit is {BODY_LIMIT}"),
            )
            .into_response();
        }
        Some(Err(_)) => {
            return ApiError::bad_request("Content-Length is not a number").into_response();
        }
        _ => {}
    }
    request.extensions_mut().insert(token);
    next.run(request).await
}

/// Checks an authenticated token's caveats for the request `tool` on `agent`.
pub(crate) fn permit(
    state: &AppState,
    token: &Verified,
    tool: &str,
    agent: Option<&str>,
) -> Result<(), ApiError> {
    admit(&state.inner.authority, token, tool, agent).map_err(|message| {
        state
            .inner
            .metrics
            .forbidden
            .fetch_add(1, Ordering::Relaxed);
        ApiError::new(StatusCode::FORBIDDEN, message)
    })
}
