//! The ruleset as `iptables-restore --noflush` input, one file per family.
//!
//! fwharden's rules live in chains of their own (`FWHARDEN-INPUT`, and a
//! `FWHARDEN-INPUT-N` for a rule that needs one), which `load.sh` hooks
//! in with one jump each (see [`super::placement`] for where, and what an
//! accept is in each). The restore files never touch the built-in chains
//! or `DOCKER-USER`, so the operator's other rules stay, and a reload
//! replaces fwharden's chains in one commit per family (declaring an
//! existing chain in a `--noflush` restore empties it in the same commit).
//! `FWHARDEN-INPUT` ends in the model's policy, so a packet that enters it
//! is decided there, as by the nftables base chain.
//!
//! The translation, match by match:
//! - `iifname "wg*"` is `-i wg+` (iptables' wildcard);
//! - `ct state` is `-m conntrack --ctstate`;
//! - `meta l4proto { tcp, udp } th dport {...}` is one rule per protocol,
//!   with `-m multiport` (at most 15 ports a rule, a range counting two);
//! - `icmp type {a, b}` is one rule per type (the icmp match takes one);
//! - `ip saddr @set` is `-m set --match-set fwh-set src` (see [`super::ipset`]);
//! - a per-source meter is `hashlimit` in `srcip` mode under one name per
//!   meter set, so the rules sharing a meter share its buckets, as they
//!   share the nftables set;
//! - a global `limit` is `hashlimit` without a mode (one bucket), so that
//!   one rule split into several lines still has one bucket: split rules
//!   jump to a chain of their own that checks the limit once;
//! - `log prefix` is `-j LOG --log-prefix` at level 6 (info), and
//!   `log prefix .. group G` is `-j NFLOG --nflog-group G --nflog-prefix`;
//! - `ct status dnat` is `-m conntrack --ctstate DNAT` (xt_conntrack sets
//!   its DNAT state bit from IPS_DST_NAT, the bit nft tests);
//! - `ct original proto-dst { a, b-c }` after its protocol is one rule per
//!   protocol and range, `-p tcp -m conntrack --ctorigdstport b:c`
//!   (xt_conntrack revision 3 compares a range; there is no list).

use std::fmt::Write;

use super::fragments::{
    ctstate, hashlimit_holds, hashlimit_refusal, log_target, meter_match,
    original_port_alternatives, port_alternatives, product, rate_text,
};
use super::placement::{Accept, Placed, HOOKED};
use super::{ipset, quote, EmitError};
use crate::ruleset::*;

/// Which family's file a rule belongs in, from its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleFamily {
    Both,
    Only(Family),
    /// Matches of two families: no packet matches it.
    Never,
}

fn rule_family(rule: &Rule) -> RuleFamily {
    let mut found = RuleFamily::Both;
    for m in &rule.matches {
        let f = match m {
            Match::Family(f)
            | Match::SourceInSet { family: f, .. }
            | Match::SourceNotInSet { family: f, .. }
            | Match::SourceRateOver { family: f, .. } => *f,
            Match::IcmpType(_) => Family::Ipv4,
            Match::Icmpv6Type(_) => Family::Ipv6,
            Match::Source(a) => Family::of(&ipnet::IpNet::from(*a)),
            _ => continue,
        };
        found = match found {
            RuleFamily::Both => RuleFamily::Only(f),
            RuleFamily::Only(g) if g == f => found,
            _ => RuleFamily::Never,
        };
    }
    found
}

struct Emitter<'a> {
    /// The chain being written.
    placed: &'a Placed<'a>,
    family: Family,
    warnings: &'a mut Vec<String>,
    chains: Vec<String>,
    lines: Vec<String>,
}

/// The restore file of `family`: `*filter`, the chain declarations, the
/// rules, `COMMIT`.
pub fn restore_text(
    placed: &[Placed],
    family: Family,
    warnings: &mut Vec<String>,
) -> Result<String, EmitError> {
    let (mut chains, mut lines) = (Vec::new(), Vec::new());
    let mut refusals = Vec::new();
    for p in placed {
        let mut e = Emitter {
            placed: p,
            family,
            warnings: &mut *warnings,
            chains: vec![p.name.clone()],
            lines: Vec::new(),
        };
        for (i, rule) in p.chain.rules.iter().enumerate() {
            // On to the next rule: one run names every refusal.
            if let Err(refused) = e.rule(i, rule) {
                refusals.push(refused);
            }
        }
        // A passing chain's accept policy is its end: the packet returns.
        let (target, word) = match (p.chain.policy, p.accept) {
            (Policy::Accept, Accept::Final) => (Some("ACCEPT"), "accept"),
            (Policy::Accept, Accept::Pass) => (None, "accept"),
            (Policy::Drop, _) => (Some("DROP"), "drop"),
        };
        if let Some(target) = target {
            e.lines.push(format!(
                "-A {} -m comment --comment \"policy {word}\" -j {target}",
                p.name
            ));
        }
        chains.append(&mut e.chains);
        lines.append(&mut e.lines);
    }
    for unused in HOOKED {
        if !placed.iter().any(|p| p.name == unused) {
            chains.push(unused.to_string());
        }
    }
    if let Some(refused) = EmitError::gather(refusals) {
        return Err(refused);
    }
    let mut out = String::from("*filter\n");
    for c in &chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    out.push_str("COMMIT\n");
    Ok(out)
}

impl Emitter<'_> {
    fn refuse(&self, rule: &Rule, why: impl Into<String>) -> EmitError {
        EmitError::refused("iptables", quote::free_text(&rule.comment), why.into())
    }

    fn warn(&mut self, what: String) {
        if !self.warnings.contains(&what) {
            self.warnings.push(what);
        }
    }

    fn rule(&mut self, index: usize, rule: &Rule) -> Result<(), EmitError> {
        let chain = self.placed.name.clone();
        match rule_family(rule) {
            RuleFamily::Only(f) if f != self.family => return Ok(()),
            RuleFamily::Never => return Ok(()),
            _ => {}
        }
        // Every match is a list of alternatives; the rule is one line per
        // combination (a packet matches at most one of them: they differ
        // in protocol, ICMP type or disjoint ports).
        let mut alternatives: Vec<Vec<String>> = Vec::new();
        let mut i = 0;
        while i < rule.matches.len() {
            let m = &rule.matches[i];
            match (m, rule.matches.get(i + 1)) {
                (Match::Protocol(protos), Some(Match::DestPort(ports))) => {
                    alternatives.push(port_alternatives(protos, ports));
                    i += 2;
                    continue;
                }
                (Match::Protocol(protos), Some(Match::OrigDestPort(ports))) => {
                    alternatives.push(original_port_alternatives(protos, ports));
                    i += 2;
                    continue;
                }
                _ => {}
            }
            alternatives.push(self.alternatives(rule, m)?);
            i += 1;
        }
        let lines = product(&alternatives);
        let comment = if rule.comment.is_empty() {
            String::new()
        } else {
            format!(
                " -m comment --comment \"{}\"",
                quote::free_text(&rule.comment)
            )
        };
        let log = rule.log.as_ref().map(|log| self.log_target(rule, log));
        let verdict = rule.verdict.map(|v| self.verdict_target(v));
        if let Some(r) = rule.limit.filter(|r| !hashlimit_holds(r)) {
            return Err(self.refuse(rule, hashlimit_refusal(&r)));
        }
        let limit_name = format!("fwh-{}{index}", self.placed.tag);
        let limit = |above: bool| {
            rule.limit.map(|r| {
                format!(
                    " -m hashlimit --hashlimit-{} {} --hashlimit-burst {} --hashlimit-name {limit_name}",
                    if above { "above" } else { "upto" },
                    rate_text(&r),
                    r.burst
                )
            })
        };
        let needs_chain =
            (lines.len() > 1 && rule.limit.is_some()) || (log.is_some() && verdict.is_some());
        let passes = self.placed.accept == Accept::Pass && rule.verdict == Some(Verdict::Accept);
        if needs_chain && passes {
            // A RETURN in a chain of the rule's own would only return to
            // this chain, which would go on. Without a limit or a meter
            // the matches change nothing when tested twice: log, then
            // return, on two lines with the same matches.
            let meter = rule
                .matches
                .iter()
                .any(|m| matches!(m, Match::SourceRateOver { .. }));
            if rule.limit.is_some() || meter {
                return Err(self.refuse(
                    rule,
                    format!(
                        "a rate limit on an accept in {chain}, whose accept is a RETURN (Docker's chains still decide): iptables has no rule that limits, logs and returns from its caller at once"
                    ),
                ));
            }
            for l in &lines {
                if let Some(log) = &log {
                    self.lines.push(format!("-A {chain}{l}{comment} -j {log}"));
                }
                self.lines.push(format!("-A {chain}{l}{comment} -j RETURN"));
            }
            return Ok(());
        }
        if needs_chain {
            let sub = format!("{chain}-{index}");
            self.chains.push(sub.clone());
            for l in &lines {
                self.lines.push(format!("-A {chain}{l}{comment} -j {sub}"));
            }
            if let Some(over) = limit(true) {
                // Over the limit the rule stops and the packet goes on.
                self.lines
                    .push(format!("-A {sub}{over}{comment} -j RETURN"));
            }
            if let Some(log) = &log {
                self.lines.push(format!("-A {sub}{comment} -j {log}"));
            }
            if let Some(verdict) = &verdict {
                // The kernel takes a TCP reset only in a rule matching TCP
                // (xt_REJECT's check); the model uses it only in rules
                // that match TCP alone, so this matches every packet here.
                let tcp = match rule.verdict {
                    Some(Verdict::Reject(RejectWith::TcpReset)) => " -p tcp",
                    _ => "",
                };
                self.lines
                    .push(format!("-A {sub}{tcp}{comment} -j {verdict}"));
            }
            return Ok(());
        }
        let target = match log.or(verdict) {
            Some(t) => format!(" -j {t}"),
            None => String::new(),
        };
        let limit = limit(false).unwrap_or_default();
        for l in &lines {
            self.lines
                .push(format!("-A {chain}{l}{limit}{comment}{target}"));
        }
        Ok(())
    }

    fn alternatives(&mut self, rule: &Rule, m: &Match) -> Result<Vec<String>, EmitError> {
        let one = |s: String| Ok(vec![s]);
        match m {
            // The file is of one family already.
            Match::Family(_) => one(String::new()),
            Match::InInterface(name) => one(format!(" -i {}", self.interface(rule, name)?)),
            Match::OutInterface(name) => one(format!(" -o {}", self.interface(rule, name)?)),
            Match::CtState(states) => one(ctstate(states)),
            Match::Protocol(protos) => Ok(protos
                .iter()
                .map(|p| format!(" -p {}", p.as_str()))
                .collect()),
            Match::DestPort(_) => Err(self.refuse(
                rule,
                "a destination port without its protocol just before it",
            )),
            Match::SourceInSet { set, .. } => match self.placed.ruleset.set(set) {
                Some(s) if ipset::is_everything(s) => one(String::new()),
                Some(Set {
                    kind: SetKind::Prefixes(_) | SetKind::Bans { .. },
                    ..
                }) => one(format!(
                    " -m set --match-set {} src",
                    self.placed.space.name(set)
                )),
                _ => Err(self.refuse(rule, format!("the set {set} is not a prefix set"))),
            },
            Match::CtStatus(CtStatus::Dnat) => one(" -m conntrack --ctstate DNAT".into()),
            Match::OrigDestPort(_) => Err(self.refuse(
                rule,
                "an original destination port without its protocol just before it",
            )),
            Match::SourceNotInSet { .. } | Match::Source(_) => Err(self.refuse(
                rule,
                "the escape hatch exists only in a pending apply's ruleset; emit a profile instead",
            )),
            Match::IcmpType(types) => Ok(types
                .iter()
                .map(|t| format!(" -p icmp -m icmp --icmp-type {}", t.number()))
                .collect()),
            Match::Icmpv6Type(types) => Ok(types
                .iter()
                .map(|t| format!(" -p ipv6-icmp -m icmp6 --icmpv6-type {}", t.number()))
                .collect()),
            Match::SourceRateOver { set, rate, .. } => {
                one(meter_match(self.placed.ruleset, set, rate)
                    .map_err(|why| self.refuse(rule, why))?)
            }
        }
    }

    /// An interface name as iptables writes it; `wg*` is `wg+`. The
    /// profile takes any printable ASCII but space, `/`, `"`, `*`, `:` and
    /// `\`; a name with other bytes than plain ones (`$`, `;`, `#`, a
    /// leading `-`...) is written between double quotes, which
    /// iptables-restore strips without expanding anything, and is still
    /// the argument of `-i` (getopt takes the next word whatever it is).
    /// A single quote would start a quoted string of its own, and a name
    /// ending in `+` is a wildcard to iptables but not to nftables: refused.
    fn interface(&self, rule: &Rule, name: &str) -> Result<String, EmitError> {
        let (base, wildcard) = match name.strip_suffix('*') {
            Some(base) => (base, "+"),
            None => (name, ""),
        };
        let printable = |c: char| c.is_ascii_graphic() && !"\"'\\".contains(c);
        let literal_plus = wildcard.is_empty() && base.ends_with('+');
        if base.is_empty() || !base.chars().all(printable) || literal_plus {
            return Err(self.refuse(
                rule,
                format!(
                    "the interface name {:?} has bytes iptables-restore cannot take, or ends in `+` (a wildcard to iptables)",
                    quote::free_text(name)
                ),
            ));
        }
        if quote::is_safe_name(base) {
            Ok(format!("{base}{wildcard}"))
        } else {
            Ok(format!("\"{base}{wildcard}\""))
        }
    }

    /// Logging decides nothing: a prefix too long for the target is
    /// shortened with a warning, never a refusal, `--approximate` or not.
    fn log_target(&mut self, rule: &Rule, log: &Log) -> String {
        let (target, warning) = log_target(log, &rule.comment);
        if let Some(w) = warning {
            self.warn(w);
        }
        target
    }

    fn verdict_target(&self, v: Verdict) -> String {
        match (v, self.family) {
            (Verdict::Accept, _) => match self.placed.accept {
                Accept::Final => "ACCEPT".into(),
                Accept::Pass => "RETURN".into(),
            },
            (Verdict::Drop, _) => "DROP".into(),
            (Verdict::Reject(RejectWith::TcpReset), _) => "REJECT --reject-with tcp-reset".into(),
            (Verdict::Reject(RejectWith::PortUnreachable), Family::Ipv4) => {
                "REJECT --reject-with icmp-port-unreachable".into()
            }
            (Verdict::Reject(RejectWith::PortUnreachable), Family::Ipv6) => {
                "REJECT --reject-with icmp6-port-unreachable".into()
            }
        }
    }
}
