//! The real fail2ban (Debian's package, unpacked by scripts/deps under
//! target/fail2ban, never installed as a service) with the shipped action
//! file `contrib/fail2ban/action.d/fwharden.conf`, inside a throwaway
//! namespace: its server runs in the foreground as a child of the test,
//! with its socket, pid file, database, log and configuration in a
//! temporary directory, and is killed by its pid when the test ends.
//!
//! - `fail2ban-client set sshd banip` puts the address into fwharden's
//!   set, with fail2ban's bantime as its timeout; `unbanip` takes it out;
//! - failed logins written to the log file the jail watches get the
//!   source banned;
//! - an exempt address is refused, fail2ban logs the refusal, and the
//!   jail goes on banning.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The unpacked package's root, or `None` (skipped, a failure under CI).
fn fail2ban(test: &str) -> Option<PathBuf> {
    let dir = root().join("target/fail2ban");
    if dir.join("usr/bin/fail2ban-server").exists() {
        return Some(dir);
    }
    cannot_run(
        test,
        "fail2ban is not unpacked under target/fail2ban; run scripts/deps",
    );
    None
}

/// A fail2ban server started by the test, killed (by its pid) at the end,
/// panic included.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Jail {
    f2b: PathBuf,
    dir: tempfile::TempDir,
}

impl Jail {
    /// A configuration directory with the package's filters, fwharden's
    /// action file `action` (of contrib/fail2ban/action.d), and one sshd
    /// jail watching `auth.log` here, its action line `use`.
    fn new(f2b: PathBuf, action: &str, r#use: &str) -> Jail {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let conf = d.join("conf");
        std::fs::create_dir_all(conf.join("action.d")).unwrap();
        let etc = f2b.join("etc/fail2ban");
        let status = Command::new("cp")
            .args(["-r"])
            .arg(etc.join("filter.d"))
            .arg(etc.join("paths-common.conf"))
            .arg(etc.join("paths-debian.conf"))
            .arg(&conf)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::copy(
            root().join("contrib/fail2ban/action.d").join(action),
            conf.join("action.d").join(action),
        )
        .unwrap();
        std::fs::write(
            conf.join("fail2ban.conf"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {0}/f2b.log\nsocket = {0}/f2b.sock\n\
                 pidfile = {0}/f2b.pid\ndbfile = {0}/f2b.sqlite3\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            conf.join("jail.conf"),
            format!(
                "[INCLUDES]\nbefore = paths-debian.conf\n[DEFAULT]\nbackend = polling\n\
                 [sshd]\nenabled = true\nfilter = sshd\nlogpath = {}/auth.log\n\
                 action = {}\nmaxretry = 2\nfindtime = 600\nbantime = 900\n",
                d.display(),
                r#use
            ),
        )
        .unwrap();
        std::fs::write(d.join("auth.log"), "").unwrap();
        Jail { f2b, dir }
    }

    fn program(&self, name: &str, host: &Host) -> Command {
        let mut c = host
            .ns
            .command(self.f2b.join("usr/bin").join(name).to_str().unwrap());
        c.env("PYTHONPATH", self.f2b.join("usr/lib/python3/dist-packages"))
            .env(fwharden::rollback::FORBID_ENV, own_netns())
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .arg("-s")
            .arg(self.dir.path().join("f2b.sock"));
        c
    }

    fn client(&self, host: &Host, args: &[&str]) -> String {
        let out = self
            .program("fail2ban-client", host)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fail2ban-client {args:?}: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    /// Starts the server inside the host's namespace and waits for the jail.
    fn serve(&self, host: &Host) -> Server {
        host.ns.verify().unwrap();
        let server = Server {
            child: self
                .program("fail2ban-server", host)
                .args(["-f", "-x"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || self
                .log()
                .contains("Jail 'sshd' started")),
            "the jail did not start:\n{}",
            self.log()
        );
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("f2b.log")).unwrap_or_default()
    }
}

#[test]
#[ignore = "needs root"]
fn fail2ban_bans_and_unbans_through_fwharden_sets() {
    let test = "fail2ban_bans_and_unbans_through_fwharden_sets";
    needs_root(test);
    let Some(f2b) = fail2ban(test) else { return };
    let host = Host::new("f2b");
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("banned.toml"),
        "[groups]\nadmin = [\"10.99.0.2\"]\n[bans]\nenabled = true\nexempt = [\"admin\"]\n\
         [[rule]]\nallow = \"ssh\"\n",
    )
    .unwrap();
    host.confirm_from(profiles.path(), "banned");

    let fwharden = Path::new(env!("CARGO_BIN_EXE_fwharden"));
    let jail = Jail::new(
        f2b,
        "fwharden.conf",
        &format!("fwharden[fwharden=\"{}\"]", fwharden.display()),
    );
    let _server = jail.serve(&host);

    jail.client(&host, &["set", "sshd", "banip", "203.0.113.5"]);
    assert!(
        wait_until(Duration::from_secs(10), || host
            .ban_of("203.0.113.5")
            .is_some()),
        "banip did not reach fwharden's set:\n{}",
        jail.log()
    );
    let ban = host.ban_of("203.0.113.5").unwrap();
    assert_eq!(ban["set"], "ban_v4");
    assert_eq!(ban["timeout_secs"], 900, "fail2ban's bantime");

    // Failed logins in the log the jail watches.
    // Stamped now: fail2ban ignores lines older than findtime.
    let now = Command::new("date")
        .arg("+%b %e %H:%M:%S")
        .output()
        .unwrap();
    let now = stdout(&now).trim().to_string();
    let lines: String = (1..=3)
        .map(|i| format!("{now} host sshd[100{i}]: Failed password for root from 203.0.113.6 port 4000{i} ssh2\n"))
        .collect();
    std::fs::write(jail.dir.path().join("auth.log"), lines).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || host
            .ban_of("203.0.113.6")
            .is_some()),
        "the failed logins did not get 203.0.113.6 banned:\n{}",
        jail.log()
    );

    jail.client(&host, &["set", "sshd", "unbanip", "203.0.113.5"]);
    assert!(
        wait_until(Duration::from_secs(10), || host
            .ban_of("203.0.113.5")
            .is_none()),
        "unbanip did not take it out"
    );
    assert!(host.ban_of("203.0.113.6").is_some());

    // The exempt admin: fwharden refuses, fail2ban logs it.
    jail.client(&host, &["set", "sshd", "banip", "10.99.0.2"]);
    assert!(
        wait_until(Duration::from_secs(10), || jail
            .log()
            .contains("exempts from bans")),
        "fail2ban did not log the refusal:\n{}",
        jail.log()
    );
    assert!(host.ban_of("10.99.0.2").is_none());
    // The refusal is one failed action: the jail goes on banning.
    jail.client(&host, &["set", "sshd", "banip", "203.0.113.8"]);
    assert!(
        wait_until(Duration::from_secs(10), || host
            .ban_of("203.0.113.8")
            .is_some()),
        "no ban after a refusal:\n{}",
        jail.log()
    );
    jail.client(&host, &["stop"]);
    host.wait_quiet();
}

/// contrib/fail2ban/action.d/fwharden-ipset.conf with the files of
/// `fwharden emit --format iptables` loaded (no nftables apply): banip puts
/// the address into fwharden-ban_v4 or fwharden-ban_v6 with fail2ban's
/// bantime as its timeout, failed logins too, and unbanip takes it out.
#[test]
#[ignore = "needs root"]
fn fail2ban_bans_into_the_emitted_ipsets() {
    let test = "fail2ban_bans_into_the_emitted_ipsets";
    needs_root(test);
    let Some(f2b) = fail2ban(test) else { return };
    let host = Host::new("f2bip");
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("banned.toml"),
        "[bans]\nenabled = true\n[[rule]]\nallow = \"ssh\"\n",
    )
    .unwrap();
    let _files = host.load_emitted(profiles.path(), "banned");

    let jail = Jail::new(f2b, "fwharden-ipset.conf", "fwharden-ipset");
    let _server = jail.serve(&host);
    jail.client(&host, &["set", "sshd", "banip", "203.0.113.5"]);
    jail.client(&host, &["set", "sshd", "banip", "2001:db8::5"]);
    assert!(
        wait_until(Duration::from_secs(10), || host
            .ipset_timeout("fwharden-ban_v6", "2001:db8::5")
            .is_some()),
        "banip of an IPv6 address did not reach fwharden-ban_v6:\n{}",
        jail.log()
    );
    let left = host.ipset_timeout("fwharden-ban_v4", "203.0.113.5");
    assert!(
        left.is_some_and(|t| (800..=900).contains(&t)),
        "fail2ban's bantime (900 s) as the ban's timeout: {left:?}\n{}",
        jail.log()
    );

    let now = Command::new("date")
        .arg("+%b %e %H:%M:%S")
        .output()
        .unwrap();
    let now = stdout(&now).trim().to_string();
    let lines: String = (1..=3)
        .map(|i| format!("{now} host sshd[100{i}]: Failed password for root from 203.0.113.6 port 4000{i} ssh2\n"))
        .collect();
    std::fs::write(jail.dir.path().join("auth.log"), lines).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || host
            .ipset_timeout("fwharden-ban_v4", "203.0.113.6")
            .is_some()),
        "the failed logins did not get 203.0.113.6 banned:\n{}",
        jail.log()
    );

    jail.client(&host, &["set", "sshd", "unbanip", "203.0.113.5"]);
    assert!(
        wait_until(Duration::from_secs(10), || host
            .ipset_timeout("fwharden-ban_v4", "203.0.113.5")
            .is_none()),
        "unbanip did not take it out:\n{}",
        jail.log()
    );
    jail.client(&host, &["stop"]);
    host.wait_quiet();
}
