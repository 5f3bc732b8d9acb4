//! The state records against a real kernel, inside throwaway namespaces:
//! lost state never turns a timed apply into a firewall removal, a record
//! edited inside valid JSON is damaged (restore fails closed), and a
//! failed apply, a full disk at the deadline or an unreadable
//! informational record leaves nothing behind but one line of `status`.
//! (A stopped or frozen watcher: tests/stuck_watcher.rs.)
//!
//! No timing assertion: every wait is a generous deadline on a condition.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A profile directory for `host`: `list` (HTTPS from `n` spaced /24s, and
/// SSH); the shipped profiles stay reachable (the harness names them too).
fn profiles_with_list(host: &Host, n: u32) -> PathBuf {
    let dir = host.dir().join("profiles");
    std::fs::create_dir_all(&dir).unwrap();
    let hosts: String = (0..n)
        .map(|i| format!("10.{}.{}.0/24\n", i / 128, (i % 128) * 2))
        .collect();
    std::fs::write(dir.join("hosts.txt"), hosts).unwrap();
    std::fs::write(
        dir.join("list.toml"),
        "description = \"list\"\n[groups]\nbig = { file = \"hosts.txt\" }\n\n[[rule]]\nallow = \"https\"\nfrom = \"big\"\n\n[[rule]]\nallow = \"ssh\"\n",
    )
    .unwrap();
    dir
}

/// Moves the state directory away, as a reinstall or a wrong
/// `--state-dir` leaves it: the kernel keeps its table.
fn lose_state(host: &Host) {
    std::fs::rename(host.state_dir(), host.dir().join("state.lost")).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_timed_apply_with_lost_state_goes_back_to_the_kernels_table() {
    needs_root("a_timed_apply_with_lost_state_goes_back_to_the_kernels_table");
    let host = Host::new("loststate");
    let profiles = profiles_with_list(&host, 3000);
    host.confirm_from(&profiles, "list");
    let before = host.table_text();
    assert!(before.contains("10.23.76.0/24"), "the big set is loaded");
    lose_state(&host);

    let out = host.expect_in(
        &profiles,
        0,
        &["--json", "apply", "ssh-only", "--timeout", "3"],
    );
    let err = stderr(&out);
    assert!(err.contains("holds no confirmed record"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "pending", "{v}");
    assert!(
        v["rollback_to"].as_str().unwrap().contains("profile list"),
        "{v}"
    );
    assert_ne!(host.table_text(), before, "ssh-only is loaded meanwhile");

    // Nobody confirms: the deadline puts the 3,000-prefix table back, not
    // "no table".
    let back = wait_until(Duration::from_secs(60), || {
        host.pending().is_none() && host.table().as_deref() == Some(before.as_str())
    });
    assert!(
        back,
        "the kernel holds:\n{:?}\nwatcher log:\n{}",
        host.table(),
        std::fs::read_to_string(host.run_dir().join("watcher.log")).unwrap_or_default()
    );
}

#[test]
#[ignore = "needs root"]
fn a_timed_apply_with_lost_state_over_a_hand_edited_table_is_refused() {
    needs_root("a_timed_apply_with_lost_state_over_a_hand_edited_table_is_refused");
    let host = Host::new("lostedit");
    host.confirm_profile("web-server");
    lose_state(&host);
    host.sh(&[
        "nft", "add", "rule", "inet", "fwharden", "input", "tcp", "sport", "1", "accept",
    ]);
    let edited = host.table_text();
    let out = host.expect(4, &["apply", "ssh-only", "--timeout", "3"]);
    let err = stderr(&out);
    assert!(err.contains("refusing a timed apply"), "{err}");
    assert!(err.contains("--state-dir"), "says how to proceed: {err}");
    assert_eq!(host.table_text(), edited, "nothing was changed");
    assert!(host.pending().is_none());
}

/// Edits the record at `path` with `edit`, checking the result is still
/// valid JSON (only the digest can tell).
fn edit_record(path: &Path, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed something");
    serde_json::from_str::<serde_json::Value>(&edited).expect("still valid JSON");
    std::fs::write(path, edited).unwrap();
}

/// One digit of `confirmed_at` changed.
fn one_digit(text: &str) -> String {
    let at = text.find("\"confirmed_at\": ").unwrap() + "\"confirmed_at\": ".len();
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    String::from_utf8(bytes).unwrap()
}

/// The first chain policy drop turned into accept.
fn policy_flipped(text: &str) -> String {
    text.replacen("\"policy\": \"drop\"", "\"policy\": \"accept\"", 1)
}

fn damaged_confirmed_fails_closed(tag: &str, edit: fn(&str) -> String) {
    let host = Host::new(tag);
    host.confirm_profile("vps-profile");
    let path = host.state_dir().join("confirmed.json");
    edit_record(&path, edit);

    let out = host.expect(1, &["restore"]);
    let err = stderr(&out);
    assert!(err.contains("confirmed.json"), "names the file: {err}");
    assert!(err.contains("minimal safe profile ssh-only"), "{err}");
    assert_eq!(host.table_text(), reference_text("ssh-only"));

    let out = host.expect(1, &["status"]);
    let text = stdout(&out);
    assert!(
        text.contains("DAMAGED") && text.contains("confirmed.json"),
        "{text}"
    );
    assert!(!text.contains("a hand edit, or another tool"), "{text}");
}

#[test]
#[ignore = "needs root"]
fn one_digit_changed_in_the_confirmed_record_makes_restore_fail_closed() {
    needs_root("one_digit_changed_in_the_confirmed_record_makes_restore_fail_closed");
    damaged_confirmed_fails_closed("digit", one_digit);
}

#[test]
#[ignore = "needs root"]
fn a_policy_flipped_in_the_confirmed_record_makes_restore_fail_closed() {
    needs_root("a_policy_flipped_in_the_confirmed_record_makes_restore_fail_closed");
    damaged_confirmed_fails_closed("policy", policy_flipped);
}

#[test]
#[ignore = "needs root"]
fn an_unreadable_rolled_back_record_costs_one_line_of_status() {
    needs_root("an_unreadable_rolled_back_record_costs_one_line_of_status");
    let host = Host::new("rbdamaged");
    host.confirm_profile("web-server");
    host.apply_pending("vps-profile", 600);
    host.expect(0, &["rollback"]);
    let path = host.state_dir().join("rolled-back.json");
    assert!(path.exists());
    std::fs::write(&path, "{\"prof").unwrap();
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert!(
        s["last_rollback"]
            .as_str()
            .is_some_and(|l| l.contains("unreadable") && l.contains("rolled-back.json")),
        "{s}"
    );
    let text = stdout(&host.expect(0, &["status"]));
    assert!(text.contains("last rollback:     unreadable"), "{text}");
}

#[test]
#[ignore = "needs root"]
fn a_failed_record_write_leaves_no_pending_record_and_no_watcher() {
    needs_root("a_failed_record_write_leaves_no_pending_record_and_no_watcher");
    let host = Host::new("fullstate");
    std::fs::create_dir_all(host.state_dir()).unwrap();
    // A real fault: the state directory is a tmpfs with room for one file
    // (nr_inodes counts its root). The first pending record fits; the
    // second write (with the watcher's pid) cannot create its temporary
    // file: ENOSPC. The mount lives in a mount namespace of its own.
    let script = r#"
        state=$1; out=$2; shift 2
        mount -t tmpfs -o size=1m,nr_inodes=2,mode=700 fwharden-test "$state" || exit 99
        "$@" apply ssh-only --timeout 600 >"$out/apply.out" 2>"$out/apply.err"
        echo $? >"$out/apply.rc"
        "$@" --json status >"$out/status.out" 2>"$out/status.err"
        echo $? >"$out/status.rc"
        ls -A "$state" >"$out/state.ls"
    "#;
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(host.state_dir())
    .arg(host.dir())
    .args(fw_argv(&host.ns, host.dir()));
    harness_env(&mut c);
    let done = c.status().expect("run unshare");
    assert!(done.success(), "the script ran: {done:?}");
    let read = |name: &str| std::fs::read_to_string(host.dir().join(name)).unwrap_or_default();
    assert_eq!(read("apply.rc").trim(), "1", "{}", read("apply.err"));
    assert!(
        read("apply.err").contains("pending.json"),
        "{}",
        read("apply.err")
    );
    assert_eq!(read("status.rc").trim(), "0", "{}", read("status.err"));
    let s: serde_json::Value = serde_json::from_str(&read("status.out")).unwrap();
    assert!(s["pending"].is_null(), "{s}");
    assert_eq!(s["kernel"], "absent", "{s}");
    assert_eq!(read("state.ls").trim(), "", "nothing left in the state dir");
    assert!(host.table().is_none(), "the kernel was never changed");
    host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn restore_after_lost_state_puts_back_the_kernels_table_and_fails_closed_when_blind() {
    needs_root("restore_after_lost_state_puts_back_the_kernels_table_and_fails_closed_when_blind");
    let host = Host::new("lostrestore");
    let before = host.confirm_profile("web-server");
    lose_state(&host);
    host.apply_pending("vps-profile", 600);
    host.kill_watcher();
    // The discarded apply is replaced by what it replaced, not by nothing.
    let out = host.expect(0, &["restore"]);
    assert!(stdout(&out).contains("discarded"), "{}", stdout(&out));
    assert_eq!(host.table_text(), before);

    // Nothing confirmed and the pending record damaged: what came before
    // it is unknown, so restore fails closed.
    host.apply_pending("vps-profile", 600);
    host.kill_watcher();
    edit_record(&host.state_dir().join("pending.json"), |t| {
        t.replacen("\"deadline_ms\": ", "\"deadline_ms\": 1", 1)
    });
    let out = host.expect(1, &["restore"]);
    let err = stderr(&out);
    assert!(err.contains("pending.json"), "names the file: {err}");
    assert_eq!(host.table_text(), reference_text("ssh-only"));
}

#[test]
#[ignore = "needs root"]
fn a_full_disk_at_the_deadline_still_clears_the_rolled_back_apply() {
    needs_root("a_full_disk_at_the_deadline_still_clears_the_rolled_back_apply");
    let host = Host::new("fulldeadline");
    std::fs::create_dir_all(host.state_dir()).unwrap();
    // A real fault: once the apply is armed, the state tmpfs is filled, so
    // the watcher restores the kernel but cannot write its note. The wait
    // for the record to go is bounded (two minutes), not a timing claim.
    let script = r#"
        state=$1; out=$2; shift 2
        mount -t tmpfs -o size=1m,mode=700 fwharden-test "$state" || exit 99
        "$@" apply web-server --auto-confirm >/dev/null 2>"$out/first.err" || exit 98
        "$@" apply vps-profile --timeout 2 >/dev/null 2>"$out/second.err" || exit 97
        dd if=/dev/zero of="$state/fill" bs=4k 2>/dev/null
        i=0
        while [ -e "$state/pending.json" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
        "$@" --json status >"$out/status.out" 2>"$out/status.err"
        echo $? >"$out/status.rc"
    "#;
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(host.state_dir())
    .arg(host.dir())
    .args(fw_argv(&host.ns, host.dir()));
    harness_env(&mut c);
    let done = c.status().expect("run unshare");
    let read = |name: &str| std::fs::read_to_string(host.dir().join(name)).unwrap_or_default();
    assert!(
        done.success(),
        "{done:?}\n{}\n{}",
        read("first.err"),
        read("second.err")
    );
    assert_eq!(read("status.rc").trim(), "0", "{}", read("status.err"));
    let s: serde_json::Value = serde_json::from_str(&read("status.out")).unwrap();
    assert!(
        s["pending"].is_null(),
        "the rolled-back apply is cleared: {s}"
    );
    assert!(s["overdue"].is_null(), "no failed rollback is claimed: {s}");
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert_eq!(host.table_text(), reference_text("web-server"));
    host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn a_record_from_before_digests_is_trusted_once_and_sealed() {
    needs_root("a_record_from_before_digests_is_trusted_once_and_sealed");
    let host = Host::new("legacy");
    let before = host.confirm_profile("web-server");
    // As an older fwharden wrote it: the record alone, no envelope.
    let path = host.state_dir().join("confirmed.json");
    let legacy = serde_json::to_vec_pretty(&host.confirmed().unwrap()).unwrap();
    std::fs::write(&path, &legacy).unwrap();

    let out = host.expect(0, &["restore"]);
    assert!(stderr(&out).contains("has no digest"), "{}", stderr(&out));
    assert_eq!(host.table_text(), before);
    let sealed: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        sealed["sha256"].is_string(),
        "rewritten with a digest: {sealed}"
    );
    // From now on an edit is caught.
    edit_record(&path, one_digit);
    host.expect(1, &["restore"]);
    assert_eq!(host.table_text(), reference_text("ssh-only"));
}
