//! The rulesets the kernel may hold, as the records know them: the
//! pending apply's, the same with its escape hatch open (the hatch's
//! element expired in the kernel), and the confirmed one. `status` and
//! `metrics` tell which one the kernel holds, and check big sets against
//! them by sampled lookups instead of listing them.

use super::{Confirmed, Pending};
use crate::ruleset::{hatch, Ruleset};

pub struct Known<'a> {
    pending: Option<&'a Ruleset>,
    expired: Option<Ruleset>,
    confirmed: Option<&'a Ruleset>,
}

impl<'a> Known<'a> {
    pub fn new(pending: Option<&'a Pending>, confirmed: Option<&'a Confirmed>) -> Known<'a> {
        Known {
            pending: pending.and_then(|p| p.ruleset.as_ref()),
            expired: pending.and_then(|p| p.ruleset.as_ref()).map(hatch::expired),
            confirmed: confirmed.map(|c| &c.ruleset),
        }
    }

    /// The pending ruleset with its escape hatch open.
    pub fn expired(&self) -> Option<&Ruleset> {
        self.expired.as_ref()
    }

    /// Every known ruleset: pending, its open-hatch form, confirmed.
    pub fn all(&self) -> Vec<&Ruleset> {
        [self.pending, self.expired.as_ref(), self.confirmed]
            .into_iter()
            .flatten()
            .collect()
    }
}
