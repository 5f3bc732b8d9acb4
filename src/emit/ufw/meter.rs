//! Per-source limits under ufw. The model guards a limited rule with a
//! meter rule just ahead of it (`... update @m { ip saddr limit rate over
//! R } drop`). ufw rules take no such match, but before.rules is loaded by
//! iptables-restore, so the meter goes there as the iptables format writes
//! it (`hashlimit` in `srcip` mode, see [`crate::emit::fragments::meter_match`]),
//! and the rule it guards stays a ufw rule.
//!
//! before.rules runs ahead of every ufw rule, so the meter moves ahead of
//! the user rules the model has between the leading run and it. That is
//! exact only when none of them can match a packet the meter matches:
//! such a rule decides its packets before the meter would charge them in
//! the model, and after it under ufw. [`disjoint`] proves it from the
//! families, protocols, ports and source prefixes. Where it cannot, the
//! rules up to that meter go into before.rules whole, as iptables lines in
//! model order ([`moved`]): exact again, at the price of those rules not
//! being ufw rules (`ufw status` does not list them).

use ipnet::IpNet;

use crate::ruleset::*;

/// What a rule says about the packets it can match, as far as the
/// disjointness proof needs: `None` is "any".
#[derive(Default)]
struct Reach {
    family: Option<Family>,
    protos: Option<Vec<Protocol>>,
    ports: Option<Vec<PortRange>>,
    sources: Option<Vec<IpNet>>,
}

fn reach(ruleset: &Ruleset, rule: &Rule) -> Reach {
    let mut r = Reach::default();
    for m in &rule.matches {
        match m {
            Match::Family(f) | Match::SourceRateOver { family: f, .. } => r.family = Some(*f),
            Match::Protocol(p) => r.protos = Some(p.clone()),
            Match::DestPort(p) => r.ports = Some(p.clone()),
            Match::SourceInSet { family, set } => {
                r.family = Some(*family);
                if let Some(Set {
                    kind: SetKind::Prefixes(nets),
                    ..
                }) = ruleset.set(set)
                {
                    r.sources = Some(nets.clone());
                }
            }
            // Other matches only narrow a rule; ignoring them keeps the
            // proof on the safe side (a wider rule overlaps more).
            _ => {}
        }
    }
    r
}

/// Whether no packet can match both `a` and `b`.
pub fn disjoint(ruleset: &Ruleset, a: &Rule, b: &Rule) -> bool {
    let (a, b) = (reach(ruleset, a), reach(ruleset, b));
    let families = matches!((a.family, b.family), (Some(x), Some(y)) if x != y);
    let protos = match (&a.protos, &b.protos) {
        (Some(x), Some(y)) => !x.iter().any(|p| y.contains(p)),
        _ => false,
    };
    // A packet has one destination port: in both lists, or in neither.
    let ports = match (&a.ports, &b.ports) {
        (Some(x), Some(y)) => !x
            .iter()
            .any(|p| y.iter().any(|q| p.first <= q.last && q.first <= p.last)),
        _ => false,
    };
    let sources = match (&a.sources, &b.sources) {
        (Some(x), Some(y)) => !x
            .iter()
            .any(|n| y.iter().any(|m| n.contains(m) || m.contains(n))),
        _ => false,
    };
    families || protos || ports || sources
}

pub fn is_meter(rule: &Rule) -> bool {
    rule.matches
        .iter()
        .any(|m| matches!(m, Match::SourceRateOver { .. }))
}

/// How many rules of `rest` (the input chain after its leading run) go
/// into before.rules whole: up to and including the last meter that a
/// user rule ahead of it may race. Later meters are checked only against
/// the user rules after that point, which are the ones that move behind
/// them.
pub fn moved(ruleset: &Ruleset, rest: &[Rule]) -> usize {
    let mut moved = 0;
    for (i, rule) in rest.iter().enumerate() {
        if !is_meter(rule) {
            continue;
        }
        let raced = rest[moved..i]
            .iter()
            .any(|e| !is_meter(e) && !disjoint(ruleset, e, rule));
        if raced {
            moved = i + 1;
        }
    }
    moved
}
