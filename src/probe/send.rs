//! Sends probes and classifies what comes back: a TCP connection attempt,
//! a UDP datagram, an echo request, each from a chosen source address.
//!
//! A socket belongs to the network namespace of the thread that created it
//! for its whole life, so [`Attempt::start`] runs inside a namespace (see
//! `Netns::run_in`) and [`settle`] can then wait on every attempt of every
//! namespace together, from any thread: all probes of a run are in flight
//! at once and the run waits one timeout, not one per probe.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, connect, getpeername, getsockopt, recv, recvmsg, send, setsockopt, socket, sockopt,
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage,
};
use serde::Serialize;

use super::plan::{Outcome, Service};

/// What one probe saw, or why it could not tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "detail")]
pub enum Got {
    Seen(Outcome),
    /// The probe itself failed: neither a pass nor a fail of the ruleset,
    /// so the run fails (never open).
    Inconclusive(String),
}

impl Got {
    pub fn describe(&self) -> String {
        match self {
            Got::Seen(o) => o.as_str().to_string(),
            Got::Inconclusive(why) => format!("inconclusive ({why})"),
        }
    }
}

/// The bytes a UDP probe carries; the replica's listener echoes them.
const PAYLOAD: &[u8] = b"fwharden probe";

/// One probe in flight.
pub struct Attempt {
    /// `None` when no socket could be opened (the attempt is then decided).
    fd: Option<OwnedFd>,
    source: IpAddr,
    /// The local port `connect` chose (0: none, or not known).
    local_port: u16,
    target: IpAddr,
    service: Service,
    got: Option<Got>,
    resent: bool,
}

fn family(a: IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn addr(ip: IpAddr, port: u16) -> SockaddrStorage {
    SockaddrStorage::from(SocketAddr::new(ip, port))
}

/// An echo request header (type, code, checksum, id, sequence): the kernel
/// fills the checksum and the id of a ping socket (net/ipv4/ping.c).
fn echo_request(target: IpAddr) -> [u8; 8] {
    let kind = match target {
        IpAddr::V4(_) => 8,
        IpAddr::V6(_) => 128,
    };
    [kind, 0, 0, 0, 0, 0, 0, 1]
}

/// A neighbour solicitation for `target` (RFC 4861, 4.3): type 135, code,
/// checksum (the kernel computes it for ICMPv6 raw sockets), reserved,
/// the target address; no link-layer option, which a unicast solicitation
/// may leave out.
fn neighbor_solicit(target: IpAddr) -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    if let IpAddr::V6(t) = target {
        m.extend_from_slice(&t.octets());
    }
    m
}

fn is_advert_for(message: &[u8], target: IpAddr) -> bool {
    let IpAddr::V6(t) = target else { return false };
    message.len() >= 24 && message[0] == 136 && message[8..24] == t.octets()
}

impl Attempt {
    /// Opens a socket in the calling thread's network namespace, bound to
    /// `source`, and sends the first packet to `target`. An error here is
    /// an inconclusive probe, not an I/O failure of the run.
    pub fn start(source: IpAddr, target: IpAddr, service: Service) -> Attempt {
        Attempt::start_from((source, 0), target, service)
    }

    /// Like [`Attempt::start`], from a given local port (0: any).
    pub fn start_from(
        (source, local_port): (IpAddr, u16),
        target: IpAddr,
        service: Service,
    ) -> Attempt {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let opened = match service {
            Service::Tcp(_) => socket(family(target), SockType::Stream, flags, None),
            Service::Udp(_) => socket(family(target), SockType::Datagram, flags, None),
            Service::Ping => {
                let proto = match target {
                    IpAddr::V4(_) => SockProtocol::Icmp,
                    IpAddr::V6(_) => SockProtocol::IcmpV6,
                };
                socket(family(target), SockType::Datagram, flags, proto)
            }
            // A raw socket: neighbour discovery is no datagram service.
            Service::NeighborSolicit => {
                socket(family(target), SockType::Raw, flags, SockProtocol::IcmpV6)
            }
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) => return Attempt::failed(source, target, service, format!("socket: {e}")),
        };
        let mut attempt = Attempt {
            fd: Some(fd),
            source,
            local_port: 0,
            target,
            service,
            got: None,
            resent: false,
        };
        let port = match service {
            Service::Tcp(p) | Service::Udp(p) => p,
            Service::Ping | Service::NeighborSolicit => 0,
        };
        let raw = attempt.raw();
        if let (Service::Tcp(_), Some(fd), 0) = (service, attempt.fd.as_ref(), local_port) {
            // bind() would give each socket a local port of its own, found
            // by a search that grows with the sockets already holding one:
            // thousands in flight (a sweep) spend seconds in the kernel.
            // Deferred to connect(), a port is shared by connections to
            // different ports. Without the option, only speed is lost.
            let _ = setsockopt(fd, sockopt::IpBindAddressNoPort, &true);
        }
        if let Err(e) = bind(raw, &addr(source, local_port)) {
            attempt.got = Some(Got::Inconclusive(format!("bind {source}: {e}")));
            return attempt;
        }
        if let (Service::Tcp(_), Some(fd)) = (service, attempt.fd.as_ref()) {
            // A reject's ICMP error can reach the socket while `connect`
            // still holds its lock (a veth answers within the call); TCP
            // then keeps it only as a soft error and retries the SYN after
            // a second, past the timeout. The error queue keeps it.
            let queued = match target {
                IpAddr::V4(_) => setsockopt(fd, sockopt::Ipv4RecvErr, &true),
                IpAddr::V6(_) => setsockopt(fd, sockopt::Ipv6RecvErr, &true),
            };
            if let Err(e) = queued {
                attempt.got = Some(Got::Inconclusive(format!("IP_RECVERR: {e}")));
                return attempt;
            }
        }
        if service == Service::NeighborSolicit {
            // A receiver drops neighbour discovery that may have crossed a
            // router: the hop limit must be 255 (RFC 4861, 7.1.1).
            let hops = attempt
                .fd
                .as_ref()
                .map(|fd| setsockopt(fd, sockopt::Ipv6Ttl, &255));
            if let Some(Err(e)) = hops {
                attempt.got = Some(Got::Inconclusive(format!("IPV6_UNICAST_HOPS: {e}")));
                return attempt;
            }
        }
        match (connect(raw, &addr(target, port)), service) {
            (Err(Errno::EINPROGRESS), Service::Tcp(_)) | (Ok(()), _) => {}
            (Err(e), _) => {
                attempt.got = Some(attempt.classify_error(e));
                return attempt;
            }
        }
        // Which of several attempts to one port a packet belongs to.
        if let Ok(local) = nix::sys::socket::getsockname::<SockaddrStorage>(raw) {
            attempt.local_port = local
                .as_sockaddr_in()
                .map(|a| a.port())
                .or_else(|| local.as_sockaddr_in6().map(|a| a.port()))
                .unwrap_or(0);
        }
        if !matches!(service, Service::Tcp(_)) {
            attempt.send_datagram();
        }
        attempt
    }

    fn failed(source: IpAddr, target: IpAddr, service: Service, why: String) -> Attempt {
        Attempt {
            fd: None,
            source,
            local_port: 0,
            target,
            service,
            got: Some(Got::Inconclusive(why)),
            resent: true,
        }
    }

    /// The socket's descriptor; -1 (EBADF on use) when there is none.
    fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    fn send_datagram(&mut self) {
        let bytes: Vec<u8> = match self.service {
            Service::Ping => [&echo_request(self.target)[..], PAYLOAD].concat(),
            Service::NeighborSolicit => neighbor_solicit(self.target),
            _ => PAYLOAD.to_vec(),
        };
        if let Err(e) = send(self.raw(), &bytes, MsgFlags::empty()) {
            self.got = Some(self.classify_error(e));
        }
    }

    /// A refusal the ruleset can cause (`reject`: TCP reset or ICMP port
    /// unreachable) is an outcome; any other error is inconclusive.
    fn classify_error(&self, e: Errno) -> Got {
        match e {
            Errno::ECONNREFUSED => Got::Seen(Outcome::Rejected),
            e => Got::Inconclusive(e.desc().to_string()),
        }
    }

    /// Reads what the socket says now that poll reported an event.
    fn on_event(&mut self) {
        let Some(fd) = &self.fd else { return };
        let raw = fd.as_raw_fd();
        match self.service {
            Service::Tcp(_) => {
                if self.refusal_queued() {
                    self.got = Some(Got::Seen(Outcome::Rejected));
                    return;
                }
                self.got = match getsockopt(fd, sockopt::SocketError) {
                    // Woken by the error queue alone: still connecting.
                    Ok(0) if getpeername::<SockaddrStorage>(raw).is_err() => None,
                    Ok(0) => Some(Got::Seen(Outcome::Open)),
                    Ok(errno) => Some(self.classify_error(Errno::from_raw(errno))),
                    Err(e) => Some(Got::Inconclusive(format!("SO_ERROR: {e}"))),
                }
            }
            Service::Udp(_) | Service::Ping => {
                let mut buf = [0u8; 256];
                match recv(raw, &mut buf, MsgFlags::empty()) {
                    Ok(_) => self.got = Some(Got::Seen(Outcome::Open)),
                    Err(Errno::EAGAIN) => {}
                    Err(e) => self.got = Some(self.classify_error(e)),
                }
            }
            // A raw socket sees every ICMPv6 message of the namespace:
            // only an advertisement for the target's address answers. (One
            // that answers the peer kernel's own solicitation for it
            // counts too: it passed the same rule.)
            Service::NeighborSolicit => {
                let mut buf = [0u8; 256];
                while let Ok(n) = recv(raw, &mut buf, MsgFlags::empty()) {
                    if is_advert_for(&buf[..n], self.target) {
                        self.got = Some(Got::Seen(Outcome::Open));
                        return;
                    }
                }
            }
        }
    }

    /// Drains the socket's error queue (IP_RECVERR): whether an ICMP
    /// error in it refused the connection (port unreachable, which is what
    /// `reject` sends). Other queued errors, such as a soft unreachable
    /// from neighbour discovery, decide nothing.
    fn refusal_queued(&self) -> bool {
        let mut refused = false;
        let mut payload = [0u8; 256];
        loop {
            let mut iov = [std::io::IoSliceMut::new(&mut payload)];
            let mut space = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
            let Ok(msg) = recvmsg::<()>(
                self.raw(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
            ) else {
                return refused;
            };
            let Ok(cmsgs) = msg.cmsgs() else {
                return refused;
            };
            for cmsg in cmsgs {
                if let ControlMessageOwned::Ipv4RecvErr(e, _)
                | ControlMessageOwned::Ipv6RecvErr(e, _) = cmsg
                {
                    refused |= e.ee_errno == libc::ECONNREFUSED as u32;
                }
            }
        }
    }

    pub fn got(&self) -> Option<&Got> {
        self.got.as_ref()
    }

    /// Decides an attempt still waiting for its answer by what another
    /// witness saw (the kernel dropped its packet).
    pub fn settle_as(&mut self, got: Got) {
        if self.got.is_none() {
            self.got = Some(got);
        }
    }

    pub fn service(&self) -> Service {
        self.service
    }

    pub fn target(&self) -> IpAddr {
        self.target
    }

    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// The local port of a TCP or UDP attempt, once connected.
    pub fn local_port(&self) -> Option<u16> {
        (self.local_port != 0).then_some(self.local_port)
    }

    /// The second datagram of an attempt still waiting (TCP retransmits
    /// by itself).
    fn resend_datagram(&mut self) {
        if self.got.is_none() && !self.resent && !matches!(self.service, Service::Tcp(_)) {
            self.resent = true;
            self.send_datagram();
        }
    }
}

/// Waits until every attempt has an answer or `timeout` has passed; what
/// has none by then is filtered. Datagrams are sent once more halfway,
/// so one lost on the link does not read as filtered.
pub fn settle(attempts: &mut [Attempt], timeout: Duration) -> io::Result<()> {
    settle_with(attempts, timeout, None)
}

/// Someone else who can decide attempts before their answers come: a
/// socket to wait on beside theirs, and what to do when it is readable.
pub struct Witness<'a> {
    pub fd: std::os::fd::BorrowedFd<'a>,
    pub heard: &'a mut dyn FnMut(&mut [Attempt]) -> io::Result<()>,
}

/// Like [`settle`], also waking when `witness`'s socket is readable, so
/// that it may decide attempts (the kernel's trace of a dropped packet
/// settles a filtered probe without waiting out the timeout).
pub fn settle_with(
    attempts: &mut [Attempt],
    timeout: Duration,
    mut witness: Option<Witness>,
) -> io::Result<()> {
    let start = Instant::now();
    let halfway = timeout / 2;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= timeout || attempts.iter().all(|a| a.got.is_some()) {
            break;
        }
        if elapsed >= halfway {
            attempts.iter_mut().for_each(Attempt::resend_datagram);
        }
        let wake = if elapsed < halfway {
            halfway - elapsed
        } else {
            timeout - elapsed
        };
        let extra = witness.as_ref().map(|w| w.fd);
        if wait_for_answers_or(attempts, wake, extra)? {
            if let Some(w) = witness.as_mut() {
                (w.heard)(attempts)?;
            }
        }
    }
    for a in attempts.iter_mut() {
        if a.got.is_none() {
            a.got = Some(Got::Seen(Outcome::Filtered));
        }
    }
    Ok(())
}

/// The answers to `services` (each with the caller's index), their first
/// packets sent at most `rate` a second and each attempt given `wait` of
/// its own, with at most `cap` sockets open at once. Attempts overlap, so
/// N ports take about N / rate + wait rather than a wait per batch: how a
/// sweep of 65,535 ports stays within seconds. As in [`settle`], what has
/// no answer by its deadline is filtered and datagrams go twice.
pub fn stream(
    source: IpAddr,
    target: IpAddr,
    services: &[(usize, Service)],
    rate: u32,
    cap: usize,
    wait: Duration,
) -> io::Result<Vec<(usize, Got)>> {
    let start = Instant::now();
    let rate = f64::from(rate.max(1));
    let cap = cap.max(1);
    let mut answers = Vec::with_capacity(services.len());
    // In flight: the attempts, and beside them the caller's index and when
    // each started (parallel, so the attempts poll as one slice).
    let mut flight: Vec<Attempt> = Vec::with_capacity(cap);
    let mut started: Vec<(usize, Instant)> = Vec::with_capacity(cap);
    let mut next = 0;
    while next < services.len() || !flight.is_empty() {
        let due = (start.elapsed().as_secs_f64() * rate) as usize + 1;
        while next < due.min(services.len()) && flight.len() < cap {
            let (i, service) = services[next];
            flight.push(Attempt::start(source, target, service));
            started.push((i, Instant::now()));
            next += 1;
        }
        for (a, (_, t)) in flight.iter_mut().zip(&started) {
            if t.elapsed() >= wait / 2 {
                a.resend_datagram();
            }
        }
        // Answered or past its deadline: out, its socket closed.
        for k in (0..flight.len()).rev() {
            if flight[k].got.is_some() || started[k].1.elapsed() >= wait {
                let got = flight.swap_remove(k).got;
                let (i, _) = started.swap_remove(k);
                answers.push((i, got.unwrap_or(Got::Seen(Outcome::Filtered))));
            }
        }
        // Sleep until the next first packet is due, the next resend, the
        // oldest deadline, or an answer.
        let send_at = (next < services.len() && flight.len() < cap)
            .then(|| start + Duration::from_secs_f64(next as f64 / rate));
        let deadline = flight
            .iter()
            .zip(&started)
            .map(|(a, (_, t))| {
                let resend = !a.resent && !matches!(a.service, Service::Tcp(_));
                *t + if resend { wait / 2 } else { wait }
            })
            .min();
        let wake = [send_at, deadline]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            });
        wait_for_answers(&mut flight, wake)?;
    }
    Ok(answers)
}

/// Waits at most `wake` for any attempt still without an answer to hear
/// something, and reads what those that did heard.
fn wait_for_answers(attempts: &mut [Attempt], wake: Duration) -> io::Result<()> {
    wait_for_answers_or(attempts, wake, None).map(|_| ())
}

/// Like [`wait_for_answers`], also waking for `extra`; whether `extra` is
/// readable.
fn wait_for_answers_or(
    attempts: &mut [Attempt],
    wake: Duration,
    extra: Option<std::os::fd::BorrowedFd>,
) -> io::Result<bool> {
    // Waiting: no answer yet (an attempt without a socket is decided).
    let (open, mut fds): (Vec<usize>, Vec<PollFd>) = attempts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.got.is_none())
        .filter_map(|(i, a)| {
            let events = match a.service {
                Service::Tcp(_) => PollFlags::POLLOUT,
                _ => PollFlags::POLLIN,
            };
            a.fd.as_ref().map(|fd| (i, PollFd::new(fd.as_fd(), events)))
        })
        .unzip();
    if open.is_empty() && extra.is_none() {
        std::thread::sleep(wake);
        return Ok(false);
    }
    // The extra socket polls last, after the attempts'.
    if let Some(fd) = extra {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
    }
    let ms = PollTimeout::try_from(wake.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    let readable = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    let extra_ready = extra.is_some() && fds.last().is_some_and(readable);
    let ready: Vec<usize> = open
        .iter()
        .zip(&fds)
        .filter(|(_, f)| readable(f))
        .map(|(&i, _)| i)
        .collect();
    drop(fds);
    for i in ready {
        attempts[i].on_event();
    }
    Ok(extra_ready)
}
