//! `fwharden show`: the ruleset a profile compiles to, the one the kernel
//! holds, the pending apply's, or a profile's TOML as written.

use serde_json::json;

use anyhow::Context;

use super::{exit, load_reporting};
use crate::nft;
use crate::profile::SearchPath;
use crate::render;
use crate::ruleset::hatch;
use crate::state::Dirs;

/// `show --pending`: the ruleset the pending apply loaded, hatch included,
/// from the record (what the kernel should hold until confirm).
pub fn pending(dirs: &Dirs, json: bool) -> anyhow::Result<i32> {
    let Some(p) = dirs.pending()? else {
        eprintln!("fwharden: nothing is pending");
        return Ok(exit::FAILURE);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&p.ruleset)?);
        return Ok(exit::OK);
    }
    let Some(ruleset) = &p.ruleset else {
        println!("# the pending apply is `fwharden disable`: no table inet fwharden");
        return Ok(exit::OK);
    };
    match hatch::find(ruleset) {
        Some(h) => println!("# escape hatch: {}", h.describe()),
        None => println!("# escape hatch: none (the apply did not come over SSH)"),
    }
    print!("{}", render::nft_text(ruleset));
    Ok(exit::OK)
}

/// `show` with no profile: what the kernel holds in table inet fwharden,
/// read back over netlink into the model and rendered as `show PROFILE`
/// renders, so the two can be compared line by line.
pub fn loaded(json: bool) -> anyhow::Result<i32> {
    let table = nft::read_table().context("could not read table inet fwharden from the kernel")?;
    let Some(ruleset) = table else {
        if json {
            println!("null");
        }
        eprintln!("fwharden: no table inet fwharden is loaded: nothing is applied (`fwharden apply PROFILE` loads one)");
        return Ok(exit::OK);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&ruleset)?);
        return Ok(exit::OK);
    }
    if let Some(h) = hatch::find(&ruleset) {
        println!("# escape hatch: {}", h.describe());
    }
    print!("{}", render::nft_text(&ruleset));
    Ok(exit::OK)
}

/// `show --source NAME`: the profile's TOML as found, built-in ones
/// included (they have no file after `cargo install`).
pub fn source(search: &SearchPath, spec: &str, json: bool) -> anyhow::Result<i32> {
    let found = match search.find(spec) {
        Ok(found) => found,
        Err(d) => {
            if json {
                let out = json!({ "ok": false, "errors": [d] });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                eprintln!("{d}");
            }
            return Ok(exit::INVALID_PROFILE);
        }
    };
    if json {
        let out = json!({
            "name": found.name,
            "location": found.location.path(),
            "text": found.text,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", found.text);
    }
    Ok(exit::OK)
}

pub fn run(search: &SearchPath, spec: &str, json: bool) -> anyhow::Result<i32> {
    let loaded = load_reporting(search, spec, json);
    let profile = &loaded.profile;
    let Some(profile) = profile else {
        if json {
            let out = json!({ "ok": false, "errors": loaded.errors().collect::<Vec<_>>() });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        return Ok(exit::INVALID_PROFILE);
    };
    let ruleset = crate::compile::compile(profile);
    if json {
        println!("{}", serde_json::to_string_pretty(&ruleset)?);
    } else {
        print!("{}", render::nft_text(&ruleset));
    }
    Ok(exit::OK)
}
