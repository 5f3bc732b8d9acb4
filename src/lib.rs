//! fwharden: host firewall hardening for Linux servers.
//!
//! Data flows one way: a TOML profile is loaded and validated
//! ([`profile`]), compiled by a pure function into the backend-neutral
//! [`ruleset`] model, and every backend reads that model: [`nft`] (netlink
//! apply and read-back), [`render`] (`nft -f` text).

pub mod cli;
pub mod netns;
pub mod nft;
pub mod profile;
pub mod render;
pub mod ruleset;
