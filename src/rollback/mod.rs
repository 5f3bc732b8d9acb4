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

mod confirm;
pub mod guard;
mod ops;
mod overdue;
pub mod placement;
pub mod watcher;

pub use confirm::confirm;
pub use ops::*;
pub use overdue::*;

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
    #[error("{0}")]
    Refused(String),
    #[error("{}", crate::interlock::Forbidden)]
    Interlock,
}

pub use crate::interlock::FORBID_ENV;

/// Whether `pid` is the watcher of the apply with this token. After a
/// reboot the recorded pid may belong to any other process: only a process
/// whose command line carries `watch` and the token counts.
pub fn watcher_alive(pid: u32, token: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&b"watch".as_slice()) && args.contains(&token.as_bytes())
}

/// [`crate::interlock::check`], as the error the rollback's callers map
/// to an exit code.
pub fn interlock() -> Result<(), RollbackError> {
    crate::interlock::check().map_err(|_| RollbackError::Interlock)
}

impl RollbackError {
    /// The exit code the CLI gives this error.
    pub fn exit_code(&self) -> i32 {
        use crate::exit;
        match self {
            RollbackError::Lockout(_)
            | RollbackError::Interlock
            | RollbackError::Lock(LockError::Busy { .. }) => exit::REFUSED,
            RollbackError::ReadBack { .. } => exit::ROLLED_BACK,
            _ => exit::FAILURE,
        }
    }
}

/// Puts back what a pending apply replaced: a ruleset, or no table.
pub fn restore_previous(previous: Option<&crate::ruleset::Ruleset>) -> Result<(), RollbackError> {
    interlock()?;
    match previous {
        Some(r) => {
            let report = crate::nft::apply(r)?;
            if !matches!(
                crate::nft::verify(r, &report)?,
                crate::nft::Check::Holds { .. }
            ) {
                return Err(RollbackError::Refused(format!(
                    "restoring profile {} did not read back as written; run `fwharden status` and `fwharden restore`",
                    r.profile
                )));
            }
        }
        None => crate::nft::remove_table()?,
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
    dirs: &crate::state::Dirs,
    record: &crate::state::Pending,
    reason: &str,
) -> Result<(), RollbackError> {
    let mut number = 0;
    loop {
        number += 1;
        let result = restore_previous(record.previous.as_ref());
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
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200 * u64::from(number))),
        }
    }
    // The note first: whoever sees the record gone (status, a late
    // confirm) finds why.
    dirs.save_rolled_back(&crate::state::RolledBack {
        profile: record.profile.clone(),
        token: record.token.clone(),
        at_ms: crate::state::now_ms(),
        reason: reason.into(),
    })?;
    dirs.clear_pending()?;
    // A killed watcher could not remove its group; a live one's (this may
    // be the watcher itself) is not empty and stays for it to remove.
    placement::remove_left_group(&record.token, &dirs.run);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_race_or_a_busy_kernel_is_tried_again_a_refusal_of_principle_is_not() {
        assert!(!final_error(&RollbackError::Kernel(NftError::Raced)));
        assert!(!final_error(&RollbackError::Refused(
            "did not read back as written".into()
        )));
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

    #[test]
    fn overdue_and_orphaned_needs_both_the_deadline_and_no_watcher() {
        let record = |deadline_ms, watcher| crate::state::Pending {
            profile: "p".into(),
            ruleset: crate::ruleset::Ruleset {
                profile: "p".into(),
                table: "fwharden".into(),
                sets: vec![],
                chains: vec![],
                bans: None,
            },
            previous: None,
            applied_ms: 0,
            deadline_ms,
            token: "no-such-token".into(),
            watcher,
            watcher_lives: None,
        };
        let now = crate::state::now_ms();
        assert!(orphaned(&record(now - 1, None)));
        // A pid that is not a watcher of this token counts as gone.
        assert!(orphaned(&record(now - 1, Some(std::process::id()))));
        assert!(!orphaned(&record(now + 60_000, None)));
    }
}
