//! What an unconfirmed apply goes back to. Never "no fwharden table" by
//! accident: a new or emptied state directory (a reinstall, a wrong
//! `--state-dir`, a restored image, a damaged record moved away) says
//! nothing about the kernel, which may hold a confirmed table of
//! thousands of prefixes. Going back to "no table" then opens the host.
//!
//! So the target is, in order: no table when fwharden is disabled (the
//! operator confirmed that); the confirmed record; the target of the
//! pending apply this one replaces (it knew what came before it); else
//! what the kernel holds, read before the commit and written into the
//! pending record. "No table" only when the kernel holds none. A table
//! that cannot be read back as a fwharden ruleset (edited by hand) cannot
//! be put back: a timed apply is refused.
//!
//! The kernel read is the one the apply makes anyway when it has no
//! proven confirmed record (`nft::read_table_at`, a full dump: O(n²) in
//! the kernel for big sets, the same cost as any apply without a stamp),
//! so taking the target from it costs nothing more.

use std::borrow::Cow;

use super::ops::foreign_as_drift;
use crate::kernel::Kernel;
use crate::nft::NftError;
use crate::ruleset::{hatch, Ruleset};
use crate::state::{Confirmed, Disabled, Origin as Source, Pending};

/// What the kernel held when an apply read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Held {
    /// No table inet fwharden.
    Nothing,
    /// A table fwharden wrote, read back into the model.
    Table(Ruleset),
    /// A table that cannot be read back as one fwharden writes.
    Foreign { table: String, why: String },
}

impl Held {
    /// Reads the kernel's table; the generation it was read at.
    pub(super) fn read(kernel: &dyn Kernel) -> Result<(u32, Held), NftError> {
        match kernel.read_table_at() {
            Ok((g, None)) => Ok((g, Held::Nothing)),
            Ok((g, Some(r))) => Ok((g, Held::Table(r))),
            Err(NftError::Foreign { table, what, why }) => Ok((
                kernel.generation()?,
                Held::Foreign {
                    table,
                    why: format!("it holds {what}: {why}"),
                },
            )),
            Err(e) => Err(e),
        }
    }

    /// The table as the apply compares it: a foreign one is "not what we
    /// wrote" (see `foreign_as_drift`).
    /// Borrowed when the kernel holds fwharden's own table: a copy of a
    /// 100,000-prefix set took a delta 1 ms each time it was asked.
    pub(super) fn as_current(&self) -> Option<Cow<'_, Ruleset>> {
        match self {
            Held::Nothing => None,
            Held::Table(r) => Some(Cow::Borrowed(r)),
            Held::Foreign { table, why } => foreign_as_drift(NftError::Foreign {
                table: table.clone(),
                what: "a table".into(),
                why: why.clone(),
            })
            .ok()
            .flatten()
            .map(Cow::Owned),
        }
    }
}

/// What a rollback restores, and where that was learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub previous: Option<Ruleset>,
    pub source: Source,
}

/// No target can be had: the kernel's table cannot be put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknowable {
    pub table: String,
    pub why: String,
}

/// The rollback target of an apply, from the confirmed record, the pending
/// apply it replaces, and what the kernel holds (see the module comment).
pub(super) fn choose(
    confirmed: Option<&Confirmed>,
    disabled: Option<&Disabled>,
    replaced: Option<&Pending>,
    held: &Held,
) -> Result<Target, Unknowable> {
    if disabled.is_some() {
        return Ok(Target {
            previous: None,
            source: Source::Disabled,
        });
    }
    if let Some(c) = confirmed {
        return Ok(Target {
            previous: Some(c.ruleset.clone()),
            source: Source::Confirmed,
        });
    }
    if let Some(p) = replaced {
        return Ok(Target {
            previous: p.previous.clone(),
            source: Source::Replaced,
        });
    }
    match held {
        Held::Nothing => Ok(Target {
            previous: None,
            source: Source::NoTable,
        }),
        // An escape hatch belongs to a pending apply, and there is none.
        Held::Table(r) => Ok(Target {
            previous: Some(hatch::without_hatch(r)),
            source: Source::Kernel,
        }),
        Held::Foreign { table, why } => Err(Unknowable {
            table: table.clone(),
            why: why.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(profile: &str) -> Ruleset {
        Ruleset {
            profile: profile.into(),
            table: "fwharden".into(),
            sets: vec![],
            chains: vec![],
            bans: None,
        }
    }

    fn confirmed(profile: &str) -> Confirmed {
        Confirmed {
            profile: profile.into(),
            ruleset: ruleset(profile),
            confirmed_at: 0,
            seen: None,
            proven: false,
        }
    }

    fn pending(previous: Option<Ruleset>) -> Pending {
        Pending {
            profile: "new".into(),
            ruleset: Some(ruleset("new")),
            previous,
            previous_from: Source::Kernel,
            applied_ms: 0,
            deadline_ms: 0,
            token: "t".into(),
            watcher: None,
            watcher_lives: None,
            proven: false,
        }
    }

    #[test]
    fn with_no_state_the_kernels_table_is_the_target_not_nothing() {
        let t = choose(None, None, None, &Held::Table(ruleset("web"))).unwrap();
        assert_eq!(t.previous, Some(ruleset("web")));
        assert_eq!(t.source, Source::Kernel);
        let t = choose(None, None, None, &Held::Nothing).unwrap();
        assert_eq!((t.previous, t.source), (None, Source::NoTable));
    }

    #[test]
    fn the_confirmed_record_wins_then_the_replaced_apply() {
        let held = Held::Table(ruleset("kernel"));
        let t = choose(Some(&confirmed("web")), None, Some(&pending(None)), &held).unwrap();
        assert_eq!(t.previous, Some(ruleset("web")));
        // The replaced apply knew what came before it, even "no table".
        let t = choose(None, None, Some(&pending(None)), &held).unwrap();
        assert_eq!((t.previous, t.source), (None, Source::Replaced));
        let t = choose(None, None, Some(&pending(Some(ruleset("old")))), &held).unwrap();
        assert_eq!(t.previous, Some(ruleset("old")));
    }

    #[test]
    fn disabled_the_target_is_no_table_whatever_else_is_known() {
        let off = Disabled {
            profile: "web".into(),
            since: 0,
        };
        let held = Held::Table(ruleset("kernel"));
        let t = choose(Some(&confirmed("web")), Some(&off), None, &held).unwrap();
        assert_eq!((t.previous, t.source), (None, Source::Disabled));
    }

    #[test]
    fn a_table_edited_by_hand_is_no_target() {
        let held = Held::Foreign {
            table: "fwharden".into(),
            why: "a rule".into(),
        };
        let e = choose(None, None, None, &held).unwrap_err();
        assert_eq!(e.table, "fwharden");
        assert!(choose(Some(&confirmed("web")), None, None, &held).is_ok());
    }
}
