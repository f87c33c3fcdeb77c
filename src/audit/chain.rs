//! The stored chain: rows of the `AUDIT` table, the head in `META`, export and verification.
//!
//! Row `seq` = version byte, SHA-256 of the line (32 bytes), the line. Each line names the hash of
//! the line before it in `prev`, so changing, removing or reordering a row breaks the chain at that
//! row or the next; the head row (last seq and hash, written in the same transaction) catches a cut
//! tail. Someone who can rewrite the file can rewrite the whole chain from the change onwards:
//! keep the head hash (or exports) somewhere else to detect that.

use std::fmt;
use std::io::Write;

use redb::{ReadableDatabase, ReadableTable};
use ring::digest;

use super::format::{hex, line_prev, line_seq};
use crate::store::codec::{Dec, Enc};
use crate::store::tables::{AUDIT, META, META_AUDIT_HEAD};
use crate::store::{Store, StoreError};

const ROW_VERSION: u8 = 1;
const HEAD_VERSION: u8 = 1;

pub(crate) fn encode_row(hash: &[u8; 32], line: &str) -> Vec<u8> {
    Enc::new(ROW_VERSION)
        .fixed(hash)
        .fixed(line.as_bytes())
        .finish()
}

pub(crate) fn decode_row(buf: &[u8]) -> Result<([u8; 32], &str), StoreError> {
    let mut d = Dec::new(buf, ROW_VERSION, "audit row")?;
    let hash = d.array::<32>()?;
    let line = std::str::from_utf8(d.rest()).map_err(|_| StoreError::Corrupt("audit row"))?;
    Ok((hash, line))
}

pub(crate) fn encode_head(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    Enc::new(HEAD_VERSION).u64(seq).fixed(hash).finish()
}

/// The head (last seq, hash of its line); `(0, zeros)` for an empty log.
pub(crate) fn decode_head(buf: Option<&[u8]>) -> Result<(u64, [u8; 32]), StoreError> {
    let Some(buf) = buf else {
        return Ok((0, [0; 32]));
    };
    let mut d = Dec::new(buf, HEAD_VERSION, "audit head")?;
    let head = (d.u64()?, d.array::<32>()?);
    d.finish()?;
    Ok(head)
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Writes every event with a sequence number greater than `since_seq` (0: all), one JSON line
/// each, `\n`-terminated, in order. Returns how many were written. Reads one snapshot.
///
/// # Errors
/// Store errors, an undecodable row, or a write error on `out` (as `StoreError::Io`).
pub fn export(store: &Store, out: &mut dyn Write, since_seq: u64) -> Result<u64, StoreError> {
    let txn = store.db().begin_read()?;
    let audit = txn.open_table(AUDIT)?;
    let mut n = 0u64;
    let Some(start) = since_seq.checked_add(1) else {
        return Ok(0);
    };
    for row in audit.range(start..)? {
        let (_, v) = row?;
        let (_, line) = decode_row(v.value())?;
        out.write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|source| StoreError::Io {
                path: "audit export".into(),
                source,
            })?;
        n += 1;
    }
    Ok(n)
}

/// Lines with sequence numbers after `since_seq`, at most `max_lines` and, past the first line,
/// about `max_bytes` in all (for bounded responses; call again from the last line's seq).
///
/// # Errors
/// Store errors, an undecodable row.
pub fn export_lines(
    store: &Store,
    since_seq: u64,
    max_lines: usize,
    max_bytes: usize,
) -> Result<Vec<String>, StoreError> {
    let txn = store.db().begin_read()?;
    let audit = txn.open_table(AUDIT)?;
    let mut lines = Vec::new();
    let mut bytes = 0usize;
    let Some(start) = since_seq.checked_add(1) else {
        return Ok(lines);
    };
    for row in audit.range(start..)? {
        if lines.len() >= max_lines {
            break;
        }
        let (_, v) = row?;
        let (_, line) = decode_row(v.value())?;
        if !lines.is_empty() && bytes.saturating_add(line.len()) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(line.len());
        lines.push(line.to_string());
    }
    Ok(lines)
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows checked (up to and including a broken one).
    pub events: u64,
    /// The last sequence number according to the head row.
    pub head_seq: u64,
    /// Hex SHA-256 of the last line according to the head row (publish it to anchor the chain).
    pub head_hash: String,
    /// The first problem found, if any.
    pub broken: Option<Broken>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Where the chain breaks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub seq: u64,
    pub problem: Problem,
}

/// What is wrong at [`Broken::seq`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The row is missing (the next row present has a higher number).
    Missing,
    /// The row cannot be decoded or its line lacks the `seq` head or `prev` tail.
    Malformed,
    /// The line's `seq` differs from its row number.
    SeqMismatch,
    /// The line's hash differs from the hash stored beside it: the line was changed.
    HashMismatch,
    /// The line's `prev` is not the hash of the previous line: a row before it was changed or
    /// replaced.
    PrevMismatch,
    /// The head row disagrees with the last row: rows were cut from the end, or the head changed.
    HeadMismatch,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::Missing => "event missing",
            Problem::Malformed => "row malformed",
            Problem::SeqMismatch => "line's seq differs from its position",
            Problem::HashMismatch => "line changed (hash differs)",
            Problem::PrevMismatch => "chain broken (prev is not the previous line's hash)",
            Problem::HeadMismatch => "log truncated or head changed",
        })
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broken {
            None => write!(
                f,
                "audit log intact: {} events, head seq {} hash {}",
                self.events, self.head_seq, self.head_hash
            ),
            Some(b) => write!(f, "audit log BROKEN at seq {}: {}", b.seq, b.problem),
        }
    }
}

/// Recomputes the chain from the first row to the head and reports the first break.
///
/// # Errors
/// Store errors (a malformed row is a [`Problem`], not an error).
pub fn verify(store: &Store) -> Result<VerifyReport, StoreError> {
    let txn = store.db().begin_read()?;
    let meta = txn.open_table(META)?;
    let (head_seq, head_hash) =
        decode_head(meta.get(META_AUDIT_HEAD)?.as_ref().map(|v| v.value()))?;
    let audit = txn.open_table(AUDIT)?;
    let mut report = VerifyReport {
        events: 0,
        head_seq,
        head_hash: hex(&head_hash),
        broken: None,
    };
    let mut prev = [0u8; 32];
    let mut expected = 1u64;
    for row in audit.iter()? {
        let (k, v) = row?;
        let seq = k.value();
        let checked = if seq == expected {
            check_row(seq, v.value(), &prev).map_err(|p| (seq, p))
        } else {
            Err((expected, Problem::Missing))
        };
        match checked {
            Ok(hash) => prev = hash,
            Err((seq, problem)) => {
                report.broken = Some(Broken { seq, problem });
                return Ok(report);
            }
        }
        report.events += 1;
        expected = seq.saturating_add(1);
    }
    let last = expected - 1;
    if last != head_seq || prev != head_hash {
        report.broken = Some(Broken {
            seq: last.max(head_seq),
            problem: Problem::HeadMismatch,
        });
    }
    Ok(report)
}

/// Checks one row against its position and the previous line's hash; returns its line's hash.
fn check_row(seq: u64, value: &[u8], prev: &[u8; 32]) -> Result<[u8; 32], Problem> {
    let (hash, line) = decode_row(value).map_err(|_| Problem::Malformed)?;
    let line_seq = line_seq(line).ok_or(Problem::Malformed)?;
    let line_prev = line_prev(line).ok_or(Problem::Malformed)?;
    if sha256(line.as_bytes()) != hash {
        return Err(Problem::HashMismatch);
    }
    if line_seq != seq {
        return Err(Problem::SeqMismatch);
    }
    if line_prev != hex(prev) {
        return Err(Problem::PrevMismatch);
    }
    Ok(hash)
}
