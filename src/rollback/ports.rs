//! What the safety net drives besides its records: the kernel (see
//! [`crate::kernel`]) and the watcher processes. Both are ports, so the
//! whole state machine (apply, confirm, rollback, restore, the overdue
//! path) runs against the real machine in production and against an
//! in-memory kernel and bookkept watchers in the fault-injection tests.

use std::path::Path;

use super::liveness::{self, WatcherState};
use super::watcher::{self, Spawned};
use super::RollbackError;
use crate::kernel::{Kernel, Netlink};
use crate::state::{Dirs, Pending};

/// The watcher processes an apply starts and later commands look for.
pub trait Watchers {
    /// Starts the watcher of the apply with `token`; returns once it runs.
    fn spawn(&self, dirs: &Dirs, token: &str) -> Result<Spawned, RollbackError>;
    /// What the watcher of `p` is doing; `run` is the run directory.
    fn state(&self, p: &Pending, run: &Path) -> WatcherState;
    /// Ends the watcher of `p`, if it still runs, and what it leaves.
    fn end(&self, p: &Pending, run: &Path);
    /// Removes what the watcher of apply `token` left if it is gone (its
    /// empty cgroup); a live watcher's is left to it.
    fn forget(&self, run: &Path, token: &str);
}

/// Real processes: `fwharden watch`, detached (see [`watcher`]), looked
/// at through /proc (see [`liveness`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Processes;

impl Watchers for Processes {
    fn spawn(&self, dirs: &Dirs, token: &str) -> Result<Spawned, RollbackError> {
        watcher::spawn(dirs, token)
    }

    fn state(&self, p: &Pending, run: &Path) -> WatcherState {
        liveness::watcher_state(p, run)
    }

    fn end(&self, p: &Pending, run: &Path) {
        liveness::end_watcher(p, run);
    }

    fn forget(&self, run: &Path, token: &str) {
        super::placement::remove_left_group(token, run);
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

    /// Ends a watcher that is stopped or frozen, before its apply is taken
    /// over: a watcher stopped while holding the apply lock lets it go
    /// only by dying, and one that cannot act can never wake up to act
    /// twice.
    pub fn end_stuck_watcher(&self, p: &Pending, run: &Path) {
        if matches!(
            self.watchers.state(p, run),
            WatcherState::Stopped | WatcherState::Frozen
        ) {
            self.watchers.end(p, run);
        }
    }
}
