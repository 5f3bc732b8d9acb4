//! fwharden: host firewall hardening for Linux servers.
//!
//! Data flows one way: a TOML profile is loaded and validated
//! ([`profile`]), compiled by a pure function into the backend-neutral
//! [`ruleset`] model, and every backend reads that model: [`render`] (`nft -f`
//! text) today; the netlink apply, iptables/ufw emit and the probe plan next.

pub mod cli;
pub mod emit;
pub mod exit;
pub mod netns;
pub mod nft;
pub mod probe;
pub mod profile;
pub mod render;
pub mod rollback;
pub mod ruleset;
pub mod state;
