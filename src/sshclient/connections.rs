//! The SSH client from the kernel, for when the environment does not say
//! (sudo reset it, or it is unreadable): the established TCP connections
//! whose local port is a listening port and which an sshd process serving
//! a logged-in session holds
//! (sock_diag lists them, `/proc/PID/fd` names their holders, see
//! [`crate::audit::owners`]). sshd forks per connection (the `[priv]`
//! monitor, then the `user@pts/0` session), so the connection of *this*
//! session is the one held by an ancestor of this process; when no holder
//! is an ancestor (a console, `setsid`, a process started by cron), the
//! only such connection is taken, and when there are several, all of them
//! are guarded, the safe side.

use std::collections::BTreeSet;

use super::{unmap, How, Operator, SshClient};
use crate::audit::{owners, sockets};

/// An established connection to sshd: its client, and the pids holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub client: SshClient,
    /// The sshd processes holding the socket.
    pub holders: Vec<u32>,
}

/// sshd before OpenSSH 9.8 is `sshd` in every process; later ones run the
/// session as `sshd-session` (`/proc/PID/comm`).
fn is_sshd(name: &str) -> bool {
    name == "sshd" || name.starts_with("sshd-")
}

/// Whether sshd process `pid` serves a logged-in session: sshd titles it
/// `sshd: USER@pts/0` or `USER@notty` (`sshd-session: ...` from OpenSSH
/// 9.8), while a connection still authenticating is held by `sshd:
/// unknown [priv]`, `[net]` or `[accepted]`. A brute-forcer connected to
/// sshd right now is nobody to guard: counting it would refuse every
/// console apply that keeps SSH from the world.
fn logged_in(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| session_title(&c))
}

fn session_title(cmdline: &[u8]) -> bool {
    let title = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let title = String::from_utf8_lossy(title);
    title.starts_with("sshd")
        && title.split_whitespace().any(|w| {
            w.split_once('@')
                .is_some_and(|(user, tty)| !user.is_empty() && !tty.is_empty())
        })
}

/// Which client to guard, from the candidates and this process's
/// ancestors (pids, nearest first). Pure: the policy, apart from the
/// kernel.
pub fn choose(candidates: &[Candidate], ancestors: &[u32]) -> (Vec<SshClient>, How) {
    for pid in ancestors {
        let mine: Vec<SshClient> = candidates
            .iter()
            .filter(|c| c.holders.contains(pid))
            .map(|c| c.client.clone())
            .collect();
        if !mine.is_empty() {
            return (dedup(mine), How::SshdAncestor { pid: *pid });
        }
    }
    let clients = dedup(candidates.iter().map(|c| c.client.clone()).collect());
    match (&clients[..], candidates.first()) {
        ([], _) => (clients, How::NotFound),
        ([_], Some(c)) => {
            let pid = c.holders.first().copied().unwrap_or_default();
            (clients, How::OnlyConnection { pid })
        }
        _ => (clients, How::Ambiguous),
    }
}

/// Two sessions from the same address and port are one client to guard;
/// in address order, so what is said does not depend on the kernel's.
fn dedup(mut clients: Vec<SshClient>) -> Vec<SshClient> {
    clients.sort_by_key(|c| (c.client, c.server_port));
    clients.dedup_by_key(|c| (c.client, c.server_port));
    clients
}

/// The pids of every sshd process (by `/proc/PID/comm`).
fn sshd_processes() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| is_sshd(name.trim_end()))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// This process's ancestors, parent first (to pid 1).
fn ancestors() -> Vec<u32> {
    let mut out = Vec::new();
    let mut pid = std::process::id();
    while let Some(parent) = parent_of(pid).filter(|p| *p != 0 && !out.contains(p)) {
        out.push(parent);
        pid = parent;
    }
    out
}

/// The ppid in `/proc/PID/stat`: the fourth field, counted after the
/// command name's closing parenthesis (the name may hold spaces and ')').
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The operator from the kernel's connections to sshd.
pub fn find() -> Operator {
    let mut notes = Vec::new();
    let ancestors = ancestors();
    let candidates = match inbound() {
        Ok(inbound) if inbound.is_empty() => Vec::new(),
        Ok(inbound) => {
            // Only sshd's descriptors are read: a web server's thousands of
            // sockets are not looked through on every apply.
            let wanted: BTreeSet<u64> = inbound.iter().map(|c| c.inode).collect();
            let owners = owners::find_in(&sshd_processes(), &wanted);
            if owners.unreadable > 0 {
                notes.push(format!(
                    "{} sshd processes could not be looked into (run as root)",
                    owners.unreadable
                ));
            }
            held_by(&inbound, &owners)
        }
        Err(e) => {
            notes.push(format!(
                "the established connections could not be listed: {e}"
            ));
            Vec::new()
        }
    };
    let (clients, how) = choose(&candidates, &ancestors);
    Operator {
        clients,
        how,
        notes,
    }
}

/// The established connections whose local port is a TCP listening port.
/// (sshd's own outbound connections, for port forwarding, have an
/// ephemeral local port.)
fn inbound() -> Result<Vec<sockets::Connection>, sockets::SocketsError> {
    let listening: BTreeSet<u16> = sockets::tcp_listeners()?.iter().map(|l| l.port).collect();
    Ok(sockets::established()?
        .into_iter()
        .filter(|c| listening.contains(&c.local.port()))
        .collect())
}

/// The connections among `inbound` that an sshd process holds.
fn held_by(inbound: &[sockets::Connection], owners: &owners::Owners) -> Vec<Candidate> {
    inbound
        .iter()
        .filter_map(|c| {
            let holders: Vec<u32> = owners
                .holders(c.inode)
                .iter()
                .filter(|p| is_sshd(&p.name))
                .map(|p| p.pid)
                .collect();
            holders.iter().any(|p| logged_in(*p)).then(|| Candidate {
                client: SshClient {
                    client: unmap(c.remote.ip()),
                    server_port: c.local.port(),
                    server: Some(unmap(c.local.ip())),
                },
                holders,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(client: &str, holders: &[u32]) -> Candidate {
        Candidate {
            client: SshClient {
                client: client.parse().unwrap(),
                server_port: 22,
                server: None,
            },
            holders: holders.to_vec(),
        }
    }

    #[test]
    fn the_connection_of_an_ancestor_wins_the_nearest_first() {
        let cs = [
            cand("192.0.2.1", &[100, 101]),
            cand("192.0.2.2", &[200, 201]),
        ];
        let (clients, how) = choose(&cs, &[500, 201, 200, 1]);
        assert_eq!(clients, [cs[1].client.clone()]);
        assert_eq!(how, How::SshdAncestor { pid: 201 });
    }

    #[test]
    fn no_ancestor_one_connection_is_that_one_several_are_all_guarded() {
        let one = [cand("192.0.2.1", &[100])];
        assert_eq!(choose(&one, &[7, 1]).1, How::OnlyConnection { pid: 100 });
        let two = [cand("192.0.2.1", &[100]), cand("192.0.2.2", &[200])];
        let (clients, how) = choose(&two, &[7, 1]);
        assert_eq!((clients.len(), how), (2, How::Ambiguous));
        // Two sessions from one address are one client.
        let same = [cand("192.0.2.1", &[100]), cand("192.0.2.1", &[200])];
        assert_eq!(choose(&same, &[1]).0.len(), 1);
        assert_eq!(choose(&[], &[1]), (vec![], How::NotFound));
    }

    #[test]
    fn a_logged_in_session_is_told_from_one_still_authenticating() {
        assert!(session_title(b"sshd: root@notty\0"));
        assert!(session_title(b"sshd: alice@pts/0\0"));
        assert!(session_title(b"sshd-session: alice@pts/3\0"));
        assert!(!session_title(b"sshd: unknown [priv]\0"));
        assert!(!session_title(b"sshd: root [net]\0"));
        assert!(!session_title(b"sshd: [accepted]\0"));
        assert!(!session_title(
            b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\0"
        ));
        assert!(!session_title(b"/usr/sbin/sshd\0-D\0a@b\0"));
    }

    #[test]
    fn the_parent_is_read_past_a_name_with_spaces_and_parentheses() {
        assert_eq!(parse_ppid("42 (sshd: a) b) S 17 42 42 0"), Some(17));
        assert_eq!(parse_ppid("garbage"), None);
        assert!(is_sshd("sshd") && is_sshd("sshd-session") && !is_sshd("sshguard"));
        // This test's own parent is an ancestor.
        assert_eq!(
            ancestors().first().copied(),
            Some(std::os::unix::process::parent_id())
        );
    }
}
