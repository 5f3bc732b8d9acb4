//! Built-in services and source groups, and the profiles shipped inside the
//! binary (the last place a profile name is looked up).

use crate::ruleset::{PortRange, Protocol};

/// A service every profile knows without defining it.
pub struct BuiltinService {
    pub name: &'static str,
    pub ports: &'static [(u16, u16)],
    pub protocols: &'static [Protocol],
    pub description: &'static str,
}

use Protocol::{Tcp, Udp};

const TCP: &[Protocol] = &[Tcp];
const UDP: &[Protocol] = &[Udp];
const BOTH: &[Protocol] = &[Tcp, Udp];

/// Sorted by name; `fwharden check --help` and the README list them.
pub const SERVICES: &[BuiltinService] = &[
    svc("dns", &[(53, 53)], BOTH, "DNS server"),
    svc("http", &[(80, 80)], TCP, "HTTP"),
    svc("http3", &[(443, 443)], UDP, "HTTP/3 (QUIC)"),
    svc("https", &[(443, 443)], TCP, "HTTPS"),
    svc("imaps", &[(993, 993)], TCP, "IMAP over TLS"),
    svc("mongodb", &[(27017, 27017)], TCP, "MongoDB"),
    svc("mysql", &[(3306, 3306)], TCP, "MySQL / MariaDB"),
    svc(
        "node-exporter",
        &[(9100, 9100)],
        TCP,
        "Prometheus node exporter",
    ),
    svc("ntp", &[(123, 123)], UDP, "NTP server"),
    svc("postgres", &[(5432, 5432)], TCP, "PostgreSQL"),
    svc("prometheus", &[(9090, 9090)], TCP, "Prometheus server"),
    svc("redis", &[(6379, 6379)], TCP, "Redis"),
    svc(
        "redis-exporter",
        &[(9121, 9121)],
        TCP,
        "Prometheus Redis exporter",
    ),
    svc("redis-sentinel", &[(26379, 26379)], TCP, "Redis Sentinel"),
    svc("smtp", &[(25, 25)], TCP, "SMTP"),
    svc("ssh", &[(22, 22)], TCP, "OpenSSH"),
    svc("submission", &[(587, 587)], TCP, "mail submission"),
    svc("wireguard", &[(51820, 51820)], UDP, "WireGuard"),
];

const fn svc(
    name: &'static str,
    ports: &'static [(u16, u16)],
    protocols: &'static [Protocol],
    description: &'static str,
) -> BuiltinService {
    BuiltinService {
        name,
        ports,
        protocols,
        description,
    }
}

impl BuiltinService {
    pub fn ranges(&self) -> Vec<PortRange> {
        self.ports
            .iter()
            .map(|&(first, last)| PortRange { first, last })
            .collect()
    }
}

pub fn service(name: &str) -> Option<&'static BuiltinService> {
    SERVICES.iter().find(|s| s.name == name)
}

/// Built-in source groups: everything, all of IPv4, all of IPv6.
pub const GROUPS: &[&str] = &["any", "any4", "any6"];

/// Profiles compiled into the binary, so `fwharden show vps-profile` works
/// before anything is installed. Files in /etc or /usr/share win over these.
pub const PROFILES: &[(&str, &str)] = &[
    ("base", include_str!("../../profiles/base.toml")),
    ("db-private", include_str!("../../profiles/db-private.toml")),
    (
        "redis-sentinel",
        include_str!("../../profiles/redis-sentinel.toml"),
    ),
    ("ssh-only", include_str!("../../profiles/ssh-only.toml")),
    (
        "vps-profile",
        include_str!("../../profiles/vps-profile.toml"),
    ),
    ("web-server", include_str!("../../profiles/web-server.toml")),
    (
        "wireguard-gateway",
        include_str!("../../profiles/wireguard-gateway.toml"),
    ),
];

pub fn profile(name: &str) -> Option<&'static str> {
    PROFILES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_sorted_and_unique() {
        for pair in SERVICES.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }
}
