//! Durable human approval of tool calls, through the public API over a real sled journal
//! and the real `fs.write` tool: a call waits (journaled, once), survives a restart, runs
//! exactly once after approval and never after a denial or expiry; vault values are
//! redacted from what the approver sees; an assistant's turn waits, stays queryable and
//! goes on when the news of the decision comes.
#![cfg(feature = "openai")]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use toka_actors::{AgentRef, Runtime, RuntimeConfig, SpawnSpec};
use toka_store::{Journal, JournalConfig, SledJournal};
use toka_test_support::model_server::{ModelServer, Reply, chat_text, sse_tool_calls};
use toka_tools::model::{
    ApprovalNews, Assistant, AssistantArgs, AssistantMsg, AssistantQuery, ModelHost, TurnEvent,
    UserTurn,
};
use toka_tools::{
    ApprovalStatus, Approvals, Authority, Capability, Caveat, Decision, FsWrite, ToolErrorKind,
    ToolHost, Vault,
};

const T: Duration = Duration::from_secs(10);

struct Rig {
    journal: Arc<dyn Journal>,
    authority: Authority,
    host: ToolHost,
    approvals: Approvals,
}

async fn open(dir: &Path, ttl: Duration) -> Rig {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let journal: Arc<dyn Journal> =
        Arc::new(SledJournal::open(dir.join("journal"), JournalConfig::default()).unwrap());
    let authority = Authority::open(&dir.join("root.key"), journal.clone()).unwrap();
    let approvals = Approvals::open(journal.clone(), ttl).unwrap();
    let vault = Vault::open(dir.join("vault"), dir.join("vault.key")).unwrap();
    vault.put("db-password", b"hunter2-secret").unwrap();
    let host = ToolHost::builder(authority.clone())
        .tool(FsWrite::new(dir.join("files")).unwrap())
        .vault(vault)
        .approvals(approvals.clone())
        .start()
        .await
        .unwrap();
    Rig {
        journal,
        authority,
        host,
        approvals,
    }
}

impl Rig {
    async fn write(
        &self,
        token: &Capability,
        caller: Option<&str>,
        path: &str,
        content: &str,
    ) -> Result<Vec<u8>, toka_tools::ToolError> {
        let input = json!({"path": path, "content": content}).to_string();
        self.host
            .call_json(token, caller, "fs.write", input.as_bytes())
            .await
    }

    async fn close(self) {
        self.host.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_call_waits_survives_a_restart_and_runs_once_after_approval() {
    let tmp = tempfile::tempdir().unwrap();
    let rig = open(tmp.path(), Duration::from_secs(3600)).await;
    // Attenuating a token that needs approval cannot drop the requirement.
    let token = rig
        .authority
        .mint([Caveat::parse(b"approval = fs.*").unwrap()])
        .unwrap()
        .attenuate(&Caveat::Tool("fs.write".parse().unwrap()));
    let first = rig
        .write(&token, None, "a.txt", "password hunter2-secret")
        .await
        .unwrap_err();
    assert_eq!(first.kind, ToolErrorKind::PendingApproval);
    let id = first.pending_approval().unwrap().to_owned();
    // The same call again is the same approval, not a second one.
    let again = rig
        .write(&token, None, "a.txt", "password hunter2-secret")
        .await
        .unwrap_err();
    assert_eq!(again.pending_approval(), Some(id.as_str()));
    assert!(!tmp.path().join("files/a.txt").exists(), "nothing ran");
    let listed = rig.approvals.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, ApprovalStatus::Pending);
    assert_eq!(listed[0].token, token.identifier());
    let shown = listed[0].input.to_string();
    assert!(shown.contains("<secret db-password>"), "{shown}");
    assert!(
        !shown.contains("hunter2"),
        "vault values are redacted: {shown}"
    );
    let journaled: Vec<u8> = rig
        .journal
        .read_stream(toka_tools::approval::APPROVALS_STREAM, 1, 100)
        .unwrap()
        .into_iter()
        .flat_map(|e| e.payload)
        .collect();
    let needle = b"hunter2";
    assert!(
        !journaled.windows(needle.len()).any(|w| w == needle),
        "no vault value in the journal"
    );
    assert!(
        !String::from_utf8_lossy(&journaled).contains(&token.to_string()),
        "no token in the journal"
    );
    rig.close().await;

    // After a restart it is still pending, under the same id.
    let rig = open(tmp.path(), Duration::from_secs(3600)).await;
    let pending = rig.approvals.get(&id).unwrap();
    assert_eq!(pending.status, ApprovalStatus::Pending);
    let approver = rig.authority.mint([]).unwrap();
    let decided = rig
        .approvals
        .decide(&id, Decision::Approve, "looks fine", approver.identifier())
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(
        decided.decided_by.as_deref(),
        Some(approver.identifier()),
        "the decision names its approver's token id"
    );
    assert_eq!(rig.approvals.approved_unstarted(), vec![id.clone()]);
    // The input held a vault value, redacted in the journal: after a restart the
    // original is gone, so the call is refused rather than run with the wrong input.
    let outcome = rig.host.run_approved(&id).await.unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(rig.host.run_approved(&id).await.is_err(), "not twice");

    // A call without a secret in it runs once the approval is decided, once.
    let plain = rig
        .write(&token, None, "b.txt", "hello")
        .await
        .unwrap_err()
        .pending_approval()
        .unwrap()
        .to_owned();
    rig.approvals
        .decide(&plain, Decision::Approve, "", approver.identifier())
        .await
        .unwrap();
    // A repeat by the API client does not run it: the host does, once.
    let repeat = rig.write(&token, None, "b.txt", "hello").await.unwrap_err();
    assert_eq!(repeat.pending_approval(), Some(plain.as_str()));
    rig.host.run_approved(&plain).await.unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("files/b.txt")).unwrap(),
        "hello"
    );
    assert!(rig.host.run_approved(&plain).await.is_err(), "once");
    let done = rig.approvals.get(&plain).unwrap();
    assert!(done.started && done.output.is_some(), "{done:?}");
    rig.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_or_expired_call_never_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let rig = open(tmp.path(), Duration::from_millis(300)).await;
    let token = rig
        .authority
        .mint([Caveat::parse(b"approval = required").unwrap()])
        .unwrap();
    let approver = rig.authority.mint([]).unwrap();
    let denied = rig
        .write(&token, Some("agent-1"), "d.txt", "no")
        .await
        .unwrap_err()
        .pending_approval()
        .unwrap()
        .to_owned();
    rig.approvals
        .decide(&denied, Decision::Deny, "not today", approver.identifier())
        .await
        .unwrap();
    // The agent's repeated call hears of the denial once and does not run.
    let told = rig
        .write(&token, Some("agent-1"), "d.txt", "no")
        .await
        .unwrap_err();
    assert_eq!(told.kind, ToolErrorKind::Denied, "{told:?}");
    assert!(!tmp.path().join("files/d.txt").exists());
    assert!(
        rig.approvals.decided_for_agents().is_empty(),
        "told once, its agent needs no more news of it"
    );
    assert!(
        rig.approvals
            .decide(&denied, Decision::Approve, "", approver.identifier())
            .await
            .is_err(),
        "decided once"
    );

    let late = rig
        .write(&token, Some("agent-1"), "e.txt", "late")
        .await
        .unwrap_err()
        .pending_approval()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        rig.approvals.get(&late).unwrap().status,
        ApprovalStatus::Expired
    );
    assert_eq!(
        rig.approvals.expire_due().await.unwrap(),
        vec![late.clone()]
    );
    assert!(
        rig.approvals
            .decide(&late, Decision::Approve, "", approver.identifier())
            .await
            .is_err(),
        "an expired approval cannot be approved"
    );
    let told = rig
        .write(&token, Some("agent-1"), "e.txt", "late")
        .await
        .unwrap_err();
    assert_eq!(told.kind, ToolErrorKind::Denied, "expired counts as denied");
    assert!(!tmp.path().join("files/e.txt").exists());
    rig.close().await;
}

/// A runtime with the assistant `helper` whose token needs approval for `fs.write`.
async fn assistant(rig: &Rig, server: &ModelServer) -> (Runtime, AgentRef<Assistant>, ModelHost) {
    let models = common::local_model(&rig.authority, rig.journal.clone(), server);
    let runtime = common::assistant_runtime(
        rig.journal.clone(),
        RuntimeConfig::default(),
        &rig.host,
        &models,
    )
    .await;
    let helper = match runtime.agent::<Assistant>(&"helper".parse().unwrap()) {
        Ok(existing) => existing,
        Err(_) => {
            let token = rig
                .authority
                .mint([Caveat::parse(b"approval = fs.write").unwrap()])
                .unwrap();
            let args = AssistantArgs {
                tools: vec!["fs.write".into()],
                ..AssistantArgs::new("local", token.to_string())
            };
            runtime
                .spawn::<Assistant>(SpawnSpec::new("helper").unwrap(), args)
                .await
                .unwrap()
        }
    };
    (runtime, helper, models)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assistant_turn_waits_for_approval_stays_queryable_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ModelServer::start().await;
    let rig = open(tmp.path(), Duration::from_secs(3600)).await;
    let (runtime, helper, models) = assistant(&rig, &server).await;
    let mut live = models.subscribe("helper");
    let write = [(
        "w1",
        "fs_write",
        json!({"path": "note.txt", "content": "remember the milk"}),
    )];
    // Watched, the model call is streamed.
    server.push(Reply::Sse(sse_tool_calls(&write, 20, 10)));
    let turn: AssistantMsg = UserTurn {
        user: "Write me a note".into(),
    }
    .into();
    let waiting = helper.ask(turn, T).await.unwrap();
    assert_eq!(waiting.stopped.as_deref(), Some("approval"));
    assert_eq!(waiting.approvals.len(), 1);
    let id = waiting.approvals[0].clone();
    // Its live stream says so too.
    let mut told = Vec::new();
    while let Some(Ok(event)) = live.try_recv() {
        told.push(event);
    }
    assert!(
        told.contains(&TurnEvent::AwaitingApproval {
            approvals: vec![id.clone()]
        }),
        "{told:?}"
    );
    drop(live);
    // Meanwhile it answers queries, and says what it waits for.
    let transcript = helper.query(AssistantQuery::Transcript, T).await.unwrap();
    let last = transcript
        .last()
        .unwrap_or_else(|| panic!("{waiting:?} {:?}", runtime.tree()));
    assert_eq!(last.role, "tool");
    assert!(last.content.contains(&id), "{last:?}");
    // A new turn is not taken while one waits.
    let busy = helper
        .ask(
            UserTurn {
                user: "And another?".into(),
            }
            .into(),
            T,
        )
        .await
        .unwrap();
    assert_eq!(busy.stopped.as_deref(), Some("busy"));
    assert_eq!(server.requests().len(), 1);
    // What holds the journal must go before it is opened again.
    drop((helper, models));
    runtime.shutdown().await.unwrap();
    rig.close().await;

    // Decided after a restart: the news makes the turn go on, the write happens once.
    let rig = open(tmp.path(), Duration::from_secs(3600)).await;
    let (runtime, helper, _) = assistant(&rig, &server).await;
    let approver = rig.authority.mint([]).unwrap();
    rig.approvals
        .decide(&id, Decision::Approve, "ok", approver.identifier())
        .await
        .unwrap();
    server.push(Reply::Json(chat_text("Done: the note is written.", 40, 6)));
    let news = json!({"approval": id, "status": "approved"});
    runtime
        .send_json(&"helper".parse().unwrap(), news.clone())
        .await
        .unwrap();
    let mut transcript = Vec::new();
    for _ in 0..100 {
        transcript = helper.query(AssistantQuery::Transcript, T).await.unwrap();
        if transcript.last().is_some_and(|e| e.role == "assistant") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        transcript.last().unwrap().content,
        "Done: the note is written."
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("files/note.txt")).unwrap(),
        "remember the milk"
    );
    let sent = server.requests();
    assert_eq!(sent.len(), 2, "no step asked twice");
    let tool = sent[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert!(
        !tool["content"].as_str().unwrap().contains("waiting"),
        "{tool}"
    );
    // News again (a node resends after a restart) is ignored.
    let ignored = helper
        .ask(
            AssistantMsg::Approval(ApprovalNews {
                approval: id.clone(),
                status: None,
            }),
            T,
        )
        .await
        .unwrap();
    assert_eq!(ignored.stopped.as_deref(), Some("ignored"));
    let done = rig.approvals.get(&id).unwrap();
    assert!(done.started && done.output.is_some(), "{done:?}");
    drop(helper);
    runtime.shutdown().await.unwrap();
    rig.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_calls_wait_for_one_approval() {
    let tmp = tempfile::tempdir().unwrap();
    let rig = open(tmp.path(), Duration::from_secs(3600)).await;
    let token = rig
        .authority
        .mint([Caveat::parse(b"approval = required").unwrap()])
        .unwrap();
    let calls = (0..8).map(|_| rig.write(&token, Some("agent-1"), "c.txt", "same"));
    let ids: std::collections::BTreeSet<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|outcome| outcome.unwrap_err().pending_approval().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(rig.approvals.list().len(), 1);
    rig.close().await;
}
