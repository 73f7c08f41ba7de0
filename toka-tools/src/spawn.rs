//! Starting a confined child without copying the host's address space.
//!
//! `std`'s `Command` must `fork` once a `pre_exec` hook is set, and `fork` copies the
//! parent's page tables: its cost grows with the host's resident memory (≈13 ms per run
//! at 256 MiB, against ≈1 ms for `posix_spawn`, measured in `benches/tools.rs`). This
//! module does what `posix_spawn` does instead: `clone(CLONE_VM | CLONE_VFORK)`, so the
//! child borrows the parent's memory until it calls `execve`, and confines itself on the
//! way.
//!
//! # Safety invariants
//! The child shares the parent's memory while the parent is suspended (`CLONE_VFORK`), so
//! between `clone` and `execve` it must not allocate, lock, unwind or touch thread-local
//! state other than `errno`. [`Spawn::child`] therefore only reads a [`Spawn`] prepared
//! (and owned) by the parent and makes raw system calls. Credentials are changed with raw
//! `setres[ug]id` syscalls, not libc's wrappers, which would signal the *parent's*
//! threads to change theirs. A failed step reports `(step, errno)` through a close-on-exec
//! pipe and exits with `_exit`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The child's steps, reported with the errno of the one that failed.
const STEPS: [&str; 12] = [
    "resetting signals",
    "redirecting stdio",
    "starting its own session",
    "dropping supplementary groups",
    "switching group",
    "switching user",
    "entering the jail",
    "setting resource limits",
    "joining the run's cgroup",
    "restricting itself (prctl / Landlock)",
    "closing inherited descriptors",
    "executing the program",
];

/// Stack for the child until `execve` (it runs only the small, non-recursive
/// [`Spawn::child`]).
const CHILD_STACK: usize = 64 * 1024;

/// Everything the child needs, prepared by the parent before `clone`.
pub(crate) struct Spawn {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    stdin: OwnedFd,
    /// The parent's end of the child's stdin, when the child reads a pipe.
    stdin_writer: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    jail: OwnedFd,
    run_as: Option<(u32, u32)>,
    limits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    cgroup: Option<RawFd>,
    ruleset: Option<RawFd>,
    report: OwnedFd,
    report_read: Option<OwnedFd>,
    /// The host's process id: the child's parent, unless the host died meanwhile.
    host: libc::pid_t,
}

/// A running child: its pid, and the read ends of its stdout and stderr.
pub(crate) struct Spawned {
    pub(crate) pid: Pid,
    /// The write end of its stdin, if it reads a pipe ([`SpawnOptions::stdin_pipe`]).
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::other("an argument contains a NUL byte"))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Options of one spawn.
pub(crate) struct SpawnOptions<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [(std::ffi::OsString, std::ffi::OsString)],
    pub(crate) jail: &'a Path,
    pub(crate) run_as: Option<(u32, u32)>,
    pub(crate) limits: &'a [(nix::sys::resource::Resource, u64, u64)],
    pub(crate) cgroup: Option<RawFd>,
    pub(crate) ruleset: Option<RawFd>,
    /// Give the child a pipe as stdin (else `/dev/null`).
    pub(crate) stdin_pipe: bool,
}

impl Spawn {
    /// Prepares a spawn: strings, pipes, descriptors.
    pub(crate) fn prepare(options: &SpawnOptions<'_>) -> std::io::Result<(Self, OwnedFd, OwnedFd)> {
        let program = cstring(options.program.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for arg in options.args {
            argv.push(cstring(arg.as_bytes())?);
        }
        let mut envp = Vec::with_capacity(options.env.len());
        for (key, value) in options.env {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(cstring(&entry)?);
        }
        let argv_ptrs = argv
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let (stdin, stdin_writer) = if options.stdin_pipe {
            let (read, write) = pipe()?;
            (read, Some(write))
        } else {
            let null = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?;
            (null, None)
        };
        let jail = nix::fcntl::open(
            options.jail,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let (out_read, stdout) = pipe()?;
        let (err_read, stderr) = pipe()?;
        let (report_read, report) = pipe()?;
        let limits = options
            .limits
            .iter()
            .map(|&(resource, soft, hard)| {
                (
                    resource as libc::__rlimit_resource_t,
                    libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    },
                )
            })
            .collect();
        Ok((
            Spawn {
                program,
                argv,
                envp,
                argv_ptrs,
                envp_ptrs,
                stdin,
                stdin_writer,
                stdout,
                stderr,
                jail,
                run_as: options.run_as,
                limits,
                cgroup: options.cgroup,
                ruleset: options.ruleset,
                report,
                report_read: Some(report_read),
                host: nix::unistd::getpid().as_raw(),
            },
            out_read,
            err_read,
        ))
    }

    /// Starts the child; returns once it has called `execve` (or failed before).
    pub(crate) fn start(mut self, stdout: OwnedFd, stderr: OwnedFd) -> std::io::Result<Spawned> {
        let _ = (&self.argv, &self.envp); // kept alive: the pointer arrays point into them
        let report_read = self
            .report_read
            .take()
            .ok_or_else(|| std::io::Error::other("spawn prepared twice"))?;
        let mut stack = vec![0u8; CHILD_STACK];
        let this = &self;
        // Block every signal around `clone`, as `posix_spawn` does: no handler of the
        // host may run in the child while it shares the host's memory. The child resets
        // the handlers and unblocks before `execve`.
        let all = nix::sys::signal::SigSet::all();
        let mut previous = nix::sys::signal::SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&all),
            Some(&mut previous),
        )?;
        // SAFETY: see the module docs. The child runs `Spawn::child` on `stack` (ample
        // for it), reads only `self`, which outlives the call (the parent is suspended
        // until the child execs or exits), and never returns into Rust frames of the
        // parent: it ends in `execve` or `_exit`.
        let pid = unsafe {
            nix::sched::clone(
                Box::new(move || this.child()),
                &mut stack,
                CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
                Some(Signal::SIGCHLD as i32),
            )
        };
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&previous),
            None,
        );
        let pid = pid?;
        let stdin = self.stdin_writer.take();
        // The child has exec'd or exited: its copies of the write ends are its own now.
        drop(self);
        let mut buf = [0u8; 8];
        let read = loop {
            match nix::unistd::read(&report_read, &mut buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.unwrap_or(0),
            }
        };
        if read == 8 {
            let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
            let _ = nix::sys::wait::waitpid(pid, None);
            let error = std::io::Error::from_raw_os_error(errno);
            return Err(std::io::Error::new(
                error.kind(),
                format!(
                    "{}: {error}",
                    STEPS.get(step).copied().unwrap_or("starting")
                ),
            ));
        }
        Ok(Spawned {
            pid,
            stdin,
            stdout,
            stderr,
        })
    }

    /// The child, between `clone` and `execve`. Raw syscalls only (module docs).
    fn child(&self) -> isize {
        let fail = |step: u32| -> isize {
            // SAFETY: `errno` is this thread's; writing a stack buffer to an open fd.
            unsafe {
                let errno = *libc::__errno_location();
                let mut report = [0u8; 8];
                report[..4].copy_from_slice(&step.to_ne_bytes());
                report[4..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(self.report.as_raw_fd(), report.as_ptr().cast(), 8);
                libc::_exit(127)
            }
        };
        // SAFETY: every call below is a system call on values owned by `self` or on
        // constants; none allocates or takes a lock.
        unsafe {
            // Signals (all blocked by the parent): the host's handlers back to the
            // default, SIGPIPE too (the host ignores it); unblocked just before execve.
            let mut action: libc::sigaction = std::mem::zeroed();
            for signal in 1..libc::SIGRTMAX() {
                if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                    continue;
                }
                if libc::sigaction(signal, std::ptr::null(), &mut action) != 0 {
                    continue;
                }
                let custom =
                    action.sa_sigaction != libc::SIG_DFL && action.sa_sigaction != libc::SIG_IGN;
                if custom || signal == libc::SIGPIPE {
                    action.sa_sigaction = libc::SIG_DFL;
                    if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                        return fail(0);
                    }
                }
            }
            for (fd, target) in [
                (self.stdin.as_raw_fd(), 0),
                (self.stdout.as_raw_fd(), 1),
                (self.stderr.as_raw_fd(), 2),
            ] {
                // `dup2` onto itself keeps close-on-exec set: clear it instead.
                let done = if fd == target {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, target)
                };
                if done < 0 {
                    return fail(1);
                }
            }
            // A session of its own (and a process group led by it): the child cannot
            // join the host's process group, and the run kills its group as a whole.
            if libc::setsid() < 0 {
                return fail(2);
            }
            if let Some((uid, gid)) = self.run_as {
                if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
                {
                    return fail(3);
                }
                if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
                    return fail(4);
                }
                if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
                    return fail(5);
                }
            }
            if libc::fchdir(self.jail.as_raw_fd()) != 0 {
                return fail(6);
            }
            for (resource, limit) in &self.limits {
                if libc::setrlimit(*resource, limit) != 0 {
                    return fail(7);
                }
            }
            if let Some(fd) = self.cgroup
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return fail(8);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0
            {
                return fail(9);
            }
            // A host killed before the line above sent no death signal: the child, now
            // another process's, must not run the program (the cluster's history check
            // caught sandboxed commands running after their node's SIGKILL).
            if libc::getppid() != self.host {
                *libc::__errno_location() = libc::ESRCH;
                return fail(9);
            }
            if let Some(fd) = self.ruleset
                && libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0
            {
                return fail(9);
            }
            // Descriptors the host left open without close-on-exec (inherited from its own
            // parent, or opened by C code) must not reach the program: Landlock does not
            // restrict descriptors that are already open.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return fail(10);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return fail(0);
            }
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
            fail(11)
        }
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
pub(crate) fn pidfd(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain syscall; on success the kernel returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
