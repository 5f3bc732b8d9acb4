//! `fwharden confirm`, `rollback`, `restore`, `status`, and the hidden
//! `watch` the apply starts.

use serde_json::json;

use super::exit;
use crate::profile::{self, SearchPath};
use crate::rollback::{self, Restored, RollbackError};
use crate::ruleset;
use crate::state::{now_ms, Dirs};

fn fail(e: RollbackError, json: bool) -> anyhow::Result<i32> {
    if json {
        println!("{}", json!({ "ok": false, "error": e.to_string() }));
    }
    eprintln!(
        "fwharden: error: {}",
        crate::term::safe_lines(&e.to_string())
    );
    Ok(super::codes::of_error(e))
}

pub fn confirm(dirs: &Dirs, token: Option<&str>, json: bool) -> anyhow::Result<i32> {
    match rollback::confirm(rollback::Ports::real(), dirs, token) {
        Ok(profile) if json => println!("{}", json!({ "ok": true, "confirmed": profile })),
        Ok(profile) => {
            println!("confirmed profile {profile}: it is what `fwharden restore` loads at boot")
        }
        Err(e) => return fail(e, json),
    }
    Ok(exit::OK)
}

pub fn rollback(dirs: &Dirs, json: bool) -> anyhow::Result<i32> {
    match rollback::rollback(rollback::Ports::real(), dirs) {
        Ok(p) if json => println!(
            "{}",
            json!({ "ok": true, "rolled_back": p.map(|p| p.profile) })
        ),
        Ok(Some(p)) => println!(
            "rolled back profile {}: restored {}",
            p.profile,
            p.previous_name()
        ),
        Ok(None) => println!("nothing is pending: nothing to roll back"),
        Err(e) => return fail(e, json),
    }
    Ok(exit::OK)
}

/// The minimal safe ruleset `restore` falls back on: the built-in ssh-only
/// profile (loopback, established, essential ICMP, SSH), taken from the
/// binary itself so a broken /etc cannot take it away.
pub fn fallback() -> anyhow::Result<ruleset::Ruleset> {
    let search = SearchPath {
        dirs: vec![],
        builtin: true,
    };
    let loaded = profile::load("ssh-only", &search);
    let p = loaded
        .profile
        .ok_or_else(|| anyhow::anyhow!("the built-in fallback profile does not load"))?;
    Ok(crate::compile::compile(&p))
}

pub fn restore(dirs: &Dirs, json: bool) -> anyhow::Result<i32> {
    let result = match rollback::restore(rollback::Ports::real(), dirs, &fallback()?) {
        Ok(r) => r,
        Err(e) => return fail(e, json),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    let code = match &result {
        Restored::Fallback { .. } => exit::FAILURE,
        _ => exit::OK,
    };
    if json {
        return Ok(code);
    }
    match result {
        Restored::Confirmed {
            profile,
            discarded_pending,
        } => {
            if let Some(p) = discarded_pending {
                println!("discarded the unconfirmed apply of profile {p}");
            }
            println!("restored the confirmed profile {profile}");
        }
        Restored::NothingConfirmed { discarded_pending } => {
            if let Some(p) = discarded_pending {
                println!("discarded the unconfirmed apply of profile {p}");
            }
            println!("nothing was ever confirmed: no fwharden ruleset is loaded");
        }
        Restored::Fallback { profile, error } => {
            eprintln!(
                "fwharden: error: the confirmed ruleset could not be loaded ({error}); loaded the minimal safe profile {profile} instead (loopback, established, essential ICMP, SSH). Fix the cause, then apply your profile again"
            );
        }
    }
    Ok(code)
}

pub fn status(dirs: &Dirs, verify: bool, json: bool) -> anyhow::Result<i32> {
    let elements = if verify {
        crate::status::Elements::Every
    } else {
        crate::status::Elements::Sampled
    };
    let s = match crate::status::status(rollback::Ports::real(), dirs, elements) {
        Ok(s) => s,
        Err(e) => return fail(e, json),
    };
    // A damaged confirmed or pending record needs a person: the status is
    // shown, and the exit code says so.
    let code = if s.damaged.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(code);
    }
    for d in &s.damaged {
        println!("DAMAGED:           {d}");
    }
    if let Some(o) = &s.overdue {
        println!("OVERDUE:           {o}");
    }
    println!(
        "confirmed profile: {}",
        s.confirmed.as_deref().unwrap_or("(none)")
    );
    match &s.pending {
        None => println!("pending apply:     (none)"),
        Some(p) => println!(
            "pending apply:     profile {}, rolled back in {} s unless confirmed; watcher {}",
            p.profile,
            p.deadline_ms.saturating_sub(now_ms()).div_ceil(1000),
            match (p.watcher, p.watcher_state) {
                (Some(pid), rollback::WatcherState::Alive) => format!("pid {pid} alive"),
                (Some(pid), rollback::WatcherState::Gone) =>
                    format!("pid {pid} DEAD: run `fwharden rollback` or `fwharden confirm`"),
                (Some(pid), stuck) => format!(
                    "pid {pid} {}; {} s past the deadline any fwharden command rolls back (`fwharden rollback` does now)",
                    stuck.describe(),
                    rollback::liveness::TAKEOVER_GRACE_MS / 1000
                ),
                (None, _) => "not started".into(),
            }
        ),
    }
    if let Some(p) = &s.pending {
        println!(
            "watcher lives in:  {}{}",
            p.watcher_lives.as_deref().unwrap_or("(not recorded)"),
            p.watcher_cgroup
                .as_deref()
                .map(|g| format!("; its cgroup now: {g}"))
                .unwrap_or_default()
        );
        println!("escape hatch:      {}", p.hatch);
    }
    let kernel = match s.kernel.as_str() {
        "absent" => "no fwharden table".to_string(),
        "confirmed" => "holds the confirmed ruleset".into(),
        "pending" => "holds the pending ruleset".into(),
        "pending-hatch-open" => "holds the pending ruleset, its deadline passed: the escape hatch is OPEN".into(),
        "previous" => "holds what the pending apply replaced: it was rolled back, but its record could not be cleared (`fwharden rollback` clears it)".into(),
        "drift" if !s.damaged.is_empty() => "differs from the records, and a record is DAMAGED (see above): `fwharden restore` loads the minimal safe profile ssh-only".into(),
        "drift" => "DRIFT: table inet fwharden differs from what fwharden loaded (a hand edit, or another tool); `fwharden restore` reloads the confirmed one".into(),
        other => other.to_string(),
    };
    println!("kernel:            {kernel}");
    println!("set elements:      {}", s.elements);
    // The kernel's hatch, when it says more than the pending record's
    // (it opened, or it is there with nothing pending).
    if let Some(h) = s
        .hatch
        .as_ref()
        .filter(|h| s.pending.as_ref().is_none_or(|p| &p.hatch != *h))
    {
        println!("kernel's hatch:    {h}");
    }
    if let Some(l) = &s.last_rollback {
        println!("last rollback:     {l}");
    }
    for a in &s.attempts {
        println!(
            "rollback attempt:  #{} ({}) of profile {}, {} s ago: {}",
            a.number,
            a.reason,
            a.profile,
            now_ms().saturating_sub(a.at_ms) / 1000,
            a.outcome
        );
    }
    if s.other_base_chains.is_empty() {
        println!("other tables:      none on the same hooks");
    } else {
        println!("other tables' base chains (a drop there still drops what fwharden accepts):");
        for c in &s.other_base_chains {
            println!(
                "  {} {} chain {}: hook {} priority {} policy {}",
                c.family, c.table, c.chain, c.hook, c.priority, c.policy
            );
        }
    }
    for d in &s.containers {
        println!(
            "container engine:  {} ({})",
            d.engine.name(),
            d.evidence.join(", ")
        );
    }
    println!(
        "exposure:          {} (`fwharden audit` lists them)",
        s.exposure
    );
    if let Some(w) = &s.containers_warning {
        eprintln!("fwharden: warning: {w}");
    }
    Ok(code)
}

pub fn watch(dirs: &Dirs, token: &str) -> anyhow::Result<i32> {
    match crate::rollback::watcher::run(rollback::Ports::real(), dirs, token) {
        Ok(()) => Ok(exit::OK),
        Err(e) => {
            eprintln!("{} fwharden watch: error: {e}", now_ms());
            Ok(super::codes::of_error(e))
        }
    }
}
