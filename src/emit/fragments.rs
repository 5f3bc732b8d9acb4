//! Pieces of iptables rule lines for matches that become several lines or
//! a text of their own: ports (`multiport` groups, conntrack's original
//! port ranges), the combinations of alternatives, rates.

use super::quote;
use crate::ruleset::{CtState, Log, PortRange, Protocol, Rate, RateUnit, Ruleset, Set, SetKind};

/// `-m multiport` takes at most 15 ports, a range counting two
/// (XT_MULTI_PORTS); ufw refuses more in one rule too.
const MULTIPORT_MAX: usize = 15;

/// Groups of at most [`MULTIPORT_MAX`] ports (a range counting two), in
/// order; one empty group for no port.
pub fn port_groups(ports: &[PortRange]) -> Vec<Vec<PortRange>> {
    let mut groups: Vec<Vec<PortRange>> = vec![Vec::new()];
    let mut used = 0;
    for p in ports {
        let cost = if p.first == p.last { 1 } else { 2 };
        if used + cost > MULTIPORT_MAX {
            groups.push(Vec::new());
            used = 0;
        }
        used += cost;
        groups.last_mut().expect("one group").push(*p);
    }
    groups
}

/// `-m conntrack --ctstate` of `states`, as iptables names them.
pub fn ctstate(states: &[CtState]) -> String {
    let names: Vec<&str> = states
        .iter()
        .map(|s| match s {
            CtState::Invalid => "INVALID",
            CtState::Established => "ESTABLISHED",
            CtState::Related => "RELATED",
            CtState::New => "NEW",
        })
        .collect();
    format!(" -m conntrack --ctstate {}", names.join(","))
}

/// One alternative per protocol and per group of at most 15 ports.
pub fn port_alternatives(protos: &[Protocol], ports: &[PortRange]) -> Vec<String> {
    let groups: Vec<Vec<String>> = port_groups(ports)
        .iter()
        .map(|g| {
            g.iter()
                .map(|p| {
                    if p.first == p.last {
                        p.first.to_string()
                    } else {
                        format!("{}:{}", p.first, p.last)
                    }
                })
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for proto in protos {
        for g in &groups {
            let p = proto.as_str();
            out.push(match g.as_slice() {
                [one] => format!(" -p {p} -m {p} --dport {one}"),
                _ => format!(" -p {p} -m multiport --dports {}", g.join(",")),
            });
        }
    }
    out
}

/// One alternative per protocol and range of original destination ports:
/// the conntrack match takes one port or one range.
pub fn original_port_alternatives(protos: &[Protocol], ports: &[PortRange]) -> Vec<String> {
    let mut out = Vec::new();
    for proto in protos {
        for p in ports {
            let range = if p.first == p.last {
                p.first.to_string()
            } else {
                format!("{}:{}", p.first, p.last)
            };
            out.push(format!(
                " -p {} -m conntrack --ctorigdstport {range}",
                proto.as_str()
            ));
        }
    }
    out
}

/// Every combination of one alternative per match, in match order.
pub fn product(alternatives: &[Vec<String>]) -> Vec<String> {
    let mut lines = vec![String::new()];
    for alts in alternatives {
        lines = lines
            .iter()
            .flat_map(|l| alts.iter().map(move |a| format!("{l}{a}")))
            .collect();
    }
    lines
}

pub fn rate_text(rate: &Rate) -> String {
    let unit = match rate.unit {
        RateUnit::Second => "sec",
        RateUnit::Minute => "min",
        RateUnit::Hour => "hour",
        RateUnit::Day => "day",
    };
    format!("{}/{unit}", rate.count)
}

/// hashlimit's limit on a table name, NUL excluded (IFNAMSIZ - 1).
const HASHLIMIT_NAME_MAX: usize = 15;

/// A per-source meter (`update @set { ip saddr limit rate over R }`) as
/// `hashlimit` in `srcip` mode, matching when the source is over its
/// rate. The table is named after the meter set, so every rule charging
/// one set shares its buckets, as they share the nftables set; its size
/// and expiry are the set's. Used by the iptables format and by ufw's
/// before.rules, so both hold the same limit.
pub fn meter_match(ruleset: &Ruleset, set: &str, rate: &Rate) -> Result<String, String> {
    let Some(Set {
        kind: SetKind::Meter { timeout_secs, size },
        ..
    }) = ruleset.set(set)
    else {
        return Err(format!("the meter set {set} is missing"));
    };
    if !hashlimit_holds(rate) {
        return Err(hashlimit_refusal(rate));
    }
    let name = if quote::is_safe_name(set) && set.len() + 3 <= HASHLIMIT_NAME_MAX {
        format!("fwh{set}")
    } else {
        let index = ruleset.sets.iter().position(|s| s.name == set);
        format!("fwh-m{}", index.unwrap_or_default())
    };
    Ok(format!(
        " -m hashlimit --hashlimit-above {} --hashlimit-burst {} --hashlimit-mode srcip --hashlimit-name {name} --hashlimit-htable-max {size} --hashlimit-htable-expire {}",
        rate_text(rate),
        rate.burst,
        u64::from(*timeout_secs) * 1000
    ))
}

/// Whether iptables' hashlimit match takes `rate` with its burst. The
/// kernel refuses (ERANGE, "overflow, try lower") a burst whose credits
/// overflow 64 bits (net/netfilter/xt_hashlimit.c,
/// `hashlimit_mt_check_common`): it computes `avg * burst` credits with
/// `avg = SCALE * period / count` (iptables' parse_rate, SCALE being
/// XT_HASHLIMIT_SCALE_v2 = 10^6) and multiplies them by
/// `HZ * CREDITS_PER_JIFFY / SCALE`, CREDITS_PER_JIFFY being the power of
/// two below `2^64 / (HZ * 86400)`. HZ is the kernel's build-time tick
/// (100 to 1000): the check holds for each, so the emitted files load on
/// any kernel. A product that does not overflow always passes the kernel's
/// check; one that does may not, and is refused here.
pub fn hashlimit_holds(rate: &Rate) -> bool {
    const SCALE: u64 = 1_000_000;
    let avg = SCALE * rate.unit.seconds() / u64::from(rate.count.max(1));
    [100u64, 250, 300, 1000].into_iter().all(|hz| {
        let max_cpj = u64::MAX / (hz * 86_400);
        let cpj = 1u64 << (63 - max_cpj.leading_zeros());
        avg.checked_mul(u64::from(rate.burst))
            .and_then(|credits| credits.checked_mul(hz * cpj / SCALE))
            .is_some()
    })
}

/// Why [`hashlimit_holds`] refused `rate`, and what to write instead.
pub fn hashlimit_refusal(rate: &Rate) -> String {
    format!(
        "iptables' hashlimit cannot hold a burst of {} at {} (the kernel's credits overflow): write a smaller burst or a faster rate",
        rate.burst,
        rate_text(rate)
    )
}

/// The LOG target's limit on a prefix, NUL excluded (xt_LOG.h).
const LOG_PREFIX_MAX: usize = 29;
/// xt_NFLOG's prefix: 64 bytes, NUL included.
const NFLOG_PREFIX_MAX: usize = 63;

/// `log` as an iptables target (`LOG` at level 6, or `NFLOG` with its
/// group), and the warning to give when its prefix had to be shortened
/// (see [`short_log_prefix`]). `comment` is the rule's.
pub fn log_target(log: &Log, comment: &str) -> (String, Option<String>) {
    let (target, max) = match log.group {
        None => ("LOG", LOG_PREFIX_MAX),
        Some(_) => ("NFLOG", NFLOG_PREFIX_MAX),
    };
    let prefix = &log.prefix;
    let (prefix, warning) = if prefix.len() <= max && quote::is_safe_prefix(prefix) {
        (prefix.clone(), None)
    } else {
        let short = short_log_prefix(prefix, comment, max);
        let warning = format!(
            "{}: log prefix {:?} written as {short:?} ({target} takes {max} plain bytes)",
            quote::free_text(comment),
            quote::free_text(prefix)
        );
        (short, Some(warning))
    };
    let text = match log.group {
        None => format!("LOG --log-prefix \"{prefix}\" --log-level 6"),
        Some(g) => format!("NFLOG --nflog-group {g} --nflog-prefix \"{prefix}\""),
    };
    (text, warning)
}

/// A log prefix that fits in `max` plain bytes. Logging decides nothing,
/// so a prefix that does not fit is shortened rather than refused, keeping
/// what a person searches the log for: the rule's `file:line` (the first
/// word of its comment), as `fwh file:line `; a location too long for that
/// keeps its end (the line number and the file name's tail).
pub fn short_log_prefix(prefix: &str, comment: &str, max: usize) -> String {
    let location = comment
        .split_whitespace()
        .next()
        .filter(|w| {
            w.rsplit_once(':')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(quote::free_text);
    let Some(location) = location else {
        return quote::free_text(prefix.trim_start_matches('-'))
            .chars()
            .take(max)
            .collect();
    };
    let whole = format!("fwh {location} ");
    if whole.len() <= max {
        return whole;
    }
    // free_text leaves only ASCII, so a byte count is a char count.
    let tail = &location[location.len() - (max - 1).min(location.len())..];
    format!("{} ", tail.trim_start_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_log_prefix_keeps_the_profile_line() {
        let short = short_log_prefix(
            "fwharden allow ssh from admin: ",
            "web-server.toml:13 allow ssh from admin",
            29,
        );
        assert_eq!(short, "fwh web-server.toml:13 ");
        let long = short_log_prefix("x", "a-very-long-profile-name-indeed.toml:1234 allow", 29);
        assert!(
            long.len() <= 29 && long.ends_with(".toml:1234 "),
            "{long:?}"
        );
        let no_location = short_log_prefix(
            "-\"fwharden policy drop, very long indeed",
            "defaults: log drops",
            29,
        );
        assert!(no_location.len() <= 29 && quote::is_safe_prefix(&no_location));
    }

    fn rate(count: u32, unit: RateUnit, burst: u32) -> Rate {
        Rate { count, unit, burst }
    }

    /// iptables' own test file (extensions/libxt_hashlimit.t) loads these;
    /// 212959/day is the burst a random profile found refused by the real
    /// ip6tables-restore ("Numerical result out of range").
    #[test]
    fn what_the_kernel_takes_and_what_it_refuses() {
        assert!(hashlimit_holds(&rate(1, RateUnit::Second, 5)));
        assert!(hashlimit_holds(&rate(1_000_000, RateUnit::Second, 5)));
        assert!(hashlimit_holds(&rate(1, RateUnit::Hour, 5)));
        assert!(hashlimit_holds(&rate(1, RateUnit::Day, 1)));
        assert!(hashlimit_holds(&rate(6, RateUnit::Minute, 10_000)));
        assert!(!hashlimit_holds(&rate(1, RateUnit::Day, 5)));
        assert!(!hashlimit_holds(&rate(3, RateUnit::Day, 212_959)));
    }
}
