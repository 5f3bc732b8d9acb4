//! A [`Snapshot`] of the firewall as Prometheus text exposition format
//! (version 0.0.4, what node_exporter's textfile collector and a scrape
//! read). Pure: the same snapshot always gives the same text, so the
//! format is tested without a kernel.
//!
//! Naming follows the Prometheus conventions: a `fwharden_` prefix, base
//! units (`_bytes`, `_seconds`), `_total` on counters, one HELP and one
//! TYPE line per family, and label values escaped as the format requires
//! (backslash, double quote, newline).

use std::fmt::Write;

use super::{KernelState, PolicySample, RuleSample, Snapshot};

/// The `Content-Type` of this format, for the HTTP server.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition text of `s`, ending with a newline.
pub fn render(s: &Snapshot) -> String {
    let mut out = Exposition::default();
    rules(&mut out, &s.rules);
    policies(&mut out, &s.policies);
    bans(&mut out, s);
    openings(&mut out, s);
    state(&mut out, s);
    out.text
}

fn rules(out: &mut Exposition, rules: &[RuleSample]) {
    fn labels(r: &RuleSample) -> Vec<(&str, &str)> {
        vec![
            ("profile", r.profile.as_str()),
            ("chain", r.chain.as_str()),
            ("file", r.file.as_str()),
            ("line", r.line.as_str()),
            ("rule", r.rule.as_str()),
            ("action", r.action.as_str()),
        ]
    }
    out.family(
        "fwharden_rule_packets_total",
        Kind::Counter,
        "Packets a rule of table inet fwharden matched, by the profile line it comes from.",
    );
    for r in rules {
        out.sample("fwharden_rule_packets_total", &labels(r), r.counter.packets);
    }
    out.family(
        "fwharden_rule_bytes_total",
        Kind::Counter,
        "Bytes of the packets a rule of table inet fwharden matched.",
    );
    for r in rules {
        out.sample("fwharden_rule_bytes_total", &labels(r), r.counter.bytes);
    }
}

fn policies(out: &mut Exposition, policies: &[PolicySample]) {
    fn labels(p: &PolicySample) -> Vec<(&str, &str)> {
        vec![
            ("profile", p.profile.as_str()),
            ("chain", p.chain.as_str()),
            ("policy", p.policy),
        ]
    }
    out.family(
        "fwharden_policy_packets_total",
        Kind::Counter,
        "Packets no rule decided, left to the chain's policy (with policy drop: dropped).",
    );
    for p in policies {
        out.sample(
            "fwharden_policy_packets_total",
            &labels(p),
            p.counter.packets,
        );
    }
    out.family(
        "fwharden_policy_bytes_total",
        Kind::Counter,
        "Bytes of the packets left to the chain's policy.",
    );
    for p in policies {
        out.sample("fwharden_policy_bytes_total", &labels(p), p.counter.bytes);
    }
}

fn bans(out: &mut Exposition, s: &Snapshot) {
    out.family(
        "fwharden_ban_set_elements",
        Kind::Gauge,
        "Sources banned now, by ban set (table inet fwharden-bans).",
    );
    for (set, n) in &s.ban_sets {
        out.sample("fwharden_ban_set_elements", &[("set", set)], *n);
    }
    out.family(
        "fwharden_ban_dropped_packets_total",
        Kind::Counter,
        "Packets dropped because their source was banned, by chain.",
    );
    for (chain, c) in &s.ban_drops {
        out.sample(
            "fwharden_ban_dropped_packets_total",
            &[("chain", chain)],
            c.packets,
        );
    }
}

fn openings(out: &mut Exposition, s: &Snapshot) {
    out.family(
        "fwharden_opening_seconds_left",
        Kind::Gauge,
        "Temporary openings (fwharden open): seconds until the kernel closes each, by source and port.",
    );
    for o in &s.openings {
        let (from, port) = (o.from.to_string(), o.port.to_string());
        out.sample_text(
            "fwharden_opening_seconds_left",
            &[("from", &from), ("port", &port)],
            &seconds(o.left_ms),
        );
    }
}

fn state(out: &mut Exposition, s: &Snapshot) {
    out.family(
        "fwharden_kernel_state",
        Kind::Gauge,
        "What table inet fwharden holds: 1 for the state it is in (absent, confirmed, pending, drift).",
    );
    for k in KernelState::ALL {
        let on = u64::from(s.kernel == k);
        out.sample("fwharden_kernel_state", &[("state", k.as_str())], on);
    }
    out.family(
        "fwharden_drift",
        Kind::Gauge,
        "1 when the kernel holds a table that is neither the confirmed nor the pending ruleset.",
    );
    out.sample(
        "fwharden_drift",
        &[],
        u64::from(s.kernel == KernelState::Drift),
    );
    out.family(
        "fwharden_pending_deadline_timestamp_seconds",
        Kind::Gauge,
        "When the pending apply is rolled back unless confirmed (absent: nothing pending).",
    );
    if let Some(ms) = s.pending_deadline_ms {
        out.sample_text(
            "fwharden_pending_deadline_timestamp_seconds",
            &[],
            &seconds(ms),
        );
    }
    out.family(
        "fwharden_last_apply_timestamp_seconds",
        Kind::Gauge,
        "When the last apply was applied, confirmed or rolled back, with that result.",
    );
    if let Some(last) = &s.last_apply {
        out.sample_text(
            "fwharden_last_apply_timestamp_seconds",
            &[("profile", &last.profile), ("result", last.result.as_str())],
            &seconds(last.at_ms),
        );
    }
}

/// Milliseconds as seconds with their fraction, exactly.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // HELP text escapes backslash and newline (not quotes).
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_text(name, labels, &value.to_string());
    }

    fn sample_text(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the text format requires: `\`, `"` and newline escaped.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::counters::Counter;
    use crate::observe::{ApplyResult, LastApply};

    fn snapshot() -> Snapshot {
        Snapshot {
            rules: vec![RuleSample {
                profile: "vps-profile".into(),
                chain: "input".into(),
                file: "vps-profile.toml".into(),
                line: "15".into(),
                rule: "allow ssh from \"admin\"\\x".into(),
                action: "accept".into(),
                counter: Counter {
                    packets: 3,
                    bytes: 180,
                },
            }],
            policies: vec![PolicySample {
                profile: "vps-profile".into(),
                chain: "input".into(),
                policy: "drop",
                counter: Counter {
                    packets: 7,
                    bytes: 420,
                },
            }],
            ban_sets: vec![("ban_v4".into(), 2)],
            ban_drops: vec![("input".into(), Counter::default())],
            kernel: KernelState::Confirmed,
            pending_deadline_ms: None,
            openings: vec![crate::ruleset::openings::Opening {
                from: "192.0.2.7/32".parse().unwrap(),
                port: "8080/tcp".parse().unwrap(),
                timeout_ms: 600_000,
                left_ms: 59_500,
            }],
            last_apply: Some(LastApply {
                profile: "vps-profile".into(),
                result: ApplyResult::Confirmed,
                at_ms: 1_700_000_000_250,
            }),
        }
    }

    #[test]
    fn samples_carry_escaped_labels_and_every_family_has_help_and_type() {
        let text = render(&snapshot());
        assert!(text.contains(
            "fwharden_rule_packets_total{profile=\"vps-profile\",chain=\"input\",file=\"vps-profile.toml\",line=\"15\",rule=\"allow ssh from \\\"admin\\\"\\\\x\",action=\"accept\"} 3\n"
        ), "{text}");
        assert!(text.contains(
            "fwharden_policy_packets_total{profile=\"vps-profile\",chain=\"input\",policy=\"drop\"} 7\n"
        ));
        assert!(text.contains("fwharden_kernel_state{state=\"confirmed\"} 1\n"));
        assert!(text.contains("fwharden_kernel_state{state=\"drift\"} 0\n"));
        assert!(text.contains("fwharden_drift 0\n"));
        assert!(text.contains(
            "fwharden_last_apply_timestamp_seconds{profile=\"vps-profile\",result=\"confirmed\"} 1700000000.250\n"
        ));
        assert!(!text.contains("\nfwharden_pending_deadline_timestamp_seconds "));
        assert!(
            text.contains(
                "fwharden_opening_seconds_left{from=\"192.0.2.7/32\",port=\"8080/tcp\"} 59.500\n"
            ),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
        }
    }

    #[test]
    fn a_newline_in_a_label_value_is_escaped() {
        assert_eq!(escape("a\nb\"c\\"), "a\\nb\\\"c\\\\");
    }
}
