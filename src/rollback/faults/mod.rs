//! Every failure the kernel can report, at every step of apply, confirm,
//! rollback, restore and the overdue path, on the in-memory kernel. Each
//! test says what the kernel holds after, what the records say, the exit
//! code and the message.
//!
//! | kernel call     | apply                                  | confirm                      | rollback / deadline / overdue      | restore                  |
//! |-----------------|----------------------------------------|------------------------------|------------------------------------|--------------------------|
//! | generation      | `apply_generation_unreadable`          | `confirm_generation_…`       | `rollback_generation_unreadable`   | `restore_generation_…`   |
//! | read_table_at   | `apply_read_fails`                     | `confirm_sees_an_edit`       |                                    |                          |
//! | ban_state       | (guard only: over SSH)                 |                              |                                    |                          |
//! | apply_at        | `apply_commit_refused`, `…_raced_*`    | `confirm_hatch_commit_raced` | `rollback_previous_fails_to_load`  | `restore_confirmed_fails`|
//! | lost answer     | `apply_outcome_unknown_*`              |                              |                                    |                          |
//! | apply_delta     | `apply_delta_refused`                  |                              |                                    |                          |
//! | verify          | `apply_read_back_*`, `…_moves`         |                              | `rollback_read_back_differs`       |                          |
//! | remove_table    |                                        |                              | `rollback_remove_refused`          |                          |
//! | watcher         | `apply_watcher_fails_to_start`         | `confirm_late_watcher_gone`  | `overdue_taken_over_by_apply`      | `restore_stops_watcher`  |
//!
//! `disable` (its remove refused, lost, or read back holding the table),
//! the disabled marker (`restore` loads nothing; damaged, it falls back
//! closed) and `rollback --to` (a damaged history entry) are in `undo`.

mod apply;
mod settle;
mod undo;

use super::rig::{compiled, Rig};
use super::{ApplyOptions, ApplyOutcome, RollbackError};
use crate::exit::Coded;
use crate::ruleset::Ruleset;

pub(super) fn timed() -> ApplyOptions {
    ApplyOptions {
        timeout: 600,
        auto_confirm: false,
        force: false,
        dry_run: false,
        operator: super::rig::console(),
        proven: false,
    }
}

pub(super) fn confirmed_at_once() -> ApplyOptions {
    ApplyOptions {
        auto_confirm: true,
        ..timed()
    }
}

/// A rig whose kernel holds `web-server`, applied and confirmed.
pub(super) fn confirmed_rig() -> (Rig, Ruleset) {
    let rig = Rig::new();
    let old = compiled("web-server");
    super::apply(rig.ports(), &rig.dirs, &old, &confirmed_at_once()).expect("first apply");
    assert_eq!(rig.confirmed().as_ref(), Some(&old));
    (rig, old)
}

pub(super) fn apply_new(rig: &Rig) -> Result<ApplyOutcome, RollbackError> {
    super::apply(rig.ports(), &rig.dirs, &compiled("ssh-only"), &timed())
}

pub(super) fn attempts(rig: &Rig) -> usize {
    rig.dirs.attempts().unwrap_or_default().len()
}

/// The apply failed with exit `code` saying the previous ruleset was
/// restored: the kernel holds `old` again, nothing is pending, and the
/// rolled-back note gives `reason`.
pub(super) fn assert_undone(rig: &Rig, e: &RollbackError, code: i32, old: &Ruleset, reason: &str) {
    assert_eq!(e.exit_code(), code, "{e}");
    assert!(
        e.to_string().contains("the previous ruleset was restored"),
        "{e}"
    );
    assert_eq!(rig.kernel.table().as_ref(), Some(old));
    assert!(rig.pending().is_none());
    assert_eq!(rig.dirs.rolled_back().unwrap().unwrap().reason, reason);
}
