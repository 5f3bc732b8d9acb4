//! Unit tests of the compiler: profile text in, the model's chains, rules
//! and sets checked, without root and without the kernel.

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

/// What the forward hook decides for a connection to published `port`.
fn published_from(r: &Ruleset, source: &str, port: u16, interface: &str) -> bool {
    let p = crate::ruleset::eval::Packet {
        source: source.parse().unwrap(),
        protocol: Protocol::Tcp,
        dport: port,
        interface: Some(interface.into()),
        state: CtState::New,
    };
    crate::ruleset::eval::evaluate_published(r, &p, crate::ruleset::eval::Meters::Fresh).accepted()
}

const REDIS_BEHIND_TUNNEL: &str = "[groups]\nwg = [\"10.8.0.0/24\"]\n\
    [[rule]]\nallow = [\"http\", \"https\"]\n\
    [[rule]]\nallow = \"redis\"\nfrom = \"wg\"\n";

#[test]
fn published_ports_get_the_input_rules_by_their_original_port() {
    let r = compile_text(REDIS_BEHIND_TUNNEL);
    let c = r.chain("containers").unwrap();
    assert_eq!(
        (c.hook, c.priority, c.policy),
        (Hook::Forward, -10, Policy::Accept)
    );
    assert!(c
        .rules
        .iter()
        .skip(1)
        .all(|x| x.matches[0] == Match::CtStatus(CtStatus::Dnat)));
    assert!(c
        .rules
        .iter()
        .all(|x| !x.matches.iter().any(|m| matches!(m, Match::DestPort(_)))));
    assert!(published_from(&r, "10.8.0.5", 6379, "eth0"));
    assert!(!published_from(&r, "203.0.113.9", 6379, "eth0"));
    assert!(published_from(&r, "203.0.113.9", 443, "eth0"));
    assert!(
        !published_from(&r, "10.8.0.5", 9999, "eth0"),
        "a port no rule names"
    );
}

#[test]
fn containers_ignore_leaves_published_ports_to_the_engine() {
    let r = compile_text(&format!(
        "[defaults]\ncontainers = \"ignore\"\n{REDIS_BEHIND_TUNNEL}"
    ));
    assert!(r.chain("containers").is_none());
    assert!(published_from(&r, "203.0.113.9", 6379, "eth0"));
}

#[test]
fn a_dropping_forward_chain_lets_judged_published_ports_through() {
    let r = compile_text(&format!(
        "[defaults]\nforward = \"drop\"\n{REDIS_BEHIND_TUNNEL}"
    ));
    assert!(published_from(&r, "10.8.0.5", 6379, "eth0"));
    assert!(!published_from(&r, "203.0.113.9", 6379, "eth0"));
    let ignore = compile_text(&format!(
        "[defaults]\nforward = \"drop\"\ncontainers = \"ignore\"\n{REDIS_BEHIND_TUNNEL}"
    ));
    assert!(
        !published_from(&ignore, "10.8.0.5", 6379, "eth0"),
        "forward drops all"
    );
}

#[test]
fn a_rule_for_tcp_and_udp_becomes_one_containers_rule_per_protocol() {
    let r = compile_text("[[rule]]\nallow = \"dns\"\n");
    let c = r.chain("containers").unwrap();
    let protos: Vec<&Match> = c
        .rules
        .iter()
        .flat_map(|x| &x.matches)
        .filter(|m| matches!(m, Match::Protocol(_)))
        .collect();
    assert_eq!(protos.len(), 2, "{protos:?}");
    assert!(protos
        .iter()
        .all(|m| matches!(m, Match::Protocol(p) if p.len() == 1)));
}

#[test]
fn nflog_group_sends_logs_to_nflog_with_the_profile_line_first() {
    let rule = "[[rule]]\nallow = \"ssh\"\nlog = \"ssh: \"\n";
    let kernel = compile_text(rule);
    let logs = |r: &Ruleset| -> Vec<Log> {
        input(r)
            .rules
            .iter()
            .filter_map(|x| x.log.clone())
            .collect()
    };
    assert_eq!(
        logs(&kernel),
        [
            Log {
                prefix: "ssh: ".into(),
                group: None
            },
            Log {
                prefix: POLICY_LOG_PREFIX.into(),
                group: None
            }
        ]
    );
    let nflog = compile_text(&format!("[defaults]\nnflog_group = 7\n{rule}"));
    assert_eq!(
        logs(&nflog),
        [
            Log {
                prefix: "t.toml:3 ssh: ".into(),
                group: Some(7)
            },
            Log {
                prefix: POLICY_LOG_PREFIX.into(),
                group: Some(7)
            }
        ]
    );
}
