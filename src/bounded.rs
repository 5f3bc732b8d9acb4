//! Reading the files fwharden is pointed at, within bounds: a profile, a
//! group's list file, a record or stored list under the state directory.
//!
//! Any of them may be something other than a file of reasonable size:
//! `file = "/dev/zero"` in a group made `check` allocate until the machine
//! ran out of memory, and a FIFO blocked it forever. Here a path must name
//! a regular file, checked before it is opened (opening a device can have
//! effects of its own) and again on the opened descriptor, which is what
//! is then read (no race with a rename in between); the open does not
//! block (O_NONBLOCK: a FIFO swapped in opens at once and fails the
//! second check). And it is read through a limit, whatever its size said.

use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Sets the largest group list file fwharden reads, in MiB (default
/// [`DEFAULT_LIMIT_MIB`]); records and stored lists under the state
/// directory may be twice that.
pub const LIMIT_ENV: &str = "FWHARDEN_MAX_INPUT_MIB";

pub const DEFAULT_LIMIT_MIB: u64 = 256;

/// The largest profile file: profiles name their long address lists in
/// group files, which have a limit of their own.
pub const PROFILE_LIMIT_MIB: u64 = 32;

/// The longest line of a list file, in bytes: one address or prefix and a
/// comment.
pub const LINE_LIMIT: usize = 4096;

/// What is read, which sets its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Profile,
    /// A group's list file.
    List,
    /// A record or stored list under the state directory.
    State,
}

impl Input {
    fn what(self) -> &'static str {
        match self {
            Input::Profile => "a profile",
            Input::List => "a list file",
            Input::State => "a state file",
        }
    }

    /// The limit, in MiB.
    pub fn limit_mib(self) -> Result<u64, ReadError> {
        match self {
            Input::Profile => Ok(PROFILE_LIMIT_MIB),
            Input::List => list_limit_mib(),
            Input::State => Ok(list_limit_mib()? * 2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{} is larger than {limit_mib} MiB, the limit for {what}", path.display())]
    TooBig {
        path: PathBuf,
        limit_mib: u64,
        what: &'static str,
    },
    #[error("{LIMIT_ENV}={value:?} is not a whole number of MiB from 1 to 1048576")]
    BadLimit { value: String },
}

impl ReadError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                "check the path".into()
            }
            ReadError::Io { .. } => "check that the file is readable".into(),
            ReadError::NotAFile { .. } => {
                "name a regular file: a device, FIFO, socket or directory is not read".into()
            }
            ReadError::TooBig {
                what: "a profile", ..
            } => "put long address lists in a group's list file (`file = \"admins.txt\"`)".into(),
            ReadError::TooBig { .. } => format!(
                "split the file, or raise the limit: {LIMIT_ENV}=MiB (default {DEFAULT_LIMIT_MIB})"
            ),
            ReadError::BadLimit { .. } => {
                format!("set {LIMIT_ENV} to a number of MiB, or unset it for {DEFAULT_LIMIT_MIB}")
            }
        }
    }
}

/// For the state directory's callers, whose errors carry an `io::Error`:
/// a missing file stays `NotFound`.
impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Io { source, .. } => source,
            other => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{other}; {}", other.hint()),
            ),
        }
    }
}

fn list_limit_mib() -> Result<u64, ReadError> {
    let Ok(value) = std::env::var(LIMIT_ENV) else {
        return Ok(DEFAULT_LIMIT_MIB);
    };
    match value.trim().parse::<u64>() {
        Ok(mib) if (1..=1 << 20).contains(&mib) => Ok(mib),
        _ => Err(ReadError::BadLimit { value }),
    }
}

/// The whole of `path`, which must be a regular file within the limit of
/// `input`.
pub fn read(path: &Path, input: Input) -> Result<Vec<u8>, ReadError> {
    let limit = input.limit_mib()? << 20;
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_a_file = |kind| ReadError::NotAFile {
        path: path.to_path_buf(),
        kind,
    };
    let too_big = || ReadError::TooBig {
        path: path.to_path_buf(),
        limit_mib: limit >> 20,
        what: input.what(),
    };
    // Before the open: a device is never opened.
    let kind = std::fs::metadata(path).map_err(io)?.file_type();
    if !kind.is_file() {
        return Err(not_a_file(kind_of(kind)));
    }
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    // And the descriptor itself, which is what is read.
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(not_a_file(kind_of(meta.file_type())));
    }
    if meta.len() > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew since the fstat.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

fn kind_of(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/dev/urandom"), "a character device"),
            (fifo.as_path(), "a FIFO"),
            (dir.path(), "a directory"),
        ] {
            let e = read(path, Input::List).unwrap_err();
            assert!(
                matches!(&e, ReadError::NotAFile { kind: k, .. } if *k == kind),
                "{}: {e}",
                path.display()
            );
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn a_file_past_the_limit_is_refused_and_one_within_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.txt");
        // Sparse: 33 MiB of nothing on disk.
        File::create(&big).unwrap().set_len(33 << 20).unwrap();
        let e = read(&big, Input::Profile).unwrap_err();
        assert!(matches!(e, ReadError::TooBig { limit_mib: 32, .. }), "{e}");
        assert!(e.hint().contains("list file"), "{}", e.hint());
        assert_eq!(read(&big, Input::List).unwrap().len(), 33 << 20);
        let missing = read(&dir.path().join("none"), Input::State).unwrap_err();
        assert_eq!(io::Error::from(missing).kind(), io::ErrorKind::NotFound);
    }
}
