//! `fwharden disable` and `enable`: fwharden's table off and on again,
//! each with the rollback timer and the confirm. Disabled (confirmed),
//! `restore` at boot loads nothing until `enable` or the next apply.

use serde_json::json;

use super::apply::{self, Probing};
use super::exit;
use crate::rollback::{self, ApplyOptions, DisableOutcome};
use crate::state::{now_ms, Dirs};

pub fn disable(dirs: &Dirs, timeout: u64, json: bool) -> anyhow::Result<i32> {
    let outcome = match rollback::disable(rollback::Ports::real(), dirs, timeout) {
        Ok(o) => o,
        Err(e) => return super::safety::fail(e, json),
    };
    if json {
        let mut v = serde_json::to_value(&outcome)?;
        v["ok"] = json!(true);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit::OK);
    }
    match outcome {
        DisableOutcome::Already { enable_loads } => println!(
            "fwharden is disabled already: no fwharden table is loaded (`fwharden enable` loads profile {enable_loads} again)"
        ),
        DisableOutcome::Pending {
            deadline_ms,
            token,
            watcher_lives,
            rollback_to,
            ..
        } => {
            let secs = deadline_ms.saturating_sub(now_ms()).div_ceil(1000);
            println!(
                "disabled: table inet fwharden is removed. PENDING: {rollback_to} is loaded again in {secs} s (at {} UTC) unless confirmed.\n\
                 \n\
                 Confirm from a NEW ssh connection, which proves that you still get in:\n\
                 \x20   ssh -o ControlMaster=no -o ControlPath=none <this host> sudo fwharden confirm\n\
                 Confirmed, `fwharden restore` at boot loads nothing until `fwharden enable` or the next apply.\n\
                 To undo now: fwharden rollback.   Token: {token}\n\
                 The watcher lives in {watcher_lives}.",
                apply::clock(deadline_ms)
            );
        }
    }
    Ok(exit::OK)
}

/// Loads the confirmed ruleset again, as an apply with the rollback timer;
/// an unconfirmed disable is simply rolled back.
pub fn enable(dirs: &Dirs, timeout: u64, no_probe: bool, json: bool) -> anyhow::Result<i32> {
    let disabled = dirs.disabled()?;
    if dirs.pending()?.is_some_and(|p| p.ruleset.is_none()) {
        return match rollback::rollback(rollback::Ports::real(), dirs) {
            Ok(p) if json => {
                println!(
                    "{}",
                    json!({ "ok": true, "rolled_back": p.map(|p| p.profile) })
                );
                Ok(exit::OK)
            }
            Ok(p) => {
                let restored = p.map_or_else(|| "nothing".into(), |p| p.previous_name());
                println!("enabled: the unconfirmed disable is rolled back; restored {restored}");
                Ok(exit::OK)
            }
            Err(e) => super::safety::fail(e, json),
        };
    }
    if disabled.is_none() {
        if json {
            println!("{}", json!({ "ok": true, "changed": false }));
        } else {
            println!("fwharden is not disabled: nothing to enable (`fwharden status` says what is loaded)");
        }
        return Ok(exit::OK);
    }
    let Some(confirmed) = dirs.confirmed()? else {
        anyhow::bail!(
            "fwharden is disabled, but {} holds no confirmed ruleset to load again; apply a profile",
            dirs.state.display()
        );
    };
    let opts = ApplyOptions {
        timeout,
        auto_confirm: false,
        force: false,
        dry_run: false,
        operator: crate::sshclient::find(),
        proven: false,
    };
    let probing = Probing::of_record(no_probe);
    let watch = crate::progress::wanted(json).then(crate::progress::start);
    apply::load(
        dirs,
        &confirmed.ruleset,
        &opts,
        &probing,
        false,
        json,
        watch,
    )
}
