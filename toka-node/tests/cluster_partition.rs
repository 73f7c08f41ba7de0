//! A network partition of a cluster: one of three real `toka-node` processes is cut off
//! PostgreSQL and the other nodes with a network namespace, then let back.
//!
//! - `a_partitioned_node_loses_its_shards_and_writes_nothing_with_its_old_epoch`: the test
//!   makes a network namespace and a veth pair (`10.231.N.1` on the host side, `10.231.N.2`
//!   inside), and a TCP forwarder in the test process from `10.231.N.1` to PostgreSQL (which
//!   listens on 127.0.0.1 only). Nodes `n1` and `n2` run in the host namespace on
//!   `10.231.N.1`; `n3` runs inside (`ip netns exec`) on `10.231.N.2`, its journal URL
//!   pointing at the forwarder. Leases last 1.5 s. Clients send `{"add": 1}` to 24 counters
//!   through `n1`/`n2` (one of them only to `n3`'s agents) and straight to `n3`, all along.
//!   Each round (`TOKA_PARTITION_ROUNDS`, default 6) cuts the link: its host side goes
//!   down, and a route through a second veth pair without carrier takes over, so both sides
//!   see silence, not errors. Then:
//!   - odd rounds: within 3 lease periods every shard must be served by `n1` and `n2`
//!     only (their `/health`), `n3`'s at later epochs (the lease table), and every counter
//!     must answer through them; the cut is held 0, 1, 2… lease periods more, then healed;
//!   - even rounds heal as soon as `n1`/`n2` took `n3`'s leases, before `n3`'s connections
//!     give up: what `n3` sent before the cut may still arrive, at a stale epoch, and `n3`
//!     closes its stale shards (flushing them) once it is back. Only the fence stops those
//!     writes: with the lease check removed from the journal, such a round damaged the
//!     shard journals in about one run in three (the new holder's next open finds the
//!     chain rewritten).
//!
//!   After each heal `n3` must say it lost each lease it held, at the epoch it held it
//!   (`lost the lease` in its log: it stopped serving by its own deadline), and the shards
//!   must spread over the three nodes again. At the end every counter holds at least every
//!   acknowledged message and at most those plus the ones in doubt, every shard
//!   journal's hash chain is intact, and its holdings (`cluster_common::history`) come in
//!   strictly increasing epochs, each by a process of the node it names. The times until
//!   the shards moved and until they spread again are printed; `TOKA_PARTITION_LOGS=1`
//!   prints the nodes' logs too.
//!
//! - `a_shard_whose_journal_connection_dies_opens_again`: the server ends a one-node
//!   cluster's shard journal sessions (`pg_terminate_backend`) while the node keeps the
//!   leases; the journals then refuse writes for good, so the node must give the shards up
//!   and open them again, on fresh connections at new epochs (a counter takes messages
//!   again within 3 lease periods, none lost). Needs only PostgreSQL.
//!
//! The partition test needs root and `ip netns` (else it passes doing nothing, unless
//! `TOKA_REQUIRE_NETNS=1`), and `TOKA_TEST_POSTGRES` (see
//! `toka-store/tests/postgres/start.sh`; else it passes doing nothing, unless
//! `TOKA_REQUIRE_POSTGRES=1`).
#![cfg(feature = "postgres")]

mod cluster_common;
mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_common::{
    ClusterNode, Outcome, Schemas, Sent, call, check_counters, free_port, history, init_data_dirs,
    report, retry_503, sep, verify_shards,
};
use common::postgres_url;
use serde_json::{Value, json};
use toka_test_support::rng::{Rng, seed_from_env_or_time};

const SHARDS: u32 = 8;
const COUNTERS: usize = 24;
/// The lease period of every node (`[cluster] lease_ms`).
const LEASE: Duration = Duration::from_millis(1_500);
/// How long after the cut every shard must be served by the host nodes: the lease runs
/// out, the others see it, take it, and recover the shard.
const MOVE_BOUND: Duration = Duration::from_millis(3 * 1_500);
/// The port `n3` listens on inside its (otherwise empty) namespace.
const NS_PORT: u16 = 7070;

/// Runs `ip ARGS`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the host by a veth pair, removed (with the pairs and
/// the route) when dropped, also on a panic.
struct Netns {
    name: String,
    /// The host side of the veth pair (the namespace side is `peer`).
    host_if: String,
    peer: String,
    /// One end of a second veth pair, up, whose other end stays down: what the host sends
    /// to the namespace goes there while the link is cut, and is dropped without an error.
    parked: String,
    /// `N` of the subnet `10.231.N.0/24`.
    subnet: u8,
}

impl Netns {
    /// Makes the namespace; `Err` when this process may not (not root, no `ip netns`).
    fn create() -> Result<Netns, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not running as root".into());
        }
        let pid = std::process::id();
        let name = format!("toka-part-{pid}");
        ip(&["netns", "add", &name])?;
        // A subnet no interface of the host uses yet.
        let used = Command::new("ip")
            .args(["-o", "-4", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let subnet = (0..250u32)
            .map(|i| ((pid + i) % 250 + 1) as u8)
            .find(|n| !used.contains(&format!("10.231.{n}.")))
            .unwrap_or(1);
        let net = Netns {
            name,
            host_if: format!("tkp{pid}h"),
            peer: format!("tkp{pid}n"),
            parked: format!("tkp{pid}p"),
            subnet,
        };
        // From here on, `Drop` cleans up whatever was made.
        let (ns, host_if, peer) = (&net.name, &net.host_if, &net.peer);
        let host_cidr = format!("{}/24", net.host_ip());
        let ns_cidr = format!("{}/24", net.ns_ip());
        let parked_peer = format!("tkp{pid}q");
        let steps: [&[&str]; 9] = [
            &[
                "link", "add", host_if, "type", "veth", "peer", "name", peer, "netns", ns,
            ],
            &["addr", "add", &host_cidr, "dev", host_if],
            &["link", "set", host_if, "up"],
            &["-n", ns, "addr", "add", &ns_cidr, "dev", peer],
            &["-n", ns, "link", "set", peer, "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            // While the host side is down, what the host sends to the namespace goes to a
            // link without carrier and is dropped silently (without this route it would
            // fail at once, or go out by the default route).
            &[
                "link",
                "add",
                &net.parked,
                "type",
                "veth",
                "peer",
                "name",
                &parked_peer,
            ],
            &["link", "set", &net.parked, "up"],
            &[
                "route",
                "add",
                &net.subnet_cidr(),
                "dev",
                &net.parked,
                "metric",
                "4000",
            ],
        ];
        for step in steps {
            ip(step)?;
        }
        Ok(net)
    }

    fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 1)
    }

    fn ns_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 2)
    }

    fn subnet_cidr(&self) -> String {
        format!("10.231.{}.0/24", self.subnet)
    }

    /// Cuts the namespace off: the host side of the pair goes down, so the namespace's
    /// side loses its carrier; neither side gets an answer from the other.
    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]).unwrap();
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair with it.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["link", "del", &self.parked]);
    }
}

/// A TCP forwarder in the test process: every connection to `addr` is joined to one to
/// `target` (PostgreSQL), both closed when either side ends. Shut down when dropped.
struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    fn start(listen: IpAddr, target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind((listen, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stopping, open) = (Arc::clone(&stop), Arc::clone(&streams));
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                else {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let clones = (
                    inbound.try_clone(),
                    outbound.try_clone(),
                    inbound.try_clone(),
                    outbound.try_clone(),
                );
                let (Ok(in2), Ok(out2), Ok(in3), Ok(out3)) = clones else {
                    continue;
                };
                open.lock().unwrap().extend([in3, out3]);
                std::thread::spawn(move || pipe(inbound, outbound));
                std::thread::spawn(move || pipe(out2, in2));
            }
        });
        Forwarder {
            addr,
            stop,
            streams,
        }
    }
}

/// Copies `from` to `to` until either ends, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for stream in self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// `url` (a `postgres://user:password@host:port/db?…` URL) reaching the server at `via`.
fn url_via(url: &str, via: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{via}{tail}", userinfo.unwrap_or_default())
}

/// The server address of a `postgres://…` URL.
fn server_of(url: &str) -> SocketAddr {
    use std::str::FromStr as _;
    let config = postgres::Config::from_str(url).unwrap();
    let host = match &config.get_hosts()[0] {
        postgres::config::Host::Tcp(host) => host.clone(),
        #[allow(unreachable_patterns)]
        other => panic!("TOKA_TEST_POSTGRES must name a TCP host, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let ip: IpAddr = host.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, port)
}

/// The shards each of `nodes` serves (by their `/health`); an unreachable node serves none.
fn served_by(nodes: &[SocketAddr]) -> Vec<Vec<u32>> {
    nodes
        .iter()
        .map(
            |addr| match call(*addr, "GET", "/health", "", &Value::Null) {
                Ok((200, health)) => health["shards"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .map(|s| s as u32)
                    .collect(),
                _ => Vec::new(),
            },
        )
        .collect()
}

/// Waits until every shard is served by exactly one of `nodes`, each serving at least
/// `least`; how long it took.
fn wait_served(nodes: &[SocketAddr], least: usize, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let served = served_by(nodes);
        let mut count: BTreeMap<u32, usize> = BTreeMap::new();
        for shard in served.iter().flatten() {
            *count.entry(*shard).or_insert(0) += 1;
        }
        if count.len() == SHARDS as usize
            && count.values().all(|&n| n == 1)
            && served.iter().all(|s| s.len() >= least)
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!(
                "after {limit:?} the nodes serve {served:?} (shards 0..{SHARDS} wanted once each, at least {least} per node)"
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The live holders of the shards' leases, read from the lease table itself: shard →
/// (holder, epoch).
fn holders(url: &str, base: &str) -> BTreeMap<u32, (String, i64)> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .query(
            &format!(
                "SELECT name, holder, epoch FROM \"{base}_cluster\".toka_leases
                 WHERE holder IS NOT NULL AND expires_at > clock_timestamp()"
            ),
            &[],
        )
        .unwrap()
        .iter()
        .filter_map(|row| {
            let shard = row
                .get::<_, String>(0)
                .strip_prefix("shard/")?
                .parse()
                .ok()?;
            Some((shard, (row.get(1), row.get(2))))
        })
        .collect()
}

/// Where a client sends.
#[derive(Clone, Copy)]
enum Aim {
    /// Any counter, through a random host node.
    AnyViaHosts,
    /// The counters of the shards `n3` held at the start, through a random host node.
    N3AgentsViaHosts,
    /// Any counter, straight to `n3`.
    AnyViaN3,
}

#[test]
fn a_partitioned_node_loses_its_shards_and_writes_nothing_with_its_old_epoch() {
    let Some(url) = postgres_url() else {
        return;
    };
    let rounds: usize = std::env::var("TOKA_PARTITION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = seed_from_env_or_time();
    eprintln!("seed {seed} (TOKA_TEST_SEED to replay)");
    let base = format!("part_{}", std::process::id());
    let _schemas = Schemas {
        url: url.clone(),
        base: base.clone(),
    };
    let net = match Netns::create() {
        Ok(net) => net,
        Err(why) => {
            assert!(
                std::env::var("TOKA_REQUIRE_NETNS").as_deref() != Ok("1"),
                "TOKA_REQUIRE_NETNS=1 but no network namespace could be made: {why}"
            );
            eprintln!("skipped: no network namespace could be made ({why})");
            return;
        }
    };
    let forwarder = Forwarder::start(IpAddr::V4(net.host_ip()), server_of(&url));
    let sep = sep(&url);
    let journal = format!("{url}{sep}schema={base}");
    let ns_journal = url_via(&journal, forwarder.addr);

    // One data directory (one root key), copied to each node; one config for all.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("toka.toml");
    std::fs::write(
        &config,
        format!("[cluster]\nlease_ms = {}\n", LEASE.as_millis()),
    )
    .unwrap();
    let token = init_data_dirs(tmp.path(), &["n1", "n2", "n3"]);
    let first = tmp.path().join("n1");
    let host_addr = || {
        let port = TcpListener::bind((net.host_ip(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        SocketAddr::new(IpAddr::V4(net.host_ip()), port)
    };
    let mut nodes = vec![
        ClusterNode::start("n1", &first, &config, &journal, host_addr(), None),
        ClusterNode::start(
            "n2",
            &tmp.path().join("n2"),
            &config,
            &journal,
            host_addr(),
            None,
        ),
        ClusterNode::start(
            "n3",
            &tmp.path().join("n3"),
            &config,
            &ns_journal,
            SocketAddr::new(IpAddr::V4(net.ns_ip()), NS_PORT),
            Some(&net.name),
        ),
    ];
    let all: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let hosts: Vec<SocketAddr> = all[..2].to_vec();
    let n3 = all[2];
    if let Err(error) = wait_served(&all, 2, Duration::from_secs(30)) {
        panic!(
            "the cluster did not form and spread: {error}\n{}",
            report(&nodes)
        );
    }

    let counters: Vec<String> = (0..COUNTERS).map(|i| format!("c{i}")).collect();
    for (i, id) in counters.iter().enumerate() {
        // A shard still being handed over as the shards spread answers 503 (not applied).
        let (status, body) = retry_503(|| {
            call(
                all[i % all.len()],
                "POST",
                "/agents",
                &token,
                &json!({"id": id, "kind": "counter"}),
            )
            .unwrap()
        });
        assert_eq!(status, 201, "spawning {id}: {body}");
    }
    // The counters whose shards `n3` holds now (their shards come back to it after each
    // heal: placement deals shards over the live nodes sorted by id).
    let shard_of: BTreeMap<String, u32> = {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .query(
                &format!("SELECT id, shard FROM \"{base}_cluster\".toka_agents"),
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, i32>(1) as u32))
            .collect()
    };
    let n3_shards_at_start = served_by(&[n3]).remove(0);
    let n3_counters: Vec<String> = counters
        .iter()
        .filter(|id| n3_shards_at_start.contains(&shard_of[*id]))
        .cloned()
        .collect();
    assert!(
        !n3_counters.is_empty(),
        "no counter lives in n3's shards {n3_shards_at_start:?}: {shard_of:?}"
    );

    // Load.
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<BTreeMap<String, Sent>>> = Arc::default();
    let doubts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let aims = [
        Aim::AnyViaHosts,
        Aim::AnyViaHosts,
        Aim::N3AgentsViaHosts,
        Aim::AnyViaN3,
    ];
    let clients: Vec<_> = aims
        .into_iter()
        .enumerate()
        .map(|(c, aim)| {
            let (stop, sent, doubts, unexpected, token, hosts) = (
                Arc::clone(&stop),
                Arc::clone(&sent),
                Arc::clone(&doubts),
                Arc::clone(&unexpected),
                token.clone(),
                hosts.clone(),
            );
            let targets = match aim {
                Aim::N3AgentsViaHosts => n3_counters.clone(),
                Aim::AnyViaHosts | Aim::AnyViaN3 => counters.clone(),
            };
            std::thread::spawn(move || {
                let mut rng = Rng::splitmix(seed ^ (c as u64 + 1));
                while !stop.load(Ordering::Relaxed) {
                    let id = &targets[rng.below(targets.len() as u64) as usize];
                    let addr = match aim {
                        Aim::AnyViaN3 => n3,
                        _ => hosts[rng.below(hosts.len() as u64) as usize],
                    };
                    let result = call(
                        addr,
                        "POST",
                        &format!("/agents/{id}/messages"),
                        &token,
                        &json!({"add": 1}),
                    );
                    let unreachable = result.is_err();
                    let mut sent = sent.lock().unwrap();
                    match sent.entry(id.clone()).or_default().record(result) {
                        Outcome::Unexpected(status, body) => {
                            unexpected
                                .lock()
                                .unwrap()
                                .push(format!("{id} via {addr}: {status} {body}"));
                        }
                        Outcome::Doubt(why) => *doubts.lock().unwrap().entry(why).or_insert(0) += 1,
                        Outcome::Acked | Outcome::Refused => {}
                    }
                    drop(sent);
                    if unreachable {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    let stop_load = || stop.store(true, Ordering::Relaxed);

    let (mut moves, mut takeovers, mut spreads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(1_000));
        // What n3 holds now, at which epochs.
        let before = holders(&url, &base);
        let held: BTreeMap<u32, i64> = before
            .iter()
            .filter(|(_, (holder, _))| holder == "n3")
            .map(|(shard, (_, epoch))| (*shard, *epoch))
            .collect();
        assert!(
            held.len() >= 2,
            "round {round}: n3 holds {held:?} before the cut\n{}",
            report(&nodes)
        );

        net.cut();
        let cut_at = Instant::now();
        let taken_over = |leases: &BTreeMap<u32, (String, i64)>| {
            held.iter().all(|(shard, epoch)| {
                leases
                    .get(shard)
                    .is_some_and(|(holder, new_epoch)| holder != "n3" && new_epoch > epoch)
            })
        };
        if round % 2 == 0 {
            // Even rounds heal as soon as the host nodes took n3's leases (before they even
            // recovered the shards): n3's connections, silent for less than the 2 s after
            // which they give up, may still deliver what n3 sent before the cut, now at a
            // stale epoch.
            loop {
                if taken_over(&holders(&url, &base)) {
                    break;
                }
                assert!(
                    cut_at.elapsed() < MOVE_BOUND,
                    "round {round}: n3's leases {held:?} were not taken within {MOVE_BOUND:?} of the cut: {:?}\n{}",
                    holders(&url, &base),
                    report(&nodes)
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            takeovers.push(cut_at.elapsed());
        } else {
            match wait_served(&hosts, 1, MOVE_BOUND) {
                Ok(took) => moves.push(took),
                Err(error) => {
                    stop_load();
                    panic!(
                        "round {round}: n3's shards {held:?} did not move to n1 and n2 within {MOVE_BOUND:?} of the cut: {error}\n{}",
                        report(&nodes)
                    );
                }
            }
            // The host nodes hold n3's shards now, each at a later epoch.
            let after = holders(&url, &base);
            assert!(
                taken_over(&after),
                "round {round}: n3 held {held:?}, now the leases are {after:?}"
            );
            // Every counter answers through the host nodes.
            for (i, id) in counters.iter().enumerate() {
                let (status, value) = retry_503(|| {
                    call(
                        hosts[i % 2],
                        "POST",
                        &format!("/agents/{id}/query"),
                        &token,
                        &json!("get"),
                    )
                    .unwrap()
                });
                assert_eq!(status, 200, "round {round}, cut off: {id}: {value}");
            }
            // Hold the cut a little longer each round.
            std::thread::sleep(LEASE * (round / 2) as u32);
        }

        net.heal();
        match wait_served(&all, 2, Duration::from_secs(20)) {
            Ok(took) => spreads.push(took),
            Err(error) => {
                stop_load();
                panic!(
                    "round {round}: the shards did not spread over the 3 nodes within 20 s of healing: {error}\n{}",
                    report(&nodes)
                );
            }
        }
        // n3 stopped every shard it held, at the epoch it held it.
        let said = Instant::now() + Duration::from_secs(10);
        loop {
            let log = nodes[2].log();
            let missing: Vec<(u32, i64)> = held
                .iter()
                .filter(|(shard, epoch)| !lost_lease_logged(&log, **shard, **epoch))
                .map(|(s, e)| (*s, *e))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < said,
                "round {round}: n3 never said it lost the leases {missing:?}\n{}",
                report(&nodes)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "round {round}: n3 held {held:?}; {} after the cut; spread over 3 nodes {:?} after healing",
            match round % 2 {
                0 => format!("leases taken {:?}", takeovers[takeovers.len() - 1]),
                _ => format!("shards served by n1/n2 {:?}", moves[moves.len() - 1]),
            },
            spreads[round]
        );
    }
    stop_load();
    for client in clients {
        client.join().unwrap();
    }
    wait_served(&all, 2, Duration::from_secs(20)).unwrap();

    let stats = |times: &mut Vec<Duration>| {
        times.sort();
        format!(
            "min {:?}, median {:?}, max {:?}",
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        )
    };
    if rounds > 1 {
        eprintln!(
            "over {rounds} partitions (lease {LEASE:?}): n3's shards served by n1/n2 after {}; spread again after healing in {}",
            stats(&mut moves),
            stats(&mut spreads)
        );
    }
    let sent = sent.lock().unwrap().clone();
    let total: u64 = sent.values().map(|s| s.acked).sum();
    eprintln!(
        "{total} messages acknowledged, {} refused, {} in doubt",
        sent.values().map(|s| s.refused).sum::<u64>(),
        sent.values().map(|s| s.doubt).sum::<u64>()
    );
    eprintln!("in doubt: {:#?}", doubts.lock().unwrap());
    let unexpected = unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    assert!(
        total > 100,
        "too few messages acknowledged to mean anything"
    );
    let fenced = nodes[2]
        .log()
        .matches("the journal's lease is lost: it writes nothing more")
        .count();
    eprintln!("n3's journals refused {fenced} transactions at a lost epoch");
    if std::env::var("TOKA_PARTITION_LOGS").as_deref() == Ok("1") {
        eprintln!("{}", report(&nodes));
    }
    check_counters(&all, &token, &counters, &sent, || {
        format!("\n{}", report(&nodes))
    });

    // Stop gracefully, then check every shard journal with the store itself.
    for node in &mut nodes {
        node.sigterm();
    }
    let urls = || (0..SHARDS).map(|shard| format!("{url}{sep}schema={base}_s{shard}"));
    verify_shards(urls());
    // Holdings in increasing epochs, each by a process of the node it names, before any
    // runtime record (no tool runs here: nothing more to attribute).
    history::check_cluster_history(&nodes, urls(), &[]);
    drop(forwarder);
}

/// Whether `log` has the manager's line for stopping `shard` held at `epoch`.
fn lost_lease_logged(log: &str, shard: u32, epoch: i64) -> bool {
    log.lines().any(|line| {
        line.contains("lost the lease")
            && line
                .split_whitespace()
                .any(|w| w == format!("shard={shard}"))
            && line
                .split_whitespace()
                .any(|w| w == format!("epoch={epoch}"))
    })
}

/// A shard's journal whose connection the server ends (as a restart of PostgreSQL, or a
/// cut shorter than the lease, would) while its node keeps the lease: the journal refuses
/// writes from then on, so the node must open the shard again (at a new epoch) rather than
/// answer 503 until it restarts. Needs only PostgreSQL.
#[test]
fn a_shard_whose_journal_connection_dies_opens_again() {
    let Some(url) = postgres_url() else {
        return;
    };
    let base = format!("reop_{}", std::process::id());
    let _schemas = Schemas {
        url: url.clone(),
        base: base.clone(),
    };
    let sep = sep(&url);
    let journal = format!("{url}{sep}schema={base}");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("toka.toml");
    std::fs::write(
        &config,
        format!("[cluster]\nlease_ms = {}\nshards = 2\n", LEASE.as_millis()),
    )
    .unwrap();
    let token = init_data_dirs(tmp.path(), &["n1"]);
    let dir = tmp.path().join("n1");
    let port = free_port();
    let node = ClusterNode::start(
        "n1",
        &dir,
        &config,
        &journal,
        SocketAddr::from(([127, 0, 0, 1], port)),
        None,
    );
    let addr = node.addr;
    let ready_by = Instant::now() + Duration::from_secs(30);
    while served_by(&[addr])[0].len() < 2 {
        assert!(
            Instant::now() < ready_by,
            "no shards served\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let (status, body) = call(
        addr,
        "POST",
        "/agents",
        &token,
        &json!({"id": "c0", "kind": "counter"}),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let send = || {
        call(
            addr,
            "POST",
            "/agents/c0/messages",
            &token,
            &json!({"add": 1}),
        )
        .unwrap()
    };
    assert_eq!(send().0, 202);

    // The server ends the sessions of both shard journals.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let ended: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name IN ($1, $2)",
            &[
                &format!("toka-journal/{base}_s0"),
                &format!("toka-journal/{base}_s1"),
            ],
        )
        .unwrap()
        .get(0);
    assert_eq!(ended, 2, "the shard journals' sessions");

    // Sends fail for a moment (the journal finds its connection gone), then work again.
    let (mut acked, mut doubt) = (1u64, 0u64);
    let started = Instant::now();
    let mut answers = Vec::new();
    loop {
        let (status, body) = send();
        if status == 202 {
            acked += 1;
            if !answers.is_empty() {
                break;
            }
        } else {
            doubt += 1;
            answers.push(format!("{status} {}", body["error"]));
        }
        assert!(
            started.elapsed() < 3 * LEASE,
            "c0 did not refuse, then take, messages within {:?} of its journal's session ending: {answers:?}\n{}",
            started.elapsed(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "c0 took messages again {:?} after its journal's session ended",
        started.elapsed()
    );
    let (status, value) = call(addr, "POST", "/agents/c0/query", &token, &json!("get")).unwrap();
    assert_eq!(status, 200, "{value}");
    let value = value["value"].as_u64().unwrap();
    assert!(
        value >= acked && value <= acked + doubt,
        "c0 holds {value}; {acked} acknowledged, {doubt} refused or in doubt"
    );
}
