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
//!   `setsid`; see `cgroup.rs`) are killed; `PR_SET_PDEATHSIG` kills it if the host dies.
//! - With a cgroup, `pids.max` bounds each run's processes, whatever its user.
//! - Limits are set in the child between `fork` and `exec`, so they hold from the first
//!   instruction of the program.
//!
//! # Why `unsafe`
//! Setting rlimits, the parent-death signal and the Landlock domain must happen in the
//! child after `fork` and before `exec`, which `std` exposes only as the `unsafe`
//! `CommandExt::pre_exec`. The alternative, a launcher binary that sets them and `exec`s
//! the program, costs a second `exec` per run (about 2× the spawn cost measured in
//! `benches/tools.rs`, against a 1.5× budget). The closure below keeps `pre_exec`'s
//! contract: it only makes async-signal-safe system calls (`setrlimit`, `prctl`,
//! `landlock_restrict_self`, and one `write` to join the run's cgroup) on values prepared
//! before the fork; it allocates nothing and takes no locks.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::cgroup::{CgroupBase, RunCgroup};
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
        let cgroups = CgroupBase::detect();
        if cgroups.is_none() {
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

    /// The Landlock ABI in force for runs, if any.
    pub fn landlock_abi(&self) -> Option<i32> {
        self.ruleset.as_ref().and(self.landlock_abi)
    }

    /// Runs `program` with `args` in the sandbox and collects its output.
    ///
    /// # Errors
    /// [`ToolErrorKind::Timeout`] past the wall-clock limit, [`ToolErrorKind::Limit`] when
    /// output passes its cap or the CPU limit killed it, [`ToolErrorKind::Failed`] if it
    /// could not start. In every case the process group is gone when this returns.
    pub async fn run(&self, program: &Path, args: &[String]) -> Result<RunOutput, ToolError> {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(self.environment())
            .current_dir(&self.jail)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let limits = [
            (Resource::RLIMIT_CPU, self.policy.cpu_seconds),
            (Resource::RLIMIT_AS, self.policy.address_space),
            (Resource::RLIMIT_NOFILE, self.policy.open_files),
            (Resource::RLIMIT_NPROC, self.policy.processes),
            (Resource::RLIMIT_FSIZE, self.policy.file_size),
            (Resource::RLIMIT_CORE, 0),
        ];
        let cgroup = match &self.cgroups {
            Some(base) => match base.create_run(self.policy.processes) {
                Ok(cgroup) => Some(cgroup),
                Err(e) => {
                    tracing::warn!(error = %e, "no cgroup for this run; process-group cleanup only");
                    None
                }
            },
            None => None,
        };
        let cgroup_fd = cgroup.as_ref().map(RunCgroup::join_fd);
        let ruleset: Option<RawFd> = self.ruleset.as_ref().map(AsRawFd::as_raw_fd);
        // SAFETY: see the module docs. The closure only calls async-signal-safe
        // syscalls on the copied `limits` array and the ruleset fd, which `self` keeps
        // open until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || confine(&limits, cgroup_fd, ruleset));
        }
        let mut child = cmd.spawn().map_err(|e| {
            ToolError::failed(format!(
                "cannot start {} in the sandbox (as {:?}, in {}): {e}",
                program.display(),
                self.run_as,
                self.jail.display()
            ))
        })?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let reaper = Reaper { group, cgroup };
        let cap = self.policy.output_bytes;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
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
                    (child.wait().await, flooded)
                }
                status = child.wait() => {
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
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal();
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
            code: status.code(),
            signal,
            stdout,
            stderr,
            elapsed: started.elapsed(),
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

/// Applies the limits and the Landlock domain to the calling (child) process.
fn confine(
    limits: &[(Resource, u64)],
    cgroup: Option<RawFd>,
    ruleset: Option<RawFd>,
) -> std::io::Result<()> {
    if let Some(fd) = cgroup {
        crate::cgroup::join(fd)?;
    }
    for &(resource, value) in limits {
        // CPU: SIGXCPU at the soft limit, SIGKILL one second later if ignored.
        let hard = if resource == Resource::RLIMIT_CPU {
            value.saturating_add(1)
        } else {
            value
        };
        setrlimit(resource, value, hard)?;
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    nix::sys::prctl::set_no_new_privs()?;
    if let Some(fd) = ruleset {
        // SAFETY: a plain syscall on an open ruleset fd; no memory is passed.
        let rc = unsafe { nix::libc::syscall(nix::libc::SYS_landlock_restrict_self, fd, 0u32) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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
}

impl Reaper {
    fn kill(&self) {
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
        self.kill();
    }
}
