//! The two clients of the Docker tests, each a namespace linked to the
//! Docker host's namespace by a veth pair and to nothing else:
//!
//! ```text
//!   inet (198.51.100.2)  --eth0-- host (Docker) --wg0-- wg (10.8.0.2)
//!        (2001:db8:51::2)                                  (fd00:8::2)
//! ```
//!
//! "inet" is the internet, a source in no group; "wg" is the WireGuard
//! group's side. The host's interfaces have the names a profile names.
//! Each link has an address of both families; a check asks over one.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use fwharden::netns::Netns;

use super::engine::Engine;
use crate::common::{stdout, wait_until};
pub use fwharden::ruleset::Family;

pub const HOST_INET: &str = "198.51.100.1";
pub const INET_PEER: &str = "198.51.100.2";
pub const HOST_WG: &str = "10.8.0.1";
pub const WG_PEER: &str = "10.8.0.2";
pub const WG_NET: &str = "10.8.0.0/24";
pub const HOST_INET6: &str = "2001:db8:51::1";
pub const INET6_PEER: &str = "2001:db8:51::2";
pub const HOST_WG6: &str = "fd00:8::1";
pub const WG6_PEER: &str = "fd00:8::2";
pub const WG6_NET: &str = "fd00:8::/64";

/// Which client a case connects from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Inet,
    Wg,
}

/// What the profiles of the Docker tests promise for the container
/// published as 6379, 80, 443 and 8081: web from anywhere, Redis from the
/// group, 8081 named by no rule.
pub const PROFILE_MATRIX: &[(Client, u16, bool)] = &[
    (Client::Wg, 6379, true),
    (Client::Inet, 6379, false),
    (Client::Inet, 80, true),
    (Client::Inet, 443, true),
    (Client::Wg, 443, true),
    (Client::Inet, 8081, false),
    (Client::Wg, 8081, false),
];

pub struct Clients {
    pub inet: Netns,
    pub wg: Netns,
}

impl Clients {
    /// Creates both clients (`tag` names their namespaces) and links them
    /// to `host`: inet on the host's eth0, wg on its wg0.
    pub fn link(host: &Netns, tag: &str) -> Clients {
        let inet = Netns::create(&format!("{tag}inet")).unwrap();
        let wg = Netns::create(&format!("{tag}wg")).unwrap();
        veth(
            host,
            "eth0",
            &inet,
            [HOST_INET, INET_PEER],
            [HOST_INET6, INET6_PEER],
        );
        veth(host, "wg0", &wg, [HOST_WG, WG_PEER], [HOST_WG6, WG6_PEER]);
        Clients { inet, wg }
    }

    /// The client's namespace and the IPv4 host address it connects to.
    pub fn side(&self, client: Client) -> (&Netns, &'static str) {
        self.side_over(Family::Ipv4, client)
    }

    /// The client's namespace and the host address of `family` it
    /// connects to.
    pub fn side_over(&self, family: Family, client: Client) -> (&Netns, &'static str) {
        match (client, family) {
            (Client::Inet, Family::Ipv4) => (&self.inet, HOST_INET),
            (Client::Inet, Family::Ipv6) => (&self.inet, HOST_INET6),
            (Client::Wg, Family::Ipv4) => (&self.wg, HOST_WG),
            (Client::Wg, Family::Ipv6) => (&self.wg, HOST_WG6),
        }
    }

    /// Whether a TCP connection from `client` to its IPv4 host address and
    /// `port` is answered by the container's `hello` (a dropped SYN gives
    /// up after 2 s).
    pub fn reaches(&self, client: Client, port: u16) -> bool {
        self.reaches_over(Family::Ipv4, client, port)
    }

    /// [`Clients::reaches`] over `family`.
    pub fn reaches_over(&self, family: Family, client: Client, port: u16) -> bool {
        let (ns, addr) = self.side_over(family, client);
        ns.verify().unwrap();
        let out = ns
            .command("timeout")
            .args(["5", "busybox", "nc", "-w", "2", addr, &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("hello")
    }

    /// Checks every (client, port, expected) over IPv4 at once, in
    /// parallel, and reports every mismatch.
    pub fn assert_matrix(&self, stage: &str, cases: &[(Client, u16, bool)]) {
        self.assert_matrix_over(Family::Ipv4, stage, cases)
    }

    /// [`Clients::assert_matrix`] over `family`.
    pub fn assert_matrix_over(&self, family: Family, stage: &str, cases: &[(Client, u16, bool)]) {
        let wrong: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = cases
                .iter()
                .map(|&(client, port, expected)| {
                    s.spawn(move || {
                        let got = self.reaches_over(family, client, port);
                        (got != expected).then(|| {
                            let want = if expected { "open" } else { "filtered" };
                            let addr = self.side_over(family, client).1;
                            format!("{client:?} -> [{addr}]:{port}: expected {want}")
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert!(wrong.is_empty(), "{stage}: {wrong:?}");
    }

    /// Whether the container `redis` reaches a listener on the internet side within
    /// `limit` (one attempt when zero); `host` is the Docker host's namespace.
    pub fn container_reaches_out(&self, engine: &Engine, host: &Netns, limit: Duration) -> bool {
        let mut listener = self
            .inet
            .command("busybox")
            .args(["nc", "-ll", "-p", "7000", "-e", "/bin/echo", "outbound"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Listening before the container tries: the host's own connection is
        // not forwarded, so no chain of the test stands in its way.
        let listening = wait_until(Duration::from_secs(10), || {
            let out = host
                .command("timeout")
                .args(["5", "busybox", "nc", "-w", "2", INET_PEER, "7000"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            stdout(&out).contains("outbound")
        });
        let attempt = || {
            let out = engine.docker(&[
                "exec",
                "redis",
                "/bin/busybox",
                "nc",
                "-w",
                "2",
                INET_PEER,
                "7000",
            ]);
            stdout(&out).contains("outbound")
        };
        let reached = match (listening, limit.is_zero()) {
            (false, _) => None,
            (true, true) => Some(attempt()),
            (true, false) => Some(wait_until(limit, attempt)),
        };
        let _ = listener.kill();
        let _ = listener.wait();
        reached.expect("the listener on the internet side answers the host")
    }
}

/// A veth pair: `name` in `host`, `up0` in `peer`, with the (host, peer)
/// addresses `v4` in a /24 and `v6` in a /64. The IPv6 ones skip duplicate
/// address detection (`nodad`), so they are usable at once.
fn veth(host: &Netns, name: &str, peer: &Netns, v4: [&str; 2], v6: [&str; 2]) {
    let add = [
        "ip", "link", "add", name, "type", "veth", "peer", "name", "up0", "netns",
    ];
    host.run(&[&add[..], &[peer.name()]].concat()).unwrap();
    for (ns, dev, i) in [(host, name, 0), (peer, "up0", 1)] {
        let cidr4 = format!("{}/24", v4[i]);
        ns.run(&["ip", "addr", "add", &cidr4, "dev", dev]).unwrap();
        let cidr6 = format!("{}/64", v6[i]);
        ns.run(&["ip", "addr", "add", &cidr6, "dev", dev, "nodad"])
            .unwrap();
        ns.run(&["ip", "link", "set", dev, "up"]).unwrap();
    }
}
