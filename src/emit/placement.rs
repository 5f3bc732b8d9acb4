//! Where each of fwharden's iptables chains hangs, in which order, and
//! what an accept in it means; and `load.sh`, which hooks them in.
//!
//! nftables runs every base chain on a hook, in priority order, and a
//! packet passes only if each one accepts it. iptables has one `filter`
//! table with one built-in chain per hook, so the model's base chains
//! become user chains jumped to from it, and "accept" needs care:
//! - `FWHARDEN-INPUT` and `FWHARDEN-OUTPUT` are jumped to from the head of
//!   INPUT and OUTPUT (after the ban chain) and decide there
//!   ([`Accept::Final`]: `-j ACCEPT`, and the chain ends in the model's
//!   policy), as the emitter always did.
//! - Every chain of the forward hook (the ban table's, `containers`,
//!   `forward`) is jumped to from `DOCKER-USER`, in the model's priority
//!   order, and an accept is `-j RETURN` ([`Accept::Pass`]): the packet
//!   goes on to Docker's chains and the rest of FORWARD, which still
//!   decide, as Docker's nftables chains still decide after ours. A drop
//!   is `-j DROP`, final in both. Why `DOCKER-USER`: dockerd inserts its
//!   own FORWARD rules (which accept published ports and container
//!   traffic) at the head of FORWARD when it starts, and then moves its
//!   jump to `DOCKER-USER` above them (libnetwork's `arrangeUserFilterRule`):
//!   it is the one place Docker guarantees to run first, through every
//!   restart. dockerd creates the chain only when missing and keeps what
//!   it holds (tests/docker_emit.rs restarts a real dockerd to check), so
//!   `load.sh` creates it and the jump from FORWARD when Docker has not
//!   (yet): the rules then also hold for the operator's own DNAT, as the
//!   nftables chain does. dockerd 20.10 (Debian 12's docker.io) arranges
//!   the jump for iptables only: in ip6tables it inserts its FORWARD rules,
//!   which accept every published port, above the jump, so over IPv6 the
//!   profile did not hold (tests/docker_ipv6.rs). `load.sh` therefore moves
//!   the jump to the head of FORWARD in both families, deleted and inserted
//!   in one restore commit so no packet sees FORWARD without it. A restart
//!   of dockerd 20.10 inserts its rules above it again: load.sh must run
//!   after dockerd starts. (Podman's iptables driver adds FORWARD rules of
//!   its own, whose order against this jump is not checked.)
//! - The ban table's input chain is jumped to from INPUT before
//!   `FWHARDEN-INPUT` (its nftables priority is `filter - 10`), also with
//!   [`Accept::Pass`]: an exempt source goes on to `FWHARDEN-INPUT`.
//!
//! fwharden's chains are declared in the restore files, so a reload
//! empties and refills them in one commit; every chain load.sh may ever
//! have hooked ([`HOOKED`]) is declared, empty when this ruleset has no
//! such chain, so loading a profile without bans or container coverage
//! after one with them leaves nothing of the old rules working. An empty
//! chain returns at once. `DOCKER-USER` is never declared there (that
//! would empty it, the operator's rules too): load.sh only inserts its
//! jumps at its head, once.

use std::fmt::Write;

use super::{ipset, quote, safety};
use crate::ruleset::{bans, Chain, Hook, Ruleset};

/// What an accept in the chain does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// `-j ACCEPT`: the chain is the hook's last word in the filter table.
    Final,
    /// `-j RETURN`: this chain lets the packet pass; the chains after it
    /// still decide.
    Pass,
}

/// The chain of the filter table a placed chain is jumped to from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    Input,
    Output,
    /// Docker's `DOCKER-USER`, jumped to from the head of FORWARD.
    DockerUser,
}

impl Parent {
    pub fn name(self) -> &'static str {
        match self {
            Parent::Input => "INPUT",
            Parent::Output => "OUTPUT",
            Parent::DockerUser => DOCKER_USER,
        }
    }
}

pub const DOCKER_USER: &str = "DOCKER-USER";

/// Every chain `load.sh` hooks in, for some ruleset.
pub const HOOKED: [&str; 6] = [
    "FWHARDEN-BANS-INPUT",
    "FWHARDEN-INPUT",
    "FWHARDEN-OUTPUT",
    "FWHARDEN-BANS-FORWARD",
    "FWHARDEN-CONTAINERS",
    "FWHARDEN-FORWARD",
];

/// One model chain as an iptables chain.
pub struct Placed<'a> {
    /// The ruleset whose sets the chain's rules look up.
    pub ruleset: &'a Ruleset,
    pub space: ipset::Space,
    pub chain: &'a Chain,
    /// `FWHARDEN-INPUT`; a rule that needs a chain of its own gets
    /// `FWHARDEN-INPUT-N`.
    pub name: String,
    /// Starts the names of the chain's global-limit hashlimit tables.
    pub tag: &'static str,
    pub parent: Parent,
    pub accept: Accept,
}

/// Every chain of the ruleset and of its ban table, in the order their
/// jumps go into each parent.
pub fn place<'a>(ruleset: &'a Ruleset, ban_table: Option<&'a Ruleset>) -> Vec<Placed<'a>> {
    let mut out = Vec::new();
    let profile = |chain: &'a Chain| {
        let (name, tag, parent, accept) = match (chain.hook, chain.name.as_str()) {
            (Hook::Input, _) => ("FWHARDEN-INPUT", "i", Parent::Input, Accept::Final),
            (Hook::Output, _) => ("FWHARDEN-OUTPUT", "o", Parent::Output, Accept::Final),
            (Hook::Forward, "containers") => {
                ("FWHARDEN-CONTAINERS", "c", Parent::DockerUser, Accept::Pass)
            }
            (Hook::Forward, _) => ("FWHARDEN-FORWARD", "f", Parent::DockerUser, Accept::Pass),
        };
        Placed {
            ruleset,
            space: ipset::Space::Profile,
            chain,
            name: name.into(),
            tag,
            parent,
            accept,
        }
    };
    let ban = |chain: &'a Chain| {
        let (name, tag, parent) = match chain.hook {
            Hook::Input => ("FWHARDEN-BANS-INPUT", "bi", Parent::Input),
            Hook::Output => ("FWHARDEN-BANS-OUTPUT", "bo", Parent::Output),
            Hook::Forward => ("FWHARDEN-BANS-FORWARD", "bf", Parent::DockerUser),
        };
        Placed {
            ruleset: ban_table.expect("ban chains come from the ban table"),
            space: ipset::Space::Bans,
            chain,
            name: name.into(),
            tag,
            parent,
            accept: Accept::Pass,
        }
    };
    // The ban table first: at an equal priority its chains run before
    // ours, and either order decides the same (each only drops or passes).
    if let Some(t) = ban_table {
        out.extend(t.chains.iter().map(ban));
    }
    out.extend(ruleset.chains.iter().map(profile));
    // Stable: priority order within a parent, the order above at a tie.
    out.sort_by_key(|p| p.chain.priority);
    out
}

/// The ban table of a ruleset, as the nftables backends build it.
pub fn ban_table(ruleset: &Ruleset) -> Option<Ruleset> {
    ruleset
        .bans
        .as_ref()
        .map(|b| bans::table(b, &ruleset.profile))
}

/// The comment lines every generated file opens with.
pub fn header(ruleset: &Ruleset, warnings: &[String]) -> String {
    let mut out = format!(
        "# fwharden {} profile {}: generated by fwharden emit --format iptables, load with load.sh\n",
        env!("CARGO_PKG_VERSION"),
        quote::free_text(&ruleset.profile)
    );
    for w in warnings {
        let _ = writeln!(out, "# APPROXIMATED: {}", quote::free_text(w));
    }
    out
}

/// `load.sh`: loads the files next to it and hooks fwharden's chains in,
/// once, inside the safety net of [`super::safety`] (lockout check,
/// saved state, detached restorer). The binaries can be chosen
/// (`IPTABLES=iptables-legacy`).
pub fn load_script(placed: &[Placed], has_sets: bool, header: &str, table: &str) -> String {
    let mut out = String::from("#!/bin/sh\n");
    out.push_str(header);
    out.push_str(
        "# Loads the sets, then the chains of each family in one commit, then hooks them\n\
         # in once. Run again, it replaces the chains of fwharden and leaves other rules.\n",
    );
    out.push_str(&safety::summary(super::LOAD_SCRIPT));
    let mut f = String::from(
        "IPSET=\"${IPSET:-ipset}\"\n\
         IPTABLES=\"${IPTABLES:-iptables}\"\n\
         IP6TABLES=\"${IP6TABLES:-ip6tables}\"\n\
         preflight() {\n  :\n}\n",
    );
    f.push_str(SAVE_TABLES);
    if has_sets {
        f.push_str(SAVE_SETS);
    } else {
        f.push_str("save_sets() {\n  : > \"$1/sets.existed\"\n  : > \"$1/sets.created\"\n}\n");
    }
    f.push_str(RESTORE);
    f.push_str("load_rules() {\n");
    f.push_str(&load_lines(placed, has_sets));
    f.push_str("}\n");
    out.push_str(&safety::body(&safety::Script {
        functions: &f,
        table,
        existing: "",
    }));
    out
}

/// Saves both families' filter tables and the sets ipset.rules touches.
const SAVE_TABLES: &str = r#"# save_state DIR: the filter table of each family, and the sets ipset.rules
# creates: the contents of those that exist, the names of the others.
save_state() {
  save_filter "$IPTABLES" "$1/iptables.save" || return 1
  save_filter "$IP6TABLES" "$1/ip6tables.save" || return 1
  save_sets "$1"
}
"#;

const SAVE_SETS: &str = r#"save_sets() {
  : > "$1/sets.existed"
  : > "$1/sets.created"
  : > "$1/ipset.save"
  awk '$1 == "create" && $2 !~ /^(fwt-|fwharden-new-)/ { print $2 }' ipset.rules > "$1/sets.touched"
  while read -r s; do
    if "$IPSET" list -n "$s" > /dev/null 2>&1; then
      echo "$s" >> "$1/sets.existed"
      "$IPSET" save "$s" >> "$1/ipset.save" || return 1
    else
      echo "$s" >> "$1/sets.created"
    fi
  done < "$1/sets.touched"
}
"#;

/// Puts back what [`SAVE_TABLES`] saved: a group's or an exempt set its old
/// contents (filled under a temporary name and swapped in, as ipset.rules
/// does; ban sets keep their bans, which ipset.rules never touches), both filter
/// tables, and the sets this load created are destroyed once no rule uses
/// them.
const RESTORE: &str = r#"restore_state() {
  ok=yes
  i=0
  while read -r s; do
    # A ban set (a timeout set) keeps its bans: ipset.rules never touched it.
    if grep -q "^create $s .* timeout " "$1/ipset.save"; then
      continue
    fi
    i=$((i + 1))
    awk -v s="$s" -v t="fwharden-rb-$i" '
      $1 == "create" && $2 == s { $2 = t; print $0 " -exist"; print "flush " t }
      $1 == "add" && $2 == s { $2 = t; print }
      END { print "swap " t " " s; print "destroy " t }' "$1/ipset.save" | "$IPSET" restore || ok=no
  done < "$1/sets.existed"
  restore_table "$IPTABLES" "$1/iptables.save" ip || ok=no
  restore_table "$IP6TABLES" "$1/ip6tables.save" ip6 || ok=no
  while read -r s; do
    "$IPSET" destroy "$s" || ok=no
  done < "$1/sets.created"
  [ "$ok" = yes ]
}
"#;

/// Shell lines that make `DOCKER-USER` as dockerd makes it (it keeps an
/// existing one), for DNAT without Docker too, and move the jump to it to
/// the head of FORWARD in one commit, for each of `bins` (iptables, then
/// ip6tables). dockerd 20.10 moves it there for iptables only: over IPv6
/// its own rules, which accept every published port, stay above it.
pub fn docker_user_first(bins: [&str; 2]) -> String {
    let mut out = String::from(
        "  # DOCKER-USER as dockerd makes it (it keeps an existing one), for DNAT without\n\
         \x20 # Docker too, and the jump to it moved to the head of FORWARD in one commit.\n\
         \x20 # dockerd 20.10 moves it there for iptables only: over IPv6 its own rules,\n\
         \x20 # which accept every published port, stay above it. Run again after dockerd starts.\n",
    );
    for bin in bins {
        let _ = writeln!(
            out,
            "  \"{bin}\" -w 10 -n -L {DOCKER_USER} >/dev/null 2>&1 || \"{bin}\" -w 10 -N {DOCKER_USER}\n\
             \x20 if \"{bin}\" -w 10 -C FORWARD -j {DOCKER_USER} 2>/dev/null; then\n\
             \x20   printf '*filter\\n-D FORWARD -j {DOCKER_USER}\\n-I FORWARD 1 -j {DOCKER_USER}\\nCOMMIT\\n' | \"{bin}-restore\" -w 10 --noflush\n\
             \x20 else\n\
             \x20   \"{bin}\" -w 10 -I FORWARD 1 -j {DOCKER_USER}\n\
             \x20 fi"
        );
    }
    out
}

/// The loading commands, as load.sh always ran them.
fn load_lines(placed: &[Placed], has_sets: bool) -> String {
    let mut out = String::new();
    if has_sets {
        out.push_str("  \"$IPSET\" restore < ipset.rules\n");
    }
    out.push_str("  \"$IPTABLES-restore\" -w 10 --noflush < iptables.rules\n");
    out.push_str("  \"$IP6TABLES-restore\" -w 10 --noflush < ip6tables.rules\n");
    if placed.iter().any(|p| p.parent == Parent::DockerUser) {
        out.push_str(&docker_user_first(["$IPTABLES", "$IP6TABLES"]));
    }
    for parent in [Parent::Input, Parent::Output, Parent::DockerUser] {
        // The n-th of our chains in a parent goes n-th from its head: the
        // ones before it are there already (checked or inserted just above).
        let ours = placed.iter().filter(|p| p.parent == parent);
        for (i, p) in ours.enumerate() {
            let (theirs, name, at) = (parent.name(), &p.name, i + 1);
            for bin in ["$IPTABLES", "$IP6TABLES"] {
                let _ = writeln!(
                    out,
                    "  \"{bin}\" -w 10 -C {theirs} -j {name} 2>/dev/null || \"{bin}\" -w 10 -I {theirs} {at} -j {name}"
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load, SearchPath};

    /// The ban chains come before fwharden's own in each parent, and on
    /// the forward hook the model's priority order holds: bans and
    /// containers (`filter - 10`), then `forward` (`filter`).
    #[test]
    fn chains_hang_in_priority_order_with_bans_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.toml"),
            "[defaults]\nforward = \"drop\"\n[bans]\nenabled = true\n[[rule]]\nallow = \"ssh\"\n",
        )
        .unwrap();
        let loaded = load("p", &SearchPath::only(vec![dir.path().to_path_buf()]));
        let ruleset = crate::compile::compile(&loaded.profile.unwrap());
        let bans = ban_table(&ruleset);
        let placed = place(&ruleset, bans.as_ref());
        let order: Vec<(&str, Parent, Accept)> = placed
            .iter()
            .map(|p| (p.name.as_str(), p.parent, p.accept))
            .collect();
        assert_eq!(
            order,
            [
                ("FWHARDEN-BANS-INPUT", Parent::Input, Accept::Pass),
                ("FWHARDEN-BANS-FORWARD", Parent::DockerUser, Accept::Pass),
                ("FWHARDEN-CONTAINERS", Parent::DockerUser, Accept::Pass),
                ("FWHARDEN-INPUT", Parent::Input, Accept::Final),
                ("FWHARDEN-FORWARD", Parent::DockerUser, Accept::Pass),
            ]
        );
        for p in &placed {
            assert!(HOOKED.contains(&p.name.as_str()), "{}", p.name);
        }
    }
}
