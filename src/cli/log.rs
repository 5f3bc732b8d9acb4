//! `fwharden log`: the packets the loaded ruleset logs to NFLOG, one line
//! (or, with `--json`, one JSON object) each, as they arrive.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::exit;
use crate::nft::nflog::Subscription;
use crate::observe::loaded_rules;
use crate::observe::log::{Filter, Rules};
use crate::observe::summary::{Report, Summary, Window};
use crate::state::{now_ms, Dirs};

/// How long `log` reads without `--follow`.
pub struct Until {
    pub follow: bool,
    pub seconds: u64,
    pub count: Option<u64>,
}

/// What `log` prints: each packet, the summary of them all at the end, or
/// the summary of a sliding window of this many seconds, every
/// [`WINDOW_EVERY`] and at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Packets,
    Summary,
    Window(u64),
}

/// How often a following `--summary --since` prints its window.
const WINDOW_EVERY: Duration = Duration::from_secs(10);

pub fn run(
    dirs: &Dirs,
    filter: &Filter,
    until: &Until,
    output: Output,
    json: bool,
) -> anyhow::Result<i32> {
    let Some(ruleset) = loaded_rules(dirs)? else {
        bail!("table inet fwharden is not loaded: nothing logs; apply a profile first");
    };
    let mut rules = Rules::of(&ruleset);
    let Some(group) = rules.group else {
        bail!(
            "profile {} logs to the kernel log (read it with `journalctl -k`); set [defaults] nflog_group = 7 in the profile and apply it to read logged packets here",
            ruleset.profile
        );
    };
    let mut sub = Subscription::bind(group)?;
    let deadline = (!until.follow).then(|| Instant::now() + Duration::from_secs(until.seconds));
    eprintln!(
        "fwharden: reading NFLOG group {group} (profile {}){}",
        ruleset.profile,
        match deadline {
            Some(_) => format!(" for {} s", until.seconds),
            None => " until stopped".into(),
        }
    );
    let mut printed = 0u64;
    let mut summary = Summary::default();
    let mut window = match output {
        Output::Window(secs) => Some(Window::new(secs)),
        _ => None,
    };
    let mut next_print = Instant::now() + WINDOW_EVERY;
    'read: loop {
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => break 'read,
            },
            None => None,
        };
        if let Some(w) = &mut window {
            if Instant::now() >= next_print {
                print_report(&w.report(now_ms()), json)?;
                next_print = Instant::now() + WINDOW_EVERY;
            }
        }
        // A window wakes to print it even when nothing arrives (never
        // with a zero timeout, which is none at all to SO_RCVTIMEO).
        let wake = window.as_ref().map(|_| {
            next_print
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        sub.set_timeout(match (left, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })?;
        let Some(packets) = sub.receive()? else {
            eprintln!("fwharden: warning: the kernel dropped logged packets while this command was behind (its netlink queue overflowed)");
            continue;
        };
        for p in &packets {
            if !rules.knows(&p.prefix) {
                // The ruleset may have changed since it was read.
                if let Some(r) = loaded_rules(dirs)? {
                    rules = Rules::of(&r);
                }
            }
            let entry = rules.entry(p, now_ms(), &interface_name);
            if !filter.admits(&entry) {
                continue;
            }
            match (output, json) {
                (Output::Summary, _) => summary.add(&entry),
                (Output::Window(_), _) => {
                    if let Some(w) = &mut window {
                        w.add(now_ms(), &entry);
                    }
                }
                (Output::Packets, true) => println!("{}", serde_json::to_string(&entry)?),
                (Output::Packets, false) => println!("{}", entry.text()),
            }
            printed += 1;
            if until.count.is_some_and(|c| printed >= c) {
                break 'read;
            }
        }
    }
    match (output, &mut window) {
        (Output::Summary, _) => print_report(&summary.report(), json)?,
        (Output::Window(_), Some(w)) => print_report(&w.report(now_ms()), json)?,
        _ => {}
    }
    Ok(exit::OK)
}

/// A summary: one JSON object (on one line while following, so each
/// print is a line a reader can take), or the text.
fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    match (json, report.since_secs) {
        (true, Some(_)) => println!("{}", serde_json::to_string(report)?),
        (true, None) => println!("{}", serde_json::to_string_pretty(report)?),
        (false, _) => print!("{}", report.text()),
    }
    Ok(())
}

/// The name of interface `index` in this network namespace, if it has one.
fn interface_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires; it
    // writes a NUL-terminated name there or returns NULL.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL: `buf` now holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
