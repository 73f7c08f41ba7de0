//! `reactor`: declarative observe → act. It subscribes to one topic; for each event that
//! matches its condition it renders a templated tool input from the event, calls the tool
//! holding its own capability token (journaled: the call runs at most once across crashes
//! and replays), and publishes the outcome to another topic.
//!
//! Args:
//! ```json
//! {"subscribe": "topic.in",
//!  "when": {"pointer": "/level", "equals": "error"},
//!  "tool": "fs.write",
//!  "input": {"path": "alerts/{{/id}}.txt", "content": "{{/message}}"},
//!  "token": "<capability token>",
//!  "publish": "topic.out"}
//! ```
//! `when` is optional (absent: every event matches); without `equals` it matches when the
//! pointer exists. `publish` is optional (absent: outcomes are only returned to askers).
//!
//! `token` is given in clear over the API; the node seals it (`toka-sealed:v1:…`) before the
//! spawn is journaled, and the reactor opens it with the node's [`Sealer`] when it starts,
//! so the token never sits in the journal in clear. A reactor with a sealer refuses a token
//! in clear (it would have been journaled in clear).
//!
//! **Topics carry JSON text**: the reactor subscribes with a `Topic<String>` whose messages
//! are JSON documents as text (postcard encodes them as length-prefixed UTF-8). A message
//! that is not valid JSON is taken as a JSON string. Publications are JSON text too:
//! `{"event": EVENT, "output": OUTPUT}` or `{"event": EVENT, "error": {"kind", "message"}}`.
//!
//! Messages: any JSON value sent to the reactor directly (e.g. over the API) is handled as
//! an event, like one from the topic. Reply: the publication, or `null` if the event did
//! not match.
//!
//! Templates: see [`render`]. A placeholder whose pointer is missing from the event is an
//! error: the tool is not called and an `error` of kind `"Template"` is published.

use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};
use toka_actors::{Agent, AgentError, Context, StartContext, Topic};
use toka_tools::{Capability, Sealer, ToolCalls};

/// A JSON value that is JSON in human-readable formats (the API) and JSON *text* in
/// binary ones (postcard, the journal), which cannot carry self-describing values.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct JsonValue(pub(crate) Value);

impl Serialize for JsonValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            s.serialize_str(&self.0.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Value::deserialize(d).map(JsonValue)
        } else {
            let text = String::deserialize(d)?;
            serde_json::from_str(&text)
                .map(JsonValue)
                .map_err(D::Error::custom)
        }
    }
}

/// The `reactor` kind. With a [`Sealer`] (as the node registers it) its token must be
/// sealed: the node seals every token in spawn arguments and messages before they are
/// journaled, so a token in clear here means it was journaled in clear, and is refused.
#[derive(Default)]
pub(crate) struct Reactor {
    sealer: Option<Sealer>,
}

impl Reactor {
    /// A reactor kind that opens sealed tokens with `sealer`.
    pub(crate) fn new(sealer: Option<Sealer>) -> Self {
        Reactor { sealer }
    }

    /// The capability that `text` (the `token` argument) stands for.
    fn capability(&self, text: &str) -> Result<Capability, AgentError> {
        Sealer::open_capability(self.sealer.as_ref(), text, "reactor").map_err(AgentError::msg)
    }
}

/// A reactor's arguments, and the capability its token stands for.
#[derive(Debug)]
pub(crate) struct Armed {
    args: ReactorArgs,
    token: Capability,
}

/// When an event matches.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Condition {
    /// A JSON pointer into the event (`""`: the whole event).
    pub(crate) pointer: String,
    /// The value it must equal; `None`: it must exist.
    #[serde(default)]
    pub(crate) equals: Option<JsonValue>,
}

impl Condition {
    fn matches(&self, event: &Value) -> bool {
        match (event.pointer(&self.pointer), &self.equals) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(found), Some(JsonValue(want))) => found == want,
        }
    }
}

/// A reactor's arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReactorArgs {
    /// The topic it observes.
    pub(crate) subscribe: String,
    /// Which events it acts on (`None`: all).
    #[serde(default)]
    pub(crate) when: Option<Condition>,
    /// The tool it calls.
    pub(crate) tool: String,
    /// The tool input template.
    pub(crate) input: JsonValue,
    /// The capability token it holds for the call: sealed (`toka-sealed:v1:…`, as the
    /// node journals it) or, for a reactor without a sealer, in clear.
    pub(crate) token: String,
    /// The topic it publishes outcomes to (`None`: none).
    #[serde(default)]
    pub(crate) publish: Option<String>,
}

/// A reactor's message: an event (any JSON value).
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct ReactorEvent(pub(crate) JsonValue);

impl From<String> for ReactorEvent {
    /// A topic message: JSON text; anything else is taken as a JSON string.
    fn from(text: String) -> Self {
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        ReactorEvent(JsonValue(value))
    }
}

/// Why rendering a template failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError(pub(crate) String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Renders `template` against `event`: in every string leaf (object keys are left alone),
/// each `{{POINTER}}` — `POINTER` empty or starting with `/`, a JSON pointer — is replaced
/// by the event's value there: a string as its text, anything else as its JSON text. A
/// leaf that is exactly one placeholder becomes the value itself (keeping its type).
/// Inserted text is never scanned again, so values containing `{{…}}` are not expanded.
/// `{{` not followed by a pointer and `}}` is kept literally.
///
/// # Errors
/// A placeholder whose pointer is not in the event.
pub(crate) fn render(template: &Value, event: &Value) -> Result<Value, TemplateError> {
    Ok(match template {
        Value::String(text) => render_str(text, event)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render(item, event))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), render(v, event)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// The pointer of a placeholder starting at `rest` (just after `{{`), and its length up to
/// and including `}}`.
fn placeholder(rest: &str) -> Option<(&str, usize)> {
    let end = rest.find("}}")?;
    let pointer = &rest[..end];
    (pointer.is_empty() || pointer.starts_with('/')).then_some((pointer, end + 2))
}

fn lookup<'e>(event: &'e Value, pointer: &str) -> Result<&'e Value, TemplateError> {
    event
        .pointer(pointer)
        .ok_or_else(|| TemplateError(format!("the event has no value at {pointer:?}")))
}

fn render_str(text: &str, event: &Value) -> Result<Value, TemplateError> {
    if let Some(rest) = text.strip_prefix("{{")
        && let Some((pointer, len)) = placeholder(rest)
        && len == rest.len()
    {
        return lookup(event, pointer).cloned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match placeholder(after) {
            Some((pointer, len)) => {
                match lookup(event, pointer)? {
                    Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[len..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

impl Agent for Reactor {
    const KIND: &'static str = "reactor";
    type Args = ReactorArgs;
    type Msg = ReactorEvent;
    type Reply = JsonValue;
    /// The arguments and the opened token, kept for the handler.
    type State = Arc<Armed>;

    fn init(&self, args: &ReactorArgs) -> Result<Arc<Armed>, AgentError> {
        Ok(Arc::new(Armed {
            token: self.capability(&args.token)?,
            args: args.clone(),
        }))
    }

    async fn on_start(
        &self,
        cx: &mut StartContext<'_, Self>,
        armed: &mut Arc<Armed>,
    ) -> Result<(), AgentError> {
        cx.subscribe(&Topic::<String>::new(armed.args.subscribe.as_str()));
        Ok(())
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        armed: &mut Arc<Armed>,
        ReactorEvent(JsonValue(event)): ReactorEvent,
    ) -> Result<JsonValue, AgentError> {
        let (args, token) = (&armed.args, &armed.token);
        if let Some(when) = &args.when
            && !when.matches(&event)
        {
            return Ok(JsonValue(Value::Null));
        }
        let outcome = match render(&args.input.0, &event) {
            Err(e) => Err(json!({"kind": "Template", "message": e.0})),
            Ok(input) => cx
                .call_tool::<Value, Value>(&args.tool, token, &input)
                .await
                .map_err(|e| json!({"kind": e.kind, "message": e.message})),
        };
        let publication = match outcome {
            Ok(output) => json!({"event": event, "output": output}),
            Err(error) => json!({"event": event, "error": error}),
        };
        if let Some(topic) = &args.publish {
            cx.publish(
                &Topic::<String>::new(topic.as_str()),
                &publication.to_string(),
            )
            .await
            .map_err(|e| AgentError::msg(format!("publishing to {topic:?}: {e}")))?;
        }
        Ok(JsonValue(publication))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use toka_actors::{Runtime, SpawnSpec};
    use toka_store::{JournalConfig, MemoryJournal};
    use toka_tools::{Authority, Caveat, SideEffect, Tool, ToolContext, ToolError, ToolHost};

    use super::*;

    #[test]
    fn render_replaces_placeholders_in_string_leaves() {
        let event = json!({"id": 7, "message": "disk full", "tags": ["a"], "a/b": "x"});
        let template = json!({
            "path": "alerts/{{/id}}.txt",
            "content": "{{/message}}",
            "whole": "{{/tags}}",
            "mixed": "tags={{/tags}} esc={{/a~1b}}",
            "literal": "{{not a pointer}} {{ and {{/id",
            "n": 1,
            "list": ["{{/id}}", true],
            "{{/id}}": "keys are not rendered"
        });
        let out = render(&template, &event).unwrap();
        assert_eq!(
            out,
            json!({
                "path": "alerts/7.txt",
                "content": "disk full",
                "whole": ["a"],
                "mixed": "tags=[\"a\"] esc=x",
                "literal": "{{not a pointer}} {{ and {{/id",
                "n": 1,
                "list": [7, true],
                "{{/id}}": "keys are not rendered"
            })
        );
        assert_eq!(render(&json!("{{}}"), &event).unwrap(), event);
    }

    #[test]
    fn render_does_not_expand_inserted_values() {
        let event = json!({"x": "secret", "evil": "{{/x}}", "nested": "{{/evil}}"});
        let out = render(
            &json!(["{{/evil}}", "a {{/evil}} b", "{{/nested}}"]),
            &event,
        );
        assert_eq!(out.unwrap(), json!(["{{/x}}", "a {{/x}} b", "{{/evil}}"]));
    }

    #[test]
    fn render_fails_on_a_missing_pointer() {
        let err = render(&json!({"p": "a {{/nope}}"}), &json!({})).unwrap_err();
        assert!(err.0.contains("/nope"), "{err}");
    }

    #[test]
    fn json_values_survive_postcard() {
        let v = JsonValue(json!({"a": [1, 2.5, null, "s"]}));
        let bytes = postcard::to_allocvec(&v).unwrap();
        assert_eq!(postcard::from_bytes::<JsonValue>(&bytes).unwrap(), v);
    }

    /// `record`: stores its input, returns `{"seen": N}`.
    #[derive(Clone, Default)]
    struct Record(Arc<Mutex<Vec<Value>>>);

    impl Tool for Record {
        type Input = Value;
        type Output = Value;
        fn name(&self) -> &str {
            "record"
        }
        fn description(&self) -> &str {
            "Records its input."
        }
        fn input_schema(&self) -> Value {
            json!({})
        }
        fn side_effect(&self) -> SideEffect {
            SideEffect::External
        }
        async fn invoke(&self, input: Value, _cx: ToolContext) -> Result<Value, ToolError> {
            let mut seen = self.0.lock().unwrap();
            seen.push(input);
            Ok(json!({"seen": seen.len()}))
        }
    }

    /// `sink`: subscribes to `out` and keeps what arrives.
    struct Sink(Arc<Mutex<Vec<Value>>>);

    impl Agent for Sink {
        const KIND: &'static str = "sink";
        type Args = ();
        type Msg = String;
        type Reply = ();
        type State = ();
        fn init(&self, _: &()) -> Result<(), AgentError> {
            Ok(())
        }
        async fn on_start(
            &self,
            cx: &mut StartContext<'_, Self>,
            _: &mut (),
        ) -> Result<(), AgentError> {
            cx.subscribe(&Topic::<String>::new("out"));
            Ok(())
        }
        async fn handle(
            &self,
            _: &mut Context<'_, Self>,
            _: &mut (),
            msg: String,
        ) -> Result<(), AgentError> {
            self.0
                .lock()
                .unwrap()
                .push(serde_json::from_str(&msg).unwrap());
            Ok(())
        }
    }

    async fn wait_for(seen: &Mutex<Vec<Value>>, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            if seen.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.lock().unwrap().clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reactor_calls_the_tool_and_publishes_outcomes() {
        let authority = Authority::from_secret(b"a secret for the reactor tests!!");
        let good = authority
            .mint([Caveat::Tool("record".parse().unwrap())])
            .unwrap();
        let denied = authority
            .mint([Caveat::Tool("other".parse().unwrap())])
            .unwrap();
        let record = Record::default();
        let host = ToolHost::builder(authority.clone())
            .tool(record.clone())
            .start()
            .await
            .unwrap();
        let journal = Arc::new(MemoryJournal::new(JournalConfig::default()).unwrap());
        let published = Arc::new(Mutex::new(Vec::new()));
        let sealer = Sealer::from_key(&[3; 32]);
        let runtime = Runtime::builder(journal.clone())
            .extension(host)
            .register(Reactor::new(Some(sealer.clone())))
            .register(Sink(published.clone()))
            .start()
            .await
            .unwrap();
        runtime
            .spawn::<Sink>(SpawnSpec::new("sink").unwrap(), ())
            .await
            .unwrap();
        let clear = |token: &Capability, topic: &str| {
            json!({
                "subscribe": topic,
                "when": {"pointer": "/level", "equals": "error"},
                "tool": "record",
                "input": {"path": "alerts/{{/id}}.txt", "content": "{{/message}}"},
                "token": token,
                "publish": "out"
            })
        };
        let args = |token: &Capability, topic: &str| {
            let mut args = clear(token, topic);
            assert_eq!(sealer.seal_tokens(&mut args), 1);
            args
        };
        // A token in clear is refused by a sealing reactor.
        let in_clear = authority
            .mint([Caveat::Tool("record".parse().unwrap())])
            .unwrap();
        let refused = runtime
            .spawn_json(
                None,
                "reactor",
                SpawnSpec::new("r0").unwrap(),
                clear(&in_clear, "in"),
            )
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("must be sealed"), "{refused}");
        runtime
            .spawn_json(
                None,
                "reactor",
                SpawnSpec::new("r1").unwrap(),
                args(&good, "in"),
            )
            .await
            .unwrap();
        let input = Topic::<String>::new("in");

        // A non-matching event does nothing.
        let quiet = json!({"level": "info", "id": 1, "message": "fine"});
        runtime.publish(&input, &quiet.to_string()).await.unwrap();
        // A matching one calls the tool with the rendered input and publishes the output.
        let loud = json!({"level": "error", "id": 2, "message": "disk {{/id}} full"});
        runtime.publish(&input, &loud.to_string()).await.unwrap();
        let out = wait_for(&published, 1).await;
        assert_eq!(out, [json!({"event": loud, "output": {"seen": 1}})]);
        assert_eq!(
            *record.0.lock().unwrap(),
            [json!({"path": "alerts/2.txt", "content": "disk {{/id}} full"})]
        );

        // A missing pointer publishes a template error without calling the tool.
        let partial = json!({"level": "error", "id": 3});
        runtime.publish(&input, &partial.to_string()).await.unwrap();
        let out = wait_for(&published, 2).await;
        assert_eq!(out[1]["error"]["kind"], "Template", "{out:?}");
        assert_eq!(record.0.lock().unwrap().len(), 1);

        // A reactor holding a token that does not allow the tool publishes the denial.
        runtime
            .spawn_json(
                None,
                "reactor",
                SpawnSpec::new("r2").unwrap(),
                args(&denied, "in2"),
            )
            .await
            .unwrap();
        let loud2 = json!({"level": "error", "id": 4, "message": "m"});
        runtime
            .publish(&Topic::<String>::new("in2"), &loud2.to_string())
            .await
            .unwrap();
        let out = wait_for(&published, 3).await;
        assert_eq!(out[2]["event"], loud2);
        assert_eq!(out[2]["error"]["kind"], "Denied", "{out:?}");
        assert_eq!(record.0.lock().unwrap().len(), 1);

        // Sent directly (as the API would), an event is handled the same and the
        // publication is the reply; a non-matching one replies null.
        let id = toka_actors::AgentId::new("r1").unwrap();
        let reply = runtime
            .ask_json(&id, loud.clone(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(reply, json!({"event": loud, "output": {"seen": 2}}));
        let reply = runtime
            .ask_json(&id, quiet, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(reply, Value::Null);
        assert_eq!(wait_for(&published, 4).await.len(), 4);
        runtime.shutdown().await.unwrap();
        // No record holds a sealed reactor's token in clear.
        let records = toka_store::Journal::read_all(&*journal, 1, usize::MAX).unwrap();
        for token in [good.to_string(), denied.to_string()] {
            assert!(
                records
                    .iter()
                    .all(|e| !String::from_utf8_lossy(&e.payload).contains(&token)),
                "a token was journaled in clear"
            );
        }
    }
}
