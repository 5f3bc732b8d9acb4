//! Probes of published container ports. Docker and Podman publish a port
//! by DNAT in prerouting; the connection is forwarded to the container and
//! judged on the forward hook (the `containers` chain), never by input. The
//! replica proves that chain with the same path: a probe to a published
//! address of the replica is DNAT'd to a container namespace behind it.
//!
//! Which ports count as published:
//! - every port a rule names, with the rule's sources and interfaces, at
//!   the edges of its ranges and just outside them, as for the host: the
//!   containers chain holds the same rules, matched on the port the client
//!   connected to (`ct original proto-dst`);
//! - one port no rule names ([`UNNAMED`]), from outside every set and from
//!   a member of every group: a published port the profile does not name
//!   must be filtered when input's policy is drop.
//!
//! The ports a host really publishes are not added: the plan is pure (it
//! reads the model, not the machine), and the containers chain decides a
//! published port only by whether a rule's range holds it, so every
//! published port falls in a class above: named by a rule (proven at the
//! range's edges) or named by none (proven by the unnamed port).
//!
//! With `containers = "ignore"` the same probes are planned: the model then
//! has no chain of ours on the forward hook, the expectation is open from
//! everywhere, and the rows show what the engine alone lets in.

use super::*;

/// What decides a published port when no chain of ours is on the forward
/// hook: the engine's own rules (open, for the engines the tests run).
pub(super) const LEFT_TO_ENGINE: &str =
    "no chain of ours on forward: the engine decides (containers = \"ignore\")";

/// A port no rule names is published at the first of these that no rule
/// of either protocol names (8081: the unnamed port of the Docker tests).
const UNNAMED: [u16; 5] = [8081, 9000, 5000, 27017, 11211];
/// The container listens on the first of these no rule names.
const CONTAINER: [u16; 5] = [9, 19, 37, 49, 60999];

fn named(rules: &[(usize, Reading)], port: u16) -> bool {
    rules
        .iter()
        .flat_map(|(_, r)| &r.ranges)
        .any(|&(_, first, last)| first <= port && port <= last)
}

fn first_unnamed(rules: &[(usize, Reading)], candidates: &[u16]) -> u16 {
    let free = candidates.iter().find(|&&p| !named(rules, p));
    *free.unwrap_or(&candidates[0])
}

/// The host's local port for its connections out: not one the replica
/// listens on, nor one a rule names.
const LOCAL: [u16; 5] = [61999, 62999, 63999, 64999, 60998];

pub(super) fn local_port(rules: &[(usize, Reading)]) -> u16 {
    first_unnamed(rules, &LOCAL)
}

/// The port the replica's container listens on.
pub(super) fn container_port(rules: &[(usize, Reading)]) -> u16 {
    first_unnamed(rules, &CONTAINER)
}

fn port_services(services: &[Service]) -> impl Iterator<Item = Service> + '_ {
    services
        .iter()
        .copied()
        .filter(|s| matches!(s, Service::Tcp(_) | Service::Udp(_)))
}

impl Builder<'_> {
    /// The published twins of a rule's port probes: same sources, same
    /// interfaces, and just outside each range from the first source.
    pub(super) fn published_rule(
        &mut self,
        index: usize,
        r: &Reading,
        sources: &[(IpAddr, String)],
        on: &[String],
    ) {
        let comment = &r.rule.comment;
        for iface in on {
            for (source, whence) in sources {
                for service in port_services(&r.services) {
                    let why = format!("published, rule {index} ({comment}): {whence}");
                    self.add_to(Destination::Published, *source, iface, service, why);
                }
            }
        }
        let Some((source, whence)) = sources.first() else {
            return;
        };
        for &(proto, first, last) in &r.ranges {
            let edges = [first.checked_sub(1), last.checked_add(1)];
            for port in edges.into_iter().flatten().filter(|&p| p != 0) {
                let service = match proto {
                    Protocol::Tcp => Service::Tcp(port),
                    Protocol::Udp => Service::Udp(port),
                };
                let why = format!("published, next to rule {index} ({comment}): {whence}");
                self.add_to(Destination::Published, *source, &on[0], service, why);
            }
        }
    }

    /// A published port no rule names: from outside every set on the
    /// interface no rule names, and from a member of each group on the
    /// interface its rule names.
    pub(super) fn published_unnamed(&mut self, rules: &[(usize, Reading)]) {
        let port = first_unnamed(rules, &UNNAMED);
        let services = [Service::Tcp(port), Service::Udp(port)];
        let default = self.default_interface.clone();
        for f in [Family::Ipv4, Family::Ipv6] {
            let Some(source) = outside(self.ruleset, f) else {
                continue;
            };
            for service in services {
                let why = "published port no rule names: any source".to_string();
                self.add_to(Destination::Published, source, &default, service, why);
            }
        }
        for (_, r) in rules {
            let Some((_, set)) = r.set else { continue };
            let Some(SetKind::Prefixes(nets)) = self.ruleset.set(set).map(|s| &s.kind) else {
                continue;
            };
            let Some(&source) = representatives(nets).first() else {
                continue;
            };
            let iface = r.interface.map_or_else(|| default.clone(), concrete);
            for service in services {
                let why = format!("published port no rule names: in @{set}");
                self.add_to(Destination::Published, source, &iface, service, why);
            }
        }
    }
}

/// The containers chain's own per-source limit, proven with a sequence to
/// a published port: from a source of the rule other than every sequence's
/// so far (the meter counts per source, host and published alike, so two
/// sequences from one source would race for one bucket), and only where
/// the limit holds on the published path (the first connection passes, a
/// spent bucket drops): a sequence whose every attempt is filtered would
/// wait out each one and prove nothing.
pub(super) fn rate_probe(
    ruleset: &Ruleset,
    sources: &[(IpAddr, String)],
    interface: &str,
    service: Service,
    rate: Rate,
    sequences: &[RateProbe],
) -> Option<RateProbe> {
    sources
        .iter()
        .filter(|(a, _)| !sequences.iter().any(|r| r.source == *a))
        .map(|(a, _)| {
            super::rate_probe(
                ruleset,
                Destination::Published,
                *a,
                interface,
                service,
                rate,
            )
        })
        .find(|p| p.first == Outcome::Open && p.spent != Outcome::Open)
}

/// The published sequence of a limit whose every source already runs a
/// host sequence (a group of one address): sent inside the host sequence
/// of `host`'s source, so the containers chain's limit is proven too.
/// Only where its first attempt, after the host's first, still meets a
/// token (`burst` of at least 2), and where the limit holds on the
/// published path.
pub(super) fn with_host(ruleset: &Ruleset, host: &RateProbe, rate: Rate) -> Option<RateProbe> {
    if host.to != Destination::Host || host.with_host || rate.burst < 2 {
        return None;
    }
    let to = Destination::Published;
    let p = super::rate_probe(
        ruleset,
        to,
        host.source,
        &host.interface,
        host.service,
        rate,
    );
    (p.first == Outcome::Open && p.spent != Outcome::Open).then_some(RateProbe {
        with_host: true,
        ..p
    })
}

/// A per-source limit counts a source's new connections to the host and
/// to its published ports in one meter (the containers chain uses input's
/// meter set), and every probe must meet the bucket full: published probes
/// a limit counts are kept only while their source's limited probes, host
/// and published, stay within the smallest burst (at least one).
pub(super) fn within_budget(ruleset: &Ruleset, probes: &mut Vec<Probe>) {
    let bursts = ruleset.chains.iter().flat_map(|c| &c.rules).flat_map(|r| {
        r.matches.iter().filter_map(|m| match m {
            Match::SourceRateOver { rate, .. } => Some(rate.burst),
            _ => None,
        })
    });
    let Some(budget) = bursts.min().map(|b| b.max(1) as usize) else {
        return;
    };
    let flags: Vec<bool> = probes.iter().map(|p| super::limited(ruleset, p)).collect();
    let mut spent: std::collections::BTreeMap<IpAddr, usize> = Default::default();
    for (p, &l) in probes.iter().zip(&flags) {
        if l && p.to == Destination::Host {
            *spent.entry(p.source).or_default() += 1;
        }
    }
    let mut keep = Vec::with_capacity(probes.len());
    for (p, l) in probes.drain(..).zip(flags) {
        if l && p.to == Destination::Published {
            let used = spent.entry(p.source).or_default();
            if *used >= budget {
                continue;
            }
            *used += 1;
        }
        keep.push(p);
    }
    *probes = keep;
}
