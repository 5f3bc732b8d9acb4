//! Published container ports against a real Docker daemon (Debian's
//! docker.io) running inside the test's host namespace. Three namespaces,
//! linked by veth pairs and to nothing else:
//!
//! ```text
//!   inet (198.51.100.2) --eth0-- host (Docker, fwharden) --wg0-- wg (10.8.0.2)
//! ```
//!
//! "inet" is the internet; "wg" is the WireGuard group's side. One
//! container listens on 6379 and is published as 6379, 80, 443 and 8081 of
//! the host: the profile allows web from anywhere, Redis from the group,
//! and names 8081 nowhere.

mod common;
mod docker {
    pub mod clients;
    pub mod engine;
}

use std::path::Path;

use common::*;
use docker::clients::{Client, Clients, PROFILE_MATRIX};
use docker::engine::{have_docker, Engine};

const PROFILE: &str = r#"description = "Redis in Docker, for the tunnel only"
[groups]
wg = ["10.8.0.0/24"]
[[rule]]
allow = ["http", "https"]
[[rule]]
allow = "redis"
from = "wg"
[[rule]]
allow = "ssh"
from = "wg"
"#;

struct Net {
    host: Host,
    clients: Clients,
    profiles: tempfile::TempDir,
}

impl Net {
    fn new() -> Net {
        let host = Host::new("dkhost");
        let clients = Clients::link(&host.ns, "dk");
        let profiles = tempfile::tempdir().unwrap();
        std::fs::write(profiles.path().join("docker-test.toml"), PROFILE).unwrap();
        // The same rules under other [defaults] (the description line is
        // the profile's first; [defaults] must come before [groups]).
        let body = PROFILE.split_once('\n').unwrap().1;
        for (name, defaults) in [
            ("docker-ignore", "containers = \"ignore\""),
            ("docker-fwdrop", "forward = \"drop\""),
        ] {
            let text = format!("[defaults]\n{defaults}\n{body}");
            std::fs::write(profiles.path().join(format!("{name}.toml")), text).unwrap();
        }
        Net {
            host,
            clients,
            profiles,
        }
    }

    fn fw(&self, args: &[&str]) -> std::process::Output {
        self.host.expect_in(self.profiles.path(), 0, args)
    }
}

#[test]
#[ignore = "needs root"]
fn published_ports_obey_the_profile_through_a_dockerd_restart() {
    let test = "published_ports_obey_the_profile_through_a_dockerd_restart";
    needs_root(test);
    if !have_docker(test) {
        return;
    }
    let before = host_tables();
    let key = Path::new("/etc/docker/key.json");
    let had_key = key.exists();
    let net = Net::new();
    let mut engine = Engine::start(&net.host.ns);
    engine.run_listener(
        "redis",
        6379,
        &["6379:6379", "80:6379", "443:6379", "8081:6379"],
    );
    // Docker alone: the published Redis is open to the internet (the
    // failure fwharden exists to prevent), so the checks below can fail.
    net.clients.assert_matrix(
        "docker alone",
        &[(Client::Inet, 6379, true), (Client::Inet, 8081, true)],
    );
    let status = net.fw(&["status"]);
    let out = stdout(&status);
    assert!(
        out.contains("container engine:  Docker (")
            && out.contains("chain DOCKER-USER")
            && out.contains("bridge docker0"),
        "{out}"
    );
    assert!(
        stderr(&status).contains("no fwharden table is loaded"),
        "{}",
        stderr(&status)
    );

    let applied = net.fw(&["apply", "docker-test", "--auto-confirm"]);
    assert!(!stderr(&applied).contains("DNAT'd"), "{}", stderr(&applied));
    assert!(
        !stderr(&net.fw(&["status"])).contains("DNAT'd"),
        "covered: no warning"
    );
    let table = net.host.table_text();
    assert!(table.contains("chain containers"), "{table}");
    net.clients.assert_matrix("with fwharden", PROFILE_MATRIX);

    // Container-initiated traffic still leaves: a listener on the internet
    // side, reached from inside the container.
    let reached = net.clients.container_reaches_out(
        &engine,
        &net.host.ns,
        std::time::Duration::from_secs(10),
    );
    assert!(reached, "a container reaches the internet through the host");

    // dockerd rewrites its own tables when it starts; ours stay and hold.
    engine.stop_dockerd();
    engine.start_dockerd();
    assert!(
        wait_until(std::time::Duration::from_secs(30), || net
            .clients
            .reaches(Client::Wg, 6379)),
        "the container is back after the restart"
    );
    net.clients
        .assert_matrix("after a dockerd restart", PROFILE_MATRIX);

    // forward = "drop": routing is dropped, but the published ports the
    // containers chain has judged still pass, and only those.
    net.fw(&["apply", "docker-fwdrop", "--auto-confirm"]);
    net.clients.assert_matrix("forward = drop", PROFILE_MATRIX);

    // Coverage off: apply and status warn, and the engine decides again.
    let ignore = net.fw(&["apply", "docker-ignore", "--auto-confirm"]);
    assert!(
        stderr(&ignore).contains("profile docker-ignore leaves them to the engine"),
        "{}",
        stderr(&ignore)
    );
    let status = stderr(&net.fw(&["status"]));
    assert!(
        status.contains("warning: Docker (") && status.contains("containers = \"filter\""),
        "{status}"
    );
    net.clients.assert_matrix(
        "containers = ignore",
        &[(Client::Inet, 6379, true), (Client::Wg, 6379, true)],
    );

    drop(engine);
    drop(net);
    assert_eq!(
        host_tables(),
        before,
        "the machine's own tables are unchanged"
    );
    assert_eq!(
        key.exists(),
        had_key,
        "dockerd wrote only to its private /etc/docker"
    );
}
