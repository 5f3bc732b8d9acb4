//! The nf_tables expressions fwharden writes, as plain data, and their
//! conversion to and from libnftnl's `nftnl_expr`.
//!
//! [`Expr`] is the vocabulary shared by [`super::rules`] (model <-> list of
//! expressions, pure) and the batch and read-back code. Only this module
//! touches `nftnl_expr` pointers: [`build`] allocates them from an
//! [`Expr`], [`parse`] reads the kernel's back. Every value loaded is
//! loaded into register 1, as nft does; the verdict register is register 0.

mod build;
mod parse;

pub use build::RawExpr;

use nftnl::nftnl_sys::libc;

/// The 16-byte data register nft uses for every load (`NFT_REG_1`).
const REG: u32 = libc::NFT_REG_1 as u32;

/// `NFT_REG32_00`: the first 4-byte register, the same storage as the
/// start of `NFT_REG_1`.
const REG32_00: u32 = 8;

/// The register a load at `word` 4-byte words past the start of register 1
/// writes to, as nft numbers it: a 16-byte register where one starts
/// (the kernel's nft_dump_register answers so), a 4-byte one elsewhere.
fn word_reg(word: u32) -> u32 {
    if word % 4 == 0 {
        REG + word / 4
    } else {
        REG32_00 + word
    }
}

/// The inverse of [`word_reg`]: `None` for the verdict register or a
/// number no register has.
fn reg_word(reg: u32) -> Option<u32> {
    match reg {
        1..=4 => Some((reg - REG) * 4),
        8..=23 => Some(reg - REG32_00),
        _ => None,
    }
}

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

/// What a lookup asks of the register: in the set, or not in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    In,
    /// NFT_LOOKUP_F_INV: the lookup matches when the key is absent.
    NotIn,
}

/// `NFT_LOOKUP_F_INV` (`enum nft_lookup_flags`), as the u32 the
/// expression attribute holds.
const NFT_LOOKUP_F_INV: u32 = libc::NFT_LOOKUP_F_INV as u32;

/// `IP_CT_DIR_ORIGINAL` (linux/netfilter/nf_conntrack_tuple_common.h):
/// the direction of the connection's first packet, whose tuple keeps the
/// address and port the client used, before any NAT.
const CT_DIR_ORIGINAL: u8 = 0;

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
    /// `meta load KEY => reg R`, `word` 4-byte words past the start of
    /// register 1 (never 0: that is [`Expr::Meta`]): a later field of a
    /// concatenated key, which a lookup then reads from register 1 on.
    MetaAt(MetaKey, u32),
    /// `payload load LEN @ HEADER + OFFSET => reg R`, as [`Expr::MetaAt`].
    PayloadAt {
        header: Header,
        offset: u32,
        len: u32,
        word: u32,
    },
    /// `byteorder reg R = hton(reg R, SIZE, LEN)`, `word` as in
    /// [`Expr::MetaAt`]: what nft sends after loading a 1-byte protocol
    /// into a concatenation (size 2, length 1: it swaps nothing).
    Hton {
        word: u32,
        size: u32,
        len: u32,
    },
    /// `ct load state => reg 1`
    CtState,
    /// `ct load status => reg 1`: the connection's IPS_* bits (`ct status`).
    CtStatus,
    /// `ct load proto_dst => reg 1 , dir original`: the destination port
    /// the connection was first addressed to, before any DNAT
    /// (`ct original proto-dst`).
    CtOriginalProtoDst,
    /// `bitwise reg 1 = (reg 1 & MASK) ^ XOR`
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `lookup reg 1 set NAME [0x1]`; `id` names a set made in the same
    /// batch; `NotIn` is the inverted lookup (`!= @set`).
    Lookup {
        set: String,
        id: Option<u32>,
        membership: Membership,
    },
    /// `dynset update reg_key 1 set NAME expr [ limit ... ]`
    Dynset {
        set: String,
        id: Option<u32>,
        limit: Limit,
    },
    Limit(Limit),
    Counter,
    /// `log prefix P level L` (kernel log) or `log prefix P group G`
    /// (NFLOG); the kernel refuses both a level and a group.
    Log {
        prefix: String,
        level: Option<u32>,
        group: Option<u16>,
    },
    /// `immediate reg 0 VERDICT`
    Verdict(Decision),
    Reject(Reject),
    /// An expression fwharden never writes, by its kernel name (a hand
    /// edit, or another tool's rule): it decodes to no model, on purpose.
    Foreign(String),
}
