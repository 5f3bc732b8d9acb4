//! `fwharden log`: the packets the loaded ruleset logs, one line (or, with
//! `--json`, one JSON object) each, or their summary. With
//! `nflog_group` they are read from NFLOG as they arrive; without it the
//! ruleset logs to the kernel log, and they are read from the journal
//! (`journalctl -k`), which keeps their history. Both paths hand each
//! packet, named by its profile line, to one [`Sink`]: the filters, the
//! lines, the summary and the sliding window are the same.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::exit;
use crate::nft::nflog::Subscription;
use crate::observe::journal::{Next, Query, Reader};
use crate::observe::loaded_rules;
use crate::observe::log::{Entry, Filter, Rules};
use crate::observe::summary::{Report, Summary, Window};
use crate::ruleset::Ruleset;
use crate::state::{now_ms, Dirs};

/// How long `log` reads, and from when.
pub struct Until {
    pub follow: bool,
    pub seconds: u64,
    pub count: Option<u64>,
    /// `--since`: the window's span, in seconds. On the kernel-log path
    /// the journal's packets of that span are read first.
    pub since: Option<u64>,
    /// `--journal-dir`: a journal directory instead of the system's.
    pub journal_dir: Option<PathBuf>,
}

/// What `log` prints: each packet, the summary of them all at the end, or
/// the summary of a sliding window of this many seconds (while following,
/// every [`WINDOW_EVERY`], and at the end).
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
    let rules = Rules::of(&ruleset);
    if rules.is_empty() {
        bail!(
            "profile {} logs nothing: no rule has `log`, and [defaults] log_drops is false",
            ruleset.profile
        );
    }
    let sink = Sink::new(filter, until, output, json);
    match rules.group {
        Some(group) => {
            if let Some(refused) = nflog_refuses(until, output) {
                eprintln!("fwharden: {refused}");
                return Ok(exit::USAGE);
            }
            nflog(dirs, &ruleset, rules, group, until, sink)
        }
        None => journal(&ruleset, &rules, until, sink),
    }
}

/// What the NFLOG path cannot do: it keeps no history, and reads no
/// journal.
fn nflog_refuses(until: &Until, output: Output) -> Option<&'static str> {
    if until.journal_dir.is_some() {
        return Some("--journal-dir reads the kernel log, but the loaded profile logs to NFLOG (nflog_group): leave --journal-dir out");
    }
    if until.since.is_some() && !(until.follow && matches!(output, Output::Window(_))) {
        return Some("NFLOG keeps no history, so --since ranks a window from when the command starts: add --follow --summary (or log to the journal: leave out nflog_group)");
    }
    None
}

/// Where the packets go: filtered, then printed, summed or windowed.
struct Sink {
    filter: Filter,
    output: Output,
    json: bool,
    count: Option<u64>,
    taken: u64,
    summary: Summary,
    window: Option<Window>,
    /// Following, the window is printed every [`WINDOW_EVERY`].
    periodic: bool,
    next_print: Instant,
}

impl Sink {
    fn new(filter: &Filter, until: &Until, output: Output, json: bool) -> Sink {
        Sink {
            filter: filter.clone(),
            output,
            json,
            count: until.count,
            taken: 0,
            summary: Summary::default(),
            window: match output {
                Output::Window(secs) => Some(Window::new(secs)),
                _ => None,
            },
            periodic: until.follow,
            next_print: Instant::now() + WINDOW_EVERY,
        }
    }

    /// `entry`, logged at `ms`; true once `--count` entries are taken.
    fn take(&mut self, ms: u64, entry: &Entry) -> anyhow::Result<bool> {
        if !self.filter.admits(entry) {
            return Ok(false);
        }
        match (self.output, self.json) {
            (Output::Summary, _) => self.summary.add(entry),
            (Output::Window(_), _) => {
                if let Some(w) = &mut self.window {
                    w.add(ms, entry);
                }
            }
            (Output::Packets, true) => println!("{}", serde_json::to_string(entry)?),
            (Output::Packets, false) => println!("{}", entry.text()),
        }
        self.taken += 1;
        Ok(self.count.is_some_and(|c| self.taken >= c))
    }

    /// Prints the window when it is due; how long until the next is.
    fn tick(&mut self) -> anyhow::Result<Option<Duration>> {
        let Some(w) = self.window.as_mut().filter(|_| self.periodic) else {
            return Ok(None);
        };
        if Instant::now() >= self.next_print {
            print_report(&w.report(now_ms()), self.json)?;
            self.next_print = Instant::now() + WINDOW_EVERY;
        }
        // Never a zero wait: to SO_RCVTIMEO that is none at all.
        Ok(Some(
            self.next_print
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
    }

    fn finish(mut self) -> anyhow::Result<i32> {
        match (self.output, &mut self.window) {
            (Output::Summary, _) => print_report(&self.summary.report(), self.json)?,
            (Output::Window(_), Some(w)) => print_report(&w.report(now_ms()), self.json)?,
            _ => {}
        }
        Ok(exit::OK)
    }
}

/// The time left before `deadline`, `None` without one; `Err(())` once it
/// has passed.
fn left(deadline: Option<Instant>) -> Result<Option<Duration>, ()> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(l) if !l.is_zero() => Ok(Some(l)),
            _ => Err(()),
        },
    }
}

fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn nflog(
    dirs: &Dirs,
    ruleset: &Ruleset,
    mut rules: Rules,
    group: u16,
    until: &Until,
    mut sink: Sink,
) -> anyhow::Result<i32> {
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
    'read: loop {
        let Ok(left) = left(deadline) else {
            break 'read;
        };
        let wake = sink.tick()?;
        sub.set_timeout(shorter(left, wake))?;
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
            // NFLOG keeps no history: the window is of when packets were
            // read.
            let now = now_ms();
            if sink.take(now, &rules.entry(p, now, &interface_name))? {
                break 'read;
            }
        }
    }
    sink.finish()
}

/// The kernel-log path: `journalctl -k`, each message that starts with
/// one of the loaded ruleset's log prefixes named by its rule.
fn journal(ruleset: &Ruleset, rules: &Rules, until: &Until, mut sink: Sink) -> anyhow::Result<i32> {
    let started_ms = now_ms();
    let from_ms = until
        .since
        .map(|s| started_ms.saturating_sub(s.saturating_mul(1000)));
    let query = Query {
        dir: until.journal_dir.clone(),
        since_secs: from_ms.map(|ms| ms / 1000),
        follow: until.follow,
    };
    // Without --since, what arrives for --seconds, as NFLOG reads; with
    // it, the journal's history, and then (--follow) what arrives.
    let deadline = (!until.follow && until.since.is_none())
        .then(|| Instant::now() + Duration::from_secs(until.seconds));
    let mut reader = Reader::start(&query)?;
    eprintln!(
        "fwharden: reading the kernel log from the journal{} (profile {}){}",
        match &until.journal_dir {
            Some(d) => format!(" in {}", crate::term::safe(&d.to_string_lossy())),
            None => String::new(),
        },
        ruleset.profile,
        match (until.since, until.follow) {
            (Some(s), false) => format!(" of the last {}", duration_words(s)),
            (Some(s), true) => format!(" of the last {}, then until stopped", duration_words(s)),
            (None, false) => format!(" for {} s", until.seconds),
            (None, true) => " until stopped".into(),
        }
    );
    // Window times only grow: a clock set back does not reorder them.
    let mut last_ms = 0;
    while let Ok(left) = left(deadline) {
        let wake = sink.tick()?;
        match reader.next(shorter(left, wake))? {
            Next::Record(r) => {
                if from_ms.is_some_and(|f| r.ms < f) {
                    continue;
                }
                let Some(entry) = rules.kernel_entry(&r.message, r.ms) else {
                    continue;
                };
                last_ms = last_ms.max(r.ms);
                if sink.take(last_ms, &entry)? {
                    break;
                }
            }
            Next::Idle => {}
            Next::End if until.follow => {
                bail!("journalctl stopped while following the kernel log")
            }
            Next::End => break,
        }
    }
    sink.finish()
}

fn duration_words(secs: u64) -> String {
    crate::duration::words(u32::try_from(secs).unwrap_or(u32::MAX))
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
