//! `fwharden audit` against a real Docker daemon (the harness of
//! tests/docker.rs) in a test namespace: the ports a container publishes
//! are read from the daemon's API socket, and show as uncovered while the
//! profile leaves them to the engine (`containers = "ignore"`), restricted
//! (or closed) once its containers chain filters them.

mod common;
#[allow(dead_code)]
mod docker {
    pub mod engine;
}

use common::*;
use docker::engine::{have_docker, Engine};
use serde_json::Value;

const PROFILE: &str = r#"description = "Redis in Docker, for the tunnel only"
[groups]
wg = ["10.8.0.0/24"]
[[rule]]
allow = "https"
[[rule]]
allow = "redis"
from = "wg"
"#;

/// `fwharden --json audit ARGS` inside the host, asking `engine`'s socket;
/// fails the test unless it exits with `code`.
fn audit(
    host: &Host,
    engine: &Engine,
    profiles: &std::path::Path,
    args: &[&str],
    code: i32,
) -> Value {
    let out = host
        .fw()
        .arg("--profile-dir")
        .arg(profiles)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", engine.socket().display()),
        )
        .args(["--json", "audit"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("audit --json is JSON")
}

/// The published rows as `address:port verdict who` (Docker publishes
/// on 0.0.0.0 and on :: alike: both rows are there).
fn published(v: &Value) -> Vec<String> {
    let mut rows: Vec<String> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "published")
        .map(|r| {
            assert_eq!(r["container"], "redis", "{r}");
            let who: Vec<String> = r["who"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| match w["sources"].as_array() {
                    Some(s) => format!("{}={:?}", w["interface"].as_str().unwrap(), s),
                    None => format!(
                        "{}={}",
                        w["interface"].as_str().unwrap(),
                        w["reach"].as_str().unwrap()
                    ),
                })
                .collect();
            format!(
                "{}:{} {} {}",
                r["address"].as_str().unwrap(),
                r["port"],
                r["verdict"].as_str().unwrap(),
                who.join(";")
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
#[ignore = "needs root"]
fn a_published_port_is_uncovered_without_the_containers_chain_and_restricted_with_it() {
    let test = "a_published_port_is_uncovered_without_the_containers_chain_and_restricted_with_it";
    needs_root(test);
    if !have_docker(test) {
        return;
    }
    let host = Host::new("dkaudit");
    let profiles = tempfile::tempdir().unwrap();
    let p = profiles.path();
    std::fs::write(p.join("docker-audit.toml"), PROFILE).unwrap();
    let body = PROFILE.split_once('\n').unwrap().1;
    std::fs::write(
        p.join("docker-audit-ignore.toml"),
        format!("[defaults]\ncontainers = \"ignore\"\n{body}"),
    )
    .unwrap();
    let engine = Engine::start(&host.ns);
    engine.run_listener(
        "redis",
        6379,
        &["6379:6379", "8081:6379", "127.0.0.1:6380:6379"],
    );

    // No fwharden table: the engine alone decides.
    let v = audit(&host, &engine, p, &[], 7);
    let rows = published(&v);
    assert!(
        rows.iter().any(|r| r.starts_with("0.0.0.0:6379 uncovered")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("127.0.0.1:6380 loopback")),
        "{rows:?}"
    );

    // Coverage off.
    let before = audit(&host, &engine, p, &["docker-audit-ignore"], 7);
    host.fw()
        .arg("--profile-dir")
        .arg(p)
        .args(["apply", "docker-audit-ignore", "--auto-confirm"])
        .output()
        .unwrap();
    host.wait_quiet();
    let after = audit(&host, &engine, p, &[], 7);
    assert_eq!(before["rows"], after["rows"]);
    let rows = published(&after);
    for port in [6379, 8081] {
        assert!(
            rows.iter()
                .any(|r| r == &format!("0.0.0.0:{port} uncovered any=anyone")),
            "{port}: {rows:?}"
        );
    }
    assert!(after["unnamed_exposed"].as_u64().unwrap() >= 2, "{after:#}");

    // Coverage on: the containers chain judges them by the profile.
    let before = audit(&host, &engine, p, &["docker-audit"], 0);
    let applied = host
        .fw()
        .arg("--profile-dir")
        .arg(p)
        .args(["apply", "docker-audit", "--auto-confirm"])
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", stderr(&applied));
    host.wait_quiet();
    let after = audit(&host, &engine, p, &[], 0);
    assert_eq!(before["rows"], after["rows"]);
    let rows = published(&after);
    assert!(
        rows.iter()
            .any(|r| r == r#"0.0.0.0:6379 restricted any=[String("wg")]"#),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r == "0.0.0.0:8081 closed any=nobody"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("127.0.0.1:6380 loopback")),
        "{rows:?}"
    );
    assert_eq!(after["unnamed_exposed"], 0);
    // Docker's own chains on the forward hook are named, not judged.
    assert!(after["notes"].to_string().contains("FORWARD"), "{after:#}");
}
