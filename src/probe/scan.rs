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
use super::send::{settle, Attempt, Got};
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
    let services: Vec<Service> = services.into_iter().collect();
    let mut got: Vec<Option<Got>> = vec![None; services.len()];
    for _round in 0..=opts.retries {
        let todo: Vec<usize> = (0..services.len())
            .filter(|&i| matches!(got[i], None | Some(Got::Seen(Outcome::Filtered))))
            .collect();
        if todo.is_empty() {
            break;
        }
        let mut flight: Vec<Attempt> = todo
            .iter()
            .map(|&i| Attempt::start(source, host, services[i]))
            .collect();
        settle(&mut flight, opts.wait).map_err(ScanError::Wait)?;
        for (&i, a) in todo.iter().zip(&flight) {
            got[i] = a.got().cloned();
        }
    }
    let rows: Vec<Row> = services
        .iter()
        .zip(got)
        .map(|(&service, got)| {
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
                Destination::Host => eval::evaluate(ruleset, Hook::Input, &packet),
                Destination::Published => eval::evaluate_published(ruleset, &packet, Meters::Fresh),
            };
            let expected = Outcome::of(d.verdict);
            let got = got.unwrap_or_else(|| Got::Inconclusive("not sent".into()));
            let (status, got) = status(expected, &got, service);
            Row {
                status,
                source,
                interface: interface.clone(),
                service: service.to_string(),
                to,
                expected,
                got,
                rule: d.comment,
                why: format!("scan of {host} from group {group}"),
            }
        })
        .collect();
    Ok(Report::from_rows(&ruleset.profile, rows, start.elapsed()))
}
