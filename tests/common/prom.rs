//! Prometheus' own tools for the tests of `fwharden metrics`
//! (tests/metrics.rs): promtool and prometheus-node-exporter, Debian's,
//! unpacked under target/ by scripts/deps (never installed as services),
//! a scrape over HTTP inside a namespace, and reading samples back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fwharden::netns::Netns;

use super::{root, stderr, stdout};

/// The value of the first sample `name{...}` whose labels include every
/// `key="value"` of `want`.
pub fn value(text: &str, name: &str, want: &[&str]) -> Option<u64> {
    text.lines().find_map(|l| {
        let labels = l.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, v) = labels.rsplit_once("} ")?;
        let have: Vec<&str> = labels.split(',').collect();
        want.iter()
            .all(|w| have.contains(w))
            .then(|| v.parse().ok())
            .flatten()
    })
}

/// promtool from Debian's prometheus package, unpacked by scripts/deps.
pub fn promtool(test: &str) -> Option<PathBuf> {
    let p = root().join("target/prometheus/usr/bin/promtool");
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some_and(|v| v == "true") {
        panic!("{test}: promtool is not unpacked under target/prometheus (CI=true: a skip is a failure); run scripts/deps");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: promtool is not unpacked under target/prometheus; run scripts/deps !!!!!!!!\n");
    None
}

/// `promtool check metrics` on `text`: its complaints, empty when none.
pub fn promtool_check(promtool: &Path, text: &str) -> Result<(), String> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", stdout(&out), stderr(&out));
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool ({}): {said}\n{text}", out.status))
    }
}

/// A `metrics --listen` server, stopped when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP request to the server in the host namespace: the whole answer.
pub fn scrape(ns: &Netns, port: u16, request: &str) -> Option<String> {
    let request = request.to_string();
    ns.run_in(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        Some(answer)
    })
    .unwrap()
}

/// The value of the sample line starting with `head` (no labels).
pub fn value_of(text: &str, head: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(head))
        .unwrap_or_else(|| panic!("no {head:?} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Debian's prometheus-node-exporter, unpacked by scripts/deps.
pub fn node_exporter(test: &str) -> Option<PathBuf> {
    let p = root().join("target/prometheus-node-exporter/usr/bin/prometheus-node-exporter");
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some_and(|v| v == "true") {
        panic!("{test}: prometheus-node-exporter is not unpacked under target/ (CI=true: a skip is a failure); run scripts/deps");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: prometheus-node-exporter is not unpacked under target/; run scripts/deps !!!!!!!!\n");
    None
}
