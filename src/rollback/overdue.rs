//! Overdue means rolled back: a pending apply past its deadline whose
//! watcher is gone (killed, or the host rebooted under it) is rolled back
//! by the first fwharden command that finds it (apply, confirm, status),
//! not left in the kernel until someone notices.

use std::time::Duration;

use super::{undo, Ports, RollbackError};
use crate::state::{now_ms, ApplyLock, Dirs, Pending};

/// How long `status` waits for the lock before it rolls back.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Whether `p` is past its deadline with no watcher left to roll it back.
pub fn orphaned(ports: Ports, p: &Pending) -> bool {
    now_ms() >= p.deadline_ms && !p.watcher.is_some_and(|w| ports.watchers.alive(w, &p.token))
}

/// An overdue apply a command rolled back.
#[derive(Debug, Clone)]
pub struct Settled {
    pub profile: String,
    pub previous: String,
    pub late_ms: u64,
    pub by: String,
}

impl Settled {
    pub fn describe(&self) -> String {
        format!(
            "the apply of profile {} was {} s past its deadline and its watcher was gone: `fwharden {}` rolled it back and restored {}",
            self.profile,
            self.late_ms / 1000,
            self.by,
            self.previous
        )
    }
}

/// With the apply lock held: rolls back an orphaned overdue apply, if
/// there is one. `by` names the command, for the record and the log.
pub(crate) fn settle_locked(
    ports: Ports,
    dirs: &Dirs,
    by: &str,
) -> Result<Option<Settled>, RollbackError> {
    let Some(p) = dirs.pending()?.filter(|p| orphaned(ports, p)) else {
        return Ok(None);
    };
    ports.interlock()?;
    let late_ms = now_ms().saturating_sub(p.deadline_ms);
    undo(
        ports,
        dirs,
        &p,
        &format!("overdue, its watcher gone: rolled back by `fwharden {by}`"),
    )?;
    Ok(Some(Settled {
        profile: p.profile.clone(),
        previous: p.previous_name(),
        late_ms,
        by: by.into(),
    }))
}

/// Like [`settle_locked`], taking the lock first; changes nothing and
/// takes no lock when nothing is overdue.
pub fn settle(ports: Ports, dirs: &Dirs, by: &str) -> Result<Option<Settled>, RollbackError> {
    if !dirs.pending()?.as_ref().is_some_and(|p| orphaned(ports, p)) {
        return Ok(None);
    }
    let _lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    settle_locked(ports, dirs, by)
}
