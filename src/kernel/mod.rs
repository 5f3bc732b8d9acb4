//! The kernel port: what the safety net (apply, confirm, rollback, restore,
//! the overdue path) asks of nf_tables, as one trait.
//!
//! [`Netlink`] answers with the real kernel through [`crate::nft`];
//! [`memory::Memory`] answers from a model held in memory, with a
//! generation counter and a script of faults, so that every path the real
//! kernel rarely takes (a generation that moves between read and commit, a
//! commit whose outcome is unknown, a read-back that differs, a refused
//! removal, a rollback that fails) can be driven on purpose, without root.
//!
//! The trait mirrors the kernel's own contract, which the in-memory
//! implementation must keep:
//! - every committed transaction moves the one generation by exactly one
//!   (nf_tables_commit), a refused one moves nothing;
//! - a commit "at generation g" is refused with [`NftError::Raced`] when the
//!   generation is no longer g (NFNL_BATCH_GENID);
//! - a transaction goes in whole or not at all; only
//!   [`NftError::OutcomeUnknown`] leaves the caller not knowing which.

pub mod memory;

use ipnet::IpNet;

use crate::nft::{self, ApplyReport, BanState, Check, NftError};
use crate::ruleset::openings::{Opening, Port};
use crate::ruleset::Ruleset;

/// What the orchestration asks of nf_tables. Every method is one
/// conversation with the kernel; none keeps state between calls.
pub trait Kernel {
    /// Whether this is a kernel fwharden must never change: the test
    /// harness's own network namespace (see [`crate::interlock`]).
    fn forbidden(&self) -> bool;
    /// The ruleset generation, which every committed transaction moves.
    fn generation(&self) -> Result<u32, NftError>;
    /// Table `inet fwharden` as a model, `None` when there is none.
    fn read_table(&self) -> Result<Option<Ruleset>, NftError>;
    /// Like [`Kernel::read_table`], with the generation it was read at.
    fn read_table_at(&self) -> Result<(u32, Option<Ruleset>), NftError>;
    /// Replaces the table with `ruleset` in one transaction, only while the
    /// generation is still `generation` when one is given.
    fn apply_at(&self, ruleset: &Ruleset, generation: Option<u32>)
        -> Result<ApplyReport, NftError>;
    /// Brings the table from `old` to `new` by set elements alone, at
    /// `generation`.
    fn apply_delta(
        &self,
        old: &Ruleset,
        new: &Ruleset,
        generation: u32,
    ) -> Result<ApplyReport, NftError>;
    /// Whether the kernel holds `expected` right after the commit `report`
    /// describes.
    fn verify(&self, expected: &Ruleset, report: &ApplyReport) -> Result<Check, NftError>;
    /// Removes table `inet fwharden` (and disarms the ban chains).
    fn remove_table(&self) -> Result<(), NftError>;
    /// The ban table, `None` when there is none.
    fn ban_state(&self) -> Result<Option<BanState>, NftError>;
    /// The openings (`fwharden open`) the kernel holds, `None` when table
    /// `inet fwharden` has no opening sets.
    fn openings(&self) -> Result<Option<Vec<Opening>>, NftError>;
    /// Deletes the openings `delete`, then adds `add` (each with its
    /// timeout in ms), in one transaction that no apply runs beside.
    fn change_openings(
        &self,
        delete: &[(IpNet, Port)],
        add: &[(IpNet, Port, u64)],
    ) -> Result<(), NftError>;
    /// Holds fwharden's own bans back until the returned guard is dropped,
    /// so that they do not move the generation under an apply's read,
    /// commit and read-back (see [`nft::BanGate`]); `None` where there is
    /// nothing to hold back.
    fn hold_bans(&self) -> Option<nft::BanGate>;
    /// Waits before attempt `attempt + 1` of a rollback that failed: a
    /// busy kernel or a concurrent writer gets time to finish. An
    /// in-memory kernel has nobody to wait for.
    fn backoff(&self, attempt: u32);
}

/// The machine's nf_tables, over netlink.
#[derive(Debug, Clone, Copy, Default)]
pub struct Netlink;

impl Kernel for Netlink {
    fn forbidden(&self) -> bool {
        crate::interlock::check().is_err()
    }
    fn generation(&self) -> Result<u32, NftError> {
        nft::generation()
    }
    fn read_table(&self) -> Result<Option<Ruleset>, NftError> {
        nft::read_table()
    }
    fn read_table_at(&self) -> Result<(u32, Option<Ruleset>), NftError> {
        nft::read_table_at()
    }
    fn apply_at(
        &self,
        ruleset: &Ruleset,
        generation: Option<u32>,
    ) -> Result<ApplyReport, NftError> {
        nft::apply_at(ruleset, generation)
    }
    fn apply_delta(
        &self,
        old: &Ruleset,
        new: &Ruleset,
        generation: u32,
    ) -> Result<ApplyReport, NftError> {
        nft::apply_delta(old, new, generation)
    }
    fn verify(&self, expected: &Ruleset, report: &ApplyReport) -> Result<Check, NftError> {
        nft::verify(expected, report)
    }
    fn remove_table(&self) -> Result<(), NftError> {
        nft::remove_table()
    }
    fn ban_state(&self) -> Result<Option<BanState>, NftError> {
        nft::ban_state()
    }
    fn openings(&self) -> Result<Option<Vec<Opening>>, NftError> {
        nft::openings()
    }
    fn change_openings(
        &self,
        delete: &[(IpNet, Port)],
        add: &[(IpNet, Port, u64)],
    ) -> Result<(), NftError> {
        nft::change_openings(delete, add)
    }
    fn hold_bans(&self) -> Option<nft::BanGate> {
        Some(nft::BanGate::close())
    }
    fn backoff(&self, attempt: u32) {
        std::thread::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)));
    }
}
