//! The netlink backend: applies a [`Ruleset`] to the kernel as one
//! nf_tables transaction, removes fwharden's table, and reads the table
//! back into the model. The only module that speaks netlink (nftnl, mnl).
//!
//! Only table `inet fwharden` is ever written: no flush of the ruleset, no
//! other table touched. Other tables are only listed, read-only.
//!
//! Most of the crate's `unsafe` code is here, at the libnftnl boundary;
//! clippy refuses any unsafe block of this module without a `// SAFETY:`
//! comment.

#![warn(clippy::undocumented_unsafe_blocks)]

mod acks;
mod ban_batch;
mod bans;
mod batch;
pub mod counters;
mod elems;
mod expr;
mod gate;
mod intervals;
mod monitor;
pub mod nflog;
mod obj;
mod openings;
mod readback;
mod rules;
mod socket;
pub mod trace;
mod udata;
mod verify;

pub use bans::{
    ban, banned, enabled as bans_enabled, exempt_net, state as ban_state, unban, Ban, BanState,
    Banned, Unbanned,
};
pub use gate::BanGate;
pub use openings::{change as change_openings, openings};
pub use verify::{next_generation, Check, Focus, FULL_READ_MAX, LOOKUPS_PER_SET};

use thiserror::Error;

use nftnl::nftnl_sys::libc;

use crate::ruleset::{Policy, Ruleset};

#[derive(Debug, Error)]
pub enum NftError {
    #[error(
        "changing the firewall needs root or CAP_NET_ADMIN: the kernel refused {what} ({source})"
    )]
    Permission {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel has no nf_tables ({source}); load the nf_tables module or use a kernel built with it")]
    NoNfTables {
        #[source]
        source: std::io::Error,
    },
    #[error("netlink {op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the batch is {needed} bytes but the kernel allowed a send buffer of only {got}; raise net.core.wmem_max (sysctl) or run with CAP_NET_ADMIN, which may force a larger buffer")]
    SendBuffer { needed: usize, got: usize },
    #[error("the kernel rejected {what}: {source}{}; nothing was changed", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Rejected {
        what: String,
        message: Option<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("another program changed the firewall while fwharden was applying; nothing was changed: run the command again")]
    Raced,
    #[error("the outcome of the transaction is unknown: {detail}; the firewall may or may not have changed, read it back before trusting it")]
    OutcomeUnknown { detail: String },
    #[error("cannot express {what} in nf_tables as fwharden writes it: {why}")]
    Unsupported { what: String, why: String },
    #[error("table inet {table} holds {what}, which fwharden did not write (a hand edit or another tool): {why}")]
    Foreign {
        table: String,
        what: String,
        why: String,
    },
    #[error("bans are off: table inet {table} does not exist; add `[bans]` with `enabled = true` to the profile and apply it")]
    NoBans { table: String },
    #[error("ban set {set} holds {have}, the profile asks for {want}; the kernel cannot change a set in place and recreating it would drop its bans: keep the old values in [bans], or drop every ban with `nft delete table inet fwharden-bans` and apply again")]
    BanSetShape {
        set: String,
        have: String,
        want: String,
    },
    #[error("unexpected netlink reply to {op}: {detail}")]
    Protocol { op: &'static str, detail: String },
}

impl crate::exit::Coded for NftError {
    fn exit_code(&self) -> i32 {
        match self {
            // Bans are off: a refusal of principle, nothing was changed.
            NftError::NoBans { .. } => crate::exit::REFUSED,
            _ => crate::exit::FAILURE,
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The ruleset generation after the commit.
    pub generation: u32,
    /// `generation` is the one before the commit plus one: no other
    /// transaction ran between the read before and the read after, so the
    /// kernel holds exactly what the batch carried (see [`verify()`]).
    pub exclusive: bool,
    /// Messages in the transaction (batch begin and end included).
    pub messages: usize,
    /// Bytes sent, in one datagram.
    pub bytes: usize,
    /// The prefixes this commit added to or took from each prefix set,
    /// when the caller knows them (see [`verify()`]): their edges are
    /// looked up in the kernel besides the spread sample.
    pub focus: verify::Focus,
}

/// A base chain of another table, for `status`: who else filters packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub hook: String,
    pub priority: i32,
    /// `None` for chain types without a policy.
    pub policy: Option<Policy>,
}

/// Replaces table `inet fwharden` with `ruleset` in one transaction, and
/// checks the kernel's acknowledgement of every message. On error nothing
/// changed, except for [`NftError::OutcomeUnknown`].
pub fn apply(ruleset: &Ruleset) -> Result<ApplyReport, NftError> {
    apply_at(ruleset, None)
}

/// Like [`apply`], but only if the ruleset is still at `generation` (as
/// [`read_table_at`] returned it): a write by anyone else in between makes
/// the kernel refuse the whole batch with [`NftError::Raced`].
pub fn apply_at(ruleset: &Ruleset, generation: Option<u32>) -> Result<ApplyReport, NftError> {
    if let Some(g) = generation {
        return apply_cas(ruleset, g);
    }
    // Without a generation from the caller, one is read here all the same:
    // the openings carried over must be the ones the kernel holds when the
    // batch goes in, and an `open` could otherwise land between the read
    // and the commit and be lost with the table. The ban gate, closed here
    // unless the caller closed it, holds fwharden's own bans and opens
    // back meanwhile; a commit by anyone else (CrowdSec, nft by hand)
    // costs a rebuild.
    let _gate = (!gate::closed_here()).then(BanGate::close);
    let mut sock = socket::Socket::open()?;
    let mut tries = 0;
    loop {
        tries += 1;
        match apply_cas(ruleset, readback::generation(&mut sock)?) {
            Err(NftError::Raced) if tries < CAS_TRIES => continue,
            other => return other,
        }
    }
}

/// How many times [`apply_at`] without a generation reads one and tries.
const CAS_TRIES: u32 = 5;

fn apply_cas(ruleset: &Ruleset, generation: u32) -> Result<ApplyReport, NftError> {
    // Read under the same compare-and-swap: a ban table made or changed
    // after this read moves the generation, and the kernel refuses the
    // batch built on it.
    let mut sock = socket::Socket::open()?;
    let ban_table = bans::before_apply(&mut sock, ruleset)?;
    // The openings are carried over with what is left of their time (see
    // `openings`); the same compare-and-swap refuses the batch when one
    // was opened or closed since `generation`.
    let carried = openings::carry(&mut sock)?;
    commit(
        batch::apply(ruleset, ban_table, &carried)?,
        Some(generation),
    )
}

/// Brings the kernel from `old`, which it holds at `generation`, to `new`
/// by deleting and adding set elements only, in one transaction: for a
/// changed prefix list, a few hundred elements instead of the whole table.
/// `old.differs_only_in_elements(new)` must hold. Like [`apply_at`], a
/// write by anyone else since `generation` makes the kernel refuse it.
pub fn apply_delta(old: &Ruleset, new: &Ruleset, generation: u32) -> Result<ApplyReport, NftError> {
    if !old.differs_only_in_elements(new) {
        return Err(NftError::Unsupported {
            what: "an element delta".into(),
            why: "the rulesets differ in more than set elements".into(),
        });
    }
    commit(batch::delta(old, new)?, Some(generation))
}

fn commit(built: batch::Built, generation: Option<u32>) -> Result<ApplyReport, NftError> {
    let mut sock = socket::Socket::open()?;
    let before = match generation {
        Some(g) => g,
        None => readback::generation(&mut sock)?,
    };
    sock.transact(&built, generation)?;
    // Subscribed before the generation is read: when it is still ours plus
    // one, the monitor hears every commit after ours (see `monitor`).
    let heard = monitor::Monitor::open().ok();
    let after = readback::generation(&mut sock)?;
    monitor::keep(after, heard);
    Ok(ApplyReport {
        generation: after,
        exclusive: after == next_generation(before),
        messages: built.batch.sequence_numbers().len(),
        bytes: built.batch.iter().map(|p| p.len()).sum(),
        focus: verify::Focus::new(),
    })
}

/// Checks that the kernel holds `expected` right after the commit `report`
/// describes: the structure and small sets element by element, large sets
/// by the generation and a bounded sample of lookups (see [`Check`]).
pub fn verify(expected: &Ruleset, report: &ApplyReport) -> Result<Check, NftError> {
    verify::verify(&mut socket::Socket::open()?, expected, report)
}

/// Removes table `inet fwharden` if it exists, and the chains of table
/// `inet fwharden-bans` (its ban sets and their bans stay, enforcing
/// nothing, for the next apply with bans).
pub fn remove_table() -> Result<(), NftError> {
    remove_main_table()?;
    let mut sock = socket::Socket::open()?;
    if bans::before_apply(&mut sock, &empty())? == ban_batch::BanTable::Present {
        sock.transact(&ban_batch::bans_off()?, None)?;
    }
    Ok(())
}

fn empty() -> Ruleset {
    Ruleset {
        profile: String::new(),
        table: crate::ruleset::TABLE_NAME.into(),
        sets: vec![],
        chains: vec![],
        bans: None,
    }
}

fn remove_main_table() -> Result<(), NftError> {
    let mut sock = socket::Socket::open()?;
    match sock.transact(&batch::remove(batch::Removal::Destroy), None) {
        Ok(()) => Ok(()),
        // Before Linux 6.3 there is no DESTROYTABLE: delete it if present.
        Err(NftError::Rejected { source, .. } | NftError::NoNfTables { source })
            if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) =>
        {
            if readback::read(&mut sock)?.is_none() {
                return Ok(());
            }
            match sock.transact(&batch::remove(batch::Removal::Delete), None) {
                Err(NftError::Rejected { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                other => other,
            }
        }
        Err(e) => Err(e),
    }
}

/// What the kernel holds in table `inet fwharden`, as a model, or `None`
/// when there is no such table. Anything fwharden would not have written
/// is an error, so `read_table()? == Some(intended)` is a full check.
pub fn read_table() -> Result<Option<Ruleset>, NftError> {
    readback::read(&mut socket::Socket::open()?)
}

/// Like [`read_table`], with the generation the table was read at.
pub fn read_table_at() -> Result<(u32, Option<Ruleset>), NftError> {
    readback::read_at(&mut socket::Socket::open()?)
}

/// What the kernel holds, read to tell which of `candidates` it is: like
/// [`read_table`], but a big prefix set of a candidate is checked by
/// sampled lookups instead of listed (see `verify::read_sampled`). Also
/// returns the names of the sets checked that way.
pub fn read_table_sampled(
    candidates: &[&Ruleset],
) -> Result<(Option<Ruleset>, Vec<String>), NftError> {
    let (_, table, sampled) = verify::read_sampled(&mut socket::Socket::open()?, candidates)?;
    Ok((table, sampled))
}

/// Tables `inet fwharden` and `inet fwharden-bans` with their packet and
/// byte counters, which the model leaves out (see [`counters`]). The
/// elements of the prefix sets named in `skip` are not listed.
pub fn read_counters(
    skip: &std::collections::BTreeSet<String>,
) -> Result<counters::Observed, NftError> {
    counters::read(&mut socket::Socket::open()?, skip)
}

/// One rule of table `inet fwharden` as the kernel holds it: what a trace
/// names by its handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRule {
    pub chain: String,
    /// Its place in the model's chain.
    pub index: usize,
    pub handle: u64,
    pub comment: String,
    /// A drop without an answer (not a reject, whose trace verdict is a
    /// drop too, after the answer it sends).
    pub silent_drop: bool,
}

/// Every rule of table `inet fwharden`, with its handle. Lists the sets'
/// elements too: for a small table (a probe replica's) only.
pub fn kernel_rules() -> Result<Vec<KernelRule>, NftError> {
    let observed = counters::read(&mut socket::Socket::open()?, &Default::default())?;
    let Some(main) = observed.main else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for chain in &main.ruleset.chains {
        let Some(counted) = main.counters.chain(&chain.name) else {
            continue;
        };
        for (index, (rule, handle)) in chain.rules.iter().zip(&counted.handles).enumerate() {
            out.push(KernelRule {
                chain: chain.name.clone(),
                index,
                handle: *handle,
                comment: rule.comment.clone(),
                silent_drop: rule.verdict == Some(crate::ruleset::Verdict::Drop),
            });
        }
    }
    Ok(out)
}

/// Whether prefix set `set` of our table holds `addr`, asked of the
/// kernel's own lookup (one GETSETELEM, O(log n): never a listing).
pub fn set_holds(set: &str, addr: std::net::IpAddr) -> Result<bool, NftError> {
    let key = match addr {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    Ok(verify::lookup(&mut socket::Socket::open()?, set, &key)?.is_some())
}

/// The ruleset generation id, which every committed transaction changes.
pub fn generation() -> Result<u32, NftError> {
    readback::generation(&mut socket::Socket::open()?)
}

/// Every chain of all other tables as (family, table, chain), read-only.
pub fn list_chain_names() -> Result<Vec<(String, String, String)>, NftError> {
    readback::chain_names(&mut socket::Socket::open()?)
}

/// Base chains of all other tables (read-only).
pub fn list_base_chains() -> Result<Vec<BaseChain>, NftError> {
    readback::base_chains(&mut socket::Socket::open()?)
}
