//! The verdicts and the "who" column, judged against compiled profiles
//! without root: no socket is opened, the rows are built from made-up
//! listeners.

use super::*;
use crate::profile::{load, SearchPath};
use crate::ruleset::Family;

fn compiled(name: &str) -> Ruleset {
    let search = SearchPath {
        dirs: vec![],
        builtin: true,
    };
    crate::compile::compile(&load(name, &search).profile.unwrap())
}

fn from_text(text: &str) -> Ruleset {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, text).unwrap();
    let search = SearchPath {
        dirs: vec![],
        builtin: true,
    };
    let loaded = load(path.to_str().unwrap(), &search);
    crate::compile::compile(&loaded.profile.expect("a valid test profile"))
}

fn sock(protocol: Protocol, addr: &str, port: u16, interface: Option<&str>) -> Socket {
    let address: IpAddr = addr.parse().unwrap();
    let families = match address {
        IpAddr::V4(_) => vec![Family::Ipv4],
        IpAddr::V6(a) if a.is_unspecified() => vec![Family::Ipv4, Family::Ipv6],
        IpAddr::V6(_) => vec![Family::Ipv6],
    };
    Socket {
        listener: Listener {
            protocol,
            address,
            port,
            interface: interface.map(str::to_string),
            families,
            uid: 0,
            inode: 1,
        },
        process: Some(Process {
            name: "srv".into(),
            pid: 7,
        }),
    }
}

fn tcp(addr: &str, port: u16) -> Socket {
    sock(Protocol::Tcp, addr, port, None)
}

fn find<'a>(rows: &'a [Row], kind: Kind, addr: Option<&str>, port: u16) -> &'a Row {
    let addr: Option<IpAddr> = addr.map(|a| a.parse().unwrap());
    rows.iter()
        .find(|r| r.kind == kind && r.address == addr && r.port == port)
        .unwrap_or_else(|| panic!("no row {kind:?} {addr:?} {port} in {rows:#?}"))
}

fn who(row: &Row) -> Vec<(String, Reach)> {
    row.who
        .iter()
        .map(|w| (w.interface.clone(), w.reach.clone()))
        .collect()
}

fn sources(names: &[&str]) -> Reach {
    Reach::Sources(names.iter().map(|s| s.to_string()).collect())
}

#[test]
fn every_verdict_and_who_under_vps_profile() {
    let r = compiled("vps-profile");
    let socks = [
        tcp("0.0.0.0", 443),
        tcp("0.0.0.0", 6379),
        tcp("127.0.0.1", 6380),
        tcp("::", 22),
        tcp("0.0.0.0", 8080),
        tcp("::1", 5000),
        sock(Protocol::Tcp, "0.0.0.0", 5432, Some("wg0")),
        sock(Protocol::Tcp, "0.0.0.0", 9000, Some("eth1")),
        sock(Protocol::Tcp, "0.0.0.0", 9001, Some("lo")),
        tcp("198.51.100.1", 80),
    ];
    let rows = judge(&socks, &[], Against::Ruleset(&r));
    let web = find(&rows, Kind::Socket, Some("0.0.0.0"), 443);
    assert_eq!(web.verdict, Verdict::Exposed);
    assert_eq!(who(web), [("any".into(), Reach::Anyone)]);
    assert_eq!(
        web.named_by.as_deref(),
        Some("vps-profile.toml:15 public web")
    );
    assert!(!web.unnamed);

    let redis = find(&rows, Kind::Socket, Some("0.0.0.0"), 6379);
    assert_eq!(redis.verdict, Verdict::Restricted);
    assert_eq!(
        who(redis),
        [
            ("wg0".into(), sources(&["wg-net"])),
            ("other".into(), Reach::Nobody)
        ]
    );

    let ssh = find(&rows, Kind::Socket, Some("::"), 22);
    assert_eq!(ssh.verdict, Verdict::Restricted);
    assert_eq!(who(ssh), [("any".into(), sources(&["admin", "wg-net"]))]);

    let other = find(&rows, Kind::Socket, Some("0.0.0.0"), 8080);
    assert_eq!(other.verdict, Verdict::Closed);
    assert_eq!(who(other), [("any".into(), Reach::Nobody)]);

    for (addr, port) in [("127.0.0.1", 6380), ("::1", 5000), ("0.0.0.0", 9001)] {
        let row = find(&rows, Kind::Socket, Some(addr), port);
        assert_eq!(row.verdict, Verdict::Loopback, "{addr} {port}");
        assert!(row.who.is_empty());
    }

    let pg = find(&rows, Kind::Socket, Some("0.0.0.0"), 5432);
    assert_eq!(pg.verdict, Verdict::Restricted);
    assert_eq!(who(pg), [("wg0".into(), sources(&["wg-net"]))]);
    let bound = find(&rows, Kind::Socket, Some("0.0.0.0"), 9000);
    assert_eq!(bound.verdict, Verdict::Closed);
    assert_eq!(who(bound), [("eth1".into(), Reach::Nobody)]);

    let specific = find(&rows, Kind::Socket, Some("198.51.100.1"), 80);
    assert_eq!(specific.verdict, Verdict::Exposed);

    // Opened by the profile, nothing behind: WireGuard; not 443, 80, 22,
    // 5432 or 6379, which listen.
    let idle: Vec<(Protocol, u16)> = rows
        .iter()
        .filter(|r| r.verdict == Verdict::NothingListening)
        .map(|r| (r.protocol, r.port))
        .collect();
    assert_eq!(idle, [(Protocol::Udp, 51820)]);

    // Sorted: exposed first, loopback last.
    let order: Vec<Verdict> = rows.iter().map(|r| r.verdict).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(order[0], Verdict::Exposed);
    assert!(rows.iter().all(|r| !r.unnamed));
}

#[test]
fn a_port_let_in_by_the_policy_or_by_no_table_is_unnamed() {
    let open = from_text("[defaults]\ninput = \"accept\"\n[[rule]]\nallow = \"https\"\n");
    let rows = judge(
        &[tcp("0.0.0.0", 443), tcp("0.0.0.0", 6379)],
        &[],
        Against::Ruleset(&open),
    );
    let redis = find(&rows, Kind::Socket, Some("0.0.0.0"), 6379);
    assert_eq!((redis.verdict, redis.unnamed), (Verdict::Exposed, true));
    assert_eq!(redis.named_by, None);
    assert!(!find(&rows, Kind::Socket, Some("0.0.0.0"), 443).unnamed);

    let rows = judge(&[tcp("0.0.0.0", 6379)], &[], Against::NoTable);
    assert_eq!((rows[0].verdict, rows[0].unnamed), (Verdict::Exposed, true));

    let rows = judge(
        &[tcp("0.0.0.0", 6379), tcp("127.0.0.1", 1)],
        &[],
        Against::Unknown,
    );
    assert_eq!(rows[0].verdict, Verdict::Unknown);
    assert_eq!(rows[1].verdict, Verdict::Loopback);
}

#[test]
fn a_rule_of_its_own_prefixes_is_listed_by_prefix() {
    let r = from_text("[[rule]]\nallow = \"ssh\"\nfrom = [\"10.1.0.0/16\", \"2001:db8::/32\"]\n");
    let rows = judge(&[tcp("::", 22)], &[], Against::Ruleset(&r));
    assert_eq!(
        who(&rows[0]),
        [("any".into(), sources(&["10.1.0.0/16", "2001:db8::/32"]))]
    );
}

fn published(port: u16) -> Published {
    Published {
        protocol: Protocol::Tcp,
        address: "0.0.0.0".parse().unwrap(),
        port,
        container: "c".into(),
        engine: "test".into(),
    }
}

#[test]
fn published_ports_are_uncovered_without_the_containers_chain() {
    let ports = [published(443), published(8081)];
    let filtered = compiled("vps-profile");
    assert!(filtered.chain("containers").is_some());
    let rows = judge(&[], &ports, Against::Ruleset(&filtered));
    let web = find(&rows, Kind::Published, Some("0.0.0.0"), 443);
    assert_eq!(web.verdict, Verdict::Exposed);
    assert_eq!(
        web.named_by.as_deref(),
        Some("vps-profile.toml:15 public web")
    );
    let other = find(&rows, Kind::Published, Some("0.0.0.0"), 8081);
    assert_eq!(other.verdict, Verdict::Closed);
    // A published port counts as listening.
    assert!(!rows
        .iter()
        .any(|r| r.kind == Kind::Profile && r.port == 443));

    let ignored = from_text("[defaults]\ncontainers = \"ignore\"\n[[rule]]\nallow = \"https\"\n");
    let rows = judge(&[], &ports, Against::Ruleset(&ignored));
    for port in [443, 8081] {
        let row = find(&rows, Kind::Published, Some("0.0.0.0"), port);
        assert_eq!((row.verdict, row.unnamed), (Verdict::Uncovered, true));
    }
    let rows = judge(&[], &ports, Against::NoTable);
    assert!(rows.iter().all(|r| r.verdict == Verdict::Uncovered));
}

#[test]
fn docker_proxy_is_spoken_for_by_its_published_port() {
    let mut proxy = tcp("0.0.0.0", 8081);
    proxy.process = Some(Process {
        name: "docker-proxy".into(),
        pid: 9,
    });
    let rows = judge(&[proxy], &[published(8081)], Against::NoTable);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, Kind::Published);
}

#[test]
fn the_summary_counts_verdicts_and_unnamed_exposure() {
    let rows = judge(
        &[tcp("0.0.0.0", 6379), tcp("127.0.0.1", 1)],
        &[],
        Against::NoTable,
    );
    assert_eq!(
        summary(&rows),
        "1 exposed, 1 loopback; 1 reachable from anywhere without the profile naming the port"
    );
    assert_eq!(summary(&[]), "nothing listens");
}

#[test]
fn sockets_sharing_a_port_with_so_reuseport_are_one_row() {
    let mut worker = tcp("0.0.0.0", 443);
    worker.listener.inode = 2;
    let rows = judge(
        &[tcp("0.0.0.0", 443), worker, tcp("::", 443)],
        &[],
        Against::NoTable,
    );
    let addresses: Vec<String> = rows
        .iter()
        .map(|r| r.address.unwrap().to_string())
        .collect();
    assert_eq!(addresses, ["0.0.0.0", "::"]);
}

#[test]
fn rows_that_need_a_person_say_what_to_do() {
    let r = from_text(
        "[[rule]]\nallow = [\"postgres\", \"http\"]\n\n[[rule]]\nallow = \"9999/tcp\"\nfrom = [\"192.0.2.0/24\"]\n",
    );
    let sockets = [
        tcp("0.0.0.0", 5432),
        tcp("0.0.0.0", 80),
        tcp("0.0.0.0", 7000),
        tcp("127.0.0.1", 6379),
    ];
    let rows = judge(&sockets, &[], Against::Ruleset(&r));
    let advice = |port| {
        find(
            &rows,
            Kind::Socket,
            Some(if port == 6379 { "127.0.0.1" } else { "0.0.0.0" }),
            port,
        )
        .advice
        .clone()
    };
    assert!(
        advice(5432).is_some_and(|a| a.starts_with("postgres is open to anyone")),
        "{:?}",
        advice(5432)
    );
    assert_eq!(advice(80), None, "a public web port open to all is meant");
    assert_eq!(advice(6379), None, "loopback");
    // Under the profile's drop policy 7000 is closed: nothing to do.
    assert_eq!(advice(7000), None);
    // The rule for 9999 has nothing behind it.
    let nothing = find(&rows, Kind::Profile, None, 9999);
    assert!(
        nothing
            .advice
            .as_deref()
            .is_some_and(|a| a.starts_with("nothing listens on 9999/tcp")),
        "{:?}",
        nothing.advice
    );
    // No table: everything listening is exposed, and unnamed.
    let rows = judge(&sockets, &[], Against::NoTable);
    let open = find(&rows, Kind::Socket, Some("0.0.0.0"), 7000);
    assert!(open
        .advice
        .as_deref()
        .is_some_and(|a| a.starts_with("bind it to 127.0.0.1")));
}
