//! `fwharden log --summary`: the sources, ports and rules seen most often
//! in the packets read, kept in bounded tables (a flood of distinct
//! sources cannot grow them without end: past [`KEYS_MAX`] keys a table
//! counts the rest under `(other)`). While following, `--since` ranks the
//! packets of a sliding window instead, kept in a [`Window`] of at most
//! [`WINDOW_MAX`] packets: NFLOG keeps no history, so the window is what
//! this process saw.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::log::Entry;

/// The most distinct keys one table keeps.
pub const KEYS_MAX: usize = 10_000;
/// How many of each table are shown.
pub const TOP: usize = 10;
/// The most packets a [`Window`] keeps (about 100 bytes each).
pub const WINDOW_MAX: usize = 100_000;

#[derive(Debug, Default)]
pub struct Summary {
    packets: u64,
    sources: Table,
    ports: Table,
    rules: Table,
}

#[derive(Debug, Default)]
struct Table(HashMap<String, u64>);

impl Table {
    fn add(&mut self, key: String) {
        let key = if self.0.len() >= KEYS_MAX && !self.0.contains_key(&key) {
            "(other)".to_string()
        } else {
            key
        };
        *self.0.entry(key).or_default() += 1;
    }

    /// The `TOP` keys by count, ties by key, so the output is stable.
    fn top(&self) -> Vec<Ranked> {
        let mut v: Vec<Ranked> = self
            .0
            .iter()
            .map(|(k, n)| Ranked {
                key: k.clone(),
                packets: *n,
            })
            .collect();
        v.sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.key.cmp(&b.key)));
        v.truncate(TOP);
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ranked {
    pub key: String,
    pub packets: u64,
}

/// What `--summary --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The window the packets are from (`--since`), in seconds; `None`:
    /// every packet read.
    pub since_secs: Option<u64>,
    /// Packets of the window left out because the window was full (the
    /// oldest go first).
    pub beyond_window: u64,
    pub packets: u64,
    pub sources: Vec<Ranked>,
    pub ports: Vec<Ranked>,
    pub rules: Vec<Ranked>,
}

/// What a summary counts of one packet.
#[derive(Debug, Clone)]
struct Keys {
    source: String,
    port: String,
    rule: String,
}

impl Keys {
    fn of(e: &Entry) -> Keys {
        Keys {
            source: e.src.map_or("?".to_string(), |a| a.to_string()),
            port: match e.port {
                Some(p) => format!("{}/{p}", e.proto),
                None => e.proto.clone(),
            },
            rule: e.rule.clone(),
        }
    }
}

impl Summary {
    pub fn add(&mut self, e: &Entry) {
        self.add_keys(Keys::of(e));
    }

    fn add_keys(&mut self, k: Keys) {
        self.packets += 1;
        self.sources.add(k.source);
        self.ports.add(k.port);
        self.rules.add(k.rule);
    }

    pub fn report(&self) -> Report {
        Report {
            since_secs: None,
            beyond_window: 0,
            packets: self.packets,
            sources: self.sources.top(),
            ports: self.ports.top(),
            rules: self.rules.top(),
        }
    }
}

/// The packets of the last `span`, at most [`WINDOW_MAX`] of them, each
/// with the time it was read.
#[derive(Debug)]
pub struct Window {
    span_ms: u64,
    cap: usize,
    seen: VecDeque<(u64, Keys)>,
    /// Packets pushed out by a full window while still inside its span.
    beyond: u64,
}

impl Window {
    pub fn new(span_secs: u64) -> Window {
        Window::with_cap(span_secs, WINDOW_MAX)
    }

    fn with_cap(span_secs: u64, cap: usize) -> Window {
        Window {
            span_ms: span_secs.saturating_mul(1000),
            cap: cap.max(1),
            seen: VecDeque::new(),
            beyond: 0,
        }
    }

    /// `e`, read at `now_ms` (times only grow).
    pub fn add(&mut self, now_ms: u64, e: &Entry) {
        self.expire(now_ms);
        if self.seen.len() == self.cap {
            self.seen.pop_front();
            self.beyond += 1;
        }
        self.seen.push_back((now_ms, Keys::of(e)));
    }

    /// The packets older than the span leave; so does the count of those
    /// a full window pushed out, once the span has passed them too (an
    /// upper bound: it is not kept per packet).
    fn expire(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(self.span_ms);
        while self.seen.front().is_some_and(|(t, _)| *t < oldest) {
            self.seen.pop_front();
        }
        if self.seen.is_empty() {
            self.beyond = 0;
        }
    }

    /// The ranking of the window as it is at `now_ms`.
    pub fn report(&mut self, now_ms: u64) -> Report {
        self.expire(now_ms);
        let mut summary = Summary::default();
        for (_, k) in &self.seen {
            summary.add_keys(k.clone());
        }
        Report {
            since_secs: Some(self.span_ms / 1000),
            beyond_window: self.beyond,
            ..summary.report()
        }
    }
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = match self.since_secs {
            None => format!("{} packets logged\n", self.packets),
            Some(secs) => format!(
                "{} packets logged in the last {}{}\n",
                self.packets,
                crate::duration::words(u32::try_from(secs).unwrap_or(u32::MAX)),
                match self.beyond_window {
                    0 => String::new(),
                    n => format!(
                        " (and up to {n} older ones left out: the window keeps {WINDOW_MAX})"
                    ),
                }
            ),
        };
        for (title, rows) in [
            ("top sources", &self.sources),
            ("top ports", &self.ports),
            ("top rules", &self.rules),
        ] {
            out.push_str(&format!("{title}:\n"));
            for r in rows {
                out.push_str(&format!("  {:>8}  {}\n", r.packets, r.key));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(src: &str, port: u16) -> Entry {
        Entry {
            time: String::new(),
            verdict: "drop".into(),
            src: Some(src.parse().unwrap()),
            dst: None,
            proto: "tcp".into(),
            port: Some(port),
            iface: None,
            line: "t.toml:3".into(),
            rule: "t.toml:3 deny 2323".into(),
        }
    }

    #[test]
    fn the_busiest_source_ranks_first_and_tables_stay_bounded() {
        let mut s = Summary::default();
        for _ in 0..5 {
            s.add(&entry("192.0.2.9", 2323));
        }
        s.add(&entry("192.0.2.1", 22));
        let r = s.report();
        assert_eq!(r.packets, 6);
        assert_eq!(r.sources[0].key, "192.0.2.9");
        assert_eq!(r.sources[0].packets, 5);
        assert_eq!(r.ports[0].key, "tcp/2323");
        assert_eq!(r.rules[0].packets, 6);

        let mut flood = Summary::default();
        for i in 0..(KEYS_MAX as u32 + 50) {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            flood.add(&entry(&a.to_string(), 1));
        }
        assert_eq!(flood.sources.0.len(), KEYS_MAX + 1);
        assert_eq!(flood.sources.0["(other)"], 50);
    }

    #[test]
    fn a_window_ranks_only_its_span_and_keeps_at_most_its_cap() {
        let mut w = Window::with_cap(60, 4);
        // At 1 s a flood from .9; at 120 s two from .1.
        for t in 0..3 {
            w.add(1_000 + t, &entry("192.0.2.9", 2323));
        }
        let r = w.report(30_000);
        assert_eq!((r.packets, r.sources[0].key.as_str()), (3, "192.0.2.9"));
        w.add(120_000, &entry("192.0.2.1", 22));
        w.add(120_001, &entry("192.0.2.1", 22));
        let r = w.report(120_002);
        assert_eq!(r.packets, 2, "the flood left the window: {r:?}");
        assert_eq!(r.sources[0].key, "192.0.2.1");
        assert_eq!(r.since_secs, Some(60));
        assert!(
            r.text()
                .starts_with("2 packets logged in the last 1 minute\n"),
            "{}",
            r.text()
        );
        // Past the cap the oldest go, and are counted as left out.
        for t in 0..5 {
            w.add(121_000 + t, &entry("192.0.2.7", 80));
        }
        let r = w.report(121_010);
        assert_eq!((r.packets, r.beyond_window), (4, 3), "{r:?}");
        assert!(
            r.text().contains("up to 3 older ones left out"),
            "{}",
            r.text()
        );
        // Once the span has passed them all, nothing is left to count.
        let r = w.report(500_000);
        assert_eq!((r.packets, r.beyond_window), (0, 0));
    }
}
