//! Container engines on this host, and whether the ruleset covers the ports
//! they publish.
//!
//! Docker and Podman publish a port by DNAT in prerouting, so the
//! connection is forwarded and never meets the input chain: a profile
//! without the `containers` chain (`[defaults] containers = "ignore"`)
//! leaves those ports open whatever it says. `status` and `apply` detect
//! the engines from what they leave in the kernel (read-only): their chains
//! (`DOCKER`, `DOCKER-USER` through iptables-nft; netavark's table and
//! `NETAVARK_*` chains; CNI's `CNI-*`) and their bridges (docker0, podman0,
//! cni-podman0), in the current network namespace.

use serde::Serialize;

use crate::nft::{self, NftError};
use crate::ruleset::Ruleset;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Docker,
    Podman,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Docker => "Docker",
            EngineKind::Podman => "Podman",
        }
    }
}

/// An engine found, with what gave it away (`table ip nat chain DOCKER`,
/// `bridge docker0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    pub engine: EngineKind,
    pub evidence: Vec<String>,
}

/// Which engine a chain belongs to, by its table and name.
fn engine_of_chain(table: &str, chain: &str) -> Option<EngineKind> {
    if chain == "DOCKER" || chain.starts_with("DOCKER-") {
        Some(EngineKind::Docker)
    } else if table == "netavark" || chain.starts_with("NETAVARK") || chain.starts_with("CNI-") {
        Some(EngineKind::Podman)
    } else {
        None
    }
}

const BRIDGES: [(&str, EngineKind); 3] = [
    ("docker0", EngineKind::Docker),
    ("podman0", EngineKind::Podman),
    ("cni-podman0", EngineKind::Podman),
];

/// The engines found from `chains` (family, table, chain) and the bridges
/// for which `bridge_exists` is true. Pure, for the tests.
pub fn detect_from(
    chains: &[(String, String, String)],
    bridge_exists: impl Fn(&str) -> bool,
) -> Vec<Detected> {
    let mut found: Vec<Detected> = Vec::new();
    let mut note =
        |engine: EngineKind, what: String| match found.iter_mut().find(|d| d.engine == engine) {
            Some(d) => d.evidence.push(what),
            None => found.push(Detected {
                engine,
                evidence: vec![what],
            }),
        };
    for (family, table, chain) in chains {
        if let Some(e) = engine_of_chain(table, chain) {
            note(e, format!("table {family} {table} chain {chain}"));
        }
    }
    for (bridge, e) in BRIDGES {
        if bridge_exists(bridge) {
            note(e, format!("bridge {bridge}"));
        }
    }
    found.sort_by_key(|d| d.engine as u8);
    found
}

/// The engines in the current network namespace (read-only).
pub fn detect() -> Result<Vec<Detected>, NftError> {
    let chains = nft::list_chain_names()?;
    // if_nametoindex asks the kernel of the calling thread's network
    // namespace, unlike /sys/class/net, which shows the namespace /sys was
    // mounted in.
    Ok(detect_from(&chains, |name| {
        nix::net::if_::if_nametoindex(name).is_ok()
    }))
}

/// What to tell the operator when engines are present and `ruleset` (the
/// one loaded or about to be; `None`: no fwharden table) leaves their
/// published ports to them.
pub fn uncovered_warning(detected: &[Detected], ruleset: Option<&Ruleset>) -> Option<String> {
    if detected.is_empty() || ruleset.is_some_and(|r| r.chain("containers").is_some()) {
        return None;
    }
    let engines: Vec<String> = detected
        .iter()
        .map(|d| format!("{} ({})", d.engine.name(), d.evidence.join(", ")))
        .collect();
    let whose = match ruleset {
        Some(r) => format!(
            "profile {} leaves them to the engine ([defaults] containers = \"ignore\")",
            r.profile
        ),
        None => "no fwharden table is loaded".to_string(),
    };
    Some(format!(
        "{} here: ports its containers publish are DNAT'd and forwarded, never seen by the input chain, and {whose}; \
         a published port is open to whoever the engine lets in, whatever the profile says. \
         Set containers = \"filter\" under [defaults] to hold published ports to the profile's rules",
        engines.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        list.iter()
            .map(|(f, t, c)| (f.to_string(), t.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn docker_and_podman_are_told_apart_by_chains_and_bridges() {
        let c = chains(&[
            ("ip", "nat", "PREROUTING"),
            ("ip", "filter", "DOCKER-USER"),
            ("inet", "netavark", "NETAVARK-HOSTPORT-DNAT"),
            ("inet", "other", "input"),
        ]);
        let d = detect_from(&c, |b| b == "docker0");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].engine, EngineKind::Docker);
        assert_eq!(
            d[0].evidence,
            ["table ip filter chain DOCKER-USER", "bridge docker0"]
        );
        assert_eq!(d[1].engine, EngineKind::Podman);
        assert!(detect_from(&chains(&[("ip", "nat", "PREROUTING")]), |_| false).is_empty());
    }

    #[test]
    fn only_a_ruleset_without_the_containers_chain_is_warned_about() {
        let docker = detect_from(&[], |b| b == "docker0");
        let mut r = Ruleset {
            profile: "p".into(),
            table: "fwharden".into(),
            sets: vec![],
            chains: vec![],
            bans: None,
        };
        let w = uncovered_warning(&docker, Some(&r)).unwrap();
        assert!(
            w.contains("Docker (bridge docker0)") && w.contains("containers = \"filter\""),
            "{w}"
        );
        assert!(uncovered_warning(&docker, None)
            .unwrap()
            .contains("no fwharden table"));
        assert!(uncovered_warning(&[], Some(&r)).is_none());
        r.chains.push(crate::ruleset::Chain {
            name: "containers".into(),
            hook: crate::ruleset::Hook::Forward,
            priority: -10,
            policy: crate::ruleset::Policy::Accept,
            rules: vec![],
        });
        assert!(uncovered_warning(&docker, Some(&r)).is_none());
    }
}
