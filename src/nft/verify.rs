//! Proof, after a commit, that the kernel holds the ruleset that was sent,
//! at a cost that grows with the ruleset's structure and not with the
//! square of its set elements.
//!
//! Reading a set back is the expensive part: the kernel's element dump
//! (nf_tables_dump_set) walks the set from its first element again for
//! every netlink message it fills, skipping what earlier messages carried,
//! so listing n elements costs O(n²): 68 s for a million here. So:
//! - Chains, rules, set definitions and every set of at most
//!   [`FULL_READ_MAX`] prefixes are read back in full and compared.
//! - A larger prefix set is proven by the generation id instead. Every
//!   committed transaction moves the generation by exactly one
//!   (nf_tables_commit: `while (++base_seq == 0);`), and a transaction
//!   goes in whole or not at all. If the generation right after our commit
//!   is the one before it plus one, and the table is then read at that
//!   same generation, no other transaction ran in between: the kernel
//!   holds exactly the elements our batch carried, each one acknowledged.
//!   What is left to prove is that those elements mean what the model
//!   says, which is the encoder's job; a sample of lookups checks it on
//!   the live set: the first and last address of evenly spread prefixes
//!   and the addresses just outside them, each asked of the kernel's own
//!   lookup (a GETSETELEM for one key, O(log n) in the set backend). The
//!   sample is bounded, so the whole check is linear in the structure.
//!   When the commit changed a big set's prefixes from a known ruleset
//!   (an element delta), the edges of every changed prefix (up to
//!   [`FOCUS_MAX`], spread beyond) are asked too: the prefixes added must
//!   be found, the ones taken away must not, and their neighbours must be
//!   what the model says. The lookups go out many to a datagram.
//! - When the generation moved after that, someone else committed in
//!   between. If every such commit only added or deleted elements of the
//!   ban sets of table `inet fwharden-bans` (fail2ban, CrowdSec), as a
//!   monitor subscribed right after our commit heard (see `monitor`), our
//!   table is still exactly what our commit left, and the proof stands;
//!   otherwise (or when the commit right after ours came before the
//!   monitor, or an event was lost) everything is read back in full.
//!   fwharden's own bans do not get here: they wait on the ban gate.
//!
//! `status --verify` reads every element on demand, at the O(n²) cost.

use nftnl::nftnl_sys::{self as sys, libc};
use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ruleset::{Family, Ruleset, SetKind};

use super::batch::FAMILY;
use super::intervals::prefix_range;
use super::monitor;
use super::obj;
use super::readback::{self, foreign, kernel, parse_as};
use super::socket::{RequestError, Socket};
use super::{ApplyReport, NftError};

/// Sets of at most this many prefixes are read back element by element
/// (a few messages, a few milliseconds); larger ones are proven by the
/// generation and sampled.
pub const FULL_READ_MAX: usize = 4096;

/// Prefixes sampled in each large set (four lookups each).
const SAMPLES: usize = 64;

/// Kernel lookups spent on each large set: its sampled prefixes' edges and
/// neighbours.
pub const LOOKUPS_PER_SET: usize = 4 * SAMPLES;

/// Changed prefixes of one set whose edges are looked up, at most.
pub const FOCUS_MAX: usize = 1024;

/// Lookups sent in one datagram.
const PIPELINE: usize = 256;

/// By set name, the prefixes a commit added or took away (see
/// [`crate::ruleset::Ruleset::changed_prefixes`]).
pub type Focus = std::collections::BTreeMap<String, Vec<ipnet::IpNet>>;

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The kernel holds the ruleset, at `generation`. `sampled` names the
    /// sets proven by generation and sample rather than read in full.
    Holds {
        generation: u32,
        sampled: Vec<String>,
    },
    /// It does not. `want` is what was compared with what was read, `got`:
    /// the expected ruleset, its large sets emptied when they were not
    /// listed. `lookup` says which sampled lookup disagreed, if one did.
    Differs {
        generation: u32,
        want: Box<Ruleset>,
        got: Option<Ruleset>,
        lookup: Option<String>,
    },
}

/// The generation that follows `g` (it skips 0).
pub fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// Checks that the kernel holds `expected`, right after the commit that
/// `report` describes.
pub fn verify(
    sock: &mut Socket,
    expected: &Ruleset,
    report: &ApplyReport,
) -> Result<Check, NftError> {
    let big: BTreeSet<String> = if report.exclusive {
        expected
            .sets
            .iter()
            .filter(|s| matches!(&s.kind, SetKind::Prefixes(n) if n.len() > FULL_READ_MAX))
            .map(|s| s.name.clone())
            .collect()
    } else {
        BTreeSet::new()
    };
    let heard = monitor::take(report.generation);
    let (generation, got) = readback::read_at_skipping(sock, &big)?;
    let only_bans = |m: monitor::Monitor| m.only_bans_until(generation, monitor::WAIT);
    if !big.is_empty() && generation != report.generation && !heard.is_some_and(only_bans) {
        // Someone committed after us, and not only bans (or we could not
        // hear it): the generation proves nothing now.
        let (generation, got) = readback::read_at(sock)?;
        return Ok(compare(expected, generation, got));
    }
    let hollow = without_elements(expected, &big);
    if got.as_ref() != Some(&hollow) {
        return Ok(compare(&hollow, generation, got));
    }
    for name in &big {
        let focus = report.focus.get(name).map_or(&[][..], Vec::as_slice);
        if let Some(detail) = sample(sock, expected, name, focus)? {
            return Ok(Check::Differs {
                generation,
                want: Box::new(hollow),
                got,
                lookup: Some(detail),
            });
        }
    }
    Ok(Check::Holds {
        generation,
        sampled: big.into_iter().collect(),
    })
}

fn compare(expected: &Ruleset, generation: u32, got: Option<Ruleset>) -> Check {
    if got.as_ref() == Some(expected) {
        Check::Holds {
            generation,
            sampled: Vec::new(),
        }
    } else {
        Check::Differs {
            generation,
            want: Box::new(expected.clone()),
            got,
            lookup: None,
        }
    }
}

/// `r` with the elements of the sets in `names` taken out, as
/// [`readback::read_at_skipping`] reads them.
fn without_elements(r: &Ruleset, names: &BTreeSet<String>) -> Ruleset {
    let mut out = Ruleset {
        profile: r.profile.clone(),
        table: r.table.clone(),
        sets: Vec::with_capacity(r.sets.len()),
        chains: r.chains.clone(),
        bans: r.bans.clone(),
    };
    for s in &r.sets {
        let mut s2 = crate::ruleset::Set {
            name: s.name.clone(),
            family: s.family,
            kind: SetKind::Prefixes(Vec::new()),
            comment: s.comment.clone(),
        };
        if !names.contains(&s.name) {
            s2.kind = s.kind.clone();
        }
        out.sets.push(s2);
    }
    out
}

/// Asks the kernel about the edges of evenly spread prefixes of set
/// `name`, and of the prefixes in `focus` (at most [`FOCUS_MAX`], spread);
/// `Some(detail)` names the first answer that disagrees.
fn sample(
    sock: &mut Socket,
    expected: &Ruleset,
    name: &str,
    focus: &[ipnet::IpNet],
) -> Result<Option<String>, NftError> {
    let Some(set) = expected.set(name) else {
        return Ok(None);
    };
    let SetKind::Prefixes(nets) = &set.kind else {
        return Ok(None);
    };
    let width = match set.family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 16,
    };
    let max = if width == 4 {
        u32::MAX.into()
    } else {
        u128::MAX
    };
    let ranges: Vec<(u128, u128)> = nets.iter().map(prefix_range).collect();
    let sampled = spread(ranges.len(), SAMPLES).into_iter().map(|i| ranges[i]);
    let changed = spread(focus.len(), FOCUS_MAX)
        .into_iter()
        .map(|i| prefix_range(&focus[i]));
    let mut keys = Vec::new();
    for (first, last) in sampled.chain(changed) {
        keys.extend([first, last]);
        keys.extend(first.checked_sub(1));
        if last < max {
            keys.push(last + 1);
        }
    }
    keys.sort_unstable();
    keys.dedup();
    for chunk in keys.chunks(PIPELINE) {
        let bytes: Vec<Vec<u8>> = chunk.iter().map(|&k| key_bytes(k, width)).collect();
        let answers = lookups_in(sock, crate::ruleset::TABLE_NAME, name, &bytes)?;
        for (&key, got) in chunk.iter().zip(answers) {
            let want = covering(&ranges, key).map(|(start, _)| start);
            if got != want {
                let show = |k: Option<u128>| match k {
                    Some(k) => addr(k, width).to_string(),
                    None => "nothing".into(),
                };
                return Ok(Some(format!(
                    "set {name}: the kernel's lookup of {} finds {}, the model says {}",
                    addr(key, width),
                    show(got),
                    show(want)
                )));
            }
        }
    }
    Ok(None)
}

/// The table as [`readback::read_at`] would read it, but a prefix set of
/// more than [`FULL_READ_MAX`] prefixes in one of `candidates` is not
/// listed: it is filled in from the first candidate whose sampled lookups
/// the kernel answers alike, and left empty (so equal to no candidate)
/// when none does. For `status`, which has no generation to prove with:
/// it tells which known ruleset the kernel holds, at a bounded cost.
pub fn read_sampled(
    sock: &mut Socket,
    candidates: &[&Ruleset],
) -> Result<(u32, Option<Ruleset>, Vec<String>), NftError> {
    let big: BTreeSet<String> = candidates
        .iter()
        .flat_map(|r| r.sets.iter())
        .filter(|s| matches!(&s.kind, SetKind::Prefixes(n) if n.len() > FULL_READ_MAX))
        .map(|s| s.name.clone())
        .collect();
    let (generation, mut got) = readback::read_at_skipping(sock, &big)?;
    let mut sampled = Vec::new();
    if let Some(table) = &mut got {
        for set in &mut table.sets {
            if !big.contains(&set.name) {
                continue;
            }
            for c in candidates {
                let Some(known) = c.set(&set.name) else {
                    continue;
                };
                if known.family == set.family && sample(sock, c, &set.name, &[])?.is_none() {
                    set.kind = known.kind.clone();
                    sampled.push(set.name.clone());
                    break;
                }
            }
        }
    }
    Ok((generation, got, sampled))
}

/// `count` indexes spread evenly over `0..len`, the first and last included.
fn spread(len: usize, count: usize) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    let mut out: Vec<usize> = (0..count).map(|i| i * (len - 1) / (count - 1)).collect();
    out.dedup();
    out
}

/// The sorted, non-overlapping range holding `key`.
fn covering(ranges: &[(u128, u128)], key: u128) -> Option<(u128, u128)> {
    let after = ranges.partition_point(|&(first, _)| first <= key);
    let (first, last) = *ranges.get(after.checked_sub(1)?)?;
    (first <= key && key <= last).then_some((first, last))
}

fn key_bytes(v: u128, width: usize) -> Vec<u8> {
    v.to_be_bytes()[16 - width..].to_vec()
}

fn addr(v: u128, width: usize) -> IpAddr {
    if width == 4 {
        IpAddr::V4((v as u32).into())
    } else {
        IpAddr::V6(v.into())
    }
}

/// The kernel's own answer for one key of an interval set: the first key
/// of the range holding it, or `None`. A GETSETELEM request without
/// NLM_F_DUMP asks the set backend's `get` (nft_rbtree_get), which looks
/// the key up as the packet path does and answers with the start element
/// of its range, or ENOENT.
pub(super) fn lookup(sock: &mut Socket, set: &str, key: &[u8]) -> Result<Option<u128>, NftError> {
    lookup_in(sock, crate::ruleset::TABLE_NAME, set, key)
}

/// Like [`lookup`], in set `set` of table `inet <table>`. A lookup is no
/// dump: it is answered whole, whatever commits run beside it.
pub(super) fn lookup_in(
    sock: &mut Socket,
    table: &str,
    set: &str,
    key: &[u8],
) -> Result<Option<u128>, NftError> {
    let answers = lookups_in(sock, table, set, &[key.to_vec()])?;
    Ok(answers.into_iter().next().flatten())
}

/// [`lookup_in`] of many keys, in one datagram (see
/// [`Socket::pipelined`]); the answers in the keys' order.
fn lookups_in(
    sock: &mut Socket,
    table: &str,
    set: &str,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<u128>>, NftError> {
    let requests: Vec<obj::Set> = keys
        .iter()
        .map(|key| {
            let s = obj::Set::new();
            s.set_str(sys::NFTNL_SET_TABLE, table);
            s.set_str(sys::NFTNL_SET_NAME, set);
            s.add_elem(key, false, &[]);
            s
        })
        .collect();
    let builds: Vec<_> = requests
        .iter()
        .map(|s| {
            move |nlh| {
                // SAFETY: `pipelined` passes the header of the message it
                // is building, in a buffer of `nft_nlmsg_maxsize()` bytes;
                // a table and set name and one key of at most 16 bytes fit.
                unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.as_ptr()) }
            }
        })
        .collect();
    let answers = sock
        .pipelined(libc::NFT_MSG_GETSETELEM as u16, FAMILY, builds)
        .map_err(|e| kernel(&format!("looking up elements of set {set}"), e))?;
    answers.into_iter().map(|r| answer(set, r)).collect()
}

/// The first key of the range a lookup's answer names, `None` for ENOENT.
fn answer(
    set: &str,
    replies: Result<Vec<Vec<u8>>, RequestError>,
) -> Result<Option<u128>, NftError> {
    let replies = match replies {
        Ok(r) => r,
        Err(RequestError::Kernel(libc::ENOENT, _)) => return Ok(None),
        Err(e) => return Err(kernel(&format!("looking up an element of set {set}"), e)),
    };
    let what = || foreign(format!("set {set}"), "a lookup's answer did not parse");
    let reply = replies.first().ok_or_else(what)?;
    let parsed = parse_as!(reply, Set, nftnl_set_elems_nlmsg_parse).ok_or_else(what)?;
    let elems = parsed.elems();
    let k = &elems.first().ok_or_else(what)?.key;
    Ok(Some(
        k.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_both_ends_and_stays_bounded() {
        assert_eq!(spread(3, 64), [0, 1, 2]);
        let s = spread(1_000_000, 64);
        assert_eq!(s.len(), 64);
        assert_eq!((s[0], s[63]), (0, 999_999));
    }

    #[test]
    fn covering_finds_the_range_or_none() {
        let r = [(5, 5), (6, 6), (10, 20)];
        assert_eq!(covering(&r, 4), None);
        assert_eq!(covering(&r, 6), Some((6, 6)));
        assert_eq!(covering(&r, 15), Some((10, 20)));
        assert_eq!(covering(&r, 21), None);
    }

    #[test]
    fn generations_skip_zero() {
        assert_eq!(next_generation(7), 8);
        assert_eq!(next_generation(u32::MAX), 1);
    }
}
