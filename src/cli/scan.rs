//! `fwharden scan`: check a live host's reachability from this machine
//! against what a profile says a source in a group may reach.

use std::net::{IpAddr, ToSocketAddrs};

use anyhow::Context;
use serde_json::json;

use super::{exit, load_reporting};
use crate::probe::scan::{self, ScanOptions};
use crate::profile::SearchPath;

pub fn run(
    search: &SearchPath,
    host: &str,
    spec: &str,
    group: &str,
    opts: &ScanOptions,
    json: bool,
) -> anyhow::Result<i32> {
    let loaded = load_reporting(search, spec, json);
    let Some(profile) = &loaded.profile else {
        if json {
            let out = json!({ "ok": false, "errors": loaded.errors().collect::<Vec<_>>() });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        eprintln!("fwharden: the profile is invalid; nothing was scanned");
        return Ok(exit::INVALID_PROFILE);
    };
    let ruleset = crate::compile::compile(profile);
    let address: IpAddr = match host.parse() {
        Ok(a) => a,
        Err(_) => (host, 0)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?
            .ip(),
    };
    let report = match scan::scan(&ruleset, address, group, opts) {
        Ok(r) => r,
        Err(e) => {
            if json {
                println!("{}", json!({ "ok": false, "error": e.to_string() }));
            }
            eprintln!(
                "fwharden: error: {}; nothing was scanned",
                crate::term::safe_lines(&e.to_string())
            );
            return Ok(exit::FAILURE);
        }
    };
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = json!(report.passed);
        v["host"] = json!(address);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report.table());
        println!(
            "(from outside, an accepted port where nothing listens answers with a reset: it counts as reachable, as open does)"
        );
    }
    Ok(if report.passed {
        exit::OK
    } else {
        exit::PROBE_FAILED
    })
}

/// `--ports`: `all`, `top`, or a list of ports and ranges (`1-1024`,
/// `53/udp`; a bare port is TCP).
pub(super) fn sweep(spec: &str) -> Result<Vec<crate::probe::Service>, String> {
    use crate::probe::Service;
    match spec {
        "all" => return Ok((1..=u16::MAX).map(Service::Tcp).collect()),
        "top" => {
            return scan::top_ports(scan::NMAP_SERVICES, 1000).map_err(|e| e.to_string());
        }
        _ => {}
    }
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim) {
        let (range, udp) = match item.rsplit_once('/') {
            Some((r, "tcp")) => (r, false),
            Some((r, "udp")) => (r, true),
            Some((_, other)) => {
                return Err(format!("{item:?}: protocol {other:?} is not tcp or udp"))
            }
            None => (item, false),
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{item:?}: {p:?} is not a port (1-65535); write all, top, or ports like 1-1024,8080,53/udp"))
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(range)?, port(range)?),
        };
        if first > last {
            return Err(format!(
                "{item:?}: the range runs backwards; write {last}-{first}"
            ));
        }
        out.extend((first..=last).map(|p| {
            if udp {
                Service::Udp(p)
            } else {
                Service::Tcp(p)
            }
        }));
    }
    Ok(out)
}

/// A published port of `--published`: `6379/tcp`, `53/udp`, or `6379`
/// (TCP, as Docker's `-p` defaults to).
pub(super) fn published_port(s: &str) -> Result<crate::probe::Service, String> {
    use crate::probe::Service;
    let (port, proto) = s.trim().split_once('/').unwrap_or((s.trim(), "tcp"));
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{port:?} is not a port (1-65535)")),
    };
    match proto {
        "tcp" => Ok(Service::Tcp(port)),
        "udp" => Ok(Service::Udp(port)),
        other => Err(format!("{other:?} is not tcp or udp")),
    }
}

#[cfg(test)]
mod tests {
    use super::published_port;
    use crate::probe::Service;

    #[test]
    fn swept_ports_are_all_top_or_a_list() {
        use super::sweep;
        assert_eq!(sweep("all").unwrap().len(), 65535);
        assert_eq!(
            sweep("1-3,53/udp").unwrap(),
            [
                Service::Tcp(1),
                Service::Tcp(2),
                Service::Tcp(3),
                Service::Udp(53)
            ]
        );
        assert!(sweep("0").is_err());
        assert!(sweep("9-1").unwrap_err().contains("write 1-9"));
        assert!(sweep("80/sctp").unwrap_err().contains("sctp"));
    }

    #[test]
    fn published_ports_are_read_as_docker_writes_them() {
        assert_eq!(published_port("6379/tcp"), Ok(Service::Tcp(6379)));
        assert_eq!(published_port("53/udp"), Ok(Service::Udp(53)));
        assert_eq!(published_port("8081"), Ok(Service::Tcp(8081)));
        assert!(published_port("0").is_err());
        assert!(published_port("80/sctp").unwrap_err().contains("sctp"));
        assert!(published_port("http").is_err());
    }
}
