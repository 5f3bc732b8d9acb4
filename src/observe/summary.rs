//! `fwharden log --summary`: the sources, ports and rules seen most often
//! in the packets read, kept in bounded tables (a flood of distinct
//! sources cannot grow them without end: past [`KEYS_MAX`] keys a table
//! counts the rest under `(other)`).

use std::collections::HashMap;

use serde::Serialize;

use super::log::Entry;

/// The most distinct keys one table keeps.
pub const KEYS_MAX: usize = 10_000;
/// How many of each table are shown.
pub const TOP: usize = 10;

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
    pub packets: u64,
    pub sources: Vec<Ranked>,
    pub ports: Vec<Ranked>,
    pub rules: Vec<Ranked>,
}

impl Summary {
    pub fn add(&mut self, e: &Entry) {
        self.packets += 1;
        self.sources
            .add(e.src.map_or("?".to_string(), |a| a.to_string()));
        self.ports.add(match e.port {
            Some(p) => format!("{}/{p}", e.proto),
            None => e.proto.clone(),
        });
        self.rules.add(e.rule.clone());
    }

    pub fn report(&self) -> Report {
        Report {
            packets: self.packets,
            sources: self.sources.top(),
            ports: self.ports.top(),
            rules: self.rules.top(),
        }
    }
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = format!("{} packets logged\n", self.packets);
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
}
