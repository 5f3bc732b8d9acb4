//! The records and their atomic, root-only files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::atomic::{self, sync_dir};
use super::sealed::{self, Damage, Opened};
use crate::ruleset::Ruleset;

pub const STATE_DIR: &str = "/var/lib/fwharden";
pub const RUN_DIR: &str = "/run/fwharden";

const CONFIRMED: &str = "confirmed.json";
const PENDING: &str = "pending.json";
const ROLLED_BACK: &str = "rolled-back.json";
const ATTEMPTS: &str = "rollback-attempts.json";
/// How many attempts the log keeps: enough for the last few rollbacks.
const ATTEMPTS_KEPT: usize = 32;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged ({source}); {DAMAGED_ADVICE}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is damaged: its content does not match the digest it was written with (a hand edit, or a disk fault); {DAMAGED_ADVICE}")]
    Mismatch { path: PathBuf },
}

/// What to do about a damaged record. Moving it away is safe: with no
/// confirmed record, a timed apply rolls back to the table the kernel
/// holds (or refuses), never to no firewall.
const DAMAGED_ADVICE: &str = "fwharden does not trust it: `fwharden restore` loads the minimal safe profile ssh-only instead; put the file back from a backup, or move it away and apply a profile again (its rollback then goes back to the table the kernel holds, never to no firewall)";

/// Where state lives; both can be moved (tests, unusual layouts).
#[derive(Debug, Clone)]
pub struct Dirs {
    pub state: PathBuf,
    pub run: PathBuf,
}

impl Default for Dirs {
    fn default() -> Dirs {
        Dirs {
            state: PathBuf::from(STATE_DIR),
            run: PathBuf::from(RUN_DIR),
        }
    }
}

/// The ruleset the operator confirmed last: what `restore` loads at boot
/// and what a rollback goes back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    pub profile: String,
    #[serde(with = "super::lists::ruleset")]
    pub ruleset: Ruleset,
    /// Seconds since the epoch.
    pub confirmed_at: u64,
    /// When the kernel was last read holding exactly `ruleset`. While the
    /// kernel's stamp is still this one, nobody has committed anything
    /// since, so an apply of the same ruleset is a no-op without reading
    /// every set element back.
    #[serde(default)]
    pub seen: Option<Stamp>,
    /// Its rules were proven with real packets in a probe replica, by this
    /// apply or by the confirmed apply whose set elements alone it changes
    /// (see `cli::apply`). Records from before this field: not proven.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proven: bool,
}

/// A point in the kernel's ruleset history: the generation counter, which
/// every commit advances, qualified by the boot and the network namespace
/// it counts in (it restarts with either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub boot_id: String,
    pub netns: u64,
    pub generation: u32,
}

impl Stamp {
    /// The stamp of the current boot and network namespace at `generation`;
    /// `None` when either cannot be read.
    pub fn at(generation: u32) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let netns = fs::metadata("/proc/thread-self/ns/net").ok()?.ino();
        Some(Stamp {
            boot_id: boot_id.trim().to_string(),
            netns,
            generation,
        })
    }
}

/// An apply waiting for `confirm`. Its watcher restores `previous` at
/// `deadline` unless this record is gone or carries another token by then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub profile: String,
    /// What the apply loaded: a ruleset, or `None` for "no fwharden
    /// table" (a `fwharden disable`).
    #[serde(with = "super::lists::optional")]
    pub ruleset: Option<Ruleset>,
    /// What to go back to: the last confirmed ruleset, or `None` for "no
    /// fwharden table".
    #[serde(with = "super::lists::optional")]
    pub previous: Option<Ruleset>,
    /// Where `previous` was learnt (records from before this field: the
    /// confirmed record, as it always was then).
    #[serde(default)]
    pub previous_from: Origin,
    /// Milliseconds since the epoch, like `deadline_ms`.
    pub applied_ms: u64,
    /// When the watcher restores `previous`, in milliseconds since the epoch.
    pub deadline_ms: u64,
    /// Names this apply: `confirm --token` and the watcher check it, so a
    /// later apply is never confirmed or rolled back by mistake.
    pub token: String,
    /// The detached watcher's process id, once started.
    pub watcher: Option<u32>,
    /// Where the watcher lives (its own systemd unit or cgroup, or the
    /// caller's cgroup and why), for `status`.
    #[serde(default)]
    pub watcher_lives: Option<String>,
    /// Its rules were proven with real packets in a probe replica, by this
    /// apply or by the confirmed apply whose set elements alone it changes
    /// (see `cli::apply`). Records from before this field: not proven.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proven: bool,
}

/// Where a pending apply's rollback target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The confirmed record.
    #[default]
    Confirmed,
    /// The pending apply this one replaced.
    Replaced,
    /// The kernel, read before the commit: there was no confirmed record.
    Kernel,
    /// The kernel held no fwharden table.
    NoTable,
    /// fwharden is disabled (a confirmed `disable`): no table.
    Disabled,
}

/// One try at rolling an apply back, kept so `status` can show what was
/// tried, by whom, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub token: String,
    pub profile: String,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// Why and by whom: `deadline`, `rollback`, `overdue ... by status`.
    pub reason: String,
    /// 1 for the first try.
    pub number: u32,
    /// `ok`, or the error.
    pub outcome: String,
}

/// Seconds since the epoch.
/// The last apply that was rolled back, so a `confirm` that comes too late
/// is told so instead of "nothing to confirm".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    pub profile: String,
    pub token: String,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// `deadline`, `rollback` or `read-back mismatch`.
    pub reason: String,
}

/// What the watcher looks at ten times a second: which apply is pending,
/// and until when. Reading it loads no ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PendingHead {
    pub token: String,
    pub deadline_ms: u64,
}

impl Pending {
    /// What a rollback of this apply goes back to, for messages.
    pub fn previous_name(&self) -> String {
        match (&self.previous, self.previous_from) {
            (None, Origin::Disabled) => "no fwharden table (fwharden stays disabled)".to_string(),
            (None, _) => "no fwharden table".to_string(),
            (Some(r), Origin::Kernel) => {
                format!(
                    "profile {} (as the kernel held it before the apply)",
                    r.profile
                )
            }
            (Some(r), _) => format!("profile {}", r.profile),
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    now_ms() / 1000
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Dirs {
    fn ensure(dir: &Path) -> Result<(), StateError> {
        let err = |source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(err)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)
    }

    pub fn ensure_all(&self) -> Result<(), StateError> {
        Dirs::ensure(&self.state)?;
        Dirs::ensure(&self.run)
    }

    pub fn confirmed(&self) -> Result<Option<Confirmed>, StateError> {
        read_json(&self.state.join(CONFIRMED))
    }

    /// Writes the confirmed record and keeps it in the history (see
    /// `history`). The history only informs: an entry that cannot be
    /// written costs `rollback --to` that entry, not the confirm.
    pub fn save_confirmed(&self, c: &Confirmed) -> Result<(), StateError> {
        // Read only to start a history an older fwharden did not keep.
        let before = match self.history() {
            Ok(h) if h.is_empty() => self.confirmed().ok().flatten(),
            _ => None,
        };
        write_json(&self.state, CONFIRMED, c)?;
        if let Err(e) = self.remember(c, before.as_ref()) {
            eprintln!("fwharden: warning: the confirm is done, but keeping it in the history (`fwharden history`) failed: {e}");
        }
        self.collect_lists();
        Ok(())
    }

    pub fn pending(&self) -> Result<Option<Pending>, StateError> {
        read_json(&self.state.join(PENDING))
    }

    /// The pending apply's token and deadline, without its rulesets.
    pub fn pending_head(&self) -> Result<Option<PendingHead>, StateError> {
        read_json(&self.state.join(PENDING))
    }

    /// Removes the list files no record names any more.
    fn collect_lists(&self) {
        let mut records = Vec::new();
        for name in [CONFIRMED, PENDING] {
            match crate::bounded::read(&self.state.join(name), crate::bounded::Input::State)
                .map_err(std::io::Error::from)
            {
                Ok(bytes) => records.push(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Cannot tell what it names: keep every list.
                Err(_) => return,
            }
        }
        // The history's entries keep their lists too.
        let Some(history) = self.history_records() else {
            return;
        };
        records.extend(history);
        let records: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        super::lists::collect(&self.state, &records);
    }

    pub fn save_pending(&self, p: &Pending) -> Result<(), StateError> {
        write_json(&self.state, PENDING, p)
    }

    pub fn clear_pending(&self) -> Result<(), StateError> {
        remove_record(&self.state, PENDING)?;
        self.collect_lists();
        Ok(())
    }

    pub fn rolled_back(&self) -> Result<Option<RolledBack>, StateError> {
        read_json(&self.state.join(ROLLED_BACK))
    }

    pub fn save_rolled_back(&self, r: &RolledBack) -> Result<(), StateError> {
        write_json(&self.state, ROLLED_BACK, r)
    }

    /// The rollback attempts logged, oldest first.
    pub fn attempts(&self) -> Result<Vec<Attempt>, StateError> {
        Ok(read_json(&self.state.join(ATTEMPTS))?.unwrap_or_default())
    }

    /// Appends an attempt, keeping the last [`ATTEMPTS_KEPT`]. A damaged
    /// log is started afresh rather than block a rollback.
    pub fn log_attempt(&self, a: &Attempt) -> Result<(), StateError> {
        let mut all = self.attempts().unwrap_or_default();
        all.push(a.clone());
        let excess = all.len().saturating_sub(ATTEMPTS_KEPT);
        all.drain(..excess);
        write_json(&self.state, ATTEMPTS, &all)
    }

    /// Rewrites, with a digest, the records an older fwharden wrote
    /// without one. Only under the apply lock: a record read before another
    /// command's write must not be written back over it.
    pub fn seal_legacy(&self, _lock: &super::ApplyLock) -> Result<(), StateError> {
        let legacy = |name| is_legacy(&self.state.join(name));
        if legacy(CONFIRMED) {
            if let Some(c) = self.confirmed()? {
                write_json(&self.state, CONFIRMED, &c)?;
            }
        }
        if legacy(PENDING) {
            if let Some(p) = self.pending()? {
                self.save_pending(&p)?;
            }
        }
        if legacy(ROLLED_BACK) {
            if let Some(r) = self.rolled_back()? {
                self.save_rolled_back(&r)?;
            }
        }
        if legacy(ATTEMPTS) {
            write_json(&self.state, ATTEMPTS, &self.attempts()?)?;
        }
        Ok(())
    }

    pub fn lock_path(&self) -> PathBuf {
        self.run.join("apply.lock")
    }

    pub fn watcher_log(&self) -> PathBuf {
        self.run.join("watcher.log")
    }
}

/// Removes record `name` of `dir`, durably; none there is no error.
pub(super) fn remove_record(dir: &Path, name: &str) -> Result<(), StateError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir).map_err(|source| StateError::Write { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Write { path, source }),
    }
}

/// The bytes of a record file, `None` when there is none.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match crate::bounded::read(path, crate::bounded::Input::State).map_err(std::io::Error::from) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a record, checking its digest (see [`super::sealed`]).
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    read_json_in(path.parent().unwrap_or(Path::new(".")), path)
}

/// As [`read_json`], its big lists coming from `state`'s list files (a
/// record in a directory below the state directory).
pub(super) fn read_json_in<T: for<'de> Deserialize<'de>>(
    state: &Path,
    path: &Path,
) -> Result<Option<T>, StateError> {
    let Some(bytes) = read_file(path)? else {
        return Ok(None);
    };
    let corrupt = |source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let record = match sealed::open(&bytes) {
        Ok(Opened::Sealed(text)) => text.as_bytes(),
        Ok(Opened::Legacy) => {
            eprintln!(
                "fwharden: warning: {} has no digest (written by an older fwharden): trusted as it is; the next apply, confirm, rollback or restore rewrites it with one",
                path.display()
            );
            &bytes
        }
        Err(Damage::Unreadable(source)) => return Err(corrupt(source)),
        Err(Damage::Mismatch) => {
            return Err(StateError::Mismatch {
                path: path.to_path_buf(),
            })
        }
    };
    super::lists::within(state, || serde_json::from_slice(record))
        .map(Some)
        .map_err(corrupt)
}

/// Whether the record at `path` is one from before digests.
fn is_legacy(path: &Path) -> bool {
    matches!(read_file(path), Ok(Some(bytes)) if matches!(sealed::open(&bytes), Ok(Opened::Legacy)))
}

/// Sealed (see `sealed`) and written atomically (see `atomic`).
fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    write_json_in(dir, dir, name, value)
}

/// As [`write_json`], its big lists going to `state`'s list files.
pub(super) fn write_json_in<T: Serialize>(
    state: &Path,
    dir: &Path,
    name: &str,
    value: &T,
) -> Result<(), StateError> {
    Dirs::ensure(dir)?;
    let err = |source| StateError::Write {
        path: dir.join(name),
        source,
    };
    let body = super::lists::within(state, || serde_json::to_vec_pretty(value))
        .map_err(|e| err(e.into()))?;
    atomic::write(dir, name, &sealed::seal(&body)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn ruleset() -> Ruleset {
        Ruleset {
            profile: "t".into(),
            table: "fwharden".into(),
            sets: vec![],
            chains: vec![],
            bans: None,
        }
    }

    #[test]
    fn records_round_trip_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            state: tmp.path().join("state"),
            run: tmp.path().join("run"),
        };
        assert_eq!(dirs.confirmed().unwrap(), None);
        let c = Confirmed {
            profile: "t".into(),
            ruleset: ruleset(),
            confirmed_at: 7,
            seen: Stamp::at(3),
            proven: true,
        };
        dirs.save_confirmed(&c).unwrap();
        assert_eq!(dirs.confirmed().unwrap(), Some(c));
        let meta = fs::metadata(dirs.state.join(CONFIRMED)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dirs.state).unwrap().mode() & 0o777, 0o700);
        let leftovers: Vec<_> = fs::read_dir(&dirs.state)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        dirs.clear_pending().unwrap();
    }

    #[test]
    fn a_damaged_record_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            state: tmp.path().to_path_buf(),
            run: tmp.path().to_path_buf(),
        };
        fs::write(tmp.path().join(PENDING), "{").unwrap();
        let e = dirs.pending().unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
    }
}
