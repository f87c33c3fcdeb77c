//! PostgreSQL frontend/backend protocol v3 codec.
//!
//! This module contains no networking code, no clock and no randomness: it turns byte slices into
//! borrowed messages and messages into bytes appended to a `Vec<u8>`. The async shell owns the
//! sockets and the buffers; it calls [`parse_startup`] during the startup phase and then
//! [`split_frame`] + [`decode_frontend`] / [`decode_backend`] on every tagged frame.
//!
//! Quotes marked "Message Formats" are from the PostgreSQL documentation, chapter "Frontend/Backend
//! Protocol", section "Message Formats" (PostgreSQL 18); the wire layout they describe is the same
//! for protocol 3.0 since PostgreSQL 7.4, plus the 3.2 variable-length cancel key.
//!
//! # Hostile input
//!
//! Every reader works on a cursor ([`Reader`]) that cannot index out of bounds: every length read
//! from the wire is checked against the bytes actually present *before* anything is allocated or
//! sliced, every count is capped (by its 16-bit wire width, or by an explicit constant), and bytes
//! left over after the last field are an error ([`CodecError::TrailingBytes`]). No function here
//! panics on any input; the fuzz targets in `fuzz/` hold us to that.
//!
//! # Text encoding
//!
//! Protocol strings are decoded as UTF-8. Invalid UTF-8 is refused with
//! [`CodecError::InvalidUtf8`] rather than being guessed at: the gateway classifies SQL text, and a
//! statement it cannot read as text is a statement it cannot inspect, so it fails closed. Clients
//! (psql, libpq, JDBC, ...) send UTF-8 whenever `client_encoding` is UTF8, which is the common case;
//! a client using another encoding gets a clear error rather than a silent misclassification.
//!
//! # Interior NUL bytes in encoder input
//!
//! Protocol strings are NUL-terminated, so a NUL inside a `&str` handed to an encoder would end the
//! string early and shift every later field, producing a frame the peer parses differently from
//! what we meant. The encoders never let that happen:
//! - human-readable text in ErrorResponse / NoticeResponse fields has its NULs **stripped**;
//! - every other string (SQL, statement and portal names, parameter names and values, SASL
//!   mechanism names, passwords) is **cut at its first NUL**, which is exactly the prefix a
//!   PostgreSQL server would read from it, so the bytes we send never say more than the server
//!   would see. Startup parameters whose name becomes empty are skipped (an empty name would end
//!   the list).
//!
//! Binary payloads (SASL data, CopyData, cancel keys) are length-prefixed and sent as they are.
//!
//! A message that cannot be represented at all (a body over `i32::MAX - 4` bytes, more than 65535
//! Parse parameter types) is not written: `out` is left as it was. The gateway never builds such
//! messages; the rule only guarantees that a broken frame is never produced.

use std::fmt;

/// Largest startup-phase packet accepted, measured as its Int32 length field (which counts itself).
/// Same value as PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Protocol version the gateway speaks and sends in [`encode_startup`].
pub const PROTOCOL_V3: (u16, u16) = (3, 0);

/// Most parameters accepted in a StartupMessage (PostgreSQL has no explicit cap; its 10,000-byte
/// packet limit allows ~2,500 empty pairs, more than any client sends).
pub const MAX_STARTUP_PARAMS: usize = 64;

/// Most SASL mechanisms accepted in an AuthenticationSASL message.
pub const MAX_SASL_MECHANISMS: usize = 16;

/// Most fields accepted in an ErrorResponse / NoticeResponse (PostgreSQL defines 18 field codes).
pub const MAX_ERROR_FIELDS: usize = 64;

/// Most unrecognized options accepted in a NegotiateProtocolVersion message.
pub const MAX_NEGOTIATE_OPTIONS: usize = 64;

/// Shortest and longest cancel key. Message Formats, BackendKeyData: "The minimum and maximum key
/// length are 4 and 256 bytes, respectively." ... "Before protocol version 3.2, the secret key was
/// always 4 bytes long."
pub const MIN_CANCEL_KEY: usize = 4;
/// See [`MIN_CANCEL_KEY`].
pub const MAX_CANCEL_KEY: usize = 256;

// Message Formats, SSLRequest: "The SSL request code. The value is chosen to contain 1234 in the
// most significant 16 bits, and 5679 in the least significant 16 bits."
const SSL_REQUEST_CODE: u32 = (1234 << 16) | 5679;
// GSSENCRequest: "... 1234 in the most significant 16 bits, and 5680 in the least significant 16 bits."
const GSSENC_REQUEST_CODE: u32 = (1234 << 16) | 5680;
// CancelRequest: "... 1234 in the most significant 16 bits, and 5678 in the least significant 16 bits."
const CANCEL_REQUEST_CODE: u32 = (1234 << 16) | 5678;

// Authentication request codes (the Int32 after the 'R' header).
const AUTH_OK: u32 = 0;
const AUTH_CLEARTEXT: u32 = 3;
const AUTH_MD5: u32 = 5;
const AUTH_SASL: u32 = 10;
const AUTH_SASL_CONTINUE: u32 = 11;
const AUTH_SASL_FINAL: u32 = 12;

/// Why bytes could not be decoded. Every variant is the peer's fault (or a truncated stream); the
/// session answers with an ErrorResponse (SQLSTATE 08P01, protocol_violation) and closes.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// A length field (which counts itself) declares more than the limit; both are given as
    /// length-field values. Returned as soon as the header is read, before the body arrives.
    TooLong {
        /// The declared length field.
        declared: usize,
        /// The largest acceptable length field.
        max: usize,
    },
    /// A length field is smaller than the fixed part of its message (e.g. a frame length below 4,
    /// a startup length below 8, or a negative length).
    TooShort,
    /// The message body ends before a field it must contain.
    Truncated,
    /// A string runs to the end of the message without its terminating NUL byte.
    MissingNul,
    /// A string is not valid UTF-8 (see the module doc for why this is refused).
    InvalidUtf8,
    /// Bytes remain after the last field of a message.
    TrailingBytes,
    /// A startup-phase packet carries a request code / protocol version we don't speak.
    UnknownRequestCode(u32),
    /// A list holds more entries than we accept; the text names the list.
    TooMany(&'static str),
    /// A field holds a value the protocol does not allow; the text says which.
    Invalid(&'static str),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { declared, max } => {
                write!(f, "message length {declared} exceeds the limit of {max}")
            }
            Self::TooShort => f.write_str("message length is smaller than its fixed fields"),
            Self::Truncated => f.write_str("message ends before its last field"),
            Self::MissingNul => f.write_str("string is not NUL-terminated within its message"),
            Self::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            Self::TrailingBytes => {
                f.write_str("unexpected bytes after the last field of a message")
            }
            Self::UnknownRequestCode(code) => write!(
                f,
                "unsupported startup request code {code} (protocol {}.{})",
                code >> 16,
                code & 0xffff
            ),
            Self::TooMany(what) => write!(f, "too many {what}"),
            Self::Invalid(what) => write!(f, "invalid message: {what}"),
        }
    }
}

impl std::error::Error for CodecError {}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// A cursor over one message body. Every accessor checks the remaining length first and returns
/// an error instead of panicking; nothing is ever indexed directly.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes exactly `n` bytes.
    ///
    /// # Errors
    /// [`CodecError::Truncated`] if fewer than `n` remain (nothing is consumed then).
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.rest.len() {
            return Err(CodecError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes everything that is left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Byte1.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    /// Int16, read as unsigned (PostgreSQL treats its counts as unsigned 16-bit integers).
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Int16, signed (format codes).
    pub fn i16(&mut self) -> Result<i16, CodecError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// Int32, signed.
    pub fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// Int32, unsigned (OIDs, request codes).
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A NUL-terminated string's bytes, without the NUL.
    ///
    /// # Errors
    /// [`CodecError::MissingNul`] if no NUL remains.
    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::MissingNul)?;
        let s = self.take(end)?;
        self.take(1)?;
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string ("String" in Message Formats).
    ///
    /// # Errors
    /// [`CodecError::MissingNul`], [`CodecError::InvalidUtf8`].
    pub fn cstr(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.cstr_bytes()?).map_err(|_| CodecError::InvalidUtf8)
    }

    /// Succeeds only if every byte was consumed.
    ///
    /// # Errors
    /// [`CodecError::TrailingBytes`].
    pub fn expect_empty(&self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes)
        }
    }

    /// Fails with [`CodecError::Truncated`] unless at least `count * each` bytes remain. Called
    /// before allocating room for `count` items so a lying count can't reserve memory.
    fn ensure(&self, count: usize, each: usize) -> Result<(), CodecError> {
        match count.checked_mul(each) {
            Some(need) if need <= self.rest.len() => Ok(()),
            _ => Err(CodecError::Truncated),
        }
    }

    /// An Int32 length followed by that many bytes; -1 means NULL (None).
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, CodecError> {
        // Message Formats, Bind: "The length of the parameter value, in bytes (this count does not
        // include itself). Can be zero. As a special case, -1 indicates a NULL parameter value. No
        // value bytes follow in the NULL case."
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| CodecError::Invalid("negative value length"))?;
        self.take(len).map(Some)
    }

    /// Int16 count followed by that many Int16 format codes, each 0 (text) or 1 (binary).
    /// Format codes (an Int16 count, then the codes), checked, each handed to `out`; returns
    /// the count.
    fn format_codes_into(&mut self, out: &mut impl Extend<i16>) -> Result<usize, CodecError> {
        let n = usize::from(self.u16()?);
        self.ensure(n, 2)?;
        for _ in 0..n {
            out.extend(Some(self.format_code()?));
        }
        Ok(n)
    }

    /// What follows a Bind's two names: parameter format codes, the values, result-column
    /// format codes; checked, each part handed to its sink.
    fn bind_params_into(
        &mut self,
        formats: &mut impl Extend<i16>,
        values: &mut impl Extend<Option<&'a [u8]>>,
        result_formats: &mut impl Extend<i16>,
    ) -> Result<(), CodecError> {
        // Bind: "Int16 — The number of parameter format codes that follow (denoted C below).
        // This can be zero ...; or one, in which case the specified format code is applied to
        // all parameters; or it can equal the actual number of parameters."
        let format_count = self.format_codes_into(formats)?;
        // "Int16 — The number of parameter values that follow (possibly zero)."
        let n = usize::from(self.u16()?);
        // Each value needs at least its Int32 length.
        self.ensure(n, 4)?;
        for _ in 0..n {
            values.extend(Some(self.nullable_bytes()?));
        }
        if format_count > 1 && format_count != n {
            return Err(CodecError::Invalid(
                "bind format code count is neither 0, 1 nor the parameter count",
            ));
        }
        // "Int16 — The number of result-column format codes that follow (denoted R below)."
        self.format_codes_into(result_formats)?;
        Ok(())
    }

    fn format_code(&mut self) -> Result<i16, CodecError> {
        // "The parameter format codes. Each must presently be zero (text) or one (binary)."
        let code = self.i16()?;
        if code != 0 && code != 1 {
            return Err(CodecError::Invalid(
                "format code other than 0 (text) or 1 (binary)",
            ));
        }
        Ok(code)
    }
}

/// A sink that keeps nothing: for checking a message's parts without collecting them.
struct Discard;

impl<T> Extend<T> for Discard {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        items.into_iter().for_each(drop);
    }
}

/// Reads a big-endian i32 from the first four bytes of `buf`, if there are four.
fn peek_i32(buf: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

// ---------------------------------------------------------------------------------------------
// Startup phase
// ---------------------------------------------------------------------------------------------

/// A startup-phase packet (the ones without a tag byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest<'a> {
    /// SSLRequest: the client asks for TLS before anything else.
    SslRequest,
    /// GSSENCRequest: the client asks for GSSAPI encryption (the gateway answers 'N').
    GssEncRequest,
    /// CancelRequest for backend `pid` with its secret key (4 bytes in 3.0, 4..=256 in 3.2).
    Cancel {
        /// "The process ID of the target backend."
        pid: i32,
        /// "The secret key for the target backend."
        secret: &'a [u8],
    },
    /// StartupMessage with protocol major 3 (any minor) and its parameters in wire order.
    Startup {
        /// Protocol major version (always 3 here).
        major: u16,
        /// Protocol minor version as requested (0 for 3.0, 2 for 3.2, ...).
        minor: u16,
        /// Name/value pairs, in the order sent; at most [`MAX_STARTUP_PARAMS`].
        params: Vec<(&'a str, &'a str)>,
    },
}

/// Parses one startup-phase packet: Int32 length (including itself), Int32 code, body.
///
/// Returns `Ok(None)` while `buf` does not yet hold the whole packet, and
/// `Ok(Some((request, consumed)))` once it does; bytes after `consumed` belong to what follows
/// (after an SSLRequest, the caller must refuse any such bytes before the TLS handshake).
///
/// The length is checked as soon as its four bytes are there, so an oversized declaration is
/// refused without waiting for (or buffering) the body.
///
/// # Errors
/// - [`CodecError::TooShort`] for a length below 8 (including negative lengths);
/// - [`CodecError::TooLong`] above [`MAX_STARTUP_PACKET`];
/// - [`CodecError::UnknownRequestCode`] for a code that is neither a special request nor
///   protocol major version 3;
/// - [`CodecError::Invalid`] for an SSL/GSSENC request with a body, or a cancel key of a bad size;
/// - string errors and [`CodecError::TooMany`] for the parameter list.
pub fn parse_startup(buf: &[u8]) -> Result<Option<(StartupRequest<'_>, usize)>, CodecError> {
    let Some(declared) = peek_i32(buf) else {
        return Ok(None);
    };
    // Message Formats, StartupMessage: "Int32 — Length of message contents in bytes, including
    // self." The smallest packet is the length plus the Int32 code.
    let len = usize::try_from(declared).map_err(|_| CodecError::TooShort)?;
    if len < 8 {
        return Err(CodecError::TooShort);
    }
    if len > MAX_STARTUP_PACKET {
        return Err(CodecError::TooLong {
            declared: len,
            max: MAX_STARTUP_PACKET,
        });
    }
    let Some(packet) = buf.get(4..len) else {
        return Ok(None);
    };
    let mut r = Reader::new(packet);
    let code = r.u32()?;
    let request = match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            // SSLRequest / GSSENCRequest are exactly Int32(8) + code.
            r.expect_empty()
                .map_err(|_| CodecError::Invalid("SSL/GSSENC request with a body"))?;
            if code == SSL_REQUEST_CODE {
                StartupRequest::SslRequest
            } else {
                StartupRequest::GssEncRequest
            }
        }
        CANCEL_REQUEST_CODE => {
            let pid = r.i32()?;
            // CancelRequest: "The secret key for the target backend. This field extends to the end
            // of the message, indicated by the length field. The maximum key length is 256 bytes."
            let secret = r.take_rest();
            if !(MIN_CANCEL_KEY..=MAX_CANCEL_KEY).contains(&secret.len()) {
                return Err(CodecError::Invalid("cancel key length outside 4..=256"));
            }
            StartupRequest::Cancel { pid, secret }
        }
        _ if code >> 16 == 3 => {
            // StartupMessage: "Int32(196608) — The protocol version number. The most significant
            // 16 bits are the major version number (3 for the protocol described here). The least
            // significant 16 bits are the minor version number."
            let major = 3;
            let minor = u16::try_from(code & 0xffff).map_err(|_| CodecError::Invalid("minor"))?;
            StartupRequest::Startup {
                major,
                minor,
                params: startup_params(&mut r)?,
            }
        }
        _ => return Err(CodecError::UnknownRequestCode(code)),
    };
    Ok(Some((request, len)))
}

fn startup_params<'a>(r: &mut Reader<'a>) -> Result<Vec<(&'a str, &'a str)>, CodecError> {
    // StartupMessage: "The protocol version number is followed by one or more pairs of parameter
    // name and value strings. A zero byte is required as a terminator after the last name/value
    // pair."
    let mut params = Vec::new();
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            break;
        }
        if params.len() == MAX_STARTUP_PARAMS {
            return Err(CodecError::TooMany("startup parameters"));
        }
        let value = r.cstr()?;
        params.push((name, value));
    }
    r.expect_empty()?;
    Ok(params)
}

// ---------------------------------------------------------------------------------------------
// Tagged frames
// ---------------------------------------------------------------------------------------------

/// One complete tagged frame, borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// "Byte1 — Identifies the message as ..."
    pub tag: u8,
    /// The message contents after the length field.
    pub body: &'a [u8],
    /// Total bytes the frame occupies in the buffer, tag included (`1 + length field`).
    pub len: usize,
}

/// Reads a tagged frame header (Byte1 tag, Int32 length including itself).
///
/// Returns `Ok(None)` while fewer than 5 bytes are there, else the tag and the total frame size
/// (`1 + length`), checked before the body arrives so an oversized frame is never buffered.
///
/// # Errors
/// [`CodecError::TooShort`] if the length is below 4 (or negative); [`CodecError::TooLong`] if the
/// body (`length - 4`) exceeds `max_body` (reported as length-field values: `max = max_body + 4`).
pub fn frame_header(buf: &[u8], max_body: usize) -> Result<Option<(u8, usize)>, CodecError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let Some(declared) = buf.get(1..).and_then(peek_i32) else {
        return Ok(None);
    };
    // "Int32 — Length of message contents in bytes, including self."
    let len = usize::try_from(declared).map_err(|_| CodecError::TooShort)?;
    let Some(body) = len.checked_sub(4) else {
        return Err(CodecError::TooShort);
    };
    if body > max_body {
        return Err(CodecError::TooLong {
            declared: len,
            max: max_body.saturating_add(4),
        });
    }
    let total = len.checked_add(1).ok_or(CodecError::TooLong {
        declared: len,
        max: max_body.saturating_add(4),
    })?;
    Ok(Some((tag, total)))
}

/// Splits one whole tagged frame off the front of `buf`; `Ok(None)` until it is all there.
///
/// # Errors
/// As [`frame_header`].
pub fn split_frame(buf: &[u8], max_body: usize) -> Result<Option<Frame<'_>>, CodecError> {
    let Some((tag, total)) = frame_header(buf, max_body)? else {
        return Ok(None);
    };
    Ok(buf.get(5..total).map(|body| Frame {
        tag,
        body,
        len: total,
    }))
}

// ---------------------------------------------------------------------------------------------
// Frontend messages
// ---------------------------------------------------------------------------------------------

/// Parameters of a Bind message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindParams<'a> {
    /// Parameter format codes: none (all text), one (applies to all) or one per value.
    pub formats: Vec<i16>,
    /// Parameter values; `None` is SQL NULL.
    pub values: Vec<Option<&'a [u8]>>,
    /// Result-column format codes: none, one, or one per result column.
    pub result_formats: Vec<i16>,
}

/// A decoded frontend (client-to-server) message, borrowing from the frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// 'Q' simple query.
    Query {
        /// "The query string itself."
        sql: &'a str,
    },
    /// 'P' Parse.
    Parse {
        /// Destination prepared statement ("" is the unnamed one).
        name: &'a str,
        /// "The query string to be parsed."
        sql: &'a str,
        /// Prespecified parameter type OIDs (0 = unspecified).
        param_types: Vec<u32>,
    },
    /// 'B' Bind.
    Bind {
        /// Destination portal ("" is the unnamed one).
        portal: &'a str,
        /// Source prepared statement ("" is the unnamed one).
        statement: &'a str,
        /// Formats and values.
        params: BindParams<'a>,
    },
    /// 'E' Execute.
    Execute {
        /// Portal to execute.
        portal: &'a str,
        /// "Maximum number of rows to return ... Zero denotes "no limit"."
        max_rows: i32,
    },
    /// 'D' Describe; `kind` is b'S' (statement) or b'P' (portal).
    Describe {
        /// b'S' or b'P'.
        kind: u8,
        /// Statement or portal name.
        name: &'a str,
    },
    /// 'C' Close; `kind` is b'S' (statement) or b'P' (portal).
    Close {
        /// b'S' or b'P'.
        kind: u8,
        /// Statement or portal name.
        name: &'a str,
    },
    /// 'S' Sync.
    Sync,
    /// 'H' Flush.
    Flush,
    /// 'X' Terminate.
    Terminate,
    /// 'd' CopyData: a piece of the COPY stream, split arbitrarily by the client.
    CopyData(&'a [u8]),
    /// 'c' CopyDone.
    CopyDone,
    /// 'f' CopyFail.
    CopyFail {
        /// "An error message to report as the cause of failure."
        message: &'a str,
    },
    /// 'F' FunctionCall (fast-path). The whole body is validated; only the OID is kept.
    FunctionCall {
        /// "Specifies the object ID of the function to call."
        oid: u32,
    },
    /// 'p': PasswordMessage, SASLInitialResponse, SASLResponse or GSSResponse — which one depends
    /// on the authentication state; decode with [`decode_password`] / [`decode_sasl_initial`] or
    /// use the bytes as SASL data.
    Password(&'a [u8]),
    /// Any other tag; not decoded.
    Unknown(u8),
}

/// Decodes the body of a frontend frame (see [`split_frame`]).
///
/// Fixed-size messages must be exactly their size and every message must end at its last field.
///
/// # Errors
/// Any [`CodecError`] except `TooLong` / `UnknownRequestCode`.
pub fn decode_frontend(tag: u8, body: &[u8]) -> Result<Frontend<'_>, CodecError> {
    let mut r = Reader::new(body);
    let msg = match tag {
        // Query: "String — The query string itself."
        b'Q' => Frontend::Query { sql: r.cstr()? },
        b'P' => {
            let name = r.cstr()?;
            let sql = r.cstr()?;
            // Parse: "Int16 — The number of parameter data types specified (can be zero)."
            // "Int32 — Specifies the object ID of the parameter data type."
            let n = usize::from(r.u16()?);
            r.ensure(n, 4)?;
            let mut param_types = Vec::with_capacity(n);
            for _ in 0..n {
                param_types.push(r.u32()?);
            }
            Frontend::Parse {
                name,
                sql,
                param_types,
            }
        }
        b'B' => {
            let portal = r.cstr()?;
            let statement = r.cstr()?;
            let mut params = BindParams {
                formats: Vec::new(),
                values: Vec::new(),
                result_formats: Vec::new(),
            };
            r.bind_params_into(
                &mut params.formats,
                &mut params.values,
                &mut params.result_formats,
            )?;
            Frontend::Bind {
                portal,
                statement,
                params,
            }
        }
        b'E' => Frontend::Execute {
            portal: r.cstr()?,
            max_rows: r.i32()?,
        },
        b'D' | b'C' => {
            // "Byte1 — 'S' to describe a prepared statement; or 'P' to describe a portal."
            let kind = r.u8()?;
            if kind != b'S' && kind != b'P' {
                return Err(CodecError::Invalid(
                    "describe/close kind other than 'S' or 'P'",
                ));
            }
            let name = r.cstr()?;
            if tag == b'D' {
                Frontend::Describe { kind, name }
            } else {
                Frontend::Close { kind, name }
            }
        }
        b'S' => Frontend::Sync,
        b'H' => Frontend::Flush,
        b'X' => Frontend::Terminate,
        b'c' => Frontend::CopyDone,
        // CopyData: "Byte n — Data that forms part of a COPY data stream."
        b'd' => Frontend::CopyData(r.take_rest()),
        b'f' => Frontend::CopyFail { message: r.cstr()? },
        b'F' => {
            let oid = r.u32()?;
            // FunctionCall: argument format codes, then "Int16 — Specifies the number of arguments
            // being supplied to the function." and for each an Int32 length (-1 = NULL) and bytes,
            // then "Int16 — The format code for the function result."
            let formats = r.format_codes_into(&mut Discard)?;
            let n = usize::from(r.u16()?);
            r.ensure(n, 4)?;
            for _ in 0..n {
                r.nullable_bytes()?;
            }
            if formats > 1 && formats != n {
                return Err(CodecError::Invalid(
                    "function call format code count is neither 0, 1 nor the argument count",
                ));
            }
            r.format_code()?;
            Frontend::FunctionCall { oid }
        }
        b'p' => Frontend::Password(r.take_rest()),
        other => return Ok(Frontend::Unknown(other)),
    };
    r.expect_empty()?;
    Ok(msg)
}

/// The portal and statement names of a Bind body, the whole message checked as
/// [`decode_frontend`] checks it but nothing collected: the relay's path for every Bind, where the
/// parameters matter only when an approval must cover them (then the caller decodes them).
///
/// # Errors
/// As [`decode_frontend`] for a Bind.
pub fn decode_bind_names(body: &[u8]) -> Result<(&str, &str), CodecError> {
    let mut r = Reader::new(body);
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    r.bind_params_into(&mut Discard, &mut Discard, &mut Discard)?;
    r.expect_empty()?;
    Ok((portal, statement))
}

/// Decodes a PasswordMessage body: "String — The password (encrypted, if requested)."
///
/// # Errors
/// [`CodecError::MissingNul`], [`CodecError::InvalidUtf8`], [`CodecError::TrailingBytes`].
pub fn decode_password(body: &[u8]) -> Result<&str, CodecError> {
    let mut r = Reader::new(body);
    let password = r.cstr()?;
    r.expect_empty()?;
    Ok(password)
}

/// Decodes a SASLInitialResponse body: "String — Name of the SASL authentication mechanism that
/// the client selected." then "Int32 — Length of SASL mechanism specific "Initial Client
/// Response" that follows, or -1 if there is no Initial Response." then the bytes.
///
/// # Errors
/// String errors, [`CodecError::Truncated`], [`CodecError::Invalid`] for a length below -1,
/// [`CodecError::TrailingBytes`].
pub fn decode_sasl_initial(body: &[u8]) -> Result<(&str, Option<&[u8]>), CodecError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr()?;
    let data = r.nullable_bytes()?;
    r.expect_empty()?;
    Ok((mechanism, data))
}

// ---------------------------------------------------------------------------------------------
// Backend messages
// ---------------------------------------------------------------------------------------------

/// An Authentication ('R') request from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth<'a> {
    /// AuthenticationOk (0).
    Ok,
    /// AuthenticationCleartextPassword (3).
    CleartextPassword,
    /// AuthenticationMD5Password (5) with "The salt to use when encrypting the password."
    Md5Password {
        /// Four salt bytes.
        salt: [u8; 4],
    },
    /// AuthenticationSASL (10) with the mechanisms "in the server's order of preference".
    Sasl {
        /// At most [`MAX_SASL_MECHANISMS`] names.
        mechanisms: Vec<&'a str>,
    },
    /// AuthenticationSASLContinue (11): "SASL data, specific to the SASL mechanism being used."
    SaslContinue(&'a [u8]),
    /// AuthenticationSASLFinal (12): "SASL outcome "additional data"".
    SaslFinal(&'a [u8]),
    /// Any other method (Kerberos, GSS, SSPI, ...), which the gateway does not do.
    Unsupported(u32),
}

/// ErrorResponse / NoticeResponse fields as (code, value), in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields<'a>(pub Vec<(u8, &'a str)>);

impl<'a> Fields<'a> {
    /// The first field with this code (b'S' severity, b'V' non-localized severity, b'C' SQLSTATE,
    /// b'M' message, b'D' detail, b'H' hint, ...).
    pub fn get(&self, code: u8) -> Option<&'a str> {
        self.0.iter().find(|(c, _)| *c == code).map(|&(_, v)| v)
    }
}

/// A decoded backend (server-to-client) message. Only what the gateway acts on is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend<'a> {
    /// 'R'.
    Authentication(Auth<'a>),
    /// 'K': "The process ID of this backend." and its secret key (4..=256 bytes).
    BackendKeyData {
        /// Backend process ID.
        pid: i32,
        /// Cancel secret.
        secret: &'a [u8],
    },
    /// 'S' "run-time parameter status report".
    ParameterStatus {
        /// "The name of the run-time parameter being reported."
        name: &'a str,
        /// "The current value of the parameter."
        value: &'a str,
    },
    /// 'Z' with the transaction status: b'I' idle, b'T' in a transaction, b'E' failed transaction.
    ReadyForQuery {
        /// b'I', b'T' or b'E'.
        status: u8,
    },
    /// 'C': "The command tag." (see [`command_rows`]).
    CommandComplete {
        /// E.g. "INSERT 0 5".
        tag: &'a str,
    },
    /// 'E'.
    ErrorResponse(Fields<'a>),
    /// 'N'.
    NoticeResponse(Fields<'a>),
    /// 'I'.
    EmptyQueryResponse,
    /// 's'.
    PortalSuspended,
    /// 'v': the server supports an older minor version or not all `_pq_.` options.
    NegotiateProtocolVersion {
        /// "Newest minor protocol version supported by the server for the major protocol version
        /// requested by the client."
        minor: i32,
        /// Protocol options not recognized by the server.
        unrecognized: Vec<&'a str>,
    },
    /// Everything else (RowDescription, DataRow, CopyInResponse, ...): relayed untouched.
    Other(u8),
}

/// Decodes the body of a backend frame (see [`split_frame`]).
///
/// # Errors
/// Any [`CodecError`] except `TooLong` / `UnknownRequestCode`.
pub fn decode_backend(tag: u8, body: &[u8]) -> Result<Backend<'_>, CodecError> {
    let mut r = Reader::new(body);
    let msg = match tag {
        b'R' => Backend::Authentication(decode_auth(&mut r)?),
        b'K' => {
            let pid = r.i32()?;
            // BackendKeyData: "This field extends to the end of the message, indicated by the
            // length field." / "The minimum and maximum key length are 4 and 256 bytes".
            let secret = r.take_rest();
            if !(MIN_CANCEL_KEY..=MAX_CANCEL_KEY).contains(&secret.len()) {
                return Err(CodecError::Invalid("cancel key length outside 4..=256"));
            }
            Backend::BackendKeyData { pid, secret }
        }
        b'S' => Backend::ParameterStatus {
            name: r.cstr()?,
            value: r.cstr()?,
        },
        b'Z' => {
            // ReadyForQuery: "Current backend transaction status indicator. Possible values are
            // 'I' if idle (not in a transaction block); 'T' if in a transaction block; or 'E' if in
            // a failed transaction block (queries will be rejected until block is ended)."
            let status = r.u8()?;
            if !matches!(status, b'I' | b'T' | b'E') {
                return Err(CodecError::Invalid(
                    "transaction status other than I, T or E",
                ));
            }
            Backend::ReadyForQuery { status }
        }
        b'C' => Backend::CommandComplete { tag: r.cstr()? },
        b'E' => Backend::ErrorResponse(decode_fields(&mut r)?),
        b'N' => Backend::NoticeResponse(decode_fields(&mut r)?),
        b'I' => Backend::EmptyQueryResponse,
        b's' => Backend::PortalSuspended,
        b'v' => {
            let minor = r.i32()?;
            // "Int32 — Number of protocol options not recognized by the server." then one String
            // per option.
            let n = usize::try_from(r.i32()?)
                .map_err(|_| CodecError::Invalid("negative option count"))?;
            if n > MAX_NEGOTIATE_OPTIONS {
                return Err(CodecError::TooMany("unrecognized protocol options"));
            }
            let mut unrecognized = Vec::with_capacity(n);
            for _ in 0..n {
                unrecognized.push(r.cstr()?);
            }
            Backend::NegotiateProtocolVersion {
                minor,
                unrecognized,
            }
        }
        other => return Ok(Backend::Other(other)),
    };
    r.expect_empty()?;
    Ok(msg)
}

fn decode_auth<'a>(r: &mut Reader<'a>) -> Result<Auth<'a>, CodecError> {
    Ok(match r.u32()? {
        // "Int32(0) — Specifies that the authentication was successful."
        AUTH_OK => Auth::Ok,
        // "Int32(3) — Specifies that a clear-text password is required."
        AUTH_CLEARTEXT => Auth::CleartextPassword,
        // "Int32(5) — Specifies that an MD5-encrypted password is required."
        // "Byte4 — The salt to use when encrypting the password."
        AUTH_MD5 => Auth::Md5Password { salt: r.array()? },
        AUTH_SASL => {
            // "The message body is a list of SASL authentication mechanisms, in the server's order
            // of preference. A zero byte is required as terminator after the last authentication
            // mechanism name."
            let mut mechanisms = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                if mechanisms.len() == MAX_SASL_MECHANISMS {
                    return Err(CodecError::TooMany("SASL mechanisms"));
                }
                mechanisms.push(name);
            }
            Auth::Sasl { mechanisms }
        }
        AUTH_SASL_CONTINUE => Auth::SaslContinue(r.take_rest()),
        AUTH_SASL_FINAL => Auth::SaslFinal(r.take_rest()),
        // The rest of an unsupported request is not ours to judge.
        other => {
            r.take_rest();
            Auth::Unsupported(other)
        }
    })
}

fn decode_fields<'a>(r: &mut Reader<'a>) -> Result<Fields<'a>, CodecError> {
    // ErrorResponse: "The message body consists of one or more identified fields, followed by a
    // zero byte as a terminator." ... "Byte1 — A code identifying the field type; if zero, this is
    // the message terminator and no string follows."
    let mut fields = Vec::new();
    loop {
        let code = r.u8()?;
        if code == 0 {
            break;
        }
        if fields.len() == MAX_ERROR_FIELDS {
            return Err(CodecError::TooMany("error fields"));
        }
        fields.push((code, r.cstr()?));
    }
    Ok(Fields(fields))
}

/// Rows affected or returned, from a CommandComplete tag; `None` for tags without a count.
///
/// Message Formats, CommandComplete: "For an INSERT command, the tag is INSERT oid rows" ...
/// "DELETE rows", "UPDATE rows", "MERGE rows", "SELECT rows" (also CREATE TABLE AS), "MOVE rows",
/// "FETCH rows", "COPY rows".
pub fn command_rows(tag: &str) -> Option<u64> {
    let mut words = tag.split(' ');
    let command = words.next()?;
    let expected_words = match command {
        "INSERT" => 2,
        "DELETE" | "UPDATE" | "MERGE" | "SELECT" | "MOVE" | "FETCH" | "COPY" => 1,
        _ => return None,
    };
    // Counted, not collected: this runs for every statement's completion.
    let (mut count, mut last) = (0, None);
    for word in words {
        count += 1;
        if count > expected_words {
            return None;
        }
        last = Some(word);
    }
    let rows = last.filter(|_| count == expected_words)?;
    if rows.is_empty() || !rows.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rows.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------------------------

/// Appends `s` up to (not including) its first NUL, then a NUL: what a server would read.
fn put_cstr(out: &mut Vec<u8>, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    out.extend_from_slice(s.get(..end).unwrap_or_default());
    out.push(0);
}

/// Appends `s` with every NUL removed, then a NUL (human-readable text).
fn put_text(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_len_prefixed(out: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    put_i32(out, i32::try_from(data.len()).ok()?);
    out.extend_from_slice(data);
    Some(())
}

/// Writes the Int32 length (including itself) at `at` for a message ending at `out.len()`, or
/// rolls `out` back to `rollback` if the message can't be represented.
fn finish_len(out: &mut Vec<u8>, at: usize, rollback: usize, ok: Option<()>) {
    let len = ok
        .and_then(|()| out.len().checked_sub(at))
        .and_then(|n| i32::try_from(n).ok());
    match (len, out.get_mut(at..at + 4)) {
        (Some(len), Some(slot)) => slot.copy_from_slice(&len.to_be_bytes()),
        _ => out.truncate(rollback),
    }
}

/// Appends a tagged frame whose body is written by `body`; the length is computed afterwards.
fn tagged(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>) -> Option<()>) {
    let start = out.len();
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let ok = body(out);
    finish_len(out, at, start, ok);
}

/// Appends an untagged startup-phase packet.
fn untagged(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Option<()>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let ok = body(out);
    finish_len(out, start, start, ok);
}

fn put_fields(out: &mut Vec<u8>, fields: &[(u8, &str)]) {
    for &(code, value) in fields {
        out.push(code);
        put_text(out, value);
    }
    out.push(0);
}

/// ErrorResponse ('E') with S (localized severity), V (severity), C (SQLSTATE), M (message) and, if
/// given, D (detail) and H (hint). NULs in the text are stripped.
pub fn encode_error(
    out: &mut Vec<u8>,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    // Error and Notice Message Fields: "S Severity: the field contents are ERROR, FATAL, or PANIC
    // (in an error message), or WARNING, NOTICE, DEBUG, INFO, or LOG (in a notice message), or a
    // localized translation of one of these. Always present." "V ... not localized" "C Code: the
    // SQLSTATE code for the error" "M Message: the primary human-readable error message."
    let mut fields = vec![
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ];
    fields.extend(detail.map(|d| (b'D', d)));
    fields.extend(hint.map(|h| (b'H', h)));
    tagged(out, b'E', |out| {
        put_fields(out, &fields);
        Some(())
    });
}

/// NoticeResponse ('N') with severity NOTICE, SQLSTATE `code`, message and optional detail.
pub fn encode_notice(out: &mut Vec<u8>, code: &str, message: &str, detail: Option<&str>) {
    let mut fields = vec![
        (b'S', "NOTICE"),
        (b'V', "NOTICE"),
        (b'C', code),
        (b'M', message),
    ];
    fields.extend(detail.map(|d| (b'D', d)));
    tagged(out, b'N', |out| {
        put_fields(out, &fields);
        Some(())
    });
}

fn auth(out: &mut Vec<u8>, code: u32, rest: impl FnOnce(&mut Vec<u8>) -> Option<()>) {
    tagged(out, b'R', |out| {
        out.extend_from_slice(&code.to_be_bytes());
        rest(out)
    });
}

/// AuthenticationOk.
pub fn encode_auth_ok(out: &mut Vec<u8>) {
    auth(out, AUTH_OK, |_| Some(()));
}

/// AuthenticationCleartextPassword.
pub fn encode_auth_cleartext(out: &mut Vec<u8>) {
    auth(out, AUTH_CLEARTEXT, |_| Some(()));
}

/// AuthenticationSASL with the given mechanisms, then the terminating zero byte. Empty names
/// (which would end the list early) are skipped.
pub fn encode_auth_sasl(out: &mut Vec<u8>, mechanisms: &[&str]) {
    auth(out, AUTH_SASL, |out| {
        for m in mechanisms {
            if !m.is_empty() && !m.starts_with('\0') {
                put_cstr(out, m.as_bytes());
            }
        }
        out.push(0);
        Some(())
    });
}

/// AuthenticationSASLContinue carrying `data` (the server-first-message).
pub fn encode_auth_sasl_continue(out: &mut Vec<u8>, data: &[u8]) {
    auth(out, AUTH_SASL_CONTINUE, |out| {
        out.extend_from_slice(data);
        Some(())
    });
}

/// AuthenticationSASLFinal carrying `data` (the server-final-message).
pub fn encode_auth_sasl_final(out: &mut Vec<u8>, data: &[u8]) {
    auth(out, AUTH_SASL_FINAL, |out| {
        out.extend_from_slice(data);
        Some(())
    });
}

/// BackendKeyData ('K'). `secret` should be 4 bytes for protocol 3.0 clients.
pub fn encode_backend_key_data(out: &mut Vec<u8>, pid: i32, secret: &[u8]) {
    tagged(out, b'K', |out| {
        put_i32(out, pid);
        out.extend_from_slice(secret);
        Some(())
    });
}

/// ParameterStatus ('S').
pub fn encode_parameter_status(out: &mut Vec<u8>, name: &str, value: &str) {
    tagged(out, b'S', |out| {
        put_cstr(out, name.as_bytes());
        put_cstr(out, value.as_bytes());
        Some(())
    });
}

/// ReadyForQuery ('Z') with status b'I', b'T' or b'E'.
pub fn encode_ready_for_query(out: &mut Vec<u8>, status: u8) {
    tagged(out, b'Z', |out| {
        out.push(status);
        Some(())
    });
}

/// StartupMessage for protocol 3.0 with the given parameters (pairs with an empty name skipped).
pub fn encode_startup(out: &mut Vec<u8>, params: &[(&str, &str)]) {
    untagged(out, |out| {
        let (major, minor) = PROTOCOL_V3;
        out.extend_from_slice(&major.to_be_bytes());
        out.extend_from_slice(&minor.to_be_bytes());
        for (name, value) in params {
            if name.is_empty() || name.starts_with('\0') {
                continue;
            }
            put_cstr(out, name.as_bytes());
            put_cstr(out, value.as_bytes());
        }
        out.push(0);
        Some(())
    });
}

/// SSLRequest: Int32(8), Int32(80877103).
pub fn encode_ssl_request(out: &mut Vec<u8>) {
    untagged(out, |out| {
        out.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        Some(())
    });
}

/// CancelRequest for backend `pid` with its secret key.
pub fn encode_cancel_request(out: &mut Vec<u8>, pid: i32, secret: &[u8]) {
    untagged(out, |out| {
        out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
        put_i32(out, pid);
        out.extend_from_slice(secret);
        Some(())
    });
}

/// PasswordMessage ('p'): the password (cut at its first NUL) and a terminating NUL.
pub fn encode_password(out: &mut Vec<u8>, password: &[u8]) {
    tagged(out, b'p', |out| {
        put_cstr(out, password);
        Some(())
    });
}

/// SASLInitialResponse ('p'): mechanism name, Int32 length, data.
pub fn encode_sasl_initial(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    tagged(out, b'p', |out| {
        put_cstr(out, mechanism.as_bytes());
        put_len_prefixed(out, data)
    });
}

/// SASLResponse ('p'): the mechanism data, as is.
pub fn encode_sasl_response(out: &mut Vec<u8>, data: &[u8]) {
    tagged(out, b'p', |out| {
        out.extend_from_slice(data);
        Some(())
    });
}

/// Query ('Q').
pub fn encode_query(out: &mut Vec<u8>, sql: &str) {
    tagged(out, b'Q', |out| {
        put_cstr(out, sql.as_bytes());
        Some(())
    });
}

/// Parse ('P'). More than 65535 parameter types can't be represented: nothing is written then.
pub fn encode_parse(out: &mut Vec<u8>, name: &str, sql: &str, param_types: &[u32]) {
    tagged(out, b'P', |out| {
        put_cstr(out, name.as_bytes());
        put_cstr(out, sql.as_bytes());
        out.extend_from_slice(&u16::try_from(param_types.len()).ok()?.to_be_bytes());
        for oid in param_types {
            out.extend_from_slice(&oid.to_be_bytes());
        }
        Some(())
    });
}

/// Terminate ('X').
pub fn encode_terminate(out: &mut Vec<u8>) {
    tagged(out, b'X', |_| Some(()));
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    /// Captured from `psql "host=127.0.0.1 user=alice dbname=app-db sslmode=prefer"` (psql 15.20):
    /// SSLRequest, then (after the server answered 'N') the StartupMessage.
    const PSQL_SSL_THEN_STARTUP: &[u8] = b"\x00\x00\x00\x08\x04\xd2\x16\x2f\
        \x00\x00\x00\x3a\x00\x03\x00\x00user\0alice\0database\0app-db\0application_name\0psql\0\0";

    /// Captured from psql 15.20 answering AuthenticationSASL(SCRAM-SHA-256).
    const PSQL_SASL_INITIAL: &[u8] =
        b"p\x00\x00\x00\x36SCRAM-SHA-256\0\x00\x00\x00\x20n,,n=,r=hvAijUNaWjz95qM+1d0Nbm8g";

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(i32::try_from(body.len() + 4).unwrap_or(i32::MAX)).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn decode_one_frontend(bytes: &[u8]) -> Result<Frontend<'_>, CodecError> {
        let f = split_frame(bytes, MAX)?.ok_or(CodecError::Truncated)?;
        assert_eq!(f.len, bytes.len(), "encoder wrote exactly one frame");
        decode_frontend(f.tag, f.body)
    }

    fn decode_one_backend(bytes: &[u8]) -> Result<Backend<'_>, CodecError> {
        let f = split_frame(bytes, MAX)?.ok_or(CodecError::Truncated)?;
        assert_eq!(f.len, bytes.len(), "encoder wrote exactly one frame");
        decode_backend(f.tag, f.body)
    }

    // ---- startup ----

    #[test]
    fn parses_ssl_request() {
        assert_eq!(
            parse_startup(PSQL_SSL_THEN_STARTUP),
            Ok(Some((StartupRequest::SslRequest, 8)))
        );
    }

    #[test]
    fn parses_real_psql_startup_message() {
        let rest = &PSQL_SSL_THEN_STARTUP[8..];
        let expected = StartupRequest::Startup {
            major: 3,
            minor: 0,
            params: vec![
                ("user", "alice"),
                ("database", "app-db"),
                ("application_name", "psql"),
            ],
        };
        assert_eq!(parse_startup(rest), Ok(Some((expected, rest.len()))));
    }

    #[test]
    fn parses_gssenc_request() {
        assert_eq!(
            parse_startup(b"\x00\x00\x00\x08\x04\xd2\x16\x30"),
            Ok(Some((StartupRequest::GssEncRequest, 8)))
        );
    }

    #[test]
    fn parses_cancel_request_with_v30_and_v32_keys() {
        let v30 = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe\xef";
        assert_eq!(
            parse_startup(v30),
            Ok(Some((
                StartupRequest::Cancel {
                    pid: 12345,
                    secret: b"\xde\xad\xbe\xef"
                },
                16
            )))
        );
        let mut v32 = Vec::new();
        encode_cancel_request(&mut v32, 7, &[0xab; 32]);
        assert_eq!(
            parse_startup(&v32),
            Ok(Some((
                StartupRequest::Cancel {
                    pid: 7,
                    secret: &[0xab; 32]
                },
                44
            )))
        );
    }

    #[test]
    fn rejects_cancel_request_with_short_or_long_key() {
        let short = b"\x00\x00\x00\x0f\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe";
        assert!(matches!(parse_startup(short), Err(CodecError::Invalid(_))));
        let mut long = Vec::new();
        encode_cancel_request(&mut long, 7, &[1; 257]);
        assert!(matches!(parse_startup(&long), Err(CodecError::Invalid(_))));
    }

    #[test]
    fn returns_none_on_partial_startup() {
        for n in 0..PSQL_SSL_THEN_STARTUP.len() - 8 {
            assert_eq!(
                parse_startup(&PSQL_SSL_THEN_STARTUP[8..8 + n]),
                Ok(None),
                "{n} bytes"
            );
        }
        assert_eq!(parse_startup(&PSQL_SSL_THEN_STARTUP[..7]), Ok(None));
    }

    #[test]
    fn rejects_startup_with_declared_length_over_limit() {
        // Only the length is there: refused before the body is buffered.
        assert_eq!(
            parse_startup(b"\x7f\xff\xff\xff"),
            Err(CodecError::TooLong {
                declared: 0x7fff_ffff,
                max: MAX_STARTUP_PACKET
            })
        );
        assert_eq!(
            parse_startup(b"\x00\x00\x27\x11\x00\x03\x00\x00"),
            Err(CodecError::TooLong {
                declared: 10_001,
                max: MAX_STARTUP_PACKET
            })
        );
    }

    #[test]
    fn rejects_startup_with_hostile_short_lengths() {
        for len in [0u32, 3, 4, 7, 0x8000_0000, 0xffff_ffff] {
            let mut buf = len.to_be_bytes().to_vec();
            buf.extend_from_slice(&[0; 16]);
            assert_eq!(
                parse_startup(&buf),
                Err(CodecError::TooShort),
                "length {len:#x}"
            );
        }
    }

    #[test]
    fn rejects_ssl_request_with_body() {
        let buf = b"\x00\x00\x00\x09\x04\xd2\x16\x2f\x00";
        assert!(matches!(parse_startup(buf), Err(CodecError::Invalid(_))));
    }

    #[test]
    fn rejects_unknown_request_code_and_protocol_v2() {
        assert_eq!(
            parse_startup(b"\x00\x00\x00\x08\x04\xd2\x16\x31"),
            Err(CodecError::UnknownRequestCode(80_877_105))
        );
        assert_eq!(
            parse_startup(b"\x00\x00\x00\x09\x00\x02\x00\x00\x00"),
            Err(CodecError::UnknownRequestCode(0x0002_0000))
        );
    }

    #[test]
    fn parses_protocol_32_startup_keeping_minor() {
        let buf = b"\x00\x00\x00\x10\x00\x03\x00\x02user\0u\0\0";
        assert_eq!(
            parse_startup(buf),
            Ok(Some((
                StartupRequest::Startup {
                    major: 3,
                    minor: 2,
                    params: vec![("user", "u")]
                },
                16
            )))
        );
    }

    #[test]
    fn rejects_startup_without_terminator_or_with_trailing_bytes() {
        // Value's NUL is the last byte: no list terminator.
        let no_term = b"\x00\x00\x00\x0f\x00\x03\x00\x00user\0u\0";
        assert_eq!(parse_startup(no_term), Err(CodecError::MissingNul));
        let trailing = b"\x00\x00\x00\x11\x00\x03\x00\x00user\0u\0\0x";
        assert_eq!(parse_startup(trailing), Err(CodecError::TrailingBytes));
        let name_only = b"\x00\x00\x00\x0e\x00\x03\x00\x00user\0\0";
        assert_eq!(parse_startup(name_only), Err(CodecError::MissingNul));
    }

    #[test]
    fn rejects_startup_with_more_than_64_params() {
        let params: Vec<(String, String)> =
            (0..65).map(|i| (format!("p{i}"), "v".to_owned())).collect();
        let refs: Vec<(&str, &str)> = params
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut buf = Vec::new();
        encode_startup(&mut buf, &refs);
        assert_eq!(
            parse_startup(&buf),
            Err(CodecError::TooMany("startup parameters"))
        );
        let mut ok = Vec::new();
        encode_startup(&mut ok, &refs[..64]);
        assert!(matches!(parse_startup(&ok), Ok(Some(_))));
    }

    #[test]
    fn rejects_startup_with_invalid_utf8() {
        let buf = b"\x00\x00\x00\x10\x00\x03\x00\x00user\0\xff\0\0";
        assert_eq!(parse_startup(buf), Err(CodecError::InvalidUtf8));
    }

    // ---- frames ----

    #[test]
    fn returns_none_on_partial_frame() {
        let q = frame(b'Q', b"select 1\0");
        for n in 0..5 {
            assert_eq!(frame_header(&q[..n], MAX), Ok(None));
        }
        for n in 0..q.len() {
            assert_eq!(split_frame(&q[..n], MAX), Ok(None), "{n} bytes");
        }
        assert_eq!(frame_header(&q[..5], MAX), Ok(Some((b'Q', q.len()))));
    }

    #[test]
    fn splits_one_frame_and_leaves_the_next() {
        let mut two = frame(b'S', b"");
        two.extend(frame(b'X', b""));
        let first = split_frame(&two, MAX);
        assert_eq!(
            first,
            Ok(Some(Frame {
                tag: b'S',
                body: b"",
                len: 5
            }))
        );
        assert_eq!(
            split_frame(&two[5..], MAX),
            Ok(Some(Frame {
                tag: b'X',
                body: b"",
                len: 5
            }))
        );
    }

    #[test]
    fn rejects_frame_length_below_four() {
        for len in [0i32, 1, 3, -1, i32::MIN] {
            let mut buf = vec![b'Q'];
            buf.extend_from_slice(&len.to_be_bytes());
            assert_eq!(
                frame_header(&buf, MAX),
                Err(CodecError::TooShort),
                "length {len}"
            );
        }
    }

    #[test]
    fn rejects_frame_declared_length_over_limit_before_body_arrives() {
        let buf = b"Q\x7f\xff\xff\xff";
        assert_eq!(
            frame_header(buf, 64 << 20),
            Err(CodecError::TooLong {
                declared: 0x7fff_ffff,
                max: (64 << 20) + 4
            })
        );
        // Exactly max_body is fine, one more is not.
        assert_eq!(frame_header(b"d\x00\x00\x00\x0e", 10), Ok(Some((b'd', 15))));
        assert!(matches!(
            frame_header(b"d\x00\x00\x00\x0f", 10),
            Err(CodecError::TooLong {
                declared: 15,
                max: 14
            })
        ));
    }

    #[test]
    fn too_long_display_is_human_text() {
        let e = CodecError::TooLong {
            declared: 2_147_483_647,
            max: 67_108_864,
        };
        assert_eq!(
            e.to_string(),
            "message length 2147483647 exceeds the limit of 67108864"
        );
    }

    // ---- frontend ----

    #[test]
    fn decodes_real_psql_sasl_initial_response() {
        let f = split_frame(PSQL_SASL_INITIAL, MAX);
        let Ok(Some(f)) = f else {
            panic!("not a frame: {f:?}")
        };
        assert_eq!(f.len, PSQL_SASL_INITIAL.len());
        let Ok(Frontend::Password(body)) = decode_frontend(f.tag, f.body) else {
            panic!("not a 'p' message")
        };
        assert_eq!(
            decode_sasl_initial(body),
            Ok((
                "SCRAM-SHA-256",
                Some(&b"n,,n=,r=hvAijUNaWjz95qM+1d0Nbm8g"[..])
            ))
        );
    }

    #[test]
    fn decodes_sasl_initial_without_data() {
        assert_eq!(
            decode_sasl_initial(b"SCRAM-SHA-256\0\xff\xff\xff\xff"),
            Ok(("SCRAM-SHA-256", None))
        );
    }

    #[test]
    fn rejects_sasl_initial_with_hostile_lengths() {
        assert_eq!(
            decode_sasl_initial(b"M\0\x7f\xff\xff\xffab"),
            Err(CodecError::Truncated)
        );
        assert!(matches!(
            decode_sasl_initial(b"M\0\xff\xff\xff\xfe"),
            Err(CodecError::Invalid(_))
        ));
        assert_eq!(
            decode_sasl_initial(b"M\0\x00\x00\x00\x01ab"),
            Err(CodecError::TrailingBytes)
        );
        assert_eq!(
            decode_sasl_initial(b"M\0\x00\x00"),
            Err(CodecError::Truncated)
        );
    }

    #[test]
    fn decodes_password_and_rejects_missing_nul() {
        assert_eq!(decode_password(b"pct_abc\0"), Ok("pct_abc"));
        assert_eq!(decode_password(b"pct_abc"), Err(CodecError::MissingNul));
        assert_eq!(decode_password(b"a\0b\0"), Err(CodecError::TrailingBytes));
    }

    #[test]
    fn rejects_query_with_invalid_utf8() {
        assert_eq!(
            decode_frontend(b'Q', b"select '\xc3'\0"),
            Err(CodecError::InvalidUtf8)
        );
    }

    #[test]
    fn rejects_query_with_bytes_after_nul() {
        // What a naive reader would cut off and a strict server would refuse.
        assert_eq!(
            decode_frontend(b'Q', b"select 1\0drop table t\0"),
            Err(CodecError::TrailingBytes)
        );
    }

    #[test]
    fn decodes_bind_with_null_and_values() {
        let body = b"portal\0stmt\0\x00\x01\x00\x01\x00\x03\
            \x00\x00\x00\x02hi\xff\xff\xff\xff\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01";
        assert_eq!(
            decode_frontend(b'B', body),
            Ok(Frontend::Bind {
                portal: "portal",
                statement: "stmt",
                params: BindParams {
                    formats: vec![1],
                    values: vec![Some(b"hi"), None, Some(b"")],
                    result_formats: vec![0, 1],
                },
            })
        );
    }

    #[test]
    fn rejects_bind_with_param_count_larger_than_body() {
        // 65535 parameters declared, none present: refused before allocating.
        let body = b"\0\0\x00\x00\xff\xff";
        assert_eq!(decode_frontend(b'B', body), Err(CodecError::Truncated));
        let formats = b"\0\0\xff\xff\x00\x01";
        assert_eq!(decode_frontend(b'B', formats), Err(CodecError::Truncated));
    }

    #[test]
    fn rejects_bind_value_length_beyond_body_or_below_minus_one() {
        let over = b"\0\0\x00\x00\x00\x01\x7f\xff\xff\xffab\x00\x00";
        assert_eq!(decode_frontend(b'B', over), Err(CodecError::Truncated));
        let negative = b"\0\0\x00\x00\x00\x01\x80\x00\x00\x00\x00\x00";
        assert!(matches!(
            decode_frontend(b'B', negative),
            Err(CodecError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_bind_with_bad_format_codes() {
        let code2 = b"\0\0\x00\x01\x00\x02\x00\x00\x00\x00";
        assert!(matches!(
            decode_frontend(b'B', code2),
            Err(CodecError::Invalid(_))
        ));
        // Two format codes for one parameter.
        let mismatch = b"\0\0\x00\x02\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00";
        assert!(matches!(
            decode_frontend(b'B', mismatch),
            Err(CodecError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_bind_with_trailing_bytes() {
        assert_eq!(
            decode_frontend(b'B', b"\0\0\0\0\0\0\0\0x"),
            Err(CodecError::TrailingBytes)
        );
    }

    /// `decode_bind_names` must accept and refuse exactly what the full decoder does.
    fn same_as_full_bind_decode(body: &[u8]) {
        let full = decode_frontend(b'B', body).map(|m| match m {
            Frontend::Bind {
                portal, statement, ..
            } => (portal, statement),
            other => panic!("a Bind body decoded as {other:?}"),
        });
        assert_eq!(decode_bind_names(body), full, "body {body:?}");
    }

    #[test]
    fn bind_names_check_the_whole_message_like_the_full_decoder() {
        let bodies: [&[u8]; 9] = [
            b"portal\0stmt\0\x00\x01\x00\x01\x00\x03\
              \x00\x00\x00\x02hi\xff\xff\xff\xff\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01",
            b"\0P_0\0\x00\x00\x00\x01\x00\x00\x00\x0512345\x00\x00",
            b"\0\0\x00\x00\x00\x00\x00\x00",
            b"\0\0\x00\x00\xff\xff",
            b"\0\0\x00\x01\x00\x02\x00\x00\x00\x00",
            b"\0\0\x00\x02\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00",
            b"\0\0\x00\x00\x00\x01\x80\x00\x00\x00\x00\x00",
            b"\0\0\0\0\0\0\0\0x",
            b"\xff\0s\0\x00\x00\x00\x00\x00\x00",
        ];
        for body in bodies {
            // Every prefix too: truncations at each field boundary and inside each field.
            for cut in 0..=body.len() {
                same_as_full_bind_decode(&body[..cut]);
            }
            // And every single-byte change to 0x00, 0x01 and 0xff.
            for i in 0..body.len() {
                for b in [0x00, 0x01, 0xff] {
                    let mut changed = body.to_vec();
                    changed[i] = b;
                    same_as_full_bind_decode(&changed);
                }
            }
        }
        assert_eq!(decode_bind_names(bodies[1]), Ok(("", "P_0")));
    }

    #[test]
    fn decodes_parse_and_rejects_type_count_larger_than_body() {
        let body = b"s1\0select $1\0\x00\x01\x00\x00\x00\x17";
        assert_eq!(
            decode_frontend(b'P', body),
            Ok(Frontend::Parse {
                name: "s1",
                sql: "select $1",
                param_types: vec![23]
            })
        );
        assert_eq!(
            decode_frontend(b'P', b"\0x\0\xff\xff\0\0\0\0"),
            Err(CodecError::Truncated)
        );
    }

    #[test]
    fn decodes_execute_describe_close() {
        assert_eq!(
            decode_frontend(b'E', b"\0\x00\x00\x00\x0a"),
            Ok(Frontend::Execute {
                portal: "",
                max_rows: 10
            })
        );
        assert_eq!(
            decode_frontend(b'D', b"Sname\0"),
            Ok(Frontend::Describe {
                kind: b'S',
                name: "name"
            })
        );
        assert_eq!(
            decode_frontend(b'C', b"P\0"),
            Ok(Frontend::Close {
                kind: b'P',
                name: ""
            })
        );
        assert!(matches!(
            decode_frontend(b'D', b"X\0"),
            Err(CodecError::Invalid(_))
        ));
        assert_eq!(
            decode_frontend(b'E', b"\0\x00\x00"),
            Err(CodecError::Truncated)
        );
    }

    #[test]
    fn decodes_empty_messages_and_rejects_them_with_a_body() {
        assert_eq!(decode_frontend(b'S', b""), Ok(Frontend::Sync));
        assert_eq!(decode_frontend(b'H', b""), Ok(Frontend::Flush));
        assert_eq!(decode_frontend(b'X', b""), Ok(Frontend::Terminate));
        assert_eq!(decode_frontend(b'c', b""), Ok(Frontend::CopyDone));
        for tag in [b'S', b'H', b'X', b'c'] {
            assert_eq!(decode_frontend(tag, b"\0"), Err(CodecError::TrailingBytes));
        }
    }

    #[test]
    fn decodes_copy_messages() {
        assert_eq!(
            decode_frontend(b'd', b"1\tx\n"),
            Ok(Frontend::CopyData(b"1\tx\n"))
        );
        assert_eq!(
            decode_frontend(b'f', b"aborted\0"),
            Ok(Frontend::CopyFail { message: "aborted" })
        );
    }

    #[test]
    fn decodes_function_call_and_rejects_hostile_counts() {
        let ok = b"\x00\x00\x04\xd2\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00";
        assert_eq!(
            decode_frontend(b'F', ok),
            Ok(Frontend::FunctionCall { oid: 1234 })
        );
        let too_many = b"\x00\x00\x04\xd2\x00\x00\xff\xff\x00\x00";
        assert_eq!(decode_frontend(b'F', too_many), Err(CodecError::Truncated));
        let no_result_format = b"\x00\x00\x04\xd2\x00\x00\x00\x00";
        assert_eq!(
            decode_frontend(b'F', no_result_format),
            Err(CodecError::Truncated)
        );
    }

    #[test]
    fn unknown_frontend_tag_is_reported_not_decoded() {
        assert_eq!(
            decode_frontend(b'z', b"whatever"),
            Ok(Frontend::Unknown(b'z'))
        );
    }

    // ---- backend ----

    #[test]
    fn decodes_authentication_requests() {
        assert_eq!(
            decode_backend(b'R', b"\0\0\0\0"),
            Ok(Backend::Authentication(Auth::Ok))
        );
        assert_eq!(
            decode_backend(b'R', b"\0\0\0\x05\x01\x02\x03\x04"),
            Ok(Backend::Authentication(Auth::Md5Password {
                salt: [1, 2, 3, 4]
            }))
        );
        assert_eq!(
            decode_backend(b'R', b"\0\0\0\x05\x01\x02\x03"),
            Err(CodecError::Truncated)
        );
        assert_eq!(
            decode_backend(b'R', b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
            Ok(Backend::Authentication(Auth::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
            }))
        );
        assert_eq!(
            decode_backend(b'R', b"\0\0\0\x0aSCRAM\0"),
            Err(CodecError::MissingNul)
        );
        assert_eq!(
            decode_backend(b'R', b"\0\0\0\x07"),
            Ok(Backend::Authentication(Auth::Unsupported(7)))
        );
        assert_eq!(
            decode_backend(b'R', b"\0\0\0\0x"),
            Err(CodecError::TrailingBytes)
        );
    }

    #[test]
    fn rejects_sasl_mechanism_flood() {
        let mut body = b"\0\0\0\x0a".to_vec();
        for _ in 0..=MAX_SASL_MECHANISMS {
            body.extend_from_slice(b"M\0");
        }
        body.push(0);
        assert_eq!(
            decode_backend(b'R', &body),
            Err(CodecError::TooMany("SASL mechanisms"))
        );
    }

    #[test]
    fn decodes_error_fields_and_rejects_unterminated() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0P15\0\0";
        let Ok(Backend::ErrorResponse(fields)) = decode_backend(b'E', body) else {
            panic!("not an error")
        };
        assert_eq!(fields.get(b'C'), Some("42P01"));
        assert_eq!(fields.get(b'M'), Some("relation \"x\" does not exist"));
        assert_eq!(fields.get(b'D'), None);
        assert_eq!(
            decode_backend(b'E', b"SERROR\0"),
            Err(CodecError::Truncated)
        );
        assert_eq!(decode_backend(b'N', b"SERROR"), Err(CodecError::MissingNul));
    }

    #[test]
    fn decodes_negotiate_protocol_version_and_caps_its_count() {
        assert_eq!(
            decode_backend(b'v', b"\0\0\0\0\0\0\0\x01_pq_.foo\0"),
            Ok(Backend::NegotiateProtocolVersion {
                minor: 0,
                unrecognized: vec!["_pq_.foo"]
            })
        );
        assert!(matches!(
            decode_backend(b'v', b"\0\0\0\0\xff\xff\xff\xff"),
            Err(CodecError::Invalid(_))
        ));
        assert_eq!(
            decode_backend(b'v', b"\0\0\0\0\x7f\xff\xff\xff"),
            Err(CodecError::TooMany("unrecognized protocol options"))
        );
    }

    #[test]
    fn decodes_small_backend_messages() {
        assert_eq!(
            decode_backend(b'C', b"INSERT 0 5\0"),
            Ok(Backend::CommandComplete { tag: "INSERT 0 5" })
        );
        assert_eq!(decode_backend(b'I', b""), Ok(Backend::EmptyQueryResponse));
        assert_eq!(decode_backend(b's', b""), Ok(Backend::PortalSuspended));
        assert!(matches!(
            decode_backend(b'Z', b"Q"),
            Err(CodecError::Invalid(_))
        ));
        assert!(matches!(
            decode_backend(b'K', b"\0\0\0\x01abc"),
            Err(CodecError::Invalid(_))
        ));
        assert_eq!(
            decode_backend(b'D', b"\x00\x01\xff\xff\xff\xff"),
            Ok(Backend::Other(b'D'))
        );
    }

    #[test]
    fn command_rows_reads_counted_tags_only() {
        assert_eq!(command_rows("INSERT 0 5"), Some(5));
        assert_eq!(command_rows("SELECT 3"), Some(3));
        assert_eq!(command_rows("UPDATE 2"), Some(2));
        assert_eq!(command_rows("DELETE 0"), Some(0));
        assert_eq!(command_rows("MERGE 4"), Some(4));
        assert_eq!(command_rows("COPY 7"), Some(7));
        assert_eq!(command_rows("FETCH 9"), Some(9));
        assert_eq!(command_rows("MOVE 1"), Some(1));
        assert_eq!(command_rows("BEGIN"), None);
        assert_eq!(command_rows("CREATE TABLE"), None);
        assert_eq!(command_rows("INSERT 5"), None);
        assert_eq!(command_rows("SELECT +3"), None);
        assert_eq!(command_rows("SELECT 99999999999999999999999"), None);
        assert_eq!(command_rows(""), None);
        // Too many or too few words, or an empty count.
        assert_eq!(command_rows("SELECT 3 4"), None);
        assert_eq!(command_rows("INSERT 0 5 6"), None);
        assert_eq!(command_rows("SELECT"), None);
        assert_eq!(command_rows("SELECT "), None);
        assert_eq!(command_rows("INSERT 0 "), None);
    }

    // ---- round trips ----

    #[test]
    fn round_trip_error_strips_nuls() {
        let mut out = Vec::new();
        encode_error(
            &mut out,
            "FATAL",
            "28P01",
            "bad\0 token",
            Some("d"),
            Some("h"),
        );
        let Ok(Backend::ErrorResponse(f)) = decode_one_backend(&out) else {
            panic!()
        };
        assert_eq!(f.get(b'S'), Some("FATAL"));
        assert_eq!(f.get(b'V'), Some("FATAL"));
        assert_eq!(f.get(b'C'), Some("28P01"));
        assert_eq!(f.get(b'M'), Some("bad token"));
        assert_eq!(f.get(b'D'), Some("d"));
        assert_eq!(f.get(b'H'), Some("h"));
    }

    #[test]
    fn round_trip_notice() {
        let mut out = Vec::new();
        encode_notice(&mut out, "01000", "waiting for approval", None);
        let Ok(Backend::NoticeResponse(f)) = decode_one_backend(&out) else {
            panic!()
        };
        assert_eq!(
            f.0,
            vec![
                (b'S', "NOTICE"),
                (b'V', "NOTICE"),
                (b'C', "01000"),
                (b'M', "waiting for approval")
            ]
        );
    }

    #[test]
    fn round_trip_auth_messages() {
        let mut out = Vec::new();
        encode_auth_ok(&mut out);
        assert_eq!(out, b"R\0\0\0\x08\0\0\0\0");
        assert_eq!(
            decode_one_backend(&out),
            Ok(Backend::Authentication(Auth::Ok))
        );
        out.clear();
        encode_auth_cleartext(&mut out);
        assert_eq!(
            decode_one_backend(&out),
            Ok(Backend::Authentication(Auth::CleartextPassword))
        );
        out.clear();
        encode_auth_sasl(&mut out, &["SCRAM-SHA-256", ""]);
        assert_eq!(
            decode_one_backend(&out),
            Ok(Backend::Authentication(Auth::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"]
            }))
        );
        out.clear();
        encode_auth_sasl_continue(&mut out, b"r=abc,s=xyz,i=4096");
        assert_eq!(
            decode_one_backend(&out),
            Ok(Backend::Authentication(Auth::SaslContinue(
                b"r=abc,s=xyz,i=4096"
            )))
        );
        out.clear();
        encode_auth_sasl_final(&mut out, b"v=xyz");
        assert_eq!(
            decode_one_backend(&out),
            Ok(Backend::Authentication(Auth::SaslFinal(b"v=xyz")))
        );
    }

    #[test]
    fn round_trip_backend_key_parameter_status_ready() {
        let mut out = Vec::new();
        encode_backend_key_data(&mut out, -5, b"abcd");
        assert_eq!(
            decode_one_backend(&out),
            Ok(Backend::BackendKeyData {
                pid: -5,
                secret: b"abcd"
            })
        );
        out.clear();
        encode_parameter_status(&mut out, "server_version", "15.20\0junk");
        assert_eq!(
            decode_one_backend(&out),
            Ok(Backend::ParameterStatus {
                name: "server_version",
                value: "15.20"
            })
        );
        out.clear();
        encode_ready_for_query(&mut out, b'T');
        assert_eq!(out, b"Z\0\0\0\x05T");
        assert_eq!(
            decode_one_backend(&out),
            Ok(Backend::ReadyForQuery { status: b'T' })
        );
    }

    #[test]
    fn round_trip_startup_ssl_cancel() {
        let mut out = Vec::new();
        encode_startup(
            &mut out,
            &[
                ("user", "alice"),
                ("", "skipped"),
                ("database", "app-db"),
                ("application_name", "psql"),
            ],
        );
        assert_eq!(out, &PSQL_SSL_THEN_STARTUP[8..], "byte-identical to psql");
        out.clear();
        encode_ssl_request(&mut out);
        assert_eq!(out, &PSQL_SSL_THEN_STARTUP[..8]);
        out.clear();
        encode_cancel_request(&mut out, 42, b"\x01\x02\x03\x04");
        assert_eq!(
            parse_startup(&out),
            Ok(Some((
                StartupRequest::Cancel {
                    pid: 42,
                    secret: b"\x01\x02\x03\x04"
                },
                16
            )))
        );
    }

    #[test]
    fn round_trip_password_cuts_at_nul() {
        let mut out = Vec::new();
        encode_password(&mut out, b"md5abc\0def");
        let Ok(Frontend::Password(body)) = decode_one_frontend(&out) else {
            panic!()
        };
        assert_eq!(decode_password(body), Ok("md5abc"));
    }

    #[test]
    fn round_trip_sasl_initial_matches_psql_bytes() {
        let mut out = Vec::new();
        encode_sasl_initial(
            &mut out,
            "SCRAM-SHA-256",
            b"n,,n=,r=hvAijUNaWjz95qM+1d0Nbm8g",
        );
        assert_eq!(out, PSQL_SASL_INITIAL);
    }

    #[test]
    fn round_trip_sasl_response() {
        let mut out = Vec::new();
        encode_sasl_response(&mut out, b"c=biws,r=x,p=y");
        assert_eq!(
            decode_one_frontend(&out),
            Ok(Frontend::Password(b"c=biws,r=x,p=y"))
        );
    }

    #[test]
    fn round_trip_query_parse_terminate() {
        let mut out = Vec::new();
        encode_query(&mut out, "select 1\0; drop table t");
        assert_eq!(
            decode_one_frontend(&out),
            Ok(Frontend::Query { sql: "select 1" })
        );
        out.clear();
        encode_parse(&mut out, "s", "select $1::int", &[23, 0]);
        assert_eq!(
            decode_one_frontend(&out),
            Ok(Frontend::Parse {
                name: "s",
                sql: "select $1::int",
                param_types: vec![23, 0]
            })
        );
        out.clear();
        encode_terminate(&mut out);
        assert_eq!(out, b"X\0\0\0\x04");
        assert_eq!(decode_one_frontend(&out), Ok(Frontend::Terminate));
    }

    #[test]
    fn encode_parse_with_unrepresentable_count_writes_nothing() {
        let mut out = b"keep".to_vec();
        encode_parse(&mut out, "s", "select 1", &vec![0; 65_536]);
        assert_eq!(out, b"keep");
    }

    // ---- fuzz seeds ----

    fn seeds(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    out.push((entry.path(), bytes));
                }
            }
        }
        out
    }

    #[test]
    fn replays_fuzz_seeds_without_panicking() {
        let startup = seeds("pg_startup");
        assert!(!startup.is_empty(), "fuzz/seeds/pg_startup is missing");
        for (path, bytes) in &startup {
            let mut buf = bytes.as_slice();
            while let Ok(Some((_, used))) = parse_startup(buf) {
                buf = buf.get(used..).unwrap_or_default();
            }
            assert!(
                buf.is_empty(),
                "{} did not parse to the end",
                path.display()
            );
        }
        let frontend = seeds("pg_frontend");
        assert!(!frontend.is_empty(), "fuzz/seeds/pg_frontend is missing");
        for (path, bytes) in &frontend {
            let mut buf = bytes.as_slice();
            while let Ok(Some(f)) = split_frame(buf, MAX) {
                assert!(
                    decode_frontend(f.tag, f.body).is_ok(),
                    "{} should decode",
                    path.display()
                );
                buf = buf.get(f.len..).unwrap_or_default();
            }
            assert!(buf.is_empty(), "{} has a partial frame", path.display());
        }
        let backend = seeds("pg_backend");
        assert!(!backend.is_empty(), "fuzz/seeds/pg_backend is missing");
        for (path, bytes) in &backend {
            let mut buf = bytes.as_slice();
            while let Ok(Some(f)) = split_frame(buf, MAX) {
                assert!(
                    decode_backend(f.tag, f.body).is_ok(),
                    "{} should decode",
                    path.display()
                );
                buf = buf.get(f.len..).unwrap_or_default();
            }
            assert!(buf.is_empty(), "{} has a partial frame", path.display());
        }
    }
}
