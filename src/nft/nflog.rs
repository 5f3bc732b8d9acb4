//! Packets the ruleset's `log ... group G` statements hand to NFLOG, read
//! over netlink (NETLINK_NETFILTER, subsystem NFNL_SUBSYS_ULOG), as ulogd
//! does: a config message binds the group (NFULNL_CFG_CMD_BIND), another
//! asks for the first bytes of each packet (NFULNL_COPY_PACKET with a
//! small range, enough for the IP and transport headers), then every
//! logged packet arrives as one NFULNL_MSG_PACKET message whose attributes
//! carry the prefix, the interfaces, the payload and, when the kernel
//! stamped the packet, its time (linux/netfilter/nfnetlink_log.h).
//!
//! [`parse`] is pure and tested on bytes; [`Subscription`] owns the socket.
//! Only one socket per network namespace can bind a group: another
//! listener (ulogd, a second `fwharden log`) makes the bind fail (EBUSY).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use thiserror::Error;

use super::acks::attributes;

#[derive(Debug, Error)]
pub enum NflogError {
    #[error("opening a netfilter netlink socket: {0}")]
    Socket(#[source] nix::Error),
    #[error("reading NFLOG group {group} needs root or CAP_NET_ADMIN ({source})")]
    Permission {
        group: u16,
        #[source]
        source: nix::Error,
    },
    #[error("NFLOG group {group} already has a listener (ulogd, another `fwharden log`?); stop it, or choose another group with [defaults] nflog_group")]
    Busy { group: u16 },
    #[error("the kernel refused to {what} NFLOG group {group}: {source}")]
    Refused {
        what: &'static str,
        group: u16,
        #[source]
        source: nix::Error,
    },
    #[error("netlink {op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// How many bytes of each packet are copied: an IPv6 header (40) with
/// extension headers to spare, and the transport header's ports.
const COPY_RANGE: u32 = 128;

const MSG_PACKET: u16 = ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_PACKET as u16;
const MSG_CONFIG: u16 = ((libc::NFNL_SUBSYS_ULOG as u16) << 8) | libc::NFULNL_MSG_CONFIG as u16;
/// nlmsghdr (16 bytes) and nfgenmsg (4).
const HEADERS: usize = 20;

/// One packet NFLOG handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// NFPROTO_* of the hook the packet was logged at (inet tables log
    /// with the packet's own family: 2 for IPv4, 10 for IPv6).
    pub family: u8,
    pub prefix: String,
    pub in_ifindex: Option<u32>,
    pub out_ifindex: Option<u32>,
    /// The first bytes of the packet from its network header.
    pub payload: Vec<u8>,
    /// Seconds and microseconds since the epoch, when the kernel stamped
    /// the packet (it often does not: then the caller's clock is used).
    pub timestamp: Option<(u64, u64)>,
}

/// The NFLOG packets of one netlink datagram. Other messages (acks,
/// errors of config requests) are skipped; a truncated one ends the walk.
pub fn parse(datagram: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= datagram.len() {
        let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().unwrap_or_default()) as usize;
        if len < 16 || at + len > datagram.len() {
            break;
        }
        let msg = &datagram[at..at + len];
        if u16::from_ne_bytes([msg[4], msg[5]]) == MSG_PACKET && msg.len() >= HEADERS {
            out.push(packet(msg));
        }
        at += len.next_multiple_of(4);
    }
    out
}

fn packet(msg: &[u8]) -> Logged {
    let mut p = Logged {
        family: msg[16],
        prefix: String::new(),
        in_ifindex: None,
        out_ifindex: None,
        payload: Vec::new(),
        timestamp: None,
    };
    for (ty, v) in attributes(&msg[HEADERS..]) {
        let be32 = || {
            v.get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let be64 = |o: usize| {
            v.get(o..o + 8)
                .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
        };
        match ty as i32 {
            libc::NFULA_PREFIX => {
                let s = v.split(|b| *b == 0).next().unwrap_or_default();
                p.prefix = String::from_utf8_lossy(s).into_owned();
            }
            libc::NFULA_IFINDEX_INDEV => p.in_ifindex = be32(),
            libc::NFULA_IFINDEX_OUTDEV => p.out_ifindex = be32(),
            libc::NFULA_PAYLOAD => p.payload = v.to_vec(),
            libc::NFULA_TIMESTAMP => p.timestamp = be64(0).zip(be64(8)),
            _ => {}
        }
    }
    p
}

/// A config request for `group`: nlmsghdr, nfgenmsg, one attribute.
fn config(group: u16, seq: u32, attr: u16, value: &[u8]) -> Vec<u8> {
    let attr_len = 4 + value.len();
    let len = HEADERS + attr_len.next_multiple_of(4);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&MSG_CONFIG.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, the group as res_id (big-endian).
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, libc::NFNETLINK_V0 as u8]);
    m.extend_from_slice(&group.to_be_bytes());
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&attr.to_ne_bytes());
    m.extend_from_slice(value);
    m.resize(len, 0);
    m
}

/// A socket bound to one NFLOG group; unbound when dropped (the kernel
/// also drops the binding with the socket).
pub struct Subscription {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Subscription {
    pub fn bind(group: u16) -> Result<Subscription, NflogError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(NflogError::Socket)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NflogError::Socket)?;
        let mut s = Subscription {
            fd,
            buf: vec![0; 65536],
        };
        // struct nfulnl_msg_config_cmd { __u8 command; }
        s.request(
            group,
            1,
            "bind",
            libc::NFULA_CFG_CMD as u16,
            &[libc::NFULNL_CFG_CMD_BIND as u8],
        )?;
        // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[libc::NFULNL_COPY_PACKET as u8, 0]);
        s.request(
            group,
            2,
            "set the copy mode of",
            libc::NFULA_CFG_MODE as u16,
            &mode,
        )?;
        Ok(s)
    }

    /// Sends one config request and reads its acknowledgement.
    fn request(
        &mut self,
        group: u16,
        seq: u32,
        what: &'static str,
        attr: u16,
        value: &[u8],
    ) -> Result<(), NflogError> {
        let m = config(group, seq, attr, value);
        send(self.fd.as_raw_fd(), &m, MsgFlags::empty())
            .map_err(|source| NflogError::Io { op: "send", source })?;
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty())
                .map_err(|source| NflogError::Io { op: "recv", source })?;
            match ack(&self.buf[..n], seq) {
                None => continue,
                Some(0) => return Ok(()),
                Some(e) => {
                    let source = nix::Error::from_raw(e);
                    return Err(match source {
                        nix::Error::EBUSY => NflogError::Busy { group },
                        // nfnetlink_log answers EPERM both to a caller
                        // without CAP_NET_ADMIN and to a bind of a group
                        // another socket holds; its table tells them apart.
                        nix::Error::EPERM if group_taken(group) => NflogError::Busy { group },
                        nix::Error::EPERM => NflogError::Permission { group, source },
                        _ => NflogError::Refused {
                            what,
                            group,
                            source,
                        },
                    });
                }
            }
        }
    }

    /// Makes [`Subscription::receive`] return (with no packet) after `wait`
    /// without one; `None`: wait for ever.
    pub fn set_timeout(&self, wait: Option<std::time::Duration>) -> Result<(), NflogError> {
        use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
        let tv = nix::sys::time::TimeVal::from(libc::timeval {
            tv_sec: wait.map_or(0, |w| w.as_secs() as libc::time_t),
            tv_usec: wait.map_or(0, |w| libc::suseconds_t::from(w.subsec_micros() as i32)),
        });
        setsockopt(&self.fd, ReceiveTimeout, &tv).map_err(|source| NflogError::Io {
            op: "setsockopt",
            source,
        })
    }

    /// Blocks until the kernel hands over packets; returns them. A queue
    /// that overflowed while the caller was slow (ENOBUFS) is reported as
    /// `Ok(None)`: packets were lost, the subscription goes on.
    pub fn receive(&mut self) -> Result<Option<Vec<Logged>>, NflogError> {
        match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
            Ok(n) => Ok(Some(parse(&self.buf[..n]))),
            Err(nix::Error::ENOBUFS) => Ok(None),
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => Ok(Some(Vec::new())),
            Err(source) => Err(NflogError::Io { op: "recv", source }),
        }
    }
}

/// Whether this network namespace's NFLOG table lists `group` as bound
/// (/proc/net/netfilter/nfnetlink_log: one line per instance, the group
/// number first).
fn group_taken(group: u16) -> bool {
    std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_log").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().next() == Some(&group.to_string()))
    })
}

/// The error number of the NLMSG_ERROR answering `seq` (0: an ack), or
/// `None` when the datagram holds no answer to it.
fn ack(datagram: &[u8], seq: u32) -> Option<i32> {
    let mut at = 0;
    while at + 20 <= datagram.len() {
        let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().ok()?) as usize;
        if len < 16 || at + len > datagram.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([datagram[at + 4], datagram[at + 5]]);
        let s = u32::from_ne_bytes(datagram[at + 8..at + 12].try_into().ok()?);
        if ty == libc::NLMSG_ERROR as u16 && s == seq {
            let e = i32::from_ne_bytes(datagram[at + 16..at + 20].try_into().ok()?);
            return Some(-e);
        }
        at += len.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: i32, v: &[u8]) -> Vec<u8> {
        let mut a = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&(ty as u16).to_ne_bytes());
        a.extend_from_slice(v);
        a.resize((4 + v.len()).next_multiple_of(4), 0);
        a
    }

    fn message(ty: u16, body: &[u8]) -> Vec<u8> {
        let len = HEADERS + body.len();
        let mut m = (len as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 7]);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn a_packet_message_yields_prefix_interface_payload_and_time() {
        let mut body = attr(libc::NFULA_PREFIX, b"t.toml:6 \0");
        body.extend(attr(libc::NFULA_IFINDEX_INDEV, &3u32.to_be_bytes()));
        body.extend(attr(libc::NFULA_PAYLOAD, &[0x45, 0, 0, 60, 1]));
        let mut ts = 1_700_000_000u64.to_be_bytes().to_vec();
        ts.extend_from_slice(&250_000u64.to_be_bytes());
        body.extend(attr(libc::NFULA_TIMESTAMP, &ts));
        let mut datagram = message(MSG_PACKET, &body);
        datagram.extend(message(libc::NLMSG_ERROR as u16, &[0; 4]));
        let got = parse(&datagram);
        assert_eq!(
            got,
            [Logged {
                family: libc::AF_INET as u8,
                prefix: "t.toml:6 ".into(),
                in_ifindex: Some(3),
                out_ifindex: None,
                payload: vec![0x45, 0, 0, 60, 1],
                timestamp: Some((1_700_000_000, 250_000)),
            }]
        );
        // Cut short: nothing is made up from half a message.
        assert!(parse(&datagram[..30]).is_empty());
    }

    #[test]
    fn a_config_request_is_laid_out_as_the_kernel_reads_it() {
        let m = config(7, 1, libc::NFULA_CFG_CMD as u16, &[1]);
        assert_eq!(m.len(), 28);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0401);
        assert_eq!(&m[16..20], &[0, 0, 0, 7]);
        assert_eq!(u16::from_ne_bytes([m[20], m[21]]), 5);
        assert_eq!(m[24], 1);
    }
}
