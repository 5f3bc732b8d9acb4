//! The probe's verdicts for published container ports against a real
//! Docker daemon (Debian's docker.io) in a test namespace: what `fwharden
//! probe` says its replica saw for each published port is what a real
//! client namespace sees connecting to the port Docker publishes, with the
//! profile applied on the Docker host, for `containers = "filter"` and for
//! `containers = "ignore"`. Three namespaces, linked by veth pairs and to
//! nothing else:
//!
//! ```text
//!   inet (198.51.100.2) --eth0-- host (Docker, fwharden) --wg0-- wg (10.8.0.2)
//! ```
//!
//! One container listens on 6379, published as 6379, 80, 443 and 8081:
//! web is allowed from anywhere, Redis from the group on wg0, and 8081 is
//! named by no rule.

mod common;
mod docker {
    pub mod clients;
    pub mod engine;
}

use common::*;
use docker::clients::{Client, Clients, HOST_INET, HOST_WG, WG_NET};
use docker::engine::{have_docker, Engine};
use ipnet::IpNet;
use serde_json::Value;

/// Rules that name wg0, so the replica has a wg0 like the Docker host.
const RULES: &str = r#"[groups]
wg = ["10.8.0.0/24"]
[[rule]]
allow = ["http", "https"]
[[rule]]
allow = "redis"
from = "wg"
interface = "wg0"
[[rule]]
allow = "ssh"
from = "wg"
interface = "wg0"
"#;

struct Net {
    host: Host,
    clients: Clients,
    profiles: tempfile::TempDir,
}

impl Net {
    fn new() -> Net {
        let host = Host::new("dphost");
        let clients = Clients::link(&host.ns, "dp");
        let profiles = tempfile::tempdir().unwrap();
        for c in ["filter", "ignore"] {
            let text = format!(
                "description = \"Redis in Docker ({c})\"\n[defaults]\ncontainers = \"{c}\"\n{RULES}"
            );
            std::fs::write(profiles.path().join(format!("dp-{c}.toml")), text).unwrap();
        }
        Net {
            host,
            clients,
            profiles,
        }
    }

    fn fw(&self, args: &[&str]) -> std::process::Output {
        self.host.expect_in(self.profiles.path(), 0, args)
    }
}

/// The published rows of `fwharden --json probe` (or of apply's probe),
/// as (source, interface, port, what the replica saw).
fn published_rows(report: &Value) -> Vec<(std::net::IpAddr, String, String, String)> {
    let rows = report["rows"].as_array().expect("rows");
    rows.iter()
        .filter(|r| r["to"] == "published")
        .map(|r| {
            assert_eq!(r["got"]["kind"], "seen", "{r}");
            (
                r["source"].as_str().unwrap().parse().unwrap(),
                r["interface"].as_str().unwrap().to_string(),
                r["service"].as_str().unwrap().to_string(),
                r["got"]["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// What the replica saw for `client`'s class of source (in the group or
/// in no group) on its interface, for TCP `port`; `None` when the plan has
/// no such row.
fn replica_says(report: &Value, client: Client, port: u16) -> Option<bool> {
    let wg: IpNet = WG_NET.parse().unwrap();
    let service = format!("{port}/tcp");
    let seen: Vec<String> = published_rows(report)
        .into_iter()
        .filter(|(source, iface, s, _)| {
            let class = match client {
                Client::Inet => !wg.contains(source) && iface == "eth0",
                Client::Wg => wg.contains(source) && iface == "wg0",
            };
            class && source.is_ipv4() && *s == service
        })
        .map(|(.., got)| got)
        .collect();
    // Every representative of a class must have seen the same.
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "{client:?} {port}: {seen:?}"
    );
    seen.first().map(|got| got == "open")
}

/// The cases the replica must have a row for, and what it must say.
const CASES: &[(Client, u16)] = &[
    (Client::Inet, 6379),
    (Client::Wg, 6379),
    (Client::Inet, 80),
    (Client::Inet, 443),
    (Client::Inet, 8081),
    (Client::Wg, 8081),
];

/// Applies `profile` on the Docker host, probes it, and checks that the
/// replica's verdict for every case is what the real client sees; returns
/// what the clients saw.
fn compare(net: &Net, profile: &str) -> Vec<bool> {
    let applied = net.fw(&["--json", "apply", profile, "--auto-confirm"]);
    let applied: Value = serde_json::from_slice(&applied.stdout).unwrap();
    assert_eq!(applied["probed"], true, "apply's self-probe ran: {applied}");
    let probed = net.fw(&["--json", "probe", profile]);
    let report: Value = serde_json::from_slice(&probed.stdout).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    let real: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = CASES
            .iter()
            .map(|&(client, port)| s.spawn(move || net.clients.reaches(client, port)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut wrong = Vec::new();
    for (&(client, port), &seen) in CASES.iter().zip(&real) {
        let says = replica_says(&report, client, port)
            .unwrap_or_else(|| panic!("{profile}: no published row for {client:?} {port}"));
        if says != seen {
            wrong.push(format!(
                "{client:?} -> {port}: the probe says {}, a real client {}",
                if says { "open" } else { "filtered" },
                if seen { "connects" } else { "does not" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{profile}: {wrong:#?}");
    real
}

/// `fwharden scan` from each real client, naming the ports Docker
/// publishes: every row matches (published 80 and 443 answer from the
/// container, 6379 only for the group), and the published rows say so.
fn scan_published(net: &Net) {
    let published = "6379/tcp,80/tcp,443/tcp,8081/tcp";
    for (ns, host, from, via) in [
        (&net.clients.inet, HOST_INET, "any", "eth0"),
        (&net.clients.wg, HOST_WG, "wg", "wg0"),
    ] {
        let out = fw_in(ns, net.host.dir())
            .arg("--profile-dir")
            .arg(net.profiles.path())
            .args(["--json", "scan", host, "--profile", "dp-filter"])
            .args(["--from", from, "--via", via, "--published", published])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
        assert_eq!(out.status.code(), Some(0), "scan from {from}: {v:#}");
        let rows = v["rows"].as_array().unwrap();
        let row = |service: &str| {
            rows.iter()
                .find(|r| r["service"] == service)
                .unwrap_or_else(|| panic!("no row {service}: {v:#}"))
        };
        for port in ["6379/tcp", "80/tcp", "443/tcp", "8081/tcp"] {
            assert_eq!(row(port)["to"], "published", "{v:#}");
        }
        let redis = row("6379/tcp");
        let want = if from == "wg" { "open" } else { "filtered" };
        assert_eq!(redis["expected"], want, "{v:#}");
        assert_eq!(row("80/tcp")["got"]["detail"], "open", "{v:#}");
    }
}

#[test]
#[ignore = "needs root"]
fn probe_verdicts_for_published_ports_match_a_real_client_of_docker() {
    let test = "probe_verdicts_for_published_ports_match_a_real_client_of_docker";
    needs_root(test);
    if !have_docker(test) {
        return;
    }
    let before = host_tables();
    let net = Net::new();
    let engine = Engine::start(&net.host.ns);
    engine.run_listener(
        "redis",
        6379,
        &["6379:6379", "80:6379", "443:6379", "8081:6379"],
    );
    assert!(
        wait_until(std::time::Duration::from_secs(20), || net
            .clients
            .reaches(Client::Inet, 6379)),
        "the published port answers before any profile"
    );

    let filter = compare(&net, "dp-filter");
    // Web open, Redis for the group only, 8081 for nobody: both verdicts
    // occur, so agreement is not agreement on one answer.
    assert_eq!(filter, [false, true, true, true, false, false]);
    scan_published(&net);
    let ignore = compare(&net, "dp-ignore");
    assert!(ignore.iter().all(|&open| open), "{ignore:?}");

    drop(engine);
    drop(net);
    assert_eq!(
        host_tables(),
        before,
        "the machine's own tables are unchanged"
    );
}
