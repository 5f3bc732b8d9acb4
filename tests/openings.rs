//! Temporary openings (issue 25 item 2) against a real kernel inside
//! throwaway namespaces:
//!
//! - real packets: an opened port is reachable from the opened source only;
//!   `status` (text and `--json`) lists it with its time left; an apply of
//!   another profile, a pending apply and its rollback keep it without
//!   lengthening it; `close` ends it early;
//! - an opening closes on time with the watcher and every fwharden process
//!   killed: the kernel alone removes it;
//! - no opening is lost while applies and restores run back to back;
//! - the refusals and their exit codes.
//!
//! Topology: the host namespace (10.97.0.1 and 2001:db8:97::1, 10.96.0.1
//! and 2001:db8:96::1, listeners on port 8080) and two peers linked to it
//! by veth pairs only: a friend (10.97.0.2 and 2001:db8:97::2, in group
//! `friends`) and a stranger (10.96.0.3 and 2001:db8:96::3).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use fwharden::netns::Netns;

const FRIEND: &str = "10.97.0.2";
const FRIEND6: &str = "2001:db8:97::2";
const STRANGER: &str = "10.96.0.3";

/// `web` allows SSH and denies Redis explicitly; `other` allows HTTP too
/// (an apply that replaces the whole table).
fn profiles(dir: &Path) {
    let base = format!(
        "[groups]\nfriends = [\"{FRIEND}\", \"{FRIEND6}\"]\n\
         [[rule]]\nallow = \"ssh\"\n\
         [[rule]]\ndeny = \"redis\"\n"
    );
    std::fs::write(dir.join("web.toml"), &base).unwrap();
    std::fs::write(
        dir.join("other.toml"),
        format!("{base}[[rule]]\nallow = \"http\"\n"),
    )
    .unwrap();
}

struct Site {
    host: Host,
    profiles: tempfile::TempDir,
}

impl Site {
    fn new(tag: &str) -> Site {
        let profiles_dir = tempfile::tempdir().unwrap();
        profiles(profiles_dir.path());
        Site {
            host: Host::new(tag),
            profiles: profiles_dir,
        }
    }

    fn fw(&self, code: i32, args: &[&str]) -> std::process::Output {
        self.host.expect_in(self.profiles.path(), code, args)
    }

    /// `status --json`'s openings.
    fn openings(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_slice(&self.fw(0, &["--json", "status"]).stdout).unwrap();
        assert_eq!(v["openings_unreadable"], serde_json::Value::Null, "{v}");
        v["openings"].as_array().unwrap().clone()
    }

    /// The friend's two openings of 8080/tcp, and nothing else: the IPv4
    /// one's (timeout, time left), in ms.
    fn friends_openings(&self) -> (u64, u64) {
        let o = self.openings();
        assert_eq!(o.len(), 2, "{o:?}");
        let from: Vec<&str> = o.iter().map(|o| o["from"].as_str().unwrap()).collect();
        assert_eq!(from, [format!("{FRIEND}/32"), format!("{FRIEND6}/128")]);
        assert!(o.iter().all(|o| o["port"] == "8080/tcp"), "{o:?}");
        (
            o[0]["timeout_ms"].as_u64().unwrap(),
            o[0]["left_ms"].as_u64().unwrap(),
        )
    }
}

/// Whether a new TCP connection from `from` reaches `to`:8080.
fn connects(from: &Netns, to: &str) -> bool {
    connects_to(from, to, 8080, Duration::from_millis(500))
}

#[test]
#[ignore = "needs root"]
fn an_opening_admits_its_source_only_and_holds_through_applies_and_a_rollback() {
    needs_root("an_opening_admits_its_source_only_and_holds_through_applies_and_a_rollback");
    let s = Site::new("open");
    let friend = s.host.peer(
        "openfr",
        &["10.97.0.1/24", "2001:db8:97::1/64"],
        &[&format!("{FRIEND}/24"), &format!("{FRIEND6}/64")],
    );
    let stranger = s.host.peer(
        "openst",
        &["10.96.0.1/24", "2001:db8:96::1/64"],
        &[&format!("{STRANGER}/24"), "2001:db8:96::3/64"],
    );
    let _listeners = [
        listen_in(&s.host.ns, 8080),
        listen_at(&s.host.ns, "2001:db8:97::1", 8080),
        listen_at(&s.host.ns, "2001:db8:96::1", 8080),
    ];
    // Both families, from the friend and from the stranger.
    let friend_in = || connects(&friend, "10.97.0.1") && connects(&friend, "2001:db8:97::1");
    let stranger_in = || connects(&stranger, "10.96.0.1") || connects(&stranger, "2001:db8:96::1");
    s.fw(0, &["apply", "web", "--auto-confirm", "--no-probe"]);
    assert!(
        !connects(&friend, "10.97.0.1") && !connects(&friend, "2001:db8:97::1"),
        "8080 open before any opening"
    );
    assert!(s.openings().is_empty());

    let out = s.fw(0, &["open", "8080/tcp", "--from", "friends", "--for", "1h"]);
    assert!(
        stdout(&out).contains("opened 8080/tcp from 10.97.0.2/32, 2001:db8:97::2/128 for 1h"),
        "{}",
        stdout(&out)
    );
    assert!(friend_in(), "the opened source was shut out");
    assert!(!stranger_in(), "another source got in");
    let (timeout, first) = s.friends_openings();
    assert_eq!(timeout, 3_600_000);
    assert!(first > 0 && first <= timeout, "{first}");
    let text = stdout(&s.fw(0, &["status"]));
    let line = text.lines().find(|l| l.starts_with("opening:")).unwrap();
    assert!(line.contains("8080/tcp from 10.97.0.2/32"), "{line}");
    assert!(line.contains(" left (of 1h)"), "{line}");
    // The opening is runtime state: the kernel still holds the confirmed
    // ruleset, no drift.
    assert_eq!(s.host.status()["kernel"], "confirmed");
    // The metrics carry it too, a gauge of seconds left per source.
    let metrics = stdout(&s.fw(0, &["metrics"]));
    let gauge = metrics
        .lines()
        .find(|l| {
            l.starts_with("fwharden_opening_seconds_left{from=\"10.97.0.2/32\",port=\"8080/tcp\"} ")
        })
        .unwrap_or_else(|| panic!("no opening in the metrics:\n{metrics}"));
    let left: f64 = gauge.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(left > 0.0 && left <= 3600.0, "{gauge}");

    let holds = |step: &str, before: u64| -> u64 {
        let (timeout, left) = s.friends_openings();
        assert_eq!(timeout, 3_600_000, "{step}");
        assert!(left <= before, "{step} lengthened it: {left} > {before}");
        assert!(friend_in(), "{step} closed it");
        assert!(!stranger_in(), "{step} opened it wider");
        left
    };
    s.fw(0, &["apply", "other", "--auto-confirm", "--no-probe"]);
    let left = holds("an apply of another profile", first);
    assert_eq!(s.host.status()["kernel"], "confirmed");
    s.fw(0, &["apply", "web", "--timeout", "60", "--no-probe"]);
    let left = holds("a pending apply", left);
    s.fw(0, &["rollback"]);
    let left = holds("a rollback", left);
    s.fw(0, &["apply", "web", "--timeout", "60", "--no-probe"]);
    s.fw(0, &["confirm"]);
    let left = holds("a confirm", left);
    s.fw(0, &["restore"]);
    let left = holds("a restore", left);
    // The watcher's own rollback, at the deadline.
    s.fw(0, &["apply", "other", "--timeout", "2", "--no-probe"]);
    assert!(
        wait_until(Duration::from_secs(60), || s.host.pending().is_none()),
        "the watcher did not roll back"
    );
    holds("the watcher's rollback", left);
    assert_eq!(s.host.status()["kernel"], "confirmed");

    let out = s.fw(0, &["close", "8080/tcp", "--from", "friends"]);
    assert!(stdout(&out).contains("closed 8080/tcp from 10.97.0.2/32"));
    assert!(stdout(&out).contains("closed 8080/tcp from 2001:db8:97::2/128"));
    assert!(
        !connects(&friend, "10.97.0.1") && !connects(&friend, "2001:db8:97::1"),
        "still open after close"
    );
    assert!(s.openings().is_empty());
    let out = s.fw(0, &["close", "8080/tcp"]);
    assert!(stdout(&out).contains("was not open"));
    s.host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn an_opening_closes_on_time_with_every_fwharden_process_killed() {
    needs_root("an_opening_closes_on_time_with_every_fwharden_process_killed");
    let s = Site::new("opent");
    let friend = s
        .host
        .peer("opentf", &["10.97.0.1/24"], &[&format!("{FRIEND}/24")]);
    let _listener = listen_in(&s.host.ns, 8080);
    s.fw(0, &["apply", "web", "--auto-confirm", "--no-probe"]);
    // A pending apply, so that a watcher runs, and the opening after it.
    s.fw(0, &["apply", "other", "--timeout", "600", "--no-probe"]);
    s.host.watcher_pid();
    s.fw(0, &["open", "8080/tcp", "--from", FRIEND, "--for", "3s"]);
    assert!(
        connects(&friend, "10.97.0.1"),
        "the opened source was shut out"
    );
    s.host.kill_watcher();
    kill_all_naming(&s.host.needle());
    assert!(s.host.processes().is_empty());
    assert!(
        wait_until(Duration::from_secs(60), || !connects(&friend, "10.97.0.1")),
        "the opening did not close"
    );
    // Read only now, by a fresh process: the element is gone.
    let text = s.host.table_text();
    assert!(!text.contains(FRIEND), "{text}");
}

#[test]
#[ignore = "needs root"]
fn open_refusals_and_their_exit_codes() {
    needs_root("open_refusals_and_their_exit_codes");
    let s = Site::new("openr");
    let out = s.fw(4, &["open", "8080/tcp", "--from", FRIEND, "--for", "10m"]);
    assert!(
        stderr(&out).contains("apply a profile first"),
        "{}",
        stderr(&out)
    );
    s.fw(0, &["apply", "web", "--auto-confirm", "--no-probe"]);
    // No expiry, or one past the week: refused.
    s.fw(2, &["open", "8080/tcp", "--from", FRIEND]);
    let out = s.fw(4, &["open", "8080/tcp", "--from", FRIEND, "--for", "8d"]);
    assert!(stderr(&out).contains("7 days"), "{}", stderr(&out));
    // `any` only when said twice.
    let out = s.fw(4, &["open", "8080/tcp", "--from", "any", "--for", "10m"]);
    assert!(stderr(&out).contains("--yes-any"), "{}", stderr(&out));
    let out = s.fw(
        4,
        &["--json", "open", "8080/tcp", "--from", "any", "--for", "1m"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    let any = [
        "--json",
        "open",
        "8080/tcp",
        "--from",
        "any",
        "--for",
        "10m",
        "--yes-any",
    ];
    let v: serde_json::Value = serde_json::from_slice(&s.fw(0, &any).stdout).unwrap();
    assert_eq!(v["from"], serde_json::json!(["0.0.0.0/0", "::/0"]), "{v}");
    assert_eq!(v["port"], "8080/tcp", "{v}");
    assert_eq!(v["secs"], 600, "{v}");
    // A port the profile denies explicitly: refused unless forced.
    let out = s.fw(4, &["open", "6379/tcp", "--from", FRIEND, "--for", "10m"]);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    s.fw(
        0,
        &[
            "open", "6379/tcp", "--from", FRIEND, "--for", "10m", "--force",
        ],
    );
    // An overlapping source on the same port: close the other first.
    let out = s.fw(4, &["open", "8080/tcp", "--from", FRIEND, "--for", "10m"]);
    assert!(stderr(&out).contains("close 8080/tcp"), "{}", stderr(&out));
    // Usage errors.
    let out = s.fw(2, &["open", "8080/tcp", "--from", "nobody", "--for", "10m"]);
    assert!(
        stderr(&out).contains("its groups: friends"),
        "{}",
        stderr(&out)
    );
    s.fw(2, &["open", "8080", "--from", FRIEND, "--for", "10m"]);
    let v: serde_json::Value = serde_json::from_slice(
        &s.fw(0, &["--json", "close", "8080/tcp", "--from", "any"])
            .stdout,
    )
    .unwrap();
    assert_eq!(v["closed"].as_array().unwrap().len(), 2, "{v}");

    // An element added by hand without a timeout: `status` says so, and
    // the next apply does not make it permanent.
    s.host.sh(&[
        "nft",
        "add",
        "element",
        "inet",
        "fwharden",
        "_open_v4",
        "{ 10.97.0.9 . tcp . 9999 }",
    ]);
    let v = s.host.status();
    let why = v["openings_unreadable"].as_str().unwrap_or_default();
    assert!(why.contains("without a timeout"), "{v}");
    s.fw(0, &["apply", "other", "--auto-confirm", "--no-probe"]);
    let left = s.openings();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["port"], "6379/tcp", "the forced opening is kept");
    s.host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn no_opening_is_lost_while_applies_and_restores_run() {
    needs_root("no_opening_is_lost_while_applies_and_restores_run");
    let s = Site::new("openld");
    s.fw(0, &["apply", "web", "--auto-confirm", "--no-probe"]);
    let sources: Vec<String> = (1..=30).map(|i| format!("10.97.1.{i}")).collect();
    std::thread::scope(|scope| {
        // Applies (a generation from the caller) and restores (none: the
        // ban gate and a generation read inside), back to back, while the
        // openings come in.
        scope.spawn(|| {
            for i in 0..12 {
                match i % 3 {
                    0 => s.fw(0, &["apply", "other", "--auto-confirm", "--no-probe"]),
                    1 => s.fw(0, &["restore"]),
                    _ => s.fw(0, &["apply", "web", "--auto-confirm", "--no-probe"]),
                };
            }
        });
        for from in &sources {
            s.fw(0, &["open", "9090/tcp", "--from", from, "--for", "1h"]);
        }
    });
    let held: Vec<String> = s
        .openings()
        .iter()
        .map(|o| o["from"].as_str().unwrap().to_string())
        .collect();
    for from in &sources {
        assert!(
            held.contains(&format!("{from}/32")),
            "{from} was lost: {held:?}"
        );
    }
    assert_eq!(held.len(), sources.len(), "{held:?}");
    s.host.wait_quiet();
}
