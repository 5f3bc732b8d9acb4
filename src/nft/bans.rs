//! The ban sets in the kernel: what `fwharden ban`, `unban` and `bans`
//! do, each one small transaction on one element of table
//! `inet fwharden-bans` (see [`crate::ruleset::bans`] for why the sets
//! live there), and the check an apply makes before it writes that table.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use nftnl::nftnl_sys::libc;
use serde::Serialize;

use super::ban_batch::{self, BanTable};
use super::elems::Op;
use super::readback;
use super::socket::Socket;
use super::NftError;
use crate::ruleset::bans::{self as model, BAN_TABLE};
use crate::ruleset::{Family, Ruleset, SetKind};

/// One ban as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    pub addr: IpAddr,
    /// The set it is in: `ban_v4` (fwharden ban, fail2ban), `crowdsec_v4`...
    pub set: String,
    /// The timeout it was added with, when it has one of its own; `None`:
    /// the set's default.
    pub timeout_secs: Option<u64>,
    /// Time left before the kernel drops it; `None`: never.
    pub expires_secs: Option<u64>,
}

/// What table `inet fwharden-bans` holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanState {
    /// `false`: the table exists but has no chain (bans are off), so a
    /// ban is kept but drops nothing.
    pub enforced: bool,
    pub exempt: Vec<IpNet>,
    pub bans: Vec<Ban>,
}

/// What `ban` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Banned {
    Added,
    /// It was banned already: its timeout starts again.
    Renewed,
}

/// What `unban` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unbanned {
    Removed,
    NotBanned,
}

fn absent() -> NftError {
    NftError::NoBans {
        table: BAN_TABLE.into(),
    }
}

/// The ban table, or `None` when it does not exist.
pub fn state() -> Result<Option<BanState>, NftError> {
    let mut sock = Socket::open()?;
    let Some(t) = readback::read_named(&mut sock, BAN_TABLE, &BTreeSet::new())? else {
        return Ok(None);
    };
    let mut exempt = Vec::new();
    let mut bans = Vec::new();
    for s in &t.sets {
        match &s.kind {
            SetKind::Prefixes(nets) => exempt.extend(nets.iter().copied()),
            SetKind::Bans { .. } => {
                for e in readback::set_elems(&mut sock, BAN_TABLE, &s.name)? {
                    bans.push(ban_of(&e, &s.name, s.family)?);
                }
            }
            _ => {}
        }
    }
    bans.sort_by_key(|b| b.addr);
    Ok(Some(BanState {
        enforced: !t.chains.is_empty(),
        exempt,
        bans,
    }))
}

fn ban_of(e: &super::obj::KernelElem, set: &str, family: Family) -> Result<Ban, NftError> {
    let addr: IpAddr = match (family, e.key.len()) {
        (Family::Ipv4, 4) => <[u8; 4]>::try_from(e.key.as_slice()).map(IpAddr::from).ok(),
        (Family::Ipv6, 16) => <[u8; 16]>::try_from(e.key.as_slice())
            .map(IpAddr::from)
            .ok(),
        _ => None,
    }
    .ok_or_else(|| NftError::Foreign {
        table: BAN_TABLE.into(),
        what: format!("a ban of {} bytes", e.key.len()),
        why: "not an address of the set's family".into(),
    })?;
    // The kernel counts in jiffies: round to whole seconds.
    Ok(Ban {
        addr,
        set: set.to_string(),
        timeout_secs: e.timeout_ms.map(|ms| (ms + 500) / 1000),
        expires_secs: e.expires_ms.map(|ms| (ms + 500) / 1000),
    })
}

/// Bans `addr` for `timeout_secs` (or the set's default). What must not
/// be banned (the operator, this host, exempt groups) is the ban guard's
/// to refuse before ([`crate::ruleset::ban_guard`]).
pub fn ban(addr: IpAddr, timeout_secs: Option<u64>) -> Result<Banned, NftError> {
    let state = state()?.ok_or_else(absent)?;
    let own = model::set_name(match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    });
    let renew = state.bans.iter().any(|b| b.addr == addr && b.set == own);
    let built = ban_batch::ban_elem(addr, Op::Add, timeout_secs.map(|s| s * 1000), renew);
    Socket::open()?.transact(&built, None)?;
    Ok(if renew {
        Banned::Renewed
    } else {
        Banned::Added
    })
}

/// Lifts the ban of `addr`, if there is one.
pub fn unban(addr: IpAddr) -> Result<Unbanned, NftError> {
    if state()?.is_none() {
        return Err(absent());
    }
    let built = ban_batch::ban_elem(addr, Op::Delete, None, false);
    match Socket::open()?.transact(&built, None) {
        Ok(()) => Ok(Unbanned::Removed),
        Err(NftError::Rejected { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(Unbanned::NotBanned)
        }
        Err(e) => Err(e),
    }
}

/// Before an apply writes the ban table: whether it exists, and a refusal
/// when its ban sets have another shape than `ruleset` asks for. The
/// kernel cannot change a set's timeout or size in place, and recreating
/// the set would drop every ban in it.
pub(super) fn before_apply(sock: &mut Socket, ruleset: &Ruleset) -> Result<BanTable, NftError> {
    let Some(t) = readback::read_named(sock, BAN_TABLE, &BTreeSet::new())? else {
        return Ok(BanTable::Absent);
    };
    if let Some(wanted) = &ruleset.bans {
        for name in model::ban_set_names() {
            let want = SetKind::Bans {
                timeout_secs: wanted.timeout_secs,
                size: wanted.size,
            };
            if let Some(have) = t.set(&name).map(|s| &s.kind) {
                if *have != want {
                    return Err(NftError::BanSetShape {
                        set: name,
                        have: describe(have),
                        want: describe(&want),
                    });
                }
            }
        }
    }
    Ok(BanTable::Present)
}

fn describe(kind: &SetKind) -> String {
    match kind {
        SetKind::Bans { timeout_secs, size } => {
            format!("timeout = {timeout_secs} s and size = {size}")
        }
        other => format!("{other:?}"),
    }
}
