//! The asciicast v2 encoder driven by an op script: output / input chunks, resizes, markers, with
//! times that may go backwards, under a size limit. Checks that every line is well formed
//! (`[time, "code", "data"]`, no raw control byte, valid UTF-8), times never decrease, the file
//! never passes the limit (beyond header + marker), and the "o" data read back equals
//! `String::from_utf8_lossy` of all output bytes recorded before the limit.
//!
//! Script: byte 0..2 = limit in bytes (u16 BE, times 4; 0 = unlimited), then ops of
//! `[op][time delta][len][len bytes]`; op % 4: 0 output, 1 input, 2 resize (first 4 bytes: cols,
//! rows as u16 BE), 3 marker (bytes as lossy text). Time delta is signed (i8), in milliseconds.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis::record::{Encoder, Header, Outcome};

fuzz_target!(|data: &[u8]| {
    let Some((limit_bytes, mut rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = match u64::from(u16::from_be_bytes(*limit_bytes)) * 4 {
        0 => u64::MAX,
        n => n,
    };
    let mut file = Vec::new();
    let mut enc = Encoder::new(&Header::new(80, 24, 0, "xterm\u{1b}\"\\"), limit, &mut file);
    let header_len = file.len();
    let mut now_ms: i64 = 0;
    let mut recorded_output = Vec::new();
    let mut stopped = false;
    while let Some((&[op, delta, len], tail)) = rest.split_first_chunk::<3>() {
        let len = usize::from(len).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        now_ms = (now_ms + i64::from(delta as i8)).max(0);
        let at = Duration::from_millis(now_ms as u64);
        let outcome = match op % 4 {
            0 => {
                let o = enc.output(at, bytes, &mut file);
                if !stopped && o != Outcome::LimitReached {
                    recorded_output.extend_from_slice(bytes);
                }
                o
            }
            1 => enc.input(at, bytes, &mut file),
            2 => {
                let b = |i: usize| u32::from(bytes.get(i).copied().unwrap_or(0));
                enc.resize(at, (b(0) << 8) | b(1), (b(2) << 8) | b(3), &mut file)
            }
            _ => enc.marker(at, &String::from_utf8_lossy(bytes), &mut file),
        };
        match outcome {
            Outcome::LimitReached => {
                assert!(!stopped, "limit reported twice");
                stopped = true;
            }
            Outcome::Stopped => assert!(stopped),
            _ => assert!(!stopped),
        }
    }
    let finished = enc.finish(Duration::from_millis(now_ms as u64), &mut file);
    if finished == Outcome::LimitReached {
        stopped = true;
    }
    assert_eq!(enc.bytes_written(), file.len() as u64);
    if !stopped {
        // The header is always written, even when it alone is over the limit.
        assert!(enc.bytes_written() <= limit.max(header_len as u64));
    }

    let text = std::str::from_utf8(&file).expect("recording is not UTF-8");
    let (header, events) = text.split_at(header_len);
    assert!(header.starts_with("{\"version\": 2, ") && header.ends_with("}\n"));
    let mut last_time = 0u64;
    let mut replayed = String::new();
    for line in events.lines() {
        let inner = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')).expect(line);
        let (time, rest) = inner.split_once(", \"").expect(line);
        let (secs, micros) = time.split_once('.').expect(line);
        assert_eq!(micros.len(), 6, "{line}");
        let time_us: u64 = secs.parse::<u64>().expect(line) * 1_000_000 + micros.parse::<u64>().expect(line);
        assert!(time_us >= last_time, "time went backwards: {line}");
        last_time = time_us;
        let (code, value) = rest.split_once("\", ").expect(line);
        let data = unescape(value).expect(line);
        match code {
            "o" => replayed.push_str(&data),
            "i" | "m" => {}
            "r" => {
                let (c, r) = data.split_once('x').expect(line);
                assert!(c.parse::<u32>().expect(line) > 0 && r.parse::<u32>().expect(line) > 0);
            }
            other => panic!("unknown code {other}"),
        }
    }
    if !stopped {
        assert_eq!(replayed, String::from_utf8_lossy(&recorded_output));
    }
});

/// Decodes one JSON string literal (the whole input), refusing raw control characters.
fn unescape(value: &str) -> Option<String> {
    let body = value.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            },
            '"' => return None,
            c if (c as u32) < 0x20 || c == '\u{7f}' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}
