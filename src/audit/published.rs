//! Ports that container engines publish, asked of the engine's API socket
//! (`GET /containers/json`, the Docker Engine API, which Podman's service
//! also answers).
//!
//! Why the API and not the kernel's DNAT rules: Docker writes those rules
//! through iptables, and with iptables-legacy they are not in nf_tables at
//! all, so a netlink reader would see nothing; with iptables-nft they are
//! xtables-compat expressions whose shape changes with the Docker and
//! iptables versions. The API names the host address, host port, protocol
//! and container in one documented JSON answer, whichever firewall backend
//! the engine uses. What it costs: the socket is root's (or the docker
//! group's), so without it the audit says it could not ask.

use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ruleset::Protocol;

/// One published port of a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    pub protocol: Protocol,
    /// The host address it is published on (`0.0.0.0`, `::`, or one).
    pub address: IpAddr,
    /// The host's port: the one clients connect to.
    pub port: u16,
    pub container: String,
    /// Which API socket said so.
    pub engine: String,
}

/// The published ports found, and the sockets that could not be asked.
#[derive(Debug, Default)]
pub struct Found {
    pub ports: Vec<Published>,
    pub not_seen: Vec<String>,
}

/// The API sockets to ask: `DOCKER_HOST` when it names a unix socket
/// (as the docker CLI reads it), else Docker's and Podman's rootful
/// defaults.
pub fn sockets() -> Vec<PathBuf> {
    if let Some(path) = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
    {
        return vec![path];
    }
    vec![
        PathBuf::from("/run/docker.sock"),
        PathBuf::from("/run/podman/podman.sock"),
    ]
}

/// Asks every socket in `paths` that exists. A socket that is absent means
/// no such engine; one that exists and cannot be asked is reported.
pub fn find(paths: &[PathBuf]) -> Found {
    let mut found = Found::default();
    for path in paths {
        if !path.exists() {
            continue;
        }
        match ask(path) {
            Ok(ports) => found.ports.extend(ports),
            Err(e) => found.not_seen.push(format!(
                "published container ports: cannot ask {} ({e}){}",
                path.display(),
                if e.kind() == io::ErrorKind::PermissionDenied {
                    "; run as root or in the engine's group"
                } else {
                    ""
                }
            )),
        }
    }
    found
}

#[derive(Deserialize)]
struct Container {
    #[serde(rename = "Names", default)]
    names: Vec<String>,
    #[serde(rename = "Ports", default)]
    ports: Vec<Port>,
}

#[derive(Deserialize)]
struct Port {
    #[serde(rename = "IP", default)]
    ip: Option<String>,
    #[serde(rename = "PublicPort", default)]
    public: Option<u16>,
    #[serde(rename = "Type")]
    kind: String,
}

fn ask(path: &Path) -> io::Result<Vec<Published>> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0: the answer ends when the engine closes the connection, and
    // is never chunked.
    crate::sigpipe::write_all(
        &mut s,
        b"GET /containers/json HTTP/1.0\r\nHost: docker\r\n\r\n",
    )?;
    let mut answer = Vec::new();
    s.take(16 << 20).read_to_end(&mut answer)?;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header in the answer".into()))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(bad(format!("the engine answered {status:?}")));
    }
    let containers: Vec<Container> = serde_json::from_slice(&answer[split + 4..])
        .map_err(|e| bad(format!("the engine's answer is not the expected JSON: {e}")))?;
    Ok(parse(containers, &path.display().to_string()))
}

fn parse(containers: Vec<Container>, engine: &str) -> Vec<Published> {
    let mut out = Vec::new();
    for c in containers {
        let name = c
            .names
            .first()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        for p in c.ports {
            let Some(port) = p.public else { continue };
            let protocol = match p.kind.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            // Podman leaves IP empty for every address.
            let address =
                p.ip.filter(|s| !s.is_empty())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let item = Published {
                protocol,
                address,
                port,
                container: name.clone(),
                engine: engine.to_string(),
            };
            if !out.contains(&item) {
                out.push(item);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_published_ports_are_kept_with_their_host_address() {
        let json = r#"[{"Names":["/redis"],"Ports":[
            {"IP":"0.0.0.0","PrivatePort":6379,"PublicPort":8081,"Type":"tcp"},
            {"IP":"::","PrivatePort":6379,"PublicPort":8081,"Type":"tcp"},
            {"PrivatePort":6380,"Type":"tcp"},
            {"IP":"","PrivatePort":53,"PublicPort":5353,"Type":"udp"},
            {"IP":"127.0.0.1","PrivatePort":1,"PublicPort":1,"Type":"sctp"}]}]"#;
        let got = parse(serde_json::from_str(json).unwrap(), "d");
        let short: Vec<(String, u16, &str)> = got
            .iter()
            .map(|p| (p.address.to_string(), p.port, p.protocol.as_str()))
            .collect();
        assert_eq!(
            short,
            [
                ("0.0.0.0".into(), 8081, "tcp"),
                ("::".into(), 8081, "tcp"),
                ("0.0.0.0".into(), 5353, "udp")
            ]
        );
        assert!(got.iter().all(|p| p.container == "redis"));
    }
}
