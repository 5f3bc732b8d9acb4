//! `fwharden confirm`: the pending ruleset becomes the confirmed one, loaded
//! without its escape hatch in one transaction; after the deadline it is
//! refused, and an orphaned apply is rolled back on the spot.

use super::ops::{foreign_as_drift, LOCK_WAIT};
use super::{orphaned, settle_locked, RollbackError};
use crate::nft;
use crate::ruleset::hatch;
use crate::state::{now, now_ms, ApplyLock, Confirmed, Dirs, Pending, Stamp};

pub(super) fn confirm_record(
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
    super::placement::remove_left_group(&record.token, &dirs.run);
    Ok(())
}

/// Makes the pending ruleset the confirmed one: loads it without its
/// escape hatch, in one transaction, and records it. After the deadline it
/// refuses; if the watcher is gone it rolls back first.
pub fn confirm(dirs: &Dirs, token: Option<&str>) -> Result<String, RollbackError> {
    nft::generation()?;
    let _lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    // Bans wait from the read below to the read-back (see `nft::BanGate`).
    let _bans_wait = nft::BanGate::close();
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
        return Err(too_late(dirs, &pending));
    }
    let (generation, table) = match nft::read_table_at() {
        Ok(read) => read,
        Err(e) => (nft::generation()?, foreign_as_drift(e)?),
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
        let report = super::ops::commit_retrying(table.as_ref(), generation, |g| {
            nft::apply_at(&keep, Some(g))
        })?;
        let nft::Check::Holds { generation, .. } = nft::verify(&keep, &report)? else {
            return Err(RollbackError::Refused(format!(
                "loading profile {} without its escape hatch did not read back as written; not confirmed, the rollback stays armed (run `fwharden status`)",
                pending.profile
            )));
        };
        Stamp::at(generation)
    };
    let profile = pending.profile.clone();
    confirm_record(
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
fn too_late(dirs: &Dirs, pending: &Pending) -> RollbackError {
    let late = now_ms().saturating_sub(pending.deadline_ms) / 1000;
    let head = format!(
        "too late: the deadline of the apply of profile {} passed {late} s ago",
        pending.profile
    );
    if !orphaned(pending) {
        return RollbackError::Refused(format!(
            "{head}; its watcher is rolling it back to {} now; apply it again",
            pending.previous_name()
        ));
    }
    match settle_locked(dirs, "confirm") {
        Ok(_) => RollbackError::Refused(format!(
            "{head} and its watcher was gone (killed?): rolled back now, restored {}; apply it again",
            pending.previous_name()
        )),
        Err(e) => RollbackError::Refused(format!(
            "{head} and its watcher was gone (killed?); rolling it back failed: {e}; run `fwharden rollback`"
        )),
    }
}
