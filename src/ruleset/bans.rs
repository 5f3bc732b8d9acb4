//! Bans: the sets fail2ban, CrowdSec and `fwharden ban` fill, and the
//! table that consults them.
//!
//! # Where the ban sets live, and why
//! An apply replaces table `inet fwharden` whole (add, delete, add table,
//! in one transaction), and so do rollback, confirm and restore. Ban sets
//! inside that table would have to be read and written back, elements and
//! remaining timeouts, in every one of those transactions, and a ban
//! another process adds between the read and the commit would make the
//! commit fail (the generation check) and retry, on a busy host again and
//! again. So the ban sets live in a table of their own, `inet
//! fwharden-bans`, that the replacement never reaches: its sets are created
//! once and never deleted by an apply, so a ban is never read, copied or
//! lost by one, whatever program added it and whenever, and an upgrade of
//! fwharden that changes table `inet fwharden` leaves them alone.
//!
//! nftables rules cannot look up a set of another table, so the ban table
//! has its own base chain, hooked before ours (priority filter - 10): it
//! accepts the exempt sources (an accept ends only this chain; table
//! `inet fwharden` still decides on them) and drops the banned ones (a drop
//! is final). The exempt prefixes are copied into the ban table as sets
//! of its own. Its chain and exempt sets are rewritten by every apply, in
//! the same transaction as table `inet fwharden`; its ban sets are created
//! when missing and otherwise not touched.
//!
//! A ban drops *everything* from the source, first of all, established
//! connections included: that is what fail2ban's and CrowdSec's own
//! actions do, and an attacker's open session should end with the ban.
//! Only exempt sources are never dropped.
//!
//! The sets are plain `flags timeout` hash sets of addresses, not interval
//! sets: fail2ban bans addresses, and the kernel refuses an element that
//! overlaps another in an interval set, which a ban tool adding and
//! removing addresses on its own cannot know to avoid.

use ipnet::IpNet;

use super::model::*;

/// The table holding the ban sets and the chain that consults them.
pub const BAN_TABLE: &str = "fwharden-bans";

/// nft's `filter - 10`: before table `inet fwharden` (priority 0).
pub const BAN_PRIORITY: i32 = -10;

/// Who fills a pair of ban sets. CrowdSec's bouncer gets a pair of its
/// own: in set-only mode it flushes its set when it stops, which must not
/// take fail2ban's bans with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feeder {
    /// `fwharden ban`, fail2ban's action, anything else: `ban_v4`, `ban_v6`.
    Shared,
    /// The CrowdSec firewall bouncer: `crowdsec_v4`, `crowdsec_v6`.
    CrowdSec,
}

const FEEDERS: [Feeder; 2] = [Feeder::Shared, Feeder::CrowdSec];

impl Feeder {
    pub fn set_name(self, family: Family) -> String {
        let base = match self {
            Feeder::Shared => "ban",
            Feeder::CrowdSec => "crowdsec",
        };
        format!("{base}_{}", family.suffix())
    }
}

/// `ban_v4` or `ban_v6`: the sets `fwharden ban` and fail2ban write.
pub fn set_name(family: Family) -> String {
    Feeder::Shared.set_name(family)
}

/// Every ban set's name.
pub fn ban_set_names() -> Vec<String> {
    FEEDERS
        .iter()
        .flat_map(|f| FAMILIES.map(|family| f.set_name(family)))
        .collect()
}

/// `exempt_v4` or `exempt_v6`.
pub fn exempt_set_name(family: Family) -> String {
    format!("exempt_{}", family.suffix())
}

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

/// The ban table as a ruleset: the ban sets, the exempt sets, and one
/// base chain per hook that consults them ([`chain`]).
pub fn table(bans: &Bans, profile: &str) -> Ruleset {
    let mut sets = Vec::new();
    for feeder in FEEDERS {
        for family in FAMILIES {
            sets.push(Set {
                name: feeder.set_name(family),
                family,
                kind: SetKind::Bans {
                    timeout_secs: bans.timeout_secs,
                    size: bans.size,
                },
                comment: match feeder {
                    Feeder::Shared => "banned sources (fwharden ban, fail2ban)".into(),
                    Feeder::CrowdSec => "banned sources (crowdsec firewall bouncer)".into(),
                },
            });
        }
    }
    for family in FAMILIES {
        let nets: Vec<IpNet> = exempt_of(bans, family);
        if !nets.is_empty() {
            sets.push(Set {
                name: exempt_set_name(family),
                family,
                kind: SetKind::Prefixes(nets),
                comment: format!("never banned: {}", bans.exempt_groups.join(", ")),
            });
        }
    }
    Ruleset {
        profile: profile.to_string(),
        table: BAN_TABLE.to_string(),
        // Forward too: a ban holds for published container ports (DNAT'd
        // to a container, they never reach input) and for traffic this host
        // routes, as it holds for the host itself.
        chains: vec![chain(bans, Hook::Input), chain(bans, Hook::Forward)],
        sets,
        bans: None,
    }
}

fn exempt_of(bans: &Bans, family: Family) -> Vec<IpNet> {
    bans.exempt
        .iter()
        .filter(|n| Family::of(n) == family)
        .copied()
        .collect()
}

/// The ban table's base chain for `hook`, named after it: exempt sources
/// go on to table `inet fwharden`, banned ones are dropped. A forward
/// chain (container coverage) is the same rules on another hook.
pub fn chain(bans: &Bans, hook: Hook) -> Chain {
    let mut rules = Vec::new();
    // This host talking to itself is never banned, whatever the sets hold
    // (a ban of 127.0.0.1 or of an address of this host would otherwise
    // break every local service). Only input: the kernel never forwards
    // what arrives on lo.
    if hook == Hook::Input {
        rules.push(Rule {
            matches: vec![Match::InInterface("lo".into())],
            counter: true,
            limit: None,
            log: None,
            verdict: Some(Verdict::Accept),
            comment: "bans: never drop loopback (on to table fwharden)".into(),
        });
    }
    for family in FAMILIES {
        if exempt_of(bans, family).is_empty() {
            continue;
        }
        rules.push(Rule {
            matches: vec![Match::SourceInSet {
                family,
                set: exempt_set_name(family),
            }],
            counter: true,
            limit: None,
            log: None,
            verdict: Some(Verdict::Accept),
            comment: format!(
                "bans: never ban {} (on to table fwharden)",
                bans.exempt_groups.join(", ")
            ),
        });
    }
    for (feeder, family) in FEEDERS
        .iter()
        .flat_map(|f| FAMILIES.map(|family| (*f, family)))
    {
        rules.push(Rule {
            matches: vec![Match::SourceInSet {
                family,
                set: feeder.set_name(family),
            }],
            counter: true,
            limit: None,
            log: None,
            verdict: Some(Verdict::Drop),
            comment: "bans: drop banned sources".into(),
        });
    }
    Chain {
        name: hook.as_str().to_string(),
        hook,
        priority: BAN_PRIORITY,
        policy: Policy::Accept,
        rules,
    }
}

/// Whether a ban of `addr` would be ignored: it is in an exempt group.
pub fn exempt(bans: &Bans, addr: std::net::IpAddr) -> bool {
    bans.exempt.iter().any(|n| n.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::eval::{evaluate, Packet};

    fn bans() -> Bans {
        Bans {
            timeout_secs: 600,
            size: 65536,
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
            exempt_groups: vec!["admin".into()],
        }
    }

    #[test]
    fn exempt_sources_pass_on_and_the_ban_sets_keep_their_shape() {
        let t = table(&bans(), "p");
        assert_eq!(t.table, BAN_TABLE);
        let names: Vec<&str> = t.sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ban_v4",
                "ban_v6",
                "crowdsec_v4",
                "crowdsec_v6",
                "exempt_v4"
            ]
        );
        let input = t.chain("input").unwrap();
        assert_eq!((input.priority, input.policy), (-10, Policy::Accept));
        // An exempt source is accepted by this chain, which sends it on to
        // table fwharden; the model's eval sees the accept.
        let packet = |src: &str| Packet {
            source: src.parse().unwrap(),
            protocol: Protocol::Tcp,
            dport: 22,
            interface: None,
            state: CtState::New,
        };
        assert!(evaluate(&t, Hook::Input, &packet("192.0.2.9")).accepted());
        let from_lo = Packet {
            interface: Some("lo".into()),
            ..packet("127.0.0.1")
        };
        let d = evaluate(&t, Hook::Input, &from_lo);
        assert!(d.accepted() && d.comment.contains("loopback"), "{d:?}");
        assert!(exempt(&bans(), "192.0.2.9".parse().unwrap()));
        assert!(!exempt(&bans(), "198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn without_exempt_groups_there_are_no_exempt_sets_or_rules() {
        let b = Bans {
            exempt: vec![],
            exempt_groups: vec![],
            ..bans()
        };
        let t = table(&b, "p");
        assert_eq!(t.sets.len(), 4);
        // Loopback, then the four ban sets; forward has no loopback rule.
        assert_eq!(t.chain("input").unwrap().rules.len(), 5);
        assert_eq!(t.chain("forward").unwrap().rules.len(), 4);
    }
}
