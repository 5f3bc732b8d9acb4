use super::*;
use crate::profile::{load, SearchPath};

fn builtin(name: &str) -> Ruleset {
    let search = SearchPath {
        dirs: vec![],
        builtin: true,
    };
    crate::compile::compile(&load(name, &search).profile.unwrap())
}

fn lines(d: &Diff) -> Vec<String> {
    d.changes.iter().map(ToString::to_string).collect()
}

/// The set operations against a brute force over a small universe: every
/// pair of range lists built from a few cut points.
#[test]
fn range_operations_agree_with_membership_point_by_point() {
    let universe = 0u128..40;
    let shapes: Vec<Ranges> = (0u32..64)
        .map(|bits| {
            let mut v = Vec::new();
            for i in 0..6u128 {
                if bits & (1 << i) != 0 {
                    v.push((i * 6 + (i % 3), i * 6 + 4 + (i % 2)));
                }
            }
            Ranges::coalesced(v)
        })
        .collect();
    for a in &shapes {
        for b in shapes.iter().step_by(5) {
            let (u, i, m) = (a.union(b), a.intersect(b), a.minus(b));
            for x in universe.clone() {
                let (ia, ib) = (a.contains(x), b.contains(x));
                assert_eq!(u.contains(x), ia || ib, "{a:?} ∪ {b:?} at {x}");
                assert_eq!(i.contains(x), ia && ib, "{a:?} ∩ {b:?} at {x}");
                assert_eq!(m.contains(x), ia && !ib, "{a:?} − {b:?} at {x}");
            }
            for r in [&u, &i, &m] {
                // Normalised: sorted, disjoint, not touching.
                assert!(r.0.windows(2).all(|w| w[0].1 + 1 < w[1].0), "{r:?}");
            }
        }
    }
}

#[test]
fn the_same_ruleset_changes_nothing() {
    let r = builtin("vps-profile");
    assert!(diff(Some(&r), &r).is_empty());
}

#[test]
fn from_ssh_only_to_vps_profile_web_and_wireguard_open_to_anywhere() {
    let d = diff(Some(&builtin("ssh-only")), &builtin("vps-profile"));
    let text = lines(&d);
    for want in [
        "80/tcp becomes reachable from anywhere on any interface but lo",
        "443/tcp becomes reachable from anywhere on any interface but lo",
        "51820/udp becomes reachable from anywhere on any interface but lo",
        "22/tcp: any IPv4 address except 10.0.0.0/24 and 192.0.2.10/32; \
         any IPv6 address except 2001:db8:1::/64 loses access on any interface but lo",
    ] {
        assert!(text.iter().any(|l| l == want), "{want} not in {text:#?}");
    }
    // The databases open only to the tunnel, only on wg0.
    let db = text
        .iter()
        .find(|l| l.starts_with("5432/tcp"))
        .unwrap_or_else(|| panic!("{text:#?}"));
    assert_eq!(db, "5432/tcp becomes reachable from 10.0.0.0/24 on wg0");
    // Published container ports change alike: no line of their own.
    assert!(
        d.changes
            .iter()
            .all(|c| c.targets == [Target::Host, Target::Published]),
        "{text:#?}"
    );
}

#[test]
fn no_table_before_means_everything_the_profile_refuses_loses_access() {
    let d = diff(None, &builtin("ssh-only"));
    let text = lines(&d);
    assert!(
        text.iter()
            .any(|l| l.starts_with("1-21/tcp: anywhere loses access")),
        "{text:#?}"
    );
    assert!(d
        .says(
            Target::Host,
            Protocol::Udp,
            53,
            "eth0",
            "203.0.113.9".parse().unwrap()
        )
        .is_some_and(|k| k == Kind::Loses));
}

#[test]
fn a_big_source_list_is_summed_up_not_listed() {
    let nets: Vec<IpNet> = (0..300u32)
        .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i * 512), 24).unwrap()))
        .collect();
    let s = Sources::of(Family::Ipv4, Ranges::of_nets(&nets));
    let words = s.to_string();
    assert_eq!(
        words,
        "10.0.0.0/24, 10.0.2.0/24, 10.0.4.0/24 and 297 more prefixes"
    );
    let all_but = Sources::anywhere().minus(&s);
    assert!(
        all_but.to_string().starts_with("any IPv4 address except")
            || all_but.to_string().contains("more prefixes")
    );
    let v4_but_one = Sources::of(
        Family::Ipv4,
        Ranges::all(Family::Ipv4).minus(&Ranges::one(to_u128("192.0.2.7".parse().unwrap()))),
    );
    assert_eq!(
        v4_but_one.to_string(),
        "any IPv4 address except 192.0.2.7/32"
    );
}

/// Every answer of the difference, checked against the evaluator at the
/// edges of every prefix and port range of two shipped profiles.
#[test]
fn shipped_profile_pairs_agree_with_the_evaluator() {
    let names = [
        "ssh-only",
        "vps-profile",
        "web-server",
        "db-private",
        "wireguard-gateway",
        "redis-sentinel",
    ];
    let rulesets: Vec<Ruleset> = names.iter().map(|n| builtin(n)).collect();
    for old in &rulesets {
        for new in &rulesets {
            if let Some(e) = disagreement(Some(old), new) {
                panic!("{e}");
            }
        }
        if let Some(e) = disagreement(None, old) {
            panic!("{e}");
        }
    }
}

/// A group's list that changed alone is walked only where it changed,
/// and says so: the prefix added gains, the one taken out loses; a rule
/// whose profile line moved (its comment) changes nothing.
#[test]
fn a_changed_group_list_gains_and_loses_exactly_its_changed_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, admins: &str, pad: &str| {
        let text = format!(
            "extends = \"base\"\n{pad}[groups]\nadmin = [{admins}]\n[[rule]]\nallow = \"ssh\"\nfrom = \"admin\"\n"
        );
        std::fs::write(dir.path().join(format!("{name}.toml")), text).unwrap();
    };
    write("a", "\"192.0.2.0/24\", \"198.51.100.7\"", "");
    write("b", "\"192.0.2.0/24\", \"203.0.113.0/25\"", "");
    write("c", "\"192.0.2.0/24\", \"198.51.100.7\"", "\n\n");
    let search = SearchPath {
        dirs: vec![dir.path().to_path_buf()],
        builtin: true,
    };
    let [a, b, c] =
        ["a", "b", "c"].map(|n| crate::compile::compile(&load(n, &search).profile.unwrap()));
    assert_eq!(
        scope(&a, &b, &mut Default::default()).to_string(),
        "198.51.100.7/32, 203.0.113.0/25"
    );
    assert_eq!(
        lines(&diff(Some(&a), &b)),
        [
            "22/tcp becomes reachable from 203.0.113.0/25 on any interface but lo",
            "22/tcp: 198.51.100.7/32 loses access on any interface but lo",
        ]
    );
    assert!(disagreement(Some(&a), &b).is_none());
    assert!(
        scope(&a, &c, &mut Default::default()).is_empty(),
        "only comments moved"
    );
    assert!(diff(Some(&a), &c).is_empty());
}

/// A change that would walk more prefixes than [`WORDS_MAX`] in full is
/// not said, with why; a change of the same big set's elements alone is,
/// since only the moved prefixes are walked.
#[test]
fn a_big_set_in_full_is_not_walked_but_a_delta_of_it_is() {
    let mut big = builtin("vps-profile");
    let many: Vec<IpNet> = (0..(WORDS_MAX as u32 + 10))
        .map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + 2 * i))))
        .collect();
    for set in &mut big.sets {
        if set.name == "admin_v4" {
            set.kind = SetKind::Prefixes(many.clone());
        }
    }
    match said(None, &big) {
        Said::Untold { untold } => {
            assert!(untold.contains("more than the 100000"), "{untold}")
        }
        Said::Changes(c) => panic!("walked in full: {} changes", c.len()),
    }
    let mut moved = big.clone();
    for set in &mut moved.sets {
        if let (true, SetKind::Prefixes(nets)) = (set.name == "admin_v4", &mut set.kind) {
            nets.pop();
        }
    }
    let Said::Changes(changes) = said(Some(&big), &moved) else {
        panic!("an element delta is said")
    };
    let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
    let gone = many.last().unwrap().to_string();
    assert!(
        text.iter()
            .any(|l| l.contains("loses access") && l.contains(&gone)),
        "{text:#?}"
    );
}

/// The merge walk of two sorted prefix lists: the prefixes on one side
/// only, whichever side; the same addresses written as other prefixes are
/// in the scope, and the diff finds them unchanged.
#[test]
fn moved_prefixes_are_the_prefixes_on_one_side_only() {
    let nets = |v: &[&str]| -> Vec<IpNet> { v.iter().map(|s| s.parse().unwrap()).collect() };
    let a = nets(&["10.0.0.0/24", "192.0.2.1/32", "198.51.100.0/24"]);
    let b = nets(&[
        "10.0.0.0/25",
        "10.0.0.128/25",
        "192.0.2.1/32",
        "203.0.113.9/32",
    ]);
    let moved = moved_prefixes(&a, &b).unwrap();
    let want = Ranges::of_nets(&nets(&["10.0.0.0/24", "198.51.100.0/24", "203.0.113.9/32"]));
    assert_eq!(moved, want);
    assert_eq!(moved_prefixes(&a, &a).unwrap(), Ranges::default());
    let unsorted = nets(&["198.51.100.0/24", "10.0.0.0/24"]);
    assert!(moved_prefixes(&unsorted, &a).is_none());

    let mut before = builtin("vps-profile");
    for set in &mut before.sets {
        if set.name == "admin_v4" {
            set.kind = SetKind::Prefixes(a.clone());
        }
    }
    let mut after = before.clone();
    for set in &mut after.sets {
        if set.name == "admin_v4" {
            set.kind = SetKind::Prefixes(b.clone());
        }
    }
    let text = lines(&diff(Some(&before), &after));
    assert!(
        text.iter().all(|l| !l.contains("10.0.0.")),
        "the /24 written as two /25s moved nobody: {text:#?}"
    );
    assert!(
        text.iter().any(|l| l.contains("203.0.113.9/32")),
        "{text:#?}"
    );
}

/// Searching sorted, apart prefixes for a scope finds what intersecting
/// their ranges finds, prefixes of every length, scope ranges that start
/// and end inside prefixes, touch them or miss them.
#[test]
fn searching_the_prefixes_agrees_with_intersecting_their_ranges() {
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut nets: Vec<IpNet> = (0..3000)
        .map(|_| {
            let len = 20 + (next() % 13) as u8;
            IpNet::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::from(next() >> 8), len)
                    .unwrap()
                    .trunc(),
            )
        })
        .collect();
    nets.sort();
    let mut apart: Vec<IpNet> = Vec::new();
    for n in nets {
        if apart
            .last()
            .is_none_or(|p| to_u128(p.broadcast()) < to_u128(n.network()))
        {
            apart.push(n);
        }
    }
    assert!(sorted_apart(&apart));
    for _ in 0..200 {
        let a = u128::from(next() >> 8);
        let scope = Ranges::coalesced(vec![
            (a, a + u128::from(next() % 5000)),
            (a + 9000, a + 9000),
        ]);
        assert_eq!(
            search(&apart, &scope),
            scope.intersect(&Ranges::of_nets(&apart)),
            "{scope:?}"
        );
    }
}
