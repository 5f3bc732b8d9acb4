//! What stands for what a rule matches, asked of the model alone: which
//! source addresses stand for a set of prefixes, which address is in no
//! set at all, and which interface name stands for an `iifname` pattern.
//! The probe plan sends its packets from them, and the audit's "who"
//! column asks the evaluator about them, so both read the same answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::eval::prefixes_hold;
use super::{Family, Ruleset, SetKind};

/// Sources outside every set are taken from these, first fit: documentation
/// and benchmarking ranges first, so a reader knows them for placeholders.
const OUTSIDE_V4: [Ipv4Addr; 6] = [
    Ipv4Addr::new(203, 0, 113, 200),
    Ipv4Addr::new(198, 51, 100, 200),
    Ipv4Addr::new(192, 0, 2, 200),
    Ipv4Addr::new(100, 64, 0, 200),
    Ipv4Addr::new(11, 0, 0, 200),
    Ipv4Addr::new(1, 0, 0, 200),
];
const OUTSIDE_V6: [Ipv6Addr; 5] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x200),
    Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0x200),
    Ipv6Addr::new(0x2001, 2, 0, 0xffff, 0, 0, 0, 0x200),
    Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, 0x200),
    Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0x200),
];

/// Addresses that cannot be a packet's source on a link: the kernel drops
/// them as martians (zero net, loopback, multicast and class E, RFC 1122;
/// IPv6 unspecified, loopback and mapped, link-local needs a scope,
/// multicast).
fn unusable() -> [IpNet; 6] {
    [
        "0.0.0.0/8",
        "127.0.0.0/8",
        "224.0.0.0/3",
        "::/8",
        "fe80::/10",
        "ff00::/8",
    ]
    .map(|s| s.parse().expect("a constant prefix"))
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Which end of a prefix a representative address is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    First,
    Last,
}

/// The first (or last) address of `net` that can be a source, stepping
/// over unusable ranges.
fn usable(net: &IpNet, end: End) -> Option<IpAddr> {
    let family = Family::of(net);
    let mut at = match end {
        End::First => net.network(),
        End::Last => net.broadcast(),
    };
    let bad = unusable();
    while let Some(b) = bad.iter().find(|b| b.contains(&at)) {
        let next = match end {
            End::First => to_u128(b.broadcast()).checked_add(1),
            End::Last => to_u128(b.network()).checked_sub(1),
        };
        at = from_u128(family, next?);
        if !net.contains(&at) {
            return None;
        }
    }
    Some(at)
}

/// The representatives of a set (see the module comment), in order.
pub(crate) fn representatives(prefixes: &[IpNet]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let ends = [prefixes.first(), prefixes.last()];
    for net in ends.into_iter().flatten() {
        for end in [End::First, End::Last] {
            if let Some(a) = usable(net, end) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// An address of `family` in no set of the ruleset, if there is one.
pub(crate) fn outside(ruleset: &Ruleset, family: Family) -> Option<IpAddr> {
    outsiders(ruleset, &[family]).into_iter().next()
}

/// Every candidate address of `families` in no set of the ruleset, in
/// order: sources for probes that must not share a per-source meter.
pub(crate) fn outsiders(ruleset: &Ruleset, families: &[Family]) -> Vec<IpAddr> {
    families
        .iter()
        .flat_map(|&family| outside_of(ruleset, family))
        .collect()
}

fn outside_of(ruleset: &Ruleset, family: Family) -> Vec<IpAddr> {
    let sets: Vec<&[IpNet]> = ruleset
        .sets
        .iter()
        .filter_map(|s| match &s.kind {
            SetKind::Prefixes(p) if s.family == family => Some(p.as_slice()),
            _ => None,
        })
        .collect();
    let candidates: Vec<IpAddr> = match family {
        Family::Ipv4 => OUTSIDE_V4.iter().map(|a| IpAddr::V4(*a)).collect(),
        Family::Ipv6 => OUTSIDE_V6.iter().map(|a| IpAddr::V6(*a)).collect(),
    };
    candidates
        .into_iter()
        .filter(|a| !sets.iter().any(|nets| prefixes_hold(nets, a)))
        .collect()
}

/// The concrete name a replica interface gets for an `iifname` pattern:
/// `wg*` becomes `wg7`. Interface names are at most 15 bytes (IFNAMSIZ).
pub fn concrete(pattern: &str) -> String {
    match pattern.strip_suffix('*') {
        Some("") => "any7".into(),
        Some(prefix) => {
            let mut name: String = prefix.chars().take(14).collect();
            name.push('7');
            name
        }
        None => pattern.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_wildcard_interface_gets_a_concrete_name_of_at_most_15_bytes() {
        assert_eq!(concrete("wg*"), "wg7");
        assert_eq!(concrete("wg0"), "wg0");
        assert_eq!(concrete("abcdefghijklmno*").len(), 15);
    }
}
