//! `fwharden status`: what is confirmed, what is pending and where its
//! watcher lives, what the kernel holds (the escape hatch included), the
//! rollback attempts, other tables on the same hooks, and the exposure
//! audit in one line.

use serde::Serialize;

use crate::nft::{self, BaseChain, NftError};
use crate::rollback::liveness::WatcherState;
use crate::rollback::{placement, settle, Ports, RollbackError};
use crate::ruleset::openings::Opening;
use crate::ruleset::{hatch, Policy};
use crate::state::{now_ms, Attempt, Dirs, Known};

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub confirmed: Option<String>,
    /// fwharden is disabled (a confirmed `fwharden disable`): since when,
    /// and the profile `fwharden enable` loads again.
    pub disabled: Option<crate::state::Disabled>,
    pub pending: Option<PendingStatus>,
    /// `absent`, `disabled` (no table, as confirmed), `confirmed`,
    /// `pending`, `pending-disable` (no table, a disable waiting for its
    /// confirm), `pending-hatch-open`, `previous` (what the pending apply
    /// replaced), `drift`, or `unreadable: ...`.
    pub kernel: String,
    /// How the kernel's set elements were checked.
    pub elements: String,
    /// The escape hatch the kernel holds, in words; `None`: there is none.
    pub hatch: Option<String>,
    /// An overdue apply whose watcher was gone, found and rolled back by
    /// this very `status` (or why it could not be).
    pub overdue: Option<String>,
    /// The rollback attempts of the pending apply, or of the last one
    /// rolled back.
    pub attempts: Vec<Attempt>,
    /// Why the last rollback's attempts cannot be shown, when its record
    /// is unreadable.
    pub last_rollback: Option<String>,
    /// The confirmed or pending record is damaged: what, and what to do.
    pub damaged: Vec<String>,
    pub other_base_chains: Vec<BaseChainStatus>,
    /// Docker or Podman found here, and the warning when the loaded
    /// ruleset leaves their published ports uncovered.
    pub containers: Vec<crate::containers::Detected>,
    pub containers_warning: Option<String>,
    /// `fwharden audit` in one line: how many ports of each verdict under
    /// the loaded ruleset.
    pub exposure: String,
    /// What the loaded table allows, one entry per profile rule, with the
    /// kernel's counters; `None` without a table fwharden wrote.
    pub rules: Option<crate::observe::rules::RulesNow>,
    /// Why the rules could not be read, when they could not.
    pub rules_unreadable: Option<String>,
    /// The temporary openings (`fwharden open`) the kernel holds, each
    /// with the time it has left (`left_ms`).
    pub openings: Vec<Opening>,
    /// Why the openings could not be read, when they could not.
    pub openings_unreadable: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PendingStatus {
    pub profile: String,
    pub deadline_ms: u64,
    pub seconds_left: u64,
    pub watcher: Option<u32>,
    pub watcher_alive: bool,
    /// What the watcher is doing: `alive`, `stopped`, `frozen` or `gone`.
    pub watcher_state: WatcherState,
    /// Where the watcher lives: its own systemd unit or cgroup, or the
    /// caller's cgroup and why.
    pub watcher_lives: Option<String>,
    /// The live watcher's cgroup v2 group, read now from /proc.
    pub watcher_cgroup: Option<String>,
    /// The hatch the pending ruleset carries, or why it has none.
    pub hatch: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseChainStatus {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub hook: String,
    pub priority: i32,
    pub policy: String,
}

/// How `status` reads the kernel's set elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elements {
    /// Big sets by sampled lookups: bounded cost (see `nft::read_table_sampled`).
    Sampled,
    /// `--verify`: every element, at the kernel dump's O(n²) cost.
    Every,
}

pub fn status(ports: Ports, dirs: &Dirs, elements: Elements) -> Result<Status, RollbackError> {
    ports.kernel.generation()?;
    // A damaged record is reported, and the rest of the status still is:
    // what the kernel holds does not depend on it.
    let mut damaged = Vec::new();
    let mut overdue = None;
    let pending = match dirs.pending() {
        Err(e) => {
            damaged.push(e.to_string());
            None
        }
        Ok(_) => {
            overdue = match settle(ports, dirs, "status") {
                Ok(settled) => settled.map(|s| s.describe()),
                Err(e) => Some(format!(
                    "an apply is past its deadline and its watcher is not acting, but rolling it back failed: {e}; run `fwharden rollback`"
                )),
            };
            // Read again: the settling may have cleared it.
            dirs.pending().unwrap_or_else(|e| {
                damaged.push(e.to_string());
                None
            })
        }
    };
    let confirmed = dirs.confirmed().unwrap_or_else(|e| {
        damaged.push(e.to_string());
        None
    });
    let known = Known::new(pending.as_ref(), confirmed.as_ref());
    let expired = known.expired();
    let candidates = known.all();
    let (read, sampled) = match elements {
        Elements::Every => (nft::read_table(), Vec::new()),
        Elements::Sampled => match nft::read_table_sampled(&candidates) {
            Ok((table, sampled)) => (Ok(table), sampled),
            Err(e) => (Err(e), Vec::new()),
        },
    };
    let read = match read {
        Err(e @ NftError::Permission { .. }) => return Err(e.into()),
        other => other,
    };
    let elements = if sampled.is_empty() {
        "every element read".to_string()
    } else {
        format!(
            "set {} checked by {} sampled kernel lookups each, not listed (`status --verify` lists every element, at O(n²) cost)",
            sampled.join(", "),
            nft::LOOKUPS_PER_SET
        )
    };
    // A damaged marker is reported; the kernel is judged as if enabled.
    let disabled = dirs.disabled().unwrap_or_else(|e| {
        damaged.push(e.to_string());
        None
    });
    let kernel = match &read {
        Ok(None) if pending.as_ref().is_some_and(|p| p.ruleset.is_none()) => {
            "pending-disable".to_string()
        }
        Ok(None) if disabled.is_some() => "disabled".into(),
        Ok(None) => "absent".into(),
        Ok(Some(r))
            if pending
                .as_ref()
                .is_some_and(|p| p.ruleset.as_ref() == Some(r)) =>
        {
            "pending".into()
        }
        Ok(Some(r)) if expired == Some(r) && hatch::find(r).is_some() => {
            "pending-hatch-open".into()
        }
        // Disabled, the confirmed state is no table at all.
        Ok(Some(r))
            if disabled.is_none() && confirmed.as_ref().is_some_and(|c| c.ruleset == *r) =>
        {
            "confirmed".into()
        }
        // Rolled back, but the record could not be updated (a full disk):
        // say what the kernel holds, not what the record failed to say.
        Ok(Some(r))
            if pending
                .as_ref()
                .is_some_and(|p| p.previous.as_ref() == Some(r)) =>
        {
            "previous".into()
        }
        Ok(Some(_)) | Err(NftError::Foreign { .. }) => "drift".into(),
        Err(e) => format!("unreadable: {e}"),
    };
    let hatch_now = read
        .as_ref()
        .ok()
        .and_then(|r| r.as_ref())
        .and_then(hatch::find)
        .map(|f| f.describe());
    // rolled-back.json only says which attempts to show: unreadable, it
    // costs that line, not the status.
    let mut last_rollback = None;
    let token = match &pending {
        Some(p) => Some(p.token.clone()),
        None => dirs
            .rolled_back()
            .unwrap_or_else(|e| {
                last_rollback = Some(format!("unreadable: {e}"));
                None
            })
            .map(|r| r.token),
    };
    let attempts = dirs
        .attempts()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| Some(&a.token) == token.as_ref())
        .collect();
    let chains: Vec<BaseChain> = nft::list_base_chains()?;
    let containers = crate::containers::detect()?;
    // A table we cannot read says nothing about coverage: `kernel` already
    // reports it.
    let containers_warning = match &read {
        Ok(r) => crate::containers::uncovered_warning(&containers, r.as_ref()),
        Err(_) => None,
    };
    let against = match &read {
        Ok(Some(r)) => crate::audit::Against::Ruleset(r),
        Ok(None) => crate::audit::Against::NoTable,
        Err(_) => crate::audit::Against::Unknown,
    };
    let (rules, rules_unreadable) = match crate::observe::rules::rules_now(&candidates) {
        Ok(r) => (r, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (openings, openings_unreadable) = match ports.kernel.openings() {
        Ok(o) => (o.unwrap_or_default(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let seen = crate::audit::gather();
    let exposure = crate::audit::summary(&crate::audit::judge(
        &seen.sockets,
        &seen.published,
        against,
    ));
    Ok(Status {
        exposure,
        rules,
        rules_unreadable,
        openings,
        openings_unreadable,
        confirmed: confirmed.map(|c| c.profile),
        disabled,
        pending: pending.map(|p| PendingStatus {
            seconds_left: p.deadline_ms.saturating_sub(now_ms()) / 1000,
            watcher_alive: ports.watchers.state(&p, &dirs.run) != WatcherState::Gone,
            watcher_state: ports.watchers.state(&p, &dirs.run),
            watcher_cgroup: p
                .watcher
                .filter(|_| ports.watchers.state(&p, &dirs.run) != WatcherState::Gone)
                .and_then(|w| placement::v2_group_of(&w.to_string())),
            hatch: match &p.ruleset {
                None => "none: a disable loads no fwharden table, which can lock nobody out".to_string(),
                Some(r) => hatch::find(r).map_or_else(
                    || "none: the apply found no single SSH client to let back in (not over SSH, or several candidate clients, all of them guarded)".to_string(),
                    |f| f.describe(),
                ),
            },
            watcher_lives: p.watcher_lives,
            profile: p.profile,
            deadline_ms: p.deadline_ms,
            watcher: p.watcher,
        }),
        kernel,
        elements,
        hatch: hatch_now,
        overdue,
        attempts,
        last_rollback,
        damaged,
        other_base_chains: chains
            .into_iter()
            .map(|c| BaseChainStatus {
                family: c.family,
                table: c.table,
                chain: c.chain,
                hook: c.hook,
                priority: c.priority,
                policy: match c.policy {
                    Some(Policy::Accept) => "accept",
                    Some(Policy::Drop) => "drop",
                    None => "",
                }
                .to_string(),
            })
            .collect(),
        containers,
        containers_warning,
    })
}
