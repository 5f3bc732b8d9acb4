//! `fwharden log` against a real kernel: a host namespace holding a
//! profile that logs to NFLOG, a peer namespace linked to it; TCP probes
//! from the peer that a logging deny rule and the drop policy drop appear
//! in `fwharden log --json --follow`, each with the profile line (or the
//! `log_drops` default) that decided it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::readme::readme_blocks;
use common::*;
use fwharden::netns::Netns;

const HOST: &str = "10.95.0.1";
const PEER: &str = "10.95.0.2";
/// A second address of the peer, in no group.
const FLOODER: &str = "10.95.0.3";

/// The rule of line 8 denies port 2323 from admin, and logs.
const PROFILE: &str = "# tests/log.rs
[defaults]
nflog_group = 7

[groups]
admin = [\"10.95.0.2\"]

[[rule]]
deny = 2323
from = \"admin\"
log = true

[[rule]]
allow = \"ssh\"
from = \"admin\"

[[rule]]
deny = \"2525/udp\"
log = true
";

/// A `fwharden log` running in the background, killed when dropped; its
/// output lines arrive on channels (no read ever blocks the test).
struct Follower {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Follower {
    fn start(host: &Host, profiles: &std::path::Path, args: &[&str]) -> Follower {
        let mut cmd = host.fw();
        cmd.args(["--profile-dir", profiles.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Follower { child, out, err }
    }

    /// Waits (generously) for the line saying the group is bound.
    fn wait_bound(&self) {
        let said = self
            .err
            .recv_timeout(Duration::from_secs(60))
            .expect("fwharden log says it is reading within 60 s");
        assert!(said.contains("reading NFLOG group 7"), "{said}");
    }

    /// JSON lines until `done` holds for the ones seen, or 60 s pass.
    fn until(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let end = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = end.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => seen.push(serde_json::from_str(&line).unwrap()),
                Err(_) => break,
            }
        }
        seen
    }
}

fn probe(peer: &Netns, port: u16) -> bool {
    let addr: SocketAddr = format!("{HOST}:{port}").parse().unwrap();
    peer.run_in(|| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
        .unwrap()
}

fn is(e: &serde_json::Value, port: u64, line: &str) -> bool {
    e["port"] == port && e["line"] == line && e["src"] == PEER && e["dst"] == HOST
}

#[test]
#[ignore = "needs root"]
fn dropped_probes_appear_in_log_json_with_their_profile_line() {
    needs_root("dropped_probes_appear_in_log_json_with_their_profile_line");
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(profiles.path().join("logged.toml"), PROFILE).unwrap();
    let host = Host::new("log");
    let peer = Netns::create("logp").unwrap();
    host.ns
        .link(
            &peer,
            &[&format!("{HOST}/24")],
            &[&format!("{PEER}/24"), &format!("{FLOODER}/24")],
        )
        .unwrap();
    host.expect_in(
        profiles.path(),
        0,
        &["apply", "logged", "--auto-confirm", "--no-probe"],
    );

    let follower = Follower::start(&host, profiles.path(), &["--json", "log", "--follow"]);
    follower.wait_bound();
    // A second reader of the same group is refused, saying why.
    let second = host.expect_in(profiles.path(), 1, &["log", "--seconds", "1"]);
    assert!(
        stderr(&second).contains("already has a listener"),
        "{}",
        stderr(&second)
    );

    assert!(!probe(&peer, 2323), "line 8 denies 2323 from admin");
    assert!(
        !probe(&peer, 2424),
        "no rule allows 2424: the policy drops it"
    );
    let seen = follower.until(|s| {
        s.iter().any(|e| is(e, 2323, "logged.toml:8")) && s.iter().any(|e| is(e, 2424, ""))
    });
    let deny = seen
        .iter()
        .find(|e| is(e, 2323, "logged.toml:8"))
        .unwrap_or_else(|| panic!("no entry for the probe of 2323 from line 8: {seen:?}"));
    assert_eq!(deny["verdict"], "drop");
    assert_eq!(deny["proto"], "tcp");
    assert!(
        deny["rule"]
            .as_str()
            .unwrap()
            .starts_with("logged.toml:8 deny"),
        "{deny}"
    );
    assert!(deny["iface"].as_str().unwrap().starts_with("fwa"), "{deny}");
    let policy = seen
        .iter()
        .find(|e| is(e, 2424, ""))
        .unwrap_or_else(|| panic!("no entry for the probe of 2424: {seen:?}"));
    assert_eq!(policy["verdict"], "drop");
    assert_eq!(policy["rule"], "defaults: log drops (policy drop)");
    drop(follower);

    // Filters, and text lines: only the 2323 probe, then the count ends it.
    let filtered = Follower::start(
        &host,
        profiles.path(),
        &[
            "log", "--follow", "--port", "2323", "--from", PEER, "--count", "1",
        ],
    );
    filtered.wait_bound();
    assert!(!probe(&peer, 2424));
    assert!(!probe(&peer, 2323));
    let line = filtered
        .out
        .recv_timeout(Duration::from_secs(60))
        .expect("a text line for the probe of 2323");
    assert!(
        line.contains(&format!("drop   {PEER} -> {HOST} tcp/2323 iface=fwa")),
        "{line}"
    );
    assert!(
        line.ends_with("logged.toml:8 deny 2323 from admin"),
        "{line}"
    );

    // The README's example is this profile's output, time and interface
    // aside.
    let blocks = readme_blocks("## Observing: metrics and log");
    // After status's and metrics' examples.
    let example = &blocks[2];
    let mask = |l: &str| -> String {
        l.split(' ')
            .skip(1)
            .map(|w| if w.starts_with("iface=") { "iface=" } else { w })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let shown = example
        .lines()
        .find(|l| l.contains("tcp/2323"))
        .expect("README shows the probe of 2323");
    assert_eq!(mask(shown), mask(&line), "README's text line");
    let json_shown: serde_json::Value = example
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("README shows a JSON line");
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&json_shown), keys(deny), "README's JSON keys");
    assert_eq!(json_shown["rule"], deny["rule"]);
}

/// `count` UDP datagrams from `src` (an address of the peer) to the
/// host's `port`.
fn datagrams(peer: &Netns, src: &str, port: u16, count: usize) {
    let (src, to): (std::net::IpAddr, SocketAddr) = (
        src.parse().unwrap(),
        format!("{HOST}:{port}").parse().unwrap(),
    );
    peer.run_in(move || {
        let s = std::net::UdpSocket::bind((src, 0)).unwrap();
        for _ in 0..count {
            s.send_to(b"probe", to).unwrap();
        }
    })
    .unwrap();
}

#[test]
#[ignore = "needs root"]
fn the_summary_ranks_a_flooding_source_first() {
    needs_root("the_summary_ranks_a_flooding_source_first");
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(profiles.path().join("logged.toml"), PROFILE).unwrap();
    let host = Host::new("logs");
    let peer = Netns::create("logsp").unwrap();
    host.ns
        .link(
            &peer,
            &[&format!("{HOST}/24")],
            &[&format!("{PEER}/24"), &format!("{FLOODER}/24")],
        )
        .unwrap();
    host.expect_in(
        profiles.path(),
        0,
        &["apply", "logged", "--auto-confirm", "--no-probe"],
    );
    // Everything read, then the last hour's window while following (NFLOG
    // keeps no history: it is what the command saw).
    let once = [
        "--json",
        "log",
        "--summary",
        "--port",
        "2525",
        "--count",
        "15",
        "--seconds",
        "120",
    ];
    let window = [
        "--json",
        "log",
        "--follow",
        "--summary",
        "--since",
        "1h",
        "--port",
        "2525",
        "--count",
        "15",
    ];
    for args in [&once[..], &window[..]] {
        let mut reader = Follower::start(&host, profiles.path(), args);
        reader.wait_bound();
        datagrams(&peer, PEER, 2525, 3);
        datagrams(&peer, FLOODER, 2525, 12);
        // The count ends it: the summary is printed, then the process exits.
        let end = Instant::now() + Duration::from_secs(120);
        let mut text = String::new();
        while let Ok(line) = reader
            .out
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            text.push_str(&line);
        }
        assert!(
            wait_until(Duration::from_secs(60), || reader
                .child
                .try_wait()
                .unwrap()
                .is_some()),
            "log {args:?} ends after 15 packets"
        );
        // Following, the window is also printed every 10 seconds, one JSON
        // object a line: the last is the one at the end.
        let last = match args.contains(&"--follow") {
            true => text.lines().last().unwrap_or_default(),
            false => text.as_str(),
        };
        let report: serde_json::Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("the summary is one JSON document ({e}): {text}"));
        let since = if args.contains(&"--since") {
            3600.into()
        } else {
            serde_json::Value::Null
        };
        assert_eq!(report["since_secs"], since, "{report}");
        assert_eq!(report["packets"], 15, "{report}");
        assert_eq!(report["sources"][0]["key"], FLOODER, "{report}");
        assert_eq!(report["sources"][0]["packets"], 12, "{report}");
        assert_eq!(report["sources"][1]["key"], PEER, "{report}");
        assert_eq!(report["ports"][0]["key"], "udp/2525", "{report}");
        assert!(
            report["rules"][0]["key"]
                .as_str()
                .unwrap()
                .starts_with("logged.toml:17 deny 2525"),
            "{report}"
        );
    }
    // Following, a summary without a window would never be printed.
    let out = host.expect_in(
        profiles.path(),
        fwharden::exit::USAGE,
        &["log", "--follow", "--summary"],
    );
    assert!(stderr(&out).contains("needs --since"), "{}", stderr(&out));
    // NFLOG keeps no history: a window of the past is refused, and so is
    // the journal.
    for args in [
        &["log", "--since", "1h"][..],
        &["log", "--summary", "--since", "1h"],
        &["log", "--follow", "--since", "1h"],
        &["log", "--journal-dir", "/nonexistent"],
    ] {
        let out = host.expect_in(profiles.path(), fwharden::exit::USAGE, args);
        assert!(stderr(&out).contains("NFLOG"), "{args:?}: {}", stderr(&out));
    }
}
