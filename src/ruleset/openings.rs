//! Temporary openings (`fwharden open 8080/tcp --from GROUP|ADDR --for
//! 10m`): what a request is, and what it is refused for, before anything
//! touches a kernel.
//!
//! # Where the openings live, and why
//! Bans live in a table of their own ([`super::bans`]) because a drop in
//! any base chain is final. An accept is not: an accept in another
//! table's chain only ends that chain, and table `inet fwharden` still
//! drops the packet by its policy. So an opening cannot live beside the
//! bans; the rule that consults it must be in table `inet fwharden`
//! itself, and so must its set (a rule cannot look up another table's set).
//!
//! The sets are `_open_v4` and `_open_v6` in table `inet fwharden` (the
//! underscore keeps them apart from a profile group named `open`, whose
//! sets would be `open_v4`), keyed by
//! `source . inet_proto . inet_service` with `flags interval, timeout`
//! (a group is prefixes; concatenated interval sets take timeouts since
//! Linux 5.6), each element added with the opening's own timeout: the
//! kernel alone removes it at its expiry, whatever happens to fwharden's
//! processes. The rules that consult them (one per family, by
//! [`RULE_COMMENT`]) go into the input chain after the profile's last rule
//! with a verdict ([`placement`]), so a deny still wins; [`refusal`] turns
//! away an opening of an explicitly denied port unless forced, since it
//! would otherwise be a silent no-op. Published container ports (the
//! forward chain) are not opened this way.
//!
//! Because an apply replaces table `inet fwharden` whole (so do rollback,
//! confirm and restore), every replacing transaction must carry the live
//! elements over with their *remaining* timeouts (not the original ones:
//! an apply must neither lose nor extend an opening), read and rewritten
//! in one compare-and-swap on the generation (`nft::apply_at`), and with
//! the ban gate closed, which `fwharden open` and `close` pass as a ban
//! does, so that they wait for the apply instead of racing it.
//!
//! Openings are runtime state, like bans: the model holds none, so the
//! emitters (iptables, ufw) and the probe plan ignore them, and the
//! read-back leaves the opening sets and rules out of the table it
//! returns, so that they are never drift. The `nft -f` text (`show`)
//! declares the sets and rules, empty, as every apply writes them.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use super::model::*;

/// The longest opening: a week. An opening is meant to end; anything
/// longer belongs in the profile.
pub const MAX_SECS: u32 = 7 * 86400;

/// `_open_v4` or `_open_v6`: the timeout sets the openings are elements of.
pub fn set_name(family: Family) -> String {
    format!("_open_{}", family.suffix())
}

/// The comment of the rules that consult the opening sets, by which the
/// read-back tells them from the profile's.
pub const RULE_COMMENT: &str = "fwharden open: temporary openings";

/// Where in the input chain the rules consulting the opening sets go:
/// right after the last rule with a verdict. Every explicit deny comes
/// before them (a deny still wins), and so does every accept; the rules
/// without a verdict at the end (`log drops`) come after, so an opened
/// packet is not logged as a drop.
pub fn placement(input: &Chain) -> usize {
    input
        .rules
        .iter()
        .rposition(|r| r.verdict.is_some())
        .map_or(0, |i| i + 1)
}

/// One opening as the kernel holds it: an element of an opening set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Opening {
    pub from: IpNet,
    #[serde(serialize_with = "port_string")]
    pub port: Port,
    /// The timeout it was added with, in ms.
    pub timeout_ms: u64,
    /// What is left of it, in ms: the kernel removes it then.
    pub left_ms: u64,
}

fn port_string<S: serde::Serializer>(p: &Port, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

/// The family of the set an opening from `net` goes into.
pub fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

/// What one `open` changes, in one transaction: the openings renewed
/// (deleted and added again, so their timeout starts again) and those added.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub renew: Vec<IpNet>,
    pub add: Vec<IpNet>,
}

/// What opening `port` from `nets` does to the openings `live`: each net
/// already open to `port` exactly is renewed, each other one added. A net
/// that overlaps an opening of the same port without being equal to it is
/// refused: the kernel keeps no two overlapping elements in one set, and
/// which one should end when is for the person to say (close it first).
pub fn plan(live: &[Opening], nets: &[IpNet], port: Port) -> Result<Plan, OpeningError> {
    let mut out = Plan::default();
    for (i, net) in nets.iter().enumerate() {
        if let Some(other) = nets[..i].iter().find(|n| overlap(n, net)) {
            return Err(OpeningError::Overlap {
                new: *net,
                open: *other,
                port: port.to_string(),
            });
        }
        let same_port = live.iter().filter(|o| o.port == port);
        match same_port
            .into_iter()
            .find(|o| overlap(&o.from, net))
            .map(|o| o.from)
        {
            Some(from) if from == *net => out.renew.push(*net),
            Some(from) => {
                return Err(OpeningError::Overlap {
                    new: *net,
                    open: from,
                    port: port.to_string(),
                })
            }
            None => out.add.push(*net),
        }
    }
    Ok(out)
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Where an opening admits connections from, as the command line said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenFrom {
    /// Everyone: needs `--yes-any`, since it is the one opening that
    /// exposes a port to the whole internet.
    Any,
    /// An address or prefix.
    Net(IpNet),
    /// A profile group, resolved by the caller to its prefixes.
    Group(String),
}

impl std::str::FromStr for OpenFrom {
    type Err = std::convert::Infallible;

    /// `any`, an address (`192.0.2.7`), a prefix (`192.0.2.0/24`), or
    /// else a group's name.
    fn from_str(s: &str) -> Result<OpenFrom, Self::Err> {
        if s == "any" {
            return Ok(OpenFrom::Any);
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(OpenFrom::Net(net));
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(OpenFrom::Net(IpNet::from(addr)));
        }
        Ok(OpenFrom::Group(s.to_string()))
    }
}

/// One port of one protocol: `8080/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub port: u16,
    pub protocol: Protocol,
}

impl std::str::FromStr for Port {
    type Err = OpeningError;

    fn from_str(s: &str) -> Result<Port, OpeningError> {
        let bad = || OpeningError::Port(s.to_string());
        let (port, proto) = s.split_once('/').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(bad()),
        };
        if port == 0 {
            return Err(bad());
        }
        Ok(Port { port, protocol })
    }
}

/// A request to open, as the command line gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub port: Port,
    pub from: OpenFrom,
    pub secs: u32,
    /// `--yes-any`: the person said `any` and means it.
    pub yes_any: bool,
    /// `--force`: open even a port the profile denies explicitly.
    pub force: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OpeningError {
    #[error("`{0}` is not a port and protocol: write 8080/tcp or 53/udp")]
    Port(String),
    #[error(
        "an opening lasts from 1 second to {}; `{0}` seconds is not that: open for less, \
         or allow the port in the profile",
        crate::duration::words(MAX_SECS)
    )]
    Duration(u32),
    #[error(
        "--from any opens {0} to the whole internet: add --yes-any if that is what you mean, \
         or name a group or an address"
    )]
    AnyUnconfirmed(String),
    #[error(
        "{new} overlaps {open}, which is already open to {port}: close that one first \
         (fwharden close {port} --from {open})"
    )]
    Overlap {
        new: IpNet,
        open: IpNet,
        port: String,
    },
    #[error(
        "the profile denies {port} explicitly ({comment}): the deny would still win, so the \
         opening would do nothing; change the profile, or add --force to open it anyway"
    )]
    Denied { port: String, comment: String },
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

/// Why `request` must not go ahead on a host running `ruleset`, or `None`.
pub fn refusal(ruleset: &Ruleset, request: &Request) -> Option<OpeningError> {
    if request.secs == 0 || request.secs > MAX_SECS {
        return Some(OpeningError::Duration(request.secs));
    }
    if request.from == OpenFrom::Any && !request.yes_any {
        return Some(OpeningError::AnyUnconfirmed(request.port.to_string()));
    }
    if request.force {
        return None;
    }
    explicit_deny(ruleset, request.port).map(|comment| OpeningError::Denied {
        port: request.port.to_string(),
        comment,
    })
}

/// The comment of the input rule that explicitly drops or rejects `port`
/// (a rule naming the port, not the chain's policy), if there is one.
pub fn explicit_deny(ruleset: &Ruleset, port: Port) -> Option<String> {
    let input = ruleset.chains.iter().find(|c| c.hook == Hook::Input)?;
    input
        .rules
        .iter()
        .find(|r| {
            let denies = matches!(r.verdict, Some(Verdict::Drop | Verdict::Reject(_)));
            let names_port = r.matches.iter().any(|m| match m {
                Match::DestPort(ranges) => ranges.iter().any(|p| p.contains(port.port)),
                _ => false,
            });
            let protocol_fits = r.matches.iter().all(|m| match m {
                Match::Protocol(ps) => ps.contains(&port.protocol),
                _ => true,
            });
            denies && names_port && protocol_fits
        })
        .map(|r| r.comment.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An input rule dropping `port` of `protocol` (`p.toml:9 deny redis`).
    pub(crate) fn deny_rule(protocol: Protocol, port: u16) -> Rule {
        Rule {
            matches: vec![
                Match::Protocol(vec![protocol]),
                Match::DestPort(vec![PortRange::single(port)]),
            ],
            counter: true,
            limit: None,
            log: None,
            verdict: Some(Verdict::Drop),
            comment: "p.toml:9 deny redis".into(),
        }
    }

    /// Profile `p`: an input chain of `rules`, policy drop, no sets.
    pub(crate) fn ruleset(rules: Vec<Rule>) -> Ruleset {
        Ruleset {
            profile: "p".into(),
            table: "fwharden".into(),
            chains: vec![Chain {
                name: "input".into(),
                hook: Hook::Input,
                priority: 0,
                policy: Policy::Drop,
                rules,
            }],
            sets: vec![],
            bans: None,
        }
    }

    pub(crate) fn request(port: &str, from: &str, secs: u32) -> Request {
        Request {
            port: port.parse().unwrap(),
            from: from.parse().unwrap(),
            secs,
            yes_any: false,
            force: false,
        }
    }

    #[test]
    fn ports_parse_with_their_protocol_and_nothing_else() {
        let p: Port = "8080/tcp".parse().unwrap();
        assert_eq!((p.port, p.protocol), (8080, Protocol::Tcp));
        assert_eq!(p.to_string(), "8080/tcp");
        for bad in ["8080", "0/tcp", "70000/tcp", "53/icmp", "/udp"] {
            assert_eq!(
                bad.parse::<Port>(),
                Err(OpeningError::Port(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn sources_are_any_an_address_a_prefix_or_a_group() {
        assert_eq!("any".parse::<OpenFrom>().unwrap(), OpenFrom::Any);
        assert_eq!(
            "192.0.2.7".parse::<OpenFrom>().unwrap(),
            OpenFrom::Net("192.0.2.7/32".parse().unwrap())
        );
        assert_eq!(
            "2001:db8::/32".parse::<OpenFrom>().unwrap(),
            OpenFrom::Net("2001:db8::/32".parse().unwrap())
        );
        assert_eq!(
            "admin".parse::<OpenFrom>().unwrap(),
            OpenFrom::Group("admin".into())
        );
    }

    #[test]
    fn an_opening_always_ends_within_a_week() {
        let rs = ruleset(vec![]);
        assert_eq!(
            refusal(&rs, &request("8080/tcp", "admin", 0)),
            Some(OpeningError::Duration(0))
        );
        assert_eq!(
            refusal(&rs, &request("8080/tcp", "admin", MAX_SECS + 1)),
            Some(OpeningError::Duration(MAX_SECS + 1))
        );
        assert_eq!(refusal(&rs, &request("8080/tcp", "admin", MAX_SECS)), None);
    }

    #[test]
    fn any_needs_saying_twice() {
        let rs = ruleset(vec![]);
        let mut r = request("8080/tcp", "any", 600);
        let e = refusal(&rs, &r).unwrap();
        assert!(e.to_string().contains("--yes-any"), "{e}");
        r.yes_any = true;
        assert_eq!(refusal(&rs, &r), None);
    }

    #[test]
    fn an_explicit_deny_of_the_port_and_protocol_refuses_unless_forced() {
        let rs = ruleset(vec![deny_rule(Protocol::Tcp, 6379)]);
        let mut r = request("6379/tcp", "admin", 600);
        let e = refusal(&rs, &r).unwrap();
        assert!(e.to_string().contains("deny redis"), "{e}");
        // Another protocol or port is not denied.
        assert_eq!(refusal(&rs, &request("6379/udp", "admin", 600)), None);
        assert_eq!(refusal(&rs, &request("6380/tcp", "admin", 600)), None);
        r.force = true;
        assert_eq!(refusal(&rs, &r), None);
    }

    #[test]
    fn the_policy_is_not_an_explicit_deny() {
        // Input's policy drops everything not allowed: that is what an
        // opening is for, not a reason to refuse it.
        let rs = ruleset(vec![]);
        assert_eq!(explicit_deny(&rs, "22/tcp".parse().unwrap()), None);
        assert_eq!(set_name(Family::Ipv4), "_open_v4");
    }

    fn opening(from: &str, port: &str) -> Opening {
        Opening {
            from: from.parse().unwrap(),
            port: port.parse().unwrap(),
            timeout_ms: 600_000,
            left_ms: 300_000,
        }
    }

    #[test]
    fn an_opening_again_renews_it_and_an_overlapping_one_is_refused() {
        let live = [
            opening("192.0.2.0/24", "8080/tcp"),
            opening("2001:db8::/32", "53/udp"),
        ];
        let port: Port = "8080/tcp".parse().unwrap();
        let nets = |l: &[&str]| l.iter().map(|n| n.parse().unwrap()).collect::<Vec<IpNet>>();
        let p = plan(&live, &nets(&["192.0.2.0/24", "2001:db8::/32"]), port).unwrap();
        assert_eq!(p.renew, nets(&["192.0.2.0/24"]));
        // The same source on another port is another opening.
        assert_eq!(p.add, nets(&["2001:db8::/32"]));
        let e = plan(&live, &nets(&["192.0.2.7/32"]), port).unwrap_err();
        assert!(
            e.to_string().contains("close 8080/tcp --from 192.0.2.0/24"),
            "{e}"
        );
        assert!(plan(&live, &nets(&["10.0.0.0/8", "10.1.0.0/16"]), port).is_err());
    }

    #[test]
    fn the_openings_go_after_the_last_verdict_and_before_trailing_logs() {
        let mut log = deny_rule(Protocol::Tcp, 1);
        log.verdict = None;
        let mut rs = ruleset(vec![deny_rule(Protocol::Tcp, 6379), log]);
        assert_eq!(placement(&rs.chains[0]), 1);
        rs.chains[0].rules.clear();
        assert_eq!(placement(&rs.chains[0]), 0);
    }
}
