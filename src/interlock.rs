//! The test interlock: a safety rule the tests once kept by convention,
//! enforced by the code. Every path that changes a firewall (an apply, a
//! rollback, a ban, a probe replica's load) asks [`check`] first. It sits
//! on the ground floor, importing nothing of the crate, so every layer
//! that changes a firewall can ask it.

use thiserror::Error;

/// Set by the test harness to the inode of the network namespace tests run
/// from: fwharden then refuses to change the firewall there, so a test
/// that forgets to enter its namespace fails instead of touching the host.
pub const FORBID_ENV: &str = "FWHARDEN_FORBID_NETNS";

/// This thread is in the namespace [`FORBID_ENV`] names.
#[derive(Debug, Error)]
#[error("refusing to change the firewall: this is the network namespace {FORBID_ENV} names (the test harness's own); run inside a test namespace")]
pub struct Forbidden;

/// Fails when this thread is in the network namespace [`FORBID_ENV`] names
/// (or when where it is cannot be read).
pub fn check() -> Result<(), Forbidden> {
    use std::os::unix::fs::MetadataExt;
    let Ok(forbidden) = std::env::var(FORBID_ENV) else {
        return Ok(());
    };
    let here = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino().to_string());
    match here {
        Ok(ino) if ino != forbidden.trim() => Ok(()),
        _ => Err(Forbidden),
    }
}
