//! Source addresses as written in profiles and list files: an address
//! (`192.0.2.10`, `2001:db8::1`) or a prefix with no host bits set.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::bounded::LINE_LIMIT;

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

/// How many bad lines of one list file are reported: a file of garbage
/// says so in a screenful, not in a million diagnostics.
pub const LIST_ERRORS_SHOWN: usize = 20;

/// Parses a list file: one address or prefix per line; `#` starts a
/// comment; blank lines are skipped. Lines longer than
/// [`bounded::LINE_LIMIT`] are errors; past [`LIST_ERRORS_SHOWN`] errors,
/// the last one counts the rest.
pub fn parse_list(text: &str) -> (Vec<IpNet>, Vec<ListError>) {
    let mut nets = Vec::new();
    let mut errors = Vec::new();
    let mut more = 0usize;
    for (i, line) in text.lines().enumerate() {
        let error = match parse_line(line) {
            Ok(None) => continue,
            Ok(Some(net)) => {
                nets.push(net);
                continue;
            }
            Err(e) => e,
        };
        if errors.len() < LIST_ERRORS_SHOWN {
            let (column, message) = error;
            errors.push(ListError {
                line: i + 1,
                column,
                message,
            });
        } else {
            more += 1;
        }
    }
    if let (Some(last), true) = (errors.last_mut(), more > 0) {
        last.message += &format!(" (and {more} more bad lines after this one, not shown)");
    }
    (nets, errors)
}

/// One line of a list file: a prefix, nothing (blank or a comment), or the
/// column and message of what is wrong.
fn parse_line(line: &str) -> Result<Option<IpNet>, (usize, String)> {
    if line.len() > LINE_LIMIT {
        return Err((
            LINE_LIMIT + 1,
            format!(
                "this line is {} bytes long; a line holds one address or prefix (and a comment) in at most {LINE_LIMIT} bytes",
                line.len()
            ),
        ));
    }
    let content = line.split('#').next().unwrap_or("");
    let item = content.trim();
    if item.is_empty() {
        return Ok(None);
    }
    parse_prefix(item)
        .map(Some)
        .map_err(|message| (content.len() - content.trim_start().len() + 1, message))
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
    fn long_lines_and_floods_of_bad_lines_are_bounded() {
        let long = format!("192.0.2.1\n{}\n10.0.0.0/8\n", "1".repeat(LINE_LIMIT + 1));
        let (nets, errors) = parse_list(&long);
        assert_eq!(nets.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
        assert!(
            errors[0].message.contains("4097 bytes long"),
            "{:?}",
            errors[0]
        );

        let junk = "x\n".repeat(1000) + "192.0.2.1\n";
        let (nets, errors) = parse_list(&junk);
        assert_eq!(nets.len(), 1, "good lines still count");
        assert_eq!(errors.len(), LIST_ERRORS_SHOWN);
        let last = &errors[LIST_ERRORS_SHOWN - 1].message;
        assert!(last.contains("and 980 more bad lines"), "{last}");
    }

    #[test]
    fn list_files_report_line_and_column() {
        let (nets, errors) = parse_list("# admins\n192.0.2.1\n  10.0.0.1/8 # bad\n\n2001:db8::1\n");
        assert_eq!(nets.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (3, 3));
    }
}
