//! Tool benchmarks: the cost of a tool call through the whole agent path, and of a
//! sandboxed process spawn, each against baselines measured in the same run.
//!
//! # What is measured
//! 1. **`tool-call`**: per-call latency of a pure `echo` tool, called in sequence and
//!    timed call by call (p50 and p99 over every call of every round, in µs):
//!    - `call_tool` from the handler of a durable agent over a [`SledJournal`] in a
//!      temporary directory, with the default `Durability::Fsync` and with
//!      `Durability::Buffered`: JSON encoding, the intent record, the hop to the tool's
//!      actor, the capability check of a token carrying 3 caveats (`tool`, `agent`,
//!      `expires`), the run, the reply, the result record. The latency is taken inside
//!      the handler, around each `call_tool`.
//!    - the same from a transient agent (no journal), for context;
//!    - baselines: `ToolHost::call` from a task (actor hop + check, no journal), the
//!      tool's `Tool::invoke` called directly, `Authority::check` alone, and a raw
//!      ractor request/reply round trip (`ractor::call!`) to a plain actor, the
//!      messaging floor every ratio is taken against (p50 / p50 of `ractor::call!`).
//! 2. **`sandbox-spawn`**: wall time per spawn of `/bin/true` through `Sandbox::run` with
//!    the default `SandboxPolicy` (jail: a temporary directory, `0o777` under a `0o755`
//!    parent, since the child drops to `nobody` when the bench runs as root), against a
//!    bare `std::process::Command::status()` and a bare `tokio::process::Command`
//!    `status()`. The variants are interleaved in rounds (order alternating), each round
//!    running a batch of back-to-back spawns per variant; reported: the median of the
//!    per-round mean µs/spawn per variant, and the median of the per-round ratios sandbox
//!    / bare (target ≤ 1.5× against std), with the Landlock ABI in force. Two context
//!    measurements follow (no target; per-spawn p50s pooled over their rounds):
//!    - *isolated*: 50 ms idle before each spawn (not timed), as an agent calling a tool
//!      now and then spawns; kernel state that back-to-back spawns keep warm (the
//!      cgroup-migration RCU sync) has gone cold;
//!    - *large heap*: 256 MiB of extra resident heap in the host (a node with a warm
//!      journal cache), since a `fork` copies the parent's page tables and the bare
//!      spawns' `posix_spawn` does not.
//!
//! Everything async runs on a multi-thread tokio runtime with 2 workers; drivers are
//! spawned as tasks on it. A watchdog ends the process with exit code 3 (printing what
//! was measured) if one run makes no progress for 120 s (`TOKA_BENCH_HANG_SECS`).
//!
//! # Running
//! ```text
//! cargo bench -p toka-tools --bench tools                    # everything (~10 s)
//! cargo bench -p toka-tools --bench tools -- sandbox-spawn   # only workloads named so
//! TOKA_BENCH_QUICK=1 cargo bench -p toka-tools --bench tools  # smaller sizes (smoke run)
//! ```
//! The output ends with a summary and every result as a `key=value` line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tempfile::TempDir;
use toka_actors::{Agent, AgentError, AgentRef, Context, Runtime, SpawnSpec};
use toka_store::{Durability, JournalConfig, SledJournal};
use toka_tools::{
    Authority, Capability, Caveat, Containment, Request, Sandbox, SandboxPolicy, SideEffect, Tool,
    ToolCalls, ToolContext, ToolError, ToolHost,
};

use toka_test_support::bench as support;
use toka_test_support::bench::{BenchResult, median, on_pool, progress, start_watchdog};

/// Worker threads of the tokio runtime.
const WORKERS: usize = 2;
/// Timeout of every ask (generous: a timeout means a hang, not a slow run).
const ASK_TIMEOUT: Duration = Duration::from_secs(120);
/// A single run taking longer than this is taken for a hang.
const HANG_AFTER: Duration = Duration::from_secs(120);
/// The sandbox's budget: at most this many times a bare spawn.
const SPAWN_RATIO_TARGET: f64 = 1.5;
/// The durable calling agent (named in its token's `agent` caveat).
const CALLER: &str = "tool-caller";
/// The transient calling agent.
const TRANSIENT_CALLER: &str = "tool-caller-transient";
/// The echo tool's name.
const ECHO: &str = "echo";
/// Idle time before each spawn of the isolated-spawn context.
const ISOLATED_GAP_MS: u64 = 50;
/// Extra resident heap of the large-heap context.
const BALLAST_MIB: usize = 256;
/// The program spawned.
const TRUE: &str = "/bin/true";

/// Names accepted as filters.
const WORKLOADS: [&str; 2] = ["tool-call", "sandbox-spawn"];

/// Workload sizes; `TOKA_BENCH_QUICK=1` shrinks them.
#[derive(Clone, Copy)]
struct Scale {
    quick: bool,
    /// Tool calls per variant, in all (split evenly over the rounds).
    calls: usize,
    /// Rounds of tool calls.
    call_rounds: usize,
    /// Untimed calls per variant before the rounds.
    warm_calls: usize,
    /// Rounds of spawns.
    spawn_rounds: usize,
    /// Spawns per variant per round.
    spawns_per_round: usize,
    /// Rounds and spawns per variant per round of the isolated-spawn context.
    isolated_rounds: usize,
    isolated_per_round: usize,
    /// Rounds and spawns per variant per round of the large-heap context.
    ballast_rounds: usize,
    ballast_per_round: usize,
}

impl Scale {
    fn from_env() -> Self {
        let quick = std::env::var("TOKA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Scale {
                quick,
                calls: 300,
                call_rounds: 3,
                warm_calls: 50,
                spawn_rounds: 4,
                spawns_per_round: 20,
                isolated_rounds: 2,
                isolated_per_round: 3,
                ballast_rounds: 2,
                ballast_per_round: 3,
            }
        } else {
            Scale {
                quick,
                calls: 2_000,
                call_rounds: 5,
                warm_calls: 200,
                spawn_rounds: 20,
                spawns_per_round: 25,
                isolated_rounds: 4,
                isolated_per_round: 5,
                ballast_rounds: 3,
                ballast_per_round: 5,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

/// Summary lines and `key=value` results so far (statics so that the watchdog can print
/// them too).
static SUMMARY: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RESULTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn summary_line(line: impl Into<String>) {
    SUMMARY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(line.into());
}

/// Records one result, printed as `key=value` at the end.
fn result(key: impl Into<String>, value: impl std::fmt::Display) {
    RESULTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key.into(), value.to_string()));
}

fn print_summary(total: Duration, quick: bool) {
    println!(
        "\n== summary ({}{WORKERS} tokio workers; total {:.1} s)",
        if quick {
            "QUICK sizes, not the brief's; "
        } else {
            ""
        },
        total.as_secs_f64()
    );
    for line in SUMMARY.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("{line}");
    }
    println!("\n== results (key=value)");
    for (key, value) in RESULTS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("{key}={value}");
    }
    println!("bench.total_secs={:.1}", total.as_secs_f64());
    println!("bench.quick={quick}");
}

/// The `q` quantile (nearest rank) of `samples`.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn micros(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e6
}

/// The load average (the machines are shared; a busy neighbour shows here).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Resident set size of this process, in MiB (a fork's cost grows with it).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

// ---------------------------------------------------------------------------------------
// Harness helpers
// ---------------------------------------------------------------------------------------

/// One variant of an interleaved measurement: a run of `n` operations returning its
/// samples.
type Side<'a> = Box<dyn FnMut(usize) -> BenchResult<Vec<f64>> + 'a>;

/// Runs every side once untimed with `warm` operations (if any), then `reps` rounds
/// running each side once with `n` operations, in forward order on even rounds and
/// backward on odd ones. Returns, per side, the samples of each round.
fn rounds(
    names: &[&str],
    reps: usize,
    warm: usize,
    n: usize,
    sides: &mut [Side<'_>],
) -> BenchResult<Vec<Vec<Vec<f64>>>> {
    if warm > 0 {
        for (name, side) in names.iter().zip(sides.iter_mut()) {
            progress(format!("{name}: warm-up"));
            side(warm)?;
        }
    }
    let mut out = vec![Vec::with_capacity(reps); sides.len()];
    for rep in 0..reps {
        let order: Vec<usize> = if rep % 2 == 0 {
            (0..sides.len()).collect()
        } else {
            (0..sides.len()).rev().collect()
        };
        for i in order {
            progress(format!("{}: round {}", names[i], rep + 1));
            out[i].push(sides[i](n)?);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The echo tool, the calling agent and the raw ractor twin
// ---------------------------------------------------------------------------------------

/// The echo tool's input and output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct EchoIo {
    n: u64,
    text: String,
}

impl EchoIo {
    fn new(n: u64) -> Self {
        EchoIo {
            n,
            text: "hello, tools".into(),
        }
    }
}

/// `echo`: returns its input.
#[derive(Clone)]
struct Echo;

impl Tool for Echo {
    type Input = EchoIo;
    type Output = EchoIo;

    fn name(&self) -> &str {
        ECHO
    }
    fn description(&self) -> &str {
        "Returns its input."
    }
    fn input_schema(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {
                "n": {"type": "integer"}, "text": {"type": "string"}},
               "required": ["n", "text"]})
    }
    fn side_effect(&self) -> SideEffect {
        SideEffect::Pure
    }
    async fn invoke(&self, input: EchoIo, _cx: ToolContext) -> Result<EchoIo, ToolError> {
        Ok(input)
    }
}

/// Told `n`, calls `echo` `n` times in sequence through [`ToolCalls::call_tool`], timing
/// each call, and puts the latencies (µs) in the sink. Its state is its token.
struct Caller {
    sink: Arc<Mutex<Vec<f64>>>,
}

impl Agent for Caller {
    const KIND: &'static str = "bench.tool-caller";
    type Args = Capability;
    type Msg = u32;
    type Reply = u32;
    type State = Capability;

    fn init(&self, token: &Capability) -> Result<Capability, AgentError> {
        Ok(token.clone())
    }

    async fn handle(
        &self,
        ctx: &mut Context<'_, Self>,
        token: &mut Capability,
        n: u32,
    ) -> Result<u32, AgentError> {
        let mut latencies = Vec::with_capacity(n as usize);
        for i in 0..u64::from(n) {
            let input = EchoIo::new(i);
            let start = Instant::now();
            let output: EchoIo = ctx
                .call_tool(ECHO, token, &input)
                .await
                .map_err(AgentError::msg)?;
            latencies.push(micros(start.elapsed()));
            if output != input {
                return Err(AgentError::msg("echo returned something else"));
            }
        }
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(latencies);
        Ok(n)
    }
}

enum RawEchoMsg {
    Echo(u64, RpcReplyPort<u64>),
}

/// A plain ractor actor replying its request.
struct RawEcho;

impl Actor for RawEcho {
    type Msg = RawEchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<RawEchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<RawEchoMsg>,
        msg: RawEchoMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RawEchoMsg::Echo(n, reply) => {
                let _ = reply.send(n);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// 1. tool-call
// ---------------------------------------------------------------------------------------

/// One ask of `n` calls to a calling agent; the latencies it measured.
fn agent_calls(
    rt: &tokio::runtime::Runtime,
    agent: &AgentRef<Caller>,
    sink: &Arc<Mutex<Vec<f64>>>,
    n: usize,
) -> BenchResult<Vec<f64>> {
    let (agent, sink) = (agent.clone(), Arc::clone(sink));
    on_pool(rt, async move {
        let done = agent.ask(u32::try_from(n)?, ASK_TIMEOUT).await?;
        let samples = std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
        if done as usize != n || samples.len() != n {
            return Err(format!(
                "{} answered {done} calls and measured {}, expected {n}",
                agent.id(),
                samples.len()
            )
            .into());
        }
        Ok(samples)
    })
}

/// `n` calls of `ToolHost::call` from a task, as the durable caller.
fn host_calls(
    rt: &tokio::runtime::Runtime,
    host: &ToolHost,
    token: &Capability,
    n: usize,
) -> BenchResult<Vec<f64>> {
    let (host, token) = (host.clone(), token.clone());
    on_pool(rt, async move {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let input = EchoIo::new(i);
            let start = Instant::now();
            let output: EchoIo = host.call(&token, Some(CALLER), ECHO, &input).await?;
            samples.push(micros(start.elapsed()));
            if output != input {
                return Err("echo returned something else".into());
            }
        }
        Ok(samples)
    })
}

/// `n` direct calls of `Echo::invoke`.
fn invoke_calls(rt: &tokio::runtime::Runtime, n: usize) -> BenchResult<Vec<f64>> {
    on_pool(rt, async move {
        let cx = ToolContext::unrestricted(ECHO);
        let mut samples = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let (input, cx) = (EchoIo::new(i), cx.clone());
            let expected = input.n;
            let start = Instant::now();
            let output = Echo.invoke(input, cx).await?;
            samples.push(micros(start.elapsed()));
            if output.n != expected {
                return Err("echo returned something else".into());
            }
        }
        Ok(samples)
    })
}

/// `n` capability checks of the durable caller's token (the host's request, with the
/// clock read each time as the host does).
fn check_calls(
    rt: &tokio::runtime::Runtime,
    authority: &Authority,
    token: &Capability,
    n: usize,
) -> BenchResult<Vec<f64>> {
    let (authority, token) = (authority.clone(), token.clone());
    on_pool(rt, async move {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let grant = authority.check(
                &token,
                &Request {
                    tool: ECHO,
                    agent: Some(CALLER),
                    path: None,
                    bytes: None,
                    now: Timestamp::now(),
                    model: None,
                },
            )?;
            samples.push(micros(start.elapsed()));
            std::hint::black_box(grant);
        }
        Ok(samples)
    })
}

/// `n` `ractor::call!` round trips to a raw actor.
fn ractor_calls(
    rt: &tokio::runtime::Runtime,
    actor: &ActorRef<RawEchoMsg>,
    n: usize,
) -> BenchResult<Vec<f64>> {
    let actor = actor.clone();
    on_pool(rt, async move {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let start = Instant::now();
            let back = ractor::call!(actor, RawEchoMsg::Echo, i).map_err(|e| e.to_string())?;
            samples.push(micros(start.elapsed()));
            if back != i {
                return Err("the raw actor replied something else".into());
            }
        }
        Ok(samples)
    })
}

/// A token for `agent` with 3 caveats: the tool, the agent, an expiry an hour away.
fn token_for(authority: &Authority, agent: &str) -> BenchResult<Capability> {
    let expires = Timestamp::now().checked_add(SignedDuration::from_hours(1))?;
    Ok(authority.mint([
        Caveat::Tool(ECHO.parse()?),
        Caveat::Agent(agent.into()),
        Caveat::Expires(expires),
    ])?)
}

/// A runtime over `journal` with `host` as extension and [`Caller`] registered.
fn start_runtime(
    rt: &tokio::runtime::Runtime,
    journal: Arc<SledJournal>,
    host: &ToolHost,
    sink: &Arc<Mutex<Vec<f64>>>,
) -> BenchResult<Runtime> {
    let (host, sink) = (host.clone(), Arc::clone(sink));
    on_pool(rt, async move {
        Ok(Runtime::builder(journal)
            .extension(host)
            .register(Caller { sink })
            .start()
            .await?)
    })
}

fn spawn_caller(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    spec: SpawnSpec,
    token: &Capability,
) -> BenchResult<AgentRef<Caller>> {
    let token = token.clone();
    rt.block_on(async { Ok(runtime.spawn::<Caller>(spec, token).await?) })
}

fn bench_tool_call(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let per_round = scale.calls / scale.call_rounds;
    println!(
        "\n== tool-call: {} calls of a pure `echo` tool per variant ({} rounds of {per_round}, \
         interleaved, after {} warm-up calls), each timed; token with 3 caveats; load {}",
        per_round * scale.call_rounds,
        scale.call_rounds,
        scale.warm_calls,
        loadavg()
    );
    progress("tool-call: setup");
    let dir = TempDir::new()?;
    let fsync_journal = Arc::new(SledJournal::open(
        dir.path().join("fsync"),
        JournalConfig::default(),
    )?);
    let buffered_journal = Arc::new(SledJournal::open(
        dir.path().join("buffered"),
        JournalConfig::default().durability(Durability::Buffered),
    )?);
    let authority = Authority::open(&dir.path().join("root.key"), fsync_journal.clone())?;
    let token = token_for(&authority, CALLER)?;
    let transient_token = token_for(&authority, TRANSIENT_CALLER)?;
    let builder = ToolHost::builder(authority.clone()).tool(Echo);
    let host = on_pool(rt, async move { Ok(builder.start().await?) })?;
    let sink = Arc::new(Mutex::new(Vec::new()));
    let fsync_runtime = start_runtime(rt, fsync_journal, &host, &sink)?;
    let buffered_runtime = start_runtime(rt, buffered_journal, &host, &sink)?;
    let fsync_agent = spawn_caller(rt, &fsync_runtime, SpawnSpec::new(CALLER)?, &token)?;
    let buffered_agent = spawn_caller(rt, &buffered_runtime, SpawnSpec::new(CALLER)?, &token)?;
    let transient_agent = spawn_caller(
        rt,
        &buffered_runtime,
        SpawnSpec::new(TRANSIENT_CALLER)?.transient(),
        &transient_token,
    )?;
    let (raw, raw_handle) = rt.block_on(Actor::spawn(None, RawEcho, ()))?;

    let names = [
        "call_tool, durable agent, Fsync journal",
        "call_tool, durable agent, Buffered journal",
        "call_tool, transient agent (no journal)",
        "ToolHost::call (actor + check)",
        "Tool::invoke, direct",
        "Authority::check alone",
        "ractor::call! round trip",
    ];
    let keys = [
        "durable_fsync",
        "durable_buffered",
        "transient",
        "host_call",
        "invoke",
        "check",
        "ractor_call",
    ];
    let mut sides: [Side<'_>; 7] = [
        Box::new(|n| agent_calls(rt, &fsync_agent, &sink, n)),
        Box::new(|n| agent_calls(rt, &buffered_agent, &sink, n)),
        Box::new(|n| agent_calls(rt, &transient_agent, &sink, n)),
        Box::new(|n| host_calls(rt, &host, &token, n)),
        Box::new(|n| invoke_calls(rt, n)),
        Box::new(|n| check_calls(rt, &authority, &token, n)),
        Box::new(|n| ractor_calls(rt, &raw, n)),
    ];
    let started = Instant::now();
    let out = rounds(
        &names,
        scale.call_rounds,
        scale.warm_calls,
        per_round,
        &mut sides,
    )?;
    let measured = started.elapsed();
    drop(sides);

    let pooled: Vec<Vec<f64>> = out.iter().map(|r| r.concat()).collect();
    let p50: Vec<f64> = pooled.iter().map(|s| quantile(s, 0.5)).collect();
    let p99: Vec<f64> = pooled.iter().map(|s| quantile(s, 0.99)).collect();
    let floor = p50[names.len() - 1];
    let header = format!(
        "{:<44} {:>10} {:>10} {:>12}",
        "variant", "p50 µs", "p99 µs", "p50/ractor"
    );
    println!("{header}");
    summary_line(format!(
        "tool-call ({} calls per variant, p50/p99 over all calls):",
        per_round * scale.call_rounds
    ));
    summary_line(format!("  {header}"));
    for (i, name) in names.iter().enumerate() {
        let line = format!(
            "{name:<44} {:>10.2} {:>10.2} {:>11.1}x",
            p50[i],
            p99[i],
            p50[i] / floor
        );
        println!("{line}");
        summary_line(format!("  {line}"));
        let key = keys[i];
        result(format!("tool_call.{key}.p50_us"), format!("{:.3}", p50[i]));
        result(format!("tool_call.{key}.p99_us"), format!("{:.3}", p99[i]));
        result(
            format!("tool_call.{key}.p50_ratio_vs_ractor_call"),
            format!("{:.2}", p50[i] / floor),
        );
    }
    for (i, name) in names.iter().enumerate() {
        let per_round: Vec<String> = out[i]
            .iter()
            .map(|r| format!("{:.1}", quantile(r, 0.5)))
            .collect();
        println!("  p50 per round, {name}: [{}]", per_round.join(" "));
    }
    // Where a durable call's time goes, by difference of medians.
    let journal_fsync = p50[0] - p50[2];
    let journal_buffered = p50[1] - p50[2];
    let context = p50[2] - p50[3];
    let host_hop = p50[3] - p50[5] - p50[4];
    let breakdown = format!(
        "  by difference of p50s: journaling (intent + result) {journal_fsync:.1} µs with \
         Fsync, {journal_buffered:.1} µs Buffered; agent context (effect bookkeeping, \
         encoding) {context:.1} µs; host path beyond check + invoke (actor hop, task, JSON) \
         {host_hop:.1} µs; check {:.1} µs",
        p50[5]
    );
    println!("{breakdown}");
    summary_line(breakdown);
    result(
        "tool_call.journal_fsync_share_us",
        format!("{journal_fsync:.1}"),
    );
    result(
        "tool_call.journal_buffered_share_us",
        format!("{journal_buffered:.1}"),
    );
    println!("  measured in {:.1} s", measured.as_secs_f64());

    progress("tool-call: shutdown");
    let shutdown: BenchResult<()> = rt.block_on(async {
        fsync_runtime.shutdown().await?;
        buffered_runtime.shutdown().await?;
        host.shutdown().await;
        raw.stop(None);
        raw_handle.await?;
        Ok(())
    });
    shutdown
}

// ---------------------------------------------------------------------------------------
// 2. sandbox-spawn
// ---------------------------------------------------------------------------------------

/// `n` sandboxed runs of `/bin/true`, each after `gap` idle (not timed); µs per spawn.
fn sandbox_spawns(
    rt: &tokio::runtime::Runtime,
    sandbox: &Arc<Sandbox>,
    n: usize,
    gap: Duration,
) -> BenchResult<Vec<f64>> {
    let sandbox = Arc::clone(sandbox);
    on_pool(rt, async move {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let start = Instant::now();
            let out = sandbox.run(Path::new(TRUE), &[]).await?;
            samples.push(micros(start.elapsed()));
            if out.code != Some(0) {
                return Err(format!("{TRUE} in the sandbox ended with {out:?}").into());
            }
        }
        Ok(samples)
    })
}

/// `n` bare `std::process::Command` runs of `/bin/true` (on this thread), each after
/// `gap` idle; µs per spawn.
fn std_spawns(n: usize, gap: Duration) -> BenchResult<Vec<f64>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let start = Instant::now();
        let status = std::process::Command::new(TRUE).status()?;
        samples.push(micros(start.elapsed()));
        if !status.success() {
            return Err(format!("{TRUE} ended with {status}").into());
        }
    }
    Ok(samples)
}

/// `n` bare `tokio::process::Command` runs of `/bin/true`, each after `gap` idle; µs per
/// spawn.
fn tokio_spawns(rt: &tokio::runtime::Runtime, n: usize, gap: Duration) -> BenchResult<Vec<f64>> {
    on_pool(rt, async move {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let start = Instant::now();
            let status = tokio::process::Command::new(TRUE).status().await?;
            samples.push(micros(start.elapsed()));
            if !status.success() {
                return Err(format!("{TRUE} ended with {status}").into());
            }
        }
        Ok(samples)
    })
}

const SPAWN_NAMES: [&str; 4] = [
    "Sandbox::run (cgroup per run)",
    "std::process::Command::status",
    "tokio::process::Command::status",
    "Sandbox::run (process group only)",
];
const SPAWN_KEYS: [&str; 4] = ["sandbox", "std", "tokio", "sandbox_pgroup"];

/// Sandbox, std and tokio spawns interleaved: `reps` rounds of `n` spawns per variant
/// (after a warm-up round), each spawn after `gap` idle. Per variant, the samples of each
/// round.
fn spawn_rounds(
    rt: &tokio::runtime::Runtime,
    (sandbox, pgroup): (&Arc<Sandbox>, &Arc<Sandbox>),
    label: &str,
    reps: usize,
    n: usize,
    gap: Duration,
) -> BenchResult<Vec<Vec<Vec<f64>>>> {
    let names: Vec<String> = SPAWN_NAMES
        .iter()
        .map(|v| format!("{label}: {v}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut sides: [Side<'_>; 4] = [
        Box::new(|n| sandbox_spawns(rt, sandbox, n, gap)),
        Box::new(|n| std_spawns(n, gap)),
        Box::new(|n| tokio_spawns(rt, n, gap)),
        Box::new(|n| sandbox_spawns(rt, pgroup, n, gap)),
    ];
    rounds(&names, reps, n, n, &mut sides)
}

fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len() as f64
}

/// A memory ballast of `mib` MiB, every page touched (so it is resident).
fn ballast(mib: usize) -> Vec<u8> {
    let mut heap = vec![0u8; mib << 20];
    for byte in heap.iter_mut().step_by(4096) {
        *byte = 1;
    }
    heap
}

fn bench_sandbox_spawn(rt: &tokio::runtime::Runtime, scale: Scale) -> BenchResult<()> {
    let (reps, n) = (scale.spawn_rounds, scale.spawns_per_round);
    println!(
        "\n== sandbox-spawn: {TRUE}, {reps} rounds × {n} back-to-back spawns per variant \
         (interleaved, after a warm-up round); RSS {:.0} MiB; load {}",
        rss_mib(),
        loadavg()
    );
    progress("sandbox-spawn: setup");
    // The child drops to `nobody` when the bench runs as root: it must be able to enter
    // the jail (0o777) and its parent (0o755).
    let parent = TempDir::new()?;
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755))?;
    let jail = parent.path().join("jail");
    std::fs::create_dir(&jail)?;
    std::fs::set_permissions(&jail, std::fs::Permissions::from_mode(0o777))?;
    let sandbox = Arc::new(Sandbox::new(SandboxPolicy::new(&jail))?);
    let pgroup = Arc::new(Sandbox::new(SandboxPolicy {
        containment: Containment::ProcessGroup,
        ..SandboxPolicy::new(&jail)
    })?);
    let both = (&sandbox, &pgroup);
    let abi = sandbox
        .landlock_abi()
        .map_or_else(|| "none".to_owned(), |a| a.to_string());
    let as_root = nix::unistd::geteuid().is_root();
    println!(
        "  Landlock ABI in force: {abi}; running as {}",
        if as_root {
            "root (children drop to nobody)"
        } else {
            "a normal user"
        }
    );

    // The measurement of the target: back-to-back spawns.
    let started = Instant::now();
    let out = spawn_rounds(rt, both, "back-to-back", reps, n, Duration::ZERO)?;
    let measured = started.elapsed();
    let means: Vec<Vec<f64>> = out
        .iter()
        .map(|side| side.iter().map(|r| mean(r)).collect())
        .collect();
    let medians: Vec<f64> = means.iter().map(|m| median(m)).collect();
    let pooled: Vec<Vec<f64>> = out.iter().map(|r| r.concat()).collect();
    for (i, name) in SPAWN_NAMES.iter().enumerate() {
        let shown: Vec<String> = means[i].iter().map(|v| format!("{v:.0}")).collect();
        println!(
            "  {name:<34} median {:>7.1} µs/spawn (per spawn p50 {:.0}, p99 {:.0})  rounds [{}]",
            medians[i],
            quantile(&pooled[i], 0.5),
            quantile(&pooled[i], 0.99),
            shown.join(" ")
        );
    }
    let round_ratios_of = |which: usize, base: usize| -> f64 {
        let ratios: Vec<f64> = means[which]
            .iter()
            .zip(&means[base])
            .map(|(s, b)| s / b)
            .collect();
        median(&ratios)
    };
    let round_ratios = |base: usize| round_ratios_of(0, base);
    let (ratio_std, ratio_tokio) = (round_ratios(1), round_ratios(2));
    let ratio_pgroup = round_ratios_of(3, 1);
    let pgroup_verdict = if ratio_pgroup <= SPAWN_RATIO_TARGET {
        "PASS"
    } else {
        "MISS"
    };
    let (of_medians_std, of_medians_tokio) = (medians[0] / medians[1], medians[0] / medians[2]);
    let verdict = if ratio_std <= SPAWN_RATIO_TARGET {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "  sandbox / std: {ratio_std:.2}x (median of per-round ratios; ratio of medians \
         {of_medians_std:.2}x); sandbox / tokio: {ratio_tokio:.2}x ({of_medians_tokio:.2}x); \
         target <= {SPAWN_RATIO_TARGET}x vs std: {verdict}; measured in {:.1} s",
        measured.as_secs_f64()
    );
    summary_line(format!(
        "sandbox-spawn ({TRUE}, {reps} rounds x {n} back-to-back, median of per-round means; \
         Landlock ABI {abi}; RSS {:.0} MiB):",
        rss_mib()
    ));
    for (i, name) in SPAWN_NAMES.iter().enumerate() {
        summary_line(format!("  {name:<34} {:>8.1} µs/spawn", medians[i]));
        let key = SPAWN_KEYS[i];
        result(
            format!("sandbox_spawn.{key}.median_us"),
            format!("{:.1}", medians[i]),
        );
        result(
            format!("sandbox_spawn.{key}.p99_us"),
            format!("{:.1}", quantile(&pooled[i], 0.99)),
        );
    }
    summary_line(format!(
        "  ratio sandbox/std {ratio_std:.2}x (target <= {SPAWN_RATIO_TARGET}x: {verdict}), \
         sandbox/tokio {ratio_tokio:.2}x (medians of per-round ratios)"
    ));
    summary_line(format!(
        "  ratio sandbox(process group)/std {ratio_pgroup:.2}x (target <= \
         {SPAWN_RATIO_TARGET}x: {pgroup_verdict})"
    ));
    result("sandbox_spawn.ratio_vs_std", format!("{ratio_std:.3}"));
    result(
        "sandbox_spawn.pgroup_ratio_vs_std",
        format!("{ratio_pgroup:.3}"),
    );
    result("sandbox_spawn.ratio_vs_tokio", format!("{ratio_tokio:.3}"));
    result(
        "sandbox_spawn.ratio_of_medians_vs_std",
        format!("{of_medians_std:.3}"),
    );
    result("sandbox_spawn.target_ratio", SPAWN_RATIO_TARGET);
    result("sandbox_spawn.verdict", verdict);
    result("sandbox_spawn.landlock_abi", &abi);
    result("sandbox_spawn.as_root", as_root);
    result("sandbox_spawn.rss_mib", format!("{:.0}", rss_mib()));

    // Context 1: isolated spawns, as an agent calling a tool now and then makes them
    // (kernel state that back-to-back spawns keep warm has gone cold).
    let gap = Duration::from_millis(ISOLATED_GAP_MS);
    let (ireps, in_) = (scale.isolated_rounds, scale.isolated_per_round);
    println!(
        "  context: isolated spawns, {ISOLATED_GAP_MS} ms idle before each (not timed), \
         {ireps} rounds × {in_}"
    );
    let out = spawn_rounds(rt, both, "isolated", ireps, in_, gap)?;
    context_rows(
        &out,
        "isolated",
        &format!("isolated ({ISOLATED_GAP_MS} ms apart)"),
    );

    // Context 2: a host with a large resident heap (a node with a warm journal cache):
    // a fork copies the parent's page tables, a posix_spawn does not.
    let (breps, bn) = (scale.ballast_rounds, scale.ballast_per_round);
    let heap = ballast(BALLAST_MIB);
    println!(
        "  context: {BALLAST_MIB} MiB of extra resident heap in the host (RSS now {:.0} MiB), \
         {breps} rounds × {bn}",
        rss_mib()
    );
    let out = spawn_rounds(rt, both, "large heap", breps, bn, Duration::ZERO)?;
    drop(heap);
    context_rows(&out, "large_heap", &format!("host RSS +{BALLAST_MIB} MiB"));
    Ok(())
}

/// Prints and records a context measurement: per-spawn p50 and p90 (all rounds pooled)
/// and the ratio of the p50s.
fn context_rows(out: &[Vec<Vec<f64>>], key: &str, label: &str) {
    let pooled: Vec<Vec<f64>> = out.iter().map(|r| r.concat()).collect();
    let p50: Vec<f64> = pooled.iter().map(|s| quantile(s, 0.5)).collect();
    for (i, name) in SPAWN_NAMES.iter().enumerate() {
        println!(
            "    {name:<34} per spawn p50 {:>8.0} µs, p90 {:>8.0} µs ({} spawns)",
            p50[i],
            quantile(&pooled[i], 0.9),
            pooled[i].len()
        );
        result(
            format!("sandbox_spawn.{key}.{}.p50_us", SPAWN_KEYS[i]),
            format!("{:.1}", p50[i]),
        );
    }
    let (vs_std, vs_tokio) = (p50[0] / p50[1], p50[0] / p50[2]);
    println!("    sandbox / std {vs_std:.2}x, sandbox / tokio {vs_tokio:.2}x (p50s)");
    let pgroup_vs_std = p50[3] / p50[1];
    summary_line(format!(
        "  context, {label}: sandbox {:.0} µs (process group only {:.0} µs), std {:.0} µs, \
         tokio {:.0} µs per spawn (p50); sandbox/std {vs_std:.2}x, process group/std \
         {pgroup_vs_std:.2}x",
        p50[0], p50[3], p50[1], p50[2]
    ));
    result(
        format!("sandbox_spawn.{key}.ratio_vs_std"),
        format!("{vs_std:.3}"),
    );
}

// ---------------------------------------------------------------------------------------

fn main() -> BenchResult<()> {
    let scale = Scale::from_env();
    // `cargo bench` passes `--bench`; every argument that is not a flag is a filter.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    println!(
        "toka-tools benchmarks{}; {} cpus, {WORKERS} tokio workers; filters: {filters:?}",
        if scale.quick {
            " (TOKA_BENCH_QUICK: smaller sizes, see each section)"
        } else {
            ""
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let started = Instant::now();
    let quick = scale.quick;
    start_watchdog(HANG_AFTER, move || print_summary(started.elapsed(), quick))?;
    let rt = support::tokio_runtime(WORKERS)?;
    if selected(WORKLOADS[0]) {
        bench_tool_call(&rt, scale)?;
    }
    if selected(WORKLOADS[1]) {
        bench_sandbox_spawn(&rt, scale)?;
    }
    support::finished();
    if !WORKLOADS.iter().any(|w| selected(w)) {
        println!("no workload matches {filters:?}");
    }
    print_summary(started.elapsed(), scale.quick);
    Ok(())
}
