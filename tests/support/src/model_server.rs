//! A scripted model server on `127.0.0.1`: tests of model clients talk to it instead of a
//! paid API. It speaks the wire formats of OpenAI Chat Completions
//! (`POST /v1/chat/completions`) and Anthropic Messages (`POST /v1/messages`).
//!
//! A test [`push`](ModelServer::push)es [`Reply`]s; each model request takes the next one
//! (FIFO, one queue for both endpoints). Every request is [recorded](ModelServer::requests).
//! Independent of the script, the server checks what the real APIs check, and answers
//! with the provider's error body without consuming a scripted reply:
//!
//! - with [`with_api_key`](ModelServer::with_api_key): `Authorization: Bearer KEY`
//!   (OpenAI) or `x-api-key: KEY` (Anthropic), else 401;
//! - a body that is not JSON: 400;
//! - OpenAI: a `model` is required, and each `tools[i].function.name` must match
//!   `^[a-zA-Z0-9_-]{1,64}$` (400 `invalid_value`, `string_above_max_length`, ...);
//! - Anthropic: the `anthropic-version` header, `model` and `max_tokens` are required, and
//!   each `tools[i].name` must match `^[a-zA-Z0-9_-]{1,128}$`;
//! - an empty queue: 500 with a JSON error saying "no scripted reply";
//! - any other path: 404.
//!
//! [`wire`] builds common response bodies, and [`Reply::fixture`] loads the recorded
//! responses under `tests/support/fixtures/models/` (see the README there).
//!
//! ```no_run
//! # async fn demo() {
//! use toka_test_support::model_server::{ModelServer, Reply, chat_text};
//! let server = ModelServer::start().await.with_api_key("sk-test");
//! server.push(Reply::Json(chat_text("Hello!", 12, 3)));
//! // point the client at server.base_url() ...
//! assert_eq!(server.requests().len(), 0);
//! # }
//! ```

pub mod wire;

pub use wire::{
    anthropic_error, anthropic_sse_text, anthropic_text, anthropic_tool_use, chat_text,
    chat_tool_calls, openai_error, sse_text, sse_text_with_usage, sse_tool_calls,
};

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The content type of a JSON answer.
const JSON: &str = "application/json";
/// The content type of a streamed answer, as OpenAI and Anthropic send it.
const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// One scripted answer to a model request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 `application/json` with this body.
    Json(Value),
    /// 200 `application/json` with this body served verbatim (byte for byte), as loaded by
    /// [`Reply::fixture`] from a `.json` file.
    RawJson(String),
    /// 200 `text/event-stream`, OpenAI style: each string is one event's data payload,
    /// sent as `data: PAYLOAD\n\n`. The caller includes the final `"[DONE]"` if wanted.
    Sse(Vec<String>),
    /// 200 `text/event-stream`, Anthropic style: each `(name, data)` is sent as
    /// `event: NAME\ndata: DATA\n\n`.
    SseEvents(Vec<(String, String)>),
    /// 200 `text/event-stream` with this body served verbatim (one chunk per event), as
    /// loaded by [`Reply::fixture`] from a `.sse` file.
    RawSse(String),
    /// An error answer: `status` with the JSON `body` and, if set, a `Retry-After`
    /// header in seconds (e.g. 429, 500, 529).
    Status {
        /// The HTTP status code.
        status: u16,
        /// The JSON error body.
        body: Value,
        /// The `Retry-After` header, in seconds.
        retry_after: Option<u64>,
    },
    /// Answers with the inner reply after a delay (a slow model).
    Delayed(Duration, Box<Reply>),
    /// Streams OpenAI-style events (`data: PAYLOAD\n\n`) with a pause of `every` between
    /// two events; the headers are sent at once.
    SlowSse {
        /// The data payloads, as in [`Reply::Sse`].
        events: Vec<String>,
        /// The pause between two events.
        every: Duration,
    },
    /// Accepts the request and never answers (for timeout tests). The connection is
    /// closed when the server is dropped.
    Hang,
    /// Answers `stream` if the request asks for a streamed answer (`"stream": true` in
    /// its body, as both APIs spell it), else `plain`: for a caller that may ask either
    /// way (see [`Reply::as_asked`]).
    AsAsked {
        /// The answer to a streamed request.
        stream: Box<Reply>,
        /// The answer to any other request.
        plain: Box<Reply>,
    },
}

impl Reply {
    /// Loads the fixture `NAME` from `tests/support/fixtures/models/`: `NAME.json` as
    /// [`Reply::RawJson`], or `NAME.sse` as [`Reply::RawSse`] (both served verbatim, byte
    /// for byte as recorded).
    ///
    /// # Panics
    ///
    /// If neither file exists, or the JSON does not parse.
    pub fn fixture(name: &str) -> Reply {
        let dir = fixtures_dir();
        let json = dir.join(format!("{name}.json"));
        if json.exists() {
            fixture_json(name); // panics on a fixture that is not JSON
            let body = std::fs::read_to_string(&json)
                .unwrap_or_else(|e| panic!("model fixture {}: {e}", json.display()));
            return Reply::RawJson(body);
        }
        let sse = dir.join(format!("{name}.sse"));
        match std::fs::read_to_string(&sse) {
            Ok(body) => Reply::RawSse(body),
            Err(e) => panic!(
                "no model fixture {name:?}: neither {} nor {} ({e})",
                json.display(),
                sse.display()
            ),
        }
    }

    /// Shorthand for [`Reply::AsAsked`].
    pub fn as_asked(stream: Reply, plain: Reply) -> Reply {
        Reply::AsAsked {
            stream: Box::new(stream),
            plain: Box::new(plain),
        }
    }

    /// The reply that answers a request with `body`: [`Reply::AsAsked`] resolved.
    fn for_request(self, body: &Value) -> Reply {
        match self {
            Reply::AsAsked { stream, plain } => {
                let streamed = body.get("stream").and_then(Value::as_bool) == Some(true);
                if streamed { *stream } else { *plain }.for_request(body)
            }
            Reply::Delayed(by, inner) => Reply::Delayed(by, Box::new(inner.for_request(body))),
            other => other,
        }
    }

    /// Shorthand for [`Reply::Delayed`].
    pub fn delayed(self, by: Duration) -> Reply {
        Reply::Delayed(by, Box::new(self))
    }

    /// A 429 in the provider-neutral shape of OpenAI's rate-limit error, with
    /// `Retry-After: seconds`.
    pub fn rate_limited(seconds: u64) -> Reply {
        Reply::Status {
            status: 429,
            body: openai_error(
                "Rate limit reached for gpt-4o-mini in organization org-test on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            ),
            retry_after: Some(seconds),
        }
    }
}

/// The folder of the recorded model responses: `tests/support/fixtures/models/`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")
}

/// The parsed JSON fixture `NAME.json` (to compare a client's result against it).
///
/// # Panics
///
/// If the file is missing or is not JSON.
pub fn fixture_json(name: &str) -> Value {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("model fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("model fixture {} is not JSON: {e}", path.display()))
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The request path, e.g. `/v1/chat/completions` (without the query).
    pub path: String,
    /// The headers in arrival order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON; a body that is not JSON is kept as a JSON string of its text
    /// (an empty body as `""`).
    pub body: Value,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server and its handle share.
#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    api_key: Mutex<Option<String>>,
}

/// Locks, ignoring poisoning (a panicking test must not hide its own message behind
/// a poisoned lock in another).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running scripted model server on `127.0.0.1`; it stops (and closes every open
/// connection, hanging ones too) when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ModelServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ModelServer {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound, or outside a tokio runtime.
    pub async fn start() -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("model server: bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("model server: local_addr: {e}"));
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        ModelServer { addr, shared, task }
    }

    /// Requires the API key `key`: a request without `Authorization: Bearer KEY` (OpenAI)
    /// or `x-api-key: KEY` (Anthropic) gets 401 with the provider's error body.
    pub fn with_api_key(self, key: &str) -> Self {
        *lock(&self.shared.api_key) = Some(key.to_owned());
        self
    }

    /// The base URL of the API, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues `reply`: model requests take replies in the order they were pushed.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.queue).push_back(reply);
    }

    /// How many pushed replies are not taken yet.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Drops every pushed reply not taken yet (e.g. a [`Reply::Hang`] meant for a call
    /// that a killed client never made); returns how many there were.
    pub fn clear(&self) -> usize {
        let mut queue = lock(&self.shared.queue);
        let n = queue.len();
        queue.clear();
        n
    }

    /// Every request received so far, in arrival order (rejected ones too).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

/// Accepts connections until aborted; each connection is a task of `conns`, so that
/// aborting this task closes them all.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // E.g. EMFILE: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    // A client that goes away mid-answer is not an error of the server.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The body of every answer.
type Body = BoxBody<Bytes, Infallible>;

/// Which API a path belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    OpenAi,
    Anthropic,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let recorded = Recorded {
        path: path.clone(),
        headers,
        body: parsed
            .clone()
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    };
    lock(&shared.requests).push(recorded.clone());

    let method = parts.method.as_str();
    let api = match (method, path.as_str()) {
        ("POST", "/v1/chat/completions") => Api::OpenAi,
        ("POST", "/v1/messages") => Api::Anthropic,
        _ => {
            let body = openai_error(
                &format!("Invalid URL ({method} {path})"),
                "invalid_request_error",
                None,
                None,
            );
            return Ok(json_response(404, &body, None));
        }
    };

    let key = lock(&shared.api_key).clone();
    if let Some(rejection) = key.and_then(|key| check_key(api, &recorded, &key)) {
        return Ok(rejection);
    }
    let Some(body) = parsed else {
        return Ok(malformed(api));
    };
    if let Some(rejection) = validate(api, &recorded, &body) {
        return Ok(rejection);
    }

    let next = lock(&shared.queue).pop_front();
    match next {
        Some(reply) => Ok(respond(reply.for_request(&body)).await),
        None => {
            let message =
                format!("no scripted reply: the ModelServer's queue is empty (POST {path})");
            let body = match api {
                Api::OpenAi => openai_error(&message, "server_error", None, None),
                Api::Anthropic => anthropic_error("api_error", &message),
            };
            Ok(json_response(500, &body, None))
        }
    }
}

/// 401 unless the request carries `key` the provider's way.
fn check_key(api: Api, req: &Recorded, key: &str) -> Option<Response<Body>> {
    match api {
        Api::OpenAi => match req.header("authorization") {
            Some(v) if v.strip_prefix("Bearer ") == Some(key) => None,
            None => Some(json_response(
                401,
                &openai_error(
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    None,
                    None,
                ),
                None,
            )),
            Some(v) => {
                let given = v.strip_prefix("Bearer ").unwrap_or(v);
                Some(json_response(
                    401,
                    &openai_error(
                        &format!(
                            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                            redact(given)
                        ),
                        "invalid_request_error",
                        None,
                        Some("invalid_api_key"),
                    ),
                    None,
                ))
            }
        },
        Api::Anthropic => match req.header("x-api-key") {
            Some(v) if v == key => None,
            None => Some(json_response(
                401,
                &anthropic_error("authentication_error", "x-api-key header is required"),
                None,
            )),
            Some(_) => Some(json_response(
                401,
                &anthropic_error("authentication_error", "invalid x-api-key"),
                None,
            )),
        },
    }
}

/// A key as OpenAI echoes a wrong one: the first 3 and last 4 characters.
fn redact(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// 400 for a body that is not JSON.
fn malformed(api: Api) -> Response<Body> {
    let body = match api {
        Api::OpenAi => openai_error(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
            "invalid_request_error",
            None,
            None,
        ),
        Api::Anthropic => anthropic_error(
            "invalid_request_error",
            "There was an issue with your request body. Please check that it is valid JSON.",
        ),
    };
    json_response(400, &body, None)
}

/// The checks of the real APIs that do not depend on the script.
fn validate(api: Api, req: &Recorded, body: &Value) -> Option<Response<Body>> {
    match api {
        Api::OpenAi => validate_openai(body).map(|b| json_response(400, &b, None)),
        Api::Anthropic => validate_anthropic(req, body).map(|b| json_response(400, &b, None)),
    }
}

fn validate_openai(body: &Value) -> Option<Value> {
    if !body.is_object() {
        return Some(openai_error(
            "Invalid type for request body: expected an object.",
            "invalid_request_error",
            None,
            Some("invalid_type"),
        ));
    }
    if body.get("model").is_none_or(Value::is_null) {
        return Some(openai_error(
            "you must provide a model parameter",
            "invalid_request_error",
            None,
            None,
        ));
    }
    let tools = body.get("tools").and_then(Value::as_array)?;
    for (i, tool) in tools.iter().enumerate() {
        let param = format!("tools[{i}].function.name");
        let Some(name) = tool.pointer("/function/name").and_then(Value::as_str) else {
            return Some(openai_error(
                &format!("Missing required parameter: '{param}'."),
                "invalid_request_error",
                Some(&param),
                Some("missing_required_parameter"),
            ));
        };
        let len = name.chars().count();
        if len == 0 {
            return Some(openai_error(
                &format!(
                    "Invalid '{param}': empty string. Expected a string with minimum length 1, but got an empty string instead."
                ),
                "invalid_request_error",
                Some(&param),
                Some("empty_string"),
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Some(openai_error(
                &format!(
                    "Invalid '{param}': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
                ),
                "invalid_request_error",
                Some(&param),
                Some("invalid_value"),
            ));
        }
        if len > 64 {
            return Some(openai_error(
                &format!(
                    "Invalid '{param}': string too long. Expected a string with maximum length 64, but got a string with length {len} instead."
                ),
                "invalid_request_error",
                Some(&param),
                Some("string_above_max_length"),
            ));
        }
    }
    None
}

fn validate_anthropic(req: &Recorded, body: &Value) -> Option<Value> {
    if req.header("anthropic-version").is_none() {
        return Some(anthropic_error(
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    for field in ["model", "max_tokens"] {
        if body.get(field).is_none() {
            return Some(anthropic_error(
                "invalid_request_error",
                &format!("{field}: Field required"),
            ));
        }
    }
    let tools = body.get("tools").and_then(Value::as_array)?;
    for (i, tool) in tools.iter().enumerate() {
        // Server tools (`"type": "web_search_20250305"`, ...) have names of their own.
        if tool
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "custom")
        {
            continue;
        }
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        let ok = (1..=128).contains(&name.chars().count())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Some(anthropic_error(
                "invalid_request_error",
                &format!(
                    "tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                ),
            ));
        }
    }
    None
}

/// A JSON answer with `status`.
fn json_response(status: u16, body: &Value, retry_after: Option<u64>) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    if let Some(seconds) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).boxed()
}

/// A 200 event stream whose chunks are `chunks`, each after its pause.
fn event_stream(chunks: Vec<(Duration, String)>) -> Response<Body> {
    let stream = futures_util::stream::iter(chunks).then(|(pause, chunk)| async move {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// Splits a raw SSE body after each blank line, so that each event is its own chunk;
/// the concatenation is the body unchanged.
fn split_events(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(at) = rest.find("\n\n") {
        out.push(rest[..at + 2].to_owned());
        rest = &rest[at + 2..];
    }
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// Serves one scripted reply.
fn respond(reply: Reply) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
    Box::pin(async move {
        match reply {
            Reply::Json(body) => json_response(200, &body, None),
            Reply::RawJson(body) => {
                let mut response = Response::new(full(body));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
                response
            }
            Reply::Status {
                status,
                body,
                retry_after,
            } => json_response(status, &body, retry_after),
            Reply::Sse(events) => event_stream(
                events
                    .into_iter()
                    .map(|e| (Duration::ZERO, format!("data: {e}\n\n")))
                    .collect(),
            ),
            Reply::SlowSse { events, every } => event_stream(
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let pause = if i == 0 { Duration::ZERO } else { every };
                        (pause, format!("data: {e}\n\n"))
                    })
                    .collect(),
            ),
            Reply::SseEvents(events) => event_stream(
                events
                    .into_iter()
                    .map(|(name, data)| {
                        (Duration::ZERO, format!("event: {name}\ndata: {data}\n\n"))
                    })
                    .collect(),
            ),
            Reply::RawSse(raw) => event_stream(
                split_events(&raw)
                    .into_iter()
                    .map(|e| (Duration::ZERO, e))
                    .collect(),
            ),
            Reply::Delayed(by, inner) => {
                tokio::time::sleep(by).await;
                respond(*inner).await
            }
            Reply::Hang => std::future::pending().await,
            // Resolved by `for_request` before; a plain answer if one got here anyway.
            Reply::AsAsked { plain, .. } => respond(*plain).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_events_keeps_the_body() {
        let raw = "data: a\n\ndata: b\n\ndata: [DONE]\n\n";
        let parts = split_events(raw);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), raw);
        assert_eq!(split_events("x"), vec!["x".to_owned()]);
    }

    #[test]
    fn redact_keeps_head_and_tail() {
        assert_eq!(redact("sk-wrong-key-1234"), "sk-**********1234");
        assert_eq!(redact("short"), "*****");
    }
}
