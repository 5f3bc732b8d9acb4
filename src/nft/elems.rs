//! Set elements written straight into the batch's pages.
//!
//! libnftnl keeps one `struct nftnl_set_elem` per element (a few hundred
//! bytes: room for the largest key, data and key end), so a million
//! prefixes, two million interval elements, took over 800 MiB and half a
//! second before the first byte was sent. Here each NEWSETELEM (or
//! DELSETELEM) message is encoded as the batch asks for it, from a lazy
//! iterator of [`Elem`]s: the elements exist only as the bytes of the batch.
//!
//! The layout is libnftnl's (`nftnl_set_elems_nlmsg_build_payload_iter`),
//! with the attribute numbers of include/uapi/linux/netfilter/nf_tables.h:
//! the set's name and transaction id and the table, then a nest of
//! elements, each a nest of its flags (for an interval end), its timeout
//! (for the escape hatch), its key (a nest holding the value) and its user
//! data (for an open interval).

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::iter::Peekable;
use std::os::raw::c_char;

use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{MsgType, NlMsg};

use super::batch::FAMILY;
use super::intervals::{open_udata, Elem};

pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(super) const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub(super) const NFTA_DATA_VALUE: u16 = 1;

/// A nest's length is a u16: the element list of one message stays below
/// it, with room for the largest element.
pub(super) const LIST_MAX: usize = 60 * 1024;

/// Which message the elements travel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Delete,
}

/// The messages carrying a set's elements: [`nftnl::Batch::add`] is called
/// with it until [`ElemPages::done`].
pub struct ElemPages<'a> {
    table: &'a str,
    set: &'a str,
    /// The set's id in this transaction, for a set the same batch creates.
    set_id: Option<u32>,
    width: usize,
    op: Op,
    /// Each element's own timeout (NFTA_SET_ELEM_TIMEOUT), in ms.
    timeout_ms: Option<u64>,
    elems: RefCell<Peekable<Box<dyn Iterator<Item = Elem> + 'a>>>,
    what: &'a str,
    log: &'a RefCell<std::collections::BTreeMap<u32, String>>,
    done: Cell<bool>,
}

impl<'a> ElemPages<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: &'a str,
        set: &'a str,
        set_id: Option<u32>,
        width: usize,
        op: Op,
        elems: Box<dyn Iterator<Item = Elem> + 'a>,
        what: &'a str,
        log: &'a RefCell<std::collections::BTreeMap<u32, String>>,
    ) -> ElemPages<'a> {
        let elems = RefCell::new(elems.peekable());
        let done = Cell::new(elems.borrow_mut().peek().is_none());
        ElemPages {
            table,
            set,
            set_id,
            width,
            op,
            timeout_ms: None,
            elems,
            what,
            log,
            done,
        }
    }

    /// Gives every element this timeout: the kernel removes it then.
    pub fn with_timeout_ms(mut self, ms: u64) -> ElemPages<'a> {
        self.timeout_ms = Some(ms);
        self
    }

    /// No element is left to write.
    pub fn done(&self) -> bool {
        self.done.get()
    }

    /// The attributes of the next message, after its headers.
    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LIST_MAX + 256);
        put_str(&mut out, NFTA_SET_ELEM_LIST_SET, self.set);
        if let Some(id) = self.set_id {
            put(&mut out, NFTA_SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
        }
        put_str(&mut out, NFTA_SET_ELEM_LIST_TABLE, self.table);
        let list = begin_nest(&mut out, NFTA_SET_ELEM_LIST_ELEMENTS);
        let open = open_udata();
        let mut elems = self.elems.borrow_mut();
        while out.len() - list < LIST_MAX {
            let Some(e) = elems.next() else { break };
            let nest = begin_nest(&mut out, NFTA_LIST_ELEM);
            if e.end {
                let flags = libc::NFT_SET_ELEM_INTERVAL_END as u32;
                put(&mut out, NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
            }
            if let Some(ms) = self.timeout_ms {
                put(&mut out, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
            }
            let key = begin_nest(&mut out, NFTA_SET_ELEM_KEY);
            put(&mut out, NFTA_DATA_VALUE, &e.key_bytes(self.width));
            end_nest(&mut out, key);
            if e.open {
                put(&mut out, NFTA_SET_ELEM_USERDATA, &open);
            }
            end_nest(&mut out, nest);
        }
        end_nest(&mut out, list);
        self.done.set(elems.peek().is_none());
        out
    }
}

// SAFETY: `write` writes one header (nftnl_nlmsg_build_hdr: 20 bytes) and
// a payload of at most LIST_MAX bytes plus the names and the last element
// (under 64 KiB in all) into a buffer of `nft_nlmsg_maxsize()` bytes
// (64 KiB and a page), which is what the trait's contract gives.
unsafe impl NlMsg for ElemPages<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _: MsgType) {
        self.log.borrow_mut().insert(seq, self.what.to_string());
        // SAFETY: as above.
        unsafe { write_message(buf, seq, self.op, &self.payload()) }
    }
}

/// Writes one NEWSETELEM (`Op::Add`) or DELSETELEM message of `payload`
/// (the attributes after the headers) into `buf`.
///
/// # Safety
/// `buf` has room for the headers (20 bytes) and `payload`, as
/// [`NlMsg::write`] promises for messages under 64 KiB.
pub(super) unsafe fn write_message(buf: *mut c_void, seq: u32, op: Op, payload: &[u8]) {
    let (nl_type, flags) = match op {
        Op::Add => (
            libc::NFT_MSG_NEWSETELEM,
            libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK,
        ),
        Op::Delete => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
    };
    // SAFETY: the caller's promise; the header is written first, the
    // payload right after it, and the length updated to cover both.
    unsafe {
        let nlh = sys::nftnl_nlmsg_build_hdr(
            buf.cast::<c_char>(),
            nl_type as u16,
            FAMILY,
            flags as u16,
            seq,
        );
        let at = (*nlh).nlmsg_len as usize;
        std::ptr::copy_nonoverlapping(payload.as_ptr(), buf.cast::<u8>().add(at), payload.len());
        (*nlh).nlmsg_len = (at + payload.len()) as u32;
    }
}

pub(super) fn put(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

pub(super) fn put_str(out: &mut Vec<u8>, ty: u16, value: &str) {
    let mut v = value.as_bytes().to_vec();
    v.push(0);
    put(out, ty, &v);
}

/// Starts a nested attribute; returns where, for [`end_nest`].
pub(super) fn begin_nest(out: &mut Vec<u8>, ty: u16) -> usize {
    let at = out.len();
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&(ty | libc::NLA_F_NESTED as u16).to_ne_bytes());
    at
}

pub(super) fn end_nest(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u16;
    out[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_cover_their_contents() {
        let mut out = Vec::new();
        let n = begin_nest(&mut out, 3);
        put_str(&mut out, 1, "abc");
        put(&mut out, 2, &[1, 2, 3, 4, 5]);
        end_nest(&mut out, n);
        // nest header 4 + "abc\0" attr 8 + 5-byte attr padded to 12.
        assert_eq!(out.len(), 24);
        assert_eq!(u16::from_ne_bytes([out[0], out[1]]), 24);
        assert_eq!(
            u16::from_ne_bytes([out[2], out[3]]),
            3 | libc::NLA_F_NESTED as u16
        );
        assert_eq!(u16::from_ne_bytes([out[12], out[13]]), 9);
    }
}
