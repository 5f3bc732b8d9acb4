//! The `containers` chain: the profile's deny and allow rules again, on
//! the forward hook, for connections to published container ports.

use super::*;

impl Compiler<'_> {
    /// Published container ports: Docker and Podman DNAT them in prerouting
    /// and forward them to the container, so they never reach `input`. This
    /// chain gives them the profile's deny and allow rules, matched by the
    /// port the client connected to (`ct original proto-dst`), and drops a
    /// DNAT'd connection no rule allows when input's policy is drop.
    ///
    /// Its policy is accept and every rule but the first needs `ct status
    /// dnat`, so routing that is not DNAT'd (container-initiated traffic, a
    /// VPN gateway) is left to the `forward` chain and the engine's own.
    /// The first rule accepts established and related traffic: the replies
    /// of a published connection are DNAT'd too (same conntrack entry) and
    /// come from the container's address, which no source rule names.
    /// A per-source `limit` uses the same meter as in input: a source's new
    /// connections to the host and to its published ports count together.
    pub(super) fn containers_chain(&mut self) -> Option<Chain> {
        if self.defaults().containers == ContainerPolicy::Ignore {
            return None;
        }
        let mut rules = vec![rule(
            vec![Match::CtState(vec![CtState::Established, CtState::Related])],
            Verdict::Accept,
            "defaults: containers: established",
        )];
        for input_rule in self.profile_rules() {
            rules.extend(published(input_rule));
        }
        if self.defaults().input == ChainPolicy::Drop {
            rules.push(rule(
                vec![Match::CtStatus(CtStatus::Dnat)],
                Verdict::Drop,
                "defaults: containers: published port no rule allows",
            ));
        }
        Some(Chain {
            name: "containers".into(),
            hook: Hook::Forward,
            priority: CONTAINERS_PRIORITY,
            policy: Policy::Accept,
            rules,
        })
    }
}

/// The containers chain runs at nft's `filter - 10`. Any priority after
/// conntrack (-200) sees `ct status` and the original tuple, and a drop in
/// any base chain is final whatever Docker's chains accept, so correctness
/// does not hang on the order. The order is chosen so it is known: before
/// Docker's and Podman's filter chains (iptables-nft's `ip filter FORWARD`
/// and `DOCKER-USER` sit at priority 0, netavark's at 0 too) and before our
/// own `forward` chain at 0, whose relative order with theirs at an equal
/// priority the kernel leaves to registration order. Running first, a
/// refused connection is dropped before Docker's counters and its
/// `DOCKER-USER` rules see it, and a restart of dockerd, which re-registers
/// its chains, changes nothing for ours.
pub const CONTAINERS_PRIORITY: i32 = -10;

/// An input-chain rule made into its containers-chain form: DNAT'd only,
/// the port compared is the original one. A rule for both TCP and UDP
/// becomes one per protocol, so each port set has a definite type, as nft
/// needs for `ct original proto-dst` (it cannot infer one from a protocol
/// set and lists such a set as `invalid type`).
fn published(input_rule: Rule) -> Vec<Rule> {
    let protocols = input_rule.matches.iter().find_map(|m| match m {
        Match::Protocol(p) if p.len() > 1 => Some(p.clone()),
        _ => None,
    });
    let per_protocol: Vec<Option<Protocol>> = match protocols {
        Some(p) => p.into_iter().map(Some).collect(),
        None => vec![None],
    };
    per_protocol
        .into_iter()
        .map(|only| {
            let mut matches = vec![Match::CtStatus(CtStatus::Dnat)];
            matches.extend(input_rule.matches.iter().map(|m| match (m, only) {
                (Match::Protocol(_), Some(p)) => Match::Protocol(vec![p]),
                (Match::DestPort(ranges), _) => Match::OrigDestPort(ranges.clone()),
                (m, _) => m.clone(),
            }));
            Rule {
                matches,
                ..input_rule.clone()
            }
        })
        .collect()
}
