//! The real CrowdSec firewall bouncer (Debian's crowdsec-firewall-bouncer,
//! unpacked by scripts/deps under target/, never installed as a service)
//! with the shipped configuration `contrib/crowdsec/crowdsec-firewall-
//! bouncer.yaml`, inside a throwaway namespace.
//!
//! The bouncer cannot start without CrowdSec's local API, and running
//! CrowdSec itself (its hub, database and agents) is out of reach here. So
//! the test serves the one endpoint the bouncer polls, the decision stream
//! (`GET /v1/decisions/stream`, the JSON `{"new": [...], "deleted": [...]}`
//! CrowdSec documents), from a thread inside the namespace: a stand-in for
//! the API, answering with one IPv4 and one IPv6 ban, then with the IPv4
//! one deleted. Everything on the firewall side is real: the bouncer's
//! nftables code finds fwharden's table and sets by the names the shipped
//! file gives, and its bans come and go in the kernel.
//!
//! The shipped file is also checked against the keys of the configuration
//! file Debian's package ships, so a misspelt key cannot pass unnoticed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn bouncer(test: &str) -> Option<PathBuf> {
    let dir = root().join("target/crowdsec-firewall-bouncer");
    if dir.join("usr/bin/crowdsec-firewall-bouncer").exists() {
        return Some(dir);
    }
    cannot_run(
        test,
        "crowdsec-firewall-bouncer is not unpacked under target/; run scripts/deps",
    );
    None
}

/// Top-level keys and the keys under `nftables.ipv4` of a YAML file, by
/// indentation: enough for the bouncer's flat configuration.
fn keys(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut parents: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        parents.retain(|(i, _)| *i < indent);
        let path: Vec<&str> = parents.iter().map(|(_, k)| k.as_str()).collect();
        let full = if path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", path.join("."))
        };
        out.push(full);
        parents.push((indent, key.to_string()));
    }
    out
}

#[test]
fn the_shipped_configuration_uses_only_keys_debian_s_bouncer_knows() {
    let Some(dir) = bouncer("the_shipped_configuration_uses_only_keys_debian_s_bouncer_knows")
    else {
        return;
    };
    let debian =
        std::fs::read_to_string(dir.join("etc/crowdsec/bouncers/crowdsec-firewall-bouncer.yaml"))
            .unwrap();
    let known = keys(&debian);
    for file in [
        "crowdsec-firewall-bouncer-ipset.yaml",
        "crowdsec-firewall-bouncer.yaml",
    ] {
        let text = std::fs::read_to_string(root().join("contrib/crowdsec").join(file)).unwrap();
        for k in keys(&text) {
            assert!(
                known.contains(&k),
                "{file}: `{k}` is not a key of Debian's configuration: {known:?}"
            );
        }
    }
    let ours =
        std::fs::read_to_string(root().join("contrib/crowdsec/crowdsec-firewall-bouncer.yaml"))
            .unwrap();
    for k in [
        "nftables.ipv4.set-only",
        "nftables.ipv6.table",
        "blacklists_ipv4",
    ] {
        assert!(keys(&ours).contains(&k.to_string()), "{k} missing");
    }
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the stand-in's thread when the test ends.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The stand-in for the local API, listening inside the namespace: one
/// IPv4 (4 h) and one IPv6 (1 h) ban first, the IPv4 one deleted at the
/// sixth poll. Its thread ends when the returned [`Stop`] drops.
fn stand_in(host: &Host) -> (Stop, std::thread::JoinHandle<()>) {
    let listener = host
        .ns
        .run_in(|| TcpListener::bind("127.0.0.1:8080"))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let stopped = stop.0.clone();
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = polls.clone();
    let api = std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = match counted.fetch_add(1, Ordering::Relaxed) {
                0 => {
                    r#"{"new":[{"id":1,"origin":"cscli","type":"ban","scope":"Ip","value":"203.0.113.7","duration":"4h","scenario":"test"},{"id":2,"origin":"cscli","type":"ban","scope":"Ip","value":"2001:db8:7::7","duration":"1h","scenario":"test"}],"deleted":[]}"#
                }
                5 => {
                    r#"{"new":[],"deleted":[{"id":1,"origin":"cscli","type":"ban","scope":"Ip","value":"203.0.113.7","duration":"4h","scenario":"test"}]}"#
                }
                _ => r#"{"new":[],"deleted":[]}"#,
            };
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (stop, api)
}

/// The bouncer in the host's namespace with the shipped file `shipped`
/// (of contrib/crowdsec), changed for a test run: the stand-in, a poll
/// every second, the foreground, logs to `work`/bouncer.log, a pid file
/// in `work`.
fn start_bouncer(
    host: &Host,
    dir: &std::path::Path,
    shipped: &str,
    work: &std::path::Path,
) -> Reaped {
    let shipped = std::fs::read_to_string(root().join("contrib/crowdsec").join(shipped)).unwrap();
    let config = shipped
        .replace("update_frequency: 10s", "update_frequency: 1s")
        .replace(
            "daemonize: true",
            &format!("daemonize: false\npid_dir: {}/", work.display()),
        )
        .replace("log_mode: file", "log_mode: stdout")
        .replace("api_key: ${API_KEY}", "api_key: test-key");
    let file = work.join("bouncer.yaml");
    std::fs::write(&file, config).unwrap();
    host.ns.verify().unwrap();
    let log = std::fs::File::create(work.join("bouncer.log")).unwrap();
    Reaped(
        host.ns
            .command(
                dir.join("usr/bin/crowdsec-firewall-bouncer")
                    .to_str()
                    .unwrap(),
            )
            .arg("-c")
            .arg(&file)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn log_of(work: &std::path::Path) -> String {
    std::fs::read_to_string(work.join("bouncer.log")).unwrap_or_default()
}

#[test]
#[ignore = "needs root"]
fn the_bouncer_bans_and_unbans_in_fwharden_s_own_crowdsec_sets() {
    let test = "the_bouncer_bans_and_unbans_in_fwharden_s_own_crowdsec_sets";
    needs_root(test);
    let Some(dir) = bouncer(test) else { return };
    let host = Host::new("cs");
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("banned.toml"),
        "[bans]\nenabled = true\n[[rule]]\nallow = \"ssh\"\n",
    )
    .unwrap();
    host.confirm_from(profiles.path(), "banned");

    let (stop, api) = stand_in(&host);
    let work = tempfile::tempdir().unwrap();
    let _bouncer = start_bouncer(&host, &dir, "crowdsec-firewall-bouncer.yaml", work.path());
    let bouncer_log = || log_of(work.path());
    assert!(
        wait_until(Duration::from_secs(20), || host
            .ban_of("203.0.113.7")
            .is_some()),
        "the bouncer's ban did not reach fwharden's set:\n{}",
        bouncer_log()
    );
    let v4 = host.ban_of("203.0.113.7").unwrap();
    assert_eq!(v4["set"], "crowdsec_v4");
    assert!(v4["expires_secs"].as_u64().unwrap() > 3600);
    assert_eq!(host.ban_of("2001:db8:7::7").unwrap()["set"], "crowdsec_v6");
    // The decision deleted in the stream: the bouncer takes it out.
    assert!(
        wait_until(Duration::from_secs(20), || host
            .ban_of("203.0.113.7")
            .is_none()),
        "the deleted decision was not taken out:\n{}",
        bouncer_log()
    );
    assert!(host.ban_of("2001:db8:7::7").is_some());
    // And an apply keeps the bouncer's ban.
    host.confirm_from(profiles.path(), "ssh-only");
    host.confirm_from(profiles.path(), "banned");
    assert!(host.ban_of("2001:db8:7::7").is_some());
    drop(stop);
    let _ = api.join();
    host.wait_quiet();
}

/// contrib/crowdsec/crowdsec-firewall-bouncer-ipset.yaml with the files of
/// `fwharden emit --format iptables` loaded (no nftables apply): the
/// bouncer's decisions come and go in fwharden-crowdsec_v4 and _v6, with
/// their durations as timeouts, and a reload keeps them.
#[test]
#[ignore = "needs root"]
fn the_bouncer_in_ipset_mode_bans_and_unbans_in_the_emitted_sets() {
    let test = "the_bouncer_in_ipset_mode_bans_and_unbans_in_the_emitted_sets";
    needs_root(test);
    let Some(dir) = bouncer(test) else { return };
    let host = Host::new("csip");
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("banned.toml"),
        "[bans]\nenabled = true\n[[rule]]\nallow = \"ssh\"\n",
    )
    .unwrap();
    let files = host.load_emitted(profiles.path(), "banned");
    let load = format!("{}/load.sh", files.path().display());

    let (stop, api) = stand_in(&host);
    let work = tempfile::tempdir().unwrap();
    let _bouncer = start_bouncer(
        &host,
        &dir,
        "crowdsec-firewall-bouncer-ipset.yaml",
        work.path(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || host
            .ipset_timeout("fwharden-crowdsec_v6", "2001:db8:7::7")
            .is_some()),
        "the bouncer's IPv6 ban did not reach fwharden-crowdsec_v6:\n{}",
        log_of(work.path())
    );
    let v4 = host.ipset_timeout("fwharden-crowdsec_v4", "203.0.113.7");
    assert!(
        v4.is_some_and(|t| t > 3600),
        "the 4 h decision as its timeout: {v4:?}\n{}",
        log_of(work.path())
    );
    host.sh(&["sh", &load, "--no-rollback"]);
    assert!(
        host.ipset_timeout("fwharden-crowdsec_v6", "2001:db8:7::7")
            .is_some(),
        "a reload keeps the bouncer's bans"
    );
    // The decision deleted in the stream: the bouncer takes it out.
    assert!(
        wait_until(Duration::from_secs(20), || host
            .ipset_timeout("fwharden-crowdsec_v4", "203.0.113.7")
            .is_none()),
        "the deleted decision was not taken out:\n{}",
        log_of(work.path())
    );
    drop(stop);
    let _ = api.join();
    host.wait_quiet();
}
