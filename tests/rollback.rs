//! The rollback timer against a real kernel, inside throwaway namespaces:
//! an unconfirmed apply reverts by its deadline (also after an SSH-like
//! hang-up kills the apply's whole session), `confirm` keeps it, `rollback`
//! reverts at once, and `restore` after a reboot loads the confirmed
//! ruleset, or the built-in ssh-only one when the record is damaged.
//!
//! The only timing assertion is the promise itself: the revert is seen no
//! later than the apply's own `deadline_ms` + 1 s (and never before it).

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;

/// Polls the kernel until `want` (a table text, or `None` for no table) is
/// there, at most until `deadline_ms` + 10 s; returns when it was first
/// seen, in ms since the epoch.
fn seen_at(host: &Host, want: Option<&str>, deadline_ms: u64) -> u64 {
    loop {
        let table = host.table();
        let now = now_ms();
        if table.as_deref() == want {
            return now;
        }
        assert!(
            now < deadline_ms + 10_000,
            "not reverted 10 s after the deadline; the kernel holds:\n{table:?}\nwatcher log:\n{}",
            std::fs::read_to_string(host.run_dir().join("watcher.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn assert_on_time(seen: u64, deadline_ms: u64) {
    assert!(
        seen >= deadline_ms,
        "reverted {} ms before the deadline",
        deadline_ms - seen
    );
    assert!(
        seen <= deadline_ms + 1000,
        "reverted {} ms after the deadline (allowed: 1000)",
        seen - deadline_ms
    );
}

fn deadline(v: &serde_json::Value) -> u64 {
    v["deadline_ms"].as_u64().expect("deadline_ms")
}

#[test]
#[ignore = "needs root"]
fn an_unconfirmed_apply_reverts_by_the_deadline_and_a_late_confirm_is_told() {
    needs_root("an_unconfirmed_apply_reverts_by_the_deadline_and_a_late_confirm_is_told");
    let host = Host::new("deadline");
    let before = host.confirm_profile("web-server");
    let applied = host.apply_pending("vps-profile", 2);
    assert_eq!(host.table_text(), reference_text("vps-profile"));
    assert_eq!(host.status()["kernel"], "pending");

    let seen = seen_at(&host, Some(&before), deadline(&applied));
    assert_on_time(seen, deadline(&applied));
    assert!(wait_until(Duration::from_secs(10), || host
        .pending()
        .is_none()));
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert_eq!(s["confirmed"], "web-server", "{s}");
    // The watcher logs after it cleared the record: wait for the line.
    let log = || std::fs::read_to_string(host.run_dir().join("watcher.log")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || log()
            .contains("was not confirmed in time")),
        "{}",
        log()
    );
    // Each line is stamped in ISO 8601 UTC, `2026-12-04T18:20:01.123Z`.
    for line in log().lines() {
        let stamp = line.split(' ').next().unwrap();
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{line}");
    }

    let out = host.expect(1, &["confirm"]);
    let err = stderr(&out);
    assert!(err.contains("too late"), "{err}");
    assert!(err.contains("vps-profile"), "{err}");
    let token = applied["token"].as_str().unwrap();
    let out = host.expect(1, &["confirm", "--token", token]);
    assert!(stderr(&out).contains("too late"), "{}", stderr(&out));
    assert_eq!(
        host.table_text(),
        before,
        "a late confirm changed the kernel"
    );
    host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn confirm_cancels_the_revert() {
    needs_root("confirm_cancels_the_revert");
    let host = Host::new("confirm");
    host.confirm_profile("web-server");
    let applied = host.apply_pending("vps-profile", 2);
    let after = host.table_text();
    let watcher = host.watcher_pid();

    let out = host.expect(
        0,
        &["confirm", "--token", applied["token"].as_str().unwrap()],
    );
    assert!(
        stdout(&out).contains("confirmed profile vps-profile"),
        "{}",
        stdout(&out)
    );
    // Past the deadline, with a margin: nothing reverted.
    let wait = deadline(&applied) + 1500;
    while now_ms() < wait {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(host.table_text(), after, "a confirmed apply was reverted");
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert_eq!(s["confirmed"], "vps-profile", "{s}");
    assert!(s["pending"].is_null(), "{s}");
    assert!(
        wait_until(Duration::from_secs(10), || !alive_naming(
            watcher,
            &host.needle()
        )),
        "the watcher of a confirmed apply still runs"
    );
    let out = host.expect(1, &["confirm"]);
    assert!(
        stderr(&out).contains("nothing is pending"),
        "{}",
        stderr(&out)
    );
}

/// A session leader; its whole process group is killed on drop, panic
/// included (its `sleep` does not name the host's directory).
struct Session(std::process::Child);

impl Drop for Session {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root"]
fn a_hang_up_that_kills_the_apply_session_still_reverts_on_time() {
    needs_root("a_hang_up_that_kills_the_apply_session_still_reverts_on_time");
    let host = Host::new("hangup");
    let before = host.confirm_profile("web-server");
    let new = reference_text("vps-profile");

    // The operator's SSH session: a shell in a session of its own that runs
    // the apply and stays, as a login shell would.
    let argv = fw_argv(&host.ns, host.dir());
    let mut session = std::process::Command::new("sh");
    session
        .arg("-c")
        .arg("\"$@\" apply vps-profile --timeout 3 >/dev/null 2>&1; exec sleep 120")
        .arg("sh")
        .args(&argv);
    harness_env(&mut session);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; setsid(2) is one, and it touches
    // no memory of the parent.
    unsafe {
        session.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut session = Session(session.spawn().unwrap());
    let sid = session.0.id() as i32;

    assert!(
        wait_until(Duration::from_secs(20), || host.table().as_deref()
            == Some(new.as_str())
            && host.pending().is_some_and(|p| p["watcher"].is_u64())),
        "the apply did not load vps-profile"
    );
    let pending = host.pending().unwrap();
    let watcher = host.watcher_pid();
    let stat = std::fs::read_to_string(format!("/proc/{watcher}/stat")).unwrap();
    // Fields after the command's closing parenthesis: state ppid pgrp session.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_ne!(
        fields[3],
        sid.to_string(),
        "the watcher is in the SSH session"
    );

    // The connection drops: the session's process group gets SIGHUP, and
    // whatever ignores it is killed.
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    killpg(Pid::from_raw(sid), Signal::SIGHUP).unwrap();
    let _ = killpg(Pid::from_raw(sid), Signal::SIGKILL);
    session.0.wait().unwrap();
    assert!(
        alive_naming(watcher, &host.needle()),
        "the hang-up killed the watcher"
    );

    let seen = seen_at(&host, Some(&before), deadline(&pending));
    assert_on_time(seen, deadline(&pending));
    assert!(wait_until(Duration::from_secs(10), || host
        .pending()
        .is_none()));
    assert_eq!(host.status()["kernel"], "confirmed");
}

#[test]
#[ignore = "needs root"]
fn with_nothing_confirmed_the_deadline_removes_the_table() {
    needs_root("with_nothing_confirmed_the_deadline_removes_the_table");
    let host = Host::new("notable");
    let applied = host.apply_pending("ssh-only", 2);
    assert_eq!(host.table_text(), reference_text("ssh-only"));
    let seen = seen_at(&host, None, deadline(&applied));
    assert_on_time(seen, deadline(&applied));
    assert_eq!(host.sh(&["nft", "list", "tables"]).trim(), "");
    assert!(wait_until(Duration::from_secs(10), || host
        .pending()
        .is_none()));
    let s = host.status();
    assert_eq!(s["kernel"], "absent", "{s}");
    assert!(s["confirmed"].is_null(), "{s}");
}

#[test]
#[ignore = "needs root"]
fn rollback_restores_the_previous_ruleset_at_once() {
    needs_root("rollback_restores_the_previous_ruleset_at_once");
    let host = Host::new("rollback");
    let before = host.confirm_profile("web-server");
    host.apply_pending("vps-profile", 600);
    let watcher = host.watcher_pid();

    let out = host.expect(0, &["rollback"]);
    assert!(
        stdout(&out).contains("rolled back profile vps-profile: restored profile web-server"),
        "{}",
        stdout(&out)
    );
    assert_eq!(host.table_text(), before);
    assert!(host.pending().is_none());
    assert_eq!(host.status()["kernel"], "confirmed");
    assert!(
        wait_until(Duration::from_secs(10), || !alive_naming(
            watcher,
            &host.needle()
        )),
        "the watcher of a rolled-back apply still runs"
    );
    let out = host.expect(1, &["confirm"]);
    assert!(stderr(&out).contains("too late"), "{}", stderr(&out));
    let out = host.expect(0, &["rollback"]);
    assert!(
        stdout(&out).contains("nothing is pending"),
        "{}",
        stdout(&out)
    );
    assert_eq!(host.table_text(), before);

    // With nothing confirmed before it, a rollback removes the table.
    let bare = Host::new("rollbare");
    bare.apply_pending("ssh-only", 600);
    let out = bare.expect(0, &["--json", "rollback"]);
    assert!(
        stdout(&out).contains("\"rolled_back\":\"ssh-only\""),
        "{}",
        stdout(&out)
    );
    assert_eq!(bare.table(), None);
}

#[test]
#[ignore = "needs root"]
fn restore_after_a_reboot_loads_the_confirmed_ruleset_not_the_pending_one() {
    needs_root("restore_after_a_reboot_loads_the_confirmed_ruleset_not_the_pending_one");
    let host = Host::new("reboot");
    let confirmed = host.confirm_profile("web-server");
    host.apply_pending("vps-profile", 600);
    // The reboot: the watcher dies, the run directory (a tmpfs) and the
    // kernel's ruleset are gone; the state directory stays.
    host.kill_watcher();
    std::fs::remove_dir_all(host.run_dir()).unwrap();
    host.sh(&["nft", "flush", "ruleset"]);
    assert_eq!(host.table(), None);

    let out = host.expect(0, &["restore"]);
    let text = stdout(&out);
    assert!(
        text.contains("discarded the unconfirmed apply of profile vps-profile"),
        "{text}"
    );
    assert!(
        text.contains("restored the confirmed profile web-server"),
        "{text}"
    );
    assert_eq!(host.table_text(), confirmed);
    assert!(host.pending().is_none());
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert_eq!(s["confirmed"], "web-server", "{s}");

    // Restoring again, with nothing pending, is the same ruleset.
    let out = host.expect(0, &["restore"]);
    assert!(!stdout(&out).contains("discarded"), "{}", stdout(&out));
    assert_eq!(host.table_text(), confirmed);

    // Run by hand inside a window, restore also ends the live watcher.
    host.apply_pending("vps-profile", 600);
    let watcher = host.watcher_pid();
    host.expect(0, &["restore"]);
    assert_eq!(host.table_text(), confirmed);
    assert!(
        wait_until(Duration::from_secs(10), || !alive_naming(
            watcher,
            &host.needle()
        )),
        "restore left the watcher of the discarded apply running"
    );

    // A damaged pending record is discarded too, never loaded.
    host.apply_pending("vps-profile", 600);
    host.kill_watcher();
    std::fs::write(host.state_dir().join("pending.json"), "{\"prof").unwrap();
    let out = host.expect(0, &["restore"]);
    assert!(stdout(&out).contains("discarded"), "{}", stdout(&out));
    assert_eq!(host.table_text(), confirmed);
    assert!(host.pending().is_none());
}

#[test]
#[ignore = "needs root"]
fn a_damaged_pending_record_still_reverts_on_time() {
    needs_root("a_damaged_pending_record_still_reverts_on_time");
    let host = Host::new("damagedp");
    let before = host.confirm_profile("web-server");
    let applied = host.apply_pending("vps-profile", 2);
    // The watcher has read the record once it says so in its log.
    let log = || std::fs::read_to_string(host.run_dir().join("watcher.log")).unwrap_or_default();
    let token = applied["token"].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(10), || log()
            .contains(&format!("watching apply {token}"))),
        "{}",
        log()
    );
    std::fs::write(host.state_dir().join("pending.json"), "{\"prof").unwrap();
    let seen = seen_at(&host, Some(&before), deadline(&applied));
    assert_on_time(seen, deadline(&applied));
    // It also cleared the damaged record, so status works again.
    assert!(
        wait_until(Duration::from_secs(10), || !host
            .state_dir()
            .join("pending.json")
            .exists()),
        "{}",
        log()
    );
    assert_eq!(host.status()["kernel"], "confirmed");
}

#[test]
#[ignore = "needs root"]
fn a_damaged_confirmed_record_restores_the_built_in_ssh_only_ruleset() {
    needs_root("a_damaged_confirmed_record_restores_the_built_in_ssh_only_ruleset");
    let host = Host::new("damaged");
    host.confirm_profile("vps-profile");
    std::fs::write(host.state_dir().join("confirmed.json"), "{\"profile\": ").unwrap();
    let out = host.expect(1, &["restore"]);
    let err = stderr(&out);
    assert!(
        err.contains("confirmed.json"),
        "names the damaged file: {err}"
    );
    assert!(err.contains("minimal safe profile ssh-only"), "{err}");
    assert_eq!(host.table_text(), reference_text("ssh-only"));
}

#[test]
#[ignore = "needs root"]
fn confirm_refuses_another_token_and_a_kernel_changed_behind_its_back() {
    needs_root("confirm_refuses_another_token_and_a_kernel_changed_behind_its_back");
    let host = Host::new("confirmno");
    host.confirm_profile("web-server");
    let applied = host.apply_pending("vps-profile", 600);

    let out = host.expect(1, &["confirm", "--token", "0123456789abcdef01234567"]);
    assert!(stderr(&out).contains("another token"), "{}", stderr(&out));
    let p = host.pending().expect("still pending");
    assert_eq!(p["token"], applied["token"]);
    assert_eq!(host.confirmed().unwrap()["profile"], "web-server");

    host.sh(&[
        "nft", "add", "rule", "inet", "fwharden", "input", "tcp", "dport", "9", "accept",
    ]);
    let out = host.expect(1, &["confirm"]);
    assert!(
        stderr(&out).contains("no longer holds the pending profile vps-profile"),
        "{}",
        stderr(&out)
    );
    assert!(host.pending().is_some());
    assert_eq!(host.confirmed().unwrap()["profile"], "web-server");
    // Rolling back from the hand-edited table still goes to the confirmed one.
    host.expect(0, &["rollback"]);
    assert_eq!(host.table_text(), reference_text("web-server"));
}

#[test]
#[ignore = "needs root"]
fn a_busy_lock_at_the_deadline_is_waited_out_logged_and_the_rollback_still_happens() {
    needs_root("a_busy_lock_at_the_deadline_is_waited_out_logged_and_the_rollback_still_happens");
    let host = Host::new("busylock");
    let before = host.confirm_profile("web-server");
    let applied = host.apply_pending("vps-profile", 1);
    let lock = host.hold_lock();
    // Across one of the watcher's 5 s waits for the lock.
    let release = deadline(&applied) + 6000;
    while now_ms() < release {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(host.table_text(), before, "rolled back without the lock");
    drop(lock);
    let seen = seen_at(&host, Some(&before), release);
    assert!(
        seen <= release + 1000,
        "{} ms after the lock was free",
        seen - release
    );
    assert!(wait_until(Duration::from_secs(10), || host
        .pending()
        .is_none()));
    // The rolled-back note is written before the record goes.
    assert!(host.state_dir().join("rolled-back.json").exists());
    let s = host.status();
    let outcomes: Vec<&str> = s["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes
            .first()
            .is_some_and(|o| o.contains("waiting for the lock")),
        "{s}"
    );
    assert_eq!(outcomes.last(), Some(&"ok"), "{s}");
    host.wait_quiet();
}
