//! What is allowed now, in words, with what each rule has seen: the
//! loaded table's rules described one line per profile rule
//! ([`crate::ruleset::describe`]) beside the kernel's counters of the
//! kernel rules each became, and the packets each chain's policy took.

use serde::Serialize;

use super::{big_sets, ObserveError};
use crate::nft::counters::{ChainCounters, Counter};
use crate::nft::{self, NftError};
use crate::ruleset::describe::{describe, Described};
use crate::ruleset::{Policy, Ruleset, SetKind};

/// One profile rule (or rule of the defaults) and its counters.
#[derive(Debug, Clone, Serialize)]
pub struct RuleNow {
    #[serde(flatten)]
    pub rule: Described,
    /// The rule in words: `allow 22/tcp from admin (2 prefixes)`.
    pub words: String,
    /// Packets and bytes its kernel rules matched since they were loaded.
    pub packets: u64,
    pub bytes: u64,
    /// New connections dropped for going over its per-source limit.
    pub over_limit_packets: Option<u64>,
}

/// What a chain's policy took: packets no rule decided.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyNow {
    pub chain: String,
    pub hook: String,
    pub policy: String,
    /// `None`: the chain was created without statistics (by an older
    /// fwharden, or by `nft -f`).
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RulesNow {
    pub profile: String,
    pub rules: Vec<RuleNow>,
    pub policies: Vec<PolicyNow>,
}

/// The loaded table's rules and counters, read at one generation; `None`
/// when there is no table, or one fwharden did not write (drift: there are
/// no profile lines to name its rules by). `known` are the rulesets the
/// kernel may hold: their big prefix sets are not listed (O(n²)), and
/// their sizes come from them.
pub fn rules_now(known: &[&Ruleset]) -> Result<Option<RulesNow>, ObserveError> {
    let big = big_sets(known);
    let main = match nft::read_counters(&big) {
        Ok(o) => o.main,
        Err(NftError::Foreign { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(mut counted) = main else {
        return Ok(None);
    };
    // The big sets read back empty: their sizes are the records'.
    for set in &mut counted.ruleset.sets {
        if !big.contains(&set.name) {
            continue;
        }
        let full = known
            .iter()
            .flat_map(|r| &r.sets)
            .find(|s| s.name == set.name && s.family == set.family);
        if let Some(
            full @ crate::ruleset::Set {
                kind: SetKind::Prefixes(_),
                ..
            },
        ) = full
        {
            set.kind = full.kind.clone();
        }
    }
    let ruleset = &counted.ruleset;
    let empty = ChainCounters::default();
    let rules = describe(ruleset)
        .into_iter()
        .map(|rule| {
            let chain = counted.counters.chain(&rule.chain).unwrap_or(&empty);
            let sum = |indices: &[usize]| {
                let mut total = Counter::default();
                for c in indices
                    .iter()
                    .filter_map(|&i| chain.rules.get(i).copied().flatten())
                {
                    total += c;
                }
                total
            };
            let seen = sum(&rule.rules);
            let over = (!rule.over_limit.is_empty()).then(|| sum(&rule.over_limit).packets);
            RuleNow {
                words: rule.words(),
                packets: seen.packets,
                bytes: seen.bytes,
                over_limit_packets: over,
                rule,
            }
        })
        .collect();
    let policies = ruleset
        .chains
        .iter()
        .map(|c| {
            let counter = counted.counters.chain(&c.name).and_then(|x| x.policy);
            PolicyNow {
                chain: c.name.clone(),
                hook: c.hook.as_str().to_string(),
                policy: match c.policy {
                    Policy::Accept => "accept",
                    Policy::Drop => "drop",
                }
                .to_string(),
                packets: counter.map(|x| x.packets),
                bytes: counter.map(|x| x.bytes),
            }
        })
        .collect();
    Ok(Some(RulesNow {
        profile: ruleset.profile.clone(),
        rules,
        policies,
    }))
}
