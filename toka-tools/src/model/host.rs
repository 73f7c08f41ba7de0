//! The configured models, behind capability checks and token accounting.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use toka_store::{ExpectedVersion, Journal, NewEvent};
use tracing::Instrument as _;

use super::live::{LiveTurns, TurnEvent, TurnSubscription};
use super::{ModelClient, ModelErrorKind, ModelRequest, ModelResponse, StreamEvent, Usage};
use crate::caveat::{self, ModelUse, Request};
use crate::{Authority, Capability, DenialRecord, Error, ToolError, ToolErrorKind};

/// Prefix of the streams that count each agent's model usage (`toka/model-usage/AGENT`;
/// calls not made by an agent count under `toka/model-usage/external`).
pub const USAGE_STREAM_PREFIX: &str = "toka/model-usage/";

/// Record kind of a usage record.
const USAGE_KIND: &str = "toka.model.usage";

/// One model call's usage, journaled after the call answered: what a `budget-tokens`
/// caveat counts. Holds no content, no token, no key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The configured model's name.
    pub model: String,
    /// Tokens of this call.
    pub usage: Usage,
    /// Tokens the caller had spent, this call included.
    pub total: u64,
}

/// The models agents may call, by configured name.
///
/// Every call is checked against the caller's capability token (`model`, `max-tokens`,
/// `budget-tokens`, `agent`, `expires` caveats; denials are journaled in the audit stream
/// like tool denials), its answer's usage is journaled per agent, and a `budget-tokens`
/// caveat is counted from that record, across restarts. Add it to the runtime as an
/// extension; agents call through [`ModelCalls`](super::ModelCalls).
///
/// It also carries the live events of agents' model calls: while someone is
/// [subscribed](ModelHost::subscribe) to an agent, that agent's calls are streamed and
/// what the model generates is forwarded as it comes (see [`live`](super::live)).
#[derive(Clone)]
pub struct ModelHost {
    inner: Arc<Inner>,
}

struct Inner {
    models: HashMap<String, Arc<dyn ModelClient>>,
    authority: Authority,
    journal: Arc<dyn Journal>,
    /// Tokens spent per usage stream (`None` until loaded from the journal). A caller's
    /// slot is locked from check to count, so its racing calls never overspend a budget;
    /// other callers' calls are not held up.
    spent: DashMap<String, Arc<tokio::sync::Mutex<Option<u64>>>>,
    /// Agents' live events.
    live: Arc<LiveTurns>,
    /// Counters for [`ModelHost::metrics`].
    counters: Counters,
}

/// [`ModelHost::metrics`]' atomics.
#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

/// What a [`ModelHost`]'s model calls used since it was built: only answers received
/// now, never the recorded answers a replay reuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelMetrics {
    /// Model calls that answered (their usage journaled).
    pub calls: u64,
    /// Tokens of those calls' requests.
    pub input_tokens: u64,
    /// Tokens of their answers.
    pub output_tokens: u64,
}

/// One caller's spent tokens, locked.
type Spent<'a> = tokio::sync::MutexGuard<'a, Option<u64>>;

impl std::fmt::Debug for ModelHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.inner.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("ModelHost").field("models", &names).finish()
    }
}

/// Builds a [`ModelHost`].
pub struct ModelHostBuilder {
    models: HashMap<String, Arc<dyn ModelClient>>,
    authority: Authority,
    journal: Arc<dyn Journal>,
}

impl ModelHostBuilder {
    /// Configures `client` under `name` (the name tokens and agents use).
    #[must_use]
    pub fn model(mut self, name: impl Into<String>, client: impl ModelClient) -> Self {
        self.models.insert(name.into(), Arc::new(client));
        self
    }

    /// The host.
    pub fn build(self) -> ModelHost {
        ModelHost {
            inner: Arc::new(Inner {
                models: self.models,
                authority: self.authority,
                journal: self.journal,
                spent: DashMap::new(),
                live: Arc::default(),
                counters: Counters::default(),
            }),
        }
    }
}

impl ModelHost {
    /// A builder; denials go to `authority`'s audit stream, usage to `journal`.
    pub fn builder(authority: Authority, journal: Arc<dyn Journal>) -> ModelHostBuilder {
        ModelHostBuilder {
            models: HashMap::new(),
            authority,
            journal,
        }
    }

    /// Calls answered and tokens used since this host was built.
    pub fn metrics(&self) -> ModelMetrics {
        let c = &self.inner.counters;
        ModelMetrics {
            calls: c.calls.load(Ordering::Relaxed),
            input_tokens: c.input_tokens.load(Ordering::Relaxed),
            output_tokens: c.output_tokens.load(Ordering::Relaxed),
        }
    }

    /// The configured models' names, sorted.
    pub fn models(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.models.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The authority that checks the tokens of model calls (and audits denials).
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// Tokens `agent` (or, for `None`, callers that are not agents) has spent.
    ///
    /// # Errors
    /// [`Error::Journal`] or [`Error::Decode`] reading the usage stream.
    pub async fn spent(&self, agent: Option<&str>) -> Result<u64, Error> {
        let stream = usage_stream(agent);
        let slot = self.slot(&stream);
        let mut spent = slot.lock().await;
        self.load_spent(&mut spent, &stream)
    }

    /// The spent-tokens slot of usage stream `stream`.
    fn slot(&self, stream: &str) -> Arc<tokio::sync::Mutex<Option<u64>>> {
        if let Some(slot) = self.inner.spent.get(stream) {
            return Arc::clone(&slot);
        }
        Arc::clone(&self.inner.spent.entry(stream.to_owned()).or_default())
    }

    fn load_spent(&self, spent: &mut Spent<'_>, stream: &str) -> Result<u64, Error> {
        if let Some(total) = **spent {
            return Ok(total);
        }
        let journal = &self.inner.journal;
        let version = journal.stream_version(stream)?;
        let total = match journal.read_stream(stream, version.max(1), 1)?.pop() {
            Some(last) => crate::decode::<UsageRecord>(stream, last.seq, &last.payload)?.total,
            None => 0,
        };
        **spent = Some(total);
        Ok(total)
    }

    /// Subscribes to what `agent`'s model calls generate, live (see [`live`](super::live)):
    /// from now on, until the subscription is dropped, `agent`'s calls through
    /// [`ModelHost::complete`] are streamed and their [`TurnEvent`]s sent to it. Never
    /// starts a model call.
    pub fn subscribe(&self, agent: &str) -> TurnSubscription {
        self.inner.live.subscribe(agent)
    }

    /// Tells `agent`'s subscribers (if any) of `event`, never waiting for them: how an
    /// agent adds its own news (the assistant: a turn waiting for approval) to the live
    /// events of its model calls.
    pub fn notify(&self, agent: &str, event: TurnEvent) {
        self.inner.live.publish(agent, event);
    }

    /// Asks model `model` on behalf of `agent`, holding `token`; the answer's usage is
    /// journaled and counted.
    ///
    /// When `agent` has a [subscriber](ModelHost::subscribe), the model is asked with
    /// [`ModelClient::stream`] and its events are forwarded to the subscribers as they
    /// come (never waiting for them); the complete answer returned is the stream's last
    /// event. Otherwise the model is asked with [`ModelClient::complete`]. The checks,
    /// the token limit and the usage accounting are the same either way.
    ///
    /// # Errors
    /// [`ToolErrorKind::Denied`] (audited), [`ToolErrorKind::UnknownTool`] for a model
    /// that is not configured, [`ToolErrorKind::Timeout`], and
    /// [`ToolErrorKind::Failed`] / [`ToolErrorKind::Unavailable`] for provider failures
    /// (the provider's message, never the key).
    pub async fn complete(
        &self,
        token: &Capability,
        agent: Option<&str>,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ModelResponse, ToolError> {
        let span = chat_span(self.inner.models.get(model).map(|c| &**c), model, agent);
        let answered = async {
            let stream = usage_stream(agent);
            let slot = self.slot(&stream);
            let mut spent = slot.lock().await;
            let (client, request) = self
                .admit(&mut spent, &stream, token, agent, model, request)
                .await?;
            let response = match agent.filter(|a| self.inner.live.watched(a)) {
                Some(watched) => self.relay(&*client, &request, watched).await,
                None => client.complete(&request).await,
            }
            .map_err(call_error)?;
            self.count(&mut spent, &stream, model, response.usage)
                .await?;
            Ok(response)
        }
        .instrument(span.clone())
        .await;
        note_answer(&span, answered.as_ref().map(|r| r.usage));
        answered
    }

    /// Streams model `model`'s answer on behalf of `agent`, holding `token`; counted like
    /// [`ModelHost::complete`] when the stream's final event arrives.
    ///
    /// # Errors
    /// As [`ModelHost::complete`], before the stream starts or as its items.
    pub async fn stream(
        &self,
        token: &Capability,
        agent: Option<&str>,
        model: &str,
        request: &ModelRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, ToolError>>, ToolError> {
        let span = chat_span(self.inner.models.get(model).map(|c| &**c), model, agent);
        let stream = usage_stream(agent);
        let started = async {
            let (client, request) = {
                let slot = self.slot(&stream);
                let mut spent = slot.lock().await;
                self.admit(&mut spent, &stream, token, agent, model, request)
                    .await?
            };
            client.stream(&request).await.map_err(call_error)
        }
        .instrument(span.clone())
        .await;
        let events = match started {
            Ok(events) => events,
            Err(error) => {
                note_answer(&span, Err(&error));
                return Err(error);
            }
        };
        let host = self.clone();
        let model = model.to_owned();
        Ok(events
            .then(move |event| {
                let (host, stream, model) = (host.clone(), stream.clone(), model.clone());
                let span = span.clone();
                async move {
                    let event = event.map_err(|e| {
                        let error = call_error(e);
                        note_answer(&span, Err(&error));
                        error
                    })?;
                    if let StreamEvent::Done(done) = &event {
                        let slot = host.slot(&stream);
                        let mut spent = slot.lock().await;
                        let counted = host.count(&mut spent, &stream, &model, done.usage).await;
                        note_answer(&span, counted.as_ref().map(|()| done.usage));
                        counted?;
                    }
                    Ok(event)
                }
            })
            .boxed())
    }

    /// Asks `client` with a stream, forwarding its events to `agent`'s subscribers; the
    /// complete answer.
    async fn relay(
        &self,
        client: &dyn ModelClient,
        request: &ModelRequest,
        agent: &str,
    ) -> Result<ModelResponse, Error> {
        let mut events = client.stream(request).await?;
        while let Some(event) = events.next().await {
            match event? {
                StreamEvent::Done(done) => {
                    self.inner.live.publish(agent, TurnEvent::step_done(&done));
                    return Ok(done);
                }
                other => self.inner.live.publish(agent, TurnEvent::of(other)),
            }
        }
        Err(Error::Model {
            model: client.model().to_owned(),
            kind: ModelErrorKind::Transport,
            message: "the stream ended without the complete answer".to_owned(),
        })
    }

    /// Checks the call; returns the client and the request with its token limit applied.
    async fn admit(
        &self,
        spent: &mut Spent<'_>,
        stream: &str,
        token: &Capability,
        agent: Option<&str>,
        model: &str,
        request: &ModelRequest,
    ) -> Result<(Arc<dyn ModelClient>, ModelRequest), ToolError> {
        let used = self.load_spent(spent, stream).map_err(|e| {
            ToolError::new(
                ToolErrorKind::Unavailable,
                format!("model {model}: usage: {e}"),
            )
        })?;
        let request_view = Request {
            tool: "model",
            agent,
            path: None,
            bytes: None,
            now: Timestamp::now(),
            model: Some(ModelUse {
                name: model,
                max_tokens: request.max_tokens.map(u64::from),
                spent: used,
            }),
        };
        let authority = &self.inner.authority;
        let admitted = authority
            .verify(token)
            .and_then(|caveats| caveat::admit_all(&caveats, &request_view));
        let grant = match admitted {
            Ok(grant) => grant,
            Err(denial) => {
                authority
                    .audit(DenialRecord {
                        at_micros: Timestamp::now().as_microsecond(),
                        tool: format!("model:{model}"),
                        agent: agent.map(str::to_owned),
                        token: Some(token.identifier().to_owned()),
                        reason: denial.reason.clone(),
                    })
                    .await;
                return Err(ToolError::denied(&denial));
            }
        };
        let client = self.inner.models.get(model).cloned().ok_or_else(|| {
            ToolError::new(
                ToolErrorKind::UnknownTool,
                format!("no model named {model:?} is configured"),
            )
        })?;
        let mut request = request.clone();
        if let Some(limit) = grant.max_tokens {
            let limit = u32::try_from(limit).unwrap_or(u32::MAX);
            request.max_tokens = Some(request.max_tokens.map_or(limit, |asked| asked.min(limit)));
        }
        Ok((client, request))
    }

    /// Journals a call's usage and adds it to the caller's total.
    async fn count(
        &self,
        spent: &mut Spent<'_>,
        stream: &str,
        model: &str,
        usage: Usage,
    ) -> Result<(), ToolError> {
        let unavailable = |e: String| {
            ToolError::new(
                ToolErrorKind::Unavailable,
                format!("model {model}: usage: {e}"),
            )
        };
        let before = self
            .load_spent(spent, stream)
            .map_err(|e| unavailable(e.to_string()))?;
        let record = UsageRecord {
            model: model.to_owned(),
            usage,
            total: before.saturating_add(usage.total()),
        };
        let payload = crate::encode(stream, &record).map_err(|e| unavailable(e.to_string()))?;
        self.inner
            .journal
            .append_unsynced(
                stream,
                ExpectedVersion::Any,
                &[NewEvent::new(USAGE_KIND, payload)],
            )
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .map_err(|e| unavailable(e.to_string()))?;
        **spent = Some(record.total);
        let c = &self.inner.counters;
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.input_tokens
            .fetch_add(usage.input_tokens, Ordering::Relaxed);
        c.output_tokens
            .fetch_add(usage.output_tokens, Ordering::Relaxed);
        Ok(())
    }
}

/// The span of one model call (`client`, configured as `model`), after OpenTelemetry's
/// GenAI conventions: named `chat MODEL` (the provider's model name), with
/// `gen_ai.operation.name`, `gen_ai.system` and `gen_ai.request.model`, and, once
/// answered, `gen_ai.usage.input_tokens` and `gen_ai.usage.output_tokens`. `toka.model`
/// is the configured name. Neither the prompt nor the answer nor any key is recorded.
fn chat_span(client: Option<&dyn ModelClient>, model: &str, agent: Option<&str>) -> tracing::Span {
    let provider_model = client.map_or(model, |c| c.model());
    tracing::info_span!(
        "gen_ai.chat",
        otel.name = %format!("chat {provider_model}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "chat",
        gen_ai.system = client.map_or("_OTHER", |c| c.system()),
        gen_ai.request.model = provider_model,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        error.type = tracing::field::Empty,
        toka.model = model,
        agent.id = agent,
    )
}

/// Records how a model call ended on its span: its usage, or the error's kind.
fn note_answer(span: &tracing::Span, answered: Result<Usage, &ToolError>) {
    match answered {
        Ok(usage) => {
            // Signed: OTLP's integers are, and u64 fields would be exported as text.
            let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            span.record("gen_ai.usage.input_tokens", signed(usage.input_tokens));
            span.record("gen_ai.usage.output_tokens", signed(usage.output_tokens));
        }
        Err(error) => {
            span.record("otel.status_code", "error");
            span.record("error.type", tracing::field::debug(error.kind));
        }
    }
}

/// The usage stream of `agent`.
fn usage_stream(agent: Option<&str>) -> String {
    format!("{USAGE_STREAM_PREFIX}{}", agent.unwrap_or("external"))
}

/// A provider failure as the caller sees it.
fn call_error(error: Error) -> ToolError {
    match error {
        Error::Model { kind, .. } => {
            let class = match kind {
                ModelErrorKind::Timeout => ToolErrorKind::Timeout,
                ModelErrorKind::RateLimited
                | ModelErrorKind::Server
                | ModelErrorKind::Transport => ToolErrorKind::Unavailable,
                ModelErrorKind::Unauthorized
                | ModelErrorKind::BadRequest
                | ModelErrorKind::Decode
                | ModelErrorKind::Config => ToolErrorKind::Failed,
            };
            ToolError::new(class, error.to_string())
        }
        other => ToolError::new(ToolErrorKind::Failed, other.to_string()),
    }
}
