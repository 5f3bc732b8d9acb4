//! `fwharden audit` in a test namespace with real sockets: listeners on
//! 0.0.0.0, 127.0.0.1, ::, one specific address and two interface-bound
//! sockets, judged by vps-profile before it is applied and after; the
//! verdicts, the "who" column, the JSON schema, the ports opened with
//! nothing behind them, the exit code, and what an unprivileged user sees.
//! The namespace's links are veth pairs with both ends in it: no packet
//! leaves it.

mod common;

use std::ffi::OsString;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};

use common::*;
use serde_json::Value;

/// The sockets of a test, open for as long as this lives.
struct Listeners {
    _tcp: Vec<TcpListener>,
    _udp: Vec<UdpSocket>,
    _bound: Vec<OwnedFd>,
}

/// A TCP listener on 0.0.0.0:`port` bound to interface `name`
/// (SO_BINDTODEVICE).
fn bound_to(name: &str, port: u16) -> OwnedFd {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(name)).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port)).unwrap();
    listen(&fd, Backlog::new(8).unwrap()).unwrap();
    fd
}

/// Links eth1 (198.51.100.1) and wg0 (10.0.0.1), and the listeners.
fn set_up(host: &Host) -> Listeners {
    for (name, addr) in [("eth1", "198.51.100.1/24"), ("wg0", "10.0.0.1/24")] {
        // A veth pair whose both ends stay in this namespace (no dummy
        // module needed).
        let peer = format!("{name}p");
        host.sh(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
        ]);
        host.sh(&["ip", "link", "set", &peer, "up"]);
        host.sh(&["ip", "addr", "add", addr, "dev", name]);
        host.sh(&["ip", "link", "set", name, "up"]);
    }
    host.sh(&["ip", "link", "set", "lo", "up"]);
    host.ns
        .run_in(|| Listeners {
            _tcp: vec![
                TcpListener::bind("0.0.0.0:6379").unwrap(),
                TcpListener::bind("127.0.0.1:6380").unwrap(),
                TcpListener::bind("[::]:22").unwrap(),
                TcpListener::bind("198.51.100.1:443").unwrap(),
            ],
            _udp: vec![UdpSocket::bind("0.0.0.0:8125").unwrap()],
            _bound: vec![bound_to("wg0", 5432), bound_to("eth1", 9000)],
        })
        .unwrap()
}

fn audit_json(host: &Host, args: &[&str], code: i32) -> Value {
    let mut all = vec!["--json", "audit"];
    all.extend(args);
    let out = host.expect(code, &all);
    serde_json::from_slice(&out.stdout).expect("audit --json is JSON")
}

/// The row for `proto` `port` (of `kind`).
fn row<'a>(v: &'a Value, kind: &str, proto: &str, port: u64) -> &'a Value {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == kind && r["protocol"] == proto && r["port"] == port)
        .unwrap_or_else(|| panic!("no {kind} row {proto} {port} in {v:#}"))
}

/// The "who" column as `interface=reach[sources]` strings.
fn who(r: &Value) -> Vec<String> {
    r["who"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let sources: Vec<&str> = w["sources"]
                .as_array()
                .map(|s| s.iter().map(|x| x.as_str().unwrap()).collect())
                .unwrap_or_default();
            format!(
                "{}={}{}",
                w["interface"].as_str().unwrap(),
                w["reach"].as_str().unwrap(),
                if sources.is_empty() {
                    String::new()
                } else {
                    format!("[{}]", sources.join(","))
                }
            )
        })
        .collect()
}

/// Every key a row has, with the JSON type of its value (null allowed
/// where a row may lack it).
fn check_schema(v: &Value) {
    let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        top,
        [
            "counts",
            "not_seen",
            "notes",
            "rows",
            "ruleset",
            "unnamed_exposed"
        ]
    );
    assert!(v["unnamed_exposed"].is_u64());
    assert!(v["ruleset"]["from"].is_string());
    for r in v["rows"].as_array().unwrap() {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "address",
                "advice",
                "container",
                "interface",
                "kind",
                "named_by",
                "port",
                "port_last",
                "process",
                "protocol",
                "uid",
                "unnamed",
                "verdict",
                "who"
            ],
            "{r}"
        );
        assert!(r["port"].is_u64() && r["port_last"].is_u64() && r["unnamed"].is_boolean());
        assert!(r["address"].is_string() || r["address"].is_null());
        assert!(r["advice"].is_string() || r["advice"].is_null());
        assert!(
            r["process"].is_null()
                || (r["process"]["pid"].is_u64() && r["process"]["name"].is_string())
        );
        assert!([
            "exposed",
            "uncovered",
            "unknown",
            "restricted",
            "closed",
            "nothing-listening",
            "loopback"
        ]
        .contains(&r["verdict"].as_str().unwrap()));
        for w in r["who"].as_array().unwrap() {
            assert!(w["interface"].is_string());
            let reach = w["reach"].as_str().unwrap();
            assert!(["anyone", "sources", "nobody"].contains(&reach), "{w}");
            assert_eq!(w["sources"].is_array(), reach == "sources", "{w}");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn audit_judges_every_listener_by_vps_profile_before_and_after_applying_it() {
    needs_root("audit_judges_every_listener_by_vps_profile_before_and_after_applying_it");
    let host = Host::new("audit");
    let _listeners = set_up(&host);

    let before = audit_json(&host, &["vps-profile"], 0);
    assert_eq!(before["ruleset"]["from"], "profile");
    check_schema(&before);
    host.confirm_profile("vps-profile");
    host.wait_quiet();
    let after = audit_json(&host, &[], 0);
    assert_eq!(after["ruleset"]["from"], "kernel");
    assert_eq!(after["ruleset"]["profile"], "vps-profile");
    assert_eq!(before["rows"], after["rows"], "before and after applying");
    assert_eq!(before["counts"], after["counts"]);

    let v = &after;
    let me = std::process::id();
    let redis = row(v, "socket", "tcp", 6379);
    assert_eq!(redis["verdict"], "restricted");
    assert_eq!(who(redis), ["wg0=sources[wg-net]", "other=nobody"]);
    assert_eq!(redis["address"], "0.0.0.0");
    assert_eq!(redis["process"]["pid"], me, "owned by this test");

    let local = row(v, "socket", "tcp", 6380);
    assert_eq!(local["verdict"], "loopback");
    assert_eq!(who(local), Vec::<String>::new());

    let ssh = row(v, "socket", "tcp", 22);
    assert_eq!(ssh["address"], "::");
    assert_eq!(ssh["verdict"], "restricted");
    assert_eq!(who(ssh), ["any=sources[admin,wg-net]"]);

    let web = row(v, "socket", "tcp", 443);
    assert_eq!(web["address"], "198.51.100.1");
    assert_eq!(web["verdict"], "exposed");
    assert_eq!(who(web), ["any=anyone"]);
    assert_eq!(web["named_by"], "vps-profile.toml:15 public web");
    assert_eq!(web["unnamed"], false);

    let pg = row(v, "socket", "tcp", 5432);
    assert_eq!(
        (pg["interface"].as_str(), pg["verdict"].as_str()),
        (Some("wg0"), Some("restricted"))
    );
    assert_eq!(who(pg), ["wg0=sources[wg-net]"]);

    let bound = row(v, "socket", "tcp", 9000);
    assert_eq!(
        (bound["interface"].as_str(), bound["verdict"].as_str()),
        (Some("eth1"), Some("closed"))
    );
    assert_eq!(who(bound), ["eth1=nobody"]);

    let udp = row(v, "socket", "udp", 8125);
    assert_eq!(udp["verdict"], "closed");

    // Opened by the profile, nothing listening: HTTP and WireGuard.
    let idle: Vec<String> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "nothing-listening")
        .map(|r| format!("{}/{}", r["port"], r["protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(idle, ["80/tcp", "51820/udp"]);
    assert_eq!(who(row(v, "profile", "udp", 51820)), ["any=anyone"]);
    assert_eq!(v["unnamed_exposed"], 0);

    // Sorted by verdict, exposed first.
    let order = [
        "exposed",
        "uncovered",
        "unknown",
        "restricted",
        "closed",
        "nothing-listening",
        "loopback",
    ];
    let ranks: Vec<usize> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| order.iter().position(|o| r["verdict"] == *o).unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");

    // The table says the same, exposed row first.
    let text = stdout(&host.expect(0, &["audit"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("VERDICT"), "{text}");
    assert!(
        lines[2].starts_with("exposed")
            && lines[2].contains("198.51.100.1")
            && lines[2].ends_with("anyone  [vps-profile.toml:15 public web]"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("0.0.0.0%wg0") && l.ends_with("wg0: wg-net")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("restricted")
            && l.contains(" 6379 ")
            && l.ends_with("wg0: wg-net; other: nobody")),
        "{text}"
    );

    // status: one line of it.
    let status = host.status();
    assert_eq!(
        status["exposure"],
        "1 exposed, 3 restricted, 2 closed, 2 nothing-listening, 1 loopback"
    );
    let text = stdout(&host.expect(0, &["status"]));
    assert!(
        text.contains("exposure:          1 exposed, 3 restricted"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root"]
fn audit_exits_7_for_a_port_open_to_anyone_that_the_profile_does_not_name() {
    needs_root("audit_exits_7_for_a_port_open_to_anyone_that_the_profile_does_not_name");
    let host = Host::new("audit7");
    host.sh(&["ip", "link", "set", "lo", "up"]);
    let _l = host
        .ns
        .run_in(|| TcpListener::bind("0.0.0.0:8080").unwrap())
        .unwrap();
    // No table: nothing of ours filters.
    let v = audit_json(&host, &[], 7);
    assert_eq!(v["ruleset"]["from"], "none");
    let r = row(&v, "socket", "tcp", 8080);
    assert_eq!(
        (r["verdict"].as_str(), r["unnamed"].as_bool()),
        (Some("exposed"), Some(true))
    );
    assert_eq!(v["unnamed_exposed"], 1);
    // With what to do about it, in JSON and under its row.
    assert!(
        r["advice"]
            .as_str()
            .is_some_and(|a| a.starts_with("bind it to 127.0.0.1")),
        "{r}"
    );
    let table = stdout(&host.expect(7, &["audit"]));
    assert!(table.contains("  -> bind it to 127.0.0.1"), "{table}");
    // A profile whose policy lets it in: exposed, named by nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(
        &path,
        "description = \"t\"\n[defaults]\ninput = \"accept\"\n[[rule]]\nallow = \"http\"\n",
    )
    .unwrap();
    let v = audit_json(&host, &[path.to_str().unwrap()], 7);
    assert_eq!(row(&v, "socket", "tcp", 8080)["named_by"], Value::Null);
    let err = stderr(&host.expect(7, &["audit", path.to_str().unwrap()]));
    assert!(
        err.contains("1 port(s) reachable from anywhere that the profile does not name"),
        "{err}"
    );
    // Judged by vps-profile, it is closed.
    let v = audit_json(&host, &["vps-profile"], 0);
    assert_eq!(row(&v, "socket", "tcp", 8080)["verdict"], "closed");
}

/// fwharden as nobody inside the host's namespace.
fn as_nobody(host: &Host, args: &[&str]) -> std::process::Output {
    let mut fw = fw_args(host.dir());
    if let Some(i) = fw.iter().position(|a| a == "--profile-dir") {
        fw.drain(i..i + 2);
    }
    let mut cmd = host.ns.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_fwharden"))
        .args(fw)
        .args(args);
    harness_env(&mut cmd);
    cmd.output().unwrap()
}

#[test]
#[ignore = "needs root"]
fn without_root_audit_sees_the_sockets_and_says_what_it_could_not_see() {
    needs_root("without_root_audit_sees_the_sockets_and_says_what_it_could_not_see");
    let host = Host::new("auditu");
    let _listeners = set_up(&host);
    host.confirm_profile("vps-profile");
    host.wait_quiet();
    let root = audit_json(&host, &[], 0);

    // Judged by the profile: the same verdicts; the owners (this test,
    // root) are hidden from nobody, and it says so.
    let out = as_nobody(&host, &["--json", "audit", "vps-profile"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let strip = |v: &Value| -> Vec<Value> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["process"] = Value::Null;
                r
            })
            .collect()
    };
    assert_eq!(strip(&v), strip(&root));
    assert!(v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["process"].is_null()));
    let not_seen = v["not_seen"].to_string();
    assert!(
        not_seen.contains("could not be looked into") && not_seen.contains("root"),
        "{not_seen}"
    );

    // Without a profile the loaded ruleset cannot be read: unknown, exit 1.
    let out = as_nobody(&host, &["--json", "audit"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ruleset"]["from"], "unknown");
    assert_eq!(row(&v, "socket", "tcp", 6379)["verdict"], "unknown");
    assert_eq!(row(&v, "socket", "tcp", 6380)["verdict"], "loopback");
    assert!(v["not_seen"].to_string().contains("audit PROFILE"), "{v}");
}
