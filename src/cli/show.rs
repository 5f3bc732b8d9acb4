//! `fwharden show`: the ruleset a profile compiles to.

use serde_json::json;

use super::{exit, load_reporting};
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
    match hatch::find(&p.ruleset) {
        Some(h) => println!("# escape hatch: {}", h.describe()),
        None => println!("# escape hatch: none (the apply did not come over SSH)"),
    }
    print!("{}", render::nft_text(&p.ruleset));
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
