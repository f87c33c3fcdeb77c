//! Sans-IO HTTP/1.1 request parser: bytes in, one [`Request`] out. No socket, no clock.
//!
//! Deliberately strict, because the approval API sits behind nothing and request smuggling lives
//! in the gaps between lenient parsers (RFC 9112 §11.2):
//!
//! - only `HTTP/1.1` and `HTTP/1.0`; only origin-form targets (`/path?query`);
//! - every line ends in CRLF: a bare LF or a stray CR is an error, never a line break;
//! - no obs-fold, no whitespace between a field name and its colon (RFC 9112 §5.1);
//! - a body only through one `Content-Length`; any `Transfer-Encoding` is refused (501), and both
//!   together are refused outright (400);
//! - every length is capped by [`Limits`], and an oversized body is refused as soon as its
//!   `Content-Length` line arrives, before a byte of it is buffered.
//!
//! [`parse_request`] takes exactly one request off the front of the buffer and says how many bytes
//! it used, so pipelined requests are handled one at a time by the caller.

use std::fmt;

/// Caps on what one request may occupy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header lines plus the blank line, in bytes.
    pub max_head: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// Body size (the `Content-Length` value), in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    /// Any other syntactically valid method (`PATCH`, `TRACE`, `CONNECT`, ...); handlers answer 405.
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is `Other`.
    fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// One parsed request. Its `Debug` output leaves out credentials (`Authorization`, `Cookie`
/// values) and the body, so a request can be logged; the target is shown as sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target exactly as sent (ASCII, starts with `/`).
    pub target: String,
    /// The path part of the target, percent-decoded; never contains NUL or a `..` segment.
    pub path: String,
    /// The query part, decoded as `application/x-www-form-urlencoded` (`+` is a space).
    pub query: Vec<(String, String)>,
    /// Header fields in the order sent; names lower-cased, values trimmed of SP/HT.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the client allows another request on this connection (RFC 9112 §9.3).
    pub keep_alive: bool,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| match n.as_str() {
                "authorization" | "proxy-authorization" | "cookie" => (n.as_str(), "<redacted>"),
                _ => (n.as_str(), v.as_str()),
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name` (exact match).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first cookie named `name` across all `Cookie` headers (RFC 6265 §5.4 `a=b; c=d`).
    /// The value is returned as sent, minus one pair of surrounding double quotes.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .find_map(|pair| {
                let (n, v) = pair.trim_matches([' ', '\t']).split_once('=')?;
                if n != name {
                    return None;
                }
                Some(
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v),
                )
            })
    }

    /// The body decoded as `application/x-www-form-urlencoded`. Pairs that do not decode (bad
    /// percent escapes, invalid UTF-8) are left out; the content type is not checked.
    pub fn form(&self) -> Vec<(String, String)> {
        match std::str::from_utf8(&self.body) {
            Ok(s) => s
                .split('&')
                .filter(|p| !p.is_empty())
                .filter_map(decode_pair)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The token of `Authorization: Bearer <token>` (RFC 6750 §2.1; scheme case-insensitive).
    /// `None` when there is no such header, when there is more than one `Authorization` header,
    /// or when the token is empty or not token68.
    pub fn bearer_token(&self) -> Option<&str> {
        let mut auth = self.headers.iter().filter(|(n, _)| n == "authorization");
        let (_, value) = auth.next()?;
        if auth.next().is_some() {
            return None;
        }
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim_start_matches(' ');
        let body = token.trim_end_matches('=');
        let token68 = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        token68.then_some(token)
    }
}

/// Why a request was refused. Each maps to the status the client gets ([`ParseError::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// No end of head within `max_head` bytes (431).
    HeadTooLarge,
    /// More than `max_headers` header lines (431).
    TooManyHeaders,
    /// `Content-Length` above `max_body` (413).
    BodyTooLarge,
    /// The request line is not `METHOD SP target SP HTTP/x.y` (400).
    BadRequestLine,
    /// The target is not a clean origin-form target: absolute-form, `*`, a fragment, bytes
    /// outside visible ASCII, bad percent escapes, a decoded NUL or a `..` segment (400).
    BadTarget,
    /// A header line is malformed: no colon, a non-token name, obs-fold, control bytes or
    /// invalid UTF-8 in the value (400).
    BadHeader,
    /// A line ended in a bare LF, or a CR appeared inside a line (400).
    BareLineFeed,
    /// A well-formed HTTP version other than 1.0 and 1.1 (505).
    BadVersion,
    /// An HTTP/1.1 request without a `Host` header, or with more than one (400).
    BadHost,
    /// Any `Transfer-Encoding`: chunked request bodies are not supported (501).
    UnsupportedTransferEncoding,
    /// Both `Transfer-Encoding` and `Content-Length`: the classic smuggling vector (400).
    ConflictingFraming,
    /// A `Content-Length` that is not all digits, or two that disagree (400).
    BadContentLength,
}

impl ParseError {
    /// The response status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::BodyTooLarge => 413,
            ParseError::BadVersion => 505,
            ParseError::UnsupportedTransferEncoding => 501,
            ParseError::BadRequestLine
            | ParseError::BadTarget
            | ParseError::BadHeader
            | ParseError::BareLineFeed
            | ParseError::BadHost
            | ParseError::ConflictingFraming
            | ParseError::BadContentLength => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::HeadTooLarge => "request head too large",
            ParseError::TooManyHeaders => "too many header fields",
            ParseError::BodyTooLarge => "request body too large",
            ParseError::BadRequestLine => "malformed request line",
            ParseError::BadTarget => "malformed request target",
            ParseError::BadHeader => "malformed header field",
            ParseError::BareLineFeed => "lines must end in CRLF",
            ParseError::BadVersion => "HTTP version not supported",
            ParseError::BadHost => "exactly one Host header is required",
            ParseError::UnsupportedTransferEncoding => "Transfer-Encoding is not supported",
            ParseError::ConflictingFraming => "both Transfer-Encoding and Content-Length",
            ParseError::BadContentLength => "invalid Content-Length",
        })
    }
}

impl std::error::Error for ParseError {}

/// A complete, validated head; the body may still be on its way.
struct Head {
    request: Request,
    /// Bytes of the head including the blank line (and any leading blank lines skipped).
    len: usize,
    content_length: usize,
    expect_continue: bool,
}

/// Parses one request off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((request, used)))` when a whole
/// request (head and body) is in `buf`; the caller drops `used` bytes and may call again for a
/// pipelined request. Complete lines are checked as they arrive, so a bad request line, a bad
/// header or an oversized `Content-Length` is refused without waiting for the rest.
///
/// # Errors
/// A [`ParseError`]; the connection should get [`ParseError::status`] and be closed, since after
/// a framing error the position of the next request is unknown.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, ParseError> {
    let Some(head) = parse_head(buf, limits)? else {
        return Ok(None);
    };
    let Some(end) = head.len.checked_add(head.content_length) else {
        return Err(ParseError::BodyTooLarge);
    };
    let Some(body) = buf.get(head.len..end) else {
        return Ok(None);
    };
    let mut request = head.request;
    request.body = body.to_vec();
    Ok(Some((request, end)))
}

/// Whether the server should send `100 Continue` now (RFC 9110 §10.1.1): the head in `buf` is
/// complete and valid, it is HTTP/1.1 with `Expect: 100-continue`, and its body has not fully
/// arrived. Call after [`parse_request`] returned `Ok(None)`, at most once per request.
pub fn wants_continue(buf: &[u8], limits: &Limits) -> bool {
    match parse_head(buf, limits) {
        Ok(Some(head)) => {
            head.expect_continue && buf.len() < head.len.saturating_add(head.content_length)
        }
        _ => false,
    }
}

/// What the header lines say about framing and the connection, gathered line by line.
#[derive(Default)]
struct Fields {
    content_length: Option<usize>,
    transfer_encoding: bool,
    hosts: usize,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, ParseError> {
    // Nothing beyond max_head can belong to the head.
    let scan = &buf[..buf.len().min(limits.max_head)];
    let incomplete = || {
        if buf.len() >= limits.max_head {
            Err(ParseError::HeadTooLarge)
        } else {
            Ok(None)
        }
    };

    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line
    // (some clients send CRLF after a POST body). They count toward max_head.
    let mut pos = 0;
    let request_line = loop {
        match next_line(scan, pos)? {
            None => return incomplete(),
            Some((line, next)) => {
                pos = next;
                if !line.is_empty() {
                    break line;
                }
            }
        }
    };
    let (method, target, version) = parse_request_line(request_line)?;
    let http10 = version == (1, 0);

    let mut headers: Vec<(String, String)> = Vec::new();
    let mut fields = Fields::default();
    loop {
        let Some((line, next)) = next_line(scan, pos)? else {
            return incomplete();
        };
        pos = next;
        if line.is_empty() {
            break;
        }
        if headers.len() >= limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        let (name, value) = parse_header_line(line)?;
        note_field(&mut fields, &name, &value, limits)?;
        headers.push((name, value));
    }

    if fields.transfer_encoding {
        return Err(if fields.content_length.is_some() {
            ParseError::ConflictingFraming
        } else {
            ParseError::UnsupportedTransferEncoding
        });
    }
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
    // request message that lacks a Host header field and to any request message that contains
    // more than one Host header field line".
    if fields.hosts > 1 || (!http10 && fields.hosts == 0) {
        return Err(ParseError::BadHost);
    }

    let (path, query) = split_target(target)?;
    let keep_alive = if http10 {
        fields.keep_alive && !fields.close
    } else {
        !fields.close
    };
    Ok(Some(Head {
        request: Request {
            method,
            target: target.to_string(),
            path,
            query,
            headers,
            body: Vec::new(),
            keep_alive,
        },
        len: pos,
        content_length: fields.content_length.unwrap_or(0),
        expect_continue: fields.expect_continue && !http10,
    }))
}

/// The line starting at `pos` without its CRLF, and the position after the CRLF; `None` when no
/// LF has arrived yet.
fn next_line(buf: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    let rest = buf.get(pos..).unwrap_or_default();
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        // A CR may only be the first half of a CRLF still in flight.
        return match rest.iter().position(|&b| b == b'\r') {
            Some(cr) if cr + 1 < rest.len() => Err(ParseError::BareLineFeed),
            _ => Ok(None),
        };
    };
    let line = match rest[..lf].strip_suffix(b"\r") {
        Some(line) => line,
        None => return Err(ParseError::BareLineFeed),
    };
    if line.contains(&b'\r') {
        return Err(ParseError::BareLineFeed);
    }
    Ok(Some((line, pos + lf + 1)))
}

/// RFC 9112 §3: `request-line = method SP request-target SP HTTP-version`, single spaces.
fn parse_request_line(line: &[u8]) -> Result<(Method, &str, (u8, u8)), ParseError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadRequestLine);
    }
    let version = match version {
        b"HTTP/1.1" => (1, 1),
        b"HTTP/1.0" => (1, 0),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(ParseError::BadVersion)
        }
        _ => return Err(ParseError::BadRequestLine),
    };
    // Origin-form only: absolute-form, authority-form and asterisk-form are refused, as are
    // fragments (a client never sends one) and anything outside visible ASCII.
    if target.first() != Some(&b'/') || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(ParseError::BadTarget);
    }
    if target.contains(&b'#') {
        return Err(ParseError::BadTarget);
    }
    let target = std::str::from_utf8(target).map_err(|_| ParseError::BadTarget)?;
    Ok((Method::from_token(method), target, version))
}

/// RFC 9110 §5.1 / RFC 9112 §5: `field-name ":" OWS field-value OWS`.
fn parse_header_line(line: &[u8]) -> Result<(String, String), ParseError> {
    // obs-fold (RFC 9112 §5.2): a line starting with whitespace continues the previous one. A
    // server may reject it; we must, since other parsers would join it.
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(ParseError::BadHeader);
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(ParseError::BadHeader)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // No whitespace is allowed between the name and the colon (RFC 9112 §5.1): is_tchar rejects it.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::BadHeader);
    }
    let value = trim_ows(value);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ParseError::BadHeader);
    }
    let value = std::str::from_utf8(value).map_err(|_| ParseError::BadHeader)?;
    let name = std::str::from_utf8(name)
        .map_err(|_| ParseError::BadHeader)?
        .to_ascii_lowercase();
    Ok((name, value.to_string()))
}

fn note_field(
    fields: &mut Fields,
    name: &str,
    value: &str,
    limits: &Limits,
) -> Result<(), ParseError> {
    match name {
        "content-length" => {
            let n = parse_content_length(value, limits)?;
            // RFC 9112 §6.3: several differing values are an unrecoverable framing error.
            if fields.content_length.is_some_and(|old| old != n) {
                return Err(ParseError::BadContentLength);
            }
            fields.content_length = Some(n);
        }
        "transfer-encoding" => fields.transfer_encoding = true,
        "host" => fields.hosts += 1,
        "connection" => {
            for option in value.split(',').map(|o| o.trim_matches([' ', '\t'])) {
                if option.eq_ignore_ascii_case("close") {
                    fields.close = true;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    fields.keep_alive = true;
                }
            }
        }
        "expect" => fields.expect_continue = value.eq_ignore_ascii_case("100-continue"),
        _ => {}
    }
    Ok(())
}

/// `Content-Length = 1*DIGIT`; no sign, no list, no spaces inside. A value above the limit is
/// refused here, before the body is read (a number too big for usize is also just too large).
fn parse_content_length(value: &str, limits: &Limits) -> Result<usize, ParseError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadContentLength);
    }
    let mut n: usize = 0;
    for digit in value.bytes().map(|b| usize::from(b - b'0')) {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(digit))
            .ok_or(ParseError::BodyTooLarge)?;
    }
    if n > limits.max_body {
        return Err(ParseError::BodyTooLarge);
    }
    Ok(n)
}

type Query = Vec<(String, String)>;

/// Splits an origin-form target into a decoded path and decoded query pairs.
fn split_target(target: &str) -> Result<(String, Query), ParseError> {
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = percent_decode(raw_path).ok_or(ParseError::BadTarget)?;
    // Checked after decoding, so `%2e%2e` and `%2F..%2F` are caught as well.
    if path.contains('\0') || path.split('/').any(|segment| segment == "..") {
        return Err(ParseError::BadTarget);
    }
    let mut query = Vec::new();
    for pair in raw_query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        query.push(decode_pair(pair).ok_or(ParseError::BadTarget)?);
    }
    Ok((path, query))
}

/// One `name=value` of a query or form body; a pair without `=` has an empty value.
fn decode_pair(pair: &str) -> Option<(String, String)> {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    let plus = |s: &str| percent_decode(&s.replace('+', " "));
    Some((plus(name)?, plus(value)?))
}

/// Strict percent-decoding (RFC 3986 §2.1): every `%` must start two hex digits, and the result
/// must be UTF-8; otherwise `None`. `+` is left alone here (it means a space only in query strings
/// and form bodies, which [`Request::query`] and [`Request::form`] handle).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn parse(bytes: &[u8]) -> Result<Option<(Request, usize)>, ParseError> {
        parse_request(bytes, &limits())
    }

    fn parse_one(bytes: &[u8]) -> Request {
        match parse(bytes) {
            Ok(Some((request, used))) => {
                assert_eq!(used, bytes.len(), "whole input is one request");
                request
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn refused(bytes: &[u8]) -> ParseError {
        match parse(bytes) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    // ---- accepted ----

    #[test]
    fn parses_simple_get() {
        let r =
            parse_one(b"GET /approvals?state=pending HTTP/1.1\r\nHost: gw\r\nAccept: */*\r\n\r\n");
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/approvals?state=pending");
        assert_eq!(r.path, "/approvals");
        assert_eq!(r.query("state"), Some("pending"));
        assert_eq!(r.header("ACCEPT"), Some("*/*"));
        assert!(r.keep_alive);
        assert!(r.body.is_empty());
    }

    #[test]
    fn lower_cases_names_and_trims_values() {
        let r = parse_one(b"GET / HTTP/1.1\r\nHOST:   gw  \r\nX-Thing:\tv a l\t\r\n\r\n");
        assert_eq!(
            r.headers,
            vec![
                ("host".to_string(), "gw".to_string()),
                ("x-thing".to_string(), "v a l".to_string())
            ]
        );
    }

    #[test]
    fn maps_methods_case_sensitively() {
        for (m, want) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PATCH", Method::Other),
            ("get", Method::Other),
        ] {
            let raw = format!("{m} / HTTP/1.1\r\nHost: gw\r\n\r\n");
            assert_eq!(parse_one(raw.as_bytes()).method, want, "{m}");
        }
    }

    #[test]
    fn returns_none_until_head_complete() {
        let full = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        parse_one(full);
    }

    #[test]
    fn returns_none_until_body_complete() {
        let full = b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello";
        let head_len = full.len() - 5;
        for cut in head_len..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_one(full).body, b"hello");
    }

    #[test]
    fn parses_pipelined_requests_one_at_a_time() {
        let two = b"POST /one HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabcGET /two HTTP/1.1\r\nHost: gw\r\n\r\n";
        let (first, used) = parse(two)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("incomplete"));
        assert_eq!(
            (first.path.as_str(), first.body.as_slice()),
            ("/one", &b"abc"[..])
        );
        let (second, used2) = parse(&two[used..])
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("incomplete"));
        assert_eq!(second.path, "/two");
        assert_eq!(used + used2, two.len());
    }

    #[test]
    fn skips_one_leading_empty_line() {
        let r = parse_one(b"\r\nGET / HTTP/1.1\r\nHost: gw\r\n\r\n");
        assert_eq!(r.path, "/");
    }

    #[test]
    fn accepts_equal_duplicate_content_length() {
        let r = parse_one(
            b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn http10_closes_unless_keep_alive_asked() {
        assert!(!parse_one(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(parse_one(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn http11_keeps_alive_unless_close_asked() {
        assert!(parse_one(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").keep_alive);
        assert!(
            !parse_one(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: foo, close\r\n\r\n").keep_alive
        );
    }

    #[test]
    fn decodes_form_and_query() {
        let body = b"reason=rollback+at+10%3A00&approve=&x&bad=%zz&caf%C3%A9=%E2%9C%93";
        let raw = [
            &b"POST /a%20b?q=a+b%2Bc&empty&n=%2F HTTP/1.1\r\nHost: gw\r\nContent-Length: "[..],
            body.len().to_string().as_bytes(),
            b"\r\n\r\n",
            body,
        ]
        .concat();
        let r = parse_one(&raw);
        assert_eq!(r.path, "/a b");
        assert_eq!(r.query("q"), Some("a b+c"));
        assert_eq!(r.query("empty"), Some(""));
        assert_eq!(r.query("n"), Some("/"));
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            r.form(),
            pairs(&[
                ("reason", "rollback at 10:00"),
                ("approve", ""),
                ("x", ""),
                ("café", "✓"),
            ])
        );
    }

    #[test]
    fn plus_in_path_stays_plus() {
        assert_eq!(
            parse_one(b"GET /a+b HTTP/1.1\r\nHost: gw\r\n\r\n").path,
            "/a+b"
        );
    }

    #[test]
    fn cookie_lookup() {
        let r = parse_one(b"GET / HTTP/1.1\r\nHost: gw\r\nCookie: a=1; pct_session=xyz; q=\"quoted\"\r\nCookie: late=2\r\n\r\n");
        assert_eq!(r.cookie("pct_session"), Some("xyz"));
        assert_eq!(r.cookie("a"), Some("1"));
        assert_eq!(r.cookie("q"), Some("quoted"));
        assert_eq!(r.cookie("late"), Some("2"));
        assert_eq!(r.cookie("pct"), None);
        assert_eq!(r.cookie("A"), None);
    }

    #[test]
    fn bearer_token() {
        let with = |auth: &str| {
            let raw = format!("GET / HTTP/1.1\r\nHost: gw\r\n{auth}\r\n\r\n");
            parse_one(raw.as_bytes())
        };
        assert_eq!(
            with("Authorization: Bearer pct_abc.DEF-1~/+=").bearer_token(),
            Some("pct_abc.DEF-1~/+=")
        );
        assert_eq!(
            with("Authorization: bearer  tok").bearer_token(),
            Some("tok")
        );
        assert_eq!(with("Authorization: Basic dTpw").bearer_token(), None);
        assert_eq!(with("Authorization: Bearer").bearer_token(), None);
        assert_eq!(with("Authorization: Bearer a b").bearer_token(), None);
        assert_eq!(with("Authorization: Bearer ===").bearer_token(), None);
        assert_eq!(
            with("Authorization: Bearer one\r\nAuthorization: Bearer two").bearer_token(),
            None
        );
        assert_eq!(with("X-None: 1").bearer_token(), None);
    }

    #[test]
    fn percent_decode_is_strict() {
        assert_eq!(percent_decode("a%41%62+"), Some("aAb+".to_string()));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%C3"), None, "invalid UTF-8");
        assert_eq!(percent_decode("%C3%A9"), Some("é".to_string()));
    }

    // ---- refused ----

    #[test]
    fn rejects_bare_lf() {
        assert_eq!(
            refused(b"GET / HTTP/1.1\nHost: gw\n\n"),
            ParseError::BareLineFeed
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: gw\n\r\n"),
            ParseError::BareLineFeed
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: gw\r\n\n"),
            ParseError::BareLineFeed
        );
    }

    #[test]
    fn rejects_bare_cr_inside_a_line() {
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: g\rw\r\n\r\n"),
            ParseError::BareLineFeed
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nX: a\rb"),
            ParseError::BareLineFeed,
            "before the line is complete"
        );
    }

    #[test]
    fn rejects_bad_request_lines() {
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\nHost: gw\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: gw\r\n\r\n",
            b"GET /\r\nHost: gw\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: gw\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: gw\r\n\r\n",
            b"GET / HTTPS/1.1\r\nHost: gw\r\n\r\n",
            b"GET / HTTP/1.10\r\nHost: gw\r\n\r\n",
        ] {
            assert_eq!(
                refused(raw),
                ParseError::BadRequestLine,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(ParseError::BadRequestLine.status(), 400);
    }

    #[test]
    fn rejects_bad_request_line_before_headers_arrive() {
        assert_eq!(
            refused(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n"),
            ParseError::BadRequestLine
        );
    }

    #[test]
    fn rejects_other_versions_with_505() {
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(refused(b"GET / HTTP/0.9\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(ParseError::BadVersion.status(), 505);
    }

    #[test]
    fn rejects_non_origin_targets() {
        for target in [
            "http://gw/",
            "*",
            "gw:443",
            "/a#frag",
            "/%",
            "/%zz",
            "/a%00b",
            "/../etc/passwd",
            "/a/..",
            "/a/%2e%2e/b",
            "/a%2F..%2Fb",
            "/x?y=%",
            "/\x7f",
            "/caf\u{e9}",
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: gw\r\n\r\n");
            assert_eq!(refused(raw.as_bytes()), ParseError::BadTarget, "{target}");
        }
        // A dot segment that is not `..` is just a name.
        assert_eq!(
            parse_one(b"GET /a/.../b HTTP/1.1\r\nHost: gw\r\n\r\n").path,
            "/a/.../b"
        );
    }

    #[test]
    fn rejects_control_bytes_in_target() {
        assert_eq!(
            refused(b"GET /a\tb HTTP/1.1\r\nHost: gw\r\n\r\n"),
            ParseError::BadTarget
        );
        assert_eq!(
            refused(b"GET /a\x00b HTTP/1.1\r\nHost: gw\r\n\r\n"),
            ParseError::BadTarget
        );
    }

    #[test]
    fn rejects_obs_fold() {
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: gw\r\nX: a\r\n  b\r\n\r\n"),
            ParseError::BadHeader
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: gw\r\nX: a\r\n\tb\r\n\r\n"),
            ParseError::BadHeader
        );
    }

    #[test]
    fn rejects_bad_header_lines() {
        for line in [
            &b"NoColon"[..],
            b": empty-name",
            b"Host : space-before-colon",
            b"Na(me: x",
            b"X: nul\x00inside",
            b"X: del\x7f",
            b"X: \xff\xfe",
        ] {
            let raw = [&b"GET / HTTP/1.1\r\nHost: gw\r\n"[..], line, b"\r\n\r\n"].concat();
            assert_eq!(
                refused(&raw),
                ParseError::BadHeader,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn rejects_missing_or_duplicate_host_in_http11() {
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), ParseError::BadHost);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            ParseError::BadHost
        );
        assert_eq!(
            refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            ParseError::BadHost
        );
        assert_eq!(ParseError::BadHost.status(), 400);
    }

    #[test]
    fn rejects_te_and_cl_together() {
        let e = refused(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(e, ParseError::ConflictingFraming);
        assert_eq!(e.status(), 400);
        let e = refused(b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(e, ParseError::ConflictingFraming);
    }

    #[test]
    fn rejects_any_transfer_encoding_with_501() {
        for te in ["chunked", "gzip, chunked", "identity", "x"] {
            let raw = format!("POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: {te}\r\n\r\n");
            let e = refused(raw.as_bytes());
            assert_eq!(e, ParseError::UnsupportedTransferEncoding, "{te}");
            assert_eq!(e.status(), 501);
        }
    }

    #[test]
    fn rejects_differing_duplicate_content_length() {
        assert_eq!(
            refused(
                b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"
            ),
            ParseError::BadContentLength
        );
    }

    #[test]
    fn rejects_non_digit_content_length() {
        for cl in ["", "-1", "+1", "1 2", "0x10", "1,1", "½"] {
            let raw = format!("POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(
                refused(raw.as_bytes()),
                ParseError::BadContentLength,
                "{cl:?}"
            );
        }
    }

    #[test]
    fn rejects_body_over_limit_from_header_alone() {
        // Head not even finished: the Content-Length line alone decides.
        let e = refused(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 65537\r\n");
        assert_eq!(e, ParseError::BodyTooLarge);
        assert_eq!(e.status(), 413);
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n"),
            ParseError::BodyTooLarge,
            "overflowing usize is just too large"
        );
        // At the limit is fine.
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n",
            64 * 1024
        );
        assert_eq!(parse(raw.as_bytes()), Ok(None));
    }

    #[test]
    fn rejects_head_over_limit_even_without_terminator() {
        let small = Limits {
            max_head: 64,
            ..Limits::default()
        };
        let mut raw = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Pad: ".to_vec();
        raw.resize(63, b'a');
        assert_eq!(parse_request(&raw, &small), Ok(None));
        raw.push(b'a');
        assert_eq!(parse_request(&raw, &small), Err(ParseError::HeadTooLarge));
        assert_eq!(ParseError::HeadTooLarge.status(), 431);
        // A complete head that ends past the limit is refused as well.
        let mut long = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Pad: ".to_vec();
        long.resize(80, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&long, &small), Err(ParseError::HeadTooLarge));
    }

    #[test]
    fn rejects_too_many_headers() {
        let few = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        assert!(
            parse_request(b"GET / HTTP/1.1\r\nHost: gw\r\nA: 1\r\n\r\n", &few)
                .is_ok_and(|r| r.is_some())
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: gw\r\nA: 1\r\nB: 2\r\n", &few),
            Err(ParseError::TooManyHeaders)
        );
        assert_eq!(ParseError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn wants_continue_only_while_body_is_missing() {
        let head =
            b"POST / HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let l = limits();
        assert!(
            !wants_continue(&head[..head.len() - 1], &l),
            "head incomplete"
        );
        assert!(wants_continue(head, &l));
        assert!(wants_continue(&[&head[..], b"o"].concat(), &l));
        assert!(!wants_continue(&[&head[..], b"ok"].concat(), &l));
        assert!(!wants_continue(
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            &l
        ));
    }

    #[test]
    fn every_error_has_a_status_and_message() {
        for e in [
            ParseError::HeadTooLarge,
            ParseError::TooManyHeaders,
            ParseError::BodyTooLarge,
            ParseError::BadRequestLine,
            ParseError::BadTarget,
            ParseError::BadHeader,
            ParseError::BareLineFeed,
            ParseError::BadVersion,
            ParseError::BadHost,
            ParseError::UnsupportedTransferEncoding,
            ParseError::ConflictingFraming,
            ParseError::BadContentLength,
        ] {
            assert!(matches!(e.status(), 400 | 413 | 431 | 501 | 505));
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn debug_output_hides_credentials_and_body() {
        let r = parse_one(b"POST / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer pct_secret\r\nCookie: s=pct_cookie\r\nContent-Length: 6\r\n\r\nsecret");
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("pct_") && !shown.contains("secret"),
            "{shown}"
        );
        assert!(shown.contains("body_len: 6"), "{shown}");
    }

    // ---- fuzz seeds ----

    #[test]
    fn replays_fuzz_seeds_without_panicking() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/http_request");
        let entries = std::fs::read_dir(&dir)
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(!entries.is_empty(), "fuzz/seeds/http_request is missing");
        let small = Limits {
            max_head: 512,
            max_headers: 8,
            max_body: 256,
        };
        for entry in entries {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            for l in [&small, &limits()] {
                let mut buf = bytes.as_slice();
                while let Ok(Some((_, used))) = parse_request(buf, l) {
                    assert!(used > 0 && used <= buf.len());
                    buf = &buf[used..];
                }
            }
        }
    }
}
