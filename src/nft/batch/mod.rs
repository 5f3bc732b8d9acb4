//! The model as one nf_tables batch: the messages, in order, that replace
//! table `inet fwharden` with the ruleset's contents in one transaction.
//!
//! The batch opens with add table, delete table, add table: the table is
//! created if absent and emptied if present, in the same transaction as
//! the new contents, so the replacement is atomic and the batch can be
//! sent again with the same result.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::os::raw::c_char;

use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{MsgType, NlMsg};

use crate::ruleset::*;

use super::elems::{ElemPages, Op};
use super::intervals::{self, Elem};
use super::obj;
use super::rules::{self, AnonSet, AnonValues, ANON_NAME};
use super::udata;
use super::NftError;

pub const FAMILY: u16 = libc::NFPROTO_INET as u16;
/// NFT_MSG_DESTROYTABLE (Linux 6.3): delete if present, no error if absent.
pub const NFT_MSG_DESTROYTABLE: u16 = 26;

/// Set key types as nft numbers them (its `datatype` ids), which `nft
/// list` uses to print the elements.
pub(super) const TYPE_IPV4_ADDR: u32 = 7;
pub(super) const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_PROTO: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP_TYPE: u32 = 14;
const TYPE_ICMPV6_TYPE: u32 = 29;

/// A message of the batch: header type and flags, and the object.
pub(super) enum Payload {
    Table(obj::Table),
    Chain(obj::Chain),
    Set(obj::Set),
    Rule(obj::Rule),
}

struct Msg {
    nl_type: u16,
    flags: u16,
    payload: Payload,
}

/// The seq → description of every message, filled as the batch is written,
/// so the kernel's error can name the object it is about.
pub(super) type Log = RefCell<BTreeMap<u32, String>>;

struct Logged<'a, M> {
    msg: &'a M,
    what: &'a str,
    log: &'a Log,
}

// SAFETY: each write below builds one header and one object payload with
// libnftnl, which never writes more than `nft_nlmsg_maxsize()` bytes for
// a table, chain, set or rule, and for a set element message stops at the
// 64 KiB attribute limit (nftnl_set_elems_nlmsg_build_payload_iter).
unsafe impl NlMsg for Logged<'_, Msg> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _: MsgType) {
        self.log.borrow_mut().insert(seq, self.what.to_string());
        let m = self.msg;
        // SAFETY: `buf` has room for the largest message (the trait's
        // contract); the objects are live.
        unsafe {
            let nlh =
                sys::nftnl_nlmsg_build_hdr(buf.cast::<c_char>(), m.nl_type, FAMILY, m.flags, seq);
            match &m.payload {
                Payload::Table(t) => sys::nftnl_table_nlmsg_build_payload(nlh, t.as_ptr()),
                Payload::Chain(c) => sys::nftnl_chain_nlmsg_build_payload(nlh, c.as_ptr()),
                Payload::Set(s) => sys::nftnl_set_nlmsg_build_payload(nlh, s.as_ptr()),
                Payload::Rule(r) => sys::nftnl_rule_nlmsg_build_payload(nlh, r.as_ptr()),
            }
        }
    }
}

/// A finished batch and what each of its messages is.
pub struct Built {
    pub batch: nftnl::FinalizedBatch,
    pub what: BTreeMap<u32, String>,
}

pub(super) struct Builder {
    pub(super) batch: nftnl::Batch,
    pub(super) log: Log,
    pub(super) table: String,
    next_id: u32,
}

pub(super) const CREATE: i32 = libc::NLM_F_CREATE | libc::NLM_F_ACK;

impl Builder {
    pub(super) fn new(table: &str) -> Builder {
        Builder {
            batch: nftnl::Batch::new(),
            log: RefCell::new(BTreeMap::new()),
            table: table.to_string(),
            next_id: 0,
        }
    }

    pub(super) fn add(&mut self, nl_type: i32, flags: i32, payload: Payload, what: &str) {
        let msg = Msg {
            nl_type: nl_type as u16,
            flags: flags as u16,
            payload,
        };
        let logged = Logged {
            msg: &msg,
            what,
            log: &self.log,
        };
        self.batch.add(&logged, MsgType::Add);
    }

    pub(super) fn table(&self, profile: Option<&str>) -> obj::Table {
        let t = obj::Table::new();
        t.set_str(sys::NFTNL_TABLE_NAME, &self.table);
        t.set_u32(sys::NFTNL_TABLE_FAMILY, FAMILY.into());
        t.set_u32(sys::NFTNL_TABLE_FLAGS, 0);
        if let Some(p) = profile {
            t.set_data(sys::NFTNL_TABLE_USERDATA, &udata::table_udata(p));
        }
        t
    }

    /// A named set with an id of its own, for the batch to refer to.
    pub(super) fn new_set(
        &mut self,
        name: &str,
        flags: u32,
        key_type: u32,
        key_len: u32,
    ) -> obj::Set {
        self.next_id += 1;
        self.set_object(name, flags, key_type, key_len, self.next_id)
    }

    /// The attributes every set of ours carries.
    pub(super) fn set_object(
        &self,
        name: &str,
        flags: u32,
        key_type: u32,
        key_len: u32,
        id: u32,
    ) -> obj::Set {
        let s = obj::Set::new();
        s.set_str(sys::NFTNL_SET_TABLE, &self.table);
        s.set_str(sys::NFTNL_SET_NAME, name);
        s.set_u32(sys::NFTNL_SET_FAMILY, FAMILY.into());
        s.set_u32(sys::NFTNL_SET_FLAGS, flags);
        s.set_u32(sys::NFTNL_SET_KEY_TYPE, key_type);
        s.set_u32(sys::NFTNL_SET_KEY_LEN, key_len);
        s.set_u32(sys::NFTNL_SET_ID, id);
        s
    }

    /// The set message, then its elements in as many messages as needed
    /// (each holds at most 64 KiB of elements), encoded as they are written.
    fn add_set<'e>(
        &mut self,
        set: obj::Set,
        width: usize,
        elems: impl Iterator<Item = Elem> + 'e,
        what: &str,
    ) {
        let name = set.get_str(sys::NFTNL_SET_NAME);
        let id = set.get_u32(sys::NFTNL_SET_ID);
        self.add(libc::NFT_MSG_NEWSET, CREATE, Payload::Set(set), what);
        self.add_elems(&name, Some(id), width, Op::Add, Box::new(elems), what);
    }

    /// Messages adding or deleting elements of set `name`.
    pub(super) fn add_elems<'e>(
        &mut self,
        name: &str,
        id: Option<u32>,
        width: usize,
        op: Op,
        elems: Box<dyn Iterator<Item = Elem> + 'e>,
        what: &str,
    ) {
        let what = format!("{what} elements");
        let pages = ElemPages::new(&self.table, name, id, width, op, elems, &what, &self.log);
        while !pages.done() {
            self.batch.add(&pages, MsgType::Add);
        }
    }

    pub(super) fn named_set(&mut self, set: &Set) -> Result<(), NftError> {
        let (key_type, key_len) = match set.family {
            Family::Ipv4 => (TYPE_IPV4_ADDR, 4),
            Family::Ipv6 => (TYPE_IPV6_ADDR, 16),
        };
        let what = format!("set {}", set.name);
        match &set.kind {
            SetKind::Prefixes(nets) => {
                if let Some(n) = nets.iter().find(|n| Family::of(n) != set.family) {
                    return Err(unsupported(&what, format!("{n} is not {}", set.family)));
                }
                let width = key_len as usize;
                let ranges = || nets.iter().map(intervals::prefix_range);
                intervals::check(ranges(), width).map_err(|e| unsupported(&what, e))?;
                let s = self.new_set(&set.name, libc::NFT_SET_INTERVAL as u32, key_type, key_len);
                s.set_data(
                    sys::NFTNL_SET_USERDATA,
                    &udata::named_set_udata(&set.comment),
                );
                self.add_set(s, width, intervals::elements(ranges(), width), &what);
            }
            SetKind::Meter { timeout_secs, size } => {
                let flags = (libc::NFT_SET_TIMEOUT | libc::NFT_SET_EVAL) as u32;
                let s = self.new_set(&set.name, flags, key_type, key_len);
                s.set_u32(sys::NFTNL_SET_DESC_SIZE, *size);
                s.set_u64(sys::NFTNL_SET_TIMEOUT, u64::from(*timeout_secs) * 1000);
                s.set_data(
                    sys::NFTNL_SET_USERDATA,
                    &udata::named_set_udata(&set.comment),
                );
                self.add_set(s, key_len as usize, std::iter::empty(), &what);
            }
            SetKind::Bans { timeout_secs, size } => {
                // As nft sends `flags timeout; timeout 600s; size 65536`:
                // no EVAL, nothing in the packet path adds to it.
                let s = self.new_set(&set.name, libc::NFT_SET_TIMEOUT as u32, key_type, key_len);
                s.set_u32(sys::NFTNL_SET_DESC_SIZE, *size);
                s.set_u64(sys::NFTNL_SET_TIMEOUT, u64::from(*timeout_secs) * 1000);
                s.set_data(
                    sys::NFTNL_SET_USERDATA,
                    &udata::named_set_udata(&set.comment),
                );
                // No NLM_F_EXCL: an existing ban set of the same shape is
                // left as it is, elements and all.
                self.add(libc::NFT_MSG_NEWSET, CREATE, Payload::Set(s), &what);
            }
            SetKind::Hatch(element) => {
                // As nft sends `flags timeout` with an element's own
                // `timeout`: no set default, no EVAL (nothing adds to it
                // from the packet path).
                let flags = libc::NFT_SET_TIMEOUT as u32;
                let s = self.new_set(&set.name, flags, key_type, key_len);
                s.set_data(
                    sys::NFTNL_SET_USERDATA,
                    &udata::named_set_udata(&set.comment),
                );
                let Some(e) = element else {
                    self.add_set(s, key_len as usize, std::iter::empty(), &what);
                    return Ok(());
                };
                let key = match (e.addr, set.family) {
                    (std::net::IpAddr::V4(a), Family::Ipv4) => u32::from(a).into(),
                    (std::net::IpAddr::V6(a), Family::Ipv6) => u128::from(a),
                    (a, f) => return Err(unsupported(&what, format!("{a} is not {f}"))),
                };
                let name = set.name.clone();
                let id = s.get_u32(sys::NFTNL_SET_ID);
                self.add(libc::NFT_MSG_NEWSET, CREATE, Payload::Set(s), &what);
                let elem = Elem {
                    key,
                    end: false,
                    open: false,
                };
                let pages = ElemPages::new(
                    &self.table,
                    &name,
                    Some(id),
                    key_len as usize,
                    Op::Add,
                    Box::new(std::iter::once(elem)),
                    &what,
                    &self.log,
                )
                .with_timeout_ms(e.timeout_secs.saturating_mul(1000));
                self.batch.add(&pages, MsgType::Add);
            }
        }
        Ok(())
    }

    fn anon_set(&mut self, anon: &AnonSet, what: &str) -> Result<(), NftError> {
        let one = |v: u8| Elem {
            key: v.into(),
            end: false,
            open: false,
        };
        let (key_type, key_len, elems, interval): (u32, u32, Vec<Elem>, bool) = match &anon.values {
            AnonValues::Protocols(p) => (
                TYPE_INET_PROTO,
                1,
                p.iter().map(|p| one(p.number())).collect(),
                false,
            ),
            AnonValues::IcmpTypes(t) => (
                TYPE_ICMP_TYPE,
                1,
                t.iter().map(|t| one(t.number())).collect(),
                false,
            ),
            AnonValues::Icmpv6Types(t) => (
                TYPE_ICMPV6_TYPE,
                1,
                t.iter().map(|t| one(t.number())).collect(),
                false,
            ),
            AnonValues::Ports { ranges, .. } if ranges.iter().all(|r| r.first == r.last) => (
                TYPE_INET_SERVICE,
                2,
                ranges
                    .iter()
                    .map(|r| Elem {
                        key: r.first.into(),
                        end: false,
                        open: false,
                    })
                    .collect(),
                false,
            ),
            AnonValues::Ports { ranges, .. } => {
                let r: Vec<(u128, u128)> = ranges
                    .iter()
                    .map(|r| (r.first.into(), r.last.into()))
                    .collect();
                let elems = intervals::encode(&r, 2).map_err(|e| unsupported(what, e))?;
                (TYPE_INET_SERVICE, 2, elems, true)
            }
        };
        let mut flags = (libc::NFT_SET_ANONYMOUS | libc::NFT_SET_CONSTANT) as u32;
        if interval {
            flags |= libc::NFT_SET_INTERVAL as u32;
        }
        // The id was chosen when the rule was encoded.
        let s = self.set_object(ANON_NAME, flags, key_type, key_len, anon.id);
        s.set_u32(sys::NFTNL_SET_DESC_SIZE, elems.len() as u32);
        s.set_data(
            sys::NFTNL_SET_USERDATA,
            &udata::anon_set_udata(&anon.values, interval),
        );
        self.add_set(s, key_len as usize, elems.into_iter(), what);
        Ok(())
    }

    pub(super) fn chain(&mut self, chain: &Chain) {
        let c = obj::Chain::new();
        c.set_str(sys::NFTNL_CHAIN_TABLE, &self.table);
        c.set_str(sys::NFTNL_CHAIN_NAME, &chain.name);
        c.set_u32(sys::NFTNL_CHAIN_FAMILY, FAMILY.into());
        c.set_str(sys::NFTNL_CHAIN_TYPE, "filter");
        c.set_u32(sys::NFTNL_CHAIN_HOOKNUM, hook_number(chain.hook));
        c.set_u32(sys::NFTNL_CHAIN_PRIO, chain.priority as u32);
        let policy = match chain.policy {
            Policy::Accept => libc::NF_ACCEPT,
            Policy::Drop => libc::NF_DROP,
        };
        c.set_u32(sys::NFTNL_CHAIN_POLICY, policy as u32);
        // The base chain's own statistics count exactly the packets that
        // reach its policy, so `metrics` can report policy drops (see
        // `nft::counters`); nft never asks for them, which `list` ignores.
        c.set_u64(sys::NFTNL_CHAIN_PACKETS, 0);
        c.set_u64(sys::NFTNL_CHAIN_BYTES, 0);
        self.add(
            libc::NFT_MSG_NEWCHAIN,
            CREATE,
            Payload::Chain(c),
            &format!("chain {}", chain.name),
        );
    }

    pub(super) fn rule(
        &mut self,
        chain: &Chain,
        index: usize,
        rule: &Rule,
    ) -> Result<(), NftError> {
        let what = format!(
            "rule {} of chain {} ({:?})",
            index + 1,
            chain.name,
            rule.comment
        );
        if rule.comment.len() > COMMENT_MAX {
            return Err(unsupported(
                &what,
                format!("a comment over {COMMENT_MAX} bytes"),
            ));
        }
        rules::round_trip(rule).map_err(|e| unsupported(&what, e))?;
        let encoded = rules::encode(rule, &mut self.next_id);
        for anon in &encoded.anon {
            self.anon_set(anon, &format!("{what}: anonymous set"))?;
        }
        let r = obj::Rule::new();
        r.set_str(sys::NFTNL_RULE_TABLE, &self.table);
        r.set_str(sys::NFTNL_RULE_CHAIN, &chain.name);
        r.set_u32(sys::NFTNL_RULE_FAMILY, FAMILY.into());
        for e in &encoded.exprs {
            r.add_expr(e.to_raw());
        }
        let user = udata::rule_udata(&rule.comment);
        if !user.is_empty() {
            r.set_data(sys::NFTNL_RULE_USERDATA, &user);
        }
        let flags = libc::NLM_F_CREATE | libc::NLM_F_APPEND | libc::NLM_F_ACK;
        self.add(libc::NFT_MSG_NEWRULE, flags, Payload::Rule(r), &what);
        Ok(())
    }

    pub(super) fn finish(self) -> Built {
        Built {
            batch: self.batch.finalize(),
            what: self.log.into_inner(),
        }
    }
}

pub fn hook_number(h: Hook) -> u32 {
    (match h {
        Hook::Input => libc::NF_INET_LOCAL_IN,
        Hook::Forward => libc::NF_INET_FORWARD,
        Hook::Output => libc::NF_INET_LOCAL_OUT,
    }) as u32
}

fn unsupported(what: &str, why: impl Into<String>) -> NftError {
    NftError::Unsupported {
        what: what.to_string(),
        why: why.into(),
    }
}

mod transactions;
pub use transactions::{apply, delta, remove, Removal};
