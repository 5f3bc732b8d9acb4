//! `fwharden audit [PROFILE]`: what on this host can be reached, and by
//! whom. Wires [`crate::audit`] to the kernel's ruleset (or to PROFILE,
//! compiled, to audit before applying) and prints the table or JSON.

use anyhow::Context;
use serde_json::json;

use super::{exit, load_reporting};
use crate::audit::reach::{Reach, Who};
use crate::audit::{self, Against, Kind, Row, Verdict};
use crate::nft::{self, NftError};
use crate::profile::SearchPath;
use crate::ruleset::Ruleset;
use crate::term::safe;

/// Where the ruleset judged against came from.
enum Judged {
    Profile(Ruleset),
    Kernel(Ruleset),
    NoTable,
    Unknown,
}

pub fn run(search: &SearchPath, spec: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let mut not_seen = Vec::new();
    let mut notes = Vec::new();
    let judged = match spec {
        Some(spec) => {
            let loaded = load_reporting(search, spec, json);
            let Some(profile) = &loaded.profile else {
                if json {
                    let out = json!({ "ok": false, "errors": loaded.errors().collect::<Vec<_>>() });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
                return Ok(exit::INVALID_PROFILE);
            };
            Judged::Profile(crate::compile::compile(profile))
        }
        None => match nft::read_table() {
            Ok(Some(r)) => Judged::Kernel(r),
            Ok(None) => {
                notes.push("no fwharden table is loaded: who can reach a port is reckoned as if nothing filtered (other firewalls are not read)".to_string());
                Judged::NoTable
            }
            Err(e @ NftError::Permission { .. }) => {
                not_seen.push(format!(
                    "the loaded ruleset ({e}): who can reach a port is unknown; run as root, or name the profile (`fwharden audit PROFILE`) to audit against it"
                ));
                Judged::Unknown
            }
            Err(e) => {
                not_seen.push(format!(
                    "the loaded ruleset ({e}): who can reach a port is unknown; name the profile to audit against it"
                ));
                Judged::Unknown
            }
        },
    };
    // Other tables on the same hooks can drop what ours accepts; they are
    // not judged, so say they are there.
    if let Ok(chains) = nft::list_base_chains() {
        for c in chains
            .iter()
            .filter(|c| c.hook == "input" || c.hook == "forward")
        {
            notes.push(format!(
                "{} {} chain {} is also on the {} hook: what it drops is not counted here",
                c.family, c.table, c.chain, c.hook
            ));
        }
    }
    let seen = audit::gather();
    not_seen.extend(seen.not_seen.iter().cloned());
    let (against, from, profile) = match &judged {
        Judged::Profile(r) => (Against::Ruleset(r), "profile", Some(r.profile.as_str())),
        Judged::Kernel(r) => (Against::Ruleset(r), "kernel", Some(r.profile.as_str())),
        Judged::NoTable => (Against::NoTable, "none", None),
        Judged::Unknown => (Against::Unknown, "unknown", None),
    };
    let rows = audit::judge(&seen.sockets, &seen.published, against);
    let unnamed = rows.iter().filter(|r| r.unnamed).count();
    let unknown = rows.iter().any(|r| r.verdict == Verdict::Unknown);
    let code = if unnamed > 0 {
        exit::EXPOSED
    } else if unknown {
        // Never fail open: a port whose reach is unknown may be exposed.
        exit::FAILURE
    } else {
        exit::OK
    };
    if json {
        let counts: serde_json::Map<String, serde_json::Value> = audit::counts(&rows)
            .into_iter()
            .map(|(v, n)| (v.to_string(), n.into()))
            .collect();
        let out = json!({
            "ruleset": { "from": from, "profile": profile },
            "rows": rows,
            "counts": counts,
            "unnamed_exposed": unnamed,
            "not_seen": not_seen,
            "notes": notes,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("cannot write the audit as JSON")?
        );
        return Ok(code);
    }
    match (from, profile) {
        ("profile", Some(p)) => println!("judged against profile {p} (not applied)"),
        ("kernel", Some(p)) => println!("judged against the loaded ruleset of profile {p}"),
        ("none", _) => println!("judged against no fwharden table (none is loaded)"),
        _ => println!("no ruleset to judge against: only loopback can be told"),
    }
    print_table(&rows);
    println!("summary: {}", audit::summary(&rows));
    for n in &notes {
        println!("note: {n}");
    }
    for n in &not_seen {
        eprintln!("fwharden: could not see: {n}");
    }
    if unnamed > 0 {
        eprintln!(
            "fwharden: {unnamed} port(s) reachable from anywhere that the profile does not name (exit {})",
            exit::EXPOSED
        );
    }
    Ok(code)
}

fn print_table(rows: &[Row]) {
    let lines: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let port = if r.port == r.port_last {
                r.port.to_string()
            } else {
                format!("{}-{}", r.port, r.port_last)
            };
            let address = match (&r.address, &r.interface) {
                (Some(a), Some(i)) => format!("{a}%{i}"),
                (Some(a), None) => a.to_string(),
                (None, _) => "-".into(),
            };
            let owner = match (r.kind, &r.process, &r.container) {
                // Any local user names its processes (prctl), and containers
                // are named by whoever runs them: escaped for the terminal.
                (Kind::Published, _, Some(c)) => format!("container {}", safe(c)),
                (Kind::Profile, _, _) => "(profile)".into(),
                (_, Some(p), _) => format!("{} ({})", safe(&p.name), p.pid),
                (_, None, _) => match r.uid {
                    Some(uid) => format!("? (uid {uid})"),
                    None => "?".into(),
                },
            };
            let mut who = who_text(r);
            if let Some(n) = &r.named_by {
                who.push_str(&format!("  [{n}]"));
            } else if r.unnamed {
                who.push_str("  [NOT NAMED by any rule]");
            }
            [
                r.verdict.to_string(),
                r.protocol.as_str().to_string(),
                port,
                address,
                owner,
                who,
            ]
        })
        .collect();
    let header = ["VERDICT", "PROTO", "PORT", "ADDRESS", "PROCESS", "WHO"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.len());
    for l in &lines {
        for (w, cell) in widths.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let advice = std::iter::once(None).chain(rows.iter().map(|r| r.advice.as_deref()));
    for (l, advice) in std::iter::once(&header).chain(&lines).zip(advice) {
        let cells: Vec<String> = l[..5]
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}  {}", cells.join("  "), l[5]);
        // What to do, under the row it is about.
        if let Some(a) = advice {
            println!("{:w$}  -> {a}", "", w = widths[0]);
        }
    }
}

/// The "who" column: `anyone`, `wg0: wg-net; other: nobody`.
fn who_text(r: &Row) -> String {
    match r.verdict {
        Verdict::Loopback => return "loopback only".into(),
        Verdict::Unknown => return "unknown".into(),
        Verdict::Uncovered => return "whoever the container engine lets in".into(),
        _ => {}
    }
    let reach = |w: &Who| match &w.reach {
        Reach::Anyone => "anyone".to_string(),
        Reach::Nobody => "nobody".to_string(),
        Reach::Sources(s) => s.join(", "),
    };
    match r.who.as_slice() {
        [w] if w.interface == "any" => reach(w),
        many => many
            .iter()
            .map(|w| format!("{}: {}", w.interface, reach(w)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}
