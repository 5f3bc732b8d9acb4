//! `fwharden apply`: load a profile in one transaction, with a rollback
//! timer unless confirmed.

use serde_json::json;

use super::{exit, load_reporting};
use crate::profile::SearchPath;
use crate::rollback::{self, ApplyOptions, ApplyOutcome};
use crate::ruleset;
use crate::state::{now_ms, Dirs};

pub fn run(
    search: &SearchPath,
    dirs: &Dirs,
    spec: &str,
    opts: &ApplyOptions,
    json: bool,
) -> anyhow::Result<i32> {
    let loaded = load_reporting(search, spec, json);
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
    let new = ruleset::compile(profile);
    let outcome = match rollback::apply(dirs, &new, opts) {
        Ok(o) => o,
        Err(e) => {
            if json {
                println!("{}", json!({ "ok": false, "error": e.to_string() }));
            }
            eprintln!("fwharden: error: {e}");
            return Ok(e.exit_code());
        }
    };
    if json {
        let mut v = serde_json::to_value(&outcome)?;
        v["ok"] = json!(true);
        v["changed"] = json!(outcome.changed());
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
        ApplyOutcome::DryRun { diff, .. } => print!("{diff}"),
        ApplyOutcome::Confirmed { profile } => {
            println!("applied and confirmed profile {profile}");
        }
        ApplyOutcome::Pending {
            profile,
            deadline_ms,
            token,
            watcher_lives,
            hatch,
            ..
        } => {
            let secs = deadline_ms.saturating_sub(now_ms()).div_ceil(1000);
            println!(
                "applied profile {profile}: PENDING, rolled back in {secs} s (at {} UTC) unless confirmed.\n\
                 \n\
                 Confirm from a NEW ssh connection, which proves that new connections still get in:\n\
                 \x20   ssh -o ControlMaster=no -o ControlPath=none <this host> sudo fwharden confirm\n\
                 A multiplexed connection (ControlMaster/ControlPersist) reuses this one and proves nothing.\n\
                 To undo now: fwharden rollback.   Token: {token}\n\
                 The watcher lives in {watcher_lives}.\n\
                 Escape hatch: {hatch}",
                clock(*deadline_ms)
            );
        }
    }
    Ok(exit::OK)
}

/// HH:MM:SS of a time in ms since the epoch, UTC.
fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
