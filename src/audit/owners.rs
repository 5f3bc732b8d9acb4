//! Which process holds a socket: every `/proc/PID/fd/N` that links to
//! `socket:[INODE]` names the inode sock_diag reported. Another user's
//! `/proc/PID/fd` can only be read with CAP_SYS_PTRACE (root), so without it
//! some sockets keep no owner; [`Owners::unreadable`] counts the processes
//! that could not be looked into, so the audit can say what it missed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde::Serialize;

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    pub name: String,
    pub pid: u32,
}

#[derive(Debug, Default)]
pub struct Owners {
    /// Every holder of each socket, lowest pid first (a forked server
    /// and its children share the descriptor).
    by_inode: BTreeMap<u64, Vec<Process>>,
    /// Processes whose descriptors could not be read (not ours, no root).
    pub unreadable: usize,
}

impl Owners {
    /// The owner of socket `inode`: the lowest pid holding it (a forked
    /// server's parent, usually).
    pub fn of(&self, inode: u64) -> Option<&Process> {
        self.by_inode.get(&inode)?.first()
    }

    /// Every process holding socket `inode`, lowest pid first.
    pub fn holders(&self, inode: u64) -> &[Process] {
        self.by_inode.get(&inode).map_or(&[], Vec::as_slice)
    }
}

/// Looks for the holders of the sockets `wanted` in every process.
pub fn find(wanted: &BTreeSet<u64>) -> Owners {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Owners::default();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    find_in(&pids, wanted)
}

/// Looks for the holders of the sockets `wanted` in the processes `pids`
/// only (a few, where reading every process's descriptors would cost).
pub fn find_in(pids: &[u32], wanted: &BTreeSet<u64>) -> Owners {
    let mut owners = Owners::default();
    for &pid in pids {
        let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            // Gone since the listing: not a process we failed to see.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                owners.unreadable += 1;
                continue;
            }
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                continue;
            };
            if !wanted.contains(&inode) {
                continue;
            }
            let holders = owners.by_inode.entry(inode).or_default();
            // A process holding it twice (dup) is one holder.
            if holders.last().is_some_and(|p| p.pid == pid) {
                continue;
            }
            let name = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default();
            holders.push(Process { name, pid });
        }
    }
    owners
}

/// The inode in a descriptor's link, `socket:[12345]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_socket_links_name_an_inode() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn a_socket_of_our_own_is_found_with_our_pid() {
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let inode = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        let owners = find(&BTreeSet::from([inode]));
        assert_eq!(owners.of(inode).unwrap().pid, std::process::id());
    }
}
