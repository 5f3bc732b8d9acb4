//! The kernel's own account of the probes (see [`crate::nft::trace`]): a
//! table of the replica's own marks every packet that reaches the target
//! for tracing, and the trace then says which rule of table `inet
//! fwharden` decided each probe, by handle, and which rules any packet
//! matched. The plan's deciding rule is the model's answer; this one is
//! the kernel's, so the two are compared, and the rules no packet matched
//! are listed.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use nftnl::nftnl_sys::libc;
use serde::Serialize;

use super::container::load_text;
use crate::netns::Netns;
use crate::nft::trace::{Event, Kind, Packet};
use crate::nft::KernelRule;
use crate::probe::plan::Service;
use crate::probe::ProbeError;
use crate::ruleset::TABLE_NAME;

/// The replica's marking table: on prerouting ahead of every other hook
/// priority (raw's -300, conntrack's -200), so each packet's first trace
/// message is its mark, with the headers as they arrived (before a DNAT).
pub const TABLE: &str = "fwharden-probe-trace";

/// Marks every packet that reaches the target and, with `output` (the
/// loaded table has an output chain), every packet the target sends:
/// its answers to the probes, and its own connections out.
pub fn arm(target: &Netns, output: bool) -> Result<(), ProbeError> {
    let chain = |name: &str, hook: &str| {
        format!("  chain {name} {{\n    type filter hook {hook} priority -350; policy accept;\n    meta nftrace set 1\n  }}\n")
    };
    let mut chains = chain("trace", "prerouting");
    if output {
        chains.push_str(&chain("trace_out", "output"));
    }
    let text = format!("table inet {TABLE} {{\n{chains}}}\n");
    load_text(
        target,
        &format!("its trace table (inet {TABLE}, `nft -f`)"),
        &text,
    )
}

/// One packet's trace: its headers as they arrived, and the messages of
/// table `inet fwharden` about it, in order.
struct Traced<'a> {
    packet: Packet,
    ours: Vec<&'a Event>,
}

/// What the kernel said during a run.
pub struct Heard {
    events: Vec<Event>,
    rules: Vec<KernelRule>,
}

/// Which of fwharden's kernel rules some packet matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub covered: usize,
    pub total: usize,
    /// `chain: comment` of each rule no packet matched, with why.
    pub uncovered: Vec<String>,
}

impl Heard {
    pub fn new(rules: Vec<KernelRule>) -> Heard {
        Heard {
            events: Vec::new(),
            rules,
        }
    }

    /// More messages, in the order the kernel sent them.
    pub fn hear(&mut self, more: Vec<Event>) {
        self.events.extend(more);
    }

    /// The packets, each from its mark (the first message of its trace).
    /// A trace id is the kernel's per-packet cookie and may come back for
    /// a later packet: a new mark starts a new packet.
    fn packets(&self) -> Vec<Traced<'_>> {
        let mut packets: Vec<Traced> = Vec::new();
        let mut open: HashMap<u32, usize> = HashMap::new();
        for e in &self.events {
            match (&e.packet, e.table.as_str()) {
                (Some(p), TABLE) => {
                    packets.push(Traced {
                        packet: *p,
                        ours: Vec::new(),
                    });
                    open.insert(e.id, packets.len() - 1);
                }
                (_, TABLE_NAME) => {
                    if let Some(&k) = open.get(&e.id) {
                        packets[k].ours.push(e);
                    }
                }
                _ => {}
            }
        }
        packets
    }

    /// What decided the first packet of a probe from `source` to `to`, as
    /// the model names it: a rule's comment, or `policy of chain NAME`.
    /// `None` when no packet of the probe was heard, or when no chain of
    /// ours decided it.
    pub fn decided(&self, source: IpAddr, to: IpAddr, service: Service) -> Option<String> {
        let packets = self.packets();
        let decisive = decisive(first(&packets, (source, None), to, service)?)?;
        Some(self.name(decisive))
    }

    /// What decided the host's connection out from `host` (and its local
    /// port) to `peer`: a chain of ours that dropped its first packet on
    /// output (traced when the table has an output chain), else what
    /// decided the peer's answer on input, the SYN-ACK.
    pub fn decided_out(
        &self,
        (host, local_port): (IpAddr, u16),
        peer: IpAddr,
        service: Service,
    ) -> Option<String> {
        let packets = self.packets();
        let syn = first(&packets, (host, Some(local_port)), peer, service).and_then(decisive);
        if let Some(e) = syn.filter(|e| e.verdict == Some(libc::NF_DROP)) {
            return Some(self.name(e));
        }
        let Service::Tcp(port) = service else {
            return None;
        };
        let answer = packets.iter().find(|t| {
            let p = &t.packet;
            (p.source, p.destination, p.sport, p.dport) == (peer, host, port, local_port)
                && i32::from(p.protocol) == libc::IPPROTO_TCP
                && p.tcp_flags & 0x12 == 0x12
        })?;
        decisive(answer).map(|e| self.name(e))
    }

    /// A decisive message as the model names it: the rule's comment, or
    /// `policy of chain NAME`.
    fn name(&self, decisive: &Event) -> String {
        match (decisive.kind, decisive.handle) {
            (Kind::Rule, Some(h)) => match self.rules.iter().find(|r| r.handle == h) {
                Some(r) => r.comment.clone(),
                None => format!("rule handle {h} of chain {}", decisive.chain),
            },
            _ => format!("policy of chain {}", decisive.chain),
        }
    }

    /// Whether the first packet of a probe from `source` (and its local
    /// port, when several probes share a port) to `to` was dropped by a
    /// chain of ours without an answer (a drop rule or a drop policy, not
    /// a reject): the probe can only be filtered, and need not wait for an
    /// answer that cannot come.
    pub fn dropped(&self, source: (IpAddr, Option<u16>), to: IpAddr, service: Service) -> bool {
        let packets = self.packets();
        let Some(e) = first(&packets, source, to, service).and_then(decisive) else {
            return false;
        };
        e.verdict == Some(libc::NF_DROP)
            && match (e.kind, e.handle) {
                (Kind::Policy, _) => true,
                (Kind::Rule, Some(h)) => self.rules.iter().any(|r| r.handle == h && r.silent_drop),
                _ => false,
            }
    }

    /// The rules of table `inet fwharden` that some packet matched (the
    /// decisive one, or one that counted or logged it and went on); `why`
    /// says why a rule cannot be reached by construction, if it cannot.
    pub fn coverage(&self, why: &dyn Fn(&KernelRule) -> Option<&'static str>) -> Coverage {
        let seen: BTreeSet<u64> = self
            .events
            .iter()
            .filter(|e| e.table == TABLE_NAME && e.kind == Kind::Rule)
            .filter_map(|e| e.handle)
            .collect();
        let uncovered: Vec<String> = self
            .rules
            .iter()
            .filter(|r| !seen.contains(&r.handle))
            .map(|r| {
                let why = why(r).unwrap_or("no probe's packet matched it");
                format!("{}: {} ({why})", r.chain, r.comment)
            })
            .collect();
        Coverage {
            covered: self.rules.len() - uncovered.len(),
            total: self.rules.len(),
            uncovered,
        }
    }
}

/// The first packet of a probe from `source` to `to`: a TCP connection's
/// SYN (not the ACK after), a datagram, an echo request or a neighbour
/// solicitation.
fn first<'h, 'e>(
    packets: &'h [Traced<'e>],
    (source, sport): (IpAddr, Option<u16>),
    to: IpAddr,
    service: Service,
) -> Option<&'h Traced<'e>> {
    // (protocol, port, ICMP type): echo request 8 and 128, neighbour
    // solicitation 135.
    let (protocol, dport, icmp_type) = match (service, to) {
        (Service::Tcp(p), _) => (libc::IPPROTO_TCP, p, 0),
        (Service::Udp(p), _) => (libc::IPPROTO_UDP, p, 0),
        (Service::Ping, IpAddr::V4(_)) => (libc::IPPROTO_ICMP, 0, 8),
        (Service::Ping, IpAddr::V6(_)) => (libc::IPPROTO_ICMPV6, 0, 128),
        (Service::NeighborSolicit, IpAddr::V6(_)) => (libc::IPPROTO_ICMPV6, 0, 135),
        (Service::NeighborSolicit, IpAddr::V4(_)) => return None,
    };
    packets.iter().find(|t| {
        let p = &t.packet;
        p.source == source
            && p.destination == to
            && i32::from(p.protocol) == protocol
            && p.dport == dport
            && sport.is_none_or(|s| p.sport == s)
            && p.icmp_type == icmp_type
            && (protocol != libc::IPPROTO_TCP || p.tcp_flags & 0x12 == 0x02)
    })
}

/// The message of ours that decided a packet. Each chain of ours on the
/// hook decides in turn, as the model walks them: the first drop ends it,
/// else the last accept stands.
fn decisive<'e>(t: &Traced<'e>) -> Option<&'e Event> {
    let finals: Vec<&'e Event> = t.ours.iter().copied().filter(|e| e.is_final()).collect();
    finals
        .iter()
        .find(|e| e.verdict == Some(libc::NF_DROP))
        .or(finals.last())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "192.0.2.7";
    const TO: &str = "198.18.0.1";

    fn rule(
        chain: &str,
        index: usize,
        handle: u64,
        comment: &str,
        silent_drop: bool,
    ) -> KernelRule {
        KernelRule {
            chain: chain.into(),
            index,
            handle,
            comment: comment.into(),
            silent_drop,
        }
    }

    /// A packet's mark (its first message, with headers), then messages
    /// of ours: (kind, handle, verdict).
    fn packet(id: u32, port: u16, flags: u8, ours: &[(Kind, Option<u64>, i32)]) -> Vec<Event> {
        let mark = Event {
            id,
            kind: Kind::Rule,
            table: TABLE.into(),
            chain: "trace".into(),
            handle: Some(1),
            verdict: Some(libc::NFT_CONTINUE),
            packet: Some(Packet {
                source: FROM.parse().unwrap(),
                destination: TO.parse().unwrap(),
                protocol: libc::IPPROTO_TCP as u8,
                sport: 40000,
                dport: port,
                tcp_flags: flags,
                icmp_type: 0,
            }),
        };
        std::iter::once(mark)
            .chain(ours.iter().map(|&(kind, handle, verdict)| Event {
                id,
                kind,
                table: TABLE_NAME.into(),
                chain: "input".into(),
                handle,
                verdict: Some(verdict),
                packet: None,
            }))
            .collect()
    }

    #[test]
    fn the_first_syn_s_decisive_message_names_the_rule_and_a_silent_drop_settles_it() {
        let rules = vec![
            rule("input", 0, 10, "t.toml:3 allow ssh", false),
            rule("input", 1, 11, "t.toml:5 reject 23", false),
            rule("input", 2, 12, "t.toml:7 deny 2323", true),
            rule("input", 3, 13, "defaults: log drops", false),
        ];
        let mut heard = Heard::new(rules);
        // 22: accepted; its ACK (same id, reused) is not the first packet.
        heard.hear(packet(
            1,
            22,
            0x02,
            &[(Kind::Rule, Some(10), libc::NF_ACCEPT)],
        ));
        heard.hear(packet(1, 22, 0x10, &[(Kind::Policy, None, libc::NF_DROP)]));
        // 23: a reject, whose trace verdict is a drop too.
        heard.hear(packet(
            2,
            23,
            0x02,
            &[(Kind::Rule, Some(11), libc::NF_DROP)],
        ));
        // 2323: a silent drop; 2424: logged, then the policy.
        heard.hear(packet(
            3,
            2323,
            0x02,
            &[(Kind::Rule, Some(12), libc::NF_DROP)],
        ));
        heard.hear(packet(
            4,
            2424,
            0x02,
            &[
                (Kind::Rule, Some(13), libc::NFT_CONTINUE),
                (Kind::Policy, None, libc::NF_DROP),
            ],
        ));
        let (from, to) = (FROM.parse().unwrap(), TO.parse().unwrap());
        let decided = |p| heard.decided(from, to, Service::Tcp(p));
        assert_eq!(decided(22).as_deref(), Some("t.toml:3 allow ssh"));
        assert_eq!(decided(23).as_deref(), Some("t.toml:5 reject 23"));
        assert_eq!(decided(2323).as_deref(), Some("t.toml:7 deny 2323"));
        assert_eq!(decided(2424).as_deref(), Some("policy of chain input"));
        assert_eq!(decided(80), None, "never heard");
        let dropped = |p| heard.dropped((from, None), to, Service::Tcp(p));
        assert!(
            !dropped(22) && !dropped(23),
            "an accept and a reject wait for their answers"
        );
        assert!(dropped(2323) && dropped(2424));
        let c = heard.coverage(&|_| None);
        assert_eq!((c.covered, c.total), (4, 4), "{c:?}");
        // With a local port, only that attempt's packet counts.
        assert!(!heard.dropped((from, Some(40001)), to, Service::Tcp(2323)));
        assert!(heard.dropped((from, Some(40000)), to, Service::Tcp(2323)));
    }

    #[test]
    fn the_host_s_connection_out_is_decided_by_what_decided_the_answer() {
        let rules = vec![rule("input", 0, 10, "defaults: established", false)];
        let mut heard = Heard::new(rules);
        // The peer FROM answers the host TO's connection from local port
        // 61999 to its port 40000 with a SYN-ACK, accepted as established.
        heard.hear(packet(
            1,
            61999,
            0x12,
            &[(Kind::Rule, Some(10), libc::NF_ACCEPT)],
        ));
        let (peer, host) = (FROM.parse().unwrap(), TO.parse().unwrap());
        let decided = |local| heard.decided_out((host, local), peer, Service::Tcp(40000));
        assert_eq!(decided(61999).as_deref(), Some("defaults: established"));
        assert_eq!(decided(62999), None, "another local port's answer");
        // A plain SYN to that port is not an answer.
        let mut syn_only = Heard::new(vec![]);
        syn_only.hear(packet(
            2,
            61999,
            0x02,
            &[(Kind::Policy, None, libc::NF_DROP)],
        ));
        let decided = syn_only.decided_out((host, 61999), peer, Service::Tcp(40000));
        assert_eq!(decided, None);
    }
}
