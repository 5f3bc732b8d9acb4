//! Who can open a connection to what, and how that changes from one
//! ruleset to another, in words: "8080/tcp becomes reachable from
//! 198.51.100.50/32", "22/tcp: 203.0.113.0/24 loses access".
//!
//! A text diff of two rulesets says which lines moved; an operator wants
//! to know which ports opened or closed, and to whom. This module answers
//! that from the model, for the packet the firewall exists to judge: the
//! first packet of a new TCP or UDP connection, under every rate limit
//! (as [`super::eval`] assumes), to the host itself (the input hook) or to
//! a published container port (the forward hook, after Docker's DNAT).
//!
//! # How, without enumerating addresses
//! The evaluator answers for one packet; the question here is about every
//! source address at once. For one protocol, port, interface and
//! destination, every match of a rule but the source ones is simply true
//! or false, and the source matches select a set of addresses (a group's
//! prefixes, their complement, one address, a family). Walking a chain's
//! rules in order over *sets* of addresses then gives the sources it
//! accepts: each rule takes its share of the still-undecided addresses,
//! and the policy the rest. Addresses are kept as sorted integer ranges,
//! so a million-prefix group costs a few linear passes, not a million
//! evaluations.
//!
//! Ports and interface names are cut into classes that no rule tells
//! apart (every port range's edges; a name for each pattern and one for
//! none), and the walk's result is cached by which rules apply, so a
//! profile's few rules are walked a few times whatever the port count.
//! The evaluator stays the reference: the tests check this module against
//! it, packet by packet, on random pairs of profiles.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use serde::Serialize;

use super::eval::interface_matches;
use super::model::*;

/// Sorted, disjoint, non-touching inclusive ranges of one family's
/// addresses, as integers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Ranges(Vec<(u128, u128)>);

impl Ranges {
    fn all(family: Family) -> Ranges {
        Ranges(vec![(0, max_of(family))])
    }

    fn one(a: u128) -> Ranges {
        Ranges(vec![(a, a)])
    }

    /// From prefixes in any order, overlapping or not.
    fn of_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Ranges {
        let mut v: Vec<(u128, u128)> = nets
            .into_iter()
            .map(|n| (to_u128(n.network()), to_u128(n.broadcast())))
            .collect();
        // A set's prefixes are sorted already (the model's invariant).
        if !v.is_sorted() {
            v.sort_unstable();
        }
        Ranges::coalesced(v)
    }

    /// Sorted input (by start) merged where ranges overlap or touch.
    fn coalesced(sorted: Vec<(u128, u128)>) -> Ranges {
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(sorted.len());
        for (a, b) in sorted {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Ranges(out)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, x: u128) -> bool {
        let after = self.0.partition_point(|r| r.0 <= x);
        after > 0 && self.0[after - 1].1 >= x
    }

    fn union(&self, other: &Ranges) -> Ranges {
        if other.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        let mut all = Vec::with_capacity(self.0.len() + other.0.len());
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() || j < other.0.len() {
            let take_self = j == other.0.len() || (i < self.0.len() && self.0[i] <= other.0[j]);
            if take_self {
                all.push(self.0[i]);
                i += 1;
            } else {
                all.push(other.0[j]);
                j += 1;
            }
        }
        Ranges::coalesced(all)
    }

    fn intersect(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            // Skip, by binary search, what ends before the other side's
            // next range starts: a few changed prefixes against a million
            // cost a few searches, not a pass.
            i += gallop(&self.0[i..], |r| r.1 < other.0[j].0);
            if i == self.0.len() {
                break;
            }
            j += gallop(&other.0[j..], |r| r.1 < self.0[i].0);
            if j == other.0.len() {
                break;
            }
            let (a, b) = (self.0[i], other.0[j]);
            let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
            if lo <= hi {
                out.push((lo, hi));
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Ranges(out)
    }

    fn minus(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        let mut j = 0;
        for &(a, b) in &self.0 {
            let mut lo = a;
            j += gallop(&other.0[j..], |r| r.1 < lo);
            let mut k = j;
            let mut done = false;
            while k < other.0.len() && other.0[k].0 <= b {
                let (c, d) = other.0[k];
                if c > lo {
                    out.push((lo, c - 1));
                }
                if d >= b {
                    done = true;
                    break;
                }
                lo = d + 1;
                k += 1;
            }
            if !done {
                out.push((lo, b));
            }
        }
        Ranges(out)
    }

    /// The fewest prefixes covering exactly these ranges.
    fn prefixes(&self, family: Family) -> impl Iterator<Item = IpNet> + '_ {
        self.0
            .iter()
            .flat_map(move |&(a, b)| -> Box<dyn Iterator<Item = IpNet>> {
                match family {
                    Family::Ipv4 => Box::new(
                        Ipv4Subnets::new(Ipv4Addr::from(a as u32), Ipv4Addr::from(b as u32), 0)
                            .map(IpNet::V4),
                    ),
                    Family::Ipv6 => Box::new(
                        Ipv6Subnets::new(Ipv6Addr::from(a), Ipv6Addr::from(b), 0).map(IpNet::V6),
                    ),
                }
            })
    }
}

/// How many leading ranges satisfy `before` (true for a prefix of the
/// slice, then false): exponential then binary search, so a skip costs
/// the log of its length, and no skip one comparison.
fn gallop(ranges: &[(u128, u128)], before: impl Fn(&(u128, u128)) -> bool) -> usize {
    let mut end = 1;
    while end <= ranges.len() && before(&ranges[end - 1]) {
        end *= 2;
    }
    let start = end / 2;
    let end = end.min(ranges.len());
    start + ranges[start..end].partition_point(before)
}

fn max_of(family: Family) -> u128 {
    match family {
        Family::Ipv4 => u32::MAX.into(),
        Family::Ipv6 => u128::MAX,
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

/// A set of source addresses of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Sources {
    v4: Ranges,
    v6: Ranges,
}

impl Sources {
    fn anywhere() -> Sources {
        Sources {
            v4: Ranges::all(Family::Ipv4),
            v6: Ranges::all(Family::Ipv6),
        }
    }

    fn of(family: Family, ranges: Ranges) -> Sources {
        match family {
            Family::Ipv4 => Sources {
                v4: ranges,
                v6: Ranges::default(),
            },
            Family::Ipv6 => Sources {
                v4: Ranges::default(),
                v6: ranges,
            },
        }
    }

    fn family(&self, family: Family) -> &Ranges {
        match family {
            Family::Ipv4 => &self.v4,
            Family::Ipv6 => &self.v6,
        }
    }

    fn both(&self, other: &Sources, f: impl Fn(&Ranges, &Ranges) -> Ranges) -> Sources {
        Sources {
            v4: f(&self.v4, &other.v4),
            v6: f(&self.v6, &other.v6),
        }
    }

    fn union(&self, other: &Sources) -> Sources {
        self.both(other, Ranges::union)
    }

    fn intersect(&self, other: &Sources) -> Sources {
        self.both(other, Ranges::intersect)
    }

    fn minus(&self, other: &Sources) -> Sources {
        self.both(other, Ranges::minus)
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(_) => self.v4.contains(to_u128(addr)),
            IpAddr::V6(_) => self.v6.contains(to_u128(addr)),
        }
    }

    /// The fewest prefixes covering exactly this set, IPv4 first.
    pub fn prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4
            .prefixes(Family::Ipv4)
            .chain(self.v6.prefixes(Family::Ipv6))
    }

    /// One family's part in words: "any IPv4 address", "any IPv4 address
    /// except a and b", or its prefixes, the first few of a long list.
    fn describe_family(&self, family: Family) -> String {
        let ranges = self.family(family);
        let any = match family {
            Family::Ipv4 => "any IPv4 address",
            Family::Ipv6 => "any IPv6 address",
        };
        if *ranges == Ranges::all(family) {
            return any.to_string();
        }
        let total = ranges.prefixes(family).count();
        let missing = Ranges::all(family).minus(ranges);
        let except: Vec<String> = missing
            .prefixes(family)
            .take(LISTED + 1)
            .map(|n| n.to_string())
            .collect();
        if except.len() <= LISTED && except.len() < total {
            return format!("{any} except {}", except.join(" and "));
        }
        let shown = if total <= LISTED { total } else { LISTED - 1 };
        let listed: Vec<String> = ranges
            .prefixes(family)
            .take(shown)
            .map(|n| n.to_string())
            .collect();
        match total - shown {
            0 => listed.join(", "),
            more => format!("{} and {more} more prefixes", listed.join(", ")),
        }
    }
}

/// How many prefixes a family's part names before it says "and N more".
const LISTED: usize = 4;

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Sources::anywhere() {
            return f.write_str("anywhere");
        }
        let parts: Vec<String> = [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter(|&family| !self.family(family).is_empty())
            .map(|family| self.describe_family(family))
            .collect();
        // "any IPv4 address except a and b; 2001:db8::/32"
        let between = if parts
            .iter()
            .any(|p| p.contains(" except ") || p.contains(" more "))
        {
            "; "
        } else {
            ", "
        };
        f.write_str(&parts.join(between))
    }
}

impl Serialize for Sources {
    /// Prefixes as strings; a huge set (a big group changed) is cut at
    /// 1,000 with the total alongside.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        const CAP: usize = 1000;
        let mut listed: Vec<String> = Vec::new();
        let mut total = 0usize;
        for n in self.prefixes() {
            if listed.len() < CAP {
                listed.push(n.to_string());
            }
            total += 1;
        }
        let mut st = s.serialize_struct("Sources", 3)?;
        st.serialize_field("words", &self.to_string())?;
        st.serialize_field("prefixes", &listed)?;
        st.serialize_field("prefix_count", &total)?;
        st.end()
    }
}

/// Where a connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A service of the host itself (the input hook).
    Host,
    /// A published container port (the forward hook, after DNAT), by the
    /// port the client connects to.
    Published,
}

/// Whether a change opens or closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Sources that could not connect and now can.
    Gains,
    /// Sources that could connect and now cannot.
    Loses,
}

/// One line of the difference: these sources gain or lose new connections
/// to these ports, on these interfaces.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The host, published container ports, or both alike.
    pub targets: Vec<Target>,
    pub kind: Kind,
    pub protocol: Protocol,
    pub ports: PortRange,
    /// The interfaces it holds on, by name or pattern; with both lists
    /// empty, every interface.
    pub interfaces: Vec<String>,
    /// Or: every interface but these.
    pub except_interfaces: Vec<String>,
    pub sources: Sources,
    #[serde(skip)]
    classes: Vec<usize>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = if self.ports.first == self.ports.last {
            self.ports.first.to_string()
        } else {
            format!("{}-{}", self.ports.first, self.ports.last)
        };
        let proto = self.protocol.as_str();
        // The profile's rules govern both alike: only a published port
        // that changes otherwise than the host's gets a line of its own.
        let what = match self.targets[..] {
            [Target::Published] => format!("published port {ports}/{proto}"),
            _ => format!("{ports}/{proto}"),
        };
        let on = if !self.except_interfaces.is_empty() {
            format!(
                " on any interface but {}",
                self.except_interfaces.join(", ")
            )
        } else if !self.interfaces.is_empty() {
            format!(" on {}", self.interfaces.join(", "))
        } else {
            String::new()
        };
        match self.kind {
            Kind::Gains => write!(f, "{what} becomes reachable from {}{on}", self.sources),
            Kind::Loses => write!(f, "{what}: {} loses access{on}", self.sources),
        }
    }
}

/// Interface names no rule tells apart, with one name that stands for them.
#[derive(Debug, Clone)]
struct Class {
    label: String,
    name: String,
    /// Which patterns (of [`Diff::patterns`]) the name matches.
    signature: Vec<bool>,
}

/// The difference between two rulesets in who can open connections to
/// what.
#[derive(Debug, Clone)]
pub struct Diff {
    pub changes: Vec<Change>,
    patterns: Vec<String>,
    classes: Vec<Class>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// What the difference says about one new connection: whether it
    /// gains or loses, or `None` (decided alike by both rulesets). A
    /// published port is never reached over `lo` (see [`diff`]).
    pub fn says(
        &self,
        target: Target,
        protocol: Protocol,
        port: u16,
        interface: &str,
        source: IpAddr,
    ) -> Option<Kind> {
        let signature = signature_of(&self.patterns, interface);
        let class = self.classes.iter().position(|c| c.signature == signature)?;
        self.changes
            .iter()
            .find(|c| {
                c.targets.contains(&target)
                    && c.protocol == protocol
                    && c.ports.contains(port)
                    && c.classes.contains(&class)
                    && c.sources.contains(source)
            })
            .map(|c| c.kind)
    }

    /// The difference in lines of words, one change per line.
    pub fn lines(&self) -> Vec<String> {
        self.changes.iter().map(ToString::to_string).collect()
    }
}

/// A connection to a published port is forwarded, and the kernel never
/// forwards what arrived on `lo`: that class is left out for them.
const LOOPBACK: &str = "lo";

/// No table of ours: every hook lets everything through.
fn no_table() -> Ruleset {
    Ruleset {
        profile: String::new(),
        table: TABLE_NAME.to_string(),
        sets: Vec::new(),
        chains: Vec::new(),
        bans: None,
    }
}

/// The most prefixes a change in words walks in full. Each walk keeps
/// several copies of every set it crosses as ranges (32 bytes a range):
/// a million-prefix first apply tripled the apply's peak memory. A change
/// of set elements alone walks only the prefixes that moved, whatever the
/// size of the set (see [`scope`]).
pub const WORDS_MAX: usize = 100_000;

/// Who gains and who loses, or why it is not said.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Said {
    Changes(Vec<Change>),
    Untold { untold: String },
}

/// Like [`diff`], unless the change would walk more than [`WORDS_MAX`]
/// prefixes in full: then the reason it is not said.
pub fn said(old: Option<&Ruleset>, new: &Ruleset) -> Said {
    let empty = no_table();
    let old_or_none = old.unwrap_or(&empty);
    let mut caches = [SetCache::default(), SetCache::default()];
    let scope = scope(old_or_none, new, &mut caches);
    let prefixes = |r: &Ruleset| -> usize {
        r.sets
            .iter()
            .map(|s| match &s.kind {
                SetKind::Prefixes(nets) => nets.len(),
                _ => 0,
            })
            .sum()
    };
    let walked = if scope == Sources::anywhere() {
        prefixes(old_or_none) + prefixes(new)
    } else {
        scope.prefixes().count()
    };
    if walked > WORDS_MAX {
        return Said::Untold {
            untold: format!(
                "the change crosses {walked} prefixes, more than the {WORDS_MAX} it is said in words for (the nft text: --diff)"
            ),
        };
    }
    Said::Changes(diff_within(old_or_none, new, caches, scope).changes)
}

/// What changes from `old` (`None`: no table, everything accepted) to
/// `new`, for new connections.
pub fn diff(old: Option<&Ruleset>, new: &Ruleset) -> Diff {
    let empty = no_table();
    let old = old.unwrap_or(&empty);
    let mut caches = [SetCache::default(), SetCache::default()];
    let scope = scope(old, new, &mut caches);
    diff_within(old, new, caches, scope)
}

/// [`diff`], with the sources that can differ (`scope`) already known and
/// the set ranges read so far in `caches`.
fn diff_within(old: &Ruleset, new: &Ruleset, caches: [SetCache; 2], scope: Sources) -> Diff {
    let patterns = interface_patterns([old, new]);
    let classes = classes(&patterns);
    let ports = port_cuts([old, new]);
    let [mut a, mut b] = caches;
    let mut walks = [
        Walker::new(old, &scope, &mut a),
        Walker::new(new, &scope, &mut b),
    ];
    let universe = |target: Target| -> Vec<usize> {
        (0..classes.len())
            .filter(|&c| target == Target::Host || classes[c].name != LOOPBACK)
            .collect()
    };
    // Gained and lost sets interned by value: equal sets share an id, so
    // grouping and merging compare ids, and a big group is subtracted
    // once per pair of accepted sets, not once per port.
    let mut sets: Vec<Sources> = Vec::new();
    let mut ids: HashMap<Sources, usize> = HashMap::new();
    let mut pairs: HashMap<(usize, usize), [usize; 2]> = HashMap::new();
    let mut changes: Vec<Change> = Vec::new();
    for target in [Target::Host, Target::Published] {
        let all = universe(target);
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            // Each piece with the ports it has held on so far.
            let mut open: Vec<(Piece, PortRange)> = Vec::new();
            for range in &ports {
                // The classes of this port range, grouped by what they gain
                // and what they lose.
                let mut here: Vec<Piece> = Vec::new();
                for &c in &all {
                    let point = Point {
                        target,
                        protocol,
                        port: range.first,
                        interface: &classes[c].name,
                    };
                    let key = (walks[0].accepted(&point), walks[1].accepted(&point));
                    let [gained, lost] = *pairs.entry(key).or_insert_with(|| {
                        let (a, b) = (&walks[0].results[key.0], &walks[1].results[key.1]);
                        [b.minus(a), a.minus(b)].map(|set| {
                            *ids.entry(set.clone()).or_insert_with(|| {
                                sets.push(set);
                                sets.len() - 1
                            })
                        })
                    });
                    for (kind, id) in [(Kind::Gains, gained), (Kind::Loses, lost)] {
                        if sets[id].is_empty() {
                            continue;
                        }
                        match here.iter_mut().find(|h| (h.0, h.2) == (kind, id)) {
                            Some(h) => h.1.push(c),
                            None => here.push((kind, vec![c], id)),
                        }
                    }
                }
                // What goes on stays open; what stops here is a change.
                let (going_on, stopped): (Vec<_>, Vec<_>) =
                    open.drain(..).partition(|(piece, _)| here.contains(piece));
                for ((kind, held_on, id), ports) in stopped {
                    changes.push(change(target, kind, protocol, ports, held_on, &sets[id]));
                }
                open = going_on;
                for piece in here {
                    match open.iter_mut().find(|(p, _)| *p == piece) {
                        Some((_, ports)) => ports.last = range.last,
                        None => open.push((piece, *range)),
                    }
                }
            }
            for ((kind, held_on, id), ports) in open {
                changes.push(change(target, kind, protocol, ports, held_on, &sets[id]));
            }
        }
    }
    // A published port changed exactly as the host's port is one line too.
    let mut published: Vec<Change> = Vec::new();
    for change in std::mem::take(&mut changes) {
        if change.targets == [Target::Published] {
            published.push(change);
        } else {
            changes.push(change);
        }
    }
    for p in published {
        let twin = changes.iter_mut().find(|h| {
            (h.kind, h.protocol, h.ports) == (p.kind, p.protocol, p.ports)
                && h.classes == p.classes
                && h.sources == p.sources
        });
        match twin {
            Some(h) => h.targets.push(Target::Published),
            None => changes.push(p),
        }
    }
    for c in &mut changes {
        let all = universe(c.targets[0]);
        let label = |i: &usize| classes[*i].label.clone();
        let missing: Vec<usize> = all
            .iter()
            .filter(|i| !c.classes.contains(i))
            .copied()
            .collect();
        if missing.is_empty() {
            continue;
        }
        if missing.len() <= c.classes.len() {
            c.except_interfaces = missing.iter().map(label).collect();
        } else {
            c.interfaces = c.classes.iter().map(label).collect();
        }
    }
    changes.sort_by_key(|c| (c.targets[0], c.protocol, c.ports, c.kind));
    Diff {
        changes,
        patterns,
        classes,
    }
}

/// A change before its ports are known: what (gains or loses), on which
/// interface classes, for which sources (an id of the interned sets).
type Piece = (Kind, Vec<usize>, usize);

fn change(
    target: Target,
    kind: Kind,
    protocol: Protocol,
    ports: PortRange,
    classes: Vec<usize>,
    sources: &Sources,
) -> Change {
    Change {
        targets: vec![target],
        kind,
        protocol,
        ports,
        interfaces: Vec::new(),
        except_interfaces: Vec::new(),
        sources: sources.clone(),
        classes,
    }
}

/// One class of new connections: everything but the source is known.
struct Point<'a> {
    target: Target,
    protocol: Protocol,
    port: u16,
    interface: &'a str,
}

impl Point<'_> {
    fn hook(&self) -> Hook {
        match self.target {
            Target::Host => Hook::Input,
            Target::Published => Hook::Forward,
        }
    }

    /// Whether a match that does not read the source holds; `None` for one
    /// that does (left to [`source_match`]).
    fn holds(&self, m: &Match) -> Option<bool> {
        Some(match m {
            Match::InInterface(p) => interface_matches(p, Some(self.interface)),
            Match::OutInterface(_) => false,
            Match::CtState(states) => states.contains(&CtState::New),
            Match::Protocol(ps) => ps.contains(&self.protocol),
            Match::DestPort(r) | Match::OrigDestPort(r) => r.iter().any(|r| r.contains(self.port)),
            Match::CtStatus(CtStatus::Dnat) => self.target == Target::Published,
            Match::IcmpType(_) | Match::Icmpv6Type(_) => false,
            // Under every limit: a first connection.
            Match::SourceRateOver { .. } => false,
            Match::Family(_)
            | Match::SourceInSet { .. }
            | Match::SourceNotInSet { .. }
            | Match::Source(_) => return None,
        })
    }
}

/// One ruleset's accepted sources, walked once per set of applicable rules.
struct Walker<'a> {
    /// The sources worth walking (see [`scope`]).
    scope: Sources,
    /// Per hook: its chains' rules with a verdict, in the order the kernel
    /// runs them, each with the sources its matches select.
    rules: HashMap<Hook, Vec<Vec<(&'a Rule, Sources)>>>,
    policies: HashMap<Hook, Vec<Policy>>,
    cache: HashMap<(Hook, Vec<bool>), usize>,
    results: Vec<Sources>,
}

impl<'a> Walker<'a> {
    fn new(ruleset: &'a Ruleset, scope: &Sources, sets: &mut SetCache) -> Walker<'a> {
        let mut rules: HashMap<Hook, Vec<Vec<(&Rule, Sources)>>> = HashMap::new();
        let mut policies: HashMap<Hook, Vec<Policy>> = HashMap::new();
        let mut chains: Vec<&Chain> = ruleset.chains.iter().collect();
        chains.sort_by_key(|c| c.priority);
        for chain in chains {
            let walked = chain
                .rules
                .iter()
                .filter(|r| r.verdict.is_some())
                .map(|r| (r, source_match(ruleset, sets, r, scope)))
                .collect();
            rules.entry(chain.hook).or_default().push(walked);
            policies.entry(chain.hook).or_default().push(chain.policy);
        }
        Walker {
            scope: scope.clone(),
            rules,
            policies,
            cache: HashMap::new(),
            results: Vec::new(),
        }
    }

    /// The index in `results` of the sources the hook accepts new
    /// connections from, for `point`.
    fn accepted(&mut self, point: &Point) -> usize {
        let hook = point.hook();
        let Some(chains) = self.rules.get(&hook) else {
            // Nothing of ours on the hook: everything passes it.
            let everyone = self.scope.clone();
            return self.intern((hook, Vec::new()), || everyone);
        };
        let applies: Vec<bool> = chains
            .iter()
            .flatten()
            .map(|(r, _)| r.matches.iter().all(|m| point.holds(m).unwrap_or(true)))
            .collect();
        let policies = &self.policies[&hook];
        let compute = || {
            // A packet passes the hook only if every chain on it accepts.
            let mut passed = self.scope.clone();
            let mut applies = applies.iter();
            for (chain, policy) in chains.iter().zip(policies) {
                let mut undecided = self.scope.clone();
                let mut accepted = Sources::default();
                for (rule, sources) in chain {
                    if !applies.next().copied().unwrap_or(false) {
                        continue;
                    }
                    let taken = undecided.intersect(sources);
                    if rule.verdict == Some(Verdict::Accept) {
                        accepted = accepted.union(&taken);
                    }
                    undecided = undecided.minus(&taken);
                }
                if *policy == Policy::Accept {
                    accepted = accepted.union(&undecided);
                }
                passed = passed.intersect(&accepted);
            }
            passed
        };
        let key = (hook, applies.clone());
        if let Some(&i) = self.cache.get(&key) {
            return i;
        }
        let result = compute();
        self.intern(key, || result)
    }

    fn intern(&mut self, key: (Hook, Vec<bool>), make: impl FnOnce() -> Sources) -> usize {
        if let Some(&i) = self.cache.get(&key) {
            return i;
        }
        self.results.push(make());
        let i = self.results.len() - 1;
        self.cache.insert(key, i);
        i
    }
}

/// The sources where `old` and `new` may decide otherwise. When only
/// the elements of their sets differ (a group's list changed: the same
/// rules, the same sets), that is the addresses some set gained or lost,
/// and the walk over a million-prefix group costs what the change does;
/// otherwise every address.
fn scope(old: &Ruleset, new: &Ruleset, caches: &mut [SetCache; 2]) -> Sources {
    // A comment (a profile line that moved) decides nothing.
    let same_rules = |a: &Chain, b: &Chain| {
        (&a.name, a.hook, a.priority, a.policy) == (&b.name, b.hook, b.priority, b.policy)
            && a.rules.len() == b.rules.len()
            && a.rules.iter().zip(&b.rules).all(|(x, y)| {
                (&x.matches, x.limit, &x.verdict) == (&y.matches, y.limit, &y.verdict)
            })
    };
    let same = old.chains.len() == new.chains.len()
        && old
            .chains
            .iter()
            .zip(&new.chains)
            .all(|(a, b)| same_rules(a, b));
    if !same {
        return Sources::anywhere();
    }
    let mut changed = Sources::default();
    for name in old.sets.iter().chain(&new.sets).map(|s| s.name.as_str()) {
        if let (Some((x, family)), Some((y, _))) = (prefixes(old, name), prefixes(new, name)) {
            if let Some(moved) = moved_prefixes(x, y) {
                changed = changed.union(&Sources::of(family, moved));
                continue;
            }
        }
        let [a, b] = caches;
        let (x, y) = (a.ranges(old, name), b.ranges(new, name));
        if x == y {
            continue;
        }
        let family = old.set(name).or(new.set(name)).map(|s| s.family);
        let Some(family) = family else { continue };
        let moved = x.minus(y).union(&y.minus(x));
        changed = changed.union(&Sources::of(family, moved));
    }
    changed
}

/// Set `name`'s prefixes and family, when it is a set of prefixes.
fn prefixes<'a>(r: &'a Ruleset, name: &str) -> Option<(&'a [IpNet], Family)> {
    match r.set(name).map(|s| (&s.kind, s.family)) {
        Some((SetKind::Prefixes(nets), family)) => Some((nets.as_slice(), family)),
        _ => None,
    }
}

/// The addresses of the prefixes on one side only of two sorted lists
/// (see [`one_side_only`]): every address that moved, and maybe more where
/// the same addresses are written as other prefixes, which the diff then
/// finds unchanged. A big group with a few changed prefixes costs a
/// comparison per prefix, not two set differences of its ranges.
fn moved_prefixes(x: &[IpNet], y: &[IpNet]) -> Option<Ranges> {
    one_side_only(x, y).map(|m| Ranges::of_nets(&m))
}

/// The sources of `scope` a rule's source matches select (all of them
/// when it has none), as the evaluator reads each match. Starting from
/// the scope keeps the work to its size when a big group changed a little.
fn source_match(ruleset: &Ruleset, sets: &mut SetCache, rule: &Rule, scope: &Sources) -> Sources {
    let mut sources = scope.clone();
    for m in &rule.matches {
        let (family, within) = match m {
            Match::Family(f) => (*f, sources.family(*f).clone()),
            Match::SourceInSet { family, set } => {
                (*family, sets.within(ruleset, set, sources.family(*family)))
            }
            Match::SourceNotInSet { family, set } => {
                let of = sources.family(*family);
                (*family, of.minus(&sets.within(ruleset, set, of)))
            }
            Match::Source(addr) => {
                let family = match addr {
                    IpAddr::V4(_) => Family::Ipv4,
                    IpAddr::V6(_) => Family::Ipv6,
                };
                let one = Ranges::one(to_u128(*addr));
                (family, sources.family(family).intersect(&one))
            }
            _ => continue,
        };
        sources = Sources::of(family, within);
    }
    sources
}

/// Named sets' addresses, each turned into ranges once (or, for a big set
/// only searched, checked once for being sorted and apart).
#[derive(Default)]
struct SetCache {
    ranges: HashMap<String, Ranges>,
    apart: HashMap<String, bool>,
}

/// Whether prefixes are sorted and none overlaps the next: then their
/// ranges ascend by start and by end alike, and can be searched.
fn sorted_apart(nets: &[IpNet]) -> bool {
    nets.windows(2)
        .all(|w| to_u128(w[0].broadcast()) < to_u128(w[1].network()))
}

impl SetCache {
    /// The addresses of `scope` in set `name`. A scope of a few ranges
    /// against a big set of sorted, apart prefixes (an element delta's)
    /// is searched in the prefixes themselves: a few binary searches, not
    /// the set's ranges built whole.
    fn within(&mut self, ruleset: &Ruleset, name: &str, scope: &Ranges) -> Ranges {
        if !self.ranges.contains_key(name) {
            if let Some(SetKind::Prefixes(nets)) = ruleset.set(name).map(|s| &s.kind) {
                if scope.0.len().saturating_mul(64) < nets.len()
                    && *self
                        .apart
                        .entry(name.to_string())
                        .or_insert_with(|| sorted_apart(nets))
                {
                    return search(nets, scope);
                }
            }
        }
        scope.intersect(self.ranges(ruleset, name))
    }

    /// A named set's addresses as the evaluator sees them: a hatch's one
    /// element until its deadline; meters and bans hold no one in the
    /// model, nor does a set the ruleset lacks.
    fn ranges(&mut self, ruleset: &Ruleset, name: &str) -> &Ranges {
        self.ranges.entry(name.to_string()).or_insert_with(|| {
            match ruleset.set(name).map(|s| &s.kind) {
                Some(SetKind::Prefixes(nets)) => Ranges::of_nets(nets),
                Some(SetKind::Hatch(Some(e))) => Ranges::one(to_u128(e.addr)),
                Some(SetKind::Hatch(None) | SetKind::Meter { .. } | SetKind::Bans { .. })
                | None => Ranges::default(),
            }
        })
    }
}

/// The addresses of `scope` in `nets`, sorted and apart (see
/// [`sorted_apart`]), by binary search per range of `scope`.
fn search(nets: &[IpNet], scope: &Ranges) -> Ranges {
    let mut out = Vec::new();
    for &(a, b) in &scope.0 {
        let from = nets.partition_point(|n| to_u128(n.broadcast()) < a);
        for n in &nets[from..] {
            let (first, last) = (to_u128(n.network()), to_u128(n.broadcast()));
            if first > b {
                break;
            }
            out.push((first.max(a), last.min(b)));
        }
    }
    Ranges::coalesced(out)
}

/// Every port where some rule's port ranges start or stop: between two
/// cuts no rule tells one port from the next.
fn port_cuts(rulesets: [&Ruleset; 2]) -> Vec<PortRange> {
    let mut cuts: Vec<u32> = vec![1, 65536];
    for r in rulesets {
        for rule in r.chains.iter().flat_map(|c| &c.rules) {
            for m in &rule.matches {
                if let Match::DestPort(ranges) | Match::OrigDestPort(ranges) = m {
                    for p in ranges {
                        cuts.push(p.first.into());
                        cuts.push(u32::from(p.last) + 1);
                    }
                }
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| PortRange {
            first: w[0] as u16,
            last: (w[1] - 1) as u16,
        })
        .collect()
}

fn interface_patterns(rulesets: [&Ruleset; 2]) -> Vec<String> {
    let mut patterns: Vec<String> = rulesets
        .iter()
        .flat_map(|r| r.chains.iter().flat_map(|c| &c.rules))
        .flat_map(|rule| &rule.matches)
        .filter_map(|m| match m {
            Match::InInterface(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    patterns.sort();
    patterns.dedup();
    patterns
}

fn signature_of(patterns: &[String], name: &str) -> Vec<bool> {
    patterns
        .iter()
        .map(|p| interface_matches(p, Some(name)))
        .collect()
}

/// Interface names standing for every combination of patterns a real
/// name can match: each literal name, for each `prefix*` a name under it
/// that no longer pattern claims, and a name no pattern matches.
fn classes(patterns: &[String]) -> Vec<Class> {
    // Interface names are at most 15 bytes (IFNAMSIZ - 1).
    const MAX: usize = 15;
    let mut candidates: Vec<(String, String)> = Vec::new();
    for p in patterns {
        match p.strip_suffix('*') {
            None => candidates.push((p.clone(), p.clone())),
            Some(prefix) => {
                // A name one byte longer than the prefix matches only the
                // patterns the prefix implies, unless it is itself a
                // literal or a longer prefix.
                let taken = |name: &String| {
                    patterns.contains(name) || patterns.contains(&format!("{name}*"))
                };
                let name = if prefix.len() >= MAX {
                    prefix.chars().take(MAX).collect()
                } else {
                    ["7", "9", "x", "_", "Q", "-", "8"]
                        .iter()
                        .map(|c| format!("{prefix}{c}"))
                        .find(|n| !taken(n))
                        .unwrap_or_else(|| format!("{prefix}7"))
                };
                let label = if patterns
                    .iter()
                    .any(|q| q != p && q.starts_with(prefix) && q.len() > prefix.len())
                {
                    format!("other {p} interfaces")
                } else {
                    p.clone()
                };
                candidates.push((name, label));
            }
        }
    }
    let none = ["other0", "x", "zz9", "q0", "-"]
        .iter()
        .find(|n| !signature_of(patterns, n).contains(&true));
    if let Some(n) = none {
        let label = if patterns.is_empty() {
            "any interface"
        } else {
            "other interfaces"
        };
        candidates.push((n.to_string(), label.to_string()));
    }
    let mut classes: Vec<Class> = Vec::new();
    for (name, label) in candidates {
        let signature = signature_of(patterns, &name);
        if !classes.iter().any(|c| c.signature == signature) {
            classes.push(Class {
                label,
                name,
                signature,
            });
        }
    }
    classes
}

mod check;
#[cfg(test)]
mod tests;

pub use check::disagreement;
