//! `fwharden probe`: prove a profile with real packets in a replica of
//! network namespaces, and print what every probe saw.

use std::time::Duration;

use serde_json::json;

use super::{exit, load_reporting};
use crate::probe::{self, ProbeError};
use crate::profile::SearchPath;

pub fn run(search: &SearchPath, spec: &str, wait: Duration, json: bool) -> anyhow::Result<i32> {
    let loaded = load_reporting(search, spec, json);
    let Some(profile) = &loaded.profile else {
        if json {
            let out = json!({ "ok": false, "errors": loaded.errors().collect::<Vec<_>>() });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        eprintln!("fwharden: the profile is invalid; nothing was probed");
        return Ok(exit::INVALID_PROFILE);
    };
    let ruleset = crate::compile::compile(profile);
    match probe::prove(&ruleset, wait) {
        Ok(report) => {
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["ok"] = json!(report.passed);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", report.table());
            }
            Ok(if report.passed {
                exit::OK
            } else {
                exit::PROBE_FAILED
            })
        }
        Err(e) => {
            if json {
                let out = json!({ "ok": false, "probed": false, "error": e.to_string() });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            eprintln!(
                "fwharden: error: {}; {}",
                crate::term::safe_lines(&e.to_string()),
                hint(&e)
            );
            Ok(exit::FAILURE)
        }
    }
}

/// What a person can do about a probe that could not run.
pub(super) fn hint(e: &ProbeError) -> &'static str {
    match e {
        ProbeError::Unavailable(_) => {
            "the probe needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip` from iproute2; nothing was proven"
        }
        _ => "nothing was proven",
    }
}
