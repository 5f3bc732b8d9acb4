//! Going back: `rollback` restores what the pending apply replaced at
//! once; `restore` (at boot) loads the last confirmed ruleset, never a
//! pending one (nothing when a disable was confirmed), and fails closed to
//! the minimal safe ruleset.

use serde::Serialize;

use super::ops::{seal_legacy, LOCK_WAIT};
use super::{restore_previous, settle_locked, undo, Ports, RollbackError};
use crate::ruleset::Ruleset;
use crate::state::{ApplyLock, Dirs, Pending};

/// Restores the previous ruleset now. `Ok(None)`: nothing was pending.
pub fn rollback(ports: Ports, dirs: &Dirs) -> Result<Option<Pending>, RollbackError> {
    ports.interlock()?;
    ports.kernel.generation()?;
    // A watcher stopped in the middle of its own rollback holds the lock.
    if let Ok(Some(p)) = dirs.pending() {
        ports.end_stuck_watcher(&p, &dirs.run);
    }
    let lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    seal_legacy(dirs, &lock);
    let Some(pending) = dirs.pending()? else {
        return Ok(None);
    };
    undo(ports, dirs, &pending, "rollback")?;
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
    /// A disable was confirmed: no fwharden table is loaded (one there is
    /// removed); `enable` loads `enable_loads` again.
    Disabled {
        enable_loads: String,
        discarded_pending: Option<String>,
    },
    /// The confirmed ruleset could not be loaded; the minimal safe one was.
    Fallback { profile: String, error: String },
}

/// Loads the last confirmed ruleset, never a pending one. If it cannot be
/// loaded, loads the minimal safe ruleset rather than leave the host open.
pub fn restore(ports: Ports, dirs: &Dirs, fallback: &Ruleset) -> Result<Restored, RollbackError> {
    ports.interlock()?;
    ports.kernel.generation()?;
    dirs.ensure_all()?;
    let lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    seal_legacy(dirs, &lock);
    // An overdue apply with no watcher is rolled back as its own watcher
    // would have (recorded, so a late confirm says so); whatever comes of
    // it, the confirmed ruleset is loaded below.
    match settle_locked(ports, dirs, "restore") {
        Ok(None) => {}
        Ok(Some(s)) => eprintln!("fwharden: {}", s.describe()),
        Err(e) => eprintln!(
            "fwharden: an apply was past its deadline with no watcher, and rolling it back failed ({e}); loading the confirmed ruleset instead"
        ),
    }
    // The pending apply is discarded only once something else is loaded:
    // if every load fails, its record and its watcher stay, and its
    // deadline still rolls it back (a restore that fails changes nothing).
    let (discarded, damaged) = match dirs.pending() {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let discarded_name = match (&discarded, &damaged) {
        (Some(p), _) => Some(p.profile.clone()),
        (None, Some(_)) => Some("(damaged record)".into()),
        (None, None) => None,
    };
    let discard = |pending: Option<&Pending>| -> Result<(), RollbackError> {
        if let Some(p) = pending {
            ports.watchers.end(p, &dirs.run);
        }
        Ok(dirs.clear_pending()?)
    };
    // Disabled, the confirmed state is no table. A damaged marker says
    // nothing trustworthy about whether there should be a firewall: the
    // minimal safe one is loaded, as for a damaged confirmed record.
    let confirmed = match dirs.disabled() {
        Ok(Some(d)) => {
            restore_previous(ports, None)?;
            discard(discarded.as_ref())?;
            return Ok(Restored::Disabled {
                enable_loads: d.profile,
                discarded_pending: discarded_name,
            });
        }
        Ok(None) => dirs.confirmed(),
        Err(e) => Err(e),
    };
    let confirmed = match (confirmed, damaged) {
        (Ok(None), None) => {
            // A discarded unconfirmed apply goes back to what it replaced
            // (at boot the table is gone anyway): the state before it, or
            // the table the kernel held then, or none if there was none.
            if let Some(p) = &discarded {
                restore_previous(ports, p.previous.as_ref())?;
            }
            discard(discarded.as_ref())?;
            return Ok(Restored::NothingConfirmed {
                discarded_pending: discarded_name,
            });
        }
        // A damaged pending record with nothing confirmed: what came before
        // it is unknown. Fail closed, never to no firewall.
        (Ok(None), Some(e)) => Err(RollbackError::UnknownBefore(e)),
        (Ok(Some(c)), _) => Ok(c),
        (Err(e), _) => Err(RollbackError::from(e)),
    };
    let loaded =
        confirmed.and_then(|c| restore_previous(ports, Some(&c.ruleset)).map(|()| c.profile));
    let restored = match loaded {
        Ok(profile) => Restored::Confirmed {
            profile,
            discarded_pending: discarded_name,
        },
        Err(e) => {
            restore_previous(ports, Some(fallback))?;
            Restored::Fallback {
                profile: fallback.profile.clone(),
                error: e.to_string(),
            }
        }
    };
    discard(discarded.as_ref())?;
    Ok(restored)
}
