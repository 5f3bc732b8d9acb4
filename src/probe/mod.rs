//! Self-probes: proves a [`Ruleset`](crate::ruleset::Ruleset) with real
//! packets. The plan ([`plan`]) says from the model alone what every probe
//! must see; the replica ([`replica`]) is a set of network namespaces this
//! process creates, holding the same ruleset loaded through the same
//! netlink code as `apply`; [`send`] sends the packets and classifies what
//! comes back; [`report`] compares.
//!
//! Never fails open: a probe that errors is inconclusive, and an
//! inconclusive probe fails the run like a mismatch.

pub mod plan;
