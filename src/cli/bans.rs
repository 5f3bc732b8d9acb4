//! `fwharden ban`, `unban` and `bans`: one element of table
//! `inet fwharden-bans` added, removed or listed, nothing else touched.
//! fail2ban's action file and CrowdSec's bouncer write the same sets.

use std::net::IpAddr;

use anyhow::Context;
use serde_json::json;

use crate::nft::{self, Banned, Unbanned};
use crate::rollback::interlock;
use crate::ruleset::ban_guard;
use crate::ruleset::bans::BAN_TABLE;
use crate::{hostaddr, sshclient};

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

/// What the ban guard needs to know about this host and its operator.
/// Only a client known to be this session's counts as the operator: the
/// environment, or an sshd connection held by an ancestor. A guess among
/// the connections to sshd would protect exactly the attacker fail2ban is
/// banning, who is connected to sshd right now.
fn guard_context(exempt: &[ipnet::IpNet]) -> ban_guard::Context {
    let operator = sshclient::find();
    let known = matches!(
        operator.how,
        sshclient::How::Environment { .. } | sshclient::How::SshdAncestor { .. }
    );
    let host = hostaddr::addresses();
    ban_guard::Context {
        operator: if known {
            operator.clients.iter().map(|c| c.client).collect()
        } else {
            Vec::new()
        },
        operator_how: operator.describe(),
        host: host.iter().map(|h| (h.addr, h.interface.clone())).collect(),
        broadcasts: host.iter().filter_map(|h| h.broadcast).collect(),
        exempt: exempt.to_vec(),
    }
}

fn refused(addr: IpAddr, why: &str, json: bool) -> anyhow::Result<i32> {
    if json {
        println!("{}", json!({ "ok": false, "addr": addr, "error": why }));
    }
    eprintln!("fwharden: refused: {why}");
    Ok(exit::REFUSED)
}

/// An IPv4-mapped IPv6 address is how dual-stack daemons log IPv4 clients;
/// the kernel sees those packets as IPv4, so the ban goes into the IPv4 set.
fn as_seen(addr: IpAddr) -> IpAddr {
    let seen = sshclient::unmap(addr);
    if seen != addr {
        eprintln!("fwharden: {addr} is an IPv4-mapped address: taken as {seen}, as the kernel sees its packets");
    }
    seen
}

pub fn ban(addr: IpAddr, timeout: Option<u64>, force: bool, json: bool) -> anyhow::Result<i32> {
    interlock()?;
    let addr = as_seen(addr);
    // Nothing is listed: a listing of the ban sets can be cut short by the
    // very commits a busy fail2ban makes (see `nft::ban`).
    if !nft::bans_enabled().context("looking for the ban table")? {
        let off = nft::NftError::NoBans {
            table: BAN_TABLE.into(),
        };
        return refused(addr, &off.to_string(), json);
    }
    let exempt: Vec<ipnet::IpNet> = nft::exempt_net(addr)
        .context("looking the address up in the exempt sets")?
        .into_iter()
        .collect();
    let refusals = ban_guard::check(addr, &guard_context(&exempt));
    if let Some(r) = refusals.iter().find(|r| !force || !r.overridable()) {
        return refused(addr, &r.describe(addr), json);
    }
    for r in &refusals {
        eprintln!("fwharden: warning: --force: {}", r.describe(addr));
    }
    let done = match nft::ban(addr, timeout) {
        Ok(d) => d,
        Err(e @ nft::NftError::NoBans { .. }) => return refused(addr, &e.to_string(), json),
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
    let addr = as_seen(addr);
    let done = match nft::unban(addr) {
        Ok(d) => d,
        Err(e @ nft::NftError::NoBans { .. }) => {
            eprintln!("fwharden: refused: {e}");
            return Ok(super::codes::of_error(e));
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
