//! Pieces of iptables rule lines for matches that become several lines or
//! a text of their own: ports (`multiport` groups, conntrack's original
//! port ranges), the combinations of alternatives, rates.

use crate::ruleset::{PortRange, Protocol, Rate, RateUnit};

/// `-m multiport` takes at most 15 ports, a range counting two (XT_MULTI_PORTS).
const MULTIPORT_MAX: usize = 15;

/// One alternative per protocol and per group of at most 15 ports.
pub fn port_alternatives(protos: &[Protocol], ports: &[PortRange]) -> Vec<String> {
    let mut groups: Vec<Vec<String>> = vec![Vec::new()];
    let mut used = 0;
    for p in ports {
        let cost = if p.first == p.last { 1 } else { 2 };
        if used + cost > MULTIPORT_MAX {
            groups.push(Vec::new());
            used = 0;
        }
        used += cost;
        let text = if p.first == p.last {
            p.first.to_string()
        } else {
            format!("{}:{}", p.first, p.last)
        };
        groups.last_mut().expect("one group").push(text);
    }
    let mut out = Vec::new();
    for proto in protos {
        for g in &groups {
            let p = proto.as_str();
            out.push(match g.as_slice() {
                [one] => format!(" -p {p} -m {p} --dport {one}"),
                _ => format!(" -p {p} -m multiport --dports {}", g.join(",")),
            });
        }
    }
    out
}

/// One alternative per protocol and range of original destination ports:
/// the conntrack match takes one port or one range.
pub fn original_port_alternatives(protos: &[Protocol], ports: &[PortRange]) -> Vec<String> {
    let mut out = Vec::new();
    for proto in protos {
        for p in ports {
            let range = if p.first == p.last {
                p.first.to_string()
            } else {
                format!("{}:{}", p.first, p.last)
            };
            out.push(format!(
                " -p {} -m conntrack --ctorigdstport {range}",
                proto.as_str()
            ));
        }
    }
    out
}

/// Every combination of one alternative per match, in match order.
pub fn product(alternatives: &[Vec<String>]) -> Vec<String> {
    let mut lines = vec![String::new()];
    for alts in alternatives {
        lines = lines
            .iter()
            .flat_map(|l| alts.iter().map(move |a| format!("{l}{a}")))
            .collect();
    }
    lines
}

pub fn rate_text(rate: &Rate) -> String {
    let unit = match rate.unit {
        RateUnit::Second => "sec",
        RateUnit::Minute => "min",
        RateUnit::Hour => "hour",
        RateUnit::Day => "day",
    };
    format!("{}/{unit}", rate.count)
}
