//! fwharden: host firewall hardening for Linux servers.
//!
//! Data flows one way: a TOML profile is loaded and validated
//! ([`profile`]), compiled by a pure function into the backend-neutral
//! [`ruleset`] model, and every backend reads that model: [`nft`] (the
//! netlink transaction, read-back and verification), [`render`] (`nft -f`
//! text) and [`probe`] (the plan, a replica of namespaces, real packets).
//! [`audit`] sets the host's listening sockets and published ports against
//! the model, through [`ruleset::eval`].
//! [`rollback`] (the safety net around an apply) and [`cli`] sit on top;
//! [`state`] keeps the records, [`progress`] shows a long apply's phases.

pub mod audit;
pub mod cli;
pub mod compile;
pub mod containers;
pub mod emit;
pub mod exit;
pub mod netns;
pub mod nft;
pub mod observe;
pub mod probe;
pub mod profile;
pub mod progress;
pub mod render;
pub mod rollback;
pub mod ruleset;
pub mod state;
