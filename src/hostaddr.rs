//! This host's own addresses (getifaddrs): the interface an SSH
//! connection arrives on, and the addresses a ban must not take.

use std::net::IpAddr;

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    pub addr: IpAddr,
    pub interface: String,
    /// The IPv4 directed broadcast address of its subnet, if it has one
    /// (see [`directed_broadcast`]).
    pub broadcast: Option<IpAddr>,
}

/// Every address of every interface of this network namespace; empty
/// when the kernel cannot be asked.
pub fn addresses() -> Vec<HostAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let ip = |sa: &nix::sys::socket::SockaddrStorage| {
        sa.as_sockaddr_in()
            .map(|s| IpAddr::V4(s.ip()))
            .or_else(|| sa.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
    };
    addrs
        .filter_map(|ifa| {
            let addr = ip(ifa.address.as_ref()?)?;
            let mask = ifa.netmask.as_ref().and_then(ip);
            Some(HostAddr {
                addr,
                broadcast: directed_broadcast(addr, mask),
                interface: ifa.interface_name,
            })
        })
        .collect()
}

/// The subnet's all-ones host address. Computed from the netmask rather
/// than read from the interface: `ip addr add 10.0.0.1/24` without `brd +`
/// sets none, and the kernel still treats 10.0.0.255 as broadcast. /31 and
/// /32 have none (RFC 3021).
fn directed_broadcast(addr: IpAddr, mask: Option<IpAddr>) -> Option<IpAddr> {
    let (IpAddr::V4(a), Some(IpAddr::V4(m))) = (addr, mask) else {
        return None;
    };
    let (a, m) = (u32::from(a), u32::from(m));
    (m.leading_ones() < 31).then(|| IpAddr::V4((a | !m).into()))
}

/// The interface holding `addr`, where the SSH connection arrives.
pub fn interface_of(addr: IpAddr) -> Option<String> {
    addresses()
        .into_iter()
        .find(|a| a.addr == addr)
        .map(|a| a.interface)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broadcast_of_a_subnet_and_none_for_31_and_32() {
        let b = |a: &str, m: &str| directed_broadcast(a.parse().unwrap(), m.parse().ok());
        assert_eq!(b("10.98.0.1", "255.255.255.0"), "10.98.0.255".parse().ok());
        assert_eq!(b("192.0.2.9", "255.255.255.248"), "192.0.2.15".parse().ok());
        assert_eq!(b("10.0.0.0", "255.255.255.254"), None);
        assert_eq!(b("10.0.0.1", "255.255.255.255"), None);
        assert_eq!(b("2001:db8::1", "ffff:ffff::"), None);
        assert_eq!(b("10.0.0.1", "x"), None);
    }
}
