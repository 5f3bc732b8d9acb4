//! The opening sets in the kernel (see [`crate::ruleset::openings`] for
//! why they live in table `inet fwharden`): their part of every apply
//! (the sets, the rules that consult them, and the live openings carried
//! over with what is left of their time), the one transaction of
//! `fwharden open` and `close`, and how the read-back tells them apart.
//!
//! The encoding is nft's own for
//! `set _open_v4 { type ipv4_addr . inet_proto . inet_service; flags interval,timeout }`
//! and `ip saddr . meta l4proto . th dport @_open_v4 accept`, as
//! `nft --debug=netlink` (1.0.6) shows it:
//! - the set: flags 0x94 (interval, timeout, concat), key type 0x730d
//!   (nft's concatenated type id: each type shifted in by 6 bits), key
//!   length 12, and NFTA_SET_DESC_CONCAT with the field lengths 4, 1, 2;
//! - an element: one key and one key end (NFTA_SET_ELEM_KEY_END: the
//!   kernel's pipapo backend takes a range per field), each field padded
//!   to 4 bytes: `0000000a 00000006 0000901f - ff00000a 00000006 0000901f`
//!   for `10.0.0.0/24 . tcp . 8080`;
//! - the rule: `meta load nfproto => reg 1`, `cmp eq reg 1 0x02`,
//!   `payload load 4b @ network header + 12 => reg 1`,
//!   `meta load l4proto => reg 9`, `payload load 2b @ transport header + 2
//!   => reg 10`, `lookup reg 1 set _open_v4`, then the verdict; after the
//!   protocol's load, nft also sends `byteorder reg 9 = hton(reg 9, 2, 1)`,
//!   which swaps nothing (one byte in units of two), and so do we, so that
//!   the kernel holds what `nft -f` of `fwharden show` loads. For IPv6 the
//!   address fills register 1, the protocol goes to reg 2 and the port to
//!   reg 13.
//!
//! Elements carry both NFTA_SET_ELEM_TIMEOUT (what the opening was given,
//! for `status`) and NFTA_SET_ELEM_EXPIRATION (what is left of it; the
//! kernel accepts it on an add since Linux 5.3): an apply re-adds each
//! opening with the time it had left, minus the time since it was read.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::time::Instant;

use ipnet::IpNet;
use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{MsgType, NlMsg};

use super::batch::{Builder, Built, Payload, CREATE, FAMILY};
use super::elems::{self, begin_nest, end_nest, put, put_str, Op};
use super::expr::{CmpOp, Decision, Expr, Header, Membership, MetaKey};
use super::gate::BanGate;
use super::intervals;
use super::obj::{self, KernelElem};
use super::readback;
use super::socket::Socket;
use super::{udata, NftError};
use crate::ruleset::openings::{self as model, Opening, Port, RULE_COMMENT};
use crate::ruleset::{Chain, Family, Protocol, TABLE_NAME};

/// NFT_SET_CONCAT (Linux 5.6), which the libc crate does not name.
const NFT_SET_CONCAT: u32 = 0x80;
const SET_FLAGS: u32 =
    libc::NFT_SET_INTERVAL as u32 | libc::NFT_SET_TIMEOUT as u32 | NFT_SET_CONCAT;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_SET_ELEM_KEY_END: u16 = 10;

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

/// The set's key: nft's type id, its length, and the length of each field.
fn layout(family: Family) -> (u32, u32, [u8; 3]) {
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
fn keys(from: &IpNet, port: Port) -> (Vec<u8>, Vec<u8>) {
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
fn opening_of(e: &KernelElem, family: Family) -> Result<Opening, String> {
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
fn rule_exprs(family: Family, id: Option<u32>) -> Vec<Expr> {
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

/// For the read-back: `Ok(true)` when `name` is an opening set of the
/// shape fwharden writes (its elements are runtime state, not the
/// model's), `Ok(false)` when it is no opening set, `Err` when it is one
/// of another shape.
pub(super) fn is_opening_set(name: &str, s: &obj::Set) -> Result<bool, String> {
    let Some(family) = FAMILIES.into_iter().find(|f| model::set_name(*f) == name) else {
        return Ok(false);
    };
    let (key_type, key_len, _) = layout(family);
    let flags = s.get_u32(sys::NFTNL_SET_FLAGS);
    let key = (
        s.get_u32(sys::NFTNL_SET_KEY_TYPE),
        s.get_u32(sys::NFTNL_SET_KEY_LEN),
    );
    if flags != SET_FLAGS || key != (key_type, key_len) {
        return Err(format!("flags {flags:#x} and key {key:?}"));
    }
    Ok(true)
}

/// For the read-back: `Ok(true)` when a rule is one of those that consult
/// the opening sets, exactly as fwharden writes them; `Err` when it has
/// their comment but not their expressions.
pub(super) fn is_opening_rule(exprs: &[Expr], comment: &str) -> Result<bool, String> {
    if comment != RULE_COMMENT {
        return Ok(false);
    }
    if FAMILIES.iter().any(|f| rule_exprs(*f, None) == exprs) {
        Ok(true)
    } else {
        Err("the comment of the opening rules, but other expressions".into())
    }
}

/// The live openings an apply carries over, and when they were read.
#[derive(Debug, Clone)]
pub struct Carried {
    read_at: Instant,
    openings: Vec<Opening>,
}

/// The opening sets of an apply, with the carried openings as their
/// elements; returns each set's id in the batch, for the rules.
pub(super) fn sets(b: &mut Builder, carried: &Carried) -> [u32; 2] {
    FAMILIES.map(|family| {
        let name = model::set_name(family);
        let (key_type, key_len, fields) = layout(family);
        let s = b.new_set(&name, SET_FLAGS, key_type, key_len);
        s.set_data(sys::NFTNL_SET_DESC_CONCAT, &fields);
        s.set_data(
            sys::NFTNL_SET_USERDATA,
            &udata::named_set_udata("temporary openings (fwharden open)"),
        );
        let id = s.get_u32(sys::NFTNL_SET_ID);
        let what = format!("set {name}");
        b.add(libc::NFT_MSG_NEWSET, CREATE, Payload::Set(s), &what);
        let spent = carried.read_at.elapsed().as_millis() as u64;
        let elems: Vec<Element> = carried
            .openings
            .iter()
            .filter(|o| model::family_of(&o.from) == family)
            .filter_map(|o| {
                let (timeout, left) = remaining(o, spent)?;
                Some(Element::new(o, timeout, Some(left)))
            })
            .collect();
        add_elems(b, &name, Some(id), Op::Add, elems, &what);
        id
    })
}

/// The timeout and expiration an opening read `spent_ms` ago is added
/// again with: what was left of it less that time, so that an apply
/// neither loses an opening nor lengthens it; `None` when it expired
/// meanwhile.
fn remaining(o: &Opening, spent_ms: u64) -> Option<(u64, u64)> {
    let left = o.left_ms.checked_sub(spent_ms).filter(|l| *l > 0)?;
    // The kernel keeps no expiration past the timeout.
    Some((o.timeout_ms.max(left), left))
}

/// The rules that consult the opening sets, appended to `chain` where the
/// batch has got to (see [`model::placement`]).
pub(super) fn rules(b: &mut Builder, chain: &Chain, ids: [u32; 2]) {
    for (family, id) in FAMILIES.into_iter().zip(ids) {
        let what = format!("the {family} opening rule of chain {}", chain.name);
        let r = obj::Rule::new();
        r.set_str(sys::NFTNL_RULE_TABLE, &b.table);
        r.set_str(sys::NFTNL_RULE_CHAIN, &chain.name);
        r.set_u32(sys::NFTNL_RULE_FAMILY, FAMILY.into());
        for e in &rule_exprs(family, Some(id)) {
            r.add_expr(e.to_raw());
        }
        r.set_data(sys::NFTNL_RULE_USERDATA, &udata::rule_udata(RULE_COMMENT));
        let flags = libc::NLM_F_CREATE | libc::NLM_F_APPEND | libc::NLM_F_ACK;
        b.add(libc::NFT_MSG_NEWRULE, flags, Payload::Rule(r), &what);
    }
}

/// What to do with an element of an opening set that is no opening
/// fwharden writes (`nft add element` by hand, without a timeout, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stray {
    /// An error: `status`, `open` and `close` say the table was edited.
    Refuse,
    /// Left out: an apply replaces the hand edit, as it does any other,
    /// and must not make an element without a timeout permanent.
    Drop,
}

/// The openings the kernel holds, `None` when table `inet fwharden` has
/// no opening sets (no table, or one an older fwharden wrote).
pub(super) fn live(sock: &mut Socket) -> Result<Option<Vec<Opening>>, NftError> {
    read(sock, Stray::Refuse)
}

fn read(sock: &mut Socket, stray: Stray) -> Result<Option<Vec<Opening>>, NftError> {
    readback::retrying(|| {
        let mut out = Vec::new();
        for family in FAMILIES {
            let name = model::set_name(family);
            let elems = match readback::set_elems(sock, TABLE_NAME, &name) {
                Ok(e) => e,
                Err(NftError::Rejected { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            for e in &elems {
                match (opening_of(e, family), stray) {
                    (Ok(o), _) => out.push(o),
                    (Err(why), Stray::Refuse) => {
                        return Err(readback::foreign(format!("set {name}"), why))
                    }
                    (Err(_), Stray::Drop) => {}
                }
            }
        }
        out.sort_by_key(|o| (o.port.port, o.from));
        Ok(Some(out))
    })
}

/// The live openings, read for an apply to carry over.
pub(super) fn carry(sock: &mut Socket) -> Result<Carried, NftError> {
    let read_at = Instant::now();
    Ok(Carried {
        openings: read(sock, Stray::Drop)?.unwrap_or_default(),
        read_at,
    })
}

/// The openings the kernel holds, `None` when table `inet fwharden` has
/// no opening sets (no table, or one an older fwharden wrote).
pub fn openings() -> Result<Option<Vec<Opening>>, NftError> {
    live(&mut Socket::open()?)
}

/// One change to the opening sets: `delete` these openings, then `add`
/// these (with their timeout in ms), in one transaction. It waits while an
/// apply holds the ban gate (see [`super::BanGate`]): an apply reads the
/// openings to carry them over, and one added after that read would be
/// lost with the table it replaces.
pub fn change(delete: &[(IpNet, Port)], add: &[(IpNet, Port, u64)]) -> Result<(), NftError> {
    let _gate = BanGate::pass()?;
    let mut b = Builder::new(TABLE_NAME);
    for family in FAMILIES {
        let name = model::set_name(family);
        let of = |n: &IpNet| model::family_of(n) == family;
        let gone = delete
            .iter()
            .filter(|(n, _)| of(n))
            .map(|(n, p)| Element::bare(n, *p))
            .collect();
        add_elems(&mut b, &name, None, Op::Delete, gone, &name);
        let new = add
            .iter()
            .filter(|(n, _, _)| of(n))
            .map(|(n, p, ms)| Element::timed(n, *p, *ms))
            .collect();
        add_elems(&mut b, &name, None, Op::Add, new, &name);
    }
    let built: Built = b.finish();
    Socket::open()?.transact(&built, None)
}

/// One element as sent.
struct Element {
    key: Vec<u8>,
    key_end: Vec<u8>,
    timeout_ms: Option<u64>,
    expires_ms: Option<u64>,
}

impl Element {
    fn new(o: &Opening, timeout_ms: u64, expires_ms: Option<u64>) -> Element {
        let (key, key_end) = keys(&o.from, o.port);
        Element {
            key,
            key_end,
            timeout_ms: Some(timeout_ms),
            expires_ms,
        }
    }

    fn timed(from: &IpNet, port: Port, timeout_ms: u64) -> Element {
        let mut e = Element::bare(from, port);
        e.timeout_ms = Some(timeout_ms);
        e
    }

    fn bare(from: &IpNet, port: Port) -> Element {
        let (key, key_end) = keys(from, port);
        Element {
            key,
            key_end,
            timeout_ms: None,
            expires_ms: None,
        }
    }
}

fn add_elems(
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

    #[test]
    fn an_opening_carried_over_keeps_its_timeout_and_loses_the_time_spent() {
        let o = Opening {
            from: "10.0.0.0/24".parse().unwrap(),
            port: "8080/tcp".parse().unwrap(),
            timeout_ms: 600_000,
            left_ms: 5_000,
        };
        assert_eq!(remaining(&o, 0), Some((600_000, 5_000)));
        assert_eq!(remaining(&o, 1_200), Some((600_000, 3_800)));
        assert_eq!(
            remaining(&o, 5_000),
            None,
            "expired while the apply was built"
        );
        assert_eq!(remaining(&o, 9_000), None);
    }

    #[test]
    fn the_opening_rules_are_told_from_a_look_alike() {
        let v6 = rule_exprs(Family::Ipv6, None);
        assert_eq!(is_opening_rule(&v6, RULE_COMMENT), Ok(true));
        assert_eq!(is_opening_rule(&v6, "web.toml:3 allow"), Ok(false));
        let mut changed = v6.clone();
        changed.pop();
        changed.push(Expr::Verdict(Decision::Drop));
        assert!(is_opening_rule(&changed, RULE_COMMENT).is_err());
    }
}
