//! Secrets: handed to tools only as their capability allows, never returned in results,
//! never in the journal in clear text.

use std::sync::Arc;

use serde_json::json;
use toka_store::{JournalConfig, SledJournal};
use toka_tools::{
    Authority, Caveat, SideEffect, Tool, ToolContext, ToolError, ToolErrorKind, ToolHost, Vault,
};

const SECRET: &str = "sk-live-7f3a9c1e-very-secret";

/// Uses a secret: returns its length, or (when asked) the secret itself.
#[derive(Clone)]
struct UsesSecret;

impl Tool for UsesSecret {
    type Input = (String, bool);
    type Output = String;
    fn name(&self) -> &str {
        "api.call"
    }
    fn description(&self) -> &str {
        "Calls an API with a credential from the vault."
    }
    fn input_schema(&self) -> serde_json::Value {
        json!({"type": "array"})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::ReadOnly
    }
    async fn invoke(
        &self,
        (name, leak): (String, bool),
        cx: ToolContext,
    ) -> Result<String, ToolError> {
        let secret = cx.secret(&name)?;
        let text = secret.expose_str().unwrap_or_default();
        Ok(if leak {
            format!("the key is {text}")
        } else {
            format!("authenticated with {} bytes", text.len())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_follow_the_capability_and_never_leave_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let journal =
        Arc::new(SledJournal::open(dir.path().join("journal"), JournalConfig::default()).unwrap());
    let authority = Authority::open(&dir.path().join("root.key"), journal.clone()).unwrap();
    let vault = Vault::open(
        dir.path().join("secrets.vault"),
        dir.path().join("vault.key"),
    )
    .unwrap();
    vault.put("openai.key", SECRET.as_bytes()).unwrap();
    vault.put("github.token", b"ghp_other").unwrap();
    let host = ToolHost::builder(authority.clone())
        .vault(vault)
        .tool(UsesSecret)
        .start()
        .await
        .unwrap();

    let openai_only = authority
        .mint([Caveat::Secret("openai.*".parse().unwrap())])
        .unwrap();
    let used: String = host
        .call(&openai_only, None, "api.call", &("openai.key", false))
        .await
        .unwrap();
    assert_eq!(used, format!("authenticated with {} bytes", SECRET.len()));

    let denied = host
        .call::<_, String>(&openai_only, None, "api.call", &("github.token", false))
        .await
        .unwrap_err();
    assert_eq!(denied.kind, ToolErrorKind::Denied, "{denied}");
    assert!(denied.message.contains("github.token"), "{denied}");

    // The denial inside the running call is audited like the host's own.
    let mut audited = Vec::new();
    for _ in 0..50 {
        audited = authority.denials().unwrap();
        if !audited.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(audited[0].reason.contains("github.token"));
    assert_eq!(audited[0].token.as_deref(), Some(openai_only.identifier()));

    let missing = host
        .call::<_, String>(&openai_only, None, "api.call", &("openai.other", false))
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ToolErrorKind::Failed, "{missing}");

    let leak = host
        .call::<_, String>(&openai_only, None, "api.call", &("openai.key", true))
        .await
        .unwrap_err();
    assert_eq!(leak.kind, ToolErrorKind::Failed);
    assert!(
        leak.message.contains("withheld") && !leak.message.contains(SECRET),
        "{leak}"
    );

    host.shutdown().await;
    drop(host);
    drop(authority);
    drop(journal);
    // Neither the vault file nor the journal holds the secret in clear text.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret in clear text",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
