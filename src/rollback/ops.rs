//! `apply`: lock, read, guard, arm the rollback, commit, read back.

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;

use super::confirm::confirm_record;
use super::steps::{arm, read_back_failed, read_held, Before, Locked};
use super::target::{self, Held};
use super::{guard, undo, Ports, RollbackError, Undo};
use crate::kernel::Kernel;
use crate::nft::{self, NftError};
use crate::render;
use crate::ruleset::hatch::{self, Hatch};
use crate::ruleset::reach;
use crate::ruleset::Ruleset;
use crate::state::{ApplyLock, Dirs, Origin, Pending, Stamp};

/// Gives the records an older fwharden wrote a digest (see
/// `state::sealed`); one that cannot be rewritten now stays as it is.
pub(super) fn seal_legacy(dirs: &Dirs, lock: &ApplyLock) {
    if let Err(e) = dirs.seal_legacy(lock) {
        eprintln!("fwharden: warning: {e}");
    }
}

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
    /// The operator's SSH client(s), which the lockout guard keeps able to
    /// log in and the escape hatch lets back in ([`crate::sshclient::find`]).
    pub operator: crate::sshclient::Operator,
    /// The ruleset's rules were proven with real packets in a probe
    /// replica before this apply (see `cli::apply`): kept in the records,
    /// so that a later change of set elements alone need not be probed.
    pub proven: bool,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ApplyOutcome {
    /// The kernel already holds this ruleset, and it is confirmed.
    Unchanged { profile: String },
    /// Nothing was changed; `reach` is what would change in who can
    /// connect to what, `diff` the same as `nft -f` text.
    DryRun {
        profile: String,
        changed: bool,
        reach: reach::Said,
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
        /// What a rollback restores, in words.
        rollback_to: String,
        counters: Counters,
        /// What changed in who can connect to what, or why it is not
        /// said (a table edited outside fwharden, a change too big).
        reach: reach::Said,
    },
    /// Loaded and confirmed.
    Confirmed {
        profile: String,
        counters: Counters,
        reach: reach::Said,
    },
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

/// Who gains and who loses access from what the kernel held to `new`, as
/// the profile writes it (a hatch is the apply's, not the profile's); not
/// said when the table was edited outside fwharden and has no model.
fn reach_change(held: &Held, new: &Ruleset) -> reach::Said {
    match held {
        Held::Foreign { .. } => reach::Said::Untold {
            untold: "the kernel's table was edited outside fwharden (the nft text: --diff)".into(),
        },
        held => reach::said(held.as_current().as_deref(), new),
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

pub fn apply(
    ports: Ports,
    dirs: &Dirs,
    new: &Ruleset,
    opts: &ApplyOptions,
) -> Result<ApplyOutcome, RollbackError> {
    let kernel = ports.kernel;
    // Ask the kernel before touching the state directory: without
    // CAP_NET_ADMIN the error that helps is "needs root or CAP_NET_ADMIN",
    // not "permission denied" on the root-only /var/lib/fwharden.
    crate::progress::phase("reading the kernel");
    let generation_now = kernel.generation()?;
    if opts.dry_run {
        // Touches nothing: no lock, no kernel write. It only reads the
        // confirmed record, and trusts it as apply does: when nobody has
        // committed since it was proven in the kernel, it is what the
        // kernel holds, and listing a big set would cost O(n²).
        let confirmed = dirs.confirmed().ok().flatten();
        let (_, held) = read_held(kernel, confirmed.as_ref(), generation_now)?;
        let diff = diff(held.as_current().as_deref(), Some(new));
        return Ok(ApplyOutcome::DryRun {
            profile: new.profile.clone(),
            changed: !diff.is_empty(),
            reach: reach_change(&held, new),
            diff,
        });
    }
    let Locked {
        _lock,
        _bans_wait,
        confirmed,
        pending,
        disabled,
    } = Locked::take(ports, dirs, "apply")?;
    let profile = new.profile.clone();
    // Nobody committed since the kernel was last read holding the
    // confirmed ruleset: it still does, no need to read it all back.
    // (Disabled, the confirmed state is no table: nothing is unchanged.)
    let untouched = confirmed.as_ref().is_some_and(|c| {
        c.seen.is_some() && c.seen == Stamp::at(generation_now) && &c.ruleset == new
    });
    if untouched && pending.is_none() && disabled.is_none() {
        return Ok(ApplyOutcome::Unchanged { profile });
    }
    let (generation, held) = read_held(kernel, confirmed.as_ref(), generation_now)?;
    let current = held.as_current();
    let current = current.as_deref();
    let settled = current == Some(new)
        && pending.is_none()
        && disabled.is_none()
        && confirmed.as_ref().is_some_and(|c| &c.ruleset == new);
    if settled {
        return Ok(ApplyOutcome::Unchanged { profile });
    }
    let target = rollback_target(
        dirs,
        &Before::of(&confirmed, &disabled, &pending),
        &held,
        opts.auto_confirm,
    )?;
    let operator = &opts.operator;
    if !operator.clients.is_empty() {
        let banned: Vec<std::net::IpAddr> = match (&new.bans, kernel.ban_state()?) {
            (Some(_), Some(state)) => state.bans.iter().map(|b| b.addr).collect(),
            _ => Vec::new(),
        };
        // Several clients (none of them provably this session's): every
        // one of them must still get in.
        for ssh in &operator.clients {
            let interface = ssh.server.and_then(crate::hostaddr::interface_of);
            let verdict = guard::check(new, ssh, interface)
                .and_then(|_| guard::check_bans(new, ssh, &banned))
                .map_err(|why| format!("{why} [{}]", operator.describe()));
            if let Err(why) = verdict {
                if !opts.force {
                    return Err(RollbackError::Lockout(why));
                }
                eprintln!("fwharden: warning: --force: {why}");
            }
        }
    }
    // The escape hatch rides along with a pending ruleset loaded over SSH
    // (see `ruleset::hatch`). Without an SSH client there is no address to
    // let back in, and a confirmed-at-once apply has no window to outlive.
    // It lets one address back in: with several candidate clients there is
    // no single operator, and none is armed (the guard checked them all).
    let hatch = match (operator.single(), opts.auto_confirm) {
        (Some(ssh), false) => Some(Hatch {
            operator: ssh.client,
            port: ssh.server_port,
            timeout_secs: opts.timeout,
        }),
        _ => None,
    };
    let loaded: Cow<Ruleset> = match hatch {
        Some(h) => Cow::Owned(hatch::with_hatch(new, &h)),
        None => Cow::Borrowed(new),
    };

    let record = arm(
        ports,
        dirs,
        pending.as_ref(),
        Some(loaded.clone().into_owned()),
        target,
        opts.timeout,
        opts.proven,
    )?;
    let watcher_lives = record.watcher_lives.clone().unwrap_or_default();

    // A changed prefix list alone goes in as an element delta: the same
    // compare-and-swap, a fraction of the batch.
    // The hatch's element is armed by this commit, after the deadline was
    // set above: it never opens before the watcher's deadline.
    let counters = match current {
        None => Counters::Started,
        Some(old) if old.differs_only_in_elements(&loaded) => Counters::Kept,
        Some(_) => Counters::Restarted,
    };
    crate::progress::phase("transaction");
    let committed = commit_retrying(kernel, current, generation, |g| match current {
        Some(old) if old.differs_only_in_elements(&loaded) => kernel.apply_delta(old, &loaded, g),
        _ => kernel.apply_at(&loaded, Some(g)),
    });
    let mut report = match committed {
        Ok(report) => report,
        Err(e) => {
            return Err(after_failed_commit(
                ports,
                dirs,
                &record,
                pending.as_ref(),
                current,
                e,
            ))
        }
    };
    crate::progress::phase("verifying");
    // Whatever the batch was, the prefixes that changed from the table
    // the kernel held are looked up edge by edge (see `nft::verify`): an
    // element delta is proven where it changed, not only by a sample.
    if let Some(old) = current {
        report.focus = old.changed_prefixes(&loaded).into_iter().collect();
    }
    // The reason goes into the attempt log as the rollback's cause.
    let detail = match kernel.verify(&loaded, &report) {
        Ok(nft::Check::Holds { generation, .. }) => Ok(Stamp::at(generation)),
        Ok(nft::Check::Differs {
            want, got, lookup, ..
        }) => Err((
            "read-back mismatch",
            lookup.unwrap_or_else(|| describe_difference(&want, got.as_ref())),
        )),
        // A read-back that could not be made proves nothing either: roll
        // back now, named for what happened, rather than leave it to the
        // watcher's deadline.
        Err(e) => match foreign_as_drift(e) {
            Ok(got) => Err((
                "read-back mismatch",
                describe_difference(&loaded, got.as_ref()),
            )),
            Err(e) => Err(("read-back failed", format!("the read-back failed: {e}"))),
        },
    };
    let seen = match detail {
        Ok(seen) => seen,
        Err((reason, detail)) => {
            return Err(read_back_failed(ports, dirs, &record, reason, detail))
        }
    };
    // Against the table the kernel held before, as the profile writes it
    // (the hatch is the apply's, not the profile's).
    let reach = reach_change(&held, new);
    if opts.auto_confirm {
        crate::progress::phase("confirming");
        confirm_record(ports, dirs, record, seen)?;
        return Ok(ApplyOutcome::Confirmed {
            profile,
            counters,
            reach,
        });
    }
    Ok(ApplyOutcome::Pending {
        rollback_to: record.previous_name(),
        profile,
        deadline_ms: record.deadline_ms,
        token: record.token,
        watcher: record.watcher.unwrap_or_default(),
        watcher_lives,
        hatch: hatch::find(&loaded).map_or_else(
            || format!("none: {}", operator.why_no_hatch()),
            |f| f.describe(),
        ),
        counters,
        reach,
    })
}

/// What this apply rolls back to (see `target`). Said on stderr when it
/// is the kernel's table, not a confirmed record: the state directory may
/// be the wrong one. A timed apply over a table that cannot be put back is
/// refused; one confirmed at once has no timer to fire.
pub(super) fn rollback_target(
    dirs: &Dirs,
    before: &Before,
    held: &Held,
    auto_confirm: bool,
) -> Result<target::Target, RollbackError> {
    match target::choose(before.confirmed, before.disabled, before.replaced, held) {
        Ok(t) => {
            if let (Origin::Kernel, Some(r)) = (t.source, &t.previous) {
                eprintln!(
                    "fwharden: warning: {} holds no confirmed record; without a confirm this apply goes back to the table the kernel holds now (profile {}), not to no firewall. If you expected a confirmed record, check --state-dir (or FWHARDEN_STATE_DIR)",
                    dirs.state.display(),
                    r.profile
                );
            }
            Ok(t)
        }
        Err(_) if auto_confirm => Ok(target::Target {
            previous: None,
            source: Origin::NoTable,
        }),
        Err(u) => Err(RollbackError::NoRollbackTarget {
            state: dirs.state.clone(),
            table: u.table,
            why: u.why,
        }),
    }
}

/// How often a commit is tried again after other programs' commits.
pub(super) const COMMIT_TRIES: usize = 8;

/// Commits with `commit(generation)`. When another program committed in
/// between (fail2ban adding a ban to table inet fwharden-bans, say), the
/// kernel refuses the batch; if table inet fwharden (and the ban table's
/// shape) still is `before`, the decisions made on it still hold and the
/// batch is sent again at the new generation. Ban elements are not part
/// of `before`, so ban churn never makes this give up; a change to our
/// own table does, at once.
pub(super) fn commit_retrying(
    kernel: &dyn Kernel,
    before: Option<&Ruleset>,
    generation: u32,
    commit: impl Fn(u32) -> Result<nft::ApplyReport, NftError>,
) -> Result<nft::ApplyReport, NftError> {
    let mut generation = generation;
    for _ in 0..COMMIT_TRIES {
        match commit(generation) {
            Err(NftError::Raced) => {
                let (g, now) = match kernel.read_table_at() {
                    Ok(read) => read,
                    Err(e) => (kernel.generation()?, foreign_as_drift(e)?),
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
///
/// An apply that replaced a pending one (`superseded`) has already told
/// that one's watcher to stand down; if the kernel still holds the
/// superseded ruleset, the new watcher adopts it, deadline and all, so an
/// unconfirmed ruleset is never left in the kernel without a rollback.
pub(super) fn after_failed_commit(
    ports: Ports,
    dirs: &Dirs,
    record: &Pending,
    superseded: Option<&Pending>,
    before: Option<&Ruleset>,
    e: NftError,
) -> RollbackError {
    let unknown = matches!(e, NftError::OutcomeUnknown { .. });
    if unknown {
        match ports.kernel.read_table() {
            Ok(now) if now.as_ref() == before => {}
            _ => {
                // It may have gone in: go back to the recorded previous state.
                let undo = match undo(ports, dirs, record, "outcome unknown") {
                    Ok(()) => Undo::Restored,
                    Err(undo_err) => Undo::Failed(Box::new(undo_err)),
                };
                return RollbackError::OutcomeUndone { error: e, undo };
            }
        }
    }
    let kept = match superseded {
        Some(old) => dirs.save_pending(&Pending {
            token: record.token.clone(),
            watcher: record.watcher,
            watcher_lives: record.watcher_lives.clone(),
            ..old.clone()
        }),
        None => dirs.clear_pending(),
    };
    match kept {
        Ok(()) => e.into(),
        Err(state) => RollbackError::PendingLost { error: e, state },
    }
}
