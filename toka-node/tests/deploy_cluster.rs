//! The deployment page's files (README, "Deploying a cluster") must keep working.
//!
//! - `the_compose_file_runs_postgres_and_three_nodes_of_one_cluster`: parses
//!   `examples/cluster/compose.yaml` (Docker is not needed): PostgreSQL with a health
//!   check, an `init` service that copies one data directory to the three nodes' volumes,
//!   and nodes `n1`–`n3` on one journal URL, each with its own id, advertised address,
//!   volume and host port, waiting for the database and `init`; the image's Dockerfile
//!   builds `toka-node`.
//! - `the_local_cluster_script_starts_three_nodes_and_stops_them`: runs
//!   `examples/cluster/local.sh` (the same cluster as plain processes on 127.0.0.1) with
//!   this build's binary and a schema of its own; once it says the cluster is ready,
//!   `GET /cluster` through each node shows three live members and every shard held, and
//!   a counter spawned through one node is reached through the others; SIGTERM stops the
//!   script, which stops the nodes gracefully (their ports close, it exits 0). Needs
//!   `TOKA_TEST_POSTGRES`, curl and jq (else it passes doing nothing, unless
//!   `TOKA_REQUIRE_POSTGRES=1`).
#![cfg(feature = "postgres")]

mod cluster_common;
mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cluster_common::{Schemas, call, eventually, free_port, retry_503, sep};
use common::{BIN, postgres_url};
use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/cluster")
        .join(file)
}

/// `yaml[key]` as a string, or the test fails naming `what`.
fn text<'a>(yaml: &'a Yaml, key: &str, what: &str) -> &'a str {
    yaml[key]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no string {key:?} in {yaml:?}"))
}

/// A service with its YAML merge key (`<<: *node`) applied: yaml-rust2 keeps `<<` as a
/// plain key; the service's own keys win, as in YAML 1.1 and Docker Compose.
fn merged(service: &Yaml) -> Yaml {
    let Some(own) = service.as_hash() else {
        return service.clone();
    };
    let mut out = service["<<"].as_hash().cloned().unwrap_or_default();
    for (key, value) in own {
        if key.as_str() != Some("<<") {
            out.insert(key.clone(), value.clone());
        }
    }
    Yaml::Hash(out)
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .map(|list| {
            list.iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_compose_file_runs_postgres_and_three_nodes_of_one_cluster() {
    let source = std::fs::read_to_string(example("compose.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&source).expect("compose.yaml is not YAML");
    let compose = &docs[0];
    let services = &compose["services"];
    assert!(services.as_hash().is_some(), "no services: {compose:?}");

    let db = &services["db"];
    assert!(text(db, "image", "db").starts_with("postgres:"));
    assert!(
        !db["healthcheck"]["test"].is_badvalue(),
        "db has no health check"
    );
    assert_eq!(text(&db["environment"], "POSTGRES_DB", "db"), "toka");

    let init = &services["init"];
    assert_eq!(
        text(&init["build"], "dockerfile", "init"),
        "examples/cluster/Dockerfile"
    );
    let script = strings(&init["command"]).join(" ");
    assert!(
        script.contains("toka-node init --data-dir /data/n1") && script.contains("cp -a"),
        "init must make one data directory and copy it: {script}"
    );
    let init_volumes = strings(&init["volumes"]);

    let (mut journals, mut ports) = (Vec::new(), Vec::new());
    for id in ["n1", "n2", "n3"] {
        let node = &merged(&services[id]);
        assert!(!node.is_badvalue(), "no service {id}");
        assert_eq!(text(node, "image", id), text(init, "image", "init"));
        let env = &node["environment"];
        assert_eq!(text(env, "TOKA_NODE_ID", id), id);
        assert_eq!(text(env, "TOKA_ADVERTISE", id), format!("http://{id}:7070"));
        assert_eq!(text(env, "TOKA_LISTEN", id), "0.0.0.0:7070");
        let journal = text(env, "TOKA_JOURNAL", id);
        assert!(
            journal.starts_with("postgres://") && journal.contains("@db:5432/"),
            "{id}: {journal}"
        );
        journals.push(journal.to_owned());
        assert_eq!(strings(&node["volumes"]), [format!("{id}:/data")], "{id}");
        assert!(
            init_volumes.contains(&format!("{id}:/data/{id}")),
            "init does not fill {id}'s volume: {init_volumes:?}"
        );
        ports.extend(strings(&node["ports"]));
        let command = strings(&node["command"]);
        assert_eq!(command[..3], ["run", "--data-dir", "/data"], "{id}");
        assert_eq!(
            node["depends_on"]["db"]["condition"].as_str(),
            Some("service_healthy"),
            "{id}"
        );
        assert_eq!(
            node["depends_on"]["init"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{id}"
        );
    }
    journals.dedup();
    assert_eq!(journals.len(), 1, "the nodes must share one journal URL");
    assert_eq!(ports, ["7071:7070", "7072:7070", "7073:7070"]);
    // The node config the nodes read is a valid one: shards and lease in range.
    let config = text(&compose["configs"]["node"], "content", "configs.node");
    assert!(config.contains("[cluster]") && config.contains("lease_ms = 3000"));
    for name in ["pg", "n1", "n2", "n3"] {
        assert!(
            compose["volumes"]
                .as_hash()
                .is_some_and(|v| v.contains_key(&Yaml::String(name.into()))),
            "no volume {name}"
        );
    }

    let dockerfile = std::fs::read_to_string(example("Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked -p toka-node"));
    assert!(dockerfile.contains("ENTRYPOINT [\"toka-node\"]"));
}

/// The running script; stopped (`SIGTERM`, so it stops its nodes) when dropped.
struct Script(Child);

impl Script {
    /// `SIGTERM`, then waits at most 30 s for it to exit.
    fn sigterm(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.0.try_wait().unwrap() {
            return Some(status);
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if self.sigterm().is_none() {
            let _ = self.0.kill();
        }
    }
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

#[test]
fn the_local_cluster_script_starts_three_nodes_and_stops_them() {
    let Some(url) = postgres_url() else {
        return;
    };
    for tool in ["curl", "jq"] {
        if Command::new(tool).arg("--version").output().is_err() {
            assert!(
                std::env::var("TOKA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "local.sh needs {tool}"
            );
            eprintln!("skipped: no {tool}");
            return;
        }
    }
    let base = format!("loc_{}", std::process::id());
    let _schemas = Schemas {
        url: url.clone(),
        base: base.clone(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
        .collect();
    let mut script = Script(
        Command::new(example("local.sh"))
            .env("TOKA_NODE_BIN", BIN)
            .env("TOKA_JOURNAL", format!("{url}{}schema={base}", sep(&url)))
            .env("TOKA_CLUSTER_DIR", tmp.path())
            .env(
                "TOKA_CLUSTER_PORTS",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(script.0.stdout.take().unwrap());
    let mut printed = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("local.sh ended before the cluster was ready: {printed}");
        }
        printed.push_str(&line);
        if line.starts_with("cluster ready: ") {
            break;
        }
    }
    // What it printed of `GET /cluster`: three members, every shard held.
    let shown: Value = serde_json::from_str(printed.lines().next().unwrap()).unwrap();
    assert_eq!(
        shown["members"].as_array().map(Vec::len),
        Some(3),
        "{shown}"
    );

    let token = std::fs::read_to_string(tmp.path().join("n1/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    // Each node's view (refreshed every tick) soon shows the same.
    for addr in &addrs {
        let mut last = Value::Null;
        let whole = eventually(Duration::from_secs(5), || {
            let (status, view) = call(*addr, "GET", "/cluster", &token, &Value::Null).unwrap();
            assert_eq!(status, 200, "{view}");
            let members = view["members"].as_array().cloned().unwrap_or_default();
            let shards = view["shards"].as_array().cloned().unwrap_or_default();
            last = view;
            members.len() == 3
                && members.iter().all(|m| m["alive"] == true)
                && shards.len() == 8
                && shards.iter().all(|s| s["holder"].is_string())
        });
        assert!(whole, "{addr}: {last}");
    }
    // One system: an agent spawned through n1 answers through n2 and n3.
    let (status, body) = call(
        addrs[0],
        "POST",
        "/agents",
        &token,
        &json!({"id": "visits", "kind": "counter"}),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(
        addrs[1],
        "POST",
        "/agents/visits/messages",
        &token,
        &json!({"add": 2}),
    )
    .unwrap();
    assert_eq!(status, 202);
    let (status, value) = retry_503(|| {
        call(
            addrs[2],
            "POST",
            "/agents/visits/query",
            &token,
            &json!("get"),
        )
        .unwrap()
    });
    assert_eq!((status, value["value"].as_i64()), (200, Some(2)), "{value}");

    // SIGTERM: the script stops the nodes gracefully and exits 0.
    let status = script.sigterm().expect("local.sh did not stop within 30 s");
    assert!(status.success(), "local.sh: {status}");
    for addr in &addrs {
        assert!(!listening(*addr), "a node still listens on {addr}");
    }
    let log = std::fs::read_to_string(tmp.path().join("n2.log")).unwrap();
    assert!(log.contains("its shards are handed over"), "{log}");
}
