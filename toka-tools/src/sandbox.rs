//! A sandbox for the child processes of process-based tools.
//!
//! Each run gets: a wall-clock timeout that kills the whole process group; rlimits on
//! CPU time, address space, open files, processes and file size; an empty environment
//! plus an allow-list; the jail as working directory; no stdin; stdout and stderr
//! capped (the group is killed when a stream passes its cap). When the process runs as
//! root, the child drops to an unprivileged user (`run_as`, default `nobody`), so the
//! process limit counts that user's processes (the kernel exempts root from it) and the
//! host's files keep their permissions. Where the kernel supports **Landlock**, the child
//! can also only read and execute the system directories, read and write the jail, not
//! touch other files, not bind or connect TCP sockets (ABI ≥ 4) and not signal processes
//! outside its domain (ABI ≥ 6). [`Sandbox::new`] logs which Landlock level is in force,
//! and [`Landlock::Require`] refuses to start without it.
//!
//! # Invariants
//! - A child never outlives its run: after it exits, times out or floods its output, its
//!   process group and its cgroup (one per run, which also holds processes that called
//!   `setsid`; see `cgroup.rs`) are killed; `PR_SET_PDEATHSIG` kills it if the host dies
//!   (and a child whose host died before it set that exits before it runs the program).
//! - With a cgroup, `pids.max` bounds each run's processes, whatever its user.
//! - Limits are set in the child between `fork` and `exec`, so they hold from the first
//!   instruction of the program.
//!
//! # Why `unsafe`
//! Setting rlimits, credentials, the parent-death signal, the cgroup and the Landlock
//! domain must happen in the child between `clone` and `execve`. `std` offers that only
//! through `pre_exec`, which forces a full `fork`: its cost grows with the host's resident
//! memory (measured: ~13 ms per run with 256 MiB resident, against ~1 ms for a bare
//! spawn). So runs start through `spawn.rs`, which does what `posix_spawn` does —
//! `clone(CLONE_VM | CLONE_VFORK)`, raw system calls, `execve` — and documents the
//! invariants that make it sound. A launcher binary would avoid the `unsafe` but costs a
//! second `exec` per run and a binary installed beside every embedding application. The
//! remaining `unsafe` here registers the child's pidfd with tokio and probes the Landlock
//! ABI.
//!
//! # Cost (benches/tools.rs, `/bin/true`, 2-core machine)
//! Back-to-back runs: ~0.9× a bare `std::process::Command` with
//! [`Containment::ProcessGroup`], ~1.3× with [`Containment::Cgroup`]; with 256 MiB resident
//! in the host, the same. An isolated run (none in the previous ~50 ms) with
//! `Containment::Cgroup` pays ~11 ms more: joining a cgroup waits for an RCU grace period
//! in the kernel (avoidable with the `favordynmods` mount option).
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use nix::sys::resource::Resource;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::unix::pipe::Receiver;

use crate::cgroup::{CgroupBase, RunCgroup};
use crate::spawn::{Spawn, SpawnOptions, Spawned, pidfd};
use crate::{Error, ToolError, ToolErrorKind};

/// How long output is drained after the program exits (its leftovers are killed first).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Whether the sandbox uses Landlock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Landlock {
    /// Use it where the kernel supports it; log a warning where it does not.
    #[default]
    BestEffort,
    /// Refuse to create the sandbox without it.
    Require,
    /// Do not use it.
    Off,
}

/// How a run's processes are kept together, so that all of them end with the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Containment {
    /// One cgroup per run (where a writable cgroup hierarchy with the `pids` controller
    /// exists; otherwise as `ProcessGroup`, with a warning): processes that leave the
    /// process group with `setsid` are killed too, and `pids.max` bounds each run's
    /// processes. Costs a cgroup migration per run: the kernel waits for an RCU grace
    /// period, up to ~15 ms for an isolated run unless the hierarchy is mounted with
    /// `favordynmods` (see the README's benchmark table).
    #[default]
    Cgroup,
    /// The run's process group only (and `RLIMIT_NPROC` per user): cheaper, but a
    /// process that calls `setsid` outlives the run.
    ProcessGroup,
}

/// What a sandboxed process may do and use.
#[derive(Clone, Debug)]
pub struct SandboxPolicy {
    /// The working directory, and the only directory the process may write (with Landlock).
    pub jail: PathBuf,
    /// Directories and files the process may read and execute (with Landlock). The
    /// default: `/usr`, `/bin`, `/sbin`, `/lib`, `/lib64` and the loader cache; not the
    /// rest of `/etc`, `/home`, `/proc` or the host's data.
    pub system_paths: Vec<PathBuf>,
    /// The environment, exactly (the host's is never inherited).
    pub env: Vec<(String, String)>,
    /// Host variables copied into the environment when set (an allow-list).
    pub pass_env: Vec<String>,
    /// Wall-clock limit for a run.
    pub timeout: Duration,
    /// CPU seconds (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Address-space bytes (`RLIMIT_AS`).
    pub address_space: u64,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Processes of the sandbox user (`RLIMIT_NPROC`). The kernel counts every process of
    /// the child's user, so this bounds a fork bomb only per user: as root the child runs
    /// as `run_as` (give tools that may fork distinct users); as another user, the limit
    /// also counts that user's other processes.
    pub processes: u64,
    /// Largest file the process may write (`RLIMIT_FSIZE`).
    pub file_size: u64,
    /// Bytes kept of stdout and of stderr each; more kills the run.
    pub output_bytes: usize,
    /// User and group to run as when the host runs as root. `None`: `nobody` (65534).
    pub run_as: Option<(u32, u32)>,
    /// Whether to use Landlock.
    pub landlock: Landlock,
    /// How a run's processes are kept together.
    pub containment: Containment,
}

impl SandboxPolicy {
    /// A strict policy for `jail`: 10 s, 5 CPU s, 1 GiB address space, 64 files,
    /// 64 processes, 16 MiB files, 1 MiB of output, `PATH=/usr/bin:/bin` only.
    pub fn new(jail: impl Into<PathBuf>) -> Self {
        SandboxPolicy {
            jail: jail.into(),
            system_paths: [
                "/usr",
                "/bin",
                "/sbin",
                "/lib",
                "/lib64",
                "/etc/ld.so.cache",
                "/etc/localtime",
            ]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            pass_env: vec!["LANG".into()],
            timeout: Duration::from_secs(10),
            cpu_seconds: 5,
            address_space: 1 << 30,
            open_files: 64,
            processes: 64,
            file_size: 16 << 20,
            output_bytes: 1 << 20,
            run_as: None,
            landlock: Landlock::BestEffort,
            containment: Containment::Cgroup,
        }
    }
}

/// How a sandboxed run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutput {
    /// Exit code, if the process exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Captured stdout (at most `output_bytes`).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most `output_bytes`).
    pub stderr: Vec<u8>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// A prepared sandbox: the policy with its Landlock ruleset built once, reused by every
/// run.
#[derive(Debug)]
pub struct Sandbox {
    policy: SandboxPolicy,
    jail: PathBuf,
    run_as: Option<(u32, u32)>,
    ruleset: Option<OwnedFd>,
    landlock_abi: Option<i32>,
    cgroups: Option<CgroupBase>,
}

impl Sandbox {
    /// Prepares a sandbox for `policy`: checks the jail, builds the Landlock ruleset.
    ///
    /// # Errors
    /// [`Error::Io`] if the jail is not a directory; [`Error::Registration`] if
    /// Landlock is required but unavailable.
    pub fn new(policy: SandboxPolicy) -> Result<Self, Error> {
        let jail = policy.jail.canonicalize().map_err(|source| Error::Io {
            what: "opening the sandbox jail",
            path: policy.jail.clone(),
            source,
        })?;
        let run_as = nix::unistd::geteuid()
            .is_root()
            .then(|| policy.run_as.unwrap_or((65534, 65534)));
        let abi = landlock_abi();
        let ruleset = match (policy.landlock, abi) {
            (Landlock::Off, _) => None,
            (mode, None) => {
                if mode == Landlock::Require {
                    return Err(Error::Registration {
                        name: "sandbox".into(),
                        reason: "Landlock is required but this kernel does not offer it".into(),
                    });
                }
                tracing::warn!(
                    "Landlock is unavailable on this kernel: sandboxed processes are limited \
                     by rlimits, user and jail only, not by file-access rules"
                );
                None
            }
            (_, Some(abi)) => Some(build_ruleset(abi, &jail, &policy.system_paths)?),
        };
        tracing::info!(
            jail = %jail.display(),
            landlock_abi = abi.filter(|_| ruleset.is_some()),
            run_as = ?run_as,
            "sandbox ready"
        );
        let cgroups = match policy.containment {
            Containment::Cgroup => CgroupBase::detect(),
            Containment::ProcessGroup => None,
        };
        if cgroups.is_none() && policy.containment == Containment::Cgroup {
            tracing::warn!(
                "no writable cgroup with the pids controller: a sandboxed process that \
                 calls setsid can outlive its run, and the process limit is per user only"
            );
        }
        Ok(Sandbox {
            policy,
            jail,
            run_as,
            ruleset,
            landlock_abi: abi,
            cgroups,
        })
    }

    /// The policy.
    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    /// The jail (canonical path).
    pub fn jail(&self) -> &Path {
        &self.jail
    }

    /// Whether runs get their own cgroup ([`Containment::Cgroup`] in force).
    pub fn uses_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// The Landlock ABI in force for runs, if any.
    pub fn landlock_abi(&self) -> Option<i32> {
        self.ruleset.as_ref().and(self.landlock_abi)
    }

    /// Starts `program` in the sandbox (limits, cgroup, environment, jail, user,
    /// Landlock), with a stdin pipe if asked: the child, the reaper that kills its group
    /// and cgroup, and its exit.
    fn spawn_child(
        &self,
        program: &Path,
        args: &[String],
        stdin_pipe: bool,
    ) -> Result<(Spawned, Reaper, ChildExit), ToolError> {
        let limits = self.rlimits();
        let cgroup = self.run_cgroup();
        let env = self.environment();
        let options = SpawnOptions {
            program,
            args,
            env: &env,
            jail: &self.jail,
            run_as: self.run_as,
            limits: &limits,
            cgroup: cgroup.as_ref().map(RunCgroup::join_fd),
            ruleset: self.ruleset.as_ref().map(AsRawFd::as_raw_fd),
            stdin_pipe,
        };
        let cannot_start = |e: std::io::Error| {
            ToolError::failed(format!(
                "cannot start {} in the sandbox (as {:?}, in {}): {e}",
                program.display(),
                self.run_as,
                self.jail.display()
            ))
        };
        let spawned = Spawn::prepare(&options)
            .and_then(|(spawn, out, err)| spawn.start(out, err))
            .map_err(cannot_start)?;
        let reaper = Reaper {
            group: Some(spawned.pid),
            cgroup,
            done: false.into(),
            reaped: false.into(),
        };
        let exit = ChildExit::new(spawned.pid).map_err(cannot_start)?;
        Ok((spawned, reaper, exit))
    }

    /// Runs `program` with `args` in the sandbox and collects its output.
    ///
    /// # Errors
    /// [`ToolErrorKind::Timeout`] past the wall-clock limit, [`ToolErrorKind::Limit`] when
    /// output passes its cap or the CPU limit killed it, [`ToolErrorKind::Failed`] if it
    /// could not start. In every case the process group is gone when this returns.
    pub async fn run(&self, program: &Path, args: &[String]) -> Result<RunOutput, ToolError> {
        let started = Instant::now();
        let (spawned, reaper, exit) = self.spawn_child(program, args, false)?;
        let out_pipe = Receiver::from_owned_fd(spawned.stdout).ok();
        let err_pipe = Receiver::from_owned_fd(spawned.stderr).ok();
        let cap = self.policy.output_bytes;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let outcome = tokio::time::timeout(self.policy.timeout, async {
            let reads = async {
                let (out, err) = tokio::join!(
                    read_capped(out_pipe, cap, &mut stdout),
                    read_capped(err_pipe, cap, &mut stderr)
                );
                match (out, err) {
                    (true, _) => Some("stdout"),
                    (_, true) => Some("stderr"),
                    _ => None,
                }
            };
            tokio::pin!(reads);
            tokio::select! {
                flooded = &mut reads => {
                    // Both pipes closed (the program is exiting), or one flooded: then
                    // the run is killed at once.
                    if flooded.is_some() {
                        reaper.kill();
                    }
                    (exit.wait(&reaper).await, flooded)
                }
                status = exit.wait(&reaper) => {
                    // The program is done: nothing it left behind may keep running or
                    // hold the pipes open. Then drain what is already in them.
                    reaper.kill();
                    let flooded = tokio::time::timeout(DRAIN_GRACE, &mut reads).await.ok().flatten();
                    (status, flooded)
                }
            }
        })
        .await;
        let (status, flooded) = match outcome {
            Ok(done) => done,
            Err(_) => {
                reaper.kill();
                return Err(ToolError::new(
                    ToolErrorKind::Timeout,
                    format!(
                        "{} ran past the sandbox's {:?} limit and was killed",
                        program.display(),
                        self.policy.timeout
                    ),
                ));
            }
        };
        let (out_over, err_over) = (flooded == Some("stdout"), flooded == Some("stderr"));
        if out_over || err_over {
            return Err(ToolError::new(
                ToolErrorKind::Limit,
                format!(
                    "{} wrote more than {cap} bytes to {} and was killed",
                    program.display(),
                    if out_over { "stdout" } else { "stderr" }
                ),
            ));
        }
        let status =
            status.map_err(|e| ToolError::failed(format!("waiting for the process: {e}")))?;
        let (code, signal) = match status {
            WaitStatus::Exited(_, code) => (Some(code), None),
            WaitStatus::Signaled(_, signal, _) => (None, Some(signal as i32)),
            other => {
                return Err(ToolError::failed(format!(
                    "{} ended in an unexpected state: {other:?}",
                    program.display()
                )));
            }
        };
        if signal == Some(Signal::SIGXCPU as i32)
            || signal == Some(Signal::SIGKILL as i32) && self.cpu_exhausted(started)
        {
            return Err(ToolError::new(
                ToolErrorKind::Limit,
                format!(
                    "{} used up its {} s of CPU time and was killed",
                    program.display(),
                    self.policy.cpu_seconds
                ),
            ));
        }
        Ok(RunOutput {
            code,
            signal,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        })
    }

    /// The rlimits of a sandboxed process.
    fn rlimits(&self) -> [(Resource, u64, u64); 6] {
        [
            (
                Resource::RLIMIT_CPU,
                self.policy.cpu_seconds,
                self.policy.cpu_seconds.saturating_add(1),
            ),
            (
                Resource::RLIMIT_AS,
                self.policy.address_space,
                self.policy.address_space,
            ),
            (
                Resource::RLIMIT_NOFILE,
                self.policy.open_files,
                self.policy.open_files,
            ),
            (
                Resource::RLIMIT_NPROC,
                self.policy.processes,
                self.policy.processes,
            ),
            (
                Resource::RLIMIT_FSIZE,
                self.policy.file_size,
                self.policy.file_size,
            ),
            (Resource::RLIMIT_CORE, 0, 0),
        ]
    }

    /// A cgroup for one run or service, if the sandbox uses cgroups.
    fn run_cgroup(&self) -> Option<RunCgroup> {
        match &self.cgroups {
            Some(base) => match base.create_run(self.policy.processes) {
                Ok(cgroup) => Some(cgroup),
                Err(e) => {
                    tracing::warn!(error = %e, "no cgroup for this run; process-group cleanup only");
                    None
                }
            },
            None => None,
        }
    }

    /// Starts `program` with `args` as a long-lived service in the sandbox (all the
    /// limits of [`Sandbox::run`] but the wall-clock timeout and the output caps, which
    /// the caller enforces), with pipes for its stdin, stdout and stderr. The process and
    /// everything it started are killed when the returned [`ServiceProcess`] is dropped
    /// or [killed](ServiceProcess::kill).
    ///
    /// # Errors
    /// [`ToolErrorKind::Failed`] if it could not start (the step that failed is named).
    pub fn start_service(
        &self,
        program: &Path,
        args: &[String],
    ) -> Result<ServiceProcess, ToolError> {
        let (spawned, reaper, exit) = self.spawn_child(program, args, true)?;
        let stdin = spawned
            .stdin
            .ok_or_else(|| ToolError::failed("the service has no stdin pipe"))
            .and_then(|fd| {
                tokio::net::unix::pipe::Sender::from_owned_fd(fd)
                    .map_err(|e| ToolError::failed(format!("its stdin: {e}")))
            })?;
        let stdout = Receiver::from_owned_fd(spawned.stdout)
            .map_err(|e| ToolError::failed(format!("its stdout: {e}")))?;
        let stderr = Receiver::from_owned_fd(spawned.stderr)
            .map_err(|e| ToolError::failed(format!("its stderr: {e}")))?;
        Ok(ServiceProcess {
            pid: spawned.pid.as_raw(),
            started: Instant::now(),
            cpu_seconds: self.policy.cpu_seconds,
            stdio: Some((stdin, stdout, stderr)),
            exit,
            reaper,
        })
    }

    /// Whether a SIGKILL that ended a run is the CPU limit's hard stop (the soft limit
    /// sends SIGXCPU first; a program ignoring it is killed a second later).
    fn cpu_exhausted(&self, started: Instant) -> bool {
        started.elapsed() >= Duration::from_secs(self.policy.cpu_seconds)
    }

    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = self
            .policy
            .env
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        for name in &self.policy.pass_env {
            if let Some(value) = std::env::var_os(name) {
                env.push((name.into(), value));
            }
        }
        env
    }
}

/// The kernel's Landlock ABI version, if Landlock is enabled.
fn landlock_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with a null attribute pointer and size 0, the kernel reads no memory.
    let v = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(v).ok().filter(|v| *v > 0)
}

fn build_ruleset(abi: i32, jail: &Path, system: &[PathBuf]) -> Result<OwnedFd, Error> {
    let abi = ABI::from(abi);
    let fail = |e: &dyn std::fmt::Display| Error::Registration {
        name: "sandbox".into(),
        reason: format!("building the Landlock ruleset: {e}"),
    };
    let created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(system, AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules([jail], AccessFs::from_all(abi))))
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                ["/dev/null", "/dev/zero", "/dev/urandom"],
                AccessFs::from_read(abi) | AccessFs::WriteFile,
            ))
        })
        .map_err(|e| fail(&e))?;
    Option::<OwnedFd>::from(created).ok_or_else(|| fail(&"the kernel refused a ruleset"))
}

/// A long-lived process started by [`Sandbox::start_service`]: confined like a run, its
/// stdio piped to the caller. Dropping it kills its process group and cgroup.
pub struct ServiceProcess {
    pid: i32,
    started: Instant,
    cpu_seconds: u64,
    stdio: Option<ServiceStdio>,
    exit: ChildExit,
    reaper: Reaper,
}

/// A service's stdin (to write), stdout and stderr (to read).
pub type ServiceStdio = (
    tokio::net::unix::pipe::Sender,
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Receiver,
);

impl ServiceProcess {
    /// Its process id (also its process group's).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its stdin, stdout and stderr; `None` once taken.
    pub fn take_stdio(&mut self) -> Option<ServiceStdio> {
        self.stdio.take()
    }

    /// Kills it, its process group and its cgroup.
    pub fn kill(&self) {
        self.reaper.kill();
    }

    /// Waits until it exits (it is then reaped, and what it left behind killed), and says
    /// how it ended: `exited with code N`, `killed by SIGNAL`, or that it used up its CPU
    /// time.
    pub async fn wait(&self) -> String {
        let status = self.exit.wait(&self.reaper).await;
        self.reaper.kill();
        match status {
            Ok(WaitStatus::Exited(_, code)) => format!("exited with code {code}"),
            Ok(WaitStatus::Signaled(_, Signal::SIGXCPU, _)) => format!(
                "used up its {} s of CPU time and was killed",
                self.cpu_seconds
            ),
            Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _))
                if self.started.elapsed() >= Duration::from_secs(self.cpu_seconds) =>
            {
                format!(
                    "was killed by SIGKILL (by someone, or at its {} s CPU limit)",
                    self.cpu_seconds
                )
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => format!("was killed by {signal}"),
            Ok(other) => format!("ended in an unexpected state: {other:?}"),
            Err(e) => format!("could not be waited for: {e}"),
        }
    }
}

impl std::fmt::Debug for ServiceProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceProcess")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Reads up to `cap` bytes into `out`; returns whether the stream had more.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    out: &mut Vec<u8>,
) -> bool {
    let Some(mut reader) = reader else {
        return false;
    };
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                if out.len() + n > cap {
                    let room = cap - out.len();
                    out.extend_from_slice(&chunk[..room]);
                    return true;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// Kills what a run started, however the run ends (including the caller's future being
/// dropped on a timeout): its process group, and its cgroup where there is one (which
/// also holds processes that left the group with `setsid`).
struct Reaper {
    group: Option<Pid>,
    cgroup: Option<RunCgroup>,
    /// Set once everything was killed after the program ended.
    done: AtomicBool,
    /// Set once the child was waited for.
    reaped: AtomicBool,
}

impl Reaper {
    fn kill(&self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(group) = self.group {
            // ESRCH (already gone) is the common, fine case.
            let _ = killpg(group, Signal::SIGKILL);
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Relaxed) {
            self.kill();
        }
        // A run dropped before its child was waited for (a timeout, a cancelled call):
        // reap the killed child off the async threads so it does not stay a zombie.
        if let Some(pid) = self.group.filter(|_| !self.reaped.load(Ordering::Relaxed)) {
            let reap = move || {
                let _ = waitpid(pid, None);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(reap)),
                Err(_) => reap(),
            }
        }
    }
}

/// Waits for a child's exit without blocking a thread: its pidfd becomes readable.
struct ChildExit {
    pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
}

impl ChildExit {
    fn new(pid: Pid) -> std::io::Result<Self> {
        let fd = pidfd(pid)?;
        // SAFETY: `fd` is a fresh descriptor owned by the `AsyncFd` for as long as it is
        // registered; nothing else closes or reuses it.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(ChildExit { pid, pidfd })
    }

    async fn wait(&self, reaper: &Reaper) -> std::io::Result<WaitStatus> {
        loop {
            let mut ready = self.pidfd.readable().await?;
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => ready.clear_ready(),
                Ok(status) => {
                    reaper.reaped.store(true, Ordering::Relaxed);
                    return Ok(status);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests here start child processes and one checks that none is left: they run
    /// one at a time, or that check would see (and a reaping wait would steal) another
    /// test's child.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn jail() -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let jail = dir.path().join("jail");
        std::fs::create_dir(&jail).unwrap();
        std::fs::set_permissions(&jail, std::fs::Permissions::from_mode(0o777)).unwrap();
        (dir, jail)
    }

    #[tokio::test]
    async fn a_failed_start_names_the_step_and_leaves_no_child() {
        let _alone = ONE_AT_A_TIME.lock().await;
        let (_dir, jail) = jail();
        let sandbox = Sandbox::new(SandboxPolicy::new(&jail)).unwrap();
        let err = sandbox
            .run(Path::new("/nonexistent/program"), &[])
            .await
            .unwrap_err();
        assert_eq!(err.kind, ToolErrorKind::Failed);
        assert!(err.message.contains("executing the program"), "{err}");
        // The failed child was reaped: nothing is left to wait for (looked at without
        // reaping anything).
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        assert!(matches!(
            nix::sys::wait::waitid(nix::sys::wait::Id::All, flags),
            Err(nix::errno::Errno::ECHILD) | Ok(WaitStatus::StillAlive)
        ));
    }

    #[tokio::test]
    async fn descriptors_the_host_leaves_open_do_not_reach_the_program() {
        let _alone = ONE_AT_A_TIME.lock().await;
        let (dir, jail) = jail();
        let private = dir.path().join("host-only.txt");
        std::fs::write(&private, "host only").unwrap();
        // Opened without close-on-exec, as a C library or a parent process might leave it.
        let fd = nix::fcntl::open(
            &private,
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let script = format!("cat <&{}", fd.as_raw_fd());
        let sandbox = Sandbox::new(SandboxPolicy::new(&jail)).unwrap();
        let out = sandbox
            .run(Path::new("/bin/sh"), &["-c".to_owned(), script])
            .await
            .unwrap();
        assert_ne!(out.code, Some(0));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("host only"));
        drop(fd);
    }

    #[tokio::test]
    async fn arguments_arrive_verbatim_and_the_exit_code_is_reported() {
        let _alone = ONE_AT_A_TIME.lock().await;
        let (_dir, jail) = jail();
        let sandbox = Sandbox::new(SandboxPolicy::new(&jail)).unwrap();
        let args = [
            "-c".to_owned(),
            "printf '%s|' \"$@\"; exit 3".to_owned(),
            "sh".to_owned(),
            "a b".to_owned(),
            "$(id)".to_owned(),
        ];
        let out = sandbox.run(Path::new("/bin/sh"), &args).await.unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|$(id)|");
    }
}
