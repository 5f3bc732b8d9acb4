//! Raw profiles to a checked [`Profile`]: follows `extends`, resolves
//! service and group names, reads list files, and refuses anything that is
//! wrong with a located diagnostic saying what to write instead.
//!
//! This file owns the entry point, the extends chain, the `Resolver`
//! state, defaults and services. `groups` resolves groups and list files;
//! `rules` resolves each rule's ports, sources, interface, limit and log.

mod groups;
mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::builtin;
use super::diag::{closest, Diagnostic, SourceFile};
use super::lookup::{Location, SearchPath};
use super::parse::{self, ChainPolicy, IcmpPolicy, ProtoSpec, RawGroup, RawProfile, Sp};
use super::{BanPolicy, Defaults, Group, Origin, Profile};
use crate::ruleset::{PortRange, Protocol};

/// How deep an extends chain may go before it is surely a mistake.
const MAX_EXTENDS: usize = 16;

/// One file of the extends chain.
struct Layer {
    src: SourceFile,
    name: String,
    location: Location,
    raw: RawProfile,
}

/// `memo`, when given, is the directory of the memo of parsed list files
/// ([`crate::profile::memo`]).
pub fn resolve(
    spec: &str,
    search: &SearchPath,
    memo: Option<&Path>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Profile> {
    let layers = load_chain(spec, search, diags)?;
    let mut r = Resolver {
        layers: &layers,
        diags,
        memo,
        services: BTreeMap::new(),
        raw_groups: BTreeMap::new(),
        groups: BTreeMap::new(),
        used: BTreeSet::new(),
    };
    let defaults = r.defaults();
    r.collect_services();
    r.collect_groups();
    let names: Vec<String> = r.raw_groups.keys().cloned().collect();
    for name in names {
        r.group(&name, &mut Vec::new());
    }
    let rules = r.rules();
    let bans = r.bans();
    // After an error, "unused" mostly means "the rule using it failed".
    if !r.diags.iter().any(Diagnostic::is_error) {
        r.warn_unused();
    }
    let groups = std::mem::take(&mut r.groups)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let leaf = layers.last()?;
    Some(Profile {
        name: leaf.name.clone(),
        location: leaf.location.clone(),
        description: leaf
            .raw
            .description
            .as_ref()
            .map(|d| d.value.clone())
            .unwrap_or_default(),
        lineage: layers.iter().map(|l| l.name.clone()).collect(),
        defaults,
        bans,
        groups,
        rules,
    })
}

/// Reads the profile and its parents, root first.
fn load_chain(spec: &str, search: &SearchPath, diags: &mut Vec<Diagnostic>) -> Option<Vec<Layer>> {
    let found = match search.find(spec) {
        Ok(f) => f,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    // A profile given as a path finds its parents beside it first.
    let mut search = search.clone();
    if let Location::File(path) = &found.location {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !search.dirs.iter().any(|d| d == dir) {
            search.dirs.insert(0, dir.to_path_buf());
        }
    }
    let mut layers: Vec<Layer> = Vec::new();
    let mut next = Some(found);
    while let Some(found) = next.take() {
        let src = SourceFile::new(found.location.path(), found.text);
        let errors_before = diags.len();
        let raw = parse::parse(&src, diags);
        if let Some(ext) = &raw.extends {
            let chain: Vec<&str> = layers
                .iter()
                .map(|l| l.name.as_str())
                .chain([found.name.as_str()])
                .collect();
            if chain.contains(&ext.value.as_str()) {
                let cycle = format!("{} -> {}", chain.join(" -> "), ext.value);
                diags.push(
                    src.error(ext.span.clone(), format!("`extends` makes a cycle: {cycle}"))
                        .with_hint("a profile cannot extend itself or one of the profiles extending it; remove this extends"),
                );
            } else if layers.len() + 1 >= MAX_EXTENDS {
                diags.push(
                    src.error(
                        ext.span.clone(),
                        format!("`extends` chain is deeper than {MAX_EXTENDS} profiles"),
                    )
                    .with_hint(
                        "copy the rules of a few parents into one profile, so the chain is shorter",
                    ),
                );
            } else {
                let looked = super::lookup::check_name(&ext.value)
                    .and_then(|_| search.find_name(&ext.value));
                match looked {
                    Ok(parent) => next = Some(parent),
                    // Located inside the parent (not UTF-8): it stands as is.
                    Err(d) if d.line > 0 => diags.push(d),
                    Err(d) => diags.push(
                        src.error(ext.span.clone(), d.message)
                            .with_hint(d.hint.unwrap_or_default()),
                    ),
                }
            }
        }
        let _ = errors_before;
        layers.push(Layer {
            src,
            name: found.name,
            location: found.location,
            raw,
        });
    }
    layers.reverse();
    Some(layers)
}

/// A service resolved: its port ranges and protocols.
#[derive(Clone)]
struct Service {
    ranges: Vec<PortRange>,
    protocols: Vec<Protocol>,
    /// Where a profile defined it; `None` for a built-in.
    origin: Option<Origin>,
}

struct Resolver<'a> {
    layers: &'a [Layer],
    diags: &'a mut Vec<Diagnostic>,
    /// Where parsed list files are remembered, if anywhere.
    memo: Option<&'a Path>,
    services: BTreeMap<String, Service>,
    /// Group name to (layer index, raw group).
    raw_groups: BTreeMap<String, (usize, &'a RawGroup)>,
    /// Resolved groups; `None` for one that failed (already reported).
    groups: BTreeMap<String, Option<Group>>,
    /// Group names some rule or group refers to.
    used: BTreeSet<String>,
}

fn valid_name(name: &str) -> bool {
    name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl<'a> Resolver<'a> {
    fn origin(&self, layer: usize, span: &std::ops::Range<usize>) -> Origin {
        let src = &self.layers[layer].src;
        let (line, column) = src.position(span.start);
        Origin {
            file: src.path.clone(),
            line,
            column,
        }
    }

    fn error(
        &mut self,
        layer: usize,
        span: &std::ops::Range<usize>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let d = self.layers[layer]
            .src
            .error(span.clone(), msg)
            .with_hint(hint);
        self.diags.push(d);
    }

    fn defaults(&mut self) -> Defaults {
        let mut d = Defaults::default();
        for layer in self.layers {
            let r = &layer.raw.defaults;
            set(&mut d.input, &r.input);
            set(&mut d.forward, &r.forward);
            set(&mut d.output, &r.output);
            set(&mut d.established, &r.established);
            set(&mut d.drop_invalid, &r.drop_invalid);
            set(&mut d.loopback, &r.loopback);
            set(&mut d.icmp, &r.icmp);
            set(&mut d.ping, &r.ping);
            set(&mut d.log_drops, &r.log_drops);
            set(&mut d.nflog_group, &r.nflog_group);
            set(&mut d.containers, &r.containers);
        }
        self.foot_guns(&d);
        d
    }

    /// Defaults the kernel takes without a word but that cut the host off,
    /// said where the key is set (the last layer that sets it).
    fn foot_guns(&mut self, d: &Defaults) {
        let input_drops = d.input == ChainPolicy::Drop;
        if input_drops && d.icmp == IcmpPolicy::None {
            if let Some((layer, span)) = self.last_set(|r| r.icmp.as_ref().map(|v| v.span.clone()))
            {
                let w = self.layers[layer]
                    .src
                    .warning(span, "`icmp = \"none\"` drops IPv6 neighbour discovery too: no IPv6 connection to this host can succeed, whatever the rules allow")
                    .with_hint("write `icmp = \"essential\"` (neighbour discovery and ICMP errors, without ping), or `ping = false` to refuse only echo requests");
                self.diags.push(w);
            }
        }
        let output_drops = d.output == ChainPolicy::Drop;
        if output_drops {
            // Profiles have no outbound rules: the chain lets out only
            // replies, loopback and essential ICMP.
            if let Some((layer, span)) =
                self.last_set(|r| r.output.as_ref().map(|v| v.span.clone()))
            {
                let w = self.layers[layer]
                    .src
                    .warning(span, "`output = \"drop\"` leaves no way out for DNS (53 udp/tcp), NTP (123/udp) or package updates (80/443 tcp): no rule can allow this host's own connections")
                    .with_hint("keep `output = \"accept\"` (the default) unless this host needs no name resolution, time or updates");
                self.diags.push(w);
            }
        }
        if !d.established && (input_drops || output_drops) {
            let what = match (input_drops, output_drops) {
                (true, true) => "the replies to the connections the rules allow are dropped on the way out, and the replies to this host's own connections (DNS, package updates) on the way in",
                (false, true) => "the replies to the connections the rules allow are dropped on the way out",
                _ => "the replies to this host's own connections (DNS, package updates) are dropped on the way in",
            };
            if let Some((layer, span)) =
                self.last_set(|r| r.established.as_ref().map(|v| v.span.clone()))
            {
                let w = self.layers[layer]
                    .src
                    .warning(span, format!("`established = false` with a chain that drops: {what}"))
                    .with_hint("keep `established = true` (the default) unless every reply has a rule of its own");
                self.diags.push(w);
            }
        }
    }

    /// The layer (parent first, so the last wins) that last sets a key.
    fn last_set(
        &self,
        key: impl Fn(&parse::RawDefaults) -> Option<std::ops::Range<usize>>,
    ) -> Option<(usize, std::ops::Range<usize>)> {
        self.layers
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, l)| key(&l.raw.defaults).map(|span| (i, span)))
    }

    /// `[bans]` along the chain, key by key; `None` unless enabled. Exempt
    /// groups must be groups the profile defines.
    fn bans(&mut self) -> Option<BanPolicy> {
        let mut enabled = false;
        let mut b = BanPolicy {
            timeout_secs: BanPolicy::DEFAULT_TIMEOUT_SECS,
            size: BanPolicy::DEFAULT_SIZE,
            exempt: Vec::new(),
        };
        let mut exempt = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let r = &layer.raw.bans;
            set(&mut enabled, &r.enabled);
            set(&mut b.timeout_secs, &r.timeout);
            set(&mut b.size, &r.size);
            if let Some(e) = &r.exempt {
                exempt = e.iter().map(|n| (i, n.clone())).collect();
            }
        }
        for (layer, name) in exempt {
            if self.raw_groups.contains_key(&name.value) {
                self.used.insert(name.value.clone());
                if !b.exempt.contains(&name.value) {
                    b.exempt.push(name.value);
                }
            } else {
                let (msg, hint) = self.unknown_group(&name.value);
                self.error(layer, &name.span, msg, hint);
            }
        }
        enabled.then_some(b)
    }

    fn collect_services(&mut self) {
        for s in builtin::SERVICES {
            self.services.insert(
                s.name.to_string(),
                Service {
                    ranges: s.ranges(),
                    protocols: s.protocols.to_vec(),
                    origin: None,
                },
            );
        }
        for (i, layer) in self.layers.iter().enumerate() {
            for s in &layer.raw.services {
                let name = &s.name.value;
                if !valid_name(name) {
                    self.error(i, &s.name.span, format!("`{name}` is not a valid service name"), "names start with a letter and use letters, digits, '-' and '_' (at most 32)");
                    continue;
                }
                if let Some(prev) = self.services.get(name) {
                    let (msg, hint) = match &prev.origin {
                        None => (
                            format!("`{name}` is a built-in service ({})", describe_ports(&prev.ranges, &prev.protocols)),
                            format!("use the built-in `{name}` as it is, or give yours another name, e.g. `{name}-alt`"),
                        ),
                        Some(o) => (
                            format!("service `{name}` is defined twice; it was first defined at {}:{}:{}", o.file.display(), o.line, o.column),
                            "give one of them another name".to_string(),
                        ),
                    };
                    self.error(i, &s.name.span, msg, hint);
                    continue;
                }
                let ranges: Vec<PortRange> = s.ports.iter().map(|p| p.value).collect();
                let protocols = s
                    .proto
                    .as_ref()
                    .map_or(ProtoSpec::Tcp, |p| p.value)
                    .protocols();
                let origin = Some(self.origin(i, &s.name.span));
                self.services.insert(
                    name.clone(),
                    Service {
                        ranges: merge_ranges(ranges),
                        protocols,
                        origin,
                    },
                );
            }
        }
    }
}

/// A known name for a misspelled one; names are case-sensitive, so `SSH`
/// suggests `ssh`.
fn near_name<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .copied()
        .find(|n| n.eq_ignore_ascii_case(name))
        .or_else(|| closest(name, names.iter().copied()))
}

/// Sorted, with overlapping and adjacent ranges merged.
pub fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(r.last)
            }
            _ => out.push(r),
        }
    }
    out
}

fn describe_ports(ranges: &[PortRange], protocols: &[Protocol]) -> String {
    let ports: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
    let protos: Vec<&str> = protocols.iter().map(|p| p.as_str()).collect();
    format!("{}/{}", ports.join(","), protos.join("+"))
}

/// Cuts at a char boundary so the result is at most `max` bytes.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Later layers override earlier ones, key by key.
fn set<T: Copy>(slot: &mut T, v: &Option<Sp<T>>) {
    if let Some(v) = v {
        *slot = v.value;
    }
}
