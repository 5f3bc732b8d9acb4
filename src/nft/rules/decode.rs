//! Expressions -> model rule: the inverse of [`super::encode()`], which
//! refuses anything fwharden would not have written.

use crate::nft::expr::{CmpOp, Decision, Expr, Limit, Membership, MetaKey, Reject};
use crate::ruleset::*;

use super::{
    ct_bit, nfproto, port_unreachable, saddr, AnonValues, Ctx, CT_STATES, DPORT, ICMPV6_TYPES,
    ICMP_TYPE, ICMP_TYPES, IPPROTO_ICMP, IPPROTO_ICMPV6,
};

/// Rebuilds the rule from its expressions. `anon` gives the values of an
/// anonymous set by name (and `None` for a named set). An expression list
/// fwharden would not have written is an error saying where it stopped.
pub fn decode(
    exprs: &[Expr],
    comment: String,
    anon: &dyn Fn(&str) -> Option<AnonValues>,
) -> Result<Rule, String> {
    let mut d = Decoder {
        rest: exprs,
        ctx: Ctx::default(),
        anon,
    };
    let mut matches = Vec::new();
    while let Some(m) = d.next_match()? {
        matches.push(m);
    }
    let mut rule = Rule {
        matches,
        counter: false,
        limit: None,
        log: None,
        verdict: None,
        comment,
    };
    if let [Expr::Limit(l), rest @ ..] = d.rest {
        if l.over {
            return Err("an inverted limit outside a meter".into());
        }
        rule.limit = Some(rate(l)?);
        d.rest = rest;
    }
    if let [Expr::Counter, rest @ ..] = d.rest {
        rule.counter = true;
        d.rest = rest;
    }
    if let [Expr::Log {
        prefix,
        level,
        group,
    }, rest @ ..] = d.rest
    {
        if !matches!((level, group), (Some(6), None) | (None, Some(_))) {
            return Err(format!("log at level {level:?} to group {group:?}"));
        }
        rule.log = Some(Log {
            prefix: prefix.clone(),
            group: *group,
        });
        d.rest = rest;
    }
    rule.verdict = match d.rest {
        [] => None,
        [Expr::Verdict(Decision::Accept)] => Some(Verdict::Accept),
        [Expr::Verdict(Decision::Drop)] => Some(Verdict::Drop),
        [Expr::Reject(Reject::TcpReset)] => Some(Verdict::Reject(RejectWith::TcpReset)),
        [Expr::Reject(r)] if *r == port_unreachable(d.ctx) => {
            Some(Verdict::Reject(RejectWith::PortUnreachable))
        }
        rest => return Err(format!("unexpected {:?}", rest[0])),
    };
    Ok(rule)
}

fn rate(l: &Limit) -> Result<Rate, String> {
    let unit = [
        RateUnit::Second,
        RateUnit::Minute,
        RateUnit::Hour,
        RateUnit::Day,
    ]
    .into_iter()
    .find(|u| u.seconds() == l.unit_secs)
    .ok_or_else(|| format!("a limit per {} seconds", l.unit_secs))?;
    Ok(Rate {
        count: u32::try_from(l.rate).map_err(|_| format!("a limit rate of {}", l.rate))?,
        unit,
        burst: l.burst,
    })
}

struct Decoder<'a> {
    rest: &'a [Expr],
    ctx: Ctx,
    anon: &'a dyn Fn(&str) -> Option<AnonValues>,
}

impl Decoder<'_> {
    /// Whether the expressions after a `meta nfproto F` dependency are a
    /// match that needs F, so the `meta nfproto` is nft's, not the rule's.
    fn is_family_dependency(&self, f: Family, after: &[Expr]) -> bool {
        if self.ctx.nfproto == Some(f) {
            return false;
        }
        let icmp = match f {
            Family::Ipv4 => IPPROTO_ICMP,
            Family::Ipv6 => IPPROTO_ICMPV6,
        };
        match after {
            [p, ..] if *p == saddr(f) => true,
            [Expr::Meta(MetaKey::L4Proto), Expr::Cmp(CmpOp::Eq, v), p, ..] => {
                v.as_slice() == [icmp] && *p == ICMP_TYPE
            }
            [p, ..] if *p == ICMP_TYPE => self.ctx.l4proto == Some(icmp),
            _ => false,
        }
    }

    fn next_match(&mut self) -> Result<Option<Match>, String> {
        let anon = self.anon;
        let (m, rest): (Match, &[Expr]) = match self.rest {
            [Expr::Meta(MetaKey::NfProto), Expr::Cmp(CmpOp::Eq, v), rest @ ..] => {
                let f = match v.as_slice() {
                    [x] if *x == nfproto(Family::Ipv4) => Family::Ipv4,
                    [x] if *x == nfproto(Family::Ipv6) => Family::Ipv6,
                    _ => return Err(format!("meta nfproto {v:?}")),
                };
                let dependency = self.is_family_dependency(f, rest);
                self.ctx.nfproto = Some(f);
                self.rest = rest;
                if dependency {
                    return self.next_match();
                }
                (Match::Family(f), rest)
            }
            [Expr::Meta(MetaKey::L4Proto), Expr::Cmp(CmpOp::Eq, v), rest @ ..]
                if matches!(v.as_slice(), [IPPROTO_ICMP | IPPROTO_ICMPV6])
                    && rest.first() == Some(&ICMP_TYPE) =>
            {
                self.ctx.l4proto = Some(v[0]);
                self.rest = rest;
                return self.next_match();
            }
            [Expr::Meta(MetaKey::L4Proto), Expr::Cmp(CmpOp::Eq, v), rest @ ..] => {
                let p = [Protocol::Tcp, Protocol::Udp]
                    .into_iter()
                    .find(|p| v.as_slice() == [p.number()])
                    .ok_or_else(|| format!("meta l4proto {v:?}"))?;
                self.ctx.l4proto = Some(p.number());
                (Match::Protocol(vec![p]), rest)
            }
            [Expr::Meta(MetaKey::L4Proto), Expr::Lookup {
                set,
                membership: Membership::In,
                ..
            }, rest @ ..] => {
                self.ctx.l4proto = None;
                match anon(set) {
                    Some(AnonValues::Protocols(p)) => (Match::Protocol(p), rest),
                    _ => return Err(format!("meta l4proto in set {set}")),
                }
            }
            [Expr::Meta(k @ (MetaKey::IifName | MetaKey::OifName)), Expr::Cmp(CmpOp::Eq, v), rest @ ..] =>
            {
                let name = match v.iter().position(|b| *b == 0) {
                    Some(nul) if v[nul..].iter().all(|b| *b == 0) => {
                        String::from_utf8_lossy(&v[..nul]).into_owned()
                    }
                    Some(_) => return Err("an interface name with a NUL inside".into()),
                    None => format!("{}*", String::from_utf8_lossy(v)),
                };
                match k {
                    MetaKey::IifName => (Match::InInterface(name), rest),
                    _ => (Match::OutInterface(name), rest),
                }
            }
            [Expr::CtState, Expr::Bitwise { mask, xor }, Expr::Cmp(CmpOp::Neq, zero), rest @ ..]
                if mask.len() == 4 && *xor == [0; 4] && *zero == [0; 4] =>
            {
                let bits = u32::from_ne_bytes([mask[0], mask[1], mask[2], mask[3]]);
                let states: Vec<CtState> = CT_STATES
                    .into_iter()
                    .filter(|s| bits & ct_bit(*s) != 0)
                    .collect();
                if bits & !0xf != 0 || states.is_empty() {
                    return Err(format!("ct state mask {bits:#x}"));
                }
                (Match::CtState(states), rest)
            }
            [Expr::CtStatus, Expr::Bitwise { mask, xor }, Expr::Cmp(CmpOp::Neq, zero), rest @ ..]
                if mask.as_slice() == CtStatus::Dnat.bit().to_ne_bytes()
                    && *xor == [0; 4]
                    && *zero == [0; 4] =>
            {
                (Match::CtStatus(CtStatus::Dnat), rest)
            }
            [p, Expr::Cmp(CmpOp::Gte, a), Expr::Cmp(CmpOp::Lte, b), rest @ ..]
                if is_port_load(p) =>
            {
                let (first, last) = (port(a)?, port(b)?);
                (port_match(p, vec![PortRange { first, last }]), rest)
            }
            [p, Expr::Cmp(CmpOp::Eq, v), rest @ ..] if is_port_load(p) => {
                (port_match(p, vec![PortRange::single(port(v)?)]), rest)
            }
            [p, Expr::Lookup {
                set,
                membership: Membership::In,
                ..
            }, rest @ ..]
                if is_port_load(p) =>
            {
                match anon(set) {
                    Some(AnonValues::Ports { ranges, .. }) => (port_match(p, ranges), rest),
                    _ => return Err(format!("port in set {set}")),
                }
            }
            [p, e, rest @ ..] if *p == ICMP_TYPE => {
                let m = match (self.ctx.nfproto, self.ctx.l4proto, e) {
                    (Some(Family::Ipv4), Some(IPPROTO_ICMP), Expr::Cmp(CmpOp::Eq, v)) => {
                        Match::IcmpType(vec![icmp_type(&ICMP_TYPES, v, |t| t.number())?])
                    }
                    (Some(Family::Ipv6), Some(IPPROTO_ICMPV6), Expr::Cmp(CmpOp::Eq, v)) => {
                        Match::Icmpv6Type(vec![icmp_type(&ICMPV6_TYPES, v, |t| t.number())?])
                    }
                    (
                        Some(Family::Ipv4),
                        Some(IPPROTO_ICMP),
                        Expr::Lookup {
                            set,
                            membership: Membership::In,
                            ..
                        },
                    ) => match anon(set) {
                        Some(AnonValues::IcmpTypes(t)) => Match::IcmpType(t),
                        _ => return Err(format!("icmp type in set {set}")),
                    },
                    (
                        Some(Family::Ipv6),
                        Some(IPPROTO_ICMPV6),
                        Expr::Lookup {
                            set,
                            membership: Membership::In,
                            ..
                        },
                    ) => match anon(set) {
                        Some(AnonValues::Icmpv6Types(t)) => Match::Icmpv6Type(t),
                        _ => return Err(format!("icmpv6 type in set {set}")),
                    },
                    _ => return Err("a transport header byte without its protocol".into()),
                };
                (m, rest)
            }
            [p, e, rest @ ..] if self.ctx.nfproto.is_some_and(|f| *p == saddr(f)) => {
                let family = self.ctx.nfproto.unwrap_or(Family::Ipv4);
                let m = match e {
                    Expr::Lookup {
                        set, membership, ..
                    } if anon(set).is_none() => match membership {
                        Membership::In => Match::SourceInSet {
                            family,
                            set: set.clone(),
                        },
                        Membership::NotIn => Match::SourceNotInSet {
                            family,
                            set: set.clone(),
                        },
                    },
                    Expr::Cmp(CmpOp::Eq, v) => Match::Source(address(family, v)?),
                    Expr::Dynset { set, limit, .. } if limit.over => Match::SourceRateOver {
                        family,
                        set: set.clone(),
                        rate: rate(limit)?,
                    },
                    other => return Err(format!("source address then {other:?}")),
                };
                (m, rest)
            }
            _ => return Ok(None),
        };
        self.rest = rest;
        Ok(Some(m))
    }
}

fn address(family: Family, v: &[u8]) -> Result<std::net::IpAddr, String> {
    match (family, v.len()) {
        (Family::Ipv4, 4) => Ok(<[u8; 4]>::try_from(v).map_err(|e| e.to_string())?.into()),
        (Family::Ipv6, 16) => Ok(<[u8; 16]>::try_from(v).map_err(|e| e.to_string())?.into()),
        _ => Err(format!("a {family} source address of {} bytes", v.len())),
    }
}

fn port(v: &[u8]) -> Result<u16, String> {
    match v {
        [a, b] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(format!("a port of {} bytes", v.len())),
    }
}

fn icmp_type<T: Copy>(all: &[T], v: &[u8], number: impl Fn(T) -> u8) -> Result<T, String> {
    match v {
        [n] => all
            .iter()
            .copied()
            .find(|t| number(*t) == *n)
            .ok_or_else(|| format!("icmp type {n}")),
        _ => Err(format!("an icmp type of {} bytes", v.len())),
    }
}

/// The two port loads fwharden writes: the transport header's destination
/// port, and the connection's original one (before DNAT).
fn is_port_load(e: &Expr) -> bool {
    *e == DPORT || *e == Expr::CtOriginalProtoDst
}

fn port_match(load: &Expr, ranges: Vec<PortRange>) -> Match {
    match load {
        Expr::CtOriginalProtoDst => Match::OrigDestPort(ranges),
        _ => Match::DestPort(ranges),
    }
}
