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
    cannot_run(test, "status and audit need root");
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
#[ignore = "needs root"]
fn nft_checks_run_in_a_namespace_of_their_own() {
    needs_root("nft_checks_run_in_a_namespace_of_their_own");
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

/// Runs `c` to its end, or kills it at a deadline generous for a busy
/// machine and fails the test: a regression into a read without end (a
/// FIFO, /dev/zero) fails here instead of hanging the suite.
fn within_deadline(c: &mut Command) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fwharden");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let read_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let read_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let limit = std::time::Duration::from_secs(120);
    let ended = wait_until(limit, || child.try_wait().unwrap().is_some());
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!("still running after {limit:?}: killed");
    }
    Output {
        status: child.wait().unwrap(),
        stdout: read_out.join().unwrap(),
        stderr: read_err.join().unwrap(),
    }
}

/// A profile directory holding `t.toml`, whose group `feed` reads `file`.
fn profile_reading(file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        format!(
            "description = \"reads {file}\"\n[groups]\nfeed = {{ file = \"{file}\" }}\n[[rule]]\nallow = \"ssh\"\nfrom = \"feed\"\n"
        ),
    )
    .unwrap();
    dir
}

/// `check t` in `dir`, with at most 1 GiB of address space: a regression
/// that reads /dev/zero again fails at that bound, without taking the
/// machine's memory first.
fn check_in(dir: &std::path::Path, env: &[(&str, &str)]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = fwharden();
    c.arg("--profile-dir")
        .arg(dir)
        .args(["check", "t"])
        .envs(env.iter().copied());
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; setrlimit is one (signal-safety(7))
    // and nothing is allocated.
    unsafe {
        c.pre_exec(|| {
            let gib = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &gib) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    within_deadline(&mut c)
}

#[test]
fn group_files_that_are_not_regular_files_are_located_errors() {
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("feed");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for (file, kind) in [
        ("/dev/zero", "a character device"),
        ("/dev/urandom", "a character device"),
        (fifo.to_str().unwrap(), "a FIFO"),
        ("/tmp", "a directory"),
    ] {
        let dir = profile_reading(file);
        let out = check_in(dir.path(), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{file}: {err}");
        // At the `file =` value of the profile, with what to do.
        let at = format!(
            "{}:3:17: error: list file {file} is {kind}, not a regular file",
            dir.path().join("t.toml").display()
        );
        assert!(err.contains(&at), "{file}: want {at}\n{err}");
        assert!(err.contains("help: name a regular file"), "{err}");
    }
}

#[test]
fn list_files_and_profiles_past_their_limit_are_refused_and_the_limit_is_set_by_env() {
    let dir = profile_reading("big.txt");
    // 2 MiB of good lines.
    let line = "10.0.0.1\n";
    let text = line.repeat((2 << 20) / line.len() + 1);
    std::fs::write(dir.path().join("big.txt"), &text).unwrap();

    let out = check_in(dir.path(), &[("FWHARDEN_MAX_INPUT_MIB", "1")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("t.toml:3:17: error: list file"), "{err}");
    assert!(
        err.contains("is larger than 1 MiB, the limit for a list file"),
        "{err}"
    );
    assert!(err.contains("FWHARDEN_MAX_INPUT_MIB"), "{err}");

    let out = check_in(dir.path(), &[("FWHARDEN_MAX_INPUT_MIB", "3")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = check_in(dir.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the default is 256 MiB: {}",
        stderr(&out)
    );

    let out = check_in(dir.path(), &[("FWHARDEN_MAX_INPUT_MIB", "lots")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("FWHARDEN_MAX_INPUT_MIB=\"lots\" is not a whole number of MiB"),
        "{err}"
    );

    // A profile has a limit of its own (32 MiB): 33 MiB, sparse.
    let huge = dir.path().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(33 << 20)
        .unwrap();
    let out = within_deadline(fwharden().arg("check").arg(&huge));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("is larger than 32 MiB, the limit for a profile"),
        "{err}"
    );
}

#[test]
fn a_state_record_that_is_a_fifo_is_an_error_not_a_hang() {
    if !reads_the_kernel("a_state_record_that_is_a_fifo_is_an_error_not_a_hang") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::mkfifo(&state.join("confirmed.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let out = within_deadline(
        fwharden()
            .arg("--state-dir")
            .arg(&state)
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .arg("status"),
    );
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("a FIFO, not a regular file"), "{all}");
}

/// A profile whose description and values hold escape sequences and line
/// breaks: what `list` and `check` print holds no control character but
/// the line breaks of their own, and shows the escapes as text.
#[test]
fn profile_text_reaches_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    // TOML's own escapes: the file is plain text, the values are not.
    std::fs::write(
        dir.path().join("evil.toml"),
        "description = \"web\\u001b[2J\\u001b]0;owned\\u0007\\nfake: ok\"\n[[rule]]\nallow = \"ssh\\u001b[31m\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nice.toml"),
        "description = \"nice\\u001b[1m\"\n[[rule]]\nallow = \"ssh\"\n",
    )
    .unwrap();
    let fw = |args: &[&str]| {
        fwharden()
            .arg("--profile-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let clean = |what: &str, text: &str| {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{what}: a control character reached the terminal: {text:?}"
        );
    };

    let out = fw(&["list"]);
    let text = stdout(&out);
    clean("list", &text);
    assert!(text.contains("nice\\u{1b}[1m"), "{text}");
    assert_eq!(text.lines().count(), 2, "no forged line: {text}");

    let out = fw(&["check", "evil"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    clean("check", &err);
    assert!(err.contains("ssh\\u{1b}[31m"), "{err}");

    // JSON stays JSON: serde's escapes, not these.
    let out = fw(&["--json", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nice = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "nice")
        .unwrap();
    assert_eq!(nice["description"], "nice\u{1b}[1m");
}
