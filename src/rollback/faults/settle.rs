//! Faults in confirm, rollback and restore, and the overdue path.

use super::{apply_new, attempts, confirmed_rig, timed};
use crate::exit;
use crate::exit::Coded;
use crate::kernel::memory::{Call, Failure, Fault};
use crate::rollback::rig::{compiled, Life, Rig};
use crate::rollback::{self as rb, Restored};

#[test]
fn confirm_loads_without_the_hatch_and_records() {
    let (rig, _) = confirmed_rig();
    apply_new(&rig).unwrap();
    let p = rig.pending().unwrap();
    let kept = rb::confirm(rig.ports(), &rig.dirs, Some(&p.token)).unwrap();
    assert_eq!(
        kept,
        rb::Kept::Ruleset {
            profile: "ssh-only".into()
        }
    );
    assert!(rig.pending().is_none());
    assert_eq!(rig.confirmed(), rig.kernel.table());
}

#[test]
fn confirm_generation_unreadable() {
    let (rig, _) = confirmed_rig();
    apply_new(&rig).unwrap();
    rig.kernel
        .inject(Call::Generation, Fault::Fail(Failure::Permission));
    let e = rb::confirm(rig.ports(), &rig.dirs, None).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert!(rig.pending().is_some(), "nothing confirmed, still pending");
}

#[test]
fn confirm_sees_an_edit() {
    let (rig, old) = confirmed_rig();
    apply_new(&rig).unwrap();
    rig.kernel
        .inject(Call::ReadTableAt, Fault::Edited(Some(compiled("base"))));
    let e = rb::confirm(rig.ports(), &rig.dirs, None).unwrap_err();
    assert!(e.to_string().contains("something changed it"), "{e}");
    assert!(rig.pending().is_some(), "the rollback stays armed");
    assert_eq!(rig.confirmed(), Some(old));
}

#[test]
fn confirm_with_another_token_is_refused() {
    let (rig, _) = confirmed_rig();
    apply_new(&rig).unwrap();
    let e = rb::confirm(rig.ports(), &rig.dirs, Some("not-it")).unwrap_err();
    assert!(e.to_string().contains("another token"), "{e}");
    assert!(rig.pending().is_some());
}

#[test]
fn confirm_late_watcher_gone_rolls_back() {
    let (rig, old) = confirmed_rig();
    apply_new(&rig).unwrap();
    let p = rig.pending().unwrap();
    rig.watchers.kill(p.watcher.unwrap());
    rig.expire();
    let e = rb::confirm(rig.ports(), &rig.dirs, None).unwrap_err();
    assert!(e.to_string().contains("its watcher was gone"), "{e}");
    assert!(e.to_string().contains("rolled it back"), "{e}");
    assert_eq!(rig.kernel.table(), Some(old.clone()));
    assert!(rig.pending().is_none());
    assert_eq!(rig.confirmed(), Some(old));
}

#[test]
fn confirm_late_watcher_alive_leaves_it_to_the_watcher() {
    let (rig, _) = confirmed_rig();
    apply_new(&rig).unwrap();
    // Within the grace a running watcher gets to take the lock.
    rig.expire_by(1);
    let e = rb::confirm(rig.ports(), &rig.dirs, None).unwrap_err();
    assert!(
        e.to_string().contains("its watcher is rolling it back"),
        "{e}"
    );
    assert!(rig.pending().is_some());
}

#[test]
fn confirm_hatch_commit_raced_keeps_the_deadline() {
    // The hatch only rides along over SSH; without one the confirm commits
    // nothing. With it, a refused commit must leave the rollback armed.
    let (rig, _) = confirmed_rig();
    apply_new(&rig).unwrap();
    let mut p = rig.pending().unwrap();
    p.ruleset = p.ruleset.map(|r| {
        crate::ruleset::hatch::with_hatch(
            &r,
            &crate::ruleset::hatch::Hatch {
                operator: "192.0.2.10".parse().unwrap(),
                port: 22,
                timeout_secs: 600,
            },
        )
    });
    rig.dirs.save_pending(&p).unwrap();
    rig.kernel
        .inject(Call::ReadTableAt, Fault::Edited(p.ruleset.clone()));
    rig.kernel
        .inject(Call::ApplyAt, Fault::Fail(Failure::Rejected));
    let e = rb::confirm(rig.ports(), &rig.dirs, None).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert_eq!(rig.pending().as_ref(), Some(&p), "still pending");
    assert_eq!(rig.kernel.table(), p.ruleset);
}

#[test]
fn rollback_generation_unreadable() {
    let (rig, _) = confirmed_rig();
    apply_new(&rig).unwrap();
    rig.kernel
        .inject(Call::Generation, Fault::Fail(Failure::Permission));
    let e = rb::rollback(rig.ports(), &rig.dirs).unwrap_err();
    assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
    assert!(rig.pending().is_some());
}

#[test]
fn rollback_previous_fails_to_load() {
    let (rig, _) = confirmed_rig();
    apply_new(&rig).unwrap();
    let p = rig.pending().unwrap();
    for _ in 0..rb::ATTEMPTS {
        rig.kernel.inject(Call::ApplyAt, Fault::Fail(Failure::Busy));
    }
    let e = rb::rollback(rig.ports(), &rig.dirs).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert_eq!(attempts(&rig), rb::ATTEMPTS as usize, "each try logged");
    assert_eq!(rig.pending().as_ref(), Some(&p), "the record stays");
    assert_eq!(rig.kernel.table(), p.ruleset);
    // A permanent refusal is not tried five times.
    rig.kernel
        .inject(Call::ApplyAt, Fault::Fail(Failure::Permission));
    rb::rollback(rig.ports(), &rig.dirs).unwrap_err();
    assert_eq!(attempts(&rig), rb::ATTEMPTS as usize + 1);
    // Once the kernel takes it, the rollback goes through.
    rb::rollback(rig.ports(), &rig.dirs).unwrap();
    assert_eq!(rig.kernel.table(), p.previous);
}

#[test]
fn rollback_read_back_differs_is_tried_again() {
    let (rig, old) = confirmed_rig();
    apply_new(&rig).unwrap();
    rig.kernel
        .inject(Call::Verify, Fault::ReadsAs(Some(compiled("base"))));
    rb::rollback(rig.ports(), &rig.dirs).unwrap();
    assert_eq!(rig.kernel.table(), Some(old));
    assert_eq!(attempts(&rig), 2);
}

#[test]
fn rollback_remove_refused() {
    // Nothing confirmed before: rolling back means removing the table.
    let rig = Rig::new();
    rb::apply(rig.ports(), &rig.dirs, &compiled("ssh-only"), &timed()).unwrap();
    // An older kernel's refusal is final: tried once, not five times.
    rig.kernel
        .inject(Call::RemoveTable, Fault::Fail(Failure::Unsupported));
    let e = rb::rollback(rig.ports(), &rig.dirs).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert_eq!(attempts(&rig), 1);
    assert!(rig.pending().is_some());
    assert!(rig.kernel.table().is_some());
}

#[test]
fn rollback_with_nothing_pending() {
    let (rig, old) = confirmed_rig();
    assert!(rb::rollback(rig.ports(), &rig.dirs).unwrap().is_none());
    assert_eq!(rig.kernel.table(), Some(old));
}

#[test]
fn restore_generation_unreadable() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::Generation, Fault::Fail(Failure::Permission));
    let fallback = compiled("ssh-only");
    let e = rb::restore(rig.ports(), &rig.dirs, &fallback).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert_eq!(rig.kernel.table(), Some(old));
}

#[test]
fn restore_stops_watcher_and_loads_the_confirmed_ruleset() {
    let (rig, old) = confirmed_rig();
    apply_new(&rig).unwrap();
    let p = rig.pending().unwrap();
    let out = rb::restore(rig.ports(), &rig.dirs, &compiled("ssh-only")).unwrap();
    assert!(matches!(out, Restored::Confirmed { .. }));
    assert_eq!(rig.watchers.life(p.watcher.unwrap()), Some(Life::Ended));
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
}

#[test]
fn restore_confirmed_fails_falls_back_closed() {
    let (rig, _) = confirmed_rig();
    let fallback = compiled("ssh-only");
    // Every attempt at the confirmed ruleset fails; the fallback loads.
    rig.kernel
        .inject(Call::ApplyAt, Fault::Fail(Failure::Rejected));
    let out = rb::restore(rig.ports(), &rig.dirs, &fallback).unwrap();
    assert!(matches!(out, Restored::Fallback { .. }));
    assert_eq!(rig.kernel.table(), Some(fallback));
}

#[test]
fn restore_that_cannot_load_anything_keeps_the_pending_apply() {
    // Found by the sequence test: restore used to discard the pending apply
    // before loading; when both loads failed, the unconfirmed ruleset
    // stayed in the kernel with no record and no watcher.
    let (rig, old) = confirmed_rig();
    apply_new(&rig).unwrap();
    let p = rig.pending().unwrap();
    rig.kernel
        .inject(Call::ApplyAt, Fault::Fail(Failure::Rejected));
    rig.kernel
        .inject(Call::ApplyAt, Fault::Fail(Failure::Rejected));
    let e = rb::restore(rig.ports(), &rig.dirs, &compiled("ssh-only")).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert_eq!(rig.pending().as_ref(), Some(&p));
    assert_eq!(rig.watchers.life(p.watcher.unwrap()), Some(Life::Running));
    rig.deadline().unwrap();
    assert_eq!(rig.kernel.table(), Some(old));
}

#[test]
fn a_stopped_watcher_is_taken_over_past_the_grace() {
    let (rig, old) = confirmed_rig();
    apply_new(&rig).unwrap();
    let pid = rig.pending().unwrap().watcher.unwrap();
    rig.watchers.sigstop(pid);
    rig.expire_by(1);
    let early = rb::settle(rig.ports(), &rig.dirs, "status").unwrap();
    assert!(
        early.is_none(),
        "within the grace it is left to the watcher"
    );
    assert!(rig.pending().is_some());
    rig.expire();
    let s = rb::settle(rig.ports(), &rig.dirs, "status")
        .unwrap()
        .expect("taken over");
    assert!(s.describe().contains("stopped"), "{}", s.describe());
    assert_eq!(rig.watchers.life(pid), Some(Life::EndedStopped));
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
}
