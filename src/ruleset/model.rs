//! The backend-neutral ruleset model: the one seam between the compiler and
//! every backend (netlink apply, `nft -f` text, iptables/ufw emit, probe plan).
//!
//! The model says *what* the kernel must hold, in nftables terms, without
//! saying how it is encoded. It is plain data: cheap to compare (read-back,
//! idempotent apply), to serialize (`show --json`, rollback state on disk) and
//! to test without root.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The one table fwharden owns, in family `inet` (IPv4 and IPv6 together).
pub const TABLE_NAME: &str = "fwharden";

/// A whole ruleset: one `inet` table with its sets and chains, in kernel order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// Name of the profile this was compiled from, for status and comments.
    pub profile: String,
    pub table: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
    /// The ban table (`inet fwharden-bans`, see [`super::bans`]) this
    /// ruleset keeps in step, or `None` when bans are off. Records written
    /// before bans existed read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bans: Option<Bans>,
}

impl Ruleset {
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// Whether `other` is this ruleset with other prefixes in some of its
    /// named prefix sets, and nothing else changed: then the kernel can be
    /// brought from one to the other by adding and deleting elements.
    pub fn differs_only_in_elements(&self, other: &Ruleset) -> bool {
        let same_set = |a: &Set, b: &Set| {
            a.name == b.name
                && a.family == b.family
                && a.comment == b.comment
                && match (&a.kind, &b.kind) {
                    (SetKind::Prefixes(_), SetKind::Prefixes(_)) => true,
                    (x, y) => x == y,
                }
        };
        self.profile == other.profile
            && self.table == other.table
            && self.bans == other.bans
            && self.chains == other.chains
            && self.sets.len() == other.sets.len()
            && self
                .sets
                .iter()
                .zip(&other.sets)
                .all(|(a, b)| same_set(a, b))
    }

    /// For each prefix set of both rulesets whose prefixes differ, the
    /// prefixes on one side only (see [`one_side_only`]): what a change
    /// from `self` to `other` added or took away. A set whose prefixes are
    /// not sorted on both sides is left out.
    pub fn changed_prefixes(&self, other: &Ruleset) -> Vec<(String, Vec<IpNet>)> {
        let mut out = Vec::new();
        for a in &self.sets {
            let (Some(b), SetKind::Prefixes(x)) = (other.set(&a.name), &a.kind) else {
                continue;
            };
            let SetKind::Prefixes(y) = &b.kind else {
                continue;
            };
            if let Some(moved) = one_side_only(x, y).filter(|m| !m.is_empty()) {
                out.push((a.name.clone(), moved));
            }
        }
        out
    }
}

/// The prefixes that are in one of two sorted lists and not in the other,
/// in order, by one merge walk: a comparison per prefix, however big the
/// lists. `None` when a list is not sorted.
pub fn one_side_only(x: &[IpNet], y: &[IpNet]) -> Option<Vec<IpNet>> {
    if !x.is_sorted() || !y.is_sorted() {
        return None;
    }
    let (mut i, mut j) = (0, 0);
    let mut moved = Vec::new();
    loop {
        match (x.get(i), y.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                moved.push(*a);
                i += 1;
            }
            (_, Some(b)) => {
                moved.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                moved.push(*a);
                i += 1;
            }
            (None, None) => return Some(moved),
        }
    }
}

/// Address family of a set or of a match on addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }

    /// Suffix used in set names: `admin_v4`, `admin_v6`.
    pub fn suffix(self) -> &'static str {
        match self {
            Family::Ipv4 => "v4",
            Family::Ipv6 => "v6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// A named set of source addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub name: String,
    pub family: Family,
    pub kind: SetKind,
    /// Why the set exists (which group, which profile line).
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    /// A constant interval set of prefixes (`flags interval`). Elements are
    /// sorted, of `family`, and already aggregated: no two overlap, and two
    /// that touch do not together form a larger prefix (`192.0.2.5/32,
    /// 192.0.2.6/32` stay two, as nft keeps them).
    Prefixes(Vec<IpNet>),
    /// A set the ruleset itself fills at run time (`flags dynamic,timeout`),
    /// used for per-source rate limits: each source address gets its own
    /// token bucket, forgotten `timeout_secs` after its last packet.
    Meter { timeout_secs: u32, size: u32 },
    /// The escape hatch's clock (`flags timeout`, see [`super::hatch`]): the
    /// operator's address, put in with the rollback window as its timeout.
    /// The kernel drops the element when it expires, and the hatch rule (an
    /// inverted lookup in this set) starts to match. `None`: read back after
    /// it expired.
    Hatch(Option<HatchElement>),
    /// A ban set (`flags timeout`, see [`super::bans`]): fail2ban, CrowdSec
    /// and `fwharden ban` add addresses, each with its own timeout or the
    /// set's default. Its elements come and go on their own, so they are
    /// not part of the model: only the set's shape is.
    Bans { timeout_secs: u32, size: u32 },
}

/// What the profile's `[bans]` asks for: the shape of the ban sets and the
/// addresses a ban never drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bans {
    /// The default timeout of a ban added without one.
    pub timeout_secs: u32,
    /// How many bans each set (IPv4, IPv6) holds at most.
    pub size: u32,
    /// The exempt groups' prefixes, both families, sorted and aggregated.
    pub exempt: Vec<IpNet>,
    /// The exempt groups' names, for comments.
    pub exempt_groups: Vec<String>,
}

/// The one element of a hatch set. `timeout_secs` is the timeout it was
/// armed with, not the time left: the kernel reports both, and only the
/// first stays the same from one read to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HatchElement {
    pub addr: IpAddr,
    pub timeout_secs: u64,
}

/// A chain. Every chain fwharden makes today is a base chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    pub hook: Hook,
    /// Kernel priority; `0` is nft's `filter`.
    pub priority: i32,
    pub policy: Policy,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Input,
    Forward,
    Output,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
        }
    }
}

/// What a base chain does with a packet no rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Accept,
    Drop,
}

/// One rule: all `matches` must hold (logical AND, in order), then the
/// statements run in this order: rate limit (the rule stops here when over
/// it), counter, log, and the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    /// Every rule fwharden writes counts its packets: `status` and the
    /// exposure audit read these.
    pub counter: bool,
    /// A global (not per-source) rate limit: the rule only goes on while
    /// under this rate. Used for echo-request and drop logging.
    pub limit: Option<Rate>,
    pub log: Option<Log>,
    /// `None` for a rule that only logs or counts and lets the packet go on.
    pub verdict: Option<Verdict>,
    /// Where the rule came from, e.g. `vps-profile.toml:31 allow ssh`.
    /// At most [`COMMENT_MAX`] bytes (the kernel's limit for user data).
    pub comment: String,
}

/// The kernel keeps at most 128 bytes of rule comment, NUL included
/// (NFTNL_UDATA_COMMENT_MAXLEN).
pub const COMMENT_MAX: usize = 127;

/// A condition on a packet. Each variant is one nftables match; backends
/// translate it and must refuse (not skip) a variant they cannot express.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// Layer 3 family: `meta nfproto ipv4|ipv6`.
    Family(Family),
    /// Input interface name, `iifname "wg0"`; a trailing `*` is a prefix match.
    InInterface(String),
    /// Output interface name, `oifname "lo"`.
    OutInterface(String),
    /// Connection tracking state, any of the listed (`ct state a,b`).
    CtState(Vec<CtState>),
    /// Transport protocol, any of the listed (`meta l4proto { tcp, udp }`).
    Protocol(Vec<Protocol>),
    /// Destination port, any of the listed ranges (`th dport { 80, 443 }`).
    /// Always preceded in the same rule by a `Protocol` match of tcp and/or
    /// udp: the transport header is only read once the protocol is known.
    DestPort(Vec<PortRange>),
    /// The connection has this conntrack status bit (`ct status dnat`).
    CtStatus(CtStatus),
    /// The destination port the connection was first addressed to, before
    /// any DNAT, any of the listed ranges (`ct original proto-dst { 6379 }`):
    /// a published container port is matched by the port the client used,
    /// not the container's. Preceded in the same rule by a `Protocol` match,
    /// as `DestPort` is.
    OrigDestPort(Vec<PortRange>),
    /// Source address in a named set of the given family (`ip saddr @admin_v4`).
    SourceInSet { family: Family, set: String },
    /// Source address *not* in a named set of the given family
    /// (`ip saddr != @hatch_v4`): an inverted lookup (NFT_LOOKUP_F_INV).
    SourceNotInSet { family: Family, set: String },
    /// Source address is exactly this one (`ip saddr 192.0.2.7`).
    Source(IpAddr),
    /// ICMP type (IPv4), any of the listed. Implies `meta l4proto icmp`.
    IcmpType(Vec<IcmpType>),
    /// ICMPv6 type, any of the listed. Implies `meta l4proto ipv6-icmp`.
    Icmpv6Type(Vec<Icmpv6Type>),
    /// Per-source rate limit: true when the source address (of `family`)
    /// has gone *over* `rate` in meter set `set`. The match also updates the
    /// source's bucket, so it must come last among the matches.
    SourceRateOver {
        family: Family,
        set: String,
        rate: Rate,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtState {
    Invalid,
    Established,
    Related,
    New,
}

/// A conntrack status bit fwharden matches (`enum ip_conntrack_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtStatus {
    /// IPS_DST_NAT: the connection's destination was rewritten, as Docker's
    /// and Podman's published ports do in prerouting.
    Dnat,
}

impl CtStatus {
    /// The bit in the status word the kernel loads for `ct status`.
    pub fn bit(self) -> u32 {
        match self {
            CtStatus::Dnat => 1 << 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// IANA protocol number, as `meta l4proto` compares it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u8,
            Protocol::Udp => libc::IPPROTO_UDP as u8,
        }
    }
}

/// An inclusive port range; `first == last` for a single port. Never port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    pub fn covers(&self, other: &PortRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// ICMP (IPv4) types fwharden uses, with their type numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcmpType {
    EchoReply = 0,
    DestinationUnreachable = 3,
    EchoRequest = 8,
    TimeExceeded = 11,
    ParameterProblem = 12,
}

/// ICMPv6 types fwharden uses, with their type numbers (RFC 4443, 4861).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Icmpv6Type {
    DestinationUnreachable = 1,
    PacketTooBig = 2,
    TimeExceeded = 3,
    ParameterProblem = 4,
    EchoRequest = 128,
    EchoReply = 129,
    NdRouterSolicit = 133,
    NdRouterAdvert = 134,
    NdNeighborSolicit = 135,
    NdNeighborAdvert = 136,
}

impl IcmpType {
    pub fn number(self) -> u8 {
        self as u8
    }

    /// nft's name for the type.
    pub fn nft_name(self) -> &'static str {
        match self {
            IcmpType::EchoReply => "echo-reply",
            IcmpType::DestinationUnreachable => "destination-unreachable",
            IcmpType::EchoRequest => "echo-request",
            IcmpType::TimeExceeded => "time-exceeded",
            IcmpType::ParameterProblem => "parameter-problem",
        }
    }
}

impl Icmpv6Type {
    pub fn number(self) -> u8 {
        self as u8
    }

    /// nft's name for the type.
    pub fn nft_name(self) -> &'static str {
        match self {
            Icmpv6Type::DestinationUnreachable => "destination-unreachable",
            Icmpv6Type::PacketTooBig => "packet-too-big",
            Icmpv6Type::TimeExceeded => "time-exceeded",
            Icmpv6Type::ParameterProblem => "parameter-problem",
            Icmpv6Type::EchoRequest => "echo-request",
            Icmpv6Type::EchoReply => "echo-reply",
            Icmpv6Type::NdRouterSolicit => "nd-router-solicit",
            Icmpv6Type::NdRouterAdvert => "nd-router-advert",
            Icmpv6Type::NdNeighborSolicit => "nd-neighbor-solicit",
            Icmpv6Type::NdNeighborAdvert => "nd-neighbor-advert",
        }
    }
}

/// A packet rate: `count` packets per `unit`, with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub count: u32,
    pub unit: RateUnit,
    pub burst: u32,
}

impl Rate {
    /// The largest `count + burst` the kernel accepts for this unit. It keeps
    /// a bucket of `unit in ns * (count + burst) / count` tokens in 64 bits
    /// and refuses a limit that overflows it with EOVERFLOW
    /// (net/netfilter/nft_limit.c).
    pub fn max_count_plus_burst(unit: RateUnit) -> u64 {
        u64::MAX / (unit.seconds() * 1_000_000_000)
    }

    pub fn fits_kernel(&self) -> bool {
        u64::from(self.count) + u64::from(self.burst) <= Rate::max_count_plus_burst(self.unit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl RateUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            RateUnit::Second => "second",
            RateUnit::Minute => "minute",
            RateUnit::Hour => "hour",
            RateUnit::Day => "day",
        }
    }

    pub fn seconds(self) -> u64 {
        match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86400,
        }
    }
}

/// A log statement with a prefix: to the kernel log at syslog level
/// `info`, or to NFLOG `group` (where `fwharden log` reads it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// At most [`LOG_PREFIX_MAX`] bytes, ending in a space.
    pub prefix: String,
    /// `None`: the kernel log. Absent in records written before NFLOG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u16>,
}

/// The kernel's limit on a log prefix, NUL excluded (NF_LOG_PREFIXLEN - 1).
pub const LOG_PREFIX_MAX: usize = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accept,
    Drop,
    Reject(RejectWith),
}

/// How a rejected packet is answered. The compiler only uses `TcpReset` in
/// rules that match TCP alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectWith {
    /// `reject with tcp reset`.
    TcpReset,
    /// `reject`: ICMP or ICMPv6 port-unreachable, matching the packet's
    /// family (nft's default in an `inet` table, `icmpx port-unreachable`).
    PortUnreachable,
}
