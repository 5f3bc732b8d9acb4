//! The lockout guard: before a ruleset is loaded over SSH, ask the ruleset
//! model whether a *new* connection from the operator's address to the SSH
//! port would still be accepted. Live sessions survive any apply
//! (established traffic is accepted first); what a bad ruleset takes away is
//! the next login.

use std::net::IpAddr;

use crate::ruleset::eval::{evaluate, Decision, Packet};
use crate::ruleset::{CtState, Hook, Protocol, Ruleset};
pub use crate::sshclient::SshClient;

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

    fn client(addr: &str) -> SshClient {
        SshClient {
            client: addr.parse().unwrap(),
            server_port: 22,
            server: None,
        }
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
        let admin = client("192.0.2.10");
        assert!(check(&vps, &admin, None).is_ok());
        let stranger = client("203.0.113.50");
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
        let op = client;
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
