//! `rollback --to`: which confirmed ruleset of the history (see
//! `state::history`) to load again. Loading it is an apply like any other
//! (see `ops`): the lockout guard, the escape hatch, the timer, the
//! watcher and the confirm; unconfirmed, the ruleset confirmed now comes
//! back.

use super::RollbackError;
use crate::state::{Dirs, HistoryEntry, StateError};

/// Which entry of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The one confirmed before the newest: undoes the last confirm.
    Previous,
    /// Entry N, as `fwharden history` numbers it.
    Entry(u64),
}

impl std::str::FromStr for Pick {
    type Err = String;

    fn from_str(s: &str) -> Result<Pick, String> {
        match s {
            "previous" => Ok(Pick::Previous),
            n => n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .map(Pick::Entry)
                .ok_or_else(|| {
                    format!("{s:?} is neither `previous` nor an entry number of `fwharden history`")
                }),
        }
    }
}

impl std::fmt::Display for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pick::Previous => write!(f, "previous"),
            Pick::Entry(n) => write!(f, "{n}"),
        }
    }
}

/// The entry `pick` names, with its ruleset. A damaged entry is never
/// loaded: the error names its file.
pub fn pick(dirs: &Dirs, pick: Pick) -> Result<HistoryEntry, RollbackError> {
    let id = match pick {
        Pick::Entry(id) => id,
        Pick::Previous => {
            let listed = dirs.history()?;
            match listed.get(1) {
                Some(l) => l.id,
                None => {
                    return Err(RollbackError::NotInHistory {
                        wanted: "confirmed before the newest".into(),
                        state: dirs.state.clone(),
                        kept: listed.len(),
                    })
                }
            }
        }
    };
    match dirs.history_entry(id) {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Err(RollbackError::NotInHistory {
            wanted: format!("number {id}"),
            state: dirs.state.clone(),
            kept: dirs.history()?.len(),
        }),
        Err(StateError::Mismatch { path } | StateError::Corrupt { path, .. }) => {
            Err(RollbackError::HistoryDamaged { path })
        }
        Err(e) => Err(e.into()),
    }
}
