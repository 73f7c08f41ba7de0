//! What the HTTP model clients share: sending a request with the API key and retries,
//! mapping HTTP statuses and transport failures to [`ModelErrorKind`]s, redacting the key
//! from every error, and the stream a task feeds.

use std::sync::Arc;

use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::Value;

use super::retry::parse_retry_after;
use super::{ModelErrorKind, ModelResponse, ModelTimeouts, RetryPolicy, StreamEvent};
use crate::{Error, Secret};

/// How a provider wants the API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyHeader {
    /// `Authorization: Bearer KEY` (OpenAI).
    #[cfg_attr(not(feature = "openai"), allow(dead_code))]
    Bearer,
    /// `x-api-key: KEY` (Anthropic).
    #[cfg_attr(not(feature = "anthropic"), allow(dead_code))]
    XApiKey,
}

/// One model behind one HTTP endpoint, as a client is configured.
pub(super) struct Endpoint {
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) model: String,
    pub(super) key: Option<Secret>,
    pub(super) key_header: KeyHeader,
    /// Headers every request carries besides the key (e.g. `anthropic-version`).
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) timeouts: ModelTimeouts,
    pub(super) retry: RetryPolicy,
}

/// What a client builder checked and built: the base URL without its trailing `/`, and
/// the HTTP client.
pub(super) fn prepare(
    model: &str,
    base_url: &str,
    key: Option<&Secret>,
    timeouts: ModelTimeouts,
) -> Result<(String, reqwest::Client), Error> {
    let config = |message: &str| Error::Model {
        model: model.to_owned(),
        kind: ModelErrorKind::Config,
        message: message.to_owned(),
    };
    let base = base_url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(config("the base URL must start with http:// or https://"));
    }
    if let Some(key) = key {
        let usable = key
            .expose_str()
            .is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_graphic()));
        if !usable {
            return Err(config("the API key is not printable ASCII text"));
        }
    }
    let http = reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .build()
        .map_err(|e| config(&format!("building the HTTP client: {e}")))?;
    Ok((base.to_owned(), http))
}

impl Endpoint {
    /// An [`Error::Model`] of this model, the API key redacted from `message`.
    pub(super) fn error(&self, kind: ModelErrorKind, message: impl Into<String>) -> Error {
        let mut message = message.into();
        // A provider may echo the key (or part of it) back: never pass it on.
        if let Some(key) = self.key.as_ref().and_then(Secret::expose_str) {
            if !key.is_empty() {
                message = message.replace(key, "<redacted>");
            }
        }
        Error::Model {
            model: self.model.clone(),
            kind,
            message,
        }
    }

    /// Sends `body`, retrying as the policy says; returns the first successful response.
    pub(super) async fn send(
        &self,
        body: &Value,
        stream: bool,
    ) -> Result<reqwest::Response, Error> {
        let mut retry = 0;
        loop {
            let mut request = self.http.post(&self.url).json(body);
            if !stream {
                request = request.timeout(self.timeouts.request);
            }
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            if let Some(key) = self.key.as_ref().and_then(Secret::expose_str) {
                let (name, text) = match self.key_header {
                    KeyHeader::Bearer => (reqwest::header::AUTHORIZATION, format!("Bearer {key}")),
                    KeyHeader::XApiKey => (HeaderName::from_static("x-api-key"), key.to_owned()),
                };
                let mut value = HeaderValue::from_str(&text).map_err(|_| {
                    self.error(
                        ModelErrorKind::Config,
                        "the API key is not a valid header value",
                    )
                })?;
                value.set_sensitive(true);
                request = request.header(name, value);
            }
            let sent = if stream {
                // Only until the headers: reqwest's own timeout would also cut the stream.
                match tokio::time::timeout(self.timeouts.request, request.send()).await {
                    Ok(sent) => sent.map_err(|e| self.transport_error(&e)),
                    Err(_) => Err(self.error(ModelErrorKind::Timeout, "no answer in time")),
                }
            } else {
                request.send().await.map_err(|e| self.transport_error(&e))
            };
            let (error, retry_after) = match sent {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    (self.status_error(response).await, retry_after)
                }
                Err(error) => (error, None),
            };
            let retryable = matches!(&error, Error::Model { kind, .. } if kind.is_retryable());
            match self.retry.delay(retry, retry_after).filter(|_| retryable) {
                Some(wait) => {
                    tracing::debug!(model = %self.model, retry, ?wait, %error, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                None => return Err(error),
            }
        }
    }

    /// The error of a response that is not a success: 401/403 Unauthorized (without the
    /// provider's words, which tend to quote the key), 429 RateLimited, 5xx (and
    /// Anthropic's 529 "overloaded") Server, anything else BadRequest.
    async fn status_error(&self, response: reqwest::Response) -> Error {
        let status = response.status();
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ModelErrorKind::Unauthorized,
            StatusCode::TOO_MANY_REQUESTS => ModelErrorKind::RateLimited,
            s if s.is_server_error() => ModelErrorKind::Server,
            _ => ModelErrorKind::BadRequest,
        };
        if kind == ModelErrorKind::Unauthorized {
            // Its message tends to quote the key; say only what happened.
            return self.error(
                kind,
                format!("HTTP {status}: the provider refused the API key"),
            );
        }
        let body = response.bytes().await.unwrap_or_default();
        let said = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.get("error"))
                    .or_else(|| v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
        self.error(kind, format!("HTTP {status}: {said}"))
    }

    /// The error of a request that got no response (or whose body broke).
    pub(super) fn transport_error(&self, error: &reqwest::Error) -> Error {
        if error.is_timeout() {
            self.error(ModelErrorKind::Timeout, "no answer in time")
        } else if error.is_decode() {
            self.error(ModelErrorKind::Decode, error.to_string())
        } else {
            self.error(ModelErrorKind::Transport, error.to_string())
        }
    }
}

/// Turns a provider's server-sent events into [`StreamEvent`]s.
pub(super) trait SseDecoder: Send + 'static {
    /// Takes one event; returns the events it makes, or `None` once the provider said the
    /// answer is complete. An error ends the stream with it.
    fn event(
        &mut self,
        event: &Event,
    ) -> Result<Option<Vec<StreamEvent>>, (ModelErrorKind, String)>;

    /// The complete answer, after the last event (or an error if the events so far do
    /// not make one, e.g. a stream cut before the provider's end).
    fn finish(self) -> Result<ModelResponse, (ModelErrorKind, String)>;
}

/// The stream of a successful streamed response: `decoder`'s events, then
/// [`StreamEvent::Done`]; a pause longer than the request timeout between two events
/// ends it with a [`ModelErrorKind::Timeout`] error.
pub(super) fn sse_stream(
    endpoint: Arc<Endpoint>,
    response: reqwest::Response,
    mut decoder: impl SseDecoder,
) -> BoxStream<'static, Result<StreamEvent, Error>> {
    let idle = endpoint.timeouts.request;
    let mut events = response.bytes_stream().eventsource();
    async_stream(move |tx| async move {
        loop {
            let next = match tokio::time::timeout(idle, events.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let _ = tx
                        .send(Err(
                            endpoint.error(ModelErrorKind::Timeout, "the stream stalled")
                        ))
                        .await;
                    return;
                }
            };
            let event = match next {
                None => break,
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    let _ = tx
                        .send(Err(endpoint.error(
                            ModelErrorKind::Transport,
                            format!("the stream broke: {e}"),
                        )))
                        .await;
                    return;
                }
            };
            match decoder.event(&event) {
                Ok(Some(made)) => {
                    for made in made {
                        if tx.send(Ok(made)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err((kind, message)) => {
                    let _ = tx.send(Err(endpoint.error(kind, message))).await;
                    return;
                }
            }
        }
        let last = match decoder.finish() {
            Ok(done) => Ok(StreamEvent::Done(done)),
            Err((kind, message)) => Err(endpoint.error(kind, message)),
        };
        let _ = tx.send(last).await;
    })
}

/// A stream fed by a task: `produce` sends items until it returns.
fn async_stream<F, Fut>(produce: F) -> BoxStream<'static, Result<StreamEvent, Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<StreamEvent, Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
