//! The scripted model server, driven by a real HTTP/1.1 client (hyper) over TCP.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use toka_test_support::model_server::{
    ModelServer, Reply, anthropic_sse_text, anthropic_text, chat_text, chat_tool_calls,
    fixture_json, fixtures_dir, sse_text, sse_tool_calls,
};

/// One answer as the client saw it.
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    /// Each body chunk with the time it arrived.
    chunks: Vec<(Instant, Bytes)>,
}

impl Answer {
    fn text(&self) -> String {
        let all: Vec<u8> = self.chunks.iter().flat_map(|(_, b)| b.to_vec()).collect();
        String::from_utf8(all).expect("utf-8 body")
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.text()).expect("JSON body")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// POSTs `body` to `path` of `server` with `headers`, reading the whole answer.
async fn post(server: &ModelServer, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    try_post(server.addr(), path, headers, body)
        .await
        .expect("request")
}

async fn try_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, hyper::Error> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            chunks.push((Instant::now(), data));
        }
    }
    Ok(Answer {
        status,
        headers,
        chunks,
    })
}

const CHAT: &str = "/chat/completions";
const MESSAGES: &str = "/messages";

fn v1(path: &str) -> String {
    format!("/v1{path}")
}

fn chat_body() -> String {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn anthropic_body() -> String {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

const ANTHROPIC_VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

#[tokio::test]
async fn base_url_is_v1_on_loopback() {
    let server = ModelServer::start().await;
    let url = server.base_url();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/v1"), "{url}");
    assert_eq!(url, format!("http://{}/v1", server.addr()));
}

#[tokio::test]
async fn scripted_json_is_served_fifo_then_no_scripted_reply() {
    let server = ModelServer::start().await;
    let first = chat_text("one", 3, 1);
    let second = chat_tool_calls(&[("call_1", "add", json!({"a": 1, "b": 2}))], 7, 9);
    server.push(Reply::Json(first.clone()));
    server.push(Reply::Json(second.clone()));
    assert_eq!(server.queued(), 2);

    let a = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.json(), first);
    assert_eq!(a.json()["object"], "chat.completion");
    assert_eq!(a.json()["choices"][0]["message"]["content"], "one");

    // The queue is shared by both endpoints.
    let b = post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION],
        &anthropic_body(),
    )
    .await;
    assert_eq!(b.json(), second);
    assert_eq!(
        b.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1,\"b\":2}"
    );

    let c = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert_eq!(c.status, 500);
    let msg = c.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(msg.contains("no scripted reply"), "{msg}");
    let d = post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION],
        &anthropic_body(),
    )
    .await;
    assert_eq!(d.status, 500);
    assert_eq!(d.json()["type"], "error");
    assert_eq!(d.json()["error"]["type"], "api_error");
    assert!(
        d.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no scripted reply"))
    );
}

#[tokio::test]
async fn sse_is_framed_as_data_lines_with_the_event_stream_type() {
    let server = ModelServer::start().await;
    let events = sse_text(&["Hel", "lo"]);
    server.push(Reply::Sse(events.clone()));
    let a = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert_eq!(a.status, 200);
    assert!(
        a.header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        a.header("content-type")
    );
    let expected: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    assert_eq!(a.text(), expected);
    assert!(a.text().ends_with("data: [DONE]\n\n"));

    // The chunks reassemble the text; the usage chunk has empty choices.
    let mut text = String::new();
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).expect("chunk");
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(t) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(t);
        }
        if v["choices"].as_array().is_some_and(Vec::is_empty) {
            usage = Some(v["usage"].clone());
        }
    }
    assert_eq!(text, "Hello");
    assert_eq!(usage.expect("usage chunk")["completion_tokens"], 2);
}

#[tokio::test]
async fn anthropic_events_are_framed_with_event_names() {
    let server = ModelServer::start().await;
    let events = anthropic_sse_text(&["Hi", " there"], 10, 3);
    server.push(Reply::SseEvents(events.clone()));
    let a = post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION],
        &anthropic_body(),
    )
    .await;
    assert!(
        a.header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"))
    );
    let expected: String = events
        .iter()
        .map(|(n, d)| format!("event: {n}\ndata: {d}\n\n"))
        .collect();
    assert_eq!(a.text(), expected);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    // Each data's `type` is its event name.
    for (n, d) in &events {
        let v: Value = serde_json::from_str(d).expect("event data");
        assert_eq!(v["type"], n.as_str());
    }
}

#[tokio::test]
async fn raw_sse_fixtures_are_served_verbatim() {
    let server = ModelServer::start().await;
    for name in [
        "openai_stream_text",
        "openai_stream_tool_calls",
        "ollama_stream",
        "llamacpp_stream",
        "anthropic_stream",
    ] {
        let file = std::fs::read_to_string(fixtures_dir().join(format!("{name}.sse")))
            .expect("fixture file");
        server.push(Reply::fixture(name));
        let a = post(&server, &v1(CHAT), &[], &chat_body()).await;
        assert_eq!(a.status, 200, "{name}");
        assert!(
            a.header("content-type")
                .is_some_and(|t| t.starts_with("text/event-stream"))
        );
        assert_eq!(a.text(), file, "{name} verbatim");
    }
}

#[tokio::test]
async fn json_fixtures_are_served_as_json() {
    let server = ModelServer::start().await;
    for name in [
        "openai_text",
        "openai_tool_calls",
        "ollama_text",
        "llamacpp_text",
        "anthropic_text",
        "anthropic_tool_use",
    ] {
        server.push(Reply::fixture(name));
        let a = post(&server, &v1(CHAT), &[], &chat_body()).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json(), fixture_json(name), "{name}");
    }
}

#[tokio::test]
#[should_panic(expected = "no model fixture")]
async fn a_missing_fixture_panics_clearly() {
    let _ = Reply::fixture("no_such_fixture");
}

#[tokio::test]
async fn api_key_is_required_the_providers_way() {
    let server = ModelServer::start()
        .await
        .with_api_key("sk-test-key-123456");
    server.push(Reply::Json(chat_text("ok", 1, 1)));

    let none = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"]["type"], "invalid_request_error");
    assert!(
        none.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("You didn't provide an API key"))
    );

    let wrong = post(
        &server,
        &v1(CHAT),
        &[("authorization", "Bearer sk-wrong-key-9999")],
        &chat_body(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    let msg = wrong.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(msg.starts_with("Incorrect API key provided: sk-"), "{msg}");
    assert!(!msg.contains("wrong-key"), "the key is redacted: {msg}");

    // The Anthropic key travels in x-api-key, not Authorization.
    let bearer = post(
        &server,
        &v1(MESSAGES),
        &[
            ANTHROPIC_VERSION,
            ("authorization", "Bearer sk-test-key-123456"),
        ],
        &anthropic_body(),
    )
    .await;
    assert_eq!(bearer.status, 401);
    assert_eq!(
        bearer.json()["error"],
        json!({"type": "authentication_error", "message": "x-api-key header is required"})
    );
    let bad = post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION, ("x-api-key", "nope")],
        &anthropic_body(),
    )
    .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"]["message"], "invalid x-api-key");

    // Rejections consume no scripted reply.
    assert_eq!(server.queued(), 1);
    let ok = post(
        &server,
        &v1(CHAT),
        &[("authorization", "Bearer sk-test-key-123456")],
        &chat_body(),
    )
    .await;
    assert_eq!(ok.status, 200);
    server.push(Reply::Json(anthropic_text("ok", 1, 1)));
    let ok = post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION, ("x-api-key", "sk-test-key-123456")],
        &anthropic_body(),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(server.queued(), 0);
    assert_eq!(server.requests().len(), 6);
}

#[tokio::test]
async fn an_illegal_tool_name_is_a_400_and_takes_no_reply() {
    let server = ModelServer::start().await;
    server.push(Reply::Json(chat_text("ok", 1, 1)));
    let tool = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}});
    let body = |tools: Vec<Value>| {
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "tools": tools})
            .to_string()
    };

    let a = post(
        &server,
        &v1(CHAT),
        &[],
        &body(vec![tool("fine_name-1"), tool("fs.read")]),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json(),
        json!({"error": {
            "message": "Invalid 'tools[1].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            "type": "invalid_request_error",
            "param": "tools[1].function.name",
            "code": "invalid_value"
        }})
    );

    let long = "a".repeat(65);
    let b = post(&server, &v1(CHAT), &[], &body(vec![tool(&long)])).await;
    assert_eq!(b.status, 400);
    assert_eq!(b.json()["error"]["code"], "string_above_max_length");
    assert_eq!(b.json()["error"]["param"], "tools[0].function.name");

    let empty = post(&server, &v1(CHAT), &[], &body(vec![tool("")])).await;
    assert_eq!(empty.status, 400);

    let malformed = post(&server, &v1(CHAT), &[], "{\"model\": ").await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"]["type"], "invalid_request_error");
    assert!(
        malformed.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not parse the JSON body"))
    );

    let no_model = post(&server, &v1(CHAT), &[], "{\"messages\": []}").await;
    assert_eq!(no_model.status, 400);

    // Nothing taken; everything recorded, the malformed body as its text.
    assert_eq!(server.queued(), 1);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 5);
    assert_eq!(reqs[3].body, json!("{\"model\": "));

    let ok = post(
        &server,
        &v1(CHAT),
        &[],
        &body(vec![tool("read_file"), tool(&"b".repeat(64))]),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn anthropic_checks_version_header_fields_and_tool_names() {
    let server = ModelServer::start().await;
    server.push(Reply::Json(anthropic_text("ok", 1, 1)));
    let no_version = post(&server, &v1(MESSAGES), &[], &anthropic_body()).await;
    assert_eq!(no_version.status, 400);
    assert_eq!(
        no_version.json()["error"]["message"],
        "anthropic-version: header is required"
    );
    let no_max = post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION],
        &json!({"model": "m", "messages": []}).to_string(),
    )
    .await;
    assert_eq!(no_max.status, 400);
    assert_eq!(
        no_max.json()["error"]["message"],
        "max_tokens: Field required"
    );
    let bad_tool = post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION],
        &json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"name": "fs.read", "input_schema": {"type": "object"}}]})
            .to_string(),
    )
    .await;
    assert_eq!(bad_tool.status, 400);
    assert_eq!(bad_tool.json()["type"], "error");
    assert_eq!(
        bad_tool.json()["error"],
        json!({"type": "invalid_request_error", "message": "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"})
    );
    let malformed = post(&server, &v1(MESSAGES), &[ANTHROPIC_VERSION], "not json").await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"]["type"], "invalid_request_error");
    assert_eq!(server.queued(), 1);
}

#[tokio::test]
async fn status_replies_carry_retry_after() {
    let server = ModelServer::start().await;
    server.push(Reply::Status {
        status: 429,
        body: json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        retry_after: Some(7),
    });
    server.push(Reply::rate_limited(20));
    server.push(Reply::Status {
        status: 500,
        body: json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}}),
        retry_after: None,
    });
    let a = post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION],
        &anthropic_body(),
    )
    .await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after"), Some("7"));
    assert_eq!(a.json()["error"]["type"], "rate_limit_error");
    let b = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert_eq!(b.status, 429);
    assert_eq!(b.header("retry-after"), Some("20"));
    assert_eq!(b.json()["error"]["code"], "rate_limit_exceeded");
    let c = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert_eq!(c.status, 500);
    assert_eq!(c.header("retry-after"), None);
}

#[tokio::test]
async fn delayed_answers_after_the_delay() {
    let server = ModelServer::start().await;
    server.push(Reply::Json(chat_text("late", 1, 1)).delayed(Duration::from_millis(300)));
    let start = Instant::now();
    let a = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(a.json()["choices"][0]["message"]["content"], "late");
}

#[tokio::test]
async fn slow_sse_paces_its_events() {
    let server = ModelServer::start().await;
    let every = Duration::from_millis(150);
    server.push(Reply::SlowSse {
        events: vec!["{\"n\":1}".into(), "{\"n\":2}".into(), "[DONE]".into()],
        every,
    });
    let start = Instant::now();
    let a = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert_eq!(
        a.text(),
        "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n"
    );
    assert_eq!(a.chunks.len(), 3, "one chunk per event");
    // Lower bounds only (a loaded machine may delay the client, never the pauses): the
    // last event comes two pauses after the request, and a pause after the first event.
    let last = a.chunks[2].0;
    assert!(last - start >= 2 * every, "{:?}", last - start);
    assert!(
        last - a.chunks[0].0 >= every,
        "the first event is not held back"
    );
}

#[tokio::test]
async fn hang_never_answers_and_closes_when_the_server_drops() {
    let server = ModelServer::start().await;
    server.push(Reply::Hang);
    server.push(Reply::Json(chat_text("after", 1, 1)));
    let addr = server.addr();
    let hanging =
        tokio::spawn(
            async move { try_post(addr, "/v1/chat/completions", &[], &chat_body()).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!hanging.is_finished(), "Hang answered");
    // Other connections are still served meanwhile.
    let a = post(&server, &v1(CHAT), &[], &chat_body()).await;
    assert_eq!(a.json()["choices"][0]["message"]["content"], "after");
    drop(server);
    let result = tokio::time::timeout(Duration::from_secs(5), hanging)
        .await
        .expect("the hanging connection is closed when the server drops")
        .expect("task");
    assert!(result.is_err(), "no answer, only a closed connection");
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let server = ModelServer::start().await.with_api_key("k");
    server.push(Reply::Json(chat_text("a", 1, 1)));
    server.push(Reply::Json(anthropic_text("b", 1, 1)));
    post(
        &server,
        &v1(CHAT),
        &[("authorization", "Bearer k")],
        &chat_body(),
    )
    .await;
    post(
        &server,
        &v1(MESSAGES),
        &[ANTHROPIC_VERSION, ("x-api-key", "k")],
        &anthropic_body(),
    )
    .await;
    let unknown = post(&server, "/v1/embeddings", &[], "{}").await;
    assert_eq!(unknown.status, 404);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer k"));
    assert_eq!(reqs[0].body["messages"][0]["content"], "hi");
    assert_eq!(reqs[1].path, "/v1/messages");
    assert_eq!(reqs[1].header("x-api-key"), Some("k"));
    assert_eq!(reqs[1].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(reqs[1].body["max_tokens"], 64);
    assert_eq!(reqs[2].path, "/v1/embeddings");
    assert!(reqs[0].headers.iter().all(|(n, _)| n == &n.to_lowercase()));
}

#[tokio::test]
async fn streamed_tool_call_fragments_reassemble() {
    let server = ModelServer::start().await;
    let args = json!({"path": "/tmp/x", "lines": [1, 2]});
    server.push(Reply::Sse(sse_tool_calls(
        &[("call_9", "read_file", args.clone())],
        4,
        5,
    )));
    let a = post(&server, &v1(CHAT), &[], &chat_body()).await;
    let mut joined = String::new();
    let mut finish = None;
    for line in a.text().split("\n\n").filter(|l| !l.is_empty()) {
        let data = line.strip_prefix("data: ").expect("data line");
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).expect("chunk");
        if let Some(f) = v.pointer("/choices/0/delta/tool_calls/0/function/arguments") {
            joined.push_str(f.as_str().expect("fragment"));
        }
        if let Some(f) = v
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
        {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(
        serde_json::from_str::<Value>(&joined).expect("arguments"),
        args
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

/// The data payloads of an SSE body, with their event names.
fn parse_sse(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data.expect("a data line"))
        })
        .collect()
}

#[test]
fn fixtures_are_well_formed() {
    // OpenAI-compatible streams: JSON chunks, then [DONE]; argument fragments join.
    for name in [
        "openai_stream_text",
        "openai_stream_tool_calls",
        "ollama_stream",
        "llamacpp_stream",
    ] {
        let body =
            std::fs::read_to_string(fixtures_dir().join(format!("{name}.sse"))).expect("fixture");
        let events = parse_sse(&body);
        assert_eq!(
            events.last().map(|(_, d)| d.as_str()),
            Some("[DONE]"),
            "{name}"
        );
        let mut args: Vec<String> = Vec::new();
        let mut text = String::new();
        for (event, data) in &events[..events.len() - 1] {
            assert!(event.is_none());
            let v: Value = serde_json::from_str(data).expect("chunk JSON");
            assert_eq!(v["object"], "chat.completion.chunk", "{name}");
            for call in v
                .pointer("/choices/0/delta/tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let i = call["index"].as_u64().expect("index") as usize;
                if args.len() <= i {
                    args.resize(i + 1, String::new());
                }
                args[i].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
            if let Some(t) = v
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                text.push_str(t);
            }
        }
        for a in &args {
            serde_json::from_str::<Value>(a).expect("joined arguments are JSON");
        }
        if name == "openai_stream_tool_calls" {
            assert_eq!(args.len(), 2);
        } else {
            assert_eq!(text, "The capital of France is Paris.", "{name}");
        }
    }
    // Anthropic: named events whose data type is the name; partial_json joins to input.
    let body =
        std::fs::read_to_string(fixtures_dir().join("anthropic_stream.sse")).expect("fixture");
    let mut partial = String::new();
    for (event, data) in parse_sse(&body) {
        let v: Value = serde_json::from_str(&data).expect("event JSON");
        assert_eq!(Some(v["type"].as_str().expect("type")), event.as_deref());
        if let Some(p) = v.pointer("/delta/partial_json") {
            partial.push_str(p.as_str().expect("partial_json"));
        }
    }
    assert_eq!(
        serde_json::from_str::<Value>(&partial).expect("input"),
        json!({"city": "Paris", "unit": "celsius"})
    );
    // JSON fixtures: the documented shapes.
    for name in [
        "openai_text",
        "openai_tool_calls",
        "ollama_text",
        "llamacpp_text",
    ] {
        let v = fixture_json(name);
        assert_eq!(v["object"], "chat.completion", "{name}");
        assert_eq!(v["choices"][0]["index"], 0);
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        let u = &v["usage"];
        assert_eq!(
            u["total_tokens"],
            json!(
                u["prompt_tokens"].as_u64().unwrap_or(0)
                    + u["completion_tokens"].as_u64().unwrap_or(0)
            )
        );
    }
    let calls = fixture_json("openai_tool_calls");
    for call in calls["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect("calls")
    {
        let args = call["function"]["arguments"]
            .as_str()
            .expect("arguments are a string");
        serde_json::from_str::<Value>(args).expect("arguments string is JSON");
    }
    assert!(fixture_json("llamacpp_text")["timings"].is_object());
    assert_eq!(
        fixture_json("ollama_text")["system_fingerprint"],
        "fp_ollama"
    );
    for name in ["anthropic_text", "anthropic_tool_use"] {
        let v = fixture_json(name);
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert!(v["usage"]["input_tokens"].is_u64() && v["usage"]["output_tokens"].is_u64());
    }
    assert_eq!(
        fixture_json("anthropic_tool_use")["content"][1]["input"]["city"],
        "Paris"
    );
}
