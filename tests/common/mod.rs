//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The inode of the network namespace the tests run in: the machine's own.
pub fn own_netns() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino().to_string())
        .expect("/proc/self/ns/net")
}

/// The fwharden binary built for these tests. It carries the interlock:
/// fwharden refuses to change the firewall of the namespace the tests run
/// in, so only a command run inside a test namespace can change one.
pub fn fwharden() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fwharden"));
    c.current_dir(root());
    c.env(fwharden::rollback::FORBID_ENV, own_netns());
    c
}

/// Runs fwharden with `--profile-dir profiles` (the shipped profiles only).
pub fn shipped(args: &[&str]) -> Output {
    fwharden()
        .args(["--profile-dir", "profiles"])
        .args(args)
        .output()
        .expect("run fwharden")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether a test needing root and network namespaces can run here. Outside
/// CI it returns false with a loud message; under CI=true it panics, since a
/// skipped privileged test there would hide a failure.
pub fn privileged(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("`ip` (iproute2) is missing")
    } else if Command::new("nft").arg("--version").output().is_err() {
        Some("`nft` is missing")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if under_ci() => panic!("{test}: needs root, network namespaces and nft, but {why} (CI=true: a skip is a failure)"),
        Some(why) => {
            eprintln!("\n!!!!!!!! SKIPPED {test}: needs root, network namespaces and nft; {why} !!!!!!!!\n");
            false
        }
    }
}

/// Whether `nft` is installed for the `nft -c` checks (which change
/// nothing); same CI rule as [`privileged`].
pub fn have_nft(test: &str) -> bool {
    if Command::new("nft").arg("--version").output().is_ok() {
        return true;
    }
    if under_ci() {
        panic!("{test}: `nft` is missing (CI=true: a skip is a failure); run scripts/deps");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: `nft` is missing; run scripts/deps !!!!!!!!\n");
    false
}

/// `nft -c -f FILE`: parses and evaluates a ruleset without loading it.
/// Needs no namespace: nothing reaches the kernel's ruleset.
pub fn nft_check(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ruleset.nft");
    std::fs::write(&path, text).expect("write ruleset");
    nft_check_file(&path)
}

pub fn nft_check_file(path: &Path) -> Result<(), String> {
    let out = Command::new("nft")
        .arg("-c")
        .arg("-f")
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The tables of the machine's own namespace, read only, to prove tests
/// leave them alone.
pub fn host_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft list tables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
