//! Incremental UTF-8 decoding of a byte stream that arrives in arbitrary chunks.
//!
//! Terminal output is bytes, cut wherever the SSH channel cut it: a chunk may end in the middle of
//! a multi-byte character, and a program may write bytes that are not UTF-8 at all. asciicast v2
//! events carry JSON strings, i.e. Unicode text, so the recorder has to turn the byte stream into
//! text without (a) splitting a character across two events into two replacement characters, or
//! (b) refusing the stream.
//!
//! asciinema's own recorder does this with Python's `codecs.getincrementaldecoder("UTF-8")
//! ("replace")`: an incomplete sequence at the end of a chunk is held until the next chunk, and
//! every ill-formed sequence becomes one U+FFFD. Python (like Rust's `String::from_utf8_lossy`)
//! replaces each *maximal subpart of an ill-formed subsequence* with one U+FFFD, the practice the
//! Unicode Standard recommends (chapter 3, "U+FFFD Substitution of Maximal Subparts"). This decoder
//! gives exactly what `String::from_utf8_lossy` gives on the concatenation of all chunks, whatever
//! the chunking; the unit tests and the fuzz target hold it to that.

/// The replacement character, written for every ill-formed sequence.
pub const REPLACEMENT: &str = "\u{FFFD}";

/// Longest incomplete sequence that can be held between chunks: a 4-byte sequence missing its last
/// byte.
const MAX_TAIL: usize = 3;

/// Decodes a chunked byte stream into text, holding an incomplete trailing character (at most 3
/// bytes) until the next chunk. Memory is constant: the only state is that tail.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    tail: [u8; MAX_TAIL],
    tail_len: usize,
}

impl Utf8Stream {
    /// A decoder with nothing held.
    pub fn new() -> Utf8Stream {
        Utf8Stream::default()
    }

    /// Bytes of an incomplete character held from the previous chunk (0..=3).
    pub fn pending(&self) -> usize {
        self.tail_len
    }

    /// Decodes `input` after whatever was held, calling `emit` with each run of text in order.
    /// Ill-formed sequences are emitted as [`REPLACEMENT`]; an incomplete sequence at the end of
    /// `input` is held, not emitted.
    pub fn decode(&mut self, input: &[u8], mut emit: impl FnMut(&str)) {
        let mut rest = input;
        if self.tail_len > 0 {
            rest = self.complete_tail(rest, &mut emit);
            if self.tail_len > 0 {
                // `rest` was too short to finish (or refute) the held character: all of it is
                // held now.
                return;
            }
        }
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    if !text.is_empty() {
                        emit(text);
                    }
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    if let Ok(text) = std::str::from_utf8(valid) {
                        if !text.is_empty() {
                            emit(text);
                        }
                    }
                    match e.error_len() {
                        Some(bad) => {
                            emit(REPLACEMENT);
                            rest = after.get(bad..).unwrap_or_default();
                        }
                        None => {
                            // An incomplete but so far valid sequence at the very end: from_utf8
                            // only says so when fewer than 4 bytes remain.
                            self.hold(after);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: a held incomplete character is emitted as one [`REPLACEMENT`] (what a
    /// final `decode(..., final=True)` does in Python), and the decoder is empty again.
    pub fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if self.tail_len > 0 {
            self.tail_len = 0;
            emit(REPLACEMENT);
        }
    }

    /// Resolves the held character with the first bytes of `input`; returns what is left of
    /// `input`. Leaves `tail_len > 0` only if all of `input` was taken into the tail.
    fn complete_tail<'a>(&mut self, input: &'a [u8], emit: &mut impl FnMut(&str)) -> &'a [u8] {
        // The held bytes plus up to 4 more are enough to decide the held character: it is at most
        // 4 bytes long, and from_utf8 reports an error within its first 4 bytes.
        let mut window = [0u8; MAX_TAIL + 4];
        let held = self.tail_len.min(MAX_TAIL);
        let extra = input.len().min(4);
        let total = held + extra;
        let (head, body) = window.split_at_mut(held);
        head.copy_from_slice(self.tail.get(..held).unwrap_or_default());
        if let (Some(dst), Some(src)) = (body.get_mut(..extra), input.get(..extra)) {
            dst.copy_from_slice(src);
        }
        let window = window.get(..total).unwrap_or_default();

        let consumed_in_window = match std::str::from_utf8(window) {
            Ok(text) => first_char_prefix(text, emit),
            Err(e) if e.valid_up_to() > 0 => {
                let text = std::str::from_utf8(window.get(..e.valid_up_to()).unwrap_or_default())
                    .unwrap_or_default();
                first_char_prefix(text, emit)
            }
            Err(e) => match e.error_len() {
                Some(bad) => {
                    emit(REPLACEMENT);
                    bad
                }
                None => {
                    // Still incomplete: `input` was shorter than what the character needs.
                    self.hold(window);
                    return &[];
                }
            },
        };
        self.tail_len = 0;
        // The held bytes were a valid prefix, so whatever resolved them (a whole character, or an
        // ill-formed subpart that contains them all) spans at least the held bytes.
        let from_input = consumed_in_window.saturating_sub(held);
        input.get(from_input..).unwrap_or_default()
    }

    fn hold(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(MAX_TAIL);
        if let (Some(dst), Some(src)) = (self.tail.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.tail_len = n;
    }
}

/// Emits the first character of `text` (non-empty) and returns its length in bytes.
fn first_char_prefix(text: &str, emit: &mut impl FnMut(&str)) -> usize {
    let len = text.chars().next().map_or(0, char::len_utf8);
    if let Some(first) = text.get(..len) {
        emit(first);
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_chunks(chunks: &[&[u8]]) -> String {
        let mut dec = Utf8Stream::new();
        let mut out = String::new();
        for c in chunks {
            dec.decode(c, |s| out.push_str(s));
        }
        dec.finish(|s| out.push_str(s));
        out
    }

    #[test]
    fn accepts_ascii_and_multibyte_in_one_chunk() {
        assert_eq!(decode_chunks(&["héllo €𝄞".as_bytes()]), "héllo €𝄞");
    }

    #[test]
    fn holds_a_character_split_across_chunks() {
        let euro = "€".as_bytes(); // e2 82 ac
        let mut dec = Utf8Stream::new();
        let mut out = Vec::new();
        dec.decode(&[b'a', euro[0]], |s| out.push(s.to_owned()));
        assert_eq!(out, ["a"]);
        assert_eq!(dec.pending(), 1);
        dec.decode(&euro[1..2], |s| out.push(s.to_owned()));
        assert_eq!(dec.pending(), 2);
        assert_eq!(out, ["a"]);
        dec.decode(&[euro[2], b'b'], |s| out.push(s.to_owned()));
        assert_eq!(dec.pending(), 0);
        assert_eq!(out.concat(), "a€b");
    }

    #[test]
    fn splits_a_four_byte_character_at_every_position() {
        let clef = "x𝄞y".as_bytes();
        for cut in 0..=clef.len() {
            let (a, b) = clef.split_at(cut);
            assert_eq!(decode_chunks(&[a, b]), "x𝄞y", "cut at {cut}");
        }
    }

    #[test]
    fn replaces_invalid_bytes_like_from_utf8_lossy() {
        let cases: &[&[u8]] = &[
            b"\xff",
            b"a\x80b",
            b"\xc3\x28",         // lead byte followed by a non-continuation
            b"\xe0\x80\x80",     // overlong
            b"\xed\xa0\x80",     // surrogate
            b"\xf4\x90\x80\x80", // above U+10FFFF
            b"\xf0\x9d\x84",     // truncated at the end of the stream
            b"\xe2\x82\xe2\x82\xac",
        ];
        for bytes in cases {
            let want = String::from_utf8_lossy(bytes);
            assert_eq!(decode_chunks(&[bytes]), want, "{bytes:x?} whole");
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                assert_eq!(decode_chunks(&[a, b]), want, "{bytes:x?} cut at {cut}");
            }
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(decode_chunks(&singles), want, "{bytes:x?} byte by byte");
        }
    }

    #[test]
    fn held_lead_byte_refuted_by_next_chunk_is_one_replacement() {
        // E0 must be followed by A0..BF: the 0x80 is its own ill-formed byte, and 'a' survives.
        assert_eq!(
            decode_chunks(&[b"\xe0", b"\x80a"]),
            "\u{FFFD}\u{FFFD}a".to_owned()
        );
        assert_eq!(decode_chunks(&[b"\xf0\x90", b"A"]), "\u{FFFD}A");
    }

    #[test]
    fn finish_turns_an_incomplete_tail_into_one_replacement() {
        let mut dec = Utf8Stream::new();
        let mut out = String::new();
        dec.decode(b"ok\xe2\x82", |s| out.push_str(s));
        assert_eq!(out, "ok");
        dec.finish(|s| out.push_str(s));
        assert_eq!(out, "ok\u{FFFD}");
        assert_eq!(dec.pending(), 0);
    }

    #[test]
    fn matches_from_utf8_lossy_on_random_chunkings() {
        // Deterministic xorshift: no RNG crate, reproducible failures.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: &[&[u8]] = &[
            b"a",
            b"\x1b[31m",
            "é".as_bytes(),
            "€".as_bytes(),
            "𝄞".as_bytes(),
            b"\x80",
            b"\xff",
            b"\xe2",
            b"\xf0\x9f",
            b"\xed\xa0\x80",
            b"\r\n",
        ];
        for _ in 0..500 {
            let mut bytes = Vec::new();
            for _ in 0..(next() % 40) {
                let idx = usize::try_from(next() % 11).unwrap();
                bytes.extend_from_slice(alphabet[idx]);
            }
            let mut chunks = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = usize::try_from(next() % 6).unwrap().min(rest.len());
                let (a, b) = rest.split_at(n);
                chunks.push(a);
                rest = b;
            }
            assert_eq!(
                decode_chunks(&chunks),
                String::from_utf8_lossy(&bytes),
                "{bytes:x?} in {chunks:x?}"
            );
        }
    }
}
