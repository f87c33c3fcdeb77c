//! The stored chain: rows of the `AUDIT` table, the head in `META`, export and verification.
//!
//! A row holds one line or a block of consecutive lines, keyed by the seq of its first line:
//! - version 1, one line: version byte, SHA-256 of the line (32 bytes), the line;
//! - version 2, a block of n >= 2 lines (one commit of the writer): version byte, `u32` n, then
//!   per line its SHA-256 (32 bytes) and the line (`u32`-length-prefixed); line i has seq
//!   key + i. One row per commit instead of one per event: redb's B-tree insert was ~30% of the
//!   writer's CPU per event (examples/audit_bench.rs), most of it splitting and zero-filling leaf
//!   pages for ~8 rows each.
//!
//! Each line names the hash of
//! the line before it in `prev`, so changing, removing or reordering a row breaks the chain at that
//! row or the next; the head row (last seq and hash, written in the same transaction) catches a cut
//! tail. Someone who can rewrite the file can rewrite the whole chain from the change onwards:
//! keep the head hash (or exports) somewhere else to detect that.
//!
//! Retention ([`prune`]) deletes the oldest rows and records where the stored chain now starts
//! (the base: last pruned seq and its line's hash, in `META`), so what is left still verifies
//! from its first line. It removes only rows that chain onto the base, so it never hides a break.

use std::fmt;
use std::io::Write;

use redb::{ReadableDatabase, ReadableTable};
use ring::digest;

use super::format::{hex, line_prev, line_seq, line_ts};
use crate::store::codec::{Dec, Enc};
use crate::store::tables::{AUDIT, META, META_AUDIT_BASE, META_AUDIT_HEAD};
use crate::store::{Store, StoreError};

const ROW_VERSION: u8 = 1;
const BLOCK_VERSION: u8 = 2;
const HEAD_VERSION: u8 = 1;
/// Most lines in one block row (a commit may hold more: it then writes several blocks).
pub(crate) const BLOCK_MAX_LINES: usize = 256;
/// A block row is closed once its lines reach this many bytes.
pub(crate) const BLOCK_MAX_BYTES: usize = 256 * 1024;

#[cfg(test)]
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

/// The row of consecutive lines `(hash, line)`: version 1 for one line, a version-2 block for
/// more. Empty input gives an empty vector (the writer never stores one).
#[cfg(test)]
pub(crate) fn encode_lines(lines: &[([u8; 32], String)]) -> Vec<u8> {
    let mut row = RowBuilder::default();
    for (hash, line) in lines {
        row.push(hash, line);
    }
    row.finish().to_vec()
}

/// A row built line by line, straight into its stored bytes (no copy of each line kept
/// until the row is complete): the writer's path for every event.
#[derive(Default)]
pub(crate) struct RowBuilder {
    /// The version-2 layout: version byte, count placeholder, then hash + length + line each.
    buf: Vec<u8>,
    lines: u32,
    line_bytes: usize,
    /// A version-1 row, when the block holds one line.
    single: Vec<u8>,
}

impl RowBuilder {
    pub(crate) fn push(&mut self, hash: &[u8; 32], line: &str) {
        if self.buf.is_empty() {
            self.buf.push(BLOCK_VERSION);
            self.buf.extend_from_slice(&[0; 4]);
        }
        self.buf.extend_from_slice(hash);
        // Lines are capped far below 4 GiB (format.rs caps every string); see `Enc::bytes`.
        let len = u32::try_from(line.len()).unwrap_or(u32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(line.as_bytes());
        self.lines = self.lines.saturating_add(1);
        self.line_bytes += line.len();
    }

    /// Lines pushed since the last `clear`.
    pub(crate) fn lines(&self) -> u32 {
        self.lines
    }

    /// Bytes of those lines.
    pub(crate) fn line_bytes(&self) -> usize {
        self.line_bytes
    }

    /// The row's bytes (empty if no line was pushed).
    pub(crate) fn finish(&mut self) -> &[u8] {
        match self.lines {
            0 => &[],
            1 => {
                // hash at 5..37, length at 37..41, line after.
                self.single.clear();
                self.single.push(ROW_VERSION);
                self.single
                    .extend_from_slice(self.buf.get(5..37).unwrap_or_default());
                self.single
                    .extend_from_slice(self.buf.get(41..).unwrap_or_default());
                &self.single
            }
            n => {
                if let Some(count) = self.buf.get_mut(1..5) {
                    count.copy_from_slice(&n.to_be_bytes());
                }
                &self.buf
            }
        }
    }

    /// Empties the builder, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.lines = 0;
        self.line_bytes = 0;
    }
}

/// One line read back from a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredLine<'a> {
    pub(crate) seq: u64,
    pub(crate) hash: [u8; 32],
    pub(crate) line: &'a str,
}

/// The lines of the row stored under `key`, in order (either version).
pub(crate) fn decode_lines(key: u64, buf: &[u8]) -> Result<Vec<StoredLine<'_>>, StoreError> {
    if buf.first() != Some(&BLOCK_VERSION) {
        let (hash, line) = decode_row(buf)?;
        return Ok(vec![StoredLine {
            seq: key,
            hash,
            line,
        }]);
    }
    let mut d = Dec::new(buf, BLOCK_VERSION, "audit block")?;
    let count = d.u32()?;
    // A block is never written with fewer than two lines; the count of a corrupt row must not
    // size an allocation.
    if count < 2 {
        return Err(StoreError::Corrupt("audit block"));
    }
    let mut lines = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(BLOCK_MAX_LINES));
    for i in 0..u64::from(count) {
        let hash = d.array::<32>()?;
        let line =
            std::str::from_utf8(d.bytes()?).map_err(|_| StoreError::Corrupt("audit block"))?;
        let seq = key
            .checked_add(i)
            .ok_or(StoreError::Corrupt("audit block"))?;
        lines.push(StoredLine { seq, hash, line });
    }
    d.finish()?;
    Ok(lines)
}

/// Where to start reading rows for the lines from seq `start` on: the key of the row holding
/// `start` (a block may begin before it), or `start` itself.
fn first_key(audit: &redb::ReadOnlyTable<u64, &[u8]>, start: u64) -> Result<u64, StoreError> {
    Ok(match audit.range(..=start)?.next_back() {
        Some(row) => row?.0.value(),
        None => start,
    })
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
    for row in audit.range(first_key(&audit, start)?..)? {
        let (k, v) = row?;
        for stored in decode_lines(k.value(), v.value())? {
            if stored.seq < start {
                continue;
            }
            out.write_all(stored.line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|source| StoreError::Io {
                    path: "audit export".into(),
                    source,
                })?;
            n += 1;
        }
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
    'rows: for row in audit.range(first_key(&audit, start)?..)? {
        let (k, v) = row?;
        for stored in decode_lines(k.value(), v.value())? {
            if stored.seq < start {
                continue;
            }
            if lines.len() >= max_lines
                || (!lines.is_empty() && bytes.saturating_add(stored.line.len()) > max_bytes)
            {
                break 'rows;
            }
            bytes = bytes.saturating_add(stored.line.len());
            lines.push(stored.line.to_string());
        }
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
    /// Events up to this sequence number were pruned by retention (0: none); the check starts
    /// after it, from the hash recorded when they were deleted.
    pub pruned_through: u64,
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
            None if self.pruned_through > 0 => write!(
                f,
                "audit log intact: {} events, head seq {} hash {} (events up to seq {} were pruned by audit_retention)",
                self.events, self.head_seq, self.head_hash, self.pruned_through
            ),
            None => write!(
                f,
                "audit log intact: {} events, head seq {} hash {}",
                self.events, self.head_seq, self.head_hash
            ),
            Some(b) => write!(f, "audit log BROKEN at seq {}: {}", b.seq, b.problem),
        }
    }
}

/// Recomputes the chain from the first row (after the pruned base, if any) to the head and
/// reports the first break.
///
/// # Errors
/// Store errors (a malformed row is a [`Problem`], not an error).
pub fn verify(store: &Store) -> Result<VerifyReport, StoreError> {
    let txn = store.db().begin_read()?;
    let meta = txn.open_table(META)?;
    let (head_seq, head_hash) =
        decode_head(meta.get(META_AUDIT_HEAD)?.as_ref().map(|v| v.value()))?;
    let (base_seq, base_hash) =
        decode_head(meta.get(META_AUDIT_BASE)?.as_ref().map(|v| v.value()))?;
    let audit = txn.open_table(AUDIT)?;
    let mut report = VerifyReport {
        events: 0,
        head_seq,
        head_hash: hex(&head_hash),
        pruned_through: base_seq,
        broken: None,
    };
    let mut prev = base_hash;
    let mut expected = base_seq.saturating_add(1);
    for row in audit.iter()? {
        let (k, v) = row?;
        let key = k.value();
        if key != expected {
            report.broken = Some(Broken {
                seq: expected,
                problem: Problem::Missing,
            });
            return Ok(report);
        }
        let Ok(lines) = decode_lines(key, v.value()) else {
            report.broken = Some(Broken {
                seq: key,
                problem: Problem::Malformed,
            });
            return Ok(report);
        };
        for stored in lines {
            match check_line(&stored, &prev) {
                Ok(hash) => prev = hash,
                Err(problem) => {
                    report.broken = Some(Broken {
                        seq: stored.seq,
                        problem,
                    });
                    return Ok(report);
                }
            }
            report.events += 1;
            expected = stored.seq.saturating_add(1);
        }
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

/// What one [`prune`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub(crate) rows: usize,
    pub(crate) events: u64,
    /// The chain's base after the call: the last pruned seq (0 if nothing was ever pruned).
    pub(crate) through_seq: u64,
}

/// Deletes the oldest rows whose every line was written before `cutoff` (an RFC 3339 time as
/// lines carry it), at most `max_rows`, and moves the chain's base past them, in one transaction.
/// Stops at the first row that does not chain onto the base (a gap, a changed or malformed
/// line): what `verify` would report stays for it to report.
///
/// # Errors
/// Store errors; nothing is deleted then.
pub(crate) fn prune(store: &Store, cutoff: &str, max_rows: usize) -> Result<Pruned, StoreError> {
    let txn = store.db().begin_write()?;
    let mut pruned = Pruned::default();
    {
        let mut meta = txn.open_table(META)?;
        let mut audit = txn.open_table(AUDIT)?;
        let base = meta.get(META_AUDIT_BASE)?.map(|v| v.value().to_vec());
        let (mut seq, mut prev) = decode_head(base.as_deref())?;
        let mut doomed = Vec::new();
        for row in audit.iter()? {
            if doomed.len() >= max_rows {
                break;
            }
            let (k, v) = row?;
            let key = k.value();
            if Some(key) != seq.checked_add(1) {
                break;
            }
            let Ok(lines) = decode_lines(key, v.value()) else {
                break;
            };
            let old = lines
                .iter()
                .all(|l| line_ts(l.line).is_some_and(|ts| ts < cutoff));
            if !old {
                break;
            }
            let mut chained = prev;
            let mut last = seq;
            let mut intact = !lines.is_empty();
            for stored in &lines {
                match check_line(stored, &chained) {
                    Ok(hash) => {
                        chained = hash;
                        last = stored.seq;
                    }
                    Err(_) => {
                        intact = false;
                        break;
                    }
                }
            }
            if !intact {
                break;
            }
            prev = chained;
            pruned.events += last - seq;
            seq = last;
            doomed.push(key);
        }
        for key in &doomed {
            audit.remove(key)?;
        }
        if !doomed.is_empty() {
            meta.insert(META_AUDIT_BASE, encode_head(seq, &prev).as_slice())?;
        }
        pruned.rows = doomed.len();
        pruned.through_seq = seq;
    }
    txn.commit()?;
    Ok(pruned)
}

/// Checks one stored line against its position and the previous line's hash; returns its hash.
fn check_line(stored: &StoredLine<'_>, prev: &[u8; 32]) -> Result<[u8; 32], Problem> {
    let line_seq = line_seq(stored.line).ok_or(Problem::Malformed)?;
    let line_prev = line_prev(stored.line).ok_or(Problem::Malformed)?;
    if sha256(stored.line.as_bytes()) != stored.hash {
        return Err(Problem::HashMismatch);
    }
    if line_seq != stored.seq {
        return Err(Problem::SeqMismatch);
    }
    if line_prev != hex(prev) {
        return Err(Problem::PrevMismatch);
    }
    Ok(stored.hash)
}
