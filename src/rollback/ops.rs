//! The operations behind apply, confirm, rollback, restore and status.

use std::io::Read;
use std::time::Duration;

use serde::Serialize;

use super::{guard, interlock, restore_previous, undo, watcher, RollbackError};
use crate::nft::{self, BaseChain, NftError};
use crate::render;
use crate::ruleset::{Policy, Ruleset};
use crate::state::{now, now_ms, ApplyLock, Confirmed, Dirs, Pending, Stamp};

/// How long confirm, rollback and restore wait for a running apply.
const LOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Seconds until the watcher restores the previous ruleset.
    pub timeout: u64,
    /// Confirm as soon as the read-back matches (automation).
    pub auto_confirm: bool,
    /// Apply even when the lockout guard refuses.
    pub force: bool,
    /// Show what would change, change nothing.
    pub dry_run: bool,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ApplyOutcome {
    /// The kernel already holds this ruleset, and it is confirmed.
    Unchanged { profile: String },
    /// Nothing was changed; `diff` is what would change.
    DryRun {
        profile: String,
        changed: bool,
        diff: String,
    },
    /// Loaded, waiting for `fwharden confirm` until `deadline_ms`.
    Pending {
        profile: String,
        deadline_ms: u64,
        token: String,
        watcher: u32,
    },
    /// Loaded and confirmed.
    Confirmed { profile: String },
}

impl ApplyOutcome {
    pub fn changed(&self) -> bool {
        match self {
            ApplyOutcome::Unchanged { .. } => false,
            ApplyOutcome::DryRun { changed, .. } => *changed,
            ApplyOutcome::Pending { .. } | ApplyOutcome::Confirmed { .. } => true,
        }
    }
}

/// A unified diff of two rulesets as `nft -f` text (empty: no difference).
pub fn diff(old: Option<&Ruleset>, new: Option<&Ruleset>) -> String {
    let text = |r: Option<&Ruleset>| r.map(render::nft_text).unwrap_or_default();
    let (a, b) = (text(old), text(new));
    if a == b {
        return String::new();
    }
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .header("kernel now", "after apply")
        .to_string()
}

fn token() -> String {
    let mut bytes = [0u8; 12];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if ok.is_err() {
        // Uniqueness is what matters, not secrecy: a token only tells one
        // apply from the next.
        bytes[..8].copy_from_slice(&now_ms().to_le_bytes());
        bytes[8..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn apply(
    dirs: &Dirs,
    new: &Ruleset,
    opts: &ApplyOptions,
) -> Result<ApplyOutcome, RollbackError> {
    // Ask the kernel before touching the state directory: without
    // CAP_NET_ADMIN the error that helps is "needs root or CAP_NET_ADMIN",
    // not "permission denied" on the root-only /var/lib/fwharden.
    let generation_now = nft::generation()?;
    if opts.dry_run {
        // Touches nothing: no state directory, no lock, no kernel write.
        let current = nft::read_table().or_else(foreign_as_drift)?;
        let diff = diff(current.as_ref(), Some(new));
        return Ok(ApplyOutcome::DryRun {
            profile: new.profile.clone(),
            changed: !diff.is_empty(),
            diff,
        });
    }
    interlock()?;
    dirs.ensure_all()?;
    let _lock = ApplyLock::try_take(&dirs.lock_path())?;
    let confirmed = dirs.confirmed()?;
    let pending = dirs.pending()?;
    let profile = new.profile.clone();
    // Nobody committed since the kernel was last read holding the
    // confirmed ruleset: it still does, no need to read it all back.
    let untouched = confirmed.as_ref().is_some_and(|c| {
        c.seen.is_some() && c.seen == Stamp::at(generation_now) && &c.ruleset == new
    });
    if untouched && pending.is_none() {
        return Ok(ApplyOutcome::Unchanged { profile });
    }
    // The generation the decisions below are based on: the transaction
    // commits only if nobody else wrote since (compare-and-swap). When
    // nobody has committed since the confirmed ruleset was last proven in
    // the kernel, it is what the kernel holds: no need to list (for big
    // sets, at O(n²)) what is already known.
    let known = confirmed
        .as_ref()
        .filter(|c| c.seen.is_some() && c.seen == Stamp::at(generation_now));
    let (generation, current) = match known {
        Some(c) => (generation_now, Some(c.ruleset.clone())),
        None => match nft::read_table_at() {
            Ok(read) => read,
            Err(e) => (nft::generation()?, foreign_as_drift(e)?),
        },
    };
    let settled = current.as_ref() == Some(new)
        && pending.is_none()
        && confirmed.as_ref().is_some_and(|c| &c.ruleset == new);
    if settled {
        return Ok(ApplyOutcome::Unchanged { profile });
    }
    if let Some(ssh) = guard::SshClient::from_env() {
        let interface = ssh.server.and_then(guard::interface_of);
        if let Err(why) = guard::check(new, &ssh, interface) {
            if !opts.force {
                return Err(RollbackError::Lockout(why));
            }
            eprintln!("fwharden: warning: --force: {why}");
        }
    }

    // From here on the pending record and its watcher exist before the
    // kernel changes, so a kill at any moment still ends in a rollback.
    let mut record = Pending {
        profile: profile.clone(),
        ruleset: new.clone(),
        previous: confirmed.map(|c| c.ruleset),
        applied_ms: now_ms(),
        deadline_ms: now_ms() + opts.timeout * 1000,
        token: token(),
        watcher: None,
    };
    dirs.save_pending(&record)?;
    let pid = match watcher::spawn(dirs, &record.token) {
        Ok(pid) => pid,
        Err(e) => {
            dirs.clear_pending()?;
            return Err(e);
        }
    };
    record.watcher = Some(pid);
    dirs.save_pending(&record)?;

    // A changed prefix list alone goes in as an element delta: the same
    // compare-and-swap, a fraction of the batch.
    let committed = match current.as_ref() {
        Some(old) if old.differs_only_in_elements(new) => nft::apply_delta(old, new, generation),
        _ => nft::apply_at(new, Some(generation)),
    };
    let report = match committed {
        Ok(report) => report,
        Err(e) => return Err(after_failed_commit(dirs, &record, current.as_ref(), e)),
    };
    let detail = match nft::verify(new, &report) {
        Ok(nft::Check::Holds { generation, .. }) => Ok(Stamp::at(generation)),
        Ok(nft::Check::Differs {
            want, got, lookup, ..
        }) => Err(lookup.unwrap_or_else(|| describe_difference(&want, got.as_ref()))),
        Err(e) => Err(describe_difference(new, foreign_as_drift(e)?.as_ref())),
    };
    let seen = match detail {
        Ok(seen) => seen,
        Err(detail) => {
            let restored = match undo(dirs, &record, "read-back mismatch") {
                Ok(()) => "the previous ruleset was restored".to_string(),
                Err(e) => format!(
                    "restoring the previous ruleset failed too: {e}; run `fwharden restore`"
                ),
            };
            return Err(RollbackError::ReadBack { detail, restored });
        }
    };
    if opts.auto_confirm {
        confirm_record(dirs, record, seen)?;
        return Ok(ApplyOutcome::Confirmed { profile });
    }
    Ok(ApplyOutcome::Pending {
        profile,
        deadline_ms: record.deadline_ms,
        token: record.token,
        watcher: pid,
    })
}

/// A table someone edited by hand cannot be read back into the model; for
/// the comparisons here it is simply "not what we wrote".
fn foreign_as_drift(e: NftError) -> Result<Option<Ruleset>, NftError> {
    match e {
        NftError::Foreign { table, .. } => Ok(Some(Ruleset {
            profile: "(edited outside fwharden)".into(),
            table,
            sets: vec![],
            chains: vec![],
        })),
        e => Err(e),
    }
}

fn describe_difference(want: &Ruleset, got: Option<&Ruleset>) -> String {
    match got {
        None => "the table is missing".into(),
        Some(got) => {
            let d = diff(Some(want), Some(got));
            let first: Vec<&str> = d
                .lines()
                .filter(|l| l.starts_with(['+', '-']))
                .skip(2)
                .take(4)
                .collect();
            format!("first differences: {}", first.join(" | "))
        }
    }
}

/// The transaction failed. Most failures are the kernel refusing the whole
/// batch: nothing changed, and the record goes. When the outcome is
/// unknown, the kernel is read to find out which side of the swap we are on.
fn after_failed_commit(
    dirs: &Dirs,
    record: &Pending,
    before: Option<&Ruleset>,
    e: NftError,
) -> RollbackError {
    let unknown = matches!(e, NftError::OutcomeUnknown { .. });
    if unknown {
        match nft::read_table() {
            Ok(now) if now.as_ref() == before => {}
            _ => {
                // It may have gone in: go back to the recorded previous state.
                if let Err(undo_err) = undo(dirs, record, "outcome unknown") {
                    return RollbackError::Refused(format!(
                        "{e}; restoring the previous ruleset failed too: {undo_err}; run `fwharden restore`"
                    ));
                }
                return RollbackError::Refused(format!("{e}; the previous ruleset was restored"));
            }
        }
    }
    let _ = dirs.clear_pending();
    e.into()
}

fn confirm_record(dirs: &Dirs, record: Pending, seen: Option<Stamp>) -> Result<(), RollbackError> {
    dirs.save_confirmed(&Confirmed {
        profile: record.profile,
        ruleset: record.ruleset,
        confirmed_at: now(),
        seen,
    })?;
    // The watcher sees the record gone at its next look and exits.
    dirs.clear_pending()?;
    Ok(())
}

/// Makes the pending ruleset the confirmed one.
pub fn confirm(dirs: &Dirs, token: Option<&str>) -> Result<String, RollbackError> {
    nft::generation()?;
    let _lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    let Some(pending) = dirs.pending()? else {
        let late = dirs
            .rolled_back()?
            .filter(|r| token.is_none_or(|t| t == r.token));
        return Err(RollbackError::Refused(match late {
            Some(r) => format!(
                "too late: the apply of profile {} was rolled back ({}) {} s ago; apply it again",
                r.profile,
                r.reason,
                now_ms().saturating_sub(r.at_ms) / 1000
            ),
            None => "nothing is pending: there is no apply to confirm".into(),
        }));
    };
    if let Some(t) = token {
        if t != pending.token {
            return Err(RollbackError::Refused(format!(
                "the pending apply (profile {}) has another token; it is not the apply you meant to confirm",
                pending.profile
            )));
        }
    }
    let (seen, table) = match nft::read_table_at() {
        Ok((generation, table)) => (Stamp::at(generation), table),
        Err(e) => (None, foreign_as_drift(e)?),
    };
    if table.as_ref() != Some(&pending.ruleset) {
        return Err(RollbackError::Refused(format!(
            "the kernel no longer holds the pending profile {}: something changed it; not confirming (run `fwharden status`)",
            pending.profile
        )));
    }
    let profile = pending.profile.clone();
    confirm_record(dirs, pending, seen)?;
    Ok(profile)
}

/// Restores the previous ruleset now. `Ok(None)`: nothing was pending.
pub fn rollback(dirs: &Dirs) -> Result<Option<Pending>, RollbackError> {
    interlock()?;
    nft::generation()?;
    let _lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    let Some(pending) = dirs.pending()? else {
        return Ok(None);
    };
    undo(dirs, &pending, "rollback")?;
    Ok(Some(pending))
}

/// What `restore` did at boot.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restored {
    /// The last confirmed ruleset is loaded.
    Confirmed {
        profile: String,
        discarded_pending: Option<String>,
    },
    /// Nothing was ever confirmed: the firewall is left as it is.
    NothingConfirmed { discarded_pending: Option<String> },
    /// The confirmed ruleset could not be loaded; the minimal safe one was.
    Fallback { profile: String, error: String },
}

/// Loads the last confirmed ruleset, never a pending one. If it cannot be
/// loaded, loads the minimal safe ruleset rather than leave the host open.
pub fn restore(dirs: &Dirs, fallback: &Ruleset) -> Result<Restored, RollbackError> {
    interlock()?;
    nft::generation()?;
    dirs.ensure_all()?;
    let _lock = ApplyLock::take(&dirs.lock_path(), LOCK_WAIT)?;
    let discarded = match dirs.pending() {
        Ok(p) => p.map(|p| {
            stop_watcher(&p);
            p.profile
        }),
        Err(_) => Some("(damaged record)".into()),
    };
    dirs.clear_pending()?;
    let confirmed = match dirs.confirmed() {
        Ok(None) => {
            // A discarded unconfirmed apply had "no table" to go back to.
            // At boot the table is gone anyway; run by hand, this takes
            // away what nobody confirmed.
            if discarded.is_some() {
                restore_previous(None)?;
            }
            return Ok(Restored::NothingConfirmed {
                discarded_pending: discarded,
            });
        }
        Ok(Some(c)) => Ok(c),
        Err(e) => Err(RollbackError::from(e)),
    };
    let loaded = confirmed.and_then(|c| restore_previous(Some(&c.ruleset)).map(|()| c.profile));
    match loaded {
        Ok(profile) => Ok(Restored::Confirmed {
            profile,
            discarded_pending: discarded,
        }),
        Err(e) => {
            restore_previous(Some(fallback))?;
            Ok(Restored::Fallback {
                profile: fallback.profile.clone(),
                error: e.to_string(),
            })
        }
    }
}

/// A pending apply at boot has no watcher left; one started by hand may.
fn stop_watcher(p: &Pending) {
    if let Some(pid) = p.watcher.filter(|pid| watcher_alive(*pid, &p.token)) {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Whether `pid` is the watcher of the apply with this token. After a
/// reboot the recorded pid may belong to any other process: only a process
/// whose command line carries `watch` and the token counts.
pub fn watcher_alive(pid: u32, token: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&b"watch".as_slice()) && args.contains(&token.as_bytes())
}

/// Everything `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub confirmed: Option<String>,
    pub pending: Option<PendingStatus>,
    /// `absent`, `confirmed`, `pending`, `drift`, or `unreadable: ...`.
    pub kernel: String,
    pub other_base_chains: Vec<BaseChainStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PendingStatus {
    pub profile: String,
    pub deadline_ms: u64,
    pub seconds_left: u64,
    pub watcher: Option<u32>,
    pub watcher_alive: bool,
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

pub fn status(dirs: &Dirs) -> Result<Status, RollbackError> {
    nft::generation()?;
    let confirmed = dirs.confirmed()?;
    let pending = dirs.pending()?;
    let kernel = match nft::read_table() {
        Ok(None) => "absent".to_string(),
        Ok(Some(r)) if pending.as_ref().is_some_and(|p| p.ruleset == r) => "pending".into(),
        Ok(Some(r)) if confirmed.as_ref().is_some_and(|c| c.ruleset == r) => "confirmed".into(),
        Ok(Some(_)) | Err(NftError::Foreign { .. }) => "drift".into(),
        Err(e @ NftError::Permission { .. }) => return Err(e.into()),
        Err(e) => format!("unreadable: {e}"),
    };
    let chains: Vec<BaseChain> = nft::list_base_chains()?;
    Ok(Status {
        confirmed: confirmed.map(|c| c.profile),
        pending: pending.map(|p| PendingStatus {
            seconds_left: p.deadline_ms.saturating_sub(now_ms()) / 1000,
            watcher_alive: p.watcher.is_some_and(|w| watcher_alive(w, &p.token)),
            profile: p.profile,
            deadline_ms: p.deadline_ms,
            watcher: p.watcher,
        }),
        kernel,
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
    })
}
