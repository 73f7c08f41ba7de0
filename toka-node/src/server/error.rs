//! [`ApiError`]: every failure of a handler, as a status and a JSON `{"error": "..."}`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use toka_actors::Error;
use toka_tools::{ToolError, ToolErrorKind};

/// A handler's failure. Client errors keep their message; internal ones are logged and
/// answered with a generic 500.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500, logged; the client sees a generic message.
    pub(crate) fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error answering a request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The message the client sees.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Run by the outermost layer on every response: an error response that is not JSON yet
/// (axum's 405 for a method a route does not have, a rejection of an extractor that
/// answers plain text, an empty error of any layer) gets the body
/// `{"error": "<reason>"}` and `application/json`, keeping its status and other headers
/// (such as `Allow`).
pub(crate) fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
        StatusCode::BAD_REQUEST => "bad request: invalid path or query".to_owned(),
        other => other
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut fixed = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE {
            fixed.headers_mut().insert(name, value.clone());
        }
    }
    fixed
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = match &error {
            Error::InvalidId { .. }
            | Error::NoQueries { .. }
            | Error::UnknownKind(_)
            | Error::BadJson { .. }
            | Error::WrongKind { .. } => StatusCode::BAD_REQUEST,
            Error::UnknownAgent(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Handler { .. } | Error::Spawn { .. } | Error::NoReply(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Error::ShuttingDown | Error::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Remote { .. } => StatusCode::BAD_GATEWAY,
            Error::Journal(store) if refuses_writes(store) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, unwritable(store));
            }
            Error::GroupWrite(reason) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, unwritable(reason));
            }
            _ => return ApiError::internal(error),
        };
        ApiError::new(status, error.to_string())
    }
}

/// Whether a journal error means the journal refuses writes (rather than a bug).
fn refuses_writes(error: &toka_store::Error) -> bool {
    matches!(
        error,
        toka_store::Error::Poisoned(_)
            | toka_store::Error::Backend { .. }
            | toka_store::Error::Damaged { .. }
    )
}

/// What a write refused by an unwritable journal answers (503), and what `/health` says.
pub(crate) fn unwritable(reason: impl std::fmt::Display) -> String {
    format!(
        "the journal cannot be written ({reason}); nothing acknowledged was lost and reads \
         still work; free disk space (or fix the I/O error) and restart the node"
    )
}

impl From<ToolError> for ApiError {
    fn from(error: ToolError) -> Self {
        let status = match error.kind {
            ToolErrorKind::Denied => StatusCode::FORBIDDEN,
            ToolErrorKind::UnknownTool => StatusCode::NOT_FOUND,
            ToolErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ToolErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ToolErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, error.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toka_actors::AgentId;

    #[test]
    fn runtime_errors_map_to_statuses() {
        let id = AgentId::new("a").unwrap();
        let cases = [
            (Error::UnknownAgent(id.clone()), StatusCode::NOT_FOUND),
            (Error::AlreadyExists(id.clone()), StatusCode::CONFLICT),
            (Error::UnknownKind("x".into()), StatusCode::BAD_REQUEST),
            (
                Error::Timeout {
                    id,
                    after: std::time::Duration::from_secs(1),
                },
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (
                Error::Internal("bug".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status(), status);
        }
    }
}
