//! `fwharden disable`: removes table inet fwharden with the rollback timer,
//! as an apply loads a ruleset. Its pending record loads "no table"; the
//! rollback target is the confirmed ruleset, so an unconfirmed disable (a
//! host that lost its network without the firewall, an operator who
//! changed their mind) comes back by itself. Confirmed, it leaves the
//! disabled marker (see `state::disabled`): `restore` then loads nothing.
//! `enable` is an apply of the confirmed ruleset (see the command line).

use serde::Serialize;

use super::ops::{after_failed_commit, rollback_target};
use super::steps::{arm, read_back_failed, read_held, Before, Locked};
use super::target::Held;
use super::{Ports, RollbackError};
use crate::nft::NftError;
use crate::state::Dirs;

/// What a disable did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DisableOutcome {
    /// fwharden is disabled already: no table, nothing pending.
    Already { enable_loads: String },
    /// The table is gone, waiting for `fwharden confirm` until
    /// `deadline_ms`; unconfirmed, `rollback_to` is loaded again.
    Pending {
        deadline_ms: u64,
        token: String,
        watcher: u32,
        watcher_lives: String,
        rollback_to: String,
    },
}

/// Removes table inet fwharden, with a rollback to the confirmed ruleset
/// after `timeout_secs` unless confirmed.
pub fn disable(
    ports: Ports,
    dirs: &Dirs,
    timeout_secs: u64,
) -> Result<DisableOutcome, RollbackError> {
    let kernel = ports.kernel;
    // Without CAP_NET_ADMIN, say so before the root-only state directory.
    let generation_now = kernel.generation()?;
    let Locked {
        _lock,
        _bans_wait,
        confirmed,
        pending,
        disabled,
    } = Locked::take(ports, dirs, "disable")?;
    let (_, held) = read_held(kernel, confirmed.as_ref(), generation_now)?;
    if let (Some(d), None, Held::Nothing) = (&disabled, &pending, &held) {
        return Ok(DisableOutcome::Already {
            enable_loads: d.profile.clone(),
        });
    }
    // The marker keeps the confirmed record for `enable`: without one,
    // nothing could ever be loaded again but by an apply.
    if confirmed.is_none() && disabled.is_none() {
        return Err(RollbackError::DisableUnconfirmed {
            state: dirs.state.clone(),
        });
    }
    let before = Before::of(&confirmed, &disabled, &pending);
    let target = rollback_target(dirs, &before, &held, false)?;
    let record = arm(
        ports,
        dirs,
        pending.as_ref(),
        None,
        target,
        timeout_secs,
        false,
    )?;
    let current = held.as_current();
    crate::progress::phase("transaction");
    if let Err(e) = kernel.remove_table() {
        return Err(after_failed_commit(
            ports,
            dirs,
            &record,
            pending.as_ref(),
            current.as_deref(),
            e,
        ));
    }
    crate::progress::phase("verifying");
    let failed = match kernel.read_table() {
        Ok(None) => None,
        Ok(Some(_)) | Err(NftError::Foreign { .. }) => Some((
            "read-back mismatch",
            "the table is still there after its removal".to_string(),
        )),
        Err(e) => Some(("read-back failed", format!("the read-back failed: {e}"))),
    };
    if let Some((reason, detail)) = failed {
        return Err(read_back_failed(ports, dirs, &record, reason, detail));
    }
    Ok(DisableOutcome::Pending {
        rollback_to: record.previous_name(),
        deadline_ms: record.deadline_ms,
        watcher: record.watcher.unwrap_or_default(),
        watcher_lives: record.watcher_lives.unwrap_or_default(),
        token: record.token,
    })
}
