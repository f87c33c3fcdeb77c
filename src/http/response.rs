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

    fn body(mut self, body: Vec<u8>) -> Response {
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
