//! The lockout guard: before a ruleset is loaded over SSH, ask the ruleset
//! model whether a *new* connection from the operator's address to the SSH
//! port would still be accepted. Live sessions survive any apply
//! (established traffic is accepted first); what a bad ruleset takes away is
//! the next login.

use std::net::IpAddr;

use crate::ruleset::eval::{evaluate, Decision, Packet};
use crate::ruleset::{CtState, Hook, Protocol, Ruleset};

/// The operator's SSH connection, from the environment sshd sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshClient {
    pub client: IpAddr,
    pub server_port: u16,
    /// The local address the client connected to (SSH_CONNECTION only).
    pub server: Option<IpAddr>,
}

impl SshClient {
    /// `SSH_CONNECTION="client cport server sport"`, else
    /// `SSH_CLIENT="client cport sport"`.
    pub fn from_env() -> Option<SshClient> {
        let connection = std::env::var("SSH_CONNECTION").ok();
        let client = std::env::var("SSH_CLIENT").ok();
        SshClient::parse(connection.as_deref(), client.as_deref())
    }

    pub fn parse(connection: Option<&str>, client: Option<&str>) -> Option<SshClient> {
        if let Some(c) = connection {
            let f: Vec<&str> = c.split_whitespace().collect();
            if let [client, _, server, port] = f[..] {
                return Some(SshClient {
                    client: unmap(client.parse().ok()?),
                    server: server.parse().ok().map(unmap),
                    server_port: port.parse().ok()?,
                });
            }
        }
        let f: Vec<&str> = client?.split_whitespace().collect();
        match f[..] {
            [client, _, port] => Some(SshClient {
                client: unmap(client.parse().ok()?),
                server: None,
                server_port: port.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// sshd reports IPv4 clients of a dual-stack socket as ::ffff:a.b.c.d; the
/// kernel's input hook sees them as IPv4.
fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The interface holding `addr`, where the SSH connection arrives.
pub fn interface_of(addr: IpAddr) -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifa in addrs {
        let Some(sa) = ifa.address else { continue };
        let found = match addr {
            IpAddr::V4(a) => sa.as_sockaddr_in().is_some_and(|s| s.ip() == a),
            IpAddr::V6(a) => sa.as_sockaddr_in6().is_some_and(|s| s.ip() == a),
        };
        if found {
            return Some(ifa.interface_name);
        }
    }
    None
}

/// What the new ruleset does with a new connection from the SSH client,
/// and a sentence for the operator when it would refuse it.
pub fn check(
    ruleset: &Ruleset,
    ssh: &SshClient,
    interface: Option<String>,
) -> Result<Decision, String> {
    let packet = Packet {
        source: ssh.client,
        protocol: Protocol::Tcp,
        dport: ssh.server_port,
        interface: interface.clone(),
        state: CtState::New,
    };
    let d = evaluate(ruleset, Hook::Input, &packet);
    if d.accepted() {
        return Ok(d);
    }
    let why = match d.rule {
        Some(_) => format!("the rule \"{}\" drops it", d.comment),
        None => "no rule accepts it, and the input policy drops it".to_string(),
    };
    let on = interface
        .map(|i| format!(" arriving on {i}"))
        .unwrap_or_default();
    Err(format!(
        "profile `{}` would refuse new SSH connections from your address {} to port {}{on}: {why}. \
         Your current session would survive (established traffic is accepted first), but you could not log in again. \
         Allow SSH from your address in the profile, or pass --force if you have another way in (a console)",
        ruleset.profile, ssh.client, ssh.server_port
    ))
}

/// A ruleset with bans drops every packet of a banned source, the SSH
/// session included (see [`crate::ruleset::bans`]): an operator whose
/// address is in `banned` (the kernel's ban sets now) and in no exempt
/// group would be cut off by this apply.
pub fn check_bans(ruleset: &Ruleset, ssh: &SshClient, banned: &[IpAddr]) -> Result<(), String> {
    let Some(b) = &ruleset.bans else {
        return Ok(());
    };
    if !banned.contains(&ssh.client) || crate::ruleset::bans::exempt(b, ssh.client) {
        return Ok(());
    }
    Err(format!(
        "your address {} is banned (table inet {}), and profile `{}` enforces bans: this apply would cut your session. \
         Run `fwharden unban {}` first, or exempt a group holding your address in [bans], or pass --force if you have another way in",
        ssh.client,
        crate::ruleset::bans::BAN_TABLE,
        ruleset.profile,
        ssh.client
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_variables_and_unmaps_ipv4() {
        let c = SshClient::parse(Some("::ffff:192.0.2.7 50000 10.1.1.1 2222"), None).unwrap();
        assert_eq!(c.client, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.server_port, 2222);
        let c = SshClient::parse(None, Some("2001:db8::5 50000 22")).unwrap();
        assert_eq!((c.server, c.server_port), (None, 22));
        assert_eq!(SshClient::parse(Some("garbage"), None), None);
    }

    #[test]
    fn refuses_a_ruleset_that_drops_the_client() {
        let search = crate::profile::SearchPath {
            dirs: vec![],
            builtin: true,
        };
        let vps = crate::compile::compile(
            &crate::profile::load("vps-profile", &search)
                .profile
                .unwrap(),
        );
        let admin = SshClient::parse(Some("192.0.2.10 5 198.51.100.1 22"), None).unwrap();
        assert!(check(&vps, &admin, None).is_ok());
        let stranger = SshClient::parse(Some("203.0.113.50 5 198.51.100.1 22"), None).unwrap();
        let msg = check(&vps, &stranger, Some("eth0".into())).unwrap_err();
        assert!(
            msg.contains("203.0.113.50") && msg.contains("--force"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_an_apply_that_enforces_a_ban_of_the_operator_unless_exempt() {
        let mut r = crate::ruleset::Ruleset {
            profile: "p".into(),
            table: "fwharden".into(),
            sets: vec![],
            chains: vec![],
            bans: Some(crate::ruleset::Bans {
                timeout_secs: 60,
                size: 10,
                exempt: vec!["192.0.2.0/24".parse().unwrap()],
                exempt_groups: vec!["admin".into()],
            }),
        };
        let op = |a: &str| SshClient::parse(None, Some(&format!("{a} 5 22"))).unwrap();
        let banned: Vec<IpAddr> =
            vec!["203.0.113.5".parse().unwrap(), "192.0.2.7".parse().unwrap()];
        assert!(check_bans(&r, &op("203.0.113.5"), &banned)
            .unwrap_err()
            .contains("fwharden unban 203.0.113.5"));
        assert!(check_bans(&r, &op("192.0.2.7"), &banned).is_ok(), "exempt");
        assert!(
            check_bans(&r, &op("203.0.113.6"), &banned).is_ok(),
            "not banned"
        );
        r.bans = None;
        assert!(
            check_bans(&r, &op("203.0.113.5"), &banned).is_ok(),
            "bans off"
        );
    }
}
