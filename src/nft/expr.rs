//! The nf_tables expressions fwharden writes, as plain data, and their
//! conversion to and from libnftnl's `nftnl_expr`.
//!
//! [`Expr`] is the vocabulary shared by [`super::rules`] (model <-> list of
//! expressions, pure) and the batch and read-back code. Only this file
//! touches `nftnl_expr` pointers. Every value loaded is loaded into
//! register 1, as nft does; the verdict register is register 0.

use std::ffi::{c_void, CStr, CString};
use std::ptr::NonNull;

use nftnl::nftnl_sys::{self as sys, libc};

/// The 16-byte data register nft uses for every load (`NFT_REG_1`).
const REG: u32 = libc::NFT_REG_1 as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    NfProto,
    L4Proto,
    IifName,
    OifName,
}

impl MetaKey {
    fn raw(self) -> u32 {
        (match self {
            MetaKey::NfProto => libc::NFT_META_NFPROTO,
            MetaKey::L4Proto => libc::NFT_META_L4PROTO,
            MetaKey::IifName => libc::NFT_META_IIFNAME,
            MetaKey::OifName => libc::NFT_META_OIFNAME,
        }) as u32
    }

    fn from_raw(raw: u32) -> Option<MetaKey> {
        [
            MetaKey::NfProto,
            MetaKey::L4Proto,
            MetaKey::IifName,
            MetaKey::OifName,
        ]
        .into_iter()
        .find(|k| k.raw() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Gte,
    Lte,
}

impl CmpOp {
    fn raw(self) -> u32 {
        (match self {
            CmpOp::Eq => libc::NFT_CMP_EQ,
            CmpOp::Neq => libc::NFT_CMP_NEQ,
            CmpOp::Gte => libc::NFT_CMP_GTE,
            CmpOp::Lte => libc::NFT_CMP_LTE,
        }) as u32
    }

    fn from_raw(raw: u32) -> Option<CmpOp> {
        [CmpOp::Eq, CmpOp::Neq, CmpOp::Gte, CmpOp::Lte]
            .into_iter()
            .find(|o| o.raw() == raw)
    }
}

/// Which header a payload load reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Network,
    Transport,
}

/// A token bucket, as the `limit` expression takes it: `rate` packets per
/// `unit_secs` seconds, `burst` packets more, `over` to match above the
/// rate instead of under it (NFT_LIMIT_F_INV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub rate: u64,
    pub unit_secs: u64,
    pub burst: u32,
    pub over: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Drop,
}

/// `reject` in an `inet` table, as nft's `reject` chooses: a TCP reset;
/// ICMP/ICMPv6 destination-unreachable with `code` when the rule already
/// fixed the family (port-unreachable is 3 for ICMP, 4 for ICMPv6); else
/// ICMPx port-unreachable, which the kernel answers in the packet's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    TcpReset,
    Icmp { code: u8 },
    IcmpxPortUnreachable,
}

/// One expression of a rule, with the operands fwharden uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => reg 1`
    Meta(MetaKey),
    /// `cmp OP reg 1 DATA`
    Cmp(CmpOp, Vec<u8>),
    /// `payload load LEN @ HEADER + OFFSET => reg 1`
    Payload {
        header: Header,
        offset: u32,
        len: u32,
    },
    /// `ct load state => reg 1`
    CtState,
    /// `bitwise reg 1 = (reg 1 & MASK) ^ XOR`
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `lookup reg 1 set NAME`; `id` names a set made in the same batch.
    Lookup {
        set: String,
        id: Option<u32>,
    },
    /// `dynset update reg_key 1 set NAME expr [ limit ... ]`
    Dynset {
        set: String,
        id: Option<u32>,
        limit: Limit,
    },
    Limit(Limit),
    Counter,
    Log {
        prefix: String,
        level: Option<u32>,
    },
    /// `immediate reg 0 VERDICT`
    Verdict(Decision),
    Reject(Reject),
    /// An expression fwharden never writes, by its kernel name (a hand
    /// edit, or another tool's rule): it decodes to no model, on purpose.
    Foreign(String),
}

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
            Expr::Meta(key) => {
                let e = RawExpr::alloc(c"meta");
                e.u32(sys::NFTNL_EXPR_META_KEY, key.raw())
                    .u32(sys::NFTNL_EXPR_META_DREG, REG);
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
            } => {
                let base = match header {
                    Header::Network => libc::NFT_PAYLOAD_NETWORK_HEADER,
                    Header::Transport => libc::NFT_PAYLOAD_TRANSPORT_HEADER,
                };
                let e = RawExpr::alloc(c"payload");
                e.u32(sys::NFTNL_EXPR_PAYLOAD_DREG, REG)
                    .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
                    .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset)
                    .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, *len);
                e
            }
            Expr::CtState => {
                let e = RawExpr::alloc(c"ct");
                e.u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATE as u32)
                    .u32(sys::NFTNL_EXPR_CT_DREG, REG);
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
            Expr::Lookup { set, id } => {
                let e = RawExpr::alloc(c"lookup");
                e.u32(sys::NFTNL_EXPR_LOOKUP_SREG, REG)
                    .str(sys::NFTNL_EXPR_LOOKUP_SET, set);
                if let Some(id) = id {
                    e.u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, *id);
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
            Expr::Log { prefix, level } => {
                let e = RawExpr::alloc(c"log");
                e.str(sys::NFTNL_EXPR_LOG_PREFIX, prefix);
                if let Some(level) = level {
                    e.u32(sys::NFTNL_EXPR_LOG_LEVEL, *level);
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
            match name.as_str() {
                "meta" if reg_ok(sys::NFTNL_EXPR_META_DREG) => {
                    MetaKey::from_raw(u32_(sys::NFTNL_EXPR_META_KEY))
                        .map_or_else(foreign, Expr::Meta)
                }
                "cmp" if reg_ok(sys::NFTNL_EXPR_CMP_SREG) => {
                    match CmpOp::from_raw(u32_(sys::NFTNL_EXPR_CMP_OP)) {
                        Some(op) => Expr::Cmp(op, bytes(e, sys::NFTNL_EXPR_CMP_DATA)),
                        None => foreign(),
                    }
                }
                "payload" if reg_ok(sys::NFTNL_EXPR_PAYLOAD_DREG) => {
                    let header = match u32_(sys::NFTNL_EXPR_PAYLOAD_BASE) as i32 {
                        libc::NFT_PAYLOAD_NETWORK_HEADER => Header::Network,
                        libc::NFT_PAYLOAD_TRANSPORT_HEADER => Header::Transport,
                        _ => return foreign(),
                    };
                    Expr::Payload {
                        header,
                        offset: u32_(sys::NFTNL_EXPR_PAYLOAD_OFFSET),
                        len: u32_(sys::NFTNL_EXPR_PAYLOAD_LEN),
                    }
                }
                "ct" if reg_ok(sys::NFTNL_EXPR_CT_DREG)
                    && u32_(sys::NFTNL_EXPR_CT_KEY) == libc::NFT_CT_STATE as u32
                    && !has(sys::NFTNL_EXPR_CT_DIR) =>
                {
                    Expr::CtState
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
                    if reg_ok(sys::NFTNL_EXPR_LOOKUP_SREG)
                        && !has(sys::NFTNL_EXPR_LOOKUP_DREG)
                        && (!has(sys::NFTNL_EXPR_LOOKUP_FLAGS)
                            || u32_(sys::NFTNL_EXPR_LOOKUP_FLAGS) == 0) =>
                {
                    Expr::Lookup {
                        set: cstr(sys::nftnl_expr_get_str(
                            e,
                            sys::NFTNL_EXPR_LOOKUP_SET as u16,
                        )),
                        id: None,
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
                    if !has(sys::NFTNL_EXPR_LOG_GROUP)
                        && (!has(sys::NFTNL_EXPR_LOG_FLAGS)
                            || u32_(sys::NFTNL_EXPR_LOG_FLAGS) == 0) =>
                {
                    Expr::Log {
                        prefix: cstr(sys::nftnl_expr_get_str(
                            e,
                            sys::NFTNL_EXPR_LOG_PREFIX as u16,
                        )),
                        level: has(sys::NFTNL_EXPR_LOG_LEVEL)
                            .then(|| u32_(sys::NFTNL_EXPR_LOG_LEVEL)),
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
    unsafe extern "C" fn each(inner: *mut sys::nftnl_expr, data: *mut c_void) -> i32 {
        // SAFETY: `data` is the `&mut Vec<Expr>` passed below, alive for
        // the whole foreach; `inner` is a live nested expression.
        let out = unsafe { &mut *data.cast::<Vec<Expr>>() };
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
