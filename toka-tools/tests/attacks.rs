//! The attack suite: every case asserts a clear refusal (the `ToolErrorKind` and a telling
//! part of its message) and that the host keeps serving legitimate calls afterwards.
//!
//! Real parts only: a sled journal and a key file in a temporary directory, the real
//! `ToolHost` with the reference tools, and real child processes in the sandbox.
//!
//! Process attacks run as a dedicated uid each (`run_as`), so `RLIMIT_NPROC` and the
//! "no process survives" checks of one test never see another test's processes. Landlock
//! is required: set `TOKA_ALLOW_NO_LANDLOCK=1` to run on a kernel without it.
#![allow(missing_docs)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;
use toka_store::{Journal, JournalConfig, SledJournal};
use toka_tools::capability::MAX_TOKEN_BYTES;
use toka_tools::shell::ExecOutput;
use toka_tools::{
    Authority, Capability, Caveat, FsList, FsRead, FsWrite, ReadOutput, Request, SandboxPolicy,
    ShellExec, ToolError, ToolErrorKind, ToolHost,
};

/// Programs the sandboxed `shell.exec` of every fixture may run.
const PROGRAMS: [&str; 9] = [
    "sh", "true", "cat", "env", "sleep", "yes", "head", "tr", "setsid",
];

/// Contents of the file outside the jail that attacks try to reach.
const OUTSIDE_SECRET: &str = "TOP-SECRET: outside the jail";

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

/// A node: journal, authority (key file) and host with fs.read/fs.write/fs.list/shell.exec
/// over `jail`; `outside` is a world-readable, world-writable sibling of the jail.
struct Fx {
    dir: TempDir,
    jail: PathBuf,
    outside: PathBuf,
    policy: SandboxPolicy,
    journal: Arc<SledJournal>,
    authority: Authority,
    host: ToolHost,
    shell: ShellExec,
    /// Denials this test provoked (each must be in the audit stream).
    denials: usize,
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Fx {
    /// A fresh node whose sandbox runs as `uid`; `tweak` adjusts the sandbox policy.
    async fn new(uid: u32, tweak: impl FnOnce(&mut SandboxPolicy)) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        // The sandbox user must traverse every parent of the jail.
        chmod(dir.path(), 0o755);
        let jail = dir.path().join("jail");
        let outside = dir.path().join("outside");
        for d in [&jail, &outside] {
            std::fs::create_dir(d).unwrap();
            chmod(d, 0o777);
        }
        std::fs::create_dir(jail.join("pub")).unwrap();
        std::fs::create_dir(jail.join("priv")).unwrap();
        std::fs::write(jail.join("pub/hello.txt"), "hello").unwrap();
        std::fs::write(jail.join("priv/secret.txt"), "private").unwrap();
        std::fs::write(outside.join("secret.txt"), OUTSIDE_SECRET).unwrap();
        chmod(&outside.join("secret.txt"), 0o644);
        let mut policy = SandboxPolicy::new(&jail);
        policy.run_as = Some((uid, uid));
        policy.timeout = Duration::from_secs(5);
        tweak(&mut policy);
        Self::start(dir, jail, outside, policy).await
    }

    async fn start(dir: TempDir, jail: PathBuf, outside: PathBuf, policy: SandboxPolicy) -> Fx {
        let journal = Arc::new(
            SledJournal::open(dir.path().join("journal"), JournalConfig::default())
                .expect("open the sled journal"),
        );
        let authority = Authority::open(
            &dir.path().join("root.key"),
            Arc::clone(&journal) as Arc<dyn Journal>,
        )
        .expect("open the authority");
        let shell = ShellExec::new(policy.clone(), PROGRAMS).expect("build shell.exec");
        let host = ToolHost::builder(authority.clone())
            .tool(FsRead::new(&jail).unwrap())
            .tool(FsWrite::new(&jail).unwrap())
            .tool(FsList::new(&jail).unwrap())
            .tool(shell.clone())
            .start()
            .await
            .expect("start the tool host");
        Fx {
            dir,
            jail,
            outside,
            policy,
            journal,
            authority,
            host,
            shell,
            denials: 0,
        }
    }

    /// Stops the host, drops the authority and the journal (releasing sled's lock), then
    /// opens everything again from the same directory and key file.
    async fn restart(self) -> Fx {
        let Fx {
            dir,
            jail,
            outside,
            policy,
            journal,
            authority,
            host,
            shell,
            denials,
        } = self;
        host.shutdown().await;
        drop((host, shell, authority, journal));
        let mut fx = Self::start(dir, jail, outside, policy).await;
        fx.denials = denials;
        fx
    }

    /// A token for legitimate calls by alice.
    fn alice_token(&self) -> Capability {
        self.authority
            .mint([Caveat::Agent("alice".into())])
            .unwrap()
    }

    async fn call(
        &self,
        token: &Capability,
        caller: Option<&str>,
        tool: &str,
        input: Value,
    ) -> Result<Value, ToolError> {
        self.host.call(token, caller, tool, &input).await
    }

    async fn exec(
        &self,
        token: &Capability,
        program: &str,
        args: &[&str],
    ) -> Result<ExecOutput, ToolError> {
        self.host
            .call(
                token,
                Some("alice"),
                "shell.exec",
                &json!({"program": program, "args": args}),
            )
            .await
    }

    async fn sh(&self, script: &str) -> Result<ExecOutput, ToolError> {
        self.exec(&self.alice_token(), "sh", &["-c", script]).await
    }

    /// Calls, expects a capability denial whose message contains `needle`, and checks the
    /// denial was journaled (tool, agent, token id, reason) without any token text.
    async fn expect_denied(
        &mut self,
        token: &Capability,
        caller: Option<&str>,
        tool: &str,
        input: Value,
        needle: &str,
    ) -> ToolError {
        let err = self
            .call(token, caller, tool, input)
            .await
            .expect_err("the attack must be refused");
        assert_eq!(err.kind, ToolErrorKind::Denied, "{err}");
        assert!(
            err.message.contains(needle),
            "denial {:?} does not mention {needle:?}",
            err.message
        );
        self.denials += 1;
        let records = self.authority.denials().expect("read the audit stream");
        assert_eq!(
            records.len(),
            self.denials,
            "every denial is journaled once: {records:?}"
        );
        let last = records.last().unwrap();
        assert_eq!(last.tool, tool);
        assert_eq!(last.agent.as_deref(), caller);
        assert_eq!(last.reason, err.message);
        assert_eq!(last.token.as_deref(), Some(token.identifier()));
        assert_no_token_text(&format!("{last:?}"), token);
        assert_no_token_text(&err.message, token);
        err
    }

    /// [`Fx::expect_denied`] for a call by alice.
    async fn deny(
        &mut self,
        token: &Capability,
        tool: &str,
        input: Value,
        needle: &str,
    ) -> ToolError {
        self.expect_denied(token, Some("alice"), tool, input, needle)
            .await
    }

    /// Legitimate calls to the same host still work: a file read and two processes.
    async fn assert_alive(&self) {
        let token = self.alice_token();
        let read: ReadOutput = self
            .host
            .call(
                &token,
                Some("alice"),
                "fs.read",
                &json!({"path": "pub/hello.txt"}),
            )
            .await
            .expect("the host still serves fs.read");
        assert_eq!(read.content, "hello");
        let cat = self
            .exec(&token, "cat", &["pub/hello.txt"])
            .await
            .expect("the host still runs processes");
        assert_eq!(
            (cat.code, cat.stdout.as_str()),
            (Some(0), "hello"),
            "{cat:?}"
        );
        let t = self
            .exec(&token, "true", &[])
            .await
            .expect("the host still runs processes");
        assert_eq!(t.code, Some(0), "{t:?}");
    }

    /// Whether Landlock is in force; fails the test unless `TOKA_ALLOW_NO_LANDLOCK=1`.
    fn landlock(&self) -> bool {
        if self.shell.sandbox().landlock_abi().is_some() {
            return true;
        }
        assert_eq!(
            std::env::var("TOKA_ALLOW_NO_LANDLOCK").as_deref(),
            Ok("1"),
            "Landlock is not in force for the sandbox; set TOKA_ALLOW_NO_LANDLOCK=1 to accept that"
        );
        false
    }
}

fn assert_no_token_text(text: &str, token: &Capability) {
    let full = token.to_string();
    // The last 43 characters are the signature's base64url (32 bytes).
    let signature = &full[full.len() - 43..];
    assert!(!text.contains(&full), "{text:?} contains the token");
    assert!(!text.contains(signature), "{text:?} contains the signature");
}

fn assert_kind(result: Result<Value, ToolError>, kind: ToolErrorKind, needle: &str) -> ToolError {
    let err = result.expect_err("the attack must be refused");
    assert_eq!(err.kind, kind, "{err}");
    assert!(err.message.contains(needle), "{err} lacks {needle:?}");
    err
}

// ---------------------------------------------------------------------------------------
// Macaroon V2 binary surgery (tag varint-length bytes; sections end with EOS = 0)
// ---------------------------------------------------------------------------------------

type Fields = Vec<(u8, Vec<u8>)>;

struct V2 {
    header: Fields,
    caveats: Vec<Fields>,
    signature: Vec<u8>,
}

fn varint(bytes: &[u8], at: &mut usize) -> usize {
    let (mut value, mut shift) = (0usize, 0);
    loop {
        let b = bytes[*at];
        *at += 1;
        value |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn fields(bytes: &[u8], at: &mut usize) -> Fields {
    let mut out = Vec::new();
    loop {
        let tag = bytes[*at];
        *at += 1;
        if tag == 0 {
            return out;
        }
        let len = varint(bytes, at);
        out.push((tag, bytes[*at..*at + len].to_vec()));
        *at += len;
    }
}

impl V2 {
    fn decode(token: &Capability) -> V2 {
        let bytes = URL_SAFE_NO_PAD.decode(token.to_string()).unwrap();
        assert_eq!(bytes[0], 2, "tokens are V2 binary");
        let mut at = 1;
        let header = fields(&bytes, &mut at);
        let mut caveats = Vec::new();
        while bytes[at] != 0 {
            caveats.push(fields(&bytes, &mut at));
        }
        at += 1;
        assert_eq!(bytes[at], 6, "signature tag");
        at += 1;
        let len = varint(&bytes, &mut at);
        let signature = bytes[at..at + len].to_vec();
        assert_eq!(at + len, bytes.len());
        V2 {
            header,
            caveats,
            signature,
        }
    }

    fn encode(&self) -> String {
        fn put(out: &mut Vec<u8>, fields: &Fields) {
            for (tag, value) in fields {
                out.push(*tag);
                put_varint(out, value.len());
                out.extend_from_slice(value);
            }
            out.push(0);
        }
        let mut out = vec![2];
        put(&mut out, &self.header);
        for caveat in &self.caveats {
            put(&mut out, caveat);
        }
        out.push(0);
        out.push(6);
        put_varint(&mut out, self.signature.len());
        out.extend_from_slice(&self.signature);
        URL_SAFE_NO_PAD.encode(out)
    }

    fn predicate(fields: &Fields) -> &[u8] {
        &fields.iter().find(|(tag, _)| *tag == 2).unwrap().1
    }
}

// ---------------------------------------------------------------------------------------
// Token attacks
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signatures_are_denied() {
    let mut fx = Fx::new(61010, |_| {}).await;
    let read = json!({"path": "pub/hello.txt"});

    // Minted by an authority with another root secret.
    let mallory = Authority::from_secret(b"mallory's guess at the root secret");
    let forged = mallory
        .mint([Caveat::Tool("fs.read".parse().unwrap())])
        .unwrap();
    fx.deny(
        &forged,
        "fs.read",
        read.clone(),
        "signature does not verify",
    )
    .await;

    // A genuine token with one character of its signature's base64url text changed.
    let genuine = fx
        .authority
        .mint([Caveat::Tool("fs.read".parse().unwrap())])
        .unwrap();
    fx.call(&genuine, Some("alice"), "fs.read", read.clone())
        .await
        .expect("the genuine token works");
    let mut text: Vec<char> = genuine.to_string().chars().collect();
    let at = text.len() - 6;
    text[at] = if text[at] == 'A' { 'B' } else { 'A' };
    let text: String = text.into_iter().collect();
    let flipped = Capability::parse(&text).expect("still a well-formed macaroon");
    assert_eq!(flipped.identifier(), genuine.identifier());
    fx.deny(
        &flipped,
        "fs.read",
        read.clone(),
        "signature does not verify",
    )
    .await;

    // A flipped bit in a few of the signature's bytes, in the binary.
    let v2 = V2::decode(&genuine);
    for i in [0, 13, 31] {
        let mut bad = V2::decode(&genuine);
        bad.signature[i] ^= 0x01;
        let token = Capability::parse(&bad.encode()).unwrap();
        fx.deny(&token, "fs.read", read.clone(), "signature does not verify")
            .await;
    }
    // An all-zero signature.
    let zero = V2 {
        signature: vec![0; 32],
        ..v2
    };
    let token = Capability::parse(&zero.encode()).unwrap();
    fx.deny(&token, "fs.read", read, "signature does not verify")
        .await;

    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_or_editing_a_caveat_breaks_the_signature() {
    let mut fx = Fx::new(61011, |_| {}).await;
    let token = fx
        .authority
        .mint([
            Caveat::Tool("fs.read".parse().unwrap()),
            Caveat::PathPrefix("/pub".into()),
        ])
        .unwrap();
    let private = json!({"path": "priv/secret.txt"});
    fx.call(
        &token,
        Some("alice"),
        "fs.read",
        json!({"path": "pub/hello.txt"}),
    )
    .await
    .expect("allowed under /pub");
    fx.deny(
        &token,
        "fs.read",
        private.clone(),
        "outside the allowed prefix",
    )
    .await;

    // Drop the path-prefix caveat's section from the binary.
    let mut v2 = V2::decode(&token);
    assert_eq!(v2.caveats.len(), 2);
    v2.caveats
        .retain(|c| V2::predicate(c) != b"path-prefix = /pub".as_slice());
    assert_eq!(v2.caveats.len(), 1);
    let stripped = Capability::parse(&v2.encode()).expect("well-formed");
    assert_eq!(
        stripped.caveats().unwrap(),
        vec![Caveat::Tool("fs.read".parse().unwrap())]
    );
    fx.deny(
        &stripped,
        "fs.read",
        private.clone(),
        "signature does not verify",
    )
    .await;

    // Widen the caveat's text: "path-prefix = /pub" → "path-prefix = /" (length changes).
    let mut v2 = V2::decode(&token);
    v2.caveats[1] = vec![(2, b"path-prefix = /".to_vec())];
    let widened = Capability::parse(&v2.encode()).expect("well-formed");
    assert_eq!(
        widened.caveats().unwrap()[1],
        Caveat::PathPrefix("/".into())
    );
    fx.deny(
        &widened,
        "fs.read",
        private.clone(),
        "signature does not verify",
    )
    .await;

    // Same length: "/pub" → "/pri".
    let mut v2 = V2::decode(&token);
    v2.caveats[1] = vec![(2, b"path-prefix = /pri".to_vec())];
    let swapped = Capability::parse(&v2.encode()).expect("well-formed");
    fx.deny(
        &swapped,
        "fs.read",
        private.clone(),
        "signature does not verify",
    )
    .await;

    // Reorder the caveats.
    let mut v2 = V2::decode(&token);
    v2.caveats.swap(0, 1);
    let reordered = Capability::parse(&v2.encode()).expect("well-formed");
    fx.deny(
        &reordered,
        "fs.read",
        private.clone(),
        "signature does not verify",
    )
    .await;

    // Swap the identifier for another token's (same caveats, other signature chain).
    let other = fx.authority.mint([]).unwrap();
    let mut v2 = V2::decode(&token);
    v2.header = V2::decode(&other).header;
    let relabelled = Capability::parse(&v2.encode()).expect("well-formed");
    assert_eq!(relabelled.identifier(), other.identifier());
    fx.deny(
        &relabelled,
        "fs.read",
        private.clone(),
        "signature does not verify",
    )
    .await;

    // A third-party caveat smuggled in (Toka accepts none).
    let mut v2 = V2::decode(&token);
    v2.caveats.push(vec![
        (1, b"https://evil.example".to_vec()),
        (2, b"discharge me".to_vec()),
        (4, vec![7; 72]),
    ]);
    let third = Capability::parse(&v2.encode()).expect("well-formed");
    fx.deny(&third, "fs.read", private, "signature does not verify")
        .await;

    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_wrong_tool_wrong_agent_and_unknown_caveats_are_denied() {
    let mut fx = Fx::new(61012, |_| {}).await;
    let read = json!({"path": "pub/hello.txt"});

    let expired = fx
        .authority
        .mint([Caveat::Expires(
            Timestamp::now() - SignedDuration::from_secs(60),
        )])
        .unwrap();
    fx.deny(&expired, "fs.read", read.clone(), "token expired at")
        .await;

    let read_only = fx
        .authority
        .mint([Caveat::Tool("fs.read".parse().unwrap())])
        .unwrap();
    fx.deny(
        &read_only,
        "fs.write",
        json!({"path": "pub/x.txt", "content": "x"}),
        "tool \"fs.write\" is not allowed",
    )
    .await;
    assert!(!fx.jail.join("pub/x.txt").exists());
    fx.deny(
        &read_only,
        "shell.exec",
        json!({"program": "true"}),
        "tool \"shell.exec\" is not allowed",
    )
    .await;
    // A prefix pattern does not match a longer sibling name.
    let fs_star = fx
        .authority
        .mint([Caveat::Tool("fs.*".parse().unwrap())])
        .unwrap();
    fx.deny(
        &fs_star,
        "shell.exec",
        json!({"program": "true"}),
        "token allows `fs.*`",
    )
    .await;

    let for_alice = fx.authority.mint([Caveat::Agent("alice".into())]).unwrap();
    fx.expect_denied(
        &for_alice,
        Some("mallory"),
        "fs.read",
        read.clone(),
        "agent \"mallory\" is not allowed",
    )
    .await;
    fx.expect_denied(
        &for_alice,
        None,
        "fs.read",
        read.clone(),
        "the caller is not an agent",
    )
    .await;

    let unknown = read_only.attenuate_raw(b"colour = blue");
    fx.deny(
        &unknown,
        "fs.read",
        read.clone(),
        "unknown caveat \"colour\"",
    )
    .await;
    let malformed = read_only.attenuate_raw(b"max-bytes = lots");
    fx.deny(&malformed, "fs.read", read.clone(), "not a byte count")
        .await;
    let injected = read_only.attenuate_raw(b"tool = fs.read\nagent = alice");
    fx.deny(&injected, "fs.read", read, "control characters")
        .await;

    // A byte budget: the request is refused before the file is written.
    let small = fx.authority.mint([Caveat::MaxBytes(4)]).unwrap();
    fx.deny(
        &small,
        "fs.write",
        json!({"path": "pub/big.txt", "content": "more than four"}),
        "the token allows 4",
    )
    .await;
    assert!(!fx.jail.join("pub/big.txt").exists());

    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_enforced_and_survives_a_restart() {
    let mut fx = Fx::new(61013, |_| {}).await;
    let read = json!({"path": "pub/hello.txt"});
    let caveats = || {
        [
            Caveat::Tool("fs.*".parse().unwrap()),
            Caveat::Agent("alice".into()),
        ]
    };
    let victim = fx.authority.mint(caveats()).unwrap();
    let keeper = fx.authority.mint(caveats()).unwrap();
    let narrowed = victim.attenuate(&Caveat::PathPrefix("/pub".into()));
    fx.call(&victim, Some("alice"), "fs.read", read.clone())
        .await
        .expect("allowed before revocation");

    fx.authority
        .revoke(victim.identifier(), "laptop stolen")
        .await
        .unwrap();
    let err = fx
        .deny(&victim, "fs.read", read.clone(), "is revoked")
        .await;
    assert!(err.message.contains(victim.identifier()), "{err}");
    fx.deny(&narrowed, "fs.list", json!({"path": "pub"}), "is revoked")
        .await;
    fx.call(&keeper, Some("alice"), "fs.read", read.clone())
        .await
        .expect("other tokens are unaffected");
    fx.assert_alive().await;

    let (victim_text, keeper_text, narrowed_text) =
        (victim.to_string(), keeper.to_string(), narrowed.to_string());
    let before = fx.authority.denials().unwrap();
    drop((victim, keeper, narrowed));

    // Drop everything, reopen the journal and the authority from disk.
    let mut fx = fx.restart().await;
    let victim = Capability::parse(&victim_text).unwrap();
    let keeper = Capability::parse(&keeper_text).unwrap();
    let narrowed = Capability::parse(&narrowed_text).unwrap();
    assert!(fx.authority.is_revoked(victim.identifier()));
    assert!(!fx.authority.is_revoked(keeper.identifier()));
    assert_eq!(
        fx.authority.denials().unwrap(),
        before,
        "the audit trail survives the restart"
    );
    fx.deny(&victim, "fs.read", read.clone(), "is revoked")
        .await;
    fx.deny(&narrowed, "fs.read", read.clone(), "is revoked")
        .await;
    let out: ReadOutput = fx
        .host
        .call(&keeper, Some("alice"), "fs.read", &read)
        .await
        .expect("the same root key still verifies other tokens after the restart");
    assert_eq!(out.content, "hello");
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tokens_are_rejected_and_well_formed_junk_is_denied() {
    let denial = |text: &str| {
        Capability::parse(text)
            .map(|t| t.identifier().to_owned())
            .expect_err("garbage must not parse")
            .reason
    };
    for (text, needle) in [
        ("", "not a macaroon"),
        ("  \n\t", "not a macaroon"),
        ("!!!!", "not base64url"),
        ("A", "not base64url"),
        ("this is not a token", "not base64url"),
        ("AAAA", "not a macaroon"),
        ("AgAA", "not a macaroon"),
        ("Ag", "not a macaroon"),
        ("ab+/", "not base64url"),
    ] {
        let reason = denial(text);
        assert!(reason.contains(needle), "{text:?}: {reason}");
    }
    let huge = "A".repeat(MAX_TOKEN_BYTES + 1);
    assert!(denial(&huge).contains("exceeds 16384"));
    let huge = "\u{1F4A9}".repeat(20_000);
    assert!(denial(&huge).contains("exceeds"));

    // Well-formed macaroons that no authority minted: the host refuses them.
    let mut fx = Fx::new(61014, |_| {}).await;
    let junk = V2 {
        header: vec![(2, b"x".to_vec())],
        caveats: vec![vec![(2, b"tool = fs.read".to_vec())]],
        signature: vec![0xAB; 32],
    };
    let token = Capability::parse(&junk.encode()).unwrap();
    fx.deny(
        &token,
        "fs.read",
        json!({"path": "pub/hello.txt"}),
        "signature does not verify",
    )
    .await;
    // A V1 (packet) macaroon with a bogus signature.
    fn packet(key: &str, value: &[u8]) -> Vec<u8> {
        let mut p = format!("{:04x}{key} ", 4 + key.len() + 2 + value.len()).into_bytes();
        p.extend_from_slice(value);
        p.push(b'\n');
        p
    }
    let v1 = [
        packet("identifier", b"v1-token"),
        packet("cid", b"tool = fs.read"),
        packet("signature", &[0x5A; 32]),
    ]
    .concat();
    // Tokens must be canonical V2 (one spelling per token): a V1 encoding is refused
    // before any signature work, like bytes appended to a V2 token.
    let denial = Capability::parse(&URL_SAFE_NO_PAD.encode(v1)).expect_err("V1 refused");
    assert!(denial.reason.contains("not canonical"), "{}", denial.reason);
    let mut appended = URL_SAFE_NO_PAD.decode(junk.encode()).unwrap();
    appended.extend_from_slice(b"evil");
    let denial = Capability::parse(&URL_SAFE_NO_PAD.encode(appended)).expect_err("appended");
    assert!(denial.reason.contains("not canonical"), "{}", denial.reason);
    fx.assert_alive().await;
}

proptest! {
    // No regression files: failures print their minimal input.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_token_text_never_panics_and_never_verifies(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        v2 in any::<bool>(),
        text in ".{0,256}",
    ) {
        let authority = Authority::from_secret(b"proptest root secret");
        let request = Request {
            tool: "fs.read",
            agent: Some("alice"),
            path: Some("/pub/hello.txt"),
            bytes: None,
            now: Timestamp::now(),
            model: None,
        };
        let mut bytes = bytes;
        if v2 && !bytes.is_empty() {
            bytes[0] = 2;
        }
        for candidate in [URL_SAFE_NO_PAD.encode(&bytes), text] {
            if let Ok(token) = Capability::parse(&candidate) {
                prop_assert!(authority.check(&token, &request).is_err());
            }
        }
    }

    #[test]
    fn any_single_byte_change_to_a_genuine_token_is_refused(
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let authority = Authority::from_secret(b"proptest root secret");
        let token = authority
            .mint([Caveat::Tool("fs.read".parse().unwrap()), Caveat::PathPrefix("/pub".into())])
            .unwrap();
        let request = Request {
            tool: "fs.read",
            agent: None,
            path: Some("/pub/hello.txt"),
            bytes: None,
            now: Timestamp::now(),
            model: None,
        };
        prop_assert!(authority.check(&token, &request).is_ok());
        let mut binary = URL_SAFE_NO_PAD.decode(token.to_string()).unwrap();
        let i = at.index(binary.len());
        binary[i] ^= xor;
        if let Ok(tampered) = Capability::parse(&URL_SAFE_NO_PAD.encode(&binary)) {
            prop_assert!(authority.check(&tampered, &request).is_err(), "byte {} ^ {:#x}", i, xor);
        }
    }
}

// ---------------------------------------------------------------------------------------
// File-system escapes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_dot_traversal_is_refused_by_every_fs_tool() {
    let fx = Fx::new(61015, |_| {}).await;
    let token = fx.alice_token();
    let alice = Some("alice");
    for path in [
        "../outside/secret.txt",
        "pub/../../outside/secret.txt",
        "/../outside/secret.txt",
        "./pub/../../outside/secret.txt",
    ] {
        let r = fx
            .call(&token, alice, "fs.read", json!({"path": path}))
            .await;
        assert_kind(r, ToolErrorKind::InvalidInput, "traversal is not allowed");
    }
    let r = fx
        .call(
            &token,
            alice,
            "fs.write",
            json!({"path": "../outside/pwned.txt", "content": "x"}),
        )
        .await;
    assert_kind(r, ToolErrorKind::InvalidInput, "traversal is not allowed");
    let r = fx
        .call(
            &token,
            alice,
            "fs.write",
            json!({"path": "pub/../../outside/new/pwned.txt", "content": "x", "create_dirs": true}),
        )
        .await;
    assert_kind(r, ToolErrorKind::InvalidInput, "traversal is not allowed");
    assert!(!fx.outside.join("pwned.txt").exists());
    assert!(!fx.outside.join("new").exists());
    for path in ["..", "../outside", "pub/../.."] {
        let r = fx
            .call(&token, alice, "fs.list", json!({"path": path}))
            .await;
        assert_kind(r, ToolErrorKind::InvalidInput, "traversal is not allowed");
    }
    // An absolute path means "under the root", never the host's file.
    let r = fx
        .call(&token, alice, "fs.read", json!({"path": "/etc/passwd"}))
        .await;
    assert_kind(r, ToolErrorKind::Failed, "no such file or directory");
    // A NUL byte cannot cut the path short.
    let r = fx
        .call(
            &token,
            alice,
            "fs.read",
            json!({"path": "pub/hello.txt\u{0}../../etc/passwd"}),
        )
        .await;
    assert_kind(r, ToolErrorKind::InvalidInput, "NUL");
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_cannot_leave_the_root() {
    use std::os::unix::fs::symlink;
    let fx = Fx::new(61016, |_| {}).await;
    let (jail, outside) = (&fx.jail, &fx.outside);
    symlink(outside.join("secret.txt"), jail.join("abs_link")).unwrap();
    symlink("../../outside/secret.txt", jail.join("pub/rel_link")).unwrap();
    symlink(outside, jail.join("abs_dir")).unwrap();
    symlink("../outside", jail.join("rel_dir")).unwrap();
    std::fs::create_dir(jail.join("pub/deep")).unwrap();
    symlink("../../../outside", jail.join("pub/deep/up")).unwrap();

    let token = fx.alice_token();
    let alice = Some("alice");
    // No symlink is followed at all (RESOLVE_NO_SYMLINKS).
    let leaves = "goes through a symlink";
    for path in [
        "abs_link",
        "pub/rel_link",
        "abs_dir/secret.txt",
        "rel_dir/secret.txt",
        "pub/deep/up/secret.txt",
    ] {
        let r = fx
            .call(&token, alice, "fs.read", json!({"path": path}))
            .await;
        let err = assert_kind(r, ToolErrorKind::InvalidInput, leaves);
        assert!(!err.message.contains(OUTSIDE_SECRET));
    }
    for path in ["abs_dir", "rel_dir", "pub/deep/up"] {
        let r = fx
            .call(&token, alice, "fs.list", json!({"path": path}))
            .await;
        assert_kind(r, ToolErrorKind::InvalidInput, leaves);
    }
    for (path, create_dirs) in [
        ("abs_dir/pwned.txt", false),
        ("rel_dir/pwned.txt", false),
        ("pub/deep/up/pwned.txt", false),
        ("abs_dir/sub/pwned.txt", true),
        ("rel_dir/sub/pwned.txt", true),
    ] {
        let r = fx
            .call(
                &token,
                alice,
                "fs.write",
                json!({"path": path, "content": "pwned", "create_dirs": create_dirs}),
            )
            .await;
        assert_kind(r, ToolErrorKind::InvalidInput, leaves);
    }
    // Writing onto a symlink replaces the link inside the root; the target is untouched.
    let _ = fx
        .call(
            &token,
            alice,
            "fs.write",
            json!({"path": "abs_link", "content": "pwned"}),
        )
        .await;
    let mut outside_names: Vec<String> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside_names.sort();
    assert_eq!(outside_names, ["secret.txt"], "nothing was created outside");
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        OUTSIDE_SECRET
    );

    // A symlink inside the root must not carry a path-prefix token out of its prefix.
    std::fs::create_dir_all(jail.join("private")).unwrap();
    std::fs::write(jail.join("private/plan.txt"), "TOP SECRET").unwrap();
    symlink("../private", jail.join("pub/to_private")).unwrap();
    let pub_only = token.attenuate(&Caveat::PathPrefix("/pub".into()));
    let r = fx
        .call(
            &pub_only,
            alice,
            "fs.read",
            json!({"path": "private/plan.txt"}),
        )
        .await;
    assert_kind(r, ToolErrorKind::Denied, "outside the allowed prefix");
    let r = fx
        .call(
            &pub_only,
            alice,
            "fs.read",
            json!({"path": "pub/to_private/plan.txt"}),
        )
        .await;
    let err = assert_kind(r, ToolErrorKind::InvalidInput, leaves);
    assert!(!err.message.contains("TOP SECRET"));
    let r = fx
        .call(
            &pub_only,
            alice,
            "fs.list",
            json!({"path": "pub/to_private"}),
        )
        .await;
    assert_kind(r, ToolErrorKind::InvalidInput, leaves);
    let r = fx
        .call(
            &pub_only,
            alice,
            "fs.write",
            json!({"path": "pub/to_private/planted.txt", "content": "x"}),
        )
        .await;
    assert_kind(r, ToolErrorKind::InvalidInput, leaves);
    assert!(!jail.join("private/planted.txt").exists());

    // A FIFO cannot hold a reading thread: refused at once.
    nix::unistd::mkfifo(
        &jail.join("pub/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let started = Instant::now();
    let r = fx
        .call(&token, alice, "fs.read", json!({"path": "pub/fifo"}))
        .await;
    assert_kind(r, ToolErrorKind::InvalidInput, "not a regular file");
    assert!(started.elapsed() < Duration::from_secs(1));
    fx.assert_alive().await;
}

// ---------------------------------------------------------------------------------------
// Process attacks
// ---------------------------------------------------------------------------------------

/// Live (non-zombie) processes whose real uid is `uid`: (pid, name).
fn processes_of(uid: u32) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .unwrap_or("")
                .to_owned()
        };
        let real_uid = field("Uid:")
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned();
        let state = field("State:");
        if real_uid == uid.to_string() && !state.starts_with('Z') && !state.starts_with('X') {
            found.push((pid, field("Name:")));
        }
    }
    found
}

/// Waits until no process of `uid` is left; returns the survivors after `within`.
async fn survivors(uid: u32, within: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_of(uid);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails the test if processes of `uid` outlived their run, after killing them (by pid).
async fn assert_no_survivors(uid: u32, what: &str) {
    let left = survivors(uid, Duration::from_secs(3)).await;
    for (pid, _) in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        left.is_empty(),
        "{what}: processes of uid {uid} outlived their sandboxed run: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained() {
    const UID: u32 = 61001;
    let fx = Fx::new(UID, |p| p.processes = 32).await;
    let started = Instant::now();
    let result = fx.sh("f() { f | f & }; f").await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "the bomb ran {elapsed:?}");
    match &result {
        Ok(out) => assert_eq!(out.stdout, "", "{out:?}"),
        Err(e) => assert!(
            matches!(e.kind, ToolErrorKind::Limit | ToolErrorKind::Timeout),
            "{e}"
        ),
    }
    assert_no_survivors(UID, "fork bomb").await;

    // The process limit is what stops it: the 32nd process cannot be forked.
    let out = fx
        .sh("i=0; while [ $i -lt 40 ]; do sleep 5 >/dev/null 2>&1 & i=$((i+1)); done; echo spawned all")
        .await
        .expect("runs");
    assert!(out.stderr.contains("Cannot fork"), "{out:?}");
    assert!(!out.stdout.contains("spawned all"), "{out:?}");
    assert_no_survivors(UID, "background sleeps").await;

    // And afterwards the same user can start processes again.
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_hits_its_address_space_limit() {
    const UID: u32 = 61005;
    let fx = Fx::new(UID, |p| {
        p.address_space = 256 << 20;
        p.timeout = Duration::from_secs(15);
    })
    .await;
    let limit = fx.sh("ulimit -v").await.expect("runs");
    assert_eq!(limit.stdout.trim(), "262144", "{limit:?}");

    // The shell tries to hold 600 MB in a variable.
    let started = Instant::now();
    let result = fx
        .sh("x=$(head -c 600000000 /dev/zero | tr '\\0' a); echo ${#x}")
        .await;
    match &result {
        Ok(out) => {
            assert!(
                !out.stdout.contains("600000000"),
                "it got its memory: {out:?}"
            );
            assert!(
                out.signal.is_some()
                    || out.stderr.contains("space")
                    || out.stderr.contains("memory"),
                "the hog must die or fail to allocate: {out:?}"
            );
            assert_ne!(out.code, Some(0), "{out:?}");
        }
        Err(e) => assert_eq!(e.kind, ToolErrorKind::Limit, "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));

    // Where a Python is installed, its allocation fails cleanly too.
    if Path::new("/usr/bin/python3").is_file() {
        let python = ShellExec::new(fx.policy.clone(), ["python3"]).unwrap();
        let host = ToolHost::builder(fx.authority.clone())
            .tool(python)
            .start()
            .await
            .unwrap();
        let out: ExecOutput = host
            .call(
                &fx.alice_token(),
                Some("alice"),
                "shell.exec",
                &json!({"program": "python3", "args": ["-c", "b = bytearray(2 * 1024**3)"]}),
            )
            .await
            .expect("runs");
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("MemoryError"), "{out:?}");
        host.shutdown().await;
    }

    // The host's own memory did not take the hog's allocation.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 1 << 20, "host peak RSS {peak_kib} KiB");
    assert_no_survivors(UID, "memory hog").await;
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_hits_the_cpu_limit() {
    const UID: u32 = 61006;
    let fx = Fx::new(UID, |p| {
        p.cpu_seconds = 1;
        p.timeout = Duration::from_secs(15);
    })
    .await;
    let started = Instant::now();
    let err = fx
        .sh("while :; do :; done")
        .await
        .expect_err("the loop must be stopped");
    assert_eq!(err.kind, ToolErrorKind::Limit, "{err}");
    assert!(err.message.contains("used up its 1 s of CPU time"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_no_survivors(UID, "cpu loop").await;
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeper_hits_the_wall_clock_timeout() {
    const UID: u32 = 61009;
    let fx = Fx::new(UID, |p| p.timeout = Duration::from_secs(1)).await;
    let started = Instant::now();
    let err = fx
        .exec(&fx.alice_token(), "sleep", &["30"])
        .await
        .expect_err("the sleeper must be stopped");
    assert_eq!(err.kind, ToolErrorKind::Timeout, "{err}");
    assert!(
        err.message.contains("ran past the sandbox's 1s limit"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_no_survivors(UID, "sleeper").await;
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_does_not_survive_its_timeout() {
    const UID: u32 = 61002;
    let fx = Fx::new(UID, |p| p.timeout = Duration::from_secs(1)).await;
    let err = fx
        .sh("sleep 30 & sleep 30")
        .await
        .expect_err("must time out");
    assert_eq!(err.kind, ToolErrorKind::Timeout, "{err}");
    assert_no_survivors(UID, "sleep 30 & sleep 30").await;
    fx.assert_alive().await;
}

/// A shell that exits at once while a background child keeps its stdout open: the run
/// ends when the shell does (the group is killed then), not at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_child_does_not_hold_the_run_open() {
    const UID: u32 = 61017;
    let fx = Fx::new(UID, |p| p.timeout = Duration::from_secs(2)).await;
    let started = Instant::now();
    let result = fx.sh("sleep 30 & echo left").await;
    let elapsed = started.elapsed();
    assert_no_survivors(UID, "sleep 30 & echo left").await;
    let out = result.expect("the shell exited at once; its run must not time out");
    assert_eq!(out.stdout, "left\n");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_cannot_escape_its_process_group_with_setsid() {
    const UID: u32 = 61003;
    let fx = Fx::new(UID, |p| p.timeout = Duration::from_secs(1)).await;
    // `setsid` puts the child in a new session (and process group), out of reach of
    // `killpg`; parent-death signals are not inherited across fork.
    let result = fx.sh("setsid sleep 30 & sleep 30").await;
    let err = result.expect_err("must time out");
    assert_eq!(err.kind, ToolErrorKind::Timeout, "{err}");
    assert_no_survivors(UID, "setsid sleep 30 & sleep 30").await;
    let started = Instant::now();
    let out = fx
        .sh("setsid sleep 30 >/dev/null 2>&1 </dev/null & echo detached")
        .await
        .expect("the shell exits at once");
    assert_eq!(out.stdout, "detached\n");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_no_survivors(UID, "a detached setsid child").await;
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_is_cut_off() {
    const UID: u32 = 61004;
    let fx = Fx::new(UID, |p| p.output_bytes = 4096).await;
    let started = Instant::now();
    let err = fx
        .exec(&fx.alice_token(), "yes", &[])
        .await
        .expect_err("must be cut off");
    assert_eq!(err.kind, ToolErrorKind::Limit, "{err}");
    assert!(
        err.message.contains("more than 4096 bytes to stdout"),
        "{err}"
    );
    let err = fx.sh("yes >&2").await.expect_err("must be cut off");
    assert_eq!(err.kind, ToolErrorKind::Limit, "{err}");
    assert!(
        err.message.contains("more than 4096 bytes to stderr"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    // Exactly at the cap is fine.
    let out = fx
        .exec(&fx.alice_token(), "head", &["-c", "4096", "/dev/zero"])
        .await
        .expect("4096 bytes are allowed");
    assert_eq!(out.stdout.len(), 4096);
    assert_no_survivors(UID, "yes").await;
    fx.assert_alive().await;
}

const SECRET_VAR: &str = "TOKA_TEST_SECRET";
const SECRET_VALUE: &str = "hunter2-do-not-leak-7f3a";

/// The host's environment must not reach a sandboxed program. The variable is set for a
/// re-run of this test binary (setting it here would race other threads' `getenv`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_does_not_leak_into_the_sandbox() {
    if std::env::var(SECRET_VAR).as_deref() != Ok(SECRET_VALUE) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "environment_does_not_leak_into_the_sandbox",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SECRET_VAR, SECRET_VALUE)
            .env("LANG", "C.UTF-8")
            .env("AWS_SECRET_ACCESS_KEY", SECRET_VALUE)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "the re-run failed:\n{text}");
        assert!(text.contains("1 passed"), "the re-run ran nothing:\n{text}");
        return;
    }
    const UID: u32 = 61007;
    let fx = Fx::new(UID, |p| p.pass_env.push("TOKA_UNSET_VARIABLE".into())).await;
    let out = fx
        .exec(&fx.alice_token(), "env", &[])
        .await
        .expect("env runs");
    assert_eq!(out.code, Some(0));
    assert!(!out.stdout.contains(SECRET_VALUE), "{out:?}");
    let mut vars: Vec<&str> = out.stdout.lines().collect();
    vars.sort_unstable();
    assert_eq!(
        vars,
        ["LANG=C.UTF-8", "PATH=/usr/bin:/bin"],
        "only allow-listed variables"
    );

    let out = fx
        .sh("echo \"[$TOKA_TEST_SECRET][$AWS_SECRET_ACCESS_KEY]\"")
        .await
        .expect("runs");
    assert_eq!(out.stdout, "[][]\n");
    // Nor can it read the host's environment through /proc.
    let environ = format!("/proc/{}/environ", std::process::id());
    let out = fx
        .exec(&fx.alice_token(), "cat", &[&environ])
        .await
        .expect("cat runs");
    assert!(!out.stdout.contains(SECRET_VALUE), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert_ne!(out.code, Some(0));
    fx.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landlock_confines_reads_and_writes_to_the_jail() {
    const UID: u32 = 61008;
    let fx = Fx::new(UID, |_| {}).await;
    if !fx.landlock() {
        return;
    }
    let token = fx.alice_token();
    let out = fx
        .exec(&token, "cat", &["/etc/passwd"])
        .await
        .expect("cat runs");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    // World-readable, so only Landlock stands in the way.
    let secret = fx.outside.join("secret.txt");
    let out = fx
        .exec(&token, "cat", &[secret.to_str().unwrap()])
        .await
        .expect("cat runs");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(!out.stdout.contains(OUTSIDE_SECRET), "{out:?}");

    // World-writable, so only Landlock stands in the way.
    let pwned = fx.outside.join("pwned.txt");
    let out = fx
        .sh(&format!("echo pwned > {}", pwned.display()))
        .await
        .expect("sh runs");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    assert!(!pwned.exists());

    // The jail itself is readable and writable, by absolute path too.
    let hello = fx.jail.join("pub/hello.txt");
    let out = fx
        .exec(&token, "cat", &[hello.to_str().unwrap()])
        .await
        .expect("cat runs");
    assert_eq!(out.stdout, "hello");
    let out = fx.sh("echo inside > inside.txt").await.expect("sh runs");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(fx.jail.join("inside.txt")).unwrap(),
        "inside\n"
    );
    // Directory permissions were the only other barrier; keep the fixture honest.
    assert_eq!(
        std::fs::metadata(&fx.outside).unwrap().permissions().mode() & 0o777,
        0o777
    );
    fx.assert_alive().await;
}
