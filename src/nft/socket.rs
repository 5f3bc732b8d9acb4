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

use super::batch::Built;
use super::NftError;

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_HDRLEN: usize = 16;

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

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// One parsed message: header fields and the whole message.
struct Reply<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    bytes: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn replies(data: &[u8]) -> Vec<Reply<'_>> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32_at(rest, 0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        out.push(Reply {
            ty: u16_at(rest, 4),
            flags: u16_at(rest, 6),
            seq: u32_at(rest, 8),
            bytes: &rest[..len],
        });
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

/// An NLMSG_ERROR: the error (0 for an ack), the sequence number of the
/// message it answers, and the kernel's extended-ack text, if any.
struct Ack {
    error: i32,
    seq: u32,
    message: Option<String>,
}

fn parse_ack(r: &Reply) -> Option<Ack> {
    let b = r.bytes;
    if r.ty != libc::NLMSG_ERROR as u16 || b.len() < NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
        return None;
    }
    let error = u32_at(b, NLMSG_HDRLEN) as i32;
    let orig = NLMSG_HDRLEN + 4;
    let seq = u32_at(b, orig + 8);
    let mut message = None;
    if r.flags & NLM_F_ACK_TLVS != 0 {
        // The TLVs follow the echoed request: its header only when capped.
        let echoed = if r.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            (u32_at(b, orig) as usize).next_multiple_of(4)
        };
        let mut at = orig + echoed;
        while at + 4 <= b.len() {
            let (len, ty) = (u16_at(b, at) as usize, u16_at(b, at + 2) & 0x3fff);
            if len < 4 || at + len > b.len() {
                break;
            }
            if ty == NLMSGERR_ATTR_MSG {
                let text = &b[at + 4..at + len];
                let text = text.split(|c| *c == 0).next().unwrap_or_default();
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
            at += len.next_multiple_of(4);
        }
    }
    Some(Ack {
        error: -error,
        seq,
        message,
    })
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

/// The outcome of a batch from its acknowledgements. Any error means the
/// kernel aborted the whole transaction (nfnetlink never commits a batch
/// in which a message failed), so the first error by sequence number is
/// the cause. No error but a missing ack, or acks lost to ENOBUFS, leaves
/// the outcome unknown: never success.
/// Length of the BATCH_BEGIN message libnftnl writes: a netlink header and
/// an nfgenmsg, no attributes.
const BEGIN_LEN: usize = 20;
/// NFNL_BATCH_GENID, the one attribute of BATCH_BEGIN
/// (include/uapi/linux/netfilter/nfnetlink.h).
const NFNL_BATCH_GENID: u16 = 1;

/// A copy of the batch's BATCH_BEGIN with NFNL_BATCH_GENID added: the kernel
/// then aborts the batch with ERESTART if another writer committed since
/// `generation` was read (nfnetlink_rcv_batch).
fn begin_with_generation(page: &[u8], generation: u32) -> Result<Vec<u8>, NftError> {
    let protocol = |detail: &str| NftError::Protocol {
        op: "batch begin",
        detail: detail.into(),
    };
    let head = page
        .get(..BEGIN_LEN)
        .ok_or_else(|| protocol("batch too short"))?;
    let len = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let ty = u16::from_ne_bytes([head[4], head[5]]);
    if len != BEGIN_LEN || i32::from(ty) != libc::NFNL_MSG_BATCH_BEGIN {
        return Err(protocol("the batch does not open with a plain BATCH_BEGIN"));
    }
    let mut msg = head.to_vec();
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&NFNL_BATCH_GENID.to_ne_bytes());
    msg.extend_from_slice(&generation.to_be_bytes());
    let len = msg.len() as u32;
    msg[..4].copy_from_slice(&len.to_ne_bytes());
    Ok(msg)
}

fn judge(
    built: &Built,
    expected: std::ops::Range<u32>,
    answers: &BTreeMap<u32, Ack>,
    overflow: bool,
) -> Result<(), NftError> {
    let what = |seq: u32| {
        built
            .what
            .get(&seq)
            .cloned()
            .unwrap_or_else(|| "the transaction (batch begin/end)".to_string())
    };
    let first_error = answers
        .values()
        .filter(|a| a.error != 0)
        .min_by_key(|a| (a.seq == 0 || a.seq == expected.start, a.seq));
    if let Some(a) = first_error {
        let batch_level = a.seq == 0 || !built.what.contains_key(&a.seq);
        return Err(match a.error {
            // ERESTART (85 on Linux): the generation moved under us.
            85 if batch_level => NftError::Raced,
            libc::EPERM => NftError::Permission {
                what: what(a.seq),
                source: errno(a.error),
            },
            libc::EOPNOTSUPP | libc::ENOENT if batch_level => NftError::NoNfTables {
                source: errno(a.error),
            },
            e => NftError::Rejected {
                what: what(a.seq),
                message: a.message.clone(),
                source: errno(e),
            },
        });
    }
    if overflow {
        return Err(NftError::OutcomeUnknown {
            detail: "acknowledgements were lost (ENOBUFS on the receive buffer)".into(),
        });
    }
    let missing: Vec<u32> = expected.filter(|s| !answers.contains_key(s)).collect();
    if let Some(first) = missing.first() {
        return Err(NftError::OutcomeUnknown {
            detail: format!(
                "no acknowledgement for {} message(s), the first being {}",
                missing.len(),
                what(*first)
            ),
        });
    }
    Ok(())
}
