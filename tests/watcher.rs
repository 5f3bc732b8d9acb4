//! The rollback when its watcher is killed (issue 19), against a real
//! kernel inside throwaway namespaces, with real packets where access is
//! the question:
//!
//! - the watcher leaves the caller's cgroup, so killing that cgroup whole
//!   (what logind does to a session) leaves the rollback on time;
//! - with the watcher dead too, the escape hatch in the kernel lets the
//!   operator's address (and no other) open a new TCP connection to the
//!   SSH port at the deadline;
//! - `confirm` in time loads the ruleset without the hatch; after the
//!   deadline with a dead watcher it refuses and rolls back;
//! - the systemd path where systemd is PID 1, else skipped loudly; its
//!   `systemd-run` line is checked against the installed `systemd-run`.
//!
//! Topology: the host namespace (10.99.0.1, 10.98.0.1, a listener on port
//! 22) and two peers linked to it by veth pairs only: the operator
//! (10.99.0.2) and a stranger (10.98.0.3).

mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use fwharden::netns::Netns;
use fwharden::rollback::placement;

const OPERATOR: &str = "10.99.0.2";
const STRANGER: &str = "10.98.0.3";
/// What sshd would set for the operator's session to the host.
const SSH_CONNECTION: &str = "10.99.0.2 50000 10.99.0.1 22";

/// A host with a listener on port 22 and the operator's and a stranger's
/// namespaces linked to it.
struct Site {
    host: Host,
    operator: Netns,
    stranger: Netns,
    _listener: TcpListener,
}

impl Site {
    fn new(tag: &str) -> Site {
        let host = Host::new(tag);
        let operator = Netns::create("op").expect("operator namespace");
        let stranger = Netns::create("stranger").expect("stranger namespace");
        host.ns
            .link(&operator, &["10.99.0.1/24"], &["10.99.0.2/24"])
            .expect("veth to the operator");
        host.ns
            .link(&stranger, &["10.98.0.1/24"], &["10.98.0.3/24"])
            .expect("veth to the stranger");
        // A socket keeps the namespace it was made in: listening here, it
        // accepts inside the host namespace. The kernel completes the
        // handshake from the backlog, so no accept loop is needed.
        let listener = host
            .ns
            .run_in(|| TcpListener::bind("0.0.0.0:22"))
            .expect("enter the host namespace")
            .expect("listen on port 22");
        Site {
            host,
            operator,
            stranger,
            _listener: listener,
        }
    }

    /// Whether a new TCP connection from `from` reaches port 22.
    fn connects(&self, from: &Netns, to: &str) -> bool {
        let addr: SocketAddr = format!("{to}:22").parse().unwrap();
        from.run_in(|| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
            .expect("enter a peer namespace")
    }

    fn operator_connects(&self) -> bool {
        self.connects(&self.operator, "10.99.0.1")
    }

    fn stranger_connects(&self) -> bool {
        self.connects(&self.stranger, "10.98.0.1")
    }
}

/// A cgroup v2 group a test creates under the cgroup2 mount, standing for
/// a login session's scope. Dropped, panic included, it kills what is left
/// in it and removes it.
struct SessionGroup {
    dir: PathBuf,
}

static GROUPS: AtomicU32 = AtomicU32::new(0);

impl SessionGroup {
    fn new() -> SessionGroup {
        let mount = placement::cgroup2_mount().expect("a cgroup2 mount");
        let n = GROUPS.fetch_add(1, Ordering::Relaxed);
        let dir = mount.join(format!("fwh-test-session-{}-{n}", std::process::id()));
        fs::create_dir(&dir).expect("create the session group");
        SessionGroup { dir }
    }

    /// Makes `cmd` start inside this group (moved between fork and exec).
    fn enter(&self, cmd: &mut std::process::Command) -> fs::File {
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .expect("open cgroup.procs");
        let fd = procs.as_raw_fd();
        // SAFETY: runs in the child between fork and exec; write(2) is
        // async-signal-safe and writes two static bytes; `fd` stays open in
        // the parent (the returned file) until the spawn is done.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        procs
    }

    fn populated(&self) -> bool {
        fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|e| e.contains("populated 1"))
            .unwrap_or(false)
    }

    /// `echo 1 > cgroup.kill`, then waits until the group is empty.
    fn kill(&self) {
        fs::write(self.dir.join("cgroup.kill"), "1").expect("cgroup.kill");
        assert!(
            wait_until(Duration::from_secs(10), || !self.populated()),
            "the session group is still populated after cgroup.kill"
        );
    }
}

impl Drop for SessionGroup {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        let dir = self.dir.clone();
        wait_until(Duration::from_secs(10), || {
            fs::remove_dir(&dir).is_ok() || !dir.exists()
        });
    }
}

/// Starts `sleep` in `group`, standing for the session's shell, so the
/// group is still populated after the apply returns.
fn session_shell(group: &SessionGroup) -> std::process::Child {
    let mut c = std::process::Command::new("sleep");
    c.arg("120");
    let _procs = group.enter(&mut c);
    c.spawn().expect("start the session's shell")
}

fn deadline(v: &serde_json::Value) -> u64 {
    v["deadline_ms"].as_u64().expect("deadline_ms")
}

fn sleep_until(ms: u64) {
    while now_ms() < ms {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `apply vps-profile --force --timeout SECS` as the operator over SSH
/// (vps-profile admits neither peer, hence --force), optionally inside
/// `group`; the `--json` outcome.
fn apply_as_operator(host: &Host, secs: u64, group: Option<&SessionGroup>) -> serde_json::Value {
    let t = secs.to_string();
    let mut c = host.fw();
    c.env("SSH_CONNECTION", SSH_CONNECTION).args([
        "--json",
        "apply",
        "vps-profile",
        "--force",
        "--timeout",
        &t,
    ]);
    let _procs = group.map(|g| g.enter(&mut c));
    let out = c.output().expect("run fwharden apply");
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("apply --json");
    assert_eq!(v["state"], "pending", "{v}");
    v
}

/// Which parts of the session are killed before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// SIGKILL to the watcher alone.
    Watcher,
    /// The session's cgroup killed whole, then the watcher too.
    SessionAndWatcher,
}

/// The hatch: shut while the watcher's window lasts, open to the operator
/// alone at the deadline, with every fwharden process dead.
fn hatch_opens_at_the_deadline(tag: &str, kill: Kill) {
    let site = Site::new(tag);
    let host = &site.host;
    host.confirm_profile("web-server");
    let group = (kill == Kill::SessionAndWatcher).then(SessionGroup::new);
    let _shell = group.as_ref().map(session_shell);
    let applied = apply_as_operator(host, 3, group.as_ref());
    let due = deadline(&applied);
    let lives = applied["watcher_lives"].as_str().unwrap_or_default();
    assert!(lives.contains("fwharden-watch-"), "{applied}");
    assert!(
        applied["hatch"].as_str().unwrap().contains(OPERATOR),
        "{applied}"
    );
    assert!(host.table_text().contains("ip saddr != @hatch_v4"));
    assert!(
        !site.operator_connects(),
        "vps-profile shuts the operator out"
    );
    if let Some(g) = &group {
        g.kill();
    }
    host.kill_watcher();
    assert!(host.processes().is_empty(), "a fwharden process survived");

    // No process is left to roll back: only the kernel acts now.
    sleep_until(due.saturating_sub(500));
    assert!(!site.operator_connects(), "the hatch opened early");
    let opened = loop {
        if site.operator_connects() {
            break now_ms();
        }
        assert!(
            now_ms() < due + 3000,
            "the hatch did not open by 3 s after the deadline; kernel:\n{}",
            host.table_text()
        );
    };
    assert!(
        opened + 50 >= due,
        "opened {} ms before the deadline",
        due - opened
    );
    assert!(
        opened <= due + 1000,
        "opened {} ms after the deadline",
        opened - due
    );
    assert!(!site.stranger_connects(), "the hatch let {STRANGER} in");
    // The first command to find the apply overdue with no watcher rolls
    // it back.
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert!(
        s["overdue"]
            .as_str()
            .unwrap_or_default()
            .contains("rolled it back"),
        "{s}"
    );
}

#[test]
fn a_killed_watcher_still_lets_the_operator_back_in_at_the_deadline() {
    if !privileged("a_killed_watcher_still_lets_the_operator_back_in_at_the_deadline") {
        return;
    }
    hatch_opens_at_the_deadline("hatchkill", Kill::Watcher);
}

#[test]
fn with_session_and_watcher_killed_the_hatch_still_opens() {
    if !privileged("with_session_and_watcher_killed_the_hatch_still_opens") {
        return;
    }
    hatch_opens_at_the_deadline("hatchboth", Kill::SessionAndWatcher);
}
