//! The escape hatch: a backstop for the rollback that needs no process.
//!
//! A pending ruleset loaded over SSH carries one more set and one more
//! rule. The set (`flags timeout`) holds the operator's address with the
//! rollback window as its timeout; the rule accepts new TCP connections
//! from that address to the SSH port, but only when the address is *not*
//! in the set:
//!
//! ```text
//! set hatch_v4 { type ipv4_addr; flags timeout; elements = { 192.0.2.7 timeout 60s } }
//! ip saddr 192.0.2.7 tcp dport 22 ct state new ip saddr != @hatch_v4 counter accept
//! ```
//!
//! While the element lives the rule cannot match; the kernel drops it at
//! the deadline (nft_set_elem_expired() is checked on every lookup), and
//! from then on the operator can log in again to run `fwharden rollback`,
//! even if every fwharden process was killed. The confirmed ruleset never
//! carries the hatch: `confirm` loads the ruleset without it.
//!
//! The rule sits right after the leading conntrack rules (established
//! accept, invalid drop): established traffic keeps its one-rule fast
//! path, invalid packets are still dropped, and nothing the profile says
//! after that (a drop, a reject, a rate limit) can shut the hatch.

use std::net::IpAddr;

use super::model::*;

/// What the hatch is made of: who may come back, to which port, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hatch {
    pub operator: IpAddr,
    pub port: u16,
    /// The rollback window: the element's timeout.
    pub timeout_secs: u64,
}

/// The hatch a ruleset carries, as `status` and `show` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub operator: IpAddr,
    pub port: u16,
    pub set: String,
    /// `None`: the element expired, the hatch is open.
    pub element: Option<HatchElement>,
}

impl Found {
    /// One line for people: who, which port, armed or open.
    pub fn describe(&self) -> String {
        match self.element {
            Some(e) => format!(
                "armed: new SSH connections from {} to port {} are accepted once the {} s window expires (set {})",
                self.operator, self.port, e.timeout_secs, self.set
            ),
            None => format!(
                "OPEN: the window expired; new SSH connections from {} to port {} are accepted (set {})",
                self.operator, self.port, self.set
            ),
        }
    }
}

fn family_of(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

/// `hatch_v4` or `hatch_v6`.
pub fn set_name(family: Family) -> String {
    format!("hatch_{}", family.suffix())
}

fn is_hatch_set(ruleset: &Ruleset, name: &str) -> bool {
    matches!(ruleset.set(name).map(|s| &s.kind), Some(SetKind::Hatch(_)))
}

fn hatch_rule_set<'a>(ruleset: &Ruleset, rule: &'a Rule) -> Option<&'a str> {
    rule.matches.iter().find_map(|m| match m {
        Match::SourceNotInSet { set, .. } if is_hatch_set(ruleset, set) => Some(set.as_str()),
        _ => None,
    })
}

/// `ruleset` with the hatch added. A ruleset without an input chain
/// filters no incoming connection and gets none.
pub fn with_hatch(ruleset: &Ruleset, hatch: &Hatch) -> Ruleset {
    let mut out = without_hatch(ruleset);
    let family = family_of(hatch.operator);
    let set = set_name(family);
    let Some(chain) = out.chains.iter_mut().find(|c| c.hook == Hook::Input) else {
        return out;
    };
    let at = chain
        .rules
        .iter()
        .position(|r| !r.matches.iter().all(|m| matches!(m, Match::CtState(_))))
        .unwrap_or(chain.rules.len());
    chain.rules.insert(
        at,
        Rule {
            matches: vec![
                Match::Source(hatch.operator),
                Match::Protocol(vec![Protocol::Tcp]),
                Match::DestPort(vec![PortRange::single(hatch.port)]),
                Match::CtState(vec![CtState::New]),
                Match::SourceNotInSet {
                    family,
                    set: set.clone(),
                },
            ],
            counter: true,
            limit: None,
            log: None,
            verdict: Some(Verdict::Accept),
            comment: format!(
                "fwharden escape hatch: ssh from {} after the deadline",
                hatch.operator
            ),
        },
    );
    out.sets.push(Set {
        name: set,
        family,
        kind: SetKind::Hatch(Some(HatchElement {
            addr: hatch.operator,
            timeout_secs: hatch.timeout_secs,
        })),
        comment: "the operator until the rollback deadline".into(),
    });
    out
}

/// `ruleset` without its hatch: what `confirm` loads.
pub fn without_hatch(ruleset: &Ruleset) -> Ruleset {
    let mut out = ruleset.clone();
    for chain in &mut out.chains {
        chain.rules.retain(|r| hatch_rule_set(ruleset, r).is_none());
    }
    out.sets.retain(|s| !matches!(s.kind, SetKind::Hatch(_)));
    out
}

/// `ruleset` as the kernel shows it once the hatch's element expired.
pub fn expired(ruleset: &Ruleset) -> Ruleset {
    let mut out = ruleset.clone();
    for s in &mut out.sets {
        if let SetKind::Hatch(e) = &mut s.kind {
            *e = None;
        }
    }
    out
}

/// The hatch `ruleset` carries, if any.
pub fn find(ruleset: &Ruleset) -> Option<Found> {
    ruleset.chains.iter().flat_map(|c| &c.rules).find_map(|r| {
        let set = hatch_rule_set(ruleset, r)?;
        let operator = r.matches.iter().find_map(|m| match m {
            Match::Source(a) => Some(*a),
            _ => None,
        })?;
        let port = r.matches.iter().find_map(|m| match m {
            Match::DestPort(p) => p.first().map(|p| p.first),
            _ => None,
        })?;
        let element = match ruleset.set(set).map(|s| &s.kind) {
            Some(SetKind::Hatch(e)) => *e,
            _ => None,
        };
        Some(Found {
            operator,
            port,
            set: set.to_string(),
            element,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::eval::{self, evaluate, Packet};

    fn vps() -> Ruleset {
        let search = crate::profile::SearchPath {
            dirs: vec![],
            builtin: true,
        };
        crate::compile::compile(
            &crate::profile::load("vps-profile", &search)
                .profile
                .unwrap(),
        )
    }

    fn ssh_from(source: &str) -> Packet {
        Packet {
            source: source.parse().unwrap(),
            protocol: Protocol::Tcp,
            dport: 22,
            interface: Some("eth0".into()),
            state: CtState::New,
        }
    }

    const HATCH: Hatch = Hatch {
        operator: IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 50)),
        port: 22,
        timeout_secs: 30,
    };

    #[test]
    fn sits_after_the_conntrack_rules_and_comes_off_whole() {
        let plain = vps();
        let with = with_hatch(&plain, &HATCH);
        let input = with.chain("input").unwrap();
        assert!(matches!(input.rules[0].matches[..], [Match::CtState(_)]));
        assert!(matches!(input.rules[1].matches[..], [Match::CtState(_)]));
        assert!(hatch_rule_set(&with, &input.rules[2]).is_some());
        assert_eq!(with.set("hatch_v4").map(|s| s.family), Some(Family::Ipv4));
        assert_eq!(without_hatch(&with), plain);
        assert_eq!(with_hatch(&with, &HATCH), with, "adding twice adds once");
        let found = find(&with).unwrap();
        assert_eq!((found.operator, found.port), (HATCH.operator, 22));
        assert_eq!(find(&plain), None);
    }

    #[test]
    fn is_shut_before_the_deadline_and_open_after_it_to_the_operator_only() {
        let with = with_hatch(&vps(), &HATCH);
        let eval = |r: &Ruleset, src: &str| evaluate(r, Hook::Input, &ssh_from(src)).accepted();
        assert!(!eval(&with, "203.0.113.50"), "the element still lives");
        let open = expired(&with);
        assert!(eval(&open, "203.0.113.50"), "the element expired");
        assert!(!eval(&open, "203.0.113.51"), "another address");
        assert!(find(&open).unwrap().element.is_none());
    }

    #[test]
    fn stays_on_input_and_never_opens_a_published_port() {
        let plain = vps();
        let open = expired(&with_hatch(&plain, &HATCH));
        assert_eq!(open.chain("containers"), plain.chain("containers"));
        let published =
            eval::evaluate_published(&open, &ssh_from("203.0.113.50"), eval::Meters::Fresh);
        assert!(!published.accepted(), "{}", published.comment);
    }
}
