//! `fwharden confirm`: the pending ruleset becomes the confirmed one, loaded
//! without its escape hatch in one transaction (a pending disable becomes
//! the disabled marker); after the deadline it is refused, and an orphaned
//! apply is rolled back on the spot.

use super::ops::{foreign_as_drift, LOCK_WAIT};
use super::{orphaned, settle_locked, Late, Ports, RollbackError};
use crate::nft;
use crate::ruleset::hatch;
use crate::state::{now, now_ms, ApplyLock, Confirmed, Dirs, Disabled, Pending, Stamp};

/// What a confirm kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// This profile's ruleset: what `restore` loads at boot.
    Ruleset { profile: String },
    /// No fwharden table: `restore` loads nothing until `enable` or the
    /// next confirmed apply; `enable` loads `profile` again.
    Disabled { profile: String },
}

pub(super) fn confirm_record(
    ports: Ports,
    dirs: &Dirs,
    record: Pending,
    seen: Option<Stamp>,
) -> Result<Kept, RollbackError> {
    let kept = match record.ruleset {
        Some(ruleset) => {
            // Any confirmed apply ends a disable. The marker goes first: a
            // failure in between leaves boot loading the ruleset confirmed
            // before, never nothing.
            dirs.clear_disabled()?;
            dirs.save_confirmed(&Confirmed {
                profile: record.profile.clone(),
                ruleset,
                confirmed_at: now(),
                seen,
                proven: record.proven,
            })?;
            Kept::Ruleset {
                profile: record.profile.clone(),
            }
        }
        None => {
            // What it went back to is the confirmed ruleset it disabled.
            let profile = record
                .previous
                .as_ref()
                .map_or_else(|| "(none)".to_string(), |r| r.profile.clone());
            dirs.save_disabled(&Disabled {
                profile: profile.clone(),
                since: now(),
            })?;
            Kept::Disabled { profile }
        }
    };
    // The watcher sees the record gone at its next look and exits.
    dirs.clear_pending()?;
    // A watcher killed before this confirm could not remove its group.
    ports.watchers.forget(&dirs.run, &record.token);
    Ok(kept)
}

/// Makes the pending ruleset the confirmed one: loads it without its
/// escape hatch, in one transaction, and records it. After the deadline it
/// refuses; if the watcher is gone it rolls back first.
pub fn confirm(ports: Ports, dirs: &Dirs, token: Option<&str>) -> Result<Kept, RollbackError> {
    let kernel = ports.kernel;
    kernel.generation()?;
    let lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    super::ops::seal_legacy(dirs, &lock);
    // Bans wait from the read below to the read-back (see `nft::BanGate`).
    let _bans_wait = kernel.hold_bans();
    let Some(pending) = dirs.pending()? else {
        let late = dirs
            .rolled_back()?
            .filter(|r| token.is_none_or(|t| t == r.token));
        return Err(match late {
            Some(r) => RollbackError::RolledBackAlready {
                secs_ago: now_ms().saturating_sub(r.at_ms) / 1000,
                profile: r.profile,
                reason: r.reason,
            },
            None => RollbackError::NothingPending,
        });
    };
    if let Some(t) = token {
        if t != pending.token {
            return Err(RollbackError::OtherToken {
                profile: pending.profile,
            });
        }
    }
    if now_ms() >= pending.deadline_ms {
        return Err(too_late(ports, dirs, &pending));
    }
    let (generation, table) = match kernel.read_table_at() {
        Ok(read) => read,
        Err(e) => (kernel.generation()?, foreign_as_drift(e)?),
    };
    if table != pending.ruleset {
        return Err(RollbackError::Drifted {
            profile: pending.profile,
        });
    }
    let keep = pending.ruleset.as_ref().map(hatch::without_hatch);
    let seen = match (&keep, keep == pending.ruleset) {
        (Some(keep), false) => {
            // Only if nobody wrote since the read above; if this fails the
            // record stays and the watcher keeps the deadline.
            let report = super::ops::commit_retrying(kernel, table.as_ref(), generation, |g| {
                kernel.apply_at(keep, Some(g))
            })?;
            let nft::Check::Holds { generation, .. } = kernel.verify(keep, &report)? else {
                return Err(RollbackError::HatchKept {
                    profile: pending.profile,
                });
            };
            Stamp::at(generation)
        }
        // No hatch to take out (none was loaded, or a disable loaded no
        // table at all): the kernel holds what is kept.
        _ => Stamp::at(generation),
    };
    confirm_record(
        ports,
        dirs,
        Pending {
            ruleset: keep,
            ..pending
        },
        seen,
    )
}

/// A confirm after the deadline: refused. A watcher that is still there
/// is about to roll back (it waits for the lock this confirm holds); one
/// that is gone cannot, so the rollback happens here.
fn too_late(ports: Ports, dirs: &Dirs, pending: &Pending) -> RollbackError {
    let late = if !orphaned(ports, pending, &dirs.run) {
        Late::WatcherRollingBack {
            previous: pending.previous_name(),
        }
    } else {
        match settle_locked(ports, dirs, "confirm") {
            Ok(Some(s)) => Late::TakenOver(s),
            Ok(None) => Late::Gone,
            Err(e) => Late::TakeoverFailed(Box::new(e)),
        }
    };
    RollbackError::PastDeadline {
        profile: pending.profile.clone(),
        late_secs: now_ms().saturating_sub(pending.deadline_ms) / 1000,
        late,
    }
}
