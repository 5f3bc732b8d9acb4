//! The safety net around the kernel: apply with a rollback timer, confirm,
//! roll back, restore at boot. (`status`, which also gathers the audit and
//! the containers, sits above in [`crate::status`].)
//!
//! An apply goes: lock, read what the kernel holds, lockout guard, record
//! the pending apply (with what to go back to), start the detached watcher,
//! one netlink transaction, read back and compare. Every step before the
//! transaction changes nothing in the kernel; every step after it can undo
//! it. Rollback re-applies a previous *model* through the same single
//! transaction; it never parses `nft list` output.

mod clone_into;
mod confirm;
mod disable;
#[cfg(test)]
mod faults;
pub mod guard;
pub mod history;
pub mod liveness;
mod ops;
mod overdue;
pub mod placement;
mod ports;
mod restore;
#[cfg(test)]
mod rig;
#[cfg(test)]
mod sequences;
mod steps;
mod target;
pub mod watcher;

pub use confirm::{confirm, Kept};
pub use disable::{disable, DisableOutcome};
pub use liveness::{watcher_alive, WatcherState};
pub use ops::*;
pub use overdue::*;
pub use ports::{Ports, Processes, Watchers};
pub use restore::*;

use thiserror::Error;

use crate::nft::NftError;
use crate::state::{LockError, StateError};

#[derive(Debug, Error)]
pub enum RollbackError {
    #[error(transparent)]
    Kernel(#[from] NftError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("refusing to apply: {0}; nothing was changed")]
    Lockout(String),
    #[error("starting the rollback watcher failed: {0}; nothing was changed")]
    Watcher(#[source] std::io::Error),
    #[error("the kernel does not hold what was applied ({detail}); {restored}")]
    ReadBack { detail: String, restored: String },
    #[error("nothing is pending: there is no apply to confirm")]
    NothingPending,
    #[error("too late: the apply of profile {profile} was rolled back ({reason}) {secs_ago} s ago; apply it again")]
    RolledBackAlready {
        profile: String,
        reason: String,
        secs_ago: u64,
    },
    #[error("the pending apply (profile {profile}) has another token; it is not the apply you meant to confirm")]
    OtherToken { profile: String },
    #[error("the kernel no longer holds the pending profile {profile}: something changed it; not confirming (run `fwharden status`)")]
    Drifted { profile: String },
    #[error("loading profile {profile} without its escape hatch did not read back as written; not confirmed, the rollback stays armed (run `fwharden status`)")]
    HatchKept { profile: String },
    #[error(
        "too late: the deadline of the apply of profile {profile} passed {late_secs} s ago{late}"
    )]
    PastDeadline {
        profile: String,
        late_secs: u64,
        late: Late,
    },
    #[error("restoring profile {profile} did not read back as written; run `fwharden status` and `fwharden restore`")]
    RestoreDiffers { profile: String },
    #[error("{error}; {undo}")]
    OutcomeUndone { error: NftError, undo: Undo },
    #[error(
        "{error}; and the pending record could not be put back ({state}); run `fwharden status`"
    )]
    PendingLost { error: NftError, state: StateError },
    #[error("refusing a timed apply: {state} holds no confirmed record, and table inet {table} cannot be read back as a ruleset fwharden wrote ({why}), so a rollback could only remove it; nothing was changed. If that is the wrong state directory, pass the right --state-dir (or FWHARDEN_STATE_DIR); to replace the table with no rollback timer, apply with --auto-confirm; to start from no firewall, delete it (`nft delete table inet {table}`) and apply again")]
    NoRollbackTarget {
        state: std::path::PathBuf,
        table: String,
        why: String,
    },
    #[error("refusing to disable: {} holds no confirmed ruleset, so neither the rollback timer nor `fwharden enable` could load one again; nothing was changed. Apply and confirm a profile first; or, if that is the wrong state directory, pass the right --state-dir (or FWHARDEN_STATE_DIR)", state.display())]
    DisableUnconfirmed { state: std::path::PathBuf },
    #[error("the history holds no ruleset {wanted} ({kept} kept in {}): `fwharden history` lists them; nothing was changed", state.display())]
    NotInHistory {
        wanted: String,
        state: std::path::PathBuf,
        kept: usize,
    },
    #[error("{} is damaged (its content does not match its digest, or it is not a history entry), so it is not loaded; nothing was changed. Pick another entry (`fwharden history`), or move the file away", path.display())]
    HistoryDamaged { path: std::path::PathBuf },
    #[error("the kernel holds what the apply replaced again, but its pending record could not be removed: {0}; `fwharden rollback` removes it once the cause is fixed")]
    Unrecorded(#[source] StateError),
    #[error("nothing is confirmed, and what the pending apply replaced is unknown: {0}")]
    UnknownBefore(#[source] StateError),
    #[error("{}", crate::interlock::Forbidden)]
    Interlock,
}

pub use crate::interlock::FORBID_ENV;

/// What became of an apply a confirm found past its deadline.
#[derive(Debug)]
pub enum Late {
    /// Its watcher is there and about to roll back.
    WatcherRollingBack { previous: String },
    /// This command rolled it back (see [`Settled::describe`]).
    TakenOver(Settled),
    /// Under the lock it was gone, or not due after all.
    Gone,
    /// Rolling it back here failed.
    TakeoverFailed(Box<RollbackError>),
}

impl std::fmt::Display for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Late::WatcherRollingBack { previous } => write!(
                f,
                "; its watcher is rolling it back to {previous} now; apply it again"
            ),
            Late::TakenOver(s) => write!(f, ": {}; apply it again", s.describe()),
            Late::Gone => write!(f, "; it is rolled back; apply it again"),
            Late::TakeoverFailed(e) => write!(
                f,
                " and its watcher is not acting; rolling it back failed: {e}; run `fwharden rollback`"
            ),
        }
    }
}

/// What came of undoing a commit whose outcome was unknown.
#[derive(Debug)]
pub enum Undo {
    Restored,
    Failed(Box<RollbackError>),
}

impl std::fmt::Display for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undo::Restored => write!(f, "the previous ruleset was restored"),
            Undo::Failed(e) => write!(
                f,
                "restoring the previous ruleset failed too: {e}; run `fwharden restore`"
            ),
        }
    }
}

/// [`crate::interlock::check`], as the error the rollback's callers map
/// to an exit code.
pub fn interlock() -> Result<(), RollbackError> {
    crate::interlock::check().map_err(|_| RollbackError::Interlock)
}

impl crate::exit::Coded for RollbackError {
    fn exit_code(&self) -> i32 {
        use crate::exit;
        match self {
            RollbackError::Lockout(_)
            | RollbackError::NoRollbackTarget { .. }
            | RollbackError::DisableUnconfirmed { .. }
            | RollbackError::Interlock
            | RollbackError::Lock(LockError::Busy { .. }) => exit::REFUSED,
            RollbackError::ReadBack { .. } => exit::ROLLED_BACK,
            RollbackError::Kernel(e) => e.exit_code(),
            _ => exit::FAILURE,
        }
    }
}

/// Puts back what a pending apply replaced: a ruleset, or no table.
pub fn restore_previous(
    ports: Ports,
    previous: Option<&crate::ruleset::Ruleset>,
) -> Result<(), RollbackError> {
    ports.interlock()?;
    let kernel = ports.kernel;
    match previous {
        Some(r) => {
            let report = kernel.apply_at(r, None)?;
            if !matches!(kernel.verify(r, &report)?, crate::nft::Check::Holds { .. }) {
                return Err(RollbackError::RestoreDiffers {
                    profile: r.profile.clone(),
                });
            }
        }
        None => kernel.remove_table()?,
    }
    Ok(())
}

/// How many times a rollback is tried before it gives up: a concurrent
/// writer (the read-back finds its change) or a busy kernel may fail one
/// attempt; five, 0.2 s to 1 s apart, outlast both.
const ATTEMPTS: u32 = 5;

/// Errors no second attempt can cure: trying again would only repeat them.
fn final_error(e: &RollbackError) -> bool {
    matches!(
        e,
        RollbackError::Interlock
            | RollbackError::Kernel(
                NftError::Permission { .. }
                    | NftError::NoNfTables { .. }
                    | NftError::Unsupported { .. }
            )
    )
}

/// Rolls a pending apply back: restores what it replaced (up to
/// [`ATTEMPTS`] times, each logged for `status`), drops the record and
/// notes why, so a late `confirm` can say so.
pub(crate) fn undo(
    ports: Ports,
    dirs: &crate::state::Dirs,
    record: &crate::state::Pending,
    reason: &str,
) -> Result<(), RollbackError> {
    let mut number = 0;
    loop {
        number += 1;
        let result = restore_previous(ports, record.previous.as_ref());
        let _ = dirs.log_attempt(&crate::state::Attempt {
            token: record.token.clone(),
            profile: record.profile.clone(),
            at_ms: crate::state::now_ms(),
            reason: reason.into(),
            number,
            outcome: match &result {
                Ok(()) => "ok".into(),
                Err(e) => e.to_string(),
            },
        });
        match result {
            Ok(()) => break,
            Err(e) if number >= ATTEMPTS || final_error(&e) => return Err(e),
            Err(_) => ports.kernel.backoff(number),
        }
    }
    // The note first: whoever sees the record gone (status, a late
    // confirm) finds why. It only informs: a note that cannot be written
    // (a full disk) does not keep the pending record, which would make
    // every command think the rollback still had to happen.
    let noted = dirs.save_rolled_back(&crate::state::RolledBack {
        profile: record.profile.clone(),
        token: record.token.clone(),
        at_ms: crate::state::now_ms(),
        reason: reason.into(),
    });
    if let Err(e) = noted {
        eprintln!("fwharden: warning: the rollback is done, but noting it failed: {e}");
    }
    // A killed watcher could not remove its group; a live one's (this may
    // be the watcher itself) is not empty and stays for it to remove.
    ports.watchers.forget(&dirs.run, &record.token);
    dirs.clear_pending().map_err(RollbackError::Unrecorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_race_or_a_busy_kernel_is_tried_again_a_refusal_of_principle_is_not() {
        assert!(!final_error(&RollbackError::Kernel(NftError::Raced)));
        assert!(!final_error(&RollbackError::RestoreDiffers {
            profile: "p".into()
        }));
        assert!(!final_error(&RollbackError::Kernel(NftError::Io {
            op: "sendmsg",
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        })));
        assert!(final_error(&RollbackError::Interlock));
        assert!(final_error(&RollbackError::Kernel(NftError::Permission {
            what: "x".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        })));
    }
}
