//! A shard's event stream across a failover: three real `toka-node` cluster nodes over
//! one PostgreSQL database.
//!
//! `an_event_stream_survives_its_shard_moving`: a stream of shard K is opened on node X
//! while node Y holds K; messages go to K's agents; Y is killed (`SIGKILL`); messages keep
//! going once K moved to another node. The stream on X must deliver every position of
//! K's journal once, in order, gap-free, across the move, on the same connection. A
//! stream forwarded to Y would end with Y: this checks that X serves it itself, from a
//! follower of K's journal.
//!
//! Needs `TOKA_TEST_POSTGRES` (see `toka-store/tests/postgres/start.sh`); without it the
//! test passes doing nothing, unless `TOKA_REQUIRE_POSTGRES=1` (CI).
#![cfg(feature = "postgres")]

mod cluster_common;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_common::{
    ClusterNode, Schemas, call, eventually, free_port, init_data_dirs, report, retry_503, sep,
};
use common::postgres_url;
use serde_json::{Value, json};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const SHARDS: u32 = 4;

/// An `/events/stream` response read by a thread as it arrives: the events' positions
/// and bodies, and whether the response ended.
struct Stream {
    events: Arc<Mutex<Vec<(u64, Value)>>>,
    ended: Arc<AtomicBool>,
    status: Arc<Mutex<Option<String>>>,
}

impl Stream {
    fn open(addr: SocketAddr, token: &str, shard: u32) -> Stream {
        let mut tcp = TcpStream::connect(addr).unwrap();
        write!(
            tcp,
            "GET /events/stream?from=1&shard={shard} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let stream = Stream {
            events: Arc::default(),
            ended: Arc::default(),
            status: Arc::default(),
        };
        let (events, ended, status) = (
            Arc::clone(&stream.events),
            Arc::clone(&stream.ended),
            Arc::clone(&stream.status),
        );
        std::thread::spawn(move || {
            let _ = read_sse(tcp, &events, &status);
            ended.store(true, Ordering::SeqCst);
        });
        stream
    }

    fn positions(&self) -> Vec<u64> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| *p)
            .collect()
    }
}

/// Reads a chunked `text/event-stream` response, pushing each `event` event.
fn read_sse(
    tcp: TcpStream,
    events: &Mutex<Vec<(u64, Value)>>,
    status: &Mutex<Option<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(tcp);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    *status.lock().unwrap() = Some(line.trim().to_owned());
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
        {
            chunked = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    assert!(chunked, "an event stream is chunked");
    let mut body = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            return Ok(());
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk[..size]);
        // Whole SSE events end with a blank line.
        while let Some(end) = body.windows(2).position(|w| w == b"\n\n") {
            let text = String::from_utf8_lossy(&body[..end]).into_owned();
            body.drain(..end + 2);
            let (mut kind, mut id, mut data) = ("", None, None);
            for field in text.lines() {
                if let Some(v) = field.strip_prefix("event:") {
                    kind = if v.trim() == "event" {
                        "event"
                    } else {
                        "other"
                    };
                } else if let Some(v) = field.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = field.strip_prefix("data:") {
                    data = serde_json::from_str::<Value>(v.trim()).ok();
                }
            }
            match (kind, id, data) {
                ("event", Some(id), Some(data)) => events.lock().unwrap().push((id, data)),
                ("", _, _) => {} // a keep-alive comment
                other => panic!("unexpected server-sent event {other:?}: {text}"),
            }
        }
    }
}

/// The holder of each shard, from `GET /cluster` on `addr`.
fn holders(addr: SocketAddr, token: &str) -> Vec<Option<String>> {
    let (status, cluster) = call(addr, "GET", "/cluster", token, &Value::Null).unwrap();
    assert_eq!(status, 200, "{cluster}");
    cluster["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["holder"].as_str().map(str::to_owned))
        .collect()
}

/// Sends `{"add": 1}` to `agent` through `addr` until it is accepted (202), retrying
/// while the shard moves; how many tries it took.
fn send(addr: SocketAddr, token: &str, agent: &str, nodes: &[ClusterNode]) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tries = 0;
    loop {
        tries += 1;
        match call(
            addr,
            "POST",
            &format!("/agents/{agent}/messages"),
            token,
            &json!({"add": 1}),
        ) {
            Ok((202, _)) => return tries,
            Ok((status, body)) if status >= 500 => {
                assert!(
                    Instant::now() < deadline,
                    "{status} {body}\n{}",
                    report(nodes)
                );
            }
            Ok((status, body)) => panic!("{status} {body}"),
            Err(error) => assert!(Instant::now() < deadline, "{error}\n{}", report(nodes)),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_event_stream_survives_its_shard_moving() {
    let Some(url) = postgres_url() else {
        return;
    };
    let base = format!("cst_{}", std::process::id());
    let _schemas = Schemas {
        url: url.clone(),
        base: base.clone(),
    };
    let journal = format!("{url}{}schema={base}", sep(&url));
    let tmp = tempfile::tempdir().unwrap();
    let token = init_data_dirs(tmp.path(), &NODES);
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!("durability = \"fsync\"\n[cluster]\nlease_ms = 1500\nshards = {SHARDS}\n"),
    )
    .unwrap();
    let mut nodes: Vec<ClusterNode> = NODES
        .iter()
        .map(|id| {
            ClusterNode::start(
                id,
                &tmp.path().join(id),
                &config,
                &journal,
                SocketAddr::from(([127, 0, 0, 1], free_port())),
                None,
            )
        })
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    // Every shard held, by at least two different nodes.
    let formed = eventually(Duration::from_secs(30), || {
        let held = holders(addrs[0], &token);
        let mut distinct: Vec<&String> = held.iter().flatten().collect();
        distinct.sort();
        distinct.dedup();
        held.iter().all(Option::is_some) && distinct.len() >= 2
    });
    assert!(formed, "the cluster did not form\n{}", report(&nodes));

    // Agents everywhere; those of shard K (held by Y) are found from K's events.
    for i in 0..24 {
        let spawn = json!({"id": format!("c{i:02}"), "kind": "counter"});
        let (status, body) =
            retry_503(|| call(addrs[0], "POST", "/agents", &token, &spawn).unwrap());
        assert_eq!(status, 201, "{body}");
    }
    let held = holders(addrs[0], &token);
    let shard = 0u32;
    let y_id = held[shard as usize].clone().unwrap();
    let y = NODES.iter().position(|id| *id == y_id).unwrap();
    let x = (y + 1) % NODES.len();
    let (status, listed) = call(
        addrs[x],
        "GET",
        &format!("/events?shard={shard}&limit=1000"),
        &token,
        &Value::Null,
    )
    .unwrap();
    assert_eq!(status, 200, "{listed}");
    let mut agents: Vec<String> = (0..24)
        .map(|i| format!("c{i:02}"))
        .filter(|id| {
            // The spawn records (stream `toka/tree`) name the agent in their payload.
            listed.as_array().unwrap().iter().any(|e| {
                e["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("toka.spawn"))
                    && e["payload"]["utf8"]
                        .as_str()
                        .is_some_and(|p| p.contains(id.as_str()))
            })
        })
        .collect();
    agents.truncate(4);
    assert!(!agents.is_empty(), "no agent in shard {shard}: {listed}");

    // The stream, on X; Y holds the shard.
    let stream = Stream::open(addrs[x], &token, shard);
    for round in 0..20 {
        send(addrs[x], &token, &agents[round % agents.len()], &nodes);
    }
    let before_kill = {
        let (_, events) = call(
            addrs[x],
            "GET",
            &format!("/events?shard={shard}&from=1&limit=1000"),
            &token,
            &Value::Null,
        )
        .unwrap();
        events.as_array().unwrap().last().unwrap()["position"]
            .as_u64()
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || stream.positions().len() as u64
            >= before_kill),
        "the stream delivered {:?} of {before_kill} before the kill; status {:?}\n{}",
        stream.positions().len(),
        stream.status.lock().unwrap(),
        report(&nodes)
    );

    // Y dies; the shard moves to a live node; messages keep going to its agents.
    nodes[y].kill_9();
    let live: Vec<SocketAddr> = (0..NODES.len())
        .filter(|&i| i != y)
        .map(|i| addrs[i])
        .collect();
    let moved_at = Instant::now();
    let moved = eventually(Duration::from_secs(20), || {
        holders(addrs[x], &token)[shard as usize]
            .as_ref()
            .is_some_and(|holder| holder != &y_id)
    });
    assert!(
        moved,
        "shard {shard} did not move off {y_id}\n{}",
        report(&nodes)
    );
    let moved_after = moved_at.elapsed();
    for round in 0..20 {
        send(
            live[round % live.len()],
            &token,
            &agents[round % agents.len()],
            &nodes,
        );
    }

    // The shard's whole journal, read directly.
    let shard_url = format!("{url}{}schema={base}_s{shard}", sep(&url));
    let written: Vec<(u64, String)> = std::thread::spawn(move || {
        use toka_store::Journal as _;
        let journal =
            toka_store::PgJournal::follow(&shard_url, toka_store::JournalConfig::default())
                .unwrap();
        journal
            .iter_all(1)
            .map(|e| {
                let e = e.unwrap();
                (e.position, e.id.to_string())
            })
            .collect()
    })
    .join()
    .unwrap();
    let head = written.last().unwrap().0;
    assert!(head > before_kill, "nothing was written after the move");
    let delivered = eventually(Duration::from_secs(10), || {
        stream.positions().last().copied() >= Some(head)
    });
    let events = stream.events.lock().unwrap().clone();
    let positions: Vec<u64> = events.iter().map(|(p, _)| *p).collect();
    assert!(
        delivered,
        "the stream stopped at {:?} of {head} (ended: {}); status {:?}\n{}",
        positions.last(),
        stream.ended.load(Ordering::SeqCst),
        stream.status.lock().unwrap(),
        report(&nodes)
    );
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "every position once, in order, gap-free"
    );
    for ((position, event), (written_at, id)) in events.iter().zip(&written) {
        assert_eq!(
            (position, event["id"].as_str().unwrap()),
            (written_at, id.as_str())
        );
    }
    assert!(
        !stream.ended.load(Ordering::SeqCst),
        "the stream is still open after the move"
    );
    eprintln!(
        "stream on {} of shard {shard}: {head} events, {before_kill} before {y_id} was killed; the shard moved within {moved_after:?}",
        NODES[x]
    );
}
