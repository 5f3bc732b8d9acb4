//! [`Expr`] -> a libnftnl `nftnl_expr`, allocated here and owned by the
//! rule it is added to.

use std::ffi::{c_void, CStr, CString};
use std::ptr::NonNull;

use nftnl::nftnl_sys::{self as sys, libc};

use super::{
    word_reg, Decision, Expr, Header, Limit, Membership, Reject, CT_DIR_ORIGINAL, NFT_LOOKUP_F_INV,
    REG,
};

/// An `nftnl_expr` this module allocated, freed on drop unless handed to
/// a rule (which then owns it).
pub struct RawExpr(NonNull<sys::nftnl_expr>);

impl RawExpr {
    fn alloc(name: &CStr) -> RawExpr {
        // SAFETY: `name` is a valid NUL-terminated string; libnftnl copies
        // what it needs and returns NULL only when out of memory.
        let ptr = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
        match NonNull::new(ptr) {
            Some(p) => RawExpr(p),
            // Out of memory for a few dozen bytes: do what std does.
            None => std::process::abort(),
        }
    }

    fn ptr(&self) -> *mut sys::nftnl_expr {
        self.0.as_ptr()
    }

    fn u32(&self, attr: u32, value: u32) -> &Self {
        // SAFETY: the expression is live and `attr` is one of its u32
        // attributes (the constants are libnftnl's for this expression).
        unsafe { sys::nftnl_expr_set_u32(self.ptr(), attr as u16, value) };
        self
    }

    fn u64(&self, attr: u32, value: u64) -> &Self {
        // SAFETY: as in `u32`, for a u64 attribute.
        unsafe { sys::nftnl_expr_set_u64(self.ptr(), attr as u16, value) };
        self
    }

    fn u16(&self, attr: u32, value: u16) -> &Self {
        // SAFETY: as in `u32`, for a u16 attribute.
        unsafe { sys::nftnl_expr_set_u16(self.ptr(), attr as u16, value) };
        self
    }

    fn u8(&self, attr: u32, value: u8) -> &Self {
        // SAFETY: as in `u32`, for a u8 attribute.
        unsafe { sys::nftnl_expr_set_u8(self.ptr(), attr as u16, value) };
        self
    }

    fn bytes(&self, attr: u32, data: &[u8]) -> &Self {
        // SAFETY: `data` is valid for `data.len()` bytes, which libnftnl
        // copies (at most 16, the register size, for the data attributes
        // used here; the model never produces longer values).
        unsafe {
            sys::nftnl_expr_set(
                self.ptr(),
                attr as u16,
                data.as_ptr().cast::<c_void>(),
                data.len() as u32,
            )
        };
        self
    }

    fn str(&self, attr: u32, s: &str) -> &Self {
        // Names and prefixes never hold NUL (the model validates them);
        // an interior NUL would only cut the string short.
        let c = CString::new(s.replace('\0', "")).unwrap_or_default();
        // SAFETY: `c` is NUL-terminated and outlives the call; libnftnl
        // copies it.
        unsafe { sys::nftnl_expr_set_str(self.ptr(), attr as u16, c.as_ptr()) };
        self
    }

    /// Gives up ownership, for `nftnl_rule_add_expr`.
    pub fn into_raw(self) -> *mut sys::nftnl_expr {
        let p = self.ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for RawExpr {
    fn drop(&mut self) {
        // SAFETY: allocated by `nftnl_expr_alloc` and not handed over.
        unsafe { sys::nftnl_expr_free(self.ptr()) };
    }
}

fn limit_expr(l: &Limit) -> RawExpr {
    let e = RawExpr::alloc(c"limit");
    e.u64(sys::NFTNL_EXPR_LIMIT_RATE, l.rate)
        .u64(sys::NFTNL_EXPR_LIMIT_UNIT, l.unit_secs)
        .u32(sys::NFTNL_EXPR_LIMIT_BURST, l.burst)
        .u32(sys::NFTNL_EXPR_LIMIT_TYPE, libc::NFT_LIMIT_PKTS as u32)
        .u32(
            sys::NFTNL_EXPR_LIMIT_FLAGS,
            if l.over {
                libc::NFT_LIMIT_F_INV as u32
            } else {
                0
            },
        );
    e
}

impl Expr {
    /// Allocates the libnftnl form of this expression.
    pub fn to_raw(&self) -> RawExpr {
        match self {
            Expr::Meta(key) => Expr::MetaAt(*key, 0).to_raw(),
            Expr::MetaAt(key, word) => {
                let e = RawExpr::alloc(c"meta");
                e.u32(sys::NFTNL_EXPR_META_KEY, key.raw())
                    .u32(sys::NFTNL_EXPR_META_DREG, word_reg(*word));
                e
            }
            Expr::Cmp(op, data) => {
                let e = RawExpr::alloc(c"cmp");
                e.u32(sys::NFTNL_EXPR_CMP_SREG, REG)
                    .u32(sys::NFTNL_EXPR_CMP_OP, op.raw())
                    .bytes(sys::NFTNL_EXPR_CMP_DATA, data);
                e
            }
            Expr::Payload {
                header,
                offset,
                len,
            } => Expr::PayloadAt {
                header: *header,
                offset: *offset,
                len: *len,
                word: 0,
            }
            .to_raw(),
            Expr::PayloadAt {
                header,
                offset,
                len,
                word,
            } => {
                let base = match header {
                    Header::Network => libc::NFT_PAYLOAD_NETWORK_HEADER,
                    Header::Transport => libc::NFT_PAYLOAD_TRANSPORT_HEADER,
                };
                let e = RawExpr::alloc(c"payload");
                e.u32(sys::NFTNL_EXPR_PAYLOAD_DREG, word_reg(*word))
                    .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
                    .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset)
                    .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, *len);
                e
            }
            Expr::Hton { word, size, len } => {
                let e = RawExpr::alloc(c"byteorder");
                e.u32(sys::NFTNL_EXPR_BYTEORDER_SREG, word_reg(*word))
                    .u32(sys::NFTNL_EXPR_BYTEORDER_DREG, word_reg(*word))
                    .u32(
                        sys::NFTNL_EXPR_BYTEORDER_OP,
                        libc::NFT_BYTEORDER_HTON as u32,
                    )
                    .u32(sys::NFTNL_EXPR_BYTEORDER_LEN, *len)
                    .u32(sys::NFTNL_EXPR_BYTEORDER_SIZE, *size);
                e
            }
            Expr::CtState => {
                let e = RawExpr::alloc(c"ct");
                e.u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATE as u32)
                    .u32(sys::NFTNL_EXPR_CT_DREG, REG);
                e
            }
            Expr::CtStatus => {
                let e = RawExpr::alloc(c"ct");
                e.u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATUS as u32)
                    .u32(sys::NFTNL_EXPR_CT_DREG, REG);
                e
            }
            Expr::CtOriginalProtoDst => {
                let e = RawExpr::alloc(c"ct");
                e.u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_PROTO_DST as u32)
                    .u32(sys::NFTNL_EXPR_CT_DREG, REG)
                    .u8(sys::NFTNL_EXPR_CT_DIR, CT_DIR_ORIGINAL);
                e
            }
            Expr::Bitwise { mask, xor } => {
                let e = RawExpr::alloc(c"bitwise");
                e.u32(sys::NFTNL_EXPR_BITWISE_SREG, REG)
                    .u32(sys::NFTNL_EXPR_BITWISE_DREG, REG)
                    .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
                    .bytes(sys::NFTNL_EXPR_BITWISE_MASK, mask)
                    .bytes(sys::NFTNL_EXPR_BITWISE_XOR, xor);
                e
            }
            Expr::Lookup {
                set,
                id,
                membership,
            } => {
                let e = RawExpr::alloc(c"lookup");
                e.u32(sys::NFTNL_EXPR_LOOKUP_SREG, REG)
                    .str(sys::NFTNL_EXPR_LOOKUP_SET, set);
                if let Some(id) = id {
                    e.u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, *id);
                }
                // nft sends the flags attribute only for `!=` (its
                // --debug=netlink shows `lookup reg 1 set hatch_v4 0x1`).
                if *membership == Membership::NotIn {
                    e.u32(sys::NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
                e
            }
            Expr::Dynset { set, id, limit } => {
                let e = RawExpr::alloc(c"dynset");
                e.u32(sys::NFTNL_EXPR_DYNSET_SREG_KEY, REG)
                    .u32(sys::NFTNL_EXPR_DYNSET_OP, libc::NFT_DYNSET_OP_UPDATE as u32)
                    .str(sys::NFTNL_EXPR_DYNSET_SET_NAME, set);
                if let Some(id) = id {
                    e.u32(sys::NFTNL_EXPR_DYNSET_SET_ID, *id);
                }
                // SAFETY: both are live; the dynset takes ownership of the
                // limit expression (freed with it), so it is not dropped here.
                unsafe {
                    sys::nftnl_expr_add_expr(
                        e.ptr(),
                        sys::NFTNL_EXPR_DYNSET_EXPRESSIONS,
                        limit_expr(limit).into_raw(),
                    )
                };
                e
            }
            Expr::Limit(l) => limit_expr(l),
            Expr::Counter => {
                let e = RawExpr::alloc(c"counter");
                e.u64(sys::NFTNL_EXPR_CTR_PACKETS, 0)
                    .u64(sys::NFTNL_EXPR_CTR_BYTES, 0);
                e
            }
            Expr::Log {
                prefix,
                level,
                group,
            } => {
                let e = RawExpr::alloc(c"log");
                e.str(sys::NFTNL_EXPR_LOG_PREFIX, prefix);
                if let Some(level) = level {
                    e.u32(sys::NFTNL_EXPR_LOG_LEVEL, *level);
                }
                if let Some(group) = group {
                    e.u16(sys::NFTNL_EXPR_LOG_GROUP, *group);
                }
                e
            }
            Expr::Verdict(d) => {
                let v = match d {
                    Decision::Accept => libc::NF_ACCEPT,
                    Decision::Drop => libc::NF_DROP,
                };
                let e = RawExpr::alloc(c"immediate");
                e.u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
                    .u32(sys::NFTNL_EXPR_IMM_VERDICT, v as u32);
                e
            }
            Expr::Reject(r) => {
                let (kind, code) = match r {
                    Reject::TcpReset => (libc::NFT_REJECT_TCP_RST, 0),
                    Reject::Icmp { code } => (libc::NFT_REJECT_ICMP_UNREACH, i32::from(*code)),
                    Reject::IcmpxPortUnreachable => (
                        libc::NFT_REJECT_ICMPX_UNREACH,
                        libc::NFT_REJECT_ICMPX_PORT_UNREACH,
                    ),
                };
                let e = RawExpr::alloc(c"reject");
                e.u32(sys::NFTNL_EXPR_REJECT_TYPE, kind as u32)
                    .u8(sys::NFTNL_EXPR_REJECT_CODE, code as u8);
                e
            }
            // Never written: the batch builder only writes what it encoded.
            Expr::Foreign(name) => RawExpr::alloc(
                &CString::new(name.replace('\0', "")).unwrap_or_else(|_| c"invalid".into()),
            ),
        }
    }
}
