//! A real systemd-journald holding kernel messages the test writes, never
//! the machine's journal: journald runs in a mount namespace of its own
//! (`unshare -m`, propagation private) with a fresh tmpfs over /run (its
//! sockets, its kernel sequence number), its volatile journal
//! /run/log/journal bound to a temporary directory the test reads with
//! `journalctl -D`, a tmpfs over /var/log/journal (so it cannot write the
//! machine's persistent journal), and a FIFO bound over /dev/kmsg: what
//! the test writes there in the kmsg record format (`PRI,SEQ,USEC,-;TEXT`)
//! journald reads as the kernel's and stores with `_TRANSPORT=kernel`, so
//! `journalctl -k` returns it. The machine's /dev/kmsg is never written:
//! the bind mount exists only in journald's namespace, which ends with it.
//! Dropped, panic included, journald is stopped by its pid and the
//! directories are removed.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

pub const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// Whether journald and journalctl are installed (scripts/deps: systemd);
/// same CI rule as [`privileged`].
pub fn have_journald(test: &str) -> bool {
    have_files(test, &[JOURNALD, "/usr/bin/journalctl", "/usr/bin/unshare"])
}

pub struct Journald {
    child: Child,
    /// The FIFO journald reads as /dev/kmsg, held open by the test.
    kmsg: File,
    seq: u64,
    dir: tempfile::TempDir,
}

/// journald's own setup inside its mount namespace, then journald itself
/// in place of the shell (so the spawned pid is journald's). Its own
/// messages go to its standard error, not to /dev/kmsg, where they would
/// mix with the test's records.
const SETUP: &str = r#"set -e
mount -t tmpfs fwharden-journald /run
mkdir -p /run/log/journal /run/systemd/journal
mount --bind "$1/journal" /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs fwharden-journald /var/log/journal; fi
mount --bind "$1/kmsg" /dev/kmsg
SYSTEMD_LOG_TARGET=console exec "$2"
"#;

impl Journald {
    pub fn start() -> Journald {
        let dir = tempfile::Builder::new()
            .prefix("fwharden-journald-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("journal")).unwrap();
        let fifo = dir.path().join("kmsg");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Read and write: opening never waits for a reader, and the pipe
        // stays open whether or not journald has it yet.
        let kmsg = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", SETUP, "sh"])
            .arg(dir.path())
            .arg(JOURNALD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start systemd-journald");
        Journald {
            child,
            kmsg,
            seq: 0,
            dir,
        }
    }

    /// The directory to give `journalctl -D` (and `fwharden log
    /// --journal-dir`).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// One kernel message, at priority info, as the kernel hands it to
    /// /dev/kmsg's readers; returns once journald has read it. journald
    /// takes one record a read, so records are written one at a time.
    pub fn kernel(&mut self, text: &str) {
        let record = format!("6,{},{},-;{text}\n", self.seq, 1000 + self.seq);
        self.seq += 1;
        self.kmsg.write_all(record.as_bytes()).unwrap();
        let fd = self.kmsg.as_raw_fd();
        let read = wait_until(Duration::from_secs(60), || {
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one c_int, the bytes the pipe holds,
            // through the pointer, which points at `queued`.
            let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
            r == 0 && queued == 0
        });
        assert!(
            read,
            "journald did not read the record within 60 s: {record}"
        );
    }

    /// Waits (generously) until `journalctl -k -D` returns `n` kernel
    /// messages.
    pub fn wait_for(&self, n: usize) {
        let dir = self.dir();
        let mut seen = 0;
        let stored = wait_until(Duration::from_secs(60), || {
            let out = Command::new("journalctl")
                .args(["-k", "-o", "cat", "--no-pager", "-D"])
                .arg(&dir)
                .output()
                .unwrap();
            seen = String::from_utf8_lossy(&out.stdout).lines().count();
            seen >= n
        });
        assert!(stored, "journald stored {seen} of {n} kernel messages");
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        // Our own child, by its pid: journald ends on SIGTERM, and its
        // mount namespace with it.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let stopped = wait_until(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
