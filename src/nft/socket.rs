//! The netlink conversation: sending a batch as one transaction and
//! reading every acknowledgement, and request/dump round trips.
//!
//! Facts this code is built on (measured on Linux 6.x): the kernel commits
//! a batch only if BATCH_END arrives in the same datagram as BATCH_BEGIN;
//! sending one datagram per batch page (as `mnl::Socket::send_all` does)
//! makes a large batch abort with ENOBUFS. So the pages go out in one
//! `sendmsg` over an iovec, with a send buffer sized to the whole batch.
//! The kernel processes the batch inside that `sendmsg` call, so when it
//! returns every acknowledgement is already queued on our socket (or was
//! dropped, which the socket reports as ENOBUFS): reading until the queue
//! is empty reads everything the kernel will ever say about the batch.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

use nftnl::nftnl_sys::{self as sys, libc};
use nix::sys::socket::{self as nsock, MsgFlags, NetlinkAddr};

use super::acks::{
    begin_with_generation, judge, parse_ack, replies, Ack, BEGIN_LEN, NLM_F_DUMP_INTR,
};
use super::batch::Built;
use super::NftError;

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

pub struct Socket {
    sock: mnl::Socket,
    /// Receive buffer, u64s so it is aligned for `nlmsghdr`.
    buf: Vec<u64>,
    seq: u32,
}

fn setsockopt(
    fd: BorrowedFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live socket; the option value is an int, passed by
    // pointer with its size, as setsockopt(2) takes it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn getsockopt(fd: BorrowedFd, level: libc::c_int, opt: libc::c_int) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as in `setsockopt`, with room for the int the kernel writes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value.max(0) as usize)
    }
}

/// Sets a socket buffer to at least `want` bytes: the `FORCE` option (root
/// or CAP_NET_ADMIN, ignores `net.core.[rw]mem_max`), else the plain one.
/// Returns the size the kernel granted.
fn size_buffer(
    fd: BorrowedFd,
    force: libc::c_int,
    plain: libc::c_int,
    want: usize,
) -> io::Result<usize> {
    let want = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
    if setsockopt(fd, libc::SOL_SOCKET, force, want).is_err() {
        setsockopt(fd, libc::SOL_SOCKET, plain, want)?;
    }
    getsockopt(fd, libc::SOL_SOCKET, plain)
}

impl Socket {
    pub fn open() -> Result<Socket, NftError> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter).map_err(|source| {
            match source.raw_os_error() {
                Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT) => NftError::NoNfTables { source },
                Some(libc::EPERM | libc::EACCES) => NftError::Permission {
                    what: "a netfilter netlink socket".into(),
                    source,
                },
                _ => NftError::Io {
                    op: "socket",
                    source,
                },
            }
        })?;
        // SAFETY: the descriptor belongs to `sock`, alive for this scope.
        let fd = unsafe { BorrowedFd::borrow_raw(sock.as_raw_fd()) };
        let io = |source| NftError::Io {
            op: "setsockopt",
            source,
        };
        // Acks without a copy of the request, and with the kernel's
        // explanation of an error.
        setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1).map_err(io)?;
        setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1).map_err(io)?;
        // Dumps block on recv; the kernel answers at once, so a long
        // silence means something is wrong, not slow.
        let timeout = libc::timeval {
            tv_sec: 30,
            tv_usec: 0,
        };
        // SAFETY: a live socket and a timeval, passed with its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io(io::Error::last_os_error()));
        }
        Ok(Socket {
            sock,
            buf: vec![0u64; 64 * 1024],
            seq: 0,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to `self.sock`, which outlives
        // the borrow.
        unsafe { BorrowedFd::borrow_raw(self.sock.as_raw_fd()) }
    }

    /// Receives one datagram; `None` when none is waiting (`wait` false).
    fn recv(&mut self, wait: bool) -> io::Result<Option<usize>> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        let bytes = self.buf.len() * 8;
        // SAFETY: the buffer is valid for `bytes` bytes and outlives the call.
        let n = unsafe {
            libc::recv(
                self.fd().as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                bytes,
                flags,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) if !wait => Ok(None),
            _ => Err(e),
        }
    }

    fn data(&self, n: usize) -> &[u8] {
        // SAFETY: a u64 buffer viewed as bytes, within its length.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), n) }
    }

    /// Sends the batch as one datagram and checks every acknowledgement.
    /// With `generation`, the kernel commits only if the ruleset is still at
    /// that generation (compare-and-swap), else [`NftError::Raced`].
    pub fn transact(&mut self, built: &Built, generation: Option<u32>) -> Result<(), NftError> {
        let mut pages: Vec<&[u8]> = built.batch.iter().collect();
        let begin;
        if let Some(generation) = generation {
            begin = begin_with_generation(pages.first().copied().unwrap_or(&[]), generation)?;
            // The batch's own BATCH_BEGIN is replaced by ours, which carries
            // the generation; the iovec keeps everything one datagram.
            let first = &pages[0][BEGIN_LEN..];
            pages.splice(0..1, [begin.as_slice(), first]);
        }
        let total: usize = pages.iter().map(|p| p.len()).sum();
        let expected = built.batch.sequence_numbers();
        let io = |op, source| NftError::Io { op, source };

        // netlink_sendmsg refuses a datagram over sk_sndbuf - 32 bytes.
        let got = size_buffer(
            self.fd(),
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            total + 4096,
        )
        .map_err(|e| io("setsockopt SO_SNDBUF", e))?;
        if got < total + 32 {
            return Err(NftError::SendBuffer { needed: total, got });
        }
        // Each ack is a small skb of about a kilobyte of accounted memory.
        let acks = expected.len();
        size_buffer(
            self.fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            acks * 2048 + (1 << 20),
        )
        .map_err(|e| io("setsockopt SO_RCVBUF", e))?;

        let iov: Vec<IoSlice> = pages.iter().map(|p| IoSlice::new(p)).collect();
        let kernel = NetlinkAddr::new(0, 0);
        let sent = nsock::sendmsg(
            self.fd().as_raw_fd(),
            &iov,
            &[],
            MsgFlags::empty(),
            Some(&kernel),
        )
        .map_err(|e| match e {
            nix::errno::Errno::EPERM => NftError::Permission {
                what: "the transaction".into(),
                source: e.into(),
            },
            nix::errno::Errno::EMSGSIZE => NftError::SendBuffer { needed: total, got },
            _ => io("sendmsg", e.into()),
        })?;
        if sent != total {
            return Err(NftError::OutcomeUnknown {
                detail: format!("sendmsg sent {sent} of {total} bytes"),
            });
        }

        let mut answers: BTreeMap<u32, Ack> = BTreeMap::new();
        let mut overflow = false;
        loop {
            match self.recv(false) {
                Ok(Some(n)) => {
                    let data = self.data(n).to_vec();
                    for r in replies(&data) {
                        if let Some(ack) = parse_ack(&r) {
                            // Keep the first error for a sequence number.
                            let slot = answers.entry(ack.seq).or_insert(Ack {
                                error: 0,
                                seq: ack.seq,
                                message: None,
                            });
                            if slot.error == 0 {
                                *slot = ack;
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => overflow = true,
                Err(e) => return Err(io("recv", e)),
            }
        }
        judge(built, expected, &answers, overflow)
    }

    /// Sends one request and collects the replies until the kernel's ack,
    /// NLMSG_DONE, or an error. `build` adds the request's attributes.
    pub fn request(
        &mut self,
        nl_type: u16,
        family: u16,
        flags: u16,
        build: impl FnOnce(*mut libc::nlmsghdr),
    ) -> Result<Vec<Vec<u8>>, RequestError> {
        self.seq += 1;
        let seq = self.seq;
        let mut msg = vec![0u64; (nftnl::nft_nlmsg_maxsize() as usize).div_ceil(8)];
        // SAFETY: the buffer holds the largest message; the header is
        // written first and `build` only appends attributes to it.
        let len = unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(
                msg.as_mut_ptr().cast(),
                nl_type,
                family,
                flags | libc::NLM_F_ACK as u16,
                seq,
            );
            build(nlh);
            (*nlh).nlmsg_len as usize
        };
        // SAFETY: the first `len` bytes were just written.
        let bytes = unsafe { std::slice::from_raw_parts(msg.as_ptr().cast::<u8>(), len) };
        self.sock.send(bytes).map_err(RequestError::Io)?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = match self.recv(true) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) => return Err(RequestError::Io(e)),
            };
            let data = self.data(n).to_vec();
            for r in replies(&data) {
                if r.seq != seq {
                    continue;
                }
                interrupted |= r.flags & NLM_F_DUMP_INTR != 0;
                if let Some(ack) = parse_ack(&r) {
                    return match ack.error {
                        0 if interrupted => Err(RequestError::Interrupted),
                        0 => Ok(out),
                        e => Err(RequestError::Kernel(e, ack.message)),
                    };
                }
                if r.ty == libc::NLMSG_DONE as u16 {
                    // An ack follows a dump only on some kernels; DONE
                    // ends it either way.
                    return if interrupted {
                        Err(RequestError::Interrupted)
                    } else {
                        Ok(out)
                    };
                }
                out.push(r.bytes.to_vec());
            }
        }
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum RequestError {
    Io(io::Error),
    /// The kernel's errno and extended-ack message.
    Kernel(i32, Option<String>),
    /// The ruleset changed during the dump (NLM_F_DUMP_INTR): retry.
    Interrupted,
}
