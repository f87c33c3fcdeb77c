//! Masking a byte stream (COPY TO STDOUT data; later terminal output) in chunks of any size, with
//! exactly the output [`Masker::mask_text`] gives for the whole stream at once.
//!
//! The regex engine cannot resume a search across chunks, so the stream keeps a tail. With `L` the
//! longest match of any detector ([`Masker::max_match_len`]) and `len` the bytes buffered, a match
//! that starts before `len - L` ends before `len`, and so does its one byte of look-ahead (`\b`):
//! it, and the choice of leftmost match, are the same whatever bytes follow. Such a match is final;
//! a match starting later waits for more bytes. Bytes before the first undecided position are
//! final too and are written out. One byte before the search position is kept as look-behind, so
//! `\b` and `^` see what they would see in the whole text.
//!
//! Each re-search scans the kept tail again, so to keep the cost per byte bounded the stream only
//! searches once at least `max(L, 4 KiB)` new bytes are waiting: between calls it holds back at
//! most `L + max(L, 4 KiB) + 1` bytes, and every byte is scanned at most about twice. Memory is
//! flat whatever the stream's length. An interactive stream needs a flush when idle: [`finish`]
//! ends a segment (everything held is decided and written), and feeding may go on after it.
//!
//! [`finish`]: StreamMasker::finish

use std::ops::Deref;

use regex_automata::meta;

use super::{Hit, Masker};

/// Least number of new bytes a search waits for (see the module docs).
const MIN_STEP: usize = 4096;

/// A stream being masked with one [`Masker`]. Feed it chunks; collect the output.
///
/// `M` is how the stream holds its masker: `&Masker` for a stream that lives inside one call,
/// `Arc<Masker>` for one that lives as long as an SSH channel (a terminal recording).
pub struct StreamMasker<M: Deref<Target = Masker>> {
    masker: M,
    cache: meta::Cache,
    /// Bytes not yet dropped: one byte of look-behind, then bytes not yet decided.
    buf: Vec<u8>,
    /// Where the next search starts, in `buf`.
    pos: usize,
    /// Bytes of `buf` already written to the output (always `pos`, or `pos - 0`, after a step).
    emitted: usize,
}

impl<M: Deref<Target = Masker>> std::fmt::Debug for StreamMasker<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMasker")
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl<M: Deref<Target = Masker>> StreamMasker<M> {
    pub fn new(masker: M) -> Self {
        let cache = masker.re.create_cache();
        StreamMasker {
            masker,
            cache,
            buf: Vec::new(),
            pos: 0,
            emitted: 0,
        }
    }

    /// Bytes received but not yet written to an output.
    pub fn held(&self) -> usize {
        self.buf.len().saturating_sub(self.emitted)
    }

    /// Takes the next `chunk` of the stream and appends to `out` every byte that is now decided
    /// (masked where a detector hit).
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(chunk);
        let l = self.masker.max_len;
        if self.buf.len().saturating_sub(self.pos) > l.saturating_add(l.max(MIN_STEP)) {
            self.step(false, out);
        }
    }

    /// Ends the stream (or an interactive segment, e.g. when the stream has been idle): decides and
    /// writes everything held. The stream may be fed again afterwards; matches never span a
    /// `finish`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.step(true, out);
        self.buf.clear();
        self.pos = 0;
        self.emitted = 0;
    }

    fn step(&mut self, last: bool, out: &mut Vec<u8>) {
        let len = self.buf.len();
        let limit = if last {
            usize::MAX
        } else {
            len.saturating_sub(self.masker.max_len)
        };
        loop {
            match self
                .masker
                .next_hit(Some(&mut self.cache), &self.buf, self.pos, limit)
            {
                Some(Hit::Accepted { detector, range }) => {
                    out.extend_from_slice(
                        self.buf.get(self.emitted..range.start).unwrap_or_default(),
                    );
                    self.masker.replace(
                        detector,
                        self.buf.get(range.clone()).unwrap_or_default(),
                        out,
                    );
                    self.emitted = range.end;
                    self.pos = range.end;
                }
                None | Some(Hit::Undecided) => {
                    // No match starts in [pos, limit): those bytes are final.
                    let upto = if last { len } else { self.pos.max(limit) };
                    out.extend_from_slice(self.buf.get(self.emitted..upto).unwrap_or_default());
                    self.emitted = upto;
                    self.pos = upto;
                    break;
                }
            }
        }
        // Keep one byte of look-behind before the search position.
        let cut = self.pos.saturating_sub(1).min(self.emitted);
        self.buf.drain(..cut);
        self.pos -= cut;
        self.emitted -= cut;
    }
}

/// One stream through several maskers in turn (every `[[mask]]` rule that applies, in policy
/// order): what the first releases is fed to the second, and so on. Used for an SSH channel's
/// live output (the relay's mask filter) and for what a terminal recording writes.
///
/// Each stage holds back its own tail, so the chain holds at most the sum of the stages' bounds.
/// No clock: the caller decides when the stream is idle and calls [`MaskChain::finish`].
#[derive(Debug)]
pub struct MaskChain {
    stages: Vec<StreamMasker<std::sync::Arc<Masker>>>,
}

impl MaskChain {
    /// A chain through `masks`, in order; None when there is nothing to mask with.
    pub fn new(masks: &[std::sync::Arc<Masker>]) -> Option<MaskChain> {
        if masks.is_empty() {
            return None;
        }
        Some(MaskChain {
            stages: masks.iter().cloned().map(StreamMasker::new).collect(),
        })
    }

    /// Bytes fed but not yet released (by any stage).
    pub fn held(&self) -> usize {
        self.stages.iter().map(StreamMasker::held).sum()
    }

    /// Feeds `input` and appends to `out` what is now decided.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some((first, rest)) = self.stages.split_first_mut() else {
            out.extend_from_slice(input);
            return;
        };
        if rest.is_empty() {
            // The common case (one rule applies): no intermediate copy.
            first.feed(input, out);
            return;
        }
        let mut carry = Vec::new();
        first.feed(input, &mut carry);
        for stage in rest {
            let mut next = Vec::new();
            stage.feed(&carry, &mut next);
            carry = next;
        }
        out.extend_from_slice(&carry);
    }

    /// Ends a segment (see [`StreamMasker::finish`]): decides everything held, in every stage, and
    /// appends it to `out`. Feeding may go on afterwards.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let mut carry = Vec::new();
        for stage in &mut self.stages {
            let mut next = Vec::new();
            stage.feed(&carry, &mut next);
            stage.finish(&mut next);
            carry = next;
        }
        out.extend_from_slice(&carry);
    }
}
