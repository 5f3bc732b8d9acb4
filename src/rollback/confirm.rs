//! `fwharden confirm`: the pending ruleset becomes the confirmed one, loaded
//! without its escape hatch in one transaction; after the deadline it is
//! refused, and an orphaned apply is rolled back on the spot.

use super::ops::{foreign_as_drift, LOCK_WAIT};
use super::{orphaned, settle_locked, Ports, RollbackError};
use crate::nft;
use crate::ruleset::hatch;
use crate::state::{now, now_ms, ApplyLock, Confirmed, Dirs, Pending, Stamp};

pub(super) fn confirm_record(
    ports: Ports,
    dirs: &Dirs,
    record: Pending,
    seen: Option<Stamp>,
) -> Result<(), RollbackError> {
    dirs.save_confirmed(&Confirmed {
        profile: record.profile,
        ruleset: record.ruleset,
        confirmed_at: now(),
        seen,
    })?;
    // The watcher sees the record gone at its next look and exits.
    dirs.clear_pending()?;
    // A watcher killed before this confirm could not remove its group.
    ports.watchers.forget(&dirs.run, &record.token);
    Ok(())
}

/// Makes the pending ruleset the confirmed one: loads it without its
/// escape hatch, in one transaction, and records it. After the deadline it
/// refuses; if the watcher is gone it rolls back first.
pub fn confirm(ports: Ports, dirs: &Dirs, token: Option<&str>) -> Result<String, RollbackError> {
    let kernel = ports.kernel;
    kernel.generation()?;
    let lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    super::ops::seal_legacy(dirs, &lock);
    let Some(pending) = dirs.pending()? else {
        let late = dirs
            .rolled_back()?
            .filter(|r| token.is_none_or(|t| t == r.token));
        return Err(RollbackError::Refused(match late {
            Some(r) => format!(
                "too late: the apply of profile {} was rolled back ({}) {} s ago; apply it again",
                r.profile,
                r.reason,
                now_ms().saturating_sub(r.at_ms) / 1000
            ),
            None => "nothing is pending: there is no apply to confirm".into(),
        }));
    };
    if let Some(t) = token {
        if t != pending.token {
            return Err(RollbackError::Refused(format!(
                "the pending apply (profile {}) has another token; it is not the apply you meant to confirm",
                pending.profile
            )));
        }
    }
    if now_ms() >= pending.deadline_ms {
        return Err(too_late(ports, dirs, &pending));
    }
    let (generation, table) = match kernel.read_table_at() {
        Ok(read) => read,
        Err(e) => (kernel.generation()?, foreign_as_drift(e)?),
    };
    if table.as_ref() != Some(&pending.ruleset) {
        return Err(RollbackError::Refused(format!(
            "the kernel no longer holds the pending profile {}: something changed it; not confirming (run `fwharden status`)",
            pending.profile
        )));
    }
    let keep = hatch::without_hatch(&pending.ruleset);
    let seen = if keep == pending.ruleset {
        Stamp::at(generation)
    } else {
        // Only if nobody wrote since the read above; if this fails the
        // record stays and the watcher keeps the deadline.
        let report = super::ops::commit_retrying(kernel, table.as_ref(), generation, |g| {
            kernel.apply_at(&keep, Some(g))
        })?;
        let nft::Check::Holds { generation, .. } = kernel.verify(&keep, &report)? else {
            return Err(RollbackError::Refused(format!(
                "loading profile {} without its escape hatch did not read back as written; not confirmed, the rollback stays armed (run `fwharden status`)",
                pending.profile
            )));
        };
        Stamp::at(generation)
    };
    let profile = pending.profile.clone();
    confirm_record(
        ports,
        dirs,
        Pending {
            ruleset: keep,
            ..pending
        },
        seen,
    )?;
    Ok(profile)
}

/// A confirm after the deadline: refused. A watcher that is still there
/// is about to roll back (it waits for the lock this confirm holds); one
/// that is gone cannot, so the rollback happens here.
fn too_late(ports: Ports, dirs: &Dirs, pending: &Pending) -> RollbackError {
    let late = now_ms().saturating_sub(pending.deadline_ms) / 1000;
    let head = format!(
        "too late: the deadline of the apply of profile {} passed {late} s ago",
        pending.profile
    );
    if !orphaned(ports, pending, &dirs.run) {
        return RollbackError::Refused(format!(
            "{head}; its watcher is rolling it back to {} now; apply it again",
            pending.previous_name()
        ));
    }
    match settle_locked(ports, dirs, "confirm") {
        Ok(Some(s)) => RollbackError::Refused(format!("{head}: {}; apply it again", s.describe())),
        // Under the lock the apply was gone or not due after all.
        Ok(None) => RollbackError::Refused(format!("{head}; it is rolled back; apply it again")),
        Err(e) => RollbackError::Refused(format!(
            "{head} and its watcher is not acting; rolling it back failed: {e}; run `fwharden rollback`"
        )),
    }
}
