//! Masking of sensitive values in query results (and, later, terminal output). Sans-IO: bytes in,
//! bytes out, no clock, no I/O.
//!
//! A [`Masker`] is built once per policy load from detector names, custom patterns, a
//! [`Strategy`] and the gateway's hash key. All detectors are compiled into **one**
//! `regex_automata::meta::Regex` (`build_many`), so a value is scanned once whatever the number of
//! detectors; the pattern that matched says which detector hit, and that detector's check
//! (Luhn, mod-97, SSN rules, address parsing, ...) then accepts or rejects the match.
//!
//! Scanning rules ([`Masker::mask_text`]), from the start of the value:
//! 1. find the leftmost match (on a tie, the detector listed first in [`detectors`] wins, custom
//!    detectors after the built-ins);
//! 2. if its check rejects it, skip it and search again from its start + 1;
//! 3. if accepted, replace the part the check returned (the whole match, or e.g. only the value of
//!    `password=...`) and search again from the end of that part, so a later match never
//!    overlaps an accepted one.
//!
//! Every pattern has a bounded length ([`Masker::max_match_len`]); [`StreamMasker`] relies on it
//! to mask a stream in chunks with exactly the result of masking it whole.
//!
//! Masking cannot fail: the search is infallible (meta regexes never give up at search time) and
//! the checks and strategies only use bounds-checked access. There is therefore no error path the
//! caller has to redact on; a caller that wants defence in depth can still use
//! [`Masker::mask_whole`] as its fallback.

mod detectors;
mod stream;

pub use stream::{MaskChain, StreamMasker};

use std::fmt;
use std::ops::Range;

use regex_automata::meta::{self, Regex};
use regex_automata::util::syntax;
use regex_automata::{Input, Match};

use detectors::{Check, BUILTINS};

/// Longest match a custom pattern may have (the hold-back of a stream is the longest of all).
pub const MAX_CUSTOM_LEN: usize = 4096;
/// Longest custom pattern source.
pub const MAX_PATTERN_SOURCE: usize = 1024;
/// Most custom detectors in one rule.
pub const MAX_CUSTOM: usize = 64;
/// Largest `keep` of [`Strategy::Partial`].
pub const MAX_KEEP: usize = 64;
/// The `keep` of `partial` when the policy does not say.
pub const DEFAULT_KEEP: usize = 4;
/// Hex characters of a `hash` value after its `h:` prefix (64 bits of the HMAC).
pub const HASH_HEX_LEN: usize = 16;

/// The names of the built-in detectors, in priority order.
pub fn detectors() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// What replaces a detector hit or a masked column value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A fixed placeholder: `[redacted:NAME]` for a detector hit (NAME is the detector), and
    /// `[redacted]` for a whole column value.
    Redact,
    /// Keep the last `keep` characters and replace every other character with `*`, so the length
    /// in characters stays the same. Never more than half the characters are kept (a 4-character
    /// value with `keep = 4` shows 2). Characters are UTF-8 characters when the masked bytes are
    /// valid UTF-8, bytes otherwise.
    Partial { keep: usize },
    /// `h:` and the first [`HASH_HEX_LEN`] hex digits of HMAC-SHA256(gateway key, value): stable,
    /// so equal values give equal masks and joins on masked values still work; without the key it
    /// cannot be reversed by hashing guesses.
    Hash,
}

/// Why a [`Masker`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaskError {
    /// A detector name that is neither built-in nor `"all"`.
    UnknownDetector(String),
    /// A custom detector name that is empty, not `[a-z0-9_]`, longer than 63 bytes, or the name of
    /// a built-in or of another custom detector.
    BadName(String),
    /// A custom pattern that does not parse; the parser's message.
    BadPattern { name: String, why: String },
    /// A custom pattern that can match the empty string.
    EmptyMatch(String),
    /// A custom pattern whose matches have no bounded length (`+`, `*`, `{n,}`), or a longer bound
    /// than [`MAX_CUSTOM_LEN`].
    Unbounded(String),
    /// More than [`MAX_CUSTOM`] custom detectors.
    TooMany,
    /// The combined regex could not be built (too large); the builder's message.
    Build(String),
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskError::UnknownDetector(n) => {
                let valid: Vec<&str> = detectors().collect();
                write!(
                    f,
                    "unknown detector {n:?}; valid detectors: all, {}",
                    valid.join(", ")
                )
            }
            MaskError::BadName(n) => write!(
                f,
                "custom detector name {n:?} must be 1 to 63 of a-z, 0-9 and '_', and not a built-in or repeated name"
            ),
            MaskError::BadPattern { name, why } => {
                write!(f, "custom detector {name:?}: the pattern is not a valid regular expression: {why}")
            }
            MaskError::EmptyMatch(n) => write!(
                f,
                "custom detector {n:?}: the pattern can match an empty string; make it match at least one character"
            ),
            MaskError::Unbounded(n) => write!(
                f,
                "custom detector {n:?}: matches must have a bounded length of at most {MAX_CUSTOM_LEN} bytes; replace + * and {{n,}} with bounds such as {{1,64}}"
            ),
            MaskError::TooMany => write!(f, "more than {MAX_CUSTOM} custom detectors"),
            MaskError::Build(why) => write!(f, "the detectors could not be compiled: {why}"),
        }
    }
}

impl std::error::Error for MaskError {}

struct Detector {
    name: Box<str>,
    check: Check,
}

/// The compiled detectors of one mask rule with its strategy. `Send + Sync`; share it behind an
/// `Arc`. Built once per policy load.
pub struct Masker {
    re: Regex,
    /// Indexed by the regex's pattern id.
    detectors: Vec<Detector>,
    strategy: Strategy,
    key: ring::hmac::Key,
    max_len: usize,
    /// Whether a hit of a detector that knows where its matches start (e-mail) skips the reverse
    /// search (see [`Masker::next_hit`]); off only in tests, as the reference.
    known_starts: bool,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.detectors.iter().map(|d| &*d.name).collect();
        f.debug_struct("Masker")
            .field("detectors", &names)
            .field("strategy", &self.strategy)
            .field("max_match_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

fn syntax_config() -> syntax::Config {
    // Bytes, not text: ASCII classes and boundaries, and matches may contain any byte.
    syntax::Config::new().unicode(false).utf8(false)
}

/// Checks one custom detector on its own (for policy validation, which reports problems per
/// entry); [`Masker::new`] runs the same checks.
///
/// # Errors
/// [`MaskError::BadName`], [`MaskError::BadPattern`], [`MaskError::EmptyMatch`] or
/// [`MaskError::Unbounded`].
pub fn check_custom(name: &str, pattern: &str) -> Result<(), MaskError> {
    parse_custom(name, pattern).map(|_| ())
}

fn is_detector_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name != "all"
        && detectors::builtin(name).is_none()
}

/// Checks a custom detector; its longest match.
fn parse_custom(name: &str, pattern: &str) -> Result<usize, MaskError> {
    if !is_detector_name(name) {
        return Err(MaskError::BadName(name.to_owned()));
    }
    if pattern.len() > MAX_PATTERN_SOURCE {
        return Err(MaskError::BadPattern {
            name: name.to_owned(),
            why: format!("longer than {MAX_PATTERN_SOURCE} bytes"),
        });
    }
    let hir = syntax::parse_with(pattern, &syntax_config()).map_err(|e| MaskError::BadPattern {
        name: name.to_owned(),
        why: e.to_string(),
    })?;
    let props = hir.properties();
    if props.minimum_len().is_none_or(|n| n == 0) {
        return Err(MaskError::EmptyMatch(name.to_owned()));
    }
    match props.maximum_len() {
        Some(n) if n <= MAX_CUSTOM_LEN => Ok(n),
        _ => Err(MaskError::Unbounded(name.to_owned())),
    }
}

impl Masker {
    /// Compiles the built-in detectors named in `detectors` (`"all"` = every built-in; repeats are
    /// ignored) and the `custom` `(name, pattern)` detectors into one search.
    ///
    /// # Errors
    /// An unknown detector name, a bad custom name or pattern (see [`MaskError`]), or a combined
    /// regex too large to build.
    pub fn new(
        detectors: &[String],
        custom: &[(String, String)],
        strategy: Strategy,
        hash_key: [u8; 32],
    ) -> Result<Masker, MaskError> {
        if custom.len() > MAX_CUSTOM {
            return Err(MaskError::TooMany);
        }
        let all = detectors.iter().any(|d| d == "all");
        for d in detectors {
            if d != "all" && detectors::builtin(d).is_none() {
                return Err(MaskError::UnknownDetector(d.clone()));
            }
        }
        let mut dets = Vec::new();
        let mut hirs = Vec::new();
        let mut max_len = 0usize;
        for b in BUILTINS {
            if !all && !detectors.iter().any(|d| d == b.name) {
                continue;
            }
            let hir = syntax::parse_with(b.pattern, &syntax_config())
                .map_err(|e| MaskError::Build(format!("built-in {}: {e}", b.name)))?;
            let len = hir
                .properties()
                .maximum_len()
                .ok_or_else(|| MaskError::Build(format!("built-in {} is unbounded", b.name)))?;
            if hir.properties().minimum_len().is_none_or(|n| n == 0) {
                return Err(MaskError::Build(format!(
                    "built-in {} can match an empty string",
                    b.name
                )));
            }
            max_len = max_len.max(len);
            hirs.push(hir);
            dets.push(Detector {
                name: b.name.into(),
                check: b.check,
            });
        }
        for (name, pattern) in custom {
            if dets.iter().any(|d| *d.name == **name) {
                return Err(MaskError::BadName(name.clone()));
            }
            let len = parse_custom(name, pattern)?;
            let hir = syntax::parse_with(pattern, &syntax_config()).map_err(|e| {
                MaskError::BadPattern {
                    name: name.clone(),
                    why: e.to_string(),
                }
            })?;
            max_len = max_len.max(len);
            hirs.push(hir);
            dets.push(Detector {
                name: name.as_str().into(),
                check: Check::Whole,
            });
        }
        let re = Regex::builder()
            .configure(
                meta::Config::new()
                    .utf8_empty(false)
                    .hybrid_cache_capacity(8 << 20),
            )
            .build_many_from_hir(&hirs)
            .map_err(|e| MaskError::Build(e.to_string()))?;
        Ok(Masker {
            re,
            detectors: dets,
            strategy,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &hash_key),
            max_len,
            known_starts: true,
        })
    }

    /// The same masker finding every match's start with the regex's reverse search: the
    /// reference the e-mail start rule is tested against.
    #[cfg(test)]
    fn with_reverse_search_only(mut self) -> Masker {
        self.known_starts = false;
        self
    }

    /// The longest match of any detector: a stream must hold back this many bytes (plus one of
    /// look-behind) before it knows no match starts there.
    pub fn max_match_len(&self) -> usize {
        self.max_len
    }

    /// The detector names, in priority order.
    pub fn detector_names(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|d| &*d.name)
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Masks the detector hits inside `value`. Returns `None` when nothing was masked: the caller
    /// keeps the original bytes (no copy on the common path). Any bytes are accepted; this cannot
    /// fail or panic.
    pub fn mask_text(&self, value: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut pos = 0;
        while let Some(hit) = self.next_hit(None, value, pos, usize::MAX) {
            let Hit::Accepted { detector, range } = hit else {
                break;
            };
            let o = out.get_or_insert_with(|| Vec::with_capacity(value.len() + 16));
            o.extend_from_slice(value.get(copied..range.start).unwrap_or_default());
            self.replace(detector, value.get(range.clone()).unwrap_or_default(), o);
            copied = range.end;
            pos = range.end;
        }
        let mut o = out?;
        o.extend_from_slice(value.get(copied..).unwrap_or_default());
        Some(o)
    }

    /// The whole value of a masked column, masked with the strategy (`[redacted]` for `redact`).
    pub fn mask_whole(&self, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match self.strategy {
            Strategy::Redact => out.extend_from_slice(b"[redacted]"),
            Strategy::Partial { keep } => partial(value, keep, &mut out),
            Strategy::Hash => self.hash(value, &mut out),
        }
        out
    }

    /// The next accepted hit at or after `pos`, skipping rejected matches. Matches that start at
    /// or after `limit` are not decided: [`Hit::Undecided`] says where the first one starts.
    fn next_hit(
        &self,
        mut cache: Option<&mut meta::Cache>,
        hay: &[u8],
        mut pos: usize,
        limit: usize,
    ) -> Option<Hit> {
        loop {
            // Every detector needs at least one byte (custom ones are checked for it, built-ins
            // in `new`), so nothing starts at the end: skip the search there (the common case
            // after a hit that ends the value).
            if pos >= hay.len() {
                return None;
            }
            let input = Input::new(hay).range(pos..);
            let m = self.find(cache.as_deref_mut(), &input)?;
            if m.start() >= limit {
                return Some(Hit::Undecided);
            }
            let detector = m.pattern().as_usize();
            let accepted = match (self.detectors.get(detector), hay.get(m.range())) {
                (Some(d), Some(bytes)) => d.check.accept(bytes),
                _ => None,
            };
            match accepted {
                Some(r) if r.start < r.end => {
                    let range = m.start() + r.start..m.start() + r.end;
                    return Some(Hit::Accepted { detector, range });
                }
                _ => pos = m.start() + 1,
            }
        }
    }

    /// The leftmost-first match of the combined regex in `input`.
    ///
    /// The regex finds a match's end and detector with a forward scan, then its start with a
    /// reverse scan over the match. Most hits in result data are e-mail addresses, and the reverse
    /// scan over them costs more than the forward one (every byte of an address is a possible
    /// start, a match state of the reverse DFA): for an e-mail hit the start is computed from its
    /// end instead ([`detectors::email_start`]), which gives the same offset. Other detectors
    /// take the full search.
    fn find(&self, mut cache: Option<&mut meta::Cache>, input: &Input<'_>) -> Option<Match> {
        if self.known_starts {
            let half = match cache.as_deref_mut() {
                Some(c) => self.re.search_half_with(c, input),
                None => self.re.search_half(input),
            }?;
            let pattern = half.pattern();
            if self
                .detectors
                .get(pattern.as_usize())
                .is_some_and(|d| d.check == Check::Email)
            {
                let (start, end) = (input.start(), half.offset());
                if let Some(s) = detectors::email_start(input.haystack(), start, end) {
                    return Some(Match::new(pattern, s..end));
                }
            }
        }
        match cache {
            Some(c) => self.re.search_with(c, input),
            None => self.re.search(input),
        }
    }

    /// Appends the replacement of `hit`, found by `detector`, to `out`.
    fn replace(&self, detector: usize, hit: &[u8], out: &mut Vec<u8>) {
        match self.strategy {
            Strategy::Redact => {
                out.extend_from_slice(b"[redacted:");
                let name = self.detectors.get(detector).map_or("?", |d| &*d.name);
                out.extend_from_slice(name.as_bytes());
                out.push(b']');
            }
            Strategy::Partial { keep } => partial(hit, keep, out),
            Strategy::Hash => self.hash(hit, out),
        }
    }

    fn hash(&self, value: &[u8], out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = ring::hmac::sign(&self.key, value);
        out.extend_from_slice(b"h:");
        for &b in tag.as_ref().iter().take(HASH_HEX_LEN / 2) {
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }
}

enum Hit {
    Accepted {
        detector: usize,
        range: Range<usize>,
    },
    Undecided,
}

/// `*` for every character but the last `keep` (at most half of them).
fn partial(value: &[u8], keep: usize, out: &mut Vec<u8>) {
    match std::str::from_utf8(value) {
        Ok(s) => {
            let n = s.chars().count();
            let keep = keep.min(n / 2);
            let split = s.char_indices().nth(n - keep).map_or(s.len(), |(i, _)| i);
            out.extend(std::iter::repeat_n(b'*', n - keep));
            out.extend_from_slice(s.get(split..).unwrap_or_default().as_bytes());
        }
        Err(_) => {
            let keep = keep.min(value.len() / 2);
            out.extend(std::iter::repeat_n(b'*', value.len() - keep));
            out.extend_from_slice(value.get(value.len() - keep..).unwrap_or_default());
        }
    }
}

/// Whether the column glob `glob` (from a `[[mask]]` rule) covers `column` of `table`.
///
/// `glob` has one to three dot-separated parts, each a pattern where `*` matches any run of
/// characters and `?` any one: `"email"`/`"*password*"` name the column in any table;
/// `"users.ssn"`/`"*.email"` add the table (matched against the table's own name, without its
/// schema); `"public.users.ssn"` adds the schema. `table` is `schema.table` or a bare `table` as
/// resolved from the result's column metadata; `None` when that is unknown.
///
/// Fail closed: when `table` is `None`, or has no schema and the glob names one, only the parts
/// that can be compared are compared (so `users.ssn` masks a column `ssn` of unknown origin).
/// Matching ignores ASCII case.
pub fn column_matches(glob: &str, table: Option<&str>, column: &str) -> bool {
    let parts: Vec<&str> = glob.split('.').collect();
    let (schema, tab) = match table.map(|t| t.rsplit_once('.').unwrap_or(("", t))) {
        Some(("", t)) => (None, Some(t)),
        Some((s, t)) => (Some(s), Some(t)),
        None => (None, None),
    };
    let part_ok = |pat: &str, v: Option<&str>| v.is_none_or(|v| wildcard(pat, v));
    match parts.as_slice() {
        [c] => wildcard(c, column),
        [t, c] => part_ok(t, tab) && wildcard(c, column),
        [s, t, c] => part_ok(s, schema) && part_ok(t, tab) && wildcard(c, column),
        _ => false,
    }
}

/// `*` and `?` glob over bytes, ASCII case-insensitive; linear-time backtracking on the last `*`.
fn wildcard(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || s.get(si).is_some_and(|x| x.eq_ignore_ascii_case(&c)) => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_differential;
