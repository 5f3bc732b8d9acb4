//! Values inside a table: strings, booleans, words from a fixed list,
//! string arrays, rates, ports and port ranges, and the targets of
//! allow/deny/reject. Each refusal says what to write instead.

use toml_edit::{Item, Value};

use super::{closest, sp, span_of, type_name, Parser, ProtoSpec, Sp, Target};
use crate::duration;
use crate::ruleset::{Family, PortRange, Rate, RateUnit};

impl Parser<'_> {
    pub(super) fn string(&mut self, item: &Item, key: &str) -> Option<Sp<String>> {
        match item.as_str() {
            Some(s) => Some(sp(s.to_string(), span_of(item))),
            None => {
                self.error(
                    span_of(item),
                    format!("`{key}` must be a string, not {}", type_name(item)),
                    format!("write it in double quotes: {key} = \"...\""),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, item: &Item, key: &str) -> Option<Sp<bool>> {
        match item.as_bool() {
            Some(b) => Some(sp(b, span_of(item))),
            None => {
                self.error(
                    span_of(item),
                    format!("`{key}` must be true or false, not {}", type_name(item)),
                    format!("write {key} = true or {key} = false"),
                );
                None
            }
        }
    }

    /// A string that must be one of a few words.
    pub(super) fn word<T: Copy>(
        &mut self,
        item: &Item,
        key: &str,
        words: &[(&str, T)],
    ) -> Option<Sp<T>> {
        let s = self.string(item, key)?;
        if let Some((_, v)) = words.iter().find(|(w, _)| *w == s.value) {
            return Some(sp(*v, s.span));
        }
        let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let quoted: Vec<String> = names.iter().map(|w| format!("\"{w}\"")).collect();
        let hint = match closest(&s.value, names.iter().copied()) {
            Some(near) => format!(
                "did you mean \"{near}\"? write one of {}",
                quoted.join(", ")
            ),
            None => format!("write one of {}", quoted.join(", ")),
        };
        self.error(s.span, format!("`{key}` cannot be \"{}\"", s.value), hint);
        None
    }

    /// A string or an array of strings.
    pub(super) fn strings(&mut self, item: &Item, key: &str) -> Option<Vec<Sp<String>>> {
        if let Some(s) = item.as_str() {
            return Some(vec![sp(s.to_string(), span_of(item))]);
        }
        let Some(array) = item.as_array() else {
            self.error(
                span_of(item),
                format!(
                    "`{key}` must be a string or an array of strings, not {}",
                    type_name(item)
                ),
                format!("write {key} = \"name\" or {key} = [\"name\", \"192.0.2.0/24\"]"),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for v in array.iter() {
            let vspan = v.span().unwrap_or(0..0);
            if let Some(s) = v.as_str() {
                out.push(sp(s.to_string(), vspan));
                continue;
            }
            ok = false;
            self.error(
                vspan,
                format!(
                    "every item of `{key}` must be a string, not {}",
                    type_name(&Item::Value(v.clone()))
                ),
                "write it in double quotes, e.g. \"192.0.2.10\"",
            );
        }
        ok.then_some(out)
    }

    pub(super) fn family(&mut self, item: &Item) -> Option<Sp<Family>> {
        self.word(
            item,
            "family",
            &[("ipv4", Family::Ipv4), ("ipv6", Family::Ipv6)],
        )
    }

    pub(super) fn proto(&mut self, item: &Item) -> Option<Sp<ProtoSpec>> {
        self.word(
            item,
            "proto",
            &[
                ("tcp", ProtoSpec::Tcp),
                ("udp", ProtoSpec::Udp),
                ("both", ProtoSpec::Both),
            ],
        )
    }

    /// A duration in whole seconds: `600`, or `"90s"`, `"10m"`, `"1h"`,
    /// `"7d"`; at least a second, at most a year.
    pub(super) fn duration(&mut self, item: &Item, key: &str) -> Option<Sp<u32>> {
        let secs = match (item.as_integer(), item.as_str()) {
            (Some(n), _) => u32::try_from(n).ok(),
            (_, Some(s)) => duration::parse(s),
            _ => None,
        };
        match secs {
            Some(s @ 1..=duration::YEAR) => Some(sp(s, span_of(item))),
            _ => {
                self.error(
                    span_of(item),
                    format!("`{key}` must be {}", duration::bounds(1, duration::YEAR)),
                    format!("write {key} = \"10m\" (s, m, h or d) or {key} = 600 (seconds)"),
                );
                None
            }
        }
    }

    /// A rate such as "10/minute", or false when `allow_off`.
    pub(super) fn rate(
        &mut self,
        item: &Item,
        key: &str,
        allow_off: bool,
    ) -> Option<Sp<Option<Rate>>> {
        if allow_off && item.as_bool() == Some(false) {
            return Some(sp(None, span_of(item)));
        }
        let off = if allow_off {
            ", or false to turn it off"
        } else {
            ""
        };
        let Some(s) = item.as_str() else {
            self.error(
                span_of(item),
                format!(
                    "`{key}` must be a rate like \"10/minute\", not {}",
                    type_name(item)
                ),
                format!(
                    "write {key} = \"COUNT/UNIT\" with UNIT one of second, minute, hour, day{off}"
                ),
            );
            return None;
        };
        match parse_rate(s) {
            Ok(rate) => Some(sp(Some(rate), span_of(item))),
            Err(why) => {
                self.error(
                    span_of(item),
                    format!("`{key}` = \"{s}\" is not a rate: {why}"),
                    format!("write {key} = \"COUNT/UNIT\", e.g. \"10/minute\"; UNIT is second, minute, hour or day{off}"),
                );
                None
            }
        }
    }

    /// `port = 22`, `"6000-6010"`, or an array of those.
    pub(super) fn ports(&mut self, item: &Item) -> Vec<Sp<PortRange>> {
        let values = one_or_many(item);
        let mut out = Vec::new();
        for v in &values {
            let vspan = v.span().unwrap_or_else(|| span_of(item));
            let parsed = match v {
                Value::Integer(i) => port_number(*i.value()).map(PortRange::single),
                Value::String(s) => parse_port_range(s.value()),
                other => Err(format!(
                    "a port is a number or a \"first-last\" string, not {}",
                    type_name(&Item::Value(other.clone()))
                )),
            };
            match parsed {
                Ok(r) => out.push(sp(r, vspan)),
                Err(why) => self.error(
                    vspan,
                    why,
                    "write a port from 1 to 65535, e.g. port = 8080, or a range \"6000-6010\"",
                ),
            }
        }
        if values.is_empty() {
            self.error(
                span_of(item),
                "`port` is empty",
                "write port = 8080, port = \"6000-6010\" or port = [80, 443]",
            );
        }
        out
    }

    pub(super) fn targets(&mut self, item: &Item, key: &str) -> Option<Vec<Sp<Target>>> {
        let values = one_or_many(item);
        if values.is_empty() {
            self.error(
                span_of(item),
                format!("`{key}` names nothing"),
                format!("write {key} = \"ssh\", {key} = [\"http\", \"https\"], {key} = \"51820/udp\" or {key} = \"all\""),
            );
            return None;
        }
        let mut out = Vec::new();
        for v in &values {
            let vspan = v.span().unwrap_or_else(|| span_of(item));
            let parsed = match v {
                Value::Integer(i) => {
                    port_number(*i.value()).map(|p| Target::Ports(PortRange::single(p), None))
                }
                Value::String(s) => parse_target(s.value()),
                other => Err(format!(
                    "`{key}` takes service names and ports, not {}",
                    type_name(&Item::Value(other.clone()))
                )),
            };
            match parsed {
                Ok(t) => out.push(sp(t, vspan)),
                Err(why) => self.error(
                    vspan,
                    why,
                    format!("write a service name (\"ssh\"), a port (22, \"8080/tcp\", \"6000-6010/udp\") or \"all\" in `{key}`"),
                ),
            }
        }
        Some(out)
    }
}

fn port_number(n: i64) -> Result<u16, String> {
    match n {
        0 => Err("port 0 is not a port a service can listen on".to_string()),
        1..=65535 => Ok(n as u16),
        _ if n < 0 => Err(format!("port {n} is negative")),
        _ => Err(format!("port {n} is above 65535, the largest port")),
    }
}

fn port_text(s: &str) -> Result<u16, String> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("\"{s}\" is not a port number"));
    }
    port_number(s.parse::<i64>().unwrap_or(i64::MAX))
}

/// "22" or "6000-6010".
pub fn parse_port_range(s: &str) -> Result<PortRange, String> {
    match s.split_once('-') {
        None => port_text(s).map(PortRange::single),
        Some((a, _)) if a.trim().is_empty() => Err(format!(
            "\"{s}\" has no first port; ports are 1 to 65535, and a range is written \"FIRST-LAST\""
        )),
        Some((_, b)) if b.trim().is_empty() => Err(format!(
            "the range \"{s}\" has no last port; write \"FIRST-LAST\", e.g. \"6000-6010\""
        )),
        Some((a, b)) => {
            let (first, last) = (port_text(a)?, port_text(b)?);
            if first > last {
                return Err(format!(
                    "the range \"{s}\" is inverted; write \"{last}-{first}\""
                ));
            }
            Ok(PortRange { first, last })
        }
    }
}

/// One item of allow/deny/reject: "all", a service name, or "PORTS[/PROTO]".
fn parse_target(s: &str) -> Result<Target, String> {
    if s == "all" {
        return Ok(Target::All);
    }
    if s.trim().is_empty() {
        return Err("an empty string names no service and no port".to_string());
    }
    if !s.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        if let Some((name, proto)) = s.split_once('/') {
            return Err(format!(
                "\"{s}\": a /PROTOCOL suffix follows a port number, not a service name; write \"{name}\" and proto = \"{proto}\", or the port itself"
            ));
        }
        return Ok(Target::Service(s.to_string()));
    }
    let (ports, proto) = match s.split_once('/') {
        None => (s, None),
        Some((p, "tcp")) => (p, Some(ProtoSpec::Tcp)),
        Some((p, "udp")) => (p, Some(ProtoSpec::Udp)),
        Some((p, "both")) => (p, Some(ProtoSpec::Both)),
        Some((_, other)) => {
            return Err(format!(
                "\"{other}\" in \"{s}\" is not a protocol; use tcp, udp or both"
            ))
        }
    };
    Ok(Target::Ports(parse_port_range(ports)?, proto))
}

/// "10/minute", "5/second", also "10/min" and "1/s" forms are refused to
/// keep one spelling.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let (count, unit) = s
        .split_once('/')
        .ok_or_else(|| "it has no /UNIT".to_string())?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| format!("\"{}\" is not a positive whole number", count.trim()))?;
    let unit = match unit.trim() {
        "second" => RateUnit::Second,
        "minute" => RateUnit::Minute,
        "hour" => RateUnit::Hour,
        "day" => RateUnit::Day,
        other => return Err(format!("\"{other}\" is not a unit")),
    };
    let rate = Rate {
        count,
        unit,
        burst: 5,
    };
    if !rate.fits_kernel() {
        return Err(format!(
            "{count} per {} is more than the kernel can count; use at most {} per {}",
            unit.as_str(),
            Rate::max_count_plus_burst(unit) - 5,
            unit.as_str()
        ));
    }
    Ok(rate)
}

/// The values of `key = v` or `key = [v, ...]`; nothing for a table.
fn one_or_many(item: &Item) -> Vec<Value> {
    match item {
        Item::Value(Value::Array(a)) => a.iter().cloned().collect(),
        Item::Value(v) => vec![v.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_checked() {
        assert!(parse_port_range("0").is_err());
        assert!(parse_port_range("65536").is_err());
        assert!(parse_port_range("10-5").unwrap_err().contains("inverted"));
        assert_eq!(
            parse_port_range("5-10").unwrap(),
            PortRange { first: 5, last: 10 }
        );
    }

    #[test]
    fn open_ranges_and_service_suffixes_say_what_to_write() {
        assert!(parse_port_range("8080-")
            .unwrap_err()
            .contains("no last port"));
        assert!(parse_port_range("-5")
            .unwrap_err()
            .contains("no first port"));
        let e = parse_target("ssh/tcp").unwrap_err();
        assert!(e.contains("proto = \"tcp\""), "{e}");
        assert!(parse_target("").is_err());
    }

    #[test]
    fn rates_are_checked() {
        assert_eq!(parse_rate("10/minute").unwrap().count, 10);
        assert!(parse_rate("0/minute").is_err());
        assert!(parse_rate("10/fortnight").is_err());
        assert!(parse_rate("ten").is_err());
    }
}
