//! TOML text to a raw profile: structure and types only, every value kept
//! with its byte span. Meaning (names, addresses, cycles) is checked later,
//! in `resolve`, where the whole extends chain is known.
//!
//! This file owns the raw types, the keys each table takes, the `parse`
//! entry point and the hints for unknown keys and TOML syntax errors.
//! `walk` reads the tables (profile, defaults, groups, services, rules);
//! `value` reads the values inside them (strings, words, ports, targets,
//! rates).

mod value;
mod walk;

use std::ops::Range;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::diag::{closest, Diagnostic, SourceFile};
use crate::ruleset::{Family, PortRange, Protocol, Rate};

pub use value::{parse_port_range, parse_rate};

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
    pub bans: RawBans,
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
    pub nflog_group: Option<Sp<Option<u16>>>,
    pub containers: Option<Sp<ContainerPolicy>>,
}

/// `[bans]`: each key optional; a child overrides its parent key by key.
#[derive(Debug, Default)]
pub struct RawBans {
    pub enabled: Option<Sp<bool>>,
    /// Seconds.
    pub timeout: Option<Sp<u32>>,
    pub size: Option<Sp<u32>>,
    /// Names of groups a ban never drops.
    pub exempt: Option<Vec<Sp<String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPolicy {
    Accept,
    Drop,
}

/// What the profile does with connections to published container ports
/// (Docker's and Podman's `-p`), which are DNAT'd in prerouting and then
/// forwarded, so they never reach the input chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerPolicy {
    /// The rules hold for published ports too, matched by the port the
    /// client connected to; a published port no rule allows is dropped.
    Filter,
    /// Published ports are left to the container engine.
    Ignore,
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
    "bans",
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
    "nflog_group",
    "containers",
];
const BAN_KEYS: &[&str] = &["enabled", "timeout", "size", "exempt"];
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses profile text; shared with the tests of `walk` and `value`.
    pub(super) fn parse_str(text: &str) -> (RawProfile, Vec<Diagnostic>) {
        let src = SourceFile::new("t.toml", text.to_string());
        let mut d = Vec::new();
        let p = parse(&src, &mut d);
        (p, d)
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
    fn unknown_keys_suggest_longer_forms_and_synonyms() {
        assert_eq!(near_key("protocol", SERVICE_KEYS), Some("proto"));
        assert_eq!(near_key("source", RULE_KEYS), Some("from"));
        assert_eq!(near_key("ports", RULE_KEYS), Some("allow"));
        assert_eq!(near_key("ports", SERVICE_KEYS), Some("port"));
        assert_eq!(near_key("zzz", RULE_KEYS), None);
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
}
