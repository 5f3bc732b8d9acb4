//! The SSH use case over real connections (issue 28): Debian's sshd in a
//! test namespace, the real `ssh` client in another (tests/common/sshd.rs),
//! and `fwharden apply` run inside an SSH session on the server.
//!
//! - a profile cutting SSH, applied with `--force` in a session that then
//!   dies (its client killed; the link down for the whole window; sshd
//!   ending the session) is rolled back by its deadline: a fresh login
//!   succeeds and the kernel holds the previous ruleset again;
//! - an apply that keeps SSH, confirmed from a fresh connection, is never
//!   rolled back;
//! - with the watcher killed, a fresh login still gets in through the
//!   escape hatch.
//!
//! Nothing here asserts a duration: each wait polls with a generous bound.

mod common;

use std::time::Duration;

use common::sshd::*;
use common::*;

/// The rollback timer of each apply, short so the tests end soon.
const TIMEOUT: u64 = 8;
/// How long a test waits for what the deadline brings, on a busy machine.
const PATIENCE: Duration = Duration::from_secs(180);

/// A site whose confirmed ruleset (`keep-web`: SSH and the web) is the
/// one a rollback must bring back; returns it and that ruleset's text.
fn site(test: &str, tag: &str) -> Option<(SshSite, String)> {
    needs_root(test);
    if !have_ssh(test) {
        return None;
    }
    let site = SshSite::new(tag);
    std::fs::write(
        site.profiles().join("keep-web.toml"),
        "[bans]\nenabled = true\n[[rule]]\nallow = \"ssh\"\n[[rule]]\nallow = \"http\"\n",
    )
    .unwrap();
    site.host.confirm_from(site.profiles(), "keep-web");
    let before = without_counts(&site.host.table_text());
    Some((site, before))
}

/// `apply cut-ssh --force` over SSH: in a session that stays open when
/// `stay`, else over a one-shot login. Checks the kernel holds it,
/// pending, with the hatch armed for the client.
fn apply_cutting(site: &SshSite, before: &str, stay: bool) -> Option<Session> {
    let args = format!("--json apply cut-ssh --force --no-probe --timeout {TIMEOUT}");
    let command = site.remote(false, "", &args);
    let session = if stay {
        let s = site.sshd.session_running(&site.client, CLIENT, &command);
        assert_eq!(s.code, 0, "apply in the session:\n{}", s.output);
        Some(s)
    } else {
        let out = site.ssh(&command);
        let (code, text) = code_and_text(&out);
        assert_eq!(code, Some(0), "apply over ssh: {text}");
        None
    };
    let pending = site.host.pending().expect("the apply is pending");
    assert_eq!(pending["profile"], "cut-ssh", "{pending}");
    let table = site.host.table_text();
    assert_ne!(
        without_counts(&table),
        before,
        "the kernel does not hold cut-ssh"
    );
    assert!(
        table.contains(&format!("ip saddr {CLIENT} tcp dport 22")) && table.contains("@hatch_v4"),
        "no hatch for {CLIENT}:\n{table}"
    );
    session
}

/// Polls until the watcher has rolled back (no pending record, the
/// previous ruleset in the kernel) and, when `login`, a fresh SSH login
/// succeeds.
fn wait_rolled_back(site: &SshSite, before: &str, login: bool) {
    let rolled_back = || {
        site.host.pending().is_none()
            && site
                .host
                .table()
                .is_some_and(|t| without_counts(&t) == before)
    };
    assert!(
        wait_until(PATIENCE, || rolled_back()
            && (!login || site.sshd.logs_in(&site.client))),
        "not rolled back to the previous ruleset, or no fresh login; kernel:\n{}\nsshd:\n{}",
        site.host.table().unwrap_or_default(),
        site.sshd.log()
    );
}

/// After the rollback, `status` agrees: the previous profile is confirmed
/// and the watcher said why it rolled back.
fn status_is_the_previous(site: &SshSite) {
    let s = site.host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert_eq!(s["confirmed"], "keep-web", "{s}");
    assert!(s["pending"].is_null(), "{s}");
    let log =
        || std::fs::read_to_string(site.host.run_dir().join("watcher.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || log()
            .contains("was not confirmed in time")),
        "{}",
        log()
    );
    site.host.wait_quiet();
}

/// How the session that applied a cutting profile dies.
#[derive(Debug, Clone, Copy)]
enum Death {
    /// The ssh client is SIGKILLed.
    ClientKilled,
    /// The client's end of the link is down for the whole window, then up.
    LinkDown,
    /// The session's sshd process is told to end (SIGTERM).
    SshdEnds,
}

/// `apply cut-ssh --force` in a session that then dies as `death` says;
/// the deadline brings the previous ruleset back and a fresh login
/// succeeds.
fn rolled_back_after(test: &str, tag: &str, death: Death) {
    let Some((site, before)) = site(test, tag) else {
        return;
    };
    let mut session = apply_cutting(&site, &before, true).unwrap();
    match death {
        Death::ClientKilled => session.client.kill(),
        Death::LinkDown => {
            // The rollback happens with the client unreachable, and the
            // link comes back to a restored ruleset.
            site.set_link(false);
            wait_rolled_back(&site, &before, false);
            site.set_link(true);
        }
        Death::SshdEnds => {
            let pid = session.sshd_pid;
            assert!(alive_naming(pid, "sshd"), "{pid} is not the session's sshd");
            // sshd closes the connection, and the client ends with it.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let client = &mut session.client.0;
            assert!(
                wait_until(PATIENCE, || client.try_wait().unwrap().is_some()),
                "the ssh client outlived its session"
            );
        }
    }
    wait_rolled_back(&site, &before, true);
    // After the link's return the old session's client may well live on
    // (nothing told it the link was gone); it names the host's directory,
    // so it goes before the host is found quiet.
    drop(session);
    status_is_the_previous(&site);
}

#[test]
#[ignore = "needs root"]
fn a_cutting_apply_is_rolled_back_after_the_ssh_client_is_killed() {
    let test = "a_cutting_apply_is_rolled_back_after_the_ssh_client_is_killed";
    rolled_back_after(test, "sshkc", Death::ClientKilled);
}

#[test]
#[ignore = "needs root"]
fn a_cutting_apply_is_rolled_back_after_the_link_drops_mid_session() {
    let test = "a_cutting_apply_is_rolled_back_after_the_link_drops_mid_session";
    rolled_back_after(test, "sshld", Death::LinkDown);
}

#[test]
#[ignore = "needs root"]
fn a_cutting_apply_is_rolled_back_after_sshd_ends_the_session() {
    let test = "a_cutting_apply_is_rolled_back_after_sshd_ends_the_session";
    rolled_back_after(test, "sshse", Death::SshdEnds);
}

#[test]
#[ignore = "needs root"]
fn a_keep_ssh_apply_confirmed_from_a_fresh_connection_is_not_rolled_back() {
    let test = "a_keep_ssh_apply_confirmed_from_a_fresh_connection_is_not_rolled_back";
    let Some((site, before)) = site(test, "sshkp") else {
        return;
    };
    let args = format!("--json apply keep-ssh --no-probe --timeout {TIMEOUT}");
    let out = site.ssh(&site.remote(false, "", &args));
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(0), "apply over session 1: {text}");
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(applied["state"], "pending", "{applied}");
    let due = applied["deadline_ms"].as_u64().expect("deadline_ms");

    // Session 2, a new connection: the kept SSH rule lets it in.
    let out = site.ssh(&site.remote(false, "", "confirm"));
    let (code, text) = code_and_text(&out);
    assert_eq!(code, Some(0), "confirm over session 2: {text}");
    let after = without_counts(&site.host.table_text());
    assert_ne!(after, before, "keep-ssh is not in the kernel");
    assert!(!after.contains("hatch"), "confirm kept the hatch: {after}");

    // Past the deadline, with a margin: nothing rolled back.
    while now_ms() < due + 3000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    site.host.wait_quiet();
    assert_eq!(without_counts(&site.host.table_text()), after);
    let s = site.host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert_eq!(s["confirmed"], "keep-ssh", "{s}");
    assert!(s["pending"].is_null(), "{s}");
    assert!(site.sshd.logs_in(&site.client), "{}", site.sshd.log());
}

#[test]
#[ignore = "needs root"]
fn with_the_watcher_killed_a_fresh_login_gets_in_through_the_hatch() {
    let test = "with_the_watcher_killed_a_fresh_login_gets_in_through_the_hatch";
    let Some((site, before)) = site(test, "sshhk") else {
        return;
    };
    apply_cutting(&site, &before, false);
    site.host.kill_watcher();
    assert!(
        site.host.processes().is_empty(),
        "a fwharden process survived"
    );
    // Nobody is left to roll back: only the hatch in the kernel lets the
    // client in, at the deadline.
    assert!(
        wait_until(PATIENCE, || site.sshd.logs_in(&site.client)),
        "no fresh login through the hatch; kernel:\n{}\nsshd:\n{}",
        site.host.table_text(),
        site.sshd.log()
    );
    let table = site.host.table_text();
    assert!(table.contains("@hatch_v4"), "{table}");
    assert!(site.host.pending().is_some(), "something rolled back");
    // The first command to find the apply overdue rolls it back.
    let s = site.host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert_eq!(without_counts(&site.host.table_text()), before);
}
