//! Model rule -> expressions, with the dependencies nft would add.

use std::net::IpAddr;

use crate::nft::expr::{CmpOp, Decision, Expr, Limit, Membership, MetaKey, Reject};
use crate::ruleset::*;

use super::{
    ct_bit, nfproto, port_unreachable, saddr, AnonSet, AnonValues, Ctx, PortHeader, ANON_NAME,
    DPORT, ICMP_TYPE, IFNAMSIZ, IPPROTO_ICMP, IPPROTO_ICMPV6,
};

fn ifname(name: &str) -> Vec<u8> {
    match name.strip_suffix('*') {
        // A prefix match compares only the bytes before the `*`.
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => {
            let mut b = name.as_bytes().to_vec();
            b.resize(IFNAMSIZ.max(b.len() + 1), 0);
            b
        }
    }
}

fn limit(rate: &Rate, over: bool) -> Limit {
    Limit {
        rate: rate.count.into(),
        unit_secs: rate.unit.seconds(),
        burst: rate.burst,
        over,
    }
}

/// A rule's expressions and the anonymous sets they look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub exprs: Vec<Expr>,
    pub anon: Vec<AnonSet>,
}

struct Encoder<'a> {
    ctx: Ctx,
    out: Encoded,
    next_id: &'a mut u32,
}

impl Encoder<'_> {
    fn push(&mut self, e: Expr) {
        self.out.exprs.push(e);
    }

    fn need_family(&mut self, f: Family) {
        if self.ctx.nfproto != Some(f) {
            self.push(Expr::Meta(MetaKey::NfProto));
            self.push(Expr::Cmp(CmpOp::Eq, vec![nfproto(f)]));
            self.ctx.nfproto = Some(f);
        }
    }

    fn need_l4proto(&mut self, p: u8) {
        if self.ctx.l4proto != Some(p) {
            self.push(Expr::Meta(MetaKey::L4Proto));
            self.push(Expr::Cmp(CmpOp::Eq, vec![p]));
            self.ctx.l4proto = Some(p);
        }
    }

    /// `cmp eq` for one value, else a lookup in a new anonymous set.
    fn one_or_set(&mut self, single: Option<Vec<u8>>, values: AnonValues) {
        match single {
            Some(v) => self.push(Expr::Cmp(CmpOp::Eq, v)),
            None => {
                *self.next_id += 1;
                let id = *self.next_id;
                self.out.anon.push(AnonSet { id, values });
                self.push(Expr::Lookup {
                    set: ANON_NAME.into(),
                    id: Some(id),
                    membership: Membership::In,
                });
            }
        }
    }

    /// Compares the port just loaded (network order) with `ranges`, as nft
    /// does for `th dport` and `ct original proto-dst` alike; `header` is
    /// how a set of them is described to nft.
    fn ports(&mut self, ranges: &[PortRange], header: PortHeader) {
        match ranges {
            [r] if r.first != r.last => {
                self.push(Expr::Cmp(CmpOp::Gte, r.first.to_be_bytes().to_vec()));
                self.push(Expr::Cmp(CmpOp::Lte, r.last.to_be_bytes().to_vec()));
            }
            _ => {
                let single = match ranges {
                    [r] => Some(r.first.to_be_bytes().to_vec()),
                    _ => None,
                };
                let ranges = ranges.to_vec();
                self.one_or_set(single, AnonValues::Ports { ranges, header });
            }
        }
    }

    fn matches(&mut self, m: &Match) {
        match m {
            Match::Family(f) => {
                self.push(Expr::Meta(MetaKey::NfProto));
                self.push(Expr::Cmp(CmpOp::Eq, vec![nfproto(*f)]));
                self.ctx.nfproto = Some(*f);
            }
            Match::InInterface(name) | Match::OutInterface(name) => {
                let key = match m {
                    Match::InInterface(_) => MetaKey::IifName,
                    _ => MetaKey::OifName,
                };
                self.push(Expr::Meta(key));
                self.push(Expr::Cmp(CmpOp::Eq, ifname(name)));
            }
            Match::CtState(states) => {
                let mask = states.iter().fold(0, |m, s| m | ct_bit(*s));
                self.push(Expr::CtState);
                self.push(Expr::Bitwise {
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                self.push(Expr::Cmp(CmpOp::Neq, vec![0; 4]));
            }
            Match::Protocol(protos) => {
                self.push(Expr::Meta(MetaKey::L4Proto));
                let single = match protos.as_slice() {
                    [p] => Some(vec![p.number()]),
                    _ => None,
                };
                self.ctx.l4proto = single.as_ref().map(|v| v[0]);
                self.one_or_set(single, AnonValues::Protocols(protos.clone()));
            }
            Match::DestPort(ranges) => {
                self.push(DPORT);
                let header = match self.ctx.l4proto {
                    Some(p) if p == Protocol::Tcp.number() => PortHeader::Tcp,
                    Some(p) if p == Protocol::Udp.number() => PortHeader::Udp,
                    _ => PortHeader::Any,
                };
                self.ports(ranges, header);
            }
            Match::CtStatus(status) => {
                self.push(Expr::CtStatus);
                self.push(Expr::Bitwise {
                    mask: status.bit().to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                self.push(Expr::Cmp(CmpOp::Neq, vec![0; 4]));
            }
            Match::OrigDestPort(ranges) => {
                self.push(Expr::CtOriginalProtoDst);
                self.ports(ranges, PortHeader::CtOriginal);
            }
            Match::SourceInSet { family, set } | Match::SourceNotInSet { family, set } => {
                self.need_family(*family);
                self.push(saddr(*family));
                let membership = match m {
                    Match::SourceNotInSet { .. } => Membership::NotIn,
                    _ => Membership::In,
                };
                self.push(Expr::Lookup {
                    set: set.clone(),
                    id: None,
                    membership,
                });
            }
            Match::Source(addr) => {
                let (family, octets) = match addr {
                    IpAddr::V4(a) => (Family::Ipv4, a.octets().to_vec()),
                    IpAddr::V6(a) => (Family::Ipv6, a.octets().to_vec()),
                };
                self.need_family(family);
                self.push(saddr(family));
                self.push(Expr::Cmp(CmpOp::Eq, octets));
            }
            Match::IcmpType(types) => {
                self.need_family(Family::Ipv4);
                self.need_l4proto(IPPROTO_ICMP);
                self.push(ICMP_TYPE);
                let single = (types.len() == 1).then(|| vec![types[0].number()]);
                self.one_or_set(single, AnonValues::IcmpTypes(types.clone()));
            }
            Match::Icmpv6Type(types) => {
                self.need_family(Family::Ipv6);
                self.need_l4proto(IPPROTO_ICMPV6);
                self.push(ICMP_TYPE);
                let single = (types.len() == 1).then(|| vec![types[0].number()]);
                self.one_or_set(single, AnonValues::Icmpv6Types(types.clone()));
            }
            Match::SourceRateOver { family, set, rate } => {
                self.need_family(*family);
                self.push(saddr(*family));
                self.push(Expr::Dynset {
                    set: set.clone(),
                    id: None,
                    limit: limit(rate, true),
                });
            }
        }
    }
}

/// The expressions of `rule`; anonymous sets take ids after `next_id`.
pub fn encode(rule: &Rule, next_id: &mut u32) -> Encoded {
    let mut enc = Encoder {
        ctx: Ctx::default(),
        out: Encoded {
            exprs: Vec::new(),
            anon: Vec::new(),
        },
        next_id,
    };
    for m in &rule.matches {
        enc.matches(m);
    }
    if let Some(rate) = &rule.limit {
        enc.push(Expr::Limit(limit(rate, false)));
    }
    if rule.counter {
        enc.push(Expr::Counter);
    }
    if let Some(log) = &rule.log {
        enc.push(Expr::Log {
            prefix: log.prefix.clone(),
            // The model's kernel logs are at level info (syslog 6); an
            // NFLOG log has no level (the kernel refuses both).
            level: log.group.is_none().then_some(6),
            group: log.group,
        });
    }
    if let Some(v) = &rule.verdict {
        enc.push(match v {
            Verdict::Accept => Expr::Verdict(Decision::Accept),
            Verdict::Drop => Expr::Verdict(Decision::Drop),
            Verdict::Reject(RejectWith::TcpReset) => Expr::Reject(Reject::TcpReset),
            Verdict::Reject(RejectWith::PortUnreachable) => Expr::Reject(port_unreachable(enc.ctx)),
        });
    }
    enc.out
}
