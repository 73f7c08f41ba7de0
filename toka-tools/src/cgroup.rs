//! One cgroup per sandboxed run: every process the run starts, including those that
//! leave its process group with `setsid`, stays in the cgroup, so the run can be killed
//! whole; `pids.max` bounds its processes (a per-run fork-bomb limit, unlike the per-user
//! `RLIMIT_NPROC`).
//!
//! Uses the cgroup v1 `pids` hierarchy (`/sys/fs/cgroup/pids`) or cgroup v2
//! (`/sys/fs/cgroup` with the `pids` controller), whichever accepts a `toka-sandbox`
//! directory; without either, runs fall back to process-group cleanup only (logged once
//! by [`Sandbox::new`](crate::Sandbox::new)).

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where run cgroups are created.
#[derive(Clone, Debug)]
pub(crate) struct CgroupBase {
    dir: PathBuf,
    /// Whether the kernel offers `cgroup.kill` here (v2, Linux ≥ 5.14).
    has_kill: bool,
}

impl CgroupBase {
    /// Finds a writable cgroup hierarchy with the `pids` controller.
    pub(crate) fn detect() -> Option<Self> {
        let candidates = [
            Path::new("/sys/fs/cgroup/pids"),
            Path::new("/sys/fs/cgroup"),
            Path::new("/sys/fs/cgroup/unified"),
        ];
        candidates.into_iter().find_map(|root| {
            let dir = root.join("toka-sandbox");
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(_) => return None,
            }
            // v2: let children use the pids controller (best effort).
            if root.join("cgroup.subtree_control").exists() {
                let _ = fs::write(root.join("cgroup.subtree_control"), "+pids");
                let _ = fs::write(dir.join("cgroup.subtree_control"), "+pids");
            }
            // A usable hierarchy lets us create a run cgroup with a pids limit.
            let probe = dir.join(format!("probe-{}", uuid::Uuid::now_v7()));
            let usable = fs::create_dir(&probe).is_ok() && probe.join("pids.max").exists();
            let has_kill = probe.join("cgroup.kill").exists();
            let _ = fs::remove_dir(&probe);
            usable.then_some(CgroupBase { dir, has_kill })
        })
    }

    /// Creates the cgroup of one run, limited to `processes`.
    pub(crate) fn create_run(&self, processes: u64) -> std::io::Result<RunCgroup> {
        let dir = self.dir.join(format!("run-{}", uuid::Uuid::now_v7()));
        fs::create_dir(&dir)?;
        let made = fs::write(dir.join("pids.max"), processes.to_string()).and_then(|()| {
            OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
        });
        match made {
            Ok(procs) => Ok(RunCgroup {
                dir,
                procs,
                has_kill: self.has_kill,
            }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

/// The cgroup of one run; removed (after killing what is left in it) on drop.
#[derive(Debug)]
pub(crate) struct RunCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened before the fork: the child writes `0` to join.
    procs: File,
    has_kill: bool,
}

impl RunCgroup {
    /// The descriptor the child writes `0` to, between fork and exec.
    pub(crate) fn join_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Kills every process in the cgroup (`cgroup.kill` where the kernel has it; else
    /// each listed pid, repeated until the list is empty, which `pids.max` bounds).
    pub(crate) fn kill_all(&self) {
        if self.has_kill && fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for _ in 0..64 {
            let Ok(list) = fs::read_to_string(self.dir.join("cgroup.procs")) else {
                return;
            };
            let pids: Vec<i32> = list.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        // The run's reaper has killed the processes; they leave the cgroup once reaped.
        // Remove it off the async threads, retrying briefly; a cgroup still busy after
        // that is left in place (empty cgroups cost nothing) rather than block.
        let dir = std::mem::take(&mut self.dir);
        let remove = move || {
            for _ in 0..50 {
                if fs::remove_dir(&dir).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            tracing::debug!(cgroup = %dir.display(), "run cgroup still busy; left in place");
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}
