//! Records that prove themselves: every JSON record is written inside an
//! envelope, `{"sha256": DIGEST, "record": RECORD}`, where DIGEST is the
//! SHA-256 of RECORD's exact bytes. A record that still parses after a
//! change (one digit, `drop` turned into `accept`) no longer matches its
//! digest, and is reported damaged instead of trusted: a damaged confirmed
//! record makes `restore` fall back to the minimal safe ruleset, never load
//! what it says. The big prefix lists a record names are checked by their
//! own SHA-256 (`lists`), so the digest covers them too.
//!
//! A record written before digests existed (no envelope) is *legacy*: it
//! is read as it is, with a warning, and rewritten sealed by the next
//! command that holds the apply lock ([`super::Dirs::seal_legacy`]). Refusing
//! it would leave an upgraded host with no rollback target and no boot
//! restore; it was trusted the same way the moment before the upgrade.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// What a record file turned out to hold.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Opened<'a> {
    /// An envelope whose digest matches: the record's own text.
    Sealed(&'a str),
    /// A record from before digests: the whole file is the record.
    Legacy,
}

/// Why a record file cannot be trusted.
#[derive(Debug)]
pub(super) enum Damage {
    /// Not JSON, or an envelope missing a part.
    Unreadable(serde_json::Error),
    /// The record's bytes differ from those the digest was taken of.
    Mismatch,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    sha256: String,
    #[serde(borrow)]
    record: &'a RawValue,
}

fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file for a record whose JSON text is `body`.
pub(super) fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{{\n\"sha256\": \"{}\",\n\"record\": ", digest(body)).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\n}\n");
    out
}

/// Checks a record file; on success, where its record is.
pub(super) fn open(bytes: &[u8]) -> Result<Opened<'_>, Damage> {
    match serde_json::from_slice::<Envelope>(bytes) {
        Ok(e) if digest(e.record.get().as_bytes()) == e.sha256 => {
            Ok(Opened::Sealed(e.record.get()))
        }
        Ok(_) => Err(Damage::Mismatch),
        Err(_) if legacy(bytes) => Ok(Opened::Legacy),
        Err(e) => Err(Damage::Unreadable(e)),
    }
}

/// Whether `bytes` is a record as fwharden wrote them before digests: a
/// JSON object without the envelope's `sha256` (or the attempts log's
/// array). An envelope that lost its record is damage, not legacy.
fn legacy(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(m)) => !m.contains_key("sha256"),
        Ok(serde_json::Value::Array(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str =
        "{\n  \"profile\": \"web\",\n  \"policy\": \"drop\",\n  \"confirmed_at\": 1700000000\n}";

    #[test]
    fn a_sealed_record_opens_to_its_own_text() {
        let file = seal(BODY.as_bytes());
        assert_eq!(open(&file).unwrap(), Opened::Sealed(BODY));
        let v: serde_json::Value = serde_json::from_slice(&file).unwrap();
        assert_eq!(v["record"]["policy"], "drop", "still plain JSON: {v}");
    }

    #[test]
    fn one_digit_or_a_flipped_policy_is_damage_though_still_json() {
        let file = String::from_utf8(seal(BODY.as_bytes())).unwrap();
        for edited in [
            file.replace("1700000000", "1700000001"),
            file.replace("\"drop\"", "\"accept\""),
        ] {
            assert_ne!(edited, file);
            assert!(serde_json::from_str::<serde_json::Value>(&edited).is_ok());
            assert!(matches!(open(edited.as_bytes()), Err(Damage::Mismatch)));
        }
    }

    #[test]
    fn another_digest_is_damage_too() {
        let file = String::from_utf8(seal(BODY.as_bytes())).unwrap();
        let edited = file.replace(&digest(BODY.as_bytes()), &digest(b"another record"));
        assert!(matches!(open(edited.as_bytes()), Err(Damage::Mismatch)));
    }

    #[test]
    fn records_from_before_digests_are_legacy_and_torn_files_unreadable() {
        assert_eq!(open(BODY.as_bytes()).unwrap(), Opened::Legacy);
        assert_eq!(open(b"[{\"token\": \"t\"}]").unwrap(), Opened::Legacy);
        assert!(matches!(open(b"{\"prof"), Err(Damage::Unreadable(_))));
        assert!(matches!(
            open(b"{\"sha256\": \"00\"}"),
            Err(Damage::Unreadable(_))
        ));
        let file = seal(BODY.as_bytes());
        assert!(matches!(
            open(&file[..file.len() / 2]),
            Err(Damage::Unreadable(_))
        ));
    }

    /// Through the store: a damaged confirmed record names its file, a
    /// legacy one is read and then sealed under the lock.
    mod through_the_store {
        use crate::ruleset::Ruleset;
        use crate::state::{ApplyLock, Confirmed, Dirs, StateError};
        use std::fs;

        fn dirs(tmp: &tempfile::TempDir) -> Dirs {
            Dirs {
                state: tmp.path().join("state"),
                run: tmp.path().join("run"),
            }
        }

        fn confirmed() -> Confirmed {
            Confirmed {
                profile: "t".into(),
                ruleset: Ruleset {
                    profile: "t".into(),
                    table: "fwharden".into(),
                    sets: vec![],
                    chains: vec![],
                    bans: None,
                },
                confirmed_at: 1_700_000_000,
                seen: None,
                proven: false,
            }
        }

        #[test]
        fn an_edited_confirmed_record_is_damaged_and_named() {
            let tmp = tempfile::tempdir().unwrap();
            let dirs = dirs(&tmp);
            dirs.save_confirmed(&confirmed()).unwrap();
            let path = dirs.state.join("confirmed.json");
            let text = fs::read_to_string(&path).unwrap();
            fs::write(&path, text.replace("1700000000", "1700000009")).unwrap();
            let e = dirs.confirmed().unwrap_err();
            assert!(matches!(e, StateError::Mismatch { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("confirmed.json"), "{msg}");
            assert!(msg.contains("never to no firewall"), "{msg}");
        }

        #[test]
        fn a_legacy_record_is_read_then_sealed_under_the_lock() {
            let tmp = tempfile::tempdir().unwrap();
            let dirs = dirs(&tmp);
            dirs.ensure_all().unwrap();
            let path = dirs.state.join("confirmed.json");
            let legacy = serde_json::to_vec_pretty(&confirmed()).unwrap();
            fs::write(&path, &legacy).unwrap();
            assert_eq!(dirs.confirmed().unwrap(), Some(confirmed()));
            let lock = ApplyLock::try_take(&dirs.lock_path()).unwrap();
            dirs.seal_legacy(&lock).unwrap();
            let sealed = fs::read(&path).unwrap();
            assert_ne!(sealed, legacy);
            assert_eq!(dirs.confirmed().unwrap(), Some(confirmed()));
            // Sealed now: the same edit that a legacy record let through
            // is caught.
            let text = String::from_utf8(sealed).unwrap();
            fs::write(&path, text.replace("1700000000", "1700000009")).unwrap();
            assert!(dirs.confirmed().is_err());
        }
    }
}
