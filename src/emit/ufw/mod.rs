//! The ruleset as ufw configuration: what `ufw` commands can say, and the
//! rest of the input chain in ufw's own `before.rules`.
//!
//! ufw evaluates, for each family, `ufw-before-input` (the rules of
//! `/etc/ufw/before.rules`), then the user rules (`ufw allow ...`, kept in
//! `user.rules`), then `after.rules`, then the default policy
//! (/lib/ufw/ufw-init-functions appends the jump to `ufw-user-input` at the
//! end of `ufw-before-input`). Debian's stock `before.rules` accepts more
//! than any fwharden profile does: every echo request with no rate, DHCP
//! replies (udp 67 to 68), mDNS and UPnP multicast, and in `before6.rules`
//! multicast listener and router discovery, DHCPv6 and more. So the emitter
//! writes both `before*.rules` itself, holding the model's leading rules
//! (established, invalid, loopback, ICMP, ping with its rate) in iptables
//! syntax, and the scripts install them over ufw's, saving what was there.
//! A per-source limit's meter goes there too, after that run, as the
//! iptables format writes it (see [`meter`]).
//!
//! What follows that leading run becomes ufw user rules, one per protocol
//! and source prefix, in model order (ufw keeps the order rules were added
//! in, per family). Two forms load them (see [`script`]): `ufw.sh`, one
//! `ufw` command per rule, and `reload.sh`, which installs the generated
//! `user.rules`/`user6.rules` and reloads once.
//!
//! Refused, naming the rule and its `file:line` ([`EmitError::Refused`]): what ufw
//! rules cannot say and no stricter rule can stand for. Logging is never
//! refused (it decides no packet's fate): it is written with ufw's own
//! prefix and rate, with a warning. With [`Approximation::Stricter`], a
//! TCP reject the model answers with ICMP gets ufw's TCP reset (the same
//! packets are refused).

mod before;
mod meter;
mod rule;
pub mod script;
mod user;

use std::collections::HashSet;

use ipnet::IpNet;

use super::{quote, Approximation, EmitError, Emitted, File, FileKind};
use crate::ruleset::*;

/// The files of the ufw format.
pub const SCRIPT: &str = "ufw.sh";
pub const RELOAD: &str = "reload.sh";
pub const BEFORE_V4: &str = "before.rules";
pub const BEFORE_V6: &str = "before6.rules";
pub const USER_V4: &str = "user.rules";
pub const USER_V6: &str = "user6.rules";

/// ufw has no sets: a group becomes one rule per prefix, which every packet
/// walks in order (FIELD.md: 10,000 linear iptables-nft rules pass 5k
/// packets/s where a set passes 178k). Past this many prefixes in one set
/// the emitter refuses and points at the iptables format's ipsets.
pub const SET_MAX: usize = 64;

/// What a ufw rule does with a matching packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Reject,
}

impl Action {
    pub fn word(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Reject => "reject",
        }
    }
}

/// Where a ufw rule's packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// Both families (`from any`).
    Any,
    /// Every address of one family (`from 0.0.0.0/0`, `from ::/0`).
    AnyOf(Family),
    Net(IpNet),
}

impl From {
    fn family(self) -> Option<Family> {
        match self {
            From::Any => None,
            From::AnyOf(f) => Some(f),
            From::Net(n) => Some(Family::of(&n)),
        }
    }

    /// As ufw writes it on a command line and in a tuple. ufw writes a
    /// host prefix (`/32`, `/128`) as the bare address, and compares rules
    /// in that form.
    pub fn text(self, family: Family) -> String {
        match self {
            From::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
            From::Net(n) => n.to_string(),
            _ => match family {
                Family::Ipv4 => "0.0.0.0/0".into(),
                Family::Ipv6 => "::/0".into(),
            },
        }
    }
}

/// Whether ufw logs a rule's new connections (`ufw allow log ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    No,
    New,
}

/// One ufw user rule: `ufw ACTION [in on IFACE] [log] [proto P] from SRC
/// to any [port PORTS] comment TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRule {
    pub action: Action,
    /// As ufw takes it: `wg+` for the model's `wg*`.
    pub interface: Option<String>,
    pub proto: Option<Protocol>,
    /// Empty: every port.
    pub ports: Vec<PortRange>,
    pub from: From,
    pub log: Logged,
    /// Free text (see [`quote::free_text`]), never starting with `-`.
    pub comment: String,
}

impl UserRule {
    /// What ufw compares, in one family, to find an existing rule:
    /// everything but the action, logging and comment. ufw updates a rule
    /// with the same match in place (`Rule updated`) instead of adding a
    /// second one.
    fn key(&self, family: Family) -> String {
        format!(
            "{:?} {:?} {:?} {}",
            self.interface,
            self.proto,
            self.ports,
            self.from.text(family)
        )
    }

    /// The families the rule reaches.
    pub fn families(&self) -> Vec<Family> {
        match self.from.family() {
            Some(f) => vec![f],
            None => vec![Family::Ipv4, Family::Ipv6],
        }
    }

    /// The ports as ufw writes them: `22`, `80,443`, `6000:6010`.
    pub fn port_text(&self) -> Option<String> {
        if self.ports.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .ports
            .iter()
            .map(|p| {
                if p.first == p.last {
                    p.first.to_string()
                } else {
                    format!("{}:{}", p.first, p.last)
                }
            })
            .collect();
        Some(parts.join(","))
    }
}

/// ufw's logging level, the nearest to the model's drop logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    Off,
    /// Blocked packets, `[UFW BLOCK] ` at 3/minute (burst 10).
    Low,
}

/// Everything the files say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub profile: String,
    pub policy: Policy,
    /// The model's leading rules as lines of `before.rules` and
    /// `before6.rules`.
    pub before_v4: Vec<String>,
    pub before_v6: Vec<String>,
    pub user: Vec<UserRule>,
    pub logging: Logging,
    /// How many of the input chain's rules before.rules holds whole, ahead
    /// of every ufw rule (per-source meters after them are there too).
    pub lead: usize,
    /// Whether the profile filters published container ports: the
    /// containers chain's rules, in [`before::CONTAINERS`], under
    /// Docker's DOCKER-USER (see [`before::text`]).
    pub containers: bool,
    pub containers_v4: Vec<String>,
    pub containers_v6: Vec<String>,
    /// One line per approximation made.
    pub warnings: Vec<String>,
}

fn refuse(rule: &str, why: impl Into<String>) -> EmitError {
    EmitError::refused("ufw", quote::free_text(rule), why.into())
}

/// The ufw format: `ufw.sh`, `reload.sh`, both `before*.rules` and both
/// `user*.rules`.
pub fn emit(ruleset: &Ruleset, approx: Approximation) -> Result<Emitted, EmitError> {
    let plan = plan(ruleset, approx)?;
    let header = script::header(&plan);
    let table = super::lockout::table_with_existing(ruleset, Some(plan.lead));
    let files = vec![
        File {
            name: SCRIPT.into(),
            text: script::commands(&plan, &header, &table),
            kind: FileKind::Script,
        },
        File {
            name: RELOAD.into(),
            text: script::reload(&plan, &header, &table),
            kind: FileKind::Script,
        },
        File {
            name: BEFORE_V4.into(),
            text: before::text(&plan, Family::Ipv4, &header),
            kind: FileKind::Data,
        },
        File {
            name: BEFORE_V6.into(),
            text: before::text(&plan, Family::Ipv6, &header),
            kind: FileKind::Data,
        },
        File {
            name: USER_V4.into(),
            text: user::text(&plan, Family::Ipv4, &header),
            kind: FileKind::Data,
        },
        File {
            name: USER_V6.into(),
            text: user::text(&plan, Family::Ipv6, &header),
            kind: FileKind::Data,
        },
    ];
    Ok(Emitted {
        files,
        warnings: plan.warnings,
    })
}

/// Refuses what ufw cannot hold at all, whatever `--approximate` says:
/// every such chain or table, and the input chain whose rules are still
/// looked at, so one run names them all.
fn whole_ruleset(ruleset: &Ruleset) -> (Option<&Chain>, Vec<EmitError>) {
    let mut refusals = Vec::new();
    if ruleset.bans.is_some() {
        refusals.push(refuse(
            "[bans]",
            "ufw has no timeout sets for fail2ban or CrowdSec to fill: remove [bans] (fail2ban's own ufw action adds ufw rules), or use nftables",
        ));
    }
    for chain in &ruleset.chains {
        match chain.hook {
            Hook::Input => {}
            Hook::Forward if chain.name == "containers" => {}
            Hook::Forward => refusals.push(refuse(
                "defaults: forward",
                "ufw's routed rules accept ICMP echo requests in before.rules and are not written by this emitter: set `forward = \"accept\"` (ufw's routed policy then stays as you have it), or use nftables",
            )),
            Hook::Output => refusals.push(refuse(
                "defaults: output",
                "ufw's outgoing rules start with its own before.rules accepts (ICMPv6, DHCP) that fwharden's output chain does not have: set `output = \"accept\"`, or use nftables",
            )),
        }
    }
    let input = ruleset.chains.iter().find(|c| c.hook == Hook::Input);
    if input.is_none() {
        refusals.push(refuse(
            "defaults: input",
            "a ruleset without an input chain leaves every packet to ufw's own policy",
        ));
    }
    (input, refusals)
}

/// What the files say, or every refusal: the chains ufw cannot hold and
/// each rule it cannot say, so one run names them all.
pub fn plan(ruleset: &Ruleset, approx: Approximation) -> Result<Plan, EmitError> {
    let (input, mut refusals) = whole_ruleset(ruleset);
    let Some(chain) = input else {
        return Err(EmitError::gather(refusals).expect("a missing input chain is refused"));
    };
    let mut plan = Plan {
        profile: ruleset.profile.clone(),
        policy: chain.policy,
        before_v4: Vec::new(),
        before_v6: Vec::new(),
        user: Vec::new(),
        logging: Logging::Off,
        lead: 0,
        containers: false,
        containers_v4: Vec::new(),
        containers_v6: Vec::new(),
        warnings: Vec::new(),
    };
    plan.rules(ruleset, chain, approx, &mut refusals);
    if let Some(containers) = ruleset.chains.iter().find(|c| c.name == "containers") {
        plan.containers = true;
        for (i, rule) in containers.rules.iter().enumerate() {
            if let Err(refused) = plan.lines(ruleset, rule, (before::Into::Containers, i)) {
                refusals.push(refused);
            }
        }
    }
    if let Some(refused) = EmitError::gather(refusals) {
        return Err(refused);
    }
    plan.dedup();
    Ok(plan)
}

impl Plan {
    /// Each rule of the input chain into the before files or the user
    /// rules; a rule ufw cannot say is pushed to `refusals`, and the
    /// rules after it are still looked at.
    fn rules(
        &mut self,
        ruleset: &Ruleset,
        chain: &Chain,
        approx: Approximation,
        refusals: &mut Vec<EmitError>,
    ) {
        let lead = chain.rules.iter().take_while(|r| is_before(r)).count();
        for (i, rule) in chain.rules[..lead].iter().enumerate() {
            if let Err(refused) = self.before(ruleset, rule, i) {
                refusals.push(refused);
            }
        }
        let rest = &chain.rules[lead..];
        // The rules up to the last meter an earlier rule may race go into
        // before.rules whole, in model order (see [`meter`]).
        let moved = meter::moved(ruleset, rest);
        self.lead = lead + moved;
        for (i, rule) in rest.iter().enumerate() {
            if i < moved || meter::is_meter(rule) {
                if let Err(refused) = self.before(ruleset, rule, lead + i) {
                    refusals.push(refused);
                }
                continue;
            }
            if is_drop_logging(rule) && i + 1 == rest.len() {
                // Logging decides nothing: ufw's own drop logging, the
                // nearest it has, with a warning, never a refusal.
                self.logging = Logging::Low;
                self.warn(format!(
                    "{}: logged by `ufw logging low`, prefix [UFW BLOCK] at 3/minute burst 10",
                    rule.comment
                ));
                continue;
            }
            if let Err(refused) = self.user_rule(ruleset, rule, approx) {
                refusals.push(refused);
            }
        }
    }

    /// A later rule with the same match as an earlier one, in a family,
    /// never decides a packet there (the earlier one does); ufw would
    /// update the earlier one in place with the later one's action instead.
    fn dedup(&mut self) {
        let mut seen: HashSet<(Family, String)> = HashSet::new();
        let mut kept = Vec::new();
        for mut rule in std::mem::take(&mut self.user) {
            let fresh: Vec<Family> = rule
                .families()
                .into_iter()
                .filter(|f| !seen.contains(&(*f, rule.key(*f))))
                .collect();
            match fresh.as_slice() {
                [] => continue,
                [only] if rule.from == From::Any => rule.from = From::AnyOf(*only),
                _ => {}
            }
            for f in &fresh {
                seen.insert((*f, rule.key(*f)));
            }
            kept.push(rule);
        }
        self.user = kept;
    }

    /// `rule`'s lines in both before files' input chain.
    fn before(&mut self, ruleset: &Ruleset, rule: &Rule, index: usize) -> Result<(), EmitError> {
        self.lines(ruleset, rule, (before::Into::Input, index))
    }

    /// `rule`'s lines in both before files, in the chain `into` says.
    fn lines(
        &mut self,
        ruleset: &Ruleset,
        rule: &Rule,
        (into, index): (before::Into, usize),
    ) -> Result<(), EmitError> {
        let here = |why: String| refuse(&rule.comment, why);
        let mut warnings = Vec::new();
        let [v4, v6] = [Family::Ipv4, Family::Ipv6].map(|family| {
            before::lines(ruleset, rule, (into, index), family, &mut warnings).map_err(here)
        });
        let (v4, v6) = (v4?, v6?);
        let (to_v4, to_v6) = match into {
            before::Into::Input => (&mut self.before_v4, &mut self.before_v6),
            before::Into::Containers => (&mut self.containers_v4, &mut self.containers_v6),
        };
        to_v4.extend(v4);
        to_v6.extend(v6);
        for w in warnings {
            self.warn(w);
        }
        Ok(())
    }
}

/// A rule of the leading run, written to `before.rules`: conntrack state,
/// interface, ICMP type and a global rate, which ufw rules cannot say.
fn is_before(rule: &Rule) -> bool {
    rule.verdict.is_some()
        && rule.log.is_none()
        && rule.matches.iter().all(|m| {
            matches!(
                m,
                Match::CtState(_)
                    | Match::InInterface(_)
                    | Match::Family(_)
                    | Match::IcmpType(_)
                    | Match::Icmpv6Type(_)
            )
        })
}

/// The model's drop logging: the chain's last rule, logging every packet
/// that got this far, with no verdict.
fn is_drop_logging(rule: &Rule) -> bool {
    rule.matches.is_empty() && rule.log.is_some() && rule.verdict.is_none()
}

#[cfg(test)]
mod tests;
