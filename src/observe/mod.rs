//! What the firewall is doing, read back for an operator: the kernel's
//! counters named by the profile line each rule comes from, the policy
//! drops, the bans, and what the state records say of the last apply.
//! Read-only: nothing here changes the kernel or the state directory (not
//! even the overdue-apply rollback `status` performs).
//!
//! [`snapshot`] gathers, [`metrics`] renders it for Prometheus, [`http`]
//! serves it. [`log`] names logged packets by their profile line, from
//! NFLOG or from the kernel log ([`kernlog`] parses its lines, [`journal`]
//! reads them with journalctl); [`summary`] ranks them.

pub mod http;
pub mod journal;
pub mod kernlog;
pub mod log;
pub mod metrics;
pub mod rules;
pub mod summary;

use std::collections::BTreeSet;

use thiserror::Error;

use crate::nft::counters::{Counted, Counter};
use crate::nft::{self, NftError, FULL_READ_MAX};
use crate::ruleset::{Policy, Ruleset, SetKind, Verdict};
use crate::state::{Dirs, Known, StateError};

#[derive(Debug, Error)]
pub enum ObserveError {
    #[error("reading the firewall's counters: {0}")]
    Kernel(#[from] NftError),
    #[error("reading fwharden's state records: {0}")]
    State(#[from] StateError),
}

/// What table `inet fwharden` holds, judged against the state records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelState {
    Absent,
    Confirmed,
    /// The pending apply's ruleset, its escape hatch open or expired.
    Pending,
    /// Neither the confirmed nor the pending ruleset (or not fwharden's).
    Drift,
}

impl KernelState {
    pub const ALL: [KernelState; 4] = [
        KernelState::Absent,
        KernelState::Confirmed,
        KernelState::Pending,
        KernelState::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KernelState::Absent => "absent",
            KernelState::Confirmed => "confirmed",
            KernelState::Pending => "pending",
            KernelState::Drift => "drift",
        }
    }
}

/// How the last apply ended, as the state records tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyResult {
    Pending,
    Confirmed,
    RolledBack,
}

impl ApplyResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyResult::Pending => "pending",
            ApplyResult::Confirmed => "confirmed",
            ApplyResult::RolledBack => "rolled-back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastApply {
    pub profile: String,
    pub result: ApplyResult,
    /// When it was applied (pending), confirmed, or rolled back.
    pub at_ms: u64,
}

/// The counters of the kernel rules that share one profile line, chain and
/// action, summed: one profile rule becomes several kernel rules (per
/// family, per protocol), and a series must be named once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSample {
    pub profile: String,
    pub chain: String,
    /// `vps-profile.toml` and `15`; empty for rules of the defaults.
    pub file: String,
    pub line: String,
    /// What the rule says (`allow ssh from admin`, `defaults: loopback`).
    pub rule: String,
    pub action: String,
    pub counter: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySample {
    pub profile: String,
    pub chain: String,
    pub policy: &'static str,
    pub counter: Counter,
}

/// Everything `metrics` reports, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub rules: Vec<RuleSample>,
    pub policies: Vec<PolicySample>,
    /// Elements of each ban set, by set name.
    pub ban_sets: Vec<(String, u64)>,
    /// Packets the ban table dropped, by chain.
    pub ban_drops: Vec<(String, Counter)>,
    pub kernel: KernelState,
    pub pending_deadline_ms: Option<u64>,
    pub last_apply: Option<LastApply>,
    /// The temporary openings (`fwharden open`) the kernel holds.
    pub openings: Vec<crate::ruleset::openings::Opening>,
}

/// Reads the kernel and the state records. Big prefix sets of a known
/// ruleset are checked by sampled lookups, never listed, so a scrape
/// costs the same with a million-prefix blocklist as without.
pub fn snapshot(dirs: &Dirs) -> Result<Snapshot, ObserveError> {
    let confirmed = dirs.confirmed()?;
    let pending = dirs.pending()?;
    let rolled_back = dirs.rolled_back()?;
    let known = Known::new(pending.as_ref(), confirmed.as_ref());
    let expired = known.expired();
    let candidates = known.all();
    let big = big_sets(&candidates);

    let kernel = match nft::read_table_sampled(&candidates) {
        Ok((None, _)) => KernelState::Absent,
        Ok((Some(r), _))
            if pending
                .as_ref()
                .is_some_and(|p| p.ruleset.as_ref() == Some(&r)) =>
        {
            KernelState::Pending
        }
        Ok((Some(r), _)) if expired == Some(&r) => KernelState::Pending,
        Ok((Some(r), _)) if confirmed.as_ref().is_some_and(|c| c.ruleset == r) => {
            KernelState::Confirmed
        }
        Ok((Some(_), _)) | Err(NftError::Foreign { .. }) => KernelState::Drift,
        Err(e) => return Err(e.into()),
    };

    // A table fwharden would not have written has no profile lines to
    // name its counters by: it is reported as drift, without counters.
    let observed = match nft::read_counters(&big) {
        Ok(o) => Some(o),
        Err(NftError::Foreign { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let (mut rules, mut policies, mut ban_drops) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(main) = observed.as_ref().and_then(|o| o.main.as_ref()) {
        (rules, policies) = samples(main);
    }
    let mut ban_sets = Vec::new();
    if let Some(b) = observed.as_ref().and_then(|o| o.bans.as_ref()) {
        ban_drops = dropped_by_bans(b);
        let state = nft::ban_state()?;
        for s in &b.ruleset.sets {
            if let SetKind::Bans { .. } = s.kind {
                let n = state
                    .as_ref()
                    .map_or(0, |st| st.bans.iter().filter(|x| x.set == s.name).count());
                ban_sets.push((s.name.clone(), n as u64));
            }
        }
    }

    // Read like the bans: a scrape on a host without opening sets (an
    // older table) has none.
    let openings = nft::openings()?.unwrap_or_default();

    let last_apply = [
        pending.as_ref().map(|p| LastApply {
            profile: p.profile.clone(),
            result: ApplyResult::Pending,
            at_ms: p.applied_ms,
        }),
        confirmed.as_ref().map(|c| LastApply {
            profile: c.profile.clone(),
            result: ApplyResult::Confirmed,
            at_ms: c.confirmed_at.saturating_mul(1000),
        }),
        rolled_back.map(|r| LastApply {
            profile: r.profile,
            result: ApplyResult::RolledBack,
            at_ms: r.at_ms,
        }),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|l| l.at_ms);

    Ok(Snapshot {
        rules,
        policies,
        ban_sets,
        ban_drops,
        kernel,
        pending_deadline_ms: pending.map(|p| p.deadline_ms),
        last_apply,
        openings,
    })
}

/// The prefix sets of `candidates` too big to list at every read (their
/// elements say nothing about counters or logs).
pub(crate) fn big_sets(candidates: &[&Ruleset]) -> BTreeSet<String> {
    candidates
        .iter()
        .flat_map(|r| r.sets.iter())
        .filter(|s| matches!(&s.kind, SetKind::Prefixes(n) if n.len() > FULL_READ_MAX))
        .map(|s| s.name.clone())
        .collect()
}

/// The rules of table `inet fwharden` as the kernel holds them now (its
/// big prefix sets, as the state records know them, left unlisted), or
/// `None` when there is no table.
pub fn loaded_rules(dirs: &Dirs) -> Result<Option<Ruleset>, ObserveError> {
    let confirmed = dirs.confirmed()?;
    let pending = dirs.pending()?;
    let candidates: Vec<&Ruleset> = [
        pending.as_ref().and_then(|p| p.ruleset.as_ref()),
        confirmed.as_ref().map(|c| &c.ruleset),
    ]
    .into_iter()
    .flatten()
    .collect();
    let observed = nft::read_counters(&big_sets(&candidates))?;
    Ok(observed.main.map(|m| m.ruleset))
}

/// The rule and policy samples of table `inet fwharden`.
fn samples(t: &Counted) -> (Vec<RuleSample>, Vec<PolicySample>) {
    let profile = &t.ruleset.profile;
    let mut rules: Vec<RuleSample> = Vec::new();
    let mut policies = Vec::new();
    for chain in &t.ruleset.chains {
        let Some(counted) = t.counters.chain(&chain.name) else {
            continue;
        };
        if let Some(counter) = counted.policy {
            policies.push(PolicySample {
                profile: profile.clone(),
                chain: chain.name.clone(),
                policy: match chain.policy {
                    Policy::Accept => "accept",
                    Policy::Drop => "drop",
                },
                counter,
            });
        }
        for (rule, counter) in chain.rules.iter().zip(&counted.rules) {
            let Some(counter) = *counter else { continue };
            let (file, line, what) = origin(&rule.comment);
            let action = match rule.verdict {
                Some(Verdict::Accept) => "accept",
                Some(Verdict::Drop) => "drop",
                Some(Verdict::Reject(_)) => "reject",
                None => "continue",
            };
            match rules.iter_mut().find(|s| {
                s.chain == chain.name
                    && s.file == file
                    && s.line == line
                    && s.rule == what
                    && s.action == action
            }) {
                Some(s) => s.counter += counter,
                None => rules.push(RuleSample {
                    profile: profile.clone(),
                    chain: chain.name.clone(),
                    file,
                    line,
                    rule: what,
                    action: action.into(),
                    counter,
                }),
            }
        }
    }
    (rules, policies)
}

fn dropped_by_bans(b: &Counted) -> Vec<(String, Counter)> {
    let mut out = Vec::new();
    for chain in &b.ruleset.chains {
        let Some(counted) = b.counters.chain(&chain.name) else {
            continue;
        };
        let mut sum = Counter::default();
        for (rule, c) in chain.rules.iter().zip(&counted.rules) {
            if let (Some(Verdict::Drop), Some(c)) = (rule.verdict, c) {
                sum += *c;
            }
        }
        out.push((chain.name.clone(), sum));
    }
    out
}

/// A rule comment `vps-profile.toml:15 allow ssh from admin` as its file,
/// line and words; a comment without a `file:line` head (the defaults,
/// the escape hatch) is all words.
pub fn origin(comment: &str) -> (String, String, String) {
    if let Some((head, rest)) = comment.split_once(' ') {
        if let Some((file, line)) = head.rsplit_once(':') {
            if !file.is_empty() && !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) {
                return (file.into(), line.into(), rest.into());
            }
        }
    }
    (String::new(), String::new(), comment.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_names_its_profile_line_or_is_all_words() {
        assert_eq!(
            origin("vps-profile.toml:15 allow ssh from admin"),
            (
                "vps-profile.toml".into(),
                "15".into(),
                "allow ssh from admin".into()
            )
        );
        assert_eq!(
            origin("defaults: loopback"),
            (String::new(), String::new(), "defaults: loopback".into())
        );
    }
}
