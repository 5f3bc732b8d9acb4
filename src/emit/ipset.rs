//! Prefix sets as `ipset restore` input. Each set is filled under a
//! temporary name and then swapped in (`swap` is atomic, and iptables rules
//! keep pointing at the name), so reloading never leaves a set empty while
//! rules match on it. Meter sets become `hashlimit` tables instead
//! (see [`super::iptables`]), and hatch sets exist only in pending
//! rulesets, which are never emitted.
//!
//! The ban table's sets ([`crate::ruleset::bans`]) are `fwharden-ban_v4`,
//! `fwharden-ban_v6`, `fwharden-crowdsec_v4` and `fwharden-crowdsec_v6`:
//! `hash:ip` sets with the profile's ban timeout as their default timeout
//! and its size as `maxelem`, as the nftables ban sets are, filled by
//! fail2ban, CrowdSec or `ipset add`. They are only ever created (`create
//! -exist`), never flushed or swapped: a reload keeps every ban and its
//! time left, as an apply keeps the nftables ones. ipset refuses to
//! `create -exist` a set that exists with another timeout or size, as
//! fwharden refuses to change the nftables ones in place. The exempt sets
//! are prefix sets like a group's, `fwharden-exempt_v4`/`_v6`. The ban
//! table's names start with `fwharden-`, never `fwh-`, so no group's set
//! can take one (`fwh-` + the group's name).
//!
//! `hash:net` cannot hold a zero-length prefix (`0.0.0.0/0`): a set holding
//! one matches every address of its family, so the rules leave the match
//! out instead ([`is_everything`]) and the set is not written.

use std::fmt::Write;

use ipnet::IpNet;

use super::{quote, EmitError};
use crate::ruleset::{Family, Ruleset, Set, SetKind};

/// ipset's limit on a set name, NUL excluded (IPSET_MAXNAMELEN - 1).
const NAME_MAX: usize = 31;

/// One size for every set: `create -exist` fails on a set that exists with
/// other parameters, so a set that grows must not change them. ipset grows
/// the hash as elements come; the cap costs nothing until used.
const MAXELEM: usize = 1 << 24;

/// ipset's limit on a default timeout, in seconds (IPSET_MAX_TIMEOUT:
/// `(UINT_MAX >> 1) / MSEC_PER_SEC`; `ipset` says "out of range 0-2147483").
pub const TIMEOUT_MAX: u32 = 2_147_483;

/// Whose set a model set name is: the ruleset's (a group) or the ban
/// table's, which nftables keeps in another table and ipset in the same
/// single namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Profile,
    Bans,
}

impl Space {
    /// The ipset name of a model set: `fwh-admin_v4`, `fwharden-ban_v4`.
    pub fn name(self, set: &str) -> String {
        match self {
            Space::Profile => format!("fwh-{set}"),
            Space::Bans => format!("fwharden-{set}"),
        }
    }

    /// The name a set is filled under before the swap.
    fn staging_name(self, set: &str) -> String {
        match self {
            Space::Profile => format!("fwt-{set}"),
            Space::Bans => format!("fwharden-new-{set}"),
        }
    }
}

/// Whether the set matches every address of its family.
pub fn is_everything(set: &Set) -> bool {
    matches!(&set.kind, SetKind::Prefixes(nets) if nets.iter().any(|n| n.prefix_len() == 0))
}

/// `ipset restore` text for the ruleset's sets and its ban table's, or
/// `None` when there is no set to write.
pub fn restore_text(
    ruleset: &Ruleset,
    ban_table: Option<&Ruleset>,
) -> Result<Option<String>, EmitError> {
    let mut out = String::new();
    let mut refusals = Vec::new();
    let spaces = [(Some(ruleset), Space::Profile), (ban_table, Space::Bans)];
    for (ruleset, space) in spaces {
        for set in ruleset.iter().flat_map(|r| &r.sets) {
            // On to the next set: one run names every refusal.
            if let Err(refused) = write_set(&mut out, set, space) {
                refusals.push(refused);
            }
        }
    }
    match EmitError::gather(refusals) {
        Some(refused) => Err(refused),
        None => Ok((!out.is_empty()).then_some(out)),
    }
}

fn write_set(out: &mut String, set: &Set, space: Space) -> Result<(), EmitError> {
    let refuse = |why: String| EmitError::refused("ipset", quote::free_text(&set.comment), why);
    // Meter sets become hashlimit tables; hatch sets exist only in
    // pending rulesets, whose rules are refused.
    let contents = match &set.kind {
        SetKind::Prefixes(nets) if !is_everything(set) => Contents::Prefixes(nets),
        SetKind::Bans { timeout_secs, size } => Contents::Bans(*timeout_secs, *size),
        _ => return Ok(()),
    };
    if !quote::is_safe_name(&set.name) {
        return Err(refuse(format!(
            "the set name {:?} has bytes ipset cannot take",
            quote::free_text(&set.name)
        )));
    }
    let (live, staging) = (space.name(&set.name), space.staging_name(&set.name));
    if live.len().max(staging.len()) > NAME_MAX {
        return Err(refuse(format!(
            "the ipset name {live} is longer than ipset's {NAME_MAX} bytes; use a shorter group name"
        )));
    }
    let family = match set.family {
        Family::Ipv4 => "inet",
        Family::Ipv6 => "inet6",
    };
    let nets = match contents {
        Contents::Prefixes(nets) => nets,
        Contents::Bans(timeout_secs, size) => {
            let text = ban_set(&live, family, timeout_secs, size).map_err(refuse)?;
            let _ = writeln!(out, "# {}", quote::free_text(&set.comment));
            out.push_str(&text);
            return Ok(());
        }
    };
    if nets.len() > MAXELEM {
        return Err(refuse(format!(
            "{} prefixes are more than the {MAXELEM} this file gives a set",
            nets.len()
        )));
    }
    let spec = format!("hash:net family {family} maxelem {MAXELEM}");
    let _ = writeln!(out, "# {}", quote::free_text(&set.comment));
    let _ = writeln!(out, "create {live} {spec} -exist");
    let _ = writeln!(out, "create {staging} {spec} -exist");
    let _ = writeln!(out, "flush {staging}");
    for net in nets {
        let _ = writeln!(out, "add {staging} {net}");
    }
    let _ = writeln!(out, "swap {staging} {live}");
    let _ = writeln!(out, "destroy {staging}");
    Ok(())
}

enum Contents<'a> {
    Prefixes(&'a [IpNet]),
    /// Default timeout in seconds, most elements.
    Bans(u32, u32),
}

/// A ban set: created when missing, its bans never touched.
fn ban_set(live: &str, family: &str, timeout_secs: u32, size: u32) -> Result<String, String> {
    if timeout_secs > TIMEOUT_MAX {
        return Err(format!(
            "a ban timeout of {timeout_secs} s is more than ipset's {TIMEOUT_MAX} s (24 days); set a shorter [bans] timeout"
        ));
    }
    Ok(format!(
        "create {live} hash:ip family {family} timeout {timeout_secs} maxelem {size} -exist\n"
    ))
}
