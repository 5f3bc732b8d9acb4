//! The one way a file of the state is written: a temporary file beside it
//! (mode 0600), fsync, rename over the old one, fsync of the directory. A
//! crash leaves the old file or the new one, never a torn one, and once
//! this returns the new one survives a power cut (the directory's fsync
//! makes the rename itself durable).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `dir/name` atomically; the temporary file is removed
/// on failure.
pub(super) fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_mode(dir, name, bytes, 0o600)
}

/// As [`write`], the file created with `mode` (a profile `init` or `edit`
/// writes is 0644: readable by all, as the shipped ones are).
pub fn write_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename or a removal in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_whole_with_mode_0600_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        super::write(dir.path(), "r.json", b"old").unwrap();
        super::write(dir.path(), "r.json", b"new").unwrap();
        let file = dir.path().join("r.json");
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        super::write(dir.path(), "r.json", b"old").unwrap();
        // A directory where the file should go: the rename fails.
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d").join("x"), b"").unwrap();
        assert!(super::write(dir.path(), "d", b"new").is_err());
        assert_eq!(std::fs::read(dir.path().join("r.json")).unwrap(), b"old");
        let tmp = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(tmp, 0);
    }
}
