//! `fwharden scan` between namespaces: a host namespace loaded with
//! vps-profile, scanned from an allowed vantage point (an admin address)
//! and from a denied one (an address in no group). Every address here
//! lives in namespaces this test created.

mod common;

use std::net::{Ipv6Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fwharden::netns::Netns;

/// Services on the scanned host: TCP listeners and a UDP echo, in its
/// namespace, for as long as this lives.
struct Services {
    _tcp: Vec<TcpListener>,
    stop: Arc<AtomicBool>,
    echo: Option<std::thread::JoinHandle<()>>,
}

impl Services {
    fn start(ns: &Netns, tcp: &[u16], udp: u16) -> Services {
        let (tcp, udp) = ns
            .run_in(|| {
                let tcp: Vec<TcpListener> = tcp
                    .iter()
                    .map(|p| TcpListener::bind((Ipv6Addr::UNSPECIFIED, *p)).unwrap())
                    .collect();
                // Bound to the scanned address, so the reply leaves from it
                // whatever the route back (the outsider's is the other link).
                (tcp, UdpSocket::bind(("192.0.2.1", udp)).unwrap())
            })
            .unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
        Services {
            _tcp: tcp,
            stop,
            echo: Some(echo),
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.echo.take() {
            let _ = t.join();
        }
    }
}

fn scan_from(scanner: &Netns, host: &Host, args: &[&str]) -> std::process::Output {
    fw_in(scanner, host.dir())
        .args(["scan", "192.0.2.1", "--wait-ms", "300"])
        .args(args)
        .output()
        .unwrap()
}

/// A host namespace holding vps-profile (confirmed), an admin namespace
/// (192.0.2.10) and an outsider in no group (203.0.113.9), each linked to
/// the host by a veth pair; the host's services listening.
fn lab(tag: &str) -> (Host, Netns, Netns, Services) {
    let host = Host::new(tag);
    host.confirm_profile("vps-profile");
    let admin = Netns::create(&format!("{tag}a")).unwrap();
    let outsider = Netns::create(&format!("{tag}o")).unwrap();
    host.ns
        .link(&admin, &["192.0.2.1/24"], &["192.0.2.10/24"])
        .unwrap();
    host.ns
        .link(&outsider, &["203.0.113.1/24"], &["203.0.113.9/24"])
        .unwrap();
    // The outsider reaches 192.0.2.1 through the host's other address.
    outsider
        .run(&["ip", "route", "add", "192.0.2.1/32", "via", "203.0.113.1"])
        .unwrap();
    let services = Services::start(&host.ns, &[22, 80, 443, 5432, 6379], 51820);
    (host, admin, outsider, services)
}

#[test]
#[ignore = "needs root"]
fn scan_checks_a_live_host_from_an_allowed_and_a_denied_vantage_point() {
    needs_root("scan_checks_a_live_host_from_an_allowed_and_a_denied_vantage_point");
    let host_before = host_tables();
    let (host, admin, outsider, _services) = lab("scanned");

    // Allowed: an admin address reaches SSH and the web, not the databases.
    let out = scan_from(
        &admin,
        &host,
        &["--profile", "vps-profile", "--from", "admin"],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    let row = |port: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(3) == Some(port))
            .unwrap_or_else(|| panic!("no row {port}:\n{text}"))
            .to_string()
    };
    assert!(row("22/tcp").contains("open      open"), "{text}");
    assert!(row("5432/tcp").contains("filtered  filtered"), "{text}");
    assert!(row("51820/udp").contains("open      open"), "{text}");
    assert!(row("22/tcp").contains("192.0.2.10"), "{text}");

    // The outsider is not an admin, and says so.
    let out = scan_from(
        &outsider,
        &host,
        &["--profile", "vps-profile", "--from", "admin"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("203.0.113.9, which is not in group admin"),
        "{}",
        stderr(&out)
    );

    // Denied: from no group, SSH is filtered, the web open.
    let out = scan_from(
        &outsider,
        &host,
        &["--json", "--profile", "vps-profile", "--from", "any"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let find = |s: &str| rows.iter().find(|r| r["service"] == s).unwrap().clone();
    assert_eq!(find("22/tcp")["got"]["detail"], "filtered", "{v}");
    assert_eq!(find("443/tcp")["got"]["detail"], "open", "{v}");
    assert!(rows.iter().all(|r| r["source"] == "203.0.113.9"), "{v}");

    // A host that does not hold what the profile says: ssh-only expects
    // SSH from anywhere, and the mismatch is named.
    let out = scan_from(
        &outsider,
        &host,
        &["--profile", "ssh-only", "--from", "any"],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(6), "{text}");
    let first = text.lines().nth(1).unwrap();
    assert!(
        first.starts_with("MISMATCH") && first.contains("22/tcp") && first.contains("filtered"),
        "{text}"
    );
    assert_eq!(
        host_tables(),
        host_before,
        "the machine's own ruleset changed"
    );
}

/// `--ports all`: every TCP port the profile does not name is checked
/// too, so a port accepted behind fwharden's back, by a rule that names
/// none of the profile's ports, fails the scan.
#[test]
#[ignore = "needs root"]
fn a_sweep_of_every_port_catches_one_accepted_behind_fwharden_s_back() {
    needs_root("a_sweep_of_every_port_catches_one_accepted_behind_fwharden_s_back");
    let (host, _admin, outsider, _services) = lab("sweep");
    let args = [
        "--profile",
        "vps-profile",
        "--from",
        "any",
        "--ports",
        "all",
    ];
    let out = scan_from(&outsider, &host, &args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    // Every port but the few the profile names is swept, and each one
    // answers as the profile says.
    let (swept, quiet) = swept_counts(&text);
    assert!(swept > 65_000 && quiet == swept, "{text}");

    // One more port accepted, where nothing listens: from outside it
    // answers with a reset, reachable where the profile says filtered.
    host.sh(&[
        "nft", "insert", "rule", "inet", "fwharden", "input", "tcp", "dport", "4444", "accept",
    ]);
    let out = scan_from(&outsider, &host, &args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(6), "{text}\n{}", stderr(&out));
    let first = text.lines().nth(1).unwrap_or_default();
    assert!(
        first.starts_with("MISMATCH") && first.contains("4444/tcp"),
        "{text}"
    );
    // Without the sweep, the plan's ports alone pass: that is the gap.
    let out = scan_from(&outsider, &host, &args[..4]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // The thousand TCP and thousand UDP ports scanners try first: 4444
    // (krb524 in nmap's list) is among them, and it alone is not as the
    // profile says.
    let out = scan_from(&outsider, &host, &[&args[..5], &["top"]].concat());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(6), "{text}\n{}", stderr(&out));
    let (swept, quiet) = swept_counts(&text);
    assert!(swept > 1_900 && quiet == swept - 1, "{text}");
    assert!(
        text.lines().nth(1).unwrap_or_default().contains("4444/tcp"),
        "{text}"
    );
}

/// The two numbers of the sweep's note: "swept N ports the profile does
/// not name (M as it says, ...".
fn swept_counts(text: &str) -> (usize, usize) {
    let note = text
        .split("swept ")
        .nth(1)
        .unwrap_or_else(|| panic!("no sweep note in:\n{text}"));
    let number = |s: &str| -> usize {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("no number at {s:?}"))
    };
    let swept = number(note);
    let quiet = note
        .split_once('(')
        .map(|(_, rest)| number(rest))
        .unwrap_or_else(|| panic!("no count in {note:?}"));
    (swept, quiet)
}
