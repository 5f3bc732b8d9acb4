//! A shipped profile turned into a copy to edit: its placeholders marked.
//!
//! The shipped profiles name documentation addresses (RFC 5737's
//! 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and RFC 3849's
//! 2001:db8::/32) where an operator's own addresses go: they match nobody,
//! so a copy applied unedited locks the admin group out of SSH. `init`
//! marks each line that holds one, and says so at the top.

/// The documentation ranges, as they start in profile text.
const PLACEHOLDERS: [&str; 4] = ["192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:"];

/// The mark put at the end of a line holding a placeholder.
pub const MARK: &str = "# EDIT: documentation address, matches nobody: put your own";

/// `text` (profile `from`) with a header saying where it came from, and
/// each line holding a documentation address marked; the 1-based line
/// numbers (in the result) of the marked lines.
pub fn editable_copy(from: &str, text: &str) -> (String, Vec<usize>) {
    let holds = |line: &str| {
        let code = line.split('#').next().unwrap_or(line);
        PLACEHOLDERS.iter().any(|p| code.contains(p))
    };
    let marked: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| holds(l))
        .map(|(i, _)| i)
        .collect();
    let mut header = vec![format!(
        "# A copy of profile {from}, written by `fwharden init`: edit it, then\n\
         # `fwharden check` it and `fwharden apply --dry-run` it."
    )];
    if !marked.is_empty() {
        header.push(
            "# Lines marked EDIT hold documentation addresses (192.0.2.0/24,\n\
             # 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32): they match nobody.\n\
             # Put your own addresses there before applying."
                .to_string(),
        );
    }
    let header = header.join("\n") + "\n\n";
    let offset = header.lines().count();
    let mut out = header;
    for (i, line) in text.lines().enumerate() {
        out.push_str(line);
        // A line with a comment of its own keeps it; the header names it.
        if marked.contains(&i) && !line.contains('#') {
            out.push_str("  ");
            out.push_str(MARK);
        }
        out.push('\n');
    }
    (out, marked.iter().map(|i| i + offset + 1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_addresses_are_marked_and_the_copy_still_parses() {
        let text = crate::profile::builtin::profile("vps-profile").unwrap();
        let (copy, lines) = editable_copy("vps-profile", text);
        assert!(!lines.is_empty());
        let all: Vec<&str> = copy.lines().collect();
        for n in &lines {
            assert!(all[n - 1].contains("192.0.2.10"), "{}", all[n - 1]);
            assert!(all[n - 1].ends_with(MARK), "{}", all[n - 1]);
        }
        assert!(copy.starts_with("# A copy of profile vps-profile"));
        // It loads, as a profile of its own name.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.toml"), &copy).unwrap();
        let search = crate::profile::SearchPath {
            dirs: vec![dir.path().to_path_buf()],
            builtin: true,
        };
        let loaded = crate::profile::load("mine", &search);
        assert!(loaded.profile.is_some(), "{:?}", loaded.diagnostics);
    }

    #[test]
    fn a_profile_without_placeholders_gets_no_mark() {
        let (copy, lines) = editable_copy("x", "[[rule]]\nallow = \"http\"\n");
        assert!(lines.is_empty());
        assert!(!copy.contains("EDIT"));
    }
}
