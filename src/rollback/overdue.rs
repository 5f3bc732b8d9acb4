//! Overdue means rolled back: a pending apply past its deadline whose
//! watcher is gone (killed, or the host rebooted under it), or that is
//! still pending past the deadline plus a grace period whatever its
//! watcher is doing (stopped, frozen, hung; see [`super::liveness`]), is
//! rolled back by the first fwharden command that finds it (apply,
//! confirm, status, restore), not left in the kernel until someone
//! notices.

use std::time::Duration;

use super::liveness::{takeover_due, WatcherState};
use super::{undo, Ports, RollbackError};
use crate::state::{now_ms, ApplyLock, Dirs, Pending};

/// How long `status` waits for the lock before it rolls back.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Whether a command should roll `p` back now (see
/// [`super::liveness::takeover_due`]); `run` is the run directory.
pub fn orphaned(ports: Ports, p: &Pending, run: &std::path::Path) -> bool {
    takeover_due(p, ports.watchers.state(p, run), now_ms())
}

/// An overdue apply a command rolled back.
#[derive(Debug, Clone)]
pub struct Settled {
    pub profile: String,
    pub previous: String,
    pub late_ms: u64,
    pub by: String,
    /// What its watcher was doing when the command took over.
    pub watcher: WatcherState,
}

impl Settled {
    pub fn describe(&self) -> String {
        let watcher = match self.watcher {
            WatcherState::Gone => "its watcher was gone",
            WatcherState::Stopped => "its watcher was stopped (now killed)",
            WatcherState::Frozen => "its watcher's cgroup was frozen (the watcher is now killed)",
            WatcherState::Alive => "its watcher had not acted",
        };
        format!(
            "the apply of profile {} was {} s past its deadline and {watcher}: `fwharden {}` rolled it back and restored {}",
            self.profile,
            self.late_ms / 1000,
            self.by,
            self.previous
        )
    }
}

/// With the apply lock held: rolls back an overdue apply, if there is
/// one. `by` names the command, for the record and the log.
pub(crate) fn settle_locked(
    ports: Ports,
    dirs: &Dirs,
    by: &str,
) -> Result<Option<Settled>, RollbackError> {
    let Some(p) = dirs.pending()? else {
        return Ok(None);
    };
    let watcher = ports.watchers.state(&p, &dirs.run);
    take_over(ports, dirs, p, by, watcher)
}

/// Like [`settle_locked`], taking the lock first; changes nothing and
/// takes no lock when nothing is overdue. A stuck watcher is ended before
/// the lock is taken: stopped in the middle of its own rollback, it holds
/// the lock.
pub fn settle(ports: Ports, dirs: &Dirs, by: &str) -> Result<Option<Settled>, RollbackError> {
    let Some(p) = dirs.pending()? else {
        return Ok(None);
    };
    let watcher = ports.watchers.state(&p, &dirs.run);
    if !takeover_due(&p, watcher, now_ms()) {
        return Ok(None);
    }
    ports.end_stuck_watcher(&p, &dirs.run);
    let _lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    // Under the lock, the same apply (a confirm may have come first).
    match dirs.pending()? {
        Some(q) if q.token == p.token => take_over(ports, dirs, q, by, watcher),
        _ => Ok(None),
    }
}

/// Rolls `p` back if it is due, its watcher having been `watcher` when
/// the command looked (a stuck one is ended first: it cannot wake up and
/// act twice).
fn take_over(
    ports: Ports,
    dirs: &Dirs,
    p: Pending,
    by: &str,
    watcher: WatcherState,
) -> Result<Option<Settled>, RollbackError> {
    if !takeover_due(&p, watcher, now_ms()) {
        return Ok(None);
    }
    ports.interlock()?;
    ports.end_stuck_watcher(&p, &dirs.run);
    let late_ms = now_ms().saturating_sub(p.deadline_ms);
    let state = match watcher {
        WatcherState::Alive => "silent",
        WatcherState::Stopped => "stopped",
        WatcherState::Frozen => "frozen",
        WatcherState::Gone => "gone",
    };
    undo(
        ports,
        dirs,
        &p,
        &format!("overdue, its watcher {state}: rolled back by `fwharden {by}`"),
    )?;
    Ok(Some(Settled {
        profile: p.profile.clone(),
        previous: p.previous_name(),
        late_ms,
        by: by.into(),
        watcher,
    }))
}
