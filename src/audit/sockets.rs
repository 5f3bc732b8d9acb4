//! The kernel's table of sockets, read through netlink sock_diag
//! (`SOCK_DIAG_BY_FAMILY` with an `inet_diag_req_v2`, as `ss -tuln` asks
//! it): TCP sockets in LISTEN and UDP sockets bound but not connected
//! ([`listeners`]), and established TCP connections ([`established`], the
//! SSH client's discovery), for IPv4 and IPv6, in the calling thread's
//! network namespace.
//!
//! Why a small reader of our own rather than the `netlink-packet-sock-diag`
//! crate: we need one request and three fields of one reply struct, and the
//! crate brings `netlink-packet-core`, `-utils` and `netlink-sys`, whose
//! versions must move together. The layouts below are those of
//! `include/uapi/linux/inet_diag.h` and `sock_diag.h`, which are kernel ABI.
//!
//! sock_diag needs no privilege: an unprivileged user sees every socket of
//! the namespace (only the owning process is hidden, see [`super::owners`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self as nsock, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

use serde::Serialize;
use thiserror::Error;

use crate::ruleset::{Family, Protocol};

/// One listening TCP socket or bound UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub protocol: Protocol,
    /// The bound address: `0.0.0.0` or `::` for every address.
    pub address: IpAddr,
    pub port: u16,
    /// The interface it is bound to with SO_BINDTODEVICE (`idiag_if`), by
    /// name; `None` when it is not bound to one.
    pub interface: Option<String>,
    /// Which families reach it: an IPv6 socket on `::` without IPV6_V6ONLY
    /// also takes IPv4 connections (as v4-mapped addresses).
    pub families: Vec<Family>,
    pub uid: u32,
    /// The socket's inode, which ties it to its owner's file descriptor.
    pub inode: u64,
}

/// One established TCP connection, as this host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The socket's inode, which ties it to its owners' file descriptors.
    pub inode: u64,
}

#[derive(Debug, Error)]
pub enum SocketsError {
    #[error("cannot open a sock_diag netlink socket: {source}")]
    Open {
        #[source]
        source: io::Error,
    },
    #[error("the kernel refused to list {what} sockets (is {module} loaded?): {source}")]
    Dump {
        what: String,
        module: &'static str,
        #[source]
        source: io::Error,
    },
}

// include/uapi/linux/sock_diag.h and inet_diag.h; the libc crate does not
// carry these.
/// A netlink message type, typed as libc types `NLMSG_DONE` and the like.
const SOCK_DIAG_BY_FAMILY: libc::c_int = 20;
const INET_DIAG_SKV6ONLY: u16 = 11;
/// TCP states as bits of `idiag_states` (include/net/tcp_states.h):
/// TCP_LISTEN is 10; a UDP socket that is bound but not connected is in
/// TCP_CLOSE (7), which `ss` shows as UNCONN.
const TCP_LISTEN: u32 = 10;
const TCP_CLOSE: u32 = 7;
const TCP_ESTABLISHED: u32 = 1;
/// NLMSG_HDRLEN, which libc keeps private: `NLMSG_LENGTH(0)` is it.
const NLMSG_HDRLEN: usize = libc::NLMSG_LENGTH(0) as usize;
/// `struct inet_diag_sockid`: sport, dport (big endian), src[4], dst[4]
/// (big endian u32 words), if, cookie[2].
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_msg`: family, state, timer, retrans, id, expires,
/// rqueue, wqueue, uid, inode.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;

/// Every listening socket of the namespace, TCP then UDP, IPv4 then IPv6.
pub fn listeners() -> Result<Vec<Listener>, SocketsError> {
    let mut out = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let states = match protocol {
            Protocol::Tcp => 1u32 << TCP_LISTEN,
            Protocol::Udp => 1u32 << TCP_CLOSE,
        };
        for family in [Family::Ipv4, Family::Ipv6] {
            out.extend(dump(protocol, family, states, |m| parse(protocol, m))?);
        }
    }
    Ok(out)
}

/// The TCP listening sockets alone, IPv4 then IPv6.
pub fn tcp_listeners() -> Result<Vec<Listener>, SocketsError> {
    let mut out = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        out.extend(dump(Protocol::Tcp, family, 1u32 << TCP_LISTEN, |m| {
            parse(Protocol::Tcp, m)
        })?);
    }
    Ok(out)
}

/// Every established TCP connection of the namespace, IPv4 then IPv6.
pub fn established() -> Result<Vec<Connection>, SocketsError> {
    let mut out = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        out.extend(dump(
            Protocol::Tcp,
            family,
            1u32 << TCP_ESTABLISHED,
            parse_connection,
        )?);
    }
    Ok(out)
}

fn open() -> Result<OwnedFd, SocketsError> {
    nsock::socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(|e| SocketsError::Open { source: e.into() })
}

fn request(protocol: Protocol, family: Family, states: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 8 + SOCKID_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend((len as u32).to_ne_bytes());
    b.extend((SOCK_DIAG_BY_FAMILY as u16).to_ne_bytes());
    b.extend(((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    b.extend(1u32.to_ne_bytes()); // sequence
    b.extend(0u32.to_ne_bytes()); // port id: the kernel
    b.push(match family {
        Family::Ipv4 => libc::AF_INET as u8,
        Family::Ipv6 => libc::AF_INET6 as u8,
    });
    b.push(protocol.number());
    b.push(0); // idiag_ext: SKV6ONLY comes without asking
    b.push(0);
    b.extend(states.to_ne_bytes());
    b.resize(len, 0); // the id: all zero, no filter
    b
}

fn dump<T>(
    protocol: Protocol,
    family: Family,
    states: u32,
    parse: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>, SocketsError> {
    let fail = |source: io::Error| SocketsError::Dump {
        what: format!("{} {}", family, protocol.as_str()),
        module: match protocol {
            Protocol::Tcp => "inet_diag/tcp_diag",
            Protocol::Udp => "udp_diag",
        },
        source,
    };
    let fd = open()?;
    let req = request(protocol, family, states);
    nsock::send(fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(|e| fail(e.into()))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let end = match nsock::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(fail(e.into())),
        };
        let mut at = 0usize;
        while at + NLMSG_HDRLEN <= end {
            let len = u32_at(&buf, at) as usize;
            let kind = libc::c_int::from(u16::from_ne_bytes([buf[at + 4], buf[at + 5]]));
            if len < NLMSG_HDRLEN || at + len > end {
                return Err(fail(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a truncated netlink message",
                )));
            }
            match kind {
                libc::NLMSG_DONE => return Ok(out),
                libc::NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(
                        buf[at + NLMSG_HDRLEN..at + NLMSG_HDRLEN + 4]
                            .try_into()
                            .expect("four bytes"),
                    );
                    return Err(fail(io::Error::from_raw_os_error(-errno)));
                }
                SOCK_DIAG_BY_FAMILY => {
                    let body = &buf[at + NLMSG_HDRLEN..at + len];
                    if let Some(l) = parse(body) {
                        out.push(l);
                    }
                }
                _ => {}
            }
            at += (len + 3) & !3;
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

/// The family of an `inet_diag_msg` and the address at `at` of its
/// sockid (`src` at 4, `dst` at 20).
fn address_at(msg: &[u8], at: usize) -> Option<IpAddr> {
    let id = &msg[4..4 + SOCKID_LEN];
    let a: [u8; 16] = id[at..at + 16].try_into().ok()?;
    match msg[0] as i32 {
        libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(a))),
        _ => None,
    }
}

/// One established connection's `inet_diag_msg`: both ends and the inode.
fn parse_connection(msg: &[u8]) -> Option<Connection> {
    if msg.len() < MSG_LEN {
        return None;
    }
    let id = &msg[4..4 + SOCKID_LEN];
    let sport = u16::from_be_bytes([id[0], id[1]]);
    let dport = u16::from_be_bytes([id[2], id[3]]);
    Some(Connection {
        local: SocketAddr::new(address_at(msg, 4)?, sport),
        remote: SocketAddr::new(address_at(msg, 20)?, dport),
        inode: u64::from(u32_at(msg, 4 + SOCKID_LEN + 16)),
    })
}

/// One `inet_diag_msg` and its attributes; `None` when it is too short.
fn parse(protocol: Protocol, msg: &[u8]) -> Option<Listener> {
    if msg.len() < MSG_LEN {
        return None;
    }
    let family = match msg[0] as i32 {
        libc::AF_INET => Family::Ipv4,
        libc::AF_INET6 => Family::Ipv6,
        _ => return None,
    };
    let id = &msg[4..4 + SOCKID_LEN];
    let port = u16::from_be_bytes([id[0], id[1]]);
    let address = address_at(msg, 4)?;
    let ifindex = u32_at(id, 36);
    let uid = u32_at(msg, 4 + SOCKID_LEN + 12);
    let inode = u64::from(u32_at(msg, 4 + SOCKID_LEN + 16));
    let mut v6only = false;
    let mut at = MSG_LEN;
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
        if len < 4 || at + len > msg.len() {
            break;
        }
        if kind == INET_DIAG_SKV6ONLY && len >= 5 {
            v6only = msg[at + 4] != 0;
        }
        at += (len + 3) & !3;
    }
    let families = match (family, address) {
        // A dual-stack socket on ::, or on a v4-mapped address.
        (Family::Ipv6, IpAddr::V6(a))
            if !v6only && (a.is_unspecified() || a.to_ipv4_mapped().is_some()) =>
        {
            vec![Family::Ipv4, Family::Ipv6]
        }
        (f, _) => vec![f],
    };
    let interface = (ifindex != 0).then(|| {
        nix::net::if_::if_indextoname(ifindex)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("#{ifindex}"))
    });
    Some(Listener {
        protocol,
        address,
        port,
        interface,
        families,
        uid,
        inode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_the_size_the_kernel_expects() {
        let r = request(Protocol::Tcp, Family::Ipv6, 1 << TCP_LISTEN);
        // nlmsghdr + inet_diag_req_v2 (sizeof = 56).
        assert_eq!(r.len(), 16 + 56);
        assert_eq!(u32_at(&r, 0) as usize, r.len());
        assert_eq!(r[16], libc::AF_INET6 as u8);
        assert_eq!(r[17], libc::IPPROTO_TCP as u8);
        assert_eq!(u32_at(&r, 20), 1 << 10);
    }

    #[test]
    fn a_reply_gives_address_port_interface_and_dual_stack() {
        let mut m = vec![0u8; MSG_LEN];
        m[0] = libc::AF_INET6 as u8;
        m[4..6].copy_from_slice(&8080u16.to_be_bytes());
        m[4 + SOCKID_LEN + 12..4 + SOCKID_LEN + 16].copy_from_slice(&1000u32.to_ne_bytes());
        m[4 + SOCKID_LEN + 16..4 + SOCKID_LEN + 20].copy_from_slice(&4242u32.to_ne_bytes());
        let l = parse(Protocol::Tcp, &m).unwrap();
        assert_eq!(l.address, "::".parse::<IpAddr>().unwrap());
        assert_eq!((l.port, l.uid, l.inode), (8080, 1000, 4242));
        assert_eq!(l.families, [Family::Ipv4, Family::Ipv6]);
        assert_eq!(l.interface, None);
        // With IPV6_V6ONLY set, only IPv6.
        m.extend([5, 0, INET_DIAG_SKV6ONLY as u8, 0, 1, 0, 0, 0]);
        assert_eq!(parse(Protocol::Tcp, &m).unwrap().families, [Family::Ipv6]);
        assert!(parse(Protocol::Tcp, &m[..10]).is_none());
    }

    #[test]
    fn the_kernel_lists_a_tcp_listener_and_a_udp_socket_of_ours() {
        use std::os::unix::fs::MetadataExt;
        let inode_of = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .ino()
        };
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let all = listeners().unwrap();
        let t = all
            .iter()
            .find(|l| l.inode == inode_of(tcp.as_raw_fd()))
            .expect("our TCP listener");
        assert_eq!(
            (t.protocol, t.address, t.port),
            (
                Protocol::Tcp,
                "127.0.0.1".parse().unwrap(),
                tcp.local_addr().unwrap().port()
            )
        );
        assert_eq!(t.families, [Family::Ipv4]);
        let u = all
            .iter()
            .find(|l| l.inode == inode_of(udp.as_raw_fd()))
            .expect("our UDP socket");
        assert_eq!(
            (u.protocol, u.port),
            (Protocol::Udp, udp.local_addr().unwrap().port())
        );
        assert_eq!(u.families, [Family::Ipv6]);
    }

    #[test]
    fn a_connection_reply_gives_both_ends() {
        let mut m = vec![0u8; MSG_LEN];
        m[0] = libc::AF_INET as u8;
        m[4..6].copy_from_slice(&22u16.to_be_bytes());
        m[6..8].copy_from_slice(&50000u16.to_be_bytes());
        m[8..12].copy_from_slice(&[10, 0, 0, 1]);
        m[24..28].copy_from_slice(&[192, 0, 2, 7]);
        m[4 + SOCKID_LEN + 16..4 + SOCKID_LEN + 20].copy_from_slice(&77u32.to_ne_bytes());
        let c = parse_connection(&m).unwrap();
        assert_eq!(c.local, "10.0.0.1:22".parse().unwrap());
        assert_eq!(c.remote, "192.0.2.7:50000".parse().unwrap());
        assert_eq!(c.inode, 77);
    }

    #[test]
    fn the_kernel_lists_an_established_connection_of_ours() {
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
            .unwrap()
            .ino();
        let all = established().unwrap();
        let found = all
            .iter()
            .find(|x| x.inode == inode)
            .expect("our server end");
        assert_eq!(found.local, l.local_addr().unwrap());
        assert_eq!(found.remote, c.local_addr().unwrap());
    }
}
