//! The ban table's part of a batch (see [`crate::ruleset::bans`]): its
//! chains and exempt sets written again by every apply, its ban sets made
//! when missing and never deleted, and the one-element transactions of
//! `fwharden ban` and `unban`.

use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::MsgType;

use super::batch::{Builder, Built, Payload, CREATE, FAMILY, TYPE_IPV4_ADDR, TYPE_IPV6_ADDR};
use super::elems::{ElemPages, Op};
use super::intervals::Elem;
use super::obj;
use super::NftError;
use crate::ruleset::bans;
use crate::ruleset::*;

/// Whether table `inet fwharden-bans` exists before the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanTable {
    Absent,
    Present,
}

/// The ban table's part of an apply (see [`crate::ruleset::bans`]): its
/// chains and exempt sets are emptied and written again, its ban sets are
/// created if missing and never deleted. Without bans, an existing ban
/// table loses its chains (nothing is dropped) and keeps its ban sets.
pub(super) fn ban_table(
    b: &mut Builder,
    ruleset: &Ruleset,
    before: BanTable,
) -> Result<(), NftError> {
    if ruleset.bans.is_none() && before == BanTable::Absent {
        return Ok(());
    }
    let main = std::mem::replace(&mut b.table, bans::BAN_TABLE.to_string());
    let what = format!("table inet {}", bans::BAN_TABLE);
    let t = b.table(None);
    b.add(libc::NFT_MSG_NEWTABLE, CREATE, Payload::Table(t), &what);
    let wanted = ruleset
        .bans
        .as_ref()
        .map(|x| bans::table(x, &ruleset.profile));
    // Add, then delete: the pair removes a chain or set whether or not it
    // existed, on kernels without DESTROY (before 6.3). A chain deleted
    // without NLM_F_NONREC takes its rules with it.
    for hook in [Hook::Input, Hook::Forward] {
        let chain = Chain {
            name: hook.as_str().into(),
            hook,
            priority: bans::BAN_PRIORITY,
            policy: Policy::Accept,
            rules: vec![],
        };
        b.chain(&chain);
        let c = obj::Chain::new();
        c.set_str(sys::NFTNL_CHAIN_TABLE, &b.table);
        c.set_str(sys::NFTNL_CHAIN_NAME, &chain.name);
        c.set_u32(sys::NFTNL_CHAIN_FAMILY, FAMILY.into());
        let w = format!("emptying chain {} of {what}", chain.name);
        b.add(
            libc::NFT_MSG_DELCHAIN,
            libc::NLM_F_ACK,
            Payload::Chain(c),
            &w,
        );
    }
    for family in [Family::Ipv4, Family::Ipv6] {
        let name = bans::exempt_set_name(family);
        let (key_type, key_len) = match family {
            Family::Ipv4 => (TYPE_IPV4_ADDR, 4),
            Family::Ipv6 => (TYPE_IPV6_ADDR, 16),
        };
        let w = format!("emptying set {name} of {what}");
        let s = b.new_set(&name, libc::NFT_SET_INTERVAL as u32, key_type, key_len);
        b.add(libc::NFT_MSG_NEWSET, CREATE, Payload::Set(s), &w);
        let s = b.set_object(&name, libc::NFT_SET_INTERVAL as u32, key_type, key_len, 0);
        b.add(libc::NFT_MSG_DELSET, libc::NLM_F_ACK, Payload::Set(s), &w);
    }
    if let Some(t) = &wanted {
        for set in &t.sets {
            b.named_set(set)?;
        }
        for chain in &t.chains {
            b.chain(chain);
            for (i, rule) in chain.rules.iter().enumerate() {
                b.rule(chain, i, rule)?;
            }
        }
    }
    b.table = main;
    Ok(())
}

/// The batch that takes the ban table's chains (and exempt sets) away and
/// keeps its ban sets: bans drop nothing until an apply with bans.
pub fn bans_off() -> Result<Built, NftError> {
    let mut b = Builder::new(TABLE_NAME);
    let none = Ruleset {
        profile: String::new(),
        table: TABLE_NAME.into(),
        sets: vec![],
        chains: vec![],
        bans: None,
    };
    ban_table(&mut b, &none, BanTable::Present)?;
    Ok(b.finish())
}

/// The batch that adds (`Op::Add`, with `timeout_ms` or the set's default)
/// or deletes `addr` in the ban set of its family, and nothing else.
/// `refresh` deletes it first, in the same transaction: a ban of an
/// address already banned starts its timeout again.
pub fn ban_elem(addr: std::net::IpAddr, op: Op, timeout_ms: Option<u64>, refresh: bool) -> Built {
    let mut b = Builder::new(bans::BAN_TABLE);
    let (family, key, width) = match addr {
        std::net::IpAddr::V4(a) => (Family::Ipv4, u128::from(u32::from(a)), 4),
        std::net::IpAddr::V6(a) => (Family::Ipv6, u128::from(a), 16),
    };
    let set = bans::set_name(family);
    let what = format!("{addr} in set {set} of table inet {}", bans::BAN_TABLE);
    let elem = || Elem {
        key,
        end: false,
        open: false,
    };
    if refresh {
        b.add_elems(
            &set,
            None,
            width,
            Op::Delete,
            Box::new(std::iter::once(elem())),
            &what,
        );
    }
    let pages = ElemPages::new(
        &b.table,
        &set,
        None,
        width,
        op,
        Box::new(std::iter::once(elem())),
        &what,
        &b.log,
    );
    let pages = match timeout_ms {
        Some(ms) if op == Op::Add => pages.with_timeout_ms(ms),
        _ => pages,
    };
    b.batch.add(&pages, MsgType::Add);
    drop(pages);
    b.finish()
}
