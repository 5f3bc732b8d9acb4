//! `fwharden audit`: every listening socket and published container port
//! of this network namespace, set against who the ruleset lets reach it.
//!
//! Gathering ([`gather`]) reads the kernel's socket table ([`sockets`]),
//! the sockets' owners ([`owners`]) and the engines' published ports
//! ([`published`]); judging ([`judge`]) is pure: it takes what was seen and
//! a [`Ruleset`] (read back from the kernel, or compiled from a profile not
//! yet applied) and returns rows, every "who" asked of
//! [`crate::ruleset::eval`] through [`reach`]. So auditing a profile before
//! applying it and auditing the kernel after give the same rows.

pub mod owners;
pub mod published;
pub mod reach;
pub mod sockets;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::ruleset::{Family, Hook, Match, Protocol, Ruleset, Verdict as RuleVerdict};
use owners::Process;
use published::Published;
use reach::{reckon, Path, Reach, Reckoning, Who};
use sockets::Listener;

/// What an operator should make of a row. The order is the table's:
/// what needs attention first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Reachable from anywhere on a non-loopback address.
    Exposed,
    /// A published container port the ruleset does not filter: whoever
    /// the engine lets in reaches it.
    Uncovered,
    /// Not known: the ruleset could not be read (see `not_seen`).
    Unknown,
    /// Reachable from named sources only.
    Restricted,
    /// Listening, but no one outside loopback gets through.
    Closed,
    /// The ruleset opens the port and nothing listens on it.
    NothingListening,
    /// Bound to a loopback address (or to `lo`).
    Loopback,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Exposed => "exposed",
            Verdict::Uncovered => "uncovered",
            Verdict::Unknown => "unknown",
            Verdict::Restricted => "restricted",
            Verdict::Closed => "closed",
            Verdict::NothingListening => "nothing-listening",
            Verdict::Loopback => "loopback",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A listening socket of this host.
    Socket,
    /// A port a container engine publishes.
    Published,
    /// A port the ruleset opens, with nothing behind it.
    Profile,
}

/// A listening socket with its owner, when it could be seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub listener: Listener,
    pub process: Option<Process>,
}

/// One line of the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub verdict: Verdict,
    pub kind: Kind,
    pub protocol: Protocol,
    /// The port, or the first of the range a profile row opens.
    pub port: u16,
    /// The last port of that range; `port` for a single port.
    pub port_last: u16,
    /// The bound address (`None` for a profile row).
    pub address: Option<IpAddr>,
    /// The interface the socket is bound to (SO_BINDTODEVICE).
    pub interface: Option<String>,
    pub process: Option<Process>,
    pub uid: Option<u32>,
    pub container: Option<String>,
    /// Who gets through, per interface; empty for loopback and unknown.
    pub who: Vec<Who>,
    /// The rule that lets anyone in, when it names this port.
    pub named_by: Option<String>,
    /// Exposed (or uncovered) without the ruleset naming the port: what the
    /// exit code reports.
    pub unnamed: bool,
    /// What to do about it, when something should be done.
    pub advice: Option<String>,
}

/// The ruleset the rows are judged against.
#[derive(Debug, Clone, Copy)]
pub enum Against<'a> {
    /// Judge by this ruleset.
    Ruleset(&'a Ruleset),
    /// No fwharden table is loaded: nothing of ours filters.
    NoTable,
    /// The ruleset could not be read: only loopback can be told.
    Unknown,
}

/// A port counts as loopback-bound when only loopback traffic can reach it.
fn loopback(address: &IpAddr, interface: Option<&str>) -> bool {
    let mapped = match address {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    address.is_loopback() || mapped.is_some_and(|a| a.is_loopback()) || interface == Some("lo")
}

fn family_of(address: &IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

fn no_table() -> Ruleset {
    Ruleset {
        profile: String::new(),
        table: String::new(),
        sets: vec![],
        chains: vec![],
        bans: None,
    }
}

/// The verdict of a port that is not loopback-bound.
fn verdict_of(r: &Reckoning) -> Verdict {
    if r.anyone() {
        Verdict::Exposed
    } else if r.someone() {
        Verdict::Restricted
    } else {
        Verdict::Closed
    }
}

/// Judges what was seen against `against`; rows sorted by verdict, then
/// protocol, port and address.
pub fn judge(sockets: &[Socket], ports: &[Published], against: Against) -> Vec<Row> {
    let empty = no_table();
    let ruleset = match against {
        Against::Ruleset(r) => Some(r),
        Against::NoTable => Some(&empty),
        Against::Unknown => None,
    };
    let published: BTreeSet<(Protocol, u16)> = ports.iter().map(|p| (p.protocol, p.port)).collect();
    let mut rows = Vec::new();
    let mut listed = BTreeSet::new();
    for s in sockets {
        let l = &s.listener;
        // SO_REUSEPORT: a server's workers each hold a socket on the same
        // address and port (nginx, one per worker). One row says it.
        if !listed.insert((l.protocol, l.address, l.port, l.interface.clone())) {
            continue;
        }
        // With Docker's userland proxy, docker-proxy also listens on the
        // published port; connections from outside are DNAT'd before they
        // could reach it, so the published row speaks for it.
        if s.process.as_ref().is_some_and(|p| p.name == "docker-proxy")
            && published.contains(&(l.protocol, l.port))
        {
            continue;
        }
        let mut row = Row {
            verdict: Verdict::Loopback,
            kind: Kind::Socket,
            protocol: l.protocol,
            port: l.port,
            port_last: l.port,
            address: Some(l.address),
            interface: l.interface.clone(),
            process: s.process.clone(),
            uid: Some(l.uid),
            container: None,
            who: vec![],
            named_by: None,
            unnamed: false,
            advice: None,
        };
        if !loopback(&l.address, l.interface.as_deref()) {
            match ruleset {
                None => row.verdict = Verdict::Unknown,
                Some(r) => {
                    let families = if l.address.is_unspecified() {
                        l.families.clone()
                    } else {
                        vec![family_of(&l.address)]
                    };
                    let k = reckon(
                        r,
                        Path::Input,
                        l.protocol,
                        l.port,
                        &families,
                        l.interface.as_deref(),
                    );
                    row.verdict = verdict_of(&k);
                    row.unnamed = row.verdict == Verdict::Exposed && k.named_by.is_none();
                    row.named_by = k.named_by;
                    row.who = k.who;
                }
            }
        }
        rows.push(row);
    }
    for p in ports {
        let mut row = Row {
            verdict: Verdict::Loopback,
            kind: Kind::Published,
            protocol: p.protocol,
            port: p.port,
            port_last: p.port,
            address: Some(p.address),
            interface: None,
            process: None,
            uid: None,
            container: Some(p.container.clone()),
            who: vec![],
            named_by: None,
            unnamed: false,
            advice: None,
        };
        if !loopback(&p.address, None) {
            match ruleset {
                None => row.verdict = Verdict::Unknown,
                Some(r) if r.chain("containers").is_none() => {
                    row.verdict = Verdict::Uncovered;
                    row.unnamed = true;
                    row.who = vec![Who {
                        interface: "any".into(),
                        reach: Reach::Anyone,
                    }];
                }
                Some(r) => {
                    let families = if p.address.is_unspecified() {
                        vec![Family::Ipv4, Family::Ipv6]
                    } else {
                        vec![family_of(&p.address)]
                    };
                    let k = reckon(r, Path::Published, p.protocol, p.port, &families, None);
                    row.verdict = verdict_of(&k);
                    row.unnamed = row.verdict == Verdict::Exposed && k.named_by.is_none();
                    row.named_by = k.named_by;
                    row.who = k.who;
                }
            }
        }
        rows.push(row);
    }
    if let Against::Ruleset(r) = against {
        rows.extend(nothing_listening(r, sockets, ports));
    }
    for r in &mut rows {
        r.advice = advice(r);
    }
    rows.sort_by(|a, b| {
        (a.verdict, a.protocol, a.port, a.address, a.kind as u8).cmp(&(
            b.verdict,
            b.protocol,
            b.port,
            b.address,
            b.kind as u8,
        ))
    });
    rows
}

/// The ports the input chain accepts that nothing listens on (nor any
/// container publishes), one row per protocol and port range.
fn nothing_listening(ruleset: &Ruleset, sockets: &[Socket], ports: &[Published]) -> Vec<Row> {
    let mut opened: BTreeSet<(Protocol, u16, u16)> = BTreeSet::new();
    for chain in ruleset.chains.iter().filter(|c| c.hook == Hook::Input) {
        for rule in chain
            .rules
            .iter()
            .filter(|r| r.verdict == Some(RuleVerdict::Accept))
        {
            let protocols = rule.matches.iter().find_map(|m| match m {
                Match::Protocol(p) => Some(p),
                _ => None,
            });
            let ranges = rule.matches.iter().find_map(|m| match m {
                Match::DestPort(r) => Some(r),
                _ => None,
            });
            if let (Some(protocols), Some(ranges)) = (protocols, ranges) {
                for p in protocols {
                    for r in ranges {
                        opened.insert((*p, r.first, r.last));
                    }
                }
            }
        }
    }
    let listening = |protocol: Protocol, first: u16, last: u16| {
        sockets
            .iter()
            .any(|s| s.listener.protocol == protocol && (first..=last).contains(&s.listener.port))
            || ports
                .iter()
                .any(|p| p.protocol == protocol && (first..=last).contains(&p.port))
    };
    let mut rows = Vec::new();
    for (protocol, first, last) in opened {
        if listening(protocol, first, last) {
            continue;
        }
        let k = reckon(
            ruleset,
            Path::Input,
            protocol,
            first,
            &[Family::Ipv4, Family::Ipv6],
            None,
        );
        // A rule shadowed by an earlier drop opens nothing.
        if !k.someone() {
            continue;
        }
        rows.push(Row {
            verdict: Verdict::NothingListening,
            kind: Kind::Profile,
            protocol,
            port: first,
            port_last: last,
            address: None,
            interface: None,
            process: None,
            uid: None,
            container: None,
            who: k.who,
            named_by: k.named_by,
            unnamed: false,
            advice: None,
        });
    }
    rows
}

/// How many rows of each verdict, in the table's order.
pub fn counts(rows: &[Row]) -> BTreeMap<Verdict, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r.verdict).or_insert(0) += 1;
    }
    out
}

/// One line for `status`: the counts, and how many exposures the ruleset
/// does not name.
pub fn summary(rows: &[Row]) -> String {
    let c = counts(rows);
    if c.is_empty() {
        return "nothing listens".into();
    }
    let parts: Vec<String> = c.iter().map(|(v, n)| format!("{n} {v}")).collect();
    let unnamed = rows.iter().filter(|r| r.unnamed).count();
    let tail = if unnamed > 0 {
        format!("; {unnamed} reachable from anywhere without the profile naming the port")
    } else {
        String::new()
    };
    format!("{}{tail}", parts.join(", "))
}

/// What the host shows: its listening sockets with their owners, the
/// published ports, and what could not be seen.
#[derive(Debug, Default)]
pub struct Seen {
    pub sockets: Vec<Socket>,
    pub published: Vec<Published>,
    pub not_seen: Vec<String>,
}

/// Reads this network namespace's sockets, their owners and the published
/// container ports. Read-only; works without root for what it can see.
pub fn gather() -> Seen {
    let mut seen = Seen::default();
    match sockets::listeners() {
        Ok(listeners) => {
            let inodes = listeners.iter().map(|l| l.inode).collect();
            let owners = owners::find(&inodes);
            let mut unowned = 0;
            for l in listeners {
                let process = owners.of(l.inode).cloned();
                if process.is_none() {
                    unowned += 1;
                }
                seen.sockets.push(Socket {
                    listener: l,
                    process,
                });
            }
            if unowned > 0 {
                seen.not_seen.push(if owners.unreadable > 0 {
                    format!(
                        "the owner of {unowned} socket(s): {} process(es) could not be looked into (run as root to see them)",
                        owners.unreadable
                    )
                } else {
                    // Every process here was read: the holder lives in
                    // another PID namespace sharing this network namespace
                    // (a container's), or the socket is the kernel's own.
                    format!(
                        "the owner of {unowned} socket(s): held by no process of this PID namespace"
                    )
                });
            }
        }
        Err(e) => seen.not_seen.push(format!("listening sockets: {e}")),
    }
    let found = published::find(&published::sockets());
    seen.published = found.ports;
    seen.not_seen.extend(found.not_seen);
    seen
}

/// What an operator should do about a row, in a line; `None` where the row
/// is as it should be (a public web port open to all, a restricted port,
/// loopback).
fn advice(r: &Row) -> Option<String> {
    let port = format!("{}/{}", r.port, r.protocol.as_str());
    let admin = crate::profile::lint::admin_service(r.protocol, r.port);
    match (r.verdict, r.kind) {
        (Verdict::Exposed, Kind::Socket) if r.named_by.is_none() => Some(format!(
            "bind it to 127.0.0.1 (or a private interface) if only this host needs it, or give {port} a rule with `from = [\"a group\"]`"
        )),
        (Verdict::Exposed, _) if r.named_by.is_none() => Some(format!(
            "give {port} a rule in the profile: allow it from a group, or deny it"
        )),
        (Verdict::Exposed, _) => admin.map(|name| {
            format!("{name} is open to anyone: allow it only from a group of the addresses that need it (`from = [\"admin\"]`)")
        }),
        (Verdict::Uncovered, _) => Some(
            "set `containers = \"filter\"` under [defaults] so the profile decides who reaches it, or publish it on 127.0.0.1".into(),
        ),
        (Verdict::Unknown, _) => {
            Some("run as root (or with CAP_NET_ADMIN) so the loaded ruleset can be read".into())
        }
        (Verdict::NothingListening, _) => Some(format!(
            "nothing listens on {port}: take it out of the profile if the service is gone"
        )),
        (Verdict::Restricted | Verdict::Closed | Verdict::Loopback, _) => None,
    }
}
