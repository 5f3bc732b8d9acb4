//! Raw profiles to a checked [`Profile`]: follows `extends`, resolves
//! service and group names, reads list files, and refuses anything that is
//! wrong with a located diagnostic saying what to write instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::addr::{self, looks_like_address, parse_prefix};
use super::builtin;
use super::diag::{closest, Diagnostic, SourceFile};
use super::lookup::{Location, SearchPath};
use super::parse::{self, Action, ProtoSpec, RawGroup, RawProfile, RawRule, Sp, Target};
use super::{Defaults, Group, Origin, Ports, Profile, Rule, SourceSide, Sources};
use crate::ruleset::{Family, PortRange, Protocol, Rate, LOG_PREFIX_MAX};

/// How deep an extends chain may go before it is surely a mistake.
const MAX_EXTENDS: usize = 16;

/// One file of the extends chain.
struct Layer {
    src: SourceFile,
    name: String,
    location: Location,
    raw: RawProfile,
}

pub fn resolve(spec: &str, search: &SearchPath, diags: &mut Vec<Diagnostic>) -> Option<Profile> {
    let layers = load_chain(spec, search, diags)?;
    let mut r = Resolver {
        layers: &layers,
        diags,
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
        }
        d
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

    fn collect_groups(&mut self) {
        for (i, layer) in self.layers.iter().enumerate() {
            for g in &layer.raw.groups {
                let name = &g.name.value;
                if builtin::GROUPS.contains(&name.as_str()) {
                    self.error(
                        i,
                        &g.name.span,
                        format!("`{name}` is a built-in group and cannot be redefined"),
                        format!("give your group another name, e.g. `my-{name}`"),
                    );
                } else if !valid_name(name) {
                    self.error(i, &g.name.span, format!("`{name}` is not a valid group name"), "names start with a letter and use letters, digits, '-' and '_' (at most 32)");
                } else if let Some((j, prev)) = self.raw_groups.get(name) {
                    let o = self.origin(*j, &prev.name.span);
                    self.error(
                        i,
                        &g.name.span,
                        format!(
                            "group `{name}` is defined twice; it was first defined at {}:{}:{}",
                            o.file.display(),
                            o.line,
                            o.column
                        ),
                        "give one of them another name, or add addresses to the first one",
                    );
                } else {
                    self.raw_groups.insert(name.clone(), (i, g));
                }
            }
        }
    }

    /// Resolves a group, depth first; `path` is the chain of groups being
    /// resolved, to report cycles.
    fn group(&mut self, name: &str, path: &mut Vec<String>) -> Option<Group> {
        if let Some(done) = self.groups.get(name) {
            return done.clone();
        }
        let (layer, raw) = *self.raw_groups.get(name)?;
        path.push(name.to_string());
        let mut prefixes: Vec<IpNet> = Vec::new();
        // A group whose text was already refused is not also "empty".
        let mut ok = !raw.invalid;
        let family = raw.family.as_ref().map(|f| f.value);
        for m in &raw.members {
            let item = m.value.trim();
            if item.is_empty() {
                ok = false;
                self.error(
                    layer,
                    &m.span,
                    format!("group `{name}` has an empty item"),
                    "write an address, a prefix or a group name, or remove the item",
                );
            } else if looks_like_address(item) {
                match parse_prefix(item) {
                    Ok(net) if family.is_some_and(|f| f != Family::of(&net)) => {
                        ok = false;
                        self.error(
                            layer,
                            &m.span,
                            format!(
                                "{} prefix {net} in group `{name}`, which has family = \"{}\"",
                                Family::of(&net),
                                family.unwrap_or(Family::Ipv4)
                            ),
                            "remove it, or remove the group's `family` line",
                        );
                    }
                    Ok(net) => prefixes.push(net),
                    Err(why) => {
                        ok = false;
                        self.error(layer, &m.span, why, "write one address or prefix per item");
                    }
                }
            } else if let Some(nets) = builtin_group(item) {
                prefixes.extend(nets);
            } else if let Some(pos) = path.iter().position(|p| p == item) {
                ok = false;
                let cycle = format!("{} -> {item}", path[pos..].join(" -> "));
                self.error(
                    layer,
                    &m.span,
                    format!("groups refer to each other in a cycle: {cycle}"),
                    format!("remove `{item}` from group `{name}`"),
                );
            } else if self.raw_groups.contains_key(item) {
                self.used.insert(item.to_string());
                match self.group(item, path) {
                    Some(g) => prefixes.extend(g.prefixes),
                    None => ok = false,
                }
            } else {
                ok = false;
                let (msg, hint) = self.unknown_group(item);
                self.error(layer, &m.span, msg, hint);
            }
        }
        if let Some(file) = &raw.file {
            match self.list_file(layer, file) {
                Some(nets) => {
                    let (keep, other): (Vec<IpNet>, Vec<IpNet>) = nets
                        .into_iter()
                        .partition(|n| family.is_none_or(|f| f == Family::of(n)));
                    if let Some(first) = other.first() {
                        ok = false;
                        self.error(layer, &file.span, format!("list file holds {} prefix {first}, but group `{name}` has family = \"{}\"", Family::of(first), family.unwrap_or(Family::Ipv4)), "remove those lines, or remove the group's `family` line");
                    }
                    prefixes.extend(keep);
                }
                None => ok = false,
            }
        }
        if let Some(f) = family {
            prefixes.retain(|n| Family::of(n) == f);
        }
        path.pop();
        let result = if !ok {
            None
        } else if prefixes.is_empty() {
            self.error(
                layer,
                &raw.name.span,
                format!("group `{name}` is empty"),
                "add addresses to it, or remove it and every use of it",
            );
            None
        } else {
            Some(Group {
                name: name.to_string(),
                prefixes: addr::aggregate(&prefixes),
                origin: self.origin(layer, &raw.name.span),
            })
        };
        self.groups.insert(name.to_string(), result.clone());
        result
    }

    /// A group the profile itself defines and nothing uses is most likely
    /// a rule someone forgot to write. Groups of a parent are there to be
    /// offered, so only the profile's own are reported.
    fn warn_unused(&mut self) {
        let leaf = self.layers.len() - 1;
        for g in &self.layers[leaf].raw.groups {
            if !self.used.contains(&g.name.value)
                && self
                    .raw_groups
                    .get(&g.name.value)
                    .is_some_and(|(l, _)| *l == leaf)
            {
                let d = self.layers[leaf]
                    .src
                    .warning(
                        g.name.span.clone(),
                        format!("group `{}` is never used", g.name.value),
                    )
                    .with_hint("use it in a rule's `from`, or remove it");
                self.diags.push(d);
            }
        }
    }

    fn unknown_group(&self, item: &str) -> (String, String) {
        let names: Vec<&str> = builtin::GROUPS
            .iter()
            .copied()
            .chain(self.raw_groups.keys().map(String::as_str))
            .collect();
        let hint = match near_name(item, &names) {
            Some(near) => format!("did you mean `{near}`? or define it under [groups]"),
            None => format!(
                "define it under [groups], e.g. {item} = [\"192.0.2.0/24\"]; known groups: {}",
                names.join(", ")
            ),
        };
        (format!("unknown group `{item}`"), hint)
    }

    fn list_file(&mut self, layer: usize, file: &Sp<String>) -> Option<Vec<IpNet>> {
        let base = match &self.layers[layer].location {
            Location::File(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
            Location::Builtin(_) => {
                self.error(
                    layer,
                    &file.span,
                    "a built-in profile cannot read list files",
                    "copy the profile to /etc/fwharden/profiles and edit it there",
                );
                return None;
            }
        };
        let path: PathBuf = base.join(&file.value);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.error(layer, &file.span, format!("cannot read list file {}: {e}", path.display()), "the path is relative to the profile's directory; check that the file exists and is readable");
                return None;
            }
        };
        if let Err(d) = super::lookup::check_owner(&path) {
            self.diags.push(d);
            return None;
        }
        let (nets, errors) = addr::parse_list(&text);
        let src = SourceFile::new(&path, String::new());
        for e in &errors {
            self.diags.push(super::diag::Diagnostic {
                line: e.line,
                column: e.column,
                ..src
                    .error(0..0, e.message.clone())
                    .with_hint("one address or prefix per line; # starts a comment")
            });
        }
        if errors.is_empty() {
            Some(nets)
        } else {
            None
        }
    }

    fn rules(&mut self) -> Vec<Rule> {
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

/// A known name for a misspelled one; names are case-sensitive, so `SSH`
/// suggests `ssh`.
fn near_name<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .copied()
        .find(|n| n.eq_ignore_ascii_case(name))
        .or_else(|| closest(name, names.iter().copied()))
}

fn builtin_group(name: &str) -> Option<Vec<IpNet>> {
    let v4: IpNet = "0.0.0.0/0".parse().ok()?;
    let v6: IpNet = "::/0".parse().ok()?;
    match name {
        "any" => Some(vec![v4, v6]),
        "any4" => Some(vec![v4]),
        "any6" => Some(vec![v6]),
        _ => None,
    }
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

fn proto_str(p: Option<ProtoSpec>) -> &'static str {
    match p {
        Some(ProtoSpec::Tcp) | None => "tcp",
        Some(ProtoSpec::Udp) => "udp",
        Some(ProtoSpec::Both) => "both",
    }
}

fn describe_ports(ranges: &[PortRange], protocols: &[Protocol]) -> String {
    let ports: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
    let protos: Vec<&str> = protocols.iter().map(|p| p.as_str()).collect();
    format!("{}/{}", ports.join(","), protos.join("+"))
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
