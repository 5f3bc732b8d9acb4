//! A ruleset's rules in words, one line per profile rule: what it does,
//! to which ports, from whom, on which interfaces, under which limit; and
//! which kernel rules it became, so `status` can add up their counters.
//!
//! One profile rule becomes several kernel rules (one per family and
//! source group, per protocol list, a per-source meter before each), all
//! with the same `file:line` at the head of their comment: that is what
//! groups them back. Rules of the defaults have no profile line: each
//! comment (`defaults: loopback`) is a line of its own.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::model::*;

/// One profile rule (or one rule of the defaults) of one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Described {
    pub chain: String,
    /// `vps-profile.toml:23`, or the defaults' comment (`defaults: loopback`).
    pub origin: String,
    /// The rule's own words (its comment without the `file:line` head).
    pub comment: String,
    /// `allow`, `deny`, `reject`, or `log` for a rule that only logs.
    pub action: String,
    /// `22/tcp`, `80,443/tcp`, `51820/udp`, `ping`, or `all traffic`.
    pub what: String,
    /// `anywhere`, `admin (2 prefixes)`, `203.0.113.7`, ...
    pub from: String,
    /// Interface names or patterns; empty: any.
    pub interfaces: Vec<String>,
    /// `10/minute burst 5 per source`, or a global limit; empty: none.
    pub limit: String,
    /// Where its kernel rules are: indices into the chain's rules. Those
    /// that drop a source over its per-source limit are apart.
    #[serde(skip)]
    pub rules: Vec<usize>,
    #[serde(skip)]
    pub over_limit: Vec<usize>,
}

impl Described {
    /// `allow 22/tcp from admin (2 prefixes) on wg0, at most 10/minute
    /// burst 5 per source`.
    pub fn words(&self) -> String {
        let mut s = format!("{} {} from {}", self.action, self.what, self.from);
        if !self.interfaces.is_empty() {
            s.push_str(&format!(" on {}", self.interfaces.join(", ")));
        }
        if !self.limit.is_empty() {
            s.push_str(&format!(", at most {}", self.limit));
        }
        s
    }
}

/// The rules of every chain, grouped by profile line, in the order the
/// kernel meets them.
pub fn describe(ruleset: &Ruleset) -> Vec<Described> {
    let mut out: Vec<Described> = Vec::new();
    for chain in &ruleset.chains {
        // Profile line -> its entry in `out`, for this chain.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, rule) in chain.rules.iter().enumerate() {
            let (origin, comment, over) = origin_of(&rule.comment);
            let at = *seen.entry(origin.clone()).or_insert_with(|| {
                out.push(Described {
                    chain: chain.name.clone(),
                    origin: origin.clone(),
                    comment: comment.clone(),
                    action: String::new(),
                    what: String::new(),
                    from: String::new(),
                    interfaces: Vec::new(),
                    limit: String::new(),
                    rules: Vec::new(),
                    over_limit: Vec::new(),
                });
                out.len() - 1
            });
            if over {
                out[at].over_limit.push(i);
            } else {
                out[at].rules.push(i);
            }
        }
    }
    for d in &mut out {
        let chain = ruleset.chain(&d.chain).expect("described from it");
        let rules: Vec<&Rule> = d.rules.iter().map(|&i| &chain.rules[i]).collect();
        let meters: Vec<&Rule> = d.over_limit.iter().map(|&i| &chain.rules[i]).collect();
        d.action = action(&rules);
        d.what = services(&rules);
        d.from = sources(ruleset, &rules);
        d.interfaces = interfaces(&rules);
        d.limit = limit(&rules, &meters);
    }
    out
}

/// A comment's profile line (`file:line`), the rest of its words, and
/// whether it is a per-source limit's drop (`...: over limit`).
fn origin_of(comment: &str) -> (String, String, bool) {
    let (base, over) = match comment.strip_suffix(": over limit") {
        Some(b) => (b, true),
        None => (comment, false),
    };
    if let Some((head, rest)) = base.split_once(' ') {
        if let Some((file, line)) = head.rsplit_once(':') {
            if !file.is_empty() && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) {
                return (head.to_string(), rest.to_string(), over);
            }
        }
    }
    (base.to_string(), String::new(), over)
}

fn action(rules: &[&Rule]) -> String {
    let verdict = rules.iter().find_map(|r| r.verdict);
    match verdict {
        Some(Verdict::Accept) => "allow",
        Some(Verdict::Drop) => "deny",
        Some(Verdict::Reject(_)) => "reject",
        None if rules.iter().any(|r| r.log.is_some()) => "log",
        None => "count",
    }
    .to_string()
}

/// Ports by protocol (`80,443/tcp`), ICMP by name, or `all traffic`.
fn services(rules: &[&Rule]) -> String {
    let mut ports: BTreeMap<Protocol, Vec<PortRange>> = BTreeMap::new();
    let mut other: Vec<String> = Vec::new();
    let mut any = false;
    for r in rules {
        let protocols = r.matches.iter().find_map(|m| match m {
            Match::Protocol(p) => Some(p.clone()),
            _ => None,
        });
        let ranges = r.matches.iter().find_map(|m| match m {
            Match::DestPort(p) | Match::OrigDestPort(p) => Some(p.clone()),
            _ => None,
        });
        let icmp = r.matches.iter().find_map(|m| match m {
            Match::IcmpType(t) if t == &[IcmpType::EchoRequest] => Some("ping".to_string()),
            Match::Icmpv6Type(t) if t == &[Icmpv6Type::EchoRequest] => Some("ping".to_string()),
            Match::IcmpType(_) => Some("icmp".to_string()),
            Match::Icmpv6Type(_) => Some("icmpv6".to_string()),
            _ => None,
        });
        match (protocols, ranges, icmp) {
            (_, _, Some(name)) => other.push(name),
            (Some(protocols), Some(ranges), None) => {
                for p in protocols {
                    ports.entry(p).or_default().extend(ranges.iter().copied());
                }
            }
            (Some(protocols), None, None) => {
                for p in protocols {
                    other.push(format!("all {}", p.as_str()));
                }
            }
            (None, _, None) => any = true,
        }
    }
    if any {
        // The defaults' conntrack rules: say which traffic.
        let states = rules.iter().flat_map(|r| &r.matches).find_map(|m| match m {
            Match::CtState(s) if !s.contains(&CtState::New) => Some(s.clone()),
            _ => None,
        });
        return match states {
            Some(states) => {
                let names: Vec<&str> = states
                    .iter()
                    .map(|s| match s {
                        CtState::Invalid => "invalid",
                        CtState::Established => "established",
                        CtState::Related => "related",
                        CtState::New => "new",
                    })
                    .collect();
                format!("{} traffic", names.join(", "))
            }
            None => "all traffic".into(),
        };
    }
    let mut parts: Vec<String> = ports
        .into_iter()
        .map(|(proto, mut ranges)| {
            ranges.sort();
            ranges.dedup();
            let list: Vec<String> = ranges
                .iter()
                .map(|r| match r.first == r.last {
                    true => r.first.to_string(),
                    false => format!("{}-{}", r.first, r.last),
                })
                .collect();
            format!("{}/{}", list.join(","), proto.as_str())
        })
        .collect();
    other.sort();
    other.dedup();
    parts.extend(other);
    parts.join(", ")
}

/// Group names with their sizes, addresses, or `anywhere`.
fn sources(ruleset: &Ruleset, rules: &[&Rule]) -> String {
    // Group -> its sets (one per family), each counted once however many
    // kernel rules look it up.
    let mut groups: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut families: Vec<Family> = Vec::new();
    let mut anywhere = false;
    for r in rules {
        let mut named = false;
        for m in &r.matches {
            match m {
                Match::SourceInSet { set, .. } => {
                    named = true;
                    let (name, size) = group_of(ruleset, set);
                    groups.entry(name).or_default().insert(set.clone(), size);
                }
                Match::Source(a) => {
                    named = true;
                    addresses.push(*a);
                }
                Match::Family(f) => families.push(*f),
                _ => {}
            }
        }
        if !named && !r.matches.iter().any(|m| matches!(m, Match::Family(_))) {
            anywhere = true;
        }
    }
    if anywhere || (groups.is_empty() && addresses.is_empty() && families.is_empty()) {
        return "anywhere".into();
    }
    let mut parts: Vec<String> = groups
        .into_iter()
        .map(|(name, sets)| match sets.values().sum::<usize>() {
            0 => name,
            1 => format!("{name} (1 prefix)"),
            n => format!("{name} ({n} prefixes)"),
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    parts.extend(addresses.iter().map(IpAddr::to_string));
    if parts.is_empty() {
        families.sort();
        families.dedup();
        return match families[..] {
            [Family::Ipv4] => "any IPv4 address".into(),
            [Family::Ipv6] => "any IPv6 address".into(),
            _ => "anywhere".into(),
        };
    }
    parts.join(", ")
}

/// A set's group name (`group admin` in its comment) and size; a rule's
/// own addresses (`addresses of one rule`) are named by its prefixes.
fn group_of(ruleset: &Ruleset, set: &str) -> (String, usize) {
    let Some(s) = ruleset.set(set) else {
        return (set.to_string(), 0);
    };
    let size = match &s.kind {
        SetKind::Prefixes(nets) => nets.len(),
        SetKind::Hatch(Some(_)) => 1,
        _ => 0,
    };
    let name = match s.comment.split_once(" group ") {
        Some((_, name)) => name.to_string(),
        None => match &s.kind {
            SetKind::Prefixes(nets) if nets.len() <= 3 => {
                let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
                return (list.join(", "), 0);
            }
            _ => "the rule's own addresses".to_string(),
        },
    };
    (name, size)
}

fn interfaces(rules: &[&Rule]) -> Vec<String> {
    let mut out: Vec<String> = rules
        .iter()
        .flat_map(|r| &r.matches)
        .filter_map(|m| match m {
            Match::InInterface(i) => Some(i.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn limit(rules: &[&Rule], meters: &[&Rule]) -> String {
    let per_source = meters
        .iter()
        .flat_map(|r| &r.matches)
        .find_map(|m| match m {
            Match::SourceRateOver { rate, .. } => Some(*rate),
            _ => None,
        });
    if let Some(rate) = per_source {
        return format!("{} per source", rate_words(&rate));
    }
    rules
        .iter()
        .find_map(|r| r.limit)
        .map(|rate| rate_words(&rate))
        .unwrap_or_default()
}

fn rate_words(rate: &Rate) -> String {
    format!("{}/{} burst {}", rate.count, rate.unit.as_str(), rate.burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load, SearchPath};

    fn builtin(name: &str) -> Ruleset {
        let search = SearchPath {
            dirs: vec![],
            builtin: true,
        };
        crate::compile::compile(&load(name, &search).profile.unwrap())
    }

    #[test]
    fn vps_profile_reads_one_line_per_profile_rule() {
        let lines: Vec<(String, String)> = describe(&builtin("vps-profile"))
            .into_iter()
            .filter(|d| d.chain == "input")
            .map(|d| (d.origin.clone(), d.words()))
            .collect();
        let want = [
            ("vps-profile.toml:15", "allow 80,443/tcp from anywhere"),
            ("vps-profile.toml:19", "allow 51820/udp from anywhere"),
            (
                "vps-profile.toml:23",
                "allow 22/tcp from admin (2 prefixes), wg-net (1 prefix), at most 10/minute burst 5 per source",
            ),
            (
                "vps-profile.toml:30",
                "allow 5432,6379/tcp from wg-net (1 prefix) on wg0",
            ),
        ];
        for (origin, words) in want {
            assert!(
                lines.iter().any(|(o, w)| o == origin && w == words),
                "{origin} {words} not in {lines:#?}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|(o, w)| o == "defaults: loopback"
                    && w == "allow all traffic from anywhere on lo"),
            "{lines:#?}"
        );
    }

    #[test]
    fn every_kernel_rule_belongs_to_exactly_one_line() {
        for name in [
            "vps-profile",
            "web-server",
            "db-private",
            "wireguard-gateway",
        ] {
            let r = builtin(name);
            let described = describe(&r);
            for chain in &r.chains {
                let mut all: Vec<usize> = described
                    .iter()
                    .filter(|d| d.chain == chain.name)
                    .flat_map(|d| d.rules.iter().chain(&d.over_limit).copied())
                    .collect();
                all.sort();
                assert_eq!(
                    all,
                    (0..chain.rules.len()).collect::<Vec<_>>(),
                    "{name} {}",
                    chain.name
                );
            }
        }
    }
}
