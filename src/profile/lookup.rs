//! Finding a profile by name: /etc, then /usr/share, then the profiles built
//! into the binary; or an explicit file path. Names cannot escape the search
//! directories, and as root a profile anyone else could write is refused.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::builtin;
use super::diag::Diagnostic;
use crate::bounded;

pub const ETC_DIR: &str = "/etc/fwharden/profiles";
pub const SHARE_DIR: &str = "/usr/share/fwharden/profiles";

/// Where a profile was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// Compiled into the binary; the path is for messages only.
    Builtin(PathBuf),
}

impl Location {
    pub fn path(&self) -> &Path {
        match self {
            Location::File(p) | Location::Builtin(p) => p,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Builtin(_) => "(built in)".to_string(),
        }
    }
}

/// The ordered list of places a profile name is looked up in.
#[derive(Debug, Clone)]
pub struct SearchPath {
    pub dirs: Vec<PathBuf>,
    /// Whether the built-in profiles come last in the search.
    pub builtin: bool,
}

impl Default for SearchPath {
    fn default() -> SearchPath {
        SearchPath {
            dirs: vec![PathBuf::from(ETC_DIR), PathBuf::from(SHARE_DIR)],
            builtin: true,
        }
    }
}

/// A profile found, with its text.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub location: Location,
    pub text: String,
}

/// One line of `fwharden list`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub location: Location,
    /// Other places with the same name, hidden by this one.
    pub shadows: Vec<Location>,
}

impl SearchPath {
    /// Only the given directories (`--profile-dir`), no built-ins.
    pub fn only(dirs: Vec<PathBuf>) -> SearchPath {
        SearchPath {
            dirs,
            builtin: false,
        }
    }

    /// `spec` is a name (`vps-profile`) or a path (anything with a `/` or
    /// ending in `.toml`).
    pub fn find(&self, spec: &str) -> Result<Found, Diagnostic> {
        if spec.contains('/') || spec.ends_with(".toml") {
            return read_file(Path::new(spec));
        }
        check_name(spec)?;
        self.find_name(spec)
    }

    /// Looks a name up, for `extends` too (never a path).
    pub fn find_name(&self, name: &str) -> Result<Found, Diagnostic> {
        for dir in &self.dirs {
            let path = dir.join(format!("{name}.toml"));
            if path.exists() {
                return read_file(&path);
            }
        }
        if self.builtin {
            if let Some(text) = builtin::profile(name) {
                return Ok(Found {
                    name: name.to_string(),
                    location: Location::Builtin(PathBuf::from(format!("<built in>/{name}.toml"))),
                    text: text.to_string(),
                });
            }
        }
        let places: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        let mut msg = format!("no profile named `{name}` in {}", places.join(", "));
        if self.builtin {
            msg.push_str(" or among the built-in profiles");
        }
        let names = self.list();
        let hint = match super::diag::closest(name, names.iter().map(|l| l.name.as_str())) {
            Some(near) => format!("did you mean `{near}`? (`fwharden list` shows every profile)"),
            None => "run `fwharden list` to see the profiles there are, or give a file path".into(),
        };
        Err(Diagnostic::file(Path::new(name), msg).with_hint(hint))
    }

    /// Every profile name there is, in search order, first one winning.
    pub fn list(&self) -> Vec<Listed> {
        let mut out: Vec<Listed> = Vec::new();
        let mut add =
            |name: String, location: Location| match out.iter_mut().find(|l| l.name == name) {
                Some(l) => l.shadows.push(location),
                None => out.push(Listed {
                    name,
                    location,
                    shadows: Vec::new(),
                }),
            };
        for dir in &self.dirs {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<(String, PathBuf)> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
                .filter(|(n, _)| check_name(n).is_ok())
                .collect();
            names.sort();
            for (name, path) in names {
                add(name, Location::File(path));
            }
        }
        if self.builtin {
            for (name, _) in builtin::PROFILES {
                add(
                    name.to_string(),
                    Location::Builtin(PathBuf::from(format!("<built in>/{name}.toml"))),
                );
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Profile names are plain file stems: no path tricks.
pub fn check_name(name: &str) -> Result<(), Diagnostic> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        return Ok(());
    }
    if name.is_empty() {
        return Err(
            Diagnostic::file(Path::new("\"\""), "the profile name is empty").with_hint(
                "give the name of a profile (see `fwharden list`), or a path to a .toml file",
            ),
        );
    }
    Err(Diagnostic::file(
        Path::new(name),
        format!("`{name}` is not a profile name: names use only letters, digits, '.', '_' and '-', and do not start with '.'"),
    )
    .with_hint("give the name of a profile (see `fwharden list`), or a path to a .toml file"))
}

fn read_file(path: &Path) -> Result<Found, Diagnostic> {
    let bytes = bounded::read(path, bounded::Input::Profile).map_err(|e| match e {
        bounded::ReadError::Io { source: e, .. } => {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "check the path, or run `fwharden list` for the profiles there are"
                }
                std::io::ErrorKind::PermissionDenied => "run as root, or make the file readable",
                _ => "profiles are UTF-8 TOML text files",
            };
            Diagnostic::file(path, format!("cannot read the profile: {e}")).with_hint(hint)
        }
        other => Diagnostic::file(path, format!("cannot read the profile: {other}"))
            .with_hint(other.hint()),
    })?;
    let text =
        String::from_utf8(bytes).map_err(|e| not_utf8(path, e.utf8_error(), e.as_bytes()))?;
    check_owner(path)?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("profile")
        .to_string();
    Ok(Found {
        name,
        location: Location::File(path.to_path_buf()),
        text,
    })
}

/// Points at the first byte that is not UTF-8, so it can be found and
/// fixed (often a Latin-1 character pasted into a comment).
fn not_utf8(path: &Path, e: std::str::Utf8Error, bytes: &[u8]) -> Diagnostic {
    let valid = &bytes[..e.valid_up_to()];
    let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    // Everything before the bad byte is valid UTF-8.
    let column = String::from_utf8_lossy(&valid[line_start..])
        .chars()
        .count()
        + 1;
    Diagnostic {
        line: valid.iter().filter(|b| **b == b'\n').count() + 1,
        column,
        ..Diagnostic::file(
            path,
            format!(
                "the profile is not UTF-8 text: byte 0x{:02x} here is not UTF-8",
                bytes[e.valid_up_to()]
            ),
        )
        .with_hint(
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or remove the character",
        )
    }
}

/// Like sshd's StrictModes: when root loads a profile, the file and its
/// directory must be owned by root and not writable by group or others,
/// or anyone who can write them could open the firewall.
pub fn check_owner(path: &Path) -> Result<(), Diagnostic> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for (p, what) in [(path, "file"), (dir, "directory")] {
        let Ok(meta) = fs::metadata(p) else { continue };
        if meta.uid() != 0 {
            return Err(Diagnostic::file(
                path,
                format!(
                    "refusing the profile: its {what} {} is owned by uid {}, not root",
                    p.display(),
                    meta.uid()
                ),
            )
            .with_hint(format!(
                "run `chown root: {}` (a profile decides who reaches this host)",
                p.display()
            )));
        }
        // In a sticky directory (/tmp) others cannot replace a root-owned
        // file, so only the file's own mode matters there.
        let sticky = what == "directory" && meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o022 != 0 && !sticky {
            return Err(Diagnostic::file(
                path,
                format!(
                    "refusing the profile: its {what} {} is writable by group or others (mode {:o})",
                    p.display(),
                    meta.mode() & 0o7777
                ),
            )
            .with_hint(format!("run `chmod go-w {}`", p.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_be_paths() {
        assert!(check_name("vps-profile").is_ok());
        assert!(check_name("a.b_c-1").is_ok());
        for bad in ["", "..", ".hidden", "a b", "a\\b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_located() {
        let bytes = b"a = 1\n# caf\xc3\xa9 \xe9\n".to_vec();
        let e = String::from_utf8(bytes).unwrap_err();
        let d = not_utf8(Path::new("p.toml"), e.utf8_error(), e.as_bytes());
        assert_eq!((d.line, d.column), (2, 8));
        assert!(d.message.contains("0xe9"), "{}", d.message);
    }

    #[test]
    fn builtin_profiles_are_found_last() {
        let found = SearchPath {
            dirs: vec![],
            builtin: true,
        }
        .find("vps-profile")
        .unwrap();
        assert!(matches!(found.location, Location::Builtin(_)));
        assert!(SearchPath::only(vec![]).find("vps-profile").is_err());
    }
}
