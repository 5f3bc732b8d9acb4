//! `fwharden ban`, `unban` and `bans`: one element of table
//! `inet fwharden-bans` added, removed or listed, nothing else touched.
//! fail2ban's action file and CrowdSec's bouncer write the same sets.

use std::net::IpAddr;

use anyhow::Context;
use serde_json::json;

use crate::nft::{self, Banned, Unbanned};
use crate::rollback::interlock;

use super::exit;

/// `--timeout 10m`: the forms `[bans] timeout` takes.
pub fn parse_timeout(s: &str) -> Result<u64, String> {
    match crate::profile::parse::parse_duration(s) {
        Some(secs @ 1..=31_536_000) => Ok(u64::from(secs)),
        _ => Err(format!(
            "`{s}` is not a duration from 1 second to 365 days: write 600, 90s, 10m, 1h or 7d"
        )),
    }
}

pub fn ban(addr: IpAddr, timeout: Option<u64>, json: bool) -> anyhow::Result<i32> {
    interlock()?;
    let done = match nft::ban(addr, timeout) {
        Ok(d) => d,
        Err(e @ (nft::NftError::Exempt { .. } | nft::NftError::NoBans { .. })) => {
            eprintln!("fwharden: refused: {e}");
            return Ok(exit::REFUSED);
        }
        Err(e) => return Err(e).with_context(|| format!("banning {addr}")),
    };
    let how = timeout.map_or_else(|| "the set's default timeout".into(), |t| format!("{t} s"));
    if json {
        println!(
            "{}",
            json!({ "addr": addr, "state": done, "timeout_secs": timeout })
        );
    } else {
        match done {
            Banned::Added => println!("banned {addr} for {how}"),
            Banned::Renewed => println!("{addr} was banned already: banned again for {how}"),
        }
    }
    Ok(exit::OK)
}

pub fn unban(addr: IpAddr, json: bool) -> anyhow::Result<i32> {
    interlock()?;
    let done = match nft::unban(addr) {
        Ok(d) => d,
        Err(e @ nft::NftError::NoBans { .. }) => {
            eprintln!("fwharden: refused: {e}");
            return Ok(exit::REFUSED);
        }
        Err(e) => return Err(e).with_context(|| format!("unbanning {addr}")),
    };
    if json {
        println!("{}", json!({ "addr": addr, "state": done }));
    } else {
        match done {
            Unbanned::Removed => println!("unbanned {addr}"),
            Unbanned::NotBanned => println!("{addr} was not banned"),
        }
    }
    Ok(exit::OK)
}

pub fn list(json: bool) -> anyhow::Result<i32> {
    let state = nft::ban_state().context("reading the ban sets")?;
    if json {
        let out = match &state {
            None => json!({ "enabled": false, "enforced": false, "bans": [] }),
            Some(s) => json!({
                "enabled": true,
                "enforced": s.enforced,
                "exempt": s.exempt,
                "bans": s.bans,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::OK);
    }
    let Some(state) = state else {
        println!("bans are off: there is no table inet fwharden-bans");
        return Ok(exit::OK);
    };
    if !state.enforced {
        println!("bans are kept but not enforced: the applied profile has no [bans] enabled");
    }
    if state.bans.is_empty() {
        println!("no bans");
    }
    for b in &state.bans {
        let left = b
            .expires_secs
            .map_or_else(|| "never expires".to_string(), |s| format!("{s} s left"));
        println!("{:39}  {:11}  {left}", b.addr.to_string(), b.set);
    }
    Ok(exit::OK)
}
