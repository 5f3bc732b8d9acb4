//! The kernel settings of the replica's namespaces: what a new namespace
//! has otherwise that would make a probe read what the kernel does, not
//! what the ruleset decides. Each is written from a thread inside the
//! namespace, so only that namespace's value changes.

use super::netns_error;
use crate::netns::Netns;
use crate::probe::ProbeError;

/// One setting, written inside `ns`.
fn write(ns: &Netns, what: &'static str, path: &str, value: &str) -> Result<(), ProbeError> {
    ns.run_in(|| std::fs::write(path, value))
        .map_err(netns_error)?
        .map_err(|source| ProbeError::Setting { what, source })
}

/// The target namespace, which holds the ruleset.
pub(super) fn target(ns: &Netns) -> Result<(), ProbeError> {
    // The kernel rate-limits the ICMP errors a `reject` sends, per
    // destination and in all: a plan sends many probes at once from a few
    // sources, so rejected ports would read as filtered past the first
    // few. The replica proves the ruleset, not that limit: its target
    // rate-limits no ICMP type (a mask of type 0 alone leaves every type
    // that is sent unlimited).
    write(
        ns,
        "net.ipv4.icmp_ratemask of the target namespace",
        "/proc/sys/net/ipv4/icmp_ratemask",
        "0",
    )?;
    write(
        ns,
        "net.ipv6.icmp.ratemask of the target namespace",
        "/proc/sys/net/ipv6/icmp/ratemask",
        "0",
    )?;
    // The target routes by source address only (a table per link), so an
    // ICMP error it sends for a forwarded packet (a reject of the
    // containers chain) needs the inbound link's address as its source to
    // find its way back; by default it would have none, and no route.
    write(
        ns,
        "net.ipv4.icmp_errors_use_inbound_ifaddr of the target namespace",
        "/proc/sys/net/ipv4/icmp_errors_use_inbound_ifaddr",
        "1",
    )
}

/// A peer namespace, which sends the probes.
pub(super) fn peer(ns: &Netns) -> Result<(), ProbeError> {
    // Echo requests go out of unprivileged ICMP sockets, which each
    // namespace allows to no group until told (net/ipv4/ping.c).
    write(
        ns,
        "net.ipv4.ping_group_range of a peer namespace",
        "/proc/sys/net/ipv4/ping_group_range",
        "0 2147483647",
    )
}

/// A new namespace takes IPv6 settings from the machine's own when
/// `net.core.devconf_inherit_init_net` says so, and a host may have IPv6
/// disabled on its interfaces; the replica's interfaces need it on. (A
/// kernel without IPv6 at all has no such setting: the probe then leaves
/// IPv6 out, see `prove_loaded`.)
pub(super) fn enable_ipv6(ns: &Netns) -> Result<(), ProbeError> {
    let set = || -> std::io::Result<()> {
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            if std::path::Path::new(&path).exists() {
                std::fs::write(path, "0")?;
            }
        }
        Ok(())
    };
    ns.run_in(set)
        .map_err(netns_error)?
        .map_err(|source| ProbeError::Setting {
            what: "net.ipv6.conf.*.disable_ipv6",
            source,
        })
}
