//! One apply, confirm, rollback or restore at a time: an exclusive flock on
//! a file in the run directory. The kernel releases it when the process
//! dies, however it dies, so a killed apply never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LockError {
    #[error("another fwharden is changing the firewall (pid {holder}); wait for it to finish, then try again; nothing was changed")]
    Busy { holder: String },
    #[error("cannot open the lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::exit::Coded for LockError {
    fn exit_code(&self) -> i32 {
        match self {
            LockError::Busy { .. } => crate::exit::REFUSED,
            LockError::Open { .. } => crate::exit::FAILURE,
        }
    }
}

/// Held while it lives.
#[derive(Debug)]
pub struct ApplyLock {
    _flock: Flock<File>,
}

impl ApplyLock {
    /// Takes the lock, or fails at once when someone else holds it.
    pub fn try_take(path: &Path) -> Result<ApplyLock, LockError> {
        ApplyLock::take(path, Duration::ZERO)
    }

    /// Takes the lock, waiting at most `wait` for the holder to finish.
    pub fn take(path: &Path, wait: Duration) -> Result<ApplyLock, LockError> {
        let open_err = |source| LockError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let start = Instant::now();
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(open_err)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(flock) => {
                    // The holder's pid, for the message a loser prints,
                    // written over the last one at a fixed width: no
                    // truncation, which frees the file's block, and on a
                    // filesystem mounted with `discard` waits for the
                    // device to discard it (7 ms seen here, every apply).
                    let _ = std::os::unix::fs::FileExt::write_all_at(
                        &*flock,
                        format!("{:<20}\n", std::process::id()).as_bytes(),
                        0,
                    );
                    return Ok(ApplyLock { _flock: flock });
                }
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    if start.elapsed() >= wait {
                        let mut holder = String::new();
                        // A pid: a few bytes, whatever the file holds.
                        let _ = (&mut file).take(64).read_to_string(&mut holder);
                        let holder = if holder.trim().is_empty() {
                            "unknown".into()
                        } else {
                            holder.trim().to_string()
                        };
                        return Err(LockError::Busy { holder });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, errno)) => return Err(open_err(errno.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/apply.lock");
        let first = ApplyLock::try_take(&path).unwrap();
        let err = ApplyLock::try_take(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        ApplyLock::try_take(&path).unwrap();
    }
}
