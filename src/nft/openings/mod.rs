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

mod encode;

use std::time::Instant;

use ipnet::IpNet;
use nftnl::nftnl_sys::{self as sys, libc};

use encode::{add_elems, layout, opening_of, rule_exprs, Element, SET_FLAGS};

use super::batch::{Builder, Built, Payload, CREATE, FAMILY};
use super::elems::Op;
use super::expr::Expr;
use super::gate::BanGate;
use super::obj;
use super::readback;
use super::socket::Socket;
use super::{udata, NftError};
use crate::ruleset::openings::{self as model, Opening, Port, RULE_COMMENT};
use crate::ruleset::{Chain, Family, TABLE_NAME};

const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

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

#[cfg(test)]
mod tests {
    use super::super::expr::Decision;
    use super::*;

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
