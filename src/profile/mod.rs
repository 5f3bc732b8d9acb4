//! Profiles: finding them by name, parsing TOML, validating, and resolving
//! the extends chain into one checked [`Profile`].
//!
//! Nothing here touches the kernel. An invalid profile never gets past
//! [`load`], so it can never change anything.

pub mod addr;
pub mod builtin;
pub mod diag;
pub mod lint;
pub mod lookup;
pub mod memo;
pub mod parse;
pub mod resolve;
mod shadow;
pub mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Serialize;

pub use diag::{Diagnostic, Severity};
pub use lookup::{Location, SearchPath};
pub use parse::{Action, ChainPolicy, ContainerPolicy, IcmpPolicy};

use crate::ruleset::{Family, PortRange, Protocol, Rate};

/// A validated profile, its extends chain merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub location: Location,
    pub description: String,
    /// Profile names from the root of the extends chain down to this one.
    pub lineage: Vec<String>,
    pub defaults: Defaults,
    /// `[bans]` with `enabled = true`, else `None`.
    pub bans: Option<BanPolicy>,
    /// Every group defined along the chain, resolved to prefixes.
    pub groups: BTreeMap<String, Group>,
    /// In file order, the parent's rules before the child's.
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub input: ChainPolicy,
    pub forward: ChainPolicy,
    pub output: ChainPolicy,
    pub established: bool,
    pub drop_invalid: bool,
    pub loopback: bool,
    pub icmp: IcmpPolicy,
    pub ping: Option<Rate>,
    pub log_drops: Option<Rate>,
    /// Where `log` statements send packets: `None`, the kernel log (the
    /// journal); `Some(group)`, NFLOG group `group`, read by `fwharden log`.
    pub nflog_group: Option<u16>,
    pub containers: ContainerPolicy,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            input: ChainPolicy::Drop,
            forward: ChainPolicy::Accept,
            output: ChainPolicy::Accept,
            established: true,
            drop_invalid: true,
            loopback: true,
            icmp: IcmpPolicy::Essential,
            ping: Some(Rate {
                count: 10,
                unit: crate::ruleset::RateUnit::Second,
                burst: 5,
            }),
            log_drops: Some(Rate {
                count: 5,
                unit: crate::ruleset::RateUnit::Minute,
                burst: 5,
            }),
            nflog_group: None,
            // Filter: a profile that says 6379 is only for the tunnel must
            // mean it for a Docker-published 6379 as well.
            containers: ContainerPolicy::Filter,
        }
    }
}

/// The ban sets' shape and who is never banned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanPolicy {
    /// The timeout of a ban added without one of its own.
    pub timeout_secs: u32,
    /// How many bans each set (IPv4, IPv6) holds.
    pub size: u32,
    /// Groups (of [`Profile::groups`]) whose sources a ban never drops.
    pub exempt: Vec<String>,
}

impl BanPolicy {
    pub const DEFAULT_TIMEOUT_SECS: u32 = 3600;
    pub const DEFAULT_SIZE: u32 = 65536;
}

/// A named source group: sorted, aggregated prefixes of both families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub prefixes: Vec<IpNet>,
    pub origin: Origin,
}

impl Group {
    /// The group's prefixes of `family`: a slice, not a filter, since
    /// IPv4 comes first (a million-prefix group is not walked to find
    /// that it has no IPv6 prefix).
    pub fn family(&self, family: Family) -> &[IpNet] {
        let v6 = self
            .prefixes
            .partition_point(|p| Family::of(p) == Family::Ipv4);
        match family {
            Family::Ipv4 => &self.prefixes[..v6],
            Family::Ipv6 => &self.prefixes[v6..],
        }
    }

    pub fn has(&self, family: Family) -> bool {
        !self.family(family).is_empty()
    }
}

/// Where something was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Origin {
    /// `vps-profile.toml:31`: the file name only, so output does not depend
    /// on where the profile is installed.
    pub fn short(&self) -> String {
        let name = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format!("{name}:{}", self.line)
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub ports: Ports,
    pub sources: Sources,
    pub interface: Option<String>,
    /// Per-source rate limit on new connections (allow rules only).
    pub limit: Option<Rate>,
    /// Log prefix, when the rule logs.
    pub log: Option<String>,
    pub origin: Origin,
    /// What the rule says, e.g. `allow ssh from admin, wg-net`.
    pub label: String,
}

/// Which transport ports a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// Every protocol and port (`allow = "all"`).
    All,
    /// Sorted, merged ranges per protocol; never empty.
    Some(BTreeMap<Protocol, Vec<PortRange>>),
}

/// Which sources a rule covers, family by family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    pub v4: SourceSide,
    pub v6: SourceSide,
}

impl Sources {
    pub fn side(&self, family: Family) -> &SourceSide {
        match family {
            Family::Ipv4 => &self.v4,
            Family::Ipv6 => &self.v6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSide {
    /// The rule does not match this family at all.
    None,
    /// Any address of this family.
    Any,
    /// Addresses in these groups (names in [`Profile::groups`]).
    Groups(Vec<String>),
}

/// The outcome of loading a profile: the profile when it is valid, and
/// every diagnostic found (warnings come with a valid profile too).
#[derive(Debug)]
pub struct Loaded {
    pub profile: Option<Profile>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// Finds, parses, validates and lints a profile.
pub fn load(spec: &str, search: &SearchPath) -> Loaded {
    load_with_memo(spec, search, None)
}

/// [`load`], with big list files parsed once and remembered in `memo`
/// (a directory) while they do not change: what `apply` does.
pub fn load_with_memo(spec: &str, search: &SearchPath, memo: Option<&Path>) -> Loaded {
    let mut diagnostics = Vec::new();
    let profile = resolve::resolve(spec, search, memo, &mut diagnostics);
    let profile = match profile {
        Some(p) if !diagnostics.iter().any(Diagnostic::is_error) => {
            lint::lint(&p, &mut diagnostics);
            Some(p)
        }
        _ => None,
    };
    Loaded {
        profile,
        diagnostics,
    }
}
