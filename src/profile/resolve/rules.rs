//! Rules: each raw rule to a checked [`Rule`]: its ports (services and
//! literal ports per protocol), its sources, interface, limit and log
//! prefix, and the label that names it in comments and log lines.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::{merge_ranges, near_name, truncate, Resolver};
use crate::profile::addr::{self, looks_like_address, parse_prefix};
use crate::profile::diag::Diagnostic;
use crate::profile::parse::{Action, ProtoSpec, RawRule, Sp, Target};
use crate::profile::{Group, Ports, Rule, SourceSide, Sources};
use crate::ruleset::{Family, PortRange, Protocol, Rate, LOG_PREFIX_MAX};

impl Resolver<'_> {
    pub(super) fn rules(&mut self) -> Vec<Rule> {
        let mut out = Vec::new();
        let all: Vec<(usize, &RawRule)> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.raw.rules.iter().map(move |r| (i, r)))
            .collect();
        for (layer, raw) in all {
            let number = out.len() + 1;
            if let Some(rule) = self.rule(layer, raw, number) {
                out.push(rule);
            }
        }
        out
    }

    fn rule(&mut self, layer: usize, raw: &RawRule, number: usize) -> Option<Rule> {
        let errors = self.diags.len();
        let action = raw.action.value;
        let ports = self.ports(layer, raw);
        let sources = self.sources(layer, raw, number);
        let interface = raw.interface.as_ref().and_then(|i| {
            check_interface(&i.value)
                .map(|()| i.value.clone())
                .map_err(|why| self.error(layer, &i.span, why, "write the name as `ip link` shows it, e.g. \"wg0\", or a prefix ending in *, e.g. \"wg*\""))
                .ok()
        });
        let mut limit = raw.limit.as_ref().map(|l| l.value);
        if let (Some(l), false) = (&raw.limit, action == Action::Allow) {
            self.error(
                layer,
                &l.span,
                format!(
                    "`limit` only makes sense on allow rules; a {} rule already stops every packet",
                    action.as_str()
                ),
                "remove the limit, or make this an allow rule",
            );
        }
        match (&raw.burst, limit.as_mut()) {
            (Some(b), Some(l)) => {
                l.burst = b.value;
                if !l.fits_kernel() {
                    let max = Rate::max_count_plus_burst(l.unit) - u64::from(l.count);
                    self.error(
                        layer,
                        &b.span,
                        format!(
                            "a burst of {} at {}/{} is more than the kernel can count",
                            l.burst,
                            l.count,
                            l.unit.as_str()
                        ),
                        format!("use burst = {max} or less, or a shorter unit in `limit`"),
                    );
                }
            }
            (Some(b), None) => self.error(
                layer,
                &b.span,
                "`burst` without `limit`",
                "add limit = \"10/minute\", or remove burst",
            ),
            _ => {}
        }
        let label = label(raw);
        let log = match &raw.log {
            None => None,
            Some(Sp { value: None, .. }) => {
                // The label holds interface names, which may hold `$`; see
                // check_log_prefix.
                let prefix = format!("fwharden {}: ", label.replace('$', "_"));
                Some(truncate(&prefix, LOG_PREFIX_MAX))
            }
            Some(Sp {
                value: Some(p),
                span,
            }) => match check_log_prefix(p) {
                Ok(p) => Some(p),
                Err(why) => {
                    self.error(layer, span, why, "write a short prefix of printable ASCII without quotes, backslashes or $, e.g. log = \"ssh: \"");
                    None
                }
            },
        };
        if self.diags[errors..].iter().any(Diagnostic::is_error) {
            return None;
        }
        Some(Rule {
            action,
            ports: ports?,
            sources: sources?,
            interface,
            limit,
            log,
            origin: self.origin(layer, &raw.span),
            label: raw.comment.as_ref().map_or(label, |c| c.value.clone()),
        })
    }

    fn ports(&mut self, layer: usize, raw: &RawRule) -> Option<Ports> {
        let proto = raw.proto.as_ref().map(|p| p.value);
        let mut map: BTreeMap<Protocol, Vec<PortRange>> = BTreeMap::new();
        let mut all = None;
        for t in &raw.targets {
            match &t.value {
                Target::All => all = Some(t.span.clone()),
                Target::Service(name) => {
                    let Some(svc) = self.services.get(name).cloned() else {
                        let names: Vec<&str> = self.services.keys().map(String::as_str).collect();
                        let hint = match near_name(name, &names) {
                            Some(near) => format!("did you mean `{near}`? or define it under [services]"),
                            None => format!("define it under [services], e.g. {name} = {{ port = 8080, proto = \"tcp\" }}, or write the port itself, e.g. \"8080/tcp\""),
                        };
                        self.error(layer, &t.span, format!("unknown service `{name}`"), hint);
                        continue;
                    };
                    let protos: Vec<Protocol> = match proto {
                        None => svc.protocols.clone(),
                        Some(p) => p
                            .protocols()
                            .into_iter()
                            .filter(|x| svc.protocols.contains(x))
                            .collect(),
                    };
                    if protos.is_empty() {
                        self.error(layer, &t.span, format!("service `{name}` is {} only, so with proto = \"{}\" this rule could never match it", svc.protocols.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("/"), proto_str(proto)), "remove `proto`, or name a service of that protocol");
                        continue;
                    }
                    for p in protos {
                        map.entry(p).or_default().extend(svc.ranges.iter().copied());
                    }
                }
                Target::Ports(range, own) => {
                    let protos = match (*own, proto) {
                        (Some(a), Some(b)) if a != b => {
                            self.error(
                                layer,
                                &t.span,
                                format!(
                                    "\"{range}/{}\" contradicts proto = \"{}\"",
                                    proto_str(Some(a)),
                                    proto_str(Some(b))
                                ),
                                "write the protocol in one place only",
                            );
                            continue;
                        }
                        (Some(p), _) | (None, Some(p)) => p.protocols(),
                        (None, None) => vec![Protocol::Tcp],
                    };
                    for p in protos {
                        map.entry(p).or_default().push(*range);
                    }
                }
            }
        }
        if let Some(span) = all {
            if raw.targets.len() > 1 {
                self.error(
                    layer,
                    &span,
                    "\"all\" already covers every port and protocol",
                    "remove the other items, or remove \"all\"",
                );
                return None;
            }
            if let Some(p) = &raw.proto {
                self.error(
                    layer,
                    &p.span,
                    "`proto` cannot narrow \"all\"",
                    "write the ports instead, e.g. \"1-65535/udp\"",
                );
                return None;
            }
            return Some(Ports::All);
        }
        if map.is_empty() {
            return None;
        }
        Some(Ports::Some(
            map.into_iter().map(|(p, r)| (p, merge_ranges(r))).collect(),
        ))
    }

    fn sources(&mut self, layer: usize, raw: &RawRule, number: usize) -> Option<Sources> {
        let family = raw.family.as_ref().map(|f| f.value);
        let allowed = |f: Family| family.is_none_or(|x| x == f);
        let side = |f: Family| {
            if allowed(f) {
                SourceSide::Any
            } else {
                SourceSide::None
            }
        };
        let Some(items) = &raw.from else {
            return Some(Sources {
                v4: side(Family::Ipv4),
                v6: side(Family::Ipv6),
            });
        };
        let (mut any4, mut any6) = (false, false);
        let mut groups: Vec<String> = Vec::new();
        let mut literal: Vec<IpNet> = Vec::new();
        let mut ok = true;
        for item in items {
            let s = item.value.trim();
            match s {
                "any" => (any4, any6) = (true, true),
                "any4" => any4 = true,
                "any6" => any6 = true,
                "" => {
                    ok = false;
                    self.error(
                        layer,
                        &item.span,
                        "`from` has an empty item",
                        "write an address, a prefix or a group name, or remove the item",
                    );
                }
                _ if looks_like_address(s) => match parse_prefix(s) {
                    Ok(net) if !allowed(Family::of(&net)) => {
                        ok = false;
                        self.error(layer, &item.span, format!("{} prefix {net} in a rule with family = \"{}\": it could never match", Family::of(&net), family.unwrap_or(Family::Ipv4)), "remove it, or remove the rule's `family` line");
                    }
                    Ok(net) => literal.push(net),
                    Err(why) => {
                        ok = false;
                        self.error(
                            layer,
                            &item.span,
                            why,
                            "write an address, a prefix or a group name",
                        );
                    }
                },
                _ => match self.groups.get(s) {
                    Some(Some(_)) => {
                        self.used.insert(s.to_string());
                        groups.push(s.to_string());
                    }
                    Some(None) => ok = false,
                    None => {
                        ok = false;
                        let (msg, hint) = self.unknown_group(s);
                        self.error(layer, &item.span, msg, hint);
                    }
                },
            }
        }
        if !ok {
            return None;
        }
        if !literal.is_empty() {
            // Addresses written in a rule become a set of their own.
            let name = format!("_rule{number}");
            let origin = self.origin(layer, &raw.span);
            self.groups.insert(
                name.clone(),
                Some(Group {
                    name: name.clone(),
                    prefixes: addr::aggregate(&literal),
                    origin,
                }),
            );
            groups.push(name);
        }
        let build = |f: Family, any: bool| -> SourceSide {
            if !allowed(f) {
                return SourceSide::None;
            }
            if any {
                return SourceSide::Any;
            }
            let with: Vec<String> = groups
                .iter()
                .filter(|g| {
                    self.groups
                        .get(*g)
                        .and_then(|g| g.as_ref())
                        .is_some_and(|g| g.has(f))
                })
                .cloned()
                .collect();
            if with.is_empty() {
                SourceSide::None
            } else {
                SourceSide::Groups(with)
            }
        };
        let sources = Sources {
            v4: build(Family::Ipv4, any4),
            v6: build(Family::Ipv6, any6),
        };
        if sources.v4 == SourceSide::None && sources.v6 == SourceSide::None {
            let span = raw
                .family
                .as_ref()
                .map_or(raw.span.clone(), |f| f.span.clone());
            self.error(
                layer,
                &span,
                format!(
                    "this rule can match no packet: none of its sources is {}",
                    family.map_or("an address".to_string(), |f| f.to_string())
                ),
                "remove the rule's `family` line, or add sources of that family",
            );
            return None;
        }
        Some(sources)
    }
}

fn proto_str(p: Option<ProtoSpec>) -> &'static str {
    match p {
        Some(ProtoSpec::Tcp) | None => "tcp",
        Some(ProtoSpec::Udp) => "udp",
        Some(ProtoSpec::Both) => "both",
    }
}

/// `allow ssh, 8080/tcp from admin on wg0`.
fn label(raw: &RawRule) -> String {
    let targets: Vec<String> = raw
        .targets
        .iter()
        .map(|t| match &t.value {
            Target::All => "all".to_string(),
            Target::Service(s) => s.clone(),
            Target::Ports(r, None) => r.to_string(),
            Target::Ports(r, Some(p)) => format!("{r}/{}", proto_str(Some(*p))),
        })
        .collect();
    let mut s = format!("{} {}", raw.action.value.as_str(), targets.join(","));
    if let Some(from) = &raw.from {
        let from: Vec<&str> = from.iter().map(|f| f.value.as_str()).collect();
        s.push_str(&format!(" from {}", from.join(",")));
    }
    if let Some(i) = &raw.interface {
        s.push_str(&format!(" on {}", i.value));
    }
    s
}

/// Interface names as the kernel takes them (IFNAMSIZ is 16, NUL included).
fn check_interface(name: &str) -> Result<(), String> {
    let stem = name.strip_suffix('*').unwrap_or(name);
    if name.is_empty() {
        return Err("`interface` is empty".to_string());
    }
    if name == "*" {
        return Err(
            "interface \"*\" alone matches every interface; remove `interface` to mean that"
                .to_string(),
        );
    }
    if name.len() > 15 {
        return Err(format!(
            "interface name \"{name}\" is longer than 15 characters, the kernel's limit"
        ));
    }
    if let Some(c) = stem.chars().find(|c| {
        c.is_whitespace() || matches!(c, '/' | '"' | '*' | ':' | '\\') || !c.is_ascii_graphic()
    }) {
        return Err(format!(
            "interface name \"{name}\" holds {c:?}, which an interface name cannot"
        ));
    }
    Ok(())
}

fn check_log_prefix(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("`log` prefix is empty".to_string());
    }
    if p.len() > LOG_PREFIX_MAX - 1 {
        return Err(format!(
            "`log` prefix is {} bytes; the kernel keeps at most {}",
            p.len(),
            LOG_PREFIX_MAX - 1
        ));
    }
    // nft expands `$name` inside a log prefix as a variable (and refuses
    // an undefined one), so `$` cannot reach the `nft -f` text.
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ') || matches!(c, '"' | '\\' | '$'))
    {
        return Err(format!("`log` prefix holds {c:?}"));
    }
    Ok(if p.ends_with(' ') {
        p.to_string()
    } else {
        format!("{p} ")
    })
}
