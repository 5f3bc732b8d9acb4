//! The malformed-profile corpus: every tests/invalid/NAME.toml is refused by
//! `fwharden check` with exactly the stderr and exit code in NAME.expected
//! (first line `exit: N`). Files starting with `_` are parents the cases
//! extend. Regenerate with FWHARDEN_BLESS=1 and read every message: each
//! must say where, what is wrong, and what to write instead.

mod common;

use common::*;

fn run_case(name: &str) -> String {
    let out = fwharden()
        .args(["--profile-dir", "tests/invalid", "check", name])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{name}: an invalid profile prints nothing on stdout"
    );
    format!(
        "exit: {}\n{}",
        out.status.code().unwrap_or(-1),
        stderr(&out)
    )
}

#[test]
fn every_malformed_profile_is_refused_with_its_exact_message() {
    let dir = root().join("tests/invalid");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    names.sort();
    assert!(names.len() >= 40, "the corpus has {} cases", names.len());
    let bless = std::env::var("FWHARDEN_BLESS").is_ok();
    let mut failures = Vec::new();
    for name in &names {
        let got = run_case(name);
        let path = dir.join(format!("{name}.expected"));
        if bless {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!("== {name}\n-- expected:\n{want}-- got:\n{got}"));
        }
        assert!(got.starts_with("exit: 3\n"), "{name}: {got}");
        let first = got.lines().nth(1).unwrap_or("");
        // FILE:LINE:COLUMN: error: ... (the file may be a parent or a list).
        let mut fields = first.splitn(4, ':');
        let file = fields.next().unwrap_or("");
        let line: usize = fields.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let column: usize = fields.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        assert!(
            file.starts_with("tests/invalid/") && line > 0 && column > 0,
            "{name}: not located: {first}"
        );
        assert!(
            got.contains("\n  help: "),
            "{name}: says nothing about what to write instead"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_invalid_profile_shows_nothing() {
    let out = fwharden()
        .args(["--profile-dir", "tests/invalid", "show", "port-zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let json = fwharden()
        .args([
            "--profile-dir",
            "tests/invalid",
            "--json",
            "check",
            "host-bits-group",
        ])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let e = &v["errors"][0];
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(3), Some(10))
    );
    assert!(
        e["message"].as_str().unwrap().contains("10.0.0.0/24"),
        "{e}"
    );
    assert!(e["hint"].is_string());
}
