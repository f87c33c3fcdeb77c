//! The little JSON the recorder writes: string escaping (RFC 8259 section 7) and nothing more.
//! No JSON crate: asciicast lines are three fixed shapes, and escaping is the only subtle part.

/// Appends `text` to `out` as a JSON string literal, quotes included.
///
/// RFC 8259, section 7: "All Unicode characters may be placed within the quotation marks, except
/// for the characters that MUST be escaped: quotation mark, reverse solidus, and the control
/// characters (U+0000 through U+001F)." We escape those, plus DEL (U+007F) so a recording never
/// carries a raw control byte; `\n`, `\r` and `\t` use their two-character forms (terminal
/// output is full of them), every other control character is written as `\u00XX`. Characters
/// outside ASCII are written as UTF-8, as asciinema does (`ensure_ascii=False`).
pub fn push_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    push_string_body(out, text);
    out.push(b'"');
}

/// Appends the escaped contents of a JSON string, without the quotes. Called once per decoded run
/// of an event's data, so one event's string may be built from several runs.
pub fn push_string_body(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        // Copy the run of plain bytes before this one. `i` and `start` are on character
        // boundaries: every byte that needs escaping is ASCII.
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

const HEX: [u8; 16] = *b"0123456789abcdef";

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        push_string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_quote_and_backslash() {
        assert_eq!(escaped(r#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
    }

    #[test]
    fn escapes_newline_return_tab_short() {
        assert_eq!(escaped("a\r\n\tb"), r#""a\r\n\tb""#);
    }

    #[test]
    fn escapes_other_control_characters_as_u00xx() {
        assert_eq!(
            escaped("\u{0}\u{1b}[0m\u{7}\u{8}\u{c}\u{1f}\u{7f}"),
            r#""\u0000\u001b[0m\u0007\u0008\u000c\u001f\u007f""#
        );
    }

    #[test]
    fn keeps_non_ascii_as_utf8() {
        assert_eq!(escaped("é€𝄞\u{2028}\u{FFFD}"), "\"é€𝄞\u{2028}\u{FFFD}\"");
        // C1 controls are not JSON control characters: written as they are.
        assert_eq!(escaped("\u{9b}"), "\"\u{9b}\"");
    }

    #[test]
    fn accepts_empty_string() {
        assert_eq!(escaped(""), r#""""#);
    }
}
