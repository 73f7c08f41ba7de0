//! The [`Tool`] trait: what a tool is, what it touches, and how it runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::capability::{Authority, DenialRecord};
use crate::caveat::Grant;
use crate::vault::{Secret, Vault};
use crate::{ToolError, ToolErrorKind};

/// What a tool's call does to the world; decides what recovery may do with a call cut
/// off by a crash (intent journaled, no result).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SideEffect {
    /// Computes from its input only.
    Pure,
    /// Reads the world, changes nothing.
    ReadOnly,
    /// Changes the world, but doing it twice is the same as once (e.g. writing a file
    /// with given contents).
    Idempotent,
    /// Changes the world in a way a repeat would repeat (sending mail, appending,
    /// paying). Never run twice: a call found in doubt fails with
    /// [`ToolErrorKind::InDoubt`].
    External,
}

impl SideEffect {
    /// Whether a call found in doubt may run again.
    pub const fn safe_to_repeat(self) -> bool {
        !matches!(self, SideEffect::External)
    }
}

/// What a call touches, declared by the tool from its input before it runs, so the
/// capability check can see it (`path-prefix`, `max-bytes` caveats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The logical path (`/`-rooted, normalized) the call reads or writes.
    pub path: Option<String>,
    /// How many bytes the call moves, if known before it runs.
    pub bytes: Option<u64>,
}

/// A tool's public description: what an agent (or a model) is told about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Unique name, e.g. `fs.read`.
    pub name: String,
    /// What it does, for people and models.
    pub description: String,
    /// JSON Schema of its input.
    pub input_schema: serde_json::Value,
    /// What its calls do to the world.
    pub side_effect: SideEffect,
}

/// What a running call may use: the limits its capability set, and the secrets vault.
#[derive(Clone, Debug)]
pub struct ToolContext {
    tool: Arc<str>,
    grant: Grant,
    vault: Option<Arc<Vault>>,
    /// Secrets this call read, to keep them out of its output.
    read_secrets: Arc<Mutex<Vec<Secret>>>,
    /// Where denials during the call are journaled.
    audit: Option<Arc<AuditTrail>>,
}

/// Who is calling with which token, for denials found while a call runs.
#[derive(Debug)]
pub(crate) struct AuditTrail {
    pub(crate) authority: Authority,
    pub(crate) caller: Option<String>,
    pub(crate) token: String,
}

impl ToolContext {
    pub(crate) fn new(tool: Arc<str>, grant: Grant, vault: Option<Arc<Vault>>) -> Self {
        ToolContext {
            tool,
            grant,
            vault,
            read_secrets: Arc::default(),
            audit: None,
        }
    }

    pub(crate) fn with_audit(mut self, trail: AuditTrail) -> Self {
        self.audit = Some(Arc::new(trail));
        self
    }

    /// Fails with a denial, journaled in the audit stream like the host's own.
    fn deny(&self, reason: String) -> ToolError {
        tracing::warn!(tool = %self.tool, %reason, "denied while running");
        if let Some(trail) = &self.audit {
            let record = DenialRecord {
                at_micros: jiff::Timestamp::now().as_microsecond(),
                tool: self.tool.to_string(),
                agent: trail.caller.clone(),
                token: Some(trail.token.clone()),
                reason: reason.clone(),
            };
            let authority = trail.authority.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { authority.audit(record).await });
            }
        }
        ToolError::new(ToolErrorKind::Denied, reason)
    }

    /// Whether `output` contains (raw or JSON-escaped) a secret this call read.
    pub(crate) fn leaks_secret(&self, output: &[u8]) -> bool {
        let read = self.read_secrets.lock().unwrap_or_else(|e| e.into_inner());
        read.iter().any(|secret| {
            let raw = secret.expose();
            let escaped = secret
                .expose_str()
                .and_then(|s| serde_json::to_string(s).ok())
                .map(|s| s.trim_matches('"').as_bytes().to_vec());
            contains(output, raw) || escaped.is_some_and(|e| contains(output, &e))
        })
    }

    /// A context with no limits and no vault, for calling a tool directly (tests,
    /// benchmarks). Calls through a [`ToolHost`](crate::ToolHost) get theirs from the
    /// caller's capability.
    pub fn unrestricted(tool: &str) -> Self {
        Self::new(tool.into(), Grant::default(), None)
    }

    /// The byte budget the capability allows (`max-bytes`), if any. Tools that move
    /// data must stay within it.
    pub fn max_bytes(&self) -> Option<u64> {
        self.grant.max_bytes
    }

    /// Fails with [`ToolErrorKind::Denied`] if `bytes` exceed the capability's budget.
    ///
    /// # Errors
    /// As above.
    pub fn check_bytes(&self, bytes: u64) -> Result<(), ToolError> {
        match self.grant.max_bytes {
            Some(limit) if bytes > limit => Err(ToolError::new(
                ToolErrorKind::Denied,
                format!(
                    "{}: {bytes} bytes exceed the capability's max-bytes {limit}",
                    self.tool
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The secret `name`, if the capability allows this call to read it.
    ///
    /// # Errors
    /// [`ToolErrorKind::Denied`] if the capability's `secret` caveats exclude it,
    /// [`ToolErrorKind::Failed`] if there is no vault or no such secret.
    pub fn secret(&self, name: &str) -> Result<Secret, ToolError> {
        if !self.grant.allows_secret(name) {
            return Err(self.deny(format!(
                "{}: the capability does not allow secret {name:?}",
                self.tool
            )));
        }
        let vault = self
            .vault
            .as_ref()
            .ok_or_else(|| ToolError::failed(format!("{}: no secrets vault", self.tool)))?;
        let secret = vault
            .get(name)
            .map_err(|e| ToolError::failed(format!("{}: {e}", self.tool)))?;
        self.read_secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(secret.clone());
        Ok(secret)
    }
}

/// Whether `haystack` contains `needle` (empty needles never match).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A tool agents can call. Implement it for a small `Clone` value holding the tool's
/// configuration; the host keeps the registered value as a template and gives each (re)start
/// of the tool's actor a fresh clone.
///
/// ```
/// use serde_json::json;
/// use toka_tools::{SideEffect, Tool, ToolContext, ToolError};
///
/// #[derive(Clone)]
/// struct Add;
///
/// impl Tool for Add {
///     type Input = (i64, i64);
///     type Output = i64;
///     fn name(&self) -> &str { "math.add" }
///     fn description(&self) -> &str { "Adds two integers." }
///     fn input_schema(&self) -> serde_json::Value {
///         json!({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}]})
///     }
///     fn side_effect(&self) -> SideEffect { SideEffect::Pure }
///     async fn invoke(&self, (a, b): (i64, i64), _cx: ToolContext) -> Result<i64, ToolError> {
///         a.checked_add(b).ok_or_else(|| ToolError::failed("overflow"))
///     }
/// }
/// ```
pub trait Tool: Clone + Send + Sync + 'static {
    /// The call's input (parsed from JSON).
    type Input: DeserializeOwned + Send + 'static;
    /// The call's output (returned as JSON).
    type Output: Serialize + Send + 'static;

    /// Unique name, e.g. `fs.read` (letters, digits, `.`, `-`, `_`).
    fn name(&self) -> &str;

    /// What it does, for people and models.
    fn description(&self) -> &str;

    /// JSON Schema of [`Tool::Input`].
    fn input_schema(&self) -> serde_json::Value;

    /// What its calls do to the world.
    fn side_effect(&self) -> SideEffect;

    /// What a call with `input` touches, for the capability check. The default: no path,
    /// unknown size.
    ///
    /// # Errors
    /// [`ToolErrorKind::InvalidInput`] if the input names something out of the tool's
    /// reach (e.g. a path escaping its root).
    fn scope(&self, input: &Self::Input) -> Result<Scope, ToolError> {
        let _ = input;
        Ok(Scope::default())
    }

    /// Runs one call.
    fn invoke(
        &self,
        input: Self::Input,
        cx: ToolContext,
    ) -> impl Future<Output = Result<Self::Output, ToolError>> + Send;
}

/// A boxed future of a call's JSON output.
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, ToolError>> + Send>>;

/// A parsed call, ready to run.
pub(crate) struct Prepared {
    pub(crate) scope: Scope,
    pub(crate) run: Box<dyn FnOnce(ToolContext) -> CallFuture + Send>,
}

/// A tool with its types erased: JSON in, JSON out.
pub(crate) trait DynTool: Send + Sync + 'static {
    fn spec(&self) -> ToolSpec;
    /// A fresh instance (for a restarted actor).
    fn fresh(&self) -> Arc<dyn DynTool>;
    fn prepare(&self, input: &[u8]) -> Result<Prepared, ToolError>;
}

pub(crate) struct Erased<T>(pub(crate) T);

impl<T: Tool> DynTool for Erased<T> {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.0.name().to_owned(),
            description: self.0.description().to_owned(),
            input_schema: self.0.input_schema(),
            side_effect: self.0.side_effect(),
        }
    }

    fn fresh(&self) -> Arc<dyn DynTool> {
        Arc::new(Erased(self.0.clone()))
    }

    fn prepare(&self, input: &[u8]) -> Result<Prepared, ToolError> {
        let input: T::Input = serde_json::from_slice(input).map_err(|e| {
            ToolError::invalid_input(format!(
                "{}: input does not match its schema: {e}",
                self.0.name()
            ))
        })?;
        let scope = self.0.scope(&input)?;
        let tool = self.0.clone();
        Ok(Prepared {
            scope,
            run: Box::new(move |cx| {
                Box::pin(async move {
                    let output = tool.invoke(input, cx).await?;
                    serde_json::to_vec(&output).map_err(|e| {
                        ToolError::failed(format!("{}: output not serializable: {e}", tool.name()))
                    })
                })
            }),
        })
    }
}
