//! The SSH lockout check the emitted scripts run before they load
//! anything, without fwharden on the target host: the question `apply`'s
//! guard asks [`crate::ruleset::eval`] ("is a *new* TCP connection from the
//! operator's address to the SSH port, arriving on this interface,
//! accepted by the input hook?"), answered by a small awk program
//! ([`CHECK_AWK`]) over a table the emitter writes from the model
//! ([`table`]).
//!
//! The table is the input hook's chains, in priority order, each rule
//! reduced to what can matter to such a packet; a rule that can never
//! match one (an ICMP type, udp only, `ct state established`, `ct status
//! dnat`, an output interface) is left out. The answers are eval's, with
//! its assumptions: per-source and global rate limits are not yet spent
//! (the first connection), and nobody is banned. One difference, on the
//! safe side: when the interface is unknown (no server address, or `ip`
//! missing), eval lets no rule naming an interface match; here such a
//! rule matches when it drops or rejects and does not when it accepts, so
//! the check can only refuse more. tests in this module compare the awk
//! answers with eval's for the shipped profiles and a profile using every
//! match.

use std::fmt::Write;
use std::net::IpAddr;

use super::quote;
use crate::ruleset::{CtState, Hook, Match, Protocol, Rule, Ruleset, SetKind, Verdict};

/// The awk program. Variables: `src` (the client's address), `iface` (the
/// interface the connection arrives on, empty when unknown), `port` (the
/// SSH server's port). Input: the [`table`]. Prints one line: `accept`,
/// `drop|reject COMMENT` (the rule or policy that decides) or `unreadable`
/// (the address is not one). POSIX awk only (mawk, gawk and busybox awk
/// run it): addresses are 16-bit groups in doubles, two for IPv4 and
/// eight for IPv6.
pub const CHECK_AWK: &str = r##"
function hexval(s,   i, c, v) {
  v = 0
  s = tolower(s)
  for (i = 1; i <= length(s); i++) {
    c = index("0123456789abcdef", substr(s, i, 1))
    if (c == 0) return -1
    v = v * 16 + c - 1
  }
  return v
}
function parse(a, g,   p, i, k, head, tail, nh, nt, h, t) {
  a = tolower(a)
  if (a ~ /^::ffff:[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/) a = substr(a, 8)
  if (a ~ /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/) {
    split(a, p, ".")
    for (i = 1; i <= 4; i++) if (p[i] + 0 > 255) return 0
    g[1] = p[1] * 256 + p[2]
    g[2] = p[3] * 256 + p[4]
    return 2
  }
  if (a !~ /^[0-9a-f:]+$/ || a !~ /:/) return 0
  k = index(a, "::")
  if (k) {
    head = substr(a, 1, k - 1)
    tail = substr(a, k + 2)
    if (index(tail, "::")) return 0
  } else {
    head = a
    tail = ""
  }
  nh = (head == "") ? 0 : split(head, h, ":")
  nt = (tail == "") ? 0 : split(tail, t, ":")
  if (k ? nh + nt > 7 : nh != 8) return 0
  for (i = 1; i <= 8; i++) g[i] = 0
  for (i = 1; i <= nh; i++) {
    if (length(h[i]) < 1 || length(h[i]) > 4) return 0
    g[i] = hexval(h[i])
  }
  for (i = 1; i <= nt; i++) {
    if (length(t[i]) < 1 || length(t[i]) > 4) return 0
    g[8 - nt + i] = hexval(t[i])
  }
  return 8
}
function holds(net,   x, n, parts, plen, i, j, bits, d) {
  split(net, parts, "/")
  n = parse(parts[1], x)
  if (n != SN) return 0
  plen = parts[2] + 0
  for (i = 1; plen > 0; i++) {
    bits = (plen >= 16) ? 16 : plen
    # 2^(16 - bits), without ^: busybox awk may lack its math library.
    d = 1
    for (j = bits; j < 16; j++) d *= 2
    if (int(x[i] / d) != int(S[i] / d)) return 0
    plen -= bits
  }
  return 1
}
function inports(list,   r, n, i, ab) {
  n = split(list, r, ",")
  for (i = 1; i <= n; i++) {
    split(r[i], ab, "-")
    if (port + 0 >= ab[1] + 0 && port + 0 <= ab[2] + 0) return 1
  }
  return 0
}
function cond(c, verdict,   k, v) {
  k = substr(c, 1, index(c, "=") - 1)
  v = substr(c, index(c, "=") + 1)
  if (k == "f") return v == FAM
  if (k == "port") return inports(v)
  if (k == "in") return (v in member)
  if (k == "notin") return !(v in member)
  if (k == "src") return holds(v)
  if (k == "if" || k == "ifp" || k == "ifu") {
    if (iface == "" || k == "ifu") return verdict != "accept"
    if (k == "if") return iface == v
    return substr(iface, 1, length(v)) == v
  }
  return verdict != "accept"
}
function finish() {
  if (!open) return
  open = 0
  if (!decided) {
    v = policy
    why = "no rule accepts it, and the policy of chain " cname " drops it"
  }
  if (v != "accept") {
    print v " " why
    finished = 1
    exit
  }
}
BEGIN {
  SN = parse(src, S)
  if (SN == 0) {
    print "unreadable"
    finished = 1
    exit
  }
  FAM = (SN == 2) ? 4 : 6
}
$1 == "net" {
  if (!($2 in member) && holds($3)) member[$2] = 1
  next
}
$1 == "chain" {
  finish()
  open = 1
  decided = 0
  policy = $2
  cname = $3
  next
}
$1 == "rule" && open && !decided {
  ok = 1
  for (i = 3; i <= NF && ok; i++) {
    if ($i == "#") break
    ok = cond($i, $2)
  }
  if (ok) {
    decided = 1
    v = $2
    why = $0
    sub(/^[^#]*# ?/, "", why)
    why = "the rule \"" why "\" " ((v == "reject") ? "rejects" : "drops") " it"
  }
}
END {
  if (finished) exit
  finish()
  if (!finished) print "accept"
}
"##;

/// The decision table of the input hook for a new TCP connection, in the
/// form [`CHECK_AWK`] reads: `net SET PREFIX` lines first (the prefixes of
/// each set a rule looks up), then per chain `chain POLICY NAME` and its
/// rules, `rule VERDICT CONDITION... # COMMENT`. Conditions: `f=4|6`,
/// `if=NAME`, `ifp=PREFIX` (a `wg*` wildcard), `ifu=` (a name the table
/// cannot carry: treated as unknown), `port=A-B,...`, `in=SET`,
/// `notin=SET`, `src=PREFIX`.
pub fn table(ruleset: &Ruleset) -> String {
    table_with_existing(ruleset, None)
}

/// Like [`table`], with a line `existing` after the first `lead` rules of
/// the input chain: where ufw.sh's check puts the ufw rules the host
/// already has, which ufw runs after its before.rules and ahead of the
/// rules ufw.sh adds.
pub fn table_with_existing(ruleset: &Ruleset, lead: Option<usize>) -> String {
    let mut chains: Vec<_> = ruleset
        .chains
        .iter()
        .filter(|c| c.hook == Hook::Input)
        .collect();
    chains.sort_by_key(|c| c.priority);
    let mut sets: Vec<&str> = Vec::new();
    let mut body = String::new();
    for chain in chains {
        let policy = match chain.policy {
            crate::ruleset::Policy::Accept => "accept",
            crate::ruleset::Policy::Drop => "drop",
        };
        let _ = writeln!(body, "chain {policy} {}", token(&chain.name));
        for (i, rule) in chain.rules.iter().enumerate() {
            // ufw's input chain is the model's only one.
            if lead == Some(i) {
                body.push_str("existing\n");
            }
            let Some(verdict) = rule.verdict else {
                continue;
            };
            let Some(conditions) = conditions(ruleset, rule, &mut sets) else {
                continue;
            };
            let verdict = match verdict {
                Verdict::Accept => "accept",
                Verdict::Drop => "drop",
                Verdict::Reject(_) => "reject",
            };
            let mut line = format!("rule {verdict}");
            for c in conditions {
                let _ = write!(line, " {c}");
            }
            let _ = writeln!(body, "{line} # {}", quote::free_text(&rule.comment));
        }
        if lead == Some(chain.rules.len()) {
            body.push_str("existing\n");
        }
    }
    let mut out = String::new();
    for (i, name) in sets.iter().enumerate() {
        match ruleset.set(name).map(|s| &s.kind) {
            Some(SetKind::Prefixes(nets)) => {
                for n in nets {
                    let _ = writeln!(out, "net s{i} {n}");
                }
            }
            Some(SetKind::Hatch(Some(e))) => {
                let _ = writeln!(out, "net s{i} {}", host_prefix(e.addr));
            }
            _ => {}
        }
    }
    out.push_str(&body);
    out
}

/// A name as one whitespace-free token of free text.
fn token(name: &str) -> String {
    quote::free_text(name).replace(' ', "_")
}

fn host_prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn family_word(f: crate::ruleset::Family) -> &'static str {
    match f {
        crate::ruleset::Family::Ipv4 => "f=4",
        crate::ruleset::Family::Ipv6 => "f=6",
    }
}

/// Whether a set holds addresses the model knows (eval's `in_set` answers
/// false for every other kind: meters, bans, an expired hatch).
fn known_members(ruleset: &Ruleset, set: &str) -> bool {
    matches!(
        ruleset.set(set).map(|s| &s.kind),
        Some(SetKind::Prefixes(_)) | Some(SetKind::Hatch(Some(_)))
    )
}

/// The rule's conditions on a new TCP connection to the host, or `None`
/// when it can never match one. Mirrors eval's `matches` for a packet
/// with transport tcp, state new, no NAT and fresh meters.
fn conditions<'a>(
    ruleset: &'a Ruleset,
    rule: &Rule,
    sets: &mut Vec<&'a str>,
) -> Option<Vec<String>> {
    let mut set_id = |name: &str| -> String {
        let i = match sets.iter().position(|s| *s == name) {
            Some(i) => i,
            None => {
                let stored = ruleset.set(name).map_or("", |s| s.name.as_str());
                sets.push(stored);
                sets.len() - 1
            }
        };
        format!("s{i}")
    };
    let mut out = Vec::new();
    for m in &rule.matches {
        match m {
            Match::Family(f) => out.push(family_word(*f).to_string()),
            Match::InInterface(name) => out.push(match name.strip_suffix('*') {
                Some(p) if quote::is_safe_name(p) => format!("ifp={p}"),
                None if quote::is_safe_name(name) => format!("if={name}"),
                _ => "ifu=".to_string(),
            }),
            Match::OutInterface(_) => return None,
            Match::CtState(states) if states.contains(&CtState::New) => {}
            Match::CtState(_) => return None,
            Match::Protocol(protos) if protos.contains(&Protocol::Tcp) => {}
            Match::Protocol(_) => return None,
            Match::DestPort(ranges) | Match::OrigDestPort(ranges) => {
                let list: Vec<String> = ranges
                    .iter()
                    .map(|r| format!("{}-{}", r.first, r.last))
                    .collect();
                out.push(format!("port={}", list.join(",")));
            }
            Match::CtStatus(_) => return None,
            Match::SourceInSet { family, set } => {
                if !known_members(ruleset, set) {
                    return None;
                }
                out.push(family_word(*family).to_string());
                out.push(format!("in={}", set_id(set)));
            }
            Match::SourceNotInSet { family, set } => {
                out.push(family_word(*family).to_string());
                if known_members(ruleset, set) {
                    out.push(format!("notin={}", set_id(set)));
                }
            }
            Match::Source(addr) => out.push(format!("src={}", host_prefix(*addr))),
            Match::IcmpType(_) | Match::Icmpv6Type(_) => return None,
            // Fresh meters: the first connection is under every limit.
            Match::SourceRateOver { .. } => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
