//! `before.rules` and `before6.rules`: the model's leading rules in the
//! chains ufw evaluates before any user rule (`ufw-before-input`,
//! `ufw6-before-input`), in `iptables-restore` syntax, as ufw-init loads
//! them (`ip[6]tables-restore -n`). Output and forward keep the accepts of
//! Debian's stock files: the profiles ufw is emitted for have no output or
//! forward chain (see [`super::whole_ruleset`]), and those accepts only let
//! replies and ICMP through chains whose policy ufw keeps as it was.

use std::fmt::Write;

use super::rule::{set_sources, ufw_interface};
use super::{quote, From, Plan};
use crate::emit::fragments::{
    ctstate, hashlimit_holds, hashlimit_refusal, log_target, meter_match,
    original_port_alternatives, port_alternatives, product, rate_text,
};
use crate::ruleset::*;

/// Debian's ufw 0.36 `before.rules`, output and forward part, unchanged.
const STOCK_V4: &str = "\
-A ufw-before-output -o lo -j ACCEPT
-A ufw-before-output -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-forward -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-forward -p icmp --icmp-type destination-unreachable -j ACCEPT
-A ufw-before-forward -p icmp --icmp-type time-exceeded -j ACCEPT
-A ufw-before-forward -p icmp --icmp-type parameter-problem -j ACCEPT
-A ufw-before-forward -p icmp --icmp-type echo-request -j ACCEPT
";

/// The same for `before6.rules`: replies, loopback and the ICMPv6 a host
/// sends (neighbour and router discovery, multicast listeners).
const STOCK_V6: &str = "\
-A ufw6-before-output -o lo -j ACCEPT
-A ufw6-before-output -m rt --rt-type 0 -j DROP
-A ufw6-before-forward -m rt --rt-type 0 -j DROP
-A ufw6-before-output -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw6-before-forward -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type destination-unreachable -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type packet-too-big -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type time-exceeded -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type parameter-problem -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type echo-request -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type echo-reply -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type router-solicitation -m hl --hl-eq 255 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type neighbor-advertisement -m hl --hl-eq 255 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type neighbor-solicitation -m hl --hl-eq 255 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type router-advertisement -m hl --hl-eq 255 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 141 -m hl --hl-eq 255 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 142 -m hl --hl-eq 255 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 130 -s fe80::/10 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 131 -s fe80::/10 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 132 -s fe80::/10 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 143 -s fe80::/10 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 148 -m hl --hl-eq 255 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 149 -m hl --hl-eq 255 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 151 -s fe80::/10 -m hl --hl-eq 1 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 152 -s fe80::/10 -m hl --hl-eq 1 -j ACCEPT
-A ufw6-before-output -p icmpv6 --icmpv6-type 153 -s fe80::/10 -m hl --hl-eq 1 -j ACCEPT
-A ufw6-before-forward -p icmpv6 --icmpv6-type destination-unreachable -j ACCEPT
-A ufw6-before-forward -p icmpv6 --icmpv6-type packet-too-big -j ACCEPT
-A ufw6-before-forward -p icmpv6 --icmpv6-type time-exceeded -j ACCEPT
-A ufw6-before-forward -p icmpv6 --icmpv6-type parameter-problem -j ACCEPT
-A ufw6-before-forward -p icmpv6 --icmpv6-type echo-request -j ACCEPT
-A ufw6-before-forward -p icmpv6 --icmpv6-type echo-reply -j ACCEPT
";

/// ufw's chain prefix for a family.
pub fn prefix(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ufw",
        Family::Ipv6 => "ufw6",
    }
}

/// fwharden's chain for published container ports under ufw, declared in
/// both before files (so each ufw start empties and refills it) and
/// jumped to from Docker's `DOCKER-USER`.
pub const CONTAINERS: &str = "FWHARDEN-CONTAINERS";

/// Which chain a rule's lines go to, and what its accept is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Into {
    /// `ufw-before-input`: an accept is final.
    Input,
    /// [`CONTAINERS`]: an accept is `RETURN`, so Docker's own chains,
    /// which accept published ports, still run (as after the nftables
    /// chain, which only passes the packet on).
    Containers,
}

/// The lines of one rule in `family`'s file: a rule of the leading run,
/// a per-source meter placed ahead of the user rules (see
/// [`super::plan`]), or a rule of the containers chain; none when the
/// rule matches only the other family. `index` names its rate bucket.
/// A rule's `log` becomes a LOG line ahead of its verdict's line, with the
/// same matches; a shortened log prefix is pushed to `warnings`.
pub fn lines(
    ruleset: &Ruleset,
    rule: &Rule,
    (into, index): (Into, usize),
    family: Family,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, String> {
    let chain = match into {
        Into::Input => format!("{}-before-input", prefix(family)),
        Into::Containers => CONTAINERS.to_string(),
    };
    let mut alternatives: Vec<Vec<String>> = Vec::new();
    let mut i = 0;
    while i < rule.matches.len() {
        let m = &rule.matches[i];
        i += 1;
        let alts = match (m, rule.matches.get(i)) {
            (Match::Protocol(protos), Some(Match::DestPort(ports))) => {
                i += 1;
                port_alternatives(protos, ports)
            }
            (Match::Protocol(protos), Some(Match::OrigDestPort(ports))) => {
                i += 1;
                original_port_alternatives(protos, ports)
            }
            (Match::CtStatus(CtStatus::Dnat), _) => vec![" -m conntrack --ctstate DNAT".into()],
            (Match::Family(f), _)
            | (Match::SourceInSet { family: f, .. }, _)
            | (Match::SourceRateOver { family: f, .. }, _)
                if *f != family =>
            {
                return Ok(Vec::new())
            }
            (Match::Family(_), _) => continue,
            (Match::IcmpType(_), _) if family == Family::Ipv6 => return Ok(Vec::new()),
            (Match::Icmpv6Type(_), _) if family == Family::Ipv4 => return Ok(Vec::new()),
            (Match::IcmpType(types), _) => types
                .iter()
                .map(|t| format!(" -p icmp -m icmp --icmp-type {}", t.number()))
                .collect(),
            (Match::Icmpv6Type(types), _) => types
                .iter()
                .map(|t| format!(" -p ipv6-icmp -m icmp6 --icmpv6-type {}", t.number()))
                .collect(),
            (Match::CtState(states), _) => vec![ctstate(states)],
            (Match::InInterface(name), _) => vec![format!(" -i {}", ufw_interface(name)?)],
            (Match::Protocol(protos), _) => protos
                .iter()
                .map(|p| format!(" -p {}", p.as_str()))
                .collect(),
            // ufw has no ipsets: one line per prefix (the set's prefixes
            // never overlap, so a packet matches at most one line).
            (Match::SourceInSet { set, .. }, _) => set_sources(ruleset, set, family)?
                .into_iter()
                .map(|from| match from {
                    From::Net(n) => format!(" -s {n}"),
                    From::Any | From::AnyOf(_) => String::new(),
                })
                .collect(),
            // Last in the model's rule, last here: only a packet every
            // other match took charges the source's bucket.
            (Match::SourceRateOver { set, rate, .. }, _) => {
                vec![meter_match(ruleset, set, rate)?]
            }
            (other, _) => return Err(format!("{other:?} in before.rules")),
        };
        alternatives.push(alts);
    }
    // A packet matches at most one alternative (they differ in ICMP type),
    // so the lines of one rule share its one rate bucket by name.
    if let Some(r) = rule.limit.filter(|r| !hashlimit_holds(r)) {
        return Err(hashlimit_refusal(&r));
    }
    let limit = rule
        .limit
        .map(|r| {
            format!(
                " -m hashlimit --hashlimit-upto {} --hashlimit-burst {} --hashlimit-name fwu-{}{index}",
                rate_text(&r),
                r.burst,
                match into {
                    Into::Input => "",
                    Into::Containers => "c",
                },
            )
        })
        .unwrap_or_default();
    let target = match (rule.verdict, family) {
        (Some(Verdict::Accept), _) if into == Into::Containers => Some("RETURN"),
        (Some(Verdict::Accept), _) => Some("ACCEPT"),
        (Some(Verdict::Drop), _) => Some("DROP"),
        (Some(Verdict::Reject(RejectWith::PortUnreachable)), Family::Ipv4) => {
            Some("REJECT --reject-with icmp-port-unreachable")
        }
        (Some(Verdict::Reject(RejectWith::PortUnreachable)), Family::Ipv6) => {
            Some("REJECT --reject-with icmp6-port-unreachable")
        }
        // The model resets only in rules matching TCP alone, so every line
        // has the `-p tcp` the kernel wants (xt_REJECT's check).
        (Some(Verdict::Reject(RejectWith::TcpReset)), _) => Some("REJECT --reject-with tcp-reset"),
        (None, _) => None,
    };
    let log = match &rule.log {
        Some(_) if rule.limit.is_some() && target.is_some() => {
            return Err(
                "a rule with a rate limit, a log and a verdict in before.rules: its two lines would charge the limit twice; use nftables or the iptables format".into(),
            )
        }
        Some(log) => {
            let (text, warning) = log_target(log, &rule.comment);
            warnings.extend(warning);
            Some(text)
        }
        None => None,
    };
    if log.is_none() && target.is_none() {
        return Err("a rule with neither a log nor a verdict".into());
    }
    let comment = quote::free_text(&rule.comment);
    let mut out = Vec::new();
    for l in product(&alternatives) {
        for t in log.iter().map(String::as_str).chain(target) {
            out.push(format!(
                "-A {chain}{l}{limit} -m comment --comment \"{comment}\" -j {t}"
            ));
        }
    }
    Ok(out)
}

/// The whole file for `family`.
pub fn text(plan: &Plan, family: Family, header: &str) -> String {
    let p = prefix(family);
    let mut out = String::from(header);
    out.push_str(
        "# Replaces ufw's own before rules: what the profile accepts before any ufw\n\
         # rule. Debian's stock file also accepted every echo request, DHCP, mDNS and\n\
         # UPnP; the profile does not.\n",
    );
    let _ = writeln!(out, "*filter");
    for chain in [
        "before-input",
        "before-output",
        "before-forward",
        "not-local",
    ] {
        let _ = writeln!(out, ":{p}-{chain} - [0:0]");
    }
    // Declared whatever the profile, so a profile without container rules
    // loaded after one with them leaves the chain empty (it returns at
    // once), not holding the old rules.
    let _ = writeln!(out, ":{CONTAINERS} - [0:0]");
    let (lines, containers) = match family {
        Family::Ipv4 => (&plan.before_v4, &plan.containers_v4),
        Family::Ipv6 => (&plan.before_v6, &plan.containers_v6),
    };
    if plan.containers {
        // Declared, DOCKER-USER is emptied at every ufw start, as the
        // ufw-docker project does: the chain must exist before dockerd
        // makes it (ufw starts first at boot), and an undeclared chain
        // would keep a second jump on every reload. dockerd keeps what it
        // holds and adds its RETURN after it.
        let _ = writeln!(out, ":DOCKER-USER - [0:0]");
        let _ = writeln!(out, "-A DOCKER-USER -j {CONTAINERS}");
    }
    for l in lines.iter().chain(containers) {
        let _ = writeln!(out, "{l}");
    }
    out.push_str(match family {
        Family::Ipv4 => STOCK_V4,
        Family::Ipv6 => STOCK_V6,
    });
    out.push_str("COMMIT\n");
    out
}
