//! User data: the TLVs (type, length, value: libnftnl's `nftnl_udata`)
//! that nft keeps beside a table, set or rule for itself, such as comments
//! and a set's key byte order and "typeof". The kernel stores them as
//! opaque bytes. fwharden writes exactly what nft writes, so `nft list`
//! prints the same whichever loaded the table, and reads them back.

use super::rules::{AnonValues, PortHeader};

/// User data type fwharden stores the profile name under, in the table.
/// nft only reads type 0 (the table comment) and skips the others, so
/// `nft list` shows nothing of it.
pub const UDATA_TABLE_PROFILE: u8 = 0xf0;
/// NFTNL_UDATA_RULE_COMMENT: a rule's comment.
pub const RULE_COMMENT: u8 = 0;
/// NFTNL_UDATA_SET_COMMENT: a set's comment.
pub const SET_COMMENT: u8 = 7;

/// One user data TLV: type, length, value (libnftnl's `nftnl_udata`).
fn tlv(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    out.push(ty);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

fn strz(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().filter(|b| *b != 0).collect();
    v.push(0);
    v
}

/// The table's user data: the name of the profile it was compiled from.
pub fn table_udata(profile: &str) -> Vec<u8> {
    let mut u = Vec::new();
    tlv(&mut u, UDATA_TABLE_PROFILE, &strz(profile));
    u
}

/// A rule's user data: its comment as TLV type 0 (NFTNL_UDATA_RULE_COMMENT).
pub fn rule_udata(comment: &str) -> Vec<u8> {
    let mut u = Vec::new();
    if !comment.is_empty() {
        tlv(&mut u, RULE_COMMENT, &strz(comment));
    }
    u
}

/// What nft writes in a named set's user data: the key byte order
/// (NFTNL_UDATA_SET_KEYBYTEORDER = big endian) and the comment
/// (NFTNL_UDATA_SET_COMMENT, type 7).
pub fn named_set_udata(comment: &str) -> Vec<u8> {
    let mut u = Vec::new();
    tlv(&mut u, 0, &2u32.to_ne_bytes());
    if !comment.is_empty() {
        tlv(&mut u, SET_COMMENT, &strz(comment));
    }
    u
}

/// What nft writes in an anonymous set's user data: key byte order, "merge
/// elements" for interval sets, and the key's "typeof" expression
/// (NFTNL_UDATA_SET_KEY_TYPEOF: nft's expression kind, payload 7 or meta 9,
/// and its protocol and field, or meta key), as `nft --debug=mnl` shows.
pub fn anon_set_udata(values: &AnonValues, interval: bool) -> Vec<u8> {
    let u32b = |v: u32| v.to_ne_bytes();
    let (byteorder, expr, data): (u32, u32, Vec<(u8, u32)>) = match values {
        AnonValues::Protocols(_) => (1, 9, vec![(0, 16)]),
        // nft's typeof for `ct original proto-dst`: expression ct (12),
        // key NFT_CT_PROTO_DST (12), direction original (0).
        AnonValues::Ports {
            header: PortHeader::CtOriginal,
            ..
        } => (2, 12, vec![(0, 12), (1, 0)]),
        AnonValues::Ports { header, .. } => {
            let proto = match header {
                PortHeader::Tcp => 8,
                PortHeader::Udp => 6,
                PortHeader::Any | PortHeader::CtOriginal => 11,
            };
            (2, 7, vec![(0, proto), (1, 2)])
        }
        AnonValues::IcmpTypes(_) => (2, 7, vec![(0, 4), (1, 1)]),
        AnonValues::Icmpv6Types(_) => (2, 7, vec![(0, 14), (1, 1)]),
    };
    let mut inner = Vec::new();
    for (ty, v) in data {
        tlv(&mut inner, ty, &u32b(v));
    }
    let mut typeof_ = Vec::new();
    tlv(&mut typeof_, 0, &u32b(expr));
    tlv(&mut typeof_, 1, &inner);
    let mut u = Vec::new();
    tlv(&mut u, 0, &u32b(byteorder));
    if interval {
        tlv(&mut u, 2, &u32b(1));
    }
    tlv(&mut u, 3, &typeof_);
    u
}

/// User data TLVs as (type, value); a truncated last TLV is left out.
pub fn tlvs(u: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= u.len() {
        let (ty, len) = (u[at], u[at + 1] as usize);
        if at + 2 + len > u.len() {
            break;
        }
        out.push((ty, &u[at + 2..at + 2 + len]));
        at += 2 + len;
    }
    out
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// The string of the first TLV of type `ty`, or "" when there is none.
pub fn udata_str(u: &[u8], ty: u8) -> String {
    tlvs(u)
        .into_iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, v)| text(v))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_matches_what_nft_writes() {
        assert_eq!(rule_udata("x"), [0, 2, b'x', 0]);
        assert_eq!(rule_udata(""), Vec::<u8>::new());
        // `set a_v4 { ...; comment "grp a"; }` as `nft --debug=mnl` shows it.
        assert_eq!(
            named_set_udata("grp a"),
            [0, 4, 2, 0, 0, 0, 7, 6, b'g', b'r', b'p', b' ', b'a', 0]
        );
        // `tcp dport { 22, 80-90 }`
        let ports = AnonValues::Ports {
            ranges: vec![],
            header: PortHeader::Tcp,
        };
        assert_eq!(
            anon_set_udata(&ports, true),
            [
                0, 4, 2, 0, 0, 0, 2, 4, 1, 0, 0, 0, 3, 20, 0, 4, 7, 0, 0, 0, 1, 12, 0, 4, 8, 0, 0,
                0, 1, 4, 2, 0, 0, 0
            ]
        );
        // `meta l4proto tcp ct original proto-dst { 80, 443 }`
        let ct = AnonValues::Ports {
            ranges: vec![],
            header: PortHeader::CtOriginal,
        };
        assert_eq!(
            anon_set_udata(&ct, false),
            [
                0, 4, 2, 0, 0, 0, 3, 20, 0, 4, 12, 0, 0, 0, 1, 12, 0, 4, 12, 0, 0, 0, 1, 4, 0, 0,
                0, 0
            ]
        );
        // `meta l4proto { tcp, udp }`
        assert_eq!(
            anon_set_udata(&AnonValues::Protocols(vec![]), false),
            [0, 4, 1, 0, 0, 0, 3, 14, 0, 4, 9, 0, 0, 0, 1, 6, 0, 4, 16, 0, 0, 0]
        );
    }

    #[test]
    fn what_is_written_reads_back() {
        let u = table_udata("vps-profile");
        assert_eq!(udata_str(&u, UDATA_TABLE_PROFILE), "vps-profile");
        let u = named_set_udata("grp a");
        assert_eq!(udata_str(&u, SET_COMMENT), "grp a");
        assert_eq!(udata_str(&rule_udata("c"), RULE_COMMENT), "c");
        assert_eq!(udata_str(&rule_udata(""), RULE_COMMENT), "");
        // A TLV that claims more bytes than there are is not read.
        assert_eq!(tlvs(&[0, 5, b'a']), Vec::<(u8, &[u8])>::new());
    }
}
