//! The ruleset model, what it decides for a packet ([`eval`]), and the
//! parts of it that are more than a profile's rules: the escape hatch
//! ([`hatch`]) and the ban table ([`bans`]); and what stands for what a
//! rule matches ([`representative`]), for the probe plan and the audit. The compiler that builds it
//! from a profile sits above, in [`crate::compile`]: this module knows
//! nothing of profiles.

pub mod ban_guard;
pub mod bans;
pub mod describe;
pub mod eval;
pub mod hatch;
pub mod model;
pub mod openings;
pub mod packed;
pub mod reach;
pub mod representative;

pub use model::*;
