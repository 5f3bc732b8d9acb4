use ipnet::IpNet;

use super::*;
use crate::profile::{load, SearchPath};

fn compiled(name: &str) -> Ruleset {
    let search = SearchPath {
        dirs: vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("profiles")],
        builtin: false,
    };
    crate::compile::compile(&load(name, &search).profile.expect("a valid profile"))
}

fn find<'a>(plan: &'a Plan, source: &str, iface: &str, service: Service) -> &'a Probe {
    find_to(plan, Destination::Host, source, iface, service)
}

fn find_to<'a>(
    plan: &'a Plan,
    to: Destination,
    source: &str,
    iface: &str,
    service: Service,
) -> &'a Probe {
    let source: IpAddr = source.parse().unwrap();
    plan.probes
        .iter()
        .find(|p| p.source == source && p.interface == iface && p.service == service && p.to == to)
        .unwrap_or_else(|| panic!("no probe {source} {iface} {service} to {to:?}"))
}

/// The published probe, as (expected, deciding rule).
fn published(plan: &Plan, source: &str, iface: &str, service: Service) -> (Outcome, String) {
    let p = find_to(plan, Destination::Published, source, iface, service);
    (p.expected, p.rule.clone())
}

/// A profile from text, compiled: `body` after a `[defaults]` of `defaults`.
fn compiled_text(defaults: &str, body: &str) -> Ruleset {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("description = \"t\"\n[defaults]\n{defaults}\n{body}");
    std::fs::write(dir.path().join("t.toml"), text).unwrap();
    let search = SearchPath {
        dirs: vec![dir.path().to_path_buf()],
        builtin: false,
    };
    let loaded = load("t", &search);
    crate::compile::compile(&loaded.profile.expect("a valid profile"))
}

const REDIS_FOR_WG: &str = r#"[groups]
wg = ["10.8.0.0/24"]
[[rule]]
allow = ["http", "https"]
[[rule]]
allow = "redis"
from = "wg"
"#;

#[test]
fn vps_profile_plans_its_published_ports_with_the_containers_chain_verdicts() {
    let plan = build(&compiled("vps-profile"));
    let (got, rule) = published(&plan, "10.0.0.0", "wg0", Service::Tcp(6379));
    assert_eq!(got, Outcome::Open);
    assert!(rule.contains("databases only through the tunnel"), "{rule}");
    let unnamed = "defaults: containers: published port no rule allows";
    for (source, iface) in [("203.0.113.200", "eth0"), ("10.0.0.0", "eth0")] {
        let (got, rule) = published(&plan, source, iface, Service::Tcp(6379));
        assert_eq!((got, rule.as_str()), (Outcome::Filtered, unnamed));
    }
    let (got, _) = published(&plan, "2001:db8:ffff::200", "eth0", Service::Tcp(443));
    assert_eq!(got, Outcome::Open);
    // Just outside the database ports.
    let (got, _) = published(&plan, "10.0.0.0", "wg0", Service::Tcp(6380));
    assert_eq!(got, Outcome::Filtered);
    // A port no rule names, from anywhere and from the groups' members.
    for (source, iface) in [
        ("203.0.113.200", "eth0"),
        ("2001:db8:ffff::200", "eth0"),
        ("10.0.0.0", "wg0"),
        ("192.0.2.10", "eth0"),
    ] {
        for service in [Service::Tcp(8081), Service::Udp(8081)] {
            let (got, rule) = published(&plan, source, iface, service);
            assert_eq!((got, rule.as_str()), (Outcome::Filtered, unnamed));
        }
    }
    // The container's own port is one no rule names.
    assert_eq!(plan.container_port, 9);
    // No published probe is sent from a rate sequence's source to a port
    // its meter counts: the published connection spends the same tokens.
    for p in plan
        .probes
        .iter()
        .filter(|p| p.to == Destination::Published)
    {
        let rate_source = plan.rate_probes.iter().any(|r| r.source == p.source);
        assert!(!(rate_source && p.service == Service::Tcp(22)), "{p:?}");
    }
    // The replica listens on the host's ports, never for published ones
    // alone: 8081 is named by no host probe.
    assert!(!plan.services().contains(&Service::Tcp(8081)));
}

#[test]
fn with_containers_ignored_every_published_port_is_open_to_everyone() {
    let filter = build(&compiled_text("containers = \"filter\"", REDIS_FOR_WG));
    let ignore = build(&compiled_text("containers = \"ignore\"", REDIS_FOR_WG));
    let rows = |plan: &Plan| -> Vec<(IpAddr, String, Service, Outcome)> {
        plan.probes
            .iter()
            .filter(|p| p.to == Destination::Published)
            .map(|p| (p.source, p.interface.clone(), p.service, p.expected))
            .collect()
    };
    let (f, i) = (rows(&filter), rows(&ignore));
    assert_eq!(f.len(), i.len(), "the same probes, other expectations");
    assert!(f.iter().any(|r| r.3 == Outcome::Filtered));
    assert!(i.iter().all(|r| r.3 == Outcome::Open), "{i:?}");
    let (got, rule) = published(&ignore, "203.0.113.200", "eth0", Service::Tcp(6379));
    assert_eq!(
        (got, rule.as_str()),
        (Outcome::Open, published::LEFT_TO_ENGINE)
    );
    let (got, _) = published(&filter, "203.0.113.200", "eth0", Service::Tcp(6379));
    assert_eq!(got, Outcome::Filtered);
    // The host's own ports are decided by input either way.
    let host = |plan: &Plan| {
        plan.probes
            .iter()
            .filter(|p| p.to == Destination::Host)
            .count()
    };
    assert_eq!(host(&filter), host(&ignore));
}

#[test]
fn published_probes_stay_within_the_smallest_burst_of_a_source() {
    let body = r#"[groups]
admin = ["192.0.2.0/24", "198.51.100.0/24"]
[[rule]]
allow = "ssh"
from = "admin"
limit = "1/minute"
burst = 1
"#;
    let plan = build(&compiled_text("", body));
    let ssh = Service::Tcp(22);
    // Per source: host and published probes of 22 that the meter counts,
    // at most the burst (the two rate sequences' sources, 192.0.2.0 and
    // 192.0.2.255, have none; 198.51.100.0 and .255 have both kinds).
    let mut per_source: std::collections::BTreeMap<IpAddr, usize> = Default::default();
    for p in plan.probes.iter().filter(|p| p.service == ssh) {
        if p.expected == Outcome::Open {
            *per_source.entry(p.source).or_default() += 1;
        }
    }
    assert!(!per_source.is_empty());
    assert!(per_source.values().all(|&n| n <= 1), "{per_source:?}");
}

#[test]
fn vps_profile_plan_covers_each_rule_with_its_expectation() {
    let plan = build(&compiled("vps-profile"));
    assert_eq!(plan.interfaces, ["eth0", "wg0"]);
    let p = find(&plan, "10.0.0.0", "wg0", Service::Tcp(5432));
    assert_eq!(p.expected, Outcome::Open);
    assert!(p.rule.contains("databases only through the tunnel"));
    assert_eq!(
        find(&plan, "10.0.0.255", "wg0", Service::Tcp(6379)).expected,
        Outcome::Open
    );
    assert_eq!(
        find(&plan, "10.0.0.0", "eth0", Service::Tcp(5432)).expected,
        Outcome::Filtered
    );
    assert_eq!(
        find(&plan, "203.0.113.200", "wg0", Service::Tcp(5432)).expected,
        Outcome::Filtered
    );
    // SSH from the first address of each group is the rate sequence's to
    // ask; the containers chain's limit is asked from another address of
    // the group, where it has one; admin_v4 holds a single address, so its
    // published sequence runs inside the host's, on the same bucket.
    let rate_sources: Vec<String> = plan
        .rate_probes
        .iter()
        .map(|r| r.source.to_string())
        .collect();
    let last = "2001:db8:1:0:ffff:ffff:ffff:ffff";
    assert_eq!(
        rate_sources,
        [
            "192.0.2.10",
            "192.0.2.10",
            "10.0.0.0",
            "10.0.0.255",
            "2001:db8:1::",
            last
        ]
    );
    let published: Vec<(String, bool)> = plan
        .rate_probes
        .iter()
        .filter(|r| r.to == Destination::Published)
        .map(|r| (r.source.to_string(), r.with_host))
        .collect();
    let published: Vec<(&str, bool)> = published.iter().map(|(s, w)| (s.as_str(), *w)).collect();
    assert_eq!(
        published,
        [("192.0.2.10", true), ("10.0.0.255", false), (last, false)]
    );
    for p in &plan.probes {
        assert!(
            !(rate_sources.contains(&p.source.to_string()) && p.service == Service::Tcp(22)),
            "{p:?} would spend a token of a rate sequence's meter"
        );
    }
    assert_eq!(
        find(&plan, "192.0.2.10", "eth0", Service::Tcp(23)).expected,
        Outcome::Filtered
    );
    assert_eq!(
        find(&plan, "2001:db8:ffff::200", "eth0", Service::Tcp(22)).expected,
        Outcome::Filtered
    );
    assert_eq!(
        find(&plan, "203.0.113.200", "eth0", Service::Udp(51820)).expected,
        Outcome::Open
    );
    assert_eq!(
        find(&plan, "203.0.113.200", "eth0", Service::Tcp(444)).expected,
        Outcome::Filtered
    );
    assert_eq!(
        find(&plan, "203.0.113.200", "eth0", Service::Tcp(23)).expected,
        Outcome::Filtered
    );
    assert_eq!(
        find(&plan, "2001:db8:ffff::200", "eth0", Service::Ping).expected,
        Outcome::Open
    );
    assert_eq!(plan.rate_probes.len(), 6, "{:#?}", plan.rate_probes);
    for r in &plan.rate_probes {
        assert_eq!(
            (r.first, r.spent, r.attempts),
            (Outcome::Open, Outcome::Filtered, 16)
        );
    }
}

#[test]
fn the_plan_does_not_grow_with_the_prefixes_of_a_group() {
    let with = |n: usize| {
        let mut r = compiled("vps-profile");
        let set = r.sets.iter_mut().find(|s| s.name == "wg-net_v4").unwrap();
        let nets: Vec<IpNet> = (0..n)
            .map(|i| {
                format!("10.{}.{}.0/24", 1 + i / 100, i % 100)
                    .parse()
                    .unwrap()
            })
            .collect();
        set.kind = SetKind::Prefixes(nets);
        build(&r)
    };
    let after = with(200);
    assert_eq!(
        after.probes.len(),
        with(2).probes.len(),
        "four representatives per set, whatever its size"
    );
    let sources = after.sources();
    assert!(sources.contains(&"10.1.0.0".parse().unwrap()));
    assert!(sources.contains(&"10.2.99.255".parse().unwrap()));
}

#[test]
fn wildcard_interfaces_get_a_concrete_name_and_the_other_interface_is_named_by_no_rule() {
    let mut r = compiled("vps-profile");
    for c in &mut r.chains {
        for rule in &mut c.rules {
            for m in &mut rule.matches {
                if let Match::InInterface(name) = m {
                    if name == "wg0" {
                        *name = "eth*".into();
                    }
                }
            }
        }
    }
    let plan = build(&r);
    assert_eq!(plan.interfaces, ["fwhother0", "eth7"]);
}

#[test]
fn every_shipped_profile_has_a_plan_with_open_and_filtered_rows() {
    for name in [
        "ssh-only",
        "web-server",
        "db-private",
        "redis-sentinel",
        "wireguard-gateway",
        "vps-profile",
    ] {
        let plan = build(&compiled(name));
        assert!(
            plan.probes.iter().any(|p| p.expected == Outcome::Open),
            "{name}"
        );
        assert!(
            plan.probes.iter().any(|p| p.expected == Outcome::Filtered),
            "{name}"
        );
        for to in [Destination::Host, Destination::Published] {
            let n = plan.probes.iter().filter(|p| p.to == to).count();
            assert!(n < 120, "{name}: {n} probes to {to:?}");
        }
        assert!(plan.has_published(), "{name}");
    }
}

#[test]
fn a_family_can_be_left_out_of_the_plan() {
    let mut plan = build(&compiled("vps-profile"));
    let total = plan.probes.len() + plan.rate_probes.len();
    let left_out = plan.without(Family::Ipv6);
    assert!(left_out > 5, "{left_out}");
    assert_eq!(plan.probes.len() + plan.rate_probes.len(), total - left_out);
    assert!(plan.sources().iter().all(|a| a.is_ipv4()));
}

#[test]
fn two_sequences_of_one_meter_never_share_a_source() {
    // One rule, one meter per family, counting tcp and udp together: the
    // tcp and the udp sequence run at once, so from one source they would
    // race for the same tokens.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        "[[rule]]\nallow = [4000, \"6000/udp\"]\nlimit = \"10/minute\"\nburst = 2\n",
    )
    .unwrap();
    let search = SearchPath {
        dirs: vec![dir.path().to_path_buf()],
        builtin: false,
    };
    let ruleset = crate::compile::compile(&load("t", &search).profile.unwrap());
    let plan = build(&ruleset);
    let sequences: Vec<(IpAddr, Service, Destination)> = plan
        .rate_probes
        .iter()
        .map(|r| (r.source, r.service, r.to))
        .collect();
    // tcp and udp, each family, to the host and to a published port.
    assert_eq!(sequences.len(), 8, "{sequences:?}");
    let sources: std::collections::BTreeSet<IpAddr> =
        sequences.iter().map(|(source, ..)| *source).collect();
    assert_eq!(
        sources.len(),
        8,
        "two sequences share a source: {sequences:?}"
    );
    for r in &plan.rate_probes {
        assert_eq!(
            (r.first, r.spent),
            (Outcome::Open, Outcome::Filtered),
            "{r:?}"
        );
    }
}

#[test]
fn a_one_address_group_s_published_limit_rides_its_host_sequence_when_a_token_is_left() {
    let body = |burst: u32| {
        format!(
            "[groups]\none = [\"192.0.2.10\"]\n[[rule]]\nallow = \"ssh\"\nfrom = \"one\"\nlimit = \"10/minute\"\nburst = {burst}\n"
        )
    };
    let legs = |burst| {
        let plan = build(&compiled_text("", &body(burst)));
        let legs: Vec<(Destination, bool)> = (plan.rate_probes.iter())
            .filter(|r| r.source.to_string() == "192.0.2.10")
            .map(|r| (r.to, r.with_host))
            .collect();
        legs
    };
    let host = (Destination::Host, false);
    assert_eq!(legs(5), [host, (Destination::Published, true)]);
    // With a burst of one, the host's first attempt spends the bucket: a
    // published first attempt after it could not pass, so none is planned.
    assert_eq!(legs(1), [host]);
}

#[test]
fn the_host_s_own_connection_out_is_planned_once_per_family_with_what_decides_it() {
    let out = |defaults: &str| {
        let plan = build(&compiled_text(defaults, "[[rule]]\nallow = \"https\"\n"));
        let rows: Vec<(String, Outcome, String)> = (plan.probes.iter())
            .filter(|p| p.to == Destination::Out)
            .map(|p| (p.source.to_string(), p.expected, p.rule.clone()))
            .collect();
        assert!(plan.probes.iter().all(|p| p.to != Destination::Out
            || (p.service == Service::Tcp(OUT_PORT) && p.interface == plan.interfaces[0])));
        (plan.local_port, rows)
    };
    let row = |source: &str, o, rule: &str| (source.to_string(), o, rule.to_string());
    // The answer comes back as an established connection.
    let established = "established = true\noutput = \"accept\"";
    assert_eq!(
        out(established),
        (
            61999,
            vec![
                row("203.0.113.200", Outcome::Open, "defaults: established"),
                row("2001:db8:ffff::200", Outcome::Open, "defaults: established"),
            ]
        )
    );
    // Without the established rule, the answer meets input's policy.
    let (_, rows) = out("established = false");
    assert!(
        rows.iter()
            .all(|(_, o, rule)| *o == Outcome::Filtered && rule == "policy of chain input"),
        "{rows:?}"
    );
    // With output dropped, the first packet never leaves.
    let (_, rows) = out("output = \"drop\"");
    assert!(
        rows.iter()
            .all(|(_, o, rule)| *o == Outcome::Filtered && rule == "policy of chain output"),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 2);
}

#[test]
fn a_container_s_own_connection_out_is_decided_on_forward() {
    let out = |defaults: &str| -> Vec<(Outcome, String)> {
        let plan = build(&compiled_text(defaults, "[[rule]]\nallow = \"https\"\n"));
        (plan.probes.iter())
            .filter(|p| p.to == Destination::ContainerOut)
            .map(|p| (p.expected, p.rule.clone()))
            .collect()
    };
    let both = |o, rule: &str| vec![(o, rule.to_string()); 2];
    // The containers chain lets a connection that is not DNAT'd pass, and
    // its established rule the answer.
    let answered = "defaults: containers: established";
    assert_eq!(out(""), both(Outcome::Open, answered));
    assert_eq!(out("established = false"), both(Outcome::Open, answered));
    // A forward chain that drops: the container's first packet ends there.
    let dropped = "policy of chain forward";
    assert_eq!(out("forward = \"drop\""), both(Outcome::Filtered, dropped));
    // No chain of ours on forward: nothing of ours decides.
    assert_eq!(
        out("containers = \"ignore\""),
        both(Outcome::Open, "no forward chain")
    );
}
