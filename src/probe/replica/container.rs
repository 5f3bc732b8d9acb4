//! The container behind the replica, for probes of published ports: a
//! namespace linked to the target only, and a nat table of the replica's
//! own (`inet fwhprobe-nat`, never fwharden's) that DNATs every TCP and UDP
//! connection to a link's published address to that link's address in the
//! container, on the plan's container port. The connection then crosses
//! the target's forward hook as a published Docker port does: `ct status
//! dnat`, the original port in `ct original proto-dst`, and a forwarded
//! port that differs from it.
//!
//! Replies: each link has a container address of its own, and a policy
//! rule `from CONTAINER-ADDRESS lookup TABLE` in the target sends the
//! container's replies (un-NATed by conntrack on the way) out of the link
//! the connection came in on, as the link's own address does for the host's
//! replies; the same rule lets the connection pass reverse-path filtering.
//! Neighbours on the container link are static, so neither ARP nor
//! neighbour discovery crosses it and the ruleset's ICMPv6 rules cannot
//! cut the path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};

use super::{netns_error, Link};
use crate::netns::Netns;
use crate::probe::ProbeError;

/// The container namespaces' name tag: `fwh-probectr-PID-N`.
pub(super) const TAG: &str = "probectr";
/// The target's end of the container link, and the container's.
const DEVICE: &str = "fwhctr0";
const INSIDE: &str = "c0";
/// Locally administered MACs, fixed so the neighbours can be static.
const TARGET_MAC: &str = "02:66:77:68:00:01";
const CONTAINER_MAC: &str = "02:66:77:68:00:02";
/// The target's addresses on the container link: the container's gateway.
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0xffff, 0, 0, 0, 0xfffe);
/// The replica's nat table: inet family, named so no engine's is touched.
const NAT_TABLE: &str = "fwhprobe-nat";

/// The published and container addresses of link number `n` (from 1):
/// 198.19.0.0/17 and 2001:2:0:1::/64 published, 198.19.128.0/17 and
/// 2001:2:0:2::/64 in the container (RFC 2544 and RFC 5180 ranges, as the
/// target's own).
pub(super) fn addresses(n: u16) -> (Ipv4Addr, Ipv6Addr, Ipv4Addr, Ipv6Addr) {
    let [hi, lo] = n.to_be_bytes();
    (
        Ipv4Addr::new(198, 19, hi & 0x7f, lo),
        Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, n),
        Ipv4Addr::new(198, 19, 0x80 | (hi & 0x7f), lo),
        Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, n),
    )
}

/// The container namespace and its listeners; dropped listeners first.
pub struct Container {
    tcp: Vec<TcpListener>,
    ns: Netns,
}

impl Container {
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Builds the container namespace, its link to `target`, the routes,
    /// the nat table, and a listener on `port` (TCP, and UDP sockets
    /// returned for the caller's echo thread).
    pub(super) fn build(
        target: &Netns,
        links: &[Link],
        port: u16,
    ) -> Result<(Container, Vec<UdpSocket>), ProbeError> {
        let ns = Netns::create(TAG).map_err(netns_error)?;
        let container = Container {
            tcp: Vec::new(),
            ns,
        };
        super::settings::enable_ipv6(&container.ns)?;
        let mut outside = vec![
            format!(
                "link add {DEVICE} address {TARGET_MAC} type veth peer name {INSIDE} address {CONTAINER_MAC} netns {}",
                container.ns.name()
            ),
            format!("link set {DEVICE} up"),
            format!("addr add {GATEWAY_V4}/32 dev {DEVICE}"),
            format!("addr add {GATEWAY_V6}/128 dev {DEVICE} nodad"),
        ];
        let mut rules_v6 = Vec::new();
        let mut inside = vec![format!("link set {INSIDE} up")];
        for link in links {
            let table = link.table;
            for c in [IpAddr::V4(link.container_v4), IpAddr::V6(link.container_v6)] {
                let len = if c.is_ipv4() { 32 } else { 128 };
                outside.extend([
                    format!("route add {c}/{len} dev {DEVICE}"),
                    format!("neigh add {c} lladdr {CONTAINER_MAC} dev {DEVICE} nud permanent"),
                ]);
                inside.push(match c {
                    IpAddr::V4(_) => format!("addr add {c}/32 dev {INSIDE}"),
                    IpAddr::V6(_) => format!("addr add {c}/128 dev {INSIDE} nodad"),
                });
            }
            outside.push(format!(
                "rule add from {} lookup {table}",
                link.container_v4
            ));
            outside.push(format!(
                "rule add from {} lookup {table}",
                link.published_v4
            ));
            rules_v6.push(format!(
                "rule add from {} lookup {table}",
                link.container_v6
            ));
            rules_v6.push(format!(
                "rule add from {} lookup {table}",
                link.published_v6
            ));
        }
        for gw in [IpAddr::V4(GATEWAY_V4), IpAddr::V6(GATEWAY_V6)] {
            let (len, default) = match gw {
                IpAddr::V4(_) => (32, "0.0.0.0/0"),
                IpAddr::V6(_) => (128, "::/0"),
            };
            inside.extend([
                format!("route add {gw}/{len} dev {INSIDE}"),
                format!("route add {default} via {gw} dev {INSIDE}"),
                format!("neigh add {gw} lladdr {TARGET_MAC} dev {INSIDE} nud permanent"),
            ]);
        }
        target.ip_batch(&[], &outside).map_err(netns_error)?;
        target.ip_batch(&["-6"], &rules_v6).map_err(netns_error)?;
        container.ns.ip_batch(&[], &inside).map_err(netns_error)?;
        forwarding(target)?;
        load_nat(target, &nat_text(links, port))?;
        let mut container = container;
        let (tcp, udp) = listen(&container.ns, links, port)?;
        container.tcp = tcp;
        Ok((container, udp))
    }
}

/// The target routes between its links and the container (IPv4 and, where
/// the kernel has it, IPv6).
fn forwarding(target: &Netns) -> Result<(), ProbeError> {
    let set = || -> std::io::Result<()> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        let v6 = "/proc/sys/net/ipv6/conf/all/forwarding";
        if std::path::Path::new(v6).exists() {
            std::fs::write(v6, "1")?;
        }
        Ok(())
    };
    target
        .run_in(set)
        .map_err(netns_error)?
        .map_err(|source| ProbeError::Setting {
            what: "net.ipv4.ip_forward and net.ipv6.conf.all.forwarding",
            source,
        })
}

/// The nat table, as `nft -f` text. The port is given with a protocol
/// match before it, as nft needs for a transport mapping.
fn nat_text(links: &[Link], port: u16) -> String {
    let mut rules = String::new();
    for link in links {
        for proto in ["tcp", "udp"] {
            rules.push_str(&format!(
                "        ip daddr {} meta l4proto {proto} dnat ip to {}:{port}\n",
                link.published_v4, link.container_v4
            ));
            rules.push_str(&format!(
                "        ip6 daddr {} meta l4proto {proto} dnat ip6 to [{}]:{port}\n",
                link.published_v6, link.container_v6
            ));
        }
    }
    format!(
        "table inet {NAT_TABLE} {{\n    chain prerouting {{\n        type nat hook prerouting priority dstnat; policy accept;\n{rules}    }}\n}}\n"
    )
}

/// Loads `text` with the nft program, from a thread inside the target (so
/// nft acts there), after the interlock check every replica load passes.
fn load_nat(target: &Netns, text: &str) -> Result<(), ProbeError> {
    load_text(
        target,
        &format!("its DNAT table (inet {NAT_TABLE}, `nft -f`)"),
        text,
    )
}

/// Loads `text`, which `what` names in an error, with the nft program in
/// the target.
pub(super) fn load_text(target: &Netns, what: &str, text: &str) -> Result<(), ProbeError> {
    let failed = |detail: String| ProbeError::LoadWith {
        what: what.to_string(),
        detail,
    };
    target
        .run_in(|| -> Result<(), ProbeError> {
            crate::interlock::check().map_err(|_| ProbeError::Interlock)?;
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| failed(format!("running nft: {e}")))?;
            if let Some(mut stdin) = child.stdin.take() {
                crate::sigpipe::write_all(&mut stdin, text.as_bytes())
                    .map_err(|e| failed(format!("writing to nft: {e}")))?;
            }
            let out = child
                .wait_with_output()
                .map_err(|e| failed(format!("waiting for nft: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                let stderr = String::from_utf8_lossy(&out.stderr);
                Err(failed(format!(
                    "nft exited with {}: {}",
                    out.status,
                    stderr.trim()
                )))
            }
        })
        .map_err(netns_error)?
}

/// A TCP listener on every address of the container, and a UDP socket per
/// address (so a reply leaves from the address the DNAT chose, which
/// conntrack then maps back).
fn listen(
    ns: &Netns,
    links: &[Link],
    port: u16,
) -> Result<(Vec<TcpListener>, Vec<UdpSocket>), ProbeError> {
    ns.run_in(|| -> Result<_, ProbeError> {
        let fail = |what: String| move |source| ProbeError::Listen { what, source };
        let tcp = super::listener(port).map_err(fail(format!("the container's {port}/tcp")))?;
        let mut udp = Vec::new();
        for link in links {
            for ip in [IpAddr::V4(link.container_v4), IpAddr::V6(link.container_v6)] {
                udp.push(
                    UdpSocket::bind((ip, port))
                        .map_err(fail(format!("the container's {ip} {port}/udp")))?,
                );
            }
        }
        Ok((vec![tcp], udp))
    })
    .map_err(netns_error)?
}

/// Whether the `nft` program is on PATH: without it, the replica has no
/// DNAT and the published probes are left out (the report says so). It is
/// looked for, not run: nothing here runs nft outside the replica.
pub fn have_nft() -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join("nft"))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_and_container_addresses_are_distinct_per_link() {
        let all = |n| {
            let (p4, p6, c4, c6) = addresses(n);
            [p4.into(), p6.into(), c4.into(), c6.into()]
        };
        let (a, b): ([IpAddr; 4], [IpAddr; 4]) = (all(1), all(2));
        assert_eq!(a[0], "198.19.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a[2], "198.19.128.1".parse::<IpAddr>().unwrap());
        assert_eq!(a[3], "2001:2:0:2::1".parse::<IpAddr>().unwrap());
        for x in a {
            assert!(!b.contains(&x));
            assert_ne!(x, IpAddr::V4(GATEWAY_V4));
            assert_ne!(x, IpAddr::V6(GATEWAY_V6));
        }
    }
}
