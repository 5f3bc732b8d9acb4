//! fwharden's state on disk: the last confirmed ruleset, the pending apply
//! waiting for confirmation, and the lock that keeps applies one at a time.
//!
//! Both records live in the state directory (`/var/lib/fwharden`), which
//! survives a reboot: `restore` at boot sees an unconfirmed apply there and
//! loads the confirmed ruleset instead. The lock lives in the run directory
//! (`/run/fwharden`). Every file is root-only and written atomically. Big
//! prefix lists are kept once, in files of their own (`lists`). The last
//! confirmed rulesets are kept for `rollback --to` (`history`), and a
//! confirmed `disable` leaves a marker that `restore` honours (`disabled`).

pub mod atomic;
mod disabled;
mod history;
mod known;
mod lists;
mod lock;
mod sealed;
mod store;

pub use disabled::Disabled;
pub use history::{
    Entry as HistoryEntry, Head as HistoryHead, Listed, Summary, KEPT as HISTORY_KEPT,
};
pub use known::Known;
pub use lock::{ApplyLock, LockError};
pub use store::{
    now, now_ms, Attempt, Confirmed, Dirs, Origin, Pending, PendingHead, RolledBack, Stamp,
    StateError, RUN_DIR, STATE_DIR,
};
