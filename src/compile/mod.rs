//! The compiler: a pure function from a validated [`Profile`] to the
//! [`Ruleset`] model. No I/O, no clock, no randomness: the same profile
//! always gives the same model, so rendering it gives byte-identical text.
//!
//! The input chain reads top to bottom in this order, and the README's
//! "precedence" section documents the same order:
//! 1. established/related accepted, invalid dropped (live sessions survive
//!    any swap of rules);
//! 2. loopback accepted;
//! 3. essential ICMP and ICMPv6, then rate-limited echo requests;
//! 4. every deny and reject rule, in profile order;
//! 5. every allow rule, in profile order (a per-source rate limit is a drop
//!    rule right before its accept rule);
//! 6. rate-limited logging of what falls through to the drop policy.
//!
//! With `[defaults] containers = "filter"` (the default) a second chain on
//! the forward hook, `containers`, holds the same deny and allow rules for
//! published container ports (see [`Compiler::containers_chain`]).

use std::collections::BTreeMap;

use crate::profile::{
    self, Action, ChainPolicy, ContainerPolicy, Defaults, IcmpPolicy, Ports, Profile, SourceSide,
};
use crate::ruleset::*;

/// The log prefix of what falls through to the input chain's drop policy.
pub const POLICY_LOG_PREFIX: &str = "fwharden drop: ";

/// How long a per-source rate-limit bucket is kept after its last packet.
const METER_TIMEOUT_SECS: u32 = 60;
/// How many sources a rate-limit meter tracks at once; beyond it, new
/// sources are not added and so are not limited (the kernel's behaviour for
/// a full dynamic set is to fail the update, which does not match).
const METER_SIZE: u32 = 65536;

pub fn compile(profile: &Profile) -> Ruleset {
    let mut c = Compiler {
        profile,
        sets: BTreeMap::new(),
    };
    let mut chains = vec![c.input_chain()];
    if let Some(chain) = c.containers_chain() {
        chains.push(chain);
    }
    if let Some(chain) = c.forward_chain() {
        chains.push(chain);
    }
    if let Some(chain) = c.output_chain() {
        chains.push(chain);
    }
    Ruleset {
        profile: profile.name.clone(),
        table: TABLE_NAME.to_string(),
        sets: c.sets.into_values().collect(),
        chains,
        bans: profile.bans.as_ref().map(|b| bans(profile, b)),
    }
}

/// The model's bans: the exempt groups' prefixes, both families, merged.
fn bans(profile: &Profile, policy: &profile::BanPolicy) -> Bans {
    let nets: Vec<ipnet::IpNet> = policy
        .exempt
        .iter()
        .filter_map(|g| profile.groups.get(g))
        .flat_map(|g| g.prefixes.iter().copied())
        .collect();
    let mut exempt = ipnet::IpNet::aggregate(&nets);
    exempt.sort_by_key(|n| (Family::of(n), *n));
    Bans {
        timeout_secs: policy.timeout_secs,
        size: policy.size,
        exempt,
        exempt_groups: policy.exempt.clone(),
    }
}

struct Compiler<'a> {
    profile: &'a Profile,
    /// Sets by name: sorted, so the output order never depends on the
    /// order rules happen to use them in.
    sets: BTreeMap<String, Set>,
}

fn rule(matches: Vec<Match>, verdict: Verdict, comment: &str) -> Rule {
    Rule {
        matches,
        counter: true,
        limit: None,
        log: None,
        verdict: Some(verdict),
        comment: comment_text(comment),
    }
}

fn policy(p: ChainPolicy) -> Policy {
    match p {
        ChainPolicy::Accept => Policy::Accept,
        ChainPolicy::Drop => Policy::Drop,
    }
}

const ICMPV6_ESSENTIAL: &[Icmpv6Type] = &[
    Icmpv6Type::DestinationUnreachable,
    Icmpv6Type::PacketTooBig,
    Icmpv6Type::TimeExceeded,
    Icmpv6Type::ParameterProblem,
    Icmpv6Type::NdRouterAdvert,
    Icmpv6Type::NdNeighborSolicit,
    Icmpv6Type::NdNeighborAdvert,
];

const ICMP_ESSENTIAL: &[IcmpType] = &[
    IcmpType::DestinationUnreachable,
    IcmpType::TimeExceeded,
    IcmpType::ParameterProblem,
];

impl Compiler<'_> {
    fn defaults(&self) -> &Defaults {
        &self.profile.defaults
    }

    /// The profile's rules compiled in the order they are judged: every
    /// deny and reject before any allow, whatever order the file gives, so
    /// that a later allow never undoes an earlier deny (the order a reader
    /// cannot get wrong). Within each kind, file order.
    fn profile_rules(&mut self) -> Vec<Rule> {
        let (blocking, allowing): (Vec<_>, Vec<_>) = self
            .profile
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (i + 1, r))
            .partition(|(_, r)| r.action != Action::Allow);
        let mut rules = Vec::new();
        for (number, r) in blocking.into_iter().chain(allowing) {
            rules.extend(self.profile_rule(number, r));
        }
        rules
    }

    fn input_chain(&mut self) -> Chain {
        let mut rules = self.conntrack_rules();
        if self.defaults().loopback {
            rules.push(rule(
                vec![Match::InInterface("lo".into())],
                Verdict::Accept,
                "defaults: loopback",
            ));
        }
        rules.extend(self.icmp_rules());
        rules.extend(self.profile_rules());
        if let (Some(rate), ChainPolicy::Drop) = (self.defaults().log_drops, self.defaults().input)
        {
            rules.push(Rule {
                matches: vec![],
                counter: false,
                limit: Some(rate),
                log: Some(Log {
                    prefix: POLICY_LOG_PREFIX.into(),
                    group: self.defaults().nflog_group,
                }),
                verdict: None,
                comment: "defaults: log drops".into(),
            });
        }
        Chain {
            name: "input".into(),
            hook: Hook::Input,
            priority: 0,
            policy: policy(self.defaults().input),
            rules,
        }
    }

    /// Forwarded traffic is left alone unless the profile drops it; then
    /// only replies pass, and connections to published container ports
    /// when the `containers` chain has already judged them.
    fn forward_chain(&mut self) -> Option<Chain> {
        if self.defaults().forward == ChainPolicy::Accept {
            return None;
        }
        let mut rules = self.conntrack_rules();
        if self.defaults().containers == ContainerPolicy::Filter {
            rules.push(rule(
                vec![Match::CtStatus(CtStatus::Dnat)],
                Verdict::Accept,
                "defaults: containers: judged by chain containers",
            ));
        }
        Some(Chain {
            name: "forward".into(),
            hook: Hook::Forward,
            priority: 0,
            policy: Policy::Drop,
            rules,
        })
    }

    /// Outgoing traffic is accepted unless the profile drops it; then
    /// replies, loopback and the ICMP that IPv6 needs still pass.
    fn output_chain(&mut self) -> Option<Chain> {
        if self.defaults().output == ChainPolicy::Accept {
            return None;
        }
        let mut rules = self.conntrack_rules();
        if self.defaults().loopback {
            rules.push(rule(
                vec![Match::OutInterface("lo".into())],
                Verdict::Accept,
                "defaults: loopback",
            ));
        }
        if self.defaults().icmp == IcmpPolicy::Essential {
            rules.extend(self.icmp_essential());
        }
        Some(Chain {
            name: "output".into(),
            hook: Hook::Output,
            priority: 0,
            policy: Policy::Drop,
            rules,
        })
    }

    fn conntrack_rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        if self.defaults().established {
            rules.push(rule(
                vec![Match::CtState(vec![CtState::Established, CtState::Related])],
                Verdict::Accept,
                "defaults: established",
            ));
        }
        if self.defaults().drop_invalid {
            rules.push(rule(
                vec![Match::CtState(vec![CtState::Invalid])],
                Verdict::Drop,
                "defaults: invalid",
            ));
        }
        rules
    }

    fn icmp_essential(&self) -> Vec<Rule> {
        vec![
            rule(
                vec![Match::Icmpv6Type(ICMPV6_ESSENTIAL.to_vec())],
                Verdict::Accept,
                "defaults: essential icmpv6",
            ),
            rule(
                vec![Match::IcmpType(ICMP_ESSENTIAL.to_vec())],
                Verdict::Accept,
                "defaults: essential icmp",
            ),
        ]
    }

    fn icmp_rules(&self) -> Vec<Rule> {
        if self.defaults().icmp == IcmpPolicy::None {
            return Vec::new();
        }
        let mut rules = self.icmp_essential();
        if let Some(rate) = self.defaults().ping {
            for m in [
                Match::IcmpType(vec![IcmpType::EchoRequest]),
                Match::Icmpv6Type(vec![Icmpv6Type::EchoRequest]),
            ] {
                rules.push(Rule {
                    limit: Some(rate),
                    ..rule(vec![m], Verdict::Accept, "defaults: ping")
                });
            }
        }
        rules
    }

    /// One profile rule becomes one kernel rule per (family, group) source
    /// and per distinct port list, plus a meter rule before each accept
    /// when the rule limits new connections per source.
    fn profile_rule(&mut self, number: usize, r: &profile::Rule) -> Vec<Rule> {
        let comment = format!("{} {}", r.origin.short(), r.label);
        let mut out = Vec::new();
        for (source, family) in self.source_matches(r) {
            for l4 in l4_matches(&r.ports) {
                let mut matches = Vec::new();
                if let Some(i) = &r.interface {
                    matches.push(Match::InInterface(i.clone()));
                }
                matches.extend(source.clone());
                matches.extend(l4.matches.clone());
                let verdict = match r.action {
                    Action::Allow => Verdict::Accept,
                    Action::Deny => Verdict::Drop,
                    Action::Reject => Verdict::Reject(l4.reject),
                };
                if let Some(rate) = r.limit {
                    out.extend(self.meter_rules(number, &matches, family, rate, &comment));
                }
                out.push(Rule {
                    log: r.log.as_ref().map(|prefix| self.log(r, prefix)),
                    ..rule(matches, verdict, &comment)
                });
            }
        }
        out
    }

    /// The log statement of profile rule `r`. To the kernel log, the
    /// profile's prefix as written; to NFLOG, the rule's `file:line` first,
    /// so `fwharden log` names the profile line that decided each packet
    /// from the packet alone (the ruleset may have changed since).
    fn log(&self, r: &profile::Rule, prefix: &str) -> Log {
        match self.defaults().nflog_group {
            None => Log {
                prefix: prefix.to_string(),
                group: None,
            },
            Some(group) => Log {
                prefix: crate::profile::resolve::truncate(
                    &format!("{} {prefix}", r.origin.short()),
                    LOG_PREFIX_MAX,
                ),
                group: Some(group),
            },
        }
    }

    /// The source side of a rule's matches, one entry per kernel rule, with
    /// the family the entry is limited to (`None`: both).
    fn source_matches(&mut self, r: &profile::Rule) -> Vec<(Vec<Match>, Option<Family>)> {
        let s = &r.sources;
        if s.v4 == SourceSide::Any && s.v6 == SourceSide::Any {
            return vec![(vec![], None)];
        }
        let mut out = Vec::new();
        for family in [Family::Ipv4, Family::Ipv6] {
            match s.side(family) {
                SourceSide::None => {}
                SourceSide::Any => out.push((vec![Match::Family(family)], Some(family))),
                SourceSide::Groups(groups) => {
                    for g in groups {
                        let set = self.group_set(g, family);
                        out.push((vec![Match::SourceInSet { family, set }], Some(family)));
                    }
                }
            }
        }
        out
    }

    fn group_set(&mut self, group: &str, family: Family) -> String {
        let name = format!("{group}_{}", family.suffix());
        if !self.sets.contains_key(&name) {
            let g = &self.profile.groups[group];
            let comment = if group.starts_with('_') {
                format!("{} addresses of one rule", g.origin.short())
            } else {
                format!("{} group {group}", g.origin.short())
            };
            self.sets.insert(
                name.clone(),
                Set {
                    name: name.clone(),
                    family,
                    kind: SetKind::Prefixes(g.family(family).to_vec()),
                    comment: comment_text(&comment),
                },
            );
        }
        name
    }

    /// Drops new connections from a source over its rate; one meter per
    /// profile rule and family, so each rule counts on its own.
    fn meter_rules(
        &mut self,
        number: usize,
        matches: &[Match],
        family: Option<Family>,
        rate: Rate,
        comment: &str,
    ) -> Vec<Rule> {
        let families = match family {
            Some(f) => vec![f],
            None => vec![Family::Ipv4, Family::Ipv6],
        };
        families
            .into_iter()
            .map(|f| {
                let set = format!("_limit{number}_{}", f.suffix());
                self.sets.entry(set.clone()).or_insert_with(|| Set {
                    name: set.clone(),
                    family: f,
                    kind: SetKind::Meter {
                        timeout_secs: METER_TIMEOUT_SECS,
                        size: METER_SIZE,
                    },
                    comment: comment_text(&format!("{comment}: per-source limit")),
                });
                let mut m = Vec::new();
                if family.is_none() {
                    m.push(Match::Family(f));
                }
                m.extend(matches.iter().cloned());
                m.push(Match::CtState(vec![CtState::New]));
                m.push(Match::SourceRateOver {
                    family: f,
                    set,
                    rate,
                });
                rule(m, Verdict::Drop, &format!("{comment}: over limit"))
            })
            .collect()
    }
}

/// The transport part of a rule and how a reject answers it.
struct L4 {
    matches: Vec<Match>,
    reject: RejectWith,
}

/// TCP and UDP share one kernel rule when their port lists are the same;
/// otherwise each protocol gets its own. A reject answers TCP with a reset,
/// so "all" splits into a TCP rule and a rule for everything else.
fn l4_matches(ports: &Ports) -> Vec<L4> {
    let map = match ports {
        Ports::All => {
            return vec![
                L4 {
                    matches: vec![Match::Protocol(vec![Protocol::Tcp])],
                    reject: RejectWith::TcpReset,
                },
                L4 {
                    matches: vec![],
                    reject: RejectWith::PortUnreachable,
                },
            ]
        }
        Ports::Some(map) => map,
    };
    let mut groups: Vec<(Vec<Protocol>, &Vec<PortRange>)> = Vec::new();
    for (proto, ranges) in map {
        match groups.iter_mut().find(|(_, r)| *r == ranges) {
            Some((protos, _)) => protos.push(*proto),
            None => groups.push((vec![*proto], ranges)),
        }
    }
    groups
        .into_iter()
        .map(|(protos, ranges)| L4 {
            reject: if protos == [Protocol::Tcp] {
                RejectWith::TcpReset
            } else {
                RejectWith::PortUnreachable
            },
            matches: vec![Match::Protocol(protos), Match::DestPort(ranges.clone())],
        })
        .collect()
}

/// Comments are user text inside nft's double quotes, which have no escape:
/// quotes and control characters are replaced, and the kernel's length
/// limit is kept.
fn comment_text(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    crate::profile::resolve::truncate(&clean, COMMENT_MAX)
}

mod containers;
#[cfg(test)]
mod tests;
