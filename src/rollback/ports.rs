//! What the safety net drives besides its records: the kernel (see
//! [`crate::kernel`]) and the watcher processes. Both are ports, so the
//! whole state machine (apply, confirm, rollback, restore, the overdue
//! path) runs against the real machine in production and against an
//! in-memory kernel and bookkept watchers in the fault-injection tests.

use std::time::Duration;

use super::watcher::{self, Spawned};
use super::RollbackError;
use crate::kernel::{Kernel, Netlink};
use crate::state::{Dirs, Pending};

/// The watcher processes an apply starts and later commands look for.
pub trait Watchers {
    /// Starts the watcher of the apply with `token`; returns once it runs.
    fn spawn(&self, dirs: &Dirs, token: &str) -> Result<Spawned, RollbackError>;
    /// Whether `pid` is the watcher of the apply with `token`.
    fn alive(&self, pid: u32, token: &str) -> bool;
    /// Stops `p`'s watcher, if it runs, and removes what it leaves.
    fn stop(&self, dirs: &Dirs, p: &Pending);
    /// Removes what the watcher of apply `token` left if it is gone (its
    /// empty cgroup); a live watcher's is left to it.
    fn forget(&self, dirs: &Dirs, token: &str);
}

/// Real processes: `fwharden watch`, detached (see [`watcher`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Processes;

impl Watchers for Processes {
    fn spawn(&self, dirs: &Dirs, token: &str) -> Result<Spawned, RollbackError> {
        watcher::spawn(dirs, token)
    }

    fn alive(&self, pid: u32, token: &str) -> bool {
        super::watcher_alive(pid, token)
    }

    /// A pending apply at boot has no watcher left; one started by hand
    /// may. Stopped by SIGTERM, it cannot remove its cgroup: that is done
    /// here once it is gone (waiting at most 2 s).
    fn stop(&self, dirs: &Dirs, p: &Pending) {
        if let Some(pid) = p.watcher.filter(|pid| self.alive(*pid, &p.token)) {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            for _ in 0..100 {
                if !self.alive(pid, &p.token) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.forget(dirs, &p.token);
    }

    fn forget(&self, dirs: &Dirs, token: &str) {
        super::placement::remove_left_group(token, &dirs.run);
    }
}

/// The kernel and the watchers one command works with.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub kernel: &'a dyn Kernel,
    pub watchers: &'a dyn Watchers,
}

impl Ports<'static> {
    /// This machine: nf_tables over netlink, watchers as processes.
    pub fn real() -> Ports<'static> {
        Ports {
            kernel: &Netlink,
            watchers: &Processes,
        }
    }
}

impl Ports<'_> {
    /// Fails when the kernel is one fwharden must never change.
    pub fn interlock(&self) -> Result<(), RollbackError> {
        if self.kernel.forbidden() {
            return Err(RollbackError::Interlock);
        }
        Ok(())
    }
}
