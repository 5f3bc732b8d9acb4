//! The ban guard (issue 23) against a real kernel in throwaway namespaces:
//! `ban` refuses (exit 4) the operator's SSH client, loopback, unspecified,
//! multicast, broadcast, this host's addresses and exempt members, and a
//! TCP connection established before each refusal still exchanges data
//! after it; `--force` bans what may be overridden and never loopback;
//! `::ffff:a.b.c.d` is banned (and unbanned) as IPv4; the ban chain never
//! drops loopback, even with 127.0.0.1 in a ban set; `apply` warns when
//! the operator's address is banned.
//!
//! Topology: the host namespace (10.98.0.1/24, a listener on port 22) and
//! the operator's peer (10.98.0.3), linked by a veth pair only.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;
use fwharden::netns::Netns;

const HOST: &str = "10.98.0.1";
const OPERATOR: &str = "10.98.0.3";

fn profile(dir: &Path) {
    std::fs::write(
        dir.join("banned.toml"),
        "[groups]\nadmin = [\"192.0.2.0/24\"]\n\
         [bans]\nenabled = true\nexempt = [\"admin\"]\n[[rule]]\nallow = \"ssh\"\n",
    )
    .unwrap();
}

/// A TCP connection from the peer to the host, both ends held here.
struct Live {
    client: TcpStream,
    server: TcpStream,
}

impl Live {
    fn open(host: &Netns, peer: &Netns) -> (Live, TcpListener) {
        let listener = host
            .run_in(|| TcpListener::bind(format!("{HOST}:22")))
            .unwrap()
            .unwrap();
        let to: SocketAddr = format!("{HOST}:22").parse().unwrap();
        let client = peer
            .run_in(|| TcpStream::connect_timeout(&to, Duration::from_secs(10)))
            .unwrap()
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        (Live { client, server }, listener)
    }

    /// Whether a message goes there and back.
    fn exchanges(&mut self, what: &str) -> bool {
        let msg = what.as_bytes();
        let mut buf = vec![0u8; msg.len()];
        let there = self.client.write_all(msg).is_ok() && self.server.read_exact(&mut buf).is_ok();
        let back = there
            && self.server.write_all(&buf).is_ok()
            && self.client.read_exact(&mut buf).is_ok();
        back && buf == msg
    }
}

#[test]
#[ignore = "needs root"]
fn ban_refuses_what_would_cut_the_operator_or_the_host_and_force_overrides_the_rest() {
    let test = "ban_refuses_what_would_cut_the_operator_or_the_host_and_force_overrides_the_rest";
    needs_root(test);
    let host = Host::new("bguard");
    let peer = Netns::create("bguardp").unwrap();
    host.ns
        .link(
            &peer,
            &[&format!("{HOST}/24")],
            &[&format!("{OPERATOR}/24")],
        )
        .unwrap();
    let profiles = tempfile::tempdir().unwrap();
    profile(profiles.path());
    host.confirm_from(profiles.path(), "banned");
    let (mut live, _listener) = Live::open(&host.ns, &peer);
    assert!(live.exchanges("before"));

    let operator = format!("{OPERATOR} 50000 {HOST} 22");
    let ban = |args: &[&str]| {
        host.fw()
            .env("SSH_CONNECTION", &operator)
            .args(["--profile-dir", profiles.path().to_str().unwrap(), "ban"])
            .args(args)
            .output()
            .unwrap()
    };
    for (addr, why) in [
        (
            OPERATOR,
            "it is your SSH client (SSH client 10.98.0.3 (to port 22), from SSH_CONNECTION)",
        ),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("10.98.0.255", "broadcast"),
        (HOST, "an address of this host (interface "),
        ("192.0.2.9", "exempts from bans"),
    ] {
        let out = ban(&[addr]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "ban {addr}: {err}");
        assert!(
            err.contains(why) && err.contains("fwharden: refused: "),
            "ban {addr}: {err}"
        );
        assert!(
            live.exchanges(addr),
            "the live connection died after ban {addr}"
        );
    }
    let listed = host.expect(0, &["--json", "bans"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(v["bans"], serde_json::json!([]), "a refusal banned: {v}");

    // --force never overrides loopback or unspecified.
    for addr in ["127.0.0.1", "::1", "0.0.0.0"] {
        let out = ban(&[addr, "--force"]);
        assert_eq!(out.status.code(), Some(4), "ban {addr} --force");
        assert!(stderr(&out).contains("--force does not override"));
    }
    // It does override the rest: the host's own address, banned. The
    // host's traffic to itself still flows (the ban chain passes lo).
    let out = ban(&[HOST, "--force", "--timeout", "10m"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(host.ban_of(HOST).unwrap()["set"], "ban_v4");
    let to: SocketAddr = format!("{HOST}:22").parse().unwrap();
    let local = host
        .ns
        .run_in(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)).is_ok())
        .unwrap();
    assert!(local, "a ban of the host's own address cut its own traffic");
    assert!(live.exchanges("after a forced ban"));
    host.expect(0, &["unban", HOST]);

    // An IPv4-mapped address is banned, and unbanned, as IPv4.
    host.expect(0, &["ban", "::ffff:203.0.113.7"]);
    let b = host.ban_of("203.0.113.7").expect("banned as IPv4");
    assert_eq!(b["set"], "ban_v4");
    assert!(host.ban_of("::ffff:203.0.113.7").is_none());
    host.expect(0, &["unban", "::ffff:203.0.113.7"]);
    assert!(host.ban_of("203.0.113.7").is_none());
    host.wait_quiet();
}

#[test]
#[ignore = "needs root"]
fn the_ban_chain_passes_loopback_even_with_127_0_0_1_banned() {
    let test = "the_ban_chain_passes_loopback_even_with_127_0_0_1_banned";
    needs_root(test);
    let host = Host::new("bguardlo");
    let profiles = tempfile::tempdir().unwrap();
    profile(profiles.path());
    host.confirm_from(profiles.path(), "banned");
    let chain = host.sh(&["nft", "list", "chain", "inet", "fwharden-bans", "input"]);
    let lo = chain.find("iifname \"lo\"").expect("a loopback rule");
    assert!(
        lo < chain.find("@ban_v4").unwrap(),
        "the loopback rule comes after a ban lookup:\n{chain}"
    );
    // Past fwharden's refusal, by hand, as another ban tool could.
    for (set, addr) in [("ban_v4", "127.0.0.1"), ("ban_v6", "::1")] {
        host.sh(&[
            "nft",
            "add",
            "element",
            "inet",
            "fwharden-bans",
            set,
            &format!("{{ {addr} timeout 1h }}"),
        ]);
    }
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let ok = host
            .ns
            .run_in(|| {
                let l = TcpListener::bind(addr).unwrap();
                let mut c =
                    TcpStream::connect_timeout(&l.local_addr().unwrap(), Duration::from_secs(5))?;
                let (mut s, _) = l.accept()?;
                c.write_all(b"lo")?;
                let mut buf = [0u8; 2];
                s.read_exact(&mut buf)?;
                Ok::<_, std::io::Error>(buf == *b"lo")
            })
            .unwrap();
        assert!(
            ok.unwrap_or(false),
            "loopback {addr} was dropped with it in a ban set"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn apply_warns_when_the_operators_address_is_banned() {
    let test = "apply_warns_when_the_operators_address_is_banned";
    needs_root(test);
    let host = Host::new("bguardw");
    let profiles = tempfile::tempdir().unwrap();
    profile(profiles.path());
    host.confirm_from(profiles.path(), "banned");
    host.expect(0, &["ban", "203.0.113.50"]);
    let apply = |json: bool| {
        let mut c = host.fw();
        c.env("SSH_CONNECTION", "203.0.113.50 50000 10.98.0.1 22")
            .args(["--profile-dir", profiles.path().to_str().unwrap()]);
        if json {
            c.arg("--json");
        }
        c.args(["apply", "banned", "--auto-confirm", "--no-probe"])
            .output()
            .unwrap()
    };
    let out = apply(false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("warning: your address 203.0.113.50 is banned (set ban_v4")
            && stderr(&out).contains("fwharden unban 203.0.113.50"),
        "{}",
        stderr(&out)
    );
    let out = apply(true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["ban_warning"]
            .as_str()
            .is_some_and(|w| w.contains("203.0.113.50")),
        "{v}"
    );
    assert_eq!(v["ssh_client"]["method"], "environment", "{v}");
    // Not banned: no warning.
    host.expect(0, &["unban", "203.0.113.50"]);
    let out = apply(false);
    assert!(!stderr(&out).contains("is banned"), "{}", stderr(&out));
    host.wait_quiet();
}
