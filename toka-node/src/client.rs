//! [`NodeClient`]: the CLI's HTTP client for a running node's API.
//!
//! A base URL (`http://127.0.0.1:7070`) and a bearer token. Every call answers JSON, or a
//! [`ClientError`] that tells "nobody answers there" ([`ClientError::Unreachable`]) apart
//! from "the node answered with an error" ([`ClientError::Status`], carrying the node's
//! own `{"error": ...}` message). Streamed answers (NDJSON) are read line by line with
//! [`NodeClient::lines`].
//!
//! The client is async (reqwest); the CLI drives it with [`crate::cli::block_on`]. It
//! never prints nor logs the token.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;

/// How long connecting to the node may take (it is meant to be near: a refused or
/// unanswered connection is reported quickly).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the node may stay silent in the middle of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A node's HTTP API, called with one bearer token.
#[derive(Clone)]
pub(crate) struct NodeClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Why a call to the node failed.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// Nothing answers at the base URL (refused, timed out, not HTTP).
    Unreachable {
        /// The base URL.
        url: String,
        /// The transport's reason.
        reason: String,
    },
    /// The node answered with an error status.
    Status {
        /// The HTTP status.
        status: u16,
        /// The node's `{"error": ...}` message (or the status's reason).
        message: String,
    },
    /// The answer could not be read (cut short, not JSON).
    Read(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable { url, reason } => {
                write!(f, "no node answers at {url} ({reason})")
            }
            ClientError::Status { status, message } => {
                write!(f, "the node answered {status}: {message}")
            }
            ClientError::Read(reason) => write!(f, "reading the node's answer: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl NodeClient {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7070`; a bare
    /// `HOST:PORT` gets `http://`), sending `token` as the bearer token.
    pub(crate) fn new(base: &str, token: Option<String>) -> anyhow::Result<NodeClient> {
        let base = base.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        // The node takes bearer tokens only; a password in the URL would be echoed in
        // errors and sent as Basic auth. Refused without repeating the URL.
        let url = reqwest::Url::parse(&base)
            .map_err(|e| anyhow::anyhow!("the node URL is not a URL ({e})"))?;
        if !url.username().is_empty() || url.password().is_some() {
            anyhow::bail!(
                "the node URL carries credentials; give the token with --token-file or TOKA_TOKEN"
            );
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
        Ok(NodeClient { base, token, http })
    }

    /// The base URL.
    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// Whether a node answers `GET /health` at all (with any status) within `within`.
    pub(crate) async fn answers(&self, within: Duration) -> bool {
        let request = self
            .http
            .get(format!("{}/health", self.base))
            .timeout(within);
        request.send().await.is_ok()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`; the response if its status is a success.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
            });
        Err(ClientError::Status {
            status: status.as_u16(),
            message,
        })
    }

    /// A transport failure: unreachable if it happened before an answer.
    fn transport(&self, error: &reqwest::Error) -> ClientError {
        if error.is_connect() || (error.is_timeout() && !error.is_body()) || error.is_request() {
            let mut reason = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                reason = cause.to_string();
                source = cause.source();
            }
            ClientError::Unreachable {
                url: self.base.clone(),
                reason,
            }
        } else {
            ClientError::Read(error.to_string())
        }
    }

    async fn json_of(&self, response: reqwest::Response) -> Result<Value, ClientError> {
        response
            .json()
            .await
            .map_err(|e| ClientError::Read(e.to_string()))
    }

    /// `GET path` (with its query), answered with JSON.
    pub(crate) async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.send(self.request(reqwest::Method::GET, path)).await?;
        self.json_of(response).await
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let request = self.request(reqwest::Method::POST, path).json(body);
        let response = self.send(request).await?;
        self.json_of(response).await
    }

    /// `GET path`, answered with JSON lines (NDJSON): `each` sees every line as it
    /// arrives (without its newline), and may stop the walk by returning `false`.
    pub(crate) async fn lines(
        &self,
        path: &str,
        mut each: impl FnMut(&[u8]) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let response = self.send(self.request(reqwest::Method::GET, path)).await?;
        let mut body = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ClientError::Read(e.to_string()))?;
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
                let line = &pending[start..start + end];
                start += end + 1;
                if !line.is_empty() && !each(line)? {
                    return Ok(());
                }
            }
            pending.drain(..start);
        }
        if !pending.is_empty() {
            each(&pending)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("NodeClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::NodeClient;

    #[test]
    fn urls_with_credentials_are_refused_without_echoing_them() {
        for url in [
            "http://user:PASSW0RD@127.0.0.1:1",
            "http://PASSW0RD@127.0.0.1:1",
        ] {
            let err = NodeClient::new(url, None).err().unwrap().to_string();
            assert!(err.contains("credentials"), "{err}");
            assert!(!err.contains("PASSW0RD"), "{err}");
        }
        assert!(NodeClient::new("127.0.0.1:7070", None).is_ok());
        assert!(NodeClient::new("http://127.0.0.1:7070/", None).is_ok());
    }
}
