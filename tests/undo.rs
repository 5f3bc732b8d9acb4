//! Undo and off, against a real kernel inside throwaway namespaces, as the
//! README's "Undo a confirm, or turn fwharden off" section describes them:
//! every confirm is kept (`history`), `rollback --to previous` loads the
//! ruleset before it with the rollback timer, `disable` removes the table
//! with the timer, and once confirmed `restore` loads nothing until
//! `enable`.
//!
//! No timing assertion: a deadline's revert is waited for by polling.
//!
//! Which ruleset is loaded is read from the kernel, and where it is the
//! question, seen with real packets: a peer in vps-profile's `wg-net`
//! (10.0.0.2, linked to the host's 10.0.0.1 by a veth pair only) may open
//! an SSH connection under vps-profile and not under web-server.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use fwharden::netns::Netns;

use common::readme::readme_blocks;
use common::*;

/// `history`'s lines with each time (`2026-12-05 07:40:12 UTC`) as TIME.
fn timeless(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.find(" UTC ") {
            Some(i) if i >= 19 => format!("{}TIME{}", &l[..i - 19], &l[i + 4..]),
            _ => l.to_string(),
        })
        .collect()
}

/// The README's `fwharden history` example, as `history` prints it.
fn readme_history() -> Vec<String> {
    let block = readme_blocks("## Applying: the safety net")
        .into_iter()
        .find(|b| b.starts_with("$ fwharden history\n"))
        .expect("README shows `fwharden history`");
    timeless(block.split_once('\n').unwrap().1)
}

/// Waits (at most 30 s past `deadline_ms`) until the kernel holds `want`
/// (`None`: no table) and nothing is pending any more.
fn reverted_to(host: &Host, want: Option<&str>, deadline_ms: u64) {
    let limit = deadline_ms.saturating_sub(now_ms()) + 30_000;
    assert!(
        wait_until(Duration::from_millis(limit), || host.table().as_deref()
            == want
            && host.pending().is_none()),
        "not reverted 30 s after the deadline; the kernel holds:\n{:?}\nwatcher log:\n{}",
        host.table(),
        std::fs::read_to_string(host.run_dir().join("watcher.log")).unwrap_or_default()
    );
}

/// A peer of the host in vps-profile's `wg-net`, and the host's listener
/// on port 22.
struct Peer {
    ns: Netns,
    _listener: TcpListener,
}

impl Peer {
    fn new(host: &Host) -> Peer {
        let ns = Netns::create("peer").expect("peer namespace");
        host.ns
            .link(&ns, &["10.0.0.1/24"], &["10.0.0.2/24"])
            .expect("veth to the peer");
        // Bound inside, it accepts inside; the kernel completes the
        // handshake from the backlog, so no accept loop is needed.
        let listener = host
            .ns
            .run_in(|| TcpListener::bind("0.0.0.0:22"))
            .expect("enter the host namespace")
            .expect("listen on port 22");
        Peer {
            ns,
            _listener: listener,
        }
    }

    /// Whether a new TCP connection from the peer reaches the host's port
    /// 22. A drop shows as no answer: 5 s is far longer than an accepted
    /// handshake between two namespaces takes, even on a busy machine.
    fn reaches_ssh(&self) -> bool {
        let to: SocketAddr = "10.0.0.1:22".parse().unwrap();
        self.ns
            .run_in(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)).is_ok())
            .expect("enter the peer namespace")
    }
}

/// `fwharden --json ARGS`, which must exit 0 and leave an apply pending.
fn pending_json(host: &Host, args: &[&str]) -> serde_json::Value {
    let out = host.expect(0, &[&["--json"], args].concat());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(v["state"], "pending", "{v}");
    v
}

/// The profiles of `history --json`, newest first.
fn history(host: &Host) -> Vec<String> {
    let out = host.expect(0, &["--json", "history"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history --json");
    v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["profile"].as_str().expect("a profile").to_string())
        .collect()
}

/// What `status` says the kernel holds and which profile is confirmed
/// (compared as models: the counters and rate-limit meters real packets
/// move do not count).
fn held(host: &Host) -> (String, String) {
    let s = host.status();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("(none)").to_string();
    (text(&s["kernel"]), text(&s["confirmed"]))
}

fn pair(kernel: &str, confirmed: &str) -> (String, String) {
    (kernel.into(), confirmed.into())
}

#[test]
#[ignore = "needs root"]
fn rollback_to_previous_undoes_a_confirm_with_the_timer() {
    needs_root("rollback_to_previous_undoes_a_confirm_with_the_timer");
    let host = Host::new("undo");
    let peer = Peer::new(&host);
    assert_eq!(
        host.confirm_profile("web-server"),
        reference_text("web-server")
    );
    assert!(!peer.reaches_ssh(), "web-server lets wg-net in");
    assert_eq!(
        host.confirm_profile("vps-profile"),
        reference_text("vps-profile")
    );
    assert!(peer.reaches_ssh(), "vps-profile keeps wg-net out");
    assert_eq!(history(&host), ["vps-profile", "web-server"]);
    let out = host.expect(0, &["history"]);
    assert_eq!(timeless(&stdout(&out)), readme_history());

    // With nothing pending, rollback says how to undo the confirm.
    let out = host.expect(0, &["rollback"]);
    assert!(
        stdout(&out).contains("`fwharden rollback --to previous`"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        held(&host),
        pair("confirmed", "vps-profile"),
        "a plain rollback changed the kernel"
    );

    // Unconfirmed, it comes back by itself.
    // (A window long enough for the packets to see the pending ruleset
    // only: a dropped connection waits 5 s for an answer.)
    let v = pending_json(&host, &["rollback", "--to", "previous", "--timeout", "20"]);
    assert_eq!(v["profile"], "web-server", "{v}");
    assert_eq!(host.pending().unwrap()["profile"], "web-server");
    assert_eq!(held(&host), pair("pending", "vps-profile"));
    assert!(
        !peer.reaches_ssh(),
        "web-server is not what the kernel does"
    );
    assert!(
        host.pending().is_some(),
        "the check ran past the deadline: it proves nothing"
    );
    let limit = v["deadline_ms"].as_u64().unwrap().saturating_sub(now_ms()) + 30_000;
    assert!(
        wait_until(Duration::from_millis(limit), || host.pending().is_none()),
        "not rolled back 30 s after the deadline"
    );
    assert_eq!(held(&host), pair("confirmed", "vps-profile"));
    assert!(peer.reaches_ssh(), "vps-profile is not back in the kernel");

    // Confirmed, it stays, and it is the newest entry.
    let out = host.expect(0, &["rollback", "--to", "previous"]);
    assert!(stdout(&out).contains("history entry 1"), "{}", stdout(&out));
    host.expect(0, &["confirm"]);
    assert_eq!(held(&host), pair("confirmed", "web-server"));
    assert!(
        !peer.reaches_ssh(),
        "web-server is not what the kernel does"
    );
    assert_eq!(history(&host), ["web-server", "vps-profile", "web-server"]);

    // A number names an entry; one the history does not hold changes nothing.
    let out = host.expect(1, &["rollback", "--to", "9"]);
    assert!(stderr(&out).contains("number 9"), "{}", stderr(&out));
    assert_eq!(held(&host), pair("confirmed", "web-server"));
    host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn disable_with_the_timer_then_confirmed_survives_restore_until_enable() {
    needs_root("disable_with_the_timer_then_confirmed_survives_restore_until_enable");
    let host = Host::new("disable");
    let a = host.confirm_profile("web-server");

    // Unconfirmed, the table comes back by itself.
    let v = pending_json(&host, &["disable", "--timeout", "2"]);
    assert_eq!(v["rollback_to"], "profile web-server", "{v}");
    assert_eq!(host.table(), None);
    assert_eq!(host.status()["kernel"], "pending-disable");
    reverted_to(&host, Some(&a), v["deadline_ms"].as_u64().unwrap());
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert!(s["disabled"].is_null(), "{s}");

    // `enable` over a disable not yet confirmed rolls it back.
    host.expect(0, &["disable"]);
    assert_eq!(host.table(), None);
    let out = host.expect(0, &["enable"]);
    assert!(
        stdout(&out).contains("the unconfirmed disable is rolled back"),
        "{}",
        stdout(&out)
    );
    assert_eq!(host.table_text(), a);
    assert!(host.pending().is_none());

    // Confirmed, it stays off, through a boot's restore too.
    host.expect(0, &["disable"]);
    assert_eq!(host.table(), None);
    let out = host.expect(0, &["confirm"]);
    assert!(
        stdout(&out).contains("confirmed the disable"),
        "{}",
        stdout(&out)
    );
    let s = host.status();
    assert_eq!(s["kernel"], "disabled", "{s}");
    assert_eq!(s["disabled"]["profile"], "web-server", "{s}");
    assert_eq!(s["confirmed"], "web-server", "kept for enable: {s}");
    let out = host.expect(0, &["status"]);
    assert!(stdout(&out).contains("DISABLED:"), "{}", stdout(&out));
    let out = host.expect(0, &["restore"]);
    assert!(
        stdout(&out).contains("fwharden is disabled"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        host.table(),
        None,
        "restore loaded a ruleset while disabled"
    );
    // A table loaded by hand meanwhile is drift, and restore removes it.
    host.sh(&["nft", "add", "table", "inet", "fwharden"]);
    assert_eq!(host.status()["kernel"], "drift");
    host.expect(0, &["restore"]);
    assert_eq!(host.table(), None, "restore left a table while disabled");
    let out = host.expect(0, &["rollback"]);
    assert!(
        stdout(&out).contains("`fwharden enable`"),
        "{}",
        stdout(&out)
    );
    let out = host.expect(0, &["disable"]);
    assert!(
        stdout(&out).contains("disabled already"),
        "{}",
        stdout(&out)
    );

    // Enabled unconfirmed: back to no table, still disabled.
    let v = pending_json(&host, &["enable", "--timeout", "2"]);
    assert_eq!(host.table_text(), a);
    reverted_to(&host, None, v["deadline_ms"].as_u64().unwrap());
    assert_eq!(host.status()["kernel"], "disabled");

    // Enabled and confirmed: the ruleset is back, and restore loads it.
    host.expect(0, &["enable"]);
    host.expect(0, &["confirm"]);
    assert_eq!(host.table_text(), a);
    let s = host.status();
    assert_eq!(s["kernel"], "confirmed", "{s}");
    assert!(s["disabled"].is_null(), "{s}");
    host.expect(0, &["restore"]);
    assert_eq!(host.table_text(), a);
    host.wait_quiet();
}
