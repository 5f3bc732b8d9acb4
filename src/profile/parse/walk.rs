//! The table walker: reads the profile's top level, `[defaults]`,
//! `[groups]`, `[services]` and each `[[rule]]`, refusing unknown keys and
//! keys that contradict each other within a table.

use std::ops::Range;

use toml_edit::{Item, TableLike, Value};

use super::{
    sp, span_of, type_name, Action, ChainPolicy, ContainerPolicy, IcmpPolicy, Parser, RawBans,
    RawDefaults, RawGroup, RawProfile, RawRule, RawService, Sp, BAN_KEYS, DEFAULT_KEYS, GROUP_KEYS,
    RULE_KEYS, SERVICE_KEYS, TOP_KEYS,
};

impl Parser<'_> {
    pub(super) fn profile(&mut self, top: &toml_edit::Table) -> RawProfile {
        let mut p = RawProfile::default();
        for (key, kspan, item) in self.entries(top, TOP_KEYS, "a profile") {
            match key {
                "description" => p.description = self.string(item, "description"),
                "extends" => p.extends = self.string(item, "extends"),
                "defaults" => {
                    if let Some(t) = self.table(item, kspan, "[defaults]") {
                        p.defaults = self.defaults(t);
                    }
                }
                "bans" => {
                    if let Some(t) = self.table(item, kspan, "[bans]") {
                        p.bans = self.bans(t);
                    }
                }
                "groups" => {
                    if let Some(t) = self.table(item, kspan, "[groups]") {
                        p.groups = self.groups(t);
                    }
                }
                "services" => {
                    if let Some(t) = self.table(item, kspan, "[services]") {
                        p.services = self.services(t);
                    }
                }
                "rule" => p.rules = self.rules(item, kspan),
                _ => unreachable!("entries() only yields allowed keys"),
            }
        }
        p
    }

    fn table<'t>(
        &mut self,
        item: &'t Item,
        kspan: Range<usize>,
        what: &str,
    ) -> Option<&'t dyn TableLike> {
        match item.as_table_like() {
            Some(t) => Some(t),
            None => {
                self.error(
                    span_of(item),
                    format!("`{}` must be a table, not {}", &what[1..what.len() - 1], type_name(item)),
                    format!("write it as a section: {what} on a line of its own, then key = value lines"),
                );
                let _ = kspan;
                None
            }
        }
    }

    fn defaults(&mut self, t: &dyn TableLike) -> RawDefaults {
        let mut d = RawDefaults::default();
        let policies = [("drop", ChainPolicy::Drop), ("accept", ChainPolicy::Accept)];
        for (key, _, item) in self.entries(t, DEFAULT_KEYS, "[defaults]") {
            match key {
                "input" => d.input = self.word(item, key, &policies),
                "output" => d.output = self.word(item, key, &policies),
                "forward" => d.forward = self.word(item, key, &policies),
                "established" => d.established = self.boolean(item, key),
                "drop_invalid" => d.drop_invalid = self.boolean(item, key),
                "loopback" => d.loopback = self.boolean(item, key),
                "icmp" => {
                    d.icmp = self.word(
                        item,
                        key,
                        &[
                            ("essential", IcmpPolicy::Essential),
                            ("none", IcmpPolicy::None),
                        ],
                    )
                }
                "ping" => d.ping = self.rate(item, key, true),
                "log_drops" => d.log_drops = self.rate(item, key, true),
                "nflog_group" => {
                    d.nflog_group = match (item.as_integer(), item.as_bool()) {
                        (Some(n @ 0..=65535), _) => Some(sp(Some(n as u16), span_of(item))),
                        (_, Some(false)) => Some(sp(None, span_of(item))),
                        _ => {
                            self.error(
                                span_of(item),
                                "`nflog_group` must be an NFLOG group from 0 to 65535, or false for the kernel log",
                                "e.g. `nflog_group = 7`; `fwharden log` reads that group",
                            );
                            None
                        }
                    }
                }
                "containers" => {
                    d.containers = self.word(
                        item,
                        key,
                        &[
                            ("filter", ContainerPolicy::Filter),
                            ("ignore", ContainerPolicy::Ignore),
                        ],
                    )
                }
                _ => unreachable!(),
            }
        }
        d
    }

    fn bans(&mut self, t: &dyn TableLike) -> RawBans {
        let mut b = RawBans::default();
        for (key, _, item) in self.entries(t, BAN_KEYS, "[bans]") {
            match key {
                "enabled" => b.enabled = self.boolean(item, key),
                "timeout" => b.timeout = self.duration(item, key),
                "size" => {
                    b.size = match item.as_integer() {
                        Some(n @ 1..=16_777_216) => Some(sp(n as u32, span_of(item))),
                        _ => {
                            self.error(
                                span_of(item),
                                "`size` must be a whole number from 1 to 16777216",
                                "write size = 65536: how many bans each set (IPv4, IPv6) holds",
                            );
                            None
                        }
                    }
                }
                "exempt" => b.exempt = self.strings(item, key),
                _ => unreachable!(),
            }
        }
        b
    }

    fn groups(&mut self, t: &dyn TableLike) -> Vec<RawGroup> {
        let mut out = Vec::new();
        for (name, kspan, item) in t.iter().map(|(k, i)| {
            let ks = t
                .key(k)
                .and_then(|k| k.span())
                .unwrap_or_else(|| span_of(i));
            (k, ks, i)
        }) {
            let errors_before = self.diags.len();
            let mut g = RawGroup {
                name: sp(name.to_string(), kspan),
                members: Vec::new(),
                file: None,
                family: None,
                invalid: false,
            };
            if let Some(table) = item.as_table_like() {
                for (key, _, v) in self.entries(table, GROUP_KEYS, "a group") {
                    match key {
                        "members" => g.members = self.strings(v, "members").unwrap_or_default(),
                        "file" => g.file = self.string(v, "file"),
                        "family" => g.family = self.family(v),
                        "description" => drop(self.string(v, "description")),
                        _ => unreachable!(),
                    }
                }
            } else if item.is_array() || item.is_str() {
                g.members = self.strings(item, name).unwrap_or_default();
            } else {
                self.error(
                    span_of(item),
                    format!("group `{name}` must be an array of addresses and group names, not {}", type_name(item)),
                    format!("write {name} = [\"192.0.2.0/24\", \"other-group\"] or {name} = {{ file = \"list.txt\" }}"),
                );
                continue;
            }
            g.invalid = self.diags.len() > errors_before;
            out.push(g);
        }
        out
    }

    fn services(&mut self, t: &dyn TableLike) -> Vec<RawService> {
        let mut out = Vec::new();
        for (name, item) in t.iter() {
            let kspan = t
                .key(name)
                .and_then(|k| k.span())
                .unwrap_or_else(|| span_of(item));
            let Some(table) = item.as_table_like() else {
                self.error(
                    span_of(item),
                    format!("service `{name}` must be a table, not {}", type_name(item)),
                    format!("write {name} = {{ port = 8080, proto = \"tcp\" }}"),
                );
                continue;
            };
            let mut s = RawService {
                name: sp(name.to_string(), kspan.clone()),
                ports: Vec::new(),
                proto: None,
            };
            let mut has_port = false;
            let suggested_before = self.suggested.len();
            for (key, _, v) in self.entries(table, SERVICE_KEYS, "a service") {
                match key {
                    "port" => {
                        has_port = true;
                        s.ports = self.ports(v);
                    }
                    "proto" => s.proto = self.proto(v),
                    "description" => drop(self.string(v, "description")),
                    _ => unreachable!(),
                }
            }
            // Kept even when refused, so rules naming it are not also told
            // it is unknown; `portt = 80` was reported already.
            if !has_port
                && !self.suggested[suggested_before..]
                    .iter()
                    .any(|k| k == "port")
            {
                self.error(
                    kspan,
                    format!("service `{name}` has no port"),
                    format!("write {name} = {{ port = 8080, proto = \"tcp\" }}"),
                );
            }
            out.push(s);
        }
        out
    }

    fn rules(&mut self, item: &Item, kspan: Range<usize>) -> Vec<RawRule> {
        // A [[rule]] table's span is its header; an inline one's, its braces.
        let tables: Vec<(Range<usize>, &dyn TableLike)> = match item {
            Item::ArrayOfTables(a) => a
                .iter()
                .map(|t| (t.span().unwrap_or(0..0), t as &dyn TableLike))
                .collect(),
            Item::Value(Value::Array(a)) if a.iter().all(|v| v.is_inline_table()) => a
                .iter()
                .filter_map(|v| v.as_inline_table())
                .map(|t| (t.span().unwrap_or(0..0), t as &dyn TableLike))
                .collect(),
            _ => {
                self.error(
                    kspan,
                    "`rule` must be written as [[rule]] sections",
                    "start each rule with a line [[rule]], followed by allow = \"ssh\" and its other keys",
                );
                return Vec::new();
            }
        };
        tables
            .into_iter()
            .filter_map(|(span, t)| self.rule(span, t))
            .collect()
    }

    fn rule(&mut self, header: Range<usize>, t: &dyn TableLike) -> Option<RawRule> {
        let suggested_before = self.suggested.len();
        let mut action: Option<(Sp<Action>, &Item)> = None;
        let mut r = RawRule {
            span: header.clone(),
            action: sp(Action::Allow, header.clone()),
            targets: Vec::new(),
            from: None,
            proto: None,
            interface: None,
            family: None,
            limit: None,
            burst: None,
            log: None,
            comment: None,
        };
        for (key, kspan, item) in self.entries(t, RULE_KEYS, "a rule") {
            match key {
                "allow" | "deny" | "reject" => {
                    let a = match key {
                        "allow" => Action::Allow,
                        "deny" => Action::Deny,
                        _ => Action::Reject,
                    };
                    if let Some((first, _)) = &action {
                        self.error(
                            kspan,
                            format!(
                                "a rule has one action, and this one has both `{}` and `{key}`",
                                first.value.as_str()
                            ),
                            "split it into two [[rule]] sections",
                        );
                        return None;
                    }
                    action = Some((sp(a, kspan), item));
                }
                "from" => {
                    r.from = self.strings(item, "from");
                    match &r.from {
                        // Every bad item was reported; the rule is dropped.
                        None => return None,
                        Some(items) if items.is_empty() => {
                            self.error(
                                kspan,
                                "`from` lists no source",
                                "remove `from` to allow any source, or name groups and addresses",
                            );
                            return None;
                        }
                        Some(_) => {}
                    }
                }
                "proto" => r.proto = self.proto(item),
                "interface" => r.interface = self.string(item, "interface"),
                "family" => r.family = self.family(item),
                "limit" => {
                    r.limit = self
                        .rate(item, "limit", false)
                        .and_then(|s| s.value.map(|v| sp(v, s.span)))
                }
                "burst" => {
                    r.burst = match item.as_integer() {
                        Some(n) if (1..=1_000_000).contains(&n) => {
                            Some(sp(n as u32, span_of(item)))
                        }
                        _ => {
                            self.error(
                                span_of(item),
                                "`burst` must be a whole number from 1 to 1000000",
                                "write burst = 5",
                            );
                            None
                        }
                    }
                }
                "log" => {
                    r.log = match item {
                        i if i.as_bool() == Some(true) => Some(sp(None, span_of(i))),
                        i if i.as_bool() == Some(false) => None,
                        i if i.is_str() => self.string(i, "log").map(|s| sp(Some(s.value), s.span)),
                        i => {
                            self.error(
                                span_of(i),
                                format!(
                                    "`log` must be true, false or a prefix string, not {}",
                                    type_name(i)
                                ),
                                "write log = true, or log = \"ssh: \" to choose the prefix",
                            );
                            None
                        }
                    }
                }
                "comment" => r.comment = self.string(item, "comment"),
                _ => unreachable!(),
            }
        }
        let Some((act, item)) = action else {
            // `alow = "ssh"` was reported already, with `allow` suggested.
            if self.suggested[suggested_before..]
                .iter()
                .any(|k| matches!(k.as_str(), "allow" | "deny" | "reject"))
            {
                return None;
            }
            self.error(
                header,
                "this rule says neither allow, deny nor reject",
                "add allow = \"ssh\" (or deny/reject) naming services, ports like \"8080/tcp\", or \"all\"",
            );
            return None;
        };
        r.action = act;
        r.targets = self.targets(item, r.action.value.as_str())?;
        Some(r)
    }
}
#[cfg(test)]
mod tests {
    use super::super::tests::parse_str;
    use super::super::{ProtoSpec, Target};
    use super::*;
    use crate::ruleset::PortRange;

    #[test]
    fn reads_a_rule_with_every_key() {
        let (p, d) = parse_str(
            "[[rule]]\nallow = [\"ssh\", 8080, \"6000-6010/udp\"]\nfrom = \"admin\"\nproto = \"both\"\ninterface = \"wg0\"\nfamily = \"ipv4\"\nlimit = \"6/minute\"\nburst = 3\nlog = \"ssh \"\ncomment = \"x\"\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let r = &p.rules[0];
        assert_eq!(r.action.value, Action::Allow);
        assert_eq!(r.targets.len(), 3);
        assert_eq!(
            r.targets[2].value,
            Target::Ports(
                PortRange {
                    first: 6000,
                    last: 6010
                },
                Some(ProtoSpec::Udp)
            )
        );
        assert_eq!(r.limit.as_ref().unwrap().value.count, 6);
        assert_eq!(r.burst.as_ref().unwrap().value, 3);
    }

    #[test]
    fn a_misspelled_action_is_reported_once() {
        let (_, d) = parse_str("[[rule]]\nalow = \"ssh\"\n");
        assert_eq!(d.len(), 1, "{d:?}");
    }
}
