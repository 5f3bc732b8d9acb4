//! The steps every change of the kernel takes, whatever it loads (a
//! profile's ruleset for `apply`, `rollback --to` and `enable`; no table
//! for `disable`): take the lock and read the records, learn what the
//! kernel holds, arm the rollback before the kernel changes, and undo a
//! change that does not read back.

use std::io::Read;

use super::target::{Held, Target};
use super::{settle_locked, undo, Ports, RollbackError};
use crate::kernel::Kernel;
use crate::nft::{BanGate, NftError};
use crate::ruleset::Ruleset;
use crate::state::{now_ms, ApplyLock, Confirmed, Dirs, Disabled, Pending, Stamp};

/// The apply lock held, fwharden's own bans held back, and the records
/// as they are under the lock.
pub(super) struct Locked {
    pub _lock: ApplyLock,
    pub _bans_wait: Option<BanGate>,
    pub confirmed: Option<Confirmed>,
    pub pending: Option<Pending>,
    pub disabled: Option<Disabled>,
}

impl Locked {
    /// Takes the lock (refused at once when another apply holds it),
    /// seals older records, rolls back an overdue apply (`by` names the
    /// command), and reads the records. A damaged record stops here:
    /// what to go back to would be unknown.
    pub fn take(ports: Ports, dirs: &Dirs, by: &str) -> Result<Locked, RollbackError> {
        ports.interlock()?;
        dirs.ensure_all()?;
        let lock = ApplyLock::try_take(&dirs.lock_path())?;
        super::ops::seal_legacy(dirs, &lock);
        // fwharden's own bans wait from here to the read-back, so that a
        // busy fail2ban does not move the generation under the read, the
        // compare-and-swap and the proof of big sets (see `nft::BanGate`).
        let bans_wait = ports.kernel.hold_bans();
        if let Some(s) = settle_locked(ports, dirs, by)? {
            eprintln!("fwharden: {}", s.describe());
        }
        Ok(Locked {
            confirmed: dirs.confirmed()?,
            pending: dirs.pending()?,
            disabled: dirs.disabled()?,
            _lock: lock,
            _bans_wait: bans_wait,
        })
    }
}

/// What the records say came before a change: its rollback target is
/// chosen from these (see `target`).
pub(super) struct Before<'a> {
    pub confirmed: Option<&'a Confirmed>,
    pub disabled: Option<&'a Disabled>,
    pub replaced: Option<&'a Pending>,
}

impl<'a> Before<'a> {
    pub fn of(
        confirmed: &'a Option<Confirmed>,
        disabled: &'a Option<Disabled>,
        pending: &'a Option<Pending>,
    ) -> Before<'a> {
        Before {
            confirmed: confirmed.as_ref(),
            disabled: disabled.as_ref(),
            replaced: pending.as_ref(),
        }
    }
}

/// What the kernel holds, and the generation the decisions are based on:
/// the transaction commits only if nobody else wrote since
/// (compare-and-swap). When nobody has committed since the confirmed
/// ruleset was last proven in the kernel (`generation_now` is its stamp),
/// it is what the kernel holds: no need to list (for big sets, at O(n²))
/// what is already known.
pub(super) fn read_held(
    kernel: &dyn Kernel,
    confirmed: Option<&Confirmed>,
    generation_now: u32,
) -> Result<(u32, Held), NftError> {
    let known = confirmed.filter(|c| c.seen.is_some() && c.seen == Stamp::at(generation_now));
    match known {
        Some(c) => Ok((generation_now, Held::Table(c.ruleset.clone()))),
        None => Held::read(kernel),
    }
}

/// Writes the pending record of a change that loads `ruleset` (`None`: no
/// table) and starts its watcher, before the kernel changes: a kill at
/// any moment after still ends in a rollback. `replaced` is the pending
/// apply this one replaces. Returns the record as written, its watcher in.
pub(super) fn arm(
    ports: Ports,
    dirs: &Dirs,
    replaced: Option<&Pending>,
    ruleset: Option<Ruleset>,
    target: Target,
    timeout_secs: u64,
    proven: bool,
) -> Result<Pending, RollbackError> {
    // An apply killed between making its watcher's group and moving the
    // watcher in left the group empty; this one replaces its record.
    if let Some(old) = replaced {
        ports.watchers.forget(&dirs.run, &old.token);
    }
    let mut record = Pending {
        profile: ruleset
            .as_ref()
            .map_or_else(|| DISABLE.to_string(), |r| r.profile.clone()),
        ruleset,
        previous: target.previous,
        previous_from: target.source,
        applied_ms: now_ms(),
        deadline_ms: now_ms() + timeout_secs * 1000,
        token: token(),
        watcher: None,
        watcher_lives: None,
        proven,
    };
    crate::progress::phase("arming the rollback");
    dirs.save_pending(&record)?;
    let spawned = match ports.watchers.spawn(dirs, &record.token) {
        Ok(s) => s,
        Err(e) => {
            dirs.clear_pending()?;
            return Err(e);
        }
    };
    record.watcher = Some(spawned.pid);
    record.watcher_lives = Some(spawned.placement.describe());
    if let Err(e) = dirs.save_pending(&record) {
        // The kernel is untouched: take back what this apply left (the
        // first record, the watcher and its group), not a half-armed apply.
        let _ = dirs.clear_pending();
        ports.watchers.end(&record, &dirs.run);
        return Err(e.into());
    }
    Ok(record)
}

/// How a pending disable names itself where an apply names its profile
/// (`status`, the rollback notes, a late confirm).
pub const DISABLE: &str = "(disable: no fwharden table)";

/// The change did not read back as made: it is undone now, named for
/// what happened (`reason` goes into the attempt log), rather than left to
/// the watcher's deadline.
pub(super) fn read_back_failed(
    ports: Ports,
    dirs: &Dirs,
    record: &Pending,
    reason: &str,
    detail: String,
) -> RollbackError {
    let restored = match undo(ports, dirs, record, reason) {
        Ok(()) => "the previous ruleset was restored".to_string(),
        Err(e) => format!("restoring the previous ruleset failed too: {e}; run `fwharden restore`"),
    };
    RollbackError::ReadBack { detail, restored }
}

fn token() -> String {
    let mut bytes = [0u8; 12];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if ok.is_err() {
        // Uniqueness is what matters, not secrecy: a token only tells one
        // apply from the next.
        bytes[..8].copy_from_slice(&now_ms().to_le_bytes());
        bytes[8..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
