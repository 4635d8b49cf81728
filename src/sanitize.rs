//! Escaping of peer-supplied text (names, messages) before it reaches a
//! terminal or a log: control characters, bidi overrides and zero-width
//! characters become visible escapes, so no peer can move the cursor, change
//! the terminal title or forge a log line.

use std::fmt::Write;

/// True for characters that must never reach a terminal raw.
fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x200B..=0x200F   // zero-width and directional marks
            | 0x2028..=0x202E // line/paragraph separators, bidi embeddings/overrides
            | 0x2060..=0x2069 // word joiner, bidi isolates
            | 0xFEFF)
}

/// Escapes `s` for display: `\x1b`, `\n`, `\u{202e}`, `\\`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && is_dangerous(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_dangerous(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes raw bytes that may not be UTF-8: invalid bytes become `\xNN`.
pub fn escape_bytes(b: &[u8]) -> String {
    // Most names are printable ASCII without a backslash: shown as they are.
    if b.iter()
        .all(|&c| c == b' ' || (c.is_ascii_graphic() && c != b'\\'))
    {
        if let Ok(plain) = std::str::from_utf8(b) {
            return plain.to_owned();
        }
    }
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi() {
        assert_eq!(escape("a\u{1b}[1Ab"), "a\\x1b[1Ab");
        assert_eq!(escape("a\nb\r"), "a\\nb\\r");
        assert_eq!(escape("doc\u{202e}txt.exe"), "doc\\u{202e}txt.exe");
        assert_eq!(escape("\u{7f}\u{85}"), "\\x7f\\u{85}");
        assert_eq!(escape("plain ünï.txt"), "plain ünï.txt");
        assert_eq!(escape("a\\b"), "a\\\\b");
    }

    #[test]
    fn bytes_are_escaped_as_their_text_is() {
        for b in 0u8..=255 {
            let one = [b'a', b, b' ', b'z'];
            let want = match std::str::from_utf8(&one) {
                Ok(text) => escape(text),
                Err(_) => format!("a\\x{b:02x} z"),
            };
            assert_eq!(escape_bytes(&one), want, "byte {b:#x}");
        }
        assert_eq!(escape_bytes(b"dir/f 001.txt"), "dir/f 001.txt");
    }

    #[test]
    fn escapes_invalid_utf8() {
        assert_eq!(escape_bytes(b"a\xffb\x1b"), "a\\xffb\\x1b");
    }

    #[test]
    fn output_has_no_raw_control() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!escape(&all).chars().any(is_dangerous));
    }
}
