//! The index against the pairwise check it replaced (kept here as the
//! oracle): on random small profiles, dense in rules that cover each other,
//! both name the same first covering rule for every rule.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::profile::{Action, Defaults, Group, Location, Origin, Sources};
use crate::ruleset::PortRange;

/// The pairwise check: every earlier rule, in order, the sources'
/// prefixes aggregated again for each pair.
fn oracle(profile: &Profile, order: &[&Rule]) -> Vec<Option<usize>> {
    let side_prefixes = |groups: &[String], f: Family| {
        let all: Vec<IpNet> = groups
            .iter()
            .filter_map(|g| profile.groups.get(g))
            .flat_map(|g| g.family(f).iter().copied())
            .collect();
        addr::aggregate(&all)
    };
    let side_covers = |a: &SourceSide, b: &SourceSide, f: Family| match (a, b) {
        (_, SourceSide::None) | (SourceSide::Any, _) => true,
        (SourceSide::None, _) | (SourceSide::Groups(_), SourceSide::Any) => false,
        (SourceSide::Groups(a), SourceSide::Groups(b)) => {
            let outer = side_prefixes(a, f);
            side_prefixes(b, f).iter().all(|p| addr::covered(p, &outer))
        }
    };
    let covers = |a: &Rule, b: &Rule| {
        ports_cover(&a.ports, &b.ports)
            && interface_covers(a.interface.as_deref(), b.interface.as_deref())
            && FAMILIES
                .into_iter()
                .all(|f| side_covers(a.sources.side(f), b.sources.side(f), f))
    };
    (0..order.len())
        .map(|i| (0..i).find(|&j| covers(order[j], order[i])))
        .collect()
}

/// xorshift64: reproducible from the seed a failure prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

const PREFIXES: &[&str] = &[
    "10.0.0.0/29",
    "10.0.0.0/30",
    "10.0.0.0/31",
    "10.0.0.2/31",
    "10.0.0.1/32",
    "10.0.0.4/32",
    "10.0.0.5/32",
    "2001:db8::/126",
    "2001:db8::/127",
    "2001:db8::2/127",
    "2001:db8::1/128",
];
const GROUPS: &[&str] = &["a", "b", "c", "d", "big"];
const INTERFACES: &[Option<&str>] = &[
    None,
    None,
    Some("eth0"),
    Some("eth1"),
    Some("eth*"),
    Some("e*"),
    Some("wg0"),
];

fn random_profile(rng: &mut Rng) -> Profile {
    let origin = |line| Origin {
        file: PathBuf::from("random.toml"),
        line,
        column: 1,
    };
    let mut groups = BTreeMap::new();
    for name in GROUPS {
        let mut prefixes: Vec<IpNet> = if *name == "big" {
            // Past INDEXED_PREFIXES: the rules naming it are not indexed by
            // prefix.
            (0..=INDEXED_PREFIXES as u32 * 2)
                .map(|i| {
                    IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                        0x0a00_0000 + 2 * i,
                    )))
                })
                .collect()
        } else {
            (0..rng.below(4))
                .map(|_| rng.pick(PREFIXES).parse().unwrap())
                .collect()
        };
        prefixes = addr::aggregate(&prefixes);
        let group = Group {
            name: name.to_string(),
            prefixes,
            origin: origin(1),
        };
        groups.insert(name.to_string(), group);
    }
    let side = |rng: &mut Rng| match rng.below(4) {
        0 => SourceSide::None,
        1 => SourceSide::Any,
        _ => SourceSide::Groups(
            (0..rng.below(3))
                .map(|_| rng.pick(GROUPS).to_string())
                .collect(),
        ),
    };
    let rules = (0..1 + rng.below(24))
        .map(|i| {
            let ports = if rng.below(6) == 0 {
                Ports::All
            } else {
                let mut map = BTreeMap::new();
                for _ in 0..1 + rng.below(2) {
                    let proto = *rng.pick(&[Protocol::Tcp, Protocol::Udp]);
                    let first = *rng.pick(&[1, 2, 3, 4, 5, 6, 30, 64, 65]);
                    let last = first + *rng.pick(&[0, 0, 0, 1, 3, 40]);
                    map.entry(proto)
                        .or_insert_with(Vec::new)
                        .push(PortRange { first, last });
                }
                Ports::Some(map)
            };
            Rule {
                action: *rng.pick(&[Action::Allow, Action::Allow, Action::Deny, Action::Reject]),
                ports,
                sources: Sources {
                    v4: side(rng),
                    v6: side(rng),
                },
                interface: rng.pick(INTERFACES).map(str::to_string),
                limit: None,
                log: None,
                origin: origin(10 + i),
                label: format!("rule {i}"),
            }
        })
        .collect();
    Profile {
        name: "random".into(),
        location: Location::File(PathBuf::from("random.toml")),
        description: String::new(),
        lineage: vec!["random".into()],
        defaults: Defaults::default(),
        bans: None,
        groups,
        rules,
    }
}

#[test]
fn the_index_finds_what_the_pairwise_check_finds() {
    let mut covered = 0;
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let profile = random_profile(&mut rng);
        let order: Vec<&Rule> = profile.rules.iter().collect();
        let want = oracle(&profile, &order);
        let got = first_covering(&profile, &order);
        assert_eq!(got, want, "seed {seed}: {:#?}", profile.rules);
        covered += want.iter().flatten().count();
    }
    // The random profiles exercise the covering case, not only its absence.
    assert!(covered > 3000, "{covered}");
}

#[test]
fn segments_cover_exactly_the_range() {
    for (first, last) in [
        (1, 1),
        (1, 2),
        (2, 9),
        (0, 65535),
        (22, 65535),
        (1000, 1999),
    ] {
        let mut ports: Vec<u32> = Vec::new();
        for node in segments(first, last) {
            // The ports under a node: its leaves.
            let (mut lo, mut hi) = (node, node);
            while lo < LEAVES {
                lo *= 2;
                hi = hi * 2 + 1;
            }
            ports.extend((lo..=hi).map(|leaf| leaf - LEAVES));
        }
        ports.sort();
        let want: Vec<u32> = (u32::from(first)..=u32::from(last)).collect();
        assert_eq!(ports, want, "{first}-{last}");
    }
}

#[test]
fn repeating_ports_among_a_hundred_thousand_rules_are_found() {
    // One port and one source each, the shape of a generated profile; the
    // pairwise check made 5e9 comparisons of it.
    let mut rng = Rng(7);
    let mut profile = random_profile(&mut rng);
    profile.rules = (0..100_000u32)
        .map(|i| Rule {
            action: Action::Allow,
            ports: Ports::Some(BTreeMap::from([(
                Protocol::Tcp,
                vec![PortRange::single(1 + (i % 60000) as u16)],
            )])),
            sources: Sources {
                v4: SourceSide::Any,
                v6: SourceSide::Any,
            },
            interface: None,
            limit: None,
            log: None,
            origin: profile.rules[0].origin.clone(),
            label: format!("rule {i}"),
        })
        .collect();
    let order: Vec<&Rule> = profile.rules.iter().collect();
    let found = first_covering(&profile, &order);
    // Ports repeat after 60,000 rules: each repeat is covered by the rule
    // 60,000 before it.
    assert_eq!(found.iter().flatten().count(), 40_000);
    assert_eq!(found[60_000], Some(0));
}
