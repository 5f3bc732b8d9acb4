//! The translation without ufw: what becomes a before rule, a user rule or
//! a refusal. tests/emit_ufw.rs runs the output with the real ufw.

use super::rule::{comment_text, ufw_interface};
use super::*;
use crate::ruleset::Family;

fn rule(matches: Vec<Match>, verdict: Option<Verdict>, comment: &str) -> Rule {
    Rule {
        matches,
        counter: true,
        limit: None,
        log: None,
        verdict,
        comment: comment.into(),
    }
}

fn ruleset(rules: Vec<Rule>, sets: Vec<Set>) -> Ruleset {
    Ruleset {
        profile: "t".into(),
        table: TABLE_NAME.into(),
        sets,
        chains: vec![Chain {
            name: "input".into(),
            hook: Hook::Input,
            priority: 0,
            policy: Policy::Drop,
            rules,
        }],
        bans: None,
    }
}

fn prefixes(name: &str, family: Family, nets: &[&str]) -> Set {
    Set {
        name: name.into(),
        family,
        kind: SetKind::Prefixes(nets.iter().map(|n| n.parse().unwrap()).collect()),
        comment: format!("t.toml:1 group {name}"),
    }
}

fn established() -> Rule {
    rule(
        vec![Match::CtState(vec![CtState::Established, CtState::Related])],
        Some(Verdict::Accept),
        "defaults: established",
    )
}

fn ssh_from(set: &str, family: Family) -> Rule {
    rule(
        vec![
            Match::SourceInSet {
                family,
                set: set.into(),
            },
            Match::Protocol(vec![Protocol::Tcp]),
            Match::DestPort(vec![PortRange::single(22)]),
        ],
        Some(Verdict::Accept),
        "t.toml:9 ssh",
    )
}

#[test]
fn leading_rules_go_to_before_rules_and_the_rest_are_ufw_rules() {
    let r = ruleset(
        vec![established(), ssh_from("admin_v4", Family::Ipv4)],
        vec![prefixes(
            "admin_v4",
            Family::Ipv4,
            &["192.0.2.0/28", "198.51.100.7/32"],
        )],
    );
    let plan = plan(&r, Approximation::Refuse).unwrap();
    assert_eq!(
        plan.before_v4,
        ["-A ufw-before-input -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment \"defaults: established\" -j ACCEPT"]
    );
    assert_eq!(plan.before_v6.len(), 1);
    let commands: Vec<String> = plan.user.iter().map(script::command).collect();
    assert_eq!(
        commands,
        [
            "allow proto tcp from 192.0.2.0/28 to any port 22 comment 't.toml:9 ssh'",
            "allow proto tcp from 198.51.100.7 to any port 22 comment 't.toml:9 ssh'",
        ]
    );
}

#[test]
fn a_rule_ufw_would_merge_into_an_earlier_one_is_left_out() {
    // deny 22 from everywhere (IPv4 only), then allow 22 from anywhere:
    // ufw would turn the deny into an allow for IPv4; the allow decides
    // only IPv6 packets, so it is written for IPv6 alone.
    let deny = rule(
        vec![
            Match::Family(Family::Ipv4),
            Match::Protocol(vec![Protocol::Tcp]),
            Match::DestPort(vec![PortRange::single(22)]),
        ],
        Some(Verdict::Drop),
        "t.toml:3 deny",
    );
    let allow = rule(
        vec![
            Match::Protocol(vec![Protocol::Tcp]),
            Match::DestPort(vec![PortRange::single(22)]),
        ],
        Some(Verdict::Accept),
        "t.toml:6 allow",
    );
    let plan = plan(&ruleset(vec![deny, allow], vec![]), Approximation::Refuse).unwrap();
    let commands: Vec<String> = plan.user.iter().map(script::command).collect();
    assert_eq!(
        commands,
        [
            "deny proto tcp from 0.0.0.0/0 to any port 22 comment 't.toml:3 deny'",
            "allow proto tcp from ::/0 to any port 22 comment 't.toml:6 allow'",
        ]
    );
}

#[test]
fn refusals_name_the_rule_and_say_why() {
    // A per-source meter goes into before.rules, ahead of every ufw rule:
    // refused behind a rule that may take the same packets (here every
    // TCP packet from anywhere), named by its own and that rule's line.
    let mut meter = ssh_from("admin_v4", Family::Ipv4);
    meter.comment = "t.toml:9 ssh: over limit".into();
    meter.verdict = Some(Verdict::Drop);
    meter.matches.push(Match::SourceRateOver {
        family: Family::Ipv4,
        set: "_limit1_v4".into(),
        rate: Rate {
            count: 10,
            unit: RateUnit::Minute,
            burst: 5,
        },
    });
    let meter_set = Set {
        name: "_limit1_v4".into(),
        family: Family::Ipv4,
        kind: SetKind::Meter {
            timeout_secs: 60,
            size: 65536,
        },
        comment: "t.toml:9 ssh: per-source limit".into(),
    };
    let sets = vec![
        prefixes("admin_v4", Family::Ipv4, &["192.0.2.1/32"]),
        meter_set,
    ];
    let any_tcp = rule(
        vec![Match::Protocol(vec![Protocol::Tcp])],
        Some(Verdict::Accept),
        "t.toml:5 tcp",
    );
    let guarded = ssh_from("admin_v4", Family::Ipv4);
    // Behind a rule that may take the same packets (every TCP packet), the
    // rules up to the meter go into before.rules whole, in model order.
    let rules = vec![any_tcp, meter.clone(), guarded.clone()];
    for approx in [Approximation::Refuse, Approximation::Stricter] {
        let p = plan(&ruleset(rules.clone(), sets.clone()), approx).unwrap();
        assert_eq!(p.lead, 2, "{p:?}");
        let comments: Vec<&str> = p
            .before_v4
            .iter()
            .map(|l| l.split("--comment ").nth(1).unwrap())
            .collect();
        assert_eq!(
            comments,
            [
                "\"t.toml:5 tcp\" -j ACCEPT",
                "\"t.toml:9 ssh: over limit\" -j DROP"
            ]
        );
        assert_eq!(p.user.len(), 1, "{:?}", p.user);
        assert_eq!(p.user[0].comment, "t.toml:9 ssh");
    }
    // Behind a rule of other ports, it holds: the meter in before.rules,
    // the rule it guards a ufw rule.
    let web = rule(
        vec![
            Match::Protocol(vec![Protocol::Tcp]),
            Match::DestPort(vec![PortRange::single(443)]),
        ],
        Some(Verdict::Accept),
        "t.toml:5 https",
    );
    let p = plan(
        &ruleset(vec![web, meter, guarded], sets.clone()),
        Approximation::Refuse,
    )
    .unwrap();
    assert_eq!(p.user.len(), 2, "{:?}", p.user);
    assert!(p.before_v6.is_empty(), "{:?}", p.before_v6);
    assert_eq!(
        p.before_v4,
        ["-A ufw-before-input -s 192.0.2.1/32 -p tcp -m tcp --dport 22 -m hashlimit --hashlimit-above 10/min --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name fwh_limit1_v4 --hashlimit-htable-max 65536 --hashlimit-htable-expire 60000 -m comment --comment \"t.toml:9 ssh: over limit\" -j DROP"]
    );
    let big: Vec<String> = (0..=SET_MAX).map(|i| format!("10.0.{i}.0/24")).collect();
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    let r = ruleset(
        vec![ssh_from("big_v4", Family::Ipv4)],
        vec![prefixes("big_v4", Family::Ipv4, &big)],
    );
    match plan(&r, Approximation::Stricter) {
        Err(EmitError::Refused { why, .. }) => assert!(why.contains("ipset"), "{why}"),
        other => panic!("not refused: {other:?}"),
    }
    // ICMP after a user rule cannot move before it.
    let late_icmp = rule(
        vec![Match::IcmpType(vec![IcmpType::EchoRequest])],
        Some(Verdict::Accept),
        "t.toml:12 ping",
    );
    let r = ruleset(
        vec![ssh_from("admin_v4", Family::Ipv4), late_icmp],
        sets.clone(),
    );
    assert!(plan(&r, Approximation::Stricter).is_err());
}

#[test]
fn interface_names_become_ufw_names_or_are_refused() {
    assert_eq!(ufw_interface("wg*").unwrap(), "wg+");
    assert_eq!(ufw_interface("br-1.10").unwrap(), "br-1.10");
    for bad in [
        "eth+",
        "-x",
        "a$b",
        "a'b",
        "a;b",
        "a b",
        "abcdefghijklmnop",
        "*",
    ] {
        assert!(ufw_interface(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn comments_cannot_break_out_or_read_as_options() {
    for (raw, want) in [
        ("--dry-run", "_-dry-run"),
        ("-x 'q' $(id) `id`; \"\n", "_x _q_ __id_ _id__ __"),
    ] {
        assert_eq!(comment_text(raw), want);
    }
}

#[test]
fn logging_is_a_warning_and_a_tcp_reset_is_refused_or_approximated() {
    let mut logged = ssh_from("admin_v4", Family::Ipv4);
    logged.log = Some(Log {
        prefix: "fwharden allow ssh: ".into(),
        group: None,
    });
    let sets = vec![prefixes("admin_v4", Family::Ipv4, &["192.0.2.1/32"])];
    let r = ruleset(vec![logged], sets);
    // Logging decides nothing: never refused, --approximate or not.
    let p = plan(&r, Approximation::Refuse).unwrap();
    assert_eq!(p, plan(&r, Approximation::Stricter).unwrap());
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert_eq!(
        script::command(&p.user[0]),
        "allow log proto tcp from 192.0.2.1 to any port 22 comment 't.toml:9 ssh'"
    );

    let reject = rule(
        vec![
            Match::Protocol(vec![Protocol::Tcp, Protocol::Udp]),
            Match::DestPort(vec![PortRange::single(53)]),
        ],
        Some(Verdict::Reject(RejectWith::PortUnreachable)),
        "t.toml:4 dns",
    );
    let r = ruleset(vec![reject], vec![]);
    assert!(plan(&r, Approximation::Refuse).is_err());
    assert_eq!(plan(&r, Approximation::Stricter).unwrap().user.len(), 2);
}
