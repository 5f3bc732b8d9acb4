//! The kernel's packet and byte counters of fwharden's tables, read beside
//! the model and never inside it: a counter moves with every packet, so a
//! model carrying one would differ from itself on each read-back and every
//! check of "the kernel holds what was meant" would fail.
//!
//! Rule counters are the `counter` expressions the compiler puts in a rule
//! (NFTNL_EXPR_CTR_PACKETS/BYTES, as `nft list` prints them). Policy
//! counters are the base chain's own statistics (NFTA_CHAIN_COUNTERS):
//! the kernel's `nft_do_chain` adds a packet to them only when it falls
//! off the end of the base chain to the policy, so for a chain with a drop
//! policy they count exactly the policy's drops. They exist only when the
//! chain was created with them, which [`super::batch`] does.

use std::collections::BTreeSet;
use std::ffi::c_void;

use nftnl::nftnl_sys as sys;

use crate::ruleset::bans::BAN_TABLE;
use crate::ruleset::{Ruleset, TABLE_NAME};

use super::obj;
use super::readback;
use super::socket::Socket;
use super::NftError;

/// Packets and bytes a counter has seen since its rule or chain was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Counter {
    fn add_assign(&mut self, o: Counter) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// The counters of one chain, in the order of its model rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainCounters {
    pub name: String,
    /// Packets that reached the chain's policy; `None`: the chain was
    /// created without statistics (loaded by `nft -f`, or by an older
    /// fwharden).
    pub policy: Option<Counter>,
    /// One entry per rule of the model's chain, `None` for a rule without
    /// a `counter`.
    pub rules: Vec<Option<Counter>>,
    /// The kernel's handle of each of those rules, in the same order: what
    /// a trace names a rule by.
    pub handles: Vec<u64>,
}

/// The counters of one table, chain by chain as the model lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounters {
    pub chains: Vec<ChainCounters>,
}

impl TableCounters {
    pub fn chain(&self, name: &str) -> Option<&ChainCounters> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub(super) fn add_chain(&mut self, c: &obj::Chain) {
        let policy =
            (c.is_set(sys::NFTNL_CHAIN_PACKETS) && c.is_set(sys::NFTNL_CHAIN_BYTES)).then(|| {
                Counter {
                    packets: c.get_u64(sys::NFTNL_CHAIN_PACKETS),
                    bytes: c.get_u64(sys::NFTNL_CHAIN_BYTES),
                }
            });
        self.chains.push(ChainCounters {
            name: c.get_str(sys::NFTNL_CHAIN_NAME),
            policy,
            rules: Vec::new(),
            handles: Vec::new(),
        });
    }

    /// Records the counter of the next rule of `chain` (read back in order).
    pub(super) fn add_rule(&mut self, chain: &str, r: &obj::Rule) {
        if let Some(c) = self.chains.iter_mut().find(|c| c.name == chain) {
            c.rules.push(rule_counter(r));
            c.handles.push(r.get_u64(sys::NFTNL_RULE_HANDLE));
        }
    }
}

/// A table as the kernel holds it now, with its counters.
#[derive(Debug, Clone)]
pub struct Counted {
    pub ruleset: Ruleset,
    pub counters: TableCounters,
}

/// Table `inet fwharden` and the ban table with their counters, read at
/// one ruleset generation.
#[derive(Debug, Clone)]
pub struct Observed {
    pub main: Option<Counted>,
    pub bans: Option<Counted>,
}

/// Reads both tables and their counters. The elements of the prefix sets
/// named in `skip` are not listed (the counters need none, and a big set
/// costs the kernel O(n²) to list): those sets read back empty.
pub fn read(sock: &mut Socket, skip: &BTreeSet<String>) -> Result<Observed, NftError> {
    // Counters move without a commit; the rules they belong to do not. A
    // read that spans a commit may pair one ruleset's counters with
    // another's rules: read again until one generation holds throughout.
    const TRIES: usize = 20;
    for attempt in 0..TRIES {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(6)));
        }
        let before = readback::generation(sock)?;
        let read = (|| {
            let main = readback::read_counted(sock, TABLE_NAME, skip)?;
            let bans = readback::read_counted(sock, BAN_TABLE, &BTreeSet::new())?;
            Ok::<_, NftError>(Observed {
                main: main.map(|(ruleset, counters)| Counted { ruleset, counters }),
                bans: bans.map(|(ruleset, counters)| Counted { ruleset, counters }),
            })
        })();
        match read {
            Err(NftError::Protocol { op: "dump", .. }) => continue,
            Err(e) => return Err(e),
            Ok(o) if readback::generation(sock)? == before => return Ok(o),
            Ok(_) => continue,
        }
    }
    Err(NftError::Protocol {
        op: "dump",
        detail: format!(
            "the ruleset changed during each of {TRIES} reads of its counters; run the command again"
        ),
    })
}

/// The values of the rule's `counter` expression, if it has one.
fn rule_counter(r: &obj::Rule) -> Option<Counter> {
    /// Called by `nftnl_expr_foreach` only, with the `data` given to it
    /// below and each expression of the rule.
    unsafe extern "C" fn each(e: *mut sys::nftnl_expr, data: *mut c_void) -> i32 {
        // SAFETY: `data` is the `Option<Counter>` below, alive and not
        // otherwise referenced during the foreach; `e` is a live
        // expression of the rule. The getters return 0 for an absent
        // attribute, and libnftnl's "name" is a NUL-terminated string.
        unsafe {
            let out = &mut *data.cast::<Option<Counter>>();
            let name = sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16);
            if !name.is_null() && std::ffi::CStr::from_ptr(name).to_bytes() == b"counter" {
                *out = Some(Counter {
                    packets: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_CTR_PACKETS as u16),
                    bytes: sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_CTR_BYTES as u16),
                });
            }
        }
        0
    }
    let mut out: Option<Counter> = None;
    // SAFETY: the rule is live; the callback runs only during the call,
    // while `out` lives.
    unsafe {
        sys::nftnl_expr_foreach(
            r.as_ptr(),
            Some(each),
            (&mut out as *mut Option<Counter>).cast::<c_void>(),
        )
    };
    out
}
