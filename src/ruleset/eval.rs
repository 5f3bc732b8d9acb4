//! Evaluates the ruleset model for one packet, the way the kernel would:
//! which rule decides, and what it decides. The lockout guard asks it about
//! the operator's SSH connection; the probe plan asks it what every probe
//! should see.
//!
//! It reads the model only. Where the outcome depends on run-time state the
//! model cannot know (a per-source meter, a global rate limit), it assumes
//! the packet is under the limit: the first packet of a connection. The
//! probe plan also asks the other question, with [`Meters::Spent`]: what
//! happens once a source has used up its per-source rate and burst.
//!
//! A hook can hold several of our base chains (the forward hook holds
//! `forward` and `containers`). The kernel runs them all, in priority order,
//! and a drop in any is final; so the packet passes only if every one
//! accepts it, and the first to drop it decides.

use std::net::IpAddr;

use ipnet::IpNet;

use super::model::*;

/// A packet as the input hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub source: IpAddr,
    pub protocol: Protocol,
    pub dport: u16,
    /// The interface it arrives on, when known. A rule that names an
    /// interface never matches a packet whose interface is unknown.
    pub interface: Option<String>,
    pub state: CtState,
}

/// An ICMP or ICMPv6 message; its family must be the family of `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpPacket {
    pub source: IpAddr,
    pub interface: Option<String>,
    pub kind: IcmpKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    V4(IcmpType),
    V6(Icmpv6Type),
}

/// What a packet carries above IP, as far as a rule can look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Port { protocol: Protocol, dport: u16 },
    Icmp(IcmpKind),
}

/// The state of the source's per-source rate-limit buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meters {
    /// Under every limit: the first new connection from the source.
    Fresh,
    /// Over every per-source limit: rate and burst spent.
    Spent,
}

/// Whether the connection's destination was rewritten before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// Addressed to the host itself, or routed through it unchanged.
    None,
    /// A published container port: DNAT'd in prerouting, then forwarded.
    Dnat,
}

/// The fields every match reads, whatever the packet.
struct View<'a> {
    source: IpAddr,
    transport: Transport,
    interface: Option<&'a str>,
    state: CtState,
    meters: Meters,
    nat: Nat,
}

/// What the chain decides, and which rule decided (`None`: the policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: Option<usize>,
    pub comment: String,
}

impl Decision {
    pub fn accepted(&self) -> bool {
        self.verdict == Verdict::Accept
    }
}

/// Runs `packet` through the chain on `hook`. A ruleset without that chain
/// accepts everything (nothing of ours is on the hook).
pub fn evaluate(ruleset: &Ruleset, hook: Hook, packet: &Packet) -> Decision {
    evaluate_with(ruleset, hook, packet, Meters::Fresh)
}

/// Like [`evaluate`], with the source's per-source meters in `meters`.
pub fn evaluate_with(ruleset: &Ruleset, hook: Hook, packet: &Packet, meters: Meters) -> Decision {
    let view = View {
        source: packet.source,
        transport: Transport::Port {
            protocol: packet.protocol,
            dport: packet.dport,
        },
        interface: packet.interface.as_deref(),
        state: packet.state,
        meters,
        nat: Nat::None,
    };
    decide(ruleset, hook, &view)
}

/// What the forward hook decides for a connection to a published container
/// port: `packet.dport` is the port the client connected to (the host's
/// published port), the one `ct original proto-dst` reads. The model never
/// matches the forwarded packet's own port (the container's) on this hook.
pub fn evaluate_published(ruleset: &Ruleset, packet: &Packet, meters: Meters) -> Decision {
    let view = View {
        source: packet.source,
        transport: Transport::Port {
            protocol: packet.protocol,
            dport: packet.dport,
        },
        interface: packet.interface.as_deref(),
        state: packet.state,
        meters,
        nat: Nat::Dnat,
    };
    decide(ruleset, Hook::Forward, &view)
}

/// What the chain decides for an ICMP message (a ping, a neighbour
/// solicitation) under every limit.
pub fn evaluate_icmp(ruleset: &Ruleset, hook: Hook, icmp: &IcmpPacket) -> Decision {
    let view = View {
        source: icmp.source,
        transport: Transport::Icmp(icmp.kind),
        interface: icmp.interface.as_deref(),
        state: CtState::New,
        meters: Meters::Fresh,
        nat: Nat::None,
    };
    decide(ruleset, hook, &view)
}

fn decide(ruleset: &Ruleset, hook: Hook, packet: &View) -> Decision {
    let mut chains: Vec<&Chain> = ruleset.chains.iter().filter(|c| c.hook == hook).collect();
    // Stable: chains of equal priority keep the model's order.
    chains.sort_by_key(|c| c.priority);
    let mut last = Decision {
        verdict: Verdict::Accept,
        rule: None,
        comment: format!("no {} chain", hook.as_str()),
    };
    for chain in chains {
        last = decide_chain(ruleset, chain, packet);
        if !last.accepted() {
            break;
        }
    }
    last
}

fn decide_chain(ruleset: &Ruleset, chain: &Chain, packet: &View) -> Decision {
    for (i, rule) in chain.rules.iter().enumerate() {
        let Some(verdict) = rule.verdict else {
            continue;
        };
        if rule.matches.iter().all(|m| matches(ruleset, m, packet)) {
            return Decision {
                verdict,
                rule: Some(i),
                comment: rule.comment.clone(),
            };
        }
    }
    Decision {
        verdict: match chain.policy {
            Policy::Accept => Verdict::Accept,
            Policy::Drop => Verdict::Drop,
        },
        rule: None,
        comment: format!("policy of chain {}", chain.name),
    }
}

fn family_of(addr: &IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

pub(super) fn interface_matches(pattern: &str, name: Option<&str>) -> bool {
    let Some(name) = name else { return false };
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Whether the prefixes of a set hold `addr`. They are sorted and disjoint
/// (the model's invariant), so only the last one starting at or below the
/// address can: a binary search, since a million-prefix group is looked up
/// per probe and per audited socket.
pub fn prefixes_hold(nets: &[IpNet], addr: &IpAddr) -> bool {
    let after = nets.partition_point(|n| n.network() <= *addr);
    after > 0 && nets[after - 1].contains(addr)
}

/// Whether `source` is in named set `set`. A hatch element counts until
/// the deadline: the model is the ruleset as loaded, before it expires.
fn in_set(ruleset: &Ruleset, set: &str, source: &IpAddr) -> bool {
    match ruleset.set(set).map(|s| &s.kind) {
        Some(SetKind::Prefixes(nets)) => prefixes_hold(nets, source),
        Some(SetKind::Hatch(Some(e))) => e.addr == *source,
        // Who is banned is not in the model: the model answers for a
        // source nobody banned.
        Some(SetKind::Hatch(None))
        | Some(SetKind::Meter { .. })
        | Some(SetKind::Bans { .. })
        | None => false,
    }
}

fn matches(ruleset: &Ruleset, m: &Match, p: &View) -> bool {
    let port = match p.transport {
        Transport::Port { protocol, dport } => Some((protocol, dport)),
        Transport::Icmp(_) => None,
    };
    match m {
        Match::Family(f) => family_of(&p.source) == *f,
        Match::InInterface(name) => interface_matches(name, p.interface),
        // Input packets have no output interface.
        Match::OutInterface(_) => false,
        Match::CtState(states) => states.contains(&p.state),
        Match::Protocol(protos) => port.is_some_and(|(proto, _)| protos.contains(&proto)),
        Match::DestPort(ranges) => port.is_some_and(|(_, d)| ranges.iter().any(|r| r.contains(d))),
        Match::SourceInSet { family, set } => {
            family_of(&p.source) == *family && in_set(ruleset, set, &p.source)
        }
        Match::SourceNotInSet { family, set } => {
            family_of(&p.source) == *family && !in_set(ruleset, set, &p.source)
        }
        Match::Source(addr) => p.source == *addr,
        // `icmp type` also checks the protocol (nft adds `meta l4proto
        // icmp` before it), and so the family.
        Match::IcmpType(types) => match p.transport {
            Transport::Icmp(IcmpKind::V4(t)) => types.contains(&t),
            _ => false,
        },
        Match::Icmpv6Type(types) => match p.transport {
            Transport::Icmp(IcmpKind::V6(t)) => types.contains(&t),
            _ => false,
        },
        Match::SourceRateOver { family, .. } => {
            p.meters == Meters::Spent && family_of(&p.source) == *family
        }
        Match::CtStatus(CtStatus::Dnat) => p.nat == Nat::Dnat,
        // Without NAT the original port is the packet's own.
        Match::OrigDestPort(ranges) => {
            port.is_some_and(|(_, d)| ranges.iter().any(|r| r.contains(d)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load, SearchPath};

    fn vps() -> Ruleset {
        let search = SearchPath {
            dirs: vec![],
            builtin: true,
        };
        crate::compile::compile(&load("vps-profile", &search).profile.unwrap())
    }

    fn tcp(source: &str, dport: u16, interface: Option<&str>) -> Packet {
        Packet {
            source: source.parse().unwrap(),
            protocol: Protocol::Tcp,
            dport,
            interface: interface.map(str::to_string),
            state: CtState::New,
        }
    }

    #[test]
    fn vps_profile_lets_the_world_reach_only_web_and_wireguard() {
        let r = vps();
        let eval = |p: Packet| evaluate(&r, Hook::Input, &p);
        assert!(eval(tcp("203.0.113.9", 443, Some("eth0"))).accepted());
        assert!(!eval(tcp("203.0.113.9", 6379, Some("eth0"))).accepted());
        assert!(!eval(tcp("203.0.113.9", 22, Some("eth0"))).accepted());
        assert!(
            !eval(tcp("10.0.0.7", 5432, Some("eth0"))).accepted(),
            "databases only on wg0"
        );
        assert!(eval(tcp("10.0.0.7", 5432, Some("wg0"))).accepted());
        assert!(
            !eval(tcp("10.0.0.7", 5432, None)).accepted(),
            "unknown interface never matches"
        );
        assert!(eval(tcp("192.0.2.10", 22, None)).accepted());
        assert!(eval(tcp("2001:db8:1::5", 22, None)).accepted());
        let udp = Packet {
            protocol: Protocol::Udp,
            ..tcp("198.51.100.1", 51820, None)
        };
        assert!(eval(udp).accepted());
    }

    #[test]
    fn established_traffic_is_accepted_first() {
        let r = vps();
        let p = Packet {
            state: CtState::Established,
            ..tcp("203.0.113.9", 6379, None)
        };
        let d = evaluate(&r, Hook::Input, &p);
        assert!(d.accepted());
        assert_eq!(d.rule, Some(0));
    }

    #[test]
    fn the_policy_decides_what_no_rule_does() {
        let d = evaluate(&vps(), Hook::Input, &tcp("203.0.113.9", 3306, None));
        assert_eq!((d.verdict, d.rule), (Verdict::Drop, None));
        assert!(evaluate(&vps(), Hook::Output, &tcp("203.0.113.9", 3306, None)).accepted());
    }

    #[test]
    fn a_spent_per_source_meter_drops_the_next_connection() {
        let r = vps();
        let p = tcp("192.0.2.10", 22, None);
        assert!(evaluate_with(&r, Hook::Input, &p, Meters::Fresh).accepted());
        let d = evaluate_with(&r, Hook::Input, &p, Meters::Spent);
        assert_eq!(d.verdict, Verdict::Drop);
        assert!(d.comment.ends_with("over limit"), "{}", d.comment);
        // Web has no per-source limit.
        assert!(evaluate_with(
            &r,
            Hook::Input,
            &tcp("192.0.2.10", 443, None),
            Meters::Spent
        )
        .accepted());
    }

    #[test]
    fn ping_is_accepted_in_both_families_and_never_matches_a_port_rule() {
        let r = vps();
        let kinds = [
            IcmpKind::V4(IcmpType::EchoRequest),
            IcmpKind::V6(Icmpv6Type::EchoRequest),
        ];
        for (source, kind) in ["203.0.113.9", "2001:db8:9::1"].into_iter().zip(kinds) {
            let icmp = IcmpPacket {
                source: source.parse().unwrap(),
                interface: Some("eth0".into()),
                kind,
            };
            let d = evaluate_icmp(&r, Hook::Input, &icmp);
            assert!(d.accepted(), "{source}");
            assert_eq!(d.comment, "defaults: ping");
        }
        let ns = IcmpPacket {
            source: "2001:db8:9::1".parse().unwrap(),
            interface: Some("eth0".into()),
            kind: IcmpKind::V6(Icmpv6Type::NdNeighborSolicit),
        };
        let d = evaluate_icmp(&r, Hook::Input, &ns);
        assert_eq!(d.comment, "defaults: essential icmpv6");
    }
}
