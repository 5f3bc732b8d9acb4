//! The other programs' chains, read-only: the base chains of every table
//! but fwharden's (which `status` lists, since they may drop what fwharden
//! accepts) and every chain's name (how container engines are recognised).

use nftnl::nftnl_sys::{self as sys, libc};

use crate::ruleset::bans::BAN_TABLE;
use crate::ruleset::{Policy, TABLE_NAME};

use super::super::batch::FAMILY;
use super::super::socket::Socket;
use super::super::{obj, BaseChain, NftError};
use super::{kernel, parse_as, DUMP};

fn family_name(f: u32) -> &'static str {
    match f as i32 {
        libc::NFPROTO_INET => "inet",
        libc::NFPROTO_IPV4 => "ip",
        libc::NFPROTO_IPV6 => "ip6",
        libc::NFPROTO_ARP => "arp",
        libc::NFPROTO_BRIDGE => "bridge",
        libc::NFPROTO_NETDEV => "netdev",
        _ => "unknown",
    }
}

fn hook_name(family: u32, hook: u32) -> String {
    let names: &[&str] = match family as i32 {
        libc::NFPROTO_NETDEV => &["ingress", "egress"],
        libc::NFPROTO_ARP => &["input", "output", "forward"],
        _ => &[
            "prerouting",
            "input",
            "forward",
            "output",
            "postrouting",
            "ingress",
        ],
    };
    names
        .get(hook as usize)
        .map_or_else(|| format!("hook {hook}"), |n| n.to_string())
}

/// Every chain of every table and family, parsed (read-only; a chain that
/// does not parse is left out).
fn every_chain(sock: &mut Socket) -> Result<Vec<obj::Chain>, NftError> {
    let replies = sock
        .request(
            libc::NFT_MSG_GETCHAIN as u16,
            libc::NFPROTO_UNSPEC as u16,
            DUMP,
            |_| {},
        )
        .map_err(|e| kernel("listing chains", e))?;
    Ok(replies
        .iter()
        .filter_map(|m| parse_as!(m, Chain, nftnl_chain_nlmsg_parse))
        .collect())
}

/// Every chain (base or not) of every table but fwharden's, as
/// (family, table, chain), read-only: container engines are recognised by
/// their chain names (`DOCKER-USER` is a regular chain).
pub fn chain_names(sock: &mut Socket) -> Result<Vec<(String, String, String)>, NftError> {
    let mut out = Vec::new();
    for c in every_chain(sock)? {
        let family = c.get_u32(sys::NFTNL_CHAIN_FAMILY);
        let table = c.get_str(sys::NFTNL_CHAIN_TABLE);
        if family == u32::from(FAMILY) && table == TABLE_NAME {
            continue;
        }
        out.push((
            family_name(family).to_string(),
            table,
            c.get_str(sys::NFTNL_CHAIN_NAME),
        ));
    }
    Ok(out)
}

/// Base chains of every table but fwharden's, read-only.
pub fn base_chains(sock: &mut Socket) -> Result<Vec<BaseChain>, NftError> {
    let mut out = Vec::new();
    for c in every_chain(sock)? {
        let family = c.get_u32(sys::NFTNL_CHAIN_FAMILY);
        let table = c.get_str(sys::NFTNL_CHAIN_TABLE);
        if !c.is_set(sys::NFTNL_CHAIN_HOOKNUM)
            || (family == u32::from(FAMILY) && (table == TABLE_NAME || table == BAN_TABLE))
        {
            continue;
        }
        let policy = c.is_set(sys::NFTNL_CHAIN_POLICY).then(|| {
            match c.get_u32(sys::NFTNL_CHAIN_POLICY) as i32 {
                libc::NF_ACCEPT => Policy::Accept,
                _ => Policy::Drop,
            }
        });
        out.push(BaseChain {
            family: family_name(family).into(),
            table,
            chain: c.get_str(sys::NFTNL_CHAIN_NAME),
            hook: hook_name(family, c.get_u32(sys::NFTNL_CHAIN_HOOKNUM)),
            priority: c.get_u32(sys::NFTNL_CHAIN_PRIO) as i32,
            policy,
        });
    }
    Ok(out)
}
