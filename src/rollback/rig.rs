//! The test rig of the safety net: an in-memory kernel, bookkept watchers
//! and a state directory of its own, so apply, confirm, rollback, restore
//! and the overdue path run as a normal user, with faults on purpose.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::placement::Placement;
use super::watcher::Spawned;
use super::{Ports, RollbackError, Watchers};
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
    /// Stopped by fwharden (restore).
    Stopped,
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

    pub fn kill(&self, pid: u32) {
        if let Some(entry) = self.book.borrow_mut().get_mut(&pid) {
            entry.1 = Life::Killed;
        }
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

    fn alive(&self, pid: u32, token: &str) -> bool {
        self.book
            .borrow()
            .get(&pid)
            .is_some_and(|(t, l)| t == token && *l == Life::Running)
    }

    fn stop(&self, _dirs: &Dirs, p: &Pending) {
        let Some(pid) = p.watcher else { return };
        if let Some(entry) = self.book.borrow_mut().get_mut(&pid) {
            if entry.0 == p.token && entry.1 == Life::Running {
                entry.1 = Life::Stopped;
            }
        }
    }

    fn forget(&self, _dirs: &Dirs, _token: &str) {}
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

    /// Moves the pending apply's deadline into the past.
    pub fn expire(&self) {
        if let Some(mut p) = self.pending() {
            p.deadline_ms = 0;
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
