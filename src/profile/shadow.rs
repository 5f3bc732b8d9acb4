//! Which rule an earlier rule already covers: the first earlier rule (in
//! the order the kernel checks them) that matches every packet a rule
//! would. Asked of every pair, this was quadratic: 100,000 rules took
//! minutes. Here each rule asks an index of the earlier rules for the few
//! that could cover it, along the dimension that narrows them most (a
//! port, a source prefix, an interface), and tests only those. Ranges of
//! ports are kept in a segment tree, so "which ranges hold port p" is
//! answered without looking at the others.
//!
//! What stays quadratic is a profile where every dimension is shared by
//! most rules and yet no rule covers the next (say, thousands of rules
//! naming groups of more than [`INDEXED_PREFIXES`] prefixes on one port).
//! The index only narrows: every rule that covers another is among the
//! candidates the index returns, so the answers are those of the pairwise
//! check (the unit tests hold it to that check on random profiles).

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use ipnet::IpNet;

use super::addr;
use super::{Ports, Profile, Rule, SourceSide};
use crate::ruleset::{Family, Protocol};

/// A rule's sources of one family, its groups' prefixes aggregated once.
#[derive(Debug, Clone)]
enum Side<'a> {
    None,
    Any,
    Prefixes(Prefixes<'a>),
}

/// Aggregated prefixes, shared by the rules naming the same groups, and
/// borrowed from the group when there is one.
type Prefixes<'a> = Rc<Cow<'a, [IpNet]>>;

/// A rule with what covering needs computed once.
struct Shape<'a> {
    rule: &'a Rule,
    sides: [Side<'a>; 2],
}

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

/// A rule of more prefixes than this is not indexed by prefix (a group of
/// a million addresses would fill the index): it is a candidate for every
/// rule of that family.
const INDEXED_PREFIXES: usize = 64;

/// For each rule of `order`, the position of the first earlier rule that
/// covers it, if any.
pub fn first_covering(profile: &Profile, order: &[&Rule]) -> Vec<Option<usize>> {
    let mut prefixes = HashMap::new();
    let shapes: Vec<Shape> = order
        .iter()
        .map(|rule| Shape {
            rule,
            sides: FAMILIES.map(|f| side(profile, rule.sources.side(f), f, &mut prefixes)),
        })
        .collect();
    let mut index = Index::default();
    let mut found = Vec::with_capacity(shapes.len());
    for (i, shape) in shapes.iter().enumerate() {
        found.push(index.first_covering(&shapes, shape));
        index.insert(i, shape);
    }
    found
}

/// The aggregated prefixes of `groups` in `family`, computed once for
/// each list of groups (many rules name the same ones).
fn side<'a>(
    profile: &'a Profile,
    side: &'a SourceSide,
    family: Family,
    memo: &mut HashMap<(&'a [String], Family), Prefixes<'a>>,
) -> Side<'a> {
    match side {
        SourceSide::None => Side::None,
        SourceSide::Any => Side::Any,
        SourceSide::Groups(groups) => Side::Prefixes(
            memo.entry((groups.as_slice(), family))
                .or_insert_with(|| {
                    let mut all = groups.iter().filter_map(|g| profile.groups.get(g));
                    // One group's prefixes are aggregated already, and
                    // not copied: a million of them took 8 ms.
                    Rc::new(match (all.next(), all.next()) {
                        (None, _) => Cow::Borrowed(&[]),
                        (Some(one), None) => Cow::Borrowed(one.family(family)),
                        (Some(a), Some(b)) => {
                            let all: Vec<IpNet> = [a, b]
                                .into_iter()
                                .chain(all)
                                .flat_map(|g| g.family(family).iter().copied())
                                .collect();
                            Cow::Owned(addr::aggregate(&all))
                        }
                    })
                })
                .clone(),
        ),
    }
}

/// Whether every packet `b` matches is matched by `a` first.
fn covers(a: &Shape, b: &Shape) -> bool {
    ports_cover(&a.rule.ports, &b.rule.ports)
        && interface_covers(a.rule.interface.as_deref(), b.rule.interface.as_deref())
        && a.sides.iter().zip(&b.sides).all(|(a, b)| side_covers(a, b))
}

pub(super) fn ports_cover(a: &Ports, b: &Ports) -> bool {
    match (a, b) {
        (Ports::All, _) => true,
        (Ports::Some(_), Ports::All) => false,
        (Ports::Some(a), Ports::Some(b)) => b.iter().all(|(proto, ranges)| {
            a.get(proto)
                .is_some_and(|outer| ranges.iter().all(|r| outer.iter().any(|o| o.covers(r))))
        }),
    }
}

pub(super) fn interface_covers(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => match a.strip_suffix('*') {
            Some(prefix) => b.strip_suffix('*').unwrap_or(b).starts_with(prefix),
            None => a == b,
        },
    }
}

fn side_covers(a: &Side, b: &Side) -> bool {
    match (a, b) {
        (_, Side::None) | (Side::Any, _) => true,
        (Side::None, _) | (Side::Prefixes(_), Side::Any) => false,
        (Side::Prefixes(a), Side::Prefixes(b)) => b.iter().all(|p| addr::covered(p, a)),
    }
}

/// The earlier rules, by what they match. Each list holds positions in
/// ascending order (rules are inserted in order).
#[derive(Default)]
struct Index<'a> {
    all_ports: Vec<usize>,
    /// Rules naming this protocol (with any ports).
    by_protocol: HashMap<Protocol, Vec<usize>>,
    /// Rules naming this single port.
    by_port: HashMap<(Protocol, u16), Vec<usize>>,
    /// Rules naming a range of more than one port, in the nodes of a
    /// segment tree over the ports ([`segments`]): the rules whose range
    /// holds a port are those in the nodes on its way to the root.
    ranges: HashMap<(Protocol, u32), Vec<usize>>,
    any_source: [Vec<usize>; 2],
    by_prefix: HashMap<IpNet, Vec<usize>>,
    /// Rules of more prefixes than [`INDEXED_PREFIXES`], per family.
    many_prefixes: [Vec<usize>; 2],
    any_interface: Vec<usize>,
    by_interface: HashMap<&'a str, Vec<usize>>,
    wildcards: Vec<usize>,
}

const NONE: &[usize] = &[];

/// Leaves of the segment tree over ports: node 1 is every port, nodes
/// `n` has children `2n` and `2n + 1`, and port `p` is leaf `LEAVES + p`.
const LEAVES: u32 = 1 << 16;

/// The nodes whose ports together are exactly `first..=last`, at most two
/// per level (the canonical cover of a segment tree).
fn segments(first: u16, last: u16) -> Vec<u32> {
    let (mut lo, mut hi) = (LEAVES + u32::from(first), LEAVES + u32::from(last) + 1);
    let mut nodes = Vec::new();
    while lo < hi {
        if lo % 2 == 1 {
            nodes.push(lo);
            lo += 1;
        }
        if hi % 2 == 1 {
            hi -= 1;
            nodes.push(hi);
        }
        lo /= 2;
        hi /= 2;
    }
    nodes
}

fn slice(list: Option<&Vec<usize>>) -> &[usize] {
    list.map_or(NONE, Vec::as_slice)
}

impl<'a> Index<'a> {
    fn insert(&mut self, i: usize, shape: &Shape<'a>) {
        match &shape.rule.ports {
            Ports::All => self.all_ports.push(i),
            Ports::Some(map) => {
                for (proto, ranges) in map {
                    self.by_protocol.entry(*proto).or_default().push(i);
                    // The ranges of one rule are merged, so disjoint: a node
                    // never holds a rule twice.
                    for r in ranges.iter().filter(|r| r.first != r.last) {
                        for node in segments(r.first, r.last) {
                            self.ranges.entry((*proto, node)).or_default().push(i);
                        }
                    }
                    for r in ranges.iter().filter(|r| r.first == r.last) {
                        self.by_port.entry((*proto, r.first)).or_default().push(i);
                    }
                }
            }
        }
        for (f, side) in shape.sides.iter().enumerate() {
            match side {
                Side::None => {}
                Side::Any => self.any_source[f].push(i),
                Side::Prefixes(p) if p.len() > INDEXED_PREFIXES => self.many_prefixes[f].push(i),
                Side::Prefixes(p) => {
                    for net in p.iter() {
                        let list = self.by_prefix.entry(*net).or_default();
                        // Two prefixes of one rule never repeat (aggregated).
                        list.push(i);
                    }
                }
            }
        }
        match shape.rule.interface.as_deref() {
            None => self.any_interface.push(i),
            Some(name) if name.ends_with('*') => self.wildcards.push(i),
            Some(name) => self.by_interface.entry(name).or_default().push(i),
        }
    }

    /// The first earlier rule covering `b`: the candidates of the
    /// narrowest dimension, each list scanned from its first entry.
    fn first_covering(&self, shapes: &[Shape], b: &Shape) -> Option<usize> {
        let lists = self.narrowest(b);
        let mut best: Option<usize> = None;
        for list in lists {
            for &i in list {
                if best.is_some_and(|best| i >= best) {
                    break;
                }
                if covers(&shapes[i], b) {
                    best = Some(i);
                    break;
                }
            }
        }
        best
    }

    /// The candidate lists along each dimension that constrains `b`; the
    /// one with the fewest entries.
    fn narrowest(&self, b: &Shape) -> Vec<&[usize]> {
        let mut options: Vec<Vec<&[usize]>> = Vec::new();
        options.extend(self.by_ports(&b.rule.ports));
        for (f, side) in b.sides.iter().enumerate() {
            options.extend(self.by_source(f, side));
        }
        options.push(self.by_interface_of(b.rule.interface.as_deref()));
        options
            .into_iter()
            .min_by_key(|lists| lists.iter().map(|l| l.len()).sum::<usize>())
            .unwrap_or_default()
    }

    /// For each port range of `ports`, the rules that could cover it.
    fn by_ports(&self, ports: &Ports) -> Vec<Vec<&[usize]>> {
        let Ports::Some(map) = ports else {
            return vec![vec![&self.all_ports]];
        };
        let mut options = Vec::new();
        for (proto, ranges) in map {
            if ranges.is_empty() {
                options.push(vec![
                    &self.all_ports[..],
                    slice(self.by_protocol.get(proto)),
                ]);
            }
            for r in ranges {
                // A range covering `r` holds its first port; a single port
                // covers only itself.
                let mut lists = vec![&self.all_ports[..]];
                if r.first == r.last {
                    lists.push(slice(self.by_port.get(&(*proto, r.first))));
                }
                let mut node = LEAVES + u32::from(r.first);
                while node > 0 {
                    lists.push(slice(self.ranges.get(&(*proto, node))));
                    node /= 2;
                }
                options.push(lists);
            }
        }
        options
    }

    /// The rules that could cover `side` of family `f`: any source, or a
    /// prefix holding its first prefix.
    fn by_source(&self, f: usize, side: &Side) -> Option<Vec<&[usize]>> {
        match side {
            Side::None => None,
            Side::Any => Some(vec![&self.any_source[f]]),
            Side::Prefixes(p) => {
                let first = p.first()?;
                let mut lists = vec![&self.any_source[f][..], &self.many_prefixes[f]];
                for len in 0..=first.prefix_len() {
                    let outer = IpNet::new(first.addr(), len)
                        .expect("a shorter prefix")
                        .trunc();
                    if let Some(list) = self.by_prefix.get(&outer) {
                        lists.push(list);
                    }
                }
                Some(lists)
            }
        }
    }

    fn by_interface_of(&self, name: Option<&str>) -> Vec<&[usize]> {
        match name {
            None => vec![&self.any_interface],
            Some(name) => vec![
                &self.any_interface,
                &self.wildcards,
                self.by_interface.get(name).map_or(NONE, Vec::as_slice),
            ],
        }
    }
}

#[cfg(test)]
mod tests;
