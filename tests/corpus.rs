//! The malformed-profile corpus: every tests/corpus/invalid/NAME.toml is
//! refused by `fwharden check` with exactly the exit status and stderr in
//! NAME.expected (first line `exit: N`, then stderr as printed). Files
//! starting with `_` are parents the cases extend; lists/ holds the list
//! files they read.
//!
//! Regenerate with `FWHARDEN_BLESS=1 cargo test --test corpus`, then read
//! every changed message: each must say where, what is wrong, and what to
//! write instead.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const DIR: &str = "tests/corpus/invalid";

fn corpus_dir() -> PathBuf {
    root().join(DIR)
}

/// The case names: NAME.toml files, parents excluded.
fn cases() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    names.sort();
    names
}

/// `exit: N` and the stderr of `fwharden --profile-dir DIR check NAME`.
fn run_case(name: &str) -> (String, Vec<u8>) {
    let out = fwharden()
        .args(["--profile-dir", DIR, "check", name])
        .output()
        .unwrap();
    let got = format!(
        "exit: {}\n{}",
        out.status
            .code()
            .map_or("signal".to_string(), |c| c.to_string()),
        stderr(&out)
    );
    (got, out.stdout)
}

/// What every refusal must look like, whatever its exact words: exit 3, no
/// stdout, every error located in a corpus file with line and column > 0
/// and followed by a help line, and the summary last.
fn check_shape(name: &str, got: &str, stdout: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    if !got.starts_with("exit: 3\n") {
        problems.push("exit status is not 3".to_string());
    }
    if !stdout.is_empty() {
        problems.push(format!(
            "printed on stdout: {}",
            String::from_utf8_lossy(stdout)
        ));
    }
    let lines: Vec<&str> = got.lines().skip(1).collect();
    let mut errors = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some((place, _)) = line.split_once(": error: ") else {
            continue;
        };
        errors += 1;
        let mut fields = place.rsplitn(3, ':');
        let column: usize = fields.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let line_no: usize = fields.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let file = fields.next().unwrap_or("");
        if !(file.starts_with(DIR) && line_no > 0 && column > 0) {
            problems.push(format!("not located in a corpus file: {line}"));
        }
        match lines.get(i + 1) {
            Some(help) if help.starts_with("  help: ") && help.len() > "  help: ".len() => {}
            _ => problems.push(format!("no help line after: {line}")),
        }
    }
    if errors == 0 {
        problems.push("no error at all".to_string());
    }
    let summary = format!("{name}: invalid (");
    if !lines.last().is_some_and(|l| l.starts_with(&summary)) {
        problems.push("the last line is not the summary".to_string());
    }
    problems
}

#[test]
fn every_malformed_profile_is_refused_with_its_exact_message() {
    let names = cases();
    assert!(names.len() >= 45, "the corpus has {} cases", names.len());
    let bless = std::env::var_os("FWHARDEN_BLESS").is_some();
    let mut failures = Vec::new();
    for name in &names {
        let (got, stdout) = run_case(name);
        let path = corpus_dir().join(format!("{name}.expected"));
        for p in check_shape(name, &got, &stdout) {
            failures.push(format!("== {name}: {p}\n{got}"));
        }
        if bless {
            fs::write(&path, &got).unwrap();
            continue;
        }
        match fs::read_to_string(&path) {
            Err(e) => failures.push(format!(
                "== {name}: {} cannot be read ({e}); write it with FWHARDEN_BLESS=1 and review it\n-- got:\n{got}",
                path.display()
            )),
            Ok(want) if want != got => failures.push(format!(
                "== {name}: differs from {}\n-- expected:\n{want}-- got:\n{got}",
                path.display()
            )),
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_file_has_its_profile() {
    let stale: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "expected"))
        .filter(|p| !p.with_extension("toml").exists())
        .collect();
    assert!(stale.is_empty(), "no NAME.toml for {stale:?}");
}

#[test]
fn every_parent_is_extended_by_a_case() {
    // A parent that nothing extends is a leftover.
    let texts: Vec<String> = cases()
        .iter()
        .map(|n| fs::read_to_string(corpus_dir().join(format!("{n}.toml"))).unwrap_or_default())
        .collect();
    for entry in fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if stem.starts_with('_') && path.extension().is_some_and(|e| e == "toml") {
            let needle = format!("extends = \"{stem}\"");
            assert!(
                texts.iter().any(|t| t.contains(&needle)),
                "{} is extended by no case",
                Path::new(DIR).join(path.file_name().unwrap()).display()
            );
        }
    }
}

#[test]
fn an_invalid_profile_shows_nothing_and_exits_3() {
    for name in ["port-zero", "toml-syntax", "error-in-parent", "not-utf8"] {
        let out = fwharden()
            .args(["--profile-dir", DIR, "show", name])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{name}: {}", stdout(&out));
        assert!(stderr(&out).contains("error:"), "{name}: {}", stderr(&out));
    }
}

#[test]
fn check_json_lists_every_error_with_its_place_and_hint() {
    let out = fwharden()
        .args(["--profile-dir", DIR, "--json", "check", "several-errors"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["profile"].is_null());
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{v}");
    let places: Vec<(u64, u64)> = errors
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(places, [(3, 6), (5, 9), (6, 8)]);
    for e in errors {
        assert_eq!(e["severity"], "error");
        assert_eq!(e["file"], format!("{DIR}/several-errors.toml"));
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
        assert!(!e["hint"].as_str().unwrap().is_empty(), "{e}");
    }
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("\"10.0.0.0/8\""),
        "the normalized prefix is named: {}",
        errors[0]
    );
}
