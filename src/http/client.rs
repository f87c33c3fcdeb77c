//! A small HTTP/1.1 client for the CLI (`portcullis approvals ...`) and webhook notifications:
//! one request per connection (`Connection: close`), bounded answer, TLS with rustls.

use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsConnector;
use rustls::ClientConfig;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::net::stream::Stream;
use crate::net::tls;

/// Largest answer read.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

/// `http(s)://host[:port][/path]`; IPv6 hosts in brackets.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{s:?}: URL must start with http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains('@')
        || path.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(format!("{s:?}: not a usable URL"));
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: bad IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port"))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("{s:?}: bad port"))?,
            ),
            None => (authority.to_string(), default_port),
        }
    };
    Ok(Url {
        https,
        host,
        port,
        path: path.to_string(),
    })
}

/// Send one request and read the whole answer: (status, body).
pub async fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    tls_config: Option<Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let work = async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", url.host, url.port))?;
        let mut stream = if url.https {
            let config = match tls_config {
                Some(c) => c,
                None => tls::client_config(crate::config::UpstreamTls::VerifyFull, None)
                    .map_err(|e| e.to_string())?
                    .ok_or("no TLS configuration")?,
            };
            let name = tls::server_name(&url.host).map_err(|e| e.to_string())?;
            let s = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", url.host))?;
            Stream::TlsClient(Box::new(s))
        } else {
            Stream::Plain(tcp)
        };
        let host = if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        };
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {host}:{}\r\nConnection: close\r\nContent-Length: {}\r\nUser-Agent: portcullis\r\n",
            url.path,
            url.port,
            body.len()
        );
        for (k, v) in headers {
            if k.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
                return Err("header with a line break".to_string());
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            if answer.len() + n > MAX_ANSWER {
                return Err("answer too large".to_string());
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        parse_answer(&answer)
    };
    work.or(async {
        smol::Timer::after(timeout).await;
        Err(format!(
            "no answer from {}:{} within {}s",
            url.host,
            url.port,
            timeout.as_secs()
        ))
    })
    .await
}

/// Status and body of a `Connection: close` answer (Content-Length or read-to-end framing).
fn parse_answer(answer: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("answer without a complete head")?;
    let head = std::str::from_utf8(&answer[..end]).map_err(|_| "answer head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut body = &answer[end + 4..];
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = v.trim().parse().map_err(|_| "bad Content-Length")?;
                body = body
                    .get(..n)
                    .ok_or("answer shorter than its Content-Length")?;
            }
        }
    }
    Ok((status, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = parse_url("https://hooks.example.com/a/b?c=d").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "hooks.example.com", 443, "/a/b?c=d")
        );
        let u = parse_url("http://127.0.0.1:8443").unwrap();
        assert_eq!((u.https, u.port, u.path.as_str()), (false, 8443, "/"));
        let u = parse_url("http://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://user@x/").is_err());
        assert!(parse_url("http://x:notaport/").is_err());
    }

    #[test]
    fn parses_answers_with_and_without_length() {
        let (s, b) = parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"hi"[..]));
        let (s, b) = parse_answer(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"nope"[..]));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi").is_err());
        assert!(parse_answer(b"garbage").is_err());
    }
}
