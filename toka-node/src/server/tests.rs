//! In-process tests of [`app`] with `oneshot`: no socket, a memory journal.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use toka_actors::Runtime;
use toka_store::{JournalConfig, MemoryJournal};
use toka_tools::{Authority, Caveat, NamePattern, Sealer, ToolHost};
use tower::ServiceExt;

use super::{AppState, Services, app};

async fn state() -> (AppState, Authority) {
    let journal = Arc::new(MemoryJournal::new(JournalConfig::default()).unwrap());
    let authority = Authority::from_secret(b"0123456789abcdef0123456789abcdef");
    let host = ToolHost::builder(authority.clone()).start().await.unwrap();
    let sealer = Sealer::from_key(&[9; 32]);
    let runtime = crate::kinds::register(Runtime::builder(journal), Some(sealer.clone()))
        .extension(host.clone())
        .start()
        .await
        .unwrap();
    let services = Services {
        authority: authority.clone(),
        host,
        sealer,
        ask_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        info: super::NodeInfo {
            started: std::time::Instant::now(),
            journal_dir: None,
            durability: "fsync",
            models: Vec::new(),
        },
    };
    let state = AppState::new(runtime, services, Duration::ZERO);
    (state, authority)
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Body::from(body.to_owned())).unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn spawn_send_ask_and_list() {
    let (state, authority) = state().await;
    let admin = authority.mint([]).unwrap().to_string();
    let token = Some(admin.as_str());
    assert_eq!(
        call(&state, "GET", "/health", None, "").await.0,
        StatusCode::OK
    );
    let spawn = r#"{"id": "c", "kind": "counter"}"#;
    let (status, body) = call(&state, "POST", "/agents", token, spawn).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = call(&state, "POST", "/agents/c/messages", token, r#"{"add": 4}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = call(&state, "POST", "/agents/c/ask", token, r#""get""#).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"value": 4})));
    let (status, body) = call(&state, "GET", "/agents/c", token, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "running");
    let (status, body) = call(&state, "GET", "/tools", token, "").await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
    let (status, body) = call(&state, "POST", "/tools/fs.read/invoke", token, "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = call(&state, "GET", "/metrics", token, "").await;
    assert_eq!((status, body), (StatusCode::OK, Value::Null));
    let text = metrics_text(&state, &admin).await;
    for name in [
        "toka_api_requests_total",
        "toka_messages_handled_total",
        "toka_agent_restarts_total",
        "toka_journal_appends_total",
        "toka_journal_group_writes_total",
        "toka_journal_flushes_total",
        "toka_journal_flush_wait_seconds_sum",
        "toka_journal_flush_wait_seconds_count",
        "toka_recovery_seconds",
        "toka_tool_calls_total",
        "toka_tool_denials_total",
        "toka_tool_failures_total",
    ] {
        assert!(
            text.contains(&format!(
                "# TYPE {}",
                name.trim_end_matches("_sum").trim_end_matches("_count")
            )),
            "{name}:\n{text}"
        );
        let value = sample(&text, name);
        assert!(value.is_some(), "no sample of {name}:\n{text}");
    }
    // The spawn, the message and the ask were handled, journaled and waited for.
    assert!(
        sample(&text, "toka_messages_handled_total") >= Some(2.0),
        "{text}"
    );
    assert!(
        sample(&text, "toka_journal_appends_total") >= Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "toka_journal_flush_wait_seconds_count") >= Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "toka_journal_flushes_total") >= Some(1.0),
        "{text}"
    );
}

/// The body of `GET /metrics`.
async fn metrics_text(state: &AppState, token: &str) -> String {
    let request = Request::builder()
        .uri("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The value of sample `name` in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.parse().ok())
}

#[tokio::test]
async fn authorization_comes_before_the_body_and_caveats_scope_routes() {
    let (state, authority) = state().await;
    let (status, body) = call(&state, "POST", "/agents", None, "{not json").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let admin = authority.mint([]).unwrap().to_string();
    let (status, _) = call(&state, "POST", "/agents", Some(&admin), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let spawn = r#"{"id": "c", "kind": "counter"}"#;
    call(&state, "POST", "/agents", Some(&admin), spawn).await;

    let events_only = authority
        .mint([Caveat::Tool(NamePattern::Exact("api.events.read".into()))])
        .unwrap()
        .to_string();
    let (status, _) = call(&state, "GET", "/events", Some(&events_only), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&state, "GET", "/agents", Some(&events_only), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let for_c = authority
        .mint([Caveat::Agent("c".into())])
        .unwrap()
        .to_string();
    let (status, _) = call(&state, "POST", "/agents/c/ask", Some(&for_c), r#""get""#).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&state, "DELETE", "/agents/d", Some(&for_c), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&state, "GET", "/agents", Some(&for_c), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_unauthorized() {
    let (state, authority) = state().await;
    let past = jiff::Timestamp::from_second(1_000_000_000).unwrap();
    let expired = authority.mint([Caveat::Expires(past)]).unwrap().to_string();
    let (status, body) = call(&state, "GET", "/agents", Some(&expired), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let token = authority.mint([]).unwrap();
    authority.revoke(token.identifier(), "test").await.unwrap();
    let (status, _) = call(&state, "GET", "/agents", Some(&token.to_string()), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn operator_routes_need_their_capabilities_and_check_their_input() {
    let (state, authority) = state().await;
    let admin = authority.mint([]).unwrap().to_string();
    let agents_only = authority
        .mint([Caveat::Tool(NamePattern::Exact("api.agents.read".into()))])
        .unwrap()
        .to_string();
    let attenuate = format!(r#"{{"token": "{admin}", "caveats": ["agent = a"]}}"#);
    let routes = [
        ("POST", "/tokens", r#"{"caveats": []}"#),
        ("POST", "/tokens/attenuate", attenuate.as_str()),
        ("POST", "/tokens/revoke", r#"{"identifier": "x"}"#),
        ("GET", "/tokens/revocations", ""),
        ("GET", "/audit/denials", ""),
        ("GET", "/events/export", ""),
        ("GET", "/events/verify", ""),
        ("GET", "/status", ""),
    ];
    for (method, uri, body) in routes {
        let (status, reply) = call(&state, method, uri, Some(&agents_only), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {reply}");
        let (status, reply) = call(&state, method, uri, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {reply}");
    }
    let token = Some(admin.as_str());
    for (uri, body) in [
        ("/tokens", r#"{"caveats": ["colour = blue"]}"#),
        ("/tokens", r#"{"caveats": [], "extra": 1}"#),
        (
            "/tokens/attenuate",
            r#"{"token": "garbage", "caveats": ["agent = a"]}"#,
        ),
        ("/tokens/revoke", r#"{"identifier": "a b"}"#),
    ] {
        let (status, reply) = call(&state, "POST", uri, token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}: {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }

    // Minted, used, revoked: refused from the next request on.
    let body = r#"{"caveats": ["tool = api.agents.read"]}"#;
    let (status, minted) = call(&state, "POST", "/tokens", token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    assert_eq!(minted["caveats"], json!(["tool = api.agents.read"]));
    let new = minted["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&state, "GET", "/agents", Some(&new), "").await.0,
        StatusCode::OK
    );
    let body = format!(r#"{{"identifier": "{new}", "reason": "leaked"}}"#);
    let (status, reply) = call(&state, "POST", "/tokens/revoke", token, &body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["identifier"], minted["identifier"]);
    assert_eq!(reply["already_revoked"], false);
    let (status, reply) = call(&state, "GET", "/agents", Some(&new), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    let (status, reply) = call(&state, "POST", "/tokens/revoke", token, &body).await;
    assert_eq!(
        (status, &reply["already_revoked"]),
        (StatusCode::OK, &json!(true))
    );

    let (status, reply) = call(&state, "GET", "/status", token, "").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["journal"]["durability"], "fsync");
    assert_eq!(reply["journal"]["size_bytes"], Value::Null);
    let (status, reply) = call(&state, "GET", "/events?stream=", token, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
}
