//! The README's quick tour, run: each command shown with its output prints
//! that output (`...` stands for more lines). Commands shown without
//! output (they change a machine, or print a whole ruleset) are not run
//! here; their own tests hold them to the README's words.

mod common;

use std::path::Path;

use common::readme::readme_blocks;
use common::*;

/// The commands of a console block with the lines shown after each.
fn commands(block: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => {
                let cmd = cmd.split(" #").next().unwrap_or(cmd).trim();
                out.push((cmd.to_string(), Vec::new()));
            }
            None => out
                .last_mut()
                .expect("a block starts with a command")
                .1
                .push(line.to_string()),
        }
    }
    out
}

/// Runs `cmd` (`fwharden ARGS...`) in `dir`; stdout then stderr, as a
/// terminal shows a command that writes one then the other.
fn run(cmd: &str, dir: &Path) -> Vec<String> {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(args[0], "fwharden", "{cmd}");
    let out = fwharden()
        .current_dir(dir)
        .args(&args[1..])
        .output()
        .unwrap();
    format!("{}{}", stdout(&out), stderr(&out))
        .lines()
        .map(str::to_string)
        .collect()
}

fn holds(cmd: &str, shown: &[String], got: &[String]) {
    let (shown, more) = match shown.last().map(String::as_str) {
        Some("...") => (&shown[..shown.len() - 1], true),
        _ => (shown, false),
    };
    if more {
        // The lines shown are among the lines printed, in order.
        let mut rest = got.iter();
        for line in shown {
            assert!(
                rest.any(|g| g == line),
                "README: `{cmd}` shows {line:?}, not printed in this order:\n{}",
                got.join("\n")
            );
        }
    } else {
        // The order of stdout against stderr is the terminal's.
        let sorted = |lines: &[String]| {
            let mut v = lines.to_vec();
            v.sort();
            v
        };
        assert_eq!(
            sorted(got),
            sorted(shown),
            "README: `{cmd}` prints otherwise"
        );
    }
}

#[test]
fn the_quick_tour_prints_what_the_readme_says() {
    let blocks = readme_blocks("## Quick tour");
    assert_eq!(blocks.len(), 2, "the tour and its error example");
    let dir = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for (cmd, shown) in commands(&blocks[0]) {
        if shown.is_empty() {
            continue;
        }
        holds(&cmd, &shown, &run(&cmd, dir.path()));
        ran += 1;
    }
    assert!(ran >= 2, "the tour's list and check");

    // The error example: a mine.toml whose line 5, column 11 holds the
    // address with host bits set.
    std::fs::write(
        dir.path().join("mine.toml"),
        "# mine.toml\nextends = \"base\"\n\n[groups]\nadmins = [\"10.0.0.1/24\"]\n",
    )
    .unwrap();
    let example = commands(&blocks[1]);
    assert_eq!(example.len(), 1);
    let (cmd, shown) = &example[0];
    holds(cmd, shown, &run(cmd, dir.path()));
}
