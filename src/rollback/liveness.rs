//! Is the watcher of a pending apply still doing its job? A pid that
//! exists is not enough: a watcher stopped by SIGSTOP (state `T` in
//! /proc/PID/stat, `t` when stopped by a tracer) or in a frozen cgroup
//! (`frozen 1` in its group's `cgroup.events`, cgroup v2) never reaches
//! its deadline. `status` says so, and past the deadline plus
//! [`TAKEOVER_GRACE_MS`] any command takes the rollback over.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::placement;
use crate::state::Pending;

/// How long past its deadline an apply is left to its watcher when the
/// watcher is there but not acting (stopped, frozen, or just silent): time
/// for a watcher that is merely slow (a busy host) to take the lock. Past
/// it, any command rolls back; the lock and the token keep a watcher that
/// wakes later from acting twice (it looks at the record again under the
/// lock, and finds it gone).
pub const TAKEOVER_GRACE_MS: u64 = 5_000;

/// What the watcher of a pending apply is doing, as far as /proc tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WatcherState {
    /// Runs (or sleeps, waiting for its deadline).
    Alive,
    /// Stopped by a signal (SIGSTOP, SIGTSTP) or a tracer.
    Stopped,
    /// Its cgroup is frozen.
    Frozen,
    /// No process, or the pid is another program's now.
    Gone,
}

impl WatcherState {
    pub fn describe(self) -> &'static str {
        match self {
            WatcherState::Alive => "alive",
            WatcherState::Stopped => "STOPPED (SIGSTOP or a tracer): it cannot roll back",
            WatcherState::Frozen => "FROZEN (its cgroup is frozen): it cannot roll back",
            WatcherState::Gone => "gone",
        }
    }
}

/// Whether `pid` is the watcher of the apply with this token. After a
/// reboot the recorded pid may belong to any other process: only a process
/// whose command line carries `watch` and the token counts.
pub fn watcher_alive(pid: u32, token: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&b"watch".as_slice()) && args.contains(&token.as_bytes())
}

/// The state of `p`'s watcher; `run` is where a temporary cgroup2 view
/// may be mounted to read its group's state.
pub fn watcher_state(p: &Pending, run: &Path) -> WatcherState {
    let Some(pid) = p.watcher.filter(|w| watcher_alive(*w, &p.token)) else {
        return WatcherState::Gone;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if stopped(&stat) {
        WatcherState::Stopped
    } else if frozen(pid, run) {
        WatcherState::Frozen
    } else {
        WatcherState::Alive
    }
}

/// Whether a /proc/PID/stat line says the process is stopped. The state is
/// the first field after the command name, which is in parentheses and
/// may itself hold spaces and parentheses: look after the last `)`.
fn stopped(stat: &str) -> bool {
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("T" | "t"))
}

/// Whether the cgroup v2 group of `pid` is frozen (`cgroup.events`).
fn frozen(pid: u32, run: &Path) -> bool {
    let Some(group) = placement::v2_group_of(&pid.to_string()) else {
        return false;
    };
    let Ok(root) = placement::V2Root::open(run) else {
        return false;
    };
    let events = root
        .path()
        .join(group.trim_start_matches('/'))
        .join("cgroup.events");
    std::fs::read_to_string(events).is_ok_and(|e| frozen_events(&e))
}

fn frozen_events(events: &str) -> bool {
    events.lines().any(|l| l.trim() == "frozen 1")
}

/// Whether a command should roll `p` back itself, at `now_ms`, its
/// watcher being `state`: at the deadline when the watcher is gone, and
/// past the grace period whatever it is doing.
pub fn takeover_due(p: &Pending, state: WatcherState, now_ms: u64) -> bool {
    now_ms >= p.deadline_ms
        && (state == WatcherState::Gone
            || now_ms >= p.deadline_ms.saturating_add(TAKEOVER_GRACE_MS))
}

/// Ends the watcher of `p`, if it still runs, and removes its cgroup;
/// waits at most 5 s. SIGKILL, not SIGTERM: it reaches a stopped process
/// and passes a cgroup v2 freeze, and the watcher keeps nothing in memory
/// that matters (its records are written atomically).
pub fn end_watcher(p: &Pending, run: &Path) {
    if let Some(pid) = p
        .watcher
        .filter(|w| watcher_alive(*w, &p.token))
        .and_then(|w| i32::try_from(w).ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for _ in 0..250 {
        // Gone, and its group empty: the kernel may take a moment after
        // the exit before rmdir(2) of the group succeeds.
        if watcher_state(p, run) == WatcherState::Gone
            && placement::remove_left_group(&p.token, run)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_read_after_the_last_parenthesis() {
        assert!(stopped("42 (fwharden) T 1 42 42 0 -1"));
        assert!(stopped("42 (a) b) (c) t 1 42"));
        assert!(!stopped("42 (T) S 1 42 42 0 -1"));
        assert!(!stopped(""));
    }

    #[test]
    fn cgroup_events_say_frozen() {
        assert!(frozen_events("populated 1\nfrozen 1\n"));
        assert!(!frozen_events("populated 1\nfrozen 0\n"));
    }

    #[test]
    fn a_stopped_watcher_is_taken_over_only_past_the_grace_period() {
        let p = Pending {
            profile: "p".into(),
            ruleset: Some(crate::ruleset::Ruleset {
                profile: "p".into(),
                table: "fwharden".into(),
                sets: vec![],
                chains: vec![],
                bans: None,
            }),
            previous: None,
            previous_from: crate::state::Origin::NoTable,
            applied_ms: 0,
            deadline_ms: 100_000,
            token: "t".into(),
            watcher: Some(1),
            watcher_lives: None,
            proven: false,
        };
        for state in [
            WatcherState::Alive,
            WatcherState::Stopped,
            WatcherState::Frozen,
        ] {
            assert!(!takeover_due(&p, state, 99_999));
            assert!(!takeover_due(&p, state, 100_000));
            assert!(takeover_due(&p, state, 100_000 + TAKEOVER_GRACE_MS));
        }
        assert!(!takeover_due(&p, WatcherState::Gone, 99_999));
        assert!(takeover_due(&p, WatcherState::Gone, 100_000));
    }

    #[test]
    fn this_test_process_is_no_watcher() {
        assert!(!watcher_alive(std::process::id(), "no-such-token"));
    }
}
