//! Durations (`"500ms"`, `"10s"`, `"1h30m"`) and sizes (`"64MiB"`, `65536`) as written in the policy.
//! Pure functions; every arithmetic step is checked, so no input can overflow or panic.

use std::time::Duration;

/// Longest duration string accepted (bounds the work on hostile input; real values are short).
const MAX_DURATION_LEN: usize = 64;

/// Parses a duration: one or more `<digits><unit>` parts, unit one of `ms`, `s`, `m`, `h`, `d`
/// (`"500ms"`, `"10s"`, `"15m"`, `"24h"`, `"7d"`, `"1h30m"`). No spaces, signs or fractions. Returns
/// `None` for anything else, including a bare number (a unit is always required) and overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() || s.len() > MAX_DURATION_LEN {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total = Duration::ZERO;
    while i < b.len() {
        let digits_start = i;
        let mut n: u64 = 0;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            i += 1;
        }
        if i == digits_start {
            return None;
        }
        let unit_start = i;
        while b.get(i).is_some_and(|c| c.is_ascii_alphabetic()) {
            i += 1;
        }
        let part = match s.get(unit_start..i)? {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// Parses a size: a number of bytes, optionally followed by `B`, `KiB`, `MiB` or `GiB`
/// (`"64MiB"`, `"512KiB"`, `"4096"`). Returns `None` for anything else and on overflow.
pub fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let mul: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_single_unit_durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    }

    #[test]
    fn accepts_combined_durations() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1m1s250ms"),
            Some(Duration::from_millis(61_250))
        );
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "", "10", "s", "10 s", "-1s", "1.5h", "10sec", "1h30", "h1", "10S", "1w",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rejects_overflowing_durations() {
        assert_eq!(parse_duration("99999999999999999999s"), None);
        assert_eq!(parse_duration("18446744073709551615d"), None);
        assert_eq!(parse_duration(&"1s".repeat(40)), None);
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10B"), Some(10));
    }

    #[test]
    fn rejects_malformed_sizes() {
        for bad in [
            "",
            "MiB",
            "64 MiB",
            "64mb",
            "64MB",
            "-1",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
