//! The ruleset model and the pure compiler that builds it from a profile.

pub mod bans;
pub mod compile;
pub mod eval;
pub mod hatch;
pub mod model;

pub use compile::compile;

pub use model::*;
