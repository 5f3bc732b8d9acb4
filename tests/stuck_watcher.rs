//! A watcher that exists but cannot act, against a real kernel inside
//! throwaway namespaces: stopped (SIGSTOP) or in a frozen cgroup, `status`
//! says so, and past the deadline plus the grace period a command kills it
//! and rolls back itself; its cgroup goes with it.
//!
//! No timing assertion: every wait is a generous deadline on a condition.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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
#[ignore = "needs root"]
fn a_stopped_watcher_is_reported_and_taken_over_past_the_grace_period() {
    needs_root("a_stopped_watcher_is_reported_and_taken_over_past_the_grace_period");
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

/// Thaws a cgroup when dropped (panic included), so the host's cleanup
/// can remove it.
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.freeze"), "0");
    }
}

/// Freezes the cgroup of the pending apply's watcher; its pid, its group
/// and the guard that thaws it.
fn freeze_watcher(host: &Host) -> (i32, PathBuf, Thaw) {
    let pid = host.watcher_pid();
    let group = watcher_groups(&[pid])
        .pop()
        .expect("the watcher lives in a cgroup of its own here");
    let thaw = Thaw(group.clone());
    std::fs::write(group.join("cgroup.freeze"), "1").unwrap();
    let events = || std::fs::read_to_string(group.join("cgroup.events")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || events().contains("frozen 1")),
        "{}",
        events()
    );
    (pid, group, thaw)
}

#[test]
#[ignore = "needs root"]
fn a_frozen_watcher_is_reported_and_taken_over_past_the_grace_period() {
    needs_root("a_frozen_watcher_is_reported_and_taken_over_past_the_grace_period");
    let host = Host::new("frozen");
    let before = host.confirm_profile("web-server");

    // A far deadline: status tells a frozen watcher from a live one, and
    // rollback ends it (a fatal signal passes a cgroup v2 freeze).
    host.apply_pending("vps-profile", 600);
    let (pid, group, _thaw) = freeze_watcher(&host);
    let s = host.status();
    assert_eq!(s["pending"]["watcher_state"], "frozen", "{s}");
    let text = stdout(&host.expect(0, &["status"]));
    assert!(text.contains("FROZEN"), "{text}");
    host.expect(0, &["rollback"]);
    assert_eq!(host.table_text(), before);
    assert!(
        !alive_naming(pid, &host.needle()),
        "the frozen watcher is gone"
    );
    assert!(!group.exists(), "its cgroup is removed");

    // A near deadline: a command past deadline + grace takes over.
    host.apply_pending("vps-profile", 5);
    let (pid, group, _thaw) = freeze_watcher(&host);
    let mut overdue = String::new();
    let taken_over = wait_until(Duration::from_secs(120), || {
        let s = host.status();
        if let Some(o) = s["overdue"].as_str() {
            overdue = o.to_string();
        }
        s["pending"].is_null()
    });
    assert!(taken_over, "{}", host.status());
    assert!(overdue.contains("frozen"), "{overdue}");
    assert_eq!(host.table_text(), before);
    assert!(!alive_naming(pid, &host.needle()));
    assert!(!group.exists(), "its cgroup is removed");
}
