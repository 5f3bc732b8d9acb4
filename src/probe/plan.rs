//! The probe plan: which packets to send, from where, on which interface,
//! and what each must see. It reads the [`Ruleset`] model only (never the
//! profile text), and every expectation comes from [`crate::ruleset::eval`],
//! so the plan asks the kernel the same questions the lockout guard asks
//! the model.
//!
//! How the plan stays small: a set of source prefixes is represented by the
//! first and last usable address of its *first* and of its *last* prefix
//! (at most four addresses, whatever the number of prefixes in the group),
//! plus one address outside every set of the family. A port range is probed
//! at its two edges and just outside them. So the plan grows with the
//! number of rules, sets and interfaces, never with the size of a group or
//! of a range.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use sources::{outside, outsiders, representatives};

use crate::ruleset::eval::{self, Decision, IcmpKind, IcmpPacket, Meters, Packet};
use crate::ruleset::{
    CtState, Family, Hook, IcmpType, Icmpv6Type, Match, Protocol, Rate, Rule, Ruleset, SetKind,
    Verdict,
};

/// What a probe sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase", tag = "proto", content = "port")]
pub enum Service {
    Tcp(u16),
    Udp(u16),
    /// An ICMP or ICMPv6 echo request (ping), of the source's family.
    Ping,
    /// An ICMPv6 neighbour solicitation for the target's own address,
    /// answered by a neighbour advertisement: the one essential ICMPv6
    /// type whose passing the sender can see (the others are errors the
    /// kernel takes in silently). Every IPv6 probe also needs it to pass.
    #[serde(rename = "nd-neighbor-solicit")]
    NeighborSolicit,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Tcp(p) => write!(f, "{p}/tcp"),
            Service::Udp(p) => write!(f, "{p}/udp"),
            Service::Ping => f.write_str("ping"),
            Service::NeighborSolicit => f.write_str("nd-solicit"),
        }
    }
}

/// What a probe sees: an answer, a refusal, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// SYN-ACK, a UDP reply, an echo reply.
    Open,
    /// TCP reset or ICMP unreachable.
    Rejected,
    /// No answer before the timeout.
    Filtered,
}

impl Outcome {
    pub fn of(verdict: Verdict) -> Outcome {
        match verdict {
            Verdict::Accept => Outcome::Open,
            Verdict::Drop => Outcome::Filtered,
            Verdict::Reject(_) => Outcome::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Open => "open",
            Outcome::Rejected => "rejected",
            Outcome::Filtered => "filtered",
        }
    }
}

/// One packet (or connection attempt) and what it must see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub source: IpAddr,
    /// The replica interface it arrives on.
    pub interface: String,
    pub service: Service,
    pub expected: Outcome,
    /// The comment of the rule that decides, or the chain policy.
    pub rule: String,
    /// Why the plan holds this probe.
    pub why: String,
}

/// A per-source rate limit, probed with attempts one after another from
/// one source: the first must pass, and by attempt `attempts` (rate plus
/// burst, plus one) the limit must have dropped one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateProbe {
    pub source: IpAddr,
    pub interface: String,
    pub service: Service,
    pub rate: String,
    pub attempts: u32,
    pub first: Outcome,
    pub first_rule: String,
    pub spent: Outcome,
    pub spent_rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub profile: String,
    /// Interface names of the replica; the first is named by no rule.
    pub interfaces: Vec<String>,
    pub probes: Vec<Probe>,
    pub rate_probes: Vec<RateProbe>,
}

impl Plan {
    /// Every source address a probe is sent from.
    pub fn sources(&self) -> BTreeSet<IpAddr> {
        let a = self.probes.iter().map(|p| p.source);
        a.chain(self.rate_probes.iter().map(|r| r.source)).collect()
    }

    /// Leaves out every probe from a source of `family`; returns how many.
    pub fn without(&mut self, family: Family) -> usize {
        let before = self.probes.len() + self.rate_probes.len();
        let keep = |a: &IpAddr| Family::of(&IpNet::from(*a)) != family;
        self.probes.retain(|p| keep(&p.source));
        self.rate_probes.retain(|r| keep(&r.source));
        before - self.probes.len() - self.rate_probes.len()
    }

    /// Every service probed, so the replica listens on each.
    pub fn services(&self) -> BTreeSet<Service> {
        let a = self.probes.iter().map(|p| p.service);
        a.chain(self.rate_probes.iter().map(|r| r.service))
            .collect()
    }
}

/// Ports nobody names are probed at a few of these, for the default deny.
const SPOT_PORTS: [u16; 6] = [23, 3306, 8080, 9999, 445, 1];
/// How many spot ports per protocol.
const SPOTS: usize = 2;

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

fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// A rule of the input chain as the plan reads it.
struct Reading<'a> {
    rule: &'a Rule,
    families: Vec<Family>,
    set: Option<(Family, &'a str)>,
    interface: Option<&'a str>,
    services: Vec<Service>,
    /// The edges of each range, as (range first, range last) per protocol.
    ranges: Vec<(Protocol, u16, u16)>,
    /// The per-source limit and the meter set that counts it.
    rate: Option<(Rate, &'a str)>,
}

fn read(rule: &Rule) -> Option<Reading<'_>> {
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

struct Builder<'a> {
    ruleset: &'a Ruleset,
    default_interface: String,
    probes: Vec<Probe>,
}

impl Builder<'_> {
    fn add(&mut self, source: IpAddr, interface: &str, service: Service, why: String) {
        let exists = self
            .probes
            .iter()
            .any(|p| p.source == source && p.interface == interface && p.service == service);
        if exists {
            return;
        }
        let d = expect(self.ruleset, source, interface, service, Meters::Fresh);
        self.probes.push(Probe {
            source,
            interface: interface.to_string(),
            service,
            expected: Outcome::of(d.verdict),
            rule: d.comment,
            why,
        });
    }
}

/// What the model decides for one probe.
fn expect(
    ruleset: &Ruleset,
    source: IpAddr,
    interface: &str,
    service: Service,
    meters: Meters,
) -> Decision {
    let interface = Some(interface.to_string());
    let (protocol, dport) = match service {
        Service::Tcp(p) => (Protocol::Tcp, p),
        Service::Udp(p) => (Protocol::Udp, p),
        Service::Ping | Service::NeighborSolicit => {
            let kind = match (service, source) {
                (Service::Ping, IpAddr::V4(_)) => IcmpKind::V4(IcmpType::EchoRequest),
                (Service::Ping, IpAddr::V6(_)) => IcmpKind::V6(Icmpv6Type::EchoRequest),
                _ => IcmpKind::V6(Icmpv6Type::NdNeighborSolicit),
            };
            let icmp = IcmpPacket {
                source,
                interface,
                kind,
            };
            return eval::evaluate_icmp(ruleset, Hook::Input, &icmp);
        }
    };
    let packet = Packet {
        source,
        protocol,
        dport,
        interface,
        state: CtState::New,
    };
    eval::evaluate_with(ruleset, Hook::Input, &packet, meters)
}

/// The plan for `ruleset`. Pure: the same model always gives the same plan.
pub fn build(ruleset: &Ruleset) -> Plan {
    let input = ruleset.chains.iter().find(|c| c.hook == Hook::Input);
    let rules: Vec<(usize, Reading)> = input
        .map(|c| c.rules.iter().enumerate())
        .into_iter()
        .flatten()
        .filter_map(|(i, r)| read(r).map(|r| (i, r)))
        .collect();

    let patterns: Vec<&str> = rules.iter().filter_map(|(_, r)| r.interface).collect();
    let mut interfaces: Vec<String> = Vec::new();
    let default = (0..10)
        .map(|n| format!("eth{n}"))
        .find(|name| !patterns.iter().any(|p| pattern_matches(p, name)))
        .unwrap_or_else(|| "fwhother0".into());
    interfaces.push(default.clone());
    for p in &patterns {
        let name = concrete(p);
        if !interfaces.contains(&name) {
            interfaces.push(name);
        }
    }

    let outside = |f| outside(ruleset, f);
    let mut b = Builder {
        ruleset,
        default_interface: default,
        probes: Vec::new(),
    };
    let mut rate_probes = Vec::new();
    let mut metered: Vec<(&str, IpAddr)> = Vec::new();
    for (index, r) in &rules {
        let mut sources: Vec<(IpAddr, String)> = Vec::new();
        if let Some((family, set)) = r.set {
            if let Some(SetKind::Prefixes(nets)) = ruleset.set(set).map(|s| &s.kind) {
                for a in representatives(nets) {
                    sources.push((a, format!("in @{set}")));
                }
            }
            if let Some(a) = outside(family) {
                sources.push((a, format!("outside @{set}")));
            }
        } else {
            for &f in &r.families {
                if let Some(a) = outside(f) {
                    sources.push((a, format!("any {f} source")));
                }
            }
        }
        let on: Vec<String> = match r.interface {
            Some(p) => vec![concrete(p), b.default_interface.clone()],
            None => vec![b.default_interface.clone()],
        };
        let comment = &r.rule.comment;
        if let Some((rate, meter)) = r.rate {
            // The meter rule itself: probed as a sequence, once per rule.
            // Sequences run at the same time, and a meter counts per
            // source: two sequences of one meter (a rule's tcp and udp
            // ports) from one source would race for its tokens. Each takes
            // a source of its own that the limit applies to.
            let Some(&service) = r.services.first() else {
                continue;
            };
            let candidates = sources.iter().map(|(a, _)| *a).chain(
                r.set
                    .is_none()
                    .then(|| outsiders(ruleset, &r.families))
                    .into_iter()
                    .flatten(),
            );
            let mut picked = None;
            for source in candidates {
                let taken = metered.contains(&(meter, source));
                let first = expect(ruleset, source, &on[0], service, Meters::Fresh);
                let spent = expect(ruleset, source, &on[0], service, Meters::Spent);
                if !taken && first != spent {
                    picked = Some((source, first, spent));
                    break;
                }
            }
            let Some((source, first, spent)) = picked else {
                continue;
            };
            metered.push((meter, source));
            rate_probes.push(RateProbe {
                source,
                interface: on[0].clone(),
                service,
                rate: format!("{}/{} burst {}", rate.count, rate.unit.as_str(), rate.burst),
                attempts: (rate.count + rate.burst + 1).min(64),
                first: Outcome::of(first.verdict),
                first_rule: first.comment,
                spent: Outcome::of(spent.verdict),
                spent_rule: spent.comment,
            });
            continue;
        }
        for iface in &on {
            for (source, whence) in &sources {
                for &service in &r.services {
                    let why = format!("rule {index} ({comment}): {whence}");
                    b.add(*source, iface, service, why);
                }
            }
        }
        // Just outside each range, from the first source: a range widened
        // or shifted by one shows here.
        if let Some((source, whence)) = sources.first() {
            for &(proto, first, last) in &r.ranges {
                let edges = [first.checked_sub(1), last.checked_add(1)];
                for port in edges.into_iter().flatten().filter(|&p| p != 0) {
                    let service = match proto {
                        Protocol::Tcp => Service::Tcp(port),
                        Protocol::Udp => Service::Udp(port),
                    };
                    let why = format!("next to rule {index} ({comment}): {whence}");
                    b.add(*source, &on[0], service, why);
                }
            }
        }
    }

    // The default deny: ports no rule names, from outside every set.
    let named = |proto: Protocol, port: u16| {
        rules.iter().any(|(_, r)| {
            r.ranges
                .iter()
                .any(|&(p, first, last)| p == proto && first <= port && port <= last)
        })
    };
    let default = b.default_interface.clone();
    for f in [Family::Ipv4, Family::Ipv6] {
        let Some(source) = outside(f) else { continue };
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let spots = SPOT_PORTS.iter().filter(|&&p| !named(proto, p)).take(SPOTS);
            for &port in spots {
                let service = match proto {
                    Protocol::Tcp => Service::Tcp(port),
                    Protocol::Udp => Service::Udp(port),
                };
                b.add(source, &default, service, "default deny spot check".into());
            }
        }
        // One ping per family: the echo rule's global rate limit must not
        // be what the probe measures.
        b.add(source, &default, Service::Ping, "ping".into());
        if f == Family::Ipv6 {
            let why = "neighbour discovery".into();
            b.add(source, &default, Service::NeighborSolicit, why);
        }
    }

    // The rate-limit sequences run at the same time as the other probes,
    // so no other probe may spend tokens of their meters: a probe that
    // some per-source limit would drop, sent from the source of a
    // sequence, is left to that sequence (whose first attempt is the same
    // question, or one like it). Meters count per source address, so
    // probes from every other source stay.
    let mut probes = b.probes;
    probes.retain(|p| {
        let limited = || {
            let fresh = expect(ruleset, p.source, &p.interface, p.service, Meters::Fresh);
            let spent = expect(ruleset, p.source, &p.interface, p.service, Meters::Spent);
            fresh != spent
        };
        !(rate_probes.iter().any(|r| r.source == p.source) && limited())
    });

    Plan {
        profile: ruleset.profile.clone(),
        interfaces,
        probes,
        rate_probes,
    }
}

pub(crate) mod sources;
#[cfg(test)]
mod tests;
