//! `emit --format iptables` against a real Docker daemon (Debian's
//! docker.io) in a test namespace: the emitted files, loaded with their
//! load.sh by the same `iptables` dockerd uses, hold published container
//! ports to the profile, through a dockerd restart, and a ban blocks a
//! published port. Three namespaces, linked by veth pairs and to nothing
//! else:
//!
//! ```text
//!   inet (198.51.100.2) ---- host (Docker, emitted rules) ---- wg (10.8.0.2)
//! ```
//!
//! One container listens on 6379 and is published as 6379, 80, 443 and
//! 8081 of the host: the profile allows web from anywhere, Redis from the
//! WireGuard group, and names 8081 nowhere.
//!
//! `emit --format ufw` holds the same matrix under the real ufw, run over
//! copies of its files ([`UfwSandbox`]) in the host namespace.

mod common;
mod docker {
    pub mod clients;
    pub mod engine;
}

use std::path::Path;
use std::time::Duration;

use common::ufw::{have_ufw, host_ufw_files, UfwSandbox};
use common::*;
use docker::clients::{Client, Clients, INET_PEER, PROFILE_MATRIX, WG_PEER};
use docker::engine::{have_docker, Engine};
use fwharden::emit::{self, Approximation};
use fwharden::netns::Netns;
use fwharden::profile::{load, SearchPath};
use fwharden::ruleset::eval::{evaluate_published, Meters, Packet};
use fwharden::ruleset::{CtState, Protocol};

const PROFILE: &str = r#"description = "Redis in Docker, for the tunnel only"
[groups]
wg = ["10.8.0.0/24"]
[bans]
enabled = true
timeout = "10m"
[[rule]]
allow = ["http", "https"]
[[rule]]
allow = "redis"
from = "wg"
"#;

struct Net {
    host: Netns,
    clients: Clients,
}

impl Net {
    fn new() -> Net {
        let host = Netns::create("dehost").unwrap();
        let clients = Clients::link(&host, "de");
        Net { host, clients }
    }

    /// `iptables ARGS` in the host namespace, its output.
    fn iptables(&self, args: &[&str]) -> String {
        let mut argv = vec!["iptables", "-w", "10"];
        argv.extend(args);
        stdout(&self.host.run(&argv).unwrap())
    }
}

/// The profile's emitted files for iptables, in a directory of their
/// own; `defaults` go in a `[defaults]` table before the rest.
fn emitted(defaults: &str) -> tempfile::TempDir {
    let (description, body) = PROFILE.split_once('\n').unwrap();
    let text = format!("{description}\n[defaults]\n{defaults}\n{body}");
    let e = emit::iptables(&checked(&text), Approximation::Refuse).unwrap();
    written(&e)
}

/// The same for ufw, without the profile's bans (ufw has no timeout sets).
fn emitted_ufw() -> tempfile::TempDir {
    let text = PROFILE.replace("[bans]\nenabled = true\ntimeout = \"10m\"\n", "");
    assert!(!text.contains("[bans]"));
    let e = emit::ufw::emit(&checked(&text), Approximation::Refuse).unwrap();
    written(&e)
}

/// The ruleset of profile `text`. Checks first that [`PROFILE_MATRIX`] is
/// what the model decides for the profile's published ports, so the
/// matrix the files must pass is the model's.
fn checked(text: &str) -> fwharden::ruleset::Ruleset {
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(profiles.path().join("docker-emit.toml"), text).unwrap();
    let loaded = load(
        "docker-emit",
        &SearchPath::only(vec![profiles.path().to_path_buf()]),
    );
    let ruleset = fwharden::compile::compile(&loaded.profile.expect("a valid profile"));
    for &(who, port, open) in PROFILE_MATRIX {
        let source = match who {
            Client::Inet => INET_PEER,
            Client::Wg => WG_PEER,
        };
        let packet = Packet {
            source: source.parse().unwrap(),
            protocol: Protocol::Tcp,
            dport: port,
            interface: None,
            state: CtState::New,
        };
        let decision = evaluate_published(&ruleset, &packet, Meters::Fresh);
        assert_eq!(decision.accepted(), open, "{who:?} -> {port}: {decision:?}");
    }
    ruleset
}

fn written(e: &emit::Emitted) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("fwharden-demit-")
        .tempdir()
        .unwrap();
    for f in &e.files {
        std::fs::write(dir.path().join(&f.name), &f.text).unwrap();
    }
    dir
}

fn load_sh(net: &Net, dir: &Path) {
    let script = dir.join(emit::LOAD_SCRIPT);
    net.host
        .run(&["sh", &script.to_string_lossy(), "--no-rollback"])
        .unwrap_or_else(|e| panic!("load.sh: {e}"));
}

/// The jumps into fwharden's chains, in DOCKER-USER's order.
fn ours_in_docker_user(net: &Net) -> Vec<String> {
    net.iptables(&["-S", "DOCKER-USER"])
        .lines()
        .filter(|l| l.starts_with("-A DOCKER-USER -j FWHARDEN-"))
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs root"]
fn emitted_iptables_hold_published_ports_through_a_dockerd_restart() {
    let test = "emitted_iptables_hold_published_ports_through_a_dockerd_restart";
    needs_root(test);
    if !have_docker(test) {
        return;
    }
    let before = host_tables();
    let files = emitted("");
    let net = Net::new();

    // Loaded before Docker runs: load.sh makes DOCKER-USER and the jump to
    // it from FORWARD, which dockerd then keeps.
    load_sh(&net, files.path());
    let mut engine = Engine::start(&net.host);
    engine.run_listener(
        "redis",
        6379,
        &["6379:6379", "80:6379", "443:6379", "8081:6379"],
    );
    let ours = [
        "-A DOCKER-USER -j FWHARDEN-BANS-FORWARD",
        "-A DOCKER-USER -j FWHARDEN-CONTAINERS",
    ];
    let forward = net.iptables(&["-S", "FORWARD"]);
    let user = net.iptables(&["-S", "DOCKER-USER"]);
    eprintln!("after dockerd started:\n{forward}{user}");
    assert_eq!(
        forward.lines().nth(1),
        Some("-A FORWARD -j DOCKER-USER"),
        "dockerd puts its DOCKER-USER jump first:\n{forward}"
    );
    assert_eq!(ours_in_docker_user(&net), ours, "{user}");
    net.clients
        .assert_matrix("loaded before dockerd started", PROFILE_MATRIX);

    // dockerd rewrites its chains when it starts again: it keeps
    // DOCKER-USER's rules and moves its jump back to the head of FORWARD.
    restart_dockerd(&mut engine, &net);
    let user = net.iptables(&["-S", "DOCKER-USER"]);
    eprintln!(
        "after a dockerd restart:\n{}{user}",
        net.iptables(&["-S", "FORWARD"])
    );
    assert_eq!(ours_in_docker_user(&net), ours, "{user}");
    net.clients
        .assert_matrix("after a dockerd restart", PROFILE_MATRIX);

    // Loaded again while Docker runs: our chains are replaced, the jumps
    // are not doubled.
    load_sh(&net, files.path());
    assert_eq!(ours_in_docker_user(&net), ours);
    net.clients.assert_matrix("reloaded", PROFILE_MATRIX);

    // A ban holds for published ports too (the forward ban chain), and
    // lifting it opens them again.
    net.host
        .run(&["ipset", "add", "fwharden-ban_v4", WG_PEER])
        .unwrap();
    net.clients.assert_matrix(
        "wg banned",
        &[(Client::Wg, 6379, false), (Client::Wg, 443, false)],
    );
    net.host
        .run(&["ipset", "del", "fwharden-ban_v4", WG_PEER])
        .unwrap();
    net.clients
        .assert_matrix("wg unbanned", &[(Client::Wg, 6379, true)]);

    assert!(
        net.clients
            .container_reaches_out(&engine, &net.host, Duration::from_secs(10)),
        "a container reaches the internet through the host"
    );

    // forward = "drop": FWHARDEN-FORWARD goes under DOCKER-USER after the
    // containers chain. Published ports still follow the profile (its
    // DNAT accept is a RETURN to Docker's chains), and a container's own
    // connections are dropped, as by the nftables forward chain: placed in
    // FORWARD, Docker's `-i docker0 ! -o docker0 -j ACCEPT` would run first.
    let fwdrop = emitted("forward = \"drop\"");
    load_sh(&net, fwdrop.path());
    net.clients.assert_matrix("forward = drop", PROFILE_MATRIX);
    assert!(
        !net.clients
            .container_reaches_out(&engine, &net.host, Duration::ZERO),
        "forward = drop: the container's connection is dropped"
    );
    // Back to the first profile: FWHARDEN-FORWARD is emptied with the
    // reload, still hooked but returning at once.
    load_sh(&net, files.path());
    assert_eq!(
        net.iptables(&["-S", "FWHARDEN-FORWARD"]),
        "-N FWHARDEN-FORWARD\n"
    );
    assert!(
        net.clients
            .container_reaches_out(&engine, &net.host, Duration::from_secs(10)),
        "forward = accept again: the container reaches out"
    );
    net.clients
        .assert_matrix("back to forward = accept", PROFILE_MATRIX);

    without_our_chain_docker_decides(&net);

    drop(engine);
    drop(net);
    assert_eq!(
        host_tables(),
        before,
        "the machine's own tables are unchanged"
    );
}

/// Stops and starts dockerd, and waits for the published container to
/// answer the tunnel's client again.
fn restart_dockerd(engine: &mut Engine, net: &Net) {
    engine.stop_dockerd();
    engine.start_dockerd();
    assert!(
        wait_until(Duration::from_secs(30), || net
            .clients
            .reaches(Client::Wg, 6379)),
        "the container is back after the restart"
    );
}

/// Without the jump to fwharden's containers chain Docker alone decides,
/// and the published Redis is open to the internet: the matrix checks
/// before this one could fail.
fn without_our_chain_docker_decides(net: &Net) {
    net.iptables(&["-D", "DOCKER-USER", "-j", "FWHARDEN-CONTAINERS"]);
    net.clients.assert_matrix(
        "without FWHARDEN-CONTAINERS",
        &[(Client::Inet, 6379, true), (Client::Inet, 8081, true)],
    );
}

/// ufw.sh in the host namespace, over the sandbox's copies of ufw's files.
fn ufw_sh(net: &Net, sandbox: &UfwSandbox, dir: &Path) {
    let script = dir.join(emit::ufw::SCRIPT);
    net.host
        .run_in(|| sandbox.load(&script))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
#[ignore = "needs root"]
fn emitted_ufw_holds_published_ports_through_a_dockerd_restart() {
    let test = "emitted_ufw_holds_published_ports_through_a_dockerd_restart";
    needs_root(test);
    if !have_docker(test) || !have_ufw(test) {
        return;
    }
    let (before, ufw_before) = (host_tables(), host_ufw_files());
    let files = emitted_ufw();
    let net = Net::new();
    let sandbox = UfwSandbox::new();

    // Loaded before Docker runs, as at boot: before.rules makes
    // DOCKER-USER, which dockerd keeps, adding its RETURN after our jump.
    ufw_sh(&net, &sandbox, files.path());
    let mut engine = Engine::start(&net.host);
    engine.run_listener(
        "redis",
        6379,
        &["6379:6379", "80:6379", "443:6379", "8081:6379"],
    );
    let jump = "-A DOCKER-USER -j FWHARDEN-CONTAINERS";
    let user = net.iptables(&["-S", "DOCKER-USER"]);
    eprintln!(
        "ufw, then dockerd:\n{}{user}",
        net.iptables(&["-S", "FORWARD"])
    );
    assert_eq!(user.lines().nth(1), Some(jump), "{user}");
    net.clients
        .assert_matrix("ufw loaded before dockerd started", PROFILE_MATRIX);

    restart_dockerd(&mut engine, &net);
    net.clients
        .assert_matrix("ufw, after a dockerd restart", PROFILE_MATRIX);

    // A ufw reload empties and refills both chains: one jump, same matrix.
    let reload = net.host.run_in(|| sandbox.run("ufw reload")).unwrap();
    assert!(reload.status.success(), "{}", stderr(&reload));
    let user = net.iptables(&["-S", "DOCKER-USER"]);
    assert_eq!(user.matches(jump).count(), 1, "{user}");
    net.clients
        .assert_matrix("after ufw reload", PROFILE_MATRIX);
    // ufw.sh again while Docker runs: nothing doubled, same matrix.
    ufw_sh(&net, &sandbox, files.path());
    let user = net.iptables(&["-S", "DOCKER-USER"]);
    assert_eq!(user.matches(jump).count(), 1, "{user}");
    net.clients.assert_matrix("ufw.sh again", PROFILE_MATRIX);

    without_our_chain_docker_decides(&net);

    drop(engine);
    drop(net);
    assert_eq!(
        host_tables(),
        before,
        "the machine's own tables are unchanged"
    );
    assert_eq!(
        host_ufw_files(),
        ufw_before,
        "the machine's ufw files are unchanged"
    );
}
