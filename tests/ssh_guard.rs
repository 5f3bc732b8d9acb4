//! The lockout guard over a real SSH session (issue 23): Debian's sshd
//! runs inside a test namespace (its own host key, configuration and pid
//! file in a temporary directory, listening on the namespace's address
//! only), the client logs in from a second namespace linked to it by a
//! veth pair, and fwharden runs in the session, under sudo, which drops
//! SSH_CONNECTION.
//!
//! - `sudo fwharden apply cut-ssh` is refused (exit 4), the client found
//!   from the connection held by the sshd process above it;
//! - an unreadable SSH_CONNECTION is said to be unreadable, with its
//!   value, and the client is still found;
//! - an apply that keeps SSH arms the escape hatch for that client;
//! - `sudo fwharden ban CLIENT` is refused, and the session goes on;
//! - from the console, the only client connected to sshd is guarded, and
//!   with two, both are (no hatch); `ban` of a client merely connected to
//!   sshd (fail2ban's case) goes through.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use fwharden::netns::Netns;

const SERVER: &str = "10.77.0.1";
const CLIENT: &str = "10.77.0.2";
/// A second address of the client's namespace, for a second session.
const CLIENT2: &str = "10.77.0.3";
const SSHD: &str = "/usr/sbin/sshd";

/// Whether sshd, ssh and sudo are installed (scripts/deps); same CI rule
/// as [`privileged`].
fn have_ssh(test: &str) -> bool {
    let missing: Vec<&str> = [SSHD, "/usr/bin/ssh", "/usr/bin/sudo", "/usr/bin/ssh-keygen"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{missing:?} missing; run scripts/deps");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why} (CI=true: a skip is a failure)");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: {why} !!!!!!!!\n");
    false
}

/// The sshd of a test: killed (by its own pid) when dropped, panic
/// included, and with it every process naming its directory (the
/// sessions' commands, which would outlive it).
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_all_naming(&self.dir.path().to_string_lossy());
    }
}

impl Sshd {
    fn key(&self) -> PathBuf {
        self.dir.path().join("id")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Starts sshd inside `ns`, listening on SERVER:22 only, and waits
    /// (bounded) until it listens.
    fn start(ns: &Netns) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("fwharden-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for key in ["host_key", "id"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(d.join(key))
                .output()
                .unwrap();
            assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
        }
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress {SERVER}:22\nHostKey {0}/host_key\nPidFile {0}/sshd.pid\n\
                 AuthorizedKeysFile {0}/authorized_keys\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nUseDNS no\n",
                d.display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory, which the package's
        // tmpfiles.d makes at boot (empty, root's).
        std::fs::create_dir_all("/run/sshd").unwrap();
        ns.verify().unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = ns
            .command(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let sshd = Sshd { child, dir };
        assert!(
            wait_until(Duration::from_secs(20), || sshd
                .log()
                .contains("Server listening")),
            "sshd did not start:\n{}",
            sshd.log()
        );
        sshd
    }

    /// An SSH session from `client`, its address `from`, that stays open
    /// until dropped; returns once its command runs (a file it
    /// touches appears: sshd runs on this machine), so sshd has titled
    /// the session `root@notty`.
    fn session(&self, client: &Netns, from: &str) -> Killed {
        let ready = self.dir.path().join(format!("ready-{from}"));
        client.verify().unwrap();
        let child = client
            .command("ssh")
            .args(["-F", "/dev/null", "-b", from, "-i"])
            .arg(self.key())
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
            .arg(format!("root@{SERVER}"))
            // tail names the file, so Drop finds it, and ends with the
            // session's sshd process (--pid), so a session that outlives
            // its client cannot linger.
            .arg(format!(
                "touch {0}; exec tail -f {0} --pid=$PPID",
                ready.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let session = Killed(child);
        assert!(
            wait_until(Duration::from_secs(30), || ready.exists()),
            "the session from {from} did not start:\n{}",
            self.log()
        );
        session
    }

    /// Runs `command` over SSH from `client` as root, to the end.
    fn ssh(&self, client: &Netns, command: &str) -> Output {
        client.verify().unwrap();
        client
            .command("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(self.key())
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
                &format!("root@{SERVER}"),
                command,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// fwharden's command line in the SSH session: under sudo (which resets
/// the environment: only the interlock and `vars` are passed), or not.
fn remote(host: &Host, profiles: &Path, sudo: bool, vars: &str, args: &str) -> String {
    let fw = env!("CARGO_BIN_EXE_fwharden");
    let interlock = format!("{}={}", fwharden::rollback::FORBID_ENV, own_netns());
    let base = format!(
        "{fw} --state-dir {} --run-dir {} --profile-dir {} {args}",
        host.state_dir().display(),
        host.run_dir().display(),
        profiles.display()
    );
    if sudo {
        format!("sudo {interlock} {vars} {base}")
    } else {
        format!("env {interlock} {vars} {base}")
    }
}

fn setup(tag: &str) -> (Host, Netns, Sshd, tempfile::TempDir) {
    let host = Host::new(tag);
    let client = Netns::create(&format!("{tag}c")).unwrap();
    host.ns
        .link(
            &client,
            &[&format!("{SERVER}/24")],
            &[&format!("{CLIENT}/24"), &format!("{CLIENT2}/24")],
        )
        .unwrap();
    let profiles = tempfile::tempdir().unwrap();
    // No rule for SSH: the input policy drops new connections to port 22.
    std::fs::write(
        profiles.path().join("cut-ssh.toml"),
        "[[rule]]\nallow = \"http\"\n",
    )
    .unwrap();
    std::fs::write(
        profiles.path().join("keep-ssh.toml"),
        "[bans]\nenabled = true\n[[rule]]\nallow = \"ssh\"\n",
    )
    .unwrap();
    let sshd = Sshd::start(&host.ns);
    (host, client, sshd, profiles)
}

fn code_and_text(o: &Output) -> (Option<i32>, String) {
    (
        o.status.code(),
        format!("stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o)),
    )
}

#[test]
#[ignore = "needs root"]
fn sudo_over_a_real_ssh_session_is_guarded_by_the_sshd_ancestor() {
    let test = "sudo_over_a_real_ssh_session_is_guarded_by_the_sshd_ancestor";
    needs_root(test);
    if !have_ssh(test) {
        return;
    }
    let (host, client, sshd, profiles) = setup("sshg");
    let p = profiles.path();
    let apply_cut = "apply cut-ssh --no-probe --timeout 120";

    // Without sudo: SSH_CONNECTION, as before.
    let out = sshd.ssh(&client, &remote(&host, p, false, "", apply_cut));
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(4), "{text}\nsshd:\n{}", sshd.log());
    assert!(
        text.contains(&format!(
            "SSH client {CLIENT} (to port 22), from SSH_CONNECTION"
        )),
        "{text}"
    );

    // Under sudo, SSH_CONNECTION is gone: the connection held by the sshd
    // process above fwharden names the client.
    let out = sshd.ssh(&client, &remote(&host, p, true, "", apply_cut));
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(4), "sudo apply of a profile cutting SSH: {text}");
    assert!(
        text.contains(&format!(
            "SSH client {CLIENT} (to port 22), found from its established connection to sshd"
        )) && text.contains("an ancestor of this process")
            && text.contains("would refuse new SSH connections"),
        "{text}"
    );
    assert!(host.table().is_none(), "a refused apply changed the kernel");

    // Unreadable values are said to be unreadable, and the client is
    // still found.
    for value in ["garbage", "", "203.0.113.99 50000"] {
        let vars = format!("SSH_CONNECTION='{value}'");
        let out = sshd.ssh(
            &client,
            &remote(&host, p, true, &vars, &format!("--json {apply_cut}")),
        );
        let (code, text) = code_and_text(&out);
        assert_eq!(code, Some(4), "SSH_CONNECTION={value:?}: {text}");
        assert!(
            text.contains(&format!("SSH_CONNECTION is set but unreadable ({value:?})")),
            "SSH_CONNECTION={value:?}: {text}"
        );
        assert!(!text.contains("unset"), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
        assert_eq!(v["ssh_client"]["method"], "sshd-ancestor", "{v}");
        assert_eq!(v["ssh_client"]["clients"][0]["client"], CLIENT, "{v}");
    }

    // An apply that keeps SSH goes through, and the hatch is armed for
    // the client found this way.
    let out = sshd.ssh(
        &client,
        &remote(
            &host,
            p,
            true,
            "",
            "--json apply keep-ssh --no-probe --timeout 120",
        ),
    );
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(v["state"], "pending", "{v}");
    let hatch = v["hatch"].as_str().unwrap();
    assert!(
        hatch.starts_with("armed") && hatch.contains(CLIENT),
        "{hatch}"
    );
    assert!(host
        .table_text()
        .contains(&format!("ip saddr {CLIENT} tcp dport 22")));

    // `ban` of the client under sudo: refused, and the session (the next
    // command over it, and a new login) still works.
    let out = sshd.ssh(
        &client,
        &remote(&host, p, true, "", &format!("ban {CLIENT}")),
    );
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(4), "{text}");
    assert!(
        text.contains("it is your SSH client") && text.contains("--force"),
        "{text}"
    );
    assert!(host.ban_of(CLIENT).is_none());
    let out = sshd.ssh(&client, "echo still in");
    assert_eq!(stdout(&out).trim(), "still in", "{}", stderr(&out));

    host.expect(0, &["rollback"]);
    host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn from_the_console_the_clients_connected_to_sshd_are_guarded_and_ban_takes_them() {
    let test = "from_the_console_the_clients_connected_to_sshd_are_guarded_and_ban_takes_them";
    needs_root(test);
    if !have_ssh(test) {
        return;
    }
    let (host, client, sshd, profiles) = setup("sshc");
    let p = profiles.path();
    // The ban table, for `ban` below.
    std::fs::write(
        p.join("keep-web.toml"),
        "[bans]\nenabled = true\n[[rule]]\nallow = \"ssh\"\n[[rule]]\nallow = \"http\"\n",
    )
    .unwrap();
    host.confirm_from(p, "keep-web");

    // A connection to sshd that never logs in (a brute-forcer between two
    // guesses) is nobody to guard: from the console, with only that one,
    // the apply goes through.
    let to: std::net::SocketAddr = format!("{SERVER}:22").parse().unwrap();
    let mut stranger = client
        .run_in(|| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10)))
        .unwrap()
        .unwrap();
    let mut banner = [0u8; 4];
    std::io::Read::read_exact(&mut stranger, &mut banner).unwrap();
    assert_eq!(&banner, b"SSH-", "sshd took the connection");
    let out = host.expect_in(
        p,
        0,
        &[
            "--json",
            "apply",
            "cut-ssh",
            "--no-probe",
            "--timeout",
            "120",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ssh_client"]["method"], "not-found", "{v}");
    host.expect(0, &["rollback"]);

    // From the console (no SSH_CONNECTION, no sshd above it) while a
    // session is open: its client is the only logged-in connection to
    // sshd, and the guard keeps it.
    let _session = sshd.session(&client, CLIENT);
    let out = host.expect_in(p, 4, &["apply", "cut-ssh", "--no-probe"]);
    assert!(
        stderr(&out).contains(&format!(
            "SSH client {CLIENT} (to port 22), found as the only established connection to sshd"
        )),
        "{}",
        stderr(&out)
    );
    // Two sessions, from two addresses, neither above fwharden: both are
    // guarded, and no hatch is armed (it lets one address in).
    let _second = sshd.session(&client, CLIENT2);
    let out = host.expect_in(p, 4, &["--json", "apply", "cut-ssh", "--no-probe"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ssh_client"]["method"], "ambiguous", "{v}");
    assert!(
        stderr(&out).contains(&format!("SSH clients {CLIENT} (to port 22), {CLIENT2} (to port 22): several established connections to sshd")),
        "{}",
        stderr(&out)
    );
    let out = host.expect_in(p, 0, &["--json", "apply", "keep-ssh", "--no-probe"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["hatch"]
            .as_str()
            .unwrap()
            .starts_with("none: SSH clients"),
        "{v}"
    );
    host.expect(0, &["rollback"]);
    // But `ban` (fail2ban's path) takes only a client known to be this
    // process's: a client merely connected to sshd is what fail2ban bans.
    host.expect_in(p, 0, &["ban", CLIENT]);
    host.expect_in(p, 0, &["unban", CLIENT]);
    host.wait_quiet();
}

/// A child process killed (by its own pid) when dropped, panic included.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
