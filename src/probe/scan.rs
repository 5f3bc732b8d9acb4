//! `scan`: checks a live host from where this process runs, the "check it
//! with nmap from outside" step of hardening guides, with the expectations
//! of the probe plan. The scanner's own source address (the one the kernel
//! picks for the host) must belong to the group it claims to scan from.
//!
//! From outside, a port the firewall accepts but where nothing listens
//! answers with a reset (TCP) or port unreachable (UDP), and a UDP service
//! may stay silent. So a scan compares *reachability*: accepted means some
//! answer; dropped means none; a silent UDP port that should be open is
//! inconclusive, which (as everywhere) fails the run.
//!
//! A port the host publishes for a container is DNAT'd and judged on the
//! forward hook (the `containers` chain), not by input; from outside it
//! looks like any other port, so the operator names those ports
//! (`--published`) and their rows carry the containers chain's verdict,
//! marked "published (container)".

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use thiserror::Error;

use super::plan::{self, Destination, Outcome, Service};
use super::report::{Report, Row, Status};
use super::send::{stream, Got};
use crate::ruleset::eval::{self, Meters, Packet};
use crate::ruleset::{CtState, Family, Hook, Protocol, Ruleset, SetKind};

#[derive(Debug, Error)]
pub enum ScanError {
    #[error("cannot tell which source address reaches {host}: {source}")]
    Route {
        host: IpAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("group {group} is used by no rule of profile {profile}, so no rule says what it may reach; name a group a rule allows, or `any` for a source in no group")]
    UnknownGroup { group: String, profile: String },
    #[error("this machine reaches {host} from {address}, which is not in group {group}; scan from a machine in {group}, or pass --from with the group {address} belongs to (`any` for none)")]
    NotInGroup {
        host: IpAddr,
        address: IpAddr,
        group: String,
    },
    #[error("waiting for scan answers failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error("--ports top reads the ports scanners try first from nmap's list {path}: {source}; install nmap (apt-get install nmap), or give --ports all or a list (1-1024,5432,53/udp)")]
    TopPorts {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The group `--from any` names: a source in no set of the profile.
pub const ANY: &str = "any";

#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub wait: Duration,
    /// Extra rounds for probes that saw nothing.
    pub retries: u32,
    /// The interface the scan arrives on at the host, for rules that name
    /// one; `None`: an interface no rule names (the public one).
    pub interface: Option<String>,
    /// Ports the host publishes for containers (TCP or UDP).
    pub published: Vec<Service>,
    /// Ports checked beyond those the profile names (`--ports`): each must
    /// be as the profile says for a port it does not name.
    pub sweep: Vec<Service>,
    /// At most this many first packets a second.
    pub rate: u32,
}

/// nmap's list of ports with how often each was found open.
pub const NMAP_SERVICES: &str = "/usr/share/nmap/nmap-services";

/// The `n` TCP and the `n` UDP ports found open most often, as nmap's
/// list says (`name<TAB>port/proto<TAB>frequency`): what scanners try
/// first (`nmap --top-ports`).
pub fn top_ports(path: &str, n: usize) -> Result<Vec<Service>, ScanError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScanError::TopPorts {
        path: path.to_string(),
        source,
    })?;
    let mut seen: Vec<(f64, Service)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (_, port, freq) = (f.next()?, f.next()?, f.next()?);
            let (port, proto) = port.split_once('/')?;
            let port: u16 = port.parse().ok().filter(|&p| p > 0)?;
            let service = match proto {
                "tcp" => Service::Tcp(port),
                "udp" => Service::Udp(port),
                _ => return None,
            };
            Some((freq.trim().parse().ok()?, service))
        })
        .collect();
    seen.sort_by(|a, b| b.0.total_cmp(&a.0));
    let take = |tcp: bool| {
        seen.iter()
            .filter(move |(_, s)| matches!(s, Service::Tcp(_)) == tcp)
            .take(n)
            .map(|(_, s)| *s)
    };
    Ok(take(true).chain(take(false)).collect())
}

/// How many attempts may be in flight at once: sockets are file
/// descriptors, so the soft limit is raised towards the hard one, and the
/// attempts stay under it. (At the default rate and wait about 4,000 are.)
fn socket_cap() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    const WANTED: u64 = 16384;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 256;
    };
    let soft = if soft < WANTED + 256 && hard > soft {
        let raised = hard.min(WANTED + 256);
        match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
            Ok(()) => raised,
            Err(_) => soft,
        }
    } else {
        soft
    };
    // Room for what the process holds besides.
    soft.saturating_sub(256).clamp(16, WANTED) as usize
}

/// The address this machine sends from to reach `host`: a connected UDP
/// socket sends nothing, but the kernel picks its route and source.
pub fn source_for(host: IpAddr) -> Result<IpAddr, ScanError> {
    let route = |source| ScanError::Route { host, source };
    let any: SocketAddr = match host {
        IpAddr::V4(_) => "0.0.0.0:0".parse().expect("constant"),
        IpAddr::V6(_) => "[::]:0".parse().expect("constant"),
    };
    let s = UdpSocket::bind(any).map_err(route)?;
    s.connect((host, 9)).map_err(route)?;
    Ok(s.local_addr().map_err(route)?.ip())
}

fn prefixes(ruleset: &Ruleset, family: Family) -> impl Iterator<Item = (&str, &IpNet)> {
    ruleset
        .sets
        .iter()
        .filter(move |s| s.family == family)
        .filter_map(|s| match &s.kind {
            SetKind::Prefixes(p) => Some((s.name.as_str(), p)),
            SetKind::Meter { .. } | SetKind::Hatch(_) | SetKind::Bans { .. } => None,
        })
        .flat_map(|(name, p)| p.iter().map(move |n| (name, n)))
}

/// Checks that `source` belongs to `group` (or to no group, for [`ANY`]).
pub fn check_vantage(
    ruleset: &Ruleset,
    host: IpAddr,
    source: IpAddr,
    group: &str,
) -> Result<(), ScanError> {
    let family = match source {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    };
    let inside = if group == ANY {
        !prefixes(ruleset, family).any(|(_, n)| n.contains(&source))
    } else {
        let set = format!("{group}_{}", family.suffix());
        let known = [Family::Ipv4, Family::Ipv6]
            .iter()
            .any(|f| ruleset.set(&format!("{group}_{}", f.suffix())).is_some());
        if !known {
            return Err(ScanError::UnknownGroup {
                group: group.into(),
                profile: ruleset.profile.clone(),
            });
        }
        prefixes(ruleset, family).any(|(name, n)| name == set && n.contains(&source))
    };
    if inside {
        Ok(())
    } else {
        Err(ScanError::NotInGroup {
            host,
            address: source,
            group: group.into(),
        })
    }
}

/// What a scan row shows: accepted is "some answer" (see the module
/// comment), so a reset on an accepted port matches.
fn status(expected: Outcome, got: &Got, service: Service) -> (Status, Got) {
    let Got::Seen(seen) = got else {
        return (Status::Inconclusive, got.clone());
    };
    let status = match (expected, seen) {
        (Outcome::Open, Outcome::Open | Outcome::Rejected) => Status::Match,
        (Outcome::Open, Outcome::Filtered) if matches!(service, Service::Udp(_)) => {
            return (
                Status::Inconclusive,
                Got::Inconclusive("no answer; a UDP service may stay silent".into()),
            )
        }
        (e, s) if e == *s => Status::Match,
        _ => Status::Mismatch,
    };
    (status, got.clone())
}

/// Scans `host` from this machine, with the expectations of `ruleset` for
/// a source in `group`.
pub fn scan(
    ruleset: &Ruleset,
    host: IpAddr,
    group: &str,
    opts: &ScanOptions,
) -> Result<Report, ScanError> {
    let start = Instant::now();
    let source = source_for(host)?;
    check_vantage(ruleset, host, source, group)?;
    let plan = plan::build(ruleset);
    let interface = opts
        .interface
        .clone()
        .unwrap_or_else(|| plan.interfaces[0].clone());
    // Ports only: ICMP answers say nothing about a service, and neighbour
    // discovery does not cross a router.
    let mut services: std::collections::BTreeSet<Service> = plan
        .services()
        .into_iter()
        .filter(|s| matches!(s, Service::Tcp(_) | Service::Udp(_)))
        .collect();
    services.extend(opts.published.iter().copied());
    // The plan's ports first, then the sweep's others.
    let planned = services.len();
    let swept: Vec<Service> = opts
        .sweep
        .iter()
        .filter(|s| !services.contains(s))
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let services: Vec<Service> = services.into_iter().chain(swept).collect();
    let mut got: Vec<Option<Got>> = vec![None; services.len()];
    let cap = socket_cap();
    for round in 0..=opts.retries {
        // A retry is for a lost answer of a port the profile names; the
        // sweep's thousands of filtered ports are sent once.
        let todo: Vec<usize> = (0..services.len())
            .filter(|&i| round == 0 || i < planned)
            .filter(|&i| matches!(got[i], None | Some(Got::Seen(Outcome::Filtered))))
            .collect();
        if todo.is_empty() {
            break;
        }
        let todo: Vec<(usize, Service)> = todo.into_iter().map(|i| (i, services[i])).collect();
        let answers =
            stream(source, host, &todo, opts.rate, cap, opts.wait).map_err(ScanError::Wait)?;
        for (i, answer) in answers {
            got[i] = Some(answer);
        }
    }
    let mut quiet = 0usize;
    let rows: Vec<Row> = services
        .iter()
        .zip(got)
        .enumerate()
        .filter_map(|(i, (&service, got))| {
            let (protocol, dport) = match service {
                Service::Tcp(p) => (Protocol::Tcp, p),
                Service::Udp(p) => (Protocol::Udp, p),
                Service::Ping | Service::NeighborSolicit => unreachable!("filtered out above"),
            };
            let packet = Packet {
                source,
                protocol,
                dport,
                interface: Some(interface.clone()),
                state: CtState::New,
            };
            let to = if opts.published.contains(&service) {
                Destination::Published
            } else {
                Destination::Host
            };
            let d = match to {
                Destination::Published => eval::evaluate_published(ruleset, &packet, Meters::Fresh),
                // A scan asks only from outside: never `Out`.
                _ => eval::evaluate(ruleset, Hook::Input, &packet),
            };
            let expected = Outcome::of(d.verdict);
            let got = got.unwrap_or_else(|| Got::Inconclusive("not sent".into()));
            let (status, got) = status(expected, &got, service);
            // A swept port as the profile says is counted, not listed.
            if i >= planned && status == Status::Match {
                quiet += 1;
                return None;
            }
            Some(Row {
                status,
                source,
                interface: interface.clone(),
                service: service.to_string(),
                to,
                expected,
                got,
                rule: d.comment,
                kernel_rule: None,
                why: format!("scan of {host} from group {group}"),
            })
        })
        .collect();
    let mut report = Report::from_rows(&ruleset.profile, rows, start.elapsed());
    if services.len() > planned {
        report.notes.push(format!(
            "swept {} ports the profile does not name ({quiet} as it says, not listed; the others are in the table)",
            services.len() - planned
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_ports_are_the_most_frequent_of_each_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nmap-services");
        std::fs::write(
            &path,
            "# comment\nhttp\t80/tcp\t0.48\t# WWW\nssh\t22/tcp\t0.18\ndomain\t53/udp\t0.21\nrare\t7/tcp\t0.0001\nsnmp\t161/udp\t0.43\nsctp\t9/sctp\t0.9\n",
        )
        .unwrap();
        let top = top_ports(path.to_str().unwrap(), 2).unwrap();
        assert_eq!(
            top,
            [
                Service::Tcp(80),
                Service::Tcp(22),
                Service::Udp(161),
                Service::Udp(53)
            ]
        );
        let missing = top_ports("/nonexistent/nmap-services", 2).unwrap_err();
        assert!(
            missing.to_string().contains("apt-get install nmap"),
            "{missing}"
        );
    }
}
