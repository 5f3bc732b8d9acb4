//! Warnings about a valid profile: rules that can never match, rules an
//! earlier rule already covers, and a profile with no way in over SSH.
//! Warnings never stop a profile from loading (`check --deny-warnings`
//! makes them fatal).

use ipnet::IpNet;

use super::addr;
use super::diag::{Diagnostic, Severity};
use super::{Action, ChainPolicy, Ports, Profile, Rule, SourceSide};
use crate::ruleset::{Family, PortRange, Protocol};

pub fn lint(profile: &Profile, diags: &mut Vec<Diagnostic>) {
    shadowed(profile, diags);
    never_match(profile, diags);
    no_ssh(profile, diags);
}

fn warning(rule: &Rule, message: String, hint: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        file: rule.origin.file.clone(),
        line: rule.origin.line,
        column: rule.origin.column,
        message,
        hint: Some(hint.to_string()),
    }
}

/// Rules in the order the kernel sees them: deny and reject first.
fn effective_order(profile: &Profile) -> Vec<&Rule> {
    let (mut blocking, allowing): (Vec<&Rule>, Vec<&Rule>) = profile
        .rules
        .iter()
        .partition(|r| r.action != Action::Allow);
    blocking.extend(allowing);
    blocking
}

fn shadowed(profile: &Profile, diags: &mut Vec<Diagnostic>) {
    let order = effective_order(profile);
    for (i, later) in order.iter().enumerate() {
        let Some(earlier) = order[..i].iter().find(|e| covers(profile, e, later)) else {
            continue;
        };
        let at = format!("{}:{}", earlier.origin.file.display(), earlier.origin.line);
        let d = if earlier.action == later.action {
            warning(
                later,
                format!("this rule is redundant: the rule at {at} ({}) already matches every packet it would", earlier.label),
                "remove this rule, or narrow the earlier one",
            )
        } else {
            warning(
                later,
                format!(
                    "this rule can never match: the {} rule at {at} ({}) matches every packet it would, and deny and reject rules are checked before allow rules",
                    earlier.action.as_str(),
                    earlier.label
                ),
                "narrow the earlier rule's `from` or ports, or remove this rule",
            )
        };
        diags.push(d);
    }
}

/// Whether every packet `b` matches is matched by `a` first.
fn covers(profile: &Profile, a: &Rule, b: &Rule) -> bool {
    ports_cover(&a.ports, &b.ports)
        && interface_covers(a.interface.as_deref(), b.interface.as_deref())
        && [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .all(|f| side_covers(profile, a.sources.side(f), b.sources.side(f), f))
}

fn ports_cover(a: &Ports, b: &Ports) -> bool {
    match (a, b) {
        (Ports::All, _) => true,
        (Ports::Some(_), Ports::All) => false,
        (Ports::Some(a), Ports::Some(b)) => b.iter().all(|(proto, ranges)| {
            a.get(proto)
                .is_some_and(|outer| ranges.iter().all(|r| outer.iter().any(|o| o.covers(r))))
        }),
    }
}

fn interface_covers(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => match a.strip_suffix('*') {
            Some(prefix) => b.strip_suffix('*').unwrap_or(b).starts_with(prefix),
            None => a == b,
        },
    }
}

fn side_prefixes(profile: &Profile, groups: &[String], f: Family) -> Vec<IpNet> {
    let all: Vec<IpNet> = groups
        .iter()
        .filter_map(|g| profile.groups.get(g))
        .flat_map(|g| g.family(f).copied())
        .collect();
    addr::aggregate(&all)
}

fn side_covers(profile: &Profile, a: &SourceSide, b: &SourceSide, f: Family) -> bool {
    match (a, b) {
        (_, SourceSide::None) | (SourceSide::Any, _) => true,
        (SourceSide::None, _) | (SourceSide::Groups(_), SourceSide::Any) => false,
        (SourceSide::Groups(a), SourceSide::Groups(b)) => {
            let outer = side_prefixes(profile, a, f);
            side_prefixes(profile, b, f)
                .iter()
                .all(|p| addr::covered(p, &outer))
        }
    }
}

fn never_match(profile: &Profile, diags: &mut Vec<Diagnostic>) {
    let d = &profile.defaults;
    for rule in &profile.rules {
        if d.loopback && rule.interface.as_deref() == Some("lo") {
            diags.push(warning(
                rule,
                "this rule can never match: everything arriving on lo is accepted earlier ([defaults] loopback = true)".into(),
                "remove this rule, or set loopback = false under [defaults]",
            ));
        }
    }
    if d.input == ChainPolicy::Accept {
        if let Some(rule) = profile.rules.iter().find(|r| r.action == Action::Allow) {
            diags.push(warning(
                rule,
                "allow rules change nothing while [defaults] input = \"accept\": every packet is accepted anyway".into(),
                "set input = \"drop\" under [defaults], or remove the allow rules",
            ));
        }
    }
}

fn no_ssh(profile: &Profile, diags: &mut Vec<Diagnostic>) {
    let ssh = PortRange::single(22);
    let allowed = profile.defaults.input == ChainPolicy::Accept
        || profile.rules.iter().any(|r| {
            r.action == Action::Allow
                && match &r.ports {
                    Ports::All => true,
                    Ports::Some(map) => map
                        .get(&Protocol::Tcp)
                        .is_some_and(|ranges| ranges.iter().any(|p| p.covers(&ssh))),
                }
        });
    if allowed {
        return;
    }
    diags.push(Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::file(
            profile.location.path(),
            format!("profile `{}` allows no SSH (tcp port 22): applied over SSH, it would refuse every new connection, yours included", profile.name),
        )
        .with_hint("add a rule such as [[rule]] allow = \"ssh\", from = [\"your-admin-group\"]; if sshd listens on another port, allow that port and ignore this warning")
    });
}
