//! Durable human approval of tool calls.
//!
//! A tool call whose token carries an `approval` caveat covering the tool (`approval =
//! required`, or `approval = fs.*`), or of a tool the host marks as always needing
//! approval ([`ToolHostBuilder::approval_required`](crate::ToolHostBuilder::approval_required)),
//! does not run at once: the host journals a pending [`Approval`] (id, calling agent, tool,
//! input with vault values redacted, the token's id, when, and an expiry) and the call
//! answers [`ToolErrorKind::PendingApproval`] with the approval's id. A human decides
//! ([`Approvals::decide`], journaled with the approver's token id); an approval not
//! decided before it expires counts as denied.
//!
//! After approval the call runs **exactly once**: an agent's call runs when the agent
//! makes the same call again (same tool, input and token; the assistant does so when it
//! hears of the decision), a call without an agent (an API client's) is run by
//! [`ToolHost::run_approved`](crate::ToolHost::run_approved). Its start and its outcome
//! are journaled: a crash between them leaves it in doubt, and a tool that is not safe to
//! repeat is then never run again. After a denial the call never runs.
//!
//! Everything is in the journal stream [`APPROVALS_STREAM`], so pending approvals
//! survive a crash: after a restart they are still pending, neither asked again nor lost.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use toka_store::{ExpectedVersion, Journal, NewEvent};

use crate::capability::Capability;
use crate::vault::Vault;
use crate::{Error, ToolError, ToolErrorKind};

/// The journal stream of approval requests, decisions and outcomes.
pub const APPROVALS_STREAM: &str = "toka/approvals";

/// The record kind of every approval record.
const RECORD: &str = "toka.approval@1";

/// How long an approval stays pending by default: one day.
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where an approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for a human decision.
    Pending,
    /// Approved: the call runs (or ran) once.
    Approved,
    /// Denied: the call never runs.
    Denied,
    /// Not decided in time: counts as denied.
    Expired,
}

/// A human's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Let the call run.
    Approve,
    /// Refuse it.
    Deny,
}

/// One approval, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id.
    pub id: String,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// The tool called.
    pub tool: String,
    /// The calling agent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The call's input, with vault values redacted.
    pub input: Value,
    /// The id of the token the call was made with (never the token).
    pub token: String,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
    /// When it expires if not decided (RFC 3339).
    pub expires_at: String,
    /// The id of the token that decided it, if decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The reason given with the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the approved call has started.
    pub started: bool,
    /// Once the approved call ran: its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Once the approved call ran: its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolError>,
}

/// A journaled step of an approval.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Record {
    Requested(Requested),
    Decided {
        id: String,
        approve: bool,
        reason: String,
        approver: String,
        at_micros: i64,
    },
    Expired {
        id: String,
    },
    Started {
        id: String,
    },
    Finished {
        id: String,
        outcome: Result<String, ToolError>,
    },
}

/// A pending approval as journaled.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Requested {
    id: String,
    agent: Option<String>,
    tool: String,
    /// The input (JSON text), vault values redacted.
    input: String,
    /// Whether redaction changed the input (then it cannot be run after a restart).
    redacted: bool,
    /// BLAKE3 of the input as called: with `agent`, `tool` and `token`, what a repeated
    /// call must match to be the approved one.
    digest: [u8; 32],
    token: String,
    /// The token's caveats (their text): an approved call without an agent is run, after
    /// a restart too, with a token of the same caveats.
    caveats: Vec<String>,
    requested_at_micros: i64,
    expires_at_micros: i64,
}

/// What the registry knows of one approval.
#[derive(Clone, Debug)]
struct Entry {
    requested: Requested,
    decided: Option<(bool, String, String)>,
    expired: bool,
    started: bool,
    finished: Option<Result<String, ToolError>>,
    /// A denial already answered to a repeated call (in memory only).
    reported: bool,
    /// The input as called, when redaction changed it (in memory only).
    original_input: Option<Vec<u8>>,
}

impl Entry {
    fn status(&self, now_micros: i64) -> ApprovalStatus {
        match &self.decided {
            Some((true, ..)) => ApprovalStatus::Approved,
            Some((false, ..)) => ApprovalStatus::Denied,
            None if self.expired || now_micros >= self.requested.expires_at_micros => {
                ApprovalStatus::Expired
            }
            None => ApprovalStatus::Pending,
        }
    }

    fn view(&self, now_micros: i64) -> Approval {
        let r = &self.requested;
        let (output, error) = match &self.finished {
            Some(Ok(text)) => (serde_json::from_str(text).ok(), None),
            Some(Err(error)) => (None, Some(error.clone())),
            None => (None, None),
        };
        Approval {
            id: r.id.clone(),
            status: self.status(now_micros),
            tool: r.tool.clone(),
            agent: r.agent.clone(),
            input: serde_json::from_str(&r.input).unwrap_or(Value::String(r.input.clone())),
            token: r.token.clone(),
            requested_at: rfc3339(r.requested_at_micros),
            expires_at: rfc3339(r.expires_at_micros),
            decided_by: self.decided.as_ref().map(|(_, _, by)| by.clone()),
            reason: self.decided.as_ref().map(|(_, reason, _)| reason.clone()),
            started: self.started,
            output,
            error,
        }
    }

    fn matches(&self, call: &CallKey<'_>) -> bool {
        let r = &self.requested;
        r.agent.as_deref() == call.agent
            && r.tool == call.tool
            && r.digest == call.digest
            && r.token == call.token
    }
}

fn rfc3339(micros: i64) -> String {
    Timestamp::from_microsecond(micros).map_or_else(|_| micros.to_string(), |t| t.to_string())
}

fn now_micros() -> i64 {
    Timestamp::now().as_microsecond()
}

/// What identifies a call for its approval.
pub(crate) struct CallKey<'a> {
    pub(crate) agent: Option<&'a str>,
    pub(crate) tool: &'a str,
    pub(crate) digest: [u8; 32],
    pub(crate) token: &'a str,
}

/// What the host does with a call that needs approval.
pub(crate) enum Gate {
    /// Run it (approved); journal its outcome under this approval id.
    Run(String),
    /// Do not run it: answer this error (pending, denied, expired).
    Answer(ToolError),
}

/// The approvals of a node: pending, decided and done, rebuilt from the journal.
///
/// Cheap to clone (shared state).
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    journal: Arc<dyn Journal>,
    ttl: Duration,
    entries: Mutex<Vec<Entry>>,
    /// Held while a decision, an expiry or a call's gate is checked and journaled, so two
    /// concurrent decisions of one approval cannot both pass the "still pending" check
    /// (two approvals would run the call twice), and two concurrent identical calls get
    /// one approval, not two.
    deciding: tokio::sync::Mutex<()>,
    /// Told the id of every approval requested or decided.
    changes: tokio::sync::broadcast::Sender<String>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// The approvals journaled in `journal`; new ones stay pending for `ttl`.
    ///
    /// # Errors
    /// [`Error::Journal`] or [`Error::Decode`] reading [`APPROVALS_STREAM`].
    pub fn open(journal: Arc<dyn Journal>, ttl: Duration) -> Result<Self, Error> {
        let mut entries: Vec<Entry> = Vec::new();
        for event in journal.iter_stream(APPROVALS_STREAM, 1)? {
            let event = event?;
            let record: Record = crate::decode(APPROVALS_STREAM, event.seq, &event.payload)?;
            apply(&mut entries, record);
        }
        let (changes, _) = tokio::sync::broadcast::channel(256);
        Ok(Approvals {
            inner: Arc::new(Inner {
                journal,
                ttl,
                entries: Mutex::new(entries),
                deciding: tokio::sync::Mutex::new(()),
                changes,
            }),
        })
    }

    fn entries(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every approval, oldest first.
    pub fn list(&self) -> Vec<Approval> {
        let now = now_micros();
        self.entries().iter().map(|e| e.view(now)).collect()
    }

    /// Approval `id`, if there is one.
    pub fn get(&self, id: &str) -> Option<Approval> {
        let now = now_micros();
        self.entries()
            .iter()
            .find(|e| e.requested.id == id)
            .map(|e| e.view(now))
    }

    /// The ids of approvals as they are requested or decided (for an event feed, or to
    /// tell a waiting agent). A slow receiver may miss some: read [`Approvals::get`].
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.changes.subscribe()
    }

    /// Decides pending approval `id`; `approver` is the deciding token's id.
    ///
    /// # Errors
    /// [`Error::Approval`] if there is no such approval or it is not pending (decided,
    /// or expired); [`Error::Journal`].
    pub async fn decide(
        &self,
        id: &str,
        decision: Decision,
        reason: &str,
        approver: &str,
    ) -> Result<Approval, Error> {
        let _deciding = self.inner.deciding.lock().await;
        let record = {
            let entries = self.entries();
            let entry = entries
                .iter()
                .find(|e| e.requested.id == id)
                .ok_or_else(|| Error::Approval(format!("no approval {id:?}")))?;
            let status = entry.status(now_micros());
            if status != ApprovalStatus::Pending {
                return Err(Error::Approval(format!(
                    "approval {id} is {status:?}, not pending"
                )));
            }
            Record::Decided {
                id: id.to_owned(),
                approve: decision == Decision::Approve,
                reason: reason.to_owned(),
                approver: approver.to_owned(),
                at_micros: now_micros(),
            }
        };
        self.journal(record).await?;
        tracing::info!(approval = id, ?decision, approver, "approval decided");
        let _ = self.inner.changes.send(id.to_owned());
        self.get(id)
            .ok_or_else(|| Error::Approval(format!("no approval {id:?}")))
    }

    /// Journals as expired every pending approval past its expiry; returns their ids
    /// (to tell their agents).
    ///
    /// # Errors
    /// [`Error::Journal`].
    pub async fn expire_due(&self) -> Result<Vec<String>, Error> {
        let _deciding = self.inner.deciding.lock().await;
        let now = now_micros();
        let due: Vec<String> = self
            .entries()
            .iter()
            .filter(|e| e.decided.is_none() && !e.expired)
            .filter(|e| now >= e.requested.expires_at_micros)
            .map(|e| e.requested.id.clone())
            .collect();
        for id in &due {
            self.journal(Record::Expired { id: id.clone() }).await?;
            let _ = self.inner.changes.send(id.clone());
        }
        Ok(due)
    }

    /// Approved calls without an agent that have not started: the ones
    /// [`ToolHost::run_approved`](crate::ToolHost::run_approved) should run (after a
    /// restart, say).
    pub fn approved_unstarted(&self) -> Vec<String> {
        self.entries()
            .iter()
            .filter(|e| e.requested.agent.is_none() && !e.started)
            .filter(|e| matches!(e.decided, Some((true, ..))))
            .map(|e| e.requested.id.clone())
            .collect()
    }

    /// Decided approvals of agents' calls whose call has not finished: their agents
    /// should hear of the decision (again, after a restart).
    pub fn decided_for_agents(&self) -> Vec<Approval> {
        let now = now_micros();
        self.entries()
            .iter()
            .filter(|e| e.requested.agent.is_some() && e.finished.is_none())
            .filter(|e| e.status(now) != ApprovalStatus::Pending)
            .map(|e| e.view(now))
            .collect()
    }

    async fn journal(&self, record: Record) -> Result<(), Error> {
        let payload = crate::encode(APPROVALS_STREAM, &record)?;
        let _appended = self
            .inner
            .journal
            .append(
                APPROVALS_STREAM,
                ExpectedVersion::Any,
                &[NewEvent::new(RECORD, payload)],
            )
            .await?;
        apply(&mut self.entries(), record);
        Ok(())
    }

    /// Decides what the host does with a call that needs approval: run it (approved and
    /// not finished), or answer pending, denied or expired; a call with no approval yet
    /// gets a new pending one. `explicit` is the approval a
    /// [`ToolHost::run_approved`](crate::ToolHost::run_approved) call runs.
    pub(crate) async fn gate(
        &self,
        call: CallKey<'_>,
        input: &[u8],
        token: &Capability,
        vault: Option<&Vault>,
        explicit: Option<&str>,
    ) -> Result<Gate, Error> {
        let _deciding = self.inner.deciding.lock().await;
        let now = now_micros();
        let found = {
            let mut entries = self.entries();
            let entry = match explicit {
                Some(id) => entries.iter_mut().find(|e| e.requested.id == id),
                None => entries
                    .iter_mut()
                    .rev()
                    .find(|e| e.matches(&call) && e.finished.is_none() && !e.reported),
            };
            entry.map(|entry| {
                let id = entry.requested.id.clone();
                let status = entry.status(now);
                if matches!(status, ApprovalStatus::Denied | ApprovalStatus::Expired) {
                    entry.reported = true;
                }
                (id, status, entry.started)
            })
        };
        let tool = call.tool;
        match found {
            Some((id, ApprovalStatus::Approved, started)) => {
                if explicit.is_none() && call.agent.is_none() {
                    // An API client's approved call is run by the host, not by a repeat.
                    return Ok(Gate::Answer(ToolError::awaiting_approval(tool, &id)));
                }
                if !started {
                    self.journal(Record::Started { id: id.clone() }).await?;
                }
                Ok(Gate::Run(id))
            }
            Some((id, ApprovalStatus::Pending, _)) => {
                Ok(Gate::Answer(ToolError::awaiting_approval(tool, &id)))
            }
            Some((id, status, _)) => {
                let refused = ToolError::new(
                    ToolErrorKind::Denied,
                    format!("{tool}: approval {id} was {status:?}: the call did not run"),
                );
                // Told once: the approval is done (its agent needs no news of it again).
                self.finished(&id, &Err(refused.clone())).await?;
                Ok(Gate::Answer(refused))
            }
            None if explicit.is_some() => Ok(Gate::Answer(ToolError::new(
                ToolErrorKind::Denied,
                format!("{tool}: no such approval"),
            ))),
            None => {
                let id = format!("apr-{}", uuid::Uuid::now_v7().simple());
                let text = String::from_utf8_lossy(input).into_owned();
                let shown = redact(&text, vault);
                let requested = Requested {
                    id: id.clone(),
                    agent: call.agent.map(str::to_owned),
                    tool: tool.to_owned(),
                    redacted: shown != text,
                    input: shown,
                    digest: call.digest,
                    token: call.token.to_owned(),
                    caveats: token
                        .caveats()
                        .map(|cs| cs.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    requested_at_micros: now,
                    expires_at_micros: now.saturating_add(
                        i64::try_from(self.inner.ttl.as_micros()).unwrap_or(i64::MAX),
                    ),
                };
                let redacted = requested.redacted;
                self.journal(Record::Requested(requested)).await?;
                if redacted && let Some(entry) = self.entries().last_mut() {
                    entry.original_input = Some(input.to_vec());
                }
                tracing::info!(approval = %id, tool, agent = ?call.agent, "approval requested");
                let _ = self.inner.changes.send(id.clone());
                Ok(Gate::Answer(ToolError::awaiting_approval(tool, &id)))
            }
        }
    }

    /// Journals the outcome of approved call `id`.
    pub(crate) async fn finished(
        &self,
        id: &str,
        outcome: &Result<Vec<u8>, ToolError>,
    ) -> Result<(), Error> {
        let outcome = match outcome {
            Ok(output) => Ok(String::from_utf8_lossy(output).into_owned()),
            Err(error) => Err(error.clone()),
        };
        self.journal(Record::Finished {
            id: id.to_owned(),
            outcome,
        })
        .await?;
        let _ = self.inner.changes.send(id.to_owned());
        Ok(())
    }

    /// What running approved call `id` (no agent) needs: tool, input as called, the
    /// token's id and caveats, whether it started before (a crash may have cut it off).
    pub(crate) fn runnable(&self, id: &str) -> Option<RunnableApproval> {
        let entries = self.entries();
        let entry = entries.iter().find(|e| e.requested.id == id)?;
        let r = &entry.requested;
        let input = match (&entry.original_input, r.redacted) {
            (Some(input), _) => Some(input.clone()),
            (None, false) => Some(r.input.clone().into_bytes()),
            (None, true) => None,
        };
        Some(RunnableApproval {
            tool: r.tool.clone(),
            input,
            token: r.token.clone(),
            caveats: r.caveats.clone(),
            approved: matches!(entry.decided, Some((true, ..))),
            agent: r.agent.is_some(),
            started: entry.started,
            finished: entry.finished.is_some(),
        })
    }
}

/// What [`Approvals::runnable`] tells.
pub(crate) struct RunnableApproval {
    pub(crate) tool: String,
    /// `None` if redaction lost it in a restart.
    pub(crate) input: Option<Vec<u8>>,
    pub(crate) token: String,
    pub(crate) caveats: Vec<String>,
    pub(crate) approved: bool,
    pub(crate) agent: bool,
    pub(crate) started: bool,
    pub(crate) finished: bool,
}

/// A journaled approval record (a payload of [`APPROVALS_STREAM`]) as JSON, for event
/// feeds; `None` if it does not decode. One of
/// `{"requested": {"id", "tool", "agent", "input", "token", "requested_at", "expires_at"}}`,
/// `{"decided": {"id", "decision", "reason", "approver", "at"}}`, `{"expired": {"id"}}`,
/// `{"started": {"id"}}`, `{"finished": {"id", "output" | "error"}}`. Tokens appear as
/// their ids (`token`, `approver`), never as tokens; the input is as journaled (vault
/// values redacted).
pub fn describe(payload: &[u8]) -> Option<Value> {
    let record: Record = postcard::from_bytes(payload).ok()?;
    let text_json = |text: &str| serde_json::from_str(text).unwrap_or(Value::String(text.into()));
    Some(match record {
        Record::Requested(r) => serde_json::json!({ "requested": {
            "id": r.id,
            "tool": r.tool,
            "agent": r.agent,
            "input": text_json(&r.input),
            "token": r.token,
            "requested_at": rfc3339(r.requested_at_micros),
            "expires_at": rfc3339(r.expires_at_micros),
        }}),
        Record::Decided {
            id,
            approve,
            reason,
            approver,
            at_micros,
        } => serde_json::json!({ "decided": {
            "id": id,
            "decision": if approve { Decision::Approve } else { Decision::Deny },
            "reason": reason,
            "approver": approver,
            "at": rfc3339(at_micros),
        }}),
        Record::Expired { id } => serde_json::json!({ "expired": { "id": id } }),
        Record::Started { id } => serde_json::json!({ "started": { "id": id } }),
        Record::Finished { id, outcome } => match outcome {
            Ok(output) => {
                serde_json::json!({ "finished": { "id": id, "output": text_json(&output) } })
            }
            Err(error) => serde_json::json!({ "finished": { "id": id, "error": error } }),
        },
    })
}

/// Applies a journaled record to the registry.
fn apply(entries: &mut Vec<Entry>, record: Record) {
    let find = |entries: &mut Vec<Entry>, id: &str| -> Option<usize> {
        entries.iter().position(|e| e.requested.id == id)
    };
    match record {
        Record::Requested(requested) => entries.push(Entry {
            requested,
            decided: None,
            expired: false,
            started: false,
            finished: None,
            reported: false,
            original_input: None,
        }),
        Record::Decided {
            id,
            approve,
            reason,
            approver,
            ..
        } => {
            if let Some(i) = find(entries, &id) {
                entries[i].decided = Some((approve, reason, approver));
            }
        }
        Record::Expired { id } => {
            if let Some(i) = find(entries, &id) {
                entries[i].expired = true;
            }
        }
        Record::Started { id } => {
            if let Some(i) = find(entries, &id) {
                entries[i].started = true;
            }
        }
        Record::Finished { id, outcome } => {
            if let Some(i) = find(entries, &id) {
                entries[i].finished = Some(outcome);
            }
        }
    }
}

/// `text` with every vault value in it replaced by `<secret NAME>`.
fn redact(text: &str, vault: Option<&Vault>) -> String {
    let Some(vault) = vault else {
        return text.to_owned();
    };
    let mut out = text.to_owned();
    for name in vault.names() {
        let Ok(secret) = vault.get(&name) else {
            continue;
        };
        let Some(value) = secret.expose_str().filter(|v| !v.is_empty()) else {
            continue;
        };
        if out.contains(value) {
            out = out.replace(value, &format!("<secret {name}>"));
        }
    }
    out
}
