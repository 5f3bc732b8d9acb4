//! The ban guard: addresses `fwharden ban` (and fail2ban through it)
//! refuses. A ban drops everything from its source, established traffic
//! included ([`super::bans`]), so banning the operator's SSH client cuts
//! the live session; this host's own addresses, loopback, broadcast and
//! multicast are no attacker's source, and a ban of them breaks the host.
//! Pure: what the host and the operator are comes in [`Context`].

use std::net::IpAddr;

use ipnet::IpNet;

/// Why an address must not be banned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 127.0.0.0/8, ::1: this host talking to itself.
    Loopback,
    /// 0.0.0.0, ::: no packet comes from it.
    Unspecified,
    Multicast,
    /// 255.255.255.255, or the directed broadcast of a local subnet.
    Broadcast,
    /// An address of one of this host's interfaces.
    ThisHost {
        interface: String,
    },
    /// The SSH client of the operator running the command.
    Operator {
        how: String,
    },
    /// In a group the applied profile exempts from bans.
    Exempt {
        net: IpNet,
    },
}

/// What the host and the operator are, for [`check`].
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The operator's SSH client addresses, and how they were found.
    pub operator: Vec<IpAddr>,
    pub operator_how: String,
    /// This host's addresses with their interfaces.
    pub host: Vec<(IpAddr, String)>,
    /// The directed broadcast addresses of the local subnets.
    pub broadcasts: Vec<IpAddr>,
    /// The applied profile's exempt prefixes.
    pub exempt: Vec<IpNet>,
}

impl Refusal {
    /// Whether `--force` may override it. Loopback and unspecified never:
    /// no attacker comes from them, and a ban of loopback breaks every
    /// local service.
    pub fn overridable(&self) -> bool {
        !matches!(self, Refusal::Loopback | Refusal::Unspecified)
    }

    /// Why `addr` is not banned, for people, with the way out.
    pub fn describe(&self, addr: IpAddr) -> String {
        let why = match self {
            Refusal::Loopback => "it is a loopback address: this host talking to itself, never an attacker; a ban would break local services".to_string(),
            Refusal::Unspecified => "it is the unspecified address: no packet comes from it".to_string(),
            Refusal::Multicast => "it is a multicast address: no connection comes from it, and a ban would drop traffic this host's protocols need".to_string(),
            Refusal::Broadcast => "it is a broadcast address, not a host".to_string(),
            Refusal::ThisHost { interface } => format!("it is an address of this host (interface {interface}): a ban would drop traffic this host sends itself"),
            Refusal::Operator { how } => format!("it is your SSH client ({how}): a ban drops established traffic too, so your session would die and you could not log in again"),
            Refusal::Exempt { net } => format!("it is in {net}, which the applied profile exempts from bans: the ban table passes it, so a ban would drop nothing"),
        };
        let way = if self.overridable() {
            "pass --force to ban it anyway"
        } else {
            "--force does not override this"
        };
        format!("{addr}: {why}; {way}")
    }
}

/// The address-only refusals.
pub fn classify(addr: IpAddr) -> Option<Refusal> {
    let v4 = match addr {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    if addr.is_loopback() || v4.is_some_and(|a| a.is_loopback()) {
        return Some(Refusal::Loopback);
    }
    if addr.is_unspecified() || v4.is_some_and(|a| a.is_unspecified()) {
        return Some(Refusal::Unspecified);
    }
    if addr.is_multicast() || v4.is_some_and(|a| a.is_multicast()) {
        return Some(Refusal::Multicast);
    }
    if v4.is_some_and(|a| a.is_broadcast()) {
        return Some(Refusal::Broadcast);
    }
    None
}

/// Every reason not to ban `addr`, the ones `--force` cannot override
/// first.
pub fn check(addr: IpAddr, ctx: &Context) -> Vec<Refusal> {
    let mut out: Vec<Refusal> = classify(addr).into_iter().collect();
    if ctx.broadcasts.contains(&addr) {
        out.push(Refusal::Broadcast);
    }
    if let Some((_, interface)) = ctx.host.iter().find(|(a, _)| *a == addr) {
        out.push(Refusal::ThisHost {
            interface: interface.clone(),
        });
    }
    if ctx.operator.contains(&addr) {
        out.push(Refusal::Operator {
            how: ctx.operator_how.clone(),
        });
    }
    if let Some(net) = ctx.exempt.iter().find(|n| n.contains(&addr)) {
        out.push(Refusal::Exempt { net: *net });
    }
    out.dedup();
    out.sort_by_key(Refusal::overridable);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_no_attacker_comes_from() {
        for (s, want) in [
            ("127.0.0.1", Refusal::Loopback),
            ("127.9.9.9", Refusal::Loopback),
            ("::1", Refusal::Loopback),
            ("::ffff:127.0.0.1", Refusal::Loopback),
            ("0.0.0.0", Refusal::Unspecified),
            ("::", Refusal::Unspecified),
            ("224.0.0.1", Refusal::Multicast),
            ("ff02::1", Refusal::Multicast),
            ("255.255.255.255", Refusal::Broadcast),
        ] {
            assert_eq!(classify(a(s)), Some(want), "{s}");
        }
        assert_eq!(classify(a("203.0.113.5")), None);
        assert_eq!(classify(a("2001:db8::5")), None);
    }

    #[test]
    fn force_overrides_all_but_loopback_and_unspecified() {
        assert!(!Refusal::Loopback.overridable());
        assert!(!Refusal::Unspecified.overridable());
        for r in [
            Refusal::Multicast,
            Refusal::Broadcast,
            Refusal::ThisHost {
                interface: "eth0".into(),
            },
            Refusal::Operator { how: "x".into() },
        ] {
            assert!(r.overridable(), "{r:?}");
            assert!(r.describe(a("192.0.2.1")).contains("--force"));
        }
        assert!(Refusal::Loopback
            .describe(a("127.0.0.1"))
            .contains("--force does not override"));
    }

    #[test]
    fn the_host_the_operator_and_exempt_groups_from_the_context() {
        let ctx = Context {
            operator: vec![a("198.51.100.7")],
            operator_how: "from SSH_CONNECTION".into(),
            host: vec![(a("10.0.0.1"), "eth0".into())],
            broadcasts: vec![a("10.0.0.255")],
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
        };
        assert_eq!(
            check(a("10.0.0.1"), &ctx),
            [Refusal::ThisHost {
                interface: "eth0".into()
            }]
        );
        assert_eq!(check(a("10.0.0.255"), &ctx), [Refusal::Broadcast]);
        assert!(matches!(
            check(a("198.51.100.7"), &ctx)[..],
            [Refusal::Operator { .. }]
        ));
        assert!(matches!(
            check(a("192.0.2.9"), &ctx)[..],
            [Refusal::Exempt { .. }]
        ));
        assert!(check(a("203.0.113.5"), &ctx).is_empty());
        // Loopback held by lo is refused as loopback first: no --force.
        let lo = Context {
            host: vec![(a("127.0.0.1"), "lo".into())],
            ..ctx
        };
        assert!(!check(a("127.0.0.1"), &lo)[0].overridable());
    }
}
