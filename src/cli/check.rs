//! `fwharden check`: validate a profile and print its warnings.

use serde_json::json;

use super::{exit, load_reporting};
use crate::profile::SearchPath;

pub fn run(
    search: &SearchPath,
    spec: &str,
    deny_warnings: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let loaded = load_reporting(search, spec, json);
    let profile = &loaded.profile;
    let warnings = loaded.warnings().count();
    let failed = profile.is_none() || (deny_warnings && warnings > 0);
    let code = if failed {
        exit::INVALID_PROFILE
    } else {
        exit::OK
    };
    if json {
        let summary = profile.as_ref().map(|p| {
            let r = crate::compile::compile(p);
            json!({
                "name": p.name,
                "file": p.location.describe(),
                "description": p.description,
                "extends": p.lineage[..p.lineage.len() - 1],
                "rules": p.rules.len(),
                "sets": r.sets.len(),
            })
        });
        let out = json!({
            "ok": !failed,
            "profile": summary,
            "errors": loaded.errors().collect::<Vec<_>>(),
            "warnings": loaded.warnings().collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }
    match profile {
        Some(p) => {
            let r = crate::compile::compile(p);
            let rules: usize = r.chains.iter().map(|c| c.rules.len()).sum();
            println!(
                "{}: ok ({} profile rules, {} kernel rules, {} sets){}",
                crate::term::safe(&p.name),
                p.rules.len(),
                rules,
                r.sets.len(),
                match warnings {
                    0 => String::new(),
                    1 => ", 1 warning".to_string(),
                    n => format!(", {n} warnings"),
                }
            );
        }
        None => {
            let errors = loaded.errors().count();
            eprintln!(
                "{}: invalid ({errors} error{}); nothing was changed",
                crate::term::safe(spec),
                if errors == 1 { "" } else { "s" }
            );
        }
    }
    Ok(code)
}
