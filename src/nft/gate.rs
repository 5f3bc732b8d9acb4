//! The ban gate: fwharden's own ban writers (`fwharden ban`, `unban`,
//! which fail2ban runs) wait while an apply is between its read of the
//! kernel and its read-back, instead of racing it.
//!
//! Why they must not race: nf_tables has one generation per network
//! namespace, and every commit moves it, a one-element ban as much as a
//! million-prefix apply. An apply proves its big sets by the generation
//! (see `verify`): "ours plus one, read at that generation" holds only if
//! nobody committed in between. A busy fail2ban (8 bans a second) made
//! every big apply's compare-and-swap fail, its re-read of the table run
//! out of patience, and the bans' own dumps fail with it: both sides lost.
//!
//! Why a gate and not a spool the apply drains: a ban that waits is in the
//! kernel when `fwharden ban` exits 0, so fail2ban's answer stays true,
//! and nothing is left to drain when an apply dies half-way. The wait is
//! short: an apply holds the gate for its read, transaction and read-back
//! (under a second for 100,000 prefixes), and a ban waits at most
//! [`BAN_WAIT`], under fail2ban's 60 s action timeout.
//!
//! The gate is a flock(2) on the network namespace's own inode
//! (`/proc/thread-self/ns/net`, nsfs): it is scoped exactly as the
//! generation is (one per network namespace), every fwharden process in
//! the namespace finds it whatever its `--run-dir`, nothing is written to
//! disk, and the kernel releases it when its holder dies. Bans take it
//! shared (they do not exclude each other), an apply exclusive.
//! `thread-self`: a thread that entered another namespace (`Netns::run_in`)
//! locks that namespace, not its process's.
//!
//! Writers fwharden does not run (CrowdSec's bouncer, `nft add element` by
//! hand) do not know the gate; an apply still copes with them as before
//! (its commit is sent again when only bans changed, and its read-back
//! reads in full when the generation moved).

use std::fs::File;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::NftError;

/// How long a ban waits for an apply to pass.
pub const BAN_WAIT: Duration = Duration::from_secs(50);

/// How long an apply waits for the bans in flight (each holds the gate for
/// one small transaction) before it goes on without the gate.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// The gate, held until dropped. `None` inside: the apply went on without
/// it (see [`BanGate::close`]).
#[must_use = "the gate opens again when this is dropped"]
pub struct BanGate {
    /// Unlocked when dropped (and by the kernel if the holder dies).
    _held: Option<Flock<File>>,
    /// This one closed the gate for an apply (counted in [`CLOSED_HERE`]).
    closed: bool,
}

std::thread_local! {
    /// How many gates this thread holds closed. Per thread, as the lock is
    /// per network namespace and a thread may have entered another one.
    static CLOSED_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether this thread holds the gate closed already: a second exclusive
/// flock from the same thread would wait on the first.
pub(super) fn closed_here() -> bool {
    CLOSED_HERE.with(|c| c.get() > 0)
}

impl Drop for BanGate {
    fn drop(&mut self) {
        if self.closed {
            CLOSED_HERE.with(|c| c.set(c.get().saturating_sub(1)));
        }
    }
}

impl BanGate {
    /// Closes the gate for an apply: waits for the bans in flight, then
    /// holds every new one back until dropped. If bans keep it open for
    /// [`APPLY_WAIT`] (or the namespace cannot be opened), the apply goes
    /// on without it: bans then race it, which the apply survives as it
    /// did before the gate, and which is no reason to refuse an apply.
    pub fn close() -> BanGate {
        let held = take(FlockArg::LockExclusiveNonblock, APPLY_WAIT).ok();
        let closed = held.is_some();
        if closed {
            CLOSED_HERE.with(|c| c.set(c.get() + 1));
        }
        BanGate {
            _held: held,
            closed,
        }
    }

    /// Passes a ban: waits while an apply holds the gate, at most
    /// [`BAN_WAIT`].
    pub(super) fn pass() -> Result<BanGate, NftError> {
        take(FlockArg::LockSharedNonblock, BAN_WAIT)
            .map(|f| BanGate {
                _held: Some(f),
                closed: false,
            })
            .map_err(|source| NftError::Io {
                op: "waiting for the apply in progress (flock on /proc/thread-self/ns/net)",
                source,
            })
    }
}

/// Polls a non-blocking flock until it is granted or `wait` has passed:
/// a blocking one could not give up, and a ban that hangs is worse than
/// one that fails with a reason.
fn take(how: FlockArg, wait: Duration) -> std::io::Result<Flock<File>> {
    let deadline = Instant::now() + wait;
    let mut file = File::open("/proc/thread-self/ns/net")?;
    let mut pause = Duration::from_millis(1);
    loop {
        match Flock::lock(file, how) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => {
                if Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "an apply held the ban gate for {} s; run `fwharden status` to see it",
                            wait.as_secs()
                        ),
                    ));
                }
                file = f;
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err((_, e)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_share_the_gate_and_an_apply_shuts_them_out() {
        let a = BanGate::pass().expect("a first ban passes");
        let b = BanGate::pass().expect("bans do not exclude each other");
        // An apply waits for the bans in flight; with them held, a
        // non-blocking exclusive lock of the same namespace is refused.
        let f = File::open("/proc/thread-self/ns/net").unwrap();
        let f = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(_) => panic!("an apply closed the gate over two bans in flight"),
            Err((f, e)) => {
                assert_eq!(e, nix::errno::Errno::EWOULDBLOCK);
                f
            }
        };
        drop((a, b));
        let held = Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .expect("the gate is free once the bans are done");
        let again = File::open("/proc/thread-self/ns/net").unwrap();
        assert!(Flock::lock(again, FlockArg::LockSharedNonblock).is_err());
        drop(held);
        // (In the same test: two tests of one process would share the gate.)
        // A thread knows it closed the gate, until it opens it again.
        assert!(!closed_here());
        let gate = BanGate::close();
        assert!(gate._held.is_some(), "nobody else holds this test's gate");
        assert!(closed_here());
        // Another thread has not closed it, whatever this one did.
        assert!(!std::thread::spawn(closed_here).join().unwrap());
        drop(gate);
        assert!(!closed_here());
    }
}
