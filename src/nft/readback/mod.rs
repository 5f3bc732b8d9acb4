//! Reading table `inet fwharden` back from the kernel into the model, so
//! the caller can check that what the kernel holds is exactly what was
//! meant. Only what fwharden writes decodes; anything else (a hand edit,
//! another tool's rule, a set of another type) is a [`NftError::Foreign`],
//! never silently accepted. Also lists other tables' base chains,
//! read-only, for `status`.

use std::collections::BTreeSet;

use nftnl::nftnl_sys::{self as sys, libc};

use crate::ruleset::bans::{self, BAN_TABLE};
use crate::ruleset::*;

use super::batch::{hook_number, FAMILY};
use super::counters::TableCounters;
use super::obj;
use super::rules;
use super::socket::{RequestError, Socket};
use super::udata::{self, tlvs, udata_str};
use super::NftError;

/// The reply copied into u64s, so its header is aligned as libmnl expects.
pub(super) fn aligned(msg: &[u8]) -> Vec<u64> {
    let mut out = vec![0u64; msg.len().div_ceil(8)];
    // SAFETY: `out` has room for `msg.len()` bytes; they do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), out.as_mut_ptr().cast::<u8>(), msg.len())
    };
    out
}

/// Parses one reply message into a fresh libnftnl object.
macro_rules! parse_as_impl {
    ($msg:expr, $ty:ident, $f:ident) => {{
        let buf = $crate::nft::readback::aligned($msg);
        let o = $crate::nft::obj::$ty::new();
        // SAFETY: a complete netlink message (the socket layer checked its
        // length), aligned, and a live object for libnftnl to fill.
        let r = unsafe { sys::$f(buf.as_ptr().cast(), o.as_ptr()) };
        (r >= 0).then_some(o)
    }};
}
pub(super) use parse_as_impl as parse_as;

mod others;
mod sets;
pub use others::{base_chains, chain_names};
use sets::read_sets;
pub(in crate::nft) use sets::set_elems;

pub(super) fn kernel(op: &str, e: RequestError) -> NftError {
    match e {
        RequestError::Io(source) => NftError::Io { op: "recv", source },
        RequestError::Kernel(libc::EPERM, _) => NftError::Permission {
            what: op.to_string(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        },
        RequestError::Kernel(e, message) => NftError::Rejected {
            what: op.to_string(),
            message,
            source: std::io::Error::from_raw_os_error(e),
        },
        RequestError::Interrupted => NftError::Protocol {
            op: "dump",
            detail: "the ruleset kept changing while it was read".into(),
        },
    }
}

pub(super) fn foreign(what: impl Into<String>, why: impl Into<String>) -> NftError {
    NftError::Foreign {
        table: TABLE_NAME.into(),
        what: what.into(),
        why: why.into(),
    }
}

/// The table, or `None` when it does not exist. Repeated while the
/// ruleset changes under the read (generation id differs before/after).
pub fn read(sock: &mut Socket) -> Result<Option<Ruleset>, NftError> {
    read_at(sock).map(|(_, table)| table)
}

/// The table and the generation it was read at: a dump the generation
/// moved during is read again.
pub fn read_at(sock: &mut Socket) -> Result<(u32, Option<Ruleset>), NftError> {
    read_at_skipping(sock, &BTreeSet::new())
}

/// Like [`read_at`], but the elements of the prefix sets named in `skip`
/// are not listed: those sets read back empty. Listing a set's elements
/// costs the kernel O(n²) (its dump walks the set from the start again
/// for every message), so [`super::verify`] proves big sets another way.
pub fn read_at_skipping(
    sock: &mut Socket,
    skip: &BTreeSet<String>,
) -> Result<(u32, Option<Ruleset>), NftError> {
    // Every commit by anyone moves the generation, and on a host where
    // fail2ban or CrowdSec add bans, commits come often: read again, with
    // a growing pause, until a read starts and ends at one generation.
    // Never return a read that spans two: it may mix two rulesets.
    let deadline = std::time::Instant::now() + READ_PATIENCE;
    for attempt in 0.. {
        if attempt > 0 {
            if std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(6)));
        }
        let before = generation(sock)?;
        let result = read_once(sock, skip);
        if matches!(result, Err(NftError::Protocol { op: "dump", .. })) {
            continue;
        }
        if generation(sock)? == before {
            return result.map(|t| (before, t));
        }
    }
    Err(NftError::Protocol {
        op: "dump",
        detail: format!(
            "the ruleset kept changing while it was read (for {} s); run the command again",
            READ_PATIENCE.as_secs()
        ),
    })
}

/// Runs `read` again while one of its dumps was interrupted
/// (NLM_F_DUMP_INTR: a commit ran during it, a ban say), pausing a little
/// more each time, for at most [`READ_PATIENCE`]. For reads that need no
/// single generation across dumps: each dump is whole on its own.
pub(in crate::nft) fn retrying<T>(
    mut read: impl FnMut() -> Result<T, NftError>,
) -> Result<T, NftError> {
    let deadline = std::time::Instant::now() + READ_PATIENCE;
    let mut attempt = 0u32;
    loop {
        match read() {
            Err(NftError::Protocol { op: "dump", .. }) if std::time::Instant::now() < deadline => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(6)));
            }
            other => return other,
        }
    }
}

/// Whether table `inet <name>` exists: one GETTABLE, no dump.
pub(in crate::nft) fn table_exists(sock: &mut Socket, name: &str) -> Result<bool, NftError> {
    match request_in_table(
        sock,
        name,
        libc::NFT_MSG_GETTABLE,
        0,
        obj::Kind::Table,
        None,
    ) {
        Ok(_) => Ok(true),
        Err(RequestError::Kernel(libc::ENOENT, _)) => Ok(false),
        Err(e) => Err(kernel("reading the table", e)),
    }
}

/// How long reads are tried on a ruleset that keeps changing: only commits
/// back to back for this long exhaust it (a loaded machine stretches each
/// read; 20 tries ran out under a full test run beside a ban loop).
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Adds to the request being built the attributes that select table
/// `inet fwharden` (and, for elements, the set `set_name`).
///
/// # Safety
/// `nlh` points to a netlink header at the start of a buffer of at least
/// `nft_nlmsg_maxsize()` bytes, as [`Socket::request`] hands it to its
/// `build` callback.
unsafe fn with_table_attr(
    nlh: *mut libc::nlmsghdr,
    table: &str,
    set_name: Option<&str>,
    kind: obj::Kind,
) {
    // In each arm below, the object is live for the call and the payload
    // (a table name, maybe a set name: a few dozen bytes) fits the buffer
    // the caller promised.
    match kind {
        obj::Kind::Table => {
            let t = obj::Table::new();
            t.set_str(sys::NFTNL_TABLE_NAME, table);
            // SAFETY: see above.
            unsafe { sys::nftnl_table_nlmsg_build_payload(nlh, t.as_ptr()) };
        }
        obj::Kind::Set | obj::Kind::SetElems => {
            let s = obj::Set::new();
            s.set_str(sys::NFTNL_SET_TABLE, table);
            if let Some(n) = set_name {
                s.set_str(sys::NFTNL_SET_NAME, n);
                // SAFETY: see above.
                unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.as_ptr()) };
            } else {
                // SAFETY: see above.
                unsafe { sys::nftnl_set_nlmsg_build_payload(nlh, s.as_ptr()) };
            }
        }
        obj::Kind::Chain => {
            let c = obj::Chain::new();
            c.set_str(sys::NFTNL_CHAIN_TABLE, table);
            // SAFETY: see above.
            unsafe { sys::nftnl_chain_nlmsg_build_payload(nlh, c.as_ptr()) };
        }
        obj::Kind::Rule => {
            let r = obj::Rule::new();
            r.set_str(sys::NFTNL_RULE_TABLE, table);
            // SAFETY: see above.
            unsafe { sys::nftnl_rule_nlmsg_build_payload(nlh, r.as_ptr()) };
        }
    }
}

/// A GET request (`flags` 0 or [`DUMP`]) for objects of table
/// `inet fwharden`.
fn request_in_table(
    sock: &mut Socket,
    table: &str,
    nl_type: i32,
    flags: u16,
    kind: obj::Kind,
    set_name: Option<&str>,
) -> Result<Vec<Vec<u8>>, RequestError> {
    sock.request(nl_type as u16, FAMILY, flags, |nlh| {
        // SAFETY: `request` passes the header of the message it is
        // building, in a buffer of `nft_nlmsg_maxsize()` bytes.
        unsafe { with_table_attr(nlh, table, set_name, kind) }
    })
}

const DUMP: u16 = libc::NLM_F_DUMP as u16;

fn read_once(sock: &mut Socket, skip: &BTreeSet<String>) -> Result<Option<Ruleset>, NftError> {
    let Some(mut ruleset) = read_named(sock, TABLE_NAME, skip)? else {
        return Ok(None);
    };
    ruleset.bans = match read_named(sock, BAN_TABLE, &BTreeSet::new())? {
        Some(t) => bans_of(t)?,
        None => None,
    };
    Ok(Some(ruleset))
}

/// The bans a ban table read back stands for: `None` when it has no chain
/// (bans are off; the ban sets are kept for when they are on again).
/// Anything [`bans::table`] would not have written is foreign.
fn bans_of(mut t: Ruleset) -> Result<Option<Bans>, NftError> {
    if t.chains.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| NftError::Foreign {
        table: BAN_TABLE.into(),
        what: "the ban table".into(),
        why: why.into(),
    };
    let Some(SetKind::Bans { timeout_secs, size }) = t.set("ban_v4").map(|s| s.kind.clone()) else {
        return Err(bad("no ban set ban_v4"));
    };
    let exempt_groups = t
        .sets
        .iter()
        .find_map(|s| s.comment.strip_prefix("never banned: "))
        .map(|g| g.split(", ").map(str::to_string).collect())
        .unwrap_or_default();
    let mut exempt = Vec::new();
    for s in &t.sets {
        if let SetKind::Prefixes(nets) = &s.kind {
            exempt.extend(nets.iter().copied());
        }
    }
    let b = Bans {
        timeout_secs,
        size,
        exempt,
        exempt_groups,
    };
    // The ban table carries no profile name; sets are compared by name,
    // whatever order the kernel lists them in.
    let mut want = bans::table(&b, &t.profile);
    want.sets.sort_by(|x, y| x.name.cmp(&y.name));
    t.sets.sort_by(|x, y| x.name.cmp(&y.name));
    if want != t {
        return Err(bad("its sets or chains are not the ones fwharden writes"));
    }
    Ok(Some(b))
}

/// Table `inet <table>` as a model, or `None` when it does not exist.
pub(in crate::nft) fn read_named(
    sock: &mut Socket,
    name: &str,
    skip: &BTreeSet<String>,
) -> Result<Option<Ruleset>, NftError> {
    Ok(read_counted(sock, name, skip)?.map(|(table, _)| table))
}

/// Like [`read_named`], with the kernel's counters beside the model (see
/// [`super::counters`] for why they are kept out of it).
pub(in crate::nft) fn read_counted(
    sock: &mut Socket,
    name: &str,
    skip: &BTreeSet<String>,
) -> Result<Option<(Ruleset, TableCounters)>, NftError> {
    let mut counters = TableCounters::default();
    let tables = match request_in_table(
        sock,
        name,
        libc::NFT_MSG_GETTABLE,
        0,
        obj::Kind::Table,
        None,
    ) {
        Err(RequestError::Kernel(libc::ENOENT, _)) => return Ok(None),
        other => other.map_err(|e| kernel("reading the table", e))?,
    };
    let table = tables
        .first()
        .and_then(|m| parse_as!(m, Table, nftnl_table_nlmsg_parse))
        .ok_or_else(|| foreign("the table", "its description did not parse"))?;
    let profile = udata_str(
        &table.get_data(sys::NFTNL_TABLE_USERDATA),
        udata::UDATA_TABLE_PROFILE,
    );

    let (sets, anon) = read_sets(sock, name, skip)?;

    let mut chains = Vec::new();
    let replies = request_in_table(
        sock,
        name,
        libc::NFT_MSG_GETCHAIN,
        DUMP,
        obj::Kind::Chain,
        None,
    )
    .map_err(|e| kernel("listing chains", e))?;
    for m in &replies {
        let c = parse_as!(m, Chain, nftnl_chain_nlmsg_parse)
            .ok_or_else(|| foreign("a chain", "it did not parse"))?;
        if c.get_str(sys::NFTNL_CHAIN_TABLE) == name {
            chains.push(chain(&c)?);
            counters.add_chain(&c);
        }
    }

    let replies = request_in_table(
        sock,
        name,
        libc::NFT_MSG_GETRULE,
        DUMP,
        obj::Kind::Rule,
        None,
    )
    .map_err(|e| kernel("listing rules", e))?;
    let resolve = |name: &str| anon.get(name).cloned();
    for m in &replies {
        let r = parse_as!(m, Rule, nftnl_rule_nlmsg_parse)
            .ok_or_else(|| foreign("a rule", "it did not parse"))?;
        if r.get_str(sys::NFTNL_RULE_TABLE) != name {
            continue;
        }
        let chain_name = r.get_str(sys::NFTNL_RULE_CHAIN);
        let Some(c) = chains
            .iter_mut()
            .find(|c: &&mut Chain| c.name == chain_name)
        else {
            return Err(foreign(
                format!("a rule in chain {chain_name}"),
                "no such chain was listed",
            ));
        };
        let what = format!("rule {} of chain {chain_name}", c.rules.len() + 1);
        let user = r.get_data(sys::NFTNL_RULE_USERDATA);
        if tlvs(&user).iter().any(|(t, _)| *t != udata::RULE_COMMENT) {
            return Err(foreign(&what, "user data other than a comment"));
        }
        let exprs = r.exprs();
        let comment = udata_str(&user, udata::RULE_COMMENT);
        // The rules that consult the opening sets come with them, not
        // with the profile (see `openings`).
        if name == TABLE_NAME
            && super::openings::is_opening_rule(&exprs, &comment)
                .map_err(|why| foreign(&what, why))?
        {
            continue;
        }
        let rule = rules::decode(&exprs, comment, &resolve).map_err(|why| foreign(&what, why))?;
        c.rules.push(rule);
        counters.add_rule(&chain_name, &r);
    }

    let table = Ruleset {
        profile,
        table: name.into(),
        sets,
        chains,
        bans: None,
    };
    Ok(Some((table, counters)))
}

fn chain(c: &obj::Chain) -> Result<Chain, NftError> {
    let name = c.get_str(sys::NFTNL_CHAIN_NAME);
    let what = format!("chain {name}");
    if !c.is_set(sys::NFTNL_CHAIN_HOOKNUM) || c.get_str(sys::NFTNL_CHAIN_TYPE) != "filter" {
        return Err(foreign(&what, "not a filter base chain"));
    }
    let hooknum = c.get_u32(sys::NFTNL_CHAIN_HOOKNUM);
    let hook = [Hook::Input, Hook::Forward, Hook::Output]
        .into_iter()
        .find(|h| hook_number(*h) == hooknum)
        .ok_or_else(|| foreign(&what, format!("hook {hooknum}")))?;
    let policy = match c.get_u32(sys::NFTNL_CHAIN_POLICY) as i32 {
        libc::NF_ACCEPT => Policy::Accept,
        libc::NF_DROP => Policy::Drop,
        p => return Err(foreign(&what, format!("policy {p}"))),
    };
    Ok(Chain {
        name,
        hook,
        priority: c.get_u32(sys::NFTNL_CHAIN_PRIO) as i32,
        policy,
        rules: Vec::new(),
    })
}

/// The ruleset generation id (NFT_MSG_GETGEN), which changes with every
/// committed transaction.
pub fn generation(sock: &mut Socket) -> Result<u32, NftError> {
    let replies = sock
        .request(
            libc::NFT_MSG_GETGEN as u16,
            libc::AF_UNSPEC as u16,
            0,
            |_| {},
        )
        .map_err(|e| kernel("reading the ruleset generation", e))?;
    // NEWGEN: nlmsghdr (16), nfgenmsg (4), then attributes; NFTA_GEN_ID (1)
    // is a big-endian u32.
    for m in &replies {
        let mut at = 20;
        while at + 8 <= m.len() {
            let len = u16::from_ne_bytes([m[at], m[at + 1]]) as usize;
            let ty = u16::from_ne_bytes([m[at + 2], m[at + 3]]) & 0x3fff;
            if len < 4 {
                break;
            }
            if ty == 1 && len == 8 {
                return Ok(u32::from_be_bytes([
                    m[at + 4],
                    m[at + 5],
                    m[at + 6],
                    m[at + 7],
                ]));
            }
            at += len.next_multiple_of(4);
        }
    }
    Err(NftError::Protocol {
        op: "GETGEN",
        detail: "no generation id in the reply".into(),
    })
}
