//! Big prefix lists in the records, stored once.
//!
//! A pending record holds the new ruleset and the one to go back to, and
//! the confirmed record holds a ruleset again: a 100,000-prefix group
//! would be written as JSON three times per apply (and a million-prefix
//! one took longer to write than to load into the kernel). Instead, a set
//! of more than [`INLINE_MAX`] prefixes is written once, in a compact
//! binary file named by the SHA-256 of its content under
//! `lists/` of the state directory, and the record names that file. An
//! unchanged list is never written again; a record stays a few kilobytes.
//!
//! The records' `Ruleset` fields go through [`ruleset`] and [`optional`]
//! (`#[serde(with)]`): while [`within`] names a state directory, big lists
//! go to and come from files there; anywhere else (`show --json`, a test)
//! a ruleset serializes inline, as the model does.
//!
//! File format: `FWHL1`, a family byte (4 or 6), then one entry per prefix:
//! its length, then the network address (4 or 16 bytes, big-endian).
//! Reading checks the digest, so a damaged file is reported, never loaded.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::ruleset::{packed, Bans, Chain, Family, Ruleset, Set, SetKind};

/// Sets of more prefixes than this live in files of their own.
pub const INLINE_MAX: usize = 1024;

const MAGIC: &[u8] = b"FWHL1";
const DIR: &str = "lists";

thread_local! {
    static STATE_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs `f` with big lists going to and coming from `state`'s list files.
pub fn within<T>(state: &Path, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<PathBuf>);
    impl Drop for Reset {
        fn drop(&mut self) {
            STATE_DIR.with(|d| *d.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(STATE_DIR.with(|d| d.borrow_mut().replace(state.to_path_buf())));
    f()
}

fn state_dir() -> Option<PathBuf> {
    STATE_DIR.with(|d| d.borrow().clone())
}

/// Where a list lives, as a record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListFile {
    sha256: String,
    count: usize,
}

#[derive(Serialize)]
struct RulesetOut<'a> {
    profile: &'a str,
    table: &'a str,
    sets: Vec<SetOut<'a>>,
    chains: &'a [Chain],
    #[serde(skip_serializing_if = "Option::is_none")]
    bans: Option<&'a Bans>,
}

#[derive(Serialize)]
struct SetOut<'a> {
    name: &'a str,
    family: Family,
    kind: KindOut<'a>,
    comment: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum KindOut<'a> {
    File { prefixes_file: ListFile },
    Inline(&'a SetKind),
}

#[derive(Deserialize)]
struct RulesetIn {
    profile: String,
    table: String,
    sets: Vec<SetIn>,
    chains: Vec<Chain>,
    #[serde(default)]
    bans: Option<Bans>,
}

#[derive(Deserialize)]
struct SetIn {
    name: String,
    family: Family,
    kind: KindIn,
    comment: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KindIn {
    File { prefixes_file: ListFile },
    Inline(SetKind),
}

fn out<'a, E: serde::ser::Error>(r: &'a Ruleset, dir: Option<&Path>) -> Result<RulesetOut<'a>, E> {
    let mut sets = Vec::with_capacity(r.sets.len());
    for s in &r.sets {
        let kind = match (&s.kind, dir) {
            (SetKind::Prefixes(nets), Some(dir)) if nets.len() > INLINE_MAX => KindOut::File {
                prefixes_file: store(dir, s.family, nets).map_err(E::custom)?,
            },
            (kind, _) => KindOut::Inline(kind),
        };
        sets.push(SetOut {
            name: &s.name,
            family: s.family,
            kind,
            comment: &s.comment,
        });
    }
    Ok(RulesetOut {
        profile: &r.profile,
        table: &r.table,
        sets,
        chains: &r.chains,
        bans: r.bans.as_ref(),
    })
}

fn back<E: serde::de::Error>(r: RulesetIn) -> Result<Ruleset, E> {
    let mut sets = Vec::with_capacity(r.sets.len());
    for s in r.sets {
        let kind = match s.kind {
            KindIn::Inline(kind) => kind,
            KindIn::File { prefixes_file } => {
                let dir = state_dir()
                    .ok_or_else(|| E::custom("a prefix list file outside a state directory"))?;
                SetKind::Prefixes(load(&dir, s.family, &prefixes_file).map_err(E::custom)?)
            }
        };
        sets.push(Set {
            name: s.name,
            family: s.family,
            kind,
            comment: s.comment,
        });
    }
    Ok(Ruleset {
        profile: r.profile,
        table: r.table,
        sets,
        chains: r.chains,
        bans: r.bans,
    })
}

/// `#[serde(with)]` for a record's `Ruleset`.
pub mod ruleset {
    use super::*;

    pub fn serialize<S: Serializer>(r: &Ruleset, s: S) -> Result<S::Ok, S::Error> {
        out(r, state_dir().as_deref())?.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ruleset, D::Error> {
        back(RulesetIn::deserialize(d)?)
    }
}

/// `#[serde(with)]` for a record's `Option<Ruleset>`.
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(r: &Option<Ruleset>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some(r) => s.serialize_some(&out(r, state_dir().as_deref())?),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ruleset>, D::Error> {
        Option::<RulesetIn>::deserialize(d)?.map(back).transpose()
    }
}

fn encode(family: Family, nets: &[IpNet]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 1 + nets.len() * packed::entry_len(family));
    bytes.extend_from_slice(MAGIC);
    bytes.push(if family == Family::Ipv4 { 4 } else { 6 });
    packed::pack(nets, &mut bytes);
    bytes
}

fn decode(bytes: &[u8], family: Family) -> Result<Vec<IpNet>, String> {
    let body = bytes.strip_prefix(MAGIC).ok_or("not a prefix list file")?;
    let (&tag, body) = body.split_first().ok_or("no family")?;
    match (tag, family) {
        (4, Family::Ipv4) | (6, Family::Ipv6) => packed::unpack(body, family),
        _ => Err(format!("a list of family {tag}, not {family}")),
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(DIR).join(format!("{sha256}.bin"))
}

/// Writes the list unless a file of the same content is already there.
fn store(dir: &Path, family: Family, nets: &[IpNet]) -> Result<ListFile, String> {
    let bytes = encode(family, nets);
    let sha256 = hex(&Sha256::digest(&bytes));
    let file = path(dir, &sha256);
    let list = ListFile {
        sha256,
        count: nets.len(),
    };
    if file.exists() {
        return Ok(list);
    }
    let lists = dir.join(DIR);
    let err = |e: std::io::Error| format!("cannot write {}: {e}", file.display());
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&lists)
        .map_err(err)?;
    let name = format!("{}.bin", list.sha256);
    super::atomic::write(&lists, &name, &bytes).map_err(err)?;
    Ok(list)
}

fn load(dir: &Path, family: Family, list: &ListFile) -> Result<Vec<IpNet>, String> {
    let file = path(dir, &list.sha256);
    let bytes = crate::bounded::read(&file, crate::bounded::Input::State)
        .map_err(std::io::Error::from)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if hex(&Sha256::digest(&bytes)) != list.sha256 {
        return Err(format!(
            "{} is damaged (its digest differs)",
            file.display()
        ));
    }
    let nets = decode(&bytes, family).map_err(|e| format!("{}: {e}", file.display()))?;
    if nets.len() != list.count {
        return Err(format!(
            "{} holds {} prefixes, not {}",
            file.display(),
            nets.len(),
            list.count
        ));
    }
    Ok(nets)
}

/// Removes list files that none of `records` (the records' JSON) names.
pub fn collect(dir: &Path, records: &[&[u8]]) {
    let mut named = BTreeSet::new();
    for r in records {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(r) else {
            // Cannot tell what it names: keep everything.
            return;
        };
        find_names(&v, &mut named);
    }
    let Ok(entries) = fs::read_dir(dir.join(DIR)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".bin").unwrap_or(&name);
        if !named.contains(stem) && !name.starts_with('.') {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn find_names(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(s)) =
                m.get("prefixes_file").and_then(|f| f.get("sha256"))
            {
                out.insert(s.clone());
            }
            m.values().for_each(|x| find_names(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| find_names(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::{Ipv4Net, Ipv6Net};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn big(n: u32, family: Family) -> Vec<IpNet> {
        (0..n)
            .map(|i| match family {
                Family::Ipv4 => {
                    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + 2 * i), 32).unwrap())
                }
                Family::Ipv6 => {
                    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(u128::from(i) << 64), 64).unwrap())
                }
            })
            .collect()
    }

    #[test]
    fn lists_round_trip_and_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for family in [Family::Ipv4, Family::Ipv6] {
            let nets = big(3000, family);
            let list = store(dir.path(), family, &nets).unwrap();
            assert_eq!(load(dir.path(), family, &list).unwrap(), nets);
            // Stored once: the same content names the same file.
            assert_eq!(store(dir.path(), family, &nets).unwrap(), list);
            let file = path(dir.path(), &list.sha256);
            let mut bytes = fs::read(&file).unwrap();
            bytes[10] ^= 1;
            fs::write(&file, bytes).unwrap();
            let e = load(dir.path(), family, &list).unwrap_err();
            assert!(e.contains("damaged"), "{e}");
        }
    }

    #[test]
    fn unnamed_lists_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path(), Family::Ipv4, &big(2000, Family::Ipv4)).unwrap();
        let b = store(dir.path(), Family::Ipv4, &big(2001, Family::Ipv4)).unwrap();
        let record =
            serde_json::json!({ "ruleset": { "sets": [ { "kind": { "prefixes_file": a } } ] } });
        collect(dir.path(), &[record.to_string().as_bytes()]);
        assert!(path(dir.path(), &a.sha256).exists());
        assert!(!path(dir.path(), &b.sha256).exists());
    }
}
