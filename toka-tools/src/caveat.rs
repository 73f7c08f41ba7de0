//! First-party caveats: their text form, and Toka's checker for them.
//!
//! A caveat is one line of text, `key = value`, signed into a capability token. Every
//! caveat of a token must hold for a request (they are a conjunction), so adding one
//! can only narrow what the token allows.
//!
//! | caveat | holds when |
//! |---|---|
//! | `tool = fs.read` / `tool = fs.*` | the tool's name is `fs.read` / starts with `fs.` |
//! | `agent = ID` | the caller is the agent `ID` |
//! | `expires = RFC3339` | the check happens strictly before that instant |
//! | `path-prefix = /dir` | the request names a path, equal to `/dir` or under it |
//! | `max-bytes = N` | the request moves at most `N` bytes (also enforced by the tool) |
//! | `secret = NAME` / `secret = ns.*` | a tool asks for that secret (checked on access) |
//! | `model = NAME` / `model = ns.*` | a model call asks that configured model |
//! | `max-tokens = N` | a model call asks for at most `N` tokens (a call that names no limit is given `N`) |
//! | `budget-tokens = N` | the calling agent has spent fewer than `N` tokens on model calls (counted from the journaled usage) |
//! | `approval = required` / `approval = fs.*` | always holds, but a call of any tool / of a matching tool first waits for a human decision (see [`crate::approval`]) |
//!
//! Tool caveats (`tool`, `path-prefix`, `max-bytes`, `secret`, `approval`) restrict tool calls and
//! model caveats restrict model calls; `agent` and `expires` restrict both.
//!
//! # Invariants
//! - **Fail closed.** A caveat that is not valid UTF-8, has an unknown key, a malformed
//!   value, or stray whitespace or control characters, rejects the token. So does a
//!   `path-prefix` caveat when the request names no path.
//! - Parsing and display round-trip: `Caveat::parse(&c.to_string()) == Ok(c)`.

use std::fmt;

use jiff::Timestamp;

use crate::Denial;

/// Longest accepted caveat text, in bytes.
pub const MAX_CAVEAT_BYTES: usize = 1024;

/// A name pattern: an exact name, or `prefix.*` for every name under `prefix.`.
///
/// ```
/// use toka_tools::NamePattern;
/// let p: NamePattern = "fs.*".parse().unwrap();
/// assert!(p.matches("fs.read") && !p.matches("fs") && !p.matches("fsx.read"));
/// assert!("fs*".parse::<NamePattern>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NamePattern {
    /// Exactly this name.
    Exact(String),
    /// Every name starting with this prefix (which ends in `.`).
    Prefix(String),
}

impl NamePattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(exact) => name == exact,
            NamePattern::Prefix(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
        }
    }
}

impl std::str::FromStr for NamePattern {
    type Err = Denial;

    fn from_str(s: &str) -> Result<Self, Denial> {
        let valid = |part: &str| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'@')
                })
        };
        match s.strip_suffix(".*") {
            Some(prefix) if valid(prefix) => Ok(NamePattern::Prefix(format!("{prefix}."))),
            None if valid(s) => Ok(NamePattern::Exact(s.to_owned())),
            _ => Err(Denial::new(format!(
                "malformed name pattern {s:?} (use a name or `prefix.*`)"
            ))),
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Exact(name) => f.write_str(name),
            NamePattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// One restriction signed into a capability token.
///
/// ```
/// use toka_tools::Caveat;
/// let c = Caveat::parse(b"path-prefix = /notes").unwrap();
/// assert_eq!(c, Caveat::PathPrefix("/notes".into()));
/// assert_eq!(c.to_string(), "path-prefix = /notes");
/// assert!(Caveat::parse(b"colour = blue").is_err()); // unknown: fail closed
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caveat {
    /// `tool = PATTERN`: only tools matching the pattern.
    Tool(NamePattern),
    /// `agent = ID`: only calls made by this agent.
    Agent(String),
    /// `expires = RFC3339`: only before this instant.
    Expires(Timestamp),
    /// `path-prefix = /PATH`: only requests for this path or paths under it.
    PathPrefix(String),
    /// `max-bytes = N`: only requests moving at most `N` bytes.
    MaxBytes(u64),
    /// `secret = PATTERN`: tools may read only secrets matching the pattern.
    Secret(NamePattern),
    /// `model = PATTERN`: only model calls to configured models matching the pattern.
    Model(NamePattern),
    /// `max-tokens = N`: a model call answers in at most `N` tokens.
    MaxTokens(u64),
    /// `budget-tokens = N`: model calls only while the calling agent has spent fewer than
    /// `N` tokens.
    BudgetTokens(u64),
    /// `approval = required` (every tool) or `approval = PATTERN` (matching tools): a tool
    /// call waits for a human decision before it runs. Attenuation only adds caveats, so
    /// a token handed on never drops the requirement.
    Approval(ApprovalScope),
}

/// Which tool calls an `approval` caveat makes wait for a human decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalScope {
    /// `approval = required`: every tool call.
    Every,
    /// `approval = PATTERN`: calls of the tools matching the pattern.
    Tools(NamePattern),
}

impl ApprovalScope {
    /// Whether a call of tool `name` needs approval.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            ApprovalScope::Every => true,
            ApprovalScope::Tools(pattern) => pattern.matches(name),
        }
    }
}

impl Caveat {
    /// Parses a caveat's text. Fails closed: anything it does not fully understand is an
    /// error.
    ///
    /// # Errors
    /// A [`Denial`] naming what was wrong.
    pub fn parse(predicate: &[u8]) -> Result<Caveat, Denial> {
        if predicate.len() > MAX_CAVEAT_BYTES {
            return Err(Denial::new(format!(
                "caveat of {} bytes exceeds {MAX_CAVEAT_BYTES}",
                predicate.len()
            )));
        }
        let text =
            std::str::from_utf8(predicate).map_err(|_| Denial::new("caveat is not UTF-8 text"))?;
        if text.chars().any(char::is_control) {
            return Err(Denial::new(format!(
                "caveat {text:?} contains control characters"
            )));
        }
        let Some((key, value)) = text.split_once(" = ") else {
            return Err(Denial::new(format!("caveat {text:?} is not `key = value`")));
        };
        if value.is_empty() || value.trim() != value || key.trim() != key {
            return Err(Denial::new(format!(
                "caveat {text:?} has stray whitespace or no value"
            )));
        }
        match key {
            "tool" => Ok(Caveat::Tool(value.parse()?)),
            "agent" => {
                if value.contains(char::is_whitespace) {
                    return Err(Denial::new(format!("caveat {text:?}: malformed agent id")));
                }
                Ok(Caveat::Agent(value.to_owned()))
            }
            "expires" => value
                .parse::<Timestamp>()
                .map(Caveat::Expires)
                .map_err(|e| Denial::new(format!("caveat {text:?}: not an RFC 3339 time: {e}"))),
            "path-prefix" => {
                if !is_normal_path(value) {
                    return Err(Denial::new(format!(
                        "caveat {text:?}: a path prefix is absolute, without `.`, `..` or `//`"
                    )));
                }
                Ok(Caveat::PathPrefix(value.to_owned()))
            }
            "max-bytes" => Ok(Caveat::MaxBytes(count(text, value, "a byte count")?)),
            "secret" => Ok(Caveat::Secret(value.parse()?)),
            "model" => Ok(Caveat::Model(value.parse()?)),
            "max-tokens" => Ok(Caveat::MaxTokens(count(text, value, "a token count")?)),
            "budget-tokens" => Ok(Caveat::BudgetTokens(count(text, value, "a token count")?)),
            "approval" if value == "required" => Ok(Caveat::Approval(ApprovalScope::Every)),
            "approval" => Ok(Caveat::Approval(ApprovalScope::Tools(value.parse()?))),
            _ => Err(Denial::new(format!("unknown caveat {key:?}"))),
        }
    }

    /// Whether this caveat lets `request` through; also narrows `grant` with what the
    /// tool must enforce while it runs (byte budget, readable secrets, token limit).
    fn admit(&self, request: &Request<'_>, grant: &mut Grant) -> Result<(), Denial> {
        if let Some(model) = &request.model {
            return self.admit_model(request, model, grant);
        }
        match self {
            Caveat::Tool(pattern) if !pattern.matches(request.tool) => Err(Denial::new(format!(
                "tool {:?} is not allowed (token allows `{pattern}`)",
                request.tool
            ))),
            Caveat::Agent(agent) if request.agent != Some(agent.as_str()) => {
                Err(Denial::new(match request.agent {
                    Some(caller) => {
                        format!("agent {caller:?} is not allowed (token is for {agent:?})")
                    }
                    None => format!("token is for agent {agent:?}; the caller is not an agent"),
                }))
            }
            Caveat::Expires(at) if request.now >= *at => {
                Err(Denial::new(format!("token expired at {at}")))
            }
            Caveat::PathPrefix(prefix) => match request.path {
                Some(path) if path_is_under(path, prefix) => Ok(()),
                Some(path) => Err(Denial::new(format!(
                    "path {path:?} is outside the allowed prefix {prefix:?}"
                ))),
                None => Err(Denial::new(format!(
                    "token is limited to paths under {prefix:?}; this request names no path"
                ))),
            },
            Caveat::MaxBytes(limit) => {
                if let Some(bytes) = request.bytes.filter(|b| b > limit) {
                    return Err(Denial::new(format!(
                        "request moves {bytes} bytes, the token allows {limit}"
                    )));
                }
                grant.max_bytes = Some(grant.max_bytes.map_or(*limit, |b| b.min(*limit)));
                Ok(())
            }
            Caveat::Secret(pattern) => {
                grant.secrets.push(pattern.clone());
                Ok(())
            }
            Caveat::Approval(scope) => {
                grant.approval |= scope.covers(request.tool);
                Ok(())
            }
            Caveat::Tool(_)
            | Caveat::Agent(_)
            | Caveat::Expires(_)
            | Caveat::Model(_)
            | Caveat::MaxTokens(_)
            | Caveat::BudgetTokens(_) => Ok(()),
        }
    }

    /// [`Caveat::admit`] for a model call.
    fn admit_model(
        &self,
        request: &Request<'_>,
        model: &ModelUse<'_>,
        grant: &mut Grant,
    ) -> Result<(), Denial> {
        match self {
            Caveat::Agent(_) | Caveat::Expires(_) => {
                // Shared with tool calls: checked the same way.
                let as_tool = Request {
                    model: None,
                    ..*request
                };
                self.admit(&as_tool, grant)
            }
            Caveat::Model(pattern) if !pattern.matches(model.name) => Err(Denial::new(format!(
                "model {:?} is not allowed (token allows `{pattern}`)",
                model.name
            ))),
            Caveat::MaxTokens(limit) => {
                if let Some(asked) = model.max_tokens.filter(|asked| asked > limit) {
                    return Err(Denial::new(format!(
                        "model call asks for up to {asked} tokens, the token allows {limit}"
                    )));
                }
                grant.max_tokens = Some(grant.max_tokens.map_or(*limit, |t| t.min(*limit)));
                Ok(())
            }
            Caveat::BudgetTokens(budget) => {
                if model.spent >= *budget {
                    return Err(Denial::new(format!(
                        "token budget spent: {} of {budget} tokens used",
                        model.spent
                    )));
                }
                let left = budget - model.spent;
                grant.max_tokens = Some(grant.max_tokens.map_or(left, |t| t.min(left)));
                Ok(())
            }
            Caveat::Model(_)
            | Caveat::Tool(_)
            | Caveat::PathPrefix(_)
            | Caveat::MaxBytes(_)
            | Caveat::Secret(_)
            | Caveat::Approval(_) => Ok(()),
        }
    }
}

/// A count in a caveat (`what`, for the error): decimal digits only.
fn count(text: &str, value: &str, what: &str) -> Result<u64, Denial> {
    let refused = || Denial::new(format!("caveat {text:?}: not {what}"));
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    value.parse().map_err(|_| refused())
}

impl fmt::Display for Caveat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caveat::Tool(p) => write!(f, "tool = {p}"),
            Caveat::Agent(a) => write!(f, "agent = {a}"),
            Caveat::Expires(t) => write!(f, "expires = {t}"),
            Caveat::PathPrefix(p) => write!(f, "path-prefix = {p}"),
            Caveat::MaxBytes(n) => write!(f, "max-bytes = {n}"),
            Caveat::Secret(p) => write!(f, "secret = {p}"),
            Caveat::Model(p) => write!(f, "model = {p}"),
            Caveat::MaxTokens(n) => write!(f, "max-tokens = {n}"),
            Caveat::BudgetTokens(n) => write!(f, "budget-tokens = {n}"),
            Caveat::Approval(ApprovalScope::Every) => write!(f, "approval = required"),
            Caveat::Approval(ApprovalScope::Tools(p)) => write!(f, "approval = {p}"),
        }
    }
}

/// Whether `path` is absolute and normal: starts with `/`, no empty, `.` or `..`
/// components, no trailing `/` (except the root itself).
pub(crate) fn is_normal_path(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && path[1..]
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != ".."))
}

fn path_is_under(path: &str, prefix: &str) -> bool {
    is_normal_path(path)
        && (prefix == "/"
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')))
}

/// What a tool call asks to do, as the capability checker sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The tool's name.
    pub tool: &'a str,
    /// The calling agent, if the caller is an agent.
    pub agent: Option<&'a str>,
    /// The logical path the call touches (`/`-rooted, normalized), if any.
    pub path: Option<&'a str>,
    /// How many bytes the call moves, when known before it runs.
    pub bytes: Option<u64>,
    /// When the check happens.
    pub now: Timestamp,
    /// For a model call: what it asks (`tool` then names the model call, e.g.
    /// `model.NAME`). `None` for a tool call.
    pub model: Option<ModelUse<'a>>,
}

/// What a model call asks, as the capability checker sees it.
#[derive(Clone, Copy, Debug)]
pub struct ModelUse<'a> {
    /// The configured model's name.
    pub name: &'a str,
    /// The most tokens the call asks for, if it names a limit.
    pub max_tokens: Option<u64>,
    /// Tokens the calling agent has spent on model calls so far.
    pub spent: u64,
}

/// What a token allows a call to do while it runs: limits the tool itself enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// The tightest `max-bytes` caveat, if any.
    pub max_bytes: Option<u64>,
    /// The `secret` caveats; a secret must match every one. None: every secret.
    pub secrets: Vec<NamePattern>,
    /// For a model call: the most tokens its answer may use (the tightest `max-tokens`
    /// caveat, or what is left of a `budget-tokens` one).
    pub max_tokens: Option<u64>,
    /// Whether an `approval` caveat makes the call wait for a human decision.
    pub approval: bool,
}

impl Grant {
    /// Whether the token lets the tool read the secret `name`.
    pub fn allows_secret(&self, name: &str) -> bool {
        self.secrets.iter().all(|p| p.matches(name))
    }
}

/// Evaluates every caveat against `request`; the first that refuses it decides.
///
/// # Errors
/// A [`Denial`] naming the refusing caveat.
pub(crate) fn admit_all(caveats: &[Caveat], request: &Request<'_>) -> Result<Grant, Denial> {
    let mut grant = Grant::default();
    for caveat in caveats {
        caveat.admit(request, &mut grant)?;
    }
    Ok(grant)
}

/// Whether some call described by `request` could pass `caveats`, whatever its input:
/// every caveat is evaluated against `request` except those about what a call's input
/// touches (`path-prefix`, and `max-bytes` through `request.bytes = None`), which only
/// the call itself can decide. Side-effect free: nothing is audited.
///
/// # Errors
/// A [`Denial`] naming the refusing caveat.
pub(crate) fn admit_some_input(caveats: &[Caveat], request: &Request<'_>) -> Result<(), Denial> {
    let request = Request {
        path: None,
        bytes: None,
        ..*request
    };
    let mut grant = Grant::default();
    for caveat in caveats {
        if !matches!(caveat, Caveat::PathPrefix(_)) {
            caveat.admit(&request, &mut grant)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tool: &str) -> Request<'_> {
        Request {
            tool,
            agent: Some("alice"),
            path: Some("/notes/a.txt"),
            bytes: Some(10),
            now: Timestamp::from_second(1_000).unwrap(),
            model: None,
        }
    }

    fn model_call(name: &str, max_tokens: Option<u64>, spent: u64) -> Request<'_> {
        Request {
            tool: "model",
            path: None,
            bytes: None,
            model: Some(ModelUse {
                name,
                max_tokens,
                spent,
            }),
            ..request("model")
        }
    }

    #[test]
    fn model_calls_are_checked_by_model_caveats_only() {
        let parse = |t: &str| Caveat::parse(t.as_bytes()).unwrap();
        let caveats = [
            parse("tool = fs.read"),
            parse("path-prefix = /notes"),
            parse("agent = alice"),
            parse("model = local.*"),
            parse("max-tokens = 500"),
            parse("budget-tokens = 1000"),
        ];
        let grant = admit_all(&caveats, &model_call("local.small", None, 0)).unwrap();
        assert_eq!(
            grant.max_tokens,
            Some(500),
            "an unlimited call gets the caveat's limit"
        );
        let grant = admit_all(&caveats, &model_call("local.small", Some(100), 950)).unwrap();
        assert_eq!(
            grant.max_tokens,
            Some(50),
            "only what is left of the budget"
        );
        for (denied, why) in [
            (model_call("gpt-4o", None, 0), "model"),
            (model_call("local.small", Some(501), 0), "max-tokens"),
            (model_call("local.small", None, 1000), "budget"),
        ] {
            assert!(admit_all(&caveats, &denied).is_err(), "{why}");
        }
        let mut bob = model_call("local.small", None, 0);
        bob.agent = Some("bob");
        assert!(
            admit_all(&caveats, &bob).is_err(),
            "agent applies to model calls"
        );
        // Model caveats do not restrict tool calls.
        assert!(admit_all(&caveats, &request("fs.read")).is_ok());
    }

    #[test]
    fn every_caveat_round_trips_through_its_text() {
        for text in [
            "tool = fs.read",
            "tool = fs.*",
            "agent = team/alice",
            "expires = 2030-01-01T00:00:00Z",
            "path-prefix = /notes",
            "path-prefix = /",
            "max-bytes = 4096",
            "secret = github.*",
            "model = gpt-4o-mini",
            "model = local.*",
            "max-tokens = 512",
            "budget-tokens = 100000",
        ] {
            let caveat = Caveat::parse(text.as_bytes()).unwrap();
            assert_eq!(caveat.to_string(), text);
        }
    }

    #[test]
    fn anything_not_understood_fails_closed() {
        for text in [
            &b"colour = blue"[..],
            b"tool=fs.read",
            b"tool =  fs.read",
            b"tool = fs.read ",
            b"tool = ",
            b"tool = fs*",
            b"tool = *",
            b"tool = fs.read\nagent = x",
            b"agent = a b",
            b"expires = tomorrow",
            b"path-prefix = notes",
            b"path-prefix = /notes/../etc",
            b"path-prefix = /notes/",
            b"max-bytes = -1",
            b"max-bytes = +5",
            b"max-bytes = 99999999999999999999999",
            b"max-tokens = 1e3",
            b"budget-tokens = -5",
            b"model = *",
            b"\xff\xfe = x",
        ] {
            assert!(
                Caveat::parse(text).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(text)
            );
        }
        assert!(Caveat::parse(&[b'a'; MAX_CAVEAT_BYTES + 1]).is_err());
    }

    #[test]
    fn requests_are_checked_against_each_caveat() {
        let parse = |t: &str| Caveat::parse(t.as_bytes()).unwrap();
        let ok = [
            parse("tool = fs.*"),
            parse("agent = alice"),
            parse("path-prefix = /notes"),
        ];
        assert!(admit_all(&ok, &request("fs.read")).is_ok());
        assert!(admit_all(&ok, &request("shell.exec")).is_err());
        let mut other = request("fs.read");
        other.agent = Some("bob");
        assert!(admit_all(&ok, &other).is_err());
        other.agent = None;
        assert!(admit_all(&ok, &other).is_err());
        let mut sibling = request("fs.read");
        sibling.path = Some("/notes2/a.txt");
        assert!(admit_all(&ok, &sibling).is_err());
        sibling.path = None;
        assert!(
            admit_all(&ok, &sibling).is_err(),
            "a path caveat needs a path"
        );
        sibling.path = Some("/notes/../etc/passwd");
        assert!(admit_all(&ok, &sibling).is_err());
    }

    #[test]
    fn expiry_is_exclusive_at_the_instant() {
        let at = Timestamp::from_second(1_000).unwrap();
        let caveats = [Caveat::Expires(at)];
        let mut req = request("fs.read");
        req.now = at.checked_sub(jiff::SignedDuration::from_nanos(1)).unwrap();
        assert!(admit_all(&caveats, &req).is_ok());
        req.now = at;
        assert!(admit_all(&caveats, &req).is_err());
    }

    #[test]
    fn byte_limits_and_secrets_narrow_the_grant() {
        let caveats = [
            Caveat::MaxBytes(100),
            Caveat::MaxBytes(50),
            Caveat::Secret("gh.*".parse().unwrap()),
        ];
        let grant = admit_all(&caveats, &request("x")).unwrap();
        assert_eq!(grant.max_bytes, Some(50));
        assert!(grant.allows_secret("gh.token") && !grant.allows_secret("aws.key"));
        let mut big = request("x");
        big.bytes = Some(51);
        assert!(admit_all(&caveats, &big).is_err());
        assert!(Grant::default().allows_secret("anything"));
    }
}
