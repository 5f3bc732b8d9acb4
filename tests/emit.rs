//! `fwharden emit --format iptables`: golden files for every shipped
//! profile, the real iptables-restore, ip6tables-restore and ipset accept
//! the output (both iptables backends), and the probe replica, loaded with
//! the emitted files instead of the nftables ruleset, sees every probe of
//! the plan answered as the model says: the same verdict table as the
//! nftables ruleset (which tests/probe.rs proves with the same plan).
//! Regenerate the golden files with FWHARDEN_BLESS=1 and review the diff.

mod common;

use std::path::Path;

use common::*;
use fwharden::emit::{self, Approximation, EmitError};
use fwharden::netns::Netns;
use fwharden::probe::{self, replica::Loader};
use fwharden::profile::{load, SearchPath};
use fwharden::ruleset::Ruleset;

fn compiled(dir: &Path, name: &str) -> Ruleset {
    let search = SearchPath::only(vec![dir.to_path_buf()]);
    let loaded = load(name, &search);
    let diags: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    fwharden::compile::compile(
        &loaded
            .profile
            .unwrap_or_else(|| panic!("{name} is not valid: {diags:?}")),
    )
}

/// The containers chain goes under DOCKER-USER, an accept there is a
/// RETURN (Docker's chains still decide), a DNAT'd connection is matched by
/// its original port, one range a rule, and the catch-all drop ends it.
#[test]
fn published_ports_are_filtered_in_docker_user_by_their_original_port() {
    let e = ranges_emitted();
    let v4 = &e.file(emit::IPV4_FILE).unwrap().text;
    let containers: Vec<&str> = v4
        .lines()
        .filter(|l| l.starts_with("-A FWHARDEN-CONTAINERS"))
        .collect();
    assert_eq!(
        containers,
        [
            "-A FWHARDEN-CONTAINERS -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment \"defaults: containers: established\" -j RETURN",
            "-A FWHARDEN-CONTAINERS -m conntrack --ctstate DNAT -m set --match-set fwh-wg_v4 src -p tcp -m conntrack --ctorigdstport 6379 -m comment --comment \"ranges.toml:3 allow redis from wg\" -j RETURN",
            // Log and pass: two lines with the same matches, not a chain of
            // its own (a RETURN there would not leave this chain).
            "-A FWHARDEN-CONTAINERS -m conntrack --ctstate DNAT -p tcp -m conntrack --ctorigdstport 8000:8010 -m comment --comment \"ranges.toml:6 allow 8000-8010/tcp\" -j LOG --log-prefix \"fwh ranges: \" --log-level 6",
            "-A FWHARDEN-CONTAINERS -m conntrack --ctstate DNAT -p tcp -m conntrack --ctorigdstport 8000:8010 -m comment --comment \"ranges.toml:6 allow 8000-8010/tcp\" -j RETURN",
            "-A FWHARDEN-CONTAINERS -m conntrack --ctstate DNAT -m comment --comment \"defaults: containers: published port no rule allows\" -j DROP",
        ],
        "{v4}"
    );
    let load = &e.file(emit::LOAD_SCRIPT).unwrap().text;
    for line in [
        "if \"$IPTABLES\" -w 10 -C FORWARD -j DOCKER-USER 2>/dev/null; then",
        "  printf '*filter\\n-D FORWARD -j DOCKER-USER\\n-I FORWARD 1 -j DOCKER-USER\\nCOMMIT\\n' | \"$IPTABLES-restore\" -w 10 --noflush",
        "  \"$IPTABLES\" -w 10 -I FORWARD 1 -j DOCKER-USER",
        "\"$IPTABLES\" -w 10 -C DOCKER-USER -j FWHARDEN-CONTAINERS 2>/dev/null || \"$IPTABLES\" -w 10 -I DOCKER-USER 1 -j FWHARDEN-CONTAINERS",
    ] {
        // Inside load.sh's load_rules function: indented.
        assert!(load.lines().any(|l| l.trim() == line.trim()), "{line}\n{load}");
    }
    assert!(
        !v4.contains(":DOCKER-USER"),
        "declaring DOCKER-USER would empty the operator's rules in it"
    );
}

/// The iptables files of a profile with a port range, a log and a group.
fn ranges_emitted() -> emit::Emitted {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ranges.toml"),
        "[groups]\nwg = [\"10.8.0.0/24\"]\n[[rule]]\nallow = \"redis\"\nfrom = \"wg\"\n\
         [[rule]]\nallow = \"8000-8010/tcp\"\nlog = \"fwh ranges: \"\n",
    )
    .unwrap();
    emit::iptables(&compiled(dir.path(), "ranges"), Approximation::Refuse).unwrap()
}

/// The kernel takes the containers chain of
/// [`published_ports_are_filtered_in_docker_user_by_their_original_port`],
/// ranges included, with both backends, and a load again puts the jump to
/// DOCKER-USER back at the head of FORWARD.
#[test]
#[ignore = "needs root"]
fn the_containers_chain_loads_with_both_backends_and_keeps_docker_user_first() {
    needs_root("the_containers_chain_loads_with_both_backends_and_keeps_docker_user_first");
    let e = ranges_emitted();
    let containers = e
        .file(emit::IPV4_FILE)
        .unwrap()
        .text
        .lines()
        .filter(|l| l.starts_with("-A FWHARDEN-CONTAINERS"))
        .count();
    interlock();
    let files = written(&e);
    for backend in [Backend::Nft, Backend::Legacy] {
        let ns = Netns::create("emitdock").unwrap();
        let path = files.path().to_path_buf();
        ns.run_in(|| run_load_sh(&path, backend))
            .unwrap()
            .unwrap_or_else(|err| panic!("{backend:?}: {err}"));
        let listed = ns
            .run(&[backend.env()[0].1, "-w", "10", "-S", "FWHARDEN-CONTAINERS"])
            .map(|o| stdout(&o))
            .unwrap();
        // iptables -S orders the matches its own way: count, and look
        // for the range.
        assert_eq!(
            listed.lines().skip(1).count(),
            containers,
            "{backend:?}:\n{listed}"
        );
        assert!(
            listed.contains(
                "-p tcp -m conntrack --ctstate DNAT -m conntrack --ctorigdstport 8000:8010"
            ),
            "{backend:?}:\n{listed}"
        );
        // A rule inserted above the jump to DOCKER-USER, as dockerd 20.10
        // does in ip6tables: loading again moves the jump back to the head
        // of FORWARD, once, in each family.
        for bin in backend.env().map(|(_, b)| b) {
            ns.run(&[
                bin, "-w", "10", "-I", "FORWARD", "1", "-o", "docker0", "-j", "ACCEPT",
            ])
            .unwrap();
        }
        ns.run_in(|| run_load_sh(&path, backend))
            .unwrap()
            .unwrap_or_else(|err| panic!("{backend:?}, loaded again: {err}"));
        for bin in backend.env().map(|(_, b)| b) {
            let forward = ns
                .run(&[bin, "-w", "10", "-S", "FORWARD"])
                .map(|o| stdout(&o))
                .unwrap();
            let jumps: Vec<usize> = forward
                .lines()
                .enumerate()
                .filter(|(_, l)| *l == "-A FORWARD -j DOCKER-USER")
                .map(|(i, _)| i)
                .collect();
            assert_eq!(jumps, [1], "{bin}:\n{forward}");
        }
    }
}

fn shipped_ruleset(name: &str) -> Ruleset {
    compiled(&root().join("profiles"), name)
}

/// Every file of an emit, one after the other, as the golden file holds them.
fn joined(e: &emit::Emitted) -> String {
    e.files
        .iter()
        .map(|f| format!("==> {} <==\n{}", f.name, f.text))
        .collect()
}

#[test]
fn emit_matches_the_golden_files() {
    let bless = std::env::var("FWHARDEN_BLESS").is_ok();
    for name in shipped_profiles() {
        // Approximated: some shipped log prefixes are longer than LOG
        // takes; the warnings are in the golden headers.
        let e = emit::iptables(&shipped_ruleset(&name), Approximation::Stricter)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let path = root().join(format!("tests/golden/emit/{name}.iptables"));
        if bless {
            std::fs::write(&path, joined(&e)).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing; run with FWHARDEN_BLESS=1", path.display()));
        assert_eq!(
            joined(&e),
            golden,
            "{name}: differs from {}",
            path.display()
        );
    }
}

#[test]
fn emit_nft_is_show() {
    for name in shipped_profiles() {
        let show = shipped(&["show", &name]);
        let emit = shipped(&["emit", &name, "--format", "nft"]);
        assert!(emit.status.success(), "{name}: {}", stderr(&emit));
        assert_eq!(stdout(&emit), stdout(&show), "{name}");
    }
}

#[test]
fn iptables_without_a_directory_is_a_usage_error() {
    let out = shipped(&["emit", "vps-profile", "--format", "iptables"]);
    assert_eq!(
        out.status.code(),
        Some(fwharden::exit::USAGE),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--output DIR"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

/// The iptables binaries of one backend, as load.sh names them.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    fn env(self) -> [(&'static str, &'static str); 2] {
        match self {
            Backend::Nft => [("IPTABLES", "iptables-nft"), ("IP6TABLES", "ip6tables-nft")],
            Backend::Legacy => [
                ("IPTABLES", "iptables-legacy"),
                ("IP6TABLES", "ip6tables-legacy"),
            ],
        }
    }
}

/// Writes the emitted files to a fresh directory.
fn written(e: &emit::Emitted) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("fwharden-emit-")
        .tempdir()
        .unwrap();
    for f in &e.files {
        std::fs::write(dir.path().join(&f.name), &f.text).unwrap();
    }
    dir
}

/// Runs load.sh in the calling thread's network namespace (the replica's
/// loader runs it on a thread inside the target namespace).
fn run_load_sh(dir: &Path, backend: Backend) -> Result<(), String> {
    let out = std::process::Command::new("sh")
        .arg(dir.join(emit::LOAD_SCRIPT))
        // The probe replica is thrown away whole: no rollback timer.
        .arg("--no-rollback")
        .envs(backend.env())
        .output()
        .map_err(|e| format!("running load.sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "load.sh exited with {}: {}",
            out.status,
            stderr(&out)
        ))
    }
}

fn interlock() {
    std::env::set_var(fwharden::rollback::FORBID_ENV, own_netns());
}

/// Every shipped profile and one with bans, emitted, loaded with each
/// backend into a probe replica, passes the same probe plan as its
/// nftables ruleset.
#[test]
#[ignore = "needs root"]
fn emitted_iptables_pass_the_probe_plan_of_every_shipped_profile() {
    needs_root("emitted_iptables_pass_the_probe_plan_of_every_shipped_profile");
    interlock();
    let host_before = host_tables();
    // And a profile with bans: the ban chains come first, with empty ban
    // sets they pass every probe on (the exempt ones with a RETURN).
    let banned = tempfile::tempdir().unwrap();
    std::fs::write(banned.path().join("banned.toml"), BANNED).unwrap();
    let mut profiles: Vec<(String, Ruleset)> = shipped_profiles()
        .into_iter()
        .map(|name| (name.clone(), shipped_ruleset(&name)))
        .collect();
    profiles.push(("banned".into(), compiled(banned.path(), "banned")));
    for backend in [Backend::Nft, Backend::Legacy] {
        for (name, r) in &profiles {
            let dir = written(&emit::iptables(r, Approximation::Stricter).unwrap());
            let path = dir.path().to_path_buf();
            let loader = Loader::Custom {
                what: format!("load.sh ({backend:?} backend)"),
                load: Box::new(move || run_load_sh(&path, backend)),
            };
            let report = probe::prove_with(r, loader, probe::TIMEOUT)
                .unwrap_or_else(|e| panic!("{name} ({backend:?}): {e}"));
            assert!(
                report.passed,
                "{name} ({backend:?}) emitted for iptables:\n{}",
                report.table()
            );
            eprintln!(
                "{name} ({backend:?}): {} probes as the model says",
                report.rows.len()
            );
        }
    }
    assert_eq!(
        host_tables(),
        host_before,
        "the machine's own ruleset changed"
    );
}

/// A profile whose texts try every way out of a quoted string, a line or a
/// shell word.
const HOSTILE: &str = r#"
description = "x\" -j ACCEPT\nCOMMIT\n$(touch /tmp/fwh-pwned) `touch /tmp/fwh-pwned`; rm -rf / #"

[groups]
admins = ["192.0.2.10"]

[[rule]]
allow = "ssh"
from = "admins"
comment = "\" -j ACCEPT\nCOMMIT\n*filter\n-A INPUT -j ACCEPT $(touch /tmp/fwh-pwned) `id` ; -- --log-prefix 'q' \\"

[[rule]]
allow = "https"
comment = "-j ACCEPT"
"#;

#[test]
#[ignore = "needs root"]
fn hostile_profile_text_stays_inside_its_comments() {
    needs_root("hostile_profile_text_stays_inside_its_comments");
    interlock();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostile.toml"), HOSTILE).unwrap();
    let r = compiled(dir.path(), "hostile");
    let e = emit::iptables(&r, Approximation::Refuse).unwrap();
    for f in &e.files {
        for line in f.text.lines() {
            // Profile text reaches only comment lines and quoted comments,
            // and neither can hold a quote, `$`, a backtick or `;`.
            let quotes = line.matches('"').count();
            let fixed = f.name == emit::LOAD_SCRIPT && !line.starts_with('#');
            // The lockout check's table carries the comments as free text.
            let table = ["rule ", "chain ", "net "]
                .iter()
                .any(|t| line.starts_with(t));
            if fixed && table {
                for bad in ['$', '`', ';', '\'', '\\', '"'] {
                    assert!(!line.contains(bad), "{bad:?} in the table: {line}");
                }
            }
            if !fixed {
                assert!(
                    [0, 2, 4].contains(&quotes),
                    "{}: {line}\n{}",
                    f.name,
                    f.text
                );
                for bad in ['$', '`', ';', '\'', '\\'] {
                    assert!(!line.contains(bad), "{}: {bad:?} in {line}", f.name);
                }
            }
            let plain = line.starts_with('#')
                || line.starts_with("-A FWHARDEN-")
                || line.starts_with(":FWHARDEN-")
                || ["*filter", "COMMIT"].contains(&line)
                || f.name == emit::IPSET_FILE
                || fixed;
            assert!(plain, "{}: a line of its own: {line}", f.name);
        }
        assert_eq!(
            f.text.lines().filter(|l| *l == "COMMIT").count(),
            usize::from(f.name.ends_with("tables.rules")),
            "{}:\n{}",
            f.name,
            f.text
        );
    }
    let files = written(&e);
    let _ = std::fs::remove_file("/tmp/fwh-pwned");
    let ns = Netns::create("emithostile").unwrap();
    for backend in [Backend::Nft, Backend::Legacy] {
        let path = files.path().to_path_buf();
        ns.run_in(|| run_load_sh(&path, backend))
            .unwrap()
            .unwrap_or_else(|err| panic!("{backend:?}: {err}"));
        let listed = ns
            .run(&[backend.env()[0].1, "-w", "10", "-S"])
            .map(|o| stdout(&o))
            .unwrap();
        // The jump from INPUT, the chain, its four rules (ssh, https, the
        // defaults) and nothing else: no `-A INPUT -j ACCEPT`.
        let input: Vec<&str> = listed
            .lines()
            .filter(|l| l.starts_with("-A INPUT"))
            .collect();
        assert_eq!(
            input,
            ["-A INPUT -j FWHARDEN-INPUT"],
            "{backend:?}:\n{listed}"
        );
        assert!(
            listed.contains("--comment \"hostile.toml:7 _ -j ACCEPT COMMIT _filter -A INPUT -j ACCEPT __touch /tmp/fwh-pwned_ _id_ _ -- --log-prefix _q_ _\""),
            "{backend:?}:\n{listed}"
        );
        assert!(
            listed.contains("--comment \"hostile.toml:12 -j ACCEPT\" -j ACCEPT"),
            "{backend:?}:\n{listed}"
        );
    }
    assert!(
        !Path::new("/tmp/fwh-pwned").exists(),
        "a comment ran a command"
    );
}

#[test]
fn a_log_prefix_iptables_cannot_hold_is_shortened_with_a_warning_never_refused() {
    let mut r = shipped_ruleset("vps-profile");
    let long = "fwharden a prefix longer than twenty-nine bytes: ";
    for chain in &mut r.chains {
        for rule in &mut chain.rules {
            if let Some(log) = &mut rule.log {
                log.prefix = long.into();
            }
        }
    }
    // Logging decides nothing: the same files with or without --approximate.
    let e = emit::iptables(&r, Approximation::Refuse).unwrap();
    assert_eq!(
        e,
        emit::iptables(&r, Approximation::Stricter).unwrap(),
        "--approximate changed the files"
    );
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    let v4 = &e.file(emit::IPV4_FILE).unwrap().text;
    assert!(v4.contains("# APPROXIMATED: defaults: log drops"), "{v4}");
    // No file:line in the comment: the prefix's first 29 bytes.
    assert!(
        v4.contains("--log-prefix \"fwharden a prefix longer than\""),
        "{v4}"
    );
    // web-server's own SSH prefix is 31 bytes: its profile line is kept.
    let e = emit::iptables(&shipped_ruleset("web-server"), Approximation::Refuse).unwrap();
    let v4 = &e.file(emit::IPV4_FILE).unwrap().text;
    assert!(
        v4.contains("--log-prefix \"fwh web-server.toml:13 \""),
        "{v4}"
    );
    assert!(
        e.warnings
            .iter()
            .any(|w| w.starts_with("web-server.toml:13 ")),
        "{:?}",
        e.warnings
    );
}

#[test]
fn the_escape_hatch_of_a_pending_ruleset_is_refused() {
    let r = shipped_ruleset("vps-profile");
    let addr: std::net::IpAddr = "192.0.2.99".parse().unwrap();
    let hatch = fwharden::ruleset::hatch::Hatch {
        operator: addr,
        port: 22,
        timeout_secs: 60,
    };
    let armed = fwharden::ruleset::hatch::with_hatch(&r, &hatch);
    match emit::iptables(&armed, Approximation::Stricter) {
        Err(EmitError::Refused { why, .. }) => assert!(why.contains("escape hatch"), "{why}"),
        other => panic!("not refused: {other:?}"),
    }
}

/// The replica really holds the emitted files, not the nftables ruleset:
/// without the chain's final drop, the probes of closed ports see them open.
#[test]
#[ignore = "needs root"]
fn a_broken_emitted_file_fails_the_probe() {
    needs_root("a_broken_emitted_file_fails_the_probe");
    interlock();
    let r = shipped_ruleset("ssh-only");
    let mut e = emit::iptables(&r, Approximation::Refuse).unwrap();
    for f in &mut e.files {
        if f.name.ends_with("tables.rules") {
            f.text = f
                .text
                .lines()
                .filter(|l| !l.contains("policy drop"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
    }
    let dir = written(&e);
    let path = dir.path().to_path_buf();
    let loader = Loader::Custom {
        what: "load.sh without the policy".into(),
        load: Box::new(move || run_load_sh(&path, Backend::Nft)),
    };
    let report = probe::prove_with(&r, loader, probe::TIMEOUT).unwrap();
    assert!(!report.passed, "{}", report.table());
    let wrong = report
        .rows
        .iter()
        .filter(|row| row.expected != probe::Outcome::Open && row.status != probe::Status::Match);
    assert!(wrong.count() > 0, "{}", report.table());
}

fn with_interface(name: &str) -> Ruleset {
    let mut r = shipped_ruleset("vps-profile");
    for chain in &mut r.chains {
        for rule in &mut chain.rules {
            for m in &mut rule.matches {
                if let fwharden::ruleset::Match::InInterface(i) = m {
                    if i == "wg0" {
                        *i = name.into();
                    }
                }
            }
        }
    }
    r
}

/// An interface name with shell and restore-file bytes.
const ODD: &str = "-w$(x);#`";

/// An interface name ending in `+` is literal to nftables and a wildcard
/// to iptables: it would match more, so it is refused. A name with shell
/// or restore-file bytes is quoted.
#[test]
fn interface_names_are_quoted_or_refused() {
    match emit::iptables(&with_interface("eth+"), Approximation::Stricter) {
        Err(EmitError::Refused { rule, why, .. }) => {
            assert!(rule.starts_with("vps-profile.toml:30"), "{rule}");
            assert!(why.contains("wildcard"), "{why}");
        }
        other => panic!("not refused: {other:?}"),
    }
    let e = emit::iptables(&with_interface(ODD), Approximation::Refuse).unwrap();
    let v4 = &e.file(emit::IPV4_FILE).unwrap().text;
    assert!(
        v4.contains("-A FWHARDEN-INPUT -i \"-w$(x);#`\" -m set"),
        "{v4}"
    );
}

/// The quoted name of [`interface_names_are_quoted_or_refused`] reaches
/// the kernel as it is, with both backends.
#[test]
#[ignore = "needs root"]
fn a_quoted_interface_name_reaches_the_kernel_as_it_is() {
    needs_root("a_quoted_interface_name_reaches_the_kernel_as_it_is");
    let e = emit::iptables(&with_interface(ODD), Approximation::Refuse).unwrap();
    interlock();
    let files = written(&e);
    let ns = Netns::create("emitiface").unwrap();
    for backend in [Backend::Nft, Backend::Legacy] {
        let path = files.path().to_path_buf();
        ns.run_in(|| run_load_sh(&path, backend))
            .unwrap()
            .unwrap_or_else(|err| panic!("{backend:?}: {err}"));
        let listed = ns
            .run(&[backend.env()[0].1, "-w", "10", "-S", "FWHARDEN-INPUT"])
            .map(|o| stdout(&o))
            .unwrap();
        assert!(listed.contains(ODD), "{backend:?}:\n{listed}");
    }
}

const BANNED: &str = "[groups]\nadmin = [\"10.99.0.2\", \"2001:db8:99::2\"]\n\
    [bans]\nenabled = true\ntimeout = \"10m\"\nexempt = [\"admin\"]\n\
    [[rule]]\nallow = \"ssh\"\n";

/// The ban table: ipsets with the profile's timeout that a reload never
/// empties, chains that pass the exempt sources on and drop the banned,
/// jumped to before fwharden's own chains on INPUT and in DOCKER-USER.
#[test]
fn bans_are_ipsets_with_timeouts_checked_before_everything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("banned.toml"), BANNED).unwrap();
    let e = emit::iptables(&compiled(dir.path(), "banned"), Approximation::Refuse).unwrap();
    let sets = &e.file(emit::IPSET_FILE).unwrap().text;
    for line in [
        "create fwharden-ban_v4 hash:ip family inet timeout 600 maxelem 65536 -exist",
        "create fwharden-ban_v6 hash:ip family inet6 timeout 600 maxelem 65536 -exist",
        "create fwharden-crowdsec_v4 hash:ip family inet timeout 600 maxelem 65536 -exist",
        "create fwharden-crowdsec_v6 hash:ip family inet6 timeout 600 maxelem 65536 -exist",
        "swap fwharden-new-exempt_v4 fwharden-exempt_v4",
    ] {
        assert!(sets.lines().any(|l| l == line), "{line}\n{sets}");
    }
    assert!(
        !sets.contains("flush fwharden-ban") && !sets.contains("swap fwharden-ban"),
        "a reload must keep the bans:\n{sets}"
    );
    let v4 = &e.file(emit::IPV4_FILE).unwrap().text;
    let input: Vec<&str> = v4
        .lines()
        .filter(|l| l.starts_with("-A FWHARDEN-BANS-INPUT"))
        .collect();
    assert_eq!(
        input,
        [
            "-A FWHARDEN-BANS-INPUT -i lo -m comment --comment \"bans: never drop loopback _on to table fwharden_\" -j RETURN",
            "-A FWHARDEN-BANS-INPUT -m set --match-set fwharden-exempt_v4 src -m comment --comment \"bans: never ban admin _on to table fwharden_\" -j RETURN",
            "-A FWHARDEN-BANS-INPUT -m set --match-set fwharden-ban_v4 src -m comment --comment \"bans: drop banned sources\" -j DROP",
            "-A FWHARDEN-BANS-INPUT -m set --match-set fwharden-crowdsec_v4 src -m comment --comment \"bans: drop banned sources\" -j DROP",
        ],
        "{v4}"
    );
    assert!(v4.contains(":FWHARDEN-BANS-FORWARD - [0:0]"), "{v4}");
    let load = &e.file(emit::LOAD_SCRIPT).unwrap().text;
    let jumps: Vec<&str> = load
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("\"$IPTABLES\" -w 10 -C") && !l.contains("-C FORWARD"))
        .map(|l| l.split(" || ").nth(1).unwrap())
        .collect();
    assert_eq!(
        jumps,
        [
            "\"$IPTABLES\" -w 10 -I INPUT 1 -j FWHARDEN-BANS-INPUT",
            "\"$IPTABLES\" -w 10 -I INPUT 2 -j FWHARDEN-INPUT",
            "\"$IPTABLES\" -w 10 -I DOCKER-USER 1 -j FWHARDEN-BANS-FORWARD",
            "\"$IPTABLES\" -w 10 -I DOCKER-USER 2 -j FWHARDEN-CONTAINERS",
        ],
        "{load}"
    );
}

/// ipset cannot time a ban out after more than 2,147,483 s: a longer
/// timeout is refused, not shortened.
#[test]
fn a_ban_timeout_ipset_cannot_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let long = BANNED.replace("\"10m\"", "\"30d\"");
    std::fs::write(dir.path().join("banned.toml"), long).unwrap();
    match emit::iptables(&compiled(dir.path(), "banned"), Approximation::Stricter) {
        Err(EmitError::Refused { why, .. }) => assert!(why.contains("2147483"), "{why}"),
        other => panic!("not refused: {other:?}"),
    }
}

/// Whether a TCP connection from `from` to port 22 of `to` is accepted.
fn connects(from: &Netns, to: &str) -> bool {
    let addr: std::net::SocketAddr = format!("{to}:22").parse().unwrap();
    from.run_in(|| {
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
    })
    .unwrap()
}

/// Real packets through the emitted files: an address put into the ban
/// ipset (as fail2ban's or CrowdSec's ipset actions do) cannot connect, an
/// exempt one can even when banned, a reload keeps the bans, and a ban ends
/// with its timeout or an `ipset del`. The host namespace listens on port
/// 22; the admin (10.99.0.2, exempt) and a stranger (10.98.0.3) are
/// namespaces linked to it only.
#[test]
#[ignore = "needs root"]
fn a_ban_in_the_emitted_ipset_blocks_its_source() {
    needs_root("a_ban_in_the_emitted_ipset_blocks_its_source");
    interlock();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("banned.toml"), BANNED).unwrap();
    let e = emit::iptables(&compiled(dir.path(), "banned"), Approximation::Refuse).unwrap();
    let files = written(&e);
    for backend in [Backend::Nft, Backend::Legacy] {
        let host = Netns::create("embanh").unwrap();
        let admin = Netns::create("embana").unwrap();
        let stranger = Netns::create("embans").unwrap();
        host.link(&admin, &["10.99.0.1/24"], &["10.99.0.2/24"])
            .unwrap();
        host.link(&stranger, &["10.98.0.1/24"], &["10.98.0.3/24"])
            .unwrap();
        let _listener = host
            .run_in(|| std::net::TcpListener::bind("0.0.0.0:22"))
            .unwrap()
            .unwrap();
        let path = files.path().to_path_buf();
        let load = || {
            host.run_in(|| run_load_sh(&path, backend))
                .unwrap()
                .unwrap_or_else(|err| panic!("{backend:?}: {err}"))
        };
        load();
        let ipset = |args: &[&str]| {
            let mut argv = vec!["ipset"];
            argv.extend(args);
            stdout(&host.run(&argv).unwrap())
        };
        assert!(
            connects(&stranger, "10.98.0.1"),
            "{backend:?}: not banned yet"
        );
        ipset(&["add", "fwharden-ban_v4", "10.98.0.3"]);
        ipset(&["add", "fwharden-ban_v4", "10.99.0.2"]);
        assert!(!connects(&stranger, "10.98.0.1"), "{backend:?}: banned");
        assert!(connects(&admin, "10.99.0.1"), "{backend:?}: exempt");
        // Added without a timeout, a ban has the profile's (600 s).
        let listed = ipset(&["list", "fwharden-ban_v4"]);
        let left: u32 = listed
            .lines()
            .find_map(|l| l.strip_prefix("10.98.0.3 timeout "))
            .unwrap_or_else(|| panic!("{listed}"))
            .trim()
            .parse()
            .unwrap();
        assert!((1..=600).contains(&left), "{listed}");
        load();
        assert!(
            !connects(&stranger, "10.98.0.1"),
            "{backend:?}: a reload keeps the bans"
        );
        ipset(&["del", "fwharden-ban_v4", "10.98.0.3"]);
        assert!(connects(&stranger, "10.98.0.1"), "{backend:?}: unbanned");
        // Longer than a connect attempt (2 s, SYNs at 0 and 1 s).
        ipset(&["add", "fwharden-crowdsec_v4", "10.98.0.3", "timeout", "5"]);
        assert!(!connects(&stranger, "10.98.0.1"), "{backend:?}: crowdsec");
        assert!(
            wait_until(std::time::Duration::from_secs(20), || connects(
                &stranger,
                "10.98.0.1"
            )),
            "{backend:?}: the ban expires"
        );
    }
}

/// In a chain under DOCKER-USER an accept is a RETURN, which from a chain
/// of the rule's own would only end that chain: an accept that needs one
/// (a global limit over several lines: web is ports 80 and 443) is
/// refused, even with --approximate, rather than written to let more
/// through.
#[test]
fn a_limited_accept_under_docker_user_is_refused() {
    let mut r = shipped_ruleset("vps-profile");
    let containers = r
        .chains
        .iter_mut()
        .find(|c| c.name == "containers")
        .expect("vps-profile filters published ports");
    let web = containers
        .rules
        .iter_mut()
        .find(|rule| rule.comment.contains("public web"))
        .expect("the web rule");
    web.limit = Some(fwharden::ruleset::Rate {
        count: 10,
        unit: fwharden::ruleset::RateUnit::Second,
        burst: 5,
    });
    match emit::iptables(&r, Approximation::Stricter) {
        Err(EmitError::Refused { rule, why, .. }) => {
            assert!(rule.contains("public web"), "{rule}");
            assert!(why.contains("FWHARDEN-CONTAINERS"), "{why}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

/// web-server's SSH log prefix is longer than LOG takes: the CLI writes
/// the files anyway, without `--approximate`, with a warning on stderr and
/// in `--json`.
#[test]
fn web_server_emits_for_iptables_with_a_log_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = fwharden()
        .args(["--json", "--profile-dir", "profiles", "emit", "web-server"])
        .args(["--format", "iptables", "--output"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("warning: approximated: web-server.toml:13 allow ssh from admin: log prefix"),
        "{}",
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["warnings"].as_array().unwrap().len(), 1, "{report}");
}

/// Both interfaces iptables cannot take are named in one run, exit 4.
#[test]
fn every_iptables_refusal_is_named_in_one_run() {
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("plus.toml"),
        "[[rule]]\nallow = \"80/tcp\"\ninterface = \"eth+\"\n\n[[rule]]\nallow = \"443/tcp\"\ninterface = \"br+\"\n",
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = fwharden()
        .arg("--profile-dir")
        .arg(profiles.path())
        .args(["emit", "plus", "--format", "iptables", "--output"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(fwharden::exit::REFUSED),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("the rule \"plus.toml:1 allow 80/tcp on eth+\""),
        "{err}"
    );
    assert!(
        err.contains("the rule \"plus.toml:5 allow 443/tcp on br+\""),
        "{err}"
    );
    assert!(err.contains("2 rules refused"), "{err}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
}
