//! The ruleset model as `nft -f` text: what `fwharden show` prints, what the
//! golden tests pin down, and what `nft -c` checks in the test suite.
//!
//! The output is deterministic: it depends on the model alone.

use std::fmt::Write;

use ipnet::IpNet;

use crate::ruleset::*;
use crate::ruleset::{bans, openings};

/// The whole table, ready for `nft -f`. It declares the table, deletes it
/// and declares it again with its contents, so loading it replaces only our
/// table, atomically, whether or not it existed before.
pub fn nft_text(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let t = &ruleset.table;
    let _ = writeln!(out, "# fwharden profile {}", ruleset.profile);
    let _ = writeln!(out, "table inet {t}");
    let _ = writeln!(out, "delete table inet {t}");
    let _ = writeln!(out, "table inet {t} {{");
    let mut first = true;
    for set in &ruleset.sets {
        if !first {
            out.push('\n');
        }
        first = false;
        render_set(&mut out, set);
    }
    // The opening sets and the rules that consult them are part of every
    // table apply writes (see `ruleset::openings`); their elements are
    // runtime state, which apply carries over and this text cannot.
    for family in [Family::Ipv4, Family::Ipv6] {
        if !first {
            out.push('\n');
        }
        first = false;
        render_opening_set(&mut out, family);
    }
    let input = ruleset.chains.iter().position(|c| c.hook == Hook::Input);
    for (i, chain) in ruleset.chains.iter().enumerate() {
        out.push('\n');
        let open_at = (Some(i) == input).then(|| openings::placement(chain));
        render_chain(&mut out, chain, open_at);
    }
    out.push_str("}\n");
    if let Some(bans) = &ruleset.bans {
        ban_table_text(&mut out, &bans::table(bans, &ruleset.profile));
    }
    out
}

/// The ban table is never deleted (that would drop every ban). Its ban
/// sets are declared, which leaves an existing set and its elements as
/// they are; its chains and exempt sets are declared, deleted and written
/// again, as the netlink batch does.
fn ban_table_text(out: &mut String, t: &Ruleset) {
    let name = &t.table;
    let exempt: Vec<&Set> = t
        .sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Prefixes(_)))
        .collect();
    let _ = writeln!(out, "\ntable inet {name} {{");
    for set in t
        .sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Bans { .. }))
    {
        render_set(out, set);
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        let set = bans::exempt_set_name(family);
        let _ = writeln!(
            out,
            "\tset {set} {{ type {}; flags interval; }}",
            addr_type(family)
        );
    }
    for chain in &t.chains {
        let _ = writeln!(
            out,
            "\tchain {} {{ type filter hook {} priority {}; policy accept; }}",
            chain.name,
            chain.hook.as_str(),
            priority(chain.priority)
        );
    }
    out.push_str("}\n");
    for chain in &t.chains {
        let _ = writeln!(out, "delete chain inet {name} {}", chain.name);
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        let _ = writeln!(
            out,
            "delete set inet {name} {}",
            bans::exempt_set_name(family)
        );
    }
    let _ = writeln!(out, "table inet {name} {{");
    for set in exempt {
        render_set(out, set);
        out.push('\n');
    }
    let mut first = true;
    for chain in &t.chains {
        if !first {
            out.push('\n');
        }
        first = false;
        render_chain(out, chain, None);
    }
    out.push_str("}\n");
}

fn render_opening_set(out: &mut String, family: Family) {
    let _ = writeln!(out, "\tset {} {{", openings::set_name(family));
    let _ = writeln!(
        out,
        "\t\ttype {} . inet_proto . inet_service",
        addr_type(family)
    );
    let _ = writeln!(out, "\t\tflags interval,timeout");
    render_comment(out, "temporary openings (fwharden open)");
    let _ = writeln!(out, "\t}}");
}

/// The rules that accept what the opening sets hold.
fn opening_rules(out: &mut String) {
    for (family, addr) in [(Family::Ipv4, "ip"), (Family::Ipv6, "ip6")] {
        let _ = writeln!(
            out,
            "\t\t{addr} saddr . meta l4proto . th dport @{} counter accept comment \"{}\"",
            openings::set_name(family),
            openings::RULE_COMMENT
        );
    }
}

fn addr_type(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4_addr",
        Family::Ipv6 => "ipv6_addr",
    }
}

fn render_set(out: &mut String, set: &Set) {
    let _ = writeln!(out, "\tset {} {{", set.name);
    let _ = writeln!(out, "\t\ttype {}", addr_type(set.family));
    match &set.kind {
        SetKind::Prefixes(elements) => {
            let _ = writeln!(out, "\t\tflags interval");
            render_comment(out, &set.comment);
            render_elements(out, elements);
        }
        SetKind::Meter { timeout_secs, size } => {
            let _ = writeln!(out, "\t\tsize {size}");
            let _ = writeln!(out, "\t\tflags dynamic,timeout");
            let _ = writeln!(out, "\t\ttimeout {timeout_secs}s");
            render_comment(out, &set.comment);
        }
        SetKind::Bans { timeout_secs, size } => {
            let _ = writeln!(out, "\t\tsize {size}");
            let _ = writeln!(out, "\t\tflags timeout");
            let _ = writeln!(out, "\t\ttimeout {timeout_secs}s");
            render_comment(out, &set.comment);
        }
        SetKind::Hatch(element) => {
            let _ = writeln!(out, "\t\tflags timeout");
            render_comment(out, &set.comment);
            // Once expired, the element is gone from the kernel's set.
            if let Some(e) = element {
                let _ = writeln!(
                    out,
                    "\t\telements = {{ {} timeout {}s }}",
                    e.addr, e.timeout_secs
                );
            }
        }
    }
    let _ = writeln!(out, "\t}}");
}

fn render_comment(out: &mut String, comment: &str) {
    if !comment.is_empty() {
        let _ = writeln!(out, "\t\tcomment \"{comment}\"");
    }
}

/// A host prefix is written as the bare address, as `nft list` does.
fn element(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn render_elements(out: &mut String, elements: &[IpNet]) {
    let items: Vec<String> = elements.iter().map(element).collect();
    if items.len() <= 4 {
        let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
        return;
    }
    let _ = writeln!(out, "\t\telements = {{");
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 == items.len() { "" } else { "," };
        let _ = writeln!(out, "\t\t\t{item}{sep}");
    }
    let _ = writeln!(out, "\t\t}}");
}

/// A chain; `open_at`: where the opening rules go, in the input chain.
fn render_chain(out: &mut String, chain: &Chain, open_at: Option<usize>) {
    let policy = match chain.policy {
        Policy::Accept => "accept",
        Policy::Drop => "drop",
    };
    let _ = writeln!(out, "\tchain {} {{", chain.name);
    let _ = writeln!(
        out,
        "\t\ttype filter hook {} priority {}; policy {policy};",
        chain.hook.as_str(),
        priority(chain.priority)
    );
    for (i, rule) in chain.rules.iter().enumerate() {
        if open_at == Some(i) {
            opening_rules(out);
        }
        let _ = writeln!(out, "\t\t{}", rule_text(rule));
    }
    if open_at == Some(chain.rules.len()) {
        opening_rules(out);
    }
    let _ = writeln!(out, "\t}}");
}

/// nft names priority 0 `filter`; others are written as offsets from it.
fn priority(p: i32) -> String {
    match p {
        0 => "filter".to_string(),
        p if p > 0 => format!("filter + {p}"),
        p => format!("filter - {}", -p),
    }
}

/// One rule as nft text: matches, then limit, counter, log, verdict, comment.
pub fn rule_text(rule: &Rule) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < rule.matches.len() {
        // A protocol followed by its ports reads as `tcp dport 22`.
        if let (Match::Protocol(protos), Some(Match::DestPort(ports))) =
            (&rule.matches[i], rule.matches.get(i + 1))
        {
            parts.push(ports_text(protos, ports));
            i += 2;
            continue;
        }
        parts.push(match_text(&rule.matches[i]));
        i += 1;
    }
    if let Some(rate) = &rule.limit {
        parts.push(format!("limit rate {}", rate_text(rate)));
    }
    if rule.counter {
        parts.push("counter".into());
    }
    if let Some(log) = &rule.log {
        match log.group {
            None => parts.push(format!("log prefix \"{}\" level info", log.prefix)),
            Some(g) => parts.push(format!("log prefix \"{}\" group {g}", log.prefix)),
        }
    }
    if let Some(v) = &rule.verdict {
        parts.push(verdict_text(v).into());
    }
    if !rule.comment.is_empty() {
        parts.push(format!("comment \"{}\"", rule.comment));
    }
    parts.join(" ")
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    if items.len() == 1 {
        f(&items[0])
    } else {
        let inner: Vec<String> = items.iter().map(f).collect();
        format!("{{ {} }}", inner.join(", "))
    }
}

fn ports_text(protos: &[Protocol], ports: &[PortRange]) -> String {
    let ports = list(ports, |p| p.to_string());
    match protos {
        [one] => format!("{} dport {ports}", one.as_str()),
        _ => format!(
            "meta l4proto {} th dport {ports}",
            list(protos, |p| p.as_str().to_string())
        ),
    }
}

fn family_word(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

fn match_text(m: &Match) -> String {
    match m {
        Match::Family(f) => format!("meta nfproto {f}"),
        Match::InInterface(name) => format!("iifname \"{name}\""),
        Match::OutInterface(name) => format!("oifname \"{name}\""),
        Match::CtState(states) => {
            let s: Vec<&str> = states
                .iter()
                .map(|s| match s {
                    CtState::Invalid => "invalid",
                    CtState::Established => "established",
                    CtState::Related => "related",
                    CtState::New => "new",
                })
                .collect();
            format!("ct state {}", s.join(","))
        }
        Match::Protocol(protos) => {
            format!("meta l4proto {}", list(protos, |p| p.as_str().to_string()))
        }
        Match::DestPort(ports) => format!("th dport {}", list(ports, |p| p.to_string())),
        Match::CtStatus(CtStatus::Dnat) => "ct status dnat".into(),
        Match::OrigDestPort(ports) => {
            format!("ct original proto-dst {}", list(ports, |p| p.to_string()))
        }
        Match::SourceInSet { family, set } => format!("{} saddr @{set}", family_word(*family)),
        Match::SourceNotInSet { family, set } => {
            format!("{} saddr != @{set}", family_word(*family))
        }
        Match::Source(addr) => {
            let word = family_word(match addr {
                std::net::IpAddr::V4(_) => Family::Ipv4,
                std::net::IpAddr::V6(_) => Family::Ipv6,
            });
            format!("{word} saddr {addr}")
        }
        Match::IcmpType(types) => format!("icmp type {}", list(types, |t| t.nft_name().into())),
        Match::Icmpv6Type(types) => {
            format!("icmpv6 type {}", list(types, |t| t.nft_name().into()))
        }
        Match::SourceRateOver { family, set, rate } => format!(
            "update @{set} {{ {} saddr limit rate over {} }}",
            family_word(*family),
            rate_text(rate)
        ),
    }
}

fn rate_text(rate: &Rate) -> String {
    format!(
        "{}/{} burst {} packets",
        rate.count,
        rate.unit.as_str(),
        rate.burst
    )
}

fn verdict_text(v: &Verdict) -> &'static str {
    match v {
        Verdict::Accept => "accept",
        Verdict::Drop => "drop",
        Verdict::Reject(RejectWith::TcpReset) => "reject with tcp reset",
        Verdict::Reject(RejectWith::PortUnreachable) => "reject",
    }
}
