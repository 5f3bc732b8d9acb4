//! The replica: a target network namespace holding the ruleset, loaded by
//! the same netlink code as `apply` (`nft::apply`), with one interface per
//! name the plan needs (eth0, wg0, wg7 for `wg*`...). Each interface is a
//! veth link to a peer namespace of its own, which holds every source
//! address of the plan: the same address can then arrive on any
//! interface. Nothing is linked to the machine's own namespace, and every
//! probe is sent to an address of the target namespace.
//!
//! Return traffic: the target has one address per interface and per
//! family (198.18.0.0/15 and 2001:2::/48, the benchmarking ranges of
//! RFC 2544 and RFC 5180), and a policy rule `from ADDR lookup TABLE` sends
//! every answer from that address (SYN-ACK, reset, ICMP error, echo reply,
//! UDP reply) back out of the interface the probe came in on.
//!
//! Published container ports: each interface also has a published
//! address, DNAT'd to a container namespace behind the target (see
//! [`container`]), so those probes cross the forward hook as a connection
//! to a port Docker publishes does.
//!
//! Dropped in field order, panic included: the UDP echo thread stops, the
//! listeners close, then the namespaces are deleted (which removes their
//! veths and their firewall).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::time::Duration;

use super::plan::{Destination, Outcome, Plan, RateProbe, Service, OUT_PORT};
use super::send::{settle, settle_with, Attempt, Got, Witness};
use super::ProbeError;
use crate::netns::{Netns, NetnsError};
use crate::nft::trace::Tracer;
use crate::ruleset::{Hook, Ruleset};
use std::os::fd::AsFd;

/// Namespace name tags: `fwh-probe-PID-N` and `fwh-probepeer-PID-N`.
const TARGET_TAG: &str = "probe";
const PEER_TAG: &str = "probepeer";
/// A replica lives about a second; one whose process died (SIGKILL) and
/// that is older than this is removed by the next probe.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// One interface of the target and the peer namespace behind it.
#[derive(Debug)]
pub struct Link {
    /// The name in the target namespace, as the profile names it.
    pub interface: String,
    pub peer: Netns,
    /// The veth end in the peer namespace.
    pub peer_device: String,
    pub target_v4: Ipv4Addr,
    pub target_v6: Ipv6Addr,
    /// The routing table that sends answers back out of this interface.
    pub table: usize,
    /// The target's published address on this interface: DNAT'd to
    /// `container_v4`/`container_v6`.
    pub published_v4: Ipv4Addr,
    pub published_v6: Ipv6Addr,
    pub container_v4: Ipv4Addr,
    pub container_v6: Ipv6Addr,
}

impl Link {
    pub fn target(&self, source: &IpAddr) -> IpAddr {
        match source {
            IpAddr::V4(_) => IpAddr::V4(self.target_v4),
            IpAddr::V6(_) => IpAddr::V6(self.target_v6),
        }
    }

    /// Where a probe of `to` from `source` is addressed.
    pub fn address(&self, source: &IpAddr, to: Destination) -> IpAddr {
        match (to, source) {
            (Destination::Host, _) => self.target(source),
            (Destination::Published, IpAddr::V4(_)) => IpAddr::V4(self.published_v4),
            (Destination::Published, IpAddr::V6(_)) => IpAddr::V6(self.published_v6),
            // The host or the container connects to the peer, whose
            // address is the source.
            (Destination::Out | Destination::ContainerOut, _) => *source,
        }
    }

    /// Where a connection out to the peer at `peer` comes from: the
    /// host's address on this link, or the container's for this link.
    pub fn origin(&self, peer: &IpAddr, to: Destination) -> IpAddr {
        match (to, peer) {
            (Destination::ContainerOut, IpAddr::V4(_)) => IpAddr::V4(self.container_v4),
            (Destination::ContainerOut, IpAddr::V6(_)) => IpAddr::V6(self.container_v6),
            _ => self.target(peer),
        }
    }
}

pub struct Replica {
    echo: Option<UdpEcho>,
    tcp: Vec<TcpListener>,
    /// The peers' listeners for the host's connections out.
    peer_tcp: Vec<TcpListener>,
    container: Option<container::Container>,
    links: Vec<Link>,
    target: Netns,
    loader: Loader,
    /// Whether packets reaching the target are traced ([`trace`]).
    traced: bool,
}

/// What loads the target namespace's firewall.
pub enum Loader {
    /// The ruleset, through the netlink path `apply` uses.
    Nft(Ruleset),
    /// A caller's loader (`iptables-restore` of emitted files): run on a
    /// thread inside the target namespace, after the same ownership and
    /// interlock checks as the netlink load, so whatever it spawns acts
    /// there. Its error says what failed.
    Custom {
        what: String,
        load: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
    },
}

/// What a rate-limit probe saw: its first attempt, and the first attempt
/// that differed from it (or the last one) with its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSeen {
    pub first: Got,
    pub later: Got,
    pub at: u32,
}

/// Everything a run saw, in plan order.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub probes: Vec<Got>,
    pub rates: Vec<RateSeen>,
    /// For each probe, what decided its first packet by the kernel's own
    /// trace; empty when the run was not traced.
    pub decided: Vec<Option<String>>,
    /// The rules of the loaded table that some packet matched, by the
    /// trace.
    pub coverage: Option<trace::Coverage>,
}

/// Namespaces that cannot be created or entered mean no replica here
/// (an unprivileged container): a state `apply` reports, not a failure of
/// the ruleset.
pub(super) fn netns_error(e: NetnsError) -> ProbeError {
    match e {
        NetnsError::Create { .. } | NetnsError::Enter { .. } => ProbeError::Unavailable(e),
        e => ProbeError::Replica(e),
    }
}

impl Replica {
    /// Builds the namespaces of `plan`, loads `loaded` into the target and
    /// opens a listener on every probed port.
    pub fn build(plan: &Plan, loaded: &Ruleset) -> Result<Replica, ProbeError> {
        Replica::build_with(plan, Loader::Nft(loaded.clone()))
    }

    /// Like [`Replica::build`], with the target's firewall loaded by `loader`.
    pub fn build_with(plan: &Plan, loader: Loader) -> Result<Replica, ProbeError> {
        Netns::remove_stale(&[TARGET_TAG, PEER_TAG, container::TAG], STALE_AFTER);
        let target = Netns::create(TARGET_TAG).map_err(netns_error)?;
        let sources = plan.sources();
        let mut replica = Replica {
            echo: None,
            tcp: Vec::new(),
            peer_tcp: Vec::new(),
            container: None,
            links: Vec::new(),
            target,
            loader,
            traced: false,
        };
        let mut peers = Vec::new();
        for _ in &plan.interfaces {
            peers.push(Netns::create(PEER_TAG).map_err(netns_error)?);
        }
        for ns in std::iter::once(&replica.target).chain(&peers) {
            settings::enable_ipv6(ns)?;
        }
        let mut lines = Vec::new();
        // `ip rule` takes its family from the command line, not the address.
        let mut rules_v6 = Vec::new();
        let mut n = 0u16;
        for (i, (interface, peer)) in plan.interfaces.iter().zip(peers).enumerate() {
            let (v4, v6, (p4, p6, c4, c6)) = loop {
                n += 1;
                let v4 = Ipv4Addr::new(198, 18, (n >> 8) as u8, n as u8);
                let v6 = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, n);
                let more = container::addresses(n);
                let (p4, p6, c4, c6) = more;
                let all = [
                    v4.into(),
                    v6.into(),
                    p4.into(),
                    p6.into(),
                    c4.into(),
                    c6.into(),
                ];
                if !all.iter().any(|a: &IpAddr| sources.contains(a)) {
                    break (v4, v6, more);
                }
            };
            let device = format!("p{i}");
            let table = 100 + i;
            lines.extend([
                format!(
                    "link add {interface} type veth peer name {device} netns {}",
                    peer.name()
                ),
                format!("link set {interface} up"),
                format!("addr add {v4}/32 dev {interface}"),
                format!("addr add {v6}/128 dev {interface} nodad"),
                format!("addr add {p4}/32 dev {interface}"),
                format!("addr add {p6}/128 dev {interface} nodad"),
                format!("route add 0.0.0.0/0 dev {interface} table {table}"),
                format!("route add ::/0 dev {interface} table {table}"),
                format!("rule add from {v4} lookup {table}"),
            ]);
            rules_v6.push(format!("rule add from {v6} lookup {table}"));
            replica.links.push(Link {
                interface: interface.clone(),
                peer,
                peer_device: device,
                target_v4: v4,
                target_v6: v6,
                table,
                published_v4: p4,
                published_v6: p6,
                container_v4: c4,
                container_v6: c6,
            });
        }
        replica.target.ip_batch(&[], &lines).map_err(netns_error)?;
        replica
            .target
            .ip_batch(&["-6"], &rules_v6)
            .map_err(netns_error)?;
        settings::target(&replica.target)?;
        for link in &replica.links {
            link.peer
                .ip_batch(&[], &peer_lines(link, &sources))
                .map_err(netns_error)?;
            settings::peer(&link.peer)?;
        }
        if plan.probes.iter().any(|p| p.to.is_out()) {
            for link in &replica.links {
                let bound = link
                    .peer
                    .run_in(|| listener(OUT_PORT))
                    .map_err(netns_error)?;
                replica
                    .peer_tcp
                    .push(bound.map_err(|source| ProbeError::Listen {
                        what: format!("{}/tcp in a peer", OUT_PORT),
                        source,
                    })?);
            }
        }
        replica.load()?;
        // The ruleset loaded through netlink is traced (the nft program
        // makes the marking table); emitted iptables or ufw rules are
        // proven by their answers alone.
        if let (Loader::Nft(loaded), true) = (&replica.loader, have_nft()) {
            let output = loaded.chains.iter().any(|c| c.hook == Hook::Output);
            trace::arm(&replica.target, output)?;
            replica.traced = true;
        }
        let mut udp = Vec::new();
        if plan.has_published() {
            let (c, sockets) =
                container::Container::build(&replica.target, &replica.links, plan.container_port)?;
            replica.container = Some(c);
            udp = sockets;
        }
        replica.listen(&plan.services(), udp)?;
        Ok(replica)
    }

    /// (Re)loads the target namespace's firewall with the loader, by
    /// default through the netlink path `apply` uses. Loading the ruleset
    /// again replaces the table in one transaction, which also empties its
    /// per-source meters (the nmap test starts from there).
    pub fn load(&self) -> Result<(), ProbeError> {
        let loader = &self.loader;
        self.target
            .run_in(|| {
                crate::interlock::check().map_err(|_| ProbeError::Interlock)?;
                match loader {
                    Loader::Nft(ruleset) => crate::nft::apply(ruleset)
                        .map(|_| ())
                        .map_err(ProbeError::Load),
                    Loader::Custom { what, load } => {
                        load().map_err(|detail| ProbeError::LoadWith {
                            what: what.clone(),
                            detail,
                        })
                    }
                }
            })
            .map_err(netns_error)?
    }

    /// Opens the target's listeners; the echo thread also answers on
    /// `more` (the container's UDP sockets).
    fn listen(
        &mut self,
        services: &BTreeSet<Service>,
        more: Vec<UdpSocket>,
    ) -> Result<(), ProbeError> {
        let links = &self.links;
        let (tcp, udp) = self
            .target
            .run_in(|| -> Result<_, ProbeError> {
                let mut tcp = Vec::new();
                let mut udp = Vec::new();
                let fail = |what: String| move |source| ProbeError::Listen { what, source };
                for service in services {
                    match *service {
                        // One dual-stack socket per port takes both
                        // families on every address (bindv6only is 0 in a
                        // new namespace). The kernel answers the handshake
                        // of a listening socket without an accept.
                        Service::Tcp(port) => {
                            tcp.push(listener(port).map_err(fail(format!("{port}/tcp")))?)
                        }
                        // Bound to each address, so a reply leaves from
                        // the address (and so the interface) it came to.
                        Service::Udp(port) => {
                            for link in links {
                                for ip in [IpAddr::V4(link.target_v4), IpAddr::V6(link.target_v6)] {
                                    udp.push(
                                        UdpSocket::bind((ip, port))
                                            .map_err(fail(format!("{ip} {port}/udp")))?,
                                    );
                                }
                            }
                        }
                        Service::Ping | Service::NeighborSolicit => {}
                    }
                }
                Ok((tcp, udp))
            })
            .map_err(netns_error)??;
        self.tcp = tcp;
        let mut udp = udp;
        udp.extend(more);
        if !udp.is_empty() {
            self.echo = Some(UdpEcho::start(udp));
        }
        Ok(())
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    pub fn link(&self, interface: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.interface == interface)
    }

    pub fn target(&self) -> &Netns {
        &self.target
    }

    /// The container namespace behind the target, when the plan probes
    /// published ports.
    pub fn container(&self) -> Option<&Netns> {
        self.container.as_ref().map(|c| c.netns())
    }

    /// Sends every probe of `plan`, all in flight at once, while every
    /// rate-limit sequence runs on a thread of its own (the plan keeps
    /// other probes off their meters), and returns what each saw.
    pub fn run(&self, plan: &Plan, timeout: Duration) -> Result<Observed, ProbeError> {
        // Opened before the first packet: the kernel traces only while
        // somebody listens.
        let mut traced = self.trace()?;
        let mut observed = self.send_all(plan, timeout, traced.as_mut())?;
        if let Some((mut tracer, mut heard)) = traced {
            heard.hear(drain(&mut tracer)?);
            observed.decided = plan
                .probes
                .iter()
                .map(|p| {
                    let link = self.link(&p.interface)?;
                    match p.to {
                        to if to.is_out() => {
                            let origin = (link.origin(&p.source, to), plan.local_port);
                            heard.decided_out(origin, p.source, p.service)
                        }
                        to => heard.decided(p.source, link.address(&p.source, to), p.service),
                    }
                })
                .collect();
            let loaded = match &self.loader {
                Loader::Nft(r) => Some(r),
                Loader::Custom { .. } => None,
            };
            observed.coverage = Some(heard.coverage(&|rule| {
                let model = loaded?.chains.iter().find(|c| c.name == rule.chain)?;
                by_construction(model.rules.get(rule.index)?)
            }));
        }
        Ok(observed)
    }

    /// A trace listener in the target and the loaded table's rules, when
    /// the replica is traced.
    fn trace(&self) -> Result<Option<(Tracer, trace::Heard)>, ProbeError> {
        if !self.traced {
            return Ok(None);
        }
        let (tracer, rules) = self
            .target
            .run_in(|| (Tracer::open(), crate::nft::kernel_rules()))
            .map_err(netns_error)?;
        let tracer = tracer.map_err(|source| ProbeError::Setting {
            what: "the trace listener (NFNLGRP_NFTRACE)",
            source,
        })?;
        Ok(Some((
            tracer,
            trace::Heard::new(rules.map_err(ProbeError::Load)?),
        )))
    }

    fn send_all(
        &self,
        plan: &Plan,
        timeout: Duration,
        traced: Option<&mut (Tracer, trace::Heard)>,
    ) -> Result<Observed, ProbeError> {
        std::thread::scope(|scope| {
            // A published sequence sent inside its host sequence runs on
            // that one's thread; the others each on their own.
            let partner = |r: &RateProbe| {
                plan.rate_probes.iter().position(|q| {
                    q.with_host
                        && (q.source, &q.interface, q.service)
                            == (r.source, &r.interface, r.service)
                })
            };
            let sequences: Vec<_> = (plan.rate_probes.iter().enumerate())
                .filter(|(_, r)| !r.with_host)
                .map(|(i, r)| {
                    let with = partner(r).map(|j| (j, &plan.rate_probes[j]));
                    (
                        i,
                        with,
                        scope.spawn(move || self.rate_sequence(r, with.map(|w| w.1), timeout)),
                    )
                })
                .collect();
            let probes = self.all_at_once(plan, timeout, traced);
            let mut rates = vec![None; plan.rate_probes.len()];
            for (i, with, h) in sequences {
                let (seen, also) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
                rates[i] = Some(seen);
                if let (Some((j, _)), Some(also)) = (with, also) {
                    rates[j] = Some(also);
                }
            }
            let unsent = || RateSeen {
                first: Got::Inconclusive("not sent: its host sequence is not planned".into()),
                later: Got::Inconclusive("not sent".into()),
                at: 0,
            };
            Ok(Observed {
                probes: probes?,
                rates: rates
                    .into_iter()
                    .map(|r| r.unwrap_or_else(unsent))
                    .collect(),
                ..Observed::default()
            })
        })
    }

    fn all_at_once(
        &self,
        plan: &Plan,
        timeout: Duration,
        traced: Option<&mut (Tracer, trace::Heard)>,
    ) -> Result<Vec<Got>, ProbeError> {
        let mut attempts: Vec<(usize, Attempt)> = Vec::new();
        for link in &self.links {
            let mine: Vec<usize> = (0..plan.probes.len())
                .filter(|&i| plan.probes[i].interface == link.interface)
                .filter(|&i| !plan.probes[i].to.is_out())
                .collect();
            let started = link
                .peer
                .run_in(|| {
                    mine.iter()
                        .map(|&i| {
                            let p = &plan.probes[i];
                            (
                                i,
                                Attempt::start(p.source, link.address(&p.source, p.to), p.service),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .map_err(netns_error)?;
            attempts.extend(started);
        }
        // The connections out: the host's from the target, a container's
        // from the container.
        let container = self.container.as_ref().map(|c| c.netns());
        for (to, ns) in [
            (Destination::Out, Some(&self.target)),
            (Destination::ContainerOut, container),
        ] {
            let out: Vec<usize> = (0..plan.probes.len())
                .filter(|&i| plan.probes[i].to == to)
                .collect();
            let Some(ns) = ns.filter(|_| !out.is_empty()) else {
                continue;
            };
            let started = ns
                .run_in(|| {
                    out.iter()
                        .filter_map(|&i| {
                            let p = &plan.probes[i];
                            let link = self.link(&p.interface)?;
                            let from = (link.origin(&p.source, to), plan.local_port);
                            Some((i, Attempt::start_from(from, p.source, p.service)))
                        })
                        .collect::<Vec<_>>()
                })
                .map_err(netns_error)?;
            attempts.extend(started);
        }
        let (order, mut flight): (Vec<usize>, Vec<Attempt>) = attempts.into_iter().unzip();
        settle_traced(&mut flight, timeout, traced)?;
        let mut probes = vec![Got::Inconclusive("not sent".into()); plan.probes.len()];
        for (i, a) in order.into_iter().zip(&flight) {
            probes[i] = a.got().cloned().unwrap_or(Got::Seen(Outcome::Filtered));
        }
        Ok(probes)
    }

    /// A rate-limit sequence: the first attempt alone, with the source's
    /// bucket full, then the rest at once; with `with`, a published
    /// sequence of the same source (one bucket) whose first attempt goes
    /// alone after the host's first and whose rest goes with the host's.
    fn rate_sequence(
        &self,
        r: &RateProbe,
        with: Option<&RateProbe>,
        timeout: Duration,
    ) -> Result<(RateSeen, Option<RateSeen>), ProbeError> {
        let link = self.link(&r.interface).ok_or_else(|| ProbeError::Plan {
            what: format!("interface {}", r.interface),
        })?;
        // A listener of its own: an attempt whose packet the kernel drops
        // is settled at once instead of after the timeout.
        let mut traced = self.trace()?;
        // `n` attempts of each leg, interleaved, started at once.
        let start = |legs: &[&RateProbe], n: u32| {
            link.peer
                .run_in(|| {
                    (0..n)
                        .flat_map(|_| legs.iter())
                        .map(|q| Attempt::start(q.source, link.address(&q.source, q.to), q.service))
                        .collect::<Vec<_>>()
                })
                .map_err(netns_error)
        };
        let got = |a: &Attempt| a.got().cloned().unwrap_or(Got::Seen(Outcome::Filtered));
        let mut legs = vec![r];
        legs.extend(with);
        // Each leg's first attempt alone, in turn: the host's meets a full
        // bucket, a published leg's one holding `burst - 1`.
        let mut firsts = Vec::new();
        for leg in &legs {
            let mut first = start(&[leg], 1)?;
            settle_traced(&mut first, timeout, traced.as_mut())?;
            firsts.push(got(&first[0]));
        }
        let rest_each = r.attempts.max(1) - 1;
        // The rest at once: they reach the kernel within microseconds, so
        // however slowly this machine runs, the bucket (at most `burst`
        // tokens) cannot hold them all; one after another, a busy machine
        // could space them slower than the rate refills it. Each leg sends
        // as many as a sequence alone would, so each meets a spent bucket.
        let mut rest = start(&legs, rest_each)?;
        settle_traced(&mut rest, timeout, traced.as_mut())?;
        let mut seen = firsts.into_iter().enumerate().map(|(k, first)| {
            let mine: Vec<Got> = rest.iter().skip(k).step_by(legs.len()).map(got).collect();
            let (at, later) = match mine.iter().position(|g| *g != first) {
                Some(at) => (at as u32 + 2, mine[at].clone()),
                None => (mine.len() as u32 + 1, mine.last().unwrap_or(&first).clone()),
            };
            RateSeen { first, later, at }
        });
        let host = seen.next().expect("one leg at least");
        Ok((host, seen.next()))
    }
}

/// Waits for `attempts` as [`settle`] does; when traced, an attempt whose
/// first packet the kernel dropped without an answer is settled as
/// filtered as soon as the trace says so.
fn settle_traced(
    attempts: &mut [Attempt],
    timeout: Duration,
    traced: Option<&mut (Tracer, trace::Heard)>,
) -> Result<(), ProbeError> {
    let Some((tracer, heard)) = traced else {
        return settle(attempts, timeout).map_err(ProbeError::Wait);
    };
    let fd = tracer.fd().try_clone_to_owned().map_err(ProbeError::Wait)?;
    let mut heard_now = |attempts: &mut [Attempt]| -> std::io::Result<()> {
        heard.hear(tracer.drain()?);
        for a in attempts.iter_mut().filter(|a| a.got().is_none()) {
            if heard.dropped((a.source(), a.local_port()), a.target(), a.service()) {
                a.settle_as(Got::Seen(Outcome::Filtered));
            }
        }
        Ok(())
    };
    let witness = Witness {
        fd: fd.as_fd(),
        heard: &mut heard_now,
    };
    settle_with(attempts, timeout, Some(witness)).map_err(ProbeError::Wait)
}

/// What the tracer still holds.
fn drain(tracer: &mut Tracer) -> Result<Vec<crate::nft::trace::Event>, ProbeError> {
    tracer.drain().map_err(|source| ProbeError::Setting {
        what: "reading the trace (messages lost?)",
        source,
    })
}

/// Why no probe reaches `rule`, where that follows from what the replica
/// sends: new connections, pings and neighbour solicitations arriving on
/// its links (to the host or to a published port), and connections out
/// from the host and the container, with their answers.
fn by_construction(rule: &crate::ruleset::Rule) -> Option<&'static str> {
    use crate::ruleset::{CtState, Match};
    rule.matches.iter().find_map(|m| match m {
        Match::CtState(states) if !states.contains(&CtState::New) && !states.contains(&CtState::Established) => {
            Some("by construction: no probe sends a packet conntrack calls invalid")
        }
        Match::InInterface(i) if i == "lo" => {
            Some("by construction: probes arrive on the replica's links, never on loopback")
        }
        Match::OutInterface(i) if i == "lo" => {
            Some("by construction: the replica's packets leave by its links, never by loopback")
        }
        Match::IcmpType(_) | Match::Icmpv6Type(_) => {
            let pinged = |m: &Match| matches!(m, Match::IcmpType(t) if t.contains(&crate::ruleset::IcmpType::EchoRequest));
            let solicited = |m: &Match| {
                matches!(m, Match::Icmpv6Type(t) if t.iter().any(|t| matches!(t, crate::ruleset::Icmpv6Type::EchoRequest | crate::ruleset::Icmpv6Type::NdNeighborSolicit)))
            };
            (!pinged(m) && !solicited(m))
                .then_some("by construction: the probe sends no ICMP error or other ICMP type than echo requests and neighbour solicitations")
        }
        _ => None,
    })
}

/// A dual-stack TCP listener on `port` whose accept queue is as long as
/// the namespace allows (net.core.somaxconn). Nothing accepts: the kernel
/// answers each handshake and queues the connection, and Rust's queue of
/// 128 overflows when a plan sends more to one port (the container's port
/// takes every published probe and every published rate sequence), the
/// connections past it then seen as filtered.
pub(super) fn listener(port: u16) -> std::io::Result<TcpListener> {
    let bound = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))?;
    nix::sys::socket::listen(&bound, nix::sys::socket::Backlog::MAXALLOWABLE)?;
    Ok(bound)
}

/// The peer side of a link: every source address of the plan, and a route
/// to the target's addresses.
fn peer_lines(link: &Link, sources: &BTreeSet<IpAddr>) -> Vec<String> {
    let dev = &link.peer_device;
    let mut lines = vec![format!("link set {dev} up")];
    for s in sources {
        lines.push(match s {
            IpAddr::V4(a) => format!("addr add {a}/32 dev {dev}"),
            // No duplicate address detection: usable at once.
            IpAddr::V6(a) => format!("addr add {a}/128 dev {dev} nodad"),
        });
    }
    for a in [link.target_v4, link.published_v4] {
        lines.push(format!("route add {a}/32 dev {dev}"));
    }
    for a in [link.target_v6, link.published_v6] {
        lines.push(format!("route add {a}/128 dev {dev}"));
    }
    // The container's connections out come unmasqueraded, from its own
    // addresses, which are behind the target.
    lines.extend([
        format!(
            "route add {}/32 via {} dev {dev} onlink",
            link.container_v4, link.target_v4
        ),
        format!(
            "route add {}/128 via {} dev {dev} onlink",
            link.container_v6, link.target_v6
        ),
    ]);
    lines
}

mod container;
mod echo;
mod settings;
pub mod trace;
pub use container::have_nft;
use echo::UdpEcho;
