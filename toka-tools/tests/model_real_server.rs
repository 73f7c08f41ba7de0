//! The OpenAI-compatible client against a REAL model server: llama.cpp's server (as the
//! PyPI package xllamacpp ships it) on 127.0.0.1, serving a tiny generated model whose
//! answers are known in advance (`toka_test_support::llama_server`). Tokenizing,
//! sampling, grammars, tool-call parsing and every byte of JSON and SSE are the real
//! server's: a plain answer with usage and a finish reason, a stream that assembles to
//! the same answer and ends with `Done`, `max_tokens` honoured, tools sent and tool calls
//! parsed back (whole and streamed) and a tool result accepted, and a refusal (400) read.
//!
//! Each test skips (saying so) where xllamacpp is not installed, and fails instead where
//! `TOKA_REQUIRE_LLAMA_SERVER` is set, as `.ci/run` sets it.
#![cfg(feature = "openai")]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use toka_test_support::llama_server::{LlamaServer, MODEL_ALIAS};
use toka_test_support::model_server::{ModelServer, Reply};
use toka_tools::model::{
    ChatMessage, FinishReason, ModelClient, ModelErrorKind, ModelRequest, ModelResponse, ModelTool,
    OpenAiClient, RetryPolicy, StreamEvent,
};

/// A client as an agent would configure it: a broken connection before any answer (e.g.
/// a keep-alive connection the server closed just as it was reused) is retried; a 400 is
/// not.
fn client(server: &LlamaServer) -> OpenAiClient {
    OpenAiClient::builder(server.openai_base_url(), MODEL_ALIAS)
        .retry(RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
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

/// A tool whose wire name (`get_weather`) is the one the tiny model calls; its Toka name
/// has a dot, so the call must be mapped back.
fn weather_tool() -> ModelTool {
    ModelTool {
        name: "get.weather".into(),
        description: "The weather in a city".into(),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        })
        .to_string(),
    }
}

fn ask_weather() -> ModelRequest {
    ModelRequest {
        tools: vec![weather_tool()],
        ..ModelRequest::new(vec![ChatMessage::user("Weather in Paris?")])
    }
}

/// The events of a stream (without its last), and its final answer, which must be last.
async fn collect(
    client: &OpenAiClient,
    request: &ModelRequest,
) -> (Vec<StreamEvent>, ModelResponse) {
    let mut stream = client.stream(request).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.unwrap());
    }
    match events.pop() {
        Some(StreamEvent::Done(done)) => {
            assert!(
                !events.iter().any(|e| matches!(e, StreamEvent::Done(_))),
                "Done comes once, last: {events:?}"
            );
            (events, done)
        }
        other => panic!("a stream ends with Done, not {other:?} (after {events:?})"),
    }
}

fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .map(|e| match e {
            StreamEvent::Text(t) => t.as_str(),
            other => panic!("only text in a plain answer, not {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_real_server_answers_with_usage_and_a_finish_reason() {
    let Some(server) = LlamaServer::start("a_real_server_answers_with_usage_and_a_finish_reason")
    else {
        return;
    };
    let answer = client(&server)
        .complete(&ask("Capital of France?"))
        .await
        .unwrap();
    assert_eq!(answer.content, "Hello world!", "{answer:?}");
    assert_eq!(answer.finish, FinishReason::Stop);
    assert!(answer.tool_calls.is_empty());
    assert_eq!(answer.model, MODEL_ALIAS);
    assert!(
        answer.usage.input_tokens > 5,
        "the prompt was counted: {answer:?}"
    );
    // "Hello", " world", "!" and the end-of-text token, as llama.cpp counts them.
    assert_eq!(answer.usage.output_tokens, 4, "{answer:?}");

    // The recorded capture of the same request parses to the same answer (a new
    // xllamacpp that answers differently shows here: re-capture the fixtures).
    let recorded = ModelServer::start().await;
    recorded.push(Reply::fixture("llamacpp_real_text"));
    let replay = OpenAiClient::builder(recorded.base_url(), MODEL_ALIAS)
        .build()
        .unwrap()
        .complete(&ask("Capital of France?"))
        .await
        .unwrap();
    assert_eq!(
        (&replay.content, &replay.finish, replay.usage.output_tokens),
        (&answer.content, &answer.finish, answer.usage.output_tokens)
    );
}

#[tokio::test]
async fn a_real_stream_assembles_to_the_same_answer_and_ends_with_done() {
    let Some(server) =
        LlamaServer::start("a_real_stream_assembles_to_the_same_answer_and_ends_with_done")
    else {
        return;
    };
    let client = client(&server);
    let whole = client.complete(&ask("Capital of France?")).await.unwrap();
    let (events, done) = collect(&client, &ask("Capital of France?")).await;
    assert_eq!(
        events,
        ["Hello", " world", "!"].map(|t| StreamEvent::Text(t.into())),
        "one delta per token"
    );
    assert_eq!(text_of(&events), done.content);
    assert_eq!(done.content, whole.content);
    assert_eq!(done.finish, FinishReason::Stop);
    assert_eq!(done.model, MODEL_ALIAS);
    // stream_options.include_usage: the server sends a usage chunk, and it is read.
    assert_eq!(done.usage, whole.usage, "{done:?}");
}

#[tokio::test]
async fn max_tokens_cuts_a_real_answer_short() {
    let Some(server) = LlamaServer::start("max_tokens_cuts_a_real_answer_short") else {
        return;
    };
    let client = client(&server);
    let mut request = ask("Capital of France?");
    request.max_tokens = Some(2);
    let answer = client.complete(&request).await.unwrap();
    assert_eq!(answer.content, "Hello world");
    assert_eq!(answer.finish, FinishReason::Length);
    assert_eq!(answer.usage.output_tokens, 2);

    let (events, done) = collect(&client, &request).await;
    assert_eq!(text_of(&events), "Hello world");
    assert_eq!(done.finish, FinishReason::Length);
    assert_eq!(done.usage.output_tokens, 2);

    request.max_tokens = Some(1);
    let answer = client.complete(&request).await.unwrap();
    assert_eq!(
        (answer.content.as_str(), answer.usage.output_tokens),
        ("Hello", 1)
    );
}

#[tokio::test]
async fn tools_reach_a_real_server_and_its_tool_calls_come_back() {
    let Some(server) = LlamaServer::start("tools_reach_a_real_server_and_its_tool_calls_come_back")
    else {
        return;
    };
    let client = client(&server);
    let mut request = ask_weather();

    let answer = client.complete(&request).await.unwrap();
    assert_eq!(answer.finish, FinishReason::ToolCalls, "{answer:?}");
    assert_eq!(answer.content, "");
    assert_eq!(answer.tool_calls.len(), 1, "{answer:?}");
    let call = &answer.tool_calls[0];
    assert_eq!(call.name, "get.weather", "mapped back from get_weather");
    assert!(!call.id.is_empty());
    let arguments: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));

    // Streamed: one call started, its argument fragments join to the same JSON.
    let (events, done) = collect(&client, &request).await;
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallStarted { index, id, name } => Some((*index, id, name)),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!((started[0].0, started[0].2.as_str()), (0, "get.weather"));
    let fragments: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallArguments { index: 0, fragment } => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, StreamEvent::ToolCallArguments { .. }))
            .count()
            > 1,
        "arguments arrive in pieces: {events:?}"
    );
    assert_eq!(done.finish, FinishReason::ToolCalls);
    assert_eq!(done.tool_calls.len(), 1);
    assert_eq!(done.tool_calls[0].arguments, fragments);
    assert_eq!(done.tool_calls[0].id, *started[0].1);
    let streamed: serde_json::Value = serde_json::from_str(&fragments).unwrap();
    assert_eq!(streamed, arguments);
    assert!(done.usage.output_tokens > 0, "{done:?}");

    // The conversation goes on: the server takes the call and its result, as Toka sends
    // them (assistant content null, the tool message naming the call).
    request
        .messages
        .push(ChatMessage::assistant("", answer.tool_calls.clone()));
    request
        .messages
        .push(ChatMessage::tool_result(call.id.clone(), "Sunny, 21 °C"));
    let next = client
        .complete(&request)
        .await
        .unwrap_or_else(|e| panic!("{e:?}; the server's log:\n{}", server.log()));
    assert!(
        next.usage.input_tokens > answer.usage.input_tokens,
        "the call and its result are part of the prompt: {next:?} vs {answer:?}"
    );
}

#[tokio::test]
async fn a_real_servers_refusal_is_a_bad_request_with_its_message() {
    let Some(server) =
        LlamaServer::start("a_real_servers_refusal_is_a_bad_request_with_its_message")
    else {
        return;
    };
    let client = client(&server);
    // Far more than the server's 1024-token context.
    let request = ask(&"word ".repeat(1500));
    for streamed in [false, true] {
        let error = if streamed {
            match client.stream(&request).await {
                Err(error) => error,
                Ok(_) => panic!("a refused stream is an error before any event"),
            }
        } else {
            client.complete(&request).await.unwrap_err()
        };
        match &error {
            toka_tools::Error::Model { kind, message, .. } => {
                assert_eq!(*kind, ModelErrorKind::BadRequest, "{error:?}");
                assert!(
                    message.contains("exceeds the available context size"),
                    "the server's own message: {message}"
                );
            }
            other => panic!("a model error, not {other:?}"),
        }
    }
}
