//! `supervisor`: an agent whose only job is to parent other agents.
//!
//! Args `{"strategy": "one_for_one" | "one_for_all" | "rest_for_one", "max_restarts": N,
//! "within_secs": S}` (defaults `one_for_one`, 3, 5).
//!
//! In the runtime, how an agent supervises its children is part of *its own*
//! [`SpawnSpec`] ([`SpawnSpec::supervision`]), fixed when it is spawned and journaled with
//! the spawn; an agent cannot change it from a handler. So whoever spawns a supervisor must
//! build its spec with [`spawn_spec`], which turns these args into the spec's
//! [`SupervisorSpec`]. (Supervisors spawned *by a supervisor*, through the `spawn`
//! message below, get this automatically.)
//!
//! Children get there either way:
//! - through the runtime API: `Runtime::spawn_json(Some(&supervisor_id), kind, spec,
//!   args)` (any registered kind); or
//! - by message `{"spawn": {"id": ID, "kind": KIND, "args": {...}}}` (args default `{}`),
//!   for the built-in kinds only (`counter`, `supervisor`, `reactor`): a handler can only
//!   spawn a child of a kind known at compile time. Re-spawning an existing child of the
//!   same kind returns it.
//! - `{"stop": ID}` stops a child (and its subtree); `"children"` just reads.
//!
//! Every message replies `{"children": [ID, ...], "error": null | "why"}`: the children
//! spawned through messages (the runtime's tree shows all), and why the message's request
//! failed. A failed request does not fail the supervisor.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toka_actors::{
    Agent, AgentError, AgentId, Context, Intensity, SpawnSpec, Strategy, SupervisorSpec,
};

use super::Counter;
use super::reactor::{JsonValue, Reactor};

/// The `supervisor` kind.
pub(crate) struct Supervisor;

fn default_max_restarts() -> u32 {
    Intensity::default().max_restarts
}

fn default_within_secs() -> u64 {
    Intensity::default().within.as_secs()
}

/// A supervisor's arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SupervisorArgs {
    /// Which children restart together.
    #[serde(default)]
    pub(crate) strategy: Strategy,
    /// Restarts allowed within the window before it gives up and fails to its parent.
    #[serde(default = "default_max_restarts")]
    pub(crate) max_restarts: u32,
    /// The window, in seconds.
    #[serde(default = "default_within_secs")]
    pub(crate) within_secs: u64,
}

impl Default for SupervisorArgs {
    fn default() -> Self {
        SupervisorArgs {
            strategy: Strategy::default(),
            max_restarts: default_max_restarts(),
            within_secs: default_within_secs(),
        }
    }
}

/// The most restarts a supervisor's intensity may allow.
pub(crate) const MAX_RESTARTS: u32 = 1_000;

/// The longest intensity window, in seconds (one day).
pub(crate) const MAX_WITHIN_SECS: u64 = 86_400;

impl SupervisorArgs {
    /// Checks the bounds: `max_restarts` at most [`MAX_RESTARTS`], `within_secs` 1 to
    /// [`MAX_WITHIN_SECS`].
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_restarts > MAX_RESTARTS {
            return Err(format!(
                "supervisor arguments: max_restarts = {} is over {MAX_RESTARTS}",
                self.max_restarts
            ));
        }
        if !(1..=MAX_WITHIN_SECS).contains(&self.within_secs) {
            return Err(format!(
                "supervisor arguments: within_secs = {} must be 1 to {MAX_WITHIN_SECS}",
                self.within_secs
            ));
        }
        Ok(())
    }

    /// How a supervisor with these args supervises its children.
    pub(crate) fn supervision(&self) -> SupervisorSpec {
        SupervisorSpec::new(self.strategy).intensity(Intensity {
            max_restarts: self.max_restarts,
            within: std::time::Duration::from_secs(self.within_secs),
        })
    }
}

/// The spec to spawn an agent of kind `kind` with JSON `args` under: `spec` itself,
/// except that a `supervisor` supervises its children per its args.
///
/// # Errors
/// Malformed supervisor args.
pub(crate) fn spawn_spec(spec: SpawnSpec, kind: &str, args: &Value) -> Result<SpawnSpec, String> {
    if kind != Supervisor::KIND {
        return Ok(spec);
    }
    let args: SupervisorArgs =
        serde_json::from_value(args.clone()).map_err(|e| format!("supervisor arguments: {e}"))?;
    args.validate()?;
    Ok(spec.supervise(args.supervision()))
}

/// A child to spawn.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChildSpec {
    /// Its id.
    pub(crate) id: String,
    /// Its kind (a built-in one).
    pub(crate) kind: String,
    /// Its arguments.
    #[serde(default = "empty_args")]
    pub(crate) args: JsonValue,
}

fn empty_args() -> JsonValue {
    JsonValue(Value::Object(serde_json::Map::new()))
}

/// A supervisor's messages.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SupervisorMsg {
    /// Spawns a child.
    Spawn(ChildSpec),
    /// Stops a child and its subtree.
    Stop(String),
    /// Reads the children.
    Children,
}

/// A supervisor's reply.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SupervisorReply {
    /// The children spawned through messages, in spawn order.
    pub(crate) children: Vec<String>,
    /// Why the request failed, if it did.
    pub(crate) error: Option<String>,
}

/// Spawns `child` under the supervisor handling `cx`.
async fn spawn_child(cx: &mut Context<'_, Supervisor>, child: ChildSpec) -> Result<(), String> {
    let spec = SpawnSpec::new(&child.id).map_err(|e| e.to_string())?;
    let args = child.args.0;
    if !args.is_object() {
        return Err(format!("{} arguments must be a JSON object", child.kind));
    }
    let bad = |e: serde_json::Error| format!("{} arguments: {e}", child.kind);
    let spawned = match child.kind.as_str() {
        Counter::KIND => {
            let args = serde_json::from_value(args).map_err(bad)?;
            cx.spawn::<Counter>(spec, args).await.map(drop)
        }
        Reactor::KIND => {
            let args = serde_json::from_value(args).map_err(bad)?;
            cx.spawn::<Reactor>(spec, args).await.map(drop)
        }
        Supervisor::KIND => {
            let args: SupervisorArgs = serde_json::from_value(args).map_err(bad)?;
            args.validate()?;
            let spec = spec.supervise(args.supervision());
            cx.spawn::<Supervisor>(spec, args).await.map(drop)
        }
        other => {
            return Err(format!(
                "a supervisor spawns only the built-in kinds (counter, supervisor, reactor) \
                 by message, not {other:?}; spawn it under the supervisor through the API"
            ));
        }
    };
    spawned.map_err(|e| e.to_string())
}

impl Agent for Supervisor {
    const KIND: &'static str = "supervisor";
    type Args = SupervisorArgs;
    type Msg = SupervisorMsg;
    type Reply = SupervisorReply;
    /// The children spawned through messages (rebuilt by replay).
    type State = Vec<String>;

    fn init(&self, args: &SupervisorArgs) -> Result<Vec<String>, AgentError> {
        args.validate().map_err(AgentError::msg)?;
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        cx: &mut Context<'_, Self>,
        children: &mut Vec<String>,
        msg: SupervisorMsg,
    ) -> Result<SupervisorReply, AgentError> {
        let outcome = match msg {
            SupervisorMsg::Children => Ok(()),
            SupervisorMsg::Spawn(child) => {
                let id = child.id.clone();
                let spawned = spawn_child(cx, child).await;
                if spawned.is_ok() && !children.contains(&id) {
                    children.push(id);
                }
                spawned
            }
            SupervisorMsg::Stop(id) => {
                let stopped = match AgentId::new(&id) {
                    Ok(agent) => cx.stop_child(&agent).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if stopped.is_ok() {
                    children.retain(|c| *c != id);
                }
                stopped
            }
        };
        Ok(SupervisorReply {
            children: children.clone(),
            error: outcome.err(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;
    use toka_actors::{Runtime, StartContext};
    use toka_store::{JournalConfig, MemoryJournal};

    use super::*;

    #[test]
    fn args_and_messages_have_the_documented_json_shape() {
        let args: SupervisorArgs = serde_json::from_str("{}").unwrap();
        assert_eq!(args, SupervisorArgs::default());
        assert_eq!(args.supervision(), SupervisorSpec::default());
        let args: SupervisorArgs = serde_json::from_value(
            json!({"strategy": "rest_for_one", "max_restarts": 5, "within_secs": 10}),
        )
        .unwrap();
        assert_eq!(args.supervision().strategy, Strategy::RestForOne);
        assert_eq!(args.supervision().intensity.max_restarts, 5);
        assert!(serde_json::from_value::<SupervisorArgs>(json!({"strategy": "all"})).is_err());
        let bytes = postcard::to_allocvec(&args).unwrap();
        assert_eq!(
            postcard::from_bytes::<SupervisorArgs>(&bytes).unwrap(),
            args
        );

        let msg: SupervisorMsg =
            serde_json::from_value(json!({"spawn": {"id": "c", "kind": "counter"}})).unwrap();
        let bytes = postcard::to_allocvec(&msg).unwrap();
        assert!(matches!(
            postcard::from_bytes::<SupervisorMsg>(&bytes).unwrap(),
            SupervisorMsg::Spawn(ChildSpec { args: JsonValue(a), .. }) if a == json!({})
        ));
        assert!(matches!(
            serde_json::from_value(json!("children")).unwrap(),
            SupervisorMsg::Children
        ));
        assert!(matches!(
            serde_json::from_value(json!({"stop": "c"})).unwrap(),
            SupervisorMsg::Stop(id) if id == "c"
        ));
        let spec = spawn_spec(
            SpawnSpec::new("s").unwrap(),
            "supervisor",
            &json!({"strategy": "one_for_all"}),
        )
        .unwrap();
        assert_eq!(spec.supervision.strategy, Strategy::OneForAll);
        let spec = spawn_spec(SpawnSpec::new("c").unwrap(), "counter", &json!({})).unwrap();
        assert_eq!(spec.supervision, SupervisorSpec::default());
    }

    /// `flaky`: counts its starts per id; fails on `true` once (across all flakies).
    struct Flaky {
        starts: Arc<Mutex<HashMap<String, usize>>>,
        crashed: Arc<AtomicBool>,
    }

    impl Agent for Flaky {
        const KIND: &'static str = "flaky";
        type Args = ();
        type Msg = bool;
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
            *self
                .starts
                .lock()
                .unwrap()
                .entry(cx.id().as_str().to_owned())
                .or_default() += 1;
            Ok(())
        }
        async fn handle(
            &self,
            _: &mut Context<'_, Self>,
            _: &mut (),
            crash: bool,
        ) -> Result<(), AgentError> {
            if crash && !self.crashed.swap(true, Ordering::SeqCst) {
                return Err(AgentError::msg("told to crash"));
            }
            Ok(())
        }
    }

    /// Starts a supervisor with `args` and flaky children `a`, `b`, `c`; crashes `b`;
    /// returns how many times each child started once things settle.
    async fn restarts_after_crashing_b(args: Value) -> HashMap<String, usize> {
        let starts = Arc::new(Mutex::new(HashMap::new()));
        let flaky = Flaky {
            starts: starts.clone(),
            crashed: Arc::new(AtomicBool::new(false)),
        };
        let journal = Arc::new(MemoryJournal::new(JournalConfig::default()).unwrap());
        let runtime = Runtime::builder(journal)
            .register(Supervisor)
            .register(flaky)
            .start()
            .await
            .unwrap();
        let spec = spawn_spec(SpawnSpec::new("sup").unwrap(), "supervisor", &args).unwrap();
        runtime
            .spawn_json(None, "supervisor", spec, args)
            .await
            .unwrap();
        let sup = AgentId::new("sup").unwrap();
        for id in ["a", "b", "c"] {
            runtime
                .spawn_under::<Flaky>(Some(&sup), SpawnSpec::new(id).unwrap(), ())
                .await
                .unwrap();
        }
        let b = runtime.agent::<Flaky>(&AgentId::new("b").unwrap()).unwrap();
        // The asker gets the failure; the supervisor restarts b (and, per the strategy,
        // its siblings).
        assert!(b.ask(true, Duration::from_secs(10)).await.is_err());
        for _ in 0..250 {
            if starts.lock().unwrap().get("b") == Some(&2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tree = runtime.tree();
        for id in ["a", "b", "c"] {
            let info = tree.iter().find(|i| i.id.as_str() == id).unwrap();
            assert_eq!(info.parent.as_ref(), Some(&sup));
            assert!(info.running, "{id} is not running");
        }
        runtime.shutdown().await.unwrap();
        starts.lock().unwrap().clone()
    }

    fn counts(a: usize, b: usize, c: usize) -> HashMap<String, usize> {
        [("a", a), ("b", b), ("c", c)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn supervisor_restarts_children_per_its_strategy() {
        let one = restarts_after_crashing_b(json!({})).await;
        assert_eq!(one, counts(1, 2, 1), "one_for_one");
        let all = restarts_after_crashing_b(json!({"strategy": "one_for_all"})).await;
        assert_eq!(all, counts(2, 2, 2), "one_for_all");
        let rest = restarts_after_crashing_b(json!({"strategy": "rest_for_one"})).await;
        assert_eq!(rest, counts(1, 2, 2), "rest_for_one");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn supervisor_spawns_built_in_children_by_message() {
        let journal = Arc::new(MemoryJournal::new(JournalConfig::default()).unwrap());
        let runtime = super::super::register(Runtime::builder(journal.clone()), None)
            .start()
            .await
            .unwrap();
        let t = Duration::from_secs(10);
        let args = json!({"strategy": "one_for_all"});
        let spec = spawn_spec(SpawnSpec::new("sup").unwrap(), "supervisor", &args).unwrap();
        runtime
            .spawn_json(None, "supervisor", spec, args)
            .await
            .unwrap();
        let sup = AgentId::new("sup").unwrap();
        let spawn = |id: &str, kind: &str, args: Value| json!({"spawn": {"id": id, "kind": kind, "args": args}});
        let reply = runtime
            .ask_json(&sup, spawn("c1", "counter", json!({})), t)
            .await
            .unwrap();
        assert_eq!(reply, json!({"children": ["c1"], "error": null}));
        let reply = runtime
            .ask_json(
                &sup,
                spawn("sub", "supervisor", json!({"strategy": "rest_for_one"})),
                t,
            )
            .await
            .unwrap();
        assert_eq!(reply, json!({"children": ["c1", "sub"], "error": null}));
        // Spawning the same child again returns it; errors do not fail the supervisor.
        let reply = runtime
            .ask_json(&sup, spawn("c1", "counter", json!({})), t)
            .await
            .unwrap();
        assert_eq!(reply["children"], json!(["c1", "sub"]));
        assert_eq!(reply["error"], Value::Null);
        for bad in [
            spawn("x", "nope", json!({})),
            spawn("c2", "counter", json!({"extra": 1})),
            spawn("c1", "supervisor", json!({})),
            json!({"stop": "nobody"}),
        ] {
            let reply = runtime.ask_json(&sup, bad.clone(), t).await.unwrap();
            assert!(reply["error"].is_string(), "{bad} → {reply}");
            assert_eq!(reply["children"], json!(["c1", "sub"]));
        }
        let c1 = AgentId::new("c1").unwrap();
        runtime.send_json(&c1, json!({"add": 4})).await.unwrap();
        let tree = runtime.tree();
        let parent = |id: &str| {
            tree.iter()
                .find(|i| i.id.as_str() == id)
                .and_then(|i| i.parent.clone())
        };
        assert_eq!(parent("c1"), Some(sup.clone()));
        assert_eq!(parent("sub"), Some(sup.clone()));
        runtime.shutdown().await.unwrap();

        // After a restart the tree, the list and the children's states are back.
        let runtime = super::super::register(Runtime::builder(journal), None)
            .start()
            .await
            .unwrap();
        let reply = runtime.ask_json(&sup, json!("children"), t).await.unwrap();
        assert_eq!(reply, json!({"children": ["c1", "sub"], "error": null}));
        let value = runtime.ask_json(&c1, json!("get"), t).await.unwrap();
        assert_eq!(value, json!({"value": 4}));
        let reply = runtime
            .ask_json(&sup, json!({"stop": "c1"}), t)
            .await
            .unwrap();
        assert_eq!(reply, json!({"children": ["sub"], "error": null}));
        assert!(runtime.tree().iter().all(|i| i.id.as_str() != "c1"));
        runtime.shutdown().await.unwrap();
    }
}
