//! The real `toka-node` binary against real sled data directories.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use toka_actors::{Agent, AgentError, AgentId, Context, Runtime, SpawnSpec};
use toka_store::{ExpectedVersion, Journal, JournalConfig, NewEvent, SledJournal};
use toka_tools::Capability;

fn toka_node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toka-node"))
        .args(args)
        // Run in a scratch directory: commands must not find a `./toka-data` by chance.
        .current_dir(std::env::temp_dir())
        .env_remove("TOKA_DATA_DIR")
        .env_remove("TOKA_KEY_FILE")
        .output()
        .expect("spawn toka-node")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a clean failure: exit 2, one line on stderr containing `needle`, no panic.
fn assert_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `toka-node init` in a fresh `data` directory under a temp dir; returns both and the
/// admin token printed.
fn initialised() -> (tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").to_str().unwrap().to_owned();
    let out = toka_node(&["init", "--data-dir", &data]);
    assert!(out.status.success(), "{out:?}");
    let token = stdout(&out).trim().to_owned();
    (tmp, data, token)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// A data dir whose journal holds 10 events: positions 1..=10, streams `a` and `b`.
fn populated_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let journal =
            SledJournal::open(dir.path().join("journal"), JournalConfig::default()).unwrap();
        for i in 0..10u32 {
            let stream = if i % 2 == 0 { "a" } else { "b" };
            let event = NewEvent::new("test.event", format!("payload-{i}").into_bytes());
            journal
                .append(stream, ExpectedVersion::Any, &[event])
                .await
                .unwrap()
                .unwrap();
        }
    });
    dir
}

fn corrupt_position(data_dir: &Path, position: u64) {
    let journal = SledJournal::open(data_dir.join("journal"), JournalConfig::default()).unwrap();
    let db = journal.backend().db();
    let mut key = vec![b'L'];
    key.extend_from_slice(&position.to_be_bytes());
    let mut value = db.get(&key).unwrap().unwrap().to_vec();
    let last = value.len() - 1;
    value[last] ^= 0x40;
    db.insert(key, value).unwrap();
    db.flush().unwrap();
}

#[test]
fn verify_succeeds_on_an_intact_journal() {
    let dir = populated_data_dir();
    let out = toka_node(&[
        "events",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("journal intact: 10 records"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_fails_and_names_the_position_on_a_corrupted_journal() {
    let dir = populated_data_dir();
    corrupt_position(dir.path(), 4);
    let path = dir.path().to_str().unwrap();
    let out = toka_node(&["events", "verify", "--data-dir", path]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("position 4"), "{}", stdout(&out));

    let out = toka_node(&["events", "verify", "--data-dir", path, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["first_bad"]["position"], 4);
    assert_eq!(report["records"], 3);
}

#[test]
fn list_prints_json_lines_and_filters_by_stream() {
    let dir = populated_data_dir();
    let path = dir.path().to_str().unwrap();
    let out = toka_node(&["events", "list", "--data-dir", path, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[3]["position"], 4);
    assert_eq!(lines[3]["payload"]["utf8"], "payload-3");

    let out = toka_node(&[
        "events",
        "list",
        "--data-dir",
        path,
        "--stream",
        "b",
        "--from",
        "2",
        "--limit",
        "2",
        "--json",
    ]);
    let seqs: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [2, 3]);

    let out = toka_node(&["events", "list", "--data-dir", path]);
    assert_eq!(stdout(&out).lines().count(), 10);
}

#[test]
fn list_reports_a_corrupt_record_as_an_error() {
    let dir = populated_data_dir();
    corrupt_position(dir.path(), 6);
    let out = toka_node(&["events", "list", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("position 6"), "{stderr}");
    assert_eq!(
        stdout(&out).lines().count(),
        5,
        "records before the damage are listed"
    );
}

#[test]
fn missing_data_dir_and_unreadable_run_config_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = toka_node(&[
        "events",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no journal at"));

    // `run` itself is exercised in tests/api.rs; a config file it cannot read is an error.
    let missing = dir.path().join("missing.toml");
    let out = toka_node(&[
        "run",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--config",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config file"));
}

#[test]
fn every_command_has_help() {
    let commands: [&[&str]; 16] = [
        &["--help"],
        &["init", "--help"],
        &["events", "--help"],
        &["events", "list", "--help"],
        &["events", "verify", "--help"],
        &["events", "export", "--help"],
        &["agents", "--help"],
        &["agents", "tree", "--help"],
        &["token", "--help"],
        &["token", "mint", "--help"],
        &["token", "attenuate", "--help"],
        &["token", "inspect", "--help"],
        &["token", "revoke", "--help"],
        &["completions", "--help"],
        &["run", "--help"],
        &["help", "token"],
    ];
    for args in commands {
        let out = toka_node(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(stdout(&out).contains("Usage"), "{args:?}");
    }
}

#[test]
fn init_creates_owner_only_files_and_a_token_that_parses() {
    let (_tmp, data, token) = initialised();
    let data = Path::new(&data);
    assert!(data.join("journal").is_dir());
    assert_eq!(mode(data), 0o700);
    assert_eq!(mode(&data.join("root.key")), 0o600);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    let saved = std::fs::read_to_string(data.join("admin.token")).unwrap();
    assert_eq!(saved.trim(), token);
    let parsed = Capability::parse(&token).unwrap();
    assert!(
        parsed.caveats().unwrap().is_empty(),
        "an admin token has no caveats"
    );

    let out = toka_node(&[
        "token",
        "inspect",
        &token,
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report = json_of(&out);
    assert_eq!(report["identifier"], parsed.identifier());
    assert_eq!(report["signature_valid"], true);
    assert_eq!(report["valid"], true);
}

#[test]
fn init_twice_overwrites_nothing_and_a_half_state_is_an_error() {
    let (_tmp, data, _token) = initialised();
    let dir = Path::new(&data);
    let key = std::fs::read(dir.join("root.key")).unwrap();
    let token = std::fs::read(dir.join("admin.token")).unwrap();

    let out = toka_node(&["init", "--data-dir", &data]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "", "the token is printed once only");
    assert!(stderr(&out).contains("already initialised"), "{out:?}");
    let out = toka_node(&["init", "--data-dir", &data, "--json"]);
    assert_eq!(json_of(&out)["created"], false);
    assert!(json_of(&out).get("token").is_none());
    assert_eq!(std::fs::read(dir.join("root.key")).unwrap(), key);
    assert_eq!(std::fs::read(dir.join("admin.token")).unwrap(), token);

    std::fs::remove_file(dir.join("admin.token")).unwrap();
    assert_error(&toka_node(&["init", "--data-dir", &data]), "no admin token");
    assert!(!dir.join("admin.token").exists());
    assert_eq!(std::fs::read(dir.join("root.key")).unwrap(), key);
}

#[test]
fn mint_attenuate_inspect_revoke() {
    let (_tmp, data, _admin) = initialised();
    let out = toka_node(&[
        "token",
        "mint",
        "--data-dir",
        &data,
        "--caveat",
        "tool = fs.*",
        "--ttl",
        "1h",
    ]);
    assert!(out.status.success(), "{out:?}");
    let minted = stdout(&out).trim().to_owned();

    let out = toka_node(&["token", "attenuate", &minted, "--caveat", "agent = alice"]);
    assert!(out.status.success(), "{out:?}");
    let narrower = stdout(&out).trim().to_owned();
    assert_ne!(narrower, minted);

    let inspect = |token: &str| {
        let out = toka_node(&["token", "inspect", token, "--data-dir", &data, "--json"]);
        (out.status.code(), json_of(&out))
    };
    let (code, report) = inspect(&narrower);
    assert_eq!(code, Some(0), "{report}");
    let caveats: Vec<&str> = report["caveats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(caveats.len(), 3, "{caveats:?}");
    assert_eq!(caveats[0], "tool = fs.*");
    assert!(caveats[1].starts_with("expires = "), "{caveats:?}");
    assert_eq!(caveats[2], "agent = alice");
    assert_eq!(
        (&report["signature_valid"], &report["revoked"]),
        (&true.into(), &false.into())
    );
    let out = toka_node(&["token", "inspect", &narrower, "--data-dir", &data]);
    let human = stdout(&out);
    assert!(
        human.contains("agent = alice") && human.contains("tool = fs.*"),
        "{human}"
    );
    assert!(
        human.contains("signature   valid") && human.contains("revoked     no"),
        "{human}"
    );

    let id = report["identifier"].as_str().unwrap().to_owned();
    let out = toka_node(&[
        "token",
        "revoke",
        &id,
        "--data-dir",
        &data,
        "--reason",
        "test",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&id));

    for token in [&narrower, &minted] {
        let (code, report) = inspect(token);
        assert_eq!(code, Some(1), "{report}");
        assert_eq!(report["revoked"], true);
        assert_eq!(report["signature_valid"], true);
        assert_eq!(report["valid"], false);
    }
    let out = toka_node(&["token", "inspect", &narrower, "--data-dir", &data]);
    assert!(stdout(&out).contains("revoked     YES"), "{out:?}");
    let out = toka_node(&["token", "revoke", &minted, "--data-dir", &data, "--json"]);
    assert_eq!(json_of(&out)["already_revoked"], true);

    // A forged signature: the same token checked against another data dir's root key.
    let (_other_tmp, other, _) = initialised();
    let out = toka_node(&[
        "token",
        "inspect",
        &narrower,
        "--data-dir",
        &other,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["signature_valid"], false);
}

#[test]
fn bad_caveats_and_ttls_are_clear_errors() {
    let (_tmp, data, admin) = initialised();
    let export = || {
        stdout(&toka_node(&[
            "events",
            "export",
            "--json",
            "--data-dir",
            &data,
        ]))
    };
    // Only init's record of the admin token.
    let before = export();
    assert_eq!(before.lines().count(), 1, "{before}");
    assert!(before.contains("toka.issued"), "{before}");
    let mint = |extra: &[&str]| {
        let mut args = vec!["token", "mint", "--data-dir", data.as_str()];
        args.extend_from_slice(extra);
        toka_node(&args)
    };
    assert_error(
        &mint(&["--caveat", "colour = blue"]),
        "unknown caveat \"colour\"",
    );
    assert_error(&mint(&["--caveat", "tool=fs.read"]), "bad --caveat");
    assert_error(&mint(&["--caveat", "expires = tomorrow"]), "RFC 3339");
    assert_error(&mint(&["--ttl", "soon"]), "bad --ttl");
    assert_error(
        &toka_node(&[
            "token",
            "attenuate",
            &admin,
            "--caveat",
            "path-prefix = rel",
        ]),
        "bad --caveat",
    );
    // Nothing was minted or journaled by the failures.
    assert_eq!(export(), before);
}

#[test]
fn garbage_tokens_and_missing_data_dirs_are_errors_not_panics() {
    let long = "A".repeat(100_000);
    for garbage in ["garbage!", "", "AAAA", "AgIk", long.as_str()] {
        let inspect: &[&str] = &["token", "inspect", garbage];
        let attenuate: &[&str] = &["token", "attenuate", garbage, "--caveat", "agent = a"];
        for args in [inspect, attenuate] {
            assert_error(&toka_node(args), "cannot read the token");
        }
    }
    // A well-formed token with a caveat Toka does not understand: decoded, flagged.
    let token = toka_tools::Authority::from_secret(b"0123456789abcdef0123456789abcdef")
        .mint([])
        .unwrap()
        .attenuate_raw(b"colour = blue");
    let out = toka_node(&["token", "inspect", &token.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("not understood"), "{out:?}");

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let missing = missing.to_str().unwrap();
    assert_error(
        &toka_node(&["token", "mint", "--data-dir", missing]),
        "not initialised",
    );
    assert_error(
        &toka_node(&[
            "token",
            "revoke",
            "0190e7a2-5c3b-7d4e-9f00-000000000001",
            "--data-dir",
            missing,
        ]),
        "not initialised",
    );
    assert_error(
        &toka_node(&[
            "token",
            "inspect",
            &token.to_string(),
            "--data-dir",
            missing,
        ]),
        "not initialised",
    );
    assert_error(
        &toka_node(&["agents", "tree", "--data-dir", missing]),
        "no journal at",
    );
    assert_error(
        &toka_node(&["events", "export", "--data-dir", missing]),
        "no journal at",
    );
    assert!(!Path::new(missing).exists(), "nothing was created");
}

struct Leaf;

impl Agent for Leaf {
    const KIND: &'static str = "leaf";
    type Args = ();
    type Msg = ();
    type Reply = ();
    type State = ();

    fn init(&self, _: &()) -> Result<(), AgentError> {
        Ok(())
    }

    async fn handle(&self, _: &mut Context<'_, Self>, _: &mut (), _: ()) -> Result<(), AgentError> {
        Ok(())
    }
}

#[test]
fn agents_tree_replays_the_recorded_tree() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let journal: Arc<dyn Journal> = Arc::new(
            SledJournal::open(dir.path().join("journal"), JournalConfig::default()).unwrap(),
        );
        let rt = Runtime::builder(journal)
            .register(Leaf)
            .start()
            .await
            .unwrap();
        let spec = |id: &str| SpawnSpec::new(id).unwrap();
        let id = |id: &str| AgentId::new(id).unwrap();
        rt.spawn::<Leaf>(spec("root"), ()).await.unwrap();
        rt.spawn_under::<Leaf>(Some(&id("root")), spec("a"), ())
            .await
            .unwrap();
        rt.spawn_under::<Leaf>(Some(&id("a")), spec("a1"), ())
            .await
            .unwrap();
        rt.spawn_under::<Leaf>(Some(&id("root")), spec("b"), ())
            .await
            .unwrap();
        rt.spawn::<Leaf>(spec("gone"), ()).await.unwrap();
        rt.spawn_under::<Leaf>(Some(&id("gone")), spec("gone.child"), ())
            .await
            .unwrap();
        rt.stop(&id("gone")).await.unwrap();
        rt.shutdown().await.unwrap();
    });
    drop(runtime);

    let path = dir.path().to_str().unwrap();
    let out = toka_node(&["agents", "tree", "--data-dir", path, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let agents: Vec<(String, String, Option<String>)> = json_of(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["kind"].as_str().unwrap().to_owned(),
                a["parent"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let expected = [
        ("root", None),
        ("a", Some("root")),
        ("a1", Some("a")),
        ("b", Some("root")),
    ]
    .map(|(id, parent)| (id.to_owned(), "leaf".to_owned(), parent.map(str::to_owned)));
    assert_eq!(agents, expected);

    let out = toka_node(&["agents", "tree", "--data-dir", path]);
    assert_eq!(
        stdout(&out),
        "root (leaf)\n  a (leaf)\n    a1 (leaf)\n  b (leaf)\n"
    );
}

#[test]
fn events_export_emits_one_json_line_per_event() {
    use base64::Engine;
    let dir = populated_data_dir();
    let out = toka_node(&[
        "events",
        "export",
        "--json",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["position"], i as u64 + 1);
        assert_eq!(line["stream"], if i % 2 == 0 { "a" } else { "b" });
        assert_eq!(line["seq"], i as u64 / 2 + 1);
        assert_eq!(line["kind"], "test.event");
        assert!(line["id"].is_string() && line["timestamp"].is_string());
        let payload = base64::engine::general_purpose::STANDARD
            .decode(line["payload_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(payload, format!("payload-{i}").into_bytes());
    }
}

#[test]
fn completions_are_generated_per_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = toka_node(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(stdout(&out).contains("toka-node"), "{shell}");
    }
    assert_eq!(toka_node(&["completions", "nope"]).status.code(), Some(2));
}

/// Long offline work draws a progress bar only on a terminal: with stderr piped (as
/// here) `events list|export|verify` and `agents tree` print nothing on stderr, even over
/// more events than a bar update covers.
#[test]
fn piped_offline_commands_draw_no_progress_bar() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let journal =
            SledJournal::open(dir.path().join("journal"), JournalConfig::default()).unwrap();
        for i in 0..1200u32 {
            let event = NewEvent::new("test.event", format!("payload-{i}").into_bytes());
            journal
                .append("s", ExpectedVersion::Any, &[event])
                .await
                .unwrap()
                .unwrap();
        }
        journal.flush().await.unwrap();
    });
    let data = dir.path().to_str().unwrap();
    for args in [
        &["events", "list", "--data-dir", data][..],
        &[
            "events",
            "list",
            "--json",
            "--stream",
            "s",
            "--data-dir",
            data,
        ],
        &["events", "export", "--json", "--data-dir", data],
        &["events", "verify", "--data-dir", data],
        &["agents", "tree", "--data-dir", data],
    ] {
        let out = toka_node(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {:?}", stderr(&out));
        let text = stdout(&out);
        assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{args:?}");
    }
    assert_eq!(
        stdout(&toka_node(&[
            "events",
            "export",
            "--json",
            "--data-dir",
            data
        ]))
        .lines()
        .count(),
        1200
    );
}
