//! `Authority::may_call`: the side-effect-free "could this token call that tool at all?"
//! check behind the MCP server's filtered tool list. It must never hide a tool a real
//! call would be admitted to (a property over random caveats), must refuse what the
//! token's tool, agent and expiry caveats refuse, and must audit nothing.
#![allow(missing_docs)]

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use toka_store::{JournalConfig, MemoryJournal};
use toka_tools::{Authority, Caveat, Request};

fn tool(pattern: &str) -> Caveat {
    Caveat::Tool(pattern.parse().unwrap())
}

fn authority() -> Authority {
    Authority::from_secret(b"may_call test root secret, 32+ bytes long")
}

fn arb_caveat() -> impl Strategy<Value = Caveat> {
    use prop::sample::select;
    prop_oneof![
        select(vec!["fs.read", "fs.write", "fs.*", "api.agents.ask"]).prop_map(tool),
        select(vec!["alice", "bob"]).prop_map(|a| Caveat::Agent(a.into())),
        // An hour ago or in an hour (the check uses the real clock).
        select(vec![-3600i64, 3600])
            .prop_map(|d| Caveat::Expires(Timestamp::now() + SignedDuration::from_secs(d))),
        select(vec!["/", "/pub", "/pub/a"]).prop_map(|p| Caveat::PathPrefix(p.into())),
        select(vec![0u64, 10, 100]).prop_map(Caveat::MaxBytes),
        select(vec!["gh.*"]).prop_map(|p| Caveat::Secret(p.parse().unwrap())),
    ]
}

proptest! {
    /// Soundness: whenever a real request would be admitted, `may_call` admits its tool
    /// and caller (so the list never hides a callable tool).
    #[test]
    fn never_hides_a_callable_tool(
        caveats in prop::collection::vec(arb_caveat(), 0..5),
        tool_name in prop::sample::select(vec!["fs.read", "fs.write", "shell.exec", "api.agents.ask"]),
        agent in prop::sample::select(vec![None, Some("alice"), Some("bob")]),
        path in prop::sample::select(vec![None, Some("/pub/a/x"), Some("/priv/y")]),
        bytes in prop::sample::select(vec![None, Some(5u64), Some(50)]),
    ) {
        let authority = authority();
        let token = authority.mint(caveats).unwrap();
        let verified = authority.verify_text(&token.to_string()).unwrap();
        let request = Request {
            tool: tool_name,
            agent,
            path,
            bytes,
            now: Timestamp::now(),
            model: None,
        };
        if authority.check(&token, &request).is_ok() {
            prop_assert!(authority.may_call(&verified, tool_name, agent).is_ok());
        }
    }
}

#[tokio::test]
async fn refuses_what_tool_agent_and_expiry_refuse_and_audits_nothing() {
    let journal = Arc::new(MemoryJournal::new(JournalConfig::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::open(&dir.path().join("root.key"), journal).unwrap();
    let verify = |caveats: Vec<Caveat>| {
        let token = authority.mint(caveats).unwrap();
        authority.verify_text(&token.to_string()).unwrap()
    };

    let reader = verify(vec![tool("fs.read")]);
    assert!(authority.may_call(&reader, "fs.read", None).is_ok());
    let denial = authority.may_call(&reader, "fs.write", None).unwrap_err();
    assert!(denial.reason.contains("fs.write"), "{}", denial.reason);

    // Input caveats are left to the call: a path-limited reader still sees fs.read.
    let limited = verify(vec![
        tool("fs.read"),
        Caveat::PathPrefix("/notes".into()),
        Caveat::MaxBytes(10),
    ]);
    assert!(authority.may_call(&limited, "fs.read", None).is_ok());

    // `agent = X` binds the caller.
    let bob = verify(vec![Caveat::Agent("bob".into())]);
    assert!(
        authority
            .may_call(&bob, "api.agents.ask", Some("bob"))
            .is_ok()
    );
    assert!(
        authority
            .may_call(&bob, "api.agents.ask", Some("eve"))
            .is_err()
    );
    assert!(authority.may_call(&bob, "fs.read", None).is_err());

    let expired = verify(vec![Caveat::Expires(
        Timestamp::now() - SignedDuration::from_secs(1),
    )]);
    assert!(authority.may_call(&expired, "fs.read", None).is_err());

    // Revoked after it was verified: refused.
    let admin = authority.mint([]).unwrap();
    let verified = authority.verify_text(&admin.to_string()).unwrap();
    assert!(authority.may_call(&verified, "fs.read", None).is_ok());
    authority.revoke(admin.identifier(), "test").await.unwrap();
    assert!(authority.may_call(&verified, "fs.read", None).is_err());

    // None of these checks was audited as a denial.
    assert!(authority.denials().unwrap().is_empty());
}
