//! The bench harness shared by the workspace's bench binaries (`toka-store/benches/journal.rs`,
//! `toka-actors/benches/runtime.rs` and `toka-tools/benches/tools.rs`): a hang watchdog,
//! medians, rate formatting, the tokio runtime the workloads run on, and the journal's
//! log-key layout for raw-sled baselines.

use std::error::Error as StdError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a bench step returns.
pub type BenchResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

/// The run in progress and when it started, for the watchdog.
static CURRENT: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// Tells the watchdog that a new run started.
pub fn progress(label: impl Into<String>) {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((label.into(), Instant::now()));
}

/// Tells the watchdog that no run is in progress (the benchmark is done).
pub fn finished() {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Ends the process (exit code 3) when a run makes no progress for `hang_after` (or
/// `TOKA_BENCH_HANG_SECS`), after `on_hang` printed what was measured: a benchmark should
/// report a hang, not sit in it.
pub fn start_watchdog(
    hang_after: Duration,
    on_hang: impl Fn() + Send + 'static,
) -> BenchResult<()> {
    let hang_after = std::env::var("TOKA_BENCH_HANG_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(hang_after, Duration::from_secs);
    std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let current = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some((label, since)) = current {
                    if since.elapsed() > hang_after {
                        println!(
                            "\nHANG: `{label}` made no progress for {} s (pid {}; `gdb -p` shows \
                             where); giving up",
                            since.elapsed().as_secs(),
                            std::process::id()
                        );
                        on_hang();
                        std::process::exit(3);
                    }
                }
            }
        })?;
    Ok(())
}

/// The median of `samples` (NaN for none).
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// A rate as `1.23M`, `45.6k` or `789`.
pub fn fmt_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// The journal's key of log position `position` (`L` + big-endian position), so raw-sled
/// baselines write the same keys.
pub fn log_key(position: u64) -> [u8; 9] {
    let mut key = [b'L'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// A multi-thread tokio runtime with `workers` workers, every driver enabled.
pub fn tokio_runtime(workers: usize) -> BenchResult<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?)
}

/// Runs `fut` as a task on the runtime's workers (not on the calling thread) and waits.
pub fn on_pool<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = BenchResult<T>> + Send + 'static,
) -> BenchResult<T> {
    rt.block_on(async move { tokio::spawn(fut).await? })
}
