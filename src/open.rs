//! `fwharden open` and `close`: a temporary opening added to, renewed in
//! or taken out of the opening sets, through the kernel port, so that
//! every refusal and failure can be driven without root.
//!
//! What an opening is, where it lives and why is
//! [`crate::ruleset::openings`]'s; this module decides, in order, before
//! anything is sent: that the kernel may be changed at all (the
//! interlock), that a table applied by fwharden is there (there is nothing
//! to open otherwise: without our table every port is open already) and
//! has the opening sets, that the request is not refused (duration,
//! `any`, an explicit deny), what the source stands for (a group is read
//! from the applied table, as the kernel holds it, and only when no rule
//! of it names the group, so that the kernel has no set of it, from the
//! applied profile as it reads now), and what to renew or add. Then one transaction; an opening that expired between the read
//! and the transaction (ENOENT) makes it read and plan again.

use std::collections::BTreeMap;

use ipnet::IpNet;
use thiserror::Error;

use crate::kernel::Kernel;
use crate::nft::NftError;
use crate::ruleset::openings::{self, OpenFrom, Opening, OpeningError, Port, Request};
use crate::ruleset::{Family, Ruleset, SetKind};

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("{}", crate::interlock::Forbidden)]
    Interlock,
    #[error(
        "there is no table inet fwharden: without it nothing is filtered, so there is \
         nothing to open; apply a profile first (fwharden apply PROFILE)"
    )]
    NoTable,
    #[error(
        "table inet fwharden has no opening sets (an older fwharden applied it): apply the \
         profile again (fwharden apply {profile}), then open"
    )]
    NoOpeningSets { profile: String },
    #[error("refused: {0}")]
    Refused(#[from] OpeningError),
    #[error(
        "the applied profile {profile} has no group {group:?}; its groups: {known}; or give \
         an address or prefix"
    )]
    UnknownGroup {
        profile: String,
        group: String,
        known: String,
    },
    #[error("the openings kept changing while fwharden changed them; run the command again")]
    Busy,
    #[error("{what}: {source}")]
    Kernel {
        what: &'static str,
        #[source]
        source: NftError,
    },
}

impl crate::exit::Coded for OpenError {
    fn exit_code(&self) -> i32 {
        match self {
            OpenError::Interlock
            | OpenError::NoTable
            | OpenError::NoOpeningSets { .. }
            | OpenError::Refused(_) => crate::exit::REFUSED,
            OpenError::UnknownGroup { .. } => crate::exit::USAGE,
            OpenError::Busy | OpenError::Kernel { .. } => crate::exit::FAILURE,
        }
    }
}

fn kernel(what: &'static str) -> impl FnOnce(NftError) -> OpenError {
    move |source| OpenError::Kernel { what, source }
}

/// What `open` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Opened {
    pub port: String,
    /// Every source opened, renewed ones included.
    pub from: Vec<IpNet>,
    /// The sources that were open already: their time starts again.
    pub renewed: Vec<IpNet>,
    pub secs: u32,
}

/// The groups of the profile named so, as it reads now (name to
/// prefixes); `None` when it cannot be loaded.
pub type ProfileGroups<'a> = &'a dyn Fn(&str) -> Option<BTreeMap<String, Vec<IpNet>>>;

/// The table fwharden applied, and the openings it holds.
fn applied(k: &dyn Kernel) -> Result<(Ruleset, Vec<Opening>), OpenError> {
    if k.forbidden() {
        return Err(OpenError::Interlock);
    }
    let table = k
        .read_table()
        .map_err(kernel("reading table inet fwharden"))?
        .ok_or(OpenError::NoTable)?;
    let live = k
        .openings()
        .map_err(kernel("reading the openings"))?
        .ok_or_else(|| OpenError::NoOpeningSets {
            profile: table.profile.clone(),
        })?;
    Ok((table, live))
}

/// The prefixes `from` stands for on a host running `table`.
fn resolve(
    table: &Ruleset,
    from: &OpenFrom,
    profile: ProfileGroups,
) -> Result<Vec<IpNet>, OpenError> {
    match from {
        OpenFrom::Any => Ok(vec![
            "0.0.0.0/0".parse().expect("a prefix"),
            "::/0".parse().expect("a prefix"),
        ]),
        OpenFrom::Net(n) => Ok(vec![n.trunc()]),
        OpenFrom::Group(g) => {
            let mut nets = Vec::new();
            let mut found = false;
            for family in [Family::Ipv4, Family::Ipv6] {
                let name = format!("{g}_{}", family.suffix());
                if let Some(SetKind::Prefixes(p)) = table.set(&name).map(|s| &s.kind) {
                    found = true;
                    nets.extend(p.iter().copied());
                }
            }
            if found {
                return Ok(nets);
            }
            let defined = profile(&table.profile).unwrap_or_default();
            if let Some(nets) = defined.get(g) {
                return Ok(nets.clone());
            }
            let mut known = groups(table);
            known.extend(defined.into_keys());
            known.sort();
            known.dedup();
            if known.is_empty() {
                known.push("(none)".into());
            }
            Err(OpenError::UnknownGroup {
                profile: table.profile.clone(),
                group: g.clone(),
                known: known.join(", "),
            })
        }
    }
}

/// The groups a table holds: its prefix sets named `<group>_v4`/`_v6`
/// (those starting with `_` are one rule's own addresses).
fn groups(table: &Ruleset) -> Vec<String> {
    let mut out: Vec<String> = table
        .sets
        .iter()
        .filter(|s| matches!(s.kind, SetKind::Prefixes(_)) && !s.name.starts_with('_'))
        .filter_map(|s| {
            s.name
                .strip_suffix("_v4")
                .or_else(|| s.name.strip_suffix("_v6"))
        })
        .map(str::to_string)
        .collect();
    out.dedup();
    out
}

/// Whether a transaction failed because an element it deletes is gone
/// (it expired in between) or one it adds appeared (another `open`).
fn stale(e: &NftError) -> bool {
    matches!(e, NftError::Rejected { source, .. }
        if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::EEXIST)))
}

const TRIES: usize = 3;

/// Opens `request.port` from `request.from` for `request.secs`.
pub fn open(
    k: &dyn Kernel,
    request: &Request,
    profile: ProfileGroups,
) -> Result<Opened, OpenError> {
    for _ in 0..TRIES {
        let (table, live) = applied(k)?;
        if let Some(refusal) = openings::refusal(&table, request) {
            return Err(refusal.into());
        }
        let nets = resolve(&table, &request.from, profile)?;
        let plan = openings::plan(&live, &nets, request.port)?;
        let ms = u64::from(request.secs) * 1000;
        let delete: Vec<(IpNet, Port)> = plan.renew.iter().map(|n| (*n, request.port)).collect();
        let add: Vec<(IpNet, Port, u64)> = nets.iter().map(|n| (*n, request.port, ms)).collect();
        match k.change_openings(&delete, &add) {
            Ok(()) => {
                return Ok(Opened {
                    port: request.port.to_string(),
                    from: nets,
                    renewed: plan.renew,
                    secs: request.secs,
                })
            }
            Err(e) if stale(&e) => continue,
            Err(e) => return Err(kernel("opening")(e)),
        }
    }
    Err(OpenError::Busy)
}

/// Closes the openings of `port` from within `from` (every one of the
/// port when `None`) before their time; returns those closed.
pub fn close(
    k: &dyn Kernel,
    port: Port,
    from: Option<&OpenFrom>,
    profile: ProfileGroups,
) -> Result<Vec<Opening>, OpenError> {
    for _ in 0..TRIES {
        let (table, live) = applied(k)?;
        let within = match from {
            Some(f) => resolve(&table, f, profile)?,
            None => resolve(&table, &OpenFrom::Any, profile)?,
        };
        let gone: Vec<Opening> = live
            .into_iter()
            .filter(|o| o.port == port)
            .filter(|o| within.iter().any(|n| n.contains(&o.from)))
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let delete: Vec<(IpNet, Port)> = gone.iter().map(|o| (o.from, o.port)).collect();
        match k.change_openings(&delete, &[]) {
            Ok(()) => return Ok(gone),
            Err(e) if stale(&e) => continue,
            Err(e) => return Err(kernel("closing")(e)),
        }
    }
    Err(OpenError::Busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Coded;
    use crate::kernel::memory::{Call, Failure, Fault, Memory};
    use crate::ruleset::openings::tests::{deny_rule, request, ruleset};
    use crate::ruleset::*;

    /// Profile `p` denying Redis, with group `admin`.
    fn table() -> Ruleset {
        let mut t = ruleset(vec![deny_rule(Protocol::Tcp, 6379)]);
        t.sets.push(Set {
            name: "admin_v4".into(),
            family: Family::Ipv4,
            kind: SetKind::Prefixes(vec![
                "192.0.2.0/24".parse().unwrap(),
                "198.51.100.7/32".parse().unwrap(),
            ]),
            comment: "p.toml:2 group admin".into(),
        });
        t
    }

    /// No profile to read groups from.
    fn none(_: &str) -> Option<BTreeMap<String, Vec<IpNet>>> {
        None
    }

    /// A kernel holding `table()` as an apply left it: opening sets, empty.
    fn applied_kernel() -> Memory {
        let k = Memory::new();
        k.apply_at(&table(), None).unwrap();
        k
    }

    #[test]
    fn a_group_opens_each_of_its_prefixes_and_again_renews_them() {
        let k = applied_kernel();
        let done = open(&k, &request("8080/tcp", "admin", 600), &none).unwrap();
        assert_eq!(done.from.len(), 2);
        assert!(done.renewed.is_empty());
        let held = k.held_openings().unwrap();
        assert_eq!(held.len(), 2);
        assert!(held.iter().all(|o| o.timeout_ms == 600_000));
        let again = open(&k, &request("8080/tcp", "admin", 60), &none).unwrap();
        assert_eq!(again.renewed.len(), 2);
        let held = k.held_openings().unwrap();
        assert_eq!(held.len(), 2, "renewed, not doubled: {held:?}");
        assert!(held.iter().all(|o| o.timeout_ms == 60_000));
    }

    #[test]
    fn an_apply_keeps_the_openings_and_a_removal_ends_them() {
        let k = applied_kernel();
        open(&k, &request("8080/tcp", "192.0.2.7", 600), &none).unwrap();
        let mut other = table();
        other.profile = "other".into();
        k.apply_at(&other, None).unwrap();
        assert_eq!(k.held_openings().unwrap().len(), 1);
        k.remove_table().unwrap();
        assert_eq!(k.held_openings(), None);
    }

    #[test]
    fn refusals_come_before_any_change_with_their_exit_codes() {
        let k = applied_kernel();
        let cases = [
            (
                request("8080/tcp", "admin", openings::MAX_SECS + 1),
                "7 days",
            ),
            (request("8080/tcp", "any", 600), "--yes-any"),
            (request("6379/tcp", "admin", 600), "--force"),
        ];
        for (r, says) in cases {
            let e = open(&k, &r, &none).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
            assert_eq!(e.exit_code(), crate::exit::REFUSED, "{e}");
        }
        let e = open(&k, &request("8080/tcp", "nobody", 600), &none).unwrap_err();
        assert!(e.to_string().contains("its groups: admin"), "{e}");
        assert_eq!(e.exit_code(), crate::exit::USAGE);
        assert!(!k.calls().contains(&Call::ChangeOpenings));
        let mut forced = request("6379/tcp", "admin", 600);
        forced.force = true;
        open(&k, &forced, &none).unwrap();
    }

    #[test]
    fn without_our_table_or_its_opening_sets_nothing_is_opened() {
        let k = Memory::new();
        let e = open(&k, &request("8080/tcp", "192.0.2.7", 60), &none).unwrap_err();
        assert!(matches!(e, OpenError::NoTable), "{e}");
        // A table fwharden did not write this way (an older version, an
        // edit) has no opening sets.
        k.inject(Call::Generation, Fault::Edited(Some(table())));
        k.generation().unwrap();
        let e = open(&k, &request("8080/tcp", "192.0.2.7", 60), &none).unwrap_err();
        assert!(e.to_string().contains("apply the profile again"), "{e}");
        assert_eq!(e.exit_code(), crate::exit::REFUSED);
    }

    #[test]
    fn a_group_no_rule_names_is_read_from_the_profile() {
        let k = applied_kernel();
        let profile = |name: &str| {
            assert_eq!(name, "p");
            let nets = vec!["203.0.113.0/24".parse().unwrap()];
            Some(BTreeMap::from([("friends".to_string(), nets)]))
        };
        let done = open(&k, &request("8080/tcp", "friends", 60), &profile).unwrap();
        assert_eq!(done.from, ["203.0.113.0/24".parse::<IpNet>().unwrap()]);
        let e = open(&k, &request("8080/tcp", "nobody", 60), &profile).unwrap_err();
        assert!(e.to_string().contains("its groups: admin, friends"), "{e}");
    }

    #[test]
    fn the_interlock_refuses_before_reading() {
        let k = applied_kernel();
        k.forbid();
        let before = k.calls().len();
        let e = open(&k, &request("8080/tcp", "192.0.2.7", 60), &none).unwrap_err();
        assert!(matches!(e, OpenError::Interlock), "{e}");
        assert_eq!(k.calls().len(), before);
    }

    #[test]
    fn a_refused_transaction_is_an_error_and_changes_nothing() {
        let k = applied_kernel();
        k.inject(Call::ChangeOpenings, Fault::Fail(Failure::Permission));
        let e = open(&k, &request("8080/tcp", "192.0.2.7", 60), &none).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::FAILURE);
        assert_eq!(k.held_openings(), Some(vec![]));
    }

    #[test]
    fn close_takes_out_what_lies_within_and_says_when_nothing_was_open() {
        let k = applied_kernel();
        open(&k, &request("8080/tcp", "admin", 600), &none).unwrap();
        open(&k, &request("53/udp", "192.0.2.7", 600), &none).unwrap();
        let port: Port = "8080/tcp".parse().unwrap();
        let one: OpenFrom = "198.51.100.0/24".parse().unwrap();
        let gone = close(&k, port, Some(&one), &none).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].from, "198.51.100.7/32".parse::<IpNet>().unwrap());
        assert_eq!(close(&k, port, None, &none).unwrap().len(), 1);
        assert!(close(&k, port, None, &none).unwrap().is_empty());
        // The other port's opening is untouched.
        assert_eq!(k.held_openings().unwrap().len(), 1);
    }
}
