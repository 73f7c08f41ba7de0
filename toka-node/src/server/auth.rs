//! Bearer-token checks: 401 for a token that cannot be trusted (or has expired), 403 for
//! one whose
//! caveats refuse the request (see the table in the [module docs](super)).

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use toka_tools::{Caveat, Verified};

use super::{ApiError, AppState, BODY_LIMIT};

/// The token in `Authorization: Bearer <token>`, verified (signature, revocation,
/// understood caveats) but not yet checked against a request. A token seen before is not
/// parsed or verified again ([`toka_tools::Authority::verify_text`]).
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Verified, ApiError> {
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
    let token = state
        .inner
        .authority
        .verify_text(text)
        .map_err(|d| unauthorized(format!("invalid token: {}", d.reason)))?;
    let now = jiff::Timestamp::now();
    if let Some(Caveat::Expires(at)) = token
        .caveats()
        .iter()
        .find(|c| matches!(c, Caveat::Expires(at) if *at <= now))
    {
        return Err(unauthorized(format!("the token expired at {at}")));
    }
    state.inner.metrics.requests.fetch_add(1, Ordering::Relaxed);
    Ok(token)
}

/// Middleware of every route that needs a token: authenticates the bearer token *before*
/// anything reads the body (a request without a valid token costs no body read), refuses
/// a declared `Content-Length` over [`BODY_LIMIT`] with 413 at once, and hands the
/// verified token ([`Verified`]) to the handler as a request extension.
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
    let request = toka_tools::Request {
        tool,
        agent,
        path: None,
        bytes: None,
        now: jiff::Timestamp::now(),
        model: None,
    };
    state.inner.authority.admit(token, &request).map_err(|d| {
        state
            .inner
            .metrics
            .forbidden
            .fetch_add(1, Ordering::Relaxed);
        ApiError::new(StatusCode::FORBIDDEN, format!("forbidden: {}", d.reason))
    })?;
    Ok(())
}
