//! TOML text to a raw profile: structure and types only, every value kept
//! with its byte span. Meaning (names, addresses, cycles) is checked later,
//! in `resolve`, where the whole extends chain is known.

use std::ops::Range;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::diag::{closest, Diagnostic, SourceFile};
use crate::ruleset::{Family, PortRange, Protocol, Rate, RateUnit};

/// A value with the byte span it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sp<T> {
    pub value: T,
    pub span: Range<usize>,
}

fn sp<T>(value: T, span: Range<usize>) -> Sp<T> {
    Sp { value, span }
}

#[derive(Debug, Default)]
pub struct RawProfile {
    pub description: Option<Sp<String>>,
    pub extends: Option<Sp<String>>,
    pub defaults: RawDefaults,
    pub groups: Vec<RawGroup>,
    pub services: Vec<RawService>,
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Default)]
pub struct RawDefaults {
    pub input: Option<Sp<ChainPolicy>>,
    pub output: Option<Sp<ChainPolicy>>,
    pub forward: Option<Sp<ChainPolicy>>,
    pub established: Option<Sp<bool>>,
    pub drop_invalid: Option<Sp<bool>>,
    pub loopback: Option<Sp<bool>>,
    pub icmp: Option<Sp<IcmpPolicy>>,
    /// `None` inside: `ping = false`.
    pub ping: Option<Sp<Option<Rate>>>,
    pub log_drops: Option<Sp<Option<Rate>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPolicy {
    Accept,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpPolicy {
    /// Neighbour discovery, packet-too-big and the other errors that IPv4
    /// and IPv6 need to work.
    Essential,
    None,
}

#[derive(Debug)]
pub struct RawGroup {
    pub name: Sp<String>,
    /// CIDRs, addresses and names of other groups, as written.
    pub members: Vec<Sp<String>>,
    pub file: Option<Sp<String>>,
    pub family: Option<Sp<Family>>,
    /// Reading it already failed and was reported: it resolves to nothing,
    /// without a second "empty group" error, and rules using it are dropped.
    pub invalid: bool,
}

#[derive(Debug)]
pub struct RawService {
    pub name: Sp<String>,
    pub ports: Vec<Sp<PortRange>>,
    pub proto: Option<Sp<ProtoSpec>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoSpec {
    Tcp,
    Udp,
    Both,
}

impl ProtoSpec {
    pub fn protocols(self) -> Vec<Protocol> {
        match self {
            ProtoSpec::Tcp => vec![Protocol::Tcp],
            ProtoSpec::Udp => vec![Protocol::Udp],
            ProtoSpec::Both => vec![Protocol::Tcp, Protocol::Udp],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Reject => "reject",
        }
    }
}

/// One item of `allow = [...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `"all"`: every port and protocol.
    All,
    Service(String),
    /// A literal port or range, with the protocol written after a `/`.
    Ports(PortRange, Option<ProtoSpec>),
}

#[derive(Debug)]
pub struct RawRule {
    /// The `[[rule]]` header.
    pub span: Range<usize>,
    pub action: Sp<Action>,
    pub targets: Vec<Sp<Target>>,
    pub from: Option<Vec<Sp<String>>>,
    pub proto: Option<Sp<ProtoSpec>>,
    pub interface: Option<Sp<String>>,
    pub family: Option<Sp<Family>>,
    pub limit: Option<Sp<Rate>>,
    pub burst: Option<Sp<u32>>,
    /// `Some(None)` for `log = true`, `Some(Some(prefix))` for a prefix.
    pub log: Option<Sp<Option<String>>>,
    pub comment: Option<Sp<String>>,
}

const TOP_KEYS: &[&str] = &[
    "description",
    "extends",
    "defaults",
    "groups",
    "services",
    "rule",
];
const DEFAULT_KEYS: &[&str] = &[
    "input",
    "output",
    "forward",
    "established",
    "drop_invalid",
    "loopback",
    "icmp",
    "ping",
    "log_drops",
];
const GROUP_KEYS: &[&str] = &["members", "file", "family", "description"];
const SERVICE_KEYS: &[&str] = &["port", "proto", "description"];
const RULE_KEYS: &[&str] = &[
    "allow",
    "deny",
    "reject",
    "from",
    "proto",
    "interface",
    "family",
    "limit",
    "burst",
    "log",
    "comment",
];

/// Parses one profile file. Every problem found is pushed to `diags`; the
/// returned profile holds what could be read.
pub fn parse(src: &SourceFile, diags: &mut Vec<Diagnostic>) -> RawProfile {
    let doc = match ImDocument::parse(src.text.as_str()) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            // The parser's message is several lines with a caret drawing;
            // its last non-empty line says what was wrong.
            let msg = e
                .message()
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid TOML")
                .trim()
                .to_string();
            diags.push(
                src.error(span, format!("this is not valid TOML: {msg}"))
                    .with_hint(toml_hint(e.message(), &msg)),
            );
            return RawProfile::default();
        }
    };
    let mut p = Parser {
        src,
        diags,
        suggested: Vec::new(),
    };
    p.profile(doc.as_table())
}

/// Keys people reach for that the profile language spells differently.
const SYNONYMS: &[(&str, &str)] = &[
    ("source", "from"),
    ("sources", "from"),
    ("src", "from"),
    ("port", "allow"),
    ("ports", "allow"),
    ("protocol", "proto"),
    ("iface", "interface"),
];

/// The allowed key an unknown one most likely meant: a near spelling, a
/// longer form (`protocol` for `proto`), or a known synonym.
fn near_key<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    closest(key, allowed.iter().copied())
        .or_else(|| {
            allowed
                .iter()
                .copied()
                .find(|a| a.len() >= 4 && key.starts_with(a))
        })
        .or_else(|| {
            SYNONYMS
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, a)| allowed.iter().copied().find(|x| x == a))
        })
}

/// What to write instead, for the TOML parser's most common complaints.
fn toml_hint(full: &str, last: &str) -> String {
    if let Some(key) = last
        .strip_prefix("duplicate key `")
        .and_then(|rest| rest.split('`').next())
        .map(|k| k.trim_matches('"'))
    {
        return if full.contains("table header") {
            format!(
                "a section is written once: merge the two [{key}] sections (only [[rule]] repeats)"
            )
        } else {
            format!("`{key}` is written once per table: remove one of them, or, if a new rule starts here, put a [[rule]] line before it")
        };
    }
    if last.contains("string") {
        return "close the string with a \" on the same line; write a \" inside a string as \\\""
            .to_string();
    }
    "check this line for an unclosed quote or bracket, or a missing `=`; values are written key = \"text\", key = 22 or key = [\"a\", \"b\"]".to_string()
}

struct Parser<'a> {
    src: &'a SourceFile,
    diags: &'a mut Vec<Diagnostic>,
    /// Every key suggested for an unknown one so far, so that a rule whose
    /// `alow` was reported is not also reported as having no action.
    suggested: Vec<String>,
}

type Entries<'t> = Vec<(&'t str, Range<usize>, &'t Item)>;

fn span_of(item: &Item) -> Range<usize> {
    item.span().unwrap_or(0..0)
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(Value::String(_)) => "a string",
        Item::Value(Value::Integer(_)) => "an integer",
        Item::Value(Value::Float(_)) => "a float",
        Item::Value(Value::Boolean(_)) => "a boolean",
        Item::Value(Value::Datetime(_)) => "a date",
        Item::Value(Value::Array(_)) => "an array",
        Item::Value(Value::InlineTable(_)) | Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

impl Parser<'_> {
    fn error(&mut self, span: Range<usize>, msg: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(self.src.error(span, msg).with_hint(hint));
    }

    /// The entries of a table, refusing keys not in `allowed`.
    fn entries<'t>(
        &mut self,
        table: &'t dyn TableLike,
        allowed: &[&str],
        what: &str,
    ) -> Entries<'t> {
        let mut out = Vec::new();
        for (key, item) in table.iter() {
            let kspan = table
                .key(key)
                .and_then(|k| k.span())
                .unwrap_or_else(|| span_of(item));
            if allowed.contains(&key) {
                out.push((key, kspan, item));
                continue;
            }
            let hint = match near_key(key, allowed) {
                Some(near) => format!(
                    "did you mean `{near}`? {what} takes: {}",
                    allowed.join(", ")
                ),
                None => format!("{what} takes: {}", allowed.join(", ")),
            };
            self.error(kspan, format!("unknown key `{key}` in {what}"), hint);
            self.suggested
                .push(near_key(key, allowed).unwrap_or_default().to_string());
        }
        out
    }

    fn profile(&mut self, top: &toml_edit::Table) -> RawProfile {
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

    fn string(&mut self, item: &Item, key: &str) -> Option<Sp<String>> {
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

    fn boolean(&mut self, item: &Item, key: &str) -> Option<Sp<bool>> {
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
    fn word<T: Copy>(&mut self, item: &Item, key: &str, words: &[(&str, T)]) -> Option<Sp<T>> {
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
    fn strings(&mut self, item: &Item, key: &str) -> Option<Vec<Sp<String>>> {
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

    fn family(&mut self, item: &Item) -> Option<Sp<Family>> {
        self.word(
            item,
            "family",
            &[("ipv4", Family::Ipv4), ("ipv6", Family::Ipv6)],
        )
    }

    fn proto(&mut self, item: &Item) -> Option<Sp<ProtoSpec>> {
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

    /// A rate such as "10/minute", or false when `allow_off`.
    fn rate(&mut self, item: &Item, key: &str, allow_off: bool) -> Option<Sp<Option<Rate>>> {
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
                _ => unreachable!(),
            }
        }
        d
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

    /// `port = 22`, `"6000-6010"`, or an array of those.
    fn ports(&mut self, item: &Item) -> Vec<Sp<PortRange>> {
        let values: Vec<Value> = match item {
            Item::Value(Value::Array(a)) => a.iter().cloned().collect(),
            Item::Value(v) => vec![v.clone()],
            _ => Vec::new(),
        };
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

    fn targets(&mut self, item: &Item, key: &str) -> Option<Vec<Sp<Target>>> {
        let values: Vec<Value> = match item {
            Item::Value(Value::Array(a)) => a.iter().cloned().collect(),
            Item::Value(v) => vec![v.clone()],
            _ => Vec::new(),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> (RawProfile, Vec<Diagnostic>) {
        let src = SourceFile::new("t.toml", text.to_string());
        let mut d = Vec::new();
        let p = parse(&src, &mut d);
        (p, d)
    }

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
    fn unknown_key_is_located_with_a_suggestion() {
        let (_, d) = parse_str("descripton = \"x\"\n");
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].column), (1, 1));
        assert!(d[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("did you mean `description`"));
    }

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
    fn unknown_keys_suggest_longer_forms_and_synonyms() {
        assert_eq!(near_key("protocol", SERVICE_KEYS), Some("proto"));
        assert_eq!(near_key("source", RULE_KEYS), Some("from"));
        assert_eq!(near_key("ports", RULE_KEYS), Some("allow"));
        assert_eq!(near_key("ports", SERVICE_KEYS), Some("port"));
        assert_eq!(near_key("zzz", RULE_KEYS), None);
    }

    #[test]
    fn a_misspelled_action_is_reported_once() {
        let (_, d) = parse_str("[[rule]]\nalow = \"ssh\"\n");
        assert_eq!(d.len(), 1, "{d:?}");
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
    fn toml_errors_get_a_specific_hint() {
        let (_, d) = parse_str("[[rule]]\nallow = \"ssh\"\nallow = \"http\"\n");
        assert!(
            d[0].hint.as_deref().unwrap().contains("[[rule]] line"),
            "{d:?}"
        );
        let (_, d) = parse_str("[defaults]\n[defaults]\n");
        assert!(
            d[0].hint
                .as_deref()
                .unwrap()
                .contains("merge the two [defaults]"),
            "{d:?}"
        );
    }

    #[test]
    fn rates_are_checked() {
        assert_eq!(parse_rate("10/minute").unwrap().count, 10);
        assert!(parse_rate("0/minute").is_err());
        assert!(parse_rate("10/fortnight").is_err());
        assert!(parse_rate("ten").is_err());
    }
}
