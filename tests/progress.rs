//! An apply that runs long shows its phases on a terminal, and nothing
//! when stderr is not one or with `--json`. A real pseudo-terminal comes
//! from `script(1)`; the threshold is lowered to 0 ms through the test-only
//! environment variable, so a small profile is "long".

mod common;

use std::process::Command;

use common::*;

/// Runs `fwharden ARGS` inside the host's namespace on a pseudo-terminal;
/// returns everything the terminal showed.
fn on_a_terminal(host: &Host, args: &[&str]) -> String {
    let mut argv: Vec<String> = fw_argv(&host.ns, host.dir())
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend(args.iter().map(|a| a.to_string()));
    let line = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    harness_env(&mut c).env(fwharden::progress::QUIET_ENV, "0");
    let out = c.output().expect("run script(1)");
    assert!(out.status.success(), "{}", stdout(&out));
    stdout(&out)
}

#[test]
#[ignore = "needs root"]
fn a_long_apply_shows_its_phases_on_a_terminal_only() {
    needs_root("a_long_apply_shows_its_phases_on_a_terminal_only");
    let host = Host::new("progress");
    let shown = on_a_terminal(
        &host,
        &["apply", "vps-profile", "--auto-confirm", "--no-probe"],
    );
    for phase in [
        "compiling",
        "transaction",
        "verifying",
        "confirming",
        "done in",
    ] {
        assert!(shown.contains(phase), "{phase} not shown:\n{shown}");
    }

    // JSON on a terminal: the document alone.
    host.expect(0, &["rollback"]);
    let json = on_a_terminal(
        &host,
        &[
            "--json",
            "apply",
            "web-server",
            "--auto-confirm",
            "--no-probe",
        ],
    );
    assert!(
        !json.contains("done in") && !json.contains("transaction..."),
        "{json}"
    );

    // Not a terminal: nothing either.
    let plain = host
        .fw()
        .env(fwharden::progress::QUIET_ENV, "0")
        .args(["apply", "ssh-only", "--auto-confirm", "--no-probe"])
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    assert!(!stderr(&plain).contains("done in"), "{}", stderr(&plain));
}
