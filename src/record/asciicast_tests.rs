//! Byte-vector tests of the asciicast v2 encoder.

use std::time::Duration;

use super::asciicast::{Encoder, Header, Outcome, LIMIT_MARKER};

const NO_LIMIT: u64 = u64::MAX;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn text(out: &[u8]) -> &str {
    std::str::from_utf8(out).unwrap()
}

/// An encoder for an 80x24 xterm session, with the header already taken out of the way.
fn encoder(limit: u64) -> Encoder {
    encoder_and_header_len(limit).0
}

fn encoder_and_header_len(limit: u64) -> (Encoder, u64) {
    let mut header = Vec::new();
    let enc = Encoder::new(
        &Header::new(80, 24, 1_700_000_000, "xterm"),
        limit,
        &mut header,
    );
    (enc, u64::try_from(header.len()).unwrap())
}

/// One parsed event line: (time as written, code, data decoded from its JSON string).
fn parse_event(line: &str) -> (String, String, String) {
    let inner = line.strip_prefix('[').unwrap().strip_suffix(']').unwrap();
    let (time, rest) = inner.split_once(", ").unwrap();
    let rest = rest.strip_prefix('"').unwrap();
    let (code, rest) = rest.split_once("\", ").unwrap();
    (time.to_owned(), code.to_owned(), parse_json_string(rest))
}

/// A strict decoder of one JSON string literal (the whole input), as RFC 8259 section 7 defines
/// it: refuses raw control characters, unknown escapes and trailing bytes.
fn parse_json_string(s: &str) -> String {
    let body = s.strip_prefix('"').unwrap();
    let mut out = String::new();
    let mut chars = body.chars();
    loop {
        let c = chars.next().expect("unterminated string");
        match c {
            '"' => {
                assert_eq!(chars.as_str(), "", "bytes after the string");
                return out;
            }
            '\\' => match chars.next().unwrap() {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                '/' => out.push('/'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).unwrap();
                    out.push(char::from_u32(code).expect("lone surrogate"));
                }
                other => panic!("bad escape \\{other}"),
            },
            c if u32::from(c) < 0x20 => panic!("raw control character {c:?} in a JSON string"),
            c => out.push(c),
        }
    }
}

// ---- header ---------------------------------------------------------------------------------

#[test]
fn writes_minimal_header() {
    let mut out = Vec::new();
    let _ = Encoder::new(
        &Header::new(80, 24, 1_504_467_315, "xterm-256color"),
        NO_LIMIT,
        &mut out,
    );
    assert_eq!(
        text(&out),
        "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1504467315, \
         \"env\": {\"TERM\": \"xterm-256color\"}}\n"
    );
}

#[test]
fn writes_header_with_shell_command_and_title() {
    let mut header = Header::new(132, 43, 1_504_467_315, "xterm");
    header.shell = Some("/bin/bash".into());
    header.command = Some("top -b".into());
    header.title = Some("alice@web-prod".into());
    let mut out = Vec::new();
    let enc = Encoder::new(&header, NO_LIMIT, &mut out);
    assert_eq!(
        text(&out),
        "{\"version\": 2, \"width\": 132, \"height\": 43, \"timestamp\": 1504467315, \
         \"env\": {\"TERM\": \"xterm\", \"SHELL\": \"/bin/bash\"}, \"command\": \"top -b\", \
         \"title\": \"alice@web-prod\"}\n"
    );
    assert_eq!(enc.bytes_written(), u64::try_from(out.len()).unwrap());
    assert_eq!(enc.size(), (132, 43));
}

#[test]
fn escapes_client_strings_in_header() {
    // TERM comes from the client's pty-req: a hostile value must not break out of its string.
    let header = Header::new(80, 24, 0, "x\", \"version\": 3, \"y\u{1b}\u{0}\\");
    let mut out = Vec::new();
    let _ = Encoder::new(&header, NO_LIMIT, &mut out);
    assert_eq!(
        text(&out),
        "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 0, \
         \"env\": {\"TERM\": \"x\\\", \\\"version\\\": 3, \\\"y\\u001b\\u0000\\\\\"}}\n"
    );
}

#[test]
fn zero_size_in_header_becomes_80x24() {
    // RFC 4254 6.2: "Zero dimension parameters MUST be ignored."
    let mut out = Vec::new();
    let enc = Encoder::new(&Header::new(0, 0, 5, "vt100"), NO_LIMIT, &mut out);
    assert!(text(&out).starts_with("{\"version\": 2, \"width\": 80, \"height\": 24, "));
    assert_eq!(enc.size(), (80, 24));
}

// ---- output and input events ------------------------------------------------------------

#[test]
fn writes_output_event_with_ansi_escapes() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let outcome = enc.output(
        Duration::from_micros(248_848),
        b"\x1b[1;31mHello \x1b[32mWorld!\x1b[0m\n",
        &mut out,
    );
    assert_eq!(outcome, Outcome::Recorded);
    assert_eq!(
        text(&out),
        "[0.248848, \"o\", \"\\u001b[1;31mHello \\u001b[32mWorld!\\u001b[0m\\n\"]\n"
    );
}

#[test]
fn writes_input_event() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    assert_eq!(enc.input(ms(1500), b"ls -l\r", &mut out), Outcome::Recorded);
    assert_eq!(text(&out), "[1.500000, \"i\", \"ls -l\\r\"]\n");
}

#[test]
fn escapes_quotes_backslashes_and_all_control_bytes() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let _ = enc.output(ms(0), b"\"\\\x00\x07\x08\t\n\x0b\x0c\r\x1f\x7f ~", &mut out);
    assert_eq!(
        text(&out),
        "[0.000000, \"o\", \"\\\"\\\\\\u0000\\u0007\\u0008\\t\\n\\u000b\\u000c\\r\\u001f\\u007f ~\"]\n"
    );
    let (_, _, data) = parse_event(text(&out).trim_end());
    assert_eq!(data.as_bytes(), b"\"\\\x00\x07\x08\t\n\x0b\x0c\r\x1f\x7f ~");
}

#[test]
fn formats_time_with_six_decimals() {
    let cases = [
        (Duration::ZERO, "0.000000"),
        (Duration::from_micros(1), "0.000001"),
        (Duration::from_secs(3), "3.000000"),
        (Duration::from_millis(61_250), "61.250000"),
        // Truncated to the microsecond, never rounded up past a later event.
        (Duration::from_nanos(1_999_999_999), "1.999999"),
        (Duration::from_secs(86_400 * 365), "31536000.000000"),
    ];
    for (at, want) in cases {
        let mut enc = encoder(NO_LIMIT);
        let mut out = Vec::new();
        let _ = enc.marker(at, "t", &mut out);
        assert_eq!(text(&out), format!("[{want}, \"m\", \"t\"]\n"), "{at:?}");
    }
}

#[test]
fn time_going_backwards_is_written_as_the_previous_time() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let _ = enc.output(ms(2000), b"a", &mut out);
    let _ = enc.output(ms(1000), b"b", &mut out);
    assert_eq!(
        text(&out),
        "[2.000000, \"o\", \"a\"]\n[2.000000, \"o\", \"b\"]\n"
    );
}

#[test]
fn keeps_a_character_split_across_chunks_whole() {
    // "é" is c3 a9; "€" is e2 82 ac.
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    assert_eq!(enc.output(ms(10), b"caf\xc3", &mut out), Outcome::Recorded);
    assert_eq!(
        enc.output(ms(20), b"\xa9 5\xe2\x82", &mut out),
        Outcome::Recorded
    );
    assert_eq!(enc.output(ms(30), b"\xac\r\n", &mut out), Outcome::Recorded);
    assert_eq!(
        text(&out),
        "[0.010000, \"o\", \"caf\"]\n[0.020000, \"o\", \"é 5\"]\n[0.030000, \"o\", \"€\\r\\n\"]\n"
    );
}

#[test]
fn chunk_holding_only_part_of_a_character_writes_nothing() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    assert_eq!(enc.output(ms(1), b"\xf0\x9f", &mut out), Outcome::Skipped);
    assert_eq!(enc.output(ms(2), b"\x98", &mut out), Outcome::Skipped);
    assert!(out.is_empty());
    assert_eq!(enc.output(ms(3), b"\x80", &mut out), Outcome::Recorded);
    assert_eq!(text(&out), "[0.003000, \"o\", \"😀\"]\n");
}

#[test]
fn empty_chunk_writes_nothing() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    assert_eq!(enc.output(ms(1), b"", &mut out), Outcome::Skipped);
    assert_eq!(enc.input(ms(1), b"", &mut out), Outcome::Skipped);
    assert!(out.is_empty());
}

#[test]
fn replaces_invalid_bytes_with_u_fffd() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let _ = enc.output(ms(0), b"a\xffb\xc3(c\xed\xa0\x80d", &mut out);
    assert_eq!(
        text(&out),
        "[0.000000, \"o\", \"a\u{FFFD}b\u{FFFD}(c\u{FFFD}\u{FFFD}\u{FFFD}d\"]\n"
    );
}

#[test]
fn held_bytes_refuted_by_the_next_chunk_become_u_fffd() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let _ = enc.output(ms(0), b"x\xe2\x82", &mut out);
    let _ = enc.output(ms(1), b"y", &mut out);
    assert_eq!(
        text(&out),
        "[0.000000, \"o\", \"x\"]\n[0.001000, \"o\", \"\u{FFFD}y\"]\n"
    );
}

#[test]
fn input_and_output_keep_separate_utf8_state() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let _ = enc.output(ms(0), b"\xc3", &mut out);
    let _ = enc.input(ms(1), b"q\xe2\x82", &mut out);
    let _ = enc.output(ms(2), b"\xa9", &mut out);
    let _ = enc.input(ms(3), b"\xac", &mut out);
    assert_eq!(
        text(&out),
        "[0.001000, \"i\", \"q\"]\n[0.002000, \"o\", \"é\"]\n[0.003000, \"i\", \"€\"]\n"
    );
}

#[test]
fn finish_writes_a_held_partial_character_as_u_fffd() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let _ = enc.output(ms(0), b"bye\xe2\x82", &mut out);
    out.clear();
    assert_eq!(enc.finish(ms(5), &mut out), Outcome::Recorded);
    assert_eq!(text(&out), "[0.005000, \"o\", \"\u{FFFD}\"]\n");
    out.clear();
    assert_eq!(enc.finish(ms(6), &mut out), Outcome::Skipped);
    assert!(out.is_empty());
}

#[test]
fn finish_with_nothing_held_writes_nothing() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let _ = enc.output(ms(0), b"done\n", &mut out);
    out.clear();
    assert_eq!(enc.finish(ms(1), &mut out), Outcome::Skipped);
    assert!(out.is_empty());
}

// ---- resize and marker events -------------------------------------------------------------

#[test]
fn writes_resize_event_as_cols_x_rows() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    assert_eq!(enc.resize(ms(4050), 100, 40, &mut out), Outcome::Recorded);
    assert_eq!(text(&out), "[4.050000, \"r\", \"100x40\"]\n");
    assert_eq!(enc.size(), (100, 40));
}

#[test]
fn resize_ignores_zero_dimensions_and_skips_no_change() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    assert_eq!(enc.resize(ms(1), 80, 24, &mut out), Outcome::Skipped);
    assert_eq!(enc.resize(ms(2), 0, 0, &mut out), Outcome::Skipped);
    assert!(out.is_empty());
    assert_eq!(enc.resize(ms(3), 0, 50, &mut out), Outcome::Recorded);
    assert_eq!(text(&out), "[0.003000, \"r\", \"80x50\"]\n");
}

#[test]
fn writes_marker_event_escaped() {
    let mut enc = encoder(NO_LIMIT);
    let mut out = Vec::new();
    let _ = enc.marker(ms(1), "approved by \"bob\"", &mut out);
    assert_eq!(
        text(&out),
        "[0.001000, \"m\", \"approved by \\\"bob\\\"\"]\n"
    );
}

// ---- size limit ---------------------------------------------------------------------------

#[test]
fn limit_replaces_the_crossing_event_with_a_marker_and_stops() {
    let mut header = Vec::new();
    let hdr = Header::new(80, 24, 0, "xterm");
    let header_len = {
        let _ = Encoder::new(&hdr, NO_LIMIT, &mut header);
        u64::try_from(header.len()).unwrap()
    };
    // Room for the header, the marker's reserve (88 bytes: the longest possible marker line),
    // and 100 bytes of events.
    let limit = header_len + 88 + 100;
    let mut file = Vec::new();
    let mut enc = Encoder::new(&hdr, limit, &mut file);
    let chunk = [b'x'; 20]; // each line: `[0.000000, "o", "xxxx...x"]\n` = 40 bytes
    let mut outcomes = Vec::new();
    for i in 0..5 {
        outcomes.push(enc.output(ms(i), &chunk, &mut file));
    }
    assert_eq!(
        outcomes,
        [
            Outcome::Recorded,
            Outcome::Recorded,
            Outcome::LimitReached,
            Outcome::Stopped,
            Outcome::Stopped
        ]
    );
    assert!(enc.is_stopped());
    assert_eq!(enc.resize(ms(9), 120, 50, &mut file), Outcome::Stopped);
    assert_eq!(enc.marker(ms(9), "late", &mut file), Outcome::Stopped);
    assert_eq!(enc.input(ms(9), b"x", &mut file), Outcome::Stopped);
    assert_eq!(enc.finish(ms(9), &mut file), Outcome::Stopped);

    let all = text(&file);
    let last = all.lines().last().unwrap();
    assert_eq!(last, format!("[0.002000, \"m\", \"{LIMIT_MARKER}\"]"));
    assert_eq!(all.lines().count(), 4);
    assert_eq!(enc.bytes_written(), u64::try_from(file.len()).unwrap());
    assert!(enc.bytes_written() <= limit);
}

#[test]
fn limit_smaller_than_the_header_still_writes_header_and_marker() {
    let mut file = Vec::new();
    let mut enc = Encoder::new(&Header::new(80, 24, 0, "xterm"), 10, &mut file);
    assert_eq!(enc.output(ms(0), b"a", &mut file), Outcome::LimitReached);
    let all = text(&file);
    assert_eq!(all.lines().count(), 2);
    assert!(all.ends_with(&format!("[0.000000, \"m\", \"{LIMIT_MARKER}\"]\n")));
}

// ---- properties ---------------------------------------------------------------------------

/// Whatever the bytes and their chunking, every line is a well-formed event whose data,
/// concatenated, is `String::from_utf8_lossy` of all the bytes: what asciinema's own recorder
/// (Python's incremental "replace" decoder) would have recorded.
#[test]
fn round_trip_random_chunks_decode_to_lossy_text() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces: &[&[u8]] = &[
        b"ls",
        b"\x1b[0;32m",
        b"\"",
        b"\\",
        b"\x00",
        b"\x7f",
        b"\r\n",
        "é".as_bytes(),
        "€".as_bytes(),
        "𝄞".as_bytes(),
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9d\x84",
        b"\xff",
        b"\x80",
    ];
    for round in 0..300 {
        let mut bytes = Vec::new();
        for _ in 0..(next() % 60) {
            let i = usize::try_from(next() % u64::try_from(pieces.len()).unwrap()).unwrap();
            bytes.extend_from_slice(pieces[i]);
        }
        let (mut enc, header_len) = encoder_and_header_len(NO_LIMIT);
        let mut file = Vec::new();
        let mut rest = &bytes[..];
        let mut t = 0;
        while !rest.is_empty() {
            let n = usize::try_from(next() % 7).unwrap().min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            t += next() % 3;
            let _ = enc.output(ms(t), chunk, &mut file);
            rest = tail;
        }
        let _ = enc.finish(ms(t), &mut file);
        let all = text(&file);
        let mut replayed = String::new();
        let mut last_time = 0.0_f64;
        for line in all.lines() {
            let (time, code, data) = parse_event(line);
            assert_eq!(code, "o");
            assert!(!data.is_empty(), "round {round}: empty event {line}");
            let (secs, frac) = time.split_once('.').unwrap();
            assert_eq!(frac.len(), 6, "{line}");
            assert!(secs.bytes().all(|b| b.is_ascii_digit()));
            let time: f64 = time.parse().unwrap();
            assert!(time >= last_time, "{line}");
            last_time = time;
            replayed.push_str(&data);
        }
        assert_eq!(
            replayed,
            String::from_utf8_lossy(&bytes),
            "round {round}: {bytes:x?}"
        );
        assert_eq!(
            enc.bytes_written(),
            header_len + u64::try_from(file.len()).unwrap()
        );
    }
}
