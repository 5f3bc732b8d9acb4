//! fwharden facing hostile input and hostile surroundings: a reader that
//! goes away, profiles that point at devices or hold terminal escapes, and
//! a test suite that must not touch the machine's own nf_tables.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

use common::*;

/// Runs `c` with stdout a pipe whose reader is already gone, as in
/// `fwharden list | head -1` once head has its line; deterministic,
/// unlike a shell pipeline where the reader may still be there.
fn with_closed_stdout(c: &mut Command) -> Output {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    drop(r);
    c.stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .expect("run fwharden")
}

/// `status` and `audit` read the machine's own ruleset and sockets (read
/// only), which takes root; elsewhere those cases are skipped loudly.
fn reads_the_kernel(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: status and audit need root (CI=true: a skip is a failure)"
    );
    eprintln!("\n!!!!!!!! {test}: status and audit SKIPPED: not root !!!!!!!!\n");
    false
}

#[test]
fn every_command_ends_quietly_when_its_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = dir.path().join("run");
    let mut cases: Vec<&[&str]> = vec![
        &["list"],
        &["show", "vps-profile"],
        &["check", "vps-profile"],
        &["--help"],
    ];
    if reads_the_kernel("every_command_ends_quietly_when_its_reader_goes_away") {
        cases.extend([&["status"][..], &["--json", "status"], &["--json", "audit"]]);
    }
    for args in cases {
        let out = with_closed_stdout(
            fwharden()
                .args(["--profile-dir", "profiles"])
                .arg("--state-dir")
                .arg(&state)
                .arg("--run-dir")
                .arg(&run)
                .args(args),
        );
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: every one of them prints, so it must end by SIGPIPE, got {:?}: {err}",
            out.status
        );
    }
}

/// The shell pipelines of the report, with `pipefail`: fwharden's status
/// is 0 (it wrote everything before the reader left) or 141.
#[test]
fn shell_pipelines_that_stop_reading_see_0_or_141() {
    let dir = tempfile::tempdir().unwrap();
    let fw = format!(
        "{} --profile-dir profiles --state-dir {}/state --run-dir {}/run",
        env!("CARGO_BIN_EXE_fwharden"),
        dir.path().display(),
        dir.path().display()
    );
    // (pipeline, fwharden's status when it wrote everything in time;
    // audit's is 7 when the machine has a port open to anyone).
    let mut pipelines = vec![
        (format!("{fw} list | head -1"), "0"),
        (format!("{fw} show vps-profile | head -1"), "0"),
    ];
    if reads_the_kernel("shell_pipelines_that_stop_reading_see_0_or_141") {
        pipelines.push((format!("{fw} status | grep -q confirmed"), "0"));
        pipelines.push((format!("{fw} --json audit | head -c 10"), "7"));
    }
    for (pipeline, finished) in pipelines {
        let out = fwharden_env(Command::new("bash").args([
            "-c",
            &format!("set -o pipefail; {pipeline} >/dev/null; echo \"${{PIPESTATUS[0]}}\""),
        ]))
        .output()
        .unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{pipeline}: {err}");
        let status = stdout(&out);
        assert!(
            ["0", finished, "141"].contains(&status.trim()),
            "{pipeline}: fwharden's status {status}: {err}"
        );
    }
}

/// The interlock for a shell: fwharden run by bash never changes the
/// namespace the tests run in.
fn fwharden_env(c: &mut Command) -> &mut Command {
    c.current_dir(root())
        .env(fwharden::rollback::FORBID_ENV, own_netns())
}

#[test]
fn a_write_to_a_gone_reader_is_an_error_even_under_the_default_disposition() {
    // Its own test binary's process: the disposition is process-wide. The
    // other tests here only read pipes, which never raise SIGPIPE.
    fwharden::sigpipe::restore_default();
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let mut w = std::fs::File::from(w);
    let e = fwharden::sigpipe::write_all(&mut w, b"to no one").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    // Still alive: the signal was taken, not delivered at the unblock.
    fwharden::sigpipe::ignore();
}

/// Every `nft` the tests and scripts run in the machine's own namespace
/// only reads (`nft --version`, `nft list`): anything else, `nft -c`
/// included, runs in a namespace made for it (`throwaway_netns`, a
/// harness namespace, `unshare --net` in a script).
#[test]
fn no_test_or_script_runs_nft_in_the_machines_own_namespace() {
    let mut offenders = Vec::new();
    for dir in ["tests", "tests/common", "tests/docker", "scripts"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() || path.ends_with("tests/hostile.rs") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                // A bare spawn, and what the next line passes it.
                let spawn = format!("{code} {}", lines.get(i + 1).unwrap_or(&""));
                let bare_spawn = code.contains("Command::new(\"nft\")")
                    && !spawn.contains("\"--version\"")
                    && !spawn.contains("[\"list\"");
                let comment = line.trim_start().starts_with('#');
                let bare_check = dir == "scripts"
                    && !comment
                    && code.contains("nft -c")
                    && !code.contains("unshare --net nft -c");
                if bare_spawn || bare_check {
                    offenders.push(format!("{}:{}: {line}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "nft outside a namespace:\n{}",
        offenders.join("\n")
    );
}

/// `nft -c` of the tests: the throwaway namespace is a real one (nft's
/// dry run sees no table of the host's), and nft still refuses a wrong
/// ruleset there.
#[test]
fn nft_checks_run_in_a_namespace_of_their_own() {
    if !have_nft("nft_checks_run_in_a_namespace_of_their_own") {
        return;
    }
    let inside = throwaway_netns(&["stat", "-L", "-c", "%i", "/proc/self/ns/net"])
        .output()
        .unwrap();
    assert!(inside.status.success(), "{}", stderr(&inside));
    assert_ne!(stdout(&inside).trim(), own_netns());
    nft_check(
        "table inet t {\n chain c {\n  type filter hook input priority 0; policy accept;\n }\n}\n",
    )
    .unwrap();
    let e = nft_check("table inet t {\n chain c {\n  tcp dport bogus accept\n }\n}\n").unwrap_err();
    assert!(e.contains("bogus"), "{e}");
}
