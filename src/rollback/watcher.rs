//! The detached watcher: a second fwharden process that restores the
//! previous ruleset at the deadline unless the apply is confirmed first.
//!
//! It is started in a session of its own (setsid): no controlling terminal,
//! so the SIGHUP of a dying SSH session never reaches it, and another
//! process group, so killing the apply's group leaves it running. It also
//! leaves the caller's cgroup (see [`super::placement`]), so stopping the
//! login session or killing its cgroup whole leaves it running too. It keeps
//! no state in memory that matters: the pending record on disk says what to
//! do, and a confirm, a rollback or a newer apply (another token) all tell
//! it to stop simply by changing that record.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{signal, SigHandler, Signal};

use super::placement::{self, Placement};
use super::{undo, Ports, RollbackError};
use crate::state::{now_ms, ApplyLock, Attempt, Dirs};

/// How often the watcher looks at the pending record: a confirm stops it
/// within this, and a deadline is met within this.
const POLL: Duration = Duration::from_millis(100);
/// How long, and how many times, the watcher waits for the apply lock at
/// the deadline: a minute in all.
const LOCK_WAIT: Duration = Duration::from_secs(5);
const LOCK_WAITS: u32 = 12;

/// Removes the watcher's own cgroup (if it has one) when it exits; holds
/// the run directory, where a temporary cgroup2 mount may be needed.
struct LeaveGroupOnExit(PathBuf);

impl Drop for LeaveGroupOnExit {
    fn drop(&mut self) {
        placement::leave_own_group(&self.0);
    }
}

/// A started watcher: its pid, and where it lives.
#[derive(Debug, Clone)]
pub struct Spawned {
    pub pid: u32,
    pub placement: Placement,
}

/// `fwharden --state-dir .. --run-dir .. watch --token TOKEN`.
fn watcher_argv(dirs: &Dirs, token: &str) -> Result<Vec<OsString>, RollbackError> {
    let exe = std::env::current_exe().map_err(RollbackError::Watcher)?;
    Ok(vec![
        exe.into(),
        "--state-dir".into(),
        dirs.state.clone().into(),
        "--run-dir".into(),
        dirs.run.clone().into(),
        "watch".into(),
        "--token".into(),
        token.into(),
    ])
}

/// Starts `fwharden watch --token TOKEN` out of the caller's session (see
/// [`super::placement`]) and returns once it runs, before the commit.
pub fn spawn(dirs: &Dirs, token: &str) -> Result<Spawned, RollbackError> {
    let argv = watcher_argv(dirs, token)?;
    let mut why_not_systemd = "systemd is not PID 1".to_string();
    if placement::systemd_is_pid1() {
        match spawn_unit(dirs, token, &argv) {
            Ok(pid) => {
                return Ok(Spawned {
                    pid,
                    placement: Placement::SystemdUnit {
                        unit: format!("{}.service", placement::name(token)),
                    },
                })
            }
            Err(why) => why_not_systemd = why.to_string(),
        }
    }
    match placement::create_group(token, &dirs.run) {
        Ok(group) => match born_in(dirs, &argv, &group.dir)
            .or_else(|_| spawn_detached(dirs, &argv, Some(&group.procs)))
        {
            Ok(pid) => Ok(Spawned {
                pid,
                placement: Placement::Cgroup { group: group.name },
            }),
            Err(e) => {
                placement::remove_group(&group.name, &dirs.run);
                let why = format!("{why_not_systemd}; moving into {} failed: {e}", group.name);
                spawn_in_place(dirs, &argv, why)
            }
        },
        Err(e) => spawn_in_place(dirs, &argv, format!("{why_not_systemd}; {e}")),
    }
}

fn spawn_in_place(dirs: &Dirs, argv: &[OsString], why: String) -> Result<Spawned, RollbackError> {
    let pid = spawn_detached(dirs, argv, None)?;
    Ok(Spawned {
        pid,
        placement: Placement::CallersCgroup { why },
    })
}

/// Why the watcher could not be started as a systemd unit (it is then
/// started in a cgroup of its own, and `status` says why).
#[derive(Debug, thiserror::Error)]
enum UnitError {
    #[error("systemd-run: {0}")]
    Run(#[source] std::io::Error),
    #[error("systemd-run failed: {0}")]
    Refused(String),
    #[error("unit {0} started, but its main pid is unknown")]
    NoPid(String),
}

/// The watcher as a transient systemd service; its main pid.
fn spawn_unit(dirs: &Dirs, token: &str, argv: &[OsString]) -> Result<u32, UnitError> {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    // A unit starts in PID 1's network namespace; the rollback must act in
    // ours (a container's, a test's).
    let netns = (ino("/proc/thread-self/ns/net") != ino("/proc/1/ns/net"))
        .then(|| PathBuf::from(format!("/proc/{}/ns/net", std::process::id())));
    let env: Vec<(String, String)> = std::env::var(super::FORBID_ENV)
        .map(|v| vec![(super::FORBID_ENV.to_string(), v)])
        .unwrap_or_default();
    let line =
        placement::systemd_run_argv(token, &dirs.watcher_log(), netns.as_deref(), &env, argv);
    let out = Command::new(&line[0])
        .args(&line[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(UnitError::Run)?;
    if !out.status.success() {
        return Err(UnitError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let unit = format!("{}.service", placement::name(token));
    let main_pid = Command::new("systemctl")
        .args(["show", "--property=MainPID", "--value", &unit])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        })
        .filter(|pid| *pid != 0);
    match main_pid {
        Some(pid) => Ok(pid),
        None => {
            // A watcher nobody can name is one `status` calls dead: stop
            // it, and let the caller start one it can name.
            let _ = Command::new("systemctl").args(["stop", &unit]).output();
            Err(UnitError::NoPid(unit))
        }
    }
}

/// The watcher's log, its stdout and stderr.
fn open_log(dirs: &Dirs) -> Result<std::fs::File, RollbackError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dirs.watcher_log())
        .map_err(RollbackError::Watcher)
}

/// Starts the watcher detached (setsid), born in the group whose directory
/// is `group` (see [`super::clone_into`]); its pid.
fn born_in(dirs: &Dirs, argv: &[OsString], group: &std::fs::File) -> Result<u32, RollbackError> {
    let log = open_log(dirs)?;
    super::clone_into::spawn(group, argv, &log).map_err(RollbackError::Watcher)
}

/// Starts the watcher detached (setsid), first moved into the group whose
/// `cgroup.procs` is `procs`, when given; its pid.
fn spawn_detached(
    dirs: &Dirs,
    argv: &[OsString],
    procs: Option<&std::fs::File>,
) -> Result<u32, RollbackError> {
    let log = open_log(dirs)?;
    // Opened by the caller, written in the child: only write(2) runs
    // between fork and exec. Rust opens files close-on-exec, so the watcher
    // does not keep it.
    let procs_fd = procs.map(|f| f.as_raw_fd());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(RollbackError::Watcher)?)
        .stderr(log);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: setsid(2) and write(2) are, and
    // they touch no memory of the parent but the one static byte written.
    // `procs_fd` stays open in the parent until `spawn` returns, so it is
    // open in the child.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if let Some(fd) = procs_fd {
                // "0" moves the writing process (cgroup v2 cgroup.procs).
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(RollbackError::Watcher)?;
    Ok(child.id())
}

/// The watcher's main loop. Returns when the apply it watches is confirmed,
/// superseded or rolled back.
pub fn run(ports: Ports, dirs: &Dirs, token: &str) -> Result<(), RollbackError> {
    // However this returns, the watcher's own cgroup goes with it.
    let _group = LeaveGroupOnExit(dirs.run.clone());
    // Belt and braces: setsid already left the terminal behind.
    // SAFETY: installing SIG_IGN runs no handler code, so nothing unsound
    // can happen in signal context.
    unsafe {
        signal(Signal::SIGHUP, SigHandler::SigIgn).map_err(|e| RollbackError::Watcher(e.into()))?;
    }
    // The record as it was at the start. If the file later cannot be read
    // (damaged, a full disk), the watcher keeps to this copy and still
    // rolls back: a watcher must never fail open.
    let Some(mut known) = dirs.pending()?.filter(|p| p.token == token) else {
        log(&format!("apply {token} is not pending: nothing to do"));
        return Ok(());
    };
    log(&format!(
        "watching apply {token} of profile {}",
        known.profile
    ));
    loop {
        // Only the head: the rulesets (maybe a million prefixes) were read
        // once above and are read again at the deadline.
        match dirs.pending_head() {
            Ok(Some(p)) if p.token == token => known.deadline_ms = p.deadline_ms,
            Ok(_) => {
                log(&format!(
                    "apply {token} is no longer pending: nothing to do"
                ));
                return Ok(());
            }
            Err(e) => log(&format!(
                "cannot read the pending record ({e}); keeping the deadline"
            )),
        }
        let now = now_ms();
        if now >= known.deadline_ms {
            break;
        }
        std::thread::sleep(POLL.min(Duration::from_millis(known.deadline_ms - now)));
    }
    // A confirm may be holding the lock right now: wait for it, then look
    // again, since it may have confirmed. Bounded: a holder that never lets
    // go is a hung fwharden; the escape hatch is open by then, and the next
    // command that finds the apply overdue rolls it back.
    let mut waits = 0;
    let _lock = loop {
        match ApplyLock::take(&dirs.lock_path(), LOCK_WAIT) {
            Ok(lock) => break lock,
            Err(e) => {
                waits += 1;
                log(&format!(
                    "waiting for the lock ({waits} of {LOCK_WAITS}): {e}"
                ));
                let _ = dirs.log_attempt(&Attempt {
                    token: token.into(),
                    profile: known.profile.clone(),
                    at_ms: now_ms(),
                    reason: "deadline".into(),
                    number: waits,
                    outcome: format!("waiting for the lock: {e}"),
                });
                if waits >= LOCK_WAITS {
                    return Err(e.into());
                }
            }
        }
    };
    let pending = match dirs.pending() {
        Ok(Some(p)) if p.token == token => p,
        Ok(_) => {
            log(&format!(
                "apply {token} was confirmed or superseded at the deadline"
            ));
            return Ok(());
        }
        // Another command may have taken this apply over while this
        // watcher could not act (stopped, frozen): its note says so, and
        // going back from memory now could undo a newer apply.
        Err(_) if taken_over(dirs, token) => {
            log(&format!(
                "apply {token} was already rolled back by another command"
            ));
            return Ok(());
        }
        Err(e) => {
            log(&format!(
                "cannot read the pending record ({e}); rolling back from memory"
            ));
            known
        }
    };
    // Bans wait while the previous ruleset goes back in and is read back.
    let _bans_wait = ports.kernel.hold_bans();
    undo(ports, dirs, &pending, "deadline")?;
    log(&format!(
        "apply {token} of profile {} was not confirmed in time: restored {}",
        pending.profile,
        pending.previous_name()
    ));
    Ok(())
}

/// Whether the last rollback noted is this apply's.
fn taken_over(dirs: &Dirs, token: &str) -> bool {
    dirs.rolled_back()
        .ok()
        .flatten()
        .is_some_and(|r| r.token == token)
}

fn log(msg: &str) {
    eprintln!(
        "{} fwharden watch: {msg}",
        crate::duration::iso8601_ms(now_ms())
    );
}
