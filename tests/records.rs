//! The state records against a real kernel, inside throwaway namespaces:
//! lost state never turns a timed apply into a firewall removal, a record
//! edited inside valid JSON is damaged (restore fails closed), a stopped
//! watcher is reported and taken over, and a failed apply or an unreadable
//! informational record leaves nothing behind but one line of `status`.
//!
//! No timing assertion: every wait is a generous deadline on a condition.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A profile directory for `host`: `list` (HTTPS from `n` spaced /24s, and
/// SSH) and the shipped ssh-only.
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
    std::fs::copy(
        root().join("profiles/ssh-only.toml"),
        dir.join("ssh-only.toml"),
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
fn a_timed_apply_with_lost_state_goes_back_to_the_kernels_table() {
    if !privileged("a_timed_apply_with_lost_state_goes_back_to_the_kernels_table") {
        return;
    }
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
fn a_timed_apply_with_lost_state_over_a_hand_edited_table_is_refused() {
    if !privileged("a_timed_apply_with_lost_state_over_a_hand_edited_table_is_refused") {
        return;
    }
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
fn one_digit_changed_in_the_confirmed_record_makes_restore_fail_closed() {
    if !privileged("one_digit_changed_in_the_confirmed_record_makes_restore_fail_closed") {
        return;
    }
    damaged_confirmed_fails_closed("digit", one_digit);
}

#[test]
fn a_policy_flipped_in_the_confirmed_record_makes_restore_fail_closed() {
    if !privileged("a_policy_flipped_in_the_confirmed_record_makes_restore_fail_closed") {
        return;
    }
    damaged_confirmed_fails_closed("policy", policy_flipped);
}

/// Lets a stopped process go on and kills it when dropped (panic
/// included), if it still is the process `needle` names.
struct Resume {
    pid: i32,
    needle: String,
}

impl Drop for Resume {
    fn drop(&mut self) {
        if alive_naming(self.pid, &self.needle) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

fn stop_watcher(host: &Host) -> Resume {
    let pid = host.watcher_pid();
    let resume = Resume {
        pid,
        needle: host.needle(),
    };
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    resume
}

#[test]
fn a_stopped_watcher_is_reported_and_taken_over_past_the_grace_period() {
    if !privileged("a_stopped_watcher_is_reported_and_taken_over_past_the_grace_period") {
        return;
    }
    let host = Host::new("stopped");
    let before = host.confirm_profile("web-server");

    // A far deadline: status tells a stopped watcher from a live one.
    host.apply_pending("vps-profile", 600);
    let first = stop_watcher(&host);
    assert!(
        wait_until(Duration::from_secs(10), || host.status()["pending"]
            ["watcher_state"]
            == "stopped"),
        "{}",
        host.status()
    );
    let text = stdout(&host.expect(0, &["status"]));
    assert!(text.contains("STOPPED"), "{text}");
    host.expect(0, &["rollback"]);
    assert_eq!(host.table_text(), before);
    assert!(
        wait_until(Duration::from_secs(10), || !alive_naming(
            first.pid,
            &host.needle()
        )),
        "a stopped watcher is ended by the rollback"
    );

    // A near deadline: a command past deadline + grace takes over.
    host.apply_pending("vps-profile", 5);
    let stopped = stop_watcher(&host);
    let groups = watcher_groups(&[stopped.pid]);
    let mut overdue = String::new();
    let taken_over = wait_until(Duration::from_secs(120), || {
        let s = host.status();
        if let Some(o) = s["overdue"].as_str() {
            overdue = o.to_string();
        }
        s["pending"].is_null()
    });
    assert!(taken_over, "{}", host.status());
    assert!(overdue.contains("stopped"), "{overdue}");
    assert_eq!(host.table_text(), before);
    assert!(
        !alive_naming(stopped.pid, &host.needle()),
        "the stopped watcher is gone: it cannot wake up and act twice"
    );
    for g in &groups {
        assert!(!g.exists(), "its cgroup {} is removed", g.display());
    }
    let attempts = host.status()["attempts"].to_string();
    assert!(attempts.contains("watcher stopped"), "{attempts}");
}

#[test]
fn an_unreadable_rolled_back_record_costs_one_line_of_status() {
    if !privileged("an_unreadable_rolled_back_record_costs_one_line_of_status") {
        return;
    }
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
fn a_failed_record_write_leaves_no_pending_record_and_no_watcher() {
    if !privileged("a_failed_record_write_leaves_no_pending_record_and_no_watcher") {
        return;
    }
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
