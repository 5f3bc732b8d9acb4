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
use nix::sys::socket::{self as nsock, sockopt, MsgFlags, NetlinkAddr};
use nix::sys::time::{TimeVal, TimeValLike};

use super::acks::{begin_with_generation, judge, parse_ack, replies, Ack, BEGIN_LEN};
use super::batch::Built;
use super::NftError;

pub struct Socket {
    /// Always `Some` but in `drop`, which parks it (see [`park`]).
    sock: Option<mnl::Socket>,
    /// Receive buffer. Bytes: every reply is copied out of it before it is
    /// parsed, so its alignment does not matter.
    buf: Vec<u8>,
    seq: u32,
}

/// Turns on a SOL_NETLINK flag option. nix has no wrapper for netlink's
/// options (its `sockopt` module stops at SOL_SOCKET and IP), so this one
/// calls setsockopt(2) itself.
fn netlink_flag(fd: BorrowedFd, opt: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is a live socket; the option value is an int, passed by
    // pointer with its size, as setsockopt(2) takes it, and read only
    // during the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            opt,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Which buffer of a socket.
#[derive(Debug, Clone, Copy)]
enum Buffer {
    Send,
    Receive,
}

/// Sets a socket buffer to at least `want` bytes: the `FORCE` option (root
/// or CAP_NET_ADMIN, ignores `net.core.[rw]mem_max`), else the plain one.
/// Returns the size the kernel granted.
fn size_buffer(fd: BorrowedFd, buffer: Buffer, want: usize) -> io::Result<usize> {
    let want = want.min(libc::c_int::MAX as usize);
    let granted = match buffer {
        Buffer::Send => {
            if nsock::setsockopt(&fd, sockopt::SndBufForce, &want).is_err() {
                nsock::setsockopt(&fd, sockopt::SndBuf, &want)?;
            }
            nsock::getsockopt(&fd, sockopt::SndBuf)?
        }
        Buffer::Receive => {
            if nsock::setsockopt(&fd, sockopt::RcvBufForce, &want).is_err() {
                nsock::setsockopt(&fd, sockopt::RcvBuf, &want)?;
            }
            nsock::getsockopt(&fd, sockopt::RcvBuf)?
        }
    };
    Ok(granted)
}

/// How many closed sockets a thread keeps open until it exits.
const PARKED: usize = 16;

thread_local! {
    static PARKING: std::cell::RefCell<std::collections::VecDeque<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// Keeps a bound nfnetlink socket (`Socket`, the monitor's) open until
/// the process exits instead of closing it now. Closing one makes the
/// kernel (nf_tables' NETLINK_URELEASE handler) wait for the cleanup of
/// the last commit, which its worker does after an RCU grace period: a
/// close right after a commit took 9-15 ms here, on apply's path between
/// the commit and its read-back. At exit the cleanup is long done. The
/// newest [`PARKED`] of a thread are kept, so a long-lived process (the
/// watcher) holds a bounded number. A parked socket is never used again:
/// it belongs to the network namespace it was made in.
pub fn park(socket: Box<dyn std::any::Any>) {
    let mut socket = Some(socket);
    // A thread that is ending (its thread-locals being dropped, a kept
    // monitor among them) has no parking any more: the socket closes here.
    let _ = PARKING.try_with(|p| {
        if let (Ok(mut p), Some(s)) = (p.try_borrow_mut(), socket.take()) {
            if p.len() == PARKED {
                p.pop_front();
            }
            p.push_back(s);
        }
    });
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(sock) = self.sock.take() {
            park(Box::new(sock));
        }
    }
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
        netlink_flag(fd, libc::NETLINK_CAP_ACK).map_err(io)?;
        netlink_flag(fd, libc::NETLINK_EXT_ACK).map_err(io)?;
        // Dumps block on recv; the kernel answers at once, so a long
        // silence means something is wrong, not slow.
        nsock::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::seconds(30))
            .map_err(|e| io(e.into()))?;
        Ok(Socket {
            sock: Some(sock),
            buf: vec![0u8; 512 * 1024],
            seq: 0,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to `self.sock`, which outlives
        // the borrow.
        unsafe { BorrowedFd::borrow_raw(self.mnl().as_raw_fd()) }
    }

    fn mnl(&self) -> &mnl::Socket {
        self.sock
            .as_ref()
            .expect("a socket is parked only when dropped")
    }

    /// Receives one datagram; `None` when none is waiting (`wait` false).
    fn recv(&mut self, wait: bool) -> io::Result<Option<usize>> {
        let flags = if wait {
            MsgFlags::empty()
        } else {
            MsgFlags::MSG_DONTWAIT
        };
        let fd = self.mnl().as_raw_fd();
        match nsock::recv(fd, &mut self.buf, flags) {
            Ok(n) => Ok(Some(n)),
            Err(nix::errno::Errno::EAGAIN) if !wait => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits for the next datagram and returns a copy of it.
    fn next_datagram(&mut self) -> Result<Vec<u8>, RequestError> {
        loop {
            match self.recv(true) {
                Ok(Some(n)) => return Ok(self.data(n).to_vec()),
                Ok(None) => continue,
                Err(e) => return Err(RequestError::Io(e)),
            }
        }
    }

    fn data(&self, n: usize) -> &[u8] {
        &self.buf[..n]
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
        let got = size_buffer(self.fd(), Buffer::Send, total + 4096)
            .map_err(|e| io("setsockopt SO_SNDBUF", e))?;
        if got < total + 32 {
            return Err(NftError::SendBuffer { needed: total, got });
        }
        // Each ack is a small skb of about a kilobyte of accounted memory.
        let acks = expected.len();
        size_buffer(self.fd(), Buffer::Receive, acks * 2048 + (1 << 20))
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
        let mut scratch = message_buffer();
        let bytes = message(&mut scratch, nl_type, family, flags, seq, build);
        self.mnl().send(bytes).map_err(RequestError::Io)?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let data = self.next_datagram()?;
            for r in replies(&data) {
                if r.seq != seq {
                    continue;
                }
                interrupted |= r.flags & libc::NLM_F_DUMP_INTR as u16 != 0;
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

impl Socket {
    /// Many requests of one type (no dumps), sent in one datagram and
    /// answered in order: the kernel handles each message of a datagram in
    /// turn (netlink_rcv_skb), so n lookups cost one round trip instead of
    /// n. Each `build` appends its request's attributes; the answers come
    /// back in the same order, each as [`Socket::request`] would give it.
    pub fn pipelined<F: FnOnce(*mut libc::nlmsghdr)>(
        &mut self,
        nl_type: u16,
        family: u16,
        builds: Vec<F>,
    ) -> Result<Vec<Answer>, RequestError> {
        let first = self.seq + 1;
        let mut scratch = message_buffer();
        let mut datagram: Vec<u8> = Vec::new();
        for build in builds {
            self.seq += 1;
            datagram.extend_from_slice(message(&mut scratch, nl_type, family, 0, self.seq, build));
            // Messages in one datagram start at 4-byte boundaries.
            datagram.resize(datagram.len().next_multiple_of(4), 0);
        }
        let count = (self.seq - first + 1) as usize;
        if count == 0 {
            return Ok(Vec::new());
        }
        // Every answer is a reply and an ack, each a small skb of about a
        // kilobyte of accounted memory: none may be dropped for room.
        size_buffer(self.fd(), Buffer::Receive, count * 4096 + (1 << 20))
            .map_err(RequestError::Io)?;
        size_buffer(self.fd(), Buffer::Send, datagram.len() + 4096).map_err(RequestError::Io)?;
        self.mnl().send(&datagram).map_err(RequestError::Io)?;
        let mut answers: Vec<Option<Answer>> = (0..count).map(|_| None).collect();
        let mut replies_of: Vec<Vec<Vec<u8>>> = vec![Vec::new(); count];
        let mut open = count;
        while open > 0 {
            let data = self.next_datagram()?;
            for r in replies(&data) {
                let Some(i) = r.seq.checked_sub(first).map(|i| i as usize) else {
                    continue;
                };
                if i >= count || answers[i].is_some() {
                    continue;
                }
                match parse_ack(&r) {
                    Some(ack) => {
                        answers[i] = Some(match ack.error {
                            0 => Ok(std::mem::take(&mut replies_of[i])),
                            e => Err(RequestError::Kernel(e, ack.message)),
                        });
                        open -= 1;
                    }
                    None => replies_of[i].push(r.bytes.to_vec()),
                }
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }
}

/// Room for the largest message libnftnl builds.
fn message_buffer() -> Vec<u64> {
    vec![0u64; (nftnl::nft_nlmsg_maxsize() as usize).div_ceil(8)]
}

/// Builds one request in `scratch` (from [`message_buffer`]): the header,
/// with NLM_F_ACK added to `flags`, then what `build` appends; its bytes.
fn message(
    scratch: &mut [u64],
    nl_type: u16,
    family: u16,
    flags: u16,
    seq: u32,
    build: impl FnOnce(*mut libc::nlmsghdr),
) -> &[u8] {
    // SAFETY: the buffer holds the largest message; the header is written
    // first and `build` only appends attributes to it.
    let len = unsafe {
        let nlh = sys::nftnl_nlmsg_build_hdr(
            scratch.as_mut_ptr().cast(),
            nl_type,
            family,
            flags | libc::NLM_F_ACK as u16,
            seq,
        );
        build(nlh);
        (*nlh).nlmsg_len as usize
    };
    // SAFETY: the first `len` bytes were just written, within the buffer.
    unsafe { std::slice::from_raw_parts(scratch.as_ptr().cast::<u8>(), len) }
}

/// A request's replies, or why it failed.
pub type Answer = Result<Vec<Vec<u8>>, RequestError>;

/// Why a request failed.
#[derive(Debug)]
pub enum RequestError {
    Io(io::Error),
    /// The kernel's errno and extended-ack message.
    Kernel(i32, Option<String>),
    /// The ruleset changed during the dump (NLM_F_DUMP_INTR): retry.
    Interrupted,
}
