//! Who can reach a port: asked of [`crate::ruleset::eval`], never worked out
//! a second way. A source outside every set of the ruleset stands for
//! "anyone"; each set of prefixes is stood for by the representative
//! addresses the probe plan uses ([`crate::ruleset::representative`]) (the ends of its first and last prefix).
//! The question is asked per interface where the ruleset names
//! interfaces, since a rule such as `iifname "wg0"` lets a group in on one
//! link only.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::ruleset::eval::{self, Decision, Meters, Packet};
use crate::ruleset::representative::{concrete, outside, representatives};
use crate::ruleset::{CtState, Family, Hook, Match, Protocol, Ruleset, SetKind};

/// Who gets through on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "reach", content = "sources")]
pub enum Reach {
    /// A source in no group at all.
    Anyone,
    /// Only sources in these groups (by name) or prefixes (a rule's own
    /// `from` list), sorted.
    Sources(Vec<String>),
    /// No source outside loopback.
    Nobody,
}

/// The reach on one interface: `any` (the same on every interface), a
/// name the ruleset matches, or `other` (every interface it does not name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Who {
    pub interface: String,
    #[serde(flatten)]
    pub reach: Reach,
}

/// Which way a connection reaches the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Addressed to the host: the input hook.
    Input,
    /// A published container port: DNAT'd, then the forward hook.
    Published,
}

/// The answer for one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reckoning {
    pub who: Vec<Who>,
    /// When anyone gets through: the comment of the rule that lets them,
    /// if that rule names the port; `None` when it is let through by a
    /// policy or by a rule that names no port.
    pub named_by: Option<String>,
}

impl Reckoning {
    pub fn anyone(&self) -> bool {
        self.who.iter().any(|w| w.reach == Reach::Anyone)
    }

    pub fn someone(&self) -> bool {
        self.who.iter().any(|w| w.reach != Reach::Nobody)
    }
}

/// Who reaches `protocol`/`port` over `path`, from sources of `families`,
/// on interface `bound` only when the socket is bound to one.
pub fn reckon(
    ruleset: &Ruleset,
    path: Path,
    protocol: Protocol,
    port: u16,
    families: &[Family],
    bound: Option<&str>,
) -> Reckoning {
    let hook = match path {
        Path::Input => Hook::Input,
        Path::Published => Hook::Forward,
    };
    let interfaces: Vec<(String, Option<String>)> = match bound {
        Some(name) => vec![(name.to_string(), Some(name.to_string()))],
        None => named_interfaces(ruleset, hook)
            .into_iter()
            .map(|p| (p.clone(), Some(concrete(&p))))
            .chain([("other".to_string(), None)])
            .collect(),
    };
    // Scans every prefix of the family: once per port, not per interface.
    let outsiders: Vec<(Family, Option<std::net::IpAddr>)> = families
        .iter()
        .map(|f| (*f, outside(ruleset, *f)))
        .collect();
    let mut who = Vec::new();
    let mut named_by: Option<Option<String>> = None;
    for (label, interface) in interfaces {
        let mut anyone = false;
        let mut sources = BTreeSet::new();
        for &(family, outsider) in &outsiders {
            let ask = |source| {
                let packet = Packet {
                    source,
                    protocol,
                    dport: port,
                    interface: interface.clone(),
                    state: CtState::New,
                };
                match path {
                    Path::Input => eval::evaluate(ruleset, Hook::Input, &packet),
                    Path::Published => eval::evaluate_published(ruleset, &packet, Meters::Fresh),
                }
            };
            if let Some(a) = outsider {
                let d = ask(a);
                if d.accepted() {
                    anyone = true;
                    let naming = naming_rule(ruleset, hook, &d);
                    // One unnamed way in is enough to call it unnamed.
                    named_by = Some(match named_by {
                        Some(None) => None,
                        _ => naming,
                    });
                    continue;
                }
            }
            for set in ruleset.sets.iter().filter(|s| s.family == family) {
                let SetKind::Prefixes(prefixes) = &set.kind else {
                    continue;
                };
                if representatives(prefixes)
                    .into_iter()
                    .any(|a| ask(a).accepted())
                {
                    if prefixes.iter().any(|p| p.prefix_len() == 0) {
                        anyone = true;
                        named_by.get_or_insert(None);
                    }
                    sources.extend(label_of(&set.name, prefixes));
                }
            }
        }
        let reach = if anyone {
            Reach::Anyone
        } else if sources.is_empty() {
            Reach::Nobody
        } else {
            Reach::Sources(sources.into_iter().collect())
        };
        who.push(Who {
            interface: label,
            reach,
        });
    }
    // The same on every interface: say it once.
    if bound.is_none() && who.windows(2).all(|w| w[0].reach == w[1].reach) {
        let reach = who.pop().map_or(Reach::Nobody, |w| w.reach);
        who = vec![Who {
            interface: "any".into(),
            reach,
        }];
    }
    Reckoning {
        who,
        named_by: named_by.flatten(),
    }
}

/// The interface patterns the hook's chains match, loopback left out (the
/// audit is about who reaches a port from outside).
fn named_interfaces(ruleset: &Ruleset, hook: Hook) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for chain in ruleset.chains.iter().filter(|c| c.hook == hook) {
        for rule in &chain.rules {
            for m in &rule.matches {
                if let Match::InInterface(name) = m {
                    if name != "lo" {
                        names.insert(name.clone());
                    }
                }
            }
        }
    }
    names.into_iter().collect()
}

/// A group's name (`admin` for set `admin_v4`); a rule's own prefixes
/// (sets named `_rule3_v4`) by the prefixes themselves.
fn label_of(set: &str, prefixes: &[ipnet::IpNet]) -> Vec<String> {
    if set.starts_with('_') {
        return prefixes.iter().map(|p| p.to_string()).collect();
    }
    let group = set
        .strip_suffix("_v4")
        .or_else(|| set.strip_suffix("_v6"))
        .unwrap_or(set);
    vec![group.to_string()]
}

/// The comment of the rule behind `decision` when it matches on the
/// destination port (the profile names the port), else `None`.
fn naming_rule(ruleset: &Ruleset, hook: Hook, decision: &Decision) -> Option<String> {
    let index = decision.rule?;
    let rule = ruleset
        .chains
        .iter()
        .filter(|c| c.hook == hook)
        .filter_map(|c| c.rules.get(index))
        .find(|r| r.comment == decision.comment)?;
    rule.matches
        .iter()
        .any(|m| matches!(m, Match::DestPort(_) | Match::OrigDestPort(_)))
        .then(|| rule.comment.clone())
}
