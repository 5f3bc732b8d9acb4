//! The safety net of `ufw.sh` and `reload.sh` (src/emit/safety.rs), with
//! the real ufw over temporary copies of its files
//! ([`common::ufw::UfwSandbox`]) inside namespaces the tests create:
//! - unconfirmed, each puts back ufw's files byte for byte (every file of
//!   the sandbox's /etc/ufw and /etc/default/ufw) and the live rules
//!   (`iptables-save` and `ip6tables-save`, comments stripped), though the
//!   process group that ran it was killed right after the load;
//! - confirmed, the new rules and files stay;
//! - the lockout check refuses, with exit 4 and nothing changed, a profile
//!   that allows SSH on wg0 only for a client on eth0 (wireguard-gateway's
//!   case), and, for ufw.sh only, a ufw rule the host already has that
//!   drops the client ahead of the profile's rules (reload.sh replaces it).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::ufw::{have_ufw, host_ufw_files, UfwSandbox};
use common::*;
use fwharden::emit::ufw;
use fwharden::netns::Netns;

fn interlock() {
    std::env::set_var(fwharden::rollback::FORBID_ENV, own_netns());
}

/// SSH and HTTPS from anywhere.
const OPEN: &str = "[defaults]\ncontainers = \"ignore\"\n[[rule]]\nallow = [\"ssh\", \"https\"]\n";

/// SSH on wg0 only, from the tunnel, as wireguard-gateway has it.
const TUNNEL: &str = "[defaults]\ncontainers = \"ignore\"\n[groups]\ntunnel = [\"10.0.0.0/24\"]\n[[rule]]\nallow = \"ssh\"\nfrom = \"tunnel\"\ninterface = \"wg0\"\n";

/// A host: a namespace with eth0 (10.1.1.1), a ufw sandbox running with
/// one rule of the operator's, the emitted files, a private TMPDIR. Its
/// restorers are killed when it is dropped.
struct UfwHost {
    tmp: tempfile::TempDir,
    files: tempfile::TempDir,
    sandbox: UfwSandbox,
    ns: Netns,
}

impl Drop for UfwHost {
    fn drop(&mut self) {
        kill_all_naming(&self.tmp.path().to_string_lossy());
    }
}

impl UfwHost {
    fn new(tag: &str, operator_rule: &str) -> UfwHost {
        let files = tempfile::tempdir().unwrap();
        let profiles = files.path().join("profiles");
        std::fs::create_dir(&profiles).unwrap();
        for (name, text) in [("open", OPEN), ("tunnel", TUNNEL)] {
            std::fs::write(profiles.join(format!("{name}.toml")), text).unwrap();
            let out = fwharden()
                .args(["--profile-dir", profiles.to_str().unwrap(), "emit", name])
                .args(["--format", "ufw", "--approximate", "--output"])
                .arg(files.path().join(name))
                .output()
                .unwrap();
            assert!(out.status.success(), "emit {name}: {}", stderr(&out));
        }
        let ns = Netns::create(tag).unwrap();
        ns.run(&["ip", "link", "set", "lo", "up"]).unwrap();
        ns.run(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ])
        .unwrap();
        ns.run(&["ip", "addr", "add", "10.1.1.1/24", "dev", "eth0"])
            .unwrap();
        ns.run(&["ip", "link", "set", "eth0", "up"]).unwrap();
        let tmp = tempfile::Builder::new()
            .prefix("fwharden-rbu-test-")
            .tempdir()
            .unwrap();
        let host = UfwHost {
            tmp,
            files,
            sandbox: UfwSandbox::new(),
            ns,
        };
        let out = host.sh(&format!("ufw --force enable && ufw {operator_rule}"));
        assert!(out.status.success(), "{}", stderr(&out));
        host
    }

    /// `sh -c TEXT` over the sandbox, inside the namespace, with the
    /// private TMPDIR and none of the SSH variables of whoever runs the
    /// tests.
    fn sh(&self, text: &str) -> Output {
        self.ns.verify().unwrap();
        let full = format!(
            "unset SSH_CONNECTION SSH_CLIENT FWHARDEN_ROLLBACK_TIMEOUT\nexport TMPDIR='{}'\n{text}",
            self.tmp.path().display()
        );
        self.ns.run_in(|| self.sandbox.run(&full)).unwrap()
    }

    fn script(&self, profile: &str, form: &str) -> PathBuf {
        self.files.path().join(profile).join(form)
    }

    /// Every file of the sandbox's /etc/ufw and its /etc/default/ufw.
    fn files_now(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.sandbox.etc()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let default = self.sandbox.default_file();
        out.insert(default.clone(), std::fs::read(&default).unwrap());
        out
    }

    /// The live rules of both families, comments stripped.
    fn live(&self) -> String {
        let out = self.sh("iptables-save; ip6tables-save");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn state(&self) -> (BTreeMap<PathBuf, Vec<u8>>, String) {
        (self.files_now(), self.live())
    }

    fn rollback_dir(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("fwharden-rollback.")
            })
    }
}

fn changed_files(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<PathBuf> {
    let mut keys: Vec<&PathBuf> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

fn printed_dir(out: &Output) -> PathBuf {
    let text = stdout(out);
    text.lines()
        .find_map(|l| {
            l.trim()
                .split_once(" --confirm ")
                .map(|(_, d)| PathBuf::from(d))
        })
        .unwrap_or_else(|| panic!("no --confirm line in:\n{text}\n{}", stderr(out)))
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
#[ignore = "needs root"]
fn an_unconfirmed_ufw_script_puts_ufw_back_byte_for_byte_though_its_session_died() {
    let test = "an_unconfirmed_ufw_script_puts_ufw_back_byte_for_byte_though_its_session_died";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    interlock();
    let host_before = (host_tables(), host_ufw_files());
    for form in [ufw::SCRIPT, ufw::RELOAD] {
        let h = UfwHost::new("rbufw", "allow 8080/tcp comment operator");
        let before = h.state();
        // Load, then kill the whole process group that ran it (`kill -9 0`
        // reaches the shell, unshare and timeout around it), as a logout
        // or a dropped connection would.
        let script = h.script("open", form);
        let out = h.sh(&format!(
            "sh '{}' --timeout 2 & wait $!\necho \"loaded $?\"\nkill -9 0",
            script.display()
        ));
        assert!(
            stdout(&out).contains("loaded 0"),
            "{form}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let dir = h.rollback_dir().expect("a rollback directory");
        let mut last = (BTreeMap::new(), String::new());
        let back = wait_until(Duration::from_secs(120), || {
            last = h.state();
            last == before
        });
        assert!(
            back,
            "{form}: not put back; files differing: {:?}\nlive now:\n{}\nbefore:\n{}\nlog: {}",
            changed_files(&last.0, &before.0),
            last.1,
            before.1,
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        assert!(wait_until(Duration::from_secs(30), || dir
            .join("restored")
            .exists()));
        eprintln!("{form}: unconfirmed, ufw's files and live rules are back to the byte");
    }
    assert_eq!(
        (host_tables(), host_ufw_files()),
        host_before,
        "the machine's own firewall or ufw files changed"
    );
}

#[test]
#[ignore = "needs root"]
fn a_confirmed_ufw_script_keeps_the_new_rules() {
    let test = "a_confirmed_ufw_script_keeps_the_new_rules";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    interlock();
    for form in [ufw::SCRIPT, ufw::RELOAD] {
        let h = UfwHost::new("rbufwc", "allow 8080/tcp comment operator");
        let before = h.state();
        let script = h.script("open", form);
        let out = h.sh(&format!("sh '{}' --timeout 600", script.display()));
        assert_eq!(code(&out), Some(0), "{form}: {}", stderr(&out));
        let dir = printed_dir(&out);
        let loaded = h.state();
        assert!(
            !changed_files(&loaded.0, &before.0).is_empty(),
            "{form} changed no file"
        );
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let needle = h.tmp.path().to_string_lossy().into_owned();
        let confirm = h.sh(&format!(
            "sh '{}' --confirm '{}'",
            script.display(),
            dir.display()
        ));
        assert_eq!(code(&confirm), Some(0), "{form}: {}", stderr(&confirm));
        assert!(
            wait_until(Duration::from_secs(30), || !alive_naming(pid, &needle)),
            "{form}: the restorer outlived the confirm"
        );
        assert_eq!(h.state(), loaded, "{form}: the confirmed rules stay");
    }
}

#[test]
#[ignore = "needs root"]
fn the_ufw_lockout_check_refuses_and_changes_nothing() {
    let test = "the_ufw_lockout_check_refuses_and_changes_nothing";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    interlock();
    // The operator already denies 203.0.113.0/24 in ufw.
    let h = UfwHost::new("rbufwl", "deny from 203.0.113.0/24 comment operator");
    let before = h.state();
    let on_eth0 = |client: &str| format!("SSH_CONNECTION='{client} 50000 10.1.1.1 22'");
    let run = |profile: &str, form: &str, env: &str, args: &str| {
        h.sh(&format!(
            "{env} sh '{}' {args}",
            h.script(profile, form).display()
        ))
    };
    // wireguard-gateway's case: SSH on wg0 only, the operator on eth0.
    for form in [ufw::SCRIPT, ufw::RELOAD] {
        let out = run("tunnel", form, &on_eth0("10.0.0.5"), "");
        assert_eq!(
            code(&out),
            Some(4),
            "{form}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("arriving on eth0"),
            "{}",
            stderr(&out)
        );
        assert_eq!(h.state(), before, "{form}: a refusal changes nothing");
        assert!(h.rollback_dir().is_none());
    }
    // The profile lets SSH in from anywhere, but ufw.sh keeps the
    // operator's deny ahead of it: refused. reload.sh replaces it: loaded
    // (then put back at once with --rollback).
    let out = run("open", ufw::SCRIPT, &on_eth0("203.0.113.5"), "");
    assert_eq!(code(&out), Some(4), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("ufw rule kept ahead of the profile"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.state(), before);
    let out = run("open", ufw::RELOAD, &on_eth0("203.0.113.5"), "");
    assert_eq!(code(&out), Some(0), "{}{}", stdout(&out), stderr(&out));
    let dir = printed_dir(&out);
    let back = run(
        "open",
        ufw::RELOAD,
        "",
        &format!("--rollback '{}'", dir.display()),
    );
    assert_eq!(code(&back), Some(0), "{}{}", stdout(&back), stderr(&back));
    assert_eq!(h.state(), before, "--rollback put ufw back");
}
