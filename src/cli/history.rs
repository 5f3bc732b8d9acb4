//! `fwharden history`: the last confirmed rulesets; and `fwharden rollback
//! --to`, which loads one of them again as an apply does (the probe, the
//! lockout guard, the escape hatch, the rollback timer, the confirm).

use serde_json::json;

use super::apply::{self, Probing};
use super::exit;
use crate::duration;
use crate::rollback::history::{self, Pick};
use crate::rollback::ApplyOptions;
use crate::state::{Dirs, Listed};

/// `rollback --to` and the options it shares with `apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackTo {
    /// Instead of the pending apply, load a ruleset confirmed earlier, with
    /// the rollback timer as an apply: `previous` (the one confirmed before
    /// the last confirm) or an entry number of `fwharden history`.
    #[arg(long, value_name = "N|previous")]
    pub to: Option<Pick>,
    /// With --to: how long until the ruleset confirmed now comes back
    /// unless confirmed (600, 90s, 10m, 1h; at most 1d).
    #[arg(long, default_value = "60", value_name = "DURATION", value_parser = duration::arg(1, 86400), requires = "to")]
    pub timeout: u64,
    /// With --to: load it even if it would refuse new connections from
    /// your SSH client.
    #[arg(long, requires = "to")]
    pub force: bool,
    /// With --to: say who would gain and lose access; change nothing.
    #[arg(long, requires = "to")]
    pub dry_run: bool,
    /// With --to: as --dry-run, and print the nft text that changes.
    #[arg(long, requires = "to")]
    pub diff: bool,
    /// With --to, emergencies only: do not prove it with real packets in
    /// a replica first.
    #[arg(long, requires = "to")]
    pub no_probe: bool,
}

/// `2026-12-05 07:40:12 UTC` for seconds since the epoch.
fn when(secs: u64) -> String {
    let iso = duration::iso8601_ms(secs * 1000);
    format!("{} {} UTC", &iso[..10], &iso[11..19])
}

pub fn list(dirs: &Dirs, json: bool) -> anyhow::Result<i32> {
    let listed = dirs.history()?;
    let disabled = dirs.disabled()?;
    // A damaged entry needs a person: listed, and the exit code says so.
    let code = if listed.iter().any(|l| l.head.is_err()) {
        exit::FAILURE
    } else {
        exit::OK
    };
    if json {
        let entries: Vec<_> = listed
            .iter()
            .map(|Listed { id, head }| match head {
                Ok(h) => json!(h),
                Err(e) => json!({ "id": id, "damaged": e.to_string() }),
            })
            .collect();
        let out = json!({ "ok": code == exit::OK, "disabled": disabled, "entries": entries });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }
    if listed.is_empty() {
        println!("no confirmed ruleset yet: every confirm (`fwharden confirm`, `apply --auto-confirm`) is kept here");
        return Ok(code);
    }
    println!(
        "the last confirmed rulesets, newest first (at most {}):",
        crate::state::HISTORY_KEPT
    );
    let width = listed
        .iter()
        .filter_map(|l| l.head.as_ref().ok())
        .map(|h| h.profile.len())
        .max()
        .unwrap_or(0);
    for (i, Listed { id, head }) in listed.iter().enumerate() {
        let mark = match i {
            0 => "  (newest)",
            1 => "  (previous)",
            _ => "",
        };
        match head {
            Ok(h) => println!(
                "  {id:>3}  {}  {:width$}  {}{mark}",
                when(h.confirmed_at),
                crate::term::safe(&h.profile).to_string(),
                h.summary
            ),
            Err(e) => println!("  {id:>3}  DAMAGED: {e}"),
        }
    }
    if let Some(d) = &disabled {
        println!(
            "fwharden is DISABLED since {}: `fwharden enable` loads profile {} again",
            when(d.since),
            d.profile
        );
    }
    println!("`fwharden rollback --to N` (or `--to previous`) loads one again, with the rollback timer, as an apply does");
    Ok(code)
}

pub fn rollback_to(dirs: &Dirs, pick: Pick, args: &RollbackTo, json: bool) -> anyhow::Result<i32> {
    let entry = match history::pick(dirs, pick) {
        Ok(e) => e,
        Err(e) => return super::safety::fail(e, json),
    };
    if !json {
        println!(
            "rollback --to {pick}: history entry {}, profile {}, confirmed {} ({})",
            entry.head.id,
            crate::term::safe_lines(&entry.head.profile),
            when(entry.head.confirmed_at),
            entry.head.summary
        );
    }
    let opts = ApplyOptions {
        timeout: args.timeout,
        auto_confirm: false,
        force: args.force,
        dry_run: args.dry_run || args.diff,
        operator: crate::sshclient::find(),
        proven: false,
    };
    let probing = Probing::of_record(args.no_probe);
    let watch = crate::progress::wanted(json).then(crate::progress::start);
    apply::load(
        dirs,
        &entry.ruleset,
        &opts,
        &probing,
        args.diff,
        json,
        watch,
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::Pick;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fwharden").chain(args.iter().copied()))
    }

    #[test]
    fn rollback_takes_apply_s_options_only_with_to() {
        match parse(&["rollback", "--to", "previous", "--timeout", "2m"])
            .unwrap()
            .command
        {
            Command::Rollback { to } => {
                assert_eq!(to.to, Some(Pick::Previous));
                assert_eq!(to.timeout, 120);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["rollback"]).unwrap().command {
            Command::Rollback { to } => assert_eq!(to.to, None),
            other => panic!("{other:?}"),
        }
        for args in [
            &["rollback", "--timeout", "10"][..],
            &["rollback", "--dry-run"],
            &["rollback", "--to", "0"],
            &["rollback", "--to", "last"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
