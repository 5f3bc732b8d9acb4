//! `user.rules` and `user6.rules` as ufw itself writes them
//! (`UFWBackendIptables._write_rules` in ufw 0.36): each rule is a
//! `### tuple ###` line, which `ufw status` and every later `ufw` command
//! read back, followed by the iptables lines ufw derives from it
//! (`UFWRule.format_rule`, then `_get_rules_from_formatted` for logging).
//! tests/emit_ufw.rs checks the RULES section against the file the real
//! ufw writes for the same rules through `ufw.sh`.

use std::fmt::Write;

use super::before::prefix;
use super::{Action, Logged, Plan, UserRule};
use crate::ruleset::{Family, Protocol};

/// The chains ufw declares at the top of a user rules file.
const CHAINS: [&str; 16] = [
    "user-input",
    "user-output",
    "user-forward",
    "before-logging-input",
    "before-logging-output",
    "before-logging-forward",
    "user-logging-input",
    "user-logging-output",
    "user-logging-forward",
    "after-logging-input",
    "after-logging-output",
    "after-logging-forward",
    "logging-deny",
    "logging-allow",
    "user-limit",
    "user-limit-accept",
];

/// ufw's tuple line: `allow tcp 22 0.0.0.0/0 any 192.0.2.10 in_wg0
/// comment=HEX`.
pub fn tuple(rule: &UserRule, family: Family) -> String {
    let action = match rule.log {
        Logged::No => rule.action.word().to_string(),
        Logged::New => format!("{}_log", rule.action.word()),
    };
    let proto = rule.proto.map_or("any", Protocol::as_str);
    let dport = rule.port_text().unwrap_or_else(|| "any".into());
    let dst = match family {
        Family::Ipv4 => "0.0.0.0/0",
        Family::Ipv6 => "::/0",
    };
    let iface = match &rule.interface {
        Some(i) => format!("in_{i}"),
        None => "in".into(),
    };
    let mut line = format!(
        "### tuple ### {action} {proto} {dport} {dst} any {} {iface}",
        rule.from.text(family)
    );
    if !rule.comment.is_empty() {
        let hex: String = rule.comment.bytes().map(|b| format!("{b:02x}")).collect();
        let _ = write!(line, " comment={hex}");
    }
    line
}

/// The iptables lines of one rule, in ufw's words.
pub fn lines(rule: &UserRule, family: Family) -> Vec<String> {
    let p = prefix(family);
    let mut m = String::new();
    if let Some(i) = &rule.interface {
        let _ = write!(m, " -i {i}");
    }
    let ports = rule.port_text();
    let multi = rule.ports.len() > 1 || rule.ports.iter().any(|r| r.first != r.last);
    match rule.proto {
        // ufw writes `-p all`, then drops it from a rule without ports.
        None => {}
        Some(proto) => {
            let _ = write!(m, " -p {}", proto.as_str());
            if multi {
                let _ = write!(
                    m,
                    " -m multiport --dports {}",
                    ports.clone().unwrap_or_default()
                );
            }
        }
    }
    if let (Some(ports), false) = (&ports, multi) {
        let _ = write!(m, " --dport {ports}");
    }
    if let super::From::Net(_) = rule.from {
        let _ = write!(m, " -s {}", rule.from.text(family));
    }
    let target = match rule.action {
        Action::Allow => "ACCEPT",
        Action::Deny => "DROP",
        Action::Reject => "REJECT",
    };
    let reset = if rule.action == Action::Reject && rule.proto == Some(Protocol::Tcp) {
        " --reject-with tcp-reset"
    } else {
        ""
    };
    match rule.log {
        Logged::No => vec![format!("-A {p}-user-input{m} -j {target}{reset}")],
        Logged::New => {
            let word = match rule.action {
                Action::Allow => "ALLOW",
                _ => "BLOCK",
            };
            let logging = format!("{p}-user-logging-input");
            vec![
                format!("-A {logging}{m} -m conntrack --ctstate NEW -m limit --limit 3/min --limit-burst 10 -j LOG --log-prefix \"[UFW {word}] \""),
                format!("-A {logging}{m} -j RETURN"),
                format!("-A {p}-user-input{m} -j {logging}"),
                format!("-A {p}-user-input{m} -j {target}{reset}"),
            ]
        }
    }
}

/// The RULES section: what `ufw.sh` makes ufw write, in the same words.
pub fn rules_section(plan: &Plan, family: Family) -> String {
    let mut out = String::from("### RULES ###\n");
    for rule in plan.user.iter().filter(|r| r.families().contains(&family)) {
        let _ = writeln!(out, "\n{}", tuple(rule, family));
        for l in lines(rule, family) {
            let _ = writeln!(out, "{l}");
        }
    }
    out.push_str("\n### END RULES ###\n");
    out
}

/// The whole file. Its LOGGING section is ufw's for `logging low` (or
/// empty for `off`); `reload.sh` runs `ufw logging` after installing it,
/// which rewrites the file from the tuples in ufw's own words.
pub fn text(plan: &Plan, family: Family, header: &str) -> String {
    let p = prefix(family);
    let mut out = String::from(header);
    out.push_str("*filter\n");
    for c in CHAINS {
        let _ = writeln!(out, ":{p}-{c} - [0:0]");
    }
    out.push_str(&rules_section(plan, family));
    out.push_str("\n### LOGGING ###\n");
    if plan.logging == super::Logging::Low {
        let limit = "-m limit --limit 3/min --limit-burst 10";
        let _ = writeln!(
            out,
            "-A {p}-after-logging-input -j LOG --log-prefix \"[UFW BLOCK] \" {limit}"
        );
        let _ = writeln!(
            out,
            "-A {p}-after-logging-forward -j LOG --log-prefix \"[UFW BLOCK] \" {limit}"
        );
        let _ = writeln!(
            out,
            "-I {p}-logging-deny -m conntrack --ctstate INVALID -j RETURN {limit}"
        );
        let _ = writeln!(
            out,
            "-A {p}-logging-deny -j LOG --log-prefix \"[UFW BLOCK] \" {limit}"
        );
        let _ = writeln!(
            out,
            "-A {p}-logging-allow -j LOG --log-prefix \"[UFW ALLOW] \" {limit}"
        );
    }
    out.push_str("### END LOGGING ###\n");
    out.push_str("\n### RATE LIMITING ###\n");
    if plan.logging == super::Logging::Low {
        let _ = writeln!(
            out,
            "-A {p}-user-limit -m limit --limit 3/minute -j LOG --log-prefix \"[UFW LIMIT BLOCK] \""
        );
    }
    let _ = writeln!(out, "-A {p}-user-limit -j REJECT");
    let _ = writeln!(out, "-A {p}-user-limit-accept -j ACCEPT");
    out.push_str("### END RATE LIMITING ###\n");
    out.push_str("COMMIT\n");
    out
}
