//! Faults at every step of apply.

use super::{apply_new, assert_undone, attempts, confirmed_at_once, confirmed_rig, timed};
use crate::exit;
use crate::exit::Coded;
use crate::kernel::memory::{Call, Failure, Fault};
use crate::rollback::rig::{compiled, Life, Rig};
use crate::rollback::{self as rb, ApplyOutcome, RollbackError};
use crate::ruleset::Ruleset;

#[test]
fn apply_pending_then_deadline_restores_the_confirmed_ruleset() {
    let (rig, old) = confirmed_rig();
    let out = apply_new(&rig).unwrap();
    assert!(matches!(out, ApplyOutcome::Pending { .. }));
    let p = rig.pending().unwrap();
    assert_eq!(rig.kernel.table(), p.ruleset);
    assert_eq!(p.previous.as_ref(), Some(&old));
    assert_eq!(rig.watchers.life(p.watcher.unwrap()), Some(Life::Running));
    rig.deadline().unwrap();
    assert_eq!(rig.kernel.table(), Some(old.clone()));
    assert!(rig.pending().is_none());
    assert_eq!(rig.dirs.rolled_back().unwrap().unwrap().reason, "deadline");
    assert_eq!(rig.confirmed(), Some(old), "the confirmed record stays");
}

#[test]
fn apply_generation_unreadable() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::Generation, Fault::Fail(Failure::Permission));
    let e = apply_new(&rig).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
    assert_eq!(rig.watchers.spawned(), 1, "only the first apply's");
}

#[test]
fn apply_read_fails() {
    // Nobody committed since the confirmed record was proven? No: another
    // commit moved the generation, so the table must be read, and the
    // read fails (ENOBUFS in the dump).
    let (rig, old) = confirmed_rig();
    rig.kernel.inject(Call::Generation, Fault::OtherCommit);
    rig.kernel
        .inject(Call::ReadTableAt, Fault::Fail(Failure::Busy));
    let e = apply_new(&rig).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert!(e.to_string().contains("recvmsg"), "{e}");
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
    assert_eq!(rig.watchers.spawned(), 1, "no watcher before the read");
}

#[test]
fn apply_commit_refused() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::ApplyAt, Fault::Fail(Failure::Rejected));
    let e = apply_new(&rig).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(rig.kernel.table(), Some(old.clone()));
    assert!(rig.pending().is_none(), "the record goes with the refusal");
    assert_eq!(rig.confirmed(), Some(old));
}

#[test]
fn apply_raced_by_a_ban_is_committed_at_the_new_generation() {
    let (rig, _) = confirmed_rig();
    // Another program's commit (a ban) lands between the read and ours.
    rig.kernel.inject(Call::ApplyAt, Fault::OtherCommit);
    let out = apply_new(&rig).unwrap();
    assert!(matches!(out, ApplyOutcome::Pending { .. }));
    assert_eq!(rig.kernel.table(), rig.pending().unwrap().ruleset);
}

#[test]
fn apply_raced_by_an_edit_of_our_table_gives_up_at_once() {
    let (rig, _) = confirmed_rig();
    let edit = compiled("base");
    rig.kernel
        .inject(Call::ApplyAt, Fault::Edited(Some(edit.clone())));
    let e = apply_new(&rig).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert!(e.to_string().contains("run the command again"), "{e}");
    assert_eq!(
        rig.kernel.table(),
        Some(edit),
        "the edit is not overwritten"
    );
    assert!(rig.pending().is_none());
}

#[test]
fn apply_raced_without_end_gives_up() {
    let (rig, old) = confirmed_rig();
    for _ in 0..rb::ops::COMMIT_TRIES {
        rig.kernel.inject(Call::ApplyAt, Fault::OtherCommit);
    }
    let e = apply_new(&rig).unwrap_err();
    assert!(matches!(
        e,
        RollbackError::Kernel(crate::nft::NftError::Raced)
    ));
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
}

#[test]
fn apply_outcome_unknown_committed_is_undone() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::ApplyAt, Fault::LostAnswer { committed: true });
    let e = apply_new(&rig).unwrap_err();
    assert_undone(&rig, &e, exit::FAILURE, &old, "outcome unknown");
}

#[test]
fn apply_outcome_unknown_not_committed_changes_nothing() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::ApplyAt, Fault::LostAnswer { committed: false });
    let e = apply_new(&rig).unwrap_err();
    assert!(
        e.to_string()
            .contains("outcome of the transaction is unknown"),
        "{e}"
    );
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
    assert!(
        rig.dirs.rolled_back().unwrap().is_none(),
        "nothing to roll back"
    );
}

#[test]
fn apply_outcome_unknown_and_the_undo_fails_keeps_the_record() {
    let (rig, _) = confirmed_rig();
    rig.kernel
        .inject(Call::ApplyAt, Fault::LostAnswer { committed: true });
    for _ in 0..rb::ATTEMPTS {
        rig.kernel.inject(Call::ApplyAt, Fault::Fail(Failure::Busy));
    }
    let e = apply_new(&rig).unwrap_err();
    assert!(e.to_string().contains("run `fwharden restore`"), "{e}");
    // The new ruleset is in, the undo failed: the record still names what
    // to go back to, and its watcher still keeps the deadline.
    let p = rig.pending().expect("the record stays");
    assert_eq!(rig.kernel.table(), p.ruleset);
    assert!(rig.watchers.alive(p.watcher.unwrap(), &p.token));
    assert_eq!(attempts(&rig), rb::ATTEMPTS as usize);
    rig.deadline().unwrap();
    assert_eq!(rig.kernel.table(), p.previous);
}

#[test]
fn apply_delta_refused() {
    // A changed prefix list alone goes in as a delta; refused, nothing
    // changes.
    let rig = Rig::new();
    let (old, new) = (
        list_profile(&["192.0.2.0/24"]),
        list_profile(&["198.51.100.0/24"]),
    );
    rb::apply(rig.ports(), &rig.dirs, &old, &confirmed_at_once()).unwrap();
    rig.kernel
        .inject(Call::ApplyDelta, Fault::Fail(Failure::Rejected));
    let e = rb::apply(rig.ports(), &rig.dirs, &new, &timed()).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
    assert!(rig.kernel.calls().contains(&Call::ApplyDelta));
}

/// A profile whose only difference from another is a group's prefixes.
fn list_profile(prefixes: &[&str]) -> Ruleset {
    let text = format!(
        "extends = \"ssh-only\"\n[groups]\nfriends = [{}]\n[[rule]]\nallow = [\"https\"]\nfrom = [\"friends\"]\n",
        prefixes
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lists.toml");
    std::fs::write(&path, text).unwrap();
    let search = crate::profile::SearchPath {
        dirs: vec![],
        builtin: true,
    };
    let loaded = crate::profile::load(path.to_str().unwrap(), &search);
    crate::compile::compile(&loaded.profile.expect("the list profile loads"))
}

#[test]
fn apply_read_back_differs_is_rolled_back() {
    let (rig, old) = confirmed_rig();
    rig.kernel
        .inject(Call::Verify, Fault::ReadsAs(Some(compiled("base"))));
    let e = apply_new(&rig).unwrap_err();
    assert_undone(&rig, &e, exit::ROLLED_BACK, &old, "read-back mismatch");
}

#[test]
fn apply_generation_moves_between_commit_and_read_back() {
    let (rig, _) = confirmed_rig();
    rig.kernel.inject(Call::Verify, Fault::OtherCommit);
    let out = apply_new(&rig).unwrap();
    assert!(matches!(out, ApplyOutcome::Pending { .. }));
}

#[test]
fn apply_read_back_fails_is_rolled_back_at_once() {
    // A read-back that cannot be made proves nothing: the apply rolls back
    // itself, under that name, rather than leave it to the deadline.
    let (rig, old) = confirmed_rig();
    rig.kernel.inject(Call::Verify, Fault::Fail(Failure::Busy));
    let e = apply_new(&rig).unwrap_err();
    assert!(e.to_string().contains("the read-back failed"), "{e}");
    assert_undone(&rig, &e, exit::ROLLED_BACK, &old, "read-back failed");
}

#[test]
fn apply_watcher_fails_to_start() {
    let (rig, old) = confirmed_rig();
    let commits = rig.kernel.calls().len();
    *rig.watchers.refuse_next.borrow_mut() = true;
    let e = apply_new(&rig).unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILURE);
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
    assert!(!rig.kernel.calls()[commits..].iter().any(|c| c.commits()));
}

#[test]
fn apply_interlocked_kernel_is_refused_before_any_record() {
    let (rig, old) = confirmed_rig();
    rig.kernel.forbid();
    let e = apply_new(&rig).unwrap_err();
    assert!(matches!(e, RollbackError::Interlock));
    assert_eq!(e.exit_code(), exit::REFUSED);
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig.pending().is_none());
}

#[test]
fn overdue_taken_over_by_apply() {
    let (rig, old) = confirmed_rig();
    apply_new(&rig).unwrap();
    let p = rig.pending().unwrap();
    rig.watchers.kill(p.watcher.unwrap());
    rig.expire();
    // The next apply finds it overdue, rolls it back, then applies.
    let out = rb::apply(rig.ports(), &rig.dirs, &old, &confirmed_at_once()).unwrap();
    assert!(matches!(
        out,
        ApplyOutcome::Unchanged { .. } | ApplyOutcome::Confirmed { .. }
    ));
    assert_eq!(rig.kernel.table(), Some(old));
    assert!(rig
        .dirs
        .rolled_back()
        .unwrap()
        .unwrap()
        .reason
        .contains("overdue"));
}

#[test]
fn apply_over_a_pending_one_that_fails_keeps_the_old_one_watched() {
    // Found by the sequence test: the failed apply used to drop the record
    // of the pending one it replaced, whose watcher had already stood
    // down, leaving an unconfirmed ruleset in the kernel with no rollback.
    let (rig, old) = confirmed_rig();
    rb::apply(rig.ports(), &rig.dirs, &compiled("base"), &timed()).unwrap();
    let first = rig.pending().unwrap();
    rig.kernel
        .inject(Call::ApplyAt, Fault::Fail(Failure::Rejected));
    apply_new(&rig).unwrap_err();
    let kept = rig.pending().expect("the first apply is still pending");
    assert_eq!(kept.ruleset, first.ruleset);
    assert_eq!(kept.deadline_ms, first.deadline_ms, "no extra time");
    assert_ne!(kept.token, first.token, "watched by the new watcher");
    assert!(rig.watchers.alive(kept.watcher.unwrap(), &kept.token));
    assert_eq!(rig.kernel.table(), first.ruleset);
    rig.deadline().unwrap();
    assert_eq!(rig.kernel.table(), Some(old));
}
