//! The text of one audit line: a JSON object with `seq`, `ts`, `kind`, the event's fields in
//! order, and `prev` last. Written by hand (no serde_json): the escaper below follows RFC 8259 §7.

use std::fmt::Write as _;

use super::{Event, Value};

/// Longest string value kept in a line; longer values are cut at a character boundary and marked
/// (a statement with a multi-megabyte literal still gets a bounded audit line).
pub const MAX_STR_BYTES: usize = 256 * 1024;
/// Most items of a list value kept in a line; the rest is summarised by one marker item.
pub const MAX_LIST_ITEMS: usize = 1024;

/// Field names the line itself uses; an event field with one of these names gets a leading `_`.
const RESERVED: [&str; 4] = ["seq", "ts", "kind", "prev"];
// `push_key` looks names up in RESERVED only when their length is that of a reserved one.
const _: () = {
    let mut i = 0;
    while i < RESERVED.len() {
        assert!(RESERVED[i].len() >= 2 && RESERVED[i].len() <= 4);
        i += 1;
    }
};

/// Appends `s` as a JSON string (with quotes). Escapes `"` and `\`, every control character
/// (U+0000..U+001F, U+007F) and U+2028/U+2029, so a line never contains a raw newline.
///
/// This is on the relay's path for every statement (its event's fields, a dozen short strings
/// and the statement's text), and almost every such string needs no escape at all: that is
/// found eight bytes at a time ([`word_needs_look`]) and the string copied whole. Otherwise runs
/// of bytes that need no escape are still copied as one slice each.
pub fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    if !needs_look(bytes) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes
            .get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        {
            if !word_needs_look(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        if !NEEDS_LOOK[usize::from(bytes[i])] {
            i += 1;
            continue;
        }
        let b = bytes[i];
        // U+2028 and U+2029 are E2 80 A8 / E2 80 A9 in UTF-8; every other byte that needs an
        // escape is ASCII, so a multi-byte character is never split here.
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f | 0x7f => "",
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                ""
            }
            // Another character starting with E2: nothing to escape.
            _ => {
                i += 1;
                continue;
            }
        };
        // `run_start..i` ends before an ASCII byte or the start of a character: a boundary.
        out.push_str(&s[run_start..i]);
        if escape.is_empty() {
            let c = s[i..].chars().next().map_or(0, u32::from);
            let _ = write!(out, "\\u{c:04x}");
            i += if b == 0xe2 { 3 } else { 1 };
        } else {
            out.push_str(escape);
            i += 1;
        }
        run_start = i;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

/// Bytes `push_json_str` must look at: `"`, `\`, the controls, and E2 (the lead byte of U+2028
/// and U+2029).
const NEEDS_LOOK: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t[0xe2] = true;
    t
};

/// Whether a byte of `bytes` is in [`NEEDS_LOOK`]: eight at a time, the last eight overlapping
/// the word before if the length is not a multiple of eight; byte by byte below eight.
fn needs_look(bytes: &[u8]) -> bool {
    let word_at = |i: usize| {
        bytes
            .get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .is_none_or(|w| word_needs_look(u64::from_le_bytes(w)))
    };
    let Some(last) = bytes.len().checked_sub(8) else {
        return bytes.iter().any(|&b| NEEDS_LOOK[usize::from(b)]);
    };
    (0..last).step_by(8).any(word_at) || word_at(last)
}

/// Whether one of the eight bytes of `w` is in [`NEEDS_LOOK`]: below 0x20, `"`, `\`, 0x7F or
/// 0xE2. Exact, not a filter: `(v - 0x01..) & !v & 0x80..` has a high bit set iff some byte of
/// `v` is zero (with `0x20..` subtracted: iff some byte is below 0x20, valid for bounds up to
/// 0x80); a byte equal to `b` is a zero byte of `v ^ b..`.
fn word_needs_look(w: u64) -> bool {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |v: u64, bound: u8| v.wrapping_sub(ONES * u64::from(bound)) & !v & HIGHS;
    let equal = |b: u8| below(w ^ (ONES * u64::from(b)), 1);
    (below(w, 0x20) | equal(b'"') | equal(b'\\') | equal(0x7f) | equal(0xe2)) != 0
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        // n % 10 < 10: the cast can't truncate.
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: pushed as characters, no UTF-8 validation of the buffer.
    out.reserve(buf.len() - at);
    for &digit in &buf[at..] {
        out.push(char::from(digit));
    }
}

/// Whether `name` can be written as a key without a look (see [`Key`](super::Key)): 1 to 64
/// bytes of `a-z`, `0-9` and `_`, and not one of [`RESERVED`].
pub(super) const fn is_plain_key(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 64 {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit() || b[i] == b'_') {
            return false;
        }
        i += 1;
    }
    let mut r = 0;
    while r < RESERVED.len() {
        if bytes_eq(RESERVED[r].as_bytes(), b) {
            return false;
        }
        r += 1;
    }
    true
}

/// Whether `rendered` is `,"name":`.
pub(super) const fn renders_key(name: &str, rendered: &str) -> bool {
    let (n, r) = (name.as_bytes(), rendered.as_bytes());
    if r.len() != n.len() + 4 || r[0] != b',' || r[1] != b'"' {
        return false;
    }
    if r[r.len() - 2] != b'"' || r[r.len() - 1] != b':' {
        return false;
    }
    let mut i = 0;
    while i < n.len() {
        if r[i + 2] != n[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `s` cut to at most [`MAX_STR_BYTES`] at a character boundary, with a marker if cut.
fn capped(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_STR_BYTES {
        return s.into();
    }
    let mut end = MAX_STR_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[truncated {} bytes]", &s[..end], s.len() - end).into()
}

pub(super) fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => push_json_str(out, &capped(s)),
        Value::Int(n) => {
            if *n < 0 {
                out.push('-');
            }
            push_u64(out, n.unsigned_abs());
        }
        Value::UInt(n) => push_u64(out, *n),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
        Value::List(items) => push_list(out, items),
        Value::Shared(s) => push_json_str(out, &capped(s)),
        Value::Names(items) => push_list(out, items),
        // Spliced whole by `push_fields`; as a lone value it has nothing to say.
        Value::Encoded(_) => out.push_str("null"),
    }
}

/// Appends `,"k":v` for each field (an [`Encoded`](super::Encoded) value as it was encoded).
pub(super) fn push_fields(out: &mut String, fields: &[(&'static str, Value)]) {
    for (k, v) in fields {
        if let Value::Encoded(e) = v {
            out.push_str(e.as_str());
            continue;
        }
        push_key(out, k);
        push_value(out, v);
    }
}

/// Appends `,"k":` (a reserved name gets its leading `_`).
pub(super) fn push_key(out: &mut String, k: &str) {
    out.push(',');
    // Every reserved name is 2 to 4 bytes long: most keys are told apart by their length.
    if (2..=4).contains(&k.len()) && RESERVED.contains(&k) {
        out.push_str("\"_");
        out.push_str(k);
        out.push('"');
    } else {
        push_json_str(out, k);
    }
    out.push(':');
}

/// Appends a string value as `Value::Str` would be written (capped).
pub(super) fn push_str_value(out: &mut String, s: &str) {
    push_json_str(out, &capped(s));
}

fn push_list<S: AsRef<str>>(out: &mut String, items: &[S]) {
    push_list_iter(out, items.iter().map(AsRef::as_ref));
}

/// Appends a list value as `Value::List` / `Value::Names` would be written: at most
/// [`MAX_LIST_ITEMS`] items, then one marker item counting the rest.
pub(super) fn push_list_iter<'a>(out: &mut String, items: impl IntoIterator<Item = &'a str>) {
    out.push('[');
    let mut n = 0usize;
    for item in items {
        if n < MAX_LIST_ITEMS {
            if n > 0 {
                out.push(',');
            }
            push_json_str(out, &capped(item));
        }
        n += 1;
    }
    if n > MAX_LIST_ITEMS {
        out.push(',');
        let more = format!("...[{} more]", n - MAX_LIST_ITEMS);
        push_json_str(out, &more);
    }
    out.push(']');
}

/// The line of event number `seq`, stamped `ts_ms` (unix milliseconds), chained to `prev` (the
/// SHA-256 of the previous line; zeros for the first).
#[cfg(test)]
pub fn line(seq: u64, ts_ms: u64, ev: &Event, prev: &[u8; 32]) -> String {
    // Sized for a typical statement line, so the common case never reallocates.
    let mut out = String::with_capacity(512);
    push_line(&mut out, seq, ts_ms, ev, prev);
    out
}

/// [`line`], appended to `out` (the writer reuses one buffer for all its lines).
pub fn push_line(out: &mut String, seq: u64, ts_ms: u64, ev: &Event, prev: &[u8; 32]) {
    out.push_str("{\"seq\":");
    push_u64(out, seq);
    out.push_str(",\"ts\":\"");
    push_rfc3339_millis(out, ts_ms);
    out.push_str("\",\"kind\":");
    push_json_str(out, ev.kind);
    out.push_str(ev.encoded_fields());
    push_fields(out, &ev.fields);
    out.push_str(",\"prev\":\"");
    push_hex(out, prev);
    out.push_str("\"}");
}

/// The sequence number a line starts with (`{"seq":N,`), if it is well formed.
pub fn line_seq(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("{\"seq\":")?;
    let end = rest.find(',')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The time a line was written (`{"seq":N,"ts":"<RFC 3339, UTC, milliseconds>",`), if well
/// formed. Such times sort as strings in time order, so they are compared as strings.
pub fn line_ts(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("{\"seq\":")?;
    let rest = rest.get(rest.find(',')?..)?.strip_prefix(",\"ts\":\"")?;
    let ts = rest.get(..rest.find('"')?)?;
    (ts.len() == 24 && ts.ends_with('Z')).then_some(ts)
}

/// The `prev` hash (hex) a line ends with (`,"prev":"<64 hex>"}`), if it is well formed.
pub fn line_prev(line: &str) -> Option<&str> {
    let body = line.strip_suffix("\"}")?;
    let at = body.len().checked_sub(64)?;
    let hex = body.get(at..)?;
    let head = body.get(..at)?;
    if head.ends_with(",\"prev\":\"") && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(hex)
    } else {
        None
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        for (pair, b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        out.push_str(std::str::from_utf8(&buf[..chunk.len() * 2]).unwrap_or_default());
    }
}

/// RFC 3339 UTC with milliseconds: `2026-11-27T09:30:00.123Z`.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let mut s = String::with_capacity(24);
    push_rfc3339_millis(&mut s, unix_ms);
    s
}

fn push_rfc3339_millis(out: &mut String, unix_ms: u64) {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (y, mo, d) = civil_from_days(secs / 86_400);
    if y > 9999 {
        let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z");
        return;
    }
    // Fixed widths, written digit by digit (the formatter's padding was a visible share of the
    // audit writer's time per line).
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            // v % 10 < 10: the cast can't truncate.
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, mo);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, m);
    put(17, 2, s);
    put(20, 3, ms);
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

/// Year, month, day of `days` after 1970-01-01 (proleptic Gregorian), after Howard Hinnant's
/// `civil_from_days`: count in 400-year eras starting on March 1st, so the leap day is last.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(
            rfc3339_millis(1_795_771_800_123),
            "2026-11-27T09:30:00.123Z"
        );
        assert_eq!(
            rfc3339_millis(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(1_704_067_199_000),
            "2023-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walk 1970..2400 day by day and check the calendar never skips or repeats.
        let mut prev = civil_from_days(0);
        let dim = |y: u64, m: u64| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for days in 1..157_000 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = prev;
            let expected = if pd < dim(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {days}");
            prev = (y, m, d);
        }
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\re\tf\u{0}g\u{1f}h\u{7f}i\u{2028}é€😀");
        assert_eq!(
            s,
            "\"a\\\"b\\\\c\\nd\\re\\tf\\u0000g\\u001fh\\u007fi\\u2028é€😀\""
        );
    }

    #[test]
    fn line_has_fixed_head_and_tail_and_renames_reserved_fields() {
        let ev = Event::new("stmt")
            .str("sql", "select 1")
            .uint("seq", 5)
            .int("n", -3)
            .bool("ok", true)
            .opt_str("none", None::<String>)
            .list("tables", vec!["a".into(), "b\"".into()]);
        let l = line(7, 0, &ev, &[0xab; 32]);
        assert_eq!(
            l,
            format!(
                "{{\"seq\":7,\"ts\":\"1970-01-01T00:00:00.000Z\",\"kind\":\"stmt\",\
                 \"sql\":\"select 1\",\"_seq\":5,\"n\":-3,\"ok\":true,\"none\":null,\
                 \"tables\":[\"a\",\"b\\\"\"],\"prev\":\"{}\"}}",
                "ab".repeat(32)
            )
        );
        assert_eq!(line_seq(&l), Some(7));
        assert_eq!(line_prev(&l), Some("ab".repeat(32).as_str()));
    }

    #[test]
    fn caps_long_strings_at_a_char_boundary_and_long_lists() {
        let long = "é".repeat(MAX_STR_BYTES); // 2 bytes each
        let many: Vec<String> = (0..MAX_LIST_ITEMS + 5).map(|i| i.to_string()).collect();
        let l = line(
            1,
            0,
            &Event::new("k").str("s", long).list("l", many),
            &[0; 32],
        );
        assert!(
            l.contains("...[truncated 262144 bytes]"),
            "{}",
            &l[l.len() - 200..]
        );
        assert!(l.contains("\"...[5 more]\"]"));
        assert!(l.len() < MAX_STR_BYTES + 16 * 1024);
    }

    #[test]
    fn rejects_malformed_heads_and_tails() {
        assert_eq!(line_seq("{\"seq\":,"), None);
        assert_eq!(line_seq("{\"seq\":1x,"), None);
        assert_eq!(line_seq("{\"seq\":99999999999999999999999,"), None);
        assert_eq!(line_seq("{\"seq\":12"), None);
        assert_eq!(line_prev("{\"prev\":\"00\"}"), None);
        assert_eq!(line_prev(""), None);
        let bad = format!(",\"prev\":\"{}\"}}", "zz".repeat(32));
        assert_eq!(line_prev(&bad), None);
        let multibyte = format!("{}\"}}", "é".repeat(40));
        assert_eq!(line_prev(&multibyte), None);
    }
}
