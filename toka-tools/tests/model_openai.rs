//! The OpenAI-compatible client against a scripted Chat Completions server on 127.0.0.1
//! (`toka_test_support::model_server`): the wire format of OpenAI, Ollama and llama.cpp's
//! server (JSON and SSE), tool names mapped both ways, retries on 429 (honouring
//! `Retry-After`) and 5xx, no retries of a refused request, timeouts, and an API key that
//! never shows in an error.
#![cfg(feature = "openai")]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use toka_test_support::model_server::{
    ModelServer, Reply, chat_text, chat_tool_calls, openai_error, sse_text_with_usage,
};
use toka_tools::Secret;
use toka_tools::model::{
    ChatMessage, FinishReason, ModelClient, ModelErrorKind, ModelRequest, ModelTimeouts, ModelTool,
    OpenAiClient, RetryPolicy, StreamEvent,
};

const KEY: &str = "sk-test-7f3a9c1e5b2d8f4a6c0e";

fn keyed_client(server: &ModelServer) -> OpenAiClient {
    OpenAiClient::builder(server.base_url(), "test-model")
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

fn fs_read_tool() -> ModelTool {
    ModelTool {
        name: "fs.read".into(),
        description: "Reads a file".into(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}})
            .to_string(),
    }
}

/// Every output of a failed call, for leak checks.
fn assert_no_key(error: &toka_tools::Error) {
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
        assert!(!text.contains(&KEY[..12]), "part of the key leaked: {text}");
    }
}

#[tokio::test]
async fn answers_of_openai_ollama_and_llamacpp_parse_alike() {
    let server = ModelServer::start().await.with_api_key(KEY);
    let client = keyed_client(&server);
    for (fixture, content, input, output) in [
        (
            "openai_text",
            "The capital of France is Paris. It has",
            24,
            29,
        ),
        ("ollama_text", "The capital of France is Paris.", 33, 8),
        ("llamacpp_text", "The capital of France is Paris.", 31, 8),
    ] {
        server.push(Reply::fixture(fixture));
        let answer = client.complete(&ask("Capital of France?")).await.unwrap();
        assert!(answer.content.starts_with(content), "{fixture}: {answer:?}");
        assert_eq!(
            (answer.usage.input_tokens, answer.usage.output_tokens),
            (input, output),
            "{fixture}"
        );
        assert_eq!(answer.finish, FinishReason::Stop, "{fixture}");
        assert!(answer.tool_calls.is_empty());
    }
    let sent = server.requests();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].path, "/v1/chat/completions");
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(sent[0].body["model"], "test-model");
    assert_eq!(sent[0].body["messages"][0]["role"], "system");
    assert_eq!(sent[0].body["messages"][1]["content"], "Capital of France?");
    assert!(sent[0].body.get("stream").is_none());
}

#[tokio::test]
async fn tools_go_out_under_legal_names_and_calls_come_back_under_toka_names() {
    let server = ModelServer::start().await;
    let client = OpenAiClient::builder(server.base_url(), "m")
        .build()
        .unwrap();
    server.push(Reply::Json(chat_tool_calls(
        &[("call_1", "fs_read", json!({"path": "notes/a.txt"}))],
        40,
        12,
    )));
    let mut request = ask("What is in notes/a.txt?");
    request.tools = vec![fs_read_tool()];
    let answer = client.complete(&request).await.unwrap();
    assert_eq!(answer.finish, FinishReason::ToolCalls);
    assert_eq!(answer.tool_calls.len(), 1);
    let call = &answer.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("call_1", "fs.read")
    );
    let arguments: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(arguments, json!({"path": "notes/a.txt"}));
    let sent = &server.requests()[0];
    assert_eq!(sent.body["tools"][0]["type"], "function");
    assert_eq!(sent.body["tools"][0]["function"]["name"], "fs_read");
    assert_eq!(
        sent.body["tools"][0]["function"]["parameters"]["properties"]["path"]["type"],
        "string"
    );
    assert!(
        sent.header("authorization").is_none(),
        "no key configured, none sent"
    );

    // The conversation goes on with the call and its result, under the same wire name.
    server.push(Reply::Json(chat_text("It says hello.", 60, 5)));
    request
        .messages
        .push(ChatMessage::assistant("", answer.tool_calls.clone()));
    request
        .messages
        .push(ChatMessage::tool_result("call_1", "hello"));
    let answer = client.complete(&request).await.unwrap();
    assert_eq!(answer.content, "It says hello.");
    let sent = &server.requests()[1];
    let messages = sent.body["messages"].as_array().unwrap();
    assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], "fs_read");
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], "call_1");
}

/// The events of a stream, and its final answer.
async fn collect(
    client: &OpenAiClient,
    request: &ModelRequest,
) -> (Vec<StreamEvent>, toka_tools::model::ModelResponse) {
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
async fn streams_of_each_server_assemble_to_the_same_answer() {
    let server = ModelServer::start().await;
    let client = OpenAiClient::builder(server.base_url(), "m")
        .build()
        .unwrap();
    for fixture in ["openai_stream_text", "ollama_stream", "llamacpp_stream"] {
        server.push(Reply::fixture(fixture));
        let (events, done) = collect(&client, &ask("Capital of France?")).await;
        let text: String = events
            .iter()
            .map(|e| match e {
                StreamEvent::Text(t) => t.as_str(),
                other => panic!("{fixture}: unexpected {other:?}"),
            })
            .collect();
        assert!(events.len() > 2, "{fixture}: delivered in pieces");
        assert_eq!(text, done.content, "{fixture}");
        assert!(done.content.contains("Paris"), "{fixture}: {done:?}");
        assert_eq!(done.finish, FinishReason::Stop, "{fixture}");
    }
    let sent = server.requests();
    assert_eq!(sent[0].body["stream"], true);
    assert_eq!(sent[0].body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn streamed_tool_call_fragments_are_joined() {
    let server = ModelServer::start().await;
    let client = OpenAiClient::builder(server.base_url(), "m")
        .build()
        .unwrap();
    server.push(Reply::fixture("openai_stream_tool_calls"));
    let (events, done) = collect(&client, &ask("Weather and time in Paris?")).await;
    let started = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::ToolCallStarted { .. }))
        .count();
    assert_eq!(started, 2);
    assert_eq!(done.finish, FinishReason::ToolCalls);
    let names: Vec<&str> = done.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    let weather: serde_json::Value = serde_json::from_str(&done.tool_calls[0].arguments).unwrap();
    assert_eq!(weather["city"], "Paris");
    assert!(done.usage.total() > 0, "the usage chunk is read: {done:?}");

    server.push(Reply::Sse(sse_text_with_usage(&["Hel", "lo"], 9, 2)));
    let (_, done) = collect(&client, &ask("Hi")).await;
    assert_eq!(done.content, "Hello");
    assert_eq!(done.usage.input_tokens, 9);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let server = ModelServer::start().await.with_api_key(KEY);
    let client = keyed_client(&server);
    server.push(Reply::rate_limited(1));
    server.push(Reply::Status {
        status: 503,
        body: openai_error("overloaded", "server_error", None, None),
        retry_after: None,
    });
    server.push(Reply::Json(chat_text("at last", 5, 2)));
    let started = Instant::now();
    let answer = client.complete(&ask("hi")).await.unwrap();
    assert_eq!(answer.content, "at last");
    assert_eq!(server.requests().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured ({:?})",
        started.elapsed()
    );

    // Retries are bounded: 2 retries, then the 500 is the caller's.
    for _ in 0..3 {
        server.push(Reply::Status {
            status: 500,
            body: openai_error("boom", "server_error", None, None),
            retry_after: None,
        });
    }
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert!(
        matches!(
            error,
            toka_tools::Error::Model {
                kind: ModelErrorKind::Server,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("boom"), "{error}");
    assert_eq!(server.requests().len(), 6);
    assert_eq!(server.queued(), 0);
}

#[tokio::test]
async fn a_refused_request_is_not_retried_and_a_refused_key_is_not_quoted() {
    let server = ModelServer::start()
        .await
        .with_api_key("another-key-entirely");
    let client = keyed_client(&server);
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert!(
        matches!(
            error,
            toka_tools::Error::Model {
                kind: ModelErrorKind::Unauthorized,
                ..
            }
        ),
        "{error:?}"
    );
    assert_no_key(&error);
    assert_eq!(server.requests().len(), 1, "401 is not retried");

    let server = ModelServer::start().await;
    let client = keyed_client(&server);
    server.push(Reply::Status {
        status: 400,
        body: openai_error(
            &format!("This model does not exist. (key {KEY})"),
            "invalid_request_error",
            Some("model"),
            Some("model_not_found"),
        ),
        retry_after: None,
    });
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert!(
        matches!(
            error,
            toka_tools::Error::Model {
                kind: ModelErrorKind::BadRequest,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert_no_key(&error);
    assert_eq!(server.requests().len(), 1, "400 is not retried");
    assert!(!format!("{client:?}").contains(KEY));
}

#[tokio::test]
async fn a_model_that_never_answers_times_out() {
    let server = ModelServer::start().await;
    let client = OpenAiClient::builder(server.base_url(), "m")
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
    assert!(
        matches!(
            error,
            toka_tools::Error::Model {
                kind: ModelErrorKind::Timeout,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    server.push(Reply::Hang);
    let Err(error) = client.stream(&ask("hi")).await else {
        panic!("a stream that never starts times out")
    };
    assert!(
        matches!(
            error,
            toka_tools::Error::Model {
                kind: ModelErrorKind::Timeout,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_up_front() {
    for (url, key) in [
        ("ftp://127.0.0.1/v1", None),
        ("127.0.0.1:8080/v1", None),
        ("http://127.0.0.1/v1", Some("key with spaces")),
        ("http://127.0.0.1/v1", Some("")),
    ] {
        let mut builder = OpenAiClient::builder(url, "m");
        if let Some(key) = key {
            builder = builder.api_key(Secret::new(key.as_bytes().to_vec()));
        }
        let error = builder.build().unwrap_err();
        assert!(
            matches!(
                error,
                toka_tools::Error::Model {
                    kind: ModelErrorKind::Config,
                    ..
                }
            ),
            "{url} {key:?}: {error:?}"
        );
    }
}

// Real captures of llama.cpp's server (`llamacpp_real_*`, recorded by
// tests/support/llama/capture.sh: see the fixtures' README). Served byte for byte.

#[tokio::test]
async fn recorded_llama_cpp_answers_parse() {
    let server = ModelServer::start().await;
    let client = OpenAiClient::builder(server.base_url(), "toka-tiny")
        .build()
        .unwrap();

    server.push(Reply::fixture("llamacpp_real_text"));
    let answer = client.complete(&ask("Capital of France?")).await.unwrap();
    assert_eq!(answer.content, "Hello world!");
    assert_eq!(answer.finish, FinishReason::Stop);
    assert_eq!(
        (answer.usage.input_tokens, answer.usage.output_tokens),
        (51, 4)
    );
    assert_eq!(answer.model, "toka-tiny");

    server.push(Reply::fixture("llamacpp_real_length"));
    let answer = client.complete(&ask("Capital of France?")).await.unwrap();
    assert_eq!(answer.content, "Hello world");
    assert_eq!(answer.finish, FinishReason::Length);
    assert_eq!(answer.usage.output_tokens, 2);

    // A tool call: `content: ""` beside `tool_calls`, a 32-character id, arguments a
    // JSON string.
    server.push(Reply::fixture("llamacpp_real_tool_calls"));
    let mut request = ask("Weather in Paris?");
    request.tools = vec![ModelTool {
        name: "get.weather".into(),
        description: "The weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}})
            .to_string(),
    }];
    let answer = client.complete(&request).await.unwrap();
    assert_eq!(answer.finish, FinishReason::ToolCalls);
    assert_eq!(answer.content, "");
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(answer.tool_calls[0].name, "get.weather");
    assert_eq!(answer.tool_calls[0].id, "xylNn5z7dHyq04rAqezfUARQlyl7j3XN");
    let arguments: serde_json::Value =
        serde_json::from_str(&answer.tool_calls[0].arguments).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert_eq!(answer.usage.total(), 338);
}

#[tokio::test]
async fn recorded_llama_cpp_streams_assemble() {
    let server = ModelServer::start().await;
    let client = OpenAiClient::builder(server.base_url(), "toka-tiny")
        .build()
        .unwrap();

    // The first delta has `content: null`; the usage chunk has `choices: []` and timings.
    server.push(Reply::fixture("llamacpp_real_stream"));
    let (events, done) = collect(&client, &ask("Capital of France?")).await;
    assert_eq!(
        events,
        ["Hello", " world", "!"].map(|t| StreamEvent::Text(t.into()))
    );
    assert_eq!(done.content, "Hello world!");
    assert_eq!(done.finish, FinishReason::Stop);
    assert_eq!((done.usage.input_tokens, done.usage.output_tokens), (51, 4));

    // The tool call's head chunk already carries the first argument fragment ("{").
    server.push(Reply::fixture("llamacpp_real_stream_tool_calls"));
    let mut request = ask("Weather in Paris?");
    request.tools = vec![ModelTool {
        name: "get.weather".into(),
        description: "The weather in a city".into(),
        parameters: r#"{"type":"object"}"#.into(),
    }];
    let (events, done) = collect(&client, &request).await;
    assert_eq!(
        events[0],
        StreamEvent::ToolCallStarted {
            index: 0,
            id: "3YVMupxIzqwCpKyJiIUaIR4nzKgEo0T4".into(),
            name: "get.weather".into()
        }
    );
    let fragments: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallArguments { fragment, .. } => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(fragments, ["{", "\"city\": \"", "Paris", "\"}"]);
    assert_eq!(done.finish, FinishReason::ToolCalls);
    assert_eq!(done.tool_calls[0].arguments, r#"{"city": "Paris"}"#);
    assert_eq!(done.usage.total(), 338);
}

#[tokio::test]
async fn a_recorded_llama_cpp_refusal_is_a_bad_request() {
    let server = ModelServer::start().await;
    let client = OpenAiClient::builder(server.base_url(), "toka-tiny")
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    server.push(Reply::Status {
        status: 400,
        body: toka_test_support::model_server::fixture_json("llamacpp_real_error_context"),
        retry_after: None,
    });
    let error = client.complete(&ask("hi")).await.unwrap_err();
    assert!(
        matches!(
            error,
            toka_tools::Error::Model {
                kind: ModelErrorKind::BadRequest,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("request (7512 tokens) exceeds the available context size (1024 tokens)"),
        "{error}"
    );
}
