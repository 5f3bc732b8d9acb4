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
    let source: IpAddr = source.parse().unwrap();
    plan.probes
        .iter()
        .find(|p| p.source == source && p.interface == iface && p.service == service)
        .unwrap_or_else(|| panic!("no probe {source} {iface} {service}"))
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
    // SSH from the first admin address is the rate sequence's to ask.
    let rate_sources: Vec<String> = plan
        .rate_probes
        .iter()
        .map(|r| r.source.to_string())
        .collect();
    assert_eq!(rate_sources, ["192.0.2.10", "10.0.0.0", "2001:db8:1::"]);
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
    let last = "2001:db8:1:0:ffff:ffff:ffff:ffff";
    assert_eq!(
        find(&plan, last, "eth0", Service::Tcp(22)).expected,
        Outcome::Open
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
    assert_eq!(plan.rate_probes.len(), 3, "{:#?}", plan.rate_probes);
    let r = &plan.rate_probes[0];
    assert_eq!(
        (r.first, r.spent, r.attempts),
        (Outcome::Open, Outcome::Filtered, 16)
    );
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
fn representatives_step_over_addresses_that_cannot_be_sources() {
    let any: IpNet = "0.0.0.0/0".parse().unwrap();
    assert_eq!(
        representatives(&[any]),
        [
            "1.0.0.0".parse::<IpAddr>().unwrap(),
            "223.255.255.255".parse().unwrap()
        ]
    );
    let v6: IpNet = "::/0".parse().unwrap();
    let r = representatives(&[v6]);
    assert_eq!(r[0], "100::".parse::<IpAddr>().unwrap());
    assert_eq!(
        r[1],
        "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
            .parse::<IpAddr>()
            .unwrap()
    );
    let lo: IpNet = "127.0.0.0/8".parse().unwrap();
    assert!(representatives(&[lo]).is_empty());
}

#[test]
fn wildcard_interfaces_get_a_concrete_name_and_the_other_interface_is_named_by_no_rule() {
    assert_eq!(concrete("wg*"), "wg7");
    assert_eq!(concrete("wg0"), "wg0");
    assert_eq!(concrete("abcdefghijklmno*").len(), 15);
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
        assert!(
            plan.probes.len() < 120,
            "{name}: {} probes",
            plan.probes.len()
        );
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
    let sequences: Vec<(IpAddr, Service)> = plan
        .rate_probes
        .iter()
        .map(|r| (r.source, r.service))
        .collect();
    assert_eq!(sequences.len(), 4, "{sequences:?}");
    let sources: std::collections::BTreeSet<IpAddr> =
        sequences.iter().map(|(source, _)| *source).collect();
    assert_eq!(
        sources.len(),
        4,
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
