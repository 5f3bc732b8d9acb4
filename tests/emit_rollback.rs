//! The safety net of `load.sh` (src/emit/safety.rs), with the real
//! iptables (both backends), ipset and util-linux in namespaces the tests
//! create:
//! - an unconfirmed load puts the previous rules back byte for byte
//!   (`iptables-save` and `ip6tables-save` of every table, comments
//!   stripped, and the groups' ipsets), also when the process group that
//!   ran it is killed right after the load;
//! - a confirmed load keeps the new rules, and a confirm after the
//!   deadline is "too late";
//! - the lockout check refuses a profile that cuts the SSH client
//!   (SSH_CONNECTION, or the only connection to a local sshd) with exit 4
//!   and changes nothing;
//! - `--no-rollback` loads with no restorer.
//!
//! The ufw scripts' net is proven in tests/emit_ufw_rollback.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use fwharden::netns::Netns;

fn interlock() {
    std::env::set_var(fwharden::rollback::FORBID_ENV, own_netns());
}

/// The rules before: groups (ipsets), SSH from the admin group, the web.
const BEFORE: &str = r#"
[groups]
admin = ["192.0.2.0/24", "2001:db8:1::/64"]
[[rule]]
allow = "ssh"
from = "admin"
[[rule]]
allow = "https"
"#;

/// The rules loaded: another admin group, SSH from it only.
const AFTER: &str = r#"
[groups]
admin = ["198.51.100.0/24"]
office = ["203.0.113.128/25"]
[[rule]]
allow = "ssh"
from = "admin"
[[rule]]
allow = "imaps"
from = "office"
"#;

/// SSH on wg0 only, as wireguard-gateway has it.
const TUNNEL_ONLY: &str = r#"
[groups]
tunnel = ["10.0.0.0/24"]
[[rule]]
allow = "ssh"
from = "tunnel"
interface = "wg0"
"#;

/// The iptables binaries of one backend, as load.sh takes them.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    fn bins(self) -> (&'static str, &'static str) {
        match self {
            Backend::Nft => ("iptables-nft", "ip6tables-nft"),
            Backend::Legacy => ("iptables-legacy", "ip6tables-legacy"),
        }
    }
}

/// A test host: a namespace, the emitted files of each profile, and a
/// private TMPDIR for the rollback directories. Dropped, it kills the
/// restorers it started (their command line names the TMPDIR) before the
/// namespace goes.
struct Box_ {
    tmp: tempfile::TempDir,
    files: tempfile::TempDir,
    ns: Netns,
    backend: Backend,
}

impl Drop for Box_ {
    fn drop(&mut self) {
        kill_all_naming(&self.tmp.path().to_string_lossy());
    }
}

impl Box_ {
    fn new(tag: &str, backend: Backend) -> Box_ {
        let files = tempfile::tempdir().unwrap();
        let profiles = files.path().join("profiles");
        std::fs::create_dir(&profiles).unwrap();
        for (name, text) in [
            ("before", BEFORE),
            ("after", AFTER),
            ("tunnel", TUNNEL_ONLY),
        ] {
            std::fs::write(profiles.join(format!("{name}.toml")), text).unwrap();
            let out = fwharden()
                .args(["--profile-dir", profiles.to_str().unwrap(), "emit", name])
                .args(["--format", "iptables", "--output"])
                .arg(files.path().join(name))
                .output()
                .unwrap();
            assert!(out.status.success(), "emit {name}: {}", stderr(&out));
        }
        let ns = Netns::create(tag).unwrap();
        ns.run(&["ip", "link", "set", "lo", "up"]).unwrap();
        // The address the operator's SSH connection arrives at, on eth0.
        ns.run(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ])
        .unwrap();
        ns.run(&["ip", "addr", "add", "10.1.1.1/24", "dev", "eth0"])
            .unwrap();
        ns.run(&["ip", "link", "set", "eth0", "up"]).unwrap();
        let tmp = tempfile::Builder::new()
            .prefix("fwharden-rb-test-")
            .tempdir()
            .unwrap();
        Box_ {
            tmp,
            files,
            ns,
            backend,
        }
    }

    fn script(&self, profile: &str) -> PathBuf {
        self.files.path().join(profile).join("load.sh")
    }

    /// `sh load.sh ARGS` of `profile` inside, with `env` added to a
    /// harness environment (no SSH variables of whoever runs the tests).
    fn command(&self, profile: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.ns.verify().unwrap();
        let (v4, v6) = self.backend.bins();
        let mut c = self.ns.command("sh");
        harness_env(&mut c);
        c.arg(self.script(profile))
            .args(args)
            .env("TMPDIR", self.tmp.path())
            .env("IPTABLES", v4)
            .env("IP6TABLES", v6)
            .env_remove("FWHARDEN_ROLLBACK_TIMEOUT");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn load(&self, profile: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(profile, args, env).output().unwrap()
    }

    fn expect(&self, code: i32, profile: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.load(profile, args, env);
        assert_eq!(
            out.status.code(),
            Some(code),
            "load.sh of {profile} {args:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    /// Both families' `*-save` of every table, comments stripped, and the
    /// sets with their members sorted (ipset lists a hash in no set order).
    fn state(&self) -> String {
        let (v4, v6) = self.backend.bins();
        let mut out = String::new();
        for bin in [v4, v6] {
            let saved = stdout(&self.ns.run(&[&format!("{bin}-save")]).unwrap());
            out.push_str(&format!("==> {bin}-save\n"));
            for line in saved.lines().filter(|l| !l.starts_with('#')) {
                out.push_str(line);
                out.push('\n');
            }
        }
        let mut sets: Vec<String> = stdout(&self.ns.run(&["ipset", "save"]).unwrap())
            .lines()
            .map(str::to_string)
            .collect();
        sets.sort();
        out.push_str("==> ipset save, sorted\n");
        out.push_str(&sets.join("\n"));
        out
    }

    /// The rollback directories the loads made.
    fn rollback_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("fwharden-rollback.")
            })
            .collect();
        dirs.sort();
        dirs
    }

    /// The one rollback directory, once its restorer has said it runs.
    fn only_rollback_dir(&self) -> PathBuf {
        let dirs = self.rollback_dirs();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs[0].clone()
    }

    /// Waits (generously) until the state is `want`; fails with the diff.
    fn wait_for_state(&self, want: &str, what: &str) {
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(90), || {
            last = self.state();
            last == want
        });
        assert!(
            ok,
            "{what}: the state never came back\nwant:\n{want}\ngot:\n{last}\nlogs: {}",
            self.logs()
        );
    }

    fn logs(&self) -> String {
        self.rollback_dirs()
            .iter()
            .map(|d| {
                format!(
                    "{}: {}",
                    d.display(),
                    std::fs::read_to_string(d.join("log")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The operator's rules before the test's load: the `before` profile,
    /// loaded with no timer, and one rule of their own in each family.
    fn previous_rules(&self) {
        self.expect(0, "before", &["--no-rollback"], &[]);
        let (v4, v6) = self.backend.bins();
        self.ns
            .run(&[
                v4,
                "-w",
                "10",
                "-A",
                "INPUT",
                "-s",
                "192.0.2.99",
                "-p",
                "tcp",
                "--dport",
                "8080",
                "-j",
                "ACCEPT",
            ])
            .unwrap();
        self.ns
            .run(&[
                v6,
                "-w",
                "10",
                "-A",
                "INPUT",
                "-s",
                "2001:db8::99",
                "-p",
                "tcp",
                "--dport",
                "8080",
                "-j",
                "ACCEPT",
            ])
            .unwrap();
    }
}

/// The rollback directory a load printed (`--confirm DIR`).
fn printed_dir(out: &Output) -> PathBuf {
    let text = stdout(out);
    let dir = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" --confirm ")
                .map(|(_, d)| d.to_string())
        })
        .unwrap_or_else(|| panic!("no --confirm line in:\n{text}"));
    PathBuf::from(dir)
}

fn alive(pid: i32, needle: &str) -> bool {
    alive_naming(pid, needle)
}

fn restorer_pid(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_unconfirmed_load_puts_the_previous_rules_back_byte_for_byte() {
    if !privileged("an_unconfirmed_load_puts_the_previous_rules_back_byte_for_byte") {
        return;
    }
    interlock();
    for backend in [Backend::Nft, Backend::Legacy] {
        let b = Box_::new("rbunconf", backend);
        b.previous_rules();
        let before = b.state();
        let out = b.expect(0, "after", &["--timeout", "2"], &[]);
        let dir = printed_dir(&out);
        assert!(stdout(&out).contains(&format!(
            "sh {} --confirm {}",
            b.script("after").display(),
            dir.display()
        )));
        let loaded = b.state();
        assert_ne!(loaded, before, "{backend:?}: the load changed nothing");
        assert!(loaded.contains("fwh-office_v4"), "{loaded}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the saved rules are private");
        b.wait_for_state(&before, &format!("{backend:?}"));
        assert!(
            wait_until(Duration::from_secs(30), || dir.join("restored").exists()),
            "{}",
            b.logs()
        );
        // A confirm now is too late, and says so.
        let late = b.expect(1, "after", &["--confirm", dir.to_str().unwrap()], &[]);
        assert!(stderr(&late).contains("too late"), "{}", stderr(&late));
        assert_eq!(b.state(), before);
        eprintln!("{backend:?}: unconfirmed load.sh rolled back to the byte");
    }
}

/// The process group that ran load.sh (a login session's, which a dropped
/// SSH connection hangs up and a logout kills) is killed right after the
/// load: the restorer, in a session of its own, still puts the rules back.
#[test]
fn the_restorer_survives_the_death_of_the_session_that_loaded() {
    if !privileged("the_restorer_survives_the_death_of_the_session_that_loaded") {
        return;
    }
    interlock();
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    use std::os::unix::process::CommandExt;
    let b = Box_::new("rbkill", Backend::Nft);
    b.previous_rules();
    let before = b.state();
    let (v4, v6) = Backend::Nft.bins();
    let script = b.script("after");
    let mut session = b.ns.command("sh");
    harness_env(&mut session);
    session
        .arg("-c")
        .arg(format!(
            "sh '{}' --timeout 3 && exec sleep 600",
            script.display()
        ))
        .env("TMPDIR", b.tmp.path())
        .env("IPTABLES", v4)
        .env("IP6TABLES", v6)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = session.spawn().unwrap();
    let group = Pid::from_raw(child.id() as i32);
    assert!(
        wait_until(Duration::from_secs(60), || b
            .state()
            .contains("fwh-office_v4")),
        "the load never happened: {}",
        b.logs()
    );
    let dir = b.only_rollback_dir();
    let restorer = restorer_pid(&dir);
    let needle = b.tmp.path().to_string_lossy().into_owned();
    // Its own session and process group: neither the group's hangup nor
    // its SIGKILL reaches it.
    let sid = nix::unistd::getsid(Some(Pid::from_raw(restorer))).unwrap();
    assert_eq!(
        sid,
        Pid::from_raw(restorer),
        "the restorer leads a session of its own"
    );
    assert_ne!(
        nix::unistd::getpgid(Some(Pid::from_raw(restorer))).unwrap(),
        group
    );
    let _ = killpg(group, Signal::SIGHUP);
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
    assert!(
        alive(restorer, &needle) || dir.join("restored").exists(),
        "the restorer died with the session: {}",
        b.logs()
    );
    b.wait_for_state(&before, "after the session was killed");
    assert!(
        wait_until(Duration::from_secs(30), || dir.join("restored").exists()),
        "{}",
        b.logs()
    );
}

#[test]
fn a_confirmed_load_keeps_the_new_rules() {
    if !privileged("a_confirmed_load_keeps_the_new_rules") {
        return;
    }
    interlock();
    let b = Box_::new("rbconf", Backend::Nft);
    b.previous_rules();
    let before = b.state();
    // A long window: the confirm must come in time on a busy machine.
    let out = b.expect(0, "after", &["--timeout", "600"], &[]);
    let dir = printed_dir(&out);
    let loaded = b.state();
    assert_ne!(loaded, before);
    let restorer = restorer_pid(&dir);
    let needle = b.tmp.path().to_string_lossy().into_owned();
    assert!(alive(restorer, &needle));
    let confirmed = b.expect(0, "after", &["--confirm", dir.to_str().unwrap()], &[]);
    assert!(
        stdout(&confirmed).contains("confirmed"),
        "{}",
        stdout(&confirmed)
    );
    assert!(
        wait_until(Duration::from_secs(30), || !alive(restorer, &needle)),
        "the restorer outlived the confirm"
    );
    assert!(!dir.exists(), "the saved rules are removed once confirmed");
    assert_eq!(b.state(), loaded, "the confirmed rules stay");
}

#[test]
fn the_lockout_check_refuses_a_profile_that_cuts_the_ssh_client() {
    if !privileged("the_lockout_check_refuses_a_profile_that_cuts_the_ssh_client") {
        return;
    }
    interlock();
    let b = Box_::new("rblock", Backend::Nft);
    b.previous_rules();
    let before = b.state();
    // `after` lets SSH in from 198.51.100.0/24 only.
    let cut = [("SSH_CONNECTION", "192.0.2.7 50000 10.1.1.1 22")];
    let out = b.expect(4, "after", &[], &cut);
    let err = stderr(&out);
    assert!(
        err.contains("192.0.2.7")
            && err.contains("port 22 arriving on eth0")
            && err.contains("--force")
            && err.contains("Nothing was changed"),
        "{err}"
    );
    assert_eq!(b.state(), before, "a refusal changes nothing");
    assert!(b.rollback_dirs().is_empty(), "nothing saved, no restorer");
    // sudo drops SSH_CONNECTION; SSH_CLIENT has no server address, so the
    // interface is unknown: still refused.
    b.expect(4, "after", &[], &[("SSH_CLIENT", "192.0.2.7 50000 22")]);
    // SSH on wg0 only, the connection arriving on eth0: refused, naming
    // the policy.
    let out = b.expect(
        4,
        "tunnel",
        &[],
        &[("SSH_CONNECTION", "10.0.0.5 50000 10.1.1.1 22")],
    );
    assert!(
        stderr(&out).contains("arriving on eth0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.state(), before);
    // An unreadable variable is said so, and with nothing else to go on
    // (no sshd here) nothing is checked.
    let out = b.expect(
        0,
        "before",
        &["--no-rollback"],
        &[("SSH_CONNECTION", "garbage")],
    );
    assert!(
        stderr(&out).contains("SSH_CONNECTION is set but unreadable"),
        "{}",
        stderr(&out)
    );
    // That reload of `before` swapped its sets in anew (ipset gives a new
    // set a new hash seed, `initval`): the state to come back to.
    let before = b.state();
    // A client the profile lets in: loaded, then put back at once with
    // --rollback.
    let out = b.expect(
        0,
        "after",
        &[],
        &[("SSH_CONNECTION", "198.51.100.7 50000 10.1.1.1 22")],
    );
    assert!(stderr(&out).contains("lockout check: a new SSH connection from 198.51.100.7 to port 22 arriving on eth0 is accepted"), "{}", stderr(&out));
    let dir = printed_dir(&out);
    let back = b.expect(0, "after", &["--rollback", dir.to_str().unwrap()], &[]);
    assert!(
        stdout(&back).contains("previous rules are back"),
        "{}",
        stdout(&back)
    );
    assert_eq!(b.state(), before);
    // --force skips the check (a console), the timer still runs.
    let out = b.expect(0, "after", &["--force", "--timeout", "2"], &cut);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    b.wait_for_state(&before, "forced, unconfirmed");
}

/// Without the variables (sudo drops them), the client is the peer of the
/// only established connection to a local sshd: here a stand-in listening
/// on port 22 whose process is named sshd, reached over a veth pair from a
/// second namespace.
#[test]
fn without_ssh_connection_the_client_is_found_among_sshds_connections() {
    let test = "without_ssh_connection_the_client_is_found_among_sshds_connections";
    if !privileged(test) {
        return;
    }
    interlock();
    let b = Box_::new("rbss", Backend::Nft);
    let client = Netns::create("rbssc").unwrap();
    b.ns.link(&client, &["10.2.2.1/24"], &["10.2.2.7/24"])
        .unwrap();
    // Python under the name sshd (ss reports a process by the name it was
    // run as), listening on 22 as sshd does, holding what it accepts.
    let bin = b.files.path().join("sshd");
    std::os::unix::fs::symlink("/usr/bin/python3", &bin).unwrap();
    let mut server = b.ns.command(bin.to_str().unwrap());
    server
        .args([
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET6)\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('::', 22))\n\
             s.listen()\n\
             c = s.accept()\n\
             time.sleep(600)\n",
        ])
        .arg(b.tmp.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut server = server.spawn().unwrap();
    let listening = wait_until(Duration::from_secs(30), || {
        stdout(&b.ns.run(&["ss", "-tlnpH"]).unwrap()).contains("\"sshd\"")
    });
    assert!(listening, "the stand-in sshd never listened");
    let mut conn = client.command("bash");
    conn.args(["-c", "exec busybox nc 10.2.2.1 22"])
        .arg(b.tmp.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut conn = conn.spawn().unwrap();
    let established = wait_until(Duration::from_secs(30), || {
        stdout(&b.ns.run(&["ss", "-tnpH", "state", "established"]).unwrap()).contains("\"sshd\"")
    });
    let before = b.state();
    let out = b.load("after", &[], &[]);
    let _ = conn.kill();
    let _ = server.kill();
    let _ = (conn.wait(), server.wait());
    assert!(
        established,
        "the stand-in connection never came up: {}",
        stdout(&b.ns.run(&["ss", "-tanp"]).unwrap())
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("10.2.2.7") && err.contains("the only connection to sshd"),
        "{err}"
    );
    assert_eq!(b.state(), before);
}

#[test]
fn no_rollback_loads_without_a_restorer() {
    if !privileged("no_rollback_loads_without_a_restorer") {
        return;
    }
    interlock();
    let b = Box_::new("rbnone", Backend::Nft);
    let out = b.expect(0, "after", &["--no-rollback"], &[]);
    assert!(
        stdout(&out).contains("no rollback timer"),
        "{}",
        stdout(&out)
    );
    assert!(b.state().contains("fwh-office_v4"));
    assert!(b.rollback_dirs().is_empty(), "{:?}", b.rollback_dirs());
    assert!(
        pids_naming(&b.tmp.path().to_string_lossy()).is_empty(),
        "a restorer runs"
    );
    // The options are checked before anything else.
    let bad = b.expect(2, "after", &["--timeout", "soon"], &[]);
    assert!(stderr(&bad).contains("--timeout"), "{}", stderr(&bad));
}

/// A load that fails half-way (the IPv4 rules went in, the IPv6 file is
/// broken) is put back at once, not at the deadline.
#[test]
fn a_load_that_fails_half_way_is_put_back_at_once() {
    if !privileged("a_load_that_fails_half_way_is_put_back_at_once") {
        return;
    }
    interlock();
    let b = Box_::new("rbfail", Backend::Nft);
    b.previous_rules();
    let before = b.state();
    let broken = b.files.path().join("after").join("ip6tables.rules");
    let mut text = std::fs::read_to_string(&broken).unwrap();
    text = text.replace("COMMIT", "-A FWHARDEN-INPUT --no-such-option\nCOMMIT");
    std::fs::write(&broken, text).unwrap();
    // A window far longer than any wait here: only "at once" passes.
    let out = b.load("after", &["--timeout", "3600"], &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("being put back now"),
        "{}",
        stderr(&out)
    );
    b.wait_for_state(&before, "after a failed load");
}

/// The emitted scripts are shellcheck-clean as POSIX sh: load.sh with and
/// without sets and bans, ufw.sh and reload.sh.
#[test]
fn the_emitted_scripts_are_shellcheck_clean() {
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("shellcheck is missing (CI=true: a skip is a failure); run scripts/deps");
        }
        eprintln!("\n!!!!!!!! SKIPPED the_emitted_scripts_are_shellcheck_clean: shellcheck is missing; run scripts/deps !!!!!!!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(
        profiles.join("bans.toml"),
        format!("{AFTER}\n[bans]\nenabled = true\n"),
    )
    .unwrap();
    std::fs::write(
        profiles.join("gw.toml"),
        "extends = \"wireguard-gateway\"\n[defaults]\ncontainers = \"ignore\"\n",
    )
    .unwrap();
    let mut scripts = Vec::new();
    for (name, format) in [
        ("ssh-only", "iptables"),
        ("bans", "iptables"),
        ("gw", "ufw"),
    ] {
        let out_dir = dir.path().join(name);
        let out = fwharden()
            .args([
                "--profile-dir",
                "profiles",
                "--profile-dir",
                profiles.to_str().unwrap(),
            ])
            .args([
                "emit",
                name,
                "--format",
                format,
                "--approximate",
                "--output",
            ])
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "emit {name}: {}", stderr(&out));
        let names: &[&str] = if format == "ufw" {
            &["ufw.sh", "reload.sh"]
        } else {
            &["load.sh"]
        };
        scripts.extend(names.iter().map(|n| out_dir.join(n)));
    }
    let out = Command::new("shellcheck")
        .args(["-s", "sh"])
        .args(&scripts)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
