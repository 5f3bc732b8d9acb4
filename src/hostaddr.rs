//! This host's own addresses (getifaddrs): the interface an SSH
//! connection arrives on, and the addresses a ban must not take.

use std::net::IpAddr;

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    pub addr: IpAddr,
    pub interface: String,
    /// The IPv4 directed broadcast address of its subnet, if it has one.
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
            Some(HostAddr {
                addr,
                broadcast: ifa.broadcast.as_ref().and_then(ip).filter(|b| b.is_ipv4()),
                interface: ifa.interface_name,
            })
        })
        .collect()
}

/// The interface holding `addr`, where the SSH connection arrives.
pub fn interface_of(addr: IpAddr) -> Option<String> {
    addresses()
        .into_iter()
        .find(|a| a.addr == addr)
        .map(|a| a.interface)
}
