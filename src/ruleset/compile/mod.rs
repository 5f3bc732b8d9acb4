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

use std::collections::BTreeMap;

use super::model::*;
use crate::profile::{self, Action, ChainPolicy, Defaults, IcmpPolicy, Ports, Profile, SourceSide};

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
        comment: truncate(comment, COMMENT_MAX),
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
        let (blocking, allowing): (Vec<_>, Vec<_>) = self
            .profile
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (i + 1, r))
            .partition(|(_, r)| r.action != Action::Allow);
        for (number, r) in blocking.into_iter().chain(allowing) {
            rules.extend(self.profile_rule(number, r));
        }
        if let (Some(rate), ChainPolicy::Drop) = (self.defaults().log_drops, self.defaults().input)
        {
            rules.push(Rule {
                matches: vec![],
                counter: false,
                limit: Some(rate),
                log: Some(Log {
                    prefix: "fwharden drop: ".into(),
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
    /// only replies pass.
    fn forward_chain(&mut self) -> Option<Chain> {
        if self.defaults().forward == ChainPolicy::Accept {
            return None;
        }
        Some(Chain {
            name: "forward".into(),
            hook: Hook::Forward,
            priority: 0,
            policy: Policy::Drop,
            rules: self.conntrack_rules(),
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
                    log: r.log.clone().map(|prefix| Log { prefix }),
                    ..rule(matches, verdict, &comment)
                });
            }
        }
        out
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
                    kind: SetKind::Prefixes(g.family(family).copied().collect()),
                    comment: truncate(&comment, COMMENT_MAX),
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
                    comment: truncate(&format!("{comment}: per-source limit"), COMMENT_MAX),
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
fn truncate(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    crate::profile::resolve::truncate(&clean, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load, SearchPath};

    /// Compiles profile text (which may extend the shipped `base`).
    fn compile_text(text: &str) -> Ruleset {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.toml"), text).unwrap();
        let search = SearchPath {
            dirs: vec![dir.path().to_path_buf()],
            builtin: true,
        };
        let loaded = load("t", &search);
        let errors: Vec<String> = loaded.errors().map(|d| d.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        compile(&loaded.profile.unwrap())
    }

    fn input(r: &Ruleset) -> &Chain {
        r.chain("input").unwrap()
    }

    fn verdicts_for(r: &Ruleset, needle: &str) -> Vec<(Vec<Match>, Option<Verdict>)> {
        input(r)
            .rules
            .iter()
            .filter(|x| x.comment.contains(needle))
            .map(|x| (x.matches.clone(), x.verdict))
            .collect()
    }

    #[test]
    fn same_profile_same_model() {
        let text = "[groups]\nb = [\"10.0.0.0/8\"]\na = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n[[rule]]\nallow = \"ssh\"\nfrom = [\"b\", \"a\"]\n";
        assert_eq!(compile_text(text), compile_text(text));
        let sets: Vec<String> = compile_text(text)
            .sets
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(sets, ["a_v4", "a_v6", "b_v4"], "sets are sorted by name");
    }

    #[test]
    fn deny_and_reject_come_before_allow() {
        let r = compile_text(
            "[[rule]]\nallow = \"http\"\n[[rule]]\nreject = \"http\"\nfrom = \"192.0.2.0/24\"\n",
        );
        let comments: Vec<&str> = input(&r)
            .rules
            .iter()
            .filter(|x| x.comment.starts_with("t.toml"))
            .map(|x| x.comment.as_str())
            .collect();
        assert_eq!(
            comments,
            [
                "t.toml:3 reject http from 192.0.2.0/24",
                "t.toml:1 allow http"
            ]
        );
        let reject = &verdicts_for(&r, "reject http")[0];
        assert_eq!(reject.1, Some(Verdict::Reject(RejectWith::TcpReset)));
    }

    #[test]
    fn a_v4_only_source_matches_only_ipv4() {
        let r = compile_text("[[rule]]\nallow = \"postgres\"\nfrom = \"10.0.0.0/24\"\n");
        let rules = verdicts_for(&r, "allow postgres");
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].0[0],
            Match::SourceInSet {
                family: Family::Ipv4,
                set: "_rule1_v4".into()
            }
        );
        let set = r.set("_rule1_v4").unwrap();
        assert_eq!(
            set.kind,
            SetKind::Prefixes(vec!["10.0.0.0/24".parse().unwrap()])
        );
        assert!(r.set("_rule1_v6").is_none());
    }

    #[test]
    fn any4_and_family_keep_to_one_family() {
        let r = compile_text("[[rule]]\nallow = \"dns\"\nfrom = \"any4\"\n[[rule]]\nallow = \"ntp\"\nfamily = \"ipv6\"\n");
        assert_eq!(
            verdicts_for(&r, "allow dns")[0].0[0],
            Match::Family(Family::Ipv4)
        );
        assert_eq!(
            verdicts_for(&r, "allow ntp")[0].0[0],
            Match::Family(Family::Ipv6)
        );
    }

    #[test]
    fn tcp_and_udp_share_a_rule_only_when_ports_match() {
        let r = compile_text("[[rule]]\nallow = [\"dns\", \"8080/udp\"]\n");
        let rules = verdicts_for(&r, "allow dns");
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(
            rules[0].0,
            vec![
                Match::Protocol(vec![Protocol::Tcp]),
                Match::DestPort(vec![PortRange::single(53)])
            ]
        );
        assert_eq!(
            rules[1].0[1],
            Match::DestPort(vec![PortRange::single(53), PortRange::single(8080)])
        );
    }

    #[test]
    fn a_limit_drops_over_rate_sources_before_accepting() {
        let r = compile_text("[[rule]]\nallow = \"ssh\"\nlimit = \"3/minute\"\nburst = 2\n");
        let rules = verdicts_for(&r, "allow ssh");
        // Both families share the rule, but a meter is keyed by one family.
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert_eq!(rules[0].1, Some(Verdict::Drop));
        assert!(matches!(
            rules[0].0.last(),
            Some(Match::SourceRateOver {
                family: Family::Ipv4,
                rate: Rate {
                    count: 3,
                    burst: 2,
                    ..
                },
                ..
            })
        ));
        assert!(matches!(
            rules[1].0.last(),
            Some(Match::SourceRateOver {
                family: Family::Ipv6,
                ..
            })
        ));
        assert_eq!(rules[2].1, Some(Verdict::Accept));
        assert!(matches!(
            r.set("_limit1_v4").unwrap().kind,
            SetKind::Meter { .. }
        ));
    }

    #[test]
    fn defaults_can_be_turned_off() {
        let r = compile_text(
            "[defaults]\nestablished = false\ndrop_invalid = false\nloopback = false\nicmp = \"none\"\nlog_drops = false\noutput = \"drop\"\nforward = \"drop\"\n[[rule]]\nallow = \"ssh\"\n",
        );
        assert_eq!(input(&r).rules.len(), 1);
        assert_eq!(r.chain("output").unwrap().policy, Policy::Drop);
        assert_eq!(r.chain("forward").unwrap().policy, Policy::Drop);
        let r = compile_text("[[rule]]\nallow = \"ssh\"\n");
        assert!(r.chain("output").is_none() && r.chain("forward").is_none());
        assert_eq!(input(&r).policy, Policy::Drop);
    }

    #[test]
    fn comments_are_safe_inside_nft_quotes() {
        let r = compile_text("[[rule]]\nallow = \"ssh\"\ncomment = \"say \\\"hi\\\"\\tthere\"\n");
        let c = &verdicts_for(&r, "say")[0];
        let rule = input(&r)
            .rules
            .iter()
            .find(|x| x.comment.contains("say"))
            .unwrap();
        assert_eq!(rule.comment, "t.toml:1 say 'hi' there");
        assert!(c.1.is_some());
    }
}
