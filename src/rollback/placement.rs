//! Where the watcher lives: out of the caller's login session, so that
//! ending the session does not end the rollback.
//!
//! `setsid` leaves the terminal and the process group behind, but not the
//! cgroup: systemd-logind stopping a session scope (`KillUserProcesses=yes`,
//! `loginctl terminate-session`) or anyone writing `cgroup.kill` kills every
//! process of the cgroup. So:
//!
//! - where systemd is PID 1, the watcher runs as a transient service of its
//!   own (`systemd-run --unit=fwharden-watch-TOKEN`), in system.slice, which
//!   no session owns;
//! - elsewhere it moves itself, between fork and exec, into a cgroup v2
//!   group of its own, `<cgroup2 mount>/fwharden-watch-TOKEN` (the mount
//!   found in /proc/self/mountinfo), and removes it when it exits (a group
//!   left by a killed watcher is removed by the fwharden that confirms or
//!   rolls back its apply: rmdir(2) of a cgroup only succeeds when no
//!   process is in it);
//! - when neither is possible it stays where it was started and says so;
//!   the escape hatch in the kernel is then the only backstop.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why the watcher could not get a cgroup of its own (it then stays in the
/// caller's, and `status` says why).
#[derive(Debug, Error)]
pub enum GroupError {
    #[error("cannot create {}: {source}", path.display())]
    Scratch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup2 mount is visible, and mounting one failed: {0}")]
    Mount(#[source] nix::Error),
    #[error("cannot create cgroup {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {}/cgroup.procs: {source}", path.display())]
    Procs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a watcher was put, recorded in the pending apply for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Placement {
    /// A transient systemd service of its own.
    SystemdUnit { unit: String },
    /// A cgroup v2 group of its own, by its path in the hierarchy.
    Cgroup { group: String },
    /// Still in the caller's cgroup: killing the session kills it.
    CallersCgroup { why: String },
}

impl Placement {
    pub fn describe(&self) -> String {
        match self {
            Placement::SystemdUnit { unit } => format!("systemd unit {unit}"),
            Placement::Cgroup { group } => format!("cgroup {group} (its own)"),
            Placement::CallersCgroup { why } => {
                format!("the caller's cgroup ({why}): ending the session kills it")
            }
        }
    }
}

/// The name of a watcher's group or unit.
pub fn name(token: &str) -> String {
    format!("fwharden-watch-{token}")
}

/// Whether systemd is PID 1, as sd_booted(3) decides it, plus PID 1's name
/// (a container may have /run/systemd/system from its image).
pub fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

/// The cgroup2 mount point, from /proc/self/mountinfo (field 5 is the mount
/// point; the filesystem type follows the ` - ` separator). On a hybrid
/// layout it is /sys/fs/cgroup/unified, on a pure v2 one /sys/fs/cgroup.
pub fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mount_in(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The cgroup2 mount point named by a mountinfo text, relative to the root
/// of the process that file belongs to.
fn cgroup2_mount_in(info: &str) -> Option<PathBuf> {
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(unescape)
            .map(PathBuf::from)
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The cgroup v2 group of process `pid` (the `0::` line of its cgroup file),
/// e.g. `/fwharden-watch-abc`.
pub fn v2_group_of(pid: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The hierarchy as the nearest ancestor that sees it does, through that
/// process's root (`/proc/PID/root`): `ip netns exec` remounts /sys in
/// the mount namespace it makes, but the process that ran it (a shell,
/// Ansible, a test) still has its mounts, and reaching them costs a few
/// reads of /proc where a mount of cgroup2 costs the kernel 10-25 ms.
/// Only an ancestor in this process's cgroup namespace will do, so that
/// group paths read the same from both. If it exits meanwhile, the path
/// stops resolving and what was to be done through it fails as any
/// cgroup error does.
fn ancestor_view() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let ns = |pid: u32| {
        fs::metadata(format!("/proc/{pid}/ns/cgroup"))
            .map(|m| (m.dev(), m.ino()))
            .ok()
    };
    let own = ns(std::process::id())?;
    let mut pid = std::os::unix::process::parent_id();
    // A chain of parents is short; the bound only keeps a loop in /proc
    // (which cannot happen) from spinning.
    for _ in 0..64 {
        if pid == 0 {
            return None;
        }
        if ns(pid) == Some(own) {
            let info = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
            if let Some(mount) = cgroup2_mount_in(&info) {
                let root = PathBuf::from(format!("/proc/{pid}/root"));
                let path = root.join(mount.strip_prefix("/").ok()?);
                if path.join("cgroup.procs").exists() {
                    return Some(path);
                }
            }
        }
        pid = parent_of(pid)?;
    }
    None
}

/// The parent of process `pid` (the PPid line of its status file).
fn parent_of(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// How a view of the cgroup2 hierarchy was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// This mount namespace, or an ancestor's, has a cgroup2 mount.
    Found,
    /// None was visible: one was mounted for the moment, and goes on drop.
    Temporary,
}

/// The cgroup2 hierarchy's root directory. There is one hierarchy per
/// kernel (per cgroup namespace); a mount is only a view of it. `ip netns
/// exec` remounts /sys and so drops the cgroup mounts below it: there,
/// fwharden looks through an ancestor's root ([`ancestor_view`]), and
/// failing that mounts cgroup2 on a directory of its own for the moment
/// and detaches it when done (files opened through it stay usable).
pub struct V2Root {
    path: PathBuf,
    view: View,
}

impl V2Root {
    /// The visible mount, an ancestor's, or a temporary one in
    /// `scratch_parent`.
    pub fn open(scratch_parent: &Path) -> Result<V2Root, GroupError> {
        if let Some(path) = cgroup2_mount().or_else(ancestor_view) {
            return Ok(V2Root {
                path,
                view: View::Found,
            });
        }
        let path = scratch_parent.join(format!(".cgroup2-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(|source| GroupError::Scratch {
            path: path.clone(),
            source,
        })?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if let Err(e) = mount(Some("cgroup2"), &path, Some("cgroup2"), flags, None::<&str>) {
            let _ = fs::remove_dir(&path);
            return Err(GroupError::Mount(e));
        }
        Ok(V2Root {
            path,
            view: View::Temporary,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for V2Root {
    fn drop(&mut self) {
        if self.view == View::Temporary {
            let _ = umount2(&self.path, MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(&self.path);
        }
    }
}

/// The watcher's new group, ready to be joined.
pub struct NewGroup {
    /// Its path in the hierarchy, as /proc/PID/cgroup shows it.
    pub name: String,
    /// Its `cgroup.procs`, open for writing.
    pub procs: fs::File,
    /// Its directory, for clone3's `CLONE_INTO_CGROUP`.
    pub dir: fs::File,
}

/// Creates the watcher's group and opens its `cgroup.procs`.
pub fn create_group(token: &str, scratch: &Path) -> Result<NewGroup, GroupError> {
    let root = V2Root::open(scratch)?;
    let dir = root.path().join(name(token));
    fs::create_dir(&dir).map_err(|source| GroupError::Create {
        path: dir.clone(),
        source,
    })?;
    let opened = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .and_then(|procs| Ok((procs, fs::File::open(&dir)?)));
    match opened {
        Ok((procs, group_dir)) => Ok(NewGroup {
            name: format!("/{}", name(token)),
            procs,
            dir: group_dir,
        }),
        Err(source) => {
            let _ = fs::remove_dir(&dir);
            Err(GroupError::Procs { path: dir, source })
        }
    }
}

/// Removes group `name` (as [`NewGroup::name`]) if it is empty; whether
/// it is gone now.
pub fn remove_group(name: &str, scratch: &Path) -> bool {
    let Ok(root) = V2Root::open(scratch) else {
        return false;
    };
    let dir = root.path().join(name.trim_start_matches('/'));
    match fs::remove_dir(&dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Removes the group of the watcher of apply `token` if it is empty (the
/// watcher was killed and could not). A group some process is still in
/// stays: rmdir(2) fails with EBUSY, and nothing is killed here. Only this
/// token's group: another fwharden (another state directory) may have just
/// made its own, empty until its watcher moves in.
pub fn remove_left_group(token: &str, scratch: &Path) -> bool {
    remove_group(&format!("/{}", name(token)), scratch)
}

/// Called by the watcher as it exits: moves itself to the hierarchy's
/// root group (a process cannot leave a cgroup any other way) so its own
/// group is empty, then removes it.
pub fn leave_own_group(scratch: &Path) {
    let Some(group) = v2_group_of("self") else {
        return;
    };
    if !group.starts_with("/fwharden-watch-") {
        return;
    }
    let Ok(root) = V2Root::open(scratch) else {
        return;
    };
    if fs::write(root.path().join("cgroup.procs"), "0").is_ok() {
        let _ = fs::remove_dir(root.path().join(group.trim_start_matches('/')));
    }
}

/// The `systemd-run` command line that starts the watcher `argv` as a
/// transient service. `netns`: the network namespace to run it in, when it
/// is not PID 1's (a unit starts in PID 1's namespace otherwise); `env`:
/// variables to pass on (the test interlock).
pub fn systemd_run_argv(
    token: &str,
    log: &Path,
    netns: Option<&Path>,
    env: &[(String, String)],
    argv: &[OsString],
) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        "systemd-run".into(),
        format!("--unit={}", name(token)).into(),
        format!("--description=fwharden rollback watcher of apply {token}").into(),
        // `exec`: systemd-run returns once the watcher is running, so the
        // commit that follows is never unwatched.
        "--service-type=exec".into(),
        "--collect".into(),
        "--quiet".into(),
    ];
    let mut log_to = |stream: &str| {
        let mut p = OsString::from(format!("--property={stream}=append:"));
        p.push(log);
        out.push(p);
    };
    log_to("StandardOutput");
    log_to("StandardError");
    if let Some(ns) = netns {
        let mut p = OsString::from("--property=NetworkNamespacePath=");
        p.push(ns);
        out.push(p);
    }
    for (k, v) in env {
        out.push(format!("--setenv={k}={v}").into());
    }
    out.push("--".into());
    out.extend(argv.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_systemd_run_line_names_the_unit_and_ends_with_the_watcher() {
        let argv = systemd_run_argv(
            "abc",
            Path::new("/run/fwharden/watcher.log"),
            Some(Path::new("/proc/7/ns/net")),
            &[("FWHARDEN_FORBID_NETNS".into(), "1".into())],
            &["/usr/sbin/fwharden".into(), "watch".into()],
        );
        let s: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(s[0], "systemd-run");
        assert!(s.contains(&"--unit=fwharden-watch-abc".to_string()));
        assert!(s.contains(&"--property=NetworkNamespacePath=/proc/7/ns/net".to_string()));
        let dashdash = s.iter().position(|a| a == "--").unwrap();
        assert_eq!(&s[dashdash + 1..], ["/usr/sbin/fwharden", "watch"]);
    }

    #[test]
    fn the_cgroup2_mount_is_found_after_the_separator() {
        let info = "22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n\
                    30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount_in(info),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in("22 1 0:21 / /sys rw - sysfs sysfs rw\n"),
            None
        );
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
