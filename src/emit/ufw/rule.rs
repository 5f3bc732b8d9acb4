//! One model rule as ufw user rules: one per protocol, per group of at
//! most 15 ports and per source prefix, or a refusal saying why ufw cannot
//! say it.

use super::{quote, refuse, Action, From, Logged, Plan, UserRule, SET_MAX};
use crate::emit::fragments::port_groups;
use crate::emit::{Approximation, EmitError};
use crate::ruleset::*;

impl Plan {
    pub(super) fn warn(&mut self, what: String) {
        if !self.warnings.contains(&what) {
            self.warnings.push(what);
        }
    }

    pub(super) fn user_rule(
        &mut self,
        ruleset: &Ruleset,
        rule: &Rule,
        approx: Approximation,
    ) -> Result<(), EmitError> {
        let here = |why: String| refuse(&rule.comment, why);
        if rule.limit.is_some() {
            return Err(here(
                "a global rate limit after the first user rule: ufw rules take no rate; use nftables or the iptables format".into(),
            ));
        }
        let Some(verdict) = rule.verdict else {
            return Err(here(
                "a rule that only logs, in the middle of the chain: ufw logs only with a rule's own action".into(),
            ));
        };
        let action = match verdict {
            Verdict::Accept => Action::Allow,
            Verdict::Drop => Action::Deny,
            Verdict::Reject(_) => Action::Reject,
        };
        let log = if rule.log.is_some() {
            // Logging decides nothing: ufw's own `log`, the nearest it has,
            // with a warning, never a refusal.
            self.warn(format!(
                "{}: logged by ufw's `log`, prefix [UFW ALLOW] or [UFW BLOCK] at 3/minute burst 10, new connections only",
                rule.comment
            ));
            Logged::New
        } else {
            Logged::No
        };

        let mut family: Option<Family> = None;
        let mut interface = None;
        let mut protos: Option<&[Protocol]> = None;
        let mut ports: &[PortRange] = &[];
        let mut froms = vec![From::Any];
        let narrow = |f: Family, family: &mut Option<Family>| -> bool {
            match family {
                Some(g) if *g != f => false,
                _ => {
                    *family = Some(f);
                    true
                }
            }
        };
        for m in &rule.matches {
            match m {
                Match::Family(f) => {
                    if !narrow(*f, &mut family) {
                        return Ok(()); // no packet has two families
                    }
                }
                Match::InInterface(name) => interface = Some(ufw_interface(name).map_err(here)?),
                Match::Protocol(p) => protos = Some(p),
                Match::DestPort(p) => ports = p,
                Match::SourceInSet { family: f, set } => {
                    if !narrow(*f, &mut family) {
                        return Ok(());
                    }
                    froms = set_sources(ruleset, set, *f).map_err(here)?;
                }
                Match::CtState(_) | Match::IcmpType(_) | Match::Icmpv6Type(_) => {
                    return Err(here(
                        "a conntrack state or ICMP type after the first user rule: ufw rules cannot match them, and before.rules holds only the leading run of such rules".into(),
                    ))
                }
                Match::OutInterface(_) => {
                    return Err(here("an output interface in the input chain".into()))
                }
                Match::CtStatus(_) | Match::OrigDestPort(_) => {
                    return Err(here(
                        "a match on DNAT'd connections (published container ports)".into(),
                    ))
                }
                Match::SourceNotInSet { .. } | Match::Source(_) => {
                    return Err(here(
                        "the escape hatch exists only in a pending apply's ruleset; emit a profile instead".into(),
                    ))
                }
                Match::SourceRateOver { .. } => {
                    return Err(here(
                        "a per-source rate limit in a ufw rule: ufw's `limit` is a fixed 6 new connections in 30 seconds; the limit belongs in before.rules".into(),
                    ))
                }
            }
        }
        if !ports.is_empty() && protos.is_none() {
            return Err(here(
                "a destination port without its protocol just before it".into(),
            ));
        }
        let proto_list: Vec<Option<Protocol>> = match protos {
            Some(p) => p.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        if action == Action::Reject
            && verdict == Verdict::Reject(RejectWith::PortUnreachable)
            && proto_list.contains(&Some(Protocol::Tcp))
        {
            // ufw rejects `proto tcp` with a TCP reset, always; the model
            // answers this rule's TCP packets with ICMP port-unreachable.
            if approx == Approximation::Refuse {
                return Err(here(
                    "a reject of TCP and UDP together: ufw answers TCP with a reset, where the model answers ICMP port-unreachable; --approximate writes the reset (the same packets are refused)".into(),
                ));
            }
            self.warn(format!(
                "{}: TCP rejected with a TCP reset instead of ICMP port-unreachable",
                rule.comment
            ));
        }
        let froms: Vec<From> = froms
            .into_iter()
            .map(|f| match (f, family) {
                (From::Any, Some(fam)) => From::AnyOf(fam),
                (f, _) => f,
            })
            .collect();
        let comment = comment_text(&rule.comment);
        for proto in &proto_list {
            for group in port_groups(ports) {
                for from in &froms {
                    self.user.push(UserRule {
                        action,
                        interface: interface.clone(),
                        proto: *proto,
                        ports: group.clone(),
                        from: *from,
                        log,
                        comment: comment.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The sources of a set: one per prefix, or every address of the family
/// when it holds a zero-length prefix.
pub(super) fn set_sources(
    ruleset: &Ruleset,
    set: &str,
    family: Family,
) -> Result<Vec<From>, String> {
    let Some(Set {
        kind: SetKind::Prefixes(nets),
        ..
    }) = ruleset.set(set)
    else {
        return Err(format!("the set {set} is not a prefix set"));
    };
    if nets.iter().any(|n| n.prefix_len() == 0) {
        return Ok(vec![From::AnyOf(family)]);
    }
    if nets.len() > SET_MAX {
        return Err(format!(
            "the group behind {set} has {} prefixes: ufw has no sets, and more than {SET_MAX} linear rules slow every packet; use the iptables format (ipset) or nftables",
            nets.len()
        ));
    }
    Ok(nets.iter().map(|n| From::Net(*n)).collect())
}

/// An interface name as ufw takes it: the model's `wg*` is ufw's `wg+`
/// (iptables' wildcard). ufw refuses `!`, `:`, `/`, whitespace and names
/// over 15 bytes; `$`, quotes and other shell bytes are refused here too,
/// since ufw.sh quotes words in single quotes. A name ending in `+` is a
/// wildcard to ufw but not to nftables (it would match more), and a
/// leading `-` would read as an option to iptables: refused.
pub(super) fn ufw_interface(name: &str) -> Result<String, String> {
    let (base, wildcard) = match name.strip_suffix('*') {
        Some(base) => (base, "+"),
        None => (name, ""),
    };
    let ok = !base.is_empty()
        && !base.starts_with('-')
        && !base.ends_with('+')
        && base.len() + wildcard.len() <= 15
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(format!("{base}{wildcard}"))
    } else {
        Err(format!(
            "the interface name {:?} is one ufw cannot take exactly (letters, digits, `.`, `_`, `-`, `@`, at most 15 bytes, not starting with `-` or ending in `+`)",
            quote::free_text(name)
        ))
    }
}

/// A comment as ufw.sh passes it and the tuple records it: plain bytes,
/// and never a leading `-` (ufw's own options).
pub(super) fn comment_text(comment: &str) -> String {
    let text = quote::free_text(comment);
    match text.strip_prefix('-') {
        Some(rest) => format!("_{rest}"),
        None => text,
    }
}
