//! fwharden: host firewall hardening for Linux servers.
//!
//! Data flows one way: a TOML profile is loaded and validated
//! ([`profile`]), compiled by a pure function into the backend-neutral
//! [`ruleset`] model, and every backend reads that model: [`nft`] (the
//! netlink transaction, read-back and verification), [`render`] (`nft -f`
//! text), [`emit`] (iptables-restore, ufw) and [`probe`] (the plan, a
//! replica of namespaces, real packets). [`audit`] sets the host's
//! listening sockets and published ports against the model, through
//! [`ruleset::eval`]; [`observe`] reads back what the ruleset counted and
//! logged (metrics, NFLOG). [`rollback`] (the safety net around an apply),
//! [`status`] (which gathers the kernel, the records, the audit and the
//! containers) and [`cli`] sit on top; [`state`] keeps the records,
//! [`progress`] shows a long apply's phases, and [`interlock`] keeps the
//! tests off the machine's own firewall. [`kernel`] is the port through
//! which the safety net asks nf_tables (netlink, or a kernel in memory);
//! [`open`] adds and removes temporary openings through it.
//! [`bigpages`] is the allocator, which backs big buffers with huge pages.
//! [`sshclient`] finds the operator's SSH client (the environment, else
//! the kernel's connections to sshd), which the lockout guard and the ban
//! guard ([`ruleset::ban_guard`]) keep from being cut off.
//!
//! The modules stand on floors. A module imports only modules on lower
//! floors: arrows point down, so there is no loop between modules, and a
//! test (`tests/layers.rs`) reads this table and checks every `crate::`
//! and `super::` path of src/ against it (unit tests excepted).
//!
//! | floor | modules |
//! |-------|---------|
//! | 0 | bigpages, bounded, duration, exit, hostaddr, interlock, sigpipe, term |
//! | 1 | netns, progress, ruleset |
//! | 2 | nft, profile, render, state |
//! | 3 | compile, containers, kernel |
//! | 4 | audit, emit, observe, open |
//! | 5 | probe, sshclient |
//! | 6 | rollback |
//! | 7 | status |
//! | 8 | cli |

pub mod audit;
pub mod bigpages;
pub mod bounded;
pub mod cli;
pub mod compile;
pub mod containers;
pub mod duration;
pub mod emit;
pub mod exit;
pub mod hostaddr;
pub mod interlock;
pub mod kernel;
pub mod netns;
pub mod nft;
pub mod observe;
pub mod open;
pub mod probe;
pub mod profile;
pub mod progress;
pub mod render;
pub mod rollback;
pub mod ruleset;
pub mod sigpipe;
pub mod sshclient;
pub mod state;
pub mod status;
pub mod term;
