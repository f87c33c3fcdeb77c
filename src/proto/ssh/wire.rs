//! SSH binary data representation (RFC 4251 §5): a cursor [`Reader`] that cannot panic and a
//! [`Writer`] that appends to a `Vec<u8>`.
//!
//! Every length read from the wire is checked against the bytes actually present before anything
//! is sliced, and capped by [`MAX_FIELD`] before anything is allocated. Bytes left over after the
//! last field are an error ([`WireError::TrailingBytes`]) when the caller says the message is done
//! ([`Reader::finish`]). No function here panics on any input.

use std::fmt;

/// Longest single `string` / `name-list` / `mpint` accepted from a peer. A whole packet is capped
/// lower than this by the transport (35,000 bytes of payload per RFC 4253 §6.1, larger when a
/// channel advertises it), so this only stops a length field from claiming more than any packet
/// could carry.
pub const MAX_FIELD: usize = 1 << 20;

/// Most names accepted in one `name-list` (OpenSSH's KEXINIT lists have < 40 entries).
pub const MAX_NAMES: usize = 128;

/// Why a byte string is not a well-formed SSH field sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The data ended before the field did.
    Truncated,
    /// A length field is larger than [`MAX_FIELD`].
    TooLong,
    /// A `name-list` has more than [`MAX_NAMES`] entries or an empty name.
    BadNameList,
    /// A `boolean`, `mpint` or text field is not in its canonical form.
    NonCanonical,
    /// A text field is not UTF-8 (RFC 4251 §5: names are US-ASCII, user-visible text UTF-8).
    InvalidUtf8,
    /// Bytes remain after the last field of a message.
    TrailingBytes,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "message ends inside a field",
            WireError::TooLong => "field length over the limit",
            WireError::BadNameList => "malformed name-list",
            WireError::NonCanonical => "field not in canonical form",
            WireError::InvalidUtf8 => "text field is not UTF-8",
            WireError::TrailingBytes => "bytes after the last field",
        })
    }
}

impl std::error::Error for WireError {}

/// A cursor over one message. Every read either returns the whole field or an error and leaves
/// the cursor where it was useful for the caller to stop.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Ends the message: an error if bytes remain.
    ///
    /// # Errors
    /// [`WireError::TrailingBytes`] if any byte is left.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }

    /// The next `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Everything not read yet (for trailing fields whose shape depends on an earlier one).
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// `byte`.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// `boolean`: RFC 4251 says any non-zero value is TRUE; we accept only 0 and 1 so that two
    /// parsers can't read the same bytes differently.
    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::NonCanonical),
        }
    }

    /// `uint32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `uint64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// `string` as raw bytes, length checked and capped.
    pub fn string(&mut self) -> Result<&'a [u8], WireError> {
        let len = usize::try_from(self.u32()?).map_err(|_| WireError::TooLong)?;
        if len > MAX_FIELD {
            return Err(WireError::TooLong);
        }
        self.take(len)
    }

    /// `string` that must be UTF-8 text.
    pub fn utf8(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.string()?).map_err(|_| WireError::InvalidUtf8)
    }

    /// A `string` read as a sub-reader, for nested structures (key blobs, signatures).
    pub fn sub(&mut self) -> Result<Reader<'a>, WireError> {
        Ok(Reader::new(self.string()?))
    }

    /// `name-list`: comma-separated US-ASCII names, none empty (RFC 4251 §5).
    pub fn name_list(&mut self) -> Result<Vec<&'a str>, WireError> {
        let raw = self.string()?;
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        if !raw.iter().all(|b| b.is_ascii_graphic()) {
            return Err(WireError::BadNameList);
        }
        let text = std::str::from_utf8(raw).map_err(|_| WireError::BadNameList)?;
        let mut names = Vec::new();
        for name in text.split(',') {
            if name.is_empty() || names.len() == MAX_NAMES {
                return Err(WireError::BadNameList);
            }
            names.push(name);
        }
        Ok(names)
    }

    /// `mpint` that must be non-negative, returned as its magnitude without leading zero bytes.
    /// RFC 4251: "Unnecessary leading bytes with the value 0 or 255 MUST NOT be included."
    pub fn mpint_unsigned(&mut self) -> Result<&'a [u8], WireError> {
        let raw = self.string()?;
        match raw {
            [] => Ok(raw),
            [first, ..] if first & 0x80 != 0 => Err(WireError::NonCanonical),
            [0, second, ..] if second & 0x80 == 0 => Err(WireError::NonCanonical),
            [0] => Err(WireError::NonCanonical),
            [0, rest @ ..] => Ok(rest),
            _ => Ok(raw),
        }
    }
}

/// Appends SSH fields to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    /// A writer that starts with a message number.
    pub fn message(msg: u8) -> Self {
        Writer { buf: vec![msg] }
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// `byte`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// `boolean`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(u8::from(v));
        self
    }

    /// `uint32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// `uint64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Raw bytes with no length prefix.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// `string`. Our own strings are always far below 4 GiB; a longer one would be a bug, and is
    /// written with its length saturated so the peer rejects it rather than misreading it.
    pub fn string(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    /// `name-list` from names (none of which may contain a comma; ours are constants).
    pub fn name_list(&mut self, names: &[&str]) -> &mut Self {
        let joined = names.join(",");
        self.string(joined.as_bytes())
    }

    /// `mpint` from a non-negative big-endian magnitude (leading zeros are stripped, and a zero
    /// byte is added when the top bit is set).
    pub fn mpint_unsigned(&mut self, magnitude: &[u8]) -> &mut Self {
        let start = magnitude
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(magnitude.len());
        let m = &magnitude[start..];
        if m.first().is_some_and(|b| b & 0x80 != 0) {
            let len = u32::try_from(m.len() + 1).unwrap_or(u32::MAX);
            self.u32(len);
            self.buf.push(0);
            self.buf.extend_from_slice(m);
        } else {
            self.string(m);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_fields() {
        let mut w = Writer::message(20);
        w.bool(true)
            .u32(7)
            .u64(1 << 40)
            .string(b"abc")
            .name_list(&["curve25519-sha256", "ext-info-s"])
            .mpint_unsigned(&[0, 0, 0x80, 1]);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(20));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.u64(), Ok(1 << 40));
        assert_eq!(r.string(), Ok(&b"abc"[..]));
        assert_eq!(r.name_list(), Ok(vec!["curve25519-sha256", "ext-info-s"]));
        assert_eq!(r.mpint_unsigned(), Ok(&[0x80, 1][..]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn mpint_encoding_matches_rfc4251_examples() {
        // RFC 4251 §5 examples.
        let cases: [(&[u8], &[u8]); 3] = [
            (&[], &[0, 0, 0, 0]),
            (
                &[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7],
                &[0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7],
            ),
            (&[0x80], &[0, 0, 0, 2, 0, 0x80]),
        ];
        for (magnitude, wire) in cases {
            let mut w = Writer::new();
            w.mpint_unsigned(magnitude);
            assert_eq!(w.as_bytes(), wire);
            assert_eq!(Reader::new(wire).mpint_unsigned(), Ok(magnitude));
        }
    }

    #[test]
    fn rejects_non_canonical_mpints_and_booleans() {
        assert_eq!(
            Reader::new(&[0, 0, 0, 2, 0, 1]).mpint_unsigned(),
            Err(WireError::NonCanonical)
        );
        assert_eq!(
            Reader::new(&[0, 0, 0, 1, 0x80]).mpint_unsigned(),
            Err(WireError::NonCanonical)
        );
        assert_eq!(
            Reader::new(&[0, 0, 0, 1, 0]).mpint_unsigned(),
            Err(WireError::NonCanonical)
        );
        assert_eq!(Reader::new(&[2]).bool(), Err(WireError::NonCanonical));
    }

    #[test]
    fn rejects_truncated_and_oversized_strings() {
        assert_eq!(
            Reader::new(&[0, 0, 0, 5, 1, 2]).string(),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0, 0x20, 0, 0]).string(),
            Err(WireError::TooLong)
        );
        assert_eq!(Reader::new(&[0, 0]).u32(), Err(WireError::Truncated));
        assert_eq!(Reader::new(&[1]).finish(), Err(WireError::TrailingBytes));
    }

    #[test]
    fn rejects_bad_name_lists() {
        for raw in [&b"a,,b"[..], b",a", b"a,", b"a b", b"a\x00"] {
            let mut w = Writer::new();
            w.string(raw);
            assert_eq!(
                Reader::new(w.as_bytes()).name_list(),
                Err(WireError::BadNameList),
                "{raw:?}"
            );
        }
        let many = vec!["x"; MAX_NAMES + 1].join(",");
        let mut w = Writer::new();
        w.string(many.as_bytes());
        assert_eq!(
            Reader::new(w.as_bytes()).name_list(),
            Err(WireError::BadNameList)
        );
        let mut empty = Writer::new();
        empty.string(b"");
        assert_eq!(Reader::new(empty.as_bytes()).name_list(), Ok(vec![]));
    }
}
