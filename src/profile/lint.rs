//! Warnings about a valid profile: rules that can never match, rules an
//! earlier rule already covers, a profile with no way in over SSH, and a
//! database or admin service open to any source.
//! Warnings never stop a profile from loading (`check --deny-warnings`
//! makes them fatal).

use super::builtin;
use super::diag::{Diagnostic, Severity};
use super::shadow;
use super::{Action, ChainPolicy, Ports, Profile, Rule, SourceSide};
use crate::ruleset::{PortRange, Protocol};

pub fn lint(profile: &Profile, diags: &mut Vec<Diagnostic>) {
    shadowed(profile, diags);
    never_match(profile, diags);
    no_ssh(profile, diags);
    admin_open_to_any(profile, diags);
}

/// Services an attacker scans the whole address space for, and that are
/// meant for a few known clients: remote logins, databases, the
/// Prometheus endpoints (which leak the host's inventory).
const ADMIN_SERVICES: &[&str] = &[
    "ssh",
    "postgres",
    "mysql",
    "redis",
    "redis-sentinel",
    "mongodb",
    "node-exporter",
    "redis-exporter",
    "prometheus",
];

/// The database or admin service (by name) that listens on `port` by
/// default, if any: the audit's advice names it.
pub fn admin_service(protocol: Protocol, port: u16) -> Option<&'static str> {
    if protocol != Protocol::Tcp {
        return None;
    }
    ADMIN_SERVICES
        .iter()
        .filter_map(|name| builtin::service(name))
        .find(|svc| {
            svc.ranges()
                .iter()
                .any(|r| r.first <= port && port <= r.last)
        })
        .map(|svc| svc.name)
}

/// An allow rule that opens a database or admin service's TCP port to
/// every address of a family. `allow = "all"` is left out: it says
/// "everything" on purpose, and the input policy warning covers it.
fn admin_open_to_any(profile: &Profile, diags: &mut Vec<Diagnostic>) {
    for rule in profile.rules.iter().filter(|r| r.action == Action::Allow) {
        if rule.sources.v4 != SourceSide::Any && rule.sources.v6 != SourceSide::Any {
            continue;
        }
        let Ports::Some(map) = &rule.ports else {
            continue;
        };
        let Some(tcp) = map.get(&Protocol::Tcp) else {
            continue;
        };
        let open: Vec<String> = ADMIN_SERVICES
            .iter()
            .filter_map(|name| builtin::service(name))
            .filter(|svc| {
                svc.ranges()
                    .iter()
                    .any(|port| tcp.iter().any(|r| r.covers(port)))
            })
            .map(|svc| format!("{} ({}/tcp)", svc.name, svc.ports[0].0))
            .collect();
        if open.is_empty() {
            continue;
        }
        diags.push(warning(
            rule,
            format!(
                "{} allowed from any address: anyone who scans the Internet can reach it",
                open.join(", ")
            ),
            "allow it only from a group of the addresses that need it (from = [\"admin\"]), or bind the service to 127.0.0.1 or a private interface",
        ));
    }
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
    let covering = shadow::first_covering(profile, &order);
    for (later, earlier) in order.iter().zip(covering) {
        let Some(earlier) = earlier.map(|i| order[i]) else {
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
