//! The disabled marker: the operator confirmed `fwharden disable`, so the
//! state fwharden keeps the kernel in is "no fwharden table". `restore` at
//! boot then loads nothing, and an unconfirmed apply goes back to no
//! table. The confirmed record stays as it was: `fwharden enable` loads it
//! again. The next confirmed apply (enable's included) removes the marker.
//!
//! Sealed like every record: a damaged marker says nothing trustworthy
//! about whether the host should have a firewall, so `restore` falls back
//! on the minimal safe profile, never on no firewall.

use serde::{Deserialize, Serialize};

use super::store::{read_json_in, remove_record, write_json_in};
use super::{Dirs, StateError};

const DISABLED: &str = "disabled.json";

/// fwharden is disabled: since when, and what `enable` loads again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    /// The confirmed profile when it was disabled.
    pub profile: String,
    /// Seconds since the epoch.
    pub since: u64,
}

impl Dirs {
    /// The marker, `None` when fwharden is not disabled.
    pub fn disabled(&self) -> Result<Option<Disabled>, StateError> {
        read_json_in(&self.state, &self.state.join(DISABLED))
    }

    pub fn save_disabled(&self, d: &Disabled) -> Result<(), StateError> {
        write_json_in(&self.state, &self.state, DISABLED, d)
    }

    pub fn clear_disabled(&self) -> Result<(), StateError> {
        remove_record(&self.state, DISABLED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_round_trips_and_a_damaged_one_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            state: tmp.path().join("state"),
            run: tmp.path().join("run"),
        };
        assert_eq!(dirs.disabled().unwrap(), None);
        dirs.clear_disabled().unwrap();
        let d = Disabled {
            profile: "web".into(),
            since: 7,
        };
        dirs.save_disabled(&d).unwrap();
        assert_eq!(dirs.disabled().unwrap(), Some(d));
        let path = dirs.state.join(DISABLED);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("web", "bew")).unwrap();
        let e = dirs.disabled().unwrap_err().to_string();
        assert!(e.contains("disabled.json"), "{e}");
        dirs.clear_disabled().unwrap();
        assert_eq!(dirs.disabled().unwrap(), None);
    }
}
