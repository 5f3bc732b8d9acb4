//! What other programs committed after our commit, heard from the kernel
//! itself, so that a read-back can tell a generation moved only by bans
//! from one moved by a write to our own table.
//!
//! The generation is one per network namespace, and ban writers that do
//! not wait on the ban gate (CrowdSec's bouncer, `nft add element`) move
//! it at any moment. A big set is proven by "nobody committed between our
//! commit and the read" (see `verify`); when someone did, this tells who.
//! nf_tables sends every socket of group NFNLGRP_NFTABLES each object a
//! commit changed (`nft_commit_notify`), then the commit's NEWGEN with its
//! generation id (`nf_tables_gen_notify`), in commit order under the commit
//! mutex: what `nft monitor` prints. A monitor subscribed right after our
//! commit, with the generation read after it still ours plus one, hears
//! every later commit. If each event up to the NEWGEN of the generation a
//! read was made at is an element added to or deleted from a ban set of
//! table `inet fwharden-bans`, table `inet fwharden` is exactly what our
//! commit left: fwharden's read-back may then trust the acknowledged
//! elements of its big sets as if the generation had stood still.
//!
//! A foreign writer to our table stays detectable: its rule, set or
//! element event is not a ban element, and so is a lost event (ENOBUFS on
//! the monitor), or a NEWGEN that does not come in time; each proves
//! nothing, and the read-back reads everything in full, as before.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nftnl::nftnl_sys::libc;
use nix::sys::socket::{self as nsock, AddressFamily, NetlinkAddr, SockFlag, SockProtocol};

use super::acks::{attributes, replies, Reply};
use crate::ruleset::bans::{ban_set_names, BAN_TABLE};

/// include/uapi/linux/netlink.h.
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;

/// How long a read-back waits to hear the commit it read at.
pub const WAIT: Duration = Duration::from_secs(2);

/// A socket in group NFNLGRP_NFTABLES.
pub struct Monitor {
    fd: OwnedFd,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // Parked, not closed (see `socket::park`): a duplicate keeps the
        // socket open when the field itself is closed.
        if let Ok(dup) = self.fd.try_clone() {
            super::socket::park(Box::new(dup));
        }
    }
}

/// One event, as far as the proof cares.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A commit ended at this generation.
    Gen(u32),
    /// Elements added to or deleted from a ban set of the ban table.
    BanElements,
    /// Anything else.
    Other,
}

impl Monitor {
    pub fn open() -> std::io::Result<Monitor> {
        Ok(Monitor {
            fd: subscribe(libc::NFNLGRP_NFTABLES)?,
        })
    }

    /// Whether every commit heard until the one that made generation `gen`
    /// only added or deleted ban elements. `false` on anything else, on a
    /// lost event, or when that commit is not heard within `wait`.
    pub fn only_bans_until(&self, gen: u32, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match nsock::recv(self.fd.as_raw_fd(), &mut buf, nsock::MsgFlags::empty()) {
                Ok(n) => {
                    for r in replies(&buf[..n]) {
                        match classify(&r) {
                            Event::Gen(g) if g == gen => return true,
                            Event::Gen(_) | Event::BanElements => {}
                            Event::Other => return false,
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    let mut fds = [libc::pollfd {
                        fd: self.fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    }];
                    let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
                    // SAFETY: one pollfd of a live socket, and its count.
                    unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
                }
                Err(nix::errno::Errno::EINTR) => {}
                // ENOBUFS: events were lost, so nothing can be told.
                Err(_) => return false,
            }
        }
    }
}

/// A non-blocking netfilter netlink socket of the calling thread's network
/// namespace, in multicast group `group` (NFNLGRP_NFTABLES, _NFTRACE...).
pub(super) fn subscribe(group: libc::c_int) -> std::io::Result<OwnedFd> {
    let fd = nsock::socket(
        AddressFamily::Netlink,
        nsock::SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkNetFilter,
    )?;
    nsock::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    // SAFETY: a live socket and an int, passed by pointer with its size,
    // as setsockopt(2) takes NETLINK_ADD_MEMBERSHIP.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            (&group as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

thread_local! {
    /// The monitor opened by this thread's last commit, with the generation
    /// read right after it, for the read-back that follows.
    static AFTER_COMMIT: RefCell<Option<(u32, Monitor)>> = const { RefCell::new(None) };
}

/// Keeps `monitor`, opened right after a commit, for the read-back of the
/// commit that ended at generation `gen`.
pub fn keep(gen: u32, monitor: Option<Monitor>) {
    AFTER_COMMIT.with(|c| *c.borrow_mut() = monitor.map(|m| (gen, m)));
}

/// The monitor kept for the commit that ended at generation `gen`, if any.
pub fn take(gen: u32) -> Option<Monitor> {
    AFTER_COMMIT.with(|c| {
        c.borrow_mut()
            .take()
            .filter(|(g, _)| *g == gen)
            .map(|(_, m)| m)
    })
}

fn classify(r: &Reply) -> Event {
    let subsys = (r.ty >> 8) as libc::c_int;
    let msg = (r.ty & 0xff) as libc::c_int;
    // nlmsghdr (16 bytes), nfgenmsg (4: family, version, resource id).
    if subsys != libc::NFNL_SUBSYS_NFTABLES || r.bytes.len() < 20 {
        return Event::Other;
    }
    let attrs = attributes(&r.bytes[20..]);
    let attr = |ty: u16| attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v);
    match msg {
        // NFTA_GEN_ID (1): a big-endian u32.
        libc::NFT_MSG_NEWGEN => match attr(1) {
            Some(&[a, b, c, d]) => Event::Gen(u32::from_be_bytes([a, b, c, d])),
            _ => Event::Other,
        },
        // NFTA_SET_ELEM_LIST_TABLE (1) and _SET (2), NUL-terminated.
        libc::NFT_MSG_NEWSETELEM | libc::NFT_MSG_DELSETELEM => {
            let text = |v: Option<&[u8]>| {
                v.map(|v| String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned())
            };
            let inet = r.bytes[16] == libc::NFPROTO_INET as u8;
            let ours = text(attr(1)).as_deref() == Some(BAN_TABLE);
            let ban_set = text(attr(2)).is_some_and(|s| ban_set_names().contains(&s));
            if inet && ours && ban_set {
                Event::BanElements
            } else {
                Event::Other
            }
        }
        _ => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut out = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        out.extend(ty.to_ne_bytes());
        out.extend(v);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn event(msg: libc::c_int, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0u8; 16];
        m.extend([family, 0, 0, 0]);
        for a in attrs {
            m.extend(a);
        }
        let ty = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | msg as u16;
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&ty.to_ne_bytes());
        m
    }

    fn classified(m: &[u8]) -> Event {
        let r = replies(m);
        assert_eq!(r.len(), 1);
        classify(&r[0])
    }

    fn elements(msg: libc::c_int, table: &str, set: &str) -> Vec<u8> {
        let z = |s: &str| [s.as_bytes(), &[0]].concat();
        event(
            msg,
            libc::NFPROTO_INET as u8,
            &[attr(1, &z(table)), attr(2, &z(set))],
        )
    }

    #[test]
    fn a_ban_is_a_ban_and_a_generation_is_read() {
        let gen = event(libc::NFT_MSG_NEWGEN, 0, &[attr(1, &7u32.to_be_bytes())]);
        assert_eq!(classified(&gen), Event::Gen(7));
        for msg in [libc::NFT_MSG_NEWSETELEM, libc::NFT_MSG_DELSETELEM] {
            for set in ["ban_v4", "ban_v6", "crowdsec_v4", "crowdsec_v6"] {
                let m = elements(msg, BAN_TABLE, set);
                assert_eq!(classified(&m), Event::BanElements, "{set}");
            }
        }
    }

    #[test]
    fn anything_that_could_change_our_table_is_not_a_ban() {
        // Elements of our own table's sets, of the ban table's exempt sets,
        // of a set of the same name in a table of another family, and any
        // other object (here a rule) prove nothing.
        let ours = elements(libc::NFT_MSG_NEWSETELEM, "fwharden", "ban_v4");
        assert_eq!(classified(&ours), Event::Other);
        let exempt = elements(libc::NFT_MSG_DELSETELEM, BAN_TABLE, "exempt_v4");
        assert_eq!(classified(&exempt), Event::Other);
        let z = |s: &str| [s.as_bytes(), &[0]].concat();
        let ip = event(
            libc::NFT_MSG_NEWSETELEM,
            libc::NFPROTO_IPV4 as u8,
            &[attr(1, &z(BAN_TABLE)), attr(2, &z("ban_v4"))],
        );
        assert_eq!(classified(&ip), Event::Other);
        let rule = event(
            libc::NFT_MSG_NEWRULE,
            libc::NFPROTO_INET as u8,
            &[attr(1, &z(BAN_TABLE))],
        );
        assert_eq!(classified(&rule), Event::Other);
    }
}
