//! `fwharden log`: each packet a logging rule (or `log_drops`) handed to
//! NFLOG, as one line: time, verdict, source, destination, protocol,
//! port, interface, and the profile line that decided it.
//!
//! The profile line comes from the packet itself: with `nflog_group` the
//! compiler starts every rule's NFLOG prefix with its `file:line`. The
//! verdict and the rule's words come from the loaded ruleset (the rule
//! whose log statement carries that prefix), read again when a prefix is
//! not found in it (the ruleset changed since).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Serialize;

use crate::nft::nflog::Logged;
use crate::ruleset::{Policy, Ruleset, Verdict};

/// One logged packet, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `drop`, `accept`, `reject`, or `unknown` (the rule is no longer
    /// loaded).
    pub verdict: String,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol number.
    pub proto: String,
    /// Destination port (TCP, UDP); ICMP type for ICMP.
    pub port: Option<u16>,
    /// The interface it came in on (or went out of).
    pub iface: Option<String>,
    /// `observed.toml:6`, empty for the defaults' `log_drops`.
    pub line: String,
    /// The rule in words: `observed.toml:6 deny all from blocked`, or
    /// `defaults: log drops (policy drop)`.
    pub rule: String,
}

/// What the loaded ruleset says of each log prefix.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    by_prefix: Vec<(String, String, String)>,
    /// The NFLOG group the ruleset logs to, if any.
    pub group: Option<u16>,
}

impl Rules {
    pub fn of(r: &Ruleset) -> Rules {
        let mut out = Rules::default();
        for chain in &r.chains {
            for rule in &chain.rules {
                let Some(log) = &rule.log else { continue };
                out.group = out.group.or(log.group);
                let (verdict, words) = match rule.verdict {
                    Some(v) => (verdict_word(v).to_string(), rule.comment.clone()),
                    // A log without a verdict is `log_drops`: the packet
                    // goes on to the chain's policy.
                    None => {
                        let p = match chain.policy {
                            Policy::Accept => "accept",
                            Policy::Drop => "drop",
                        };
                        (p.to_string(), format!("{} (policy {p})", rule.comment))
                    }
                };
                if !out.by_prefix.iter().any(|(p, ..)| *p == log.prefix) {
                    out.by_prefix.push((log.prefix.clone(), verdict, words));
                }
            }
        }
        out
    }

    pub fn knows(&self, prefix: &str) -> bool {
        self.by_prefix.iter().any(|(p, ..)| p == prefix)
    }

    /// The line printed for `p`, logged at `now_ms` unless it carries a
    /// time of its own; `name_of` names an interface index.
    pub fn entry(&self, p: &Logged, now_ms: u64, name_of: &dyn Fn(u32) -> Option<String>) -> Entry {
        let (src, dst, proto, port) = headers(&p.payload);
        let line = profile_line(&p.prefix);
        let (verdict, rule) = match self.by_prefix.iter().find(|(x, ..)| *x == p.prefix) {
            Some((_, v, w)) => (v.clone(), w.clone()),
            None => ("unknown".to_string(), p.prefix.trim_end().to_string()),
        };
        let ms = p
            .timestamp
            .map_or(now_ms, |(s, us)| s.saturating_mul(1000) + us / 1000);
        Entry {
            time: rfc3339(ms),
            verdict,
            src,
            dst,
            proto,
            port,
            iface: p.in_ifindex.or(p.out_ifindex).and_then(name_of),
            line,
            rule,
        }
    }
}

/// The `file:line` an NFLOG prefix starts with, or "" (`log_drops`).
fn profile_line(prefix: &str) -> String {
    let head = prefix.split(' ').next().unwrap_or_default();
    match head.rsplit_once(':') {
        Some((f, l)) if !f.is_empty() && !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            head.to_string()
        }
        _ => String::new(),
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Accept => "accept",
        Verdict::Drop => "drop",
        Verdict::Reject(_) => "reject",
    }
}

/// Which entries to print.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub from: Option<IpNet>,
    pub port: Option<u16>,
    /// `observed.toml:6`, a bare line number, or words of the rule.
    pub rule: Option<String>,
}

impl Filter {
    pub fn admits(&self, e: &Entry) -> bool {
        let from = self
            .from
            .is_none_or(|n| e.src.is_some_and(|a| n.contains(&a)));
        let port = self.port.is_none_or(|p| e.port == Some(p));
        let rule = self.rule.as_deref().is_none_or(|r| {
            e.line == r
                || e.line.rsplit_once(':').is_some_and(|(_, l)| l == r)
                || e.rule.contains(r)
        });
        from && port && rule
    }
}

impl Entry {
    /// One line of text.
    pub fn text(&self) -> String {
        let addr = |a: Option<IpAddr>| a.map_or("?".to_string(), |a| a.to_string());
        let port = self.port.map(|p| format!("/{p}")).unwrap_or_default();
        format!(
            "{} {:<6} {} -> {} {}{port} iface={} {}",
            self.time,
            self.verdict,
            addr(self.src),
            addr(self.dst),
            self.proto,
            self.iface.as_deref().unwrap_or("?"),
            self.rule
        )
    }
}

/// Source, destination, protocol and port (or ICMP type) of a packet from
/// its network header on; what is cut short stays unknown.
pub fn headers(p: &[u8]) -> (Option<IpAddr>, Option<IpAddr>, String, Option<u16>) {
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0xf) * 4;
            let a = |o: usize| IpAddr::V4(Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]));
            (a(12), a(16), p[9], p.get(ihl..).unwrap_or_default())
        }
        Some(6) if p.len() >= 40 => {
            let a = |o: usize| {
                let b: [u8; 16] = p[o..o + 16].try_into().unwrap_or_default();
                IpAddr::V6(Ipv6Addr::from(b))
            };
            (a(8), a(24), p[6], &p[40..])
        }
        _ => return (None, None, "?".into(), None),
    };
    let port = match proto {
        6 | 17 => l4.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]])),
        1 | 58 => l4.first().map(|t| u16::from(*t)),
        _ => None,
    };
    let name = match proto {
        6 => "tcp".to_string(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    };
    (Some(src), Some(dst), name, port)
}

/// `2026-12-04T17:30:01.123Z` for milliseconds since the epoch.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let s = secs % 86400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_v4(dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&[10, 96, 0, 2, 10, 96, 0, 1]);
        p.extend_from_slice(&[0xc0, 0x00]);
        p.extend_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn an_ipv4_tcp_packet_names_its_ends_and_port() {
        let (src, dst, proto, port) = headers(&tcp_v4(2323));
        assert_eq!(src, Some("10.96.0.2".parse().unwrap()));
        assert_eq!(dst, Some("10.96.0.1".parse().unwrap()));
        assert_eq!((proto.as_str(), port), ("tcp", Some(2323)));
        assert_eq!(headers(&[0x45, 0]).2, "?");
    }

    #[test]
    fn an_ipv6_icmp_packet_names_its_type() {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[128, 0, 0, 0]);
        let (src, _, proto, port) = headers(&p);
        assert_eq!(src, Some("2001:db8::2".parse().unwrap()));
        assert_eq!((proto.as_str(), port), ("icmpv6", Some(128)));
    }

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_164_800_123), "2024-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_405_004_000), "2026-12-04T17:23:24.000Z");
    }

    #[test]
    fn the_prefix_names_the_line_and_the_ruleset_the_verdict() {
        let profile = "[defaults]\nnflog_group = 7\n[[rule]]\ndeny = 2323\nlog = true\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.toml"), profile).unwrap();
        let search = crate::profile::SearchPath {
            dirs: vec![dir.path().to_path_buf()],
            builtin: true,
        };
        let loaded = crate::profile::load("t", &search);
        let r = crate::compile::compile(&loaded.profile.unwrap());
        let rules = Rules::of(&r);
        assert_eq!(rules.group, Some(7));
        let logged = |prefix: &str| Logged {
            family: 2,
            prefix: prefix.into(),
            in_ifindex: Some(3),
            out_ifindex: None,
            payload: tcp_v4(2323),
            timestamp: Some((0, 5000)),
        };
        let name = |i: u32| Some(format!("if{i}"));
        let prefix = r.chains[0]
            .rules
            .iter()
            .find_map(|x| x.log.as_ref().filter(|l| l.prefix.starts_with("t.toml")))
            .unwrap()
            .prefix
            .clone();
        let e = rules.entry(&logged(&prefix), 99, &name);
        assert_eq!((e.verdict.as_str(), e.line.as_str()), ("drop", "t.toml:3"));
        assert!(e.rule.starts_with("t.toml:3 deny"), "{}", e.rule);
        assert_eq!(e.time, "1970-01-01T00:00:00.005Z");
        assert_eq!(e.iface.as_deref(), Some("if3"));
        let policy = rules.entry(&logged("fwharden drop: "), 99, &name);
        assert_eq!(policy.verdict, "drop");
        assert_eq!(policy.rule, "defaults: log drops (policy drop)");
        assert_eq!(policy.line, "");
        let gone = rules.entry(&logged("other.toml:9 "), 99, &name);
        assert_eq!(
            (gone.verdict.as_str(), gone.line.as_str()),
            ("unknown", "other.toml:9")
        );

        let f = |from: Option<&str>, port, rule: Option<&str>| Filter {
            from: from.map(|s| s.parse().unwrap()),
            port,
            rule: rule.map(str::to_string),
        };
        assert!(f(Some("10.96.0.0/24"), Some(2323), Some("t.toml:3")).admits(&e));
        assert!(f(None, None, Some("3")).admits(&e));
        assert!(!f(Some("10.97.0.0/24"), None, None).admits(&e));
        assert!(!f(None, Some(22), None).admits(&e));
        assert!(!f(None, None, Some("t.toml:4")).admits(&e));
    }
}
