//! A real-SSH harness: Debian's sshd inside a test namespace (its own host
//! key, configuration and pid file in a temporary directory, listening on
//! the namespace's address only, never the machine's own sshd), reached by
//! the real `ssh` client from a second namespace linked to it by a veth
//! pair only, with a key made for the test. Dropped, panic included, it
//! kills sshd, every session and every fwharden process it started, then
//! removes the namespaces and directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;
use fwharden::netns::Netns;

pub const SERVER: &str = "10.77.0.1";
pub const CLIENT: &str = "10.77.0.2";
/// A second address of the client's namespace, for a second session.
pub const CLIENT2: &str = "10.77.0.3";
const SSHD: &str = "/usr/sbin/sshd";

/// Whether sshd, ssh and sudo are installed (scripts/deps); same CI rule
/// as [`privileged`].
pub fn have_ssh(test: &str) -> bool {
    have_files(
        test,
        &[SSHD, "/usr/bin/ssh", "/usr/bin/sudo", "/usr/bin/ssh-keygen"],
    )
}

/// An open SSH session: the client process, and the pid of the sshd
/// process serving it on the server (the parent of its command).
pub struct Session {
    pub client: Killed,
    pub sshd_pid: i32,
    /// What the command run before the session idles printed, and its
    /// exit code.
    pub output: String,
    pub code: i32,
}

/// The sshd of a test: killed (by its own pid) when dropped, panic
/// included, and with it every process naming its directory (the
/// sessions' commands, which would outlive it).
pub struct Sshd {
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

static SESSIONS: AtomicU32 = AtomicU32::new(0);

/// The client's options: the test's key, no known-hosts file, never a
/// prompt.
fn ssh_command(client: &Netns, key: &Path, connect_timeout: u64) -> Command {
    client.verify().unwrap();
    let mut c = client.command("ssh");
    c.args(["-F", "/dev/null", "-i"]).arg(key).args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        &format!("ConnectTimeout={connect_timeout}"),
        "-o",
        "LogLevel=ERROR",
    ]);
    c
}

impl Sshd {
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("id")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Starts sshd inside `ns`, listening on SERVER:22 only, and waits
    /// (bounded) until it listens.
    pub fn start(ns: &Netns) -> Sshd {
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
    /// until dropped; returns once its command runs, so sshd has titled
    /// the session `root@notty`.
    pub fn session(&self, client: &Netns, from: &str) -> Killed {
        self.session_running(client, from, "true").client
    }

    /// An SSH session from `client`, its address `from`, that runs
    /// `command` (its output kept in the session's directory) and then
    /// stays open until its client or its sshd process ends; returns once
    /// `command` is done.
    pub fn session_running(&self, client: &Netns, from: &str, command: &str) -> Session {
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let base = self.dir.path().join(format!("session-{n}"));
        let (out, ready) = (base.with_extension("out"), base.with_extension("ready"));
        let child = ssh_command(client, &self.key(), 20)
            .args(["-b", from])
            .arg(format!("root@{SERVER}"))
            // The ready file holds the exit code and sshd's pid, written
            // whole (mv). tail names it, so Drop finds it, and ends with
            // the session's sshd process (--pid), so a session that
            // outlives its client cannot linger.
            .arg(format!(
                "{command} >{out} 2>&1; echo $? $PPID >{r}.tmp; mv {r}.tmp {r}; \
                 exec tail -f {r} --pid=$PPID",
                out = out.display(),
                r = ready.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = Killed(child);
        assert!(
            wait_until(Duration::from_secs(60), || ready.exists()),
            "the session from {from} did not start:\n{}",
            self.log()
        );
        let text = std::fs::read_to_string(&ready).unwrap();
        let mut words = text.split_whitespace().map(|w| w.parse::<i32>().unwrap());
        let (code, sshd_pid) = (words.next().unwrap(), words.next().unwrap());
        Session {
            client,
            sshd_pid,
            output: std::fs::read_to_string(&out).unwrap_or_default(),
            code,
        }
    }

    /// Runs `command` over SSH from `client` as root, to the end.
    pub fn ssh(&self, client: &Netns, command: &str) -> Output {
        ssh_command(client, &self.key(), 20)
            .arg(format!("root@{SERVER}"))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Whether a fresh login from `client` succeeds now (one try, a short
    /// connect timeout: callers poll).
    pub fn logs_in(&self, client: &Netns) -> bool {
        let out = ssh_command(client, &self.key(), 3)
            .arg(format!("root@{SERVER}"))
            .arg("echo in")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out.status.success() && stdout(&out).trim() == "in"
    }
}

/// The server (a [`Host`] running sshd), the client's namespace linked to
/// it, and a profile directory with `cut-ssh` (no rule for SSH: the input
/// policy drops new connections to port 22) and `keep-ssh`.
pub struct SshSite {
    // Dropped in this order: sshd and the sessions first, then the host's
    // processes and namespace, the client's, the profiles.
    pub sshd: Sshd,
    pub host: Host,
    pub client: Netns,
    profiles: tempfile::TempDir,
}

impl SshSite {
    pub fn new(tag: &str) -> SshSite {
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
        SshSite {
            sshd,
            host,
            client,
            profiles,
        }
    }

    pub fn profiles(&self) -> &Path {
        self.profiles.path()
    }

    /// fwharden's command line in an SSH session on the server: under
    /// sudo (which resets the environment: only the interlock and `vars`
    /// are passed), or not.
    pub fn remote(&self, sudo: bool, vars: &str, args: &str) -> String {
        let fw = env!("CARGO_BIN_EXE_fwharden");
        let interlock = format!("{}={}", fwharden::rollback::FORBID_ENV, own_netns());
        let base = format!(
            "{fw} --state-dir {} --run-dir {} --profile-dir {} {args}",
            self.host.state_dir().display(),
            self.host.run_dir().display(),
            self.profiles().display()
        );
        if sudo {
            format!("sudo {interlock} {vars} {base}")
        } else {
            format!("env {interlock} {vars} {base}")
        }
    }

    /// Runs `command` over a one-shot SSH session from CLIENT.
    pub fn ssh(&self, command: &str) -> Output {
        self.sshd.ssh(&self.client, command)
    }

    /// The client's end of the veth pair.
    pub fn client_link(&self) -> String {
        let out = self
            .client
            .run(&["ip", "-o", "link", "show", "type", "veth"])
            .unwrap();
        let text = stdout(&out);
        let name = text
            .lines()
            .next()
            .and_then(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap().to_string());
        name.unwrap_or_else(|| panic!("no veth in the client namespace:\n{text}"))
    }

    /// Sets the client's end of the link `up` or down.
    pub fn set_link(&self, up: bool) {
        let dev = self.client_link();
        let state = if up { "up" } else { "down" };
        let out = self
            .client
            .run(&["ip", "link", "set", &dev, state])
            .unwrap();
        assert!(
            out.status.success(),
            "ip link set {dev} {state}: {}",
            stderr(&out)
        );
    }
}

/// The exit code and both outputs of `o`, for assertions.
pub fn code_and_text(o: &Output) -> (Option<i32>, String) {
    (
        o.status.code(),
        format!("stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o)),
    )
}

/// `nft list` text with the counters' values left out, to compare two
/// loads of one ruleset.
pub fn without_counts(table: &str) -> String {
    let mut out = vec![];
    let mut skip = false;
    for word in table.split_whitespace() {
        if skip {
            skip = false;
            continue;
        }
        skip = matches!(word, "packets" | "bytes");
        if !skip {
            out.push(word);
        }
    }
    out.join(" ")
}
