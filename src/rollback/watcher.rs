//! The detached watcher: a second fwharden process that restores the
//! previous ruleset at the deadline unless the apply is confirmed first.
//!
//! It is started in a session of its own (setsid): no controlling terminal,
//! so the SIGHUP of a dying SSH session never reaches it, and another
//! process group, so killing the apply's group leaves it running. It keeps
//! no state in memory that matters: the pending record on disk says what to
//! do, and a confirm, a rollback or a newer apply (another token) all tell
//! it to stop simply by changing that record.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{signal, SigHandler, Signal};

use super::{undo, RollbackError};
use crate::state::{now_ms, ApplyLock, Dirs};

/// How often the watcher looks at the pending record: a confirm stops it
/// within this, and a deadline is met within this.
const POLL: Duration = Duration::from_millis(100);

/// Starts `fwharden watch --token TOKEN` detached; returns its pid.
pub fn spawn(dirs: &Dirs, token: &str) -> Result<u32, RollbackError> {
    let exe = std::env::current_exe().map_err(RollbackError::Watcher)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dirs.watcher_log())
        .map_err(RollbackError::Watcher)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--state-dir")
        .arg(&dirs.state)
        .arg("--run-dir")
        .arg(&dirs.run)
        .args(["watch", "--token", token])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(RollbackError::Watcher)?)
        .stderr(log);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; setsid(2) is one, and it touches
    // no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().map_err(RollbackError::Watcher)?;
    Ok(child.id())
}

/// The watcher's main loop. Returns when the apply it watches is confirmed,
/// superseded or rolled back.
pub fn run(dirs: &Dirs, token: &str) -> Result<(), RollbackError> {
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
        match dirs.pending() {
            Ok(Some(p)) if p.token == token => known = p,
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
    // again, since it may have confirmed.
    let _lock = loop {
        match ApplyLock::take(&dirs.lock_path(), Duration::from_secs(5)) {
            Ok(lock) => break lock,
            Err(e) => log(&format!("waiting for the lock: {e}")),
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
        Err(e) => {
            log(&format!(
                "cannot read the pending record ({e}); rolling back from memory"
            ));
            known
        }
    };
    undo(dirs, &pending, "deadline")?;
    log(&format!(
        "apply {token} of profile {} was not confirmed in time: restored {}",
        pending.profile,
        pending.previous_name()
    ));
    Ok(())
}

fn log(msg: &str) {
    eprintln!("{} fwharden watch: {msg}", now_ms());
}
