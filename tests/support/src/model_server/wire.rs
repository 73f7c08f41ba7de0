//! Builders of common response bodies, in the shapes the real APIs send (field for field,
//! including fields a client is expected to ignore, such as `refusal`, `logprobs`,
//! `service_tier` and the token-detail objects).
//!
//! - OpenAI Chat Completions: [`chat_text`], [`chat_tool_calls`], [`sse_text`],
//!   [`sse_text_with_usage`], [`sse_tool_calls`], [`openai_error`];
//! - Anthropic Messages: [`anthropic_text`], [`anthropic_tool_use`],
//!   [`anthropic_sse_text`], [`anthropic_error`].
//!
//! Ids are fresh on every call, in each provider's format (`chatcmpl-…`, `call_…`,
//! `msg_01…`, `toolu_01…`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::rng::Rng;

/// The model the OpenAI builders report.
pub const OPENAI_MODEL: &str = "gpt-4o-mini-2024-07-18";
/// The `system_fingerprint` the OpenAI builders report.
pub const OPENAI_FINGERPRINT: &str = "fp_560af6e559";
/// The model the Anthropic builders report.
pub const ANTHROPIC_MODEL: &str = "claude-sonnet-4-5-20250929";

/// A fresh random string of `len` base-62 characters.
fn base62(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng::splitmix(now_nanos() ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..len)
        .map(|_| ALPHABET[(rng.next() % 62) as usize] as char)
        .collect()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// OpenAI's usage object.
fn openai_usage(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn chat_completion(message: Value, finish_reason: &str, usage: Value) -> Value {
    json!({
        "id": format!("chatcmpl-{}", base62(29)),
        "object": "chat.completion",
        "created": now_secs(),
        "model": OPENAI_MODEL,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": OPENAI_FINGERPRINT
    })
}

/// An OpenAI `chat.completion` whose assistant message is the text `content`
/// (`finish_reason: "stop"`).
pub fn chat_text(content: &str, prompt_tokens: u32, completion_tokens: u32) -> Value {
    chat_completion(
        json!({"role": "assistant", "content": content, "refusal": null, "annotations": []}),
        "stop",
        openai_usage(prompt_tokens, completion_tokens),
    )
}

/// An OpenAI `chat.completion` whose assistant message calls tools: each `(id, name,
/// arguments)` becomes `{"id", "type": "function", "function": {"name", "arguments"}}`
/// with the arguments serialized as a JSON *string*, as OpenAI sends them; `content` is
/// `null` and `finish_reason` is `"tool_calls"`.
pub fn chat_tool_calls(
    calls: &[(&str, &str, Value)],
    prompt_tokens: u32,
    completion_tokens: u32,
) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, arguments)| {
            json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()}
            })
        })
        .collect();
    chat_completion(
        json!({
            "role": "assistant",
            "content": null,
            "tool_calls": tool_calls,
            "refusal": null,
            "annotations": []
        }),
        "tool_calls",
        openai_usage(prompt_tokens, completion_tokens),
    )
}

/// The frame of the chunks of one OpenAI stream.
struct ChunkStream {
    id: String,
    created: u64,
}

impl ChunkStream {
    fn new() -> Self {
        ChunkStream {
            id: format!("chatcmpl-{}", base62(29)),
            created: now_secs(),
        }
    }

    /// A chunk with `choices` (and `"usage": null`, as sent under
    /// `stream_options.include_usage`).
    fn chunk(&self, choices: Value, usage: Value) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": OPENAI_MODEL,
            "service_tier": "default",
            "system_fingerprint": OPENAI_FINGERPRINT,
            "choices": choices,
            "usage": usage
        })
        .to_string()
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> String {
        self.chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
            Value::Null,
        )
    }

    /// The closing chunks: `finish_reason`, the usage chunk (empty `choices`), `[DONE]`.
    fn close(&self, out: &mut Vec<String>, finish_reason: &str, prompt: u32, completion: u32) {
        out.push(self.delta(json!({}), Some(finish_reason)));
        out.push(self.chunk(json!([]), openai_usage(prompt, completion)));
        out.push("[DONE]".to_owned());
    }
}

/// The data payloads of an OpenAI stream of the text `chunks`, for
/// [`Reply::Sse`](crate::model_server::Reply::Sse): a first chunk with `role`, one chunk per text
/// chunk, a chunk with `finish_reason: "stop"`, the usage chunk (empty `choices`, as
/// with `stream_options.include_usage`), then `"[DONE]"`. Usage: 10 prompt tokens, one
/// completion token per chunk; see [`sse_text_with_usage`].
pub fn sse_text(chunks: &[&str]) -> Vec<String> {
    sse_text_with_usage(chunks, 10, chunks.len() as u32)
}

/// [`sse_text`] with the given token counts in the usage chunk.
pub fn sse_text_with_usage(
    chunks: &[&str],
    prompt_tokens: u32,
    completion_tokens: u32,
) -> Vec<String> {
    let s = ChunkStream::new();
    let mut out = vec![s.delta(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )];
    out.extend(chunks.iter().map(|c| s.delta(json!({"content": c}), None)));
    s.close(&mut out, "stop", prompt_tokens, completion_tokens);
    out
}

/// Splits `text` into pieces of at most `n` characters (on character boundaries).
fn fragments(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// The data payloads of an OpenAI stream of tool calls: per call, a chunk with its
/// `index`, `id`, `type` and `name` and empty `arguments`, then the serialized arguments
/// in fragments of 5 characters (split mid-token, as OpenAI does), each with only
/// `index` and `function.arguments`; then `finish_reason: "tool_calls"`, the usage chunk
/// and `"[DONE]"`.
pub fn sse_tool_calls(
    calls: &[(&str, &str, Value)],
    prompt_tokens: u32,
    completion_tokens: u32,
) -> Vec<String> {
    let s = ChunkStream::new();
    let mut out = Vec::new();
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        let head = json!([{
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": ""}
        }]);
        let delta = if index == 0 {
            json!({"role": "assistant", "content": null, "tool_calls": head, "refusal": null})
        } else {
            json!({"tool_calls": head})
        };
        out.push(s.delta(delta, None));
        for piece in fragments(&arguments.to_string(), 5) {
            out.push(s.delta(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    s.close(&mut out, "tool_calls", prompt_tokens, completion_tokens);
    out
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn openai_error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// Anthropic's usage object of a whole message.
fn anthropic_usage(input_tokens: u32, output_tokens: u32) -> Value {
    json!({
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

fn anthropic_message(content: Value, stop_reason: Value, usage: Value) -> Value {
    json!({
        "id": format!("msg_01{}", base62(22)),
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage
    })
}

/// An Anthropic `message` with one text block (`stop_reason: "end_turn"`).
pub fn anthropic_text(text: &str, input_tokens: u32, output_tokens: u32) -> Value {
    anthropic_message(
        json!([{"type": "text", "text": text}]),
        json!("end_turn"),
        anthropic_usage(input_tokens, output_tokens),
    )
}

/// An Anthropic `message` that uses tools: an optional text block first, then one
/// `tool_use` block per `(id, name, input)` with `input` as a JSON object (not a
/// string); `stop_reason: "tool_use"`.
pub fn anthropic_tool_use(
    text: Option<&str>,
    calls: &[(&str, &str, Value)],
    input_tokens: u32,
    output_tokens: u32,
) -> Value {
    let mut content: Vec<Value> = text
        .map(|t| json!({"type": "text", "text": t}))
        .into_iter()
        .collect();
    content.extend(calls.iter().map(
        |(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input}),
    ));
    anthropic_message(
        Value::Array(content),
        json!("tool_use"),
        anthropic_usage(input_tokens, output_tokens),
    )
}

/// The events of an Anthropic stream of the text `chunks`, for
/// [`Reply::SseEvents`](crate::model_server::Reply::SseEvents): `message_start`,
/// `content_block_start`, a `ping`, one `content_block_delta` (`text_delta`) per chunk,
/// `content_block_stop`, `message_delta` (`stop_reason: "end_turn"`, usage) and
/// `message_stop`.
pub fn anthropic_sse_text(
    chunks: &[&str],
    input_tokens: u32,
    output_tokens: u32,
) -> Vec<(String, String)> {
    // message_start reports the input tokens and a provisional output count of 1.
    let start = anthropic_message(json!([]), Value::Null, anthropic_usage(input_tokens, 1));
    let mut out = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": start}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    out.extend(chunks.iter().map(|c| {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}}),
        )
    }));
    out.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push((
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}
        }),
    ));
    out.push(("message_stop", json!({"type": "message_stop"})));
    out.into_iter()
        .map(|(name, data)| (name.to_owned(), data.to_string()))
        .collect()
}

/// Anthropic's error body: `{"type": "error", "error": {"type", "message"},
/// "request_id"}` (`kind` e.g. `invalid_request_error`, `authentication_error`,
/// `rate_limit_error`, `api_error`, `overloaded_error`).
pub fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": format!("req_011C{}", base62(20))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_arguments_are_a_json_string() {
        let v = chat_tool_calls(&[("call_1", "add", json!({"a": 1}))], 5, 6);
        let args = &v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"];
        assert_eq!(args, &json!("{\"a\":1}"));
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 11);
    }

    #[test]
    fn streamed_arguments_reassemble() {
        let args = json!({"city": "Paris", "unit": "celsius"});
        let events = sse_tool_calls(&[("call_1", "weather", args.clone())], 5, 6);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let mut joined = String::new();
        for e in &events[..events.len() - 1] {
            let v: Value = serde_json::from_str(e).expect("chunk is JSON");
            if let Some(frag) = v.pointer("/choices/0/delta/tool_calls/0/function/arguments") {
                joined.push_str(frag.as_str().expect("string"));
            }
        }
        assert_eq!(serde_json::from_str::<Value>(&joined).ok(), Some(args));
    }

    #[test]
    fn ids_differ() {
        let a = chat_text("x", 1, 1);
        let b = chat_text("x", 1, 1);
        assert_ne!(a["id"], b["id"]);
        assert!(
            a["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("chatcmpl-"))
        );
    }
}
