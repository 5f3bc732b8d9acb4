//! Published container ports over IPv6, against a real Docker daemon
//! (Debian's docker.io 20.10) started with IPv6 and ip6tables, so that it
//! publishes ports by ip6tables DNAT as it does by iptables DNAT over IPv4.
//! Three namespaces, linked by veth pairs and to nothing else:
//!
//! ```text
//!   inet (2001:db8:51::2) --eth0-- host (Docker, fwharden) --wg0-- wg (fd00:8::2)
//! ```
//!
//! One container listens on 6379 and is published as 6379, 80, 443 and
//! 8081 of the host; the WireGuard group holds a prefix of each family.
//! The profile's matrix must hold over IPv6 as over IPv4, with fwharden's
//! nftables table.

mod common;
mod docker {
    pub mod clients;
    pub mod engine;
}

use std::path::Path;
use std::time::Duration;

use common::*;
use docker::clients::{
    Client, Clients, Family, INET6_PEER, INET_PEER, PROFILE_MATRIX, WG6_PEER, WG_PEER,
};
use docker::engine::{have_docker, Engine, IPV6_FLAGS};
use fwharden::netns::Netns;
use fwharden::profile::{load, SearchPath};
use fwharden::ruleset::eval::{evaluate_published, Meters, Packet};
use fwharden::ruleset::{CtState, Protocol};

const PROFILE: &str = r#"description = "Redis in Docker, for the tunnel only, over both families"
[groups]
wg = ["10.8.0.0/24", "fd00:8::/64"]
[[rule]]
allow = ["http", "https"]
[[rule]]
allow = "redis"
from = "wg"
"#;

const NAME: &str = "docker-ipv6";

const PUBLISH: &[&str] = &["6379:6379", "80:6379", "443:6379", "8081:6379"];

/// The profile in a directory of its own, checked first against the
/// model: [`PROFILE_MATRIX`] is what `ruleset::eval` decides for the
/// published ports, from the clients' addresses of both families, so the
/// matrix the kernel must pass is the model's.
fn profile_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(format!("{NAME}.toml")), PROFILE).unwrap();
    let ruleset = compiled(dir.path());
    for &(who, port, open) in PROFILE_MATRIX {
        let sources = match who {
            Client::Inet => [INET_PEER, INET6_PEER],
            Client::Wg => [WG_PEER, WG6_PEER],
        };
        for source in sources {
            let packet = Packet {
                source: source.parse().unwrap(),
                protocol: Protocol::Tcp,
                dport: port,
                interface: None,
                state: CtState::New,
            };
            let decision = evaluate_published(&ruleset, &packet, Meters::Fresh);
            assert_eq!(
                decision.accepted(),
                open,
                "{source} -> {port}: {decision:?}"
            );
        }
    }
    dir
}

fn compiled(dir: &Path) -> fwharden::ruleset::Ruleset {
    let loaded = load(NAME, &SearchPath::only(vec![dir.to_path_buf()]));
    fwharden::compile::compile(&loaded.profile.expect("a valid profile"))
}

/// What Docker wrote for IPv6, for the failure messages and the log.
fn docker_ip6tables(ns: &Netns) -> String {
    let nat = ns.run(&["ip6tables", "-w", "10", "-t", "nat", "-S"]);
    let filter = ns.run(&["ip6tables", "-w", "10", "-S", "FORWARD"]);
    let text = |r: Result<std::process::Output, _>| match r {
        Ok(o) => stdout(&o),
        Err(e) => format!("{e}"),
    };
    format!("{}{}", text(nat), text(filter))
}

/// Docker alone publishes the port over IPv6: the internet reaches it, so
/// the checks that follow can fail. The first connection is retried for a
/// while: the container's IPv6 address is tentative until its duplicate
/// address detection ends, and a DNAT'd SYN to it is dropped until then.
fn assert_open_without_fwharden(clients: &Clients, ns: &Netns, stage: &str) {
    let reached = wait_until(Duration::from_secs(20), || {
        clients.reaches_over(Family::Ipv6, Client::Inet, 6379)
    });
    let sysctl = ns
        .run(&["sysctl", "net.ipv6.conf.all.forwarding"])
        .map(|o| stdout(&o))
        .unwrap_or_default();
    assert!(
        reached,
        "{stage}: the internet does not reach the published 6379 over IPv6 ({sysctl}); Docker's ip6tables:\n{}",
        docker_ip6tables(ns)
    );
    clients.assert_matrix_over(
        Family::Ipv6,
        stage,
        &[(Client::Inet, 8081, true), (Client::Wg, 6379, true)],
    );
}

#[test]
fn published_ports_obey_the_profile_over_ipv6() {
    let test = "published_ports_obey_the_profile_over_ipv6";
    if !privileged(test) || !have_docker(test) {
        return;
    }
    let before = host_tables();
    let profiles = profile_dir();
    let host = Host::new("d6host");
    let clients = Clients::link(&host.ns, "d6");
    let mut engine = Engine::start_with(&host.ns, IPV6_FLAGS);
    engine.run_listener("redis", 6379, PUBLISH);
    eprintln!("Docker's ip6tables:\n{}", docker_ip6tables(&host.ns));
    assert_open_without_fwharden(&clients, &host.ns, "docker alone");

    let dir = profiles.path().to_str().unwrap();
    host.expect(0, &["--profile-dir", dir, "apply", NAME, "--auto-confirm"]);
    let table = host.table_text();
    assert!(table.contains("chain containers"), "{table}");
    clients.assert_matrix_over(Family::Ipv6, "with fwharden, IPv6", PROFILE_MATRIX);
    clients.assert_matrix_over(Family::Ipv4, "with fwharden, IPv4", PROFILE_MATRIX);

    // dockerd rewrites its ip6tables chains when it starts; ours hold.
    engine.stop_dockerd();
    engine.start_dockerd();
    assert!(
        wait_until(Duration::from_secs(30), || clients.reaches_over(
            Family::Ipv6,
            Client::Wg,
            6379
        )),
        "the container is back after the restart"
    );
    clients.assert_matrix_over(Family::Ipv6, "after a dockerd restart", PROFILE_MATRIX);

    drop(engine);
    drop(clients);
    drop(host);
    assert_eq!(
        host_tables(),
        before,
        "the machine's own tables are unchanged"
    );
}
