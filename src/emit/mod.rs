//! Other firewalls' formats, from the ruleset model alone: files for
//! `iptables-restore`, `ip6tables-restore` and `ipset restore`, with a
//! small POSIX sh script that loads them. Like `render::nft`, these are
//! renderers: they read the [`Ruleset`] and nothing else, and `fwharden
//! probe`'s replica proves them with the same packets as the nftables
//! ruleset (tests/emit.rs).
//!
//! No silent approximation: a rule a format cannot express exactly is
//! refused with its comment (which starts with the profile's `file:line`),
//! unless the caller asked for [`Approximation::Stricter`]; then only
//! changes that never let more through are made, and each one is a warning
//! the caller prints and the files carry in their header.

pub mod ipset;
pub mod iptables;
pub mod quote;
pub mod ufw;

use thiserror::Error;

use crate::ruleset::Ruleset;

#[derive(Debug, Error)]
pub enum EmitError {
    #[error("{format} cannot express the rule \"{rule}\": {why}; nothing was written")]
    Refused {
        format: &'static str,
        rule: String,
        why: String,
    },
}

/// Refuses what this emitter does not write yet, rather than leave it out:
/// a ruleset without it would let more through than the profile says.
/// - The `containers` chain (published container ports, filtered on the
///   forward hook by their original port): iptables needs DOCKER-USER
///   rules matched through `-m conntrack --ctorigdstport`, returning where
///   nft accepts, which are not written yet.
/// - The ban table: its sets are nftables timeout sets that fail2ban and
///   CrowdSec fill; on iptables they would be ipsets with timeouts.
fn not_yet_expressible(ruleset: &Ruleset) -> Result<(), EmitError> {
    let refuse = |rule: &str, why: &str| EmitError::Refused {
        format: "iptables",
        rule: rule.into(),
        why: why.into(),
    };
    if ruleset.chains.iter().any(|c| c.name == "containers") {
        return Err(refuse(
            "published container ports (chain containers)",
            "emit does not write DOCKER-USER rules yet: on a host without containers set `containers = \"ignore\"` in [defaults]; with Docker or Podman, use nftables (`fwharden apply`)",
        ));
    }
    if ruleset.bans.is_some() {
        return Err(refuse(
            "[bans]",
            "emit does not write ban ipsets yet: remove [bans], or use nftables (`fwharden apply`)",
        ));
    }
    Ok(())
}

/// What to do with a rule the format cannot express exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approximation {
    /// Refuse the whole profile, naming the rule.
    Refuse,
    /// Write the closest rule that lets no more through, with a warning.
    Stricter,
}

/// One generated file: its name in the output directory, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub text: String,
    /// Whether the file is a script to run (mode 0755) or data (0644).
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Data,
    Script,
}

/// Everything one emit produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub files: Vec<File>,
    /// One line per approximation made; empty without `--approximate`.
    pub warnings: Vec<String>,
}

impl Emitted {
    pub fn file(&self, name: &str) -> Option<&File> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// The file names of the iptables format.
pub const IPSET_FILE: &str = "ipset.rules";
pub const IPV4_FILE: &str = "iptables.rules";
pub const IPV6_FILE: &str = "ip6tables.rules";
pub const LOAD_SCRIPT: &str = "load.sh";

/// The iptables format: the ipset file (when the ruleset has prefix
/// sets), one restore file per family, and `load.sh`.
pub fn iptables(ruleset: &Ruleset, approx: Approximation) -> Result<Emitted, EmitError> {
    not_yet_expressible(ruleset)?;
    let mut warnings = Vec::new();
    let sets = ipset::restore_text(ruleset)?;
    let v4 = iptables::restore_text(ruleset, crate::ruleset::Family::Ipv4, approx, &mut warnings)?;
    let v6 = iptables::restore_text(ruleset, crate::ruleset::Family::Ipv6, approx, &mut warnings)?;
    let header = iptables::header(ruleset, &warnings);
    let mut files = Vec::new();
    if let Some(sets) = &sets {
        files.push(File {
            name: IPSET_FILE.into(),
            text: format!("{header}{sets}"),
            kind: FileKind::Data,
        });
    }
    files.push(File {
        name: IPV4_FILE.into(),
        text: format!("{header}{v4}"),
        kind: FileKind::Data,
    });
    files.push(File {
        name: IPV6_FILE.into(),
        text: format!("{header}{v6}"),
        kind: FileKind::Data,
    });
    files.push(File {
        name: LOAD_SCRIPT.into(),
        text: iptables::load_script(ruleset, sets.is_some(), &header),
        kind: FileKind::Script,
    });
    Ok(Emitted { files, warnings })
}
