//! The test rig of the safety net: an in-memory kernel, bookkept watchers
//! and a state directory of its own, so apply, confirm, rollback, restore
//! and the overdue path run as a normal user, with faults on purpose.

use std::cell::RefCell;
use std::collections::BTreeMap;

use std::path::Path;

use super::placement::Placement;
use super::watcher::Spawned;
use super::{Ports, RollbackError, WatcherState, Watchers};
use crate::kernel::memory::Memory;
use crate::profile::{self, SearchPath};
use crate::ruleset::Ruleset;
use crate::state::{Dirs, Pending};

/// What became of a watcher the rig started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Running,
    /// Killed by the test (a `kill -9`, a reboot).
    Killed,
    /// Stopped by the test (SIGSTOP, a frozen cgroup): there, not acting.
    Stopped,
    /// Ended by fwharden (restore, a takeover, a failed apply).
    Ended,
    /// Ended by fwharden while stopped (as `rollback` does before it waits
    /// for the lock such a watcher may hold): it takes away no watcher
    /// that could act, as a kill would not.
    EndedStopped,
}

/// Watchers as entries in a book: spawning one writes it down, nothing
/// runs. The test plays the watcher's part when it wants the deadline.
#[derive(Debug, Default)]
pub struct Bookkept {
    book: RefCell<BTreeMap<u32, (String, Life)>>,
    /// The next spawn fails (no cgroup, no fork).
    pub refuse_next: RefCell<bool>,
}

impl Bookkept {
    pub fn life(&self, pid: u32) -> Option<Life> {
        self.book.borrow().get(&pid).map(|(_, l)| *l)
    }

    fn set(&self, pid: u32, life: Life) {
        if let Some(entry) = self.book.borrow_mut().get_mut(&pid) {
            entry.1 = life;
        }
    }

    pub fn kill(&self, pid: u32) {
        self.set(pid, Life::Killed);
    }

    pub fn sigstop(&self, pid: u32) {
        self.set(pid, Life::Stopped);
    }

    /// Whether `pid` is the running watcher of the apply with `token`.
    pub fn alive(&self, pid: u32, token: &str) -> bool {
        self.book
            .borrow()
            .get(&pid)
            .is_some_and(|(t, l)| t == token && *l == Life::Running)
    }

    /// How many watchers were started.
    pub fn spawned(&self) -> usize {
        self.book.borrow().len()
    }
}

impl Watchers for Bookkept {
    fn spawn(&self, _dirs: &Dirs, token: &str) -> Result<Spawned, RollbackError> {
        if self.refuse_next.replace(false) {
            return Err(RollbackError::Watcher(std::io::Error::from_raw_os_error(
                libc::EAGAIN,
            )));
        }
        let mut book = self.book.borrow_mut();
        let pid = 10_000 + book.len() as u32;
        book.insert(pid, (token.to_string(), Life::Running));
        Ok(Spawned {
            pid,
            placement: Placement::CallersCgroup {
                why: "a test's bookkept watcher".into(),
            },
        })
    }

    fn state(&self, p: &Pending, _run: &Path) -> WatcherState {
        let book = self.book.borrow();
        match p.watcher.and_then(|w| book.get(&w)) {
            Some((t, Life::Running)) if *t == p.token => WatcherState::Alive,
            Some((t, Life::Stopped)) if *t == p.token => WatcherState::Stopped,
            _ => WatcherState::Gone,
        }
    }

    fn end(&self, p: &Pending, _run: &Path) {
        let Some(pid) = p.watcher else { return };
        if let Some(entry) = self.book.borrow_mut().get_mut(&pid) {
            if entry.0 == p.token {
                entry.1 = match entry.1 {
                    Life::Running => Life::Ended,
                    Life::Stopped => Life::EndedStopped,
                    life => life,
                };
            }
        }
    }

    fn forget(&self, _run: &Path, _token: &str) {}
}

/// One host: its kernel, its watchers, its state directory.
pub struct Rig {
    _dir: tempfile::TempDir,
    pub dirs: Dirs,
    pub kernel: Memory,
    pub watchers: Bookkept,
}

impl Rig {
    pub fn new() -> Rig {
        // Records are fsynced: on /dev/shm that costs nothing, which the
        // property test's thousands of sequences need.
        let dir = tempfile::Builder::new()
            .prefix("fwharden-rig-")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory");
        let dirs = Dirs {
            state: dir.path().join("state"),
            run: dir.path().join("run"),
        };
        Rig {
            _dir: dir,
            dirs,
            kernel: Memory::new(),
            watchers: Bookkept::default(),
        }
    }

    pub fn ports(&self) -> Ports<'_> {
        Ports {
            kernel: &self.kernel,
            watchers: &self.watchers,
        }
    }

    pub fn pending(&self) -> Option<Pending> {
        self.dirs.pending().expect("a readable pending record")
    }

    pub fn confirmed(&self) -> Option<Ruleset> {
        self.dirs
            .confirmed()
            .expect("a readable confirmed record")
            .map(|c| c.ruleset)
    }

    /// Moves the pending apply's deadline ten minutes into the past: past
    /// the grace a silent watcher gets, too.
    pub fn expire(&self) {
        self.expire_by(600_000);
    }

    /// Moves the pending apply's deadline `ms` into the past.
    pub fn expire_by(&self, ms: u64) {
        if let Some(mut p) = self.pending() {
            p.deadline_ms = crate::state::now_ms().saturating_sub(ms);
            self.dirs.save_pending(&p).expect("the record written");
        }
    }

    /// What the watcher does at the deadline (`watcher::run` without its
    /// waiting): roll back, unless the record is gone or superseded.
    pub fn deadline(&self) -> Result<(), RollbackError> {
        let Some(p) = self.pending() else {
            return Ok(());
        };
        let alive = p.watcher.is_some_and(|w| self.watchers.alive(w, &p.token));
        if !alive {
            return Ok(());
        }
        super::undo(self.ports(), &self.dirs, &p, "deadline")
    }
}

/// A built-in profile, compiled.
pub fn compiled(name: &str) -> Ruleset {
    let search = SearchPath {
        dirs: vec![],
        builtin: true,
    };
    let loaded = profile::load(name, &search);
    crate::compile::compile(&loaded.profile.expect("a built-in profile loads"))
}

/// An apply from the console: no SSH client, so no guard and no hatch.
pub fn console() -> crate::sshclient::Operator {
    crate::sshclient::Operator {
        clients: vec![],
        how: crate::sshclient::How::NotFound,
        notes: vec![],
    }
}
