//! The memo of parsed list files: a big list file that has not changed
//! since the last apply is not parsed and aggregated again.
//!
//! Parsing and aggregating a million-line list took about 65 ms of a
//! 135 ms unchanged re-apply; reading back what they produced takes a
//! few. An entry is keyed by the BLAKE3 digest of the file's bytes and of
//! this build's version (a later fwharden may read lists differently),
//! so a changed byte is a miss, never a stale answer. Only lists parsed
//! without an error are remembered: a file with errors is reported on
//! every load.
//!
//! The memo lives under the state directory (root's, mode 0700). An
//! entry carries a digest of its own body, so a damaged one (a full
//! disk, a crash mid-write that rename did not cover) is a miss. The
//! memo is a cache: failing to read or write it is never an error.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::ruleset::{packed, Family};

/// List files smaller than this are parsed faster than a memo entry is
/// looked up and written.
pub const WORTH_ABOVE: usize = 1 << 20;

/// Entries kept; the oldest beyond this are removed when one is added.
const KEEP: usize = 8;

const MAGIC: &[u8; 8] = b"FWHMEMO1";

/// What identifies a list file's text to the memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    pub fn of(bytes: &[u8]) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(&[0]);
        h.update(bytes);
        Key(*h.finalize().as_bytes())
    }

    fn path(&self, dir: &Path) -> PathBuf {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        dir.join(format!("{hex}.bin"))
    }
}

/// The prefixes remembered for `key`, or `None` when there are none or
/// the entry is damaged.
pub fn recall(dir: &Path, key: &Key) -> Option<Vec<IpNet>> {
    let bytes = fs::read(key.path(dir)).ok()?;
    decode(&bytes)
}

/// Remembers `nets` (IPv4 first, as [`super::addr::aggregate`] returns
/// them) for `key`, and forgets the oldest entries beyond [`KEEP`].
/// Best effort: a memo that cannot be written is no memo.
pub fn remember(dir: &Path, key: &Key, nets: &[IpNet]) {
    let _ = write(dir, key, nets);
    prune(dir, KEEP);
}

fn write(dir: &Path, key: &Key, nets: &[IpNet]) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = key.path(dir);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&encode(nets))?;
        fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Keeps the `keep` newest entries (and nothing else that is not one).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if found.len() <= keep {
        return;
    }
    found.sort_unstable_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in &found[keep..] {
        let _ = fs::remove_file(path);
    }
}

/// MAGIC, the BLAKE3 digest of the rest, the number of IPv4 prefixes
/// (u64, little-endian), then the IPv4 and the IPv6 prefixes packed.
fn encode(nets: &[IpNet]) -> Vec<u8> {
    let v4 = nets.partition_point(|n| Family::of(n) == Family::Ipv4);
    let mut body = Vec::with_capacity(8 + nets.len() * packed::entry_len(Family::Ipv4));
    body.extend_from_slice(&(v4 as u64).to_le_bytes());
    packed::pack(nets, &mut body);
    let mut out = Vec::with_capacity(MAGIC.len() + 32 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode(bytes: &[u8]) -> Option<Vec<IpNet>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (digest, body) = rest.split_at_checked(32)?;
    if blake3::hash(body).as_bytes() != digest {
        return None;
    }
    let (count, packed_nets) = body.split_at_checked(8)?;
    let v4 = usize::try_from(u64::from_le_bytes(count.try_into().ok()?)).ok()?;
    let split = v4.checked_mul(packed::entry_len(Family::Ipv4))?;
    let (a, b) = packed_nets.split_at_checked(split)?;
    let mut nets = packed::unpack(a, Family::Ipv4).ok()?;
    nets.extend(packed::unpack(b, Family::Ipv6).ok()?);
    Some(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn what_is_remembered_is_recalled_by_the_same_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let memo = dir.path().join("parsed");
        let list = nets(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        let key = Key::of(b"10.0.0.0/8\n192.0.2.7\n2001:db8::/32\n");
        assert_eq!(recall(&memo, &key), None, "nothing remembered yet");
        remember(&memo, &key, &list);
        assert_eq!(recall(&memo, &key), Some(list));
        let other = Key::of(b"10.0.0.0/8\n192.0.2.8\n2001:db8::/32\n");
        assert_ne!(key, other);
        assert_eq!(recall(&memo, &other), None, "one changed byte is a miss");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&memo).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_damaged_entry_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::of(b"x");
        remember(dir.path(), &key, &nets(&["10.0.0.0/8", "2001:db8::/32"]));
        let path = key.path(dir.path());
        let good = fs::read(&path).unwrap();
        // A flipped bit anywhere, a cut, an empty file.
        for i in [0, 8, 40, 45, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert_eq!(recall(dir.path(), &key), None, "bit flipped at {i}");
        }
        for cut in [0, 20, good.len() - 3] {
            fs::write(&path, &good[..cut]).unwrap();
            assert_eq!(recall(dir.path(), &key), None, "cut at {cut}");
        }
        // A count of IPv4 prefixes past the body, digest and all correct.
        let mut body = u64::MAX.to_le_bytes().to_vec();
        body.extend_from_slice(&[8, 10, 0, 0, 0]);
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(blake3::hash(&body).as_bytes());
        forged.extend_from_slice(&body);
        fs::write(&path, &forged).unwrap();
        assert_eq!(recall(dir.path(), &key), None);
    }

    #[test]
    fn only_the_newest_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let list = nets(&["10.0.0.0/8"]);
        let keys: Vec<Key> = (0..KEEP + 3)
            .map(|i| Key::of(format!("list {i}").as_bytes()))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            remember(dir.path(), key, &list);
            // Mtimes a second apart, whatever the file system's resolution.
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i as u64);
            fs::File::options()
                .write(true)
                .open(key.path(dir.path()))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        prune(dir.path(), KEEP);
        let kept: Vec<bool> = keys
            .iter()
            .map(|k| recall(dir.path(), k).is_some())
            .collect();
        assert_eq!(kept.iter().filter(|k| **k).count(), KEEP);
        assert!(kept[3..].iter().all(|k| *k), "the newest stay: {kept:?}");
    }
}
