//! The kernel log as the systemd journal keeps it, read by the real
//! `journalctl -k -o json` (its history since a time, or what arrives
//! while following): the messages and their times, nothing parsed
//! further here ([`super::kernlog`] reads the packet lines).
//!
//! In journalctl's JSON (systemd's "Journal JSON Format"), a field is a
//! string when it is valid UTF-8 without control characters, else an
//! array of its bytes; a field an entry holds twice is an array of its
//! values; `--all` keeps long fields whole instead of `null`.
//! `__REALTIME_TIMESTAMP` is a string of microseconds since the epoch:
//! for a kernel message, when journald read it from /dev/kmsg.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;

use crate::exit::{self, Coded};

/// The program, looked up on PATH.
pub const JOURNALCTL: &str = "journalctl";

/// Where journald keeps the system journal: volatile, then persistent.
const JOURNAL_DIRS: [&str; 2] = ["/run/log/journal", "/var/log/journal"];

/// What journalctl's standard error may say, kept at most this long.
const STDERR_MAX: u64 = 16 * 1024;

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("journalctl is not installed ({source}): the kernel log cannot be read from the journal; read /var/log/kern.log, or set [defaults] nflog_group = 7 in the profile and apply it")]
    Missing {
        #[source]
        source: std::io::Error,
    },
    #[error("no journal on this host: {why}; read /var/log/kern.log (rsyslog), or set [defaults] nflog_group = 7 in the profile and apply it")]
    NoJournal { why: String },
    #[error("journal directory {}: {why}", dir.display())]
    NoJournalIn { dir: PathBuf, why: String },
    #[error("the journal's kernel messages are not readable by this user ({said}): run as root, or as a member of group systemd-journal or adm")]
    Unreadable { said: String },
    #[error("starting journalctl: {0}")]
    Start(#[source] std::io::Error),
    #[error("journalctl {args} failed ({status}): {said}")]
    Failed {
        args: String,
        status: ExitStatus,
        said: String,
    },
}

impl Coded for JournalError {
    fn exit_code(&self) -> i32 {
        exit::FAILURE
    }
}

/// One journal entry: its message and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub message: String,
    /// Milliseconds since the epoch.
    pub ms: u64,
}

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// A journal directory (`journalctl -D`) instead of the system's.
    pub dir: Option<PathBuf>,
    /// The kernel messages from this time on (seconds since the epoch);
    /// `None`: only those that arrive from now on, which is following.
    pub since_secs: Option<u64>,
    /// Keep reading what arrives (`journalctl -f`) until dropped.
    pub follow: bool,
}

impl Query {
    /// journalctl's arguments: `-k` is the kernel's messages of this boot.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = ["-k", "-o", "json", "--all", "--no-pager"]
            .iter()
            .map(OsString::from)
            .collect();
        if let Some(dir) = &self.dir {
            a.push("-D".into());
            a.push(dir.into());
        }
        match self.since_secs {
            Some(s) => a.extend(["--since".into(), format!("@{s}").into()]),
            None => a.extend(["--lines".into(), "0".into()]),
        }
        if self.follow || self.since_secs.is_none() {
            a.push("-f".into());
        }
        a
    }
}

/// The entry journalctl printed as `line`, or `None` for one without a
/// message or time.
pub fn record(line: &str) -> Option<Record> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let us: u64 = v.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
    Some(Record {
        message: field_text(v.get("MESSAGE")?)?,
        ms: us / 1000,
    })
}

/// A field's value as text: a string, an array of its bytes, or (a field
/// the entry holds more than once) its first value.
fn field_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) if items.iter().all(|i| i.is_u64()) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|i| i.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes?).into_owned())
        }
        serde_json::Value::Array(items) => field_text(items.first()?),
        _ => None,
    }
}

/// Whether `dir` holds journal files, in it or one directory down (the
/// machine id's), as journalctl looks for them.
fn has_journal_files(dir: &Path) -> bool {
    let is_journal = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".journal") || n.ends_with(".journal~"))
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        is_journal(&p)
            || (p.is_dir()
                && std::fs::read_dir(&p)
                    .is_ok_and(|inner| inner.flatten().any(|f| is_journal(&f.path()))))
    })
}

/// Why there is no system journal, as precisely as the host tells.
fn no_journal_why() -> String {
    let pid1 = std::fs::read_to_string("/proc/1/comm")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let dirs = JOURNAL_DIRS.join(" or ");
    match pid1.as_str() {
        "systemd" => format!("no journal files in {dirs} (is systemd-journald running?)"),
        "" => format!("no journal files in {dirs}"),
        other => format!(
            "PID 1 is {}, not systemd, and there are no journal files in {dirs}",
            crate::term::safe(other)
        ),
    }
}

/// journalctl running, its output lines arriving on a channel so a read
/// never blocks past the caller's deadline. Dropped, it is killed.
pub struct Reader {
    child: Child,
    args: String,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

/// What [`Reader::next`] saw.
#[derive(Debug)]
pub enum Next {
    Record(Record),
    /// Nothing within the wait, or a line that is no entry.
    Idle,
    /// journalctl has printed everything and exited.
    End,
}

impl Reader {
    pub fn start(q: &Query) -> Result<Reader, JournalError> {
        match &q.dir {
            None if !JOURNAL_DIRS.iter().any(|d| has_journal_files(Path::new(d))) => {
                return Err(JournalError::NoJournal {
                    why: no_journal_why(),
                })
            }
            Some(dir) if !dir.is_dir() => {
                return Err(JournalError::NoJournalIn {
                    dir: dir.clone(),
                    why: "not a directory".into(),
                })
            }
            Some(dir) if !has_journal_files(dir) => {
                return Err(JournalError::NoJournalIn {
                    dir: dir.clone(),
                    why: "no journal files in it (nor in a directory under it)".into(),
                })
            }
            _ => {}
        }
        let args = q.args();
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new(JOURNALCTL)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => JournalError::Missing { source: e },
                _ => JournalError::Start(e),
            })?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let (tx, lines) = mpsc::channel();
        if let Some(out) = out {
            std::thread::spawn(move || {
                let mut r = BufReader::new(out);
                let mut buf = Vec::new();
                while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                    buf.clear();
                }
            });
        }
        let stderr = err.map(|e| {
            std::thread::spawn(move || {
                let mut said = String::new();
                let _ = e.take(STDERR_MAX).read_to_string(&mut said);
                said
            })
        });
        Ok(Reader {
            child,
            args: shown,
            lines,
            stderr,
        })
    }

    /// The next entry, waiting at most `wait` (`None`: until one comes).
    /// At the end of journalctl's output, its exit and what it said to
    /// standard error tell whether it read a journal.
    pub fn next(&mut self, wait: Option<Duration>) -> Result<Next, JournalError> {
        let got = match wait {
            Some(d) => self.lines.recv_timeout(d),
            None => self
                .lines
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(line) => Ok(record(&line).map_or(Next::Idle, Next::Record)),
            Err(RecvTimeoutError::Timeout) => Ok(Next::Idle),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map_err(JournalError::Start)?;
                let said = self
                    .stderr
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default();
                classify(&self.args, status, &said)?;
                Ok(Next::End)
            }
        }
    }
}

/// journalctl's exit and standard error, once its output has ended.
fn classify(args: &str, status: ExitStatus, said: &str) -> Result<(), JournalError> {
    let said_line = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let said_line = crate::term::safe(&said_line).to_string();
    if said.contains("No journal files were found") {
        return Err(JournalError::NoJournal {
            why: no_journal_why(),
        });
    }
    if said.contains("not seeing messages from other users and the system") {
        return Err(JournalError::Unreadable { said: said_line });
    }
    if !status.success() {
        return Err(JournalError::Failed {
            args: args.to_string(),
            status,
            said: said_line,
        });
    }
    Ok(())
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Our own child, by its pid; it may have exited already.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_strings_or_arrays_of_bytes() {
        let s = r#"{"_TRANSPORT":"kernel","MESSAGE":"fwharden drop: IN=eth0 OUT= ","PRIORITY":"6","__REALTIME_TIMESTAMP":"1796469642740800"}"#;
        assert_eq!(
            record(s),
            Some(Record {
                message: "fwharden drop: IN=eth0 OUT= ".into(),
                ms: 1_796_469_642_740
            })
        );
        // "ab\x01" is not printable: journalctl writes its bytes.
        let bytes = r#"{"MESSAGE":[97,98,1],"__REALTIME_TIMESTAMP":"1000"}"#;
        assert_eq!(record(bytes).unwrap().message, "ab\u{1}");
        let invalid = r#"{"MESSAGE":[102,119,255],"__REALTIME_TIMESTAMP":"1000"}"#;
        assert_eq!(record(invalid).unwrap().message, "fw\u{fffd}");
        // A field held twice: its values.
        let twice = r#"{"MESSAGE":["first",[115]],"__REALTIME_TIMESTAMP":"1000"}"#;
        assert_eq!(record(twice).unwrap().message, "first");
    }

    #[test]
    fn entries_without_a_message_or_time_and_other_lines_are_none() {
        for line in [
            r#"{"MESSAGE":null,"__REALTIME_TIMESTAMP":"1000"}"#,
            r#"{"__REALTIME_TIMESTAMP":"1000"}"#,
            r#"{"MESSAGE":"x"}"#,
            r#"{"MESSAGE":"x","__REALTIME_TIMESTAMP":"soon"}"#,
            r#"{"MESSAGE":[1,300],"__REALTIME_TIMESTAMP":"1000"}"#,
            "-- No entries --",
            "",
        ] {
            assert_eq!(record(line), None, "{line}");
        }
    }

    #[test]
    fn a_window_is_read_since_its_start_and_new_messages_by_following() {
        let args = |q: Query| -> Vec<String> {
            q.args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            args(Query {
                dir: None,
                since_secs: Some(1_796_400_000),
                follow: false
            }),
            [
                "-k",
                "-o",
                "json",
                "--all",
                "--no-pager",
                "--since",
                "@1796400000"
            ]
        );
        assert_eq!(
            args(Query {
                dir: Some("/tmp/j".into()),
                since_secs: None,
                follow: false
            })[5..],
            ["-D", "/tmp/j", "--lines", "0", "-f"]
        );
        assert!(args(Query {
            dir: None,
            since_secs: Some(1),
            follow: true
        })
        .ends_with(&["-f".to_string()]));
    }

    #[test]
    fn journalctl_saying_there_is_no_journal_is_an_error_that_says_what_to_do() {
        use std::os::unix::process::ExitStatusExt;
        let ok = ExitStatus::from_raw(0);
        let e = classify("-k", ok, "No journal files were found.\n").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("no journal on this host: "), "{text}");
        assert!(text.contains("nflog_group"), "{text}");
        assert_eq!(e.exit_code(), exit::FAILURE);
        let e = classify("-k", ok, "Hint: You are currently not seeing messages from other users and the system.\n      Users in groups 'adm', 'systemd-journal' can see all messages.\n").unwrap_err();
        assert!(e.to_string().contains("run as root"), "{e}");
        let failed = ExitStatus::from_raw(1 << 8);
        let e = classify(
            "-k -D /x",
            failed,
            "Data from the specified boot (+0) is not available: No such boot ID in journal\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("No such boot ID"), "{e}");
        assert!(classify("-k", ok, "").is_ok());
    }

    #[test]
    fn a_directory_without_journal_files_is_refused_before_journalctl_runs() {
        let dir = tempfile::tempdir().unwrap();
        let q = Query {
            dir: Some(dir.path().into()),
            since_secs: Some(0),
            follow: false,
        };
        let e = Reader::start(&q).err().unwrap();
        assert!(matches!(e, JournalError::NoJournalIn { .. }), "{e}");
        std::fs::create_dir(dir.path().join("machine")).unwrap();
        std::fs::write(dir.path().join("machine/system.journal"), b"").unwrap();
        assert!(has_journal_files(dir.path()));
    }
}
