//! Durable human approvals in the node (see [`toka_tools::approval`]): the `[tools]`
//! settings, telling a waiting agent of a decision, and what the node does at start and
//! while it runs.
//!
//! - A decided approval of an agent's call is news for that agent: the node sends it
//!   `{"approval": ID, "status": STATUS}` (an assistant's waiting turn goes on; a kind
//!   that does not take such a message ignores it). After a restart the news is sent
//!   again for every decided approval whose call has not finished: an agent ignores news
//!   no turn waits for.
//! - An approved call without an agent (an API client's `POST /tools/{name}/invoke`) is
//!   run by the node, once ([`ToolHost::run_approved`]); after a restart, every approved
//!   call of that sort that has not finished is run (a call a crash cut off after it
//!   started is run again only if its tool is safe to repeat, else recorded as in doubt).
//! - A sweeper expires undecided approvals past their expiry, every [`SWEEP`], and tells
//!   their agents.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use toka_actors::{AgentId, Runtime};
use toka_tools::approval::DEFAULT_APPROVAL_TTL;
use toka_tools::{Approval, ApprovalStatus, NamePattern, ToolHost};

use crate::config::ToolsConfig;

/// How often undecided approvals are checked for expiry.
pub(crate) const SWEEP: Duration = Duration::from_secs(1);

/// The longest `approval_ttl_secs` may be (ten years).
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// The `[tools]` approval settings: the tools whose every call needs approval
/// (`approval`), and how long an approval stays pending (`approval_ttl_secs`).
pub(crate) fn settings(config: &ToolsConfig) -> anyhow::Result<(Vec<NamePattern>, Duration)> {
    let patterns = config
        .approval
        .iter()
        .map(|p| {
            p.parse::<NamePattern>()
                .map_err(|d| anyhow::anyhow!("[tools] approval: {}", d.reason))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ttl = match config.approval_ttl_secs {
        None => DEFAULT_APPROVAL_TTL,
        Some(secs @ 1..=MAX_TTL_SECS) => Duration::from_secs(secs),
        Some(secs) => {
            anyhow::bail!("[tools] approval_ttl_secs = {secs}: it must be 1 to {MAX_TTL_SECS}")
        }
    };
    Ok((patterns, ttl))
}

/// The status word of news and of the API.
pub(crate) fn status_word(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Pending => "pending",
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Denied => "denied",
        ApprovalStatus::Expired => "expired",
    }
}

/// Tells `approval`'s agent, if it has one, that it was decided (or expired). An agent
/// that is gone, or whose kind takes no such message, is skipped (logged).
pub(crate) async fn tell_agent(runtime: &Runtime, approval: &Approval) {
    let Some(agent) = &approval.agent else {
        return;
    };
    let Ok(id) = AgentId::new(agent) else {
        return;
    };
    let news = json!({ "approval": approval.id, "status": status_word(approval.status) });
    match runtime.send_json(&id, news).await {
        Ok(()) => {
            tracing::debug!(approval = %approval.id, agent = %agent, "told the agent of the decision");
        }
        Err(
            error @ (toka_actors::Error::UnknownAgent(_)
            | toka_actors::Error::BadJson { .. }
            | toka_actors::Error::WrongKind { .. }),
        ) => {
            tracing::debug!(approval = %approval.id, agent = %agent, %error, "the agent takes no approval news");
        }
        Err(error) => {
            tracing::warn!(approval = %approval.id, agent = %agent, %error, "could not tell the agent of the decision");
        }
    }
}

/// Runs approved call `id` (no agent) in the background, logging its outcome.
pub(crate) fn run_in_background(host: &ToolHost, id: String) {
    let host = host.clone();
    tokio::spawn(async move {
        match host.run_approved(&id).await {
            Ok(Ok(_)) => tracing::info!(approval = %id, "approved call ran"),
            Ok(Err(error)) => {
                tracing::info!(approval = %id, kind = ?error.kind, "approved call failed");
            }
            Err(error) => tracing::warn!(approval = %id, %error, "could not run an approved call"),
        }
    });
}

/// At start, once the runtime has recovered: runs the approved API calls that have not
/// finished, tells agents of decisions their calls have not acted on, and starts the
/// expiry sweeper (abort the handle to stop it).
pub(crate) async fn resume(
    runtime: &Runtime,
    host: &ToolHost,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let approvals = host
        .approvals()
        .context("the tool host has no approvals")?
        .clone();
    for approval in approvals.list() {
        let unfinished = approval.output.is_none() && approval.error.is_none();
        if approval.status == ApprovalStatus::Approved && approval.agent.is_none() && unfinished {
            run_in_background(host, approval.id);
        }
    }
    for approval in approvals.decided_for_agents() {
        tell_agent(runtime, &approval).await;
    }
    let runtime = runtime.clone();
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let expired = match approvals.expire_due().await {
                Ok(expired) => expired,
                Err(error) => {
                    tracing::warn!(%error, "could not expire approvals");
                    continue;
                }
            };
            for id in expired {
                tracing::info!(approval = %id, "approval expired undecided");
                if let Some(approval) = approvals.get(&id) {
                    tell_agent(&runtime, &approval).await;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(text: &str) -> ToolsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn settings_parse_patterns_and_the_ttl() {
        let (patterns, ttl) = settings(&tools("")).unwrap();
        assert!(patterns.is_empty());
        assert_eq!(ttl, DEFAULT_APPROVAL_TTL);
        let (patterns, ttl) = settings(&tools(
            "approval = [\"shell.exec\", \"fs.*\"]\napproval_ttl_secs = 60\n",
        ))
        .unwrap();
        assert!(patterns[0].matches("shell.exec") && patterns[1].matches("fs.write"));
        assert!(!patterns.iter().any(|p| p.matches("model.call")));
        assert_eq!(ttl, Duration::from_secs(60));
        assert!(settings(&tools("approval = [\"fs*\"]\n")).is_err());
        assert!(settings(&tools("approval_ttl_secs = 0\n")).is_err());
    }
}
