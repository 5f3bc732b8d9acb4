//! What happens when the reader of a pipe goes away.
//!
//! Rust starts every program with SIGPIPE ignored, so a write to a closed
//! pipe returns EPIPE, and `println!` turns that into a panic ("failed
//! printing to stdout: Broken pipe", exit 101): `fwharden list | head -1`
//! crashed. fwharden therefore restores the default disposition at the
//! start of `main` ([`restore_default`]): when the reader of stdout or
//! stderr goes away, the process ends quietly with SIGPIPE (status 141 in
//! a shell), as `cat` and `grep` do. Every command prints its report only
//! after its work is done (probe namespaces removed, records written), so
//! the signal cannot cut an apply or a probe in half.
//!
//! Three writes of fwharden's own must still see EPIPE as an error rather
//! than end the process, because a Drop guard (a probe's namespaces) or an
//! error report must still run after them: the `ip -batch` and `nft -f -`
//! children's stdin, and the container engine's socket. They go through
//! [`write_all`], which blocks SIGPIPE in the writing thread for the
//! length of the write (the kernel sends the signal to the thread that
//! wrote, see pipe(7) and send(2)) and takes a pending one back before
//! unblocking. Netlink and the probes' UDP/ICMP sockets are datagram
//! sockets, which never raise SIGPIPE; the TCP probes never write.
//!
//! The rollback watcher (`fwharden watch`) keeps SIGPIPE ignored: it
//! writes only to its log file, and no signal of that kind may end the
//! process that rolls a bad ruleset back.

use std::io::{self, Write};

use nix::sys::signal::{signal, SigHandler, SigSet, SigmaskHow, Signal};

/// SIGPIPE ends the process quietly (the shell's 141), as for any Unix
/// filter. Called first thing in `main`.
pub fn restore_default() {
    // SAFETY: SIG_DFL installs no handler of ours, so no code runs in signal
    // context; called from main before any other thread exists.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

/// SIGPIPE ignored again (what Rust's runtime sets up): for the rollback
/// watcher, which must outlive any reader.
pub fn ignore() {
    // SAFETY: SIG_IGN installs no handler, so no code runs in signal context.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigIgn);
    }
}

/// `w.write_all(bytes)`, where a reader that went away is the error EPIPE
/// and never the end of the process.
pub fn write_all(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let mut before = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe), Some(&mut before))
        .map_err(io::Error::from)?;
    let written = w.write_all(bytes);
    if !before.contains(Signal::SIGPIPE) {
        take_pending_sigpipe();
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
    }
    written
}

/// Takes a SIGPIPE pending on this thread (raised by the write just made),
/// so that unblocking it does not deliver it.
fn take_pending_sigpipe() {
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    // SAFETY: sigset_t is plain data that sigpending fills in; both sets
    // live in this frame for the calls.
    let pending = unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1
    };
    if !pending {
        return;
    }
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the set and the timespec are valid for the call, and a null
    // siginfo pointer is allowed. SIGPIPE is pending and blocked in this
    // thread, so the call takes it at once (a zero timeout never waits).
    unsafe {
        libc::sigtimedwait(pipe.as_ref(), std::ptr::null_mut(), &now);
    }
}
