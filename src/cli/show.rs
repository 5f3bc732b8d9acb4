//! `fwharden show`: the ruleset a profile compiles to.

use serde_json::json;

use super::{exit, load_reporting};
use crate::profile::SearchPath;
use crate::{render, ruleset};

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
    let ruleset = ruleset::compile(profile);
    if json {
        println!("{}", serde_json::to_string_pretty(&ruleset)?);
    } else {
        print!("{}", render::nft_text(&ruleset));
    }
    Ok(exit::OK)
}
