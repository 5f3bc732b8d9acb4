//! `fwharden log`: each packet a logging rule (or `log_drops`) handed to
//! NFLOG, or wrote to the kernel log, as one line: time, verdict, source,
//! destination, protocol, port, interface, and the profile line that
//! decided it.
//!
//! On the NFLOG path the profile line comes from the packet itself: with
//! `nflog_group` the compiler starts every rule's NFLOG prefix with its
//! `file:line`. On the kernel-log path the prefix is the profile's as
//! written, and the line comes from the comment of the loaded rule whose
//! log statement carries it. Either way the verdict and the rule's words
//! come from the loaded ruleset, read again when a prefix is not found in
//! it (the ruleset changed since).

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
    by_prefix: Vec<Logging>,
    /// The NFLOG group the ruleset logs to, if any.
    pub group: Option<u16>,
}

/// The rule a log prefix belongs to.
#[derive(Debug, Clone)]
struct Logging {
    prefix: String,
    verdict: String,
    words: String,
    /// `observed.toml:6` from the rule's comment; "" for the defaults.
    line: String,
    /// The lines of other rules logging with the same prefix (the kernel
    /// log's prefixes are the profile's as written, and two rules may
    /// share one): a packet with it cannot be told apart.
    shared_with: Vec<String>,
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
                let (file, number, _) = super::origin(&rule.comment);
                let line = match file.is_empty() {
                    true => String::new(),
                    false => format!("{file}:{number}"),
                };
                match out.by_prefix.iter_mut().find(|k| k.prefix == log.prefix) {
                    Some(k) if k.words != words => {
                        let other = match line.is_empty() {
                            true => rule.comment.clone(),
                            false => line,
                        };
                        if !k.shared_with.contains(&other) {
                            k.shared_with.push(other);
                        }
                    }
                    Some(_) => {}
                    None => out.by_prefix.push(Logging {
                        prefix: log.prefix.clone(),
                        verdict,
                        words,
                        line,
                        shared_with: Vec::new(),
                    }),
                }
            }
        }
        out
    }

    pub fn knows(&self, prefix: &str) -> bool {
        self.by_prefix.iter().any(|k| k.prefix == prefix)
    }

    /// Whether the ruleset logs anything at all.
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// The line printed for a kernel log message (`PREFIX IN=eth0 OUT=
    /// ...`) logged at `ms`, or `None` when it does not start with one of
    /// the ruleset's prefixes or is not a logged packet (other kernel
    /// messages, or a prefix another ruleset wrote).
    pub fn kernel_entry(&self, message: &str, ms: u64) -> Option<Entry> {
        // The longest prefix that fits: one prefix may begin another.
        let (known, fields) = self
            .by_prefix
            .iter()
            .filter_map(|k| Some((k, message.strip_prefix(k.prefix.as_str())?)))
            .filter(|(_, rest)| rest.starts_with("IN="))
            .max_by_key(|(k, _)| k.prefix.len())?;
        let p = super::kernlog::parse(fields)?;
        let rule = match known.shared_with.as_slice() {
            [] => known.words.clone(),
            others => format!(
                "{} (or {}: same log prefix)",
                known.words,
                others.join(", ")
            ),
        };
        Some(Entry {
            time: rfc3339(ms),
            verdict: known.verdict.clone(),
            src: Some(p.src),
            dst: Some(p.dst),
            proto: p.proto,
            port: p.port,
            iface: p.iface,
            line: known.line.clone(),
            rule,
        })
    }

    /// The line printed for `p`, logged at `now_ms` unless it carries a
    /// time of its own; `name_of` names an interface index.
    pub fn entry(&self, p: &Logged, now_ms: u64, name_of: &dyn Fn(u32) -> Option<String>) -> Entry {
        let (src, dst, proto, port) = headers(&p.payload);
        let line = profile_line(&p.prefix);
        let (verdict, rule) = match self.by_prefix.iter().find(|k| k.prefix == p.prefix) {
            Some(k) => (k.verdict.clone(), k.words.clone()),
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
            crate::term::safe(self.iface.as_deref().unwrap_or("?")),
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

    /// The ruleset of `profile`, written as NAME.toml.
    fn compiled(name: &str, profile: &str) -> Ruleset {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{name}.toml")), profile).unwrap();
        let search = crate::profile::SearchPath {
            dirs: vec![dir.path().to_path_buf()],
            builtin: true,
        };
        let loaded = crate::profile::load(name, &search);
        crate::compile::compile(&loaded.profile.unwrap())
    }

    #[test]
    fn a_kernel_log_line_is_named_by_the_rule_whose_prefix_it_carries() {
        // No nflog_group: the prefixes are the profile's as written.
        let r = compiled(
            "k",
            "[[rule]]\ndeny = 2323\nlog = true\n\n[[rule]]\nreject = 25\nlog = \"fw\"\n\n[[rule]]\ndeny = 26\nlog = \"fw more\"\n",
        );
        let rules = Rules::of(&r);
        assert_eq!(rules.group, None);
        let fields = "IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=203.0.113.5 DST=198.18.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=40000 DPT=2323 WINDOW=64240 RES=0x00 SYN URGP=0 ";
        let e = rules
            .kernel_entry(&format!("fwharden deny 2323: {fields}"), 5)
            .unwrap();
        assert_eq!((e.verdict.as_str(), e.line.as_str()), ("drop", "k.toml:1"));
        assert!(e.rule.starts_with("k.toml:1 deny 2323"), "{}", e.rule);
        assert_eq!(e.src, Some("203.0.113.5".parse().unwrap()));
        assert_eq!((e.proto.as_str(), e.port), ("tcp", Some(2323)));
        assert_eq!(e.iface.as_deref(), Some("eth0"));
        assert_eq!(e.time, "1970-01-01T00:00:00.005Z");
        // The policy's drops, logged by the defaults.
        let p = rules
            .kernel_entry(&format!("fwharden drop: {fields}"), 5)
            .unwrap();
        assert_eq!(
            (p.line.as_str(), p.rule.as_str()),
            ("", "defaults: log drops (policy drop)")
        );
        // "fw " begins "fw more ": the longer prefix is the rule's.
        let more = rules.kernel_entry(&format!("fw more {fields}"), 5).unwrap();
        assert_eq!(more.line, "k.toml:9");
        let short = rules.kernel_entry(&format!("fw {fields}"), 5).unwrap();
        assert_eq!(
            (short.line.as_str(), short.verdict.as_str()),
            ("k.toml:5", "reject")
        );
        // Another ruleset's prefix, other kernel messages, a broken line.
        for other in [
            format!("ufw block: {fields}"),
            "fwharden deny 2323: link is up".to_string(),
            "fwharden deny 2323: IN=eth0 OUT= SRC=203.0.113.5 ".to_string(),
            format!("fwharden deny 2323 {fields}"),
        ] {
            assert!(rules.kernel_entry(&other, 5).is_none(), "{other}");
        }
    }

    #[test]
    fn a_prefix_two_rules_share_names_both() {
        let r = compiled(
            "k",
            "[[rule]]\ndeny = 2323\nlog = \"x\"\n\n[[rule]]\ndeny = 2424\nlog = \"x\"\n",
        );
        let e = Rules::of(&r)
            .kernel_entry(
                "x IN=eth0 OUT= SRC=192.0.2.1 DST=192.0.2.2 LEN=40 PROTO=TCP SPT=1 DPT=2424 ",
                0,
            )
            .unwrap();
        assert_eq!(e.line, "k.toml:1");
        assert!(
            e.rule.ends_with("(or k.toml:5: same log prefix)"),
            "{}",
            e.rule
        );
    }

    #[test]
    fn the_prefix_names_the_line_and_the_ruleset_the_verdict() {
        let profile = "[defaults]\nnflog_group = 7\n[[rule]]\ndeny = 2323\nlog = true\n";
        let r = compiled("t", profile);
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
