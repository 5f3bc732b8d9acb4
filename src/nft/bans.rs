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
use super::gate::BanGate;
use super::readback;
use super::socket::Socket;
use super::{verify, NftError};
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
    readback::retrying(|| state_once(&mut sock))
}

fn state_once(sock: &mut Socket) -> Result<Option<BanState>, NftError> {
    let Some(t) = readback::read_named(sock, BAN_TABLE, &BTreeSet::new())? else {
        return Ok(None);
    };
    let mut exempt = Vec::new();
    let mut bans = Vec::new();
    for s in &t.sets {
        match &s.kind {
            SetKind::Prefixes(nets) => exempt.extend(nets.iter().copied()),
            SetKind::Bans { .. } => {
                for e in readback::set_elems(sock, BAN_TABLE, &s.name)? {
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
/// to refuse before ([`crate::ruleset::ban_guard`], fed by [`exempt_net`]).
///
/// Built to coexist with applies and other bans: it waits while an apply
/// holds the ban gate (see `gate`), and it lists nothing. Whether bans are
/// on is one GETTABLE, the exemption one lookup in the exempt set, and
/// whether `addr` was banned already the kernel's own answer to an
/// exclusive add (EEXIST). None of these is a dump, which another commit
/// can interrupt; the transaction carries no generation, so another
/// commit cannot make the kernel refuse it either.
pub fn ban(addr: IpAddr, timeout_secs: Option<u64>) -> Result<Banned, NftError> {
    let _gate = BanGate::pass()?;
    let mut sock = Socket::open()?;
    if !readback::table_exists(&mut sock, BAN_TABLE)? {
        return Err(absent());
    }
    let timeout_ms = timeout_secs.map(|s| s * 1000);
    // An element that expires between the EEXIST and the renewal makes
    // the renewal's delete fail (ENOENT): the add is then tried again.
    for _ in 0..3 {
        let add = ban_batch::ban_elem(addr, Op::Add, timeout_ms, false);
        match sock.transact(&add, None) {
            Ok(()) => return Ok(Banned::Added),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) if errno(&e) == Some(libc::ENOENT) => return Err(absent()),
            Err(e) => return Err(e),
        }
        let renew = ban_batch::ban_elem(addr, Op::Add, timeout_ms, true);
        match sock.transact(&renew, None) {
            Ok(()) => return Ok(Banned::Renewed),
            Err(e) if errno(&e) == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Err(NftError::Protocol {
        op: "ban",
        detail: format!("{addr} kept appearing and expiring in its ban set; run the command again"),
    })
}

/// The errno of a refused transaction.
fn errno(e: &NftError) -> Option<i32> {
    match e {
        NftError::Rejected { source, .. } | NftError::NoNfTables { source } => {
            source.raw_os_error()
        }
        _ => None,
    }
}

/// Whether bans are on: table `inet fwharden-bans` exists (one GETTABLE,
/// never a listing).
pub fn enabled() -> Result<bool, NftError> {
    readback::table_exists(&mut Socket::open()?, BAN_TABLE)
}

/// The exempt prefix holding `addr`, if one does, for the ban guard: a
/// lookup in the exempt set of its family first, and only on a hit a read
/// of that small set, to name the prefix in the refusal.
pub fn exempt_net(addr: IpAddr) -> Result<Option<IpNet>, NftError> {
    exempting(&mut Socket::open()?, addr)
}

fn exempting(sock: &mut Socket, addr: IpAddr) -> Result<Option<IpNet>, NftError> {
    let (family, key) = key_of(addr);
    let set = model::exempt_set_name(family);
    if verify::lookup_in(sock, BAN_TABLE, &set, &key)?.is_none() {
        return Ok(None);
    }
    let exempt = readback::retrying(|| {
        let t = readback::read_named(sock, BAN_TABLE, &BTreeSet::new())?;
        Ok(t.and_then(|t| t.set(&set).map(|s| s.kind.clone())))
    })?;
    let Some(SetKind::Prefixes(nets)) = exempt else {
        return Ok(None);
    };
    Ok(nets.into_iter().find(|n| n.contains(&addr)))
}

/// The family of `addr` and its bytes as a set key.
fn key_of(addr: IpAddr) -> (Family, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (Family::Ipv4, a.octets().to_vec()),
        IpAddr::V6(a) => (Family::Ipv6, a.octets().to_vec()),
    }
}

/// Whether `addr` is in the ban set of its family (`ban_v4`, `ban_v6`),
/// asked of the kernel's own lookup: one GETSETELEM, never a listing.
pub fn banned(addr: IpAddr) -> Result<bool, NftError> {
    let (family, key) = key_of(addr);
    let mut sock = Socket::open()?;
    Ok(verify::lookup_in(&mut sock, BAN_TABLE, &model::set_name(family), &key)?.is_some())
}

/// Lifts the ban of `addr`, if there is one. Like [`ban`], it waits on an
/// apply in progress and lists nothing.
pub fn unban(addr: IpAddr) -> Result<Unbanned, NftError> {
    let _gate = BanGate::pass()?;
    let mut sock = Socket::open()?;
    if !readback::table_exists(&mut sock, BAN_TABLE)? {
        return Err(absent());
    }
    let built = ban_batch::ban_elem(addr, Op::Delete, None, false);
    match sock.transact(&built, None) {
        Ok(()) => Ok(Unbanned::Removed),
        Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(Unbanned::NotBanned),
        Err(e) => Err(e),
    }
}

/// Before an apply writes the ban table: whether it exists, and a refusal
/// when its ban sets have another shape than `ruleset` asks for. The
/// kernel cannot change a set's timeout or size in place, and recreating
/// the set would drop every ban in it.
pub(super) fn before_apply(sock: &mut Socket, ruleset: &Ruleset) -> Result<BanTable, NftError> {
    // Its ban sets' elements are not listed: a dump interrupted by a ban
    // (which moves the generation) is simply read again.
    let read = readback::retrying(|| readback::read_named(sock, BAN_TABLE, &BTreeSet::new()))?;
    let Some(t) = read else {
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
