//! The built-in detectors: one pattern each, compiled together by [`super::Masker`], and a check
//! that runs on each match.
//!
//! Patterns are byte-oriented (the syntax is built with Unicode off and UTF-8 mode off), so `\b`,
//! `\s` and `\d` are ASCII and the haystack may be any bytes. Every pattern has a bounded length;
//! the longest match of each (the `L` of streaming) is computed from the pattern when the
//! [`super::Masker`] is built and is pinned by a test:
//!
//! | name           | finds                                                             | longest match |
//! |----------------|-------------------------------------------------------------------|--------------:|
//! | `email`        | `local@domain.tld` (local ≤ 64, domain ≤ 253 bytes)                |           318 |
//! | `card`         | 13–19 digits, single spaces or dashes between; Luhn               |            37 |
//! | `iban`         | `CCkk` + up to 30 letters/digits in groups of four; mod-97 = 1   |            44 |
//! | `ssn`          | US SSN `AAA-GG-SSSS`, no 000/666/9xx area, 00 group, 0000 serial |            11 |
//! | `phone`        | E.164: `+`, 8–15 digits, optional `( ) . -` or space between      |            44 |
//! | `ipv4`         | dotted quad, octets ≤ 255 without leading zeros (std parse)       |            15 |
//! | `ipv6`         | 8 groups or a `::` form; std `Ipv6Addr` parse, two written groups |            81 |
//! | `aws_key`      | `AKIA`/`ASIA` + 16 upper-case letters or digits                   |            20 |
//! | `aws_secret`   | 40 base64 characters after an `aws_secret...`/`secret_access_key` label | 74 |
//! | `github_token` | `ghp_ gho_ ghu_ ghs_ ghr_` + 36–251, `github_pat_` + 22–244       |           255 |
//! | `slack_token`  | `xoxa- xoxb- xoxp- xoxr-` + 10–200 letters, digits, dashes        |           205 |
//! | `jwt`          | `eyJ...` `.` `eyJ...` `.` signature, base64url                     |          6658 |
//! | `private_key`  | a PEM `-----BEGIN ... PRIVATE KEY-----` block through its `END`  |          8346 |
//! | `password`     | `password = v`, `secret: v`, `"api_key": "v"`, ... (value masked) |           320 |
//!
//! A check returns the part of the match to mask (a range relative to the match), or `None` to
//! reject it. Checks see only the match bytes, never their context: that is what makes streaming
//! give the same answer as masking the whole text at once.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// What runs on a match of a detector before it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Accept the whole match (token formats, custom detectors).
    Whole,
    Email,
    Luhn,
    Iban,
    Ssn,
    Ipv4,
    Ipv6,
    /// Mask the trailing 40-character key, not its label.
    AwsSecret,
    /// Mask the value after `=` / `:`, without its quotes.
    Assignment,
}

pub(crate) struct Builtin {
    pub name: &'static str,
    pub pattern: &'static str,
    pub check: Check,
}

/// Every built-in detector, in priority order: when two detectors match at the same position the
/// earlier one wins.
pub(crate) const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "private_key",
        pattern: r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY-----[A-Za-z0-9+/=\s:,.()-]{1,8192}?-----END (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY-----",
        check: Check::Whole,
    },
    Builtin {
        name: "jwt",
        pattern: r"\beyJ[A-Za-z0-9_-]{2,1024}\.eyJ[A-Za-z0-9_-]{2,4096}\.[A-Za-z0-9_-]{0,1530}",
        check: Check::Whole,
    },
    Builtin {
        name: "aws_key",
        pattern: r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
        check: Check::Whole,
    },
    Builtin {
        name: "aws_secret",
        pattern: r#"(?i:aws_?secret_?access_?key|aws_?secret_?key|aws_?secret|secret_?access_?key)["']?[ \t]{0,4}(?:=|:|=>)[ \t]{0,4}["']?[A-Za-z0-9/+]{40}(?:[^A-Za-z0-9/+=]|$)"#,
        check: Check::AwsSecret,
    },
    Builtin {
        name: "github_token",
        pattern: r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})\b",
        check: Check::Whole,
    },
    Builtin {
        name: "slack_token",
        pattern: r"\bxox[abpr]-[A-Za-z0-9-]{10,200}",
        check: Check::Whole,
    },
    Builtin {
        name: "password",
        pattern: r#"(?i:[a-z0-9_.-]{0,32}(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key))["']?[ \t]{0,8}(?:=|:|=>)[ \t]{0,8}(?:"[^"\r\n]{1,256}"|'[^'\r\n]{1,256}'|[^\s"',;&]{1,256})"#,
        check: Check::Assignment,
    },
    Builtin {
        name: "email",
        // `is_email_local`, `is_email_domain` and the bounds in `email_start` repeat this.
        pattern: r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}",
        check: Check::Email,
    },
    Builtin {
        name: "iban",
        pattern: r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
        check: Check::Iban,
    },
    Builtin {
        name: "ssn",
        pattern: r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        check: Check::Ssn,
    },
    Builtin {
        name: "card",
        pattern: r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        check: Check::Luhn,
    },
    Builtin {
        name: "phone",
        pattern: r"\B\+[1-9](?:[ .()-]{0,2}[0-9]){7,14}\b",
        check: Check::Whole,
    },
    Builtin {
        name: "ipv4",
        pattern: r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b",
        check: Check::Ipv4,
    },
    Builtin {
        name: "ipv6",
        // Eight full groups, or a "::" form. A time like 12:30:45 is neither, so it is not even a
        // candidate (result rows are full of timestamps).
        pattern: r"\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}\b|(?:\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::(?:(?:[0-9A-Fa-f]{1,4}:){0,6}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4}))?",
        check: Check::Ipv6,
    },
];

/// The built-in detector called `name`.
pub(crate) fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

impl Check {
    /// The part of `m` (a whole match) to mask, or `None` if `m` is not what the detector looks for.
    pub(crate) fn accept(self, m: &[u8]) -> Option<Range<usize>> {
        let whole = 0..m.len();
        match self {
            Check::Whole => Some(whole),
            Check::Email => email(m),
            Check::Luhn => card(m),
            Check::Iban => iban(m).then_some(whole),
            Check::Ssn => ssn(m).then_some(whole),
            Check::Ipv4 => ascii(m)
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
                .map(|_| whole),
            Check::Ipv6 => ipv6(m).then_some(whole),
            Check::AwsSecret => aws_secret(m),
            Check::Assignment => assignment(m),
        }
    }
}

fn ascii(m: &[u8]) -> Option<&str> {
    std::str::from_utf8(m).ok()
}

/// `local@domain`: the local part has no leading, trailing or doubled dot; the domain (trailing
/// dots and dashes trimmed, as in "mail bob@example.com.") has at least two labels of 1..=63
/// bytes, none starting or ending with '-', and an alphabetic top-level label of two or more.
fn email(m: &[u8]) -> Option<Range<usize>> {
    let at = m.iter().position(|&b| b == b'@')?;
    let local = m.get(..at)?;
    if local.first() == Some(&b'.') || local.last() == Some(&b'.') || has_double_dot(local) {
        return None;
    }
    let mut end = m.len();
    while end > at + 1 && matches!(m.get(end - 1), Some(b'.' | b'-')) {
        end -= 1;
    }
    let domain = m.get(at + 1..end)?;
    let mut labels = 0usize;
    let mut last: &[u8] = &[];
    for label in domain.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
        {
            return None;
        }
        labels += 1;
        last = label;
    }
    let tld_ok = last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic);
    (labels >= 2 && tld_ok).then_some(0..end)
}

/// The longest match of the `email` pattern.
const EMAIL_MAX_LEN: usize = 64 + 1 + 253;

/// A byte of the `email` pattern's local part, `[A-Za-z0-9._%+-]`.
pub(crate) fn is_email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// A byte of the `email` pattern's domain, `[A-Za-z0-9.-]`.
pub(crate) fn is_email_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// Where the leftmost-first match of the `email` pattern that ends at `end` starts, looking no
/// further back than `from`; `None` if `hay[from..end]` does not end with such a match.
///
/// This is the offset the regex's reverse search gives: the earliest `s >= from` such that
/// `hay[s..end]` matches `[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}`. Neither class holds
/// `@`, so the `@` is the last one before `end`, the domain is everything after it, and the local
/// part is the longest run (at most 64) of local bytes right before it.
pub(crate) fn email_start(hay: &[u8], from: usize, end: usize) -> Option<usize> {
    // A match is at most 64 + 1 + 253 bytes: no need to look further back.
    let from = from.max(end.saturating_sub(EMAIL_MAX_LEN));
    let window = hay.get(from..end)?;
    let at = window.iter().rposition(|&b| b == b'@')?;
    let domain = window.get(at + 1..)?;
    if domain.is_empty() || domain.len() > 253 || !domain.iter().all(|&b| is_email_domain(b)) {
        return None;
    }
    let local = window
        .get(..at)?
        .iter()
        .rev()
        .take(64)
        .take_while(|&&b| is_email_local(b))
        .count();
    (local > 0).then(|| from + at - local)
}

fn has_double_dot(s: &[u8]) -> bool {
    s.windows(2).any(|w| w == b"..")
}

/// Card numbers: the longest prefix of the match that ends at a digit group boundary, has 13..=19
/// digits and passes Luhn (so "4111 1111 1111 1111 12" masks the card, not the "12").
fn card(m: &[u8]) -> Option<Range<usize>> {
    let mut ends = Vec::with_capacity(8);
    let mut digits = 0usize;
    for (i, &b) in m.iter().enumerate() {
        if b.is_ascii_digit() {
            digits += 1;
            let boundary = !m.get(i + 1).is_some_and(u8::is_ascii_digit);
            if boundary && (13..=19).contains(&digits) {
                ends.push(i + 1);
            }
        }
    }
    ends.into_iter()
        .rev()
        .find(|&end| m.get(..end).is_some_and(luhn))
        .map(|end| 0..end)
}

/// Luhn over the digits of `s` (other bytes ignored); all-zero numbers are refused.
pub(crate) fn luhn(s: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut nonzero = false;
    for (i, d) in s
        .iter()
        .rev()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        nonzero |= d != 0;
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
    }
    nonzero && sum % 10 == 0
}

/// ISO 13616: 15..=34 characters without spaces, the country code and check digits moved to the
/// end, letters as 10..=35, the number mod 97 is 1.
pub(crate) fn iban(m: &[u8]) -> bool {
    let compact: Vec<u8> = m.iter().copied().filter(|&b| b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem = 0u32;
    for &b in tail.iter().chain(head) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// `AAA-GG-SSSS`: area not 000, 666 or 900–999; group not 00; serial not 0000.
fn ssn(m: &[u8]) -> bool {
    let num = |r: Range<usize>| -> Option<u32> {
        m.get(r)?.iter().try_fold(0u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    };
    match (num(0..3), num(4..6), num(7..11)) {
        (Some(area), Some(group), Some(serial)) => {
            area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
        }
        _ => false,
    }
}

/// A valid IPv6 address with at least two non-empty groups, so "::" and "a::" (PostgreSQL casts
/// like `x::int`) are not taken for addresses.
fn ipv6(m: &[u8]) -> bool {
    let Some(s) = ascii(m) else { return false };
    s.split(':').filter(|g| !g.is_empty()).count() >= 2 && s.parse::<Ipv6Addr>().is_ok()
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'/' || b == b'+'
}

/// The 40 key characters: the match ends with them or with them and one terminating byte.
fn aws_secret(m: &[u8]) -> Option<Range<usize>> {
    let end = if m.last().copied().is_some_and(is_b64) {
        m.len()
    } else {
        m.len().checked_sub(1)?
    };
    Some(end.checked_sub(40)?..end)
}

/// The value after the first `=` or `:` following the label, without surrounding quotes.
fn assignment(m: &[u8]) -> Option<Range<usize>> {
    let sep = m.iter().position(|&b| b == b'=' || b == b':')?;
    let mut start = sep + 1;
    // "=>"
    if m.get(start) == Some(&b'>') {
        start += 1;
    }
    while matches!(m.get(start), Some(b' ' | b'\t')) {
        start += 1;
    }
    let mut end = m.len();
    if let (Some(&q @ (b'"' | b'\'')), Some(&last)) = (m.get(start), m.last()) {
        if last == q && end > start + 1 {
            start += 1;
            end -= 1;
        }
    }
    (start < end).then_some(start..end)
}
