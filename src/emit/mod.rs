//! Other firewalls' formats, from the ruleset model alone: files for
//! `iptables-restore`, `ip6tables-restore` and `ipset restore`, with a
//! small POSIX sh script that loads them. Like `render::nft`, these are
//! renderers: they read the [`Ruleset`] and nothing else, and `fwharden
//! probe`'s replica proves them with the same packets as the nftables
//! ruleset (tests/emit.rs).
//!
//! No silent approximation: a rule a format cannot express exactly is
//! refused with its comment (which starts with the profile's `file:line`),
//! every such rule of the run in one [`EmitError::Refused`], unless the
//! caller asked for [`Approximation::Stricter`]; then only changes that
//! never let more through are made, and each one is a warning the caller
//! prints and the files carry in their header. Logging decides no
//! packet's fate, so a log prefix or rate a format cannot carry is always
//! such a warning, never a refusal.

mod fragments;
pub mod ipset;
pub mod iptables;
pub mod lockout;
pub mod placement;
pub mod quote;
pub mod safety;
pub mod ufw;

use thiserror::Error;

use crate::ruleset::Ruleset;

#[derive(Debug, Error)]
pub enum EmitError {
    /// Every rule the format cannot express: the first in the fields, the
    /// others in `also`, so one run names them all.
    #[error("{}", refused_text(.format, .rule, .why, .also))]
    Refused {
        format: &'static str,
        rule: String,
        why: String,
        also: Vec<Refusal>,
    },
}

/// One more refusal of the same emit: its rule (the profile's
/// `file:line`, then the rule's text) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub format: &'static str,
    pub rule: String,
    pub why: String,
}

fn refused_text(format: &str, rule: &str, why: &str, also: &[Refusal]) -> String {
    let mut text = format!("{format} cannot express the rule \"{rule}\": {why}");
    for r in also {
        text.push_str(&format!(
            "; {} cannot express the rule \"{}\" either: {}",
            r.format, r.rule, r.why
        ));
    }
    text.push_str("; nothing was written");
    text
}

impl EmitError {
    pub fn refused(format: &'static str, rule: String, why: String) -> EmitError {
        EmitError::Refused {
            format,
            rule,
            why,
            also: Vec::new(),
        }
    }

    /// Every refusal, in the order found.
    pub fn refusals(&self) -> Vec<Refusal> {
        let EmitError::Refused {
            format,
            rule,
            why,
            also,
        } = self;
        let mut all = vec![Refusal {
            format,
            rule: rule.clone(),
            why: why.clone(),
        }];
        all.extend(also.iter().cloned());
        all
    }

    /// The refusals of `errors` as one error, each once (the two families'
    /// files refuse the same rule alike); `None` when there is none.
    pub fn gather(errors: impl IntoIterator<Item = EmitError>) -> Option<EmitError> {
        let mut all: Vec<Refusal> = Vec::new();
        for r in errors.into_iter().flat_map(|e| e.refusals()) {
            if !all.contains(&r) {
                all.push(r);
            }
        }
        let mut rest = all.into_iter();
        let first = rest.next()?;
        Some(EmitError::Refused {
            format: first.format,
            rule: first.rule,
            why: first.why,
            also: rest.collect(),
        })
    }
}

impl crate::exit::Coded for EmitError {
    fn exit_code(&self) -> i32 {
        match self {
            EmitError::Refused { .. } => crate::exit::REFUSED,
        }
    }
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
    /// One line per approximation made: logging (always a warning, never
    /// a refusal), and with `--approximate` the stricter rules written.
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
/// sets or bans), one restore file per family, and `load.sh`. The
/// `containers` chain and the ban table's forward chain go under
/// `DOCKER-USER`, the ban table's sets are ipsets with timeouts (see
/// [`placement`] and [`ipset`]). The format approximates nothing a packet's
/// fate depends on, so `approx` changes nothing here: its one inexactness,
/// a log prefix too long for LOG, is always a warning (logging decides
/// nothing); the parameter keeps the two formats' calls alike.
pub fn iptables(ruleset: &Ruleset, _approx: Approximation) -> Result<Emitted, EmitError> {
    use crate::ruleset::Family;
    let ban_table = placement::ban_table(ruleset);
    let placed = placement::place(ruleset, ban_table.as_ref());
    let mut warnings = Vec::new();
    // Every refusal of the three files, so one run names them all.
    let sets = ipset::restore_text(ruleset, ban_table.as_ref());
    let v4 = iptables::restore_text(&placed, Family::Ipv4, &mut warnings);
    let v6 = iptables::restore_text(&placed, Family::Ipv6, &mut warnings);
    let (sets, v4, v6) = match (sets, v4, v6) {
        (Ok(sets), Ok(v4), Ok(v6)) => (sets, v4, v6),
        (sets, v4, v6) => {
            let errors = [sets.err(), v4.err(), v6.err()].into_iter().flatten();
            return Err(EmitError::gather(errors).expect("one of them failed"));
        }
    };
    let header = placement::header(ruleset, &warnings);
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
        text: placement::load_script(&placed, sets.is_some(), &header, &lockout::table(ruleset)),
        kind: FileKind::Script,
    });
    Ok(Emitted { files, warnings })
}
