//! `fwharden emit --format ufw` without running ufw: the golden files of
//! every shipped profile (the six files, or the refusal), the refusals
//! that name a rule, and the CLI around them. tests/emit_ufw.rs runs the
//! output with the real ufw.
//! Regenerate the golden files with FWHARDEN_BLESS=1 and review the diff.

mod common;

use common::ufw::{shipped_ruleset, with_containers};
use common::*;
use fwharden::emit::{self, ufw, Approximation, EmitError};

/// Every file of an emit, or the refusal, as the golden file holds it.
fn golden_text(r: Result<emit::Emitted, EmitError>) -> String {
    match r {
        Ok(e) => e
            .files
            .iter()
            .map(|f| format!("==> {} <==\n{}", f.name, f.text))
            .collect(),
        Err(e) => format!("refused: {e}\n"),
    }
}

#[test]
fn emit_matches_the_golden_files() {
    let bless = std::env::var("FWHARDEN_BLESS").is_ok();
    for name in shipped_profiles() {
        let ruleset = with_containers(&root().join("profiles"), &name);
        let text = golden_text(ufw::emit(&ruleset, Approximation::Stricter));
        let path = root().join(format!("tests/golden/emit/{name}.ufw"));
        if bless {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing; run with FWHARDEN_BLESS=1", path.display()));
        assert_eq!(text, golden, "{name}: differs from {}", path.display());
    }
    // And no golden file outlives its profile.
    let names = shipped_profiles();
    for entry in std::fs::read_dir(root().join("tests/golden/emit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ufw") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                names.contains(&stem),
                "{} matches no profiles/*.toml",
                path.display()
            );
        }
    }
}

/// Published container ports follow the profile under ufw as under
/// nftables: the containers chain goes into both before files as
/// FWHARDEN-CONTAINERS (an accept is a RETURN to Docker's chains), with
/// DOCKER-USER declared as a jump to it, and the scripts move the jump to
/// DOCKER-USER to the head of FORWARD. tests/docker_emit.rs proves it
/// with the real dockerd and ufw.
#[test]
fn published_container_ports_go_under_docker_user_in_the_before_files() {
    let r = with_containers(&root().join("profiles"), "vps-profile");
    let e = ufw::emit(&r, Approximation::Refuse).unwrap();
    for file in [ufw::BEFORE_V4, ufw::BEFORE_V6] {
        let text = &e.file(file).unwrap().text;
        for line in [
            ":FWHARDEN-CONTAINERS - [0:0]",
            ":DOCKER-USER - [0:0]",
            "-A DOCKER-USER -j FWHARDEN-CONTAINERS",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{file}: no {line}:\n{text}"
            );
        }
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A FWHARDEN-CONTAINERS "))
            .collect();
        assert!(ours.len() > 3, "{file}:\n{text}");
        assert!(
            ours[..ours.len() - 1]
                .iter()
                .all(|l| l.ends_with("-j RETURN") || l.ends_with("-j DROP")),
            "{file}: {ours:#?}"
        );
        assert!(
            ours.last().unwrap().ends_with("--ctstate DNAT -m comment --comment \"defaults: containers: published port no rule allows\" -j DROP"),
            "{file}: {ours:#?}"
        );
        // The tunnel's group is IPv4 only.
        let redis = ours
            .iter()
            .any(|l| l.contains("--ctorigdstport 6379") && l.contains("-i wg0"));
        assert_eq!(redis, file == ufw::BEFORE_V4, "{file}: {ours:#?}");
    }
    for script in [ufw::SCRIPT, ufw::RELOAD] {
        let text = &e.file(script).unwrap().text;
        assert!(
            text.contains("REPLACING\n#   any rules of yours there"),
            "{script}"
        );
        assert!(
            text.contains("-I FORWARD 1 -j DOCKER-USER"),
            "{script}: the jump is not moved to the head of FORWARD"
        );
    }
    // Without container coverage, DOCKER-USER is left alone and our chain
    // is declared empty (a profile loaded after one with it).
    let mut ignore = r.clone();
    ignore.chains.retain(|c| c.name != "containers");
    let e = ufw::emit(&ignore, Approximation::Refuse).unwrap();
    let text = &e.file(ufw::BEFORE_V4).unwrap().text;
    assert!(text.contains(":FWHARDEN-CONTAINERS - [0:0]"), "{text}");
    assert!(!text.contains("DOCKER-USER"), "{text}");
    assert!(!e.file(ufw::SCRIPT).unwrap().text.contains("DOCKER-USER"));
}

#[test]
fn the_cli_refuses_with_exit_4_and_wants_a_directory() {
    let out = shipped(&["emit", "wireguard-gateway", "--format", "ufw"]);
    assert_eq!(
        out.status.code(),
        Some(fwharden::exit::USAGE),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--output DIR"), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("banned.toml"),
        "extends = \"vps-profile\"\n[bans]\nenabled = true\n",
    )
    .unwrap();
    let out = fwharden()
        .args(["--profile-dir", "profiles", "--profile-dir"])
        .arg(profiles.path())
        .args(["emit", "banned", "--format", "ufw", "--output"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(fwharden::exit::REFUSED),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("[bans]"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "refused, yet written"
    );
}

/// A per-source limit goes into before.rules, ahead of every ufw rule: an
/// earlier rule that may take the same packets goes there too, with its
/// log as a LOG line, so the order is the model's.
#[test]
fn a_per_source_limit_behind_an_overlapping_rule_moves_that_rule_into_before_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("overlap.toml"),
        "[defaults]\ncontainers = \"ignore\"\n\n[[rule]]\nallow = \"22/tcp\"\nlog = true\n\n[[rule]]\nallow = \"ssh\"\nlimit = \"10/minute\"\nburst = 5\n",
    )
    .unwrap();
    let e = ufw::emit(
        &with_containers(dir.path(), "overlap"),
        Approximation::Refuse,
    )
    .unwrap();
    for (file, chain) in [
        (ufw::BEFORE_V4, "ufw-before-input"),
        (ufw::BEFORE_V6, "ufw6-before-input"),
    ] {
        let text = &e.file(file).unwrap().text;
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("overlap.toml:"))
            .collect();
        assert_eq!(ours.len(), 3, "{file}: {ours:#?}");
        assert!(ours[0].starts_with(&format!("-A {chain} -p tcp -m tcp --dport 22 ")));
        assert!(
            ours[0].ends_with("-j LOG --log-prefix \"fwharden allow 22/tcp: \" --log-level 6"),
            "{}",
            ours[0]
        );
        assert!(
            ours[1].ends_with("\"overlap.toml:4 allow 22/tcp\" -j ACCEPT"),
            "{}",
            ours[1]
        );
        assert!(ours[2].contains("--hashlimit-mode srcip"), "{}", ours[2]);
        assert!(
            ours[2].ends_with("\"overlap.toml:8 allow ssh: over limit\" -j DROP"),
            "{}",
            ours[2]
        );
    }
}

/// The SSH limit of every shipped profile is a hashlimit meter in
/// before.rules, charged ahead of the ufw rule it guards.
#[test]
fn a_per_source_limit_is_a_hashlimit_meter_in_before_rules() {
    let e = ufw::emit(&shipped_ruleset("db-private"), Approximation::Refuse).unwrap();
    let before = &e.file(ufw::BEFORE_V4).unwrap().text;
    let meter = before
        .lines()
        .find(|l| l.contains("--hashlimit-mode srcip"))
        .unwrap_or_else(|| panic!("no meter: {before}"));
    assert!(meter.starts_with("-A ufw-before-input "), "{meter}");
    assert!(meter.contains("--dport 22 "), "{meter}");
    assert!(
        meter.contains("--hashlimit-above 10/min --hashlimit-burst 5 "),
        "{meter}"
    );
    assert!(meter.ends_with("-j DROP"), "{meter}");
}

/// The CLI writes the six files, the scripts executable, and prints each
/// approximation as a warning; they are in the files' headers too. Drop
/// logging is such a warning without `--approximate`.
#[test]
fn the_cli_writes_the_files_and_warns_of_approximations() {
    use std::os::unix::fs::PermissionsExt;
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("gw.toml"),
        "extends = \"wireguard-gateway\"\n[defaults]\ncontainers = \"ignore\"\n",
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = fwharden()
        .args(["--profile-dir", "profiles", "--profile-dir"])
        .arg(profiles.path())
        .args(["emit", "gw", "--format", "ufw", "--output"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: approximated: defaults: log drops"),
        "{}",
        stderr(&out)
    );
    for (name, mode) in [
        (ufw::SCRIPT, 0o755),
        (ufw::RELOAD, 0o755),
        (ufw::BEFORE_V4, 0o644),
        (ufw::BEFORE_V6, 0o644),
        (ufw::USER_V4, 0o644),
        (ufw::USER_V6, 0o644),
    ] {
        let path = out_dir.path().join(name);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# APPROXIMATED: defaults: log drops"),
            "{name}:\n{text}"
        );
    }
}

/// Every shipped profile, as shipped (published container ports
/// filtered), and on a host without containers (a copy saying
/// `containers = "ignore"`), is emitted for ufw without `--approximate`:
/// exit 0, logging as warnings on stderr and in `--json`.
#[test]
fn every_shipped_profile_emits_for_ufw() {
    let profiles = tempfile::tempdir().unwrap();
    for name in shipped_profiles() {
        std::fs::write(
            profiles.path().join(format!("x-{name}.toml")),
            format!("extends = \"{name}\"\n[defaults]\ncontainers = \"ignore\"\n"),
        )
        .unwrap();
    }
    let every = shipped_profiles()
        .into_iter()
        .flat_map(|name| [format!("x-{name}"), name]);
    for name in every {
        let out_dir = tempfile::tempdir().unwrap();
        let out = fwharden()
            .args(["--json", "--profile-dir", "profiles", "--profile-dir"])
            .arg(profiles.path())
            .args(["emit", &name, "--format", "ufw", "--output"])
            .arg(out_dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", stdout(&out)));
        assert_eq!(report["ok"], true, "{name}: {report}");
        assert_eq!(report["files"].as_array().unwrap().len(), 6, "{name}");
        for w in report["warnings"].as_array().unwrap() {
            let w = w.as_str().unwrap();
            assert!(
                w.contains("logged by") || w.contains(": log prefix "),
                "{name}: not a logging warning: {w}"
            );
            assert!(
                stderr(&out).contains(&format!("warning: approximated: {w}")),
                "{name}: {w} not on stderr: {}",
                stderr(&out)
            );
        }
    }
}

/// One run names every refusal, each with its file:line, and exits 4
/// having written nothing; `--json` lists them.
#[test]
fn every_refusal_is_named_in_one_run() {
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("many.toml"),
        "[defaults]\nforward = \"drop\"\ncontainers = \"ignore\"\n\n[[rule]]\nallow = \"ssh\"\ninterface = \"e%x\"\n\n[[rule]]\nallow = \"80/tcp\"\ninterface = \"e$x\"\n",
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let run = |json: bool| {
        let mut cmd = fwharden();
        if json {
            cmd.arg("--json");
        }
        cmd.arg("--profile-dir")
            .arg(profiles.path())
            .args(["emit", "many", "--format", "ufw", "--output"])
            .arg(out_dir.path())
            .output()
            .unwrap()
    };
    let out = run(false);
    assert_eq!(
        out.status.code(),
        Some(fwharden::exit::REFUSED),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    for rule in [
        "\"defaults: forward\"",
        "\"many.toml:5 allow ssh on e%x\"",
        "\"many.toml:9 allow 80/tcp on e_x\"",
    ] {
        assert!(
            err.contains(&format!("fwharden: ufw cannot express the rule {rule}")),
            "{rule} not named: {err}"
        );
    }
    assert!(
        err.contains("3 rules refused, nothing was written"),
        "{err}"
    );
    let out = run(true);
    assert_eq!(out.status.code(), Some(fwharden::exit::REFUSED));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["refused"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(
        std::fs::read_dir(out_dir.path()).unwrap().count(),
        0,
        "refused, yet written"
    );
}
