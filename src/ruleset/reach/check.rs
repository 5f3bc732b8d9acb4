//! [`diff`] held to the evaluator, packet by packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{diff, no_table, to_u128, Kind, Target};
use crate::ruleset::eval;
use crate::ruleset::model::*;

/// Checks `diff(old, new)` against [`eval`] for packets at every edge the
/// two rulesets have: each prefix's first and last address and the ones
/// just outside (of a big group, the first and last 20), each port
/// range's ends and neighbours, each interface class's name and a few
/// more, both protocols, host and published. The first packet where they
/// differ, in words; `None` when they agree. The evaluator is the
/// reference; this is how the tests hold [`diff`] to it.
pub fn disagreement(old: Option<&Ruleset>, new: &Ruleset) -> Option<String> {
    let d = diff(old, new);
    let empty = no_table();
    let before = old.unwrap_or(&empty);
    let mut sources: Vec<IpAddr> = vec![
        "203.0.113.200".parse().unwrap(),
        "2001:db8:ffff::200".parse().unwrap(),
    ];
    let mut ports: Vec<u16> = vec![1, 22, 65535];
    for r in [before, new] {
        for set in &r.sets {
            if let SetKind::Prefixes(nets) = &set.kind {
                // A big group: its ends are enough.
                for n in nets.iter().take(20).chain(nets.iter().rev().take(20)) {
                    let (lo, hi) = (to_u128(n.network()), to_u128(n.broadcast()));
                    for x in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                        sources.push(from_u128(Family::of(n), x));
                    }
                }
            }
            if let SetKind::Hatch(Some(e)) = &set.kind {
                sources.push(e.addr);
            }
        }
        for rule in r.chains.iter().flat_map(|c| &c.rules) {
            for m in &rule.matches {
                match m {
                    Match::DestPort(rs) | Match::OrigDestPort(rs) => {
                        for p in rs {
                            ports.extend([
                                p.first,
                                p.first.saturating_sub(1).max(1),
                                p.last,
                                p.last.saturating_add(1),
                            ]);
                        }
                    }
                    Match::Source(a) => sources.push(*a),
                    _ => {}
                }
            }
        }
    }
    sources.sort();
    sources.dedup();
    ports.sort();
    ports.dedup();
    let mut names: Vec<String> = d.classes.iter().map(|c| c.name.clone()).collect();
    names.push("eth0".into());
    names.extend(d.patterns.iter().map(|p| p.replace('*', "")));
    for &source in &sources {
        for &port in &ports {
            for name in &names {
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    let packet = eval::Packet {
                        source,
                        protocol,
                        dport: port,
                        interface: Some(name.clone()),
                        state: CtState::New,
                    };
                    for target in [Target::Host, Target::Published] {
                        if target == Target::Published && name == super::LOOPBACK {
                            continue;
                        }
                        let verdict = |r: &Ruleset| match target {
                            Target::Host => eval::evaluate(r, Hook::Input, &packet).accepted(),
                            Target::Published => {
                                eval::evaluate_published(r, &packet, eval::Meters::Fresh).accepted()
                            }
                        };
                        let want = match (verdict(before), verdict(new)) {
                            (false, true) => Some(Kind::Gains),
                            (true, false) => Some(Kind::Loses),
                            _ => None,
                        };
                        let got = d.says(target, protocol, port, name, source);
                        if got != want {
                            return Some(format!(
                                "{target:?} {source} {port}/{} on {name}, {:?} -> {:?}: the evaluator says {want:?}, the difference {got:?}\n{:#?}",
                                protocol.as_str(),
                                before.profile,
                                new.profile,
                                d.changes.iter().map(ToString::to_string).collect::<Vec<_>>()
                            ));
                        }
                    }
                }
            }
        }
    }
    None
}

fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}
