//! Compares what the probes saw with what the plan expects, and prints it:
//! one row per probe, mismatches and inconclusive probes first.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::plan::{Destination, Outcome, Plan};
use super::replica::trace::Coverage;
use super::replica::Observed;
use super::send::Got;

/// How a row came out. Ordered as the table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Mismatch,
    /// The probe could not tell: it fails the run too.
    Inconclusive,
    Match,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub status: Status,
    pub source: IpAddr,
    pub interface: String,
    /// `22/tcp`, `ping`, or for a rate limit `22/tcp #1` and `22/tcp by #16`.
    pub service: String,
    /// The host itself, or a port it publishes for a container.
    pub to: Destination,
    pub expected: Outcome,
    pub got: Got,
    /// The rule that decides, by the model.
    pub rule: String,
    /// The rule that decided, by the kernel's trace of the probe's first
    /// packet; `None` when the run was not traced (emitted rules, no nft
    /// program) or the packet was not heard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_rule: Option<String>,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub profile: String,
    pub passed: bool,
    pub probes: usize,
    pub mismatches: usize,
    pub inconclusive: usize,
    pub elapsed_ms: u64,
    /// What was not probed, and why.
    pub notes: Vec<String>,
    /// The rules of fwharden's table some probe's packet matched, by the
    /// kernel's trace; `None` when the run was not traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    pub rows: Vec<Row>,
}

fn status(expected: Outcome, got: &Got) -> Status {
    match got {
        Got::Seen(o) if *o == expected => Status::Match,
        Got::Seen(_) => Status::Mismatch,
        Got::Inconclusive(_) => Status::Inconclusive,
    }
}

impl Report {
    pub fn compare(plan: &Plan, observed: &Observed, elapsed: Duration) -> Report {
        let mut rows: Vec<Row> = plan
            .probes
            .iter()
            .zip(&observed.probes)
            .enumerate()
            .map(|(i, (p, got))| {
                let kernel_rule = observed.decided.get(i).cloned().flatten();
                // The answer can be right for the wrong reason: another
                // rule than the model's decided, by the kernel's account.
                let (status, why) = match &kernel_rule {
                    Some(k) if *k != p.rule => (
                        Status::Mismatch,
                        format!("{}; the kernel's trace says {k} decided", p.why),
                    ),
                    _ => (status(p.expected, got), p.why.clone()),
                };
                Row {
                    status,
                    source: p.source,
                    interface: p.interface.clone(),
                    service: p.service.to_string(),
                    to: p.to,
                    expected: p.expected,
                    got: got.clone(),
                    rule: p.rule.clone(),
                    kernel_rule,
                    why,
                }
            })
            .collect();
        for (r, seen) in plan.rate_probes.iter().zip(&observed.rates) {
            let why = format!("per-source rate limit {}", r.rate);
            // A published leg's first is its source's second attempt: the
            // host's first went before it, on the same bucket.
            let (first, first_why) = match r.with_host {
                false => ("#1", "the first connection passes"),
                true => ("#2", "after the host's #1 on the same bucket, it passes"),
            };
            rows.push(Row {
                status: status(r.first, &seen.first),
                source: r.source,
                interface: r.interface.clone(),
                service: format!("{} {first}", r.service),
                to: r.to,
                expected: r.first,
                got: seen.first.clone(),
                rule: r.first_rule.clone(),
                kernel_rule: None,
                why: format!("{why}: {first_why}"),
            });
            rows.push(Row {
                status: status(r.spent, &seen.later),
                source: r.source,
                interface: r.interface.clone(),
                service: format!("{} by #{}", r.service, r.attempts),
                to: r.to,
                expected: r.spent,
                got: seen.later.clone(),
                rule: r.spent_rule.clone(),
                kernel_rule: None,
                why: format!("{why}: seen at attempt #{}", seen.at),
            });
        }
        let mut report = Report::from_rows(&plan.profile, rows, elapsed);
        report.coverage = observed.coverage.clone();
        report
    }

    /// A report of `rows`, mismatches and inconclusive rows first. No row
    /// at all does not pass: nothing was proven.
    pub fn from_rows(profile: &str, mut rows: Vec<Row>, elapsed: Duration) -> Report {
        // Stable: within a status, plan order.
        rows.sort_by_key(|r| r.status);
        let count = |s| rows.iter().filter(|r| r.status == s).count();
        let (mismatches, inconclusive) = (count(Status::Mismatch), count(Status::Inconclusive));
        Report {
            profile: profile.to_string(),
            passed: mismatches == 0 && inconclusive == 0 && !rows.is_empty(),
            probes: rows.len(),
            mismatches,
            inconclusive,
            elapsed_ms: elapsed.as_millis() as u64,
            notes: Vec::new(),
            coverage: None,
            rows,
        }
    }

    /// The rows that fail the run.
    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.status != Status::Match)
    }

    /// How many rows probe a published container port.
    pub fn published(&self) -> usize {
        let published = |r: &&Row| r.to == Destination::Published;
        self.rows.iter().filter(published).count()
    }

    /// One line: how many probes, how many failed, how long it took.
    pub fn summary(&self) -> String {
        let secs = self.elapsed_ms as f64 / 1000.0;
        let published = match self.published() {
            0 => String::new(),
            n => format!(", {n} of them to published container ports"),
        };
        if self.passed {
            format!(
                "profile {}: all {} probes match{published} ({secs:.2} s)",
                self.profile, self.probes
            )
        } else {
            format!(
                "profile {}: {} of {} probes do not match, {} inconclusive{published} ({secs:.2} s)",
                self.profile, self.mismatches, self.probes, self.inconclusive
            )
        }
    }

    /// The table `fwharden probe` prints, summary last.
    pub fn table(&self) -> String {
        let header = [
            "",
            "SOURCE",
            "IFACE",
            "PORT",
            "EXPECTED",
            "GOT",
            "DECIDED BY",
        ];
        let mut cells: Vec<[String; 7]> = vec![header.map(str::to_string)];
        for r in &self.rows {
            let mark = match r.status {
                Status::Mismatch => "MISMATCH",
                Status::Inconclusive => "INCONCLUSIVE",
                Status::Match => "ok",
            };
            cells.push([
                mark.into(),
                r.source.to_string(),
                r.interface.clone(),
                match r.to {
                    Destination::Host => r.service.clone(),
                    to => format!("{} {}", r.service, to.marker()),
                },
                r.expected.as_str().into(),
                r.got.describe(),
                r.rule.clone(),
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in &cells {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        if let Some(c) = &self.coverage {
            out.push_str(&format!(
                "rules covered: {}/{} (by the kernel's trace of every probe)\n",
                c.covered, c.total
            ));
            for u in &c.uncovered {
                out.push_str(&format!("  not reached: {u}\n"));
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::plan::{Probe, Service};

    fn probe(to: Destination, expected: Outcome) -> Probe {
        Probe {
            source: "203.0.113.200".parse().unwrap(),
            interface: "eth0".into(),
            service: Service::Tcp(6379),
            to,
            expected,
            rule: "r".into(),
            why: "w".into(),
        }
    }

    #[test]
    fn published_rows_are_marked_and_counted() {
        let plan = Plan {
            profile: "p".into(),
            interfaces: vec!["eth0".into()],
            probes: vec![
                probe(Destination::Host, Outcome::Filtered),
                probe(Destination::Published, Outcome::Filtered),
            ],
            rate_probes: vec![],
            container_port: 9,
            local_port: 61999,
        };
        let observed = Observed {
            probes: vec![Got::Seen(Outcome::Filtered), Got::Seen(Outcome::Open)],
            ..Observed::default()
        };
        let report = Report::compare(&plan, &observed, Duration::ZERO);
        assert_eq!((report.mismatches, report.published()), (1, 1));
        let table = report.table();
        let first = table.lines().nth(1).unwrap();
        assert!(
            first.starts_with("MISMATCH") && first.contains("6379/tcp published (container)"),
            "{table}"
        );
        let host = table.lines().nth(2).unwrap();
        assert!(!host.contains("published"), "{table}");
        assert!(
            report
                .summary()
                .contains("1 of 2 probes do not match, 0 inconclusive, 1 of them to published container ports"),
            "{}",
            report.summary()
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][0]["to"], "published");
    }
}
