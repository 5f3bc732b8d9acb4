//! `fwharden confirm`, `rollback`, `restore`, `status`, and the hidden
//! `watch` the apply starts.

use serde_json::json;

use super::exit;
use crate::profile::{self, SearchPath};
use crate::rollback::{self, Kept, Restored, RollbackError};
use crate::ruleset;
use crate::state::{now_ms, Dirs};

pub(super) fn fail(e: RollbackError, json: bool) -> anyhow::Result<i32> {
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
        Ok(Kept::Ruleset { profile }) if json => {
            println!("{}", json!({ "ok": true, "confirmed": profile }))
        }
        Ok(Kept::Disabled { profile }) if json => println!(
            "{}",
            json!({ "ok": true, "confirmed": null, "disabled": true, "enable_loads": profile })
        ),
        Ok(Kept::Ruleset { profile }) => {
            println!("confirmed profile {profile}: it is what `fwharden restore` loads at boot")
        }
        Ok(Kept::Disabled { profile }) => println!(
            "confirmed the disable: fwharden's table stays removed, and `fwharden restore` at boot loads nothing until `fwharden enable` (which loads profile {profile} again, with the rollback timer) or the next apply"
        ),
        Err(e) => return fail(e, json),
    }
    Ok(exit::OK)
}

pub fn rollback(dirs: &Dirs, json: bool) -> anyhow::Result<i32> {
    match rollback::rollback(rollback::Ports::real(), dirs) {
        Ok(None) if json => println!(
            "{}",
            json!({ "ok": true, "rolled_back": null, "hint": nothing_pending(dirs) })
        ),
        Ok(p) if json => println!(
            "{}",
            json!({ "ok": true, "rolled_back": p.map(|p| p.profile) })
        ),
        Ok(Some(p)) if p.ruleset.is_none() => {
            println!("rolled back the disable: restored {}", p.previous_name())
        }
        Ok(Some(p)) => println!(
            "rolled back profile {}: restored {}",
            p.profile,
            p.previous_name()
        ),
        Ok(None) => println!("{}", nothing_pending(dirs)),
        Err(e) => return fail(e, json),
    }
    Ok(exit::OK)
}

/// What `rollback` says with nothing pending: a confirm is undone by
/// loading the ruleset before it (`rollback --to previous`), a disable by
/// `enable`.
fn nothing_pending(dirs: &Dirs) -> String {
    let nothing = "nothing is pending: nothing to roll back";
    match (dirs.disabled(), dirs.confirmed()) {
        (Ok(Some(d)), _) => format!(
            "{nothing}. fwharden is disabled (confirmed): `fwharden enable` loads profile {} again",
            d.profile
        ),
        (_, Ok(Some(c))) => format!(
            "{nothing}: profile {} is confirmed. To go back to the ruleset confirmed before it: `fwharden rollback --to previous` (with the rollback timer; `fwharden history` lists them all)",
            c.profile
        ),
        _ => nothing.into(),
    }
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
        Restored::Disabled {
            enable_loads,
            discarded_pending,
        } => {
            if let Some(p) = discarded_pending {
                println!("discarded the unconfirmed apply of profile {p}");
            }
            println!("fwharden is disabled: no fwharden ruleset is loaded (`fwharden enable` loads profile {enable_loads} again)");
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
    if let Some(d) = &s.disabled {
        println!(
            "DISABLED:          since {} ago (a confirmed `fwharden disable`): no fwharden table, and `fwharden restore` at boot loads none; `fwharden enable` loads profile {} again",
            crate::duration::human(crate::state::now().saturating_sub(d.since)),
            d.profile
        );
    }
    match &s.pending {
        None => println!("pending apply:     (none)"),
        Some(p) => println!(
            "pending apply:     profile {}, rolled back in {} unless confirmed; watcher {}",
            p.profile,
            crate::duration::human(p.deadline_ms.saturating_sub(now_ms()).div_ceil(1000)),
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
        "disabled" => "no fwharden table: fwharden is DISABLED".into(),
        "pending-disable" => "no fwharden table: the pending `fwharden disable` removed it".into(),
        "confirmed" => "holds the confirmed ruleset".into(),
        "pending" => "holds the pending ruleset".into(),
        "pending-hatch-open" => "holds the pending ruleset, its deadline passed: the escape hatch is OPEN".into(),
        "previous" => "holds what the pending apply replaced: it was rolled back, but its record could not be cleared (`fwharden rollback` clears it)".into(),
        "drift" if !s.damaged.is_empty() => "differs from the records, and a record is DAMAGED (see above): `fwharden restore` loads the minimal safe profile ssh-only".into(),
        "drift" if s.disabled.is_some() => "DRIFT: fwharden is disabled, yet table inet fwharden is loaded (a hand edit, or another tool); `fwharden restore` removes it, `fwharden enable` loads the confirmed ruleset".into(),
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
    print_rules(&s);
    print_openings(&s);
    if let Some(l) = &s.last_rollback {
        println!("last rollback:     {l}");
    }
    for a in &s.attempts {
        println!(
            "rollback attempt:  #{} ({}) of profile {}, {} ago: {}",
            a.number,
            a.reason,
            a.profile,
            crate::duration::human(now_ms().saturating_sub(a.at_ms) / 1000),
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

/// The temporary openings, one a line, with the time each has left.
fn print_openings(s: &crate::status::Status) {
    if let Some(why) = &s.openings_unreadable {
        println!("openings:          unreadable: {why}");
    } else if s.openings.is_empty() {
        println!("openings:          none");
    }
    for o in &s.openings {
        println!(
            "opening:           {} from {}: {} left (of {}); `fwharden close {} --from {}` ends it",
            o.port,
            o.from,
            crate::duration::human(o.left_ms.div_ceil(1000)),
            crate::duration::human(o.timeout_ms.div_ceil(1000)),
            o.port,
            o.from
        );
    }
}

/// What the loaded table allows, one profile rule a line, with what each
/// has matched since the table was loaded, and what each policy took.
fn print_rules(s: &crate::status::Status) {
    if let Some(why) = &s.rules_unreadable {
        println!("rules:             unreadable: {why}");
    }
    let Some(now) = &s.rules else { return };
    println!(
        "rules of {} (packets matched since the table was loaded):",
        crate::term::safe_lines(&now.profile)
    );
    // A rule of the defaults is named by what it is for, after the
    // column of profile lines.
    let column = |r: &crate::observe::rules::RuleNow| -> (String, String) {
        match r.rule.origin.strip_prefix("defaults: ") {
            Some(name) => {
                let name = name.strip_prefix("containers: ").unwrap_or(name);
                ("defaults".into(), format!("{name}: {}", r.words))
            }
            None => (r.rule.origin.clone(), r.words.clone()),
        }
    };
    let width = now
        .rules
        .iter()
        .map(|r| column(r).0.len())
        .max()
        .unwrap_or(0);
    let mut chain = "";
    for r in &now.rules {
        if r.rule.chain != chain {
            chain = &r.rule.chain;
            println!("  {chain}:");
        }
        let (origin, words) = column(r);
        let over = match r.over_limit_packets {
            Some(n) if n > 0 => format!("; {} over the limit, dropped", count(n)),
            _ => String::new(),
        };
        println!(
            "    {origin:width$}  {}: {}{over}",
            crate::term::safe_lines(&words),
            traffic(r.packets, r.bytes)
        );
    }
    for p in &now.policies {
        let took = match (p.packets, p.bytes) {
            (Some(n), Some(b)) => traffic(n, b),
            _ => "not counted (the chain was loaded without statistics)".into(),
        };
        println!("  {} policy {}: {took}", p.chain, p.policy);
    }
}

/// `1,234 packets (98.1 KB)`, or `no packets`.
fn traffic(packets: u64, bytes: u64) -> String {
    if packets == 0 {
        return "no packets".into();
    }
    let unit = if packets == 1 { "packet" } else { "packets" };
    format!("{} {unit} ({})", count(packets), size(bytes))
}

/// 1234567 as `1,234,567`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in decimal units: `512 B`, `98.1 KB`, `3.2 GB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn watch(dirs: &Dirs, token: &str) -> anyhow::Result<i32> {
    match crate::rollback::watcher::run(rollback::Ports::real(), dirs, token) {
        Ok(()) => Ok(exit::OK),
        Err(e) => {
            eprintln!(
                "{} fwharden watch: error: {e}",
                crate::duration::iso8601_ms(now_ms())
            );
            Ok(super::codes::of_error(e))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_and_sizes_read_as_a_person_writes_them() {
        assert_eq!(super::count(0), "0");
        assert_eq!(super::count(999), "999");
        assert_eq!(super::count(1234567), "1,234,567");
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(98_100), "98.1 KB");
        assert_eq!(super::size(3_200_000_000), "3.2 GB");
        assert_eq!(super::traffic(1, 60), "1 packet (60 B)");
    }
}
