//! The last confirmed rulesets, so that a confirm can be undone: `fwharden
//! history` lists them, `fwharden rollback --to N` loads one again (with
//! the rollback timer, like any apply).
//!
//! Each is a sealed record of its own, `history/<id>.json` in the state
//! directory, `id` counting up from 1 and never reused while the directory
//! lives, so a number a person read in the list still names the same
//! ruleset after another confirm. Only the newest [`KEPT`] stay. Their big
//! prefix lists are the state directory's list files (see `lists`), named
//! by content: a list the confirmed record and five entries hold is stored
//! once, and it is collected only when no record and no entry names it.
//!
//! A damaged entry is reported as damaged, with its file, and never
//! loaded: the digest covers it as it covers every record.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{read_json_in, write_json_in};
use super::{Confirmed, Dirs, StateError};
use crate::ruleset::{Ruleset, SetKind};

/// How many confirmed rulesets are kept.
pub const KEPT: usize = 10;

const DIR: &str = "history";

/// A confirmed ruleset, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub head: Head,
    #[serde(with = "super::lists::ruleset")]
    pub ruleset: Ruleset,
}

/// An entry without its ruleset: what the list shows. Reading it loads no
/// prefix list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub id: u64,
    pub profile: String,
    /// Seconds since the epoch.
    pub confirmed_at: u64,
    pub summary: Summary,
    /// SHA-256 of the ruleset as the entry stores it (list files by their
    /// own digest): a confirm of the ruleset the newest entry holds adds
    /// no second entry.
    pub digest: String,
}

/// The ruleset in one line: how many rules, and prefixes in its sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub rules: usize,
    pub prefixes: usize,
}

impl Summary {
    pub fn of(r: &Ruleset) -> Summary {
        Summary {
            rules: r.chains.iter().map(|c| c.rules.len()).sum(),
            prefixes: r
                .sets
                .iter()
                .map(|s| match &s.kind {
                    SetKind::Prefixes(nets) => nets.len(),
                    _ => 0,
                })
                .sum(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "{}, {}",
            plural(self.rules, "rule", "rules"),
            plural(self.prefixes, "prefix", "prefixes")
        )
    }
}

/// One file of the history: its entry's head, or why it cannot be read.
#[derive(Debug)]
pub struct Listed {
    pub id: u64,
    pub head: Result<Head, StateError>,
}

/// The ruleset as an entry stores it, for its digest.
#[derive(Serialize)]
struct Stored<'a>(#[serde(with = "super::lists::ruleset")] &'a Ruleset);

impl Dirs {
    fn history_dir(&self) -> PathBuf {
        self.state.join(DIR)
    }

    fn history_path(&self, id: u64) -> PathBuf {
        self.history_dir().join(format!("{id}.json"))
    }

    /// The ids of the history's files, newest first. No directory: none.
    fn history_ids(&self) -> Result<Vec<u64>, StateError> {
        let dir = self.history_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StateError::Read { path: dir, source }),
        };
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                name.to_str()?.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// Every entry of the history, newest first; a damaged one is listed
    /// with its error.
    pub fn history(&self) -> Result<Vec<Listed>, StateError> {
        Ok(self
            .history_ids()?
            .into_iter()
            .map(|id| Listed {
                id,
                head: read_json_in::<Head>(&self.state, &self.history_path(id))
                    .and_then(|h| h.ok_or_else(|| gone(self.history_path(id)))),
            })
            .collect())
    }

    /// Entry `id` with its ruleset; `None` when there is no such entry.
    pub fn history_entry(&self, id: u64) -> Result<Option<Entry>, StateError> {
        read_json_in(&self.state, &self.history_path(id))
    }

    /// The bytes of every entry, for the collection of list files; `None`
    /// when one cannot be read (then no list may be collected).
    pub(super) fn history_records(&self) -> Option<Vec<Vec<u8>>> {
        let ids = self.history_ids().ok()?;
        ids.into_iter()
            .map(|id| {
                crate::bounded::read(&self.history_path(id), crate::bounded::Input::State).ok()
            })
            .collect()
    }

    /// Keeps `c` as the newest entry, unless the newest already holds its
    /// ruleset, and drops all but the newest [`KEPT`]. `before` is the
    /// confirmed record `c` replaces: a history started by an upgrade
    /// begins with it, so the ruleset before the first confirm is there to
    /// go back to.
    pub(super) fn remember(
        &self,
        c: &Confirmed,
        before: Option<&Confirmed>,
    ) -> Result<(), StateError> {
        let ids = self.history_ids()?;
        let mut next = ids.first().map_or(1, |id| id + 1);
        let mut newest = match ids.first() {
            Some(&id) => read_json_in::<Head>(&self.state, &self.history_path(id))
                .ok()
                .flatten()
                .map(|h| h.digest),
            None => None,
        };
        if ids.is_empty() {
            if let Some(b) = before.filter(|b| b.ruleset != c.ruleset) {
                let digest = self.digest(&b.ruleset)?;
                self.write_entry(next, b, &digest)?;
                newest = Some(digest);
                next += 1;
            }
        }
        let digest = self.digest(&c.ruleset)?;
        if newest.as_ref() != Some(&digest) {
            self.write_entry(next, c, &digest)?;
        }
        for id in self.history_ids()?.into_iter().skip(KEPT) {
            let path = self.history_path(id);
            fs::remove_file(&path).map_err(|source| StateError::Write { path, source })?;
        }
        Ok(())
    }

    fn digest(&self, r: &Ruleset) -> Result<String, StateError> {
        let bytes =
            super::lists::within(&self.state, || serde_json::to_vec(&Stored(r))).map_err(|e| {
                StateError::Write {
                    path: self.state.join("lists"),
                    source: e.into(),
                }
            })?;
        Ok(Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// Writes entry `id` for `c`, whose ruleset's digest is `digest`.
    fn write_entry(&self, id: u64, c: &Confirmed, digest: &str) -> Result<(), StateError> {
        let entry = Entry {
            head: Head {
                id,
                profile: c.profile.clone(),
                confirmed_at: c.confirmed_at,
                summary: Summary::of(&c.ruleset),
                digest: digest.to_string(),
            },
            ruleset: c.ruleset.clone(),
        };
        write_json_in(
            &self.state,
            &self.history_dir(),
            &format!("{id}.json"),
            &entry,
        )
    }
}

/// A file listed a moment ago and gone now (a concurrent prune).
fn gone(path: PathBuf) -> StateError {
    StateError::Read {
        path,
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{Family, Set};
    use ipnet::IpNet;

    fn dirs(tmp: &tempfile::TempDir) -> Dirs {
        Dirs {
            state: tmp.path().join("state"),
            run: tmp.path().join("run"),
        }
    }

    /// A ruleset named `profile` with a set of `n` prefixes (big enough
    /// for a list file of its own past `lists::INLINE_MAX`).
    fn ruleset(profile: &str, n: u32) -> Ruleset {
        let nets: Vec<IpNet> = (0..n)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
            .collect();
        Ruleset {
            profile: profile.into(),
            table: crate::ruleset::TABLE_NAME.into(),
            sets: vec![Set {
                name: "admin_v4".into(),
                family: Family::Ipv4,
                kind: SetKind::Prefixes(nets),
                comment: String::new(),
            }],
            chains: vec![],
            bans: None,
        }
    }

    fn confirm(dirs: &Dirs, profile: &str, n: u32) {
        dirs.save_confirmed(&Confirmed {
            profile: profile.into(),
            ruleset: ruleset(profile, n),
            confirmed_at: 1_000 + u64::from(n),
            seen: None,
            proven: false,
        })
        .unwrap();
    }

    fn profiles(dirs: &Dirs) -> Vec<(u64, String)> {
        dirs.history()
            .unwrap()
            .into_iter()
            .map(|l| (l.id, l.head.unwrap().profile))
            .collect()
    }

    fn lists(dirs: &Dirs) -> usize {
        fs::read_dir(dirs.state.join("lists"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[test]
    fn every_confirm_is_kept_newest_first_with_a_summary() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = dirs(&tmp);
        confirm(&dirs, "a", 3);
        confirm(&dirs, "b", 5);
        assert_eq!(profiles(&dirs), [(2, "b".into()), (1, "a".into())]);
        let newest = dirs.history().unwrap().remove(0).head.unwrap();
        assert_eq!(newest.summary.to_string(), "0 rules, 5 prefixes");
        assert_eq!(newest.confirmed_at, 1_005);
        let a = dirs.history_entry(1).unwrap().unwrap();
        assert_eq!(a.ruleset, ruleset("a", 3));
        assert!(dirs.history_entry(3).unwrap().is_none());
    }

    #[test]
    fn the_same_ruleset_confirmed_again_is_not_kept_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = dirs(&tmp);
        confirm(&dirs, "a", 3);
        confirm(&dirs, "a", 3);
        assert_eq!(profiles(&dirs), [(1, "a".into())]);
        confirm(&dirs, "b", 4);
        confirm(&dirs, "a", 3);
        assert_eq!(
            profiles(&dirs),
            [(3, "a".into()), (2, "b".into()), (1, "a".into())]
        );
    }

    #[test]
    fn only_the_newest_are_kept_and_their_lists_stay_until_none_names_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = dirs(&tmp);
        // Each ruleset's list is big enough for a file of its own.
        let big = super::super::lists::INLINE_MAX as u32 + 1;
        for i in 0..(KEPT as u32 + 3) {
            confirm(&dirs, &format!("p{i}"), big + i);
        }
        let ids: Vec<u64> = dirs.history().unwrap().iter().map(|l| l.id).collect();
        let want: Vec<u64> = (4..=KEPT as u64 + 3).rev().collect();
        assert_eq!(ids, want);
        assert_eq!(
            lists(&dirs),
            KEPT,
            "one list per entry kept, the rest collected"
        );
        // The oldest kept entry's list outlives the confirmed record
        // moving on: the entry still names it.
        let oldest = dirs.history_entry(4).unwrap().unwrap();
        assert_eq!(oldest.ruleset, ruleset("p3", big + 3));
    }

    #[test]
    fn an_upgrade_starts_the_history_with_the_ruleset_confirmed_before() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = dirs(&tmp);
        confirm(&dirs, "old", 2);
        fs::remove_dir_all(dirs.state.join(DIR)).unwrap();
        confirm(&dirs, "new", 3);
        assert_eq!(profiles(&dirs), [(2, "new".into()), (1, "old".into())]);
    }

    #[test]
    fn a_damaged_entry_is_listed_as_damaged_and_never_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = dirs(&tmp);
        confirm(&dirs, "a", 3);
        confirm(&dirs, "b", 4);
        let path = dirs.history_path(1);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("\"a\"", "\"x\"")).unwrap();
        let listed = dirs.history().unwrap();
        assert_eq!(listed[0].head.as_ref().unwrap().profile, "b");
        let e = listed[1].head.as_ref().unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        let e = dirs.history_entry(1).unwrap_err().to_string();
        assert!(e.contains("does not match the digest"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
