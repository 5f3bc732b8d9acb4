//! The operations behind apply, confirm, rollback, restore and status.

use std::io::Read;
use std::time::Duration;

use serde::Serialize;

use super::confirm::confirm_record;
use super::{
    guard, interlock, restore_previous, settle_locked, undo, watcher, watcher_alive, RollbackError,
};
use crate::nft::{self, NftError};
use crate::render;
use crate::ruleset::hatch::{self, Hatch};
use crate::ruleset::Ruleset;
use crate::state::{now_ms, ApplyLock, Dirs, Pending, Stamp};

/// How long confirm, rollback and restore wait for a running apply.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(10);

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
        /// Where the watcher lives.
        watcher_lives: String,
        /// The escape hatch loaded with it, in words, or why there is none.
        hatch: String,
        counters: Counters,
    },
    /// Loaded and confirmed.
    Confirmed { profile: String, counters: Counters },
}

/// What became of the kernel's rule counters (see `fwharden metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Counters {
    /// Only set elements changed: every rule, its counter with it, stayed.
    Kept,
    /// The table was replaced whole: every counter starts again from zero.
    Restarted,
    /// There was no table before.
    Started,
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
    crate::progress::phase("reading the kernel");
    let generation_now = nft::generation()?;
    if opts.dry_run {
        // Touches nothing: no lock, no kernel write. It only reads the
        // confirmed record, and trusts it as apply does: when nobody has
        // committed since it was proven in the kernel, it is what the
        // kernel holds, and listing a big set would cost O(n²).
        let known = dirs
            .confirmed()
            .ok()
            .flatten()
            .filter(|c| c.seen.is_some() && c.seen == Stamp::at(generation_now));
        let current = match known {
            Some(c) => Some(c.ruleset),
            None => nft::read_table().or_else(foreign_as_drift)?,
        };
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
    if let Some(s) = settle_locked(dirs, "apply")? {
        eprintln!("fwharden: {}", s.describe());
    }
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
    let ssh = guard::SshClient::from_env();
    if let Some(ssh) = &ssh {
        let interface = ssh.server.and_then(guard::interface_of);
        let banned: Vec<std::net::IpAddr> = match (&new.bans, nft::ban_state()?) {
            (Some(_), Some(state)) => state.bans.iter().map(|b| b.addr).collect(),
            _ => Vec::new(),
        };
        let verdict =
            guard::check(new, ssh, interface).and_then(|_| guard::check_bans(new, ssh, &banned));
        if let Err(why) = verdict {
            if !opts.force {
                return Err(RollbackError::Lockout(why));
            }
            eprintln!("fwharden: warning: --force: {why}");
        }
    }
    // The escape hatch rides along with a pending ruleset loaded over SSH
    // (see `ruleset::hatch`). Without an SSH client there is no address to
    // let back in, and a confirmed-at-once apply has no window to outlive.
    let hatch = match (&ssh, opts.auto_confirm) {
        (Some(ssh), false) => Some(Hatch {
            operator: ssh.client,
            port: ssh.server_port,
            timeout_secs: opts.timeout,
        }),
        _ => None,
    };
    let loaded = hatch.map_or_else(|| new.clone(), |h| hatch::with_hatch(new, &h));

    // An apply killed between making its watcher's group and moving the
    // watcher in left the group empty; this one replaces its record.
    if let Some(old) = &pending {
        super::placement::remove_left_group(&old.token, &dirs.run);
    }
    // From here on the pending record and its watcher exist before the
    // kernel changes, so a kill at any moment still ends in a rollback.
    let mut record = Pending {
        profile: profile.clone(),
        ruleset: loaded.clone(),
        previous: confirmed.map(|c| c.ruleset),
        applied_ms: now_ms(),
        deadline_ms: now_ms() + opts.timeout * 1000,
        token: token(),
        watcher: None,
        watcher_lives: None,
    };
    crate::progress::phase("arming the rollback");
    dirs.save_pending(&record)?;
    let spawned = match watcher::spawn(dirs, &record.token) {
        Ok(s) => s,
        Err(e) => {
            dirs.clear_pending()?;
            return Err(e);
        }
    };
    let watcher_lives = spawned.placement.describe();
    record.watcher = Some(spawned.pid);
    record.watcher_lives = Some(watcher_lives.clone());
    dirs.save_pending(&record)?;

    // A changed prefix list alone goes in as an element delta: the same
    // compare-and-swap, a fraction of the batch.
    // The hatch's element is armed by this commit, after the deadline was
    // set above: it never opens before the watcher's deadline.
    let counters = match current.as_ref() {
        None => Counters::Started,
        Some(old) if old.differs_only_in_elements(&loaded) => Counters::Kept,
        Some(_) => Counters::Restarted,
    };
    crate::progress::phase("transaction");
    let committed = commit_retrying(current.as_ref(), generation, |g| match current.as_ref() {
        Some(old) if old.differs_only_in_elements(&loaded) => nft::apply_delta(old, &loaded, g),
        _ => nft::apply_at(&loaded, Some(g)),
    });
    let report = match committed {
        Ok(report) => report,
        Err(e) => return Err(after_failed_commit(dirs, &record, current.as_ref(), e)),
    };
    crate::progress::phase("verifying");
    let detail = match nft::verify(&loaded, &report) {
        Ok(nft::Check::Holds { generation, .. }) => Ok(Stamp::at(generation)),
        Ok(nft::Check::Differs {
            want, got, lookup, ..
        }) => Err(lookup.unwrap_or_else(|| describe_difference(&want, got.as_ref()))),
        Err(e) => Err(describe_difference(&loaded, foreign_as_drift(e)?.as_ref())),
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
        crate::progress::phase("confirming");
        confirm_record(dirs, record, seen)?;
        return Ok(ApplyOutcome::Confirmed { profile, counters });
    }
    Ok(ApplyOutcome::Pending {
        profile,
        deadline_ms: record.deadline_ms,
        token: record.token,
        watcher: spawned.pid,
        watcher_lives,
        hatch: hatch::find(&loaded).map_or_else(
            || "none: not applied over SSH (no SSH_CONNECTION or SSH_CLIENT), so there is no operator address to let back in".to_string(),
            |f| f.describe(),
        ),
        counters,
    })
}

/// How often a commit is tried again after other programs' commits.
const COMMIT_TRIES: usize = 8;

/// Commits with `commit(generation)`. When another program committed in
/// between (fail2ban adding a ban to table inet fwharden-bans, say), the
/// kernel refuses the batch; if table inet fwharden (and the ban table's
/// shape) still is `before`, the decisions made on it still hold and the
/// batch is sent again at the new generation. Ban elements are not part
/// of `before`, so ban churn never makes this give up; a change to our
/// own table does, at once.
pub(super) fn commit_retrying(
    before: Option<&Ruleset>,
    generation: u32,
    commit: impl Fn(u32) -> Result<nft::ApplyReport, NftError>,
) -> Result<nft::ApplyReport, NftError> {
    let mut generation = generation;
    for _ in 0..COMMIT_TRIES {
        match commit(generation) {
            Err(NftError::Raced) => {
                let (g, now) = match nft::read_table_at() {
                    Ok(read) => read,
                    Err(e) => (nft::generation()?, foreign_as_drift(e)?),
                };
                if now.as_ref() != before {
                    return Err(NftError::Raced);
                }
                generation = g;
            }
            other => return other,
        }
    }
    Err(NftError::Raced)
}

/// A table someone edited by hand cannot be read back into the model; for
/// the comparisons here it is simply "not what we wrote".
pub(super) fn foreign_as_drift(e: NftError) -> Result<Option<Ruleset>, NftError> {
    match e {
        NftError::Foreign { table, .. } => Ok(Some(Ruleset {
            profile: "(edited outside fwharden)".into(),
            table,
            sets: vec![],
            chains: vec![],
            bans: None,
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
    // An overdue apply with no watcher is rolled back as its own watcher
    // would have (recorded, so a late confirm says so); whatever comes of
    // it, the confirmed ruleset is loaded below.
    match settle_locked(dirs, "restore") {
        Ok(None) => {}
        Ok(Some(s)) => eprintln!("fwharden: {}", s.describe()),
        Err(e) => eprintln!(
            "fwharden: an apply was past its deadline with no watcher, and rolling it back failed ({e}); loading the confirmed ruleset instead"
        ),
    }
    let discarded = match dirs.pending() {
        Ok(p) => p.map(|p| {
            stop_watcher(dirs, &p);
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
/// Stopped by SIGTERM, it cannot remove its cgroup: that is done here once
/// it is gone (waiting at most 2 s).
fn stop_watcher(dirs: &Dirs, p: &Pending) {
    if let Some(pid) = p.watcher.filter(|pid| watcher_alive(*pid, &p.token)) {
        if let Ok(raw) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for _ in 0..100 {
            if !watcher_alive(pid, &p.token) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    super::placement::remove_left_group(&p.token, &dirs.run);
}
