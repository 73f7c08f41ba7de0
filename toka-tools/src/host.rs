//! The tool host: every registered tool as a supervised actor, and the call path
//! (capability check → bounded, timed run → JSON result).
//!
//! ```text
//! ToolHost (handle)
//! └── tool supervisor            restarts a failed tool actor (intensity-limited)
//!     └── one actor per tool     checks the capability, runs calls as tasks under a
//!                                per-tool semaphore and timeout
//! ```
//!
//! # Invariants
//! - **Every call ends.** The caller waits at most the tool's timeout plus a margin; a
//!   panic or a stuck tool comes back as an error. A call that never reached the tool
//!   (queued on an actor that failed, or sent while it restarts) waits for the next
//!   incarnation and is sent again, within the same deadline.
//! - The concurrency limit spans restarts: calls still running from a failed incarnation
//!   hold their permits.
//! - **Every call is checked.** The token is verified (revocation, signature, caveats)
//!   against the concrete request before the tool runs; a denial is journaled in the
//!   audit stream before the caller hears of it.
//! - A panic in a tool is caught, the caller gets [`ToolErrorKind::Crashed`], and the
//!   tool's actor fails so its supervisor restarts it from the registered template.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use jiff::Timestamp;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use toka_actors::Intensity;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::approval::{Approvals, CallKey, Gate};
use crate::capability::{Authority, Capability, DenialRecord};
use crate::caveat::{self, Caveat, NamePattern, Request};
use crate::tool::{AuditTrail, DynTool, Erased, Tool, ToolContext, ToolSpec};
use crate::vault::Vault;
use crate::{Error, ToolError, ToolErrorKind};

/// How long a caller waits beyond a tool's own timeout before giving up on its actor.
const REPLY_MARGIN: Duration = Duration::from_secs(2);

/// Per-tool limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToolLimits {
    /// Calls of this tool running at once; more wait their turn (within their timeout).
    pub concurrency: usize,
    /// Longest a call may take, waiting for its turn included.
    pub timeout: Duration,
    /// Restarts of the tool's actor allowed within a window; past it the tool is
    /// unavailable until the host restarts.
    pub restarts: Intensity,
}

impl Default for ToolLimits {
    /// 16 concurrent calls, 30 s per call, 10 restarts within 10 s.
    fn default() -> Self {
        ToolLimits {
            concurrency: 16,
            timeout: Duration::from_secs(30),
            restarts: Intensity {
                max_restarts: 10,
                within: Duration::from_secs(10),
            },
        }
    }
}

/// One registered tool.
struct Slot {
    spec: ToolSpec,
    limits: ToolLimits,
    template: Arc<dyn DynTool>,
    /// The tool's current actor; callers wait on changes while it restarts.
    actor: watch::Sender<ActorState>,
    /// Shared by every incarnation of the tool's actor, so calls still running from a
    /// failed one count against the limit of its successor.
    permits: Arc<Semaphore>,
    restarts: Mutex<VecDeque<Instant>>,
}

/// Where a tool's actor is in its life.
#[derive(Clone)]
enum ActorState {
    /// Starting or restarting: calls wait for it.
    Starting,
    Running(ActorRef<ToolMsg>),
    /// Gave up (past its restart intensity) or the host shut down: calls fail at once.
    Stopped,
}

impl Slot {
    fn set_actor(&self, state: ActorState) {
        self.actor.send_replace(state);
    }

    /// Records a restart; `false` if it would exceed the restart intensity.
    fn may_restart(&self) -> bool {
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.limits.restarts.within)
        {
            restarts.pop_front();
        }
        if restarts.len() >= self.limits.restarts.max_restarts as usize {
            return false;
        }
        restarts.push_back(now);
        true
    }
}

struct Shared {
    slots: HashMap<String, Arc<Slot>>,
    authority: Authority,
    vault: Option<Arc<Vault>>,
    supervisor: OnceLock<ActorRef<()>>,
    counters: Counters,
    /// Where calls that need a human decision wait for it.
    approvals: Option<Approvals>,
    /// Tools whose every call needs approval, whatever the token says.
    always_approve: Vec<NamePattern>,
    /// Every call's task (and denial audit), so that shutdown can wait for them: a task
    /// holds the authority, and through it the journal.
    calls: TaskTracker,
    /// Cancelled when shutdown stops waiting for calls in flight.
    closing: CancellationToken,
}

/// How long [`ToolHost::shutdown`] lets calls in flight finish before cutting them off.
const CALL_GRACE: Duration = Duration::from_secs(5);

/// A snapshot of a tool host's counters, from [`ToolHost::metrics`].
///
/// Every field only grows over the life of the host; each is read on its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolMetrics {
    /// Calls made through [`ToolHost::call_json`] (and so [`ToolHost::call`] and
    /// [`ToolCalls::call_tool`](crate::ToolCalls::call_tool)) that returned, whatever
    /// their outcome.
    pub calls: u64,
    /// Calls refused by the capability check, before or while the tool ran
    /// ([`ToolErrorKind::Denied`]; each is also in the audit stream).
    pub denials: u64,
    /// Calls that failed for any other reason, timeouts included.
    pub failures: u64,
    /// Calls that failed with [`ToolErrorKind::Timeout`] (also counted in
    /// [`failures`](Self::failures)).
    pub timeouts: u64,
}

/// The live counters behind [`ToolMetrics`] (relaxed atomics: no locks, no allocation).
#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    denials: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
}

impl Counters {
    /// Counts a call that returned `result`.
    fn count<T>(&self, result: &Result<T, ToolError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = result {
            match error.kind {
                ToolErrorKind::Denied => self.denials.fetch_add(1, Ordering::Relaxed),
                ToolErrorKind::Timeout => {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                    self.failures.fetch_add(1, Ordering::Relaxed)
                }
                _ => self.failures.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    fn snapshot(&self) -> ToolMetrics {
        ToolMetrics {
            calls: self.calls.load(Ordering::Relaxed),
            denials: self.denials.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }
}

/// Registers tools, then starts the host.
///
/// ```no_run
/// # async fn demo() -> Result<(), toka_tools::Error> {
/// use toka_tools::{Authority, FsRead, ToolHost};
/// let authority = Authority::from_secret(b"root secret kept somewhere safe");
/// let host = ToolHost::builder(authority)
///     .tool(FsRead::new("/srv/notes")?)
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub struct ToolHostBuilder {
    authority: Authority,
    vault: Option<Arc<Vault>>,
    tools: Vec<(Arc<dyn DynTool>, ToolLimits)>,
    approvals: Option<Approvals>,
    always_approve: Vec<NamePattern>,
}

impl ToolHostBuilder {
    /// Registers `tool` with default [`ToolLimits`].
    #[must_use]
    pub fn tool<T: Tool>(self, tool: T) -> Self {
        self.tool_with_limits(tool, ToolLimits::default())
    }

    /// Registers `tool` with these limits.
    #[must_use]
    pub fn tool_with_limits<T: Tool>(mut self, tool: T, limits: ToolLimits) -> Self {
        self.tools.push((Arc::new(Erased(tool)), limits));
        self
    }

    /// Gives tools the secrets in `vault` (each read checked against the call's
    /// capability).
    #[must_use]
    pub fn vault(mut self, vault: Vault) -> Self {
        self.vault = Some(Arc::new(vault));
        self
    }

    /// Lets calls wait for a human decision in `approvals` (see [`crate::approval`]).
    /// Without it, a call that needs approval is denied.
    #[must_use]
    pub fn approvals(mut self, approvals: Approvals) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Makes every call of the tools matching `tools` wait for approval, whatever the
    /// token says (as if it carried `approval = PATTERN`).
    #[must_use]
    pub fn approval_required(mut self, tools: NamePattern) -> Self {
        self.always_approve.push(tools);
        self
    }

    /// Starts the tool supervisor and one actor per tool.
    ///
    /// # Errors
    /// [`Error::Registration`] for a duplicate or malformed name, [`Error::Actor`].
    pub async fn start(self) -> Result<ToolHost, Error> {
        let mut slots = HashMap::new();
        for (tool, limits) in self.tools {
            let spec = tool.spec();
            if spec.name.parse::<caveat::NamePattern>().ok()
                != Some(caveat::NamePattern::Exact(spec.name.clone()))
            {
                return Err(Error::Registration {
                    name: spec.name,
                    reason: "a tool name is letters, digits and `.-_:@`".into(),
                });
            }
            if limits.concurrency == 0 {
                return Err(Error::Registration {
                    name: spec.name,
                    reason: "concurrency must be at least 1".into(),
                });
            }
            let slot = Slot {
                spec: spec.clone(),
                limits,
                template: tool,
                actor: watch::Sender::new(ActorState::Starting),
                permits: Arc::new(Semaphore::new(limits.concurrency)),
                restarts: Mutex::new(VecDeque::new()),
            };
            if slots.insert(spec.name.clone(), Arc::new(slot)).is_some() {
                return Err(Error::Registration {
                    name: spec.name,
                    reason: "registered twice".into(),
                });
            }
        }
        let shared = Arc::new(Shared {
            slots,
            authority: self.authority,
            vault: self.vault,
            supervisor: OnceLock::new(),
            counters: Counters::default(),
            approvals: self.approvals,
            always_approve: self.always_approve,
            calls: TaskTracker::new(),
            closing: CancellationToken::new(),
        });
        let (supervisor, _) = Actor::spawn(None, ToolSupervisor, Arc::clone(&shared))
            .await
            .map_err(|e| Error::Actor(format!("starting the tool supervisor: {e}")))?;
        let _ = shared.supervisor.set(supervisor);
        tracing::info!(tools = shared.slots.len(), "tool host started");
        Ok(ToolHost { shared })
    }
}

/// The running tools: call them (checked, bounded, timed), list them, stop them.
///
/// Cheap to clone. Agents reach it through the runtime's extensions
/// ([`RuntimeBuilder::extension`](toka_actors::RuntimeBuilder::extension)) and call tools
/// with [`ToolCalls::call_tool`](crate::ToolCalls::call_tool), which journals each call.
#[derive(Clone)]
pub struct ToolHost {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ToolHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.shared.slots.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("ToolHost").field("tools", &names).finish()
    }
}

impl ToolHost {
    /// Starts building a host whose calls are checked by `authority`.
    pub fn builder(authority: Authority) -> ToolHostBuilder {
        ToolHostBuilder {
            authority,
            vault: None,
            tools: Vec::new(),
            approvals: None,
            always_approve: Vec::new(),
        }
    }

    /// The authority checking calls (to mint or revoke tokens).
    pub fn authority(&self) -> &Authority {
        &self.shared.authority
    }

    /// The registered tools' descriptions, by name.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs: Vec<ToolSpec> = self.shared.slots.values().map(|s| s.spec.clone()).collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    /// The description of tool `name`.
    pub fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.shared.slots.get(name).map(|s| &s.spec)
    }

    /// Calls tool `name` with a typed input; see [`ToolHost::call_json`]. This call is
    /// not journaled; agents use [`ToolCalls::call_tool`](crate::ToolCalls::call_tool).
    ///
    /// # Errors
    /// As [`ToolHost::call_json`], and [`ToolErrorKind::InvalidInput`]/`Failed` if the
    /// input or output do not convert.
    pub async fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        token: &Capability,
        caller: Option<&str>,
        name: &str,
        input: &I,
    ) -> Result<O, ToolError> {
        let input = serde_json::to_vec(input)
            .map_err(|e| ToolError::invalid_input(format!("{name}: input: {e}")))?;
        let output = self.call_json(token, caller, name, &input).await?;
        decode_output(name, &output)
    }

    /// Calls tool `name` with JSON `input` on behalf of `caller` (an agent id, or `None`
    /// for a non-agent caller such as an API client), holding `token`.
    ///
    /// The call runs in a `toka.tool.call` span (`INFO`): `tool.name`,
    /// `tool.side_effect`, `tool.outcome` (`ok` or the error's kind), `agent.id`; never
    /// its input, output or token.
    ///
    /// # Errors
    /// A [`ToolError`]: `UnknownTool`, `Denied` (journaled in the audit stream),
    /// `InvalidInput`, `Failed`, `Timeout`, `Crashed`, `Unavailable`, `Limit`.
    pub async fn call_json(
        &self,
        token: &Capability,
        caller: Option<&str>,
        name: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, ToolError> {
        let span = tracing::info_span!(
            "toka.tool.call",
            otel.name = %format!("tool {name}"),
            otel.status_code = tracing::field::Empty,
            tool.name = name,
            tool.side_effect = tracing::field::Empty,
            tool.outcome = tracing::field::Empty,
            agent.id = caller,
        );
        if !span.is_disabled() {
            if let Some(slot) = self.shared.slots.get(name) {
                span.record(
                    "tool.side_effect",
                    tracing::field::debug(slot.spec.side_effect),
                );
            }
        }
        let result = self
            .call_json_uncounted(token, caller, name, input, None)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(_) => span.record("tool.outcome", "ok"),
            Err(error) => span
                .record("tool.outcome", tracing::field::debug(error.kind))
                .record("otel.status_code", "error"),
        };
        self.shared.counters.count(&result);
        result
    }

    /// The approvals calls wait in, if the host has them.
    pub fn approvals(&self) -> Option<&Approvals> {
        self.shared.approvals.as_ref()
    }

    /// Runs approved call `id` of a caller that is not an agent (an API client's), once:
    /// with a token of the same caveats as the one it was asked with (so expiry still
    /// holds), unless that token was revoked meanwhile. A call a crash cut off after it
    /// started runs again only if its tool is safe to repeat; otherwise it is recorded
    /// as in doubt. Its outcome is journaled with the approval.
    ///
    /// # Errors
    /// [`Error::Approval`] if the host has no approvals, or `id` is not an approved call
    /// without an agent that has not finished; [`Error::Journal`].
    pub async fn run_approved(&self, id: &str) -> Result<Result<Vec<u8>, ToolError>, Error> {
        let approvals = self
            .approvals()
            .ok_or_else(|| Error::Approval("the tool host has no approvals".into()))?;
        let run = approvals
            .runnable(id)
            .filter(|r| r.approved && !r.agent && !r.finished)
            .ok_or_else(|| Error::Approval(format!("{id} is not an approved API call to run")))?;
        let refuse = |kind, message: String| ToolError::new(kind, message);
        let outcome = if run.started
            && self
                .spec(&run.tool)
                .is_none_or(|spec| !spec.side_effect.safe_to_repeat())
        {
            Err(refuse(
                ToolErrorKind::InDoubt,
                format!(
                    "{}: a crash cut off approved call {id} after it started; the tool has \
                     external side effects, so it was not run again",
                    run.tool
                ),
            ))
        } else if self.authority().is_revoked(&run.token) {
            Err(refuse(
                ToolErrorKind::Denied,
                format!("{}: the token of approval {id} was revoked", run.tool),
            ))
        } else if let Some(input) = &run.input {
            let caveats: Result<Vec<Caveat>, _> = run
                .caveats
                .iter()
                .map(|c| Caveat::parse(c.as_bytes()))
                .collect();
            match caveats.and_then(|caveats| self.authority().mint(caveats)) {
                Ok(token) => {
                    let result = self
                        .call_json_uncounted(&token, None, &run.tool, input, Some(id))
                        .await;
                    self.shared.counters.count(&result);
                    // The call journaled its own outcome if it ran.
                    return Ok(result);
                }
                Err(denial) => Err(ToolError::denied(&denial)),
            }
        } else {
            Err(refuse(
                ToolErrorKind::Failed,
                format!(
                    "{}: approval {id}'s input held a secret and was redacted; it was lost \
                     in a restart: call again",
                    run.tool
                ),
            ))
        };
        approvals.finished(id, &outcome).await?;
        Ok(outcome)
    }

    /// A snapshot of the host's counters: calls, denials, failures and timeouts. Cheap
    /// (a few relaxed atomic loads).
    pub fn metrics(&self) -> ToolMetrics {
        self.shared.counters.snapshot()
    }

    /// [`ToolHost::call_json`] without counting the call.
    async fn call_json_uncounted(
        &self,
        token: &Capability,
        caller: Option<&str>,
        name: &str,
        input: &[u8],
        approval: Option<&str>,
    ) -> Result<Vec<u8>, ToolError> {
        let slot = self.shared.slots.get(name).ok_or_else(|| {
            ToolError::new(
                ToolErrorKind::UnknownTool,
                format!("no tool named {name:?}"),
            )
        })?;
        let unavailable = || {
            ToolError::new(
                ToolErrorKind::Unavailable,
                format!("{name}: the tool's actor is not running"),
            )
        };
        let patience = slot.limits.timeout + REPLY_MARGIN;
        let timed_out = || {
            ToolError::new(
                ToolErrorKind::Timeout,
                format!("{name}: no answer within {patience:?}"),
            )
        };
        let now = tokio::time::Instant::now();
        // A limit too large to add is as good as none: about a century.
        let deadline = now
            .checked_add(patience)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut state = slot.actor.subscribe();
        loop {
            let current = state.borrow_and_update().clone();
            let actor = match current {
                ActorState::Running(actor) => actor,
                ActorState::Stopped => return Err(unavailable()),
                ActorState::Starting => {
                    // Restarting after a failure: wait for the next incarnation.
                    match tokio::time::timeout_at(deadline, state.changed()).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) => return Err(unavailable()),
                        Err(_) => return Err(timed_out()),
                    }
                }
            };
            let (reply, answer) = oneshot::channel();
            let call = ToolMsg::Call(Box::new(Call {
                input: input.to_vec(),
                token: token.clone(),
                caller: caller.map(str::to_owned),
                deadline,
                reply,
                approval: approval.map(str::to_owned),
            }));
            if actor.send_message(call).is_ok() {
                match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(result)) => return result,
                    // Dropped unanswered: the actor died with the call still in its
                    // mailbox, so the call never reached the tool. Send it again.
                    Ok(Err(_)) => {}
                    Err(_) => return Err(timed_out()),
                }
            }
            // The actor is gone; wait until the supervisor has replaced it.
            if matches!(&*state.borrow(), ActorState::Running(a) if a.get_id() == actor.get_id()) {
                match tokio::time::timeout_at(deadline, state.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(unavailable()),
                    Err(_) => return Err(timed_out()),
                }
            }
        }
    }

    /// Stops every tool actor, lets calls in flight finish for up to 5 s, then cuts off
    /// those still running (as a crash would: a sandboxed process is killed; the caller,
    /// if it still waits, is told the outcome is unknown for an `external` tool, that the
    /// tool is unavailable otherwise). When it returns, no call of this host runs, so
    /// none holds the authority or, through it, the journal.
    pub async fn shutdown(&self) {
        if let Some(supervisor) = self.shared.supervisor.get() {
            let _ = supervisor
                .stop_and_wait(Some("tool host shutdown".into()), Some(CALL_GRACE))
                .await;
        }
        let calls = &self.shared.calls;
        calls.close();
        if tokio::time::timeout(CALL_GRACE, calls.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                calls = calls.len(),
                "tool calls still running at shutdown; cutting them off"
            );
            self.shared.closing.cancel();
            calls.wait().await;
        }
    }
}

pub(crate) fn decode_output<O: DeserializeOwned>(
    name: &str,
    output: &[u8],
) -> Result<O, ToolError> {
    serde_json::from_slice(output)
        .map_err(|e| ToolError::failed(format!("{name}: unexpected output: {e}")))
}

/// A call on its way to a tool actor.
struct Call {
    input: Vec<u8>,
    token: Capability,
    caller: Option<String>,
    /// When the caller stops waiting.
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<Vec<u8>, ToolError>>,
    /// The approved call this is ([`ToolHost::run_approved`]).
    approval: Option<String>,
}

/// The reply of a call that reached its tool: sent exactly once, `Crashed` if the task
/// ends without an answer (so the caller never mistakes it for a call that never
/// arrived, and never sends it again).
struct ReplyGuard(Option<oneshot::Sender<Result<Vec<u8>, ToolError>>>);

impl ReplyGuard {
    fn send(mut self, result: Result<Vec<u8>, ToolError>) {
        if let Some(reply) = self.0.take() {
            let _ = reply.send(result);
        }
    }
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        if let Some(reply) = self.0.take() {
            let _ = reply.send(Err(ToolError::new(
                ToolErrorKind::Crashed,
                "the call's task ended without an answer",
            )));
        }
    }
}

enum ToolMsg {
    Call(Box<Call>),
    /// A call's task panicked: fail, so the supervisor restarts the actor.
    Crashed(String),
}

struct ToolActor;

struct ToolState {
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    tool: Arc<dyn DynTool>,
    permits: Arc<Semaphore>,
}

impl Actor for ToolActor {
    type Msg = ToolMsg;
    type State = ToolState;
    type Arguments = (Arc<Slot>, Arc<Shared>);

    async fn pre_start(
        &self,
        _myself: ActorRef<ToolMsg>,
        (slot, shared): (Arc<Slot>, Arc<Shared>),
    ) -> Result<ToolState, ActorProcessingErr> {
        Ok(ToolState {
            tool: slot.template.fresh(),
            permits: Arc::clone(&slot.permits),
            slot,
            shared,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ToolMsg>,
        msg: ToolMsg,
        state: &mut ToolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ToolMsg::Call(call) => {
                state.start_call(myself, *call);
                Ok(())
            }
            ToolMsg::Crashed(reason) => Err(format!("{}: {reason}", state.slot.spec.name).into()),
        }
    }
}

impl ToolState {
    /// Checks the call and, if allowed, runs it as a task; never blocks the actor.
    fn start_call(&self, myself: ActorRef<ToolMsg>, call: Call) {
        let name = &self.slot.spec.name;
        let Call {
            input,
            token,
            caller,
            deadline,
            reply,
            approval,
        } = call;
        let authority = &self.shared.authority;
        let admitted = authority.verify(&token).and_then(|caveats| {
            // A panic here (in the tool's input parsing or `scope`) must not drop the
            // reply unanswered: the caller would send the call again.
            let prepared =
                match std::panic::catch_unwind(AssertUnwindSafe(|| self.tool.prepare(&input))) {
                    Ok(Ok(prepared)) => prepared,
                    Ok(Err(error)) => return Ok(Err(error)),
                    Err(panic) => {
                        let what = panic_message(&panic);
                        let _ = myself.send_message(ToolMsg::Crashed(what.clone()));
                        return Ok(Err(ToolError::new(
                            ToolErrorKind::Crashed,
                            format!("{name} panicked reading its input: {what}"),
                        )));
                    }
                };
            let request = Request {
                tool: name,
                agent: caller.as_deref(),
                path: prepared.scope.path.as_deref(),
                bytes: prepared.scope.bytes,
                now: Timestamp::now(),
                model: None,
            };
            caveat::admit_all(&caveats, &request).map(|grant| Ok((prepared, grant)))
        });
        match admitted {
            Err(denial) => {
                let authority = authority.clone();
                let record = DenialRecord {
                    at_micros: Timestamp::now().as_microsecond(),
                    tool: name.clone(),
                    agent: caller,
                    token: Some(token.identifier().to_owned()),
                    reason: denial.reason.clone(),
                };
                self.shared.calls.spawn(async move {
                    authority.audit(record).await;
                    let _ = reply.send(Err(ToolError::denied(&denial)));
                });
            }
            Ok(Err(invalid)) => {
                let _ = reply.send(Err(invalid));
            }
            Ok(Ok((prepared, grant))) => {
                let needs_approval = approval.is_some()
                    || grant.approval
                    || self.shared.always_approve.iter().any(|p| p.matches(name));
                let waits = match (needs_approval, &self.shared.approvals) {
                    (false, _) => None,
                    (true, Some(approvals)) => Some(PendingGate {
                        approvals: approvals.clone(),
                        input,
                        caller: caller.clone(),
                        token: token.clone(),
                        explicit: approval,
                        vault: self.shared.vault.clone(),
                    }),
                    (true, None) => {
                        let _ = reply.send(Err(ToolError::new(
                            ToolErrorKind::Denied,
                            format!("{name}: the call needs approval, and this host takes none"),
                        )));
                        return;
                    }
                };
                let cx = ToolContext::new(name.as_str().into(), grant, self.shared.vault.clone())
                    .with_audit(AuditTrail {
                        authority: authority.clone(),
                        caller,
                        token: token.identifier().to_owned(),
                    });
                let permits = Arc::clone(&self.permits);
                // The call may run only while its caller still waits (minus the reply
                // margin), so a caller told "timeout" never sees the call happen later.
                let budget = deadline
                    .checked_duration_since(tokio::time::Instant::now() + REPLY_MARGIN)
                    .unwrap_or_default()
                    .min(self.slot.limits.timeout);
                let name = name.clone();
                let external = !self.slot.spec.side_effect.safe_to_repeat();
                let closing = self.shared.closing.clone();
                // From here the call has reached the tool: its reply is always sent (a
                // dropped task answers `Crashed`), so the caller never sends it again.
                let reply = ReplyGuard(Some(reply));
                self.shared.calls.spawn(async move {
                    let approved = match &waits {
                        Some(gate) => match gate.pass(&name).await {
                            Ok(id) => Some(id),
                            Err(answer) => return reply.send(Err(answer)),
                        },
                        None => None,
                    };
                    let guard = cx.clone();
                    let run = async {
                        let _permit = permits.acquire_owned().await;
                        AssertUnwindSafe((prepared.run)(cx)).catch_unwind().await
                    };
                    let timed = tokio::select! {
                        timed = tokio::time::timeout(budget, run) => timed,
                        () = closing.cancelled() => {
                            reply.send(Err(cut_off_by_shutdown(&name, external)));
                            return;
                        }
                    };
                    let result = match timed {
                        Ok(Ok(result)) => withhold_secrets(&name, &guard, result),
                        Ok(Err(panic)) => {
                            let mut what = panic_message(&panic);
                            if guard.leaks_secret(what.as_bytes()) {
                                what = "<message withheld: it contained a secret the call read>"
                                    .to_owned();
                            }
                            tracing::error!(tool = %name, panic = %what, "tool panicked; restarting it");
                            let _ = myself.send_message(ToolMsg::Crashed(what.clone()));
                            Err(ToolError::new(
                                ToolErrorKind::Crashed,
                                format!("{name} panicked: {what}"),
                            ))
                        }
                        Err(_) => Err(ToolError::new(
                            ToolErrorKind::Timeout,
                            format!("{name}: no result within {budget:?}"),
                        )),
                    };
                    if let (Some(gate), Some(id)) = (&waits, approved)
                        && let Err(error) = gate.approvals.finished(&id, &result).await
                    {
                        tracing::error!(tool = %name, approval = %id, %error, "could not journal an approved call's outcome");
                    }
                    reply.send(result);
                });
            }
        }
    }
}

/// A call that needs approval, on its way through [`Approvals::gate`].
struct PendingGate {
    approvals: Approvals,
    input: Vec<u8>,
    caller: Option<String>,
    token: Capability,
    /// The approval a [`ToolHost::run_approved`] call runs.
    explicit: Option<String>,
    vault: Option<Arc<Vault>>,
}

impl PendingGate {
    /// The approval under which the call runs, or the answer it gets instead (pending,
    /// denied, expired).
    async fn pass(&self, tool: &str) -> Result<String, ToolError> {
        let key = CallKey {
            agent: self.caller.as_deref(),
            tool,
            digest: *blake3::hash(&self.input).as_bytes(),
            token: self.token.identifier(),
        };
        let gate = self
            .approvals
            .gate(
                key,
                &self.input,
                &self.token,
                self.vault.as_deref(),
                self.explicit.as_deref(),
            )
            .await;
        match gate {
            Ok(Gate::Run(id)) => Ok(id),
            Ok(Gate::Answer(answer)) => Err(answer),
            Err(error) => Err(ToolError::new(
                ToolErrorKind::Unavailable,
                format!("{tool}: approvals: {error}"),
            )),
        }
    }
}

/// What the caller of a call cut off by [`ToolHost::shutdown`] is told.
fn cut_off_by_shutdown(name: &str, external: bool) -> ToolError {
    if external {
        ToolError::new(
            ToolErrorKind::InDoubt,
            format!("{name}: the tool host shut down during the call; its outcome is unknown"),
        )
    } else {
        ToolError::new(
            ToolErrorKind::Unavailable,
            format!("{name}: the tool host shut down during the call"),
        )
    }
}

/// Replaces a result that would carry a secret the call read (into the journal, the
/// caller's logs, a model's context) with an error naming no value.
fn withhold_secrets(
    name: &str,
    cx: &ToolContext,
    result: Result<Vec<u8>, ToolError>,
) -> Result<Vec<u8>, ToolError> {
    let leaks = match &result {
        Ok(output) => cx.leaks_secret(output),
        Err(error) => cx.leaks_secret(error.message.as_bytes()),
    };
    if leaks {
        tracing::error!(tool = %name, "tool result contained a secret it read; withheld");
        return Err(ToolError::failed(format!(
            "{name}: the result contained a secret the call read; withheld"
        )));
    }
    result
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Starts one actor per tool and restarts those that fail.
struct ToolSupervisor;

struct SupervisorState {
    shared: Arc<Shared>,
    /// Which tool each running actor serves.
    children: HashMap<ActorId, String>,
}

impl ToolSupervisor {
    async fn start_child(
        myself: &ActorRef<()>,
        state: &mut SupervisorState,
        name: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(slot) = state.shared.slots.get(name) else {
            return Ok(());
        };
        let cell: ActorCell = myself.get_cell();
        let (actor, _) = Actor::spawn_linked(
            None,
            ToolActor,
            (Arc::clone(slot), Arc::clone(&state.shared)),
            cell,
        )
        .await?;
        state.children.insert(actor.get_id(), name.to_owned());
        slot.set_actor(ActorState::Running(actor));
        Ok(())
    }
}

impl Actor for ToolSupervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        shared: Arc<Shared>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            shared,
            children: HashMap::new(),
        };
        let names: Vec<String> = state.shared.slots.keys().cloned().collect();
        for name in names {
            Self::start_child(&myself, &mut state, &name).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Nothing restarts tools any more: callers fail at once instead of waiting.
        for slot in state.shared.slots.values() {
            slot.set_actor(ActorState::Stopped);
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(name) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let Some(slot) = state.shared.slots.get(&name).cloned() else {
                    return Ok(());
                };
                if slot.may_restart() {
                    slot.set_actor(ActorState::Starting);
                    tracing::warn!(tool = %name, %error, "tool actor failed; restarting");
                    if let Err(error) = Self::start_child(&myself, state, &name).await {
                        slot.set_actor(ActorState::Stopped);
                        tracing::error!(tool = %name, %error, "tool actor could not restart");
                    }
                } else {
                    slot.set_actor(ActorState::Stopped);
                    tracing::error!(
                        tool = %name,
                        %error,
                        "tool actor failed too often; it stays unavailable"
                    );
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(name) = state.children.remove(&cell.get_id())
                    && let Some(slot) = state.shared.slots.get(&name)
                {
                    slot.set_actor(ActorState::Stopped);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
