//! Profile text in generated files and scripts. Descriptions, group names
//! and log prefixes come from a profile someone else may have written: none
//! of them may end a quoted string, start a new line (`COMMIT`, a second
//! command), expand (`$(...)`, backticks) or be read as an option.
//!
//! Two kinds of text, two rules:
//! - free text (comments, the profile name in a header) is informational:
//!   every byte outside a small safe set becomes `_`, so it can always be
//!   written, and the `file:line` it starts with survives;
//! - names the kernel or a tool acts on (interfaces, set names, log
//!   prefixes) must already be safe: changing one would change what the
//!   rule does, so the emitter refuses instead.

/// Bytes that mean nothing to iptables-restore's quoted strings, to ipset
/// restore, or to sh inside single quotes: letters, digits, space and
/// punctuation without quotes, backslash, `$`, backtick, `;`, `&`, `|`,
/// `<`, `>`, `!`, `#`, `*`, `?`, `[`, `]`, `{`, `}`, `(`, `)`, `~`.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || " .,:/_+=@%^-".contains(c)
}

/// Free text as it may stand between double quotes in an iptables-restore
/// file (or single quotes in sh): every other byte becomes `_`.
pub fn free_text(text: &str) -> String {
    text.chars()
        .map(|c| if is_plain(c) { c } else { '_' })
        .collect()
}

/// Whether `name` can be written as it is: plain bytes only, no space, and
/// no leading `-` (it would read as an option).
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('-') && name.chars().all(|c| c != ' ' && is_plain(c))
}

/// Whether a log prefix can be written between double quotes unchanged:
/// plain bytes (spaces allowed), no leading `-`.
pub fn is_safe_prefix(prefix: &str) -> bool {
    !prefix.starts_with('-') && prefix.chars().all(is_plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_keeps_the_origin_and_loses_every_breakout() {
        let hostile = "p.toml:3 x\" -j ACCEPT\nCOMMIT\n$(reboot) `id`; rm -rf / 'q' \\ #";
        let safe = free_text(hostile);
        assert!(safe.starts_with("p.toml:3 x_ -j ACCEPT_COMMIT_"), "{safe}");
        for bad in ['"', '\'', '\n', '\r', '$', '`', ';', '\\', '#', '(', ')'] {
            assert!(!safe.contains(bad), "{bad:?} survived in {safe}");
        }
    }

    #[test]
    fn names_that_could_act_are_not_safe() {
        assert!(is_safe_name("wg-net_v4"));
        assert!(is_safe_name("eth0.100"));
        for bad in ["", "-j", "a b", "a\"b", "a\nb", "$(x)", "a;b", "`x`"] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        assert!(is_safe_prefix("fwharden drop: "));
        assert!(!is_safe_prefix("--log-level 0"));
        assert!(!is_safe_prefix("x\" -j ACCEPT"));
    }
}
