//! Self-probes: proves a [`Ruleset`] with real packets. The plan ([`plan`])
//! says from the model alone what every probe must see; the replica
//! ([`replica`]) is a set of network namespaces this process creates,
//! holding the same ruleset loaded through the same netlink code as
//! `apply`; [`send`] sends the packets and classifies what comes back;
//! [`report`] compares.
//!
//! Never fails open: a probe that errors is inconclusive, and an
//! inconclusive probe fails the run like a mismatch.

pub mod plan;
pub mod replica;
pub mod report;
pub mod scan;
pub mod send;

use std::time::{Duration, Instant};

use thiserror::Error;

use crate::netns::NetnsError;
use crate::nft::NftError;
use crate::ruleset::{Family, Ruleset};

pub use plan::{Destination, Outcome, Plan, Service};
pub use report::{Report, Row, Status};

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("no probe replica here: {0}")]
    Unavailable(#[source] NetnsError),
    #[error("building the probe replica failed: {0}")]
    Replica(#[source] NetnsError),
    #[error("loading the ruleset into the probe replica failed: {0}")]
    Load(#[source] NftError),
    #[error("loading the probe replica with {what} failed: {detail}")]
    LoadWith { what: String, detail: String },
    #[error("opening the probe replica's listener on {what} failed: {source}")]
    Listen {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting {what} in the probe replica failed: {source}")]
    Setting {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for probe answers failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error("the probe plan names {what}, which the replica does not have")]
    Plan { what: String },
    #[error(
        "refusing to load the replica: this is the network namespace {} names",
        crate::interlock::FORBID_ENV
    )]
    Interlock,
}

/// How long a probe waits for an answer before it counts as filtered.
/// Replica links are veths between namespaces of one kernel: an answer
/// takes well under a millisecond, so this is margin for a busy machine.
pub const TIMEOUT: Duration = Duration::from_millis(400);

/// Sets of more prefixes than this are thinned in the replica.
const THIN_OVER: usize = crate::nft::FULL_READ_MAX;

/// `ruleset` with each big prefix set cut down to the prefixes holding a
/// probe's source, and its first and last.
///
/// A probe's verdict depends on a set only through whether the set holds
/// the probe's source, and a subset that keeps every prefix holding a
/// source answers that as the whole set does: the expectations, computed
/// from the whole set, hold for the replica too. Loading a million
/// prefixes into the replica would cost as much as the apply itself, and
/// prove nothing the apply's own verification of the host does not: there
/// the kernel is shown to hold the whole set (`nft::verify`).
fn thinned(ruleset: &Ruleset, sources: &std::collections::BTreeSet<std::net::IpAddr>) -> Ruleset {
    let mut out = ruleset.clone();
    for set in &mut out.sets {
        let crate::ruleset::SetKind::Prefixes(nets) = &mut set.kind else {
            continue;
        };
        if nets.len() <= THIN_OVER {
            continue;
        }
        let last = nets.len() - 1;
        let mut i = 0;
        nets.retain(|n| {
            let keep = i == 0 || i == last || sources.iter().any(|a| n.contains(a));
            i += 1;
            keep
        });
    }
    out
}

/// Proves `ruleset`: builds its plan and a replica holding it, sends every
/// probe and compares. The replica is gone when this returns.
pub fn prove(ruleset: &Ruleset, timeout: Duration) -> Result<Report, ProbeError> {
    prove_loaded(ruleset, ruleset, timeout)
}

/// Like [`prove`], with expectations from `expected` but `loaded` in the
/// replica's kernel: how the tests show that a broken ruleset is caught by
/// the kernel's answers, not by the model compared with itself.
pub fn prove_loaded(
    expected: &Ruleset,
    loaded: &Ruleset,
    timeout: Duration,
) -> Result<Report, ProbeError> {
    let start = Instant::now();
    let (plan, notes) = planned(expected);
    let loaded = thinned(loaded, &plan.sources());
    run_plan(plan, replica::Loader::Nft(loaded), notes, timeout, start)
}

/// Like [`prove`], with the replica's firewall loaded by `loader` instead
/// of the ruleset itself: the expectations still come from `expected`.
/// How the emitted iptables files are shown to do what the ruleset does.
pub fn prove_with(
    expected: &Ruleset,
    loader: replica::Loader,
    timeout: Duration,
) -> Result<Report, ProbeError> {
    let start = Instant::now();
    let (plan, notes) = planned(expected);
    run_plan(plan, loader, notes, timeout, start)
}

/// The plan of `expected`, and the notes on what it had to leave out.
fn planned(expected: &Ruleset) -> (Plan, Vec<String>) {
    let mut plan = plan::build(expected);
    let mut notes = Vec::new();
    // Booted with ipv6.disable=1, the kernel has no IPv6 at all: no IPv6
    // packet can reach this host, and the replica could not send one.
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        let left_out = plan.without(Family::Ipv6);
        notes.push(format!(
            "{left_out} IPv6 probes left out: this kernel has no IPv6 (booted with ipv6.disable=1), so no IPv6 packet reaches it"
        ));
    }
    // The replica DNATs published ports with a nat table the nft program
    // loads; without nft they cannot be proven, and the report says so
    // rather than infer their verdict from the model.
    if plan.has_published() && !replica::have_nft() {
        let left_out = plan.without_published();
        notes.push(format!(
            "{left_out} probes of published container ports left out, with a container's own connections out: the replica's DNAT needs the nft program (Debian package nftables)"
        ));
    }
    (plan, notes)
}

fn run_plan(
    plan: Plan,
    loader: replica::Loader,
    notes: Vec<String>,
    timeout: Duration,
    start: Instant,
) -> Result<Report, ProbeError> {
    let observed = {
        let replica = replica::Replica::build_with(&plan, loader)?;
        replica.run(&plan, timeout)?
    };
    let mut report = Report::compare(&plan, &observed, start.elapsed());
    report.notes = notes;
    Ok(report)
}
