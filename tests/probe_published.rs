//! Published container ports in the probe replica: the probes of ports a
//! container publishes are DNAT'd to a container namespace and forwarded,
//! so the `containers` chain's verdict is proven with packets. A kernel
//! ruleset without the chain, or with a chain that matches the forwarded
//! port instead of the original one, is caught by those rows alone; and
//! with `containers = "ignore"` the rows show the published port open to
//! everyone.

mod common;

use common::*;
use fwharden::probe::plan::Destination;
use fwharden::probe::{self, Outcome, Report, Row};
use fwharden::profile::{load, SearchPath};
use fwharden::ruleset::{Match, Ruleset};

fn interlock() {
    std::env::set_var(fwharden::rollback::FORBID_ENV, own_netns());
}

/// vps-profile, or the same profile under `[defaults] containers =
/// "ignore"` (a profile that extends it).
fn vps(containers: &str) -> Ruleset {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("extends = \"vps-profile\"\n[defaults]\ncontainers = \"{containers}\"\n");
    std::fs::write(dir.path().join("vps-c.toml"), text).unwrap();
    let search = SearchPath::only(vec![dir.path().to_path_buf(), root().join("profiles")]);
    fwharden::compile::compile(&load("vps-c", &search).profile.expect("a valid profile"))
}

fn published(report: &Report) -> Vec<&Row> {
    let rows = report.rows.iter();
    rows.filter(|r| r.to == Destination::Published).collect()
}

/// The published row `source iface service`.
fn row<'a>(report: &'a Report, source: &str, iface: &str, service: &str) -> &'a Row {
    let source: std::net::IpAddr = source.parse().unwrap();
    published(report)
        .into_iter()
        .find(|r| r.source == source && r.interface == iface && r.service == service)
        .unwrap_or_else(|| panic!("no published row {source} {iface} {service}"))
}

fn got(row: &Row) -> Option<Outcome> {
    match row.got {
        probe::send::Got::Seen(o) => Some(o),
        probe::send::Got::Inconclusive(_) => None,
    }
}

#[test]
#[ignore = "needs root"]
fn vps_profile_published_ports_are_proven_through_dnat_and_forward() {
    needs_root("vps_profile_published_ports_are_proven_through_dnat_and_forward");
    interlock();
    let before = host_tables();
    let report = probe::prove(&vps("filter"), probe::TIMEOUT).unwrap();
    assert!(report.passed, "{}", report.table());
    let rows = published(&report);
    let count = |o| rows.iter().filter(|r| got(r) == Some(o)).count();
    assert!(count(Outcome::Open) >= 6, "{}", report.table());
    assert!(count(Outcome::Filtered) >= 10, "{}", report.table());
    // Redis through the tunnel, not from the internet nor off the tunnel.
    assert_eq!(
        got(row(&report, "10.0.0.0", "wg0", "6379/tcp")),
        Some(Outcome::Open)
    );
    for (source, iface) in [("203.0.113.200", "eth0"), ("10.0.0.0", "eth0")] {
        assert_eq!(
            got(row(&report, source, iface, "6379/tcp")),
            Some(Outcome::Filtered)
        );
    }
    // Web from anywhere, both families; a port no rule names from nowhere.
    assert_eq!(
        got(row(&report, "2001:db8:ffff::200", "eth0", "443/tcp")),
        Some(Outcome::Open)
    );
    for service in ["8081/tcp", "8081/udp"] {
        let r = row(&report, "203.0.113.200", "eth0", service);
        assert_eq!(got(r), Some(Outcome::Filtered));
        assert!(r.rule.contains("published port no rule allows"), "{r:?}");
    }
    let table = report.table();
    assert!(table.contains("6379/tcp published (container)"), "{table}");
    assert_eq!(host_tables(), before, "the machine's own ruleset changed");
}

#[test]
#[ignore = "needs root"]
fn a_kernel_without_the_containers_chain_fails_only_published_rows() {
    needs_root("a_kernel_without_the_containers_chain_fails_only_published_rows");
    interlock();
    let expected = vps("filter");
    let mut broken = expected.clone();
    broken.chains.retain(|c| c.name != "containers");
    let report = probe::prove_loaded(&expected, &broken, probe::TIMEOUT).unwrap();
    assert!(!report.passed, "{}", report.table());
    assert_eq!(report.inconclusive, 0, "{}", report.table());
    let failing: Vec<&Row> = report.failures().collect();
    assert!(
        failing.iter().all(|r| r.to == Destination::Published),
        "{}",
        report.table()
    );
    let internet = row(&report, "203.0.113.200", "eth0", "6379/tcp");
    assert_eq!(
        (internet.expected, got(internet)),
        (Outcome::Filtered, Some(Outcome::Open)),
        "the engine's DNAT alone lets the internet in"
    );
}

#[test]
#[ignore = "needs root"]
fn a_containers_chain_matching_the_forwarded_port_is_caught() {
    needs_root("a_containers_chain_matching_the_forwarded_port_is_caught");
    interlock();
    let expected = vps("filter");
    let mut broken = expected.clone();
    // `th dport` instead of `ct original proto-dst`: it sees the container's
    // port, which the replica's DNAT makes differ from the published one.
    for chain in broken.chains.iter_mut().filter(|c| c.name == "containers") {
        for rule in &mut chain.rules {
            for m in &mut rule.matches {
                if let Match::OrigDestPort(ranges) = m {
                    *m = Match::DestPort(ranges.clone());
                }
            }
        }
    }
    assert_ne!(broken, expected);
    let report = probe::prove_loaded(&expected, &broken, probe::TIMEOUT).unwrap();
    assert!(!report.passed, "{}", report.table());
    let web = row(&report, "203.0.113.200", "eth0", "443/tcp");
    assert_eq!(
        (web.expected, got(web)),
        (Outcome::Open, Some(Outcome::Filtered)),
        "{}",
        report.table()
    );
    let wg = row(&report, "10.0.0.0", "wg0", "6379/tcp");
    assert_eq!(got(wg), Some(Outcome::Filtered), "{}", report.table());
    assert!(report.failures().all(|r| r.to == Destination::Published));
}

#[test]
#[ignore = "needs root"]
fn a_containers_chain_without_its_rate_limit_is_caught_by_a_published_sequence() {
    needs_root("a_containers_chain_without_its_rate_limit_is_caught_by_a_published_sequence");
    interlock();
    let expected = vps("filter");
    let mut broken = expected.clone();
    for chain in broken.chains.iter_mut().filter(|c| c.name == "containers") {
        let limited = |r: &fwharden::ruleset::Rule| {
            let over = |m: &Match| matches!(m, Match::SourceRateOver { .. });
            r.matches.iter().any(over)
        };
        chain.rules.retain(|r| !limited(r));
    }
    assert_ne!(broken, expected);
    let report = probe::prove_loaded(&expected, &broken, probe::TIMEOUT).unwrap();
    assert!(!report.passed, "{}", report.table());
    let failing: Vec<String> = report
        .failures()
        .map(|r| format!("{} {} {:?}", r.source, r.service, r.to))
        .collect();
    assert!(
        failing.contains(&"10.0.0.255 22/tcp by #16 Published".to_string()),
        "{failing:#?}\n{}",
        report.table()
    );
    assert!(
        report.failures().all(|r| r.to == Destination::Published),
        "{}",
        report.table()
    );
}

#[test]
#[ignore = "needs root"]
fn with_containers_ignored_the_replica_shows_published_ports_open_to_all() {
    needs_root("with_containers_ignored_the_replica_shows_published_ports_open_to_all");
    interlock();
    let filter = probe::prove(&vps("filter"), probe::TIMEOUT).unwrap();
    let ignore = probe::prove(&vps("ignore"), probe::TIMEOUT).unwrap();
    assert!(filter.passed, "{}", filter.table());
    assert!(ignore.passed, "{}", ignore.table());
    // The same published probes (and more: with no chain of ours on the
    // forward hook no meter counts them, so none is left out to spare a
    // bucket); where filter drops, ignore lets in.
    let key = |r: &Row| (r.source, r.interface.clone(), r.service.clone());
    let i: Vec<&Row> = published(&ignore);
    assert!(i.iter().all(|r| got(r) == Some(Outcome::Open)));
    let mut differ = 0;
    // Rate sequences aside: with no chain of ours, no limit holds on the
    // published path, and the plan sends no sequence there.
    for a in published(&filter)
        .into_iter()
        .filter(|r| !r.service.contains('#'))
    {
        let b = i.iter().find(|b| key(b) == key(a));
        let b = b.unwrap_or_else(|| panic!("{a:?} not probed with containers = ignore"));
        if got(a) != got(b) {
            differ += 1;
        }
    }
    assert!(differ >= 10, "{differ} rows differ");
    let internet = row(&ignore, "203.0.113.200", "eth0", "6379/tcp");
    assert_eq!(
        internet.rule,
        "no chain of ours on forward: the engine decides (containers = \"ignore\")"
    );
    // The host's own ports are decided alike either way (ignore has a few
    // host rows more: from the sources that filter's published rate
    // sequences keep for themselves).
    let host = |r: &Report| -> Vec<(String, String, String, Outcome)> {
        r.rows
            .iter()
            .filter(|r| r.to == Destination::Host)
            .map(|r| {
                let s = r.source.to_string();
                (s, r.interface.clone(), r.service.clone(), r.expected)
            })
            .collect()
    };
    let in_ignore = host(&ignore);
    for row in host(&filter) {
        assert!(in_ignore.contains(&row), "{row:?}");
    }
}

#[test]
#[ignore = "needs root"]
fn probe_json_marks_published_rows() {
    needs_root("probe_json_marks_published_rows");
    let out = fwharden()
        .args([
            "--profile-dir",
            "profiles",
            "--json",
            "probe",
            "vps-profile",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let to = |t: &str| rows.iter().filter(|r| r["to"] == t).count();
    assert!(to("published") > 10 && to("host") > 10, "{v}");
}

#[test]
#[ignore = "needs root"]
fn without_nft_the_published_probes_are_left_out_and_the_report_says_so() {
    needs_root("without_nft_the_published_probes_are_left_out_and_the_report_says_so");
    // A PATH with `ip` and nothing else: the replica builds, its DNAT
    // table cannot be loaded.
    let bin = tempfile::tempdir().unwrap();
    let ip = ["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("ip from iproute2");
    std::os::unix::fs::symlink(ip, bin.path().join("ip")).unwrap();
    let out = fwharden()
        .env("PATH", bin.path())
        .args([
            "--profile-dir",
            "profiles",
            "--json",
            "probe",
            "vps-profile",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("probes of published container ports left out")
            && notes.contains("nftables"),
        "{v}"
    );
    let rows = v["rows"].as_array().unwrap();
    // The host's own connections out need no container.
    assert!(
        rows.iter().all(|r| r["to"] == "host" || r["to"] == "out"),
        "{v}"
    );

    // apply's self-probe passes, and says on stderr and in its JSON what
    // it did not prove.
    let host = Host::new("dpnonft");
    let out = host
        .fw()
        .env("PATH", bin.path())
        .args(["--json", "apply", "vps-profile", "--auto-confirm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["probed"], true, "{v}");
    assert!(v["probe"]["notes"].to_string().contains("nftables"), "{v}");
    assert_eq!(v["probe"]["published"], 0, "{v}");
    assert!(
        stderr(&out).contains("probes of published container ports left out"),
        "{}",
        stderr(&out)
    );
}

/// More published connections than a listener's default accept queue
/// (128) holds: every one goes to the container's one port, which never
/// accepts, so a short queue would drop the SYNs past it and the rows
/// would read filtered where the profile opens.
#[test]
#[ignore = "needs root"]
fn more_published_connections_than_a_default_accept_queue_all_open() {
    needs_root("more_published_connections_than_a_default_accept_queue_all_open");
    interlock();
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<String> = (2001..2081)
        .step_by(2)
        .map(|p| format!("\"{p}/tcp\""))
        .collect();
    let text = format!(
        "extends = \"base\"\n[groups]\nlan = [\"192.0.2.0/25\", \"198.51.100.0/25\"]\n[[rule]]\nallow = [{}]\nfrom = \"lan\"\n",
        ports.join(", ")
    );
    std::fs::write(dir.path().join("many.toml"), text).unwrap();
    let search = SearchPath::only(vec![dir.path().to_path_buf(), root().join("profiles")]);
    let ruleset = fwharden::compile::compile(&load("many", &search).profile.expect("valid"));
    let report = probe::prove(&ruleset, probe::TIMEOUT).unwrap();
    let open = published(&report)
        .into_iter()
        .filter(|r| r.expected == Outcome::Open)
        .count();
    assert!(open > 128, "only {open} published connections open");
    assert!(report.passed, "{}", report.table());
}
