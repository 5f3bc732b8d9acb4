//! The encoding of openings, both ways: the set's key, an element's key
//! and key end (and back), the rule's expressions, and the element
//! messages (see the parent module for what nft sends).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::c_void;

use ipnet::IpNet;
use nftnl::nftnl_sys::libc;
use nftnl::{MsgType, NlMsg};

use super::super::batch::Builder;
use super::super::elems::{self, begin_nest, end_nest, put, put_str, Op};
use super::super::expr::{CmpOp, Decision, Expr, Header, Membership, MetaKey};
use super::super::intervals;
use super::super::obj::KernelElem;
use crate::ruleset::openings::{self as model, Opening, Port};
use crate::ruleset::{Family, Protocol};

/// NFT_SET_CONCAT (Linux 5.6), which the libc crate does not name.
const NFT_SET_CONCAT: u32 = 0x80;
pub(super) const SET_FLAGS: u32 =
    libc::NFT_SET_INTERVAL as u32 | libc::NFT_SET_TIMEOUT as u32 | NFT_SET_CONCAT;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_SET_ELEM_KEY_END: u16 = 10;

/// The set's key: nft's type id, its length, and the length of each field.
pub(super) fn layout(family: Family) -> (u32, u32, [u8; 3]) {
    // nft's datatype ids: ipv4_addr 7, ipv6_addr 8, inet_proto 12,
    // inet_service 13; a concatenation shifts each in by 6 bits.
    let concat = |addr: u32| ((addr << 6 | 12) << 6) | 13;
    match family {
        Family::Ipv4 => (concat(7), 12, [4, 1, 2]),
        Family::Ipv6 => (concat(8), 24, [16, 1, 2]),
    }
}

/// The element's key and key end: the prefix's first and last address,
/// each followed by the protocol and the port, every field padded to 4
/// bytes.
pub(super) fn keys(from: &IpNet, port: Port) -> (Vec<u8>, Vec<u8>) {
    let (first, last): (Vec<u8>, Vec<u8>) = match from {
        IpNet::V4(n) => (n.network().octets().into(), n.broadcast().octets().into()),
        IpNet::V6(n) => (n.network().octets().into(), n.broadcast().octets().into()),
    };
    let mut tail = vec![port.protocol.number(), 0, 0, 0];
    tail.extend_from_slice(&port.port.to_be_bytes());
    tail.extend_from_slice(&[0, 0]);
    let join = |a: Vec<u8>| [a, tail.clone()].concat();
    (join(first), join(last))
}

/// The opening an element of set `_open_<family>` stands for, or why it is
/// not one fwharden writes.
pub(super) fn opening_of(e: &KernelElem, family: Family) -> Result<Opening, String> {
    let width = match family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 16,
    };
    let (_, len, _) = layout(family);
    if e.key.len() != len as usize || e.key_end.len() != len as usize {
        return Err(format!("an element of {} bytes", e.key.len()));
    }
    let num = |b: &[u8]| b.iter().fold(0u128, |n, x| n << 8 | u128::from(*x));
    let from = intervals::range_prefix(num(&e.key[..width]), num(&e.key_end[..width]), width)
        .ok_or("a source range that is not a prefix")?;
    if e.key[width..] != e.key_end[width..] {
        return Err("a range of protocols or ports".into());
    }
    let protocol = match e.key[width] {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        p => return Err(format!("protocol {p}")),
    };
    let port = u16::from_be_bytes([e.key[width + 4], e.key[width + 5]]);
    let (Some(timeout_ms), Some(left_ms)) = (e.timeout_ms, e.expires_ms) else {
        return Err("an element without a timeout".into());
    };
    Ok(Opening {
        from,
        port: Port { port, protocol },
        timeout_ms,
        left_ms,
    })
}

/// The rule that accepts what set `_open_<family>` holds (`id`: the set's
/// id in the same batch, `None` as the kernel lists it back).
pub(super) fn rule_exprs(family: Family, id: Option<u32>) -> Vec<Expr> {
    let (nfproto, offset, len, proto_word, port_word) = match family {
        Family::Ipv4 => (libc::NFPROTO_IPV4, 12, 4, 1, 2),
        Family::Ipv6 => (libc::NFPROTO_IPV6, 8, 16, 4, 5),
    };
    vec![
        Expr::Meta(MetaKey::NfProto),
        Expr::Cmp(CmpOp::Eq, vec![nfproto as u8]),
        Expr::Payload {
            header: Header::Network,
            offset,
            len,
        },
        Expr::MetaAt(MetaKey::L4Proto, proto_word),
        Expr::Hton {
            word: proto_word,
            size: 2,
            len: 1,
        },
        Expr::PayloadAt {
            header: Header::Transport,
            offset: 2,
            len: 2,
            word: port_word,
        },
        Expr::Lookup {
            set: model::set_name(family),
            id,
            membership: Membership::In,
        },
        Expr::Counter,
        Expr::Verdict(Decision::Accept),
    ]
}

/// One element as sent.
pub(super) struct Element {
    key: Vec<u8>,
    key_end: Vec<u8>,
    timeout_ms: Option<u64>,
    expires_ms: Option<u64>,
}

impl Element {
    pub(super) fn new(o: &Opening, timeout_ms: u64, expires_ms: Option<u64>) -> Element {
        let (key, key_end) = keys(&o.from, o.port);
        Element {
            key,
            key_end,
            timeout_ms: Some(timeout_ms),
            expires_ms,
        }
    }

    pub(super) fn timed(from: &IpNet, port: Port, timeout_ms: u64) -> Element {
        let mut e = Element::bare(from, port);
        e.timeout_ms = Some(timeout_ms);
        e
    }

    pub(super) fn bare(from: &IpNet, port: Port) -> Element {
        let (key, key_end) = keys(from, port);
        Element {
            key,
            key_end,
            timeout_ms: None,
            expires_ms: None,
        }
    }
}

pub(super) fn add_elems(
    b: &mut Builder,
    set: &str,
    set_id: Option<u32>,
    op: Op,
    elems: Vec<Element>,
    what: &str,
) {
    if elems.is_empty() {
        return;
    }
    let what = format!("{what} elements");
    let pages = Pages {
        table: &b.table,
        set,
        set_id,
        op,
        elems,
        next: Cell::new(0),
        what: &what,
        log: &b.log,
    };
    while pages.next.get() < pages.elems.len() {
        b.batch.add(&pages, MsgType::Add);
    }
}

/// NEWSETELEM or DELSETELEM messages of opening elements, as many as the
/// 64 KiB nest limit needs (see [`super::elems`] for the layout, which
/// this extends by the key end and the expiration).
struct Pages<'a> {
    table: &'a str,
    set: &'a str,
    set_id: Option<u32>,
    op: Op,
    elems: Vec<Element>,
    next: Cell<usize>,
    what: &'a str,
    log: &'a RefCell<BTreeMap<u32, String>>,
}

impl Pages<'_> {
    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(elems::LIST_MAX + 256);
        put_str(&mut out, elems::NFTA_SET_ELEM_LIST_SET, self.set);
        if let Some(id) = self.set_id {
            put(
                &mut out,
                elems::NFTA_SET_ELEM_LIST_SET_ID,
                &id.to_be_bytes(),
            );
        }
        put_str(&mut out, elems::NFTA_SET_ELEM_LIST_TABLE, self.table);
        let list = begin_nest(&mut out, elems::NFTA_SET_ELEM_LIST_ELEMENTS);
        let mut i = self.next.get();
        while i < self.elems.len() && out.len() - list < elems::LIST_MAX {
            let e = &self.elems[i];
            let nest = begin_nest(&mut out, elems::NFTA_LIST_ELEM);
            if let Some(ms) = e.timeout_ms {
                put(&mut out, elems::NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
            }
            if let Some(ms) = e.expires_ms {
                put(&mut out, NFTA_SET_ELEM_EXPIRATION, &ms.to_be_bytes());
            }
            let key = begin_nest(&mut out, elems::NFTA_SET_ELEM_KEY);
            put(&mut out, elems::NFTA_DATA_VALUE, &e.key);
            end_nest(&mut out, key);
            let end = begin_nest(&mut out, NFTA_SET_ELEM_KEY_END);
            put(&mut out, elems::NFTA_DATA_VALUE, &e.key_end);
            end_nest(&mut out, end);
            end_nest(&mut out, nest);
            i += 1;
        }
        end_nest(&mut out, list);
        self.next.set(i);
        out
    }
}

// SAFETY: as for `elems::ElemPages`: one header (20 bytes) and a payload
// of at most LIST_MAX bytes plus the names and one element (under 64 KiB
// in all) into a buffer of `nft_nlmsg_maxsize()` bytes.
unsafe impl NlMsg for Pages<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _: MsgType) {
        self.log.borrow_mut().insert(seq, self.what.to_string());
        // SAFETY: as above.
        unsafe { elems::write_message(buf, seq, self.op, &self.payload()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_what_nft_sends() {
        // nft --debug=netlink for `10.0.0.0/24 . tcp . 8080`:
        // element 0000000a 00000006 0000901f - ff00000a 00000006 0000901f
        let (k, e) = keys(&"10.0.0.0/24".parse().unwrap(), "8080/tcp".parse().unwrap());
        assert_eq!(k, [10, 0, 0, 0, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(e, [10, 0, 0, 255, 6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(layout(Family::Ipv4).0, 0x730d);
    }

    #[test]
    fn an_element_reads_back_as_the_opening_it_was() {
        for (from, port) in [("10.0.0.0/24", "8080/tcp"), ("2001:db8::1/128", "53/udp")] {
            let from: IpNet = from.parse().unwrap();
            let port: Port = port.parse().unwrap();
            let (key, key_end) = keys(&from, port);
            let e = KernelElem {
                key,
                key_end,
                flags: 0,
                timeout_ms: Some(600_000),
                expires_ms: Some(1_000),
            };
            let o = opening_of(&e, model::family_of(&from)).unwrap();
            assert_eq!((o.from, o.port, o.left_ms), (from, port, 1_000));
        }
    }

    /// The number of elements in one message's attributes (after its
    /// headers): the nests inside NFTA_SET_ELEM_LIST_ELEMENTS.
    fn elements_in(payload: &[u8]) -> usize {
        let attrs = |b: &[u8]| {
            let mut out = Vec::new();
            let mut at = 0;
            while at + 4 <= b.len() {
                let len = u16::from_ne_bytes([b[at], b[at + 1]]) as usize;
                let ty = u16::from_ne_bytes([b[at + 2], b[at + 3]]) & 0x3fff;
                out.push((ty, b[at + 4..at + len].to_vec()));
                at += len.next_multiple_of(4);
            }
            out
        };
        attrs(payload)
            .into_iter()
            .filter(|(ty, _)| *ty == elems::NFTA_SET_ELEM_LIST_ELEMENTS)
            .map(|(_, list)| attrs(&list).len())
            .sum()
    }

    #[test]
    fn a_big_group_pages_into_messages_under_the_nest_limit_and_loses_none() {
        let port: Port = "8080/tcp".parse().unwrap();
        let elems: Vec<Element> = (0..3000u128)
            .map(|i| {
                let net = IpNet::new(std::net::Ipv6Addr::from(i << 64).into(), 64).unwrap();
                Element::timed(&net, port, 600_000)
            })
            .collect();
        let log = RefCell::new(BTreeMap::new());
        let pages = Pages {
            table: "fwharden",
            set: "_open_v6",
            set_id: None,
            op: Op::Add,
            elems,
            next: Cell::new(0),
            what: "test",
            log: &log,
        };
        let mut messages = Vec::new();
        while pages.next.get() < pages.elems.len() {
            messages.push(pages.payload());
        }
        assert!(messages.len() > 1, "{} messages", messages.len());
        assert!(messages.iter().all(|m| m.len() < 65_536));
        let total: usize = messages.iter().map(|m| elements_in(m)).sum();
        assert_eq!(total, 3000);
    }
}
