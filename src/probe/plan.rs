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
//!
//! Published container ports (the `containers` chain on the forward hook)
//! are planned beside the host's own ports, as probes to a published
//! address of the replica: see [`published`] for which ports and why.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use read::{pattern_matches, read, Reading, SPOTS, SPOT_PORTS};

use crate::ruleset::eval::{self, Decision, IcmpKind, IcmpPacket, Meters, Packet};
pub use crate::ruleset::representative::concrete;
use crate::ruleset::representative::{outside, outsiders, representatives};
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

/// Where a probe is addressed: which hook of the host decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    /// The host itself: the input chain decides.
    Host,
    /// A port the host publishes for a container: DNAT'd to the container
    /// and forwarded, so the forward hook (the `containers` chain) decides.
    Published,
    /// The other way: the host's own connection out to the peer at the
    /// probe's `source`, from the host's local port [`Plan::local_port`].
    /// The output hook decides its first packet, and the input hook the
    /// peer's answer, which conntrack calls established: what lets the
    /// host's `apt-get` or DNS work under a profile that accepts nothing.
    Out,
    /// A container's own connection out to the peer at `source`, routed
    /// through the host: the forward hook decides its first packet and
    /// the peer's answer (the `containers` chain's established rule).
    #[serde(rename = "container-out")]
    ContainerOut,
}

impl Destination {
    /// What a report writes after the port (nothing for the host).
    pub fn marker(self) -> &'static str {
        match self {
            Destination::Host => "",
            Destination::Published => "published (container)",
            Destination::Out => "out (the host connects)",
            Destination::ContainerOut => "out (a container connects)",
        }
    }

    /// Whether the probe needs the replica's container (and so the nft
    /// program, for its DNAT table).
    pub fn needs_container(self) -> bool {
        matches!(self, Destination::Published | Destination::ContainerOut)
    }

    /// Whether the probe is a connection the replica makes outwards.
    pub fn is_out(self) -> bool {
        matches!(self, Destination::Out | Destination::ContainerOut)
    }
}

/// The port the peers listen on for the host's connections out: HTTPS,
/// the connection a host makes most (package mirrors).
pub const OUT_PORT: u16 = 443;

/// One packet (or connection attempt) and what it must see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub source: IpAddr,
    /// The replica interface it arrives on.
    pub interface: String,
    pub service: Service,
    pub to: Destination,
    pub expected: Outcome,
    /// The comment of the rule that decides, or the chain policy.
    pub rule: String,
    /// Why the plan holds this probe.
    pub why: String,
}

/// A per-source rate limit, probed with attempts from one source: the
/// first, alone, must pass; of the others (rate plus burst), sent at once,
/// the limit must drop one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateProbe {
    pub source: IpAddr,
    pub interface: String,
    pub service: Service,
    pub to: Destination,
    pub rate: String,
    pub attempts: u32,
    pub first: Outcome,
    pub first_rule: String,
    pub spent: Outcome,
    pub spent_rule: String,
    /// A published sequence sent inside the host sequence of the same
    /// source, interface and service, because the group has no other
    /// source to give it (a single address): the two legs spend one
    /// bucket, so they cannot run apart. Its first attempt goes alone
    /// after the host's first (the bucket still holds `burst - 1`), its
    /// others at once with the host's.
    pub with_host: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub profile: String,
    /// Interface names of the replica; the first is named by no rule.
    pub interfaces: Vec<String>,
    pub probes: Vec<Probe>,
    pub rate_probes: Vec<RateProbe>,
    /// The port the replica's container listens on (TCP and UDP), which
    /// every published port is DNAT'd to: one no rule names, so a chain
    /// that matched the forwarded port instead of the original one would
    /// be seen dropping what it should pass.
    pub container_port: u16,
    /// The host's local port for its connections out: one no rule names,
    /// so no listener of the replica holds it, and the model reads the
    /// answer's destination port as the kernel does.
    pub local_port: u16,
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

    /// Every service probed on the host itself, so the replica listens on
    /// each.
    pub fn services(&self) -> BTreeSet<Service> {
        let host = self.probes.iter().filter(|p| p.to == Destination::Host);
        let rates = self
            .rate_probes
            .iter()
            .filter(|r| r.to == Destination::Host);
        let a = host.map(|p| p.service);
        a.chain(rates.map(|r| r.service)).collect()
    }

    /// Whether any probe goes to a published container port, or comes
    /// from the container.
    pub fn has_published(&self) -> bool {
        self.probes.iter().any(|p| p.to.needs_container())
            || self.rate_probes.iter().any(|r| r.to.needs_container())
    }

    /// Leaves out every probe of a published port, and the container's
    /// connections out; returns how many.
    pub fn without_published(&mut self) -> usize {
        let before = self.probes.len() + self.rate_probes.len();
        self.probes.retain(|p| !p.to.needs_container());
        self.rate_probes.retain(|r| !r.to.needs_container());
        before - self.probes.len() - self.rate_probes.len()
    }
}

struct Builder<'a> {
    ruleset: &'a Ruleset,
    default_interface: String,
    probes: Vec<Probe>,
}

impl Builder<'_> {
    fn add(&mut self, source: IpAddr, interface: &str, service: Service, why: String) {
        self.add_to(Destination::Host, source, interface, service, why)
    }

    fn add_to(
        &mut self,
        to: Destination,
        source: IpAddr,
        interface: &str,
        service: Service,
        why: String,
    ) {
        let exists = self.probes.iter().any(|p| {
            p.source == source && p.interface == interface && p.service == service && p.to == to
        });
        if exists {
            return;
        }
        let d = expect(self.ruleset, to, source, interface, service, Meters::Fresh);
        self.probes.push(Probe {
            source,
            interface: interface.to_string(),
            service,
            to,
            expected: Outcome::of(d.verdict),
            rule: d.comment,
            why,
        });
    }
}

/// The rate-limit sequence of `service` from `source` to `to`.
fn rate_probe(
    ruleset: &Ruleset,
    to: Destination,
    source: IpAddr,
    interface: &str,
    service: Service,
    rate: Rate,
) -> RateProbe {
    let first = expect(ruleset, to, source, interface, service, Meters::Fresh);
    let spent = expect(ruleset, to, source, interface, service, Meters::Spent);
    RateProbe {
        source,
        interface: interface.to_string(),
        service,
        to,
        rate: format!("{}/{} burst {}", rate.count, rate.unit.as_str(), rate.burst),
        attempts: (rate.count + rate.burst + 1).min(64),
        first: Outcome::of(first.verdict),
        first_rule: first.comment,
        spent: Outcome::of(spent.verdict),
        spent_rule: spent.comment,
        with_host: false,
    }
}

/// Whether a per-source limit decides `probe`: the model answers it
/// otherwise from a full bucket than from a spent one.
fn limited(ruleset: &Ruleset, probe: &Probe) -> bool {
    if probe.to.is_out() {
        return false;
    }
    let at = |meters| {
        let p = probe;
        expect(ruleset, p.to, p.source, &p.interface, p.service, meters)
    };
    at(Meters::Fresh) != at(Meters::Spent)
}

/// What the model decides for one probe.
fn expect(
    ruleset: &Ruleset,
    to: Destination,
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
    match to {
        Destination::Host => eval::evaluate_with(ruleset, Hook::Input, &packet, meters),
        Destination::Published => {
            let mut d = eval::evaluate_published(ruleset, &packet, meters);
            if d.rule.is_none() && !ruleset.chains.iter().any(|c| c.hook == Hook::Forward) {
                d.comment = published::LEFT_TO_ENGINE.into();
            }
            d
        }
        Destination::Out | Destination::ContainerOut => {
            unreachable!("a connection out is asked with `expect_out`")
        }
    }
}

/// What the model decides for a connection out (`to`: the host's own, or
/// a container's) to `peer`'s [`OUT_PORT`] from `local_port`: the verdict
/// on its first packet (output's, or forward's), and when it passes, the
/// verdict on the peer's answer, which arrives on `interface` as an
/// established connection (input's, or forward's). The chains of ours on
/// output and forward match no address for a connection that is not
/// DNAT'd (conntrack state, loopback, ICMP, DNAT status), so the peer's
/// address stands in for the host's or the container's there.
fn expect_out(
    ruleset: &Ruleset,
    to: Destination,
    peer: IpAddr,
    interface: &str,
    local_port: u16,
) -> Decision {
    let (out_hook, answer_hook) = match to {
        Destination::ContainerOut => (Hook::Forward, Hook::Forward),
        _ => (Hook::Output, Hook::Input),
    };
    let out = Packet {
        source: peer,
        protocol: Protocol::Tcp,
        dport: OUT_PORT,
        interface: None,
        state: CtState::New,
    };
    let first = eval::evaluate(ruleset, out_hook, &out);
    if !first.accepted() {
        return first;
    }
    let answer = Packet {
        source: peer,
        protocol: Protocol::Tcp,
        dport: local_port,
        interface: Some(interface.to_string()),
        state: CtState::Established,
    };
    eval::evaluate(ruleset, answer_hook, &answer)
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
            let mut candidates = sources.clone();
            if r.set.is_none() {
                let anyone = outsiders(ruleset, &r.families).into_iter();
                candidates.extend(anyone.map(|a| (a, "any source".to_string())));
            }
            let host = candidates
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| !metered.contains(&(meter, *a)))
                .map(|a| rate_probe(ruleset, Destination::Host, a, &on[0], service, rate))
                .find(|p| p.first != p.spent);
            let host_sequence = host.is_some();
            if let Some(p) = host {
                metered.push((meter, p.source));
                rate_probes.push(p);
            }
            let published =
                published::rate_probe(ruleset, &candidates, &on[0], service, rate, &rate_probes);
            let published = published.or_else(|| {
                let host = rate_probes.last().filter(|_| host_sequence)?;
                published::with_host(ruleset, host, rate)
            });
            if let Some(p) = published {
                metered.push((meter, p.source));
                rate_probes.push(p);
            }
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
        b.published_rule(*index, r, &sources, &on);
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

    let local_port = published::local_port(&rules);
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
        // The host's and a container's own connections out, once per
        // family.
        for (to, who) in [
            (Destination::Out, "the host's"),
            (Destination::ContainerOut, "a container's"),
        ] {
            let d = expect_out(ruleset, to, source, &default, local_port);
            b.probes.push(Probe {
                source,
                interface: default.clone(),
                service: Service::Tcp(OUT_PORT),
                to,
                expected: Outcome::of(d.verdict),
                rule: d.comment,
                why: format!("{who} own connection out: the answer must come back"),
            });
        }
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
    b.published_unnamed(&rules);
    let container_port = published::container_port(&rules);
    let mut probes = b.probes;
    probes.retain(|p| !(rate_probes.iter().any(|r| r.source == p.source) && limited(ruleset, p)));
    published::within_budget(ruleset, &mut probes);

    Plan {
        profile: ruleset.profile.clone(),
        interfaces,
        probes,
        rate_probes,
        container_port,
        local_port,
    }
}

mod published;
mod read;
#[cfg(test)]
mod tests;
