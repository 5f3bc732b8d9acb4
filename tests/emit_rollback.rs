//! The safety net of `load.sh` (src/emit/safety.rs), with the real
//! iptables (both backends), ipset and util-linux in namespaces the tests
//! create:
//! - an unconfirmed load puts the previous rules back byte for byte
//!   (`iptables-save` and `ip6tables-save` of every table, comments
//!   stripped, and the groups' ipsets; the ban sets it created are gone),
//!   also when the process group that ran it is killed right after the
//!   load;
//! - a load that fails half-way is put back at once;
//! - a confirmed load keeps the new rules, and a confirm after the
//!   deadline is "too late";
//! - `--no-rollback` loads with no restorer.
//!
//! The lockout check: tests/emit_lockout.rs; the ufw scripts' net:
//! tests/emit_ufw_rollback.rs.

mod common;
#[path = "common/emit_host.rs"]
mod emit_host;

use std::time::Duration;

use common::*;
use emit_host::*;

fn interlock() {
    std::env::set_var(fwharden::rollback::FORBID_ENV, own_netns());
}

#[test]
#[ignore = "needs root"]
fn an_unconfirmed_load_puts_the_previous_rules_back_byte_for_byte() {
    needs_root("an_unconfirmed_load_puts_the_previous_rules_back_byte_for_byte");
    interlock();
    for backend in [Backend::Nft, Backend::Legacy] {
        let b = EmitHost::new("rbunconf", backend);
        b.previous_rules();
        let before = b.state();
        let out = b.expect(0, "after", &["--timeout", "2"], &[]);
        let dir = printed_dir(&out);
        assert!(stdout(&out).contains(&format!(
            "sh {} --confirm {}",
            b.script("after").display(),
            dir.display()
        )));
        let loaded = b.state();
        assert_ne!(loaded, before, "{backend:?}: the load changed nothing");
        assert!(loaded.contains("fwh-office_v4"), "{loaded}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the saved rules are private");
        b.wait_for_state(&before, &format!("{backend:?}"));
        assert!(
            wait_until(Duration::from_secs(30), || dir.join("restored").exists()),
            "{}",
            b.logs()
        );
        // A confirm now is too late, and says so.
        let late = b.expect(1, "after", &["--confirm", dir.to_str().unwrap()], &[]);
        assert!(stderr(&late).contains("too late"), "{}", stderr(&late));
        assert_eq!(b.state(), before);
        eprintln!("{backend:?}: unconfirmed load.sh rolled back to the byte");
    }
}

/// The process group that ran load.sh (a login session's, which a dropped
/// SSH connection hangs up and a logout kills) is killed right after the
/// load: the restorer, in a session of its own, still puts the rules back.
#[test]
#[ignore = "needs root"]
fn the_restorer_survives_the_death_of_the_session_that_loaded() {
    needs_root("the_restorer_survives_the_death_of_the_session_that_loaded");
    interlock();
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    use std::os::unix::process::CommandExt;
    let b = EmitHost::new("rbkill", Backend::Nft);
    b.previous_rules();
    let before = b.state();
    let (v4, v6) = Backend::Nft.bins();
    let script = b.script("after");
    let mut session = b.ns.command("sh");
    harness_env(&mut session);
    session
        .arg("-c")
        .arg(format!(
            "sh '{}' --timeout 3 && exec sleep 600",
            script.display()
        ))
        .env("TMPDIR", b.tmp.path())
        .env("IPTABLES", v4)
        .env("IP6TABLES", v6)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = session.spawn().unwrap();
    let group = Pid::from_raw(child.id() as i32);
    assert!(
        wait_until(Duration::from_secs(60), || b
            .state()
            .contains("fwh-office_v4")),
        "the load never happened: {}",
        b.logs()
    );
    let dir = b.only_rollback_dir();
    let restorer = restorer_pid(&dir);
    let needle = b.tmp.path().to_string_lossy().into_owned();
    // Its own session and process group: neither the group's hangup nor
    // its SIGKILL reaches it.
    let sid = nix::unistd::getsid(Some(Pid::from_raw(restorer))).unwrap();
    assert_eq!(
        sid,
        Pid::from_raw(restorer),
        "the restorer leads a session of its own"
    );
    assert_ne!(
        nix::unistd::getpgid(Some(Pid::from_raw(restorer))).unwrap(),
        group
    );
    let _ = killpg(group, Signal::SIGHUP);
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
    assert!(
        alive(restorer, &needle) || dir.join("restored").exists(),
        "the restorer died with the session: {}",
        b.logs()
    );
    b.wait_for_state(&before, "after the session was killed");
    assert!(
        wait_until(Duration::from_secs(30), || dir.join("restored").exists()),
        "{}",
        b.logs()
    );
}

#[test]
#[ignore = "needs root"]
fn a_confirmed_load_keeps_the_new_rules() {
    needs_root("a_confirmed_load_keeps_the_new_rules");
    interlock();
    let b = EmitHost::new("rbconf", Backend::Nft);
    b.previous_rules();
    let before = b.state();
    // A long window: the confirm must come in time on a busy machine.
    let out = b.expect(0, "after", &["--timeout", "600"], &[]);
    let dir = printed_dir(&out);
    let loaded = b.state();
    assert_ne!(loaded, before);
    let restorer = restorer_pid(&dir);
    let needle = b.tmp.path().to_string_lossy().into_owned();
    assert!(alive(restorer, &needle));
    let confirmed = b.expect(0, "after", &["--confirm", dir.to_str().unwrap()], &[]);
    assert!(
        stdout(&confirmed).contains("confirmed"),
        "{}",
        stdout(&confirmed)
    );
    assert!(
        wait_until(Duration::from_secs(30), || !alive(restorer, &needle)),
        "the restorer outlived the confirm"
    );
    assert!(!dir.exists(), "the saved rules are removed once confirmed");
    assert_eq!(b.state(), loaded, "the confirmed rules stay");
}

#[test]
#[ignore = "needs root"]
fn no_rollback_loads_without_a_restorer() {
    needs_root("no_rollback_loads_without_a_restorer");
    interlock();
    let b = EmitHost::new("rbnone", Backend::Nft);
    let out = b.expect(0, "after", &["--no-rollback"], &[]);
    assert!(
        stdout(&out).contains("no rollback timer"),
        "{}",
        stdout(&out)
    );
    assert!(b.state().contains("fwh-office_v4"));
    assert!(b.rollback_dirs().is_empty(), "{:?}", b.rollback_dirs());
    assert!(
        pids_naming(&b.tmp.path().to_string_lossy()).is_empty(),
        "a restorer runs"
    );
    // The options are checked before anything else.
    let bad = b.expect(2, "after", &["--timeout", "soon"], &[]);
    assert!(stderr(&bad).contains("--timeout"), "{}", stderr(&bad));
}

/// A load that fails half-way (the IPv4 rules went in, the IPv6 file is
/// broken) is put back at once, not at the deadline.
#[test]
#[ignore = "needs root"]
fn a_load_that_fails_half_way_is_put_back_at_once() {
    needs_root("a_load_that_fails_half_way_is_put_back_at_once");
    interlock();
    let b = EmitHost::new("rbfail", Backend::Nft);
    b.previous_rules();
    let before = b.state();
    let broken = b.files.path().join("after").join("ip6tables.rules");
    let mut text = std::fs::read_to_string(&broken).unwrap();
    text = text.replace("COMMIT", "-A FWHARDEN-INPUT --no-such-option\nCOMMIT");
    std::fs::write(&broken, text).unwrap();
    // A window far longer than any wait here: only "at once" passes.
    let out = b.load("after", &["--timeout", "3600"], &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("being put back now"),
        "{}",
        stderr(&out)
    );
    b.wait_for_state(&before, "after a failed load");
}

/// On a host whose firewall is empty (iptables-nft has made no table yet),
/// an unconfirmed load leaves no table behind: `nft list ruleset` is empty
/// again. And `--confirm` without a directory confirms the only load
/// pending.
#[test]
#[ignore = "needs root"]
fn a_first_load_rolled_back_leaves_no_table() {
    needs_root("a_first_load_rolled_back_leaves_no_table");
    interlock();
    let b = EmitHost::new("rbfirst", Backend::Nft);
    let ruleset = || stdout(&b.ns.run(&["nft", "list", "ruleset"]).unwrap());
    assert_eq!(ruleset(), "", "a fresh namespace");
    let before = b.state();
    b.expect(0, "after", &["--timeout", "1"], &[]);
    assert_ne!(ruleset(), "");
    b.wait_for_state(&before, "a first load");
    assert!(
        wait_until(Duration::from_secs(30), || ruleset().is_empty()),
        "left behind:\n{}",
        ruleset()
    );
    let out = b.expect(0, "after", &["--timeout", "600"], &[]);
    let dir = printed_dir(&out);
    let confirmed = b.expect(0, "after", &["--confirm"], &[]);
    assert!(
        stdout(&confirmed).contains(&dir.display().to_string()),
        "{}",
        stdout(&confirmed)
    );
    assert!(wait_until(Duration::from_secs(30), || !dir.exists()));
}
