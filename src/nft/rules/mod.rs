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
//!
//! [`encode()`] writes the expressions, [`decode()`] reads them back; this file
//! holds what both must agree on.

mod decode;
mod encode;

pub use decode::decode;
pub use encode::encode;

use crate::ruleset::*;

use super::expr::{Expr, Header, Reject};

/// How the port of an anonymous port set is described to nft (its
/// "typeof"), so `nft list` prints `tcp dport` or `th dport` as nft would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortHeader {
    Tcp,
    Udp,
    Any,
    /// `ct original proto-dst`: nft describes the key by the ct expression
    /// whatever the protocol (and then lists such a set as `invalid type`).
    CtOriginal,
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

/// nft's `reject`: ICMP of the family when the rule fixed it, else ICMPx.
fn port_unreachable(ctx: Ctx) -> Reject {
    match ctx.nfproto {
        Some(Family::Ipv4) => Reject::Icmp { code: 3 },
        Some(Family::Ipv6) => Reject::Icmp { code: 4 },
        None => Reject::IcmpxPortUnreachable,
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
            Expr::Lookup {
                set,
                id: Some(id),
                membership,
            } if set == ANON_NAME => Expr::Lookup {
                set: format!("__set{id}"),
                id: None,
                membership: *membership,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::expr::{CmpOp, Membership};

    fn hatch_rule(operator: &str) -> Rule {
        let with = crate::ruleset::hatch::with_hatch(
            &Ruleset {
                profile: "t".into(),
                table: TABLE_NAME.into(),
                sets: vec![],
                chains: vec![Chain {
                    name: "input".into(),
                    hook: Hook::Input,
                    priority: 0,
                    policy: Policy::Drop,
                    rules: vec![],
                }],
                bans: None,
            },
            &crate::ruleset::hatch::Hatch {
                operator: operator.parse().unwrap(),
                port: 2222,
                timeout_secs: 60,
            },
        );
        with.chains[0].rules[0].clone()
    }

    /// As `nft --debug=netlink` shows `ip saddr 192.0.2.7 tcp dport 2222 ct
    /// state new ip saddr != @hatch_v4 counter accept`.
    #[test]
    fn the_hatch_rule_encodes_as_nft_does_and_round_trips() {
        let rule = hatch_rule("192.0.2.7");
        let enc = encode(&rule, &mut 0);
        assert!(enc.anon.is_empty());
        let e = &enc.exprs;
        assert_eq!(e[0], Expr::Meta(crate::nft::expr::MetaKey::NfProto));
        assert_eq!(e[2], saddr(Family::Ipv4));
        assert_eq!(e[3], Expr::Cmp(CmpOp::Eq, vec![192, 0, 2, 7]));
        // The second load of the source address needs no second nfproto.
        assert_eq!(e[11], saddr(Family::Ipv4));
        assert_eq!(
            e[12],
            Expr::Lookup {
                set: "hatch_v4".into(),
                id: None,
                membership: Membership::NotIn,
            }
        );
        round_trip(&rule).unwrap();
        round_trip(&hatch_rule("2001:db8::7")).unwrap();
    }

    #[test]
    fn an_inverted_lookup_in_a_port_set_is_not_ours() {
        let exprs = [
            Expr::Meta(crate::nft::expr::MetaKey::L4Proto),
            Expr::Cmp(CmpOp::Eq, vec![6]),
            DPORT,
            Expr::Lookup {
                set: "__set0".into(),
                id: None,
                membership: Membership::NotIn,
            },
        ];
        let anon = |_: &str| {
            Some(AnonValues::Ports {
                ranges: vec![PortRange::single(22), PortRange::single(80)],
                header: PortHeader::Tcp,
            })
        };
        assert!(decode(&exprs, String::new(), &anon).is_err());
    }
}
