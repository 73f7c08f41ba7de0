//! Capability token semantics (attenuation only narrows, text round trips, expiry at the
//! instant, injection, size limits) and interoperability with pymacaroons.
//!
//! The pymacaroons fixtures are in `tests/fixtures/pymacaroons.json`, written by
//! `tests/fixtures/gen_pymacaroons.py` (see it for how to re-run); these tests only read
//! the JSON, so they need no Python.
#![allow(missing_docs)]

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::Value;
use toka_tools::capability::MAX_TOKEN_BYTES;
use toka_tools::caveat::MAX_CAVEAT_BYTES;
use toka_tools::{Authority, Capability, Caveat, Denial, Grant, NamePattern, Request};

static AUTHORITY: LazyLock<Authority> =
    LazyLock::new(|| Authority::from_secret(b"capabilities test root secret, 32+ bytes"));

/// The instant the generated expiry caveats and requests revolve around.
const T0: i64 = 2_000_000_000;

fn ts(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

fn tool(pattern: &str) -> Caveat {
    Caveat::Tool(pattern.parse().unwrap())
}

// ---------------------------------------------------------------------------------------
// Generators and a reference model of the caveat table
// ---------------------------------------------------------------------------------------

fn arb_caveat() -> impl Strategy<Value = Caveat> {
    use prop::sample::select;
    prop_oneof![
        select(vec!["fs.read", "fs.write", "shell.exec", "fs.*", "shell.*"]).prop_map(tool),
        select(vec!["alice", "bob"]).prop_map(|a| Caveat::Agent(a.into())),
        select(vec![-10i64, 0, 10]).prop_map(|d| Caveat::Expires(ts(T0 + d))),
        select(vec!["/", "/pub", "/pub/a", "/priv"]).prop_map(|p| Caveat::PathPrefix(p.into())),
        select(vec![0u64, 10, 100]).prop_map(Caveat::MaxBytes),
        select(vec!["gh.*", "aws.key"]).prop_map(|p| Caveat::Secret(p.parse().unwrap())),
    ]
}

/// An extra caveat: a well-formed one, or raw text (some of it malformed).
#[derive(Clone, Debug)]
enum Extra {
    Known(Caveat),
    Raw(&'static [u8]),
}

fn arb_extra() -> impl Strategy<Value = Extra> {
    prop_oneof![
        4 => arb_caveat().prop_map(Extra::Known),
        1 => prop::sample::select(vec![
            &b"colour = blue"[..],
            b"tool = fs.read\nagent = alice",
            b"agent = alice ",
            b"path-prefix = /pub/../priv",
            b"expires = soon",
            b"",
            b"tool = fs.read",
        ])
        .prop_map(Extra::Raw),
    ]
}

impl Extra {
    fn apply(&self, token: &Capability) -> Capability {
        match self {
            Extra::Known(c) => token.attenuate(c),
            Extra::Raw(raw) => token.attenuate_raw(raw),
        }
    }
}

#[derive(Clone, Debug)]
struct Req {
    tool: &'static str,
    agent: Option<&'static str>,
    path: Option<&'static str>,
    bytes: Option<u64>,
    now: Timestamp,
}

impl Req {
    fn request(&self) -> Request<'_> {
        Request {
            tool: self.tool,
            agent: self.agent,
            path: self.path,
            bytes: self.bytes,
            now: self.now,
            model: None,
        }
    }
}

fn arb_request() -> impl Strategy<Value = Req> {
    use prop::sample::select;
    (
        select(vec!["fs.read", "fs.write", "shell.exec", "fsx.read", "fs"]),
        select(vec![None, Some("alice"), Some("bob")]),
        select(vec![
            None,
            Some("/"),
            Some("/pub"),
            Some("/pub/a/b"),
            Some("/pubx"),
            Some("/priv/x"),
        ]),
        select(vec![None, Some(0u64), Some(10), Some(50), Some(500)]),
        select(vec![-20i64, -10, 0, 5]),
    )
        .prop_map(|(tool, agent, path, bytes, d)| Req {
            tool,
            agent,
            path,
            bytes,
            now: ts(T0 + d),
        })
}

/// The caveat table of `toka_tools::caveat`, written out independently.
fn model_admits(caveat: &Caveat, req: &Req) -> bool {
    match caveat {
        Caveat::Tool(NamePattern::Exact(name)) => req.tool == name,
        Caveat::Tool(NamePattern::Prefix(prefix)) => {
            req.tool.len() > prefix.len() && req.tool.starts_with(prefix.as_str())
        }
        Caveat::Agent(agent) => req.agent == Some(agent.as_str()),
        Caveat::Expires(at) => req.now < *at,
        Caveat::PathPrefix(prefix) => req
            .path
            .is_some_and(|p| prefix == "/" || p == prefix || p.starts_with(&format!("{prefix}/"))),
        Caveat::MaxBytes(limit) => req.bytes.is_none_or(|b| b <= *limit),
        // These generated requests are tool calls: model caveats do not restrict them,
        // and an approval caveat makes a call wait, never refuses it.
        Caveat::Secret(_)
        | Caveat::Model(_)
        | Caveat::MaxTokens(_)
        | Caveat::BudgetTokens(_)
        | Caveat::Approval(_) => true,
    }
}

fn max_bytes_le(narrow: Option<u64>, wide: Option<u64>) -> bool {
    match (narrow, wide) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(n), Some(w)) => n <= w,
    }
}

fn grant_is_narrower(narrow: &Grant, wide: &Grant) -> bool {
    max_bytes_le(narrow.max_bytes, wide.max_bytes)
        && ["gh.token", "aws.key", "aws.other", "db"]
            .iter()
            .all(|s| !narrow.allows_secret(s) || wide.allows_secret(s))
}

proptest! {
    // No regression files: failures print their minimal input.
    #![proptest_config(ProptestConfig {
        cases: 768,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Adding a caveat never turns a denial into an allowance, never widens the grant,
    /// and a token allows exactly what each of its caveats allows (a conjunction), as the
    /// documented caveat table says.
    #[test]
    fn attenuation_only_narrows(
        caveats in prop::collection::vec(arb_caveat(), 0..6),
        extra in arb_extra(),
        req in arb_request(),
    ) {
        let base = AUTHORITY.mint(caveats.clone()).unwrap();
        let narrowed = extra.apply(&base);
        let request = req.request();
        let before = AUTHORITY.check(&base, &request);
        let after = AUTHORITY.check(&narrowed, &request);
        if before.is_err() {
            prop_assert!(after.is_err(), "{:?} + {:?} allowed {:?}", caveats, extra, req);
        }
        if let Ok(narrow) = &after {
            let wide = before.as_ref().expect("allowed with the extra caveat, so without it");
            prop_assert!(grant_is_narrower(narrow, wide), "{:?} vs {:?}", narrow, wide);
        }
        // The same answer as the reference model and as the single-caveat tokens.
        let model = caveats.iter().all(|c| model_admits(c, &req));
        prop_assert_eq!(before.is_ok(), model, "{:?} for {:?}: {:?}", caveats, req, before);
        let singles = caveats
            .iter()
            .all(|c| AUTHORITY.check(&AUTHORITY.mint([c.clone()]).unwrap(), &request).is_ok());
        prop_assert_eq!(before.is_ok(), singles);
        if let Extra::Known(c) = &extra {
            prop_assert_eq!(after.is_ok(), model && model_admits(c, &req));
        } else if after.is_ok() {
            prop_assert_eq!(extra_raw(&extra), Some(&b"tool = fs.read"[..]));
        }
    }

    /// Text round trip: identifier and caveats survive, padded or not, with surrounding
    /// whitespace, and through serde.
    #[test]
    fn tokens_round_trip_through_their_text(caveats in prop::collection::vec(arb_caveat(), 0..6)) {
        let token = AUTHORITY.mint(caveats.clone()).unwrap();
        let text = token.to_string();
        prop_assert!(!text.contains('='), "unpadded: {}", text);
        let binary = URL_SAFE_NO_PAD.decode(&text).unwrap();
        let padded = URL_SAFE.encode(&binary);
        for variant in [text.clone(), padded, format!("  {text}\n")] {
            let back = Capability::parse(&variant).unwrap();
            prop_assert_eq!(back.identifier(), token.identifier());
            prop_assert_eq!(back.caveats().unwrap(), caveats.clone());
            prop_assert_eq!(back.to_string(), text.clone());
        }
        let json = serde_json::to_string(&token).unwrap();
        prop_assert_eq!(&json, &format!("\"{text}\""));
        let back: Capability = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back.caveats().unwrap(), caveats);
        // Parsing must not lose anything the signature covers.
        let request = Req { tool: "fs.read", agent: Some("alice"), path: Some("/pub"), bytes: Some(0), now: ts(T0 - 20) };
        prop_assert_eq!(
            AUTHORITY.check(&back, &request.request()).is_ok(),
            AUTHORITY.check(&token, &request.request()).is_ok()
        );
    }
}

/// Regression (issue 10, item 7): bytes appended to a token were ignored by the binary
/// decoder, so `TOKEN + "AA"` was accepted. A token has one canonical spelling.
#[test]
fn tokens_with_trailing_bytes_or_bits_are_refused() {
    let token = AUTHORITY.mint([tool("fs.read")]).unwrap();
    let text = token.to_string();
    assert!(Capability::parse(&text).is_ok());
    for suffix in ["AA", "xyz1", "ZXZpbA", "AAAA", "_w"] {
        let forged = format!("{text}{suffix}");
        let denial = Capability::parse(&forged).expect_err(&format!("+{suffix} accepted"));
        assert!(
            denial.reason.contains("not canonical") || denial.reason.contains("base64"),
            "{suffix}: {}",
            denial.reason
        );
    }
    // The same bytes with a zero byte appended, re-encoded cleanly, are refused too.
    let mut binary = URL_SAFE_NO_PAD.decode(&text).unwrap();
    binary.push(0);
    assert!(Capability::parse(&URL_SAFE_NO_PAD.encode(&binary)).is_err());
    // Non-canonical trailing bits in the last base64 character.
    let binary = URL_SAFE_NO_PAD.decode(&text).unwrap();
    if binary.len() % 3 != 0 {
        let mut chars: Vec<char> = text.chars().collect();
        let last = chars.len() - 1;
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(chars[last]).unwrap();
        chars[last] = alphabet.chars().nth(index ^ 1).unwrap();
        let tweaked: String = chars.into_iter().collect();
        assert!(
            Capability::parse(&tweaked).is_err(),
            "trailing bits ignored"
        );
    }
}

fn extra_raw(extra: &Extra) -> Option<&'static [u8]> {
    match extra {
        Extra::Raw(raw) => Some(raw),
        Extra::Known(_) => None,
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic cases
// ---------------------------------------------------------------------------------------

fn request_at(now: Timestamp) -> Req {
    Req {
        tool: "fs.read",
        agent: Some("alice"),
        path: Some("/pub/a.txt"),
        bytes: Some(1),
        now,
    }
}

#[test]
fn expiry_is_denied_at_the_instant_and_allowed_a_nanosecond_before() {
    let at = ts(T0) + SignedDuration::from_nanos(123_456_789);
    let token = AUTHORITY.mint([Caveat::Expires(at)]).unwrap();
    // Through the token's text too: the caveat keeps nanosecond precision.
    let token = Capability::parse(&token.to_string()).unwrap();
    assert_eq!(token.caveats().unwrap(), [Caveat::Expires(at)]);
    let before = at - SignedDuration::from_nanos(1);
    let grant = AUTHORITY.check(&token, &request_at(before).request());
    assert_eq!(grant, Ok(Grant::default()));
    let denial = AUTHORITY
        .check(&token, &request_at(at).request())
        .unwrap_err();
    assert!(denial.reason.contains("token expired at"), "{denial}");
    assert!(
        AUTHORITY
            .check(
                &token,
                &request_at(at + SignedDuration::from_nanos(1)).request()
            )
            .is_err()
    );
    // Two expiries: the earlier one decides, whichever order they come in.
    let later = at + SignedDuration::from_secs(60);
    for caveats in [
        [Caveat::Expires(at), Caveat::Expires(later)],
        [Caveat::Expires(later), Caveat::Expires(at)],
    ] {
        let token = AUTHORITY.mint(caveats).unwrap();
        assert!(
            AUTHORITY
                .check(&token, &request_at(before).request())
                .is_ok()
        );
        assert!(AUTHORITY.check(&token, &request_at(at).request()).is_err());
    }
}

#[test]
fn injected_newlines_and_spaces_in_caveats_are_denied() {
    let base = AUTHORITY.mint([]).unwrap();
    let req = request_at(ts(T0));
    for (raw, why) in [
        (&b"tool = fs.read\nagent = x"[..], "control characters"),
        (b"agent = alice\nagent = bob", "control characters"),
        (b"agent = alice\r", "control characters"),
        (b"agent = alice\0", "control characters"),
        (b"tool = fs.read\tx", "control characters"),
        (b"agent = alice bob", "malformed agent id"),
        (b"agent = alice ", "stray whitespace"),
        (b" agent = alice", "stray whitespace"),
        (b"agent =  alice", "stray whitespace"),
        (b"agent=alice", "is not `key = value`"),
        (b"tool = fs.read agent = alice", "malformed name pattern"),
        (b"max-bytes = 10 ", "stray whitespace"),
        (b"expires = 2030-01-01T00:00:00Z\n", "control characters"),
        (b"agent = al\xe2\x80\xa8ice", "malformed agent id"),
        (b"agent = \xe2\x80\xa8alice", "stray whitespace"),
    ] {
        let token = base.attenuate_raw(raw);
        let printable = String::from_utf8_lossy(raw);
        let denial = AUTHORITY
            .check(&token, &req.request())
            .expect_err(&format!("{printable:?} must be refused"));
        assert!(denial.reason.contains(why), "{printable:?}: {denial}");
        // Even for the agent the injection names.
        let mut as_x = req.clone();
        as_x.agent = Some("x");
        assert!(AUTHORITY.check(&token, &as_x.request()).is_err());
        // And through the token's text.
        let reparsed = Capability::parse(&token.to_string()).unwrap();
        assert!(AUTHORITY.check(&reparsed, &req.request()).is_err());
    }
    // The same caveat without the injection is fine.
    let token = base.attenuate_raw(b"agent = alice");
    assert!(AUTHORITY.check(&token, &req.request()).is_ok());
}

#[test]
fn oversized_tokens_are_rejected_before_decoding() {
    let reason = |text: &str| Capability::parse(text).unwrap_err().reason;
    // Valid base64url of a valid token, made oversize by caveats: refused for its size.
    let mut token = AUTHORITY.mint([]).unwrap();
    while token.to_string().len() <= MAX_TOKEN_BYTES {
        token = token.attenuate(&Caveat::PathPrefix(format!("/{}", "p".repeat(200))));
    }
    let text = token.to_string();
    let denial = reason(&text);
    assert!(
        denial.contains(&format!(
            "token of {} bytes exceeds {MAX_TOKEN_BYTES}",
            text.len()
        )),
        "{denial}"
    );
    // Not base64 at all but oversize: the size is what is reported, not the encoding.
    let junk = "!".repeat(MAX_TOKEN_BYTES + 1);
    assert!(reason(&junk).contains("exceeds"), "{}", reason(&junk));
    // Exactly at the limit, the text is decoded (and found wanting).
    let at_limit = "A".repeat(MAX_TOKEN_BYTES);
    let denial = reason(&at_limit);
    assert!(
        !denial.contains("exceeds") && denial.contains("not a macaroon"),
        "{denial}"
    );
    // A huge input is refused fast.
    let huge = "A".repeat(64 << 20);
    let started = Instant::now();
    assert!(reason(&huge).contains("exceeds"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Oversize caveats inside a small-enough token are refused by the checker.
    let big = AUTHORITY
        .mint([])
        .unwrap()
        .attenuate_raw(format!("agent = {}", "a".repeat(MAX_CAVEAT_BYTES)).as_bytes());
    let denial = AUTHORITY
        .check(
            &Capability::parse(&big.to_string()).unwrap(),
            &request_at(ts(T0)).request(),
        )
        .unwrap_err();
    assert!(denial.reason.contains("exceeds 1024"), "{denial}");
}

#[test]
fn debug_output_shows_no_signature_or_key() {
    let token = AUTHORITY.mint([tool("fs.read")]).unwrap();
    let text = token.to_string();
    let debug = format!("{token:?}");
    assert!(debug.contains(token.identifier()));
    assert!(!debug.contains(&text[text.len() - 43..]), "{debug}");
    let authority = format!("{:?}", *AUTHORITY);
    assert!(authority.contains("<redacted>"), "{authority}");
    assert!(!authority.contains("capabilities test root secret"));
}

#[test]
fn tokens_from_another_root_or_with_foreign_caveats_are_denied() {
    let other = Authority::from_secret(b"another root secret entirely....");
    let token = other.mint([]).unwrap();
    let denial = AUTHORITY
        .check(&token, &request_at(ts(T0)).request())
        .unwrap_err();
    assert_eq!(
        denial,
        Denial {
            reason: "token signature does not verify".into()
        }
    );
}

// ---------------------------------------------------------------------------------------
// Interoperability with pymacaroons
// ---------------------------------------------------------------------------------------

/// The caveats of the Toka-minted fixture token (also in the JSON, checked below).
const TOKA_FIXTURE_CAVEATS: [&str; 5] = [
    "tool = shell.exec",
    "agent = bob",
    "path-prefix = /work",
    "max-bytes = 100",
    "secret = gh.*",
];

static FIXTURE: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("fixtures/pymacaroons.json")).expect("fixture JSON")
});

fn fixture_str(pointer: &str) -> &'static str {
    FIXTURE
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("fixture lacks {pointer}"))
}

fn fixture_strings(pointer: &str) -> Vec<&'static str> {
    FIXTURE
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("fixture lacks {pointer}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn fixture_authority() -> Authority {
    Authority::from_secret(fixture_str("/root_secret").as_bytes())
}

fn parse_caveats(texts: &[&str]) -> Vec<Caveat> {
    texts
        .iter()
        .map(|t| Caveat::parse(t.as_bytes()).unwrap())
        .collect()
}

#[test]
fn a_token_minted_by_pymacaroons_verifies_in_toka() {
    let authority = fixture_authority();
    let expected = parse_caveats(&fixture_strings("/pymacaroons/caveats"));
    let unpadded = fixture_str("/pymacaroons/token");
    let padded = fixture_str("/pymacaroons/token_padded");
    assert!(padded.ends_with('=') && !unpadded.ends_with('='));
    let now = Timestamp::now();
    let matching = Request {
        tool: "fs.read",
        agent: Some("alice"),
        path: Some("/pub/notes.txt"),
        bytes: Some(100),
        now,
        model: None,
    };
    for text in [unpadded, padded] {
        let token = Capability::parse(text).expect("pymacaroons' V2 binary parses");
        assert_eq!(URL_SAFE.decode(padded).unwrap()[0], 2, "V2 binary");
        assert_eq!(token.identifier(), fixture_str("/pymacaroons/identifier"));
        assert_eq!(token.caveats().unwrap(), expected);
        let grant = authority
            .check(&token, &matching)
            .expect("a matching request");
        assert_eq!(grant.max_bytes, Some(4096));
        for (req, why) in [
            (
                Request {
                    agent: Some("bob"),
                    ..matching
                },
                "agent \"bob\"",
            ),
            (
                Request {
                    tool: "fs.write",
                    ..matching
                },
                "tool \"fs.write\"",
            ),
            (
                Request {
                    path: Some("/priv/x"),
                    ..matching
                },
                "outside the allowed prefix",
            ),
            (
                Request {
                    bytes: Some(5000),
                    ..matching
                },
                "the token allows 4096",
            ),
            (
                Request {
                    now: ts(33_000_000_000),
                    ..matching
                },
                "token expired at",
            ),
        ] {
            let denial = authority.check(&token, &req).unwrap_err();
            assert!(denial.reason.contains(why), "{denial}");
        }
        // Another root key does not verify it.
        assert!(AUTHORITY.check(&token, &matching).is_err());
        // Toka can attenuate a pymacaroons token further.
        let narrower = token.attenuate(&Caveat::MaxBytes(10));
        assert_eq!(
            authority.check(&narrower, &matching).unwrap_err().reason,
            "request moves 100 bytes, the token allows 10"
        );
    }
    // A pymacaroons token with a caveat outside Toka's grammar: fail closed.
    let foreign = Capability::parse(fixture_str("/pymacaroons_foreign_caveat/token")).unwrap();
    let denial = authority.check(&foreign, &matching).unwrap_err();
    assert!(denial.reason.contains("is not `key = value`"), "{denial}");
    // One minted by pymacaroons with another root key: the signature does not verify.
    let wrong = Capability::parse(fixture_str("/pymacaroons_wrong_key/token")).unwrap();
    assert_eq!(
        authority.check(&wrong, &matching).unwrap_err().reason,
        "token signature does not verify"
    );
}

#[test]
fn a_toka_token_verified_by_pymacaroons_still_verifies() {
    let authority = fixture_authority();
    assert_eq!(fixture_strings("/toka/caveats"), TOKA_FIXTURE_CAVEATS);
    assert!(
        fixture_str("/toka/verified_by").starts_with("pymacaroons"),
        "the fixture records its verifier"
    );
    let text = fixture_str("/toka/token");
    assert!(!text.contains('='), "Toka emits unpadded base64url");
    let binary = URL_SAFE_NO_PAD.decode(text).expect("base64url");
    assert_eq!(binary[0], 0x02, "V2 binary");
    let token = Capability::parse(text).unwrap();
    uuid::Uuid::parse_str(token.identifier()).expect("Toka identifiers are UUIDs");
    assert_eq!(
        token.caveats().unwrap(),
        parse_caveats(&TOKA_FIXTURE_CAVEATS)
    );
    // Toka re-emits exactly the text pymacaroons verified.
    assert_eq!(token.to_string(), text);
    let matching = Request {
        tool: "shell.exec",
        agent: Some("bob"),
        path: Some("/work/build"),
        bytes: Some(100),
        now: Timestamp::now(),
        model: None,
    };
    let grant = authority
        .check(&token, &matching)
        .expect("verifies in Rust");
    assert_eq!(grant.max_bytes, Some(100));
    assert!(grant.allows_secret("gh.token") && !grant.allows_secret("aws.key"));
    assert!(
        authority
            .check(
                &token,
                &Request {
                    agent: Some("alice"),
                    ..matching
                }
            )
            .is_err()
    );
    assert!(AUTHORITY.check(&token, &matching).is_err());

    // pymacaroons attenuated the same token (`max-bytes = 10`): Toka honours it.
    let attenuated = Capability::parse(fixture_str("/toka/attenuated_by_pymacaroons")).unwrap();
    assert_eq!(attenuated.identifier(), token.identifier());
    assert_eq!(
        attenuated.caveats().unwrap().last(),
        Some(&Caveat::MaxBytes(10))
    );
    let denial = authority.check(&attenuated, &matching).unwrap_err();
    assert_eq!(
        denial.reason,
        "request moves 100 bytes, the token allows 10"
    );
    let small = Request {
        bytes: Some(10),
        ..matching
    };
    assert_eq!(
        authority.check(&attenuated, &small).unwrap().max_bytes,
        Some(10)
    );
}

/// Prints a Toka token for `gen_pymacaroons.py`; not a test.
#[test]
#[ignore = "fixture generator, run by tests/fixtures/gen_pymacaroons.py"]
fn mint_interop_token() {
    let secret = std::env::var("TOKA_INTEROP_ROOT").expect("set TOKA_INTEROP_ROOT");
    let authority = Authority::from_secret(secret.as_bytes());
    let token = authority
        .mint(parse_caveats(&TOKA_FIXTURE_CAVEATS))
        .unwrap();
    println!("TOKA_TOKEN={token}");
}

// ---------------------------------------------------------------------------------------
// Verified tokens, remembered
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn verified_tokens_are_remembered_but_revocation_and_forgery_still_count() {
    let authority = Authority::from_secret(b"verify_text test root secret, 32+ bytes");
    let token = authority.mint([tool("fs.*")]).unwrap();
    let text = token.to_string();
    let at = |tool| Request {
        tool,
        agent: None,
        path: None,
        bytes: None,
        now: Timestamp::now(),
        model: None,
    };
    let request = at("fs.read");
    // Twice: the second comes from memory, with the same caveats.
    for _ in 0..2 {
        let verified = authority.verify_text(&text).unwrap();
        assert_eq!(verified.token().identifier(), token.identifier());
        assert_eq!(verified.caveats(), [tool("fs.*")]);
        assert!(authority.admit(&verified, &request).is_ok());
        assert!(authority.admit(&verified, &at("shell.exec")).is_err());
    }
    // A forged variant of a remembered token: another text, verified on its own, refused.
    let mut forged = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = URL_SAFE_NO_PAD.encode(forged);
    assert!(authority.verify_text(&forged).is_err());
    // Another authority's token of the same shape is refused too.
    let other = Authority::from_secret(b"another root secret, 32 bytes long!!");
    let theirs = other.mint([tool("fs.*")]).unwrap().to_string();
    assert!(authority.verify_text(&theirs).is_err());
    // Revoked after it was remembered: refused at once, by both calls.
    let verified = authority.verify_text(&text).unwrap();
    authority.revoke(token.identifier(), "test").await.unwrap();
    let refused = authority.verify_text(&text).unwrap_err();
    assert!(refused.reason.contains("revoked"), "{}", refused.reason);
    assert!(authority.admit(&verified, &request).is_err());
}

/// `Authority::issue` journals who issued which identifier with which caveats, never a
/// token: not the issued one, and not one written into a caveat or a revocation reason.
#[tokio::test]
async fn issued_tokens_are_journaled_without_any_token_text() {
    let dir = tempfile::tempdir().unwrap();
    let journal: std::sync::Arc<dyn toka_store::Journal> = std::sync::Arc::new(
        toka_store::MemoryJournal::new(toka_store::JournalConfig::default()).unwrap(),
    );
    let authority = Authority::open(&dir.path().join("root.key"), journal.clone()).unwrap();
    let admin = authority.issue(Vec::new(), "init").await.unwrap();
    let admin_text = admin.to_string();
    let planted = Caveat::Agent(admin_text.clone());
    let narrow = authority
        .issue(vec![tool("fs.read"), planted], "api:someone")
        .await
        .unwrap();
    authority
        .revoke(narrow.identifier(), &format!("leaked with {admin_text}"))
        .await
        .unwrap();

    let issued = authority.issued().unwrap();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0].identifier, admin.identifier());
    assert_eq!(issued[0].issued_by, "init");
    assert!(issued[0].caveats.is_empty());
    assert_eq!(issued[1].identifier, narrow.identifier());
    assert_eq!(issued[1].issued_by, "api:someone");
    assert_eq!(issued[1].caveats[0], "tool = fs.read");
    assert_eq!(issued[1].caveats[1], "agent = [redacted capability token]");
    for event in journal.read_all(1, 100).unwrap() {
        let bytes = String::from_utf8_lossy(&event.payload).into_owned();
        for token in [&admin_text, &narrow.to_string()] {
            assert!(!bytes.contains(token.as_str()), "{}: {bytes}", event.stream);
        }
    }
}
