//! fwharden's state on disk: the last confirmed ruleset, the pending apply
//! waiting for confirmation, and the lock that keeps applies one at a time.
//!
//! Both records live in the state directory (`/var/lib/fwharden`), which
//! survives a reboot: `restore` at boot sees an unconfirmed apply there and
//! loads the confirmed ruleset instead. The lock lives in the run directory
//! (`/run/fwharden`). Every file is root-only and written atomically. Big
//! prefix lists are kept once, in files of their own (`lists`).

pub mod atomic;
mod known;
mod lists;
mod lock;
mod sealed;
mod store;

pub use known::Known;
pub use lock::{ApplyLock, LockError};
pub use store::{
    now, now_ms, Attempt, Confirmed, Dirs, Origin, Pending, PendingHead, RolledBack, Stamp,
    StateError, RUN_DIR, STATE_DIR,
};
