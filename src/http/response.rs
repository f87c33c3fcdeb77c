//! Responses and their encoding, plus the escaping helpers the pages and the API need.

/// The security headers every response carries unless the handler set its own value.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         form-action 'self'; frame-ancestors 'none'",
    ),
];

/// Framing headers the encoder owns; a handler's own values for them are dropped.
const FRAMING_HEADERS: [&str; 3] = ["content-length", "connection", "transfer-encoding"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with no headers.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `text/plain; charset=utf-8`.
    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body.as_bytes().to_vec())
    }

    /// `text/html; charset=utf-8`. Escape interpolated values with [`html_escape`].
    pub fn html(status: u16, body: String) -> Response {
        Response::new(status)
            .header("Content-Type", "text/html; charset=utf-8")
            .body(body.into_bytes())
    }

    /// `application/json`. Build string values with [`json_string`].
    pub fn json(status: u16, body: String) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(body.into_bytes())
    }

    /// `303 See Other` to `location` (the answer to a POSTed form: the browser follows with GET).
    pub fn redirect(location: &str) -> Response {
        Response::new(303).header("Location", location)
    }

    /// Appends a header (so `Set-Cookie` can be given more than once). `Content-Length`,
    /// `Connection` and `Transfer-Encoding` are ignored at encoding time: the server owns framing.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// Writes the status line, headers and (unless `head_only`) the body to `out`.
    ///
    /// Always written: `Content-Length` (the size of the body a GET would get, also for HEAD),
    /// `Connection: keep-alive` or `close`, and [`SECURITY_HEADERS`] the handler did not set.
    /// Exceptions from RFC 9110: 1xx and 204 carry neither `Content-Length` nor a body (§8.6),
    /// 304 carries no body (§15.4.5).
    ///
    /// Hardening: a header whose name is not a token is dropped; CR, LF and other control bytes
    /// (except HT) in a value are replaced by a space, so a value can never start a new header
    /// line (response splitting). A status outside 100..=999 is sent as 500.
    pub fn encode(&self, head_only: bool, keep_alive: bool, out: &mut Vec<u8>) {
        let status = if (100..=999).contains(&self.status) {
            self.status
        } else {
            500
        };
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status_reason(status).as_bytes());
        out.extend_from_slice(b"\r\n");

        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        for (name, value) in &self.headers {
            if name.is_empty() || !name.bytes().all(is_tchar) {
                continue;
            }
            if FRAMING_HEADERS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
                continue;
            }
            put_header(out, name, value);
        }
        for (name, value) in SECURITY_HEADERS {
            if !has(name) {
                put_header(out, name, value);
            }
        }
        let informational_or_no_content = status < 200 || status == 204;
        if !informational_or_no_content {
            put_header(out, "Content-Length", &self.body.len().to_string());
        }
        put_header(
            out,
            "Connection",
            if keep_alive { "keep-alive" } else { "close" },
        );
        out.extend_from_slice(b"\r\n");
        if !head_only && !informational_or_no_content && status != 304 {
            out.extend_from_slice(&self.body);
        }
    }
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend(value.bytes().map(|b| {
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            b' '
        } else {
            b
        }
    }));
    out.extend_from_slice(b"\r\n");
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The reason phrase for `code` (RFC 9110 §15); "Unknown" for codes without one.
pub fn status_reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Escapes `& < > " '` for HTML text and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as a JSON string literal, quotes included (RFC 8259 §7). Besides what JSON requires,
/// `<`, `>`, `&`, U+2028 and U+2029 are written as `\uXXXX`, so the literal is also safe inside
/// an HTML `<script>` element or JavaScript source.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(response: &Response, head_only: bool, keep_alive: bool) -> String {
        let mut out = Vec::new();
        response.encode(head_only, keep_alive, &mut out);
        String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn encodes_status_framing_and_security_headers() {
        let s = encoded(&Response::text(200, "hi"), false, true);
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(s.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        assert!(s.contains("\r\nContent-Length: 2\r\n"));
        assert!(s.contains("\r\nConnection: keep-alive\r\n"));
        for (name, value) in SECURITY_HEADERS {
            assert!(s.contains(&format!("\r\n{name}: {value}\r\n")), "{name}");
        }
        assert!(s.ends_with("\r\n\r\nhi"));
    }

    #[test]
    fn head_only_keeps_length_drops_body() {
        let s = encoded(&Response::html(200, "<p>x</p>".into()), true, false);
        assert!(s.contains("\r\nContent-Length: 8\r\n"));
        assert!(s.contains("\r\nConnection: close\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn handler_security_header_replaces_default() {
        let r = Response::new(200).header("cache-control", "max-age=60");
        let s = encoded(&r, false, true);
        assert!(s.contains("\r\ncache-control: max-age=60\r\n"));
        assert!(!s.contains("no-store"));
    }

    #[test]
    fn handler_cannot_set_framing_headers() {
        let r = Response::text(200, "abc")
            .header("Content-Length", "999")
            .header("Transfer-Encoding", "chunked")
            .header("Connection", "keep-alive");
        let s = encoded(&r, false, false);
        assert!(!s.contains("999") && !s.contains("chunked"));
        assert!(s.contains("\r\nContent-Length: 3\r\n"));
        assert_eq!(s.matches("Connection:").count(), 1);
        assert!(s.contains("Connection: close"));
    }

    #[test]
    fn refuses_response_splitting() {
        let r = Response::redirect("/x\r\nSet-Cookie: evil=1").header("Bad Name", "v");
        let s = encoded(&r, false, true);
        assert!(s.starts_with("HTTP/1.1 303 See Other\r\n"));
        assert!(s.contains("\r\nLocation: /x  Set-Cookie: evil=1\r\n"));
        assert!(!s.contains("\r\nSet-Cookie"));
        assert!(!s.contains("Bad Name"));
    }

    #[test]
    fn no_content_and_not_modified_have_no_body() {
        let mut r = Response::text(204, "ignored");
        let s = encoded(&r, false, true);
        assert!(!s.contains("Content-Length") && s.ends_with("\r\n\r\n"));
        r.status = 304;
        let s = encoded(&r, false, true);
        assert!(s.contains("Content-Length: 7") && s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn out_of_range_status_becomes_500() {
        assert!(encoded(&Response::new(42), false, true)
            .starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(encoded(&Response::new(1000), false, true).starts_with("HTTP/1.1 500 "));
        assert!(encoded(&Response::new(599), false, true).starts_with("HTTP/1.1 599 Unknown\r\n"));
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(status_reason(431), "Request Header Fields Too Large");
        assert_eq!(status_reason(413), "Content Too Large");
        assert_eq!(status_reason(777), "Unknown");
    }

    #[test]
    fn html_escape_covers_text_and_attributes() {
        assert_eq!(
            html_escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(html_escape("plain é"), "plain é");
    }

    #[test]
    fn json_string_escapes_controls_and_script_breakers() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            json_string("\n\r\t\u{8}\u{c}\u{1}"),
            r#""\n\r\t\b\f\u0001""#
        );
        assert_eq!(json_string("</script>&"), r#""\u003c/script\u003e\u0026""#);
        assert_eq!(json_string("\u{2028}é"), "\"\\u2028é\"");
    }
}
