//! A model [`Rule`] as the expression list nft itself would write for the
//! same rule in text, and back. Pure: no kernel, no pointers.
//!
//! nft adds the protocol a match depends on ("dependency") only when the
//! rule has not already established it: `ip saddr @s` becomes
//! `meta nfproto ipv4; payload; lookup`, but only one `meta nfproto ipv4`
//! if the rule already said so. [`Ctx`] tracks this exactly as nft does
//! (`nft --debug=netlink -c -f` shows it), so the kernel holds the same
//! expressions whichever way the table was loaded.
//!
//! Lists of several values (ports, protocols, ICMP types) become anonymous
//! constant sets in the same batch, as nft does; a single port range
//! becomes `cmp gte` + `cmp lte`, again as nft does.

use crate::ruleset::*;

use super::expr::{CmpOp, Decision, Expr, Header, Limit, MetaKey, Reject};

/// How the port of an anonymous port set is described to nft (its
/// "typeof"), so `nft list` prints `tcp dport` or `th dport` as nft would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortHeader {
    Tcp,
    Udp,
    Any,
}

/// The values of an anonymous set, by what they match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnonValues {
    Protocols(Vec<Protocol>),
    Ports {
        ranges: Vec<PortRange>,
        header: PortHeader,
    },
    IcmpTypes(Vec<IcmpType>),
    Icmpv6Types(Vec<Icmpv6Type>),
}

/// An anonymous set a rule needs, created in the same batch under `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonSet {
    pub id: u32,
    pub values: AnonValues,
}

/// The name nft gives an anonymous set in a batch; the kernel numbers it.
pub const ANON_NAME: &str = "__set%d";

const IPPROTO_ICMP: u8 = libc::IPPROTO_ICMP as u8;
const IPPROTO_ICMPV6: u8 = libc::IPPROTO_ICMPV6 as u8;
/// Interface names are compared over IFNAMSIZ bytes, NUL-padded.
const IFNAMSIZ: usize = libc::IFNAMSIZ;

/// What the rule has established so far about the packet's protocols.
#[derive(Debug, Default, Clone, Copy)]
struct Ctx {
    nfproto: Option<Family>,
    l4proto: Option<u8>,
}

fn nfproto(f: Family) -> u8 {
    match f {
        Family::Ipv4 => libc::NFPROTO_IPV4 as u8,
        Family::Ipv6 => libc::NFPROTO_IPV6 as u8,
    }
}

/// `ip saddr` / `ip6 saddr`: offset and length in the network header.
fn saddr(f: Family) -> Expr {
    let (offset, len) = match f {
        Family::Ipv4 => (12, 4),
        Family::Ipv6 => (8, 16),
    };
    Expr::Payload {
        header: Header::Network,
        offset,
        len,
    }
}

const DPORT: Expr = Expr::Payload {
    header: Header::Transport,
    offset: 2,
    len: 2,
};
const ICMP_TYPE: Expr = Expr::Payload {
    header: Header::Transport,
    offset: 0,
    len: 1,
};

fn ct_bit(s: CtState) -> u32 {
    match s {
        CtState::Invalid => 1,
        CtState::Established => 2,
        CtState::Related => 4,
        CtState::New => 8,
    }
}

const CT_STATES: [CtState; 4] = [
    CtState::Invalid,
    CtState::Established,
    CtState::Related,
    CtState::New,
];
pub const ICMP_TYPES: [IcmpType; 5] = [
    IcmpType::EchoReply,
    IcmpType::DestinationUnreachable,
    IcmpType::EchoRequest,
    IcmpType::TimeExceeded,
    IcmpType::ParameterProblem,
];
pub const ICMPV6_TYPES: [Icmpv6Type; 10] = [
    Icmpv6Type::DestinationUnreachable,
    Icmpv6Type::PacketTooBig,
    Icmpv6Type::TimeExceeded,
    Icmpv6Type::ParameterProblem,
    Icmpv6Type::EchoRequest,
    Icmpv6Type::EchoReply,
    Icmpv6Type::NdRouterSolicit,
    Icmpv6Type::NdRouterAdvert,
    Icmpv6Type::NdNeighborSolicit,
    Icmpv6Type::NdNeighborAdvert,
];

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
                });
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
                match ranges.as_slice() {
                    [r] if r.first != r.last => {
                        self.push(Expr::Cmp(CmpOp::Gte, r.first.to_be_bytes().to_vec()));
                        self.push(Expr::Cmp(CmpOp::Lte, r.last.to_be_bytes().to_vec()));
                    }
                    _ => {
                        let single = match ranges.as_slice() {
                            [r] => Some(r.first.to_be_bytes().to_vec()),
                            _ => None,
                        };
                        let header = match self.ctx.l4proto {
                            Some(p) if p == Protocol::Tcp.number() => PortHeader::Tcp,
                            Some(p) if p == Protocol::Udp.number() => PortHeader::Udp,
                            _ => PortHeader::Any,
                        };
                        let ranges = ranges.clone();
                        self.one_or_set(single, AnonValues::Ports { ranges, header });
                    }
                }
            }
            Match::SourceInSet { family, set } => {
                self.need_family(*family);
                self.push(saddr(*family));
                self.push(Expr::Lookup {
                    set: set.clone(),
                    id: None,
                });
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
            // The model's logs are at level info (syslog 6).
            level: Some(6),
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
        level: Some(6),
    }, rest @ ..] = d.rest
    {
        rule.log = Some(Log {
            prefix: prefix.clone(),
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

/// nft's `reject`: ICMP of the family when the rule fixed it, else ICMPx.
fn port_unreachable(ctx: Ctx) -> Reject {
    match ctx.nfproto {
        Some(Family::Ipv4) => Reject::Icmp { code: 3 },
        Some(Family::Ipv6) => Reject::Icmp { code: 4 },
        None => Reject::IcmpxPortUnreachable,
    }
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
            [Expr::Meta(MetaKey::L4Proto), Expr::Lookup { set, .. }, rest @ ..] => {
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
            [p, Expr::Cmp(CmpOp::Gte, a), Expr::Cmp(CmpOp::Lte, b), rest @ ..] if *p == DPORT => {
                let (first, last) = (port(a)?, port(b)?);
                (Match::DestPort(vec![PortRange { first, last }]), rest)
            }
            [p, Expr::Cmp(CmpOp::Eq, v), rest @ ..] if *p == DPORT => {
                (Match::DestPort(vec![PortRange::single(port(v)?)]), rest)
            }
            [p, Expr::Lookup { set, .. }, rest @ ..] if *p == DPORT => match anon(set) {
                Some(AnonValues::Ports { ranges, .. }) => (Match::DestPort(ranges), rest),
                _ => return Err(format!("th dport in set {set}")),
            },
            [p, e, rest @ ..] if *p == ICMP_TYPE => {
                let m = match (self.ctx.nfproto, self.ctx.l4proto, e) {
                    (Some(Family::Ipv4), Some(IPPROTO_ICMP), Expr::Cmp(CmpOp::Eq, v)) => {
                        Match::IcmpType(vec![icmp_type(&ICMP_TYPES, v, |t| t.number())?])
                    }
                    (Some(Family::Ipv6), Some(IPPROTO_ICMPV6), Expr::Cmp(CmpOp::Eq, v)) => {
                        Match::Icmpv6Type(vec![icmp_type(&ICMPV6_TYPES, v, |t| t.number())?])
                    }
                    (Some(Family::Ipv4), Some(IPPROTO_ICMP), Expr::Lookup { set, .. }) => {
                        match anon(set) {
                            Some(AnonValues::IcmpTypes(t)) => Match::IcmpType(t),
                            _ => return Err(format!("icmp type in set {set}")),
                        }
                    }
                    (Some(Family::Ipv6), Some(IPPROTO_ICMPV6), Expr::Lookup { set, .. }) => {
                        match anon(set) {
                            Some(AnonValues::Icmpv6Types(t)) => Match::Icmpv6Type(t),
                            _ => return Err(format!("icmpv6 type in set {set}")),
                        }
                    }
                    _ => return Err("a transport header byte without its protocol".into()),
                };
                (m, rest)
            }
            [p, e, rest @ ..] if self.ctx.nfproto.is_some_and(|f| *p == saddr(f)) => {
                let family = self.ctx.nfproto.unwrap_or(Family::Ipv4);
                let m = match e {
                    Expr::Lookup { set, .. } if anon(set).is_none() => Match::SourceInSet {
                        family,
                        set: set.clone(),
                    },
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

/// Values of anonymous sets are read back in ascending order.
pub fn sorted(values: AnonValues) -> AnonValues {
    match values {
        AnonValues::Protocols(mut p) => {
            p.sort();
            AnonValues::Protocols(p)
        }
        AnonValues::Ports { mut ranges, header } => {
            ranges.sort();
            AnonValues::Ports { ranges, header }
        }
        AnonValues::IcmpTypes(mut t) => {
            t.sort_by_key(|t| t.number());
            AnonValues::IcmpTypes(t)
        }
        AnonValues::Icmpv6Types(mut t) => {
            t.sort_by_key(|t| t.number());
            AnonValues::Icmpv6Types(t)
        }
    }
}

/// Encodes and decodes `rule` as the kernel would hand it back, so a rule
/// the kernel would return in another form (an unsorted list, a family
/// match nft would take for a dependency) is refused before it is sent
/// rather than found different on read-back.
pub fn round_trip(rule: &Rule) -> Result<(), String> {
    let mut id = 0;
    let enc = encode(rule, &mut id);
    let named: Vec<Expr> = enc
        .exprs
        .iter()
        .map(|e| match e {
            Expr::Lookup { set, id: Some(id) } if set == ANON_NAME => Expr::Lookup {
                set: format!("__set{id}"),
                id: None,
            },
            other => other.clone(),
        })
        .collect();
    let anon = |name: &str| {
        enc.anon
            .iter()
            .find(|a| format!("__set{}", a.id) == name)
            .map(|a| sorted(a.values.clone()))
    };
    let back = decode(&named, rule.comment.clone(), &anon)?;
    if back == *rule {
        Ok(())
    } else {
        Err(format!("the kernel would hand it back as {back:?}"))
    }
}
