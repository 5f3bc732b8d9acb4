//! Aggregation of prefix lists on plain integers.

use ipnet::IpNet;

/// Sorted, with overlapping and adjacent prefixes merged, IPv4 first: the
/// fewest prefixes that cover exactly the addresses `nets` cover.
///
/// The same as `ipnet`'s `IpNet::aggregate` (a test holds it to that),
/// done on plain integers: a million-prefix list is aggregated when it is
/// loaded and again when rules are checked for shadowing, and `ipnet`'s
/// took about a third of a no-op apply of one.
pub fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    // An IPv4 range as one u64, its first address above its last.
    let mut v4: Vec<u64> = Vec::with_capacity(nets.len());
    let mut v6: Vec<(u128, u128)> = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => v4.push(
                u64::from(u32::from(n.network())) << 32 | u64::from(u32::from(n.broadcast())),
            ),
            IpNet::V6(n) => v6.push((n.network().into(), n.broadcast().into())),
        }
    }
    sort_by_first(&mut v4);
    let v4 = v4.into_iter().map(|r| ((r >> 32) as u32, r as u32));
    let mut out = Vec::with_capacity(nets.len());
    for (first, last) in merged(v4) {
        cover(u64::from(first), u64::from(last), 32, &mut |a, len| {
            // A block of a 32-bit range starts below 2^32.
            let a = u32::try_from(a).unwrap_or(u32::MAX);
            out.push(IpNet::V4(
                ipnet::Ipv4Net::new(a.into(), len).expect("len <= 32"),
            ));
        });
    }
    v6.sort_unstable();
    for (first, last) in merged(v6) {
        cover6(first, last, &mut |a, len| {
            out.push(IpNet::V6(
                ipnet::Ipv6Net::new(a.into(), len).expect("len <= 128"),
            ));
        });
    }
    out
}

/// Sorts `keys` by their upper 32 bits (a range's first address), in two
/// passes of 16 bits each instead of comparing: a million IPv4 ranges, as
/// a big list's file holds them (in any order), sort several times faster.
/// Ranges of one first address stay in any order, which merging allows.
fn sort_by_first(keys: &mut Vec<u64>) {
    if keys.len() < 4096 {
        keys.sort_unstable();
        return;
    }
    let mut other = vec![0u64; keys.len()];
    for shift in [32u32, 48] {
        let mut counts = vec![0usize; 1 << 16];
        for k in keys.iter() {
            counts[(k >> shift) as usize & 0xffff] += 1;
        }
        let mut at = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        for &k in keys.iter() {
            let slot = &mut counts[(k >> shift) as usize & 0xffff];
            other[*slot] = k;
            *slot += 1;
        }
        std::mem::swap(keys, &mut other);
    }
}

/// Inclusive ranges, sorted by their start, with overlapping and adjacent
/// ones merged.
fn merged<T: Copy + Ord + Bounded>(ranges: impl IntoIterator<Item = (T, T)>) -> Vec<(T, T)> {
    let mut out: Vec<(T, T)> = Vec::new();
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if prev.1 == T::MAX || first <= prev.1.next() => {
                prev.1 = prev.1.max(last);
            }
            _ => out.push((first, last)),
        }
    }
    out
}

/// The integer types of the two families' addresses.
trait Bounded {
    const MAX: Self;
    /// The next value; only called below `MAX`.
    fn next(self) -> Self;
}

impl Bounded for u32 {
    const MAX: u32 = u32::MAX;
    fn next(self) -> u32 {
        self + 1
    }
}

impl Bounded for u128 {
    const MAX: u128 = u128::MAX;
    fn next(self) -> u128 {
        self + 1
    }
}

/// The fewest aligned blocks that cover `first..=last` of a `bits`-bit
/// space (at most 32 bits, so a u64 holds the end of the space), left to
/// right: each the largest that starts at the first address not yet
/// covered and fits.
fn cover(mut first: u64, last: u64, bits: u8, emit: &mut impl FnMut(u64, u8)) {
    while first <= last {
        let align = first.trailing_zeros().min(u32::from(bits));
        let fits = (last - first + 1).ilog2();
        let size = align.min(fits);
        emit(first, bits - size as u8);
        first += 1 << size;
    }
}

/// [`cover`] for the 128-bit space, where the block after the last one
/// would not fit in the integer.
fn cover6(mut first: u128, last: u128, emit: &mut impl FnMut(u128, u8)) {
    loop {
        let align = first.trailing_zeros().min(128);
        let size = match (last - first).checked_add(1) {
            Some(count) => align.min(count.ilog2()),
            // first is 0 and last the end of the space: one block, ::/0.
            None => 128,
        };
        emit(first, 128 - size as u8);
        let step = 1u128.checked_shl(size).unwrap_or(0);
        match first.checked_add(step) {
            Some(next) if step != 0 && next - 1 < last => first = next,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`aggregate`] replaced: `ipnet`'s, IPv4 first.
    fn ipnet_aggregate(nets: &[IpNet]) -> Vec<IpNet> {
        let mut out = IpNet::aggregate(&nets.to_vec());
        out.sort_by_key(|n| (matches!(n, IpNet::V6(_)), *n));
        out
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn aggregate_covers_the_ends_of_both_spaces() {
        for nets in [
            vec![net("0.0.0.0/0")],
            vec![net("::/0")],
            vec![net("255.255.255.255/32"), net("255.255.255.254/32")],
            vec![
                net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"),
                net("::/1"),
                net("8000::/2"),
            ],
            vec![
                net("0.0.0.0/1"),
                net("128.0.0.0/1"),
                net("::/0"),
                net("10.0.0.0/8"),
            ],
            vec![net("0.0.0.1/32"), net("255.255.255.255/32")],
            vec![
                net("::1/128"),
                net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"),
            ],
            vec![],
        ] {
            assert_eq!(aggregate(&nets), ipnet_aggregate(&nets), "{nets:?}");
        }
        assert_eq!(
            aggregate(&[net("0.0.0.0/1"), net("128.0.0.0/1")]),
            [net("0.0.0.0/0")]
        );
    }

    #[test]
    fn aggregate_of_a_big_list_is_ipnets() {
        // Enough IPv4 prefixes to be radix sorted, crowded into a /14 so
        // that many merge; a fixed LCG, so any failure repeats.
        let mut x: u64 = 7;
        let nets: Vec<IpNet> = (0..20_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let a = 0x0a00_0000 | (x >> 40) as u32 & 0x3_ffff;
                let len = [32, 32, 31, 30, 28, 24][(x >> 20) as usize % 6];
                IpNet::V4(ipnet::Ipv4Net::new(a.into(), len).unwrap().trunc())
            })
            .collect();
        assert_eq!(aggregate(&nets), ipnet_aggregate(&nets));
    }

    /// Prefixes crowded into a few small corners of both spaces (the ends
    /// among them), so that they overlap, touch and merge often.
    fn crowded() -> impl proptest::strategy::Strategy<Value = Vec<IpNet>> {
        use proptest::prelude::*;
        let v4 = (0u32..4, 0u32..256, 20u8..=32).prop_map(|(corner, low, len)| {
            let base = [0u32, 0x0a00_0000, 0x7fff_ff00, 0xffff_ff00][corner as usize];
            let a = std::net::Ipv4Addr::from(base.wrapping_add(low));
            IpNet::V4(ipnet::Ipv4Net::new(a, len).unwrap().trunc())
        });
        let v6 = (0u32..3, 0u128..256, 116u8..=128).prop_map(|(corner, low, len)| {
            let base = [0u128, 1 << 127, u128::MAX - 255][corner as usize];
            let a = std::net::Ipv6Addr::from(base.wrapping_add(low));
            IpNet::V6(ipnet::Ipv6Net::new(a, len).unwrap().trunc())
        });
        proptest::collection::vec(prop_oneof![v4, v6], 0..40)
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        // Few cases: each sorts thousands of keys, slow in a debug build.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
        #[test]
        fn sort_by_first_sorts_by_the_upper_half(mut keys in proptest::collection::vec(
            proptest::prop_oneof![proptest::prelude::any::<u64>(), 0u64..70_000, (0u64..3).prop_map(|k| k << 40)],
            4096..4500,
        )) {
            let mut want = keys.clone();
            want.sort_unstable();
            sort_by_first(&mut keys);
            let mut got_each = keys.clone();
            got_each.sort_unstable();
            proptest::prop_assert_eq!(&got_each, &want, "the same keys");
            proptest::prop_assert!(keys.windows(2).all(|w| w[0] >> 32 <= w[1] >> 32));
        }
    }

    proptest::proptest! {
        #[test]
        fn aggregate_is_ipnets(nets in crowded()) {
            proptest::prop_assert_eq!(aggregate(&nets), ipnet_aggregate(&nets));
        }
    }
}
