//! The two clients of the Docker tests, each a namespace linked to the
//! Docker host's namespace by a veth pair and to nothing else:
//!
//! ```text
//!   inet (198.51.100.2) --eth0-- host (Docker) --wg0-- wg (10.8.0.2)
//! ```
//!
//! "inet" is the internet, a source in no group; "wg" is the WireGuard
//! group's side. The host's interfaces have the names a profile names.
#![allow(dead_code)]

use std::process::Stdio;

use fwharden::netns::Netns;

pub const HOST_INET: &str = "198.51.100.1";
pub const INET_PEER: &str = "198.51.100.2";
pub const HOST_WG: &str = "10.8.0.1";
pub const WG_PEER: &str = "10.8.0.2";
pub const WG_NET: &str = "10.8.0.0/24";

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
        veth(host, "eth0", &inet, HOST_INET, INET_PEER);
        veth(host, "wg0", &wg, HOST_WG, WG_PEER);
        Clients { inet, wg }
    }

    /// The client's namespace and the host address it connects to.
    pub fn side(&self, client: Client) -> (&Netns, &'static str) {
        match client {
            Client::Inet => (&self.inet, HOST_INET),
            Client::Wg => (&self.wg, HOST_WG),
        }
    }

    /// Whether a TCP connection from `client` to its host address and
    /// `port` is answered by the container's `hello` (a dropped SYN gives
    /// up after 2 s).
    pub fn reaches(&self, client: Client, port: u16) -> bool {
        let (ns, addr) = self.side(client);
        ns.verify().unwrap();
        let out = ns
            .command("timeout")
            .args(["5", "busybox", "nc", "-w", "2", addr, &port.to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("hello")
    }

    /// Checks every (client, port, expected) at once, in parallel, and
    /// reports every mismatch.
    pub fn assert_matrix(&self, stage: &str, cases: &[(Client, u16, bool)]) {
        let wrong: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = cases
                .iter()
                .map(|&(client, port, expected)| {
                    s.spawn(move || {
                        let got = self.reaches(client, port);
                        (got != expected).then(|| {
                            let want = if expected { "open" } else { "filtered" };
                            let addr = self.side(client).1;
                            format!("{client:?} -> {addr}:{port}: expected {want}")
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
}

/// A veth pair: `name` with `host_addr`/24 in `host`, `up0` with
/// `peer_addr`/24 in `peer`.
fn veth(host: &Netns, name: &str, peer: &Netns, host_addr: &str, peer_addr: &str) {
    let add = [
        "ip", "link", "add", name, "type", "veth", "peer", "name", "up0", "netns",
    ];
    host.run(&[&add[..], &[peer.name()]].concat()).unwrap();
    let host_cidr = format!("{host_addr}/24");
    host.run(&["ip", "addr", "add", &host_cidr, "dev", name])
        .unwrap();
    host.run(&["ip", "link", "set", name, "up"]).unwrap();
    let peer_cidr = format!("{peer_addr}/24");
    peer.run(&["ip", "addr", "add", &peer_cidr, "dev", "up0"])
        .unwrap();
    peer.run(&["ip", "link", "set", "up0", "up"]).unwrap();
}
