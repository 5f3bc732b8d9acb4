//! Going back: `rollback` restores what the pending apply replaced at
//! once; `restore` (at boot) loads the last confirmed ruleset, never a
//! pending one, and fails closed to the minimal safe ruleset.

use serde::Serialize;

use super::liveness::{end_stuck_watcher, end_watcher};
use super::ops::{seal_legacy, LOCK_WAIT};
use super::{interlock, restore_previous, settle_locked, undo, RollbackError};
use crate::nft;
use crate::ruleset::Ruleset;
use crate::state::{ApplyLock, Dirs, Pending};

/// Restores the previous ruleset now. `Ok(None)`: nothing was pending.
pub fn rollback(dirs: &Dirs) -> Result<Option<Pending>, RollbackError> {
    interlock()?;
    nft::generation()?;
    // A watcher stopped in the middle of its own rollback holds the lock.
    if let Ok(Some(p)) = dirs.pending() {
        end_stuck_watcher(&p, &dirs.run);
    }
    let lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    seal_legacy(dirs, &lock);
    let Some(pending) = dirs.pending()? else {
        return Ok(None);
    };
    undo(dirs, &pending, "rollback")?;
    Ok(Some(pending))
}

/// What `restore` did at boot.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restored {
    /// The last confirmed ruleset is loaded.
    Confirmed {
        profile: String,
        discarded_pending: Option<String>,
    },
    /// Nothing was ever confirmed: the firewall is left as it is.
    NothingConfirmed { discarded_pending: Option<String> },
    /// The confirmed ruleset could not be loaded; the minimal safe one was.
    Fallback { profile: String, error: String },
}

/// Loads the last confirmed ruleset, never a pending one. If it cannot be
/// loaded, loads the minimal safe ruleset rather than leave the host open.
pub fn restore(dirs: &Dirs, fallback: &Ruleset) -> Result<Restored, RollbackError> {
    interlock()?;
    nft::generation()?;
    dirs.ensure_all()?;
    let lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    seal_legacy(dirs, &lock);
    // An overdue apply with no watcher is rolled back as its own watcher
    // would have (recorded, so a late confirm says so); whatever comes of
    // it, the confirmed ruleset is loaded below.
    match settle_locked(dirs, "restore") {
        Ok(None) => {}
        Ok(Some(s)) => eprintln!("fwharden: {}", s.describe()),
        Err(e) => eprintln!(
            "fwharden: an apply was past its deadline with no watcher, and rolling it back failed ({e}); loading the confirmed ruleset instead"
        ),
    }
    let discarded = dirs
        .pending()
        .map(|p| p.inspect(|p| end_watcher(p, &dirs.run)));
    let discarded_name = match &discarded {
        Ok(p) => p.as_ref().map(|p| p.profile.clone()),
        Err(_) => Some("(damaged record)".into()),
    };
    dirs.clear_pending()?;
    let confirmed = match (dirs.confirmed(), discarded) {
        (Ok(None), Ok(discarded)) => {
            // A discarded unconfirmed apply goes back to what it replaced
            // (at boot the table is gone anyway): the state before it, or
            // the table the kernel held then, or none if there was none.
            if let Some(p) = &discarded {
                restore_previous(p.previous.as_ref())?;
            }
            return Ok(Restored::NothingConfirmed {
                discarded_pending: discarded.map(|p| p.profile),
            });
        }
        // A damaged pending record with nothing confirmed: what came before
        // it is unknown. Fail closed, never to no firewall.
        (Ok(None), Err(e)) => Err(RollbackError::UnknownBefore(e)),
        (Ok(Some(c)), _) => Ok(c),
        (Err(e), _) => Err(RollbackError::from(e)),
    };
    let loaded = confirmed.and_then(|c| restore_previous(Some(&c.ruleset)).map(|()| c.profile));
    match loaded {
        Ok(profile) => Ok(Restored::Confirmed {
            profile,
            discarded_pending: discarded_name,
        }),
        Err(e) => {
            restore_previous(Some(fallback))?;
            Ok(Restored::Fallback {
                profile: fallback.profile.clone(),
                error: e.to_string(),
            })
        }
    }
}
