//! The transactions fwharden sends, each one batch: the whole table (and
//! the ban table in step with it), an element delta of named prefix sets,
//! and the table's removal.

use nftnl::nftnl_sys::libc;

use crate::ruleset::openings::placement;
use crate::ruleset::{Family, Hook, Ruleset, SetKind, TABLE_NAME};

use super::super::elems::Op;
use super::super::openings::{self, Carried};
use super::super::{ban_batch, intervals, NftError};
use super::{unsupported, Builder, Built, Payload, CREATE, NFT_MSG_DESTROYTABLE};

/// The batch that replaces the table with `ruleset` and the opening sets
/// (with the `carried` openings, and their rules in the input chain), and
/// brings the ban table in step with it.
pub fn apply(
    ruleset: &Ruleset,
    before: ban_batch::BanTable,
    carried: &Carried,
) -> Result<Built, NftError> {
    if ruleset.table != TABLE_NAME {
        return Err(unsupported(
            &format!("table {}", ruleset.table),
            format!("fwharden only writes table inet {TABLE_NAME}"),
        ));
    }
    let mut b = Builder::new(&ruleset.table);
    let what = format!("table inet {}", ruleset.table);
    let bare = b.table(None);
    b.add(libc::NFT_MSG_NEWTABLE, CREATE, Payload::Table(bare), &what);
    let bare = b.table(None);
    let del = libc::NLM_F_ACK;
    b.add(libc::NFT_MSG_DELTABLE, del, Payload::Table(bare), &what);
    let full = b.table(Some(&ruleset.profile));
    b.add(libc::NFT_MSG_NEWTABLE, CREATE, Payload::Table(full), &what);
    for set in &ruleset.sets {
        b.named_set(set)?;
    }
    let open_sets = openings::sets(&mut b, carried);
    for chain in &ruleset.chains {
        b.chain(chain);
    }
    let input = ruleset.chains.iter().position(|c| c.hook == Hook::Input);
    for (c, chain) in ruleset.chains.iter().enumerate() {
        let open_at = (Some(c) == input).then(|| placement(chain));
        for (i, rule) in chain.rules.iter().enumerate() {
            if open_at == Some(i) {
                openings::rules(&mut b, chain, open_sets);
            }
            b.rule(chain, i, rule)?;
        }
        if open_at == Some(chain.rules.len()) {
            openings::rules(&mut b, chain, open_sets);
        }
    }
    ban_batch::ban_table(&mut b, ruleset, before)?;
    Ok(b.finish())
}

/// The batch that turns the kernel's `old` into `new` when they differ in
/// the elements of named prefix sets alone (see [`super::delta`]): for each
/// such set, the elements only `old` has are deleted and those only `new`
/// has are added, in one transaction.
pub fn delta(old: &Ruleset, new: &Ruleset) -> Result<Built, NftError> {
    let mut b = Builder::new(&new.table);
    for (before, after) in old.sets.iter().zip(&new.sets) {
        let (SetKind::Prefixes(was), SetKind::Prefixes(now)) = (&before.kind, &after.kind) else {
            continue;
        };
        if was == now {
            continue;
        }
        let what = format!("set {}", after.name);
        let width = match after.family {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        };
        fn ranges(nets: &[ipnet::IpNet]) -> impl Iterator<Item = (u128, u128)> + '_ {
            nets.iter().map(intervals::prefix_range)
        }
        for side in [was, now] {
            intervals::check(ranges(side), width).map_err(|e| unsupported(&what, e))?;
        }
        let (gone, added) = intervals::difference(ranges(was), ranges(now), width);
        b.add_elems(
            &after.name,
            None,
            width,
            Op::Delete,
            Box::new(gone.into_iter()),
            &what,
        );
        b.add_elems(
            &after.name,
            None,
            width,
            Op::Add,
            Box::new(added.into_iter()),
            &what,
        );
    }
    Ok(b.finish())
}

/// How to remove the table: `Destroy` (no error when it is absent, Linux
/// 6.3+) or `Delete` (the caller checked it exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Destroy,
    Delete,
}

/// The batch that removes the table and nothing else.
pub fn remove(removal: Removal) -> Built {
    let mut b = Builder::new(TABLE_NAME);
    let t = b.table(None);
    let nl_type = match removal {
        Removal::Destroy => i32::from(NFT_MSG_DESTROYTABLE),
        Removal::Delete => libc::NFT_MSG_DELTABLE,
    };
    let what = format!("removing table inet {TABLE_NAME}");
    b.add(nl_type, libc::NLM_F_ACK, Payload::Table(t), &what);
    b.finish()
}
