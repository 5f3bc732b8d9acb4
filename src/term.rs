//! Text from outside fwharden, shown to a person: a profile's description,
//! a value a diagnostic quotes, a path, a process name. Any of them can
//! hold control characters: an escape sequence in a description would
//! recolour, retitle or rewrite the terminal of whoever runs `fwharden
//! list`, and a newline would forge a line of output. [`Safe`] writes such
//! text with every control character escaped (`\n`, `\u{1b}`), and the
//! Unicode marks that reorder what follows them (bidirectional overrides)
//! too. JSON output needs none of this: serde escapes control characters.

use std::fmt;

/// `text`, escaped for a terminal, as one line.
pub fn safe(text: &str) -> Safe<'_> {
    Safe {
        text,
        keep_newlines: false,
    }
}

/// `text`, escaped for a terminal, its line breaks kept: for a message of
/// several lines (an error chain) that may quote outside text.
pub fn safe_lines(text: &str) -> Safe<'_> {
    Safe {
        text,
        keep_newlines: true,
    }
}

/// Displays its text with control characters escaped.
#[derive(Debug, Clone, Copy)]
pub struct Safe<'a> {
    text: &'a str,
    keep_newlines: bool,
}

impl fmt::Display for Safe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.text;
        while let Some(at) = rest.find(|c| self.escaped(c)) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found a char here");
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl Safe<'_> {
    fn escaped(&self, c: char) -> bool {
        if c == '\n' {
            return !self.keep_newlines;
        }
        // C0, DEL and C1; then the bidirectional marks, embeddings,
        // overrides and isolates (Unicode TR9).
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        let hostile = "web\u{1b}[31m red\u{7}\r\nfake line\ttab \u{9b}2J caf\u{e9} \u{202e}txt.exe";
        assert_eq!(
            safe(hostile).to_string(),
            "web\\u{1b}[31m red\\u{7}\\r\\nfake line\\ttab \\u{9b}2J caf\u{e9} \\u{202e}txt.exe"
        );
        assert_eq!(safe_lines("one\ntwo\u{1b}").to_string(), "one\ntwo\\u{1b}");
        assert_eq!(safe("plain text").to_string(), "plain text");
    }
}
