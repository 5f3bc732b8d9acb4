//! `fwharden open` and `close`: a temporary opening the kernel itself
//! closes on time (see [`crate::open`] and [`crate::ruleset::openings`]).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::json;

use crate::exit::Coded;
use crate::open::{self, OpenError};
use crate::profile::{self, SearchPath};
use crate::ruleset::openings::{OpenFrom, Port, Request};
use crate::{duration, kernel};

use super::exit;

/// A refusal (or a usage error) is printed and its code returned; a
/// failure goes up the chain, to be printed once by `main`.
fn refused(e: OpenError, json: bool) -> anyhow::Result<i32> {
    let code = e.exit_code();
    if code == exit::FAILURE {
        return Err(e.into());
    }
    if json {
        println!("{}", json!({ "ok": false, "error": e.to_string() }));
    }
    eprintln!("fwharden: {e}");
    Ok(code)
}

/// The groups of profile `name` as it reads now, for a group no rule of
/// the applied table names (the kernel has no set of it).
fn profile_groups(
    search: &SearchPath,
) -> impl Fn(&str) -> Option<BTreeMap<String, Vec<IpNet>>> + '_ {
    move |name| {
        let p = profile::load(name, search).profile?;
        Some(p.groups.into_iter().map(|(n, g)| (n, g.prefixes)).collect())
    }
}

pub fn open(
    search: &SearchPath,
    port: Port,
    from: OpenFrom,
    secs: u64,
    yes_any: bool,
    force: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let request = Request {
        port,
        from,
        // Anything past u32 is past the maximum too: the refusal says so.
        secs: u32::try_from(secs).unwrap_or(u32::MAX),
        yes_any,
        force,
    };
    let done = match open::open(&kernel::Netlink, &request, &profile_groups(search)) {
        Ok(d) => d,
        Err(e) => return refused(e, json),
    };
    if json {
        println!("{}", serde_json::to_string(&done)?);
        return Ok(exit::OK);
    }
    if force {
        eprintln!("fwharden: warning: --force: the profile's deny of {port} no longer decides it while the opening lasts");
    }
    let from: Vec<String> = done.from.iter().map(|n| n.to_string()).collect();
    println!(
        "opened {port} from {} for {}; the kernel closes it then, whatever happens to fwharden",
        from.join(", "),
        duration::human(u64::from(done.secs))
    );
    if !done.renewed.is_empty() {
        let again: Vec<String> = done.renewed.iter().map(|n| n.to_string()).collect();
        println!(
            "(already open from {}: its time starts again)",
            again.join(", ")
        );
    }
    Ok(exit::OK)
}

pub fn close(
    search: &SearchPath,
    port: Port,
    from: Option<OpenFrom>,
    json: bool,
) -> anyhow::Result<i32> {
    let groups = profile_groups(search);
    let gone = match open::close(&kernel::Netlink, port, from.as_ref(), &groups) {
        Ok(g) => g,
        Err(e) => return refused(e, json),
    };
    if json {
        println!("{}", json!({ "port": port.to_string(), "closed": gone }));
        return Ok(exit::OK);
    }
    if gone.is_empty() {
        println!(
            "{port} was not open{}",
            match &from {
                Some(_) => " from there",
                None => "",
            }
        );
    }
    for o in &gone {
        println!(
            "closed {} from {} ({} early)",
            o.port,
            o.from,
            duration::human(o.left_ms.div_ceil(1000))
        );
    }
    Ok(exit::OK)
}
