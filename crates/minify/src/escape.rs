//! Making text safe for a terminal: paths, tags and config strings come from images and
//! allowlists, and an image can name a file `\x1b]0;title\x07` or `\x1b[2J` (issue 12).
//! Every human line the CLI prints goes through [`terminal_safe`]; JSON output is already
//! escaped by serde.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character but newline and tab, and every bidirectional override
/// (which can make a line read differently from what it holds), written as `\u{..}` (or
/// `\0`, `\r`, `\e`).
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        match c {
            '\0' => out.push_str("\\0"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(terminal_safe("/usr/bin/ls\n"), "/usr/bin/ls\n");
        assert_eq!(
            terminal_safe("/evil\x1b]0;pwned\x07\x1b[2J\0x\r\u{202e}txt"),
            "/evil\\e]0;pwned\\u{7}\\e[2J\\0x\\r\\u{202e}txt"
        );
    }
}
