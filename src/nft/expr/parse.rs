//! A libnftnl `nftnl_expr` the kernel returned -> [`Expr`]; whatever has
//! operands fwharden never writes becomes [`Expr::Foreign`].

use std::ffi::{c_void, CStr};

use nftnl::nftnl_sys::{self as sys, libc};

use super::{
    reg_word, CmpOp, Decision, Expr, Header, Limit, Membership, MetaKey, Reject, CT_DIR_ORIGINAL,
    NFT_LOOKUP_F_INV, REG,
};

impl Expr {
    /// Reads an expression the kernel returned. Anything with operands
    /// fwharden never writes becomes [`Expr::Foreign`].
    ///
    /// # Safety
    /// `e` must point to a live `nftnl_expr` (one of a parsed rule).
    pub unsafe fn from_raw(e: *const sys::nftnl_expr) -> Expr {
        // SAFETY: the caller's promise covers every getter below; libnftnl
        // returns 0/NULL for an attribute that is absent, which then fails
        // the comparisons and yields `Foreign`.
        unsafe {
            let name = cstr(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16));
            let u32_ = |a: u32| sys::nftnl_expr_get_u32(e, a as u16);
            let has = |a: u32| sys::nftnl_expr_is_set(e, a as u16);
            let foreign = || Expr::Foreign(name.clone());
            let reg_ok = |a: u32| has(a) && u32_(a) == REG;
            // A load into a later register: a field of a concatenation.
            let word = |a: u32| has(a).then(|| reg_word(u32_(a))).flatten();
            match name.as_str() {
                "meta" if reg_ok(sys::NFTNL_EXPR_META_DREG) => {
                    MetaKey::from_raw(u32_(sys::NFTNL_EXPR_META_KEY))
                        .map_or_else(foreign, Expr::Meta)
                }
                "meta" if word(sys::NFTNL_EXPR_META_DREG).is_some() => {
                    let w = word(sys::NFTNL_EXPR_META_DREG).unwrap_or_default();
                    MetaKey::from_raw(u32_(sys::NFTNL_EXPR_META_KEY))
                        .map_or_else(foreign, |k| Expr::MetaAt(k, w))
                }
                "cmp" if reg_ok(sys::NFTNL_EXPR_CMP_SREG) => {
                    match CmpOp::from_raw(u32_(sys::NFTNL_EXPR_CMP_OP)) {
                        Some(op) => Expr::Cmp(op, bytes(e, sys::NFTNL_EXPR_CMP_DATA)),
                        None => foreign(),
                    }
                }
                "payload" if word(sys::NFTNL_EXPR_PAYLOAD_DREG).is_some() => {
                    let header = match u32_(sys::NFTNL_EXPR_PAYLOAD_BASE) as i32 {
                        libc::NFT_PAYLOAD_NETWORK_HEADER => Header::Network,
                        libc::NFT_PAYLOAD_TRANSPORT_HEADER => Header::Transport,
                        _ => return foreign(),
                    };
                    let offset = u32_(sys::NFTNL_EXPR_PAYLOAD_OFFSET);
                    let len = u32_(sys::NFTNL_EXPR_PAYLOAD_LEN);
                    match word(sys::NFTNL_EXPR_PAYLOAD_DREG).unwrap_or_default() {
                        0 => Expr::Payload {
                            header,
                            offset,
                            len,
                        },
                        word => Expr::PayloadAt {
                            header,
                            offset,
                            len,
                            word,
                        },
                    }
                }
                "byteorder"
                    if word(sys::NFTNL_EXPR_BYTEORDER_SREG).is_some()
                        && u32_(sys::NFTNL_EXPR_BYTEORDER_SREG)
                            == u32_(sys::NFTNL_EXPR_BYTEORDER_DREG)
                        && u32_(sys::NFTNL_EXPR_BYTEORDER_OP)
                            == libc::NFT_BYTEORDER_HTON as u32 =>
                {
                    Expr::Hton {
                        word: word(sys::NFTNL_EXPR_BYTEORDER_SREG).unwrap_or_default(),
                        size: u32_(sys::NFTNL_EXPR_BYTEORDER_SIZE),
                        len: u32_(sys::NFTNL_EXPR_BYTEORDER_LEN),
                    }
                }
                "ct" if reg_ok(sys::NFTNL_EXPR_CT_DREG)
                    && u32_(sys::NFTNL_EXPR_CT_KEY) == libc::NFT_CT_STATE as u32
                    && !has(sys::NFTNL_EXPR_CT_DIR) =>
                {
                    Expr::CtState
                }
                "ct" if reg_ok(sys::NFTNL_EXPR_CT_DREG)
                    && u32_(sys::NFTNL_EXPR_CT_KEY) == libc::NFT_CT_STATUS as u32
                    && !has(sys::NFTNL_EXPR_CT_DIR) =>
                {
                    Expr::CtStatus
                }
                "ct" if reg_ok(sys::NFTNL_EXPR_CT_DREG)
                    && u32_(sys::NFTNL_EXPR_CT_KEY) == libc::NFT_CT_PROTO_DST as u32
                    && has(sys::NFTNL_EXPR_CT_DIR)
                    && sys::nftnl_expr_get_u8(e, sys::NFTNL_EXPR_CT_DIR as u16)
                        == CT_DIR_ORIGINAL =>
                {
                    Expr::CtOriginalProtoDst
                }
                "bitwise"
                    if reg_ok(sys::NFTNL_EXPR_BITWISE_SREG)
                        && reg_ok(sys::NFTNL_EXPR_BITWISE_DREG)
                        && (!has(sys::NFTNL_EXPR_BITWISE_OP)
                            || u32_(sys::NFTNL_EXPR_BITWISE_OP) == 0) =>
                {
                    Expr::Bitwise {
                        mask: bytes(e, sys::NFTNL_EXPR_BITWISE_MASK),
                        xor: bytes(e, sys::NFTNL_EXPR_BITWISE_XOR),
                    }
                }
                "lookup"
                    if reg_ok(sys::NFTNL_EXPR_LOOKUP_SREG) && !has(sys::NFTNL_EXPR_LOOKUP_DREG) =>
                {
                    let flags = if has(sys::NFTNL_EXPR_LOOKUP_FLAGS) {
                        u32_(sys::NFTNL_EXPR_LOOKUP_FLAGS)
                    } else {
                        0
                    };
                    let membership = match flags {
                        0 => Membership::In,
                        NFT_LOOKUP_F_INV => Membership::NotIn,
                        _ => return foreign(),
                    };
                    Expr::Lookup {
                        set: cstr(sys::nftnl_expr_get_str(
                            e,
                            sys::NFTNL_EXPR_LOOKUP_SET as u16,
                        )),
                        id: None,
                        membership,
                    }
                }
                "dynset"
                    if reg_ok(sys::NFTNL_EXPR_DYNSET_SREG_KEY)
                        && u32_(sys::NFTNL_EXPR_DYNSET_OP) == libc::NFT_DYNSET_OP_UPDATE as u32
                        && !has(sys::NFTNL_EXPR_DYNSET_SREG_DATA)
                        && (!has(sys::NFTNL_EXPR_DYNSET_TIMEOUT)
                            || sys::nftnl_expr_get_u64(
                                e,
                                sys::NFTNL_EXPR_DYNSET_TIMEOUT as u16,
                            ) == 0) =>
                {
                    match inner_exprs(e).as_slice() {
                        [Expr::Limit(limit)] => Expr::Dynset {
                            set: cstr(sys::nftnl_expr_get_str(
                                e,
                                sys::NFTNL_EXPR_DYNSET_SET_NAME as u16,
                            )),
                            id: None,
                            limit: *limit,
                        },
                        _ => foreign(),
                    }
                }
                "limit"
                    if u32_(sys::NFTNL_EXPR_LIMIT_TYPE) == libc::NFT_LIMIT_PKTS as u32
                        && u32_(sys::NFTNL_EXPR_LIMIT_FLAGS) & !(libc::NFT_LIMIT_F_INV as u32)
                            == 0 =>
                {
                    Expr::Limit(Limit {
                        rate: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_LIMIT_RATE as u16),
                        unit_secs: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_LIMIT_UNIT as u16),
                        burst: u32_(sys::NFTNL_EXPR_LIMIT_BURST),
                        over: u32_(sys::NFTNL_EXPR_LIMIT_FLAGS) != 0,
                    })
                }
                "counter" => Expr::Counter,
                "log"
                    if (!has(sys::NFTNL_EXPR_LOG_FLAGS)
                        || u32_(sys::NFTNL_EXPR_LOG_FLAGS) == 0)
                        && !has(sys::NFTNL_EXPR_LOG_SNAPLEN)
                        && !has(sys::NFTNL_EXPR_LOG_QTHRESHOLD) =>
                {
                    Expr::Log {
                        prefix: cstr(sys::nftnl_expr_get_str(
                            e,
                            sys::NFTNL_EXPR_LOG_PREFIX as u16,
                        )),
                        level: has(sys::NFTNL_EXPR_LOG_LEVEL)
                            .then(|| u32_(sys::NFTNL_EXPR_LOG_LEVEL)),
                        group: has(sys::NFTNL_EXPR_LOG_GROUP)
                            .then(|| sys::nftnl_expr_get_u16(e, sys::NFTNL_EXPR_LOG_GROUP as u16)),
                    }
                }
                "immediate"
                    if u32_(sys::NFTNL_EXPR_IMM_DREG) == libc::NFT_REG_VERDICT as u32
                        && !has(sys::NFTNL_EXPR_IMM_CHAIN) =>
                {
                    match u32_(sys::NFTNL_EXPR_IMM_VERDICT) as i32 {
                        libc::NF_ACCEPT => Expr::Verdict(Decision::Accept),
                        libc::NF_DROP => Expr::Verdict(Decision::Drop),
                        _ => foreign(),
                    }
                }
                "reject" => {
                    let code = sys::nftnl_expr_get_u8(e, sys::NFTNL_EXPR_REJECT_CODE as u16);
                    match (u32_(sys::NFTNL_EXPR_REJECT_TYPE) as i32, code as i32) {
                        (libc::NFT_REJECT_TCP_RST, 0) => Expr::Reject(Reject::TcpReset),
                        (libc::NFT_REJECT_ICMP_UNREACH, _) => Expr::Reject(Reject::Icmp { code }),
                        (libc::NFT_REJECT_ICMPX_UNREACH, libc::NFT_REJECT_ICMPX_PORT_UNREACH) => {
                            Expr::Reject(Reject::IcmpxPortUnreachable)
                        }
                        _ => foreign(),
                    }
                }
                _ => foreign(),
            }
        }
    }
}

/// A C string libnftnl owns, copied; NULL reads as "".
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string.
unsafe fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL and NUL-terminated per the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A data attribute of an expression, copied.
///
/// # Safety
/// `e` points to a live `nftnl_expr`.
unsafe fn bytes(e: *const sys::nftnl_expr, attr: u32) -> Vec<u8> {
    let mut len = 0u32;
    // SAFETY: `e` is live; libnftnl returns a pointer into the expression
    // valid for `len` bytes, or NULL when the attribute is absent.
    let p = unsafe { sys::nftnl_expr_get(e, attr as u16, &mut len) };
    if p.is_null() {
        return Vec::new();
    }
    // SAFETY: see above; copied before the expression can change.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }.to_vec()
}

/// The expressions nested in a dynset, decoded.
///
/// # Safety
/// `e` points to a live `nftnl_expr`.
unsafe fn inner_exprs(e: *const sys::nftnl_expr) -> Vec<Expr> {
    /// Called by `nftnl_expr_expr_foreach` only, with the `data` given
    /// to it below and each nested expression.
    unsafe extern "C" fn each(inner: *mut sys::nftnl_expr, data: *mut c_void) -> i32 {
        // SAFETY: `data` is the `&mut Vec<Expr>` passed below, alive for
        // the whole foreach, and nothing else refers to it meanwhile.
        let out = unsafe { &mut *data.cast::<Vec<Expr>>() };
        // SAFETY: `inner` is a live expression nested in `e`, which the
        // caller keeps alive for the whole foreach.
        out.push(unsafe { Expr::from_raw(inner) });
        0
    }
    let mut out: Vec<Expr> = Vec::new();
    // SAFETY: the callback only runs during this call, while `out` lives;
    // the cast away from const is libnftnl's signature, it does not write.
    unsafe {
        sys::nftnl_expr_expr_foreach(e, Some(each), (&mut out as *mut Vec<Expr>).cast::<c_void>())
    };
    out
}
