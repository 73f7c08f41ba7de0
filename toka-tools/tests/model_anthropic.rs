//! The Anthropic Messages API client against a scripted server on 127.0.0.1
//! (`toka_test_support::model_server`): the recorded answers parse, a conversation with
//! tools goes out in the API's shape (system on top, alternating sides, tool results
//! merged, legal tool names mapped back), streams assemble text and tool input fragments,
//! 429 (honouring `Retry-After`) and 529 are retried, 400 and 401 are not, the API key is
//! in no error, and a model that never answers times out.
#![cfg(feature = "anthropic")]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use toka_test_support::model_server::{
    ModelServer, Reply, anthropic_error, anthropic_sse_text, anthropic_text, anthropic_tool_use,
};
use toka_tools::Secret;
use toka_tools::model::{
    AnthropicClient, ChatMessage, FinishReason, ModelClient, ModelErrorKind, ModelRequest,
    ModelResponse, ModelTimeouts, ModelTool, RetryPolicy, StreamEvent, ToolCall,
};

const KEY: &str = "sk-ant-api03-test-9c1e5b2d8f4a6c0e7f3a";

fn keyed_client(server: &ModelServer) -> AnthropicClient {
    AnthropicClient::builder(server.base_url(), "claude-test")
        .api_key(Secret::new(KEY.as_bytes().to_vec()))
        .retry(RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(3),
        })
        .build()
        .unwrap()
}

fn ask(text: &str) -> ModelRequest {
    ModelRequest::new(vec![
        ChatMessage::system("Be brief."),
        ChatMessage::user(text),
    ])
}

fn tool(name: &str) -> ModelTool {
    ModelTool {
        name: name.into(),
        description: format!("The tool {name}"),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}})
            .to_string(),
    }
}

fn kind_of(error: &toka_tools::Error) -> ModelErrorKind {
    match error {
        toka_tools::Error::Model { kind, .. } => *kind,
        other => panic!("not a model error: {other:?}"),
    }
}

/// Every output of a failed call, for leak checks.
fn assert_no_key(error: &toka_tools::Error) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
        assert!(!text.contains(&KEY[..16]), "part of the key leaked: {text}");
    }
}

fn legal(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[tokio::test]
async fn the_recorded_answers_parse() {
    let server = ModelServer::start().await.with_api_key(KEY);
    let client = keyed_client(&server);

    server.push(Reply::fixture("anthropic_text"));
    let answer = client.complete(&ask("Capital of France?")).await.unwrap();
    assert_eq!(answer.content, "The capital of France is Paris.");
    assert_eq!(answer.finish, FinishReason::Stop);
    assert_eq!(
        (answer.usage.input_tokens, answer.usage.output_tokens),
        (16, 10)
    );
    assert_eq!(answer.model, "claude-sonnet-4-5-20250929");
    assert!(answer.tool_calls.is_empty());

    server.push(Reply::fixture("anthropic_tool_use"));
    let answer = client.complete(&ask("Weather in Paris?")).await.unwrap();
    assert_eq!(
        answer.content,
        "I'll check the current weather in Paris for you."
    );
    assert_eq!(answer.finish, FinishReason::ToolCalls);
    assert_eq!(answer.tool_calls.len(), 1);
    let call = &answer.tool_calls[0];
    assert_eq!(call.id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call.name, "get_weather");
    let input: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(input, json!({"city": "Paris", "unit": "celsius"}));
    assert_eq!(answer.usage.total(), 412 + 74);

    let sent = server.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].path, "/v1/messages");
    assert_eq!(sent[0].header("x-api-key"), Some(KEY));
    assert_eq!(sent[0].header("anthropic-version"), Some("2023-06-01"));
    assert!(
        sent[0]
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    assert!(sent[0].header("authorization").is_none());
    assert_eq!(sent[0].body["model"], "claude-test");
    assert_eq!(sent[0].body["max_tokens"], 4096, "the default max_tokens");
    assert_eq!(sent[0].body["system"], "Be brief.");
    assert_eq!(
        sent[0].body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}])
    );
    assert!(sent[0].body.get("stream").is_none());
}

#[tokio::test]
async fn a_conversation_with_tools_goes_out_in_the_apis_shape() {
    let server = ModelServer::start().await;
    let client = AnthropicClient::builder(server.base_url(), "claude-test")
        .max_tokens_default(256)
        .build()
        .unwrap();
    let long = format!("{}.tool", "very.long.namespace".repeat(5));
    let request = ModelRequest {
        messages: vec![
            ChatMessage::system("You read files."),
            ChatMessage::user("Compare notes/a.txt and notes/b.txt"),
            ChatMessage::assistant(
                "Reading both.",
                vec![
                    ToolCall {
                        id: "toolu_01A".into(),
                        name: "fs.read".into(),
                        arguments: r#"{"path":"notes/a.txt"}"#.into(),
                    },
                    ToolCall {
                        id: "toolu_01B".into(),
                        name: long.clone(),
                        arguments: r#"{"path":"notes/b.txt"}"#.into(),
                    },
                ],
            ),
            ChatMessage::tool_result("toolu_01A", "alpha"),
            ChatMessage::tool_result("toolu_01B", "beta"),
        ],
        tools: vec![tool("fs.read"), tool(&long), tool("shell.exec")],
        max_tokens: None,
        temperature: Some(0.2),
        response_schema: None,
    };
    server.push(Reply::Json(anthropic_tool_use(
        Some("One more."),
        &[("toolu_01C", "shell_exec", json!({"path": "notes"}))],
        120,
        30,
    )));
    let answer = client.complete(&request).await.unwrap();
    assert_eq!(answer.content, "One more.");
    assert_eq!(answer.finish, FinishReason::ToolCalls);
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(answer.tool_calls[0].name, "shell.exec", "mapped back");
    assert_eq!(answer.tool_calls[0].id, "toolu_01C");

    let sent = &server.requests()[0];
    let body = &sent.body;
    assert_eq!(body["system"], "You read files.");
    assert_eq!(body["max_tokens"], 256);
    assert!((body["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    let tools = body["tools"].as_array().unwrap();
    let wire_names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(wire_names.iter().all(|n| legal(n)), "{wire_names:?}");
    assert_eq!(wire_names[0], "fs_read");
    assert_eq!(wire_names[2], "shell_exec");
    assert_eq!(tools[0]["description"], "The tool fs.read");
    assert_eq!(
        tools[0]["input_schema"]["properties"]["path"]["type"],
        "string"
    );

    let messages = body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"], "the sides alternate");
    let assistant = messages[1]["content"].as_array().unwrap();
    assert_eq!(
        assistant[0],
        json!({"type": "text", "text": "Reading both."})
    );
    assert_eq!(
        assistant[1],
        json!({"type": "tool_use", "id": "toolu_01A", "name": "fs_read", "input": {"path": "notes/a.txt"}})
    );
    assert_eq!(assistant[2]["type"], "tool_use");
    assert_eq!(
        assistant[2]["name"], wire_names[1],
        "a call goes out under its tool's wire name"
    );
    assert_eq!(assistant[2]["input"], json!({"path": "notes/b.txt"}));
    assert_eq!(
        messages[2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "alpha"},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "beta"},
        ]),
        "both results in one user message"
    );

    // The call the model made with a mapped name comes back under the Toka name.
    server.push(Reply::Json(anthropic_tool_use(
        None,
        &[("toolu_01D", wire_names[1], json!({}))],
        10,
        2,
    )));
    let answer = client.complete(&request).await.unwrap();
    assert_eq!(answer.tool_calls[0].name, long);
    assert_eq!(answer.tool_calls[0].arguments, "{}");
    assert_eq!(answer.content, "");
}

/// The events of a stream, and its final answer.
async fn collect(
    client: &AnthropicClient,
    request: &ModelRequest,
) -> (Vec<StreamEvent>, ModelResponse) {
    let mut stream = client.stream(request).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.unwrap());
    }
    match events.pop() {
        Some(StreamEvent::Done(done)) => (events, done),
        other => panic!("a stream ends with Done, not {other:?}"),
    }
}

#[tokio::test]
async fn streams_assemble_text_and_input_json_fragments() {
    let server = ModelServer::start().await.with_api_key(KEY);
    let client = keyed_client(&server);
    let mut request = ask("Weather in Paris?");
    request.tools = vec![ModelTool {
        name: "get_weather".into(),
        description: "The weather".into(),
        parameters: r#"{"type":"object"}"#.into(),
    }];

    server.push(Reply::fixture("anthropic_stream"));
    let (events, done) = collect(&client, &request).await;
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "I'll check the current weather in Paris for you.");
    assert_eq!(done.content, text);
    assert!(events.contains(&StreamEvent::ToolCallStarted {
        index: 0,
        id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
        name: "get_weather".into(),
    }));
    let fragments: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallArguments { index: 0, fragment } => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(fragments.len(), 3, "in pieces, the empty one skipped");
    assert_eq!(done.tool_calls.len(), 1);
    assert_eq!(done.tool_calls[0].arguments, fragments.concat());
    let input: Value = serde_json::from_str(&done.tool_calls[0].arguments).unwrap();
    assert_eq!(input, json!({"city": "Paris", "unit": "celsius"}));
    assert_eq!(done.finish, FinishReason::ToolCalls);
    assert_eq!(
        (done.usage.input_tokens, done.usage.output_tokens),
        (412, 74)
    );
    assert_eq!(done.model, "claude-sonnet-4-5-20250929");
    let sent = &server.requests()[0];
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.header("x-api-key"), Some(KEY));

    server.push(Reply::SseEvents(anthropic_sse_text(
        &["Hel", "lo", "!"],
        9,
        3,
    )));
    let (events, done) = collect(&client, &ask("Hi")).await;
    assert_eq!(
        events,
        ["Hel", "lo", "!"].map(|t| StreamEvent::Text(t.into()))
    );
    assert_eq!(done.content, "Hello!");
    assert_eq!(done.finish, FinishReason::Stop);
    assert_eq!((done.usage.input_tokens, done.usage.output_tokens), (9, 3));

    // An error event mid-stream ends it with an error item.
    let mut events = anthropic_sse_text(&["Hel"], 9, 3);
    events.truncate(4);
    events.push((
        "error".into(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            .to_string(),
    ));
    server.push(Reply::SseEvents(events));
    let mut stream = client.stream(&ask("Hi")).await.unwrap();
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    assert!(matches!(items[0], Ok(StreamEvent::Text(_))), "{items:?}");
    let Some(Err(error)) = items.last() else {
        panic!("the stream ends with the error: {items:?}")
    };
    assert_eq!(kind_of(error), ModelErrorKind::Server);
    assert!(error.to_string().contains("Overloaded"), "{error}");
}

#[tokio::test]
async fn rate_limits_and_overload_are_retried_honouring_retry_after() {
    let server = ModelServer::start().await.with_api_key(KEY);
    let client = keyed_client(&server);
    server.push(Reply::Status {
        status: 429,
        body: anthropic_error(
            "rate_limit_error",
            "This request would exceed the rate limit for your organization",
        ),
        retry_after: Some(1),
    });
    server.push(Reply::Status {
        status: 529,
        body: anthropic_error("overloaded_error", "Overloaded"),
        retry_after: None,
    });
    server.push(Reply::Json(anthropic_text("at last", 5, 2)));
    let started = Instant::now();
    let answer = client.complete(&ask("hi")).await.unwrap();
    assert_eq!(answer.content, "at last");
    assert_eq!(server.requests().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured ({:?})",
        started.elapsed()
    );

    // Retries are bounded: 2 retries, then the 529 is the caller's.
    for _ in 0..3 {
        server.push(Reply::Status {
            status: 529,
            body: anthropic_error("overloaded_error", "Overloaded"),
            retry_after: None,
        });
    }
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert_eq!(kind_of(&error), ModelErrorKind::Server, "{error:?}");
    assert!(error.to_string().contains("Overloaded"), "{error}");
    assert_eq!(server.requests().len(), 6);
    assert_eq!(server.queued(), 0);
}

#[tokio::test]
async fn a_refused_key_or_request_is_not_retried_and_the_key_is_in_no_error() {
    let server = ModelServer::start()
        .await
        .with_api_key("another-key-entirely");
    let client = keyed_client(&server);
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert_eq!(kind_of(&error), ModelErrorKind::Unauthorized, "{error:?}");
    assert!(
        !error.to_string().contains("invalid x-api-key"),
        "the provider's words are not quoted: {error}"
    );
    assert_no_key(&error);
    assert_eq!(server.requests().len(), 1, "401 is not retried");
    let Err(error) = client.stream(&ask("hi")).await else {
        panic!("a refused key fails the stream")
    };
    assert_eq!(kind_of(&error), ModelErrorKind::Unauthorized);
    assert_no_key(&error);

    let server = ModelServer::start().await;
    let client = keyed_client(&server);
    server.push(Reply::Status {
        status: 400,
        body: anthropic_error(
            "invalid_request_error",
            &format!("messages: roles must alternate (key {KEY})"),
        ),
        retry_after: None,
    });
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert_eq!(kind_of(&error), ModelErrorKind::BadRequest, "{error:?}");
    assert!(
        error.to_string().contains("roles must alternate"),
        "{error}"
    );
    assert_no_key(&error);
    assert_eq!(server.requests().len(), 1, "400 is not retried");
    assert!(!format!("{client:?}").contains(KEY));
}

#[tokio::test]
async fn a_model_that_never_answers_times_out() {
    let server = ModelServer::start().await;
    let client = AnthropicClient::builder(server.base_url(), "claude-test")
        .timeouts(ModelTimeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_millis(300),
        })
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    server.push(Reply::Hang);
    let started = Instant::now();
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert_eq!(kind_of(&error), ModelErrorKind::Timeout, "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    server.push(Reply::Hang);
    let Err(error) = client.stream(&ask("hi")).await else {
        panic!("a stream that never starts times out")
    };
    assert_eq!(kind_of(&error), ModelErrorKind::Timeout, "{error:?}");

    // A stream that starts and then stalls.
    let events: Vec<String> = anthropic_sse_text(&["a", "b"], 1, 1)
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    server.push(Reply::SlowSse {
        events,
        every: Duration::from_secs(2),
    });
    let mut stream = client.stream(&ask("hi")).await.unwrap();
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    match last {
        Some(Err(error)) => assert_eq!(kind_of(&error), ModelErrorKind::Timeout),
        other => panic!("the stalled stream times out, not {other:?}"),
    }
}

#[tokio::test]
async fn bad_configuration_is_refused_up_front() {
    for (url, key, max_tokens) in [
        ("ftp://127.0.0.1/v1", None, 10),
        ("http://127.0.0.1/v1", Some("key with spaces"), 10),
        ("http://127.0.0.1/v1", Some(""), 10),
        ("http://127.0.0.1/v1", None, 0),
    ] {
        let mut builder = AnthropicClient::builder(url, "m").max_tokens_default(max_tokens);
        if let Some(key) = key {
            builder = builder.api_key(Secret::new(key.as_bytes().to_vec()));
        }
        let error = builder.build().unwrap_err();
        assert_eq!(
            kind_of(&error),
            ModelErrorKind::Config,
            "{url} {key:?} {max_tokens}"
        );
    }
}
