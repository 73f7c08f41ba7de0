//! HTTP load benchmark of the real `toka-node` binary: throughput, latency and the node's
//! CPU per request of its API routes under 64 requests in flight, against the cheapest
//! routes measured in the same run.
//!
//! # What is measured
//! The bench starts `toka-node run` on 127.0.0.1 (any free port) with a fresh temporary
//! data directory and `--durability fsync`, spawns [`Settings::agents`] `counter` agents
//! (`c0`, `c1`, ...) through `POST /agents`, then runs these phases, each in a separate
//! load-generator process (this binary re-executed, see below):
//!
//! | Phase | Request | Expects |
//! |---|---|---|
//! | `health` | `GET /health`, no token: the HTTP floor (hyper + axum + a tiny JSON) | 200 |
//! | `auth` | `GET /tools` with the admin token: the floor of an authenticated route (macaroon verify + caveat check; the node has no tools, so the answer is `[]`) | 200 |
//! | `messages` | `POST /agents/{id}/messages` `{"add":1}`: journaled, durable (`Fsync`) before the 202 | 202 |
//! | `query` | `POST /agents/{id}/query` `"get"`: answered from the counter's state, nothing journaled | 200 |
//! | `ask` | `POST /agents/{id}/ask` `"get"`: the same read as a message (journaled, durable, handled, replied) | 200 |
//!
//! Requests of the agent phases are spread over the agents (connection `i`'s `k`-th request
//! goes to agent `(i + k) % agents`). Each phase opens [`Settings::concurrency`] keep-alive
//! HTTP/1.1 connections (hyper's client, one request in flight on each, on a 2-worker tokio
//! runtime), warms up for [`Settings::warmup`], then measures for [`Settings::measure`]:
//! - requests/s: responses with the expected status completed inside the window;
//! - p50 / p99 latency of those requests (client side: it includes the load generator's
//!   own scheduling delay, since on this 2-core box it shares the cores with the node);
//! - **node CPU µs per request**: `utime + stime` of `/proc/<node pid>/stat` (every thread
//!   of the node, in `sysconf(_SC_CLK_TCK)` ticks) sampled when the window opens and
//!   closes, over the requests completed in it; also node and load-generator CPU as % of
//!   one core, and the node's CPU split by thread name (`/proc/<pid>/task/*/stat`);
//! - the CPU everything else on the machine took in the window (`/proc/stat` less the
//!   node and the load generator): the box is shared, and a round where others took a
//!   core measures less throughput (CPU per request moves less);
//! - journal records per request: growth of `toka_journal_head_position` (from
//!   `GET /metrics`, read after the journal went quiet before and after the phase) over
//!   every request of the phase, warm-up included. For `query` it must be 0, and the
//!   bench says so. Also how much the single journal writer batches: records per group
//!   write (`toka_journal_appends_total` ÷ `toka_journal_group_writes_total`), and how
//!   many records each flush to disk made durable (`toka_journal_appends_total` ÷
//!   `toka_journal_flushes_total`: the journal's committer shares a flush between group
//!   writes).
//!
//! The phases run in [`Settings::rounds`] rounds, alternating their order; the table shows
//! medians over the rounds and ratios against `health` (and `query` ÷ `ask`) from the
//! same run.
//!
//! # Processes
//! The load generator must not run in the node's process, and its CPU must not count as
//! the node's: for each phase the bench re-executes itself
//! ([`toka_test_support::child::self_command`]) with [`LOADGEN_ENV`] holding the phase as
//! JSON. The child reports on stdout ([`toka_test_support::child::emit`]): `START` when
//! the measured window opens, `END` when it closes (the parent samples the node's CPU on
//! each), then `RESULT {json}`. A watchdog kills the node and ends the bench (exit code 3)
//! if a phase makes no progress for a while.
//!
//! # Running
//! ```text
//! cargo bench -p toka-node --bench http_load                  # ~65 s after the build
//! cargo bench -p toka-node --bench http_load -- query ask     # only phases named so
//! TOKA_BENCH_QUICK=1 cargo bench -p toka-node --bench http_load  # 1 short round
//! ```
//! `TOKA_HTTP_BENCH_MEASURE_MS` (default 2500), `TOKA_HTTP_BENCH_WARMUP_MS` (1000),
//! `TOKA_HTTP_BENCH_ROUNDS` (3), `TOKA_HTTP_BENCH_CONCURRENCY` (64) and
//! `TOKA_HTTP_BENCH_AGENTS` (64) change the sizes; `TOKA_HTTP_BENCH_NODE_CONFIG=FILE`
//! starts the node with `--config FILE` (to measure an `[otel]` export, say);
//! `TOKA_HTTP_BENCH_NODE_BIN=FILE` runs that `toka-node` binary instead of the one built
//! with the bench (keep a copy of a build to compare two versions back to back). The
//! output ends with every result as a `key=value` line.
//!
//! # PostgreSQL and a cluster
//! - `TOKA_HTTP_BENCH_JOURNAL=postgres://user:password@host:port/db`: the node keeps its
//!   journal in PostgreSQL (`run --journal URL?schema=hbench_<pid>_<n>`: a schema prefix
//!   of the bench's own, so the URL must not name a `schema`) instead of the sled journal
//!   of its data directory. Every schema of that prefix is dropped when the bench ends
//!   (not when the watchdog kills it).
//! - `TOKA_HTTP_BENCH_CLUSTER=N` (with `TOKA_HTTP_BENCH_JOURNAL`): `N` cluster nodes
//!   (`run --node-id n1..nN`, one data directory made by `toka-node init` and copied to
//!   each, so they share the root key) instead of one standalone node. The bench waits
//!   until every shard (`GET /cluster` tells how many) is served by exactly one node and
//!   each node serves its share (⌊shards/N⌋ or ⌈shards/N⌉, from `GET /health`), spawns
//!   agent `c{i}` through node `i % N`, and the load generator opens connection `i` to
//!   node `i % N` (a request for an agent whose shard another node holds is forwarded
//!   there over HTTP). Node CPU is the sum over the `N` processes (threads grouped by name
//!   over all of them). Journal records per request and records per group write are not
//!   measured in cluster mode (`n/a`): each shard has a journal of its own and a node's
//!   `GET /metrics` shows only its lowest shard's; so is the check that queries journal
//!   nothing.
//!
//! ```text
//! export TOKA_TEST_POSTGRES="$(toka-store/tests/postgres/start.sh)"
//! TOKA_HTTP_BENCH_JOURNAL="$TOKA_TEST_POSTGRES" cargo bench -p toka-node --bench http_load -- messages
//! TOKA_HTTP_BENCH_JOURNAL="$TOKA_TEST_POSTGRES" TOKA_HTTP_BENCH_CLUSTER=3 \
//!     cargo bench -p toka-node --bench http_load -- messages query
//! ```
//!
//! With PostgreSQL the bench also measures the **database's CPU** over each window: the
//! sessions whose `application_name` names the bench's schemas (`toka-journal/<schema>`,
//! the leases' and the catalog's) and the server's background processes (WAL writer,
//! checkpointer, ...; these serve anyone else using the server too), found in
//! `pg_stat_activity` before each phase and read from `/proc` (so only for a server on
//! this machine). It is shown apart and left out of `others`.
//!
//! With either variable set, the output names the set-up, adds the PostgreSQL columns and
//! `bench.journal=…`, `bench.nodes=…`, `http.*.postgres_cpu_*` to the `key=value` lines;
//! without them it is as before.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use toka_test_support::bench::{self as support, BenchResult, fmt_rate, median, progress};
use toka_test_support::child::{child_fail, emit, self_command};

/// The `toka-node` binary measured (unless [`NODE_BIN_ENV`] names another).
const BIN: &str = env!("CARGO_BIN_EXE_toka-node");

/// Names another `toka-node` binary to measure instead of [`BIN`] (a copy of an earlier
/// build, to compare two versions back to back on the same machine state).
const NODE_BIN_ENV: &str = "TOKA_HTTP_BENCH_NODE_BIN";

/// The `toka-node` binary to run: [`NODE_BIN_ENV`]'s, or the one built with the bench.
fn node_bin() -> std::ffi::OsString {
    std::env::var_os(NODE_BIN_ENV).unwrap_or_else(|| BIN.into())
}

/// Set in a load generator's environment: its phase, as JSON ([`LoadSpec`]).
const LOADGEN_ENV: &str = "TOKA_HTTP_BENCH_LOADGEN";

/// Worker threads of the load generator's tokio runtime (the box has 2 cores).
const LOADGEN_WORKERS: usize = 2;

/// The phases, in their forward order; the first is the baseline of every ratio.
const PHASES: [Phase; 5] = [
    Phase {
        name: "health",
        label: "GET /health (HTTP floor, no token)",
        method: "GET",
        path: "/health",
        body: "",
        auth: false,
        expect: 200,
    },
    Phase {
        name: "auth",
        label: "GET /tools (authenticated floor)",
        method: "GET",
        path: "/tools",
        body: "",
        auth: true,
        expect: 200,
    },
    Phase {
        name: "messages",
        label: "POST /agents/{id}/messages, Fsync",
        method: "POST",
        path: "/agents/{id}/messages",
        body: r#"{"add":1}"#,
        auth: true,
        expect: 202,
    },
    Phase {
        name: "query",
        label: "POST /agents/{id}/query \"get\"",
        method: "POST",
        path: "/agents/{id}/query",
        body: r#""get""#,
        auth: true,
        expect: 200,
    },
    Phase {
        name: "ask",
        label: "POST /agents/{id}/ask \"get\", Fsync",
        method: "POST",
        path: "/agents/{id}/ask",
        body: r#""get""#,
        auth: true,
        expect: 200,
    },
];

/// The nodes' pids and the running load generator's (0: none), for the watchdog.
static NODE_PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static LOADGEN_PID: AtomicI32 = AtomicI32::new(0);

/// The PostgreSQL URL of the journal (`postgres://…`, no `schema`); sled when unset.
const JOURNAL_ENV: &str = "TOKA_HTTP_BENCH_JOURNAL";

/// The number of cluster nodes (needs [`JOURNAL_ENV`]); one standalone node when unset.
const CLUSTER_ENV: &str = "TOKA_HTTP_BENCH_CLUSTER";

/// One phase: the request every connection repeats.
#[derive(Clone, Copy)]
struct Phase {
    name: &'static str,
    label: &'static str,
    method: &'static str,
    /// `{id}` is replaced by an agent's id.
    path: &'static str,
    body: &'static str,
    /// Sends the admin token.
    auth: bool,
    /// The status of a successful response.
    expect: u16,
}

/// Sizes, durations and the set-up, from the environment.
#[derive(Clone, Debug)]
struct Settings {
    quick: bool,
    /// Untimed load before each measured window.
    warmup: Duration,
    /// The measured window of each phase.
    measure: Duration,
    /// Rounds of every phase.
    rounds: usize,
    /// Connections, each with one request in flight.
    concurrency: usize,
    /// Counter agents the agent phases spread their requests over.
    agents: usize,
    /// The journal in PostgreSQL at this URL (without `schema`); sled when `None`.
    journal: Option<String>,
    /// Cluster nodes (`Some` only with `journal`); one standalone node when `None`.
    cluster: Option<usize>,
}

impl Settings {
    fn from_env() -> BenchResult<Self> {
        let quick = std::env::var("TOKA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let number = |name: &str, default: u64| -> BenchResult<u64> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|e| format!("{name}={v:?}: {e}").into()),
                Err(_) => Ok(default),
            }
        };
        let (warmup, measure, rounds) = if quick {
            (300, 1000, 1)
        } else {
            (1000, 2500, 3)
        };
        let settings = Settings {
            quick,
            warmup: Duration::from_millis(number("TOKA_HTTP_BENCH_WARMUP_MS", warmup)?),
            measure: Duration::from_millis(number("TOKA_HTTP_BENCH_MEASURE_MS", measure)?),
            rounds: usize::try_from(number("TOKA_HTTP_BENCH_ROUNDS", rounds)?)?,
            concurrency: usize::try_from(number("TOKA_HTTP_BENCH_CONCURRENCY", 64)?)?,
            agents: usize::try_from(number("TOKA_HTTP_BENCH_AGENTS", 64)?)?,
            journal: std::env::var(JOURNAL_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty()),
            cluster: match std::env::var(CLUSTER_ENV) {
                Ok(v) if !v.trim().is_empty() => Some(usize::try_from(number(CLUSTER_ENV, 0)?)?),
                _ => None,
            },
        };
        if settings.measure.is_zero()
            || settings.rounds == 0
            || settings.concurrency == 0
            || settings.agents == 0
        {
            return Err("measure, rounds, concurrency and agents must be positive".into());
        }
        if let Some(url) = &settings.journal {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(format!("{JOURNAL_ENV} must be a postgres:// URL").into());
            }
            if url.contains("schema=") {
                return Err(format!(
                    "{JOURNAL_ENV} must not name a schema: the bench uses a prefix of its own and drops it"
                )
                .into());
            }
        }
        match settings.cluster {
            Some(0) => return Err(format!("{CLUSTER_ENV} must be at least 1").into()),
            Some(_) if settings.journal.is_none() => {
                return Err(format!(
                    "{CLUSTER_ENV} needs {JOURNAL_ENV} (a cluster lives in PostgreSQL)"
                )
                .into());
            }
            _ => {}
        }
        Ok(settings)
    }

    /// The set-up in words, for the output (`None`: the default, sled on one node).
    fn setup(&self) -> Option<String> {
        match (&self.journal, self.cluster) {
            (None, _) => None,
            (Some(_), None) => Some("journal in PostgreSQL, one standalone node".to_owned()),
            (Some(_), Some(n)) => Some(format!(
                "journal in PostgreSQL, a cluster of {n} node{}",
                if n == 1 { "" } else { "s" }
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The load generator (the child process)
// ---------------------------------------------------------------------------------------

/// What a load generator does: [`LOADGEN_ENV`]'s JSON.
#[derive(Debug, Serialize, Deserialize)]
struct LoadSpec {
    /// The nodes; connection `i` goes to `addrs[i % len]`.
    addrs: Vec<SocketAddr>,
    token: Option<String>,
    method: String,
    /// The request paths; connection `i`'s `k`-th request uses `paths[(i + k) % len]`.
    paths: Vec<String>,
    body: String,
    expect: u16,
    concurrency: usize,
    warmup_ms: u64,
    measure_ms: u64,
}

/// What a load generator reports: `RESULT` + this as JSON.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LoadResult {
    /// Expected responses completed inside the window.
    ok: u64,
    /// Expected responses in all, warm-up and the end of in-flight requests included.
    ok_total: u64,
    /// Unexpected statuses and transport errors, and the first of them.
    errors: u64,
    first_error: Option<String>,
    /// The window's actual length.
    window_secs: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// The load generator's own CPU (`utime + stime` ticks) over the window.
    cpu_ticks: u64,
}

/// What one connection's task counted.
#[derive(Default)]
struct ConnStats {
    ok: u64,
    ok_total: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

impl ConnStats {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// The child's entry: runs the phase in `spec` and reports; never returns.
fn loadgen_main(spec: &str) -> ! {
    let spec: LoadSpec = match serde_json::from_str(spec) {
        Ok(spec) => spec,
        Err(e) => child_fail(&format!("bad {LOADGEN_ENV}: {e}")),
    };
    let rt = match support::tokio_runtime(LOADGEN_WORKERS) {
        Ok(rt) => rt,
        Err(e) => child_fail(&format!("tokio runtime: {e}")),
    };
    match rt.block_on(loadgen(spec)) {
        Ok(result) => match serde_json::to_string(&result) {
            Ok(json) => emit(&format!("RESULT {json}")),
            Err(e) => child_fail(&format!("encoding the result: {e}")),
        },
        Err(e) => child_fail(&format!("load generator: {e}")),
    }
    std::process::exit(0);
}

async fn loadgen(spec: LoadSpec) -> BenchResult<LoadResult> {
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Bytes;
    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;

    if spec.paths.is_empty() || spec.addrs.is_empty() {
        return Err("no paths or no nodes".into());
    }
    let spec = std::sync::Arc::new(spec);
    // Every connection is open before the clock starts.
    let mut senders = Vec::with_capacity(spec.concurrency);
    for i in 0..spec.concurrency {
        let addr = spec.addrs[i % spec.addrs.len()];
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends with the sender (or when the node closes the connection).
            let _ = connection.await;
        });
        senders.push((addr, sender));
    }
    let start = tokio::time::Instant::now();
    let window_start = start + Duration::from_millis(spec.warmup_ms);
    let window_end = window_start + Duration::from_millis(spec.measure_ms);
    let body = Bytes::from(spec.body.clone().into_bytes());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (addr, mut sender)) in senders.into_iter().enumerate() {
        let spec = std::sync::Arc::clone(&spec);
        let body = body.clone();
        tasks.spawn(async move {
            let mut stats = ConnStats::default();
            let authorization = spec.token.as_ref().map(|t| format!("Bearer {t}"));
            let host = addr.to_string();
            for k in 0usize.. {
                let sent = tokio::time::Instant::now();
                if sent >= window_end {
                    break;
                }
                let path = &spec.paths[(i + k) % spec.paths.len()];
                let mut request = hyper::Request::builder()
                    .method(spec.method.as_str())
                    .uri(path.as_str())
                    .header(hyper::header::HOST, host.as_str());
                if let Some(authorization) = &authorization {
                    request = request.header(hyper::header::AUTHORIZATION, authorization.as_str());
                }
                if !body.is_empty() {
                    request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                }
                let request = match request.body(Full::new(body.clone())) {
                    Ok(request) => request,
                    Err(e) => {
                        stats.error(format!("building the request: {e}"));
                        break;
                    }
                };
                if let Err(e) = sender.ready().await {
                    stats.error(format!("connection {i}: {e}"));
                    break;
                }
                let response = match sender.send_request(request).await {
                    Ok(response) => response,
                    Err(e) => {
                        stats.error(format!("connection {i}: {e}"));
                        break;
                    }
                };
                let status = response.status().as_u16();
                // The body is read whole, so the connection can carry the next request.
                let bytes = match response.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(e) => {
                        stats.error(format!("connection {i}: reading a body: {e}"));
                        break;
                    }
                };
                let done = tokio::time::Instant::now();
                if status != spec.expect {
                    stats.error(format!(
                        "{} {path}: {status} {}",
                        spec.method,
                        String::from_utf8_lossy(&bytes)
                    ));
                    continue;
                }
                stats.ok_total += 1;
                if sent >= window_start && done < window_end {
                    stats.ok += 1;
                    let us = done.duration_since(sent).as_micros();
                    stats
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            stats
        });
    }
    // The window's edges, reported as they pass (the parent samples the node's CPU on
    // each line); requests in flight at its end finish, uncounted.
    tokio::time::sleep_until(window_start).await;
    let cpu_start = cpu_ticks(std::process::id())?;
    let opened = Instant::now();
    emit("START");
    tokio::time::sleep_until(window_end).await;
    let cpu_end = cpu_ticks(std::process::id())?;
    let window_secs = opened.elapsed().as_secs_f64();
    emit("END");
    let mut result = LoadResult {
        window_secs,
        cpu_ticks: cpu_end.saturating_sub(cpu_start),
        ..LoadResult::default()
    };
    let mut latencies = Vec::new();
    while let Some(stats) = tasks.join_next().await {
        let stats = stats?;
        result.ok += stats.ok;
        result.ok_total += stats.ok_total;
        result.errors += stats.errors;
        if result.first_error.is_none() {
            result.first_error = stats.first_error;
        }
        latencies.extend(stats.latencies_us);
    }
    latencies.sort_unstable();
    result.p50_us = nearest_rank(&latencies, 0.50);
    result.p99_us = nearest_rank(&latencies, 0.99);
    result.max_us = latencies.last().copied().map_or(0, u64::from);
    Ok(result)
}

/// The `q` quantile (nearest rank) of sorted `samples` (0 for none).
fn nearest_rank(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    u64::from(sorted[rank - 1])
}

// ---------------------------------------------------------------------------------------
// CPU accounting from /proc
// ---------------------------------------------------------------------------------------

/// `utime + stime` (clock ticks) of a `/proc/.../stat` line; the name in parentheses may
/// hold spaces and parentheses, so fields are counted after the last `)`.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    // After the name: state (3), ..., utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU time (ticks) of process `pid`, every thread, living or exited, included.
fn cpu_ticks(pid: u32) -> BenchResult<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_ticks(&stat)
        .map(|(_, ticks)| ticks)
        .ok_or_else(|| format!("unreadable /proc/{pid}/stat: {stat:?}").into())
}

/// CPU time (ticks) of each living thread of `pid`, by thread id, with its name.
fn thread_ticks(pid: u32) -> BTreeMap<String, (String, u64)> {
    let mut threads = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for entry in dir.flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((name, ticks)) = stat_ticks(&stat) {
            threads.insert(tid, (name, ticks));
        }
    }
    threads
}

/// The nodes' CPU at one moment: in all, and per living thread (`pid/tid`).
struct CpuSample {
    total: u64,
    threads: BTreeMap<String, (String, u64)>,
    /// The whole machine's busy ticks.
    machine_busy: u64,
}

impl CpuSample {
    /// The sum over the processes `pids`.
    fn take(pids: &[u32]) -> BenchResult<Self> {
        let mut sample = CpuSample {
            total: 0,
            threads: BTreeMap::new(),
            machine_busy: machine_busy_ticks()?,
        };
        for &pid in pids {
            sample.total += cpu_ticks(pid)?;
            for (tid, thread) in thread_ticks(pid) {
                sample.threads.insert(format!("{pid}/{tid}"), thread);
            }
        }
        Ok(sample)
    }

    /// Ticks between `self` and `later` by thread name; threads that exited in between
    /// are `(exited threads)`.
    fn by_name(&self, later: &CpuSample) -> BTreeMap<String, u64> {
        let mut names = BTreeMap::new();
        let mut counted = 0;
        for (tid, (name, ticks)) in &later.threads {
            let before = self.threads.get(tid).map_or(0, |(_, t)| *t);
            let delta = ticks.saturating_sub(before);
            counted += delta;
            *names.entry(thread_group(name)).or_insert(0) += delta;
        }
        let exited = later
            .total
            .saturating_sub(self.total)
            .saturating_sub(counted);
        if exited > 0 {
            names.insert("(exited threads)".to_owned(), exited);
        }
        names
    }
}

/// A thread name without its pool index (`sled-io-3` → `sled-io-*`), so pools show as one.
fn thread_group(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((pool, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{pool}-*")
        }
        _ => name.to_owned(),
    }
}

/// Busy ticks of the whole machine, every core (the `cpu` line of `/proc/stat` less idle
/// and iowait): what other processes took from the box during a window.
fn machine_busy_ticks() -> BenchResult<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok(total.saturating_sub(idle))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks_per_sec() -> BenchResult<f64> {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)? {
        Some(hz) if hz > 0 => Ok(hz as f64),
        other => Err(format!("sysconf(_SC_CLK_TCK) = {other:?}").into()),
    }
}

// ---------------------------------------------------------------------------------------
// The node (the parent's side)
// ---------------------------------------------------------------------------------------

/// A config file for the node under load (`--config`); none by default.
const NODE_CONFIG_ENV: &str = "TOKA_HTTP_BENCH_NODE_CONFIG";

/// How to start one `toka-node run`.
struct Launch {
    /// Its data directory (created by `run` if absent).
    data: std::path::PathBuf,
    /// Where its stderr goes.
    log: std::path::PathBuf,
    /// `--journal URL` (with its `schema`), if not sled.
    journal: Option<String>,
    /// `--node-id ID`: a cluster node.
    node_id: Option<String>,
}

/// A running `toka-node run`; killed if still running when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    token: String,
    /// Its stderr.
    log: std::path::PathBuf,
}

impl Node {
    /// Starts `toka-node run` as `launch` says, on 127.0.0.1 (any free port) with `Fsync`
    /// durability, and waits for its `listening on ADDR` line.
    fn start(launch: &Launch) -> BenchResult<Node> {
        let log = std::fs::File::create(&launch.log)?;
        let mut command = Command::new(node_bin());
        command
            .args(["run", "--listen", "127.0.0.1:0", "--durability", "fsync"])
            .arg("--data-dir")
            .arg(&launch.data);
        if let Some(journal) = &launch.journal {
            command.arg("--journal").arg(journal);
        }
        if let Some(id) = &launch.node_id {
            command.args(["--node-id", id]);
        }
        // A config of the caller's (an `[otel]` table, say), to measure what it costs.
        if let Some(config) = std::env::var_os(NODE_CONFIG_ENV) {
            command.arg("--config").arg(config);
        }
        let child = command
            .env_remove("TOKA_LISTEN")
            .env_remove("TOKA_CONFIG")
            .env_remove("TOKA_DURABILITY")
            .env_remove("TOKA_DATA_DIR")
            .env_remove("TOKA_KEY_FILE")
            .env_remove("TOKA_JOURNAL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        // From here on, an early return drops (kills) the node.
        let mut node = Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: String::new(),
            log: launch.log.clone(),
        };
        lock_pids().push(i32::try_from(node.pid())?);
        let stdout = node.child.stdout.take().ok_or("no stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        node.addr = loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                let log = std::fs::read_to_string(&launch.log).unwrap_or_default();
                return Err(format!("toka-node run exited before listening:\n{log}").into());
            }
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                break addr.parse()?;
            }
        };
        // Drained so the node never blocks on a full pipe.
        std::thread::Builder::new()
            .name("node-stdout".into())
            .spawn(move || {
                let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            })?;
        node.token = std::fs::read_to_string(launch.data.join("admin.token"))?
            .trim()
            .to_owned();
        Ok(node)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One request (`Connection: close`): the status and the body.
    fn call(&self, method: &str, path: &str, body: &str) -> BenchResult<(u16, String)> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{method} {path}: no HTTP response: {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        Ok((status, body))
    }

    /// A `GET` answering 200 with JSON: the JSON.
    fn get_json(&self, path: &str) -> BenchResult<serde_json::Value> {
        let (status, body) = self.call("GET", path, "")?;
        if status != 200 {
            return Err(format!("GET {path} on {}: {status} {body}", self.addr).into());
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The journal counters of `GET /metrics`.
    fn journal_metrics(&self) -> BenchResult<JournalMetrics> {
        let (status, text) = self.call("GET", "/metrics", "")?;
        if status != 200 {
            return Err(format!("GET /metrics: {status} {text}").into());
        }
        let value = |name: &str| -> BenchResult<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no {name} in /metrics").into())
        };
        Ok(JournalMetrics {
            head: value("toka_journal_head_position")?,
            appends: value("toka_journal_appends_total")?,
            group_writes: value("toka_journal_group_writes_total")?,
            flushes: value("toka_journal_flushes_total")?,
        })
    }

    /// The journal counters once the head stopped moving for 300 ms (background progress
    /// records and snapshots of the previous phase written), waiting at most 10 s.
    fn quiet_journal(&self) -> BenchResult<JournalMetrics> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.journal_metrics()?;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let next = self.journal_metrics()?;
            if next.head == last.head || Instant::now() > deadline {
                return Ok(next);
            }
            last = next;
        }
    }

    /// Sends SIGTERM (a graceful stop begins).
    fn terminate(&self) -> BenchResult<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }

    /// Waits (15 s at most) for the exit [`Node::terminate`] began; the exit status.
    fn wait_exit(mut self) -> BenchResult<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("toka-node did not exit within 15 s of SIGTERM (killed)".into())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            lock_pids().retain(|p| *p != pid);
        }
    }
}

/// [`NODE_PIDS`], even if a thread panicked holding it.
fn lock_pids() -> std::sync::MutexGuard<'static, Vec<i32>> {
    NODE_PIDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every schema of the bench's prefix in PostgreSQL, dropped when this is dropped.
struct Schemas {
    url: String,
    prefix: String,
}

impl Schemas {
    /// The schemas of the prefix now.
    fn list(&self, client: &mut postgres::Client) -> BenchResult<Vec<String>> {
        let rows = client.query(
            "SELECT nspname FROM pg_namespace WHERE nspname = $1 OR nspname LIKE $2",
            &[&self.prefix, &format!("{}\\_%", self.prefix)],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn drop_all(&self) -> BenchResult<usize> {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls)?;
        let names = self.list(&mut client)?;
        for name in &names {
            client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))?;
        }
        Ok(names.len())
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        match self.drop_all() {
            Ok(n) => println!("dropped {n} PostgreSQL schemas of prefix {}", self.prefix),
            Err(e) => println!(
                "WARNING: could not drop the schemas of prefix {}: {e}",
                self.prefix
            ),
        }
    }
}

/// The nodes under load: one standalone node or the nodes of a cluster.
struct System {
    /// Dropped (killed) before `schemas`.
    nodes: Vec<Node>,
    /// Whether they form a cluster (no journal metrics then).
    cluster: bool,
    schemas: Option<Schemas>,
}

impl System {
    /// Starts what `settings` asks for, in the temporary directory `dir`.
    fn start(settings: &Settings, dir: &Path) -> BenchResult<System> {
        let schemas = settings.journal.as_ref().map(|url| Schemas {
            url: url.clone(),
            prefix: format!(
                "hbench_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() % 1_000_000)
            ),
        });
        let journal = schemas.as_ref().map(|s| {
            let sep = if s.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}schema={}", s.url, s.prefix)
        });
        let Some(n) = settings.cluster else {
            let node = Node::start(&Launch {
                data: dir.join("data"),
                log: dir.join("node.log"),
                journal,
                node_id: None,
            })?;
            return Ok(System {
                nodes: vec![node],
                cluster: false,
                schemas,
            });
        };
        // One data directory (one root key) copied to every node.
        let first = dir.join("n1");
        let out = Command::new(node_bin())
            .args(["init", "--data-dir"])
            .arg(&first)
            .env_remove("TOKA_DATA_DIR")
            .env_remove("TOKA_JOURNAL")
            .output()?;
        if !out.status.success() {
            return Err(format!("toka-node init: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let mut system = System {
            nodes: Vec::with_capacity(n),
            cluster: true,
            schemas,
        };
        for k in 1..=n {
            let id = format!("n{k}");
            let data = dir.join(&id);
            if k > 1 {
                toka_test_support::fs::copy_dir(&first, &data);
            }
            system.nodes.push(Node::start(&Launch {
                data,
                log: dir.join(format!("{id}.log")),
                journal: journal.clone(),
                node_id: Some(id),
            })?);
        }
        Ok(system)
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Node::pid).collect()
    }

    /// The PostgreSQL server processes working for the nodes: their sessions and the
    /// server's own background processes (WAL writer, checkpointer, ...: these also work
    /// for anyone else using the server). Empty with sled, or when the server runs on
    /// another machine (no such pid here).
    fn db_pids(&self) -> BenchResult<Vec<u32>> {
        let Some(schemas) = &self.schemas else {
            return Ok(Vec::new());
        };
        let mut client = postgres::Client::connect(&schemas.url, postgres::NoTls)?;
        let rows = client.query(
            // The nodes name their sessions after the schema (`toka-journal/<schema>`);
            // other roles' background processes show no backend_type.
            "SELECT pid FROM pg_stat_activity \
             WHERE strpos(application_name, $1) > 0 \
             OR backend_type IS DISTINCT FROM 'client backend'",
            &[&schemas.prefix],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
            .filter(|pid| Path::new(&format!("/proc/{pid}/stat")).exists())
            .collect())
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// In a cluster, waits (60 s at most) until every shard is served by exactly one node
    /// and each node serves its share; the shards each node serves.
    fn wait_placed(&self) -> BenchResult<Vec<Vec<u64>>> {
        let shards = self.nodes[0].get_json("/cluster")?["shards"]
            .as_array()
            .map_or(0, Vec::len);
        if shards == 0 {
            return Err("GET /cluster lists no shards".into());
        }
        let n = self.nodes.len();
        let (low, high) = (shards / n, shards.div_ceil(n));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut served = Vec::with_capacity(n);
            for node in &self.nodes {
                let health = node.get_json("/health")?;
                let mine: Vec<u64> = health["shards"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                    .unwrap_or_default();
                served.push(mine);
            }
            let mut all: Vec<u64> = served.iter().flatten().copied().collect();
            all.sort_unstable();
            let once = all.len() == shards && all.windows(2).all(|w| w[0] != w[1]);
            let fair = served.iter().all(|s| (low..=high).contains(&s.len()));
            if once && fair {
                return Ok(served);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the {shards} shards were not placed within 60 s: {served:?} (logs in {})",
                    self.nodes[0].log.display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The journal counters once quiet (standalone only: a cluster node's `/metrics`
    /// shows only its lowest shard's journal); in a cluster, a pause of the same length.
    fn quiet_journal(&self) -> BenchResult<Option<JournalMetrics>> {
        if self.cluster {
            std::thread::sleep(Duration::from_millis(600));
            return Ok(None);
        }
        self.nodes[0].quiet_journal().map(Some)
    }

    /// SIGTERM to every node, then each one's exit status.
    fn stop(self) -> BenchResult<Vec<std::process::ExitStatus>> {
        let System { nodes, schemas, .. } = self;
        for node in &nodes {
            node.terminate()?;
        }
        let mut statuses = Vec::with_capacity(nodes.len());
        for node in nodes {
            statuses.push(node.wait_exit()?);
        }
        drop(schemas);
        Ok(statuses)
    }
}

/// The journal's counters in `GET /metrics`.
#[derive(Clone, Copy)]
struct JournalMetrics {
    /// `toka_journal_head_position`: the journal's last position.
    head: u64,
    /// `toka_journal_appends_total`: records the journal writer appended.
    appends: u64,
    /// `toka_journal_group_writes_total`: the writer's group writes.
    group_writes: u64,
    /// `toka_journal_flushes_total`: the journal's flushes to disk.
    flushes: u64,
}

/// One phase's measurement in one round.
struct Sample {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// Node CPU per request in the window, µs.
    node_cpu_us: f64,
    /// Node and load-generator CPU over the window, % of one core.
    node_cpu_pct: f64,
    client_cpu_pct: f64,
    /// CPU of everything else on the machine over the window, % of one core.
    other_cpu_pct: f64,
    /// PostgreSQL's CPU for the nodes (see [`System::db_pids`]): µs per request and % of
    /// one core (0 with sled).
    db_cpu_us: f64,
    db_cpu_pct: f64,
    /// Journal growth over the phase (0 when not measured: a cluster), and the requests
    /// of the whole phase.
    head_growth: u64,
    requests_total: u64,
    /// Records appended and group writes of the journal writer, and the journal's
    /// flushes, over the phase (0 when not measured).
    appends: u64,
    group_writes: u64,
    flushes: u64,
    errors: u64,
    /// Node CPU µs per request by thread name.
    threads: BTreeMap<String, f64>,
}

/// Runs `phase` against `system` in a load-generator child; its measurement.
fn run_phase(system: &System, phase: Phase, settings: &Settings, hz: f64) -> BenchResult<Sample> {
    let paths = if phase.path.contains("{id}") {
        (0..settings.agents)
            .map(|i| phase.path.replace("{id}", &agent_name(i)))
            .collect()
    } else {
        vec![phase.path.to_owned()]
    };
    let pids = system.pids();
    let spec = LoadSpec {
        addrs: system.addrs(),
        token: phase.auth.then(|| system.nodes[0].token.clone()),
        method: phase.method.to_owned(),
        paths,
        body: phase.body.to_owned(),
        expect: phase.expect,
        concurrency: settings.concurrency,
        warmup_ms: u64::try_from(settings.warmup.as_millis())?,
        measure_ms: u64::try_from(settings.measure.as_millis())?,
    };
    let journal_before = system.quiet_journal()?;
    let db_pids = system.db_pids()?;
    let mut child = self_command(phase.name)
        .env(LOADGEN_ENV, serde_json::to_string(&spec)?)
        .spawn()?;
    LOADGEN_PID.store(i32::try_from(child.id())?, Ordering::SeqCst);
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut before = None;
    let mut after = None;
    let mut result = None;
    let mut failures = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.as_str() {
            "START" => before = Some((CpuSample::take(&pids)?, sum_ticks(&db_pids))),
            "END" => after = Some((CpuSample::take(&pids)?, sum_ticks(&db_pids))),
            _ => {
                if let Some(json) = line.strip_prefix("RESULT ") {
                    result = Some(serde_json::from_str::<LoadResult>(json)?);
                } else if let Some(error) = line.strip_prefix("ERR ") {
                    failures.push(error.to_owned());
                }
            }
        }
    }
    let status = child.wait()?;
    LOADGEN_PID.store(0, Ordering::SeqCst);
    if !status.success() || !failures.is_empty() {
        return Err(format!(
            "load generator of `{}` failed ({status}): {}",
            phase.name,
            failures.join("; ")
        )
        .into());
    }
    let (Some((before, db_before)), Some((after, db_after)), Some(result)) =
        (before, after, result)
    else {
        return Err(format!("load generator of `{}` reported no result", phase.name).into());
    };
    let db_ticks = db_after.saturating_sub(db_before) as f64;
    let journal_after = system.quiet_journal()?;
    if result.ok == 0 {
        return Err(format!(
            "`{}`: no successful request in the window ({} errors, first: {:?})",
            phase.name, result.errors, result.first_error
        )
        .into());
    }
    let (ok, node_ticks, client_ticks) = (
        result.ok as f64,
        after.total.saturating_sub(before.total) as f64,
        result.cpu_ticks as f64,
    );
    let machine_ticks = after.machine_busy.saturating_sub(before.machine_busy) as f64;
    let other_ticks = (machine_ticks - node_ticks - client_ticks - db_ticks).max(0.0);
    let us_per_tick = 1e6 / hz;
    let threads = before
        .by_name(&after)
        .into_iter()
        .map(|(name, ticks)| (name, ticks as f64 * us_per_tick / ok))
        .collect();
    if let Some(error) = &result.first_error {
        println!(
            "  WARNING `{}`: {} errors, first: {error}",
            phase.name, result.errors
        );
    }
    Ok(Sample {
        rate: ok / result.window_secs,
        p50_us: result.p50_us as f64,
        p99_us: result.p99_us as f64,
        node_cpu_us: node_ticks * us_per_tick / ok,
        node_cpu_pct: 100.0 * node_ticks / hz / result.window_secs,
        client_cpu_pct: 100.0 * client_ticks / hz / result.window_secs,
        other_cpu_pct: 100.0 * other_ticks / hz / result.window_secs,
        db_cpu_us: db_ticks * us_per_tick / ok,
        db_cpu_pct: 100.0 * db_ticks / hz / result.window_secs,
        head_growth: growth(journal_before, journal_after, |m| m.head),
        appends: growth(journal_before, journal_after, |m| m.appends),
        group_writes: growth(journal_before, journal_after, |m| m.group_writes),
        flushes: growth(journal_before, journal_after, |m| m.flushes),
        requests_total: result.ok_total,
        errors: result.errors,
        threads,
    })
}

/// CPU time (ticks) of the processes `pids` that still run.
fn sum_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|pid| cpu_ticks(*pid).ok()).sum()
}

/// How much a journal counter grew (0 when not measured).
fn growth(
    before: Option<JournalMetrics>,
    after: Option<JournalMetrics>,
    counter: fn(&JournalMetrics) -> u64,
) -> u64 {
    match (before, after) {
        (Some(before), Some(after)) => counter(&after).saturating_sub(counter(&before)),
        _ => 0,
    }
}

fn agent_name(i: usize) -> String {
    format!("c{i}")
}

/// Spawns the counters `c0..c{n}` through the API, `c{i}` through node `i % nodes`.
fn spawn_agents(system: &System, n: usize) -> BenchResult<()> {
    for i in 0..n {
        let body = format!(
            r#"{{"id":"{}","kind":"counter","args":{{}}}}"#,
            agent_name(i)
        );
        let node = &system.nodes[i % system.nodes.len()];
        let (status, reply) = node.call("POST", "/agents", &body)?;
        if status != 201 {
            return Err(format!("POST /agents {body}: {status} {reply}").into());
        }
    }
    Ok(())
}

/// A duration in µs or ms, for the table.
fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Medians over the rounds of one phase.
struct Summary {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    node_cpu_us: f64,
    node_cpu_pct: f64,
    client_cpu_pct: f64,
    other_cpu_pct: f64,
    db_cpu_us: f64,
    db_cpu_pct: f64,
    records_per_request: f64,
    /// Records per group write of the journal writer, if it wrote.
    records_per_group: Option<f64>,
    /// Records per flush of the journal, if it flushed.
    records_per_flush: Option<f64>,
    head_growth: u64,
    requests_total: u64,
    errors: u64,
}

impl Summary {
    fn of(samples: &[Sample]) -> Summary {
        let m = |f: fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
        let head_growth = samples.iter().map(|s| s.head_growth).sum::<u64>();
        let requests_total = samples.iter().map(|s| s.requests_total).sum::<u64>();
        let records_per_request = head_growth as f64 / requests_total.max(1) as f64;
        let appends = samples.iter().map(|s| s.appends).sum::<u64>();
        let group_writes = samples.iter().map(|s| s.group_writes).sum::<u64>();
        let flushes = samples.iter().map(|s| s.flushes).sum::<u64>();
        Summary {
            rate: m(|s| s.rate),
            p50_us: m(|s| s.p50_us),
            p99_us: m(|s| s.p99_us),
            node_cpu_us: m(|s| s.node_cpu_us),
            node_cpu_pct: m(|s| s.node_cpu_pct),
            client_cpu_pct: m(|s| s.client_cpu_pct),
            other_cpu_pct: m(|s| s.other_cpu_pct),
            db_cpu_us: m(|s| s.db_cpu_us),
            db_cpu_pct: m(|s| s.db_cpu_pct),
            records_per_request,
            records_per_group: (group_writes > 0).then(|| appends as f64 / group_writes as f64),
            records_per_flush: (flushes > 0 && appends > 0)
                .then(|| appends as f64 / flushes as f64),
            head_growth,
            requests_total,
            errors: samples.iter().map(|s| s.errors).sum(),
        }
    }
}

fn main() -> BenchResult<()> {
    if let Ok(spec) = std::env::var(LOADGEN_ENV) {
        loadgen_main(&spec);
    }
    let settings = Settings::from_env()?;
    // `cargo bench` passes `--bench`; every argument that is not a flag is a filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let phases: Vec<Phase> = PHASES
        .iter()
        .copied()
        .filter(|p| selected(p.name))
        .collect();
    if phases.is_empty() {
        println!(
            "no phase matches {filters:?} (phases: {:?})",
            PHASES.map(|p| p.name)
        );
        return Ok(());
    }
    let hz = clock_ticks_per_sec()?;
    println!(
        "toka-node HTTP load benchmark{}: {} cpus, CLK_TCK {hz}; {} connections x 1 request in \
         flight, {} counter agents, warm-up {} ms + window {} ms per phase, {} round(s); phases: {:?}",
        if settings.quick {
            " (TOKA_BENCH_QUICK)"
        } else {
            ""
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.concurrency,
        settings.agents,
        settings.warmup.as_millis(),
        settings.measure.as_millis(),
        settings.rounds,
        phases.iter().map(|p| p.name).collect::<Vec<_>>(),
    );
    if let Some(setup) = settings.setup() {
        println!("set-up: {setup}");
    }
    let started = Instant::now();
    let phase_secs = (settings.warmup + settings.measure).as_secs();
    support::start_watchdog(Duration::from_secs(60.max(3 * phase_secs + 30)), || {
        let mut pids = vec![LOADGEN_PID.load(Ordering::SeqCst)];
        pids.extend(lock_pids().iter().copied());
        for pid in pids {
            if pid > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    })?;

    progress(if settings.cluster.is_some() {
        "starting the nodes"
    } else {
        "starting the node"
    });
    let dir = tempfile::tempdir()?;
    let system = System::start(&settings, dir.path())?;
    for (k, node) in system.nodes.iter().enumerate() {
        println!(
            "{}node pid {} on {}, data in {}",
            if system.cluster {
                format!("n{} ", k + 1)
            } else {
                String::new()
            },
            node.pid(),
            node.addr,
            dir.path().display()
        );
    }
    if let Some(schemas) = &system.schemas {
        println!("journal in PostgreSQL, schema prefix {}", schemas.prefix);
    }
    if system.cluster {
        progress("waiting until the shards are placed");
        let placing = Instant::now();
        let served = system.wait_placed()?;
        println!(
            "shards placed in {:.1} s: {}",
            placing.elapsed().as_secs_f64(),
            served
                .iter()
                .enumerate()
                .map(|(k, s)| format!("n{} {s:?}", k + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    progress("spawning the agents");
    let spawned = Instant::now();
    spawn_agents(&system, settings.agents)?;
    println!(
        "spawned {} counters in {:.2} s",
        settings.agents,
        spawned.elapsed().as_secs_f64()
    );

    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..settings.rounds {
        let order: Vec<Phase> = if round % 2 == 0 {
            phases.clone()
        } else {
            phases.iter().rev().copied().collect()
        };
        for phase in order {
            progress(format!("round {} {}", round + 1, phase.name));
            let sample = run_phase(&system, phase, &settings, hz)?;
            println!(
                "round {} {:<9} {:>8}/s  p50 {:>8}  p99 {:>8}  node {:>6.1} µs/req ({:>3.0}% cpu)  \
                 loadgen {:>3.0}%  others {:>3.0}%  journal +{} over {} requests, {} group writes, \
                 {} flushes",
                round + 1,
                phase.name,
                fmt_rate(sample.rate),
                fmt_us(sample.p50_us),
                fmt_us(sample.p99_us),
                sample.node_cpu_us,
                sample.node_cpu_pct,
                sample.client_cpu_pct,
                sample.other_cpu_pct,
                sample.head_growth,
                sample.requests_total,
                sample.group_writes,
                sample.flushes,
            );
            if settings.journal.is_some() {
                println!(
                    "        PostgreSQL {:>6.1} µs/req ({:>3.0}% cpu, included in no other figure)",
                    sample.db_cpu_us, sample.db_cpu_pct
                );
            }
            samples.entry(phase.name).or_default().push(sample);
        }
    }
    support::finished();
    let counters = system.nodes[0].call("GET", "/metrics", "")?.1;
    let journal_measured = !system.cluster;
    let statuses = system.stop()?;
    let status = statuses
        .iter()
        .find(|s| !s.success())
        .or(statuses.first())
        .copied()
        .ok_or("no node")?;

    // The table.
    let summaries: Vec<(Phase, Summary)> = phases
        .iter()
        .filter_map(|p| samples.get(p.name).map(|s| (*p, Summary::of(s))))
        .collect();
    let floor = summaries
        .iter()
        .find(|(p, _)| p.name == PHASES[0].name)
        .map(|(_, s)| (s.rate, s.node_cpu_us));
    println!(
        "\n== results: medians of {} round(s); ratios against GET /health in the same run",
        settings.rounds
    );
    let pg = settings.journal.is_some();
    println!(
        "| Phase | Requests/s | p50 | p99 | Node CPU/request |{} CPU % node / loadgen / {}others | Journal records/request | Records/group write | Records/flush | Rate vs /health | CPU/request vs /health |",
        if pg { " PostgreSQL CPU/request |" } else { "" },
        if pg { "PostgreSQL / " } else { "" },
    );
    println!(
        "|---|---|---|---|---|---|---|---|---|---|---|{}",
        if pg { "---|" } else { "" }
    );
    for (phase, s) in &summaries {
        let (rate_ratio, cpu_ratio) = floor.map_or(("—".into(), "—".into()), |(rate, cpu)| {
            (
                format!("{:.2}×", s.rate / rate),
                format!("{:.1}×", s.node_cpu_us / cpu),
            )
        });
        let (records, per_group, per_flush) = if journal_measured {
            (
                format!("{:.2}", s.records_per_request),
                s.records_per_group
                    .map_or("—".into(), |r| format!("{r:.1}")),
                s.records_per_flush
                    .map_or("—".into(), |r| format!("{r:.1}")),
            )
        } else {
            ("n/a".to_owned(), "n/a".to_owned(), "n/a".to_owned())
        };
        let (db_us, db_pct) = if pg {
            (
                format!(" {:.1} µs |", s.db_cpu_us),
                format!("{:.0} / ", s.db_cpu_pct),
            )
        } else {
            (String::new(), String::new())
        };
        println!(
            "| {} | {} | {} | {} | {:.1} µs |{db_us} {:.0} / {:.0} / {db_pct}{:.0} | {records} | {per_group} | {per_flush} | {rate_ratio} | {cpu_ratio} |",
            phase.label,
            fmt_rate(s.rate),
            fmt_us(s.p50_us),
            fmt_us(s.p99_us),
            s.node_cpu_us,
            s.node_cpu_pct,
            s.client_cpu_pct,
            s.other_cpu_pct,
        );
    }
    println!(
        "(CPU %: of one core over the window; `others` is every other process on the machine: \
         a round where it is high ran on a shared box and measured less throughput)"
    );
    if pg {
        println!(
            "(PostgreSQL: CPU of the nodes' database sessions and of the server's background \
             processes, which also serve anyone else using the server; not in `others`)"
        );
    }
    if !journal_measured {
        println!(
            "(cluster: node CPU is the sum over the {} nodes; journal records are n/a: every shard \
             has a journal of its own and a node's /metrics shows only its lowest shard's)",
            settings.cluster.unwrap_or(1)
        );
    }
    let get = |name: &str| {
        summaries
            .iter()
            .find(|(p, _)| p.name == name)
            .map(|(_, s)| s)
    };
    if let Some(query) = get("query").filter(|_| journal_measured) {
        println!(
            "\nquery phases: the journal head grew by {} over {} queries ({})",
            query.head_growth,
            query.requests_total,
            if query.head_growth == 0 {
                "OK: queries journal nothing"
            } else {
                "UNEXPECTED: a query journaled something"
            }
        );
    }
    if let Some(query) = get("query") {
        if let Some(ask) = get("ask") {
            println!(
                "query vs ask (same read): {:.1}× the throughput, {:.2}× the node CPU per read",
                query.rate / ask.rate,
                query.node_cpu_us / ask.node_cpu_us
            );
        }
    }
    println!("\n== node CPU by thread (µs per request, last round; ≥ 1 % of the phase's total)");
    for phase in &phases {
        let Some(last) = samples.get(phase.name).and_then(|s| s.last()) else {
            continue;
        };
        let total: f64 = last.threads.values().sum();
        let mut parts: Vec<(&String, &f64)> = last.threads.iter().collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = parts
            .iter()
            .filter(|(_, us)| **us >= total / 100.0)
            .map(|(name, us)| format!("{name} {us:.1}"))
            .collect();
        println!("{:<9} {}", phase.name, parts.join(", "));
    }
    let api_lines: Vec<&str> = counters
        .lines()
        .filter(|l| l.starts_with("toka_api_") && !l.starts_with('#'))
        .collect();
    println!(
        "\n{}node counters at the end: {}",
        if journal_measured { "" } else { "n1's " },
        api_lines.join(", ")
    );
    println!(
        "{} with SIGTERM: {status}; total {:.1} s",
        if statuses.len() > 1 {
            format!("{} nodes stopped", statuses.len())
        } else {
            "node stopped".to_owned()
        },
        started.elapsed().as_secs_f64()
    );

    println!("\n== results (key=value)");
    for (phase, s) in &summaries {
        let n = phase.name;
        println!("http.{n}.rate={:.0}", s.rate);
        println!("http.{n}.p50_us={:.0}", s.p50_us);
        println!("http.{n}.p99_us={:.0}", s.p99_us);
        println!("http.{n}.node_cpu_us_per_req={:.2}", s.node_cpu_us);
        println!("http.{n}.node_cpu_pct={:.0}", s.node_cpu_pct);
        println!("http.{n}.loadgen_cpu_pct={:.0}", s.client_cpu_pct);
        println!("http.{n}.others_cpu_pct={:.0}", s.other_cpu_pct);
        if pg {
            println!("http.{n}.postgres_cpu_us_per_req={:.2}", s.db_cpu_us);
            println!("http.{n}.postgres_cpu_pct={:.0}", s.db_cpu_pct);
        }
        if journal_measured {
            println!(
                "http.{n}.journal_records_per_req={:.3}",
                s.records_per_request
            );
            if let Some(r) = s.records_per_group {
                println!("http.{n}.journal_records_per_group_write={r:.2}");
            }
            if let Some(r) = s.records_per_flush {
                println!("http.{n}.journal_records_per_flush={r:.2}");
            }
        }
        println!("http.{n}.errors={}", s.errors);
        if let Some((rate, cpu)) = floor {
            println!("http.{n}.rate_vs_health={:.3}", s.rate / rate);
            println!("http.{n}.cpu_vs_health={:.3}", s.node_cpu_us / cpu);
        }
    }
    if let (Some(query), Some(ask)) = (get("query"), get("ask")) {
        println!("http.query_vs_ask.rate={:.2}", query.rate / ask.rate);
        if journal_measured {
            println!("http.query.journal_growth={}", query.head_growth);
        }
    }
    println!("bench.total_secs={:.1}", started.elapsed().as_secs_f64());
    println!("bench.quick={}", settings.quick);
    if settings.journal.is_some() {
        println!("bench.journal=postgres");
        println!("bench.nodes={}", settings.cluster.unwrap_or(1));
        println!("bench.cluster={}", settings.cluster.is_some());
    }
    let errors: u64 = summaries.iter().map(|(_, s)| s.errors).sum();
    if errors > 0 {
        return Err(format!("{errors} requests failed (see the WARNING lines)").into());
    }
    if !status.success() {
        return Err(format!("toka-node exited with {status} after SIGTERM").into());
    }
    if get("query").is_some_and(|q| q.head_growth != 0) {
        return Err("the journal grew during the query phases".into());
    }
    Ok(())
}
