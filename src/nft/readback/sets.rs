//! Named and anonymous sets of table `inet fwharden`, read back into the
//! model.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use nftnl::nftnl_sys::{self as sys, libc};

use crate::ruleset::*;

use super::super::intervals;
use super::super::obj::{self, KernelElem};
use super::super::rules::{self, AnonValues, PortHeader};
use super::super::udata::{self, udata_str};
use super::super::NftError;
use super::{foreign, kernel, parse_as, request_in_table, Socket, DUMP};

pub(in crate::nft) fn set_elems(
    sock: &mut Socket,
    table: &str,
    name: &str,
) -> Result<Vec<KernelElem>, NftError> {
    let replies = request_in_table(
        sock,
        table,
        libc::NFT_MSG_GETSETELEM,
        DUMP,
        obj::Kind::SetElems,
        Some(name),
    )
    .map_err(|e| kernel(&format!("listing the elements of set {name}"), e))?;
    let mut out = Vec::new();
    for m in &replies {
        let s = parse_as!(m, Set, nftnl_set_elems_nlmsg_parse)
            .ok_or_else(|| foreign(format!("set {name}"), "its elements did not parse"))?;
        out.extend(s.elems());
    }
    Ok(out)
}

const END: u32 = libc::NFT_SET_ELEM_INTERVAL_END as u32;

/// Named sets in kernel order, and anonymous sets' values by name.
/// The elements of the interval sets named in `skip` are not listed.
pub(super) fn read_sets(
    sock: &mut Socket,
    table: &str,
    skip: &BTreeSet<String>,
) -> Result<(Vec<Set>, BTreeMap<String, AnonValues>), NftError> {
    let replies = request_in_table(
        sock,
        table,
        libc::NFT_MSG_GETSET,
        DUMP,
        obj::Kind::Set,
        None,
    )
    .map_err(|e| kernel("listing sets", e))?;
    let mut named = Vec::new();
    let mut anon = BTreeMap::new();
    for m in &replies {
        let s = parse_as!(m, Set, nftnl_set_nlmsg_parse)
            .ok_or_else(|| foreign("a set", "it did not parse"))?;
        if s.get_str(sys::NFTNL_SET_TABLE) != table {
            continue;
        }
        let name = s.get_str(sys::NFTNL_SET_NAME);
        let what = format!("set {name}");
        // The opening sets are runtime state, like bans: not the model's.
        if table == TABLE_NAME
            && super::super::openings::is_opening_set(&name, &s).map_err(|w| foreign(&what, w))?
        {
            continue;
        }
        let flags = s.get_u32(sys::NFTNL_SET_FLAGS);
        let key = (
            s.get_u32(sys::NFTNL_SET_KEY_TYPE),
            s.get_u32(sys::NFTNL_SET_KEY_LEN),
        );
        // A ban set (a default timeout: the hatch has none) is filled by
        // other programs; its elements are not part of the model.
        let ban_set = flags == libc::NFT_SET_TIMEOUT as u32 && s.is_set(sys::NFTNL_SET_TIMEOUT);
        let timed = if (flags == libc::NFT_SET_INTERVAL as u32 && skip.contains(&name)) || ban_set {
            Vec::new()
        } else {
            set_elems(sock, table, &name)?
        };
        let elems: Vec<(Vec<u8>, u32)> = timed.iter().map(|e| (e.key.clone(), e.flags)).collect();
        if flags & libc::NFT_SET_ANONYMOUS as u32 != 0 {
            anon.insert(
                name.clone(),
                anon_values(key, &elems).map_err(|w| foreign(&what, w))?,
            );
            continue;
        }
        let family = match key {
            (7, 4) => Family::Ipv4,
            (8, 16) => Family::Ipv6,
            _ => return Err(foreign(&what, format!("key type {key:?}"))),
        };
        let comment = udata_str(&s.get_data(sys::NFTNL_SET_USERDATA), udata::SET_COMMENT);
        let kind = if flags == libc::NFT_SET_INTERVAL as u32 {
            let keyed: Vec<(Vec<u8>, bool)> =
                elems.into_iter().map(|(k, f)| (k, f & END != 0)).collect();
            let width = key.1 as usize;
            let ranges = intervals::decode(&keyed, width).map_err(|w| foreign(&what, w))?;
            let nets: Option<Vec<IpNet>> = ranges
                .iter()
                .map(|&(a, b)| intervals::range_prefix(a, b, width))
                .collect();
            SetKind::Prefixes(nets.ok_or_else(|| foreign(&what, "a range that is not a prefix"))?)
        } else if flags == (libc::NFT_SET_TIMEOUT | libc::NFT_SET_EVAL) as u32 {
            SetKind::Meter {
                timeout_secs: (s.get_u64(sys::NFTNL_SET_TIMEOUT) / 1000) as u32,
                size: s.get_u32(sys::NFTNL_SET_DESC_SIZE),
            }
        } else if ban_set {
            SetKind::Bans {
                timeout_secs: (s.get_u64(sys::NFTNL_SET_TIMEOUT) / 1000) as u32,
                size: s.get_u32(sys::NFTNL_SET_DESC_SIZE),
            }
        } else if flags == libc::NFT_SET_TIMEOUT as u32 && !s.is_set(sys::NFTNL_SET_TIMEOUT) {
            SetKind::Hatch(hatch_element(&timed, family).map_err(|w| foreign(&what, w))?)
        } else {
            return Err(foreign(&what, format!("set flags {flags:#x}")));
        };
        named.push(Set {
            name,
            family,
            kind,
            comment,
        });
    }
    Ok((named, anon))
}

fn anon_values(key: (u32, u32), elems: &[(Vec<u8>, u32)]) -> Result<AnonValues, String> {
    let bytes = |len: usize| -> Result<Vec<u8>, String> {
        elems
            .iter()
            .map(|(k, f)| match (k.as_slice(), *f) {
                ([b], 0) if len == 1 => Ok(*b),
                _ => Err(format!("element {k:?} with flags {f:#x}")),
            })
            .collect()
    };
    let values = match key {
        (12, 1) => {
            let v = bytes(1)?;
            let protos = v
                .iter()
                .map(|b| {
                    [Protocol::Tcp, Protocol::Udp]
                        .into_iter()
                        .find(|p| p.number() == *b)
                        .ok_or_else(|| format!("protocol {b}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            AnonValues::Protocols(protos)
        }
        (13, 2) => {
            let keyed: Vec<(Vec<u8>, bool)> = elems
                .iter()
                .map(|(k, f)| (k.clone(), f & END != 0))
                .collect();
            let ranges = if keyed.iter().any(|(_, end)| *end) {
                intervals::decode(&keyed, 2)?
            } else {
                keyed
                    .iter()
                    .map(|(k, _)| {
                        let p = u128::from(u16::from_be_bytes([k[0], k[1]]));
                        (p, p)
                    })
                    .collect()
            };
            AnonValues::Ports {
                ranges: ranges
                    .into_iter()
                    .map(|(a, b)| PortRange {
                        first: a as u16,
                        last: b as u16,
                    })
                    .collect(),
                header: PortHeader::Any,
            }
        }
        (14, 1) => AnonValues::IcmpTypes(icmp(&bytes(1)?, &rules::ICMP_TYPES, |t| t.number())?),
        (29, 1) => AnonValues::Icmpv6Types(icmp(&bytes(1)?, &rules::ICMPV6_TYPES, |t| t.number())?),
        _ => return Err(format!("anonymous set of key type {key:?}")),
    };
    Ok(rules::sorted(values))
}

fn icmp<T: Copy>(v: &[u8], all: &[T], number: impl Fn(T) -> u8) -> Result<Vec<T>, String> {
    v.iter()
        .map(|b| {
            all.iter()
                .copied()
                .find(|t| number(*t) == *b)
                .ok_or_else(|| format!("icmp type {b}"))
        })
        .collect()
}

/// A hatch set holds the operator's address while the window lasts and
/// nothing once the kernel dropped it. The element's timeout is the one it
/// was armed with: the time left (its expiration) counts down from one
/// read to the next, so it is not part of the model.
fn hatch_element(elems: &[KernelElem], family: Family) -> Result<Option<HatchElement>, String> {
    let [e] = elems else {
        return match elems {
            [] => Ok(None),
            _ => Err(format!("{} elements in a hatch set", elems.len())),
        };
    };
    let addr: std::net::IpAddr = match (family, e.key.as_slice()) {
        (Family::Ipv4, k) if k.len() == 4 => {
            <[u8; 4]>::try_from(k).map_err(|x| x.to_string())?.into()
        }
        (Family::Ipv6, k) if k.len() == 16 => {
            <[u8; 16]>::try_from(k).map_err(|x| x.to_string())?.into()
        }
        _ => return Err(format!("an element of {} bytes", e.key.len())),
    };
    let Some(ms) = e.timeout_ms.filter(|_| e.flags == 0) else {
        return Err("an element without a timeout of its own".into());
    };
    // The kernel keeps timeouts in jiffies: a whole number of seconds may
    // come back a few milliseconds off.
    Ok(Some(HatchElement {
        addr,
        timeout_secs: (ms + 500) / 1000,
    }))
}
