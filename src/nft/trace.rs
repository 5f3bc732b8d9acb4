//! nftables tracing, heard from the kernel: for a packet marked with
//! `meta nftrace set 1`, nf_tables sends every socket of group
//! NFNLGRP_NFTRACE one NFT_MSG_TRACE message per rule that matched it in
//! full (a rule that only counts or logs goes on: verdict "continue"), and
//! one for the verdict that ended each base chain, a rule's or the
//! policy's (net/netfilter/nf_tables_trace.c). What `nft monitor trace`
//! prints. The probe replica reads them to learn, from the kernel itself,
//! which rule decided each probe and which rules any probe reached.
//!
//! The first message of a packet in each base chain carries its network
//! and transport headers; every message carries the packet's trace id, so
//! the later ones are matched to it by id. The kernel sends these only
//! while somebody listens, so a tracer is opened before the packets go.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nftnl::nftnl_sys::libc;
use nix::sys::socket as nsock;

use super::acks::{attributes, replies};
use super::monitor::subscribe;

/// enum nft_trace_attributes (include/uapi/linux/netfilter/nf_tables.h).
const TRACE_TABLE: u16 = 1;
const TRACE_CHAIN: u16 = 2;
const TRACE_RULE_HANDLE: u16 = 3;
const TRACE_TYPE: u16 = 4;
const TRACE_VERDICT: u16 = 5;
const TRACE_ID: u16 = 6;
const TRACE_NETWORK_HEADER: u16 = 8;
const TRACE_TRANSPORT_HEADER: u16 = 9;
const TRACE_NFPROTO: u16 = 15;
const TRACE_POLICY: u16 = 16;
/// enum nft_verdict_attributes.
const VERDICT_CODE: u16 = 1;

/// Why a trace message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A rule matched: with a verdict, or "continue" (counted, logged).
    Rule,
    /// The chain's policy decided.
    Policy,
    /// A chain returned to the one that jumped to it.
    Return,
}

/// The packet a trace is about, from the headers of its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6...
    pub protocol: u8,
    /// The TCP or UDP source and destination ports; 0 for anything else.
    pub sport: u16,
    pub dport: u16,
    /// The TCP flags byte; 0 for anything else.
    pub tcp_flags: u8,
    /// The ICMP or ICMPv6 type; 0 for anything else.
    pub icmp_type: u8,
}

/// One trace message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: u32,
    pub kind: Kind,
    pub table: String,
    pub chain: String,
    /// The rule's handle; `None` for a policy or a return.
    pub handle: Option<u64>,
    /// NF_ACCEPT, NF_DROP, NFT_CONTINUE...; `None` when the message has none.
    pub verdict: Option<i32>,
    /// Present in the first message of a packet in a base chain.
    pub packet: Option<Packet>,
}

impl Event {
    /// Whether this message ended the packet's walk through its chain:
    /// accepted or dropped, by a rule or the policy.
    pub fn is_final(&self) -> bool {
        matches!(self.verdict, Some(libc::NF_ACCEPT | libc::NF_DROP))
            && matches!(self.kind, Kind::Rule | Kind::Policy)
    }
}

/// A socket in group NFNLGRP_NFTRACE of the calling thread's network
/// namespace.
pub struct Tracer {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Tracer {
    pub fn open() -> std::io::Result<Tracer> {
        let fd = subscribe(libc::NFNLGRP_NFTRACE)?;
        // A burst of probes makes a burst of messages (one per rule each
        // packet passes): a large queue, so none is lost (a loss is
        // reported, never guessed around). 8 MiB overflowed once in CI on
        // a busy 2-core machine (vps-profile, ENOBUFS); the queue is only
        // memory while messages wait in it.
        let _ = nsock::setsockopt(&fd, nsock::sockopt::RcvBufForce, &(32 << 20));
        Ok(Tracer {
            fd,
            buf: vec![0u8; 1 << 20],
        })
    }

    /// The socket, to poll beside others: readable when messages wait.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every message waiting now, without blocking. An error when the
    /// kernel dropped some (ENOBUFS): what was heard is then incomplete.
    pub fn drain(&mut self) -> std::io::Result<Vec<Event>> {
        let mut out = Vec::new();
        loop {
            match nsock::recv(self.fd.as_raw_fd(), &mut self.buf, nsock::MsgFlags::empty()) {
                Ok(n) => out.extend(parse(&self.buf[..n])),
                Err(nix::errno::Errno::EAGAIN) => return Ok(out),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The trace messages of one datagram.
pub fn parse(datagram: &[u8]) -> Vec<Event> {
    replies(datagram)
        .iter()
        .filter(|r| {
            (r.ty >> 8) as libc::c_int == libc::NFNL_SUBSYS_NFTABLES
                && (r.ty & 0xff) as libc::c_int == libc::NFT_MSG_TRACE
                && r.bytes.len() >= 20
        })
        .filter_map(|r| event(&r.bytes[20..]))
        .collect()
}

fn event(body: &[u8]) -> Option<Event> {
    let attrs = attributes(body);
    let attr = |ty: u16| attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v);
    let be32 = |v: &[u8]| <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes);
    let text = |v: &[u8]| String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned();
    let kind = match attr(TRACE_TYPE).and_then(be32)? as libc::c_int {
        libc::NFT_TRACETYPE_RULE => Kind::Rule,
        libc::NFT_TRACETYPE_POLICY => Kind::Policy,
        libc::NFT_TRACETYPE_RETURN => Kind::Return,
        _ => return None,
    };
    // A policy message carries the walk's last verdict ("continue") in
    // NFTA_TRACE_VERDICT and the chain's policy in NFTA_TRACE_POLICY: the
    // policy is what decided.
    let verdict = match (kind, attr(TRACE_POLICY).and_then(be32)) {
        (Kind::Policy, Some(policy)) => Some(policy as i32),
        _ => attr(TRACE_VERDICT).and_then(|nested| {
            let inner = attributes(nested);
            let code = inner.iter().find(|(t, _)| *t == VERDICT_CODE)?.1;
            be32(code).map(|c| c as i32)
        }),
    };
    let handle = attr(TRACE_RULE_HANDLE)
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes);
    let packet = match (
        attr(TRACE_NFPROTO).and_then(be32),
        attr(TRACE_NETWORK_HEADER),
    ) {
        (Some(p), Some(net)) => headers(p, net, attr(TRACE_TRANSPORT_HEADER)),
        _ => None,
    };
    Some(Event {
        id: attr(TRACE_ID).and_then(be32)?,
        kind,
        table: attr(TRACE_TABLE).map(text)?,
        chain: attr(TRACE_CHAIN).map(text)?,
        handle,
        verdict,
        packet,
    })
}

/// Addresses, protocol and port from the headers the kernel copied.
fn headers(nfproto: u32, net: &[u8], transport: Option<&[u8]>) -> Option<Packet> {
    let (source, destination, protocol) = match nfproto as libc::c_int {
        libc::NFPROTO_IPV4 if net.len() >= 20 => (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&net[12..16]).ok()?)),
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&net[16..20]).ok()?)),
            net[9],
        ),
        libc::NFPROTO_IPV6 if net.len() >= 40 => (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&net[8..24]).ok()?)),
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&net[24..40]).ok()?)),
            net[6],
        ),
        _ => return None,
    };
    let ports = matches!(protocol as i32, libc::IPPROTO_TCP | libc::IPPROTO_UDP);
    let icmp = matches!(protocol as i32, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6);
    let icmp_type = match transport {
        Some([t, ..]) if icmp => *t,
        _ => 0,
    };
    let (sport, dport, tcp_flags) = match transport {
        Some(t) if ports && t.len() >= 4 => {
            let flags = match (protocol as i32, t.get(13)) {
                (libc::IPPROTO_TCP, Some(f)) => *f,
                _ => 0,
            };
            (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
                flags,
            )
        }
        _ => (0, 0, 0),
    };
    Some(Packet {
        source,
        destination,
        protocol,
        sport,
        dport,
        tcp_flags,
        icmp_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut out = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        out.extend(ty.to_ne_bytes());
        out.extend(v);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn message(attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let len = (16 + 4 + body.len()) as u32;
        let ty = ((libc::NFNL_SUBSYS_NFTABLES << 8) | libc::NFT_MSG_TRACE) as u16;
        let mut out = len.to_ne_bytes().to_vec();
        out.extend(ty.to_ne_bytes());
        out.extend([0u8; 10]);
        out.extend([libc::NFPROTO_INET as u8, 0, 0, 0]);
        out.extend(body);
        out
    }

    /// A SYN to 22/tcp from 192.0.2.7, dropped by rule 12 of chain input.
    #[test]
    fn a_rule_s_drop_names_its_handle_and_the_packet() {
        let mut ip = vec![
            0x45,
            0,
            0,
            60,
            0,
            0,
            0,
            0,
            64,
            libc::IPPROTO_TCP as u8,
            0,
            0,
        ];
        ip.extend([192, 0, 2, 7, 198, 18, 0, 1]);
        let mut tcp = vec![0xc3, 0x50, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02];
        tcp.extend([0u8; 6]);
        let verdict = attr(VERDICT_CODE, &(libc::NF_DROP as u32).to_be_bytes());
        let m = message(&[
            attr(TRACE_TABLE, b"fwharden\0"),
            attr(TRACE_CHAIN, b"input\0"),
            attr(TRACE_RULE_HANDLE, &12u64.to_be_bytes()),
            attr(TRACE_TYPE, &(libc::NFT_TRACETYPE_RULE as u32).to_be_bytes()),
            attr(TRACE_VERDICT | 0x8000, &verdict),
            attr(TRACE_ID, &0xdead_beefu32.to_be_bytes()),
            attr(TRACE_NETWORK_HEADER, &ip),
            attr(TRACE_TRANSPORT_HEADER, &tcp),
            attr(TRACE_NFPROTO, &(libc::NFPROTO_IPV4 as u32).to_be_bytes()),
        ]);
        let events = parse(&m);
        assert_eq!(
            events,
            [Event {
                id: 0xdead_beef,
                kind: Kind::Rule,
                table: "fwharden".into(),
                chain: "input".into(),
                handle: Some(12),
                verdict: Some(libc::NF_DROP),
                packet: Some(Packet {
                    source: "192.0.2.7".parse().unwrap(),
                    destination: "198.18.0.1".parse().unwrap(),
                    protocol: libc::IPPROTO_TCP as u8,
                    sport: 50000,
                    dport: 22,
                    tcp_flags: 0x02,
                    icmp_type: 0,
                }),
            }]
        );
        assert!(events[0].is_final());
        // A policy message has no handle and no headers when it is not
        // the packet's first in the chain; its verdict is the walk's last
        // ("continue"), the policy an attribute of its own.
        let continues = (libc::NFT_CONTINUE as u32).to_be_bytes();
        let policy = message(&[
            attr(TRACE_TABLE, b"fwharden\0"),
            attr(TRACE_CHAIN, b"input\0"),
            attr(
                TRACE_TYPE,
                &(libc::NFT_TRACETYPE_POLICY as u32).to_be_bytes(),
            ),
            attr(TRACE_VERDICT | 0x8000, &attr(VERDICT_CODE, &continues)),
            attr(TRACE_ID, &1u32.to_be_bytes()),
            attr(TRACE_POLICY, &(libc::NF_DROP as u32).to_be_bytes()),
        ]);
        let events = parse(&policy);
        assert_eq!(
            (events[0].kind, events[0].handle, events[0].packet),
            (Kind::Policy, None, None)
        );
        assert_eq!(events[0].verdict, Some(libc::NF_DROP));
        assert!(events[0].is_final());
    }
}
