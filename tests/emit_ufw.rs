//! `fwharden emit --format ufw`, checked by the real ufw. Each run of ufw
//! happens inside a network namespace the test created (a probe replica's
//! target, or a `Netns`) and, inside that, in a private mount namespace
//! where temporary copies of /etc/ufw, /etc/default/ufw and /lib/ufw and an
//! empty /run are bind-mounted over the real paths ([`UfwSandbox`]): no
//! file of the machine changes, and the tests check that with checksums.
//!
//! What is proven:
//! - every shipped profile (with `containers = "ignore"`), loaded by
//!   `ufw.sh` and by `reload.sh` and emitted without `--approximate`,
//!   answers the probe plan as its nftables ruleset does, the per-source
//!   SSH limits' rate sequences included; none is refused;
//! - `reload.sh`'s user.rules are the files ufw itself writes for
//!   `ufw.sh`'s commands, and both forms leave the same iptables rules;
//! - running either script again changes nothing; ufw.sh keeps a rule the
//!   operator added, reload.sh replaces it, as their headers say;
//! - a before.rules holding NAT, or an after.rules that accepts, stops
//!   both before anything changes;
//! - hostile profile text stays inside ufw comments.
//!
//! tests/emit_ufw_files.rs holds the golden files and the refusals.

mod common;

use std::path::Path;

use common::ufw::{
    compiled, have_ufw, host_ufw_files, shipped_ruleset, with_containers, UfwSandbox,
};
use common::*;
use fwharden::emit::{self, ufw, Approximation};
use fwharden::netns::Netns;
use fwharden::probe::{self, replica::Loader};

fn interlock() {
    std::env::set_var(fwharden::rollback::FORBID_ENV, own_netns());
}

/// Writes the emitted files to a fresh directory.
fn written(e: &emit::Emitted) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("fwharden-emit-ufw-")
        .tempdir()
        .unwrap();
    for f in &e.files {
        std::fs::write(dir.path().join(&f.name), &f.text).unwrap();
    }
    dir
}

/// The two forms, by the script that loads each.
const FORMS: [&str; 2] = [ufw::SCRIPT, ufw::RELOAD];

/// A replica loader running one form's script in a fresh sandbox.
fn loader(files: &Path, form: &str) -> Loader {
    let script = files.join(form);
    Loader::Custom {
        what: format!("ufw {form}"),
        load: Box::new(move || UfwSandbox::new().load(&script)),
    }
}

/// The same, on a sandbox whose routed policy stands in for Docker's
/// accept of a published port ([`UfwSandbox::routed_like_docker`]).
fn docker_loader(files: &Path, form: &str) -> Loader {
    let script = files.join(form);
    Loader::Custom {
        what: format!("ufw {form}, routed as by Docker"),
        load: Box::new(move || {
            let sandbox = UfwSandbox::new();
            sandbox.routed_like_docker();
            sandbox.load(&script)
        }),
    }
}

/// Every shipped profile as shipped, published container ports filtered,
/// loaded by each form into a probe replica, sees the verdict table of its
/// nftables ruleset: the host's rows and the published ports' (DNAT'd in
/// the replica, judged by FWHARDEN-CONTAINERS under DOCKER-USER).
#[test]
#[ignore = "needs root"]
fn emitted_ufw_passes_the_probe_plan_of_every_shipped_profile() {
    let test = "emitted_ufw_passes_the_probe_plan_of_every_shipped_profile";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    interlock();
    let host_before = (host_tables(), host_ufw_files());
    let mut refused = Vec::new();
    let mut compared = 0;
    for name in shipped_profiles() {
        let r = with_containers(&root().join("profiles"), &name);
        // Without --approximate: logging is a warning, the SSH limits are
        // hashlimit meters in before.rules.
        let e = match ufw::emit(&r, Approximation::Refuse) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{name}: refused: {e}");
                refused.push(name);
                continue;
            }
        };
        let files = written(&e);
        let nft = probe::prove(&r, probe::TIMEOUT).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(nft.passed, "{name} as nftables:\n{}", nft.table());
        for form in FORMS {
            let report = probe::prove_with(&r, docker_loader(files.path(), form), probe::TIMEOUT)
                .unwrap_or_else(|e| panic!("{name} ({form}): {e}"));
            let rows = |r: &probe::Report| -> Vec<String> {
                r.rows
                    .iter()
                    .map(|row| {
                        format!(
                            "{} {} {} {:?} {:?}",
                            row.source, row.interface, row.service, row.to, row.got
                        )
                    })
                    .collect()
            };
            assert!(
                report.passed,
                "{name} loaded by {form}:\n{}",
                report.table()
            );
            assert!(
                report
                    .rows
                    .iter()
                    .any(|row| row.to == probe::Destination::Published),
                "{name}: no published port was probed"
            );
            assert_eq!(rows(&report), rows(&nft), "{name} ({form})");
            eprintln!("{name} ({form}): {} probes as nftables", report.rows.len());
        }
        compared += 1;
    }
    eprintln!(
        "{} shipped profiles: {compared} compared, {} refused by ufw ({})",
        compared + refused.len(),
        refused.len(),
        refused.join(", ")
    );
    // Every shipped profile is ufw's to hold, its per-source SSH limit and
    // its published ports included.
    assert_eq!(
        refused,
        Vec::<String>::new(),
        "shipped profiles refused by ufw"
    );
    assert_eq!(
        (host_tables(), host_ufw_files()),
        host_before,
        "the machine's own ruleset or ufw files changed"
    );
}

/// The text between two marker lines of a user.rules file.
fn section(text: &str, from: &str, to: &str) -> String {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("no {from} in\n{text}"));
    let end = text
        .find(to)
        .unwrap_or_else(|| panic!("no {to} in\n{text}"));
    text[start..end].to_string()
}

/// The filter table of the calling thread's namespace, without counters.
fn rules_now(sandbox: &UfwSandbox) -> String {
    let out = sandbox.run("iptables-save -t filter; ip6tables-save -t filter");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once(" [") {
            Some((chain, _)) if l.starts_with(':') => format!("{chain}\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// What ufw itself writes for ufw.sh's commands is reload.sh's user.rules;
/// both forms leave the same iptables rules; each runs again unchanged.
#[test]
#[ignore = "needs root"]
fn both_forms_agree_with_what_ufw_writes_and_run_again_unchanged() {
    let test = "both_forms_agree_with_what_ufw_writes_and_run_again_unchanged";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    interlock();
    let host_before = (host_tables(), host_ufw_files());
    // Every kind of user rule: ports and ranges of both protocols, an
    // interface wildcard, deny and reject, IPv4 and IPv6 sources, logging.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kinds.toml"),
        r#"
[defaults]
containers = "ignore"
[groups]
office = ["192.0.2.0/28", "2001:db8:5::/48"]
bad = ["198.51.100.66"]
[services]
game = { port = ["27015", "27020-27030"], proto = "both" }
[[rule]]
deny = "all"
from = "bad"
[[rule]]
reject = "smtp"
[[rule]]
allow = ["ssh", "https"]
from = "office"
log = true
[[rule]]
allow = "game"
interface = "wg*"
[[rule]]
allow = "dns"
family = "ipv6"
"#,
    )
    .unwrap();
    let r = compiled(dir.path(), "kinds");
    let e = ufw::emit(&r, Approximation::Stricter).unwrap();
    let files = written(&e);
    let mut after = Vec::new();
    for form in FORMS {
        let ns = Netns::create("emitufw").unwrap();
        let sandbox = UfwSandbox::new();
        let script = files.path().join(form);
        ns.run_in(|| sandbox.load(&script))
            .unwrap()
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        let first = ns.run_in(|| rules_now(&sandbox)).unwrap();
        let user = std::fs::read_to_string(sandbox.etc().join("user.rules")).unwrap();
        let user6 = std::fs::read_to_string(sandbox.etc().join("user6.rules")).unwrap();
        ns.run_in(|| sandbox.load(&script))
            .unwrap()
            .unwrap_or_else(|e| panic!("{form}, again: {e}"));
        assert_eq!(
            ns.run_in(|| rules_now(&sandbox)).unwrap(),
            first,
            "{form} run again"
        );
        assert_eq!(
            std::fs::read_to_string(sandbox.etc().join("user.rules")).unwrap(),
            user,
            "{form} run again"
        );
        for (name, written) in [(ufw::USER_V4, &user), (ufw::USER_V6, &user6)] {
            let ours = &e.file(name).unwrap().text;
            assert_eq!(
                section(written, "### RULES ###", "### END RULES ###"),
                section(ours, "### RULES ###", "### END RULES ###"),
                "{form}: {name} as ufw wrote it, and as emitted"
            );
        }
        after.push(first);
    }
    assert_eq!(after[0], after[1], "ufw.sh and reload.sh leave other rules");
    assert_eq!(
        (host_tables(), host_ufw_files()),
        host_before,
        "the machine's own ruleset or ufw files changed"
    );
}

/// A profile whose texts try every way out of a quoted word, a line or a
/// command.
const HOSTILE: &str = r#"
description = "x' ; touch /tmp/fwh-ufw-pwned\n$(touch /tmp/fwh-ufw-pwned) `touch /tmp/fwh-ufw-pwned`"

[defaults]
containers = "ignore"
log_drops = false

[groups]
admins = ["192.0.2.10"]

[[rule]]
allow = "ssh"
from = "admins"
comment = "' ; ufw allow 1:65535/tcp ; '\n\"$(touch /tmp/fwh-ufw-pwned)\" `id` \\"

[[rule]]
allow = "https"
comment = "--dry-run --force"
"#;

/// [`HOSTILE`] emitted for ufw.
fn hostile_emitted() -> fwharden::emit::Emitted {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostile.toml"), HOSTILE).unwrap();
    let r = compiled(dir.path(), "hostile");
    ufw::emit(&r, Approximation::Refuse).unwrap()
}

#[test]
fn hostile_profile_text_stays_inside_its_comments() {
    let e = hostile_emitted();
    let script = &e.file(ufw::SCRIPT).unwrap().text;
    let commands: Vec<&str> = script
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("ufw allow"))
        .collect();
    assert_eq!(
        commands,
        [
            "ufw allow proto tcp from 192.0.2.10 to any port 22 comment 'hostile.toml:11 _ _ ufw allow 1:65535/tcp _ _ ___touch /tmp/fwh-ufw-pwned__ _id_ _'",
            "ufw allow proto tcp from any to any port 443 comment 'hostile.toml:16 --dry-run --force'",
        ],
        "{script}"
    );
    // Profile text in the headers: the profile's name, approximations.
    for f in &e.files {
        let header = |l: &&str| l.starts_with("# fwharden") || l.starts_with("# APPROXIMATED");
        for line in f.text.lines().filter(header) {
            for bad in ['\'', '`', '$', ';', '"', '\\'] {
                assert!(!line.contains(bad), "{}: {bad:?} in {line}", f.name);
            }
        }
    }
}

/// The files of [`hostile_profile_text_stays_inside_its_comments`], run by
/// the real ufw, run nothing the profile's texts hold.
#[test]
#[ignore = "needs root"]
fn hostile_profile_text_runs_nothing_through_the_real_ufw() {
    let test = "hostile_profile_text_runs_nothing_through_the_real_ufw";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    let e = hostile_emitted();
    interlock();
    let host_before = (host_tables(), host_ufw_files());
    let _ = std::fs::remove_file("/tmp/fwh-ufw-pwned");
    let files = written(&e);
    let ns = Netns::create("emitufwhostile").unwrap();
    let sandbox = UfwSandbox::new();
    let path = files.path().join(ufw::SCRIPT);
    ns.run_in(|| sandbox.load(&path))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let listed = ns
        .run_in(|| stdout(&sandbox.run("ufw status; iptables -S ufw-user-input")))
        .unwrap();
    assert!(
        listed.contains("# hostile.toml:16 --dry-run --force"),
        "{listed}"
    );
    // Two rules, no `1:65535/tcp`.
    let user: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("-A ufw-user-input"))
        .collect();
    assert_eq!(
        user,
        [
            "-A ufw-user-input -s 192.0.2.10/32 -p tcp -m tcp --dport 22 -j ACCEPT",
            "-A ufw-user-input -p tcp -m tcp --dport 443 -j ACCEPT",
        ],
        "{listed}"
    );
    assert!(
        !Path::new("/tmp/fwh-ufw-pwned").exists(),
        "a comment ran a command"
    );
    assert_eq!(
        (host_tables(), host_ufw_files()),
        host_before,
        "the machine's own ruleset or ufw files changed"
    );
}

/// The replica really holds what ufw loaded: without the user rules, the
/// probes of open ports see them closed.
#[test]
#[ignore = "needs root"]
fn a_broken_emitted_file_fails_the_probe() {
    let test = "a_broken_emitted_file_fails_the_probe";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    interlock();
    let r = shipped_ruleset("wireguard-gateway");
    let mut e = ufw::emit(&r, Approximation::Stricter).unwrap();
    for f in &mut e.files {
        if f.name == ufw::SCRIPT {
            f.text = f
                .text
                .lines()
                .filter(|l| !l.trim_start().starts_with("ufw allow"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
    }
    let files = written(&e);
    let report = probe::prove_with(&r, loader(files.path(), ufw::SCRIPT), probe::TIMEOUT).unwrap();
    assert!(!report.passed, "{}", report.table());
}

/// Both scripts stop before changing anything, and say why, where ufw's
/// own files would make them drop or open what they should not: a
/// before.rules holding NAT (a VPN gateway's masquerade) would lose it, and
/// an accept in after.rules would let through what the profile drops.
#[test]
#[ignore = "needs root"]
fn ufw_files_the_scripts_cannot_honour_stop_them() {
    let test = "ufw_files_the_scripts_cannot_honour_stop_them";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    interlock();
    let e = ufw::emit(
        &shipped_ruleset("wireguard-gateway"),
        Approximation::Stricter,
    )
    .unwrap();
    let files = written(&e);
    let ns = Netns::create("emitufwstop").unwrap();
    let cases = [
        (
            "before.rules",
            "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.0.0.0/24 -j MASQUERADE\nCOMMIT\n",
            "table other than *filter",
        ),
        (
            "after.rules",
            "*filter\n-A ufw-after-input -p tcp --dport 9999 -j ACCEPT\nCOMMIT\n",
            "accepts packets after the ufw rules",
        ),
    ];
    for (file, added, why) in cases {
        for form in FORMS {
            let sandbox = UfwSandbox::new();
            let path = sandbox.etc().join(file);
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str(added);
            std::fs::write(&path, &text).unwrap();
            let before = std::fs::read_to_string(sandbox.etc().join("before.rules")).unwrap();
            let user = std::fs::read_to_string(sandbox.etc().join("user.rules")).unwrap();
            let script = files.path().join(form);
            let err = ns
                .run_in(|| sandbox.load(&script))
                .unwrap()
                .expect_err("the script went on");
            assert!(err.contains(why), "{file}, {form}: {err}");
            assert_eq!(
                std::fs::read_to_string(sandbox.etc().join("before.rules")).unwrap(),
                before,
                "{file}, {form}"
            );
            assert_eq!(
                std::fs::read_to_string(sandbox.etc().join("user.rules")).unwrap(),
                user,
                "{file}, {form}"
            );
        }
    }
}

/// What each script's header promises: ufw.sh keeps a rule the operator
/// added to ufw before (it adds, never deletes), reload.sh replaces it.
#[test]
#[ignore = "needs root"]
fn ufw_sh_keeps_the_operators_rules_and_reload_sh_replaces_them() {
    let test = "ufw_sh_keeps_the_operators_rules_and_reload_sh_replaces_them";
    needs_root(test);
    if !have_ufw(test) {
        return;
    }
    interlock();
    let host_before = (host_tables(), host_ufw_files());
    let e = ufw::emit(
        &shipped_ruleset("wireguard-gateway"),
        Approximation::Stricter,
    )
    .unwrap();
    let files = written(&e);
    for (form, kept) in [(ufw::SCRIPT, true), (ufw::RELOAD, false)] {
        let ns = Netns::create("emitufwown").unwrap();
        let sandbox = UfwSandbox::new();
        let script = files.path().join(form);
        let status = ns
            .run_in(|| {
                let own = sandbox.run("ufw --force enable && ufw allow 8080/tcp comment operator");
                assert!(own.status.success(), "{}", stderr(&own));
                sandbox
                    .load(&script)
                    .unwrap_or_else(|e| panic!("{form}: {e}"));
                stdout(&sandbox.run("ufw status"))
            })
            .unwrap();
        assert_eq!(status.contains("8080/tcp"), kept, "{form}:\n{status}");
        assert!(status.contains("51820/udp"), "{form}:\n{status}");
    }
    assert_eq!(
        (host_tables(), host_ufw_files()),
        host_before,
        "the machine's own ruleset or ufw files changed"
    );
}
