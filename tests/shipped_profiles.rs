//! Every shipped profile: passes `check`, renders exactly its golden text,
//! deterministically, and that text is accepted by the real `nft -c`.
//! Regenerate the golden files with FWHARDEN_BLESS=1 and review the diff.

mod common;

use common::*;

fn shipped_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("profiles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 7, "{names:?}");
    names
}

#[test]
fn every_shipped_profile_passes_check() {
    for name in shipped_names() {
        let out = shipped(&["check", &name]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert!(
            stdout(&out).starts_with(&format!("{name}: ok")),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn every_shipped_profile_says_who_it_is_for() {
    for name in shipped_names() {
        let text = std::fs::read_to_string(root().join(format!("profiles/{name}.toml"))).unwrap();
        let head: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            head.starts_with(&format!("# {name}:")),
            "{name} must open with `# {name}: ...`"
        );
        assert!(
            head.contains("For:"),
            "{name}'s opening comment must say who it is for"
        );
    }
}

#[test]
fn show_matches_the_golden_files() {
    let bless = std::env::var("FWHARDEN_BLESS").is_ok();
    for name in shipped_names() {
        let out = shipped(&["show", &name]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let path = root().join(format!("tests/golden/{name}.nft"));
        if bless {
            std::fs::write(&path, &out.stdout).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing; run with FWHARDEN_BLESS=1", path.display()));
        assert_eq!(
            stdout(&out),
            golden,
            "{name}: show differs from {}",
            path.display()
        );
    }
}

#[test]
fn every_golden_file_has_its_profile() {
    let names = shipped_names();
    for entry in std::fs::read_dir(root().join("tests/golden")).unwrap() {
        let path = entry.unwrap().path();
        // tests/golden/emit holds the emitters' golden files (tests/emit.rs
        // checks that each has its profile).
        if path.is_dir() {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            path.extension().is_some_and(|e| e == "nft") && names.contains(&stem),
            "{} matches no profiles/*.toml",
            path.display()
        );
    }
}

#[test]
fn show_is_deterministic() {
    for name in shipped_names() {
        let a = shipped(&["show", &name]).stdout;
        let b = shipped(&["show", &name]).stdout;
        let json_a = shipped(&["--json", "show", &name]).stdout;
        let json_b = shipped(&["--json", "show", &name]).stdout;
        assert_eq!(a, b, "{name}");
        assert_eq!(json_a, json_b, "{name}");
    }
}

#[test]
#[ignore = "needs root"]
fn nft_accepts_every_shipped_ruleset() {
    needs_root("nft_accepts_every_shipped_ruleset");
    let nft = NftCheck::new();
    for name in shipped_names() {
        let out = shipped(&["show", &name]);
        if let Err(e) = nft.text(&stdout(&out)) {
            panic!("nft -c refuses {name}:\n{e}\n{}", stdout(&out));
        }
    }
}

#[test]
fn builtin_profiles_are_the_shipped_files() {
    // The binary embeds profiles/; without --profile-dir it finds them.
    for name in shipped_names() {
        let embedded = fwharden().args(["show", &name]).output().unwrap();
        let from_dir = shipped(&["show", &name]);
        if std::path::Path::new(&format!("/etc/fwharden/profiles/{name}.toml")).exists()
            || std::path::Path::new(&format!("/usr/share/fwharden/profiles/{name}.toml")).exists()
        {
            continue; // an installed copy wins; nothing to compare
        }
        assert_eq!(stdout(&embedded), stdout(&from_dir), "{name}");
    }
}
