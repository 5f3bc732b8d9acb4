//! The ruleset model and the pure compiler that builds it from a profile.

pub mod model;

pub use model::*;
