//! The awk check against [`crate::ruleset::eval`]: the same answer for
//! every sampled connection (source at and around every prefix a rule
//! names, every port boundary, every interface), and never a more
//! permissive one when the interface is unknown.

use std::net::IpAddr;
use std::process::Command;

use ipnet::IpNet;

use super::*;
use crate::ruleset::eval::{evaluate, Packet};
use crate::ruleset::*;

/// Every awk the scripts may meet that is installed here.
fn awks() -> Vec<&'static str> {
    let have = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut out: Vec<&str> = ["mawk", "gawk", "original-awk"]
        .into_iter()
        .filter(|b| have(b))
        .collect();
    if have("busybox") {
        out.push("busybox awk");
    }
    assert!(!out.is_empty(), "no awk at all");
    out
}

/// The awk program's answers, one per packet, in one run per packet.
fn awk_answers(awk: &str, table: &str, packets: &[(IpAddr, u16, Option<String>)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (prog, tab) = (dir.path().join("check.awk"), dir.path().join("table"));
    std::fs::write(&prog, CHECK_AWK).unwrap();
    std::fs::write(&tab, table).unwrap();
    // One shell loop for all packets: thousands of awk runs cost seconds
    // when each is spawned from here.
    let mut input = String::new();
    for (src, port, iface) in packets {
        input.push_str(&format!(
            "{src} {port} {}\n",
            iface.as_deref().unwrap_or("-")
        ));
    }
    let script = format!(
        "while read -r s p i; do [ \"$i\" = - ] && i=; {awk} -v src=\"$s\" -v port=\"$p\" -v iface=\"$i\" -f '{}' '{}'; done",
        prog.display(),
        tab.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(input.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{awk} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), packets.len(), "{awk}: one answer per packet");
    lines
}

/// Sources at, inside, just before and just after each prefix.
fn around(net: &IpNet) -> Vec<IpAddr> {
    let (first, last) = (net.network(), net.broadcast());
    let step = |a: IpAddr, up: bool| -> Option<IpAddr> {
        match a {
            IpAddr::V4(v) => {
                let n = u32::from(v);
                let n = if up {
                    n.checked_add(1)?
                } else {
                    n.checked_sub(1)?
                };
                Some(IpAddr::V4(n.into()))
            }
            IpAddr::V6(v) => {
                let n = u128::from(v);
                let n = if up {
                    n.checked_add(1)?
                } else {
                    n.checked_sub(1)?
                };
                Some(IpAddr::V6(n.into()))
            }
        }
    };
    [
        Some(first),
        Some(last),
        step(first, false),
        step(last, true),
        step(first, true),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn samples(ruleset: &Ruleset) -> Vec<(IpAddr, u16, Option<String>)> {
    let mut sources: Vec<IpAddr> = [
        "203.0.113.9",
        "2001:db8:9::1",
        "::ffff:192.0.2.10",
        "127.0.0.1",
        "::1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let mut ports = vec![22u16, 2222, 0, 65535];
    let mut ifaces: Vec<Option<String>> = vec![None, Some("eth0".into())];
    for set in &ruleset.sets {
        if let SetKind::Prefixes(nets) = &set.kind {
            for n in nets.iter().take(20) {
                sources.extend(around(n));
            }
        }
    }
    for chain in &ruleset.chains {
        for rule in &chain.rules {
            for m in &rule.matches {
                match m {
                    Match::DestPort(r) | Match::OrigDestPort(r) => {
                        for r in r {
                            ports.extend([
                                r.first,
                                r.last,
                                r.first.saturating_sub(1),
                                r.last.saturating_add(1),
                            ]);
                        }
                    }
                    Match::InInterface(i) => {
                        ifaces.push(Some(i.replace('*', "0")));
                        ifaces.push(Some(i.trim_end_matches('*').to_string()));
                    }
                    Match::Source(a) => sources.push(*a),
                    _ => {}
                }
            }
        }
    }
    sources.sort();
    sources.dedup();
    ports.sort();
    ports.dedup();
    ifaces.sort();
    ifaces.dedup();
    let mut out = Vec::new();
    for s in &sources {
        for p in &ports {
            for i in &ifaces {
                out.push((*s, *p, i.clone()));
            }
        }
    }
    out
}

/// sshd reports an IPv4 client of a dual-stack socket as ::ffff:a.b.c.d;
/// the kernel (and so eval) sees IPv4.
fn unmapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

fn assert_agrees(ruleset: &Ruleset) {
    let table = table(ruleset);
    let packets = samples(ruleset);
    for awk in awks() {
        let answers = awk_answers(awk, &table, &packets);
        for ((src, port, iface), got) in packets.iter().zip(&answers) {
            let d = evaluate(
                ruleset,
                Hook::Input,
                &Packet {
                    source: unmapped(*src),
                    protocol: Protocol::Tcp,
                    dport: *port,
                    interface: iface.clone(),
                    state: CtState::New,
                },
            );
            let what = format!(
                "{} ({awk}): {src} port {port} on {iface:?}",
                ruleset.profile
            );
            if iface.is_none() {
                // On the safe side: never accepts what eval drops.
                assert!(
                    got != "accept" || d.accepted(),
                    "{what}: awk {got}, eval {d:?}"
                );
            } else {
                assert_eq!(
                    got == "accept",
                    d.accepted(),
                    "{what}: awk {got}, eval {d:?}"
                );
                if !d.accepted() {
                    assert!(
                        got.contains(&d.comment) || d.rule.is_none(),
                        "{what}: {got} vs {}",
                        d.comment
                    );
                }
            }
        }
        eprintln!(
            "{}: {} connections, {awk} agrees with eval",
            ruleset.profile,
            packets.len()
        );
    }
}

#[test]
fn the_check_answers_as_eval_for_every_shipped_profile() {
    let search = crate::profile::SearchPath {
        dirs: vec![],
        builtin: true,
    };
    for name in [
        "base",
        "ssh-only",
        "vps-profile",
        "web-server",
        "db-private",
        "redis-sentinel",
        "wireguard-gateway",
    ] {
        let loaded = crate::profile::load(name, &search);
        let ruleset = crate::compile::compile(&loaded.profile.unwrap_or_else(|| panic!("{name}")));
        assert_agrees(&ruleset);
    }
}

fn tcp_rule(matches: Vec<Match>, verdict: Verdict, comment: &str) -> Rule {
    Rule {
        matches,
        counter: true,
        limit: None,
        log: None,
        verdict: Some(verdict),
        comment: comment.into(),
    }
}

/// A model using every match the table writes: interfaces exact and
/// wildcard, both families' sets, an inverted lookup, one address, a
/// reject, a second input chain at a lower priority, a rule that only
/// logs.
fn every_match() -> Ruleset {
    // Sorted and disjoint, as the model keeps them.
    let nets = |s: &[&str]| SetKind::Prefixes(s.iter().map(|n| n.parse().unwrap()).collect());
    let set = |name: &str, family, kind| Set {
        name: name.into(),
        family,
        kind,
        comment: name.into(),
    };
    let tcp = || Match::Protocol(vec![Protocol::Tcp, Protocol::Udp]);
    let ports = |r: &[(u16, u16)]| {
        Match::DestPort(
            r.iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
        )
    };
    Ruleset {
        profile: "every-match".into(),
        table: "fwharden".into(),
        sets: vec![
            set(
                "admin_v4",
                Family::Ipv4,
                nets(&["10.0.0.0/8", "192.0.2.0/28", "198.51.100.7/32"]),
            ),
            set(
                "admin_v6",
                Family::Ipv6,
                nets(&["2001:db8:1::/48", "2001:db8:ff::5/128", "fe80::/10"]),
            ),
            set("blocked_v4", Family::Ipv4, nets(&["192.0.2.8/29"])),
            set(
                "meter_v4",
                Family::Ipv4,
                SetKind::Meter {
                    timeout_secs: 60,
                    size: 10,
                },
            ),
        ],
        chains: vec![
            Chain {
                name: "input".into(),
                hook: Hook::Input,
                priority: 0,
                policy: Policy::Drop,
                rules: vec![
                    tcp_rule(
                        vec![Match::CtState(vec![CtState::Established])],
                        Verdict::Accept,
                        "established",
                    ),
                    tcp_rule(
                        vec![Match::InInterface("lo".into())],
                        Verdict::Accept,
                        "loopback",
                    ),
                    Rule {
                        verdict: None,
                        ..tcp_rule(vec![], Verdict::Accept, "log only")
                    },
                    tcp_rule(
                        vec![Match::SourceInSet {
                            family: Family::Ipv4,
                            set: "blocked_v4".into(),
                        }],
                        Verdict::Reject(RejectWith::TcpReset),
                        "p.toml:3 reject blocked",
                    ),
                    tcp_rule(
                        vec![
                            Match::InInterface("wg*".into()),
                            tcp(),
                            ports(&[(22, 22), (2000, 2999)]),
                        ],
                        Verdict::Accept,
                        "p.toml:4 allow ssh on wg",
                    ),
                    tcp_rule(
                        vec![Match::InInterface("eth1".into()), tcp(), ports(&[(22, 22)])],
                        Verdict::Drop,
                        "p.toml:5 deny ssh on eth1",
                    ),
                    tcp_rule(
                        vec![
                            Match::SourceInSet {
                                family: Family::Ipv4,
                                set: "admin_v4".into(),
                            },
                            tcp(),
                            ports(&[(22, 22)]),
                            Match::SourceRateOver {
                                family: Family::Ipv4,
                                set: "meter_v4".into(),
                                rate: Rate {
                                    count: 1,
                                    unit: RateUnit::Minute,
                                    burst: 1,
                                },
                            },
                        ],
                        Verdict::Drop,
                        "p.toml:6 over limit",
                    ),
                    tcp_rule(
                        vec![
                            Match::SourceInSet {
                                family: Family::Ipv4,
                                set: "admin_v4".into(),
                            },
                            tcp(),
                            ports(&[(22, 22)]),
                        ],
                        Verdict::Accept,
                        "p.toml:6 allow ssh from admin",
                    ),
                    tcp_rule(
                        vec![
                            Match::SourceInSet {
                                family: Family::Ipv6,
                                set: "admin_v6".into(),
                            },
                            tcp(),
                            ports(&[(22, 22), (2222, 2222)]),
                        ],
                        Verdict::Accept,
                        "p.toml:7 allow ssh from admin v6",
                    ),
                    tcp_rule(
                        vec![
                            Match::Source("203.0.113.9".parse().unwrap()),
                            tcp(),
                            ports(&[(2222, 2222)]),
                        ],
                        Verdict::Accept,
                        "p.toml:8 one address",
                    ),
                    tcp_rule(
                        vec![
                            Match::SourceNotInSet {
                                family: Family::Ipv4,
                                set: "admin_v4".into(),
                            },
                            Match::Protocol(vec![Protocol::Udp]),
                        ],
                        Verdict::Accept,
                        "udp only",
                    ),
                    tcp_rule(
                        vec![
                            Match::SourceNotInSet {
                                family: Family::Ipv6,
                                set: "admin_v6".into(),
                            },
                            tcp(),
                            ports(&[(65535, 65535)]),
                        ],
                        Verdict::Accept,
                        "p.toml:9 top port from strangers",
                    ),
                    tcp_rule(
                        vec![Match::Family(Family::Ipv6), tcp(), ports(&[(0, 0)])],
                        Verdict::Accept,
                        "p.toml:10 port zero v6",
                    ),
                ],
            },
            Chain {
                name: "early".into(),
                hook: Hook::Input,
                priority: -10,
                policy: Policy::Accept,
                rules: vec![tcp_rule(
                    vec![Match::Source("10.9.9.9".parse().unwrap())],
                    Verdict::Drop,
                    "p.toml:11 early drop",
                )],
            },
        ],
        bans: None,
    }
}

#[test]
fn the_check_answers_as_eval_for_every_match() {
    let r = every_match();
    let mut extra = r.clone();
    // Sources the samples would not pick: the early chain's address.
    extra.sets.push(Set {
        name: "x".into(),
        family: Family::Ipv4,
        kind: SetKind::Prefixes(vec!["10.9.9.9/32".parse().unwrap()]),
        comment: String::new(),
    });
    let t = table(&r);
    assert!(
        t.find("chain accept early") < t.find("chain drop input"),
        "priority order:\n{t}"
    );
    assert!(
        !t.contains("udp only") && !t.contains("log only") && !t.contains("over limit"),
        "{t}"
    );
    assert_agrees(&extra);
}

#[test]
fn an_unreadable_address_is_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t");
    std::fs::write(&t, table(&every_match())).unwrap();
    let bad = [
        "garbage",
        "",
        "1.2.3",
        "1.2.3.256",
        "2001:db8::1::2",
        "12345::1",
        "1:2:3:4:5:6:7:8:9",
    ];
    for awk in awks() {
        // "busybox awk" is a program and its first argument.
        let (program, first) = awk
            .split_once(' ')
            .map_or((awk, None), |(p, a)| (p, Some(a)));
        for src in bad {
            let out = Command::new(program)
                .args(first)
                .args(["-v", &format!("src={src}"), "-v", "port=22"])
                .args(["-v", "iface=eth0", CHECK_AWK])
                .arg(&t)
                .output()
                .unwrap();
            let got = String::from_utf8_lossy(&out.stdout);
            assert_eq!(got.trim(), "unreadable", "{awk}: {src:?}");
        }
    }
}

/// The scripts carry the program between single quotes.
#[test]
fn the_program_can_stand_between_single_quotes() {
    assert!(!CHECK_AWK.contains('\''));
}
