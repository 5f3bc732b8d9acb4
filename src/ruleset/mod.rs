//! The ruleset model, what it decides for a packet ([`eval`]), and the
//! parts of it that are more than a profile's rules: the escape hatch
//! ([`hatch`]) and the ban table ([`bans`]). The compiler that builds it
//! from a profile sits above, in [`crate::compile`]: this module knows
//! nothing of profiles.

pub mod ban_guard;
pub mod bans;
pub mod eval;
pub mod hatch;
pub mod model;

pub use model::*;
