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
        // async-signal-safe and writes one static byte; `fd` stays open in
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

/// A `sleep` in a session group, standing for the session's shell, so the
/// group is still populated after the apply returns. Reaped on drop.
struct Shell(std::process::Child);

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn session_shell(group: &SessionGroup) -> Shell {
    let mut c = std::process::Command::new("sleep");
    c.arg("120");
    let _procs = group.enter(&mut c);
    Shell(c.spawn().expect("start the session's shell"))
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
#[ignore = "needs root"]
fn a_killed_watcher_still_lets_the_operator_back_in_at_the_deadline() {
    needs_root("a_killed_watcher_still_lets_the_operator_back_in_at_the_deadline");
    hatch_opens_at_the_deadline("hatchkill", Kill::Watcher);
}

#[test]
#[ignore = "needs root"]
fn with_session_and_watcher_killed_the_hatch_still_opens() {
    needs_root("with_session_and_watcher_killed_the_hatch_still_opens");
    hatch_opens_at_the_deadline("hatchboth", Kill::SessionAndWatcher);
}

/// Polls the kernel until it holds `want`, at most until `due` + 10 s;
/// returns when it was first seen.
fn seen_at(host: &Host, want: &str, due: u64) -> u64 {
    loop {
        let table = host.table();
        let now = now_ms();
        if table.as_deref() == Some(want) {
            return now;
        }
        assert!(
            now < due + 10_000,
            "not reverted 10 s after the deadline; the kernel holds:\n{table:?}\nwatcher log:\n{}",
            fs::read_to_string(host.run_dir().join("watcher.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
#[ignore = "needs root"]
fn a_session_cgroup_killed_whole_leaves_the_rollback_on_time() {
    needs_root("a_session_cgroup_killed_whole_leaves_the_rollback_on_time");
    let host = Host::new("cgkill");
    let before = host.confirm_profile("web-server");
    let group = SessionGroup::new();
    let _shell = session_shell(&group);
    // No SSH variables: no hatch, so only the watcher can roll back.
    let mut c = host.fw();
    c.args(["--json", "apply", "vps-profile", "--timeout", "3"]);
    let procs = group.enter(&mut c);
    let out = c.output().expect("run fwharden apply");
    drop(procs);
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let due = deadline(&applied);
    let token = applied["token"].as_str().unwrap();
    let pid = host.watcher_pid();
    let own = placement::v2_group_of(&pid.to_string()).expect("the watcher's cgroup");
    assert_eq!(own, format!("/fwharden-watch-{token}"), "{applied}");
    let s = host.status();
    assert!(
        s["pending"]["watcher_lives"]
            .as_str()
            .unwrap()
            .contains(&own),
        "{s}"
    );
    assert_eq!(s["pending"]["watcher_cgroup"], own.as_str(), "{s}");

    group.kill();
    assert!(
        alive_naming(pid, &host.needle()),
        "the watcher died with the session's cgroup"
    );
    let seen = seen_at(&host, &before, due);
    assert!(seen >= due, "reverted {} ms early", due - seen);
    assert!(seen <= due + 1000, "reverted {} ms late", seen - due);
    assert_eq!(host.table_text(), before);
    // The watcher removes its own group as it exits.
    assert_group_goes(&own);
}

#[test]
#[ignore = "needs root"]
fn confirm_in_time_loads_the_ruleset_without_its_hatch_and_nothing_fires_later() {
    needs_root("confirm_in_time_loads_the_ruleset_without_its_hatch_and_nothing_fires_later");
    let host = Host::new("confhatch");
    host.confirm_profile("web-server");
    let applied = apply_as_operator(&host, 2, None);
    assert!(host.table_text().contains("ip saddr != @hatch_v4"));
    let shown = stdout(&host.expect(0, &["show", "--pending"]));
    assert!(shown.contains("escape hatch: armed"), "{shown}");
    assert!(shown.contains("10.99.0.2 timeout 2s"), "{shown}");
    let s = host.status();
    assert!(
        s["pending"]["hatch"].as_str().unwrap().contains(OPERATOR),
        "{s}"
    );

    host.expect(0, &["confirm"]);
    let confirmed = host.table_text();
    assert!(!confirmed.contains("hatch"), "{confirmed}");
    assert_eq!(confirmed, reference_text("vps-profile"));
    assert_eq!(host.status()["hatch"], serde_json::Value::Null);

    sleep_until(deadline(&applied) + 1500);
    assert_eq!(
        host.table_text(),
        confirmed,
        "something fired after confirm"
    );
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert!(s["pending"].is_null(), "{s}");
    host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn confirm_after_the_deadline_with_a_dead_watcher_refuses_and_rolls_back() {
    needs_root("confirm_after_the_deadline_with_a_dead_watcher_refuses_and_rolls_back");
    let host = Host::new("lateconf");
    let before = host.confirm_profile("web-server");
    let applied = apply_as_operator(&host, 2, None);
    host.kill_watcher();
    sleep_until(deadline(&applied) + 300);
    // Still pending in the kernel (nobody rolled back), its hatch open:
    // the element is gone from the set.
    let table = host.table_text();
    assert!(table.contains("set hatch_v4"), "{table}");
    assert!(!table.contains("10.99.0.2 timeout"), "{table}");

    let out = host.expect(1, &["confirm"]);
    let err = stderr(&out);
    assert!(err.contains("too late"), "{err}");
    assert!(err.contains("watcher was gone"), "{err}");
    assert!(err.contains("restored profile web-server"), "{err}");
    assert_eq!(
        host.table_text(),
        before,
        "the previous ruleset is not back"
    );
    assert!(host.pending().is_none());
    assert_eq!(host.confirmed().unwrap()["profile"], "web-server");
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    let attempts = s["attempts"].as_array().unwrap();
    assert!(
        attempts
            .iter()
            .any(|a| a["outcome"] == "ok" && a["reason"].as_str().unwrap().contains("overdue")),
        "{s}"
    );
    // Asked again, it still says what happened.
    let err = stderr(&host.expect(1, &["confirm"]));
    assert!(err.contains("too late") && err.contains("overdue"), "{err}");
}

#[test]
fn the_watcher_s_command_line_fits_systemd_run() {
    let argv = placement::systemd_run_argv(
        "0123abcd",
        std::path::Path::new("/run/fwharden/watcher.log"),
        Some(std::path::Path::new("/proc/1/ns/net")),
        &[("FWHARDEN_FORBID_NETNS".into(), "1".into())],
        &["/usr/sbin/fwharden".into(), "watch".into()],
    );
    match std::process::Command::new("systemd-run")
        .arg("--help")
        .output()
    {
        Ok(out) => {
            let help = stdout(&out);
            for a in argv[1..].iter().map(|a| a.to_string_lossy()) {
                if a == "--" {
                    break;
                }
                let option = a.split('=').next().unwrap();
                assert!(
                    help.split(|c: char| c.is_whitespace() || c == '=' || c == ',')
                        .any(|w| w == option),
                    "systemd-run of this machine has no {option}:\n{help}"
                );
            }
        }
        Err(e) => cannot_run(
            "the_watcher_s_command_line_fits_systemd_run",
            &format!("systemd-run is missing ({e}); run scripts/deps"),
        ),
    }
}

/// Where systemd is PID 1 the watcher lives in a systemd unit; elsewhere
/// it takes the cgroup path.
#[test]
#[ignore = "needs root"]
fn the_watcher_lives_in_a_systemd_unit_where_systemd_is_pid1() {
    needs_root("the_watcher_lives_in_a_systemd_unit_where_systemd_is_pid1");
    let host = Host::new("unit");
    let applied = host.apply_pending("web-server", 60);
    let lives = applied["watcher_lives"].as_str().unwrap().to_string();
    if placement::systemd_is_pid1() {
        assert!(lives.starts_with("systemd unit fwharden-watch-"), "{lives}");
    } else {
        eprintln!(
            "\n!!!!!!!! SKIPPED the systemd path: systemd is not PID 1 here; the watcher took the cgroup path ({lives}), which the other tests of this file exercise !!!!!!!!\n"
        );
        assert!(lives.starts_with("cgroup /fwharden-watch-"), "{lives}");
    }
    host.expect(0, &["rollback"]);
    host.wait_quiet();
}

/// `ip netns exec` remounts /sys, so no cgroup2 mount is visible to the
/// fwharden it starts: the watcher still gets a group of its own, found
/// through PID 1's view of the hierarchy, and the group goes with it.
#[test]
#[ignore = "needs root"]
fn under_ip_netns_exec_the_watcher_still_leaves_the_callers_cgroup() {
    needs_root("under_ip_netns_exec_the_watcher_still_leaves_the_callers_cgroup");
    if placement::systemd_is_pid1() {
        eprintln!("\n!!!!!!!! SKIPPED: systemd is PID 1 here, so the watcher is a unit, not a cgroup of fwharden's own !!!!!!!!\n");
        return;
    }
    let host = Host::new("nsexec");
    let argv = fw_argv(&host.ns, host.dir());
    let mut c = std::process::Command::new(&argv[0]);
    c.args(&argv[1..])
        .args(["--json", "apply", "vps-profile", "--timeout", "60"]);
    harness_env(&mut c);
    let out = c.output().expect("run fwharden under ip netns exec");
    assert!(out.status.success(), "apply: {}", stderr(&out));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = applied["token"].as_str().unwrap();
    let pid = host.watcher_pid();
    let own = placement::v2_group_of(&pid.to_string()).expect("the watcher's cgroup");
    assert_eq!(own, format!("/fwharden-watch-{token}"), "{applied}");
    let scratch: Vec<_> = fs::read_dir(host.run_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cgroup2-"))
        .collect();
    assert!(
        scratch.is_empty(),
        "temporary cgroup2 mounts left: {scratch:?}"
    );
    host.expect(0, &["confirm"]);
    assert_group_goes(&own);
}

/// Waits until the watcher's cgroup `own` is gone (the watcher removes it
/// as it exits); fails if it is left behind.
fn assert_group_goes(own: &str) {
    let dir = placement::cgroup2_mount()
        .unwrap()
        .join(own.trim_start_matches('/'));
    assert!(
        wait_until(Duration::from_secs(10), || !dir.exists()),
        "the watcher's cgroup {} was left behind",
        dir.display()
    );
}
