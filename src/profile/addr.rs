//! Source addresses as written in profiles and list files: an address
//! (`192.0.2.10`, `2001:db8::1`) or a prefix with no host bits set.

use std::net::IpAddr;

use ipnet::IpNet;

/// Whether a `from`/group item looks like an address rather than a name.
/// Names start with a letter and hold no `.`, `:` or `/`.
pub fn looks_like_address(s: &str) -> bool {
    s.contains(['.', ':', '/']) || s.starts_with(|c: char| c.is_ascii_digit())
}

/// Parses an address or prefix. The error says what to write instead.
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = s.parse().map_err(|_| {
        let hint = if s.contains('/') {
            "an address and a prefix length, e.g. 192.0.2.0/24 or 2001:db8::/32"
        } else {
            "an IPv4 or IPv6 address, e.g. 192.0.2.10 or 2001:db8::1"
        };
        format!("\"{s}\" is not an address or prefix: write {hint}")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "\"{s}\" has host bits set: write \"{}\" for the network, or \"{}\" for the one host",
            net.trunc(),
            IpNet::from(net.addr())
        ));
    }
    Ok(net)
}

/// One problem in a list file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses a list file: one address or prefix per line; `#` starts a
/// comment; blank lines are skipped.
pub fn parse_list(text: &str) -> (Vec<IpNet>, Vec<ListError>) {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        let item = content.trim();
        if item.is_empty() {
            continue;
        }
        match parse_prefix(item) {
            Ok(net) => nets.push(net),
            Err(message) => errors.push(ListError {
                line: i + 1,
                column: content.len() - content.trim_start().len() + 1,
                message,
            }),
        }
    }
    (nets, errors)
}

/// Sorted, with overlapping and adjacent prefixes merged, IPv4 first.
pub fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&nets.to_vec());
    out.sort_by_key(|n| (matches!(n, IpNet::V6(_)), *n));
    out
}

/// Whether `inner` lies entirely inside one of `outer` (which is aggregated,
/// so a prefix covered by their union is inside one of them).
pub fn covered(inner: &IpNet, outer: &[IpNet]) -> bool {
    outer.iter().any(|o| o.contains(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_refused_with_the_normal_form() {
        let e = parse_prefix("10.0.0.1/24").unwrap_err();
        assert!(e.contains("\"10.0.0.0/24\""), "{e}");
        assert!(e.contains("\"10.0.0.1/32\""), "{e}");
        assert_eq!(parse_prefix("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(
            parse_prefix("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn aggregate_merges_adjacent_and_overlapping() {
        let nets: Vec<IpNet> = [
            "10.0.1.0/24",
            "10.0.0.0/24",
            "10.0.0.5/32",
            "2001:db8::/33",
            "2001:db8:8000::/33",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let out: Vec<String> = aggregate(&nets).iter().map(|n| n.to_string()).collect();
        assert_eq!(out, ["10.0.0.0/23", "2001:db8::/32"]);
    }

    #[test]
    fn list_files_report_line_and_column() {
        let (nets, errors) = parse_list("# admins\n192.0.2.1\n  10.0.0.1/8 # bad\n\n2001:db8::1\n");
        assert_eq!(nets.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (3, 3));
    }
}
