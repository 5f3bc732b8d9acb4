//! Undo and off: `rollback --to` (an apply of a ruleset from the history),
//! `disable` (an apply of "no table") and the disabled marker that
//! `restore` and every later apply honour, with their faults.

use super::{apply_new, confirmed_at_once, confirmed_rig, timed};
use crate::exit;
use crate::exit::Coded;
use crate::kernel::memory::{Call, Failure, Fault};
use crate::kernel::Kernel;
use crate::rollback::history::{self, Pick};
use crate::rollback::rig::{compiled, Rig};
use crate::rollback::{self as rb, ApplyOutcome, DisableOutcome, Kept, Restored, RollbackError};
use crate::ruleset::Ruleset;
use crate::state::Origin;

fn disable(rig: &Rig) -> Result<DisableOutcome, RollbackError> {
    rb::disable(rig.ports(), &rig.dirs, 600)
}

/// A rig whose `web-server` is confirmed, then disabled and confirmed.
fn disabled_rig() -> (Rig, Ruleset) {
    let (rig, old) = confirmed_rig();
    disable(&rig).unwrap();
    let kept = rb::confirm(rig.ports(), &rig.dirs, None).unwrap();
    assert_eq!(
        kept,
        Kept::Disabled {
            profile: "web-server".into()
        }
    );
    (rig, old)
}

/// Nothing changed: the kernel holds `old`, confirmed, nothing pending,
/// not disabled.
fn assert_untouched(rig: &Rig, old: &Ruleset) {
    assert_eq!(rig.kernel.table().as_ref(), Some(old));
    assert_eq!(rig.confirmed().as_ref(), Some(old));
    assert!(rig.pending().is_none());
    assert_eq!(rig.dirs.disabled().unwrap(), None);
}

#[test]
fn disable_unconfirmed_comes_back_at_the_deadline() {
    let (rig, old) = confirmed_rig();
    let out = disable(&rig).unwrap();
    let DisableOutcome::Pending { rollback_to, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(rollback_to, "profile web-server");
    assert_eq!(rig.kernel.table(), None);
    let p = rig.pending().unwrap();
    assert_eq!(p.ruleset, None);
    assert_eq!(p.previous.as_ref(), Some(&old));
    rig.deadline().unwrap();
    assert_untouched(&rig, &old);
}

#[test]
fn disable_confirmed_leaves_the_marker_and_restore_loads_nothing() {
    let (rig, old) = disabled_rig();
    assert_eq!(rig.kernel.table(), None);
    assert_eq!(rig.confirmed(), Some(old.clone()), "kept for enable");
    assert_eq!(rig.dirs.disabled().unwrap().unwrap().profile, "web-server");
    // A reboot: the table is gone anyway; restore loads nothing.
    let out = rb::restore(rig.ports(), &rig.dirs, &compiled("ssh-only")).unwrap();
    assert!(
        matches!(&out, Restored::Disabled { enable_loads, .. } if enable_loads == "web-server"),
        "{out:?}"
    );
    assert_eq!(rig.kernel.table(), None);
    assert!(matches!(
        disable(&rig).unwrap(),
        DisableOutcome::Already { .. }
    ));
}

#[test]
fn disabled_an_unconfirmed_apply_goes_back_to_no_table() {
    let (rig, old) = disabled_rig();
    // `enable` is an apply of the confirmed ruleset.
    super::super::apply(rig.ports(), &rig.dirs, &old, &timed()).unwrap();
    let p = rig.pending().unwrap();
    assert_eq!(
        (p.previous.as_ref(), p.previous_from),
        (None, Origin::Disabled)
    );
    assert_eq!(rig.kernel.table().as_ref(), Some(&old));
    rig.deadline().unwrap();
    assert_eq!(rig.kernel.table(), None);
    assert!(rig.dirs.disabled().unwrap().is_some(), "still disabled");
}

#[test]
fn a_confirmed_apply_ends_the_disable() {
    let (rig, _) = disabled_rig();
    apply_new(&rig).unwrap();
    rb::confirm(rig.ports(), &rig.dirs, None).unwrap();
    assert_eq!(rig.dirs.disabled().unwrap(), None);
    let out = rb::restore(rig.ports(), &rig.dirs, &compiled("base")).unwrap();
    assert!(matches!(out, Restored::Confirmed { .. }), "{out:?}");
    assert_eq!(rig.kernel.table(), Some(compiled("ssh-only")));
}

#[test]
fn disable_remove_refused() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::RemoveTable, Fault::Fail(Failure::Rejected));
    let e = disable(&rig).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_untouched(&rig, &old);
}

#[test]
fn disable_outcome_unknown_is_undone() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::RemoveTable, Fault::LostAnswer { committed: true });
    let e = disable(&rig).unwrap_err();
    assert!(
        e.to_string().contains("the previous ruleset was restored"),
        "{e}"
    );
    assert_untouched(&rig, &old);
}

#[test]
fn disable_read_back_still_holding_the_table_is_undone() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::ReadTable, Fault::ReadsAs(Some(old.clone())));
    let e = disable(&rig).unwrap_err();
    assert_eq!(e.exit_code(), exit::ROLLED_BACK, "{e}");
    assert!(e.to_string().contains("still there"), "{e}");
    assert_untouched(&rig, &old);
}

#[test]
fn disable_without_a_confirmed_record_is_refused() {
    let rig = Rig::new();
    let table = compiled("web-server");
    // Loaded by hand, or by a fwharden with another state directory.
    rig.kernel.apply_at(&table, None).unwrap();
    let e = disable(&rig).unwrap_err();
    assert_eq!(e.exit_code(), exit::REFUSED);
    assert!(e.to_string().contains("no confirmed ruleset"), "{e}");
    assert_eq!(rig.kernel.table(), Some(table));
    assert!(rig.pending().is_none());
}

#[test]
fn confirm_of_a_disable_an_edit_undid_is_refused() {
    let (rig, old) = confirmed_rig();
    disable(&rig).unwrap();
    rig.kernel
        .inject(Call::ReadTableAt, Fault::Edited(Some(compiled("base"))));
    let e = rb::confirm(rig.ports(), &rig.dirs, None).unwrap_err();
    assert!(matches!(e, RollbackError::Drifted { .. }), "{e}");
    assert_eq!(rig.dirs.disabled().unwrap(), None);
    rig.deadline().unwrap();
    assert_untouched(&rig, &old);
}

#[test]
fn restore_with_a_damaged_marker_falls_back_closed() {
    let (rig, _) = disabled_rig();
    let marker = rig.dirs.state.join("disabled.json");
    let text = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, text.replace("web-server", "web-servex")).unwrap();
    let fallback = compiled("ssh-only");
    let out = rb::restore(rig.ports(), &rig.dirs, &fallback).unwrap();
    let Restored::Fallback { error, .. } = out else {
        panic!("{out:?}")
    };
    assert!(error.contains("disabled.json"), "{error}");
    assert_eq!(rig.kernel.table(), Some(fallback));
}

/// `web-server`, then `ssh-only`, both confirmed.
fn two_confirmed() -> (Rig, Ruleset, Ruleset) {
    let (rig, a) = confirmed_rig();
    let b = compiled("ssh-only");
    super::super::apply(rig.ports(), &rig.dirs, &b, &confirmed_at_once()).unwrap();
    (rig, a, b)
}

#[test]
fn rollback_to_previous_is_an_apply_with_the_timer() {
    let (rig, a, b) = two_confirmed();
    let entry = history::pick(&rig.dirs, Pick::Previous).unwrap();
    assert_eq!(entry.ruleset, a);
    let out = super::super::apply(rig.ports(), &rig.dirs, &entry.ruleset, &timed()).unwrap();
    assert!(matches!(out, ApplyOutcome::Pending { .. }), "{out:?}");
    assert_eq!(rig.kernel.table().as_ref(), Some(&a));
    rig.deadline().unwrap();
    assert_eq!(rig.kernel.table().as_ref(), Some(&b), "unconfirmed: back");
    // Confirmed, it is the newest entry, and `previous` is b.
    super::super::apply(rig.ports(), &rig.dirs, &a, &timed()).unwrap();
    rb::confirm(rig.ports(), &rig.dirs, None).unwrap();
    let listed = rig.dirs.history().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(history::pick(&rig.dirs, Pick::Previous).unwrap().ruleset, b);
}

#[test]
fn rollback_to_a_damaged_entry_fails_closed_naming_the_file() {
    let (rig, _, b) = two_confirmed();
    let path = rig.dirs.state.join("history").join("1.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("accept", "drop", 1)).unwrap();
    let e = history::pick(&rig.dirs, Pick::Previous).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(rig.kernel.table(), Some(b));
}

#[test]
fn rollback_to_what_the_history_does_not_hold() {
    let (rig, _) = confirmed_rig();
    let e = history::pick(&rig.dirs, Pick::Previous).unwrap_err();
    assert!(e.to_string().contains("1 kept"), "{e}");
    let e = history::pick(&rig.dirs, Pick::Entry(9)).unwrap_err();
    assert!(e.to_string().contains("number 9"), "{e}");
    assert_eq!("previous".parse(), Ok(Pick::Previous));
    assert_eq!("3".parse(), Ok(Pick::Entry(3)));
    assert!("0".parse::<Pick>().is_err());
    assert!("last".parse::<Pick>().is_err());
}
