//! A test host for the emitted scripts' safety net (tests/emit_rollback.rs,
//! tests/emit_lockout.rs): a namespace, the emitted files of a few
//! profiles, and a private TMPDIR for the rollback directories. Included
//! with `#[path]` by the tests that use it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use fwharden::netns::Netns;

/// The rules before: groups (ipsets), bans with the admin group exempt,
/// SSH from the admin group, the web.
pub const BEFORE: &str = r#"
[groups]
admin = ["192.0.2.0/24", "2001:db8:1::/64"]
[bans]
enabled = true
exempt = ["admin"]
[[rule]]
allow = "ssh"
from = "admin"
[[rule]]
allow = "https"
"#;

/// The rules loaded: another admin group (so other exempt sets too), a
/// group the rules before did not have, SSH from admin only. Loaded over
/// `BEFORE`, its ban sets exist already (and keep their bans); into an
/// empty host, it creates them.
pub const AFTER: &str = r#"
[groups]
admin = ["198.51.100.0/24"]
office = ["203.0.113.128/25"]
[bans]
enabled = true
exempt = ["admin"]
[[rule]]
allow = "ssh"
from = "admin"
[[rule]]
allow = "imaps"
from = "office"
"#;

/// SSH on wg0 only, as wireguard-gateway has it.
pub const TUNNEL_ONLY: &str = r#"
[groups]
tunnel = ["10.0.0.0/24"]
[[rule]]
allow = "ssh"
from = "tunnel"
interface = "wg0"
"#;

/// The iptables binaries of one backend, as load.sh takes them.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    pub fn bins(self) -> (&'static str, &'static str) {
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
pub struct EmitHost {
    pub tmp: tempfile::TempDir,
    pub files: tempfile::TempDir,
    pub ns: Netns,
    pub backend: Backend,
}

impl Drop for EmitHost {
    fn drop(&mut self) {
        kill_all_naming(&self.tmp.path().to_string_lossy());
    }
}

impl EmitHost {
    pub fn new(tag: &str, backend: Backend) -> EmitHost {
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
        EmitHost {
            tmp,
            files,
            ns,
            backend,
        }
    }

    pub fn script(&self, profile: &str) -> PathBuf {
        self.files.path().join(profile).join("load.sh")
    }

    /// `sh load.sh ARGS` of `profile` inside, with `env` added to a
    /// harness environment (no SSH variables of whoever runs the tests).
    pub fn command(&self, profile: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
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

    pub fn load(&self, profile: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(profile, args, env).output().unwrap()
    }

    pub fn expect(&self, code: i32, profile: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
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
    pub fn state(&self) -> String {
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
    pub fn rollback_dirs(&self) -> Vec<PathBuf> {
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
    pub fn only_rollback_dir(&self) -> PathBuf {
        let dirs = self.rollback_dirs();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs[0].clone()
    }

    /// Waits (generously) until the state is `want`; fails with the diff.
    pub fn wait_for_state(&self, want: &str, what: &str) {
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

    pub fn logs(&self) -> String {
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
    pub fn previous_rules(&self) {
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
pub fn printed_dir(out: &Output) -> PathBuf {
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

pub fn alive(pid: i32, needle: &str) -> bool {
    alive_naming(pid, needle)
}

pub fn restorer_pid(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
