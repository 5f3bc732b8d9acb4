//! `fwharden apply`: prove a profile in a probe replica, then load it in
//! one transaction, with a rollback timer unless confirmed.
//!
//! The probe runs here, before `rollback::apply` is called: a ruleset that
//! fails it never reaches the lock, the state directory or the kernel.

use serde_json::{json, Value};

use super::{exit, load_reporting_with_memo};
use crate::probe::{self, ProbeError, Report};
use crate::profile::SearchPath;
use crate::rollback::{self, ApplyOptions, ApplyOutcome};
use crate::ruleset::Ruleset;
use crate::state::{now_ms, Dirs, Stamp};

/// Whether apply proves the ruleset in a replica first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMode {
    /// Probe; where no replica can be built, say so and go on with the
    /// read-back alone.
    WhereAvailable,
    /// Probe, and refuse when no replica can be built.
    Require,
    /// `--no-probe`: emergencies.
    Skip,
}

#[derive(Debug, Clone)]
pub struct Probing {
    pub mode: ProbeMode,
    /// The hidden `--test-break-probe` (see [`for_replica`]).
    pub break_for_test: Option<String>,
}

impl Probing {
    /// How a ruleset of the records (`rollback --to`, `enable`) is proven:
    /// as an apply is, unless `--no-probe`.
    pub fn of_record(no_probe: bool) -> Probing {
        Probing {
            mode: match no_probe {
                true => ProbeMode::Skip,
                false => ProbeMode::WhereAvailable,
            },
            break_for_test: None,
        }
    }
}

/// What the probe step decided.
enum Proof {
    /// Proven (`proven`), or not probed (said so): apply goes on.
    GoOn { proven: bool },
    /// Apply must stop with this exit code; nothing was changed.
    Stop(i32),
}

/// The ruleset the replica is loaded with: `new`, unless the test suite
/// asks for a broken one to prove that a failing probe stops apply. The
/// hook is refused unless the test interlock is set, so it cannot be
/// used by accident on a real host (where apply would then refuse every
/// profile anyway: it can only make apply stricter).
fn for_replica(new: &Ruleset, probing: &Probing) -> anyhow::Result<Ruleset> {
    let Some(text) = &probing.break_for_test else {
        return Ok(new.clone());
    };
    if std::env::var_os(crate::interlock::FORBID_ENV).is_none() {
        anyhow::bail!(
            "--test-break-probe is for the test suite only and needs {}; nothing was changed",
            crate::interlock::FORBID_ENV
        );
    }
    let mut broken = new.clone();
    for chain in &mut broken.chains {
        chain.rules.retain(|r| !r.comment.contains(text.as_str()));
    }
    Ok(broken)
}

/// Where `new` stands against the confirmed record and the kernel, read
/// before the lock (read-only here: `rollback::apply` decides again under
/// it). Any doubt (no record, a pending apply, fwharden disabled, a
/// generation that moved, an error) means `Unproven`: probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Already loaded and confirmed, no commit since (the fast path of
    /// `rollback::apply`): nothing is loaded, so there is nothing to
    /// prove, and a no-op apply stays as fast as it was.
    InPlace,
    /// Only set elements change from the confirmed ruleset, which the
    /// probe proved and the kernel still holds: its rules stand proven,
    /// the changed prefixes are all the change is, and the read-back after
    /// the commit asks the kernel about every changed prefix's edges (see
    /// `nft::verify`). A replica would prove nothing more.
    ProvenDelta,
    Unproven,
}

fn standing(dirs: &Dirs, new: &Ruleset) -> Standing {
    let (Ok(Some(confirmed)), Ok(None), Ok(None)) =
        (dirs.confirmed(), dirs.pending(), dirs.disabled())
    else {
        return Standing::Unproven;
    };
    let Ok(generation) = crate::nft::generation() else {
        return Standing::Unproven;
    };
    if confirmed.seen.is_none() || confirmed.seen != Stamp::at(generation) {
        return Standing::Unproven;
    }
    if &confirmed.ruleset == new {
        Standing::InPlace
    } else if confirmed.proven && confirmed.ruleset.differs_only_in_elements(new) {
        Standing::ProvenDelta
    } else {
        Standing::Unproven
    }
}

/// Probes `new` unless told not to; prints what a person must know.
fn prove(
    dirs: &Dirs,
    new: &Ruleset,
    probing: &Probing,
    json: bool,
    out: &mut Value,
) -> anyhow::Result<Proof> {
    *out = json!({ "probed": false });
    let standing = match probing.break_for_test {
        None => standing(dirs, new),
        Some(_) => Standing::Unproven,
    };
    if standing == Standing::InPlace {
        out["probe_skipped"] = json!("unchanged: nothing is loaded, so there is nothing to prove");
        return Ok(Proof::GoOn { proven: false });
    }
    if standing == Standing::ProvenDelta {
        let why = "only set elements change from the confirmed ruleset, whose rules the probe proved: the read-back after the commit looks up every changed prefix's edges in the kernel";
        if !json {
            println!("probe: {why}");
        }
        out["probe_skipped"] = json!(why);
        out["proven_by"] = json!("element-delta");
        return Ok(Proof::GoOn { proven: true });
    }
    if probing.mode == ProbeMode::Skip {
        let why = "--no-probe: the ruleset was NOT proven with real packets (no replica, no probes); only the read-back after the commit checks it";
        eprintln!("fwharden: warning: {why}");
        out["probe_skipped"] = json!(why);
        return Ok(Proof::GoOn { proven: false });
    }
    let loaded = for_replica(new, probing)?;
    crate::progress::phase("probing in a replica");
    let proved = probe::prove_loaded(new, &loaded, probe::TIMEOUT);
    crate::progress::clear();
    match proved {
        Ok(report) => {
            out["probed"] = json!(true);
            out["probe"] = summary(&report);
            if report.passed {
                // What the probe left out (IPv6 on a kernel without it,
                // published ports without nft) was not proven: say so. (A
                // failed probe prints its table, notes included.)
                for note in &report.notes {
                    eprintln!("fwharden: note: {note}");
                }
                if !json {
                    println!("{}", report.summary());
                }
                return Ok(Proof::GoOn { proven: true });
            }
            if !json {
                print!("{}", report.table());
            }
            eprintln!(
                "fwharden: the probe replica does not behave as profile {} says; nothing was applied",
                report.profile
            );
            Ok(Proof::Stop(exit::PROBE_FAILED))
        }
        Err(ProbeError::Unavailable(e)) if probing.mode == ProbeMode::WhereAvailable => {
            let why = format!("cannot build the probe replica here ({e}); going on with the read-back alone (pass --require-probe to refuse instead)");
            eprintln!("fwharden: warning: {why}");
            out["probe_skipped"] = json!(why);
            Ok(Proof::GoOn { proven: false })
        }
        Err(e) => {
            // Inconclusive: never fails open.
            out["error"] = json!(format!("{e}; nothing was applied"));
            eprintln!(
                "fwharden: error: {e}; {}; nothing was applied",
                super::probe::hint(&e)
            );
            Ok(Proof::Stop(exit::PROBE_FAILED))
        }
    }
}

/// The probe report in apply's JSON: counts, and the rows that failed.
fn summary(report: &Report) -> Value {
    json!({
        "passed": report.passed,
        "probes": report.probes,
        "published": report.published(),
        "mismatches": report.mismatches,
        "inconclusive": report.inconclusive,
        "elapsed_ms": report.elapsed_ms,
        "notes": report.notes,
        "failures": report.failures().collect::<Vec<_>>(),
    })
}

/// `opts` is asked for once the profile is loaded and compiled (it may
/// still be finding the operator's SSH client); `dry_run` is its own.
#[allow(clippy::too_many_arguments)]
pub fn run(
    search: &SearchPath,
    dirs: &Dirs,
    spec: &str,
    dry_run: bool,
    opts: impl FnOnce() -> ApplyOptions,
    probing: &Probing,
    text_diff: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let watch = crate::progress::wanted(json).then(crate::progress::start);
    crate::progress::phase("loading the profile");
    // A dry run changes nothing, the memo of parsed lists included.
    let memo = (!dry_run).then(|| dirs.state.join("parsed"));
    let loaded = load_reporting_with_memo(search, spec, json, memo.as_deref());
    let profile = &loaded.profile;
    let Some(profile) = profile else {
        if json {
            // load_reporting left the diagnostics to us in JSON mode.
            let out = json!({
                "ok": false,
                "error": "the profile is invalid; nothing was changed",
                "errors": loaded.errors().collect::<Vec<_>>(),
                "warnings": loaded.warnings().collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        eprintln!("fwharden: the profile is invalid; nothing was changed");
        return Ok(exit::INVALID_PROFILE);
    };
    crate::progress::phase("compiling");
    let new = crate::compile::compile(profile);
    load(dirs, &new, &opts(), probing, text_diff, json, watch)
}

/// Proves `new` in a replica (as `probing` says) and applies it, printing
/// the outcome: the second half of `apply`, and all of `rollback --to`
/// and `enable`, which load a ruleset the records keep. `watch` is the
/// progress display, if one runs.
pub fn load(
    dirs: &Dirs,
    new: &Ruleset,
    opts: &ApplyOptions,
    probing: &Probing,
    text_diff: bool,
    json: bool,
    watch: Option<crate::progress::Guard>,
) -> anyhow::Result<i32> {
    // Detection only reads the kernel; when it cannot (no permission yet),
    // the apply below reports that itself.
    let containers_warning = crate::containers::detect()
        .ok()
        .and_then(|d| crate::containers::uncovered_warning(&d, Some(new)));
    if let Some(w) = &containers_warning {
        eprintln!("fwharden: warning: {w}");
    }
    // A dry run changes nothing, so there is nothing to prove first.
    let mut probed = json!({ "probed": false, "probe_skipped": "dry run: nothing is loaded" });
    let mut proven = false;
    if !opts.dry_run {
        match prove(dirs, new, probing, json, &mut probed)? {
            Proof::GoOn { proven: p } => proven = p,
            Proof::Stop(code) => {
                if json {
                    probed["ok"] = json!(false);
                    if probed.get("error").is_none() {
                        probed["error"] = json!("the probe failed; nothing was applied");
                    }
                    println!("{}", serde_json::to_string_pretty(&probed)?);
                }
                return Ok(code);
            }
        }
    }
    let opts = &ApplyOptions {
        proven,
        ..opts.clone()
    };
    let operator = &opts.operator;
    if !operator.clients.is_empty() || !operator.notes.is_empty() {
        crate::progress::clear();
        eprintln!("fwharden: {}", operator.describe());
    }
    let outcome = rollback::apply(rollback::Ports::real(), dirs, new, opts);
    drop(watch);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if json {
                let mut v = probed.clone();
                v["ok"] = json!(false);
                v["error"] = json!(e.to_string());
                v["ssh_client"] = json!(operator);
                println!("{v}");
            }
            eprintln!(
                "fwharden: error: {}",
                crate::term::safe_lines(&e.to_string())
            );
            return Ok(super::codes::of_error(e));
        }
    };
    let banned = banned_operator(operator);
    if let Some(w) = &banned {
        eprintln!("fwharden: warning: {w}");
    }
    if json {
        let mut v = serde_json::to_value(&outcome)?;
        v["ok"] = json!(true);
        v["ssh_client"] = json!(operator);
        if let Some(w) = &banned {
            v["ban_warning"] = json!(w);
        }
        v["changed"] = json!(outcome.changed());
        if let Some(w) = &containers_warning {
            v["containers_warning"] = json!(w);
        }
        for key in ["probed", "probe", "probe_skipped", "proven_by"] {
            if let Some(x) = probed.get(key) {
                v[key] = x.clone();
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit::OK);
    }
    match &outcome {
        ApplyOutcome::Unchanged { profile } => {
            println!("profile {profile} is already loaded and confirmed: unchanged");
        }
        ApplyOutcome::DryRun {
            profile,
            changed: false,
            ..
        } => {
            println!("profile {profile}: the kernel already holds this ruleset; no change");
        }
        ApplyOutcome::DryRun {
            profile,
            reach,
            diff,
            ..
        } => {
            println!("dry run of profile {profile}: nothing was changed");
            print_reach(reach);
            if text_diff {
                print!("\n{diff}");
            } else {
                println!("(the nft text that changes: fwharden apply {profile} --diff)");
            }
        }
        ApplyOutcome::Confirmed {
            profile,
            counters,
            reach,
        } => {
            println!("applied and confirmed profile {profile}");
            print_reach(reach);
            print_counters(*counters);
        }
        ApplyOutcome::Pending {
            profile,
            deadline_ms,
            token,
            watcher_lives,
            hatch,
            rollback_to,
            counters,
            reach,
            ..
        } => {
            let secs = deadline_ms.saturating_sub(now_ms()).div_ceil(1000);
            println!(
                "applied profile {profile}: PENDING, rolled back to {rollback_to} in {secs} s (at {} UTC) unless confirmed.\n\
                 \n\
                 Confirm from a NEW ssh connection, which proves that new connections still get in:\n\
                 \x20   ssh -o ControlMaster=no -o ControlPath=none <this host> sudo fwharden confirm\n\
                 A multiplexed connection (ControlMaster/ControlPersist) reuses this one and proves nothing.\n\
                 To undo now: fwharden rollback.   Token: {token}\n\
                 The watcher lives in {watcher_lives}.\n\
                 Escape hatch: {hatch}",
                clock(*deadline_ms)
            );
            print_reach(reach);
            print_counters(*counters);
        }
    }
    Ok(exit::OK)
}

/// A warning when the operator's address is in a ban set now: whatever
/// the apply did (even nothing, "unchanged"), a ban drops the operator's
/// traffic once the ban table enforces it.
fn banned_operator(operator: &crate::sshclient::Operator) -> Option<String> {
    if operator.clients.is_empty() {
        return None;
    }
    // Reading the ban table failing is no reason to fail an apply that
    // succeeded: the warning is a courtesy, the guard before it is not.
    let state = crate::nft::ban_state().ok()??;
    let ban = state.bans.iter().find(|b| {
        operator.is_client(b.addr) && !state.exempt.iter().any(|n| n.contains(&b.addr))
    })?;
    let left = ban
        .expires_secs
        .map_or_else(|| "no timeout".to_string(), |s| format!("{s} s left"));
    let effect = if state.enforced {
        "bans are enforced: every packet from it is dropped, established connections included"
    } else {
        "bans are not enforced now (the applied profile has no [bans]), but would be by a profile that enables them"
    };
    Some(format!(
        "your address {} is banned (set {}, {left}): {effect}. Run `fwharden unban {}`",
        ban.addr, ban.set, ban.addr
    ))
}

/// Who gains and who loses access, one change per line; rules that moved
/// without changing who gets in say so.
fn print_reach(reach: &crate::ruleset::reach::Said) {
    let reach = match reach {
        crate::ruleset::reach::Said::Changes(c) => c,
        crate::ruleset::reach::Said::Untold { untold } => {
            println!("who can connect to what: not said, {untold}");
            return;
        }
    };
    if reach.is_empty() {
        println!("who can connect to what: unchanged (new connections to TCP and UDP ports)");
        return;
    }
    println!("who can connect to what (new connections to TCP and UDP ports):");
    for change in reach {
        println!("  {}", crate::term::safe_lines(&change.to_string()));
    }
}

/// What became of the rule counters `fwharden metrics` reports.
fn print_counters(counters: crate::rollback::Counters) {
    match counters {
        crate::rollback::Counters::Kept => {
            println!("counters kept: only set elements changed")
        }
        crate::rollback::Counters::Restarted => {
            println!("counters restarted: the table was replaced whole (its rules changed)")
        }
        crate::rollback::Counters::Started => {}
    }
}

/// HH:MM:SS of a time in ms since the epoch, UTC.
pub(super) fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
