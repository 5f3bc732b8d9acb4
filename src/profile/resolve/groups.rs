//! Groups: checks their names, resolves members (addresses, built-in and
//! other groups, list files) depth first with cycles reported, and warns
//! about groups the profile defines but never uses.

use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::{near_name, valid_name, Resolver};
use crate::bounded;
use crate::profile::addr::{self, looks_like_address, parse_prefix};
use crate::profile::builtin;
use crate::profile::diag::{Diagnostic, SourceFile};
use crate::profile::lookup::{self, Location};
use crate::profile::memo;
use crate::profile::parse::Sp;
use crate::profile::Group;
use crate::ruleset::Family;

impl Resolver<'_> {
    pub(super) fn collect_groups(&mut self) {
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

    /// Resolves a group, depth first, into `self.groups`; `path` is the
    /// chain of groups being resolved, to report cycles. Whether it
    /// resolved: the group is read from there, not returned, so that a
    /// million-prefix group is not copied for a caller that drops it.
    pub(super) fn group(&mut self, name: &str, path: &mut Vec<String>) -> bool {
        if let Some(done) = self.groups.get(name) {
            return done.is_some();
        }
        let Some(&(layer, raw)) = self.raw_groups.get(name) else {
            return false;
        };
        path.push(name.to_string());
        let mut prefixes: Vec<IpNet> = Vec::new();
        // A group whose text was already refused is not also "empty".
        let mut ok = !raw.invalid;
        let family = raw.family.as_ref().map(|f| f.value);
        let mut aggregated = false;
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
                    true => prefixes.extend(self.groups[item].iter().flat_map(|g| &g.prefixes)),
                    false => ok = false,
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
                    // Looked for, not partitioned: a million-prefix list
                    // is not copied to find that it has no stray prefix.
                    let other = nets
                        .iter()
                        .find(|n| family.is_some_and(|f| f != Family::of(n)));
                    if let Some(first) = other {
                        ok = false;
                        self.error(layer, &file.span, format!("list file holds {} prefix {first}, but group `{name}` has family = \"{}\"", Family::of(first), family.unwrap_or(Family::Ipv4)), "remove those lines, or remove the group's `family` line");
                    }
                    if prefixes.is_empty() {
                        prefixes = nets;
                        // The whole group is one list file, which
                        // `list_file` aggregated (or the memo kept
                        // aggregated): a million prefixes are not
                        // looked at again.
                        aggregated = true;
                    } else {
                        prefixes.extend(nets);
                    }
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
                // Keeping one family of an aggregated list keeps it
                // aggregated.
                prefixes: if aggregated {
                    prefixes
                } else {
                    addr::aggregate(&prefixes)
                },
                origin: self.origin(layer, &raw.name.span),
            })
        };
        let resolved = result.is_some();
        self.groups.insert(name.to_string(), result);
        resolved
    }

    /// A group the profile itself defines and nothing uses is most likely
    /// a rule someone forgot to write. Groups of a parent are there to be
    /// offered, so only the profile's own are reported.
    pub(super) fn warn_unused(&mut self) {
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

    pub(super) fn unknown_group(&self, item: &str) -> (String, String) {
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
        let bytes = match bounded::read(&path, bounded::Input::List) {
            Ok(bytes) => bytes,
            Err(bounded::ReadError::Io { source, .. }) => {
                self.error(layer, &file.span, format!("cannot read list file {}: {source}", path.display()), "the path is relative to the profile's directory; check that the file exists and is readable");
                return None;
            }
            Err(e) => {
                self.error(layer, &file.span, format!("list file {e}"), e.hint());
                return None;
            }
        };
        if let Err(d) = lookup::check_owner(&path) {
            self.diags.push(d);
            return None;
        }
        let memo = match self.memo {
            Some(dir) if bytes.len() > memo::WORTH_ABOVE => {
                let key = memo::Key::of(&bytes);
                if let Some(nets) = memo::recall(dir, &key) {
                    return Some(nets);
                }
                Some((dir, key))
            }
            _ => None,
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                self.error(
                    layer,
                    &file.span,
                    format!(
                        "list file {} is not UTF-8 text (byte {at} is not)",
                        path.display()
                    ),
                    "a list file holds one address or prefix per line, as text",
                );
                return None;
            }
        };
        let (nets, errors) = addr::parse_list(&text);
        drop(text);
        let src = SourceFile::new(&path, String::new());
        for e in &errors {
            self.diags.push(Diagnostic {
                line: e.line,
                column: e.column,
                ..src
                    .error(0..0, e.message.clone())
                    .with_hint("one address or prefix per line; # starts a comment")
            });
        }
        if !errors.is_empty() {
            return None;
        }
        // Aggregated here, not only as a group: what the memo keeps is
        // what a hit returns, so the rest of the resolver sees the same
        // list either way.
        let nets = addr::aggregate(&nets);
        if let Some((dir, key)) = memo {
            memo::remember(dir, &key, &nets);
        }
        Some(nets)
    }
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
