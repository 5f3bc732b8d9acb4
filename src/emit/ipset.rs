//! Prefix sets as `ipset restore` input. Each set is filled under a
//! temporary name and then swapped in (`swap` is atomic, and iptables rules
//! keep pointing at the name), so reloading never leaves a set empty while
//! rules match on it. Meter sets become `hashlimit` tables instead
//! (see [`super::iptables`]), and hatch sets exist only in pending
//! rulesets, which are never emitted.
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

/// The ipset name of a model set: `fwh-admin_v4`.
pub fn name(set: &str) -> String {
    format!("fwh-{set}")
}

/// The name a set is filled under before the swap.
fn staging_name(set: &str) -> String {
    format!("fwt-{set}")
}

/// Whether the set matches every address of its family.
pub fn is_everything(set: &Set) -> bool {
    matches!(&set.kind, SetKind::Prefixes(nets) if nets.iter().any(|n| n.prefix_len() == 0))
}

/// The prefix sets to write: those some rule can consult.
fn written(ruleset: &Ruleset) -> impl Iterator<Item = (&Set, &Vec<IpNet>)> {
    ruleset.sets.iter().filter_map(|s| match &s.kind {
        SetKind::Prefixes(nets) if !is_everything(s) => Some((s, nets)),
        _ => None,
    })
}

/// `ipset restore` text, or `None` when there is no set to write.
pub fn restore_text(ruleset: &Ruleset) -> Result<Option<String>, EmitError> {
    let mut out = String::new();
    for (set, nets) in written(ruleset) {
        let refuse = |why: String| EmitError::Refused {
            format: "ipset",
            rule: quote::free_text(&set.comment),
            why,
        };
        if !quote::is_safe_name(&set.name) {
            return Err(refuse(format!(
                "the set name {:?} has bytes ipset cannot take",
                quote::free_text(&set.name)
            )));
        }
        let (live, staging) = (name(&set.name), staging_name(&set.name));
        if live.len() > NAME_MAX {
            return Err(refuse(format!(
                "the ipset name {live} is longer than ipset's {NAME_MAX} bytes; use a shorter group name"
            )));
        }
        let family = match set.family {
            Family::Ipv4 => "inet",
            Family::Ipv6 => "inet6",
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
    }
    Ok((!out.is_empty()).then_some(out))
}
