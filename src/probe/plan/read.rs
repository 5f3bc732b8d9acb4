//! How the plan reads a rule of the input chain: its families, source
//! set, interface, services and port ranges.

use super::*;

/// Ports nobody names are probed at a few of these, for the default deny.
pub(super) const SPOT_PORTS: [u16; 6] = [23, 3306, 8080, 9999, 445, 1];
/// How many spot ports per protocol.
pub(super) const SPOTS: usize = 2;

pub(super) fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// A rule of the input chain as the plan reads it.
pub(super) struct Reading<'a> {
    pub(super) rule: &'a Rule,
    pub(super) families: Vec<Family>,
    pub(super) set: Option<(Family, &'a str)>,
    pub(super) interface: Option<&'a str>,
    pub(super) services: Vec<Service>,
    /// The edges of each range, as (range first, range last) per protocol.
    pub(super) ranges: Vec<(Protocol, u16, u16)>,
    /// The per-source limit and the meter set that counts it.
    pub(super) rate: Option<(Rate, &'a str)>,
}

pub(super) fn read(rule: &Rule) -> Option<Reading<'_>> {
    rule.verdict?;
    let mut r = Reading {
        rule,
        families: vec![Family::Ipv4, Family::Ipv6],
        set: None,
        interface: None,
        services: Vec::new(),
        ranges: Vec::new(),
        rate: None,
    };
    let mut protocols: Option<&[Protocol]> = None;
    let mut ports = None;
    let mut ping = false;
    let mut solicit = false;
    for m in &rule.matches {
        match m {
            Match::Family(f) => r.families = vec![*f],
            Match::SourceInSet { family, set } => {
                r.families = vec![*family];
                r.set = Some((*family, set));
            }
            // Loopback traffic cannot carry a foreign source: not probed.
            Match::InInterface(name) if name == "lo" => return None,
            Match::InInterface(name) => r.interface = Some(name),
            Match::OutInterface(_) => return None,
            // Rules for established or invalid traffic decide no new probe.
            Match::CtState(states) if !states.contains(&CtState::New) => return None,
            Match::CtState(_) => {}
            Match::Protocol(p) => protocols = Some(p),
            Match::DestPort(p) => ports = Some(p),
            Match::IcmpType(t) => {
                ping = t.contains(&IcmpType::EchoRequest);
                r.families = vec![Family::Ipv4];
            }
            Match::Icmpv6Type(t) => {
                ping = t.contains(&Icmpv6Type::EchoRequest);
                solicit = t.contains(&Icmpv6Type::NdNeighborSolicit);
                r.families = vec![Family::Ipv6];
            }
            Match::SourceRateOver { rate, set, .. } => r.rate = Some((*rate, set)),
            // The escape hatch: only in a pending ruleset, for the one
            // operator address, and shut until the deadline. A probe
            // proves a profile as compiled, which has none.
            Match::Source(_) | Match::SourceNotInSet { .. } => return None,
            // Matches of the containers chain only, never of input.
            Match::CtStatus(_) | Match::OrigDestPort(_) => return None,
        }
    }
    let is_icmp = rule
        .matches
        .iter()
        .any(|m| matches!(m, Match::IcmpType(_) | Match::Icmpv6Type(_)));
    if is_icmp {
        // Only echo requests and neighbour solicitations are answered; the
        // other essential types are errors, taken in without a word.
        if ping {
            r.services.push(Service::Ping);
        }
        if solicit {
            r.services.push(Service::NeighborSolicit);
        }
        return (!r.services.is_empty()).then_some(r);
    }
    let protocols = protocols.unwrap_or(&[Protocol::Tcp, Protocol::Udp]);
    for &proto in protocols {
        let service = |p| match proto {
            Protocol::Tcp => Service::Tcp(p),
            Protocol::Udp => Service::Udp(p),
        };
        match ports {
            Some(ranges) => {
                for range in ranges {
                    r.services.push(service(range.first));
                    if range.last != range.first {
                        r.services.push(service(range.last));
                    }
                    r.ranges.push((proto, range.first, range.last));
                }
            }
            // Every port: a rule for "all ports" is probed on spot ports.
            None => r
                .services
                .extend(SPOT_PORTS[..SPOTS].iter().map(|&p| service(p))),
        }
    }
    Some(r)
}
