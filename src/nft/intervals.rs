//! The element encoding of interval sets (`flags interval`), both ways.
//! Pure.
//!
//! The kernel's interval sets (rbtree/pipapo backends as nft drives them)
//! hold boundaries, not ranges: an element at each range's first key and
//! one flagged `NFT_SET_ELEM_INTERVAL_END` at the key *after* its last.
//! nft adds a leading end element at key 0 when the first range does not
//! start at 0 (it closes the "gap" before it), and a range reaching the
//! highest key has no end element: its start carries user data
//! `NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN` instead.
//! `nft --debug=netlink` of `elements = { 192.0.2.0/24 }` shows
//! `00000000 : 1 [end]  000200c0 : 0  000300c0 : 1 [end]`.
//!
//! Touching ranges (`192.0.2.5, 192.0.2.6`: adjacent hosts that form no
//! prefix) stay two ranges, as nft keeps them: the end element of the first
//! and the start element of the second share a key, the end sent first.
//! nft 1.0.6 sends `050200c0 : 0  060200c0 : 1 [end]  060200c0 : 0
//! 070200c0 : 1 [end]` for them, and lists them back as two elements.
//! Merging them here would load a set `nft -f` of `show` does not, and the
//! read-back would see one range where the model holds two prefixes.

use ipnet::IpNet;

/// One element as sent. The key is sent big-endian, as wide as the set's
/// key; it is kept here as a number so a million elements cost no
/// allocation each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Elem {
    pub key: u128,
    pub end: bool,
    /// The range runs to the highest key (no end element follows).
    pub open: bool,
}

impl Elem {
    /// The key as the kernel reads it: big-endian, `width` bytes.
    pub fn key_bytes(&self, width: usize) -> Vec<u8> {
        key(self.key, width)
    }
}

/// User data nft puts on the start of an open interval: TLV type 1
/// (NFTNL_UDATA_SET_ELEM_FLAGS), 4 bytes, host-order u32 1
/// (NFTNL_SET_ELEM_F_INTERVAL_OPEN).
pub fn open_udata() -> Vec<u8> {
    let mut u = vec![1, 4];
    u.extend_from_slice(&1u32.to_ne_bytes());
    u
}

fn key(value: u128, width: usize) -> Vec<u8> {
    value.to_be_bytes()[16 - width..].to_vec()
}

fn max(width: usize) -> u128 {
    if width >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * width)) - 1
    }
}

/// Checks inclusive `ranges` of keys `width` bytes wide before they are
/// encoded: sorted, each within the key's width, none overlapping (they may
/// touch). Returns how many elements [`elements`] will make of them.
pub fn check(
    ranges: impl IntoIterator<Item = (u128, u128)>,
    width: usize,
) -> Result<usize, String> {
    let mut count = 0;
    let mut prev: Option<u128> = None;
    for (i, (first, last)) in ranges.into_iter().enumerate() {
        if first > last || last > max(width) {
            return Err(format!("range {i} is empty or too wide"));
        }
        match prev {
            // `prev` ends below the highest key: a range reaching it is the
            // last one, and one after it would overlap.
            Some(p) if p.checked_add(1).is_none_or(|after| after > first) => {
                return Err(format!(
                    "ranges {} and {i} overlap (or are out of order)",
                    i - 1
                ));
            }
            None if first != 0 => count += 1,
            _ => {}
        }
        count += if last == max(width) { 1 } else { 2 };
        prev = Some(last);
    }
    Ok(count)
}

/// The elements of `ranges`, which [`check`] accepted, in the order nft
/// sends them. Lazy: a million prefixes are encoded as the batch is
/// written, never held as elements all at once.
pub fn elements(
    ranges: impl IntoIterator<Item = (u128, u128)>,
    width: usize,
) -> impl Iterator<Item = Elem> {
    ranges.into_iter().enumerate().flat_map(move |(i, range)| {
        let lead = (i == 0 && range.0 != 0).then_some(LEAD);
        lead.into_iter().chain(range_elements(range, width))
    })
}

/// The end element nft puts at key 0 when the first range starts above it.
const LEAD: Elem = Elem {
    key: 0,
    end: true,
    open: false,
};

/// One range's start element, and its end unless it runs to the top.
fn range_elements((first, last): (u128, u128), width: usize) -> impl Iterator<Item = Elem> {
    let open = last == max(width);
    let start = Elem {
        key: first,
        end: false,
        open,
    };
    let end = (!open).then(|| Elem {
        key: last + 1,
        end: true,
        open: false,
    });
    std::iter::once(start).chain(end)
}

/// [`check`] and [`elements`] together, for small sets.
pub fn encode(ranges: &[(u128, u128)], width: usize) -> Result<Vec<Elem>, String> {
    check(ranges.iter().copied(), width)?;
    Ok(elements(ranges.iter().copied(), width).collect())
}

/// The elements to delete and to add to turn a set holding `old` into one
/// holding `new` (both sorted, checked ranges), in one transaction.
///
/// The unit of change is a whole range, not an element. The kernel checks
/// each element it inserts against its neighbours as they are at that
/// moment (nft_rbtree's overlap detection): an end whose next element is
/// another end is refused as an overlap. Reusing the end of an old range
/// for a new, shorter one (`0.0.0.0/30` becoming `0.0.0.1, 0.0.0.3`) or
/// splitting a range in two trips that check in any order. Deleting every
/// range that changed, start and end, and adding the new ones in ascending
/// order means each insertion meets only complete ranges, as when `nft add
/// element` puts a range between existing ones. The leading end element
/// at key 0 goes or comes with the first range's start.
pub fn difference(
    old: impl IntoIterator<Item = (u128, u128)>,
    new: impl IntoIterator<Item = (u128, u128)>,
    width: usize,
) -> (Vec<Elem>, Vec<Elem>) {
    // Walked as they come, never collected: a delta of a few prefixes in
    // a big set costs a comparison per prefix, no copy of either side.
    let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
    let (mut gone, mut added) = (Vec::new(), Vec::new());
    let lead = |r: Option<&(u128, u128)>| r.is_some_and(|&(first, _)| first != 0);
    match (lead(old.peek()), lead(new.peek())) {
        (true, false) => gone.push(LEAD),
        (false, true) => added.push(LEAD),
        _ => {}
    }
    let pair = |r: (u128, u128), out: &mut Vec<Elem>| out.extend(range_elements(r, width));
    loop {
        match (old.peek().copied(), new.peek().copied()) {
            (Some(a), Some(b)) if a == b => {
                old.next();
                new.next();
            }
            (Some(a), Some(b)) if a < b => {
                pair(a, &mut gone);
                old.next();
            }
            (Some(a), None) => {
                pair(a, &mut gone);
                old.next();
            }
            (_, Some(b)) => {
                pair(b, &mut added);
                new.next();
            }
            (None, None) => break,
        }
    }
    (gone, added)
}

/// Ranges from elements as the kernel lists them (any order).
pub fn decode(elems: &[(Vec<u8>, bool)], width: usize) -> Result<Vec<(u128, u128)>, String> {
    let mut keys: Vec<(u128, bool)> = Vec::with_capacity(elems.len());
    for (k, end) in elems {
        if k.len() != width {
            return Err(format!("an element of {} bytes, not {width}", k.len()));
        }
        let v = k.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
        keys.push((v, *end));
    }
    // At a key where one range ends and the next starts, the end comes
    // first: it closes the range before the start opens the next.
    keys.sort_unstable_by_key(|&(k, end)| (k, !end));
    let mut out = Vec::with_capacity(keys.len() / 2);
    let mut start: Option<u128> = None;
    for (i, (k, end)) in keys.into_iter().enumerate() {
        match (start, end) {
            (None, false) => start = Some(k),
            (Some(s), true) => {
                out.push((s, k - 1));
                start = None;
            }
            (None, true) if i == 0 && k == 0 => {}
            _ => return Err(format!("unpaired interval element at key {k:#x}")),
        }
    }
    if let Some(s) = start {
        out.push((s, max(width)));
    }
    Ok(out)
}

/// The inclusive key range a prefix covers.
pub fn prefix_range(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u32::from(n.network()).into(),
            u32::from(n.broadcast()).into(),
        ),
        IpNet::V6(n) => (n.network().into(), n.broadcast().into()),
    }
}

/// The prefix that covers exactly `first..=last`, if one does.
pub fn range_prefix(first: u128, last: u128, width: usize) -> Option<IpNet> {
    let bits = 8 * width as u32;
    let span = last.checked_sub(first)?;
    // A prefix spans 2^k keys and starts on a multiple of 2^k.
    let host_bits = 128 - span.leading_zeros();
    let is_block = span.checked_add(1).is_none_or(|n| n.is_power_of_two());
    if !is_block || (host_bits < 128 && first & ((1u128 << host_bits) - 1) != 0) {
        return None;
    }
    let len = u8::try_from(bits.checked_sub(host_bits)?).ok()?;
    match width {
        4 => Some(IpNet::V4(
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(first as u32), len).ok()?,
        )),
        16 => Some(IpNet::V6(
            ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(first), len).ok()?,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<(u128, u128)> {
        s.iter()
            .map(|n| prefix_range(&n.parse::<IpNet>().unwrap()))
            .collect()
    }

    fn hex(elems: &[Elem], width: usize) -> Vec<String> {
        elems
            .iter()
            .map(|e| {
                let k: String = e
                    .key_bytes(width)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!(
                    "{k}{}{}",
                    if e.end { " end" } else { "" },
                    if e.open { " open" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn prefixes_encode_as_nft_does() {
        let e = encode(&nets(&["192.0.2.0/24", "198.51.100.7/32"]), 4).unwrap();
        assert_eq!(
            hex(&e, 4),
            [
                "00000000 end",
                "c0000200",
                "c0000300 end",
                "c6336407",
                "c6336408 end"
            ]
        );
    }

    #[test]
    fn the_whole_space_is_one_open_element() {
        assert_eq!(
            hex(&encode(&nets(&["0.0.0.0/0"]), 4).unwrap(), 4),
            ["00000000 open"]
        );
        let v6 = encode(&nets(&["::/0"]), 16).unwrap();
        assert_eq!(v6.len(), 1);
        assert!(v6[0].open && !v6[0].end);
        assert_eq!(
            hex(
                &encode(&nets(&["10.0.0.0/8", "128.0.0.0/1"]), 4).unwrap(),
                4
            ),
            ["00000000 end", "0a000000", "0b000000 end", "80000000 open"]
        );
    }

    #[test]
    fn a_range_from_zero_has_no_leading_end() {
        assert_eq!(hex(&encode(&[(0, 9)], 2).unwrap(), 2), ["0000", "000a end"]);
    }

    #[test]
    fn touching_ranges_share_a_key_as_nft_sends_them() {
        assert_eq!(
            hex(
                &encode(&nets(&["192.0.2.5/32", "192.0.2.6/32"]), 4).unwrap(),
                4
            ),
            [
                "00000000 end",
                "c0000205",
                "c0000206 end",
                "c0000206",
                "c0000207 end"
            ]
        );
        // Touching the highest key: the last range is open.
        assert_eq!(
            hex(
                &encode(&nets(&["255.255.255.254/32", "255.255.255.255/32"]), 4).unwrap(),
                4
            ),
            ["00000000 end", "fffffffe", "ffffffff end", "ffffffff open"]
        );
    }

    #[test]
    fn overlapping_or_unsorted_ranges_are_refused() {
        assert!(encode(&nets(&["10.0.0.0/24", "10.0.0.128/25"]), 4).is_err());
        assert!(encode(&nets(&["10.0.1.0/24", "10.0.0.0/24"]), 4).is_err());
        assert!(encode(&[(0, u128::from(u32::MAX)), (5, 6)], 4).is_err());
    }

    #[test]
    fn decode_inverts_encode_in_any_order() {
        for (set, width) in [
            (vec!["192.0.2.0/24", "198.51.100.7/32"], 4),
            (vec!["0.0.0.0/0"], 4),
            (vec!["10.0.0.0/8", "128.0.0.0/1"], 4),
            (vec!["::/0"], 16),
            (vec!["2001:db8::/32", "ffff::/16"], 16),
            (vec!["192.0.2.5/32", "192.0.2.6/32", "192.0.2.8/29"], 4),
            (vec!["0.0.0.0/32", "0.0.0.1/32", "255.255.255.255/32"], 4),
            (vec!["::/128", "::1/128", "ffff::/16"], 16),
        ] {
            let ranges = nets(&set);
            let mut elems: Vec<(Vec<u8>, bool)> = encode(&ranges, width)
                .unwrap()
                .into_iter()
                .map(|e| (e.key_bytes(width), e.end))
                .collect();
            elems.reverse();
            let back = decode(&elems, width).unwrap();
            assert_eq!(back, ranges);
            let prefixes: Vec<String> = back
                .iter()
                .map(|&(a, b)| range_prefix(a, b, width).unwrap().to_string())
                .collect();
            let want: Vec<String> = set
                .iter()
                .map(|s| s.parse::<IpNet>().unwrap().to_string())
                .collect();
            assert_eq!(prefixes, want);
        }
    }

    #[test]
    fn difference_replaces_whole_ranges() {
        let diff = |a: &[&str], b: &[&str]| {
            let (gone, added) = difference(nets(a), nets(b), 4);
            (hex(&gone, 4), hex(&added, 4))
        };
        // An added host touching a kept one: only its own pair.
        let (gone, added) = diff(&["192.0.2.5/32"], &["192.0.2.5/32", "192.0.2.6/32"]);
        assert!(gone.is_empty());
        assert_eq!(added, ["c0000206", "c0000207 end"]);
        // A range split in two: the old one goes whole, start and end.
        let (gone, added) = diff(&["0.0.0.4/30"], &["0.0.0.5/32", "0.0.0.7/32"]);
        assert_eq!(gone, ["00000004", "00000008 end"]);
        assert_eq!(
            added,
            ["00000005", "00000006 end", "00000007", "00000008 end"]
        );
        // The first range no longer starting at 0 brings the leading end.
        let (gone, added) = diff(&["0.0.0.0/30"], &["0.0.0.3/32"]);
        assert_eq!(gone, ["00000000", "00000004 end"]);
        assert_eq!(added, ["00000000 end", "00000003", "00000004 end"]);
        assert_eq!(diff(&["10.0.0.0/8"], &["10.0.0.0/8"]), (vec![], vec![]));
    }

    #[test]
    fn a_range_that_is_no_prefix_is_reported() {
        assert_eq!(range_prefix(1, 2, 4), None);
        assert_eq!(range_prefix(0, 2, 4), None);
        assert_eq!(range_prefix(4, 7, 4).unwrap().to_string(), "0.0.0.4/30");
    }
}
