//! Source addresses as written in profiles and list files: an address
//! (`192.0.2.10`, `2001:db8::1`) or a prefix with no host bits set.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::bounded::LINE_LIMIT;

mod aggregate;
pub use aggregate::aggregate;

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

/// The lines of `text`, as `str::lines` cuts them (at `\n`, a `\r` before
/// it dropped), by a plain byte loop: `lines` looks for each end with a
/// general search whose setup, paid once a line, cost as much as parsing
/// the line's prefix.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let mut end = start;
        while end < bytes.len() && bytes[end] != b'\n' {
            end += 1;
        }
        let next = end + 1;
        if end < bytes.len() && end > start && bytes[end - 1] == b'\r' {
            end -= 1;
        }
        // Both ends are at a `\n` or `\r`, or the text's end: char
        // boundaries.
        let line = &text[start..end];
        start = next;
        Some(line)
    })
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

/// Lists bigger than this are cut in two at a line break and parsed on two
/// threads: a million-prefix file (17 MB) parses in about half the time on
/// the two cores of a small server.
const SPLIT_ABOVE: usize = 4 << 20;

/// Parses a list file: one address or prefix per line; `#` starts a
/// comment; blank lines are skipped. Lines longer than
/// [`bounded::LINE_LIMIT`] are errors; past [`LIST_ERRORS_SHOWN`] errors,
/// the last one counts the rest.
pub fn parse_list(text: &str) -> (Vec<IpNet>, Vec<ListError>) {
    let two = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let cut = (text.len() > SPLIT_ABOVE && two)
        .then(|| {
            text[text.len() / 2..]
                .find('\n')
                .map(|i| text.len() / 2 + i + 1)
        })
        .flatten();
    let chunk = match cut {
        Some(cut) => {
            let (first, second) = text.split_at(cut);
            let (mut a, b) = std::thread::scope(|s| {
                let later = s.spawn(|| parse_chunk(second));
                (parse_chunk(first), later.join())
            });
            // A panic in the parser is a bug; it is not hidden by parsing
            // again on one thread.
            let b = b.unwrap_or_else(|e| std::panic::resume_unwind(e));
            a.append(b);
            a
        }
        None => parse_chunk(text),
    };
    chunk.finish()
}

/// What one part of a list file parsed to, its lines numbered from 1.
struct Chunk {
    nets: Vec<IpNet>,
    /// The first [`LIST_ERRORS_SHOWN`] bad lines.
    errors: Vec<ListError>,
    /// Bad lines past those.
    more: usize,
    lines: usize,
}

impl Chunk {
    /// `next`, the part of the file after this one, appended.
    fn append(&mut self, next: Chunk) {
        self.nets.extend(next.nets);
        let offset = self.lines;
        for mut e in next.errors {
            if self.errors.len() < LIST_ERRORS_SHOWN {
                e.line += offset;
                self.errors.push(e);
            } else {
                self.more += 1;
            }
        }
        self.more += next.more;
        self.lines += next.lines;
    }

    fn finish(mut self) -> (Vec<IpNet>, Vec<ListError>) {
        if let (Some(last), true) = (self.errors.last_mut(), self.more > 0) {
            last.message += &format!(
                " (and {} more bad lines after this one, not shown)",
                self.more
            );
        }
        (self.nets, self.errors)
    }
}

fn parse_chunk(text: &str) -> Chunk {
    // Room for a line of every 16 bytes (a /32 with its newline takes 9
    // to 19): a big list is not copied over and over as it grows.
    let mut chunk = Chunk {
        nets: Vec::with_capacity(text.len() / 16),
        errors: Vec::new(),
        more: 0,
        lines: 0,
    };
    for (i, line) in lines(text).enumerate() {
        chunk.lines = i + 1;
        let error = match parse_line(line) {
            Ok(None) => continue,
            Ok(Some(net)) => {
                chunk.nets.push(net);
                continue;
            }
            Err(e) => e,
        };
        if chunk.errors.len() < LIST_ERRORS_SHOWN {
            let (column, message) = error;
            chunk.errors.push(ListError {
                line: i + 1,
                column,
                message,
            });
        } else {
            chunk.more += 1;
        }
    }
    chunk
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
    if let Some(net) = plain_v4(line.as_bytes()) {
        return Ok(Some(net));
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

/// The line's IPv4 prefix when it is written the one way nearly every
/// line of a big list is: `a.b.c.d` or `a.b.c.d/len`, in decimal without
/// leading zeros, host bits clear, blanks or tabs around, no comment.
/// Anything else is `None` and goes the general way ([`parse_prefix`]),
/// which accepts every line this does, with the same prefix: this only
/// spares a million-line list the general parser's work (about half of a
/// no-op apply of one).
fn plain_v4(line: &[u8]) -> Option<IpNet> {
    let blank = |at: usize| matches!(line.get(at), Some(b' ' | b'\t'));
    let mut at = 0;
    while blank(at) {
        at += 1;
    }
    let mut addr = 0u32;
    for octet in 0..4 {
        if octet > 0 {
            (line.get(at) == Some(&b'.')).then_some(())?;
            at += 1;
        }
        let (value, next) = decimal(line, at)?;
        addr = addr << 8 | u32::from(u8::try_from(value).ok()?);
        at = next;
    }
    let mut len = 32;
    if line.get(at) == Some(&b'/') {
        let (value, next) = decimal(line, at + 1)?;
        len = u8::try_from(value).ok().filter(|&l| l <= 32)?;
        at = next;
    }
    while blank(at) {
        at += 1;
    }
    let host_bits = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    (at == line.len() && addr & host_bits == 0).then_some(())?;
    ipnet::Ipv4Net::new(addr.into(), len).ok().map(IpNet::V4)
}

/// The decimal number of one to three digits at `at` of `line`, with no
/// leading zero (as the standard parser wants them), and where it ends.
fn decimal(line: &[u8], at: usize) -> Option<(u16, usize)> {
    let mut value = 0u16;
    let mut end = at;
    while let Some(d) = line.get(end).filter(|d| d.is_ascii_digit()) {
        if end - at == 3 || (end > at && value == 0) {
            return None;
        }
        value = value * 10 + u16::from(d - b'0');
        end += 1;
    }
    (end > at).then_some((value, end))
}

/// Whether `inner` lies entirely inside one of `outer` (which is aggregated,
/// so a prefix covered by their union is inside one of them).
pub fn covered(inner: &IpNet, outer: &[IpNet]) -> bool {
    outer.iter().any(|o| o.contains(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

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
        let padded = format!("{}10.0.0.0/8\n", " ".repeat(LINE_LIMIT));
        assert_eq!(
            parse_list(&padded).1.len(),
            1,
            "a long line is refused, however plain"
        );
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

    /// A list big enough to be parsed in two halves reads as it would in
    /// one: the same prefixes in the same order, bad lines numbered from
    /// the file's start, the same count of those not shown.
    #[test]
    fn a_list_parsed_in_two_halves_reads_as_in_one() {
        let mut text = String::new();
        let mut i = 0u32;
        while text.len() <= SPLIT_ABOVE + 4096 {
            i += 1;
            if i % 20_000 == 3 {
                text.push_str("bad line\r\n");
            } else {
                text.push_str(&format!("{}\n", std::net::Ipv4Addr::from(i << 3)));
            }
        }
        let whole = parse_chunk(&text).finish();
        let split = parse_list(&text);
        assert_eq!(split, whole);
        let lines: Vec<usize> = split.1.iter().map(|e| e.line).collect();
        assert!(lines.iter().any(|&l| l > i as usize / 2), "{lines:?}");
        let mut junk = "x\n".repeat(SPLIT_ABOVE / 2 + 10);
        junk.push_str("192.0.2.1\n");
        let split = parse_list(&junk);
        assert_eq!(split, parse_chunk(&junk).finish());
        assert!(split.1.last().unwrap().message.contains("more bad lines"));
    }

    proptest::proptest! {

        #[test]
        fn lines_are_cut_as_str_lines_cuts_them(text in "[a\r\n\u{e9}]{0,12}") {
            proptest::prop_assert_eq!(lines(&text).collect::<Vec<_>>(), text.lines().collect::<Vec<_>>());
        }

        #[test]
        fn the_plain_path_agrees_with_the_general_one(
            line in "[ \t]{0,2}[0-9]{1,4}(\\.[0-9]{1,4}){2,4}(/[0-9]{1,3})?[ \t#x]{0,2}",
        ) {
            if let Some(fast) = plain_v4(line.as_bytes()) {
                proptest::prop_assert_eq!(Ok(fast), parse_prefix(&line), "{:?}", line);
            }
        }
    }

    #[test]
    fn the_plain_path_takes_plain_lines_only() {
        assert_eq!(plain_v4(b" 10.0.0.0/8\t"), Some(net("10.0.0.0/8")));
        assert_eq!(plain_v4(b"192.0.2.1"), Some(net("192.0.2.1/32")));
        assert_eq!(plain_v4(b"0.0.0.0/0"), Some(net("0.0.0.0/0")));
        for general in [
            "010.0.0.0/8",
            "10.0.0.0/08",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "256.0.0.0",
            "10.0.0",
            "10.0.0.0.0",
            "10.0.0.0 # office",
            "2001:db8::/32",
            "",
            "\u{a0}10.0.0.0/8",
        ] {
            assert_eq!(plain_v4(general.as_bytes()), None, "{general:?}");
        }
        let (nets, errors) = parse_list("10.0.0.1/8\n 10.0.0.0/8 # ok\n\u{a0}192.0.2.1\n");
        assert_eq!(nets, [net("10.0.0.0/8"), net("192.0.2.1/32")]);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn list_files_report_line_and_column() {
        let (nets, errors) = parse_list("# admins\n192.0.2.1\n  10.0.0.1/8 # bad\n\n2001:db8::1\n");
        assert_eq!(nets.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (3, 3));
    }
}
