//! The server against real sockets: `serve` on its own executor thread, a blocking std client.
//! Every wait is bounded by a socket read timeout; nothing asserts on timing beyond "within N s".

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smol::Executor;

use super::{serve, Handler, Limits, Request, Response, ServerLimits};

/// Generous bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: SocketAddr,
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handler() -> Handler {
    Arc::new(|req: Request, _peer: SocketAddr, tls: bool| {
        Box::pin(async move {
            let body = format!(
                "{:?} {} q={} body={} tls={tls}",
                req.method,
                req.path,
                req.query("q").unwrap_or("-"),
                String::from_utf8_lossy(&req.body)
            );
            Response::text(200, &body)
        })
    })
}

fn start(limits: ServerLimits, tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
    let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let thread = std::thread::spawn(move || {
        let ex = Arc::new(Executor::new());
        let server = serve(listener, tls, handler(), limits, ex.clone());
        smol::block_on(ex.run(smol::future::or(server, async {
            let _ = stop_rx.recv().await;
        })));
    });
    TestServer {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn quick_limits() -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(WAIT))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).unwrap_or_else(|e| panic!("write: {e}"));
}

/// A response as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn has(&self, header_line: &str) -> bool {
        self.head
            .split("\r\n")
            .any(|l| l.eq_ignore_ascii_case(header_line))
    }
}

/// Reads exactly one response (by Content-Length; none for HEAD or 1xx).
fn read_reply(s: &mut TcpStream, head_only: bool) -> Reply {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            Ok(_) => panic!(
                "connection closed mid-head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    let head = String::from_utf8(buf).unwrap_or_else(|e| panic!("{e}"));
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.parse().unwrap_or_else(|e| panic!("{e}")));
    let mut body = vec![0; if head_only || status < 200 { 0 } else { length }];
    s.read_exact(&mut body)
        .unwrap_or_else(|e| panic!("body: {e}"));
    Reply { status, head, body }
}

/// True when the server closed: EOF (or a reset) before `WAIT` runs out.
fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = start(quick_limits(), None);
    let mut c = connect(server.addr);
    send(&mut c, b"GET /first?q=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_reply(&mut c, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Get /first q=1 body= tls=false");
    assert!(r.has("Connection: keep-alive"));
    assert!(r.has("X-Frame-Options: DENY"));

    send(
        &mut c,
        b"POST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    let r = read_reply(&mut c, false);
    assert_eq!(r.body, b"Post /second q=- body=hi tls=false");
    assert!(r.has("Connection: close"));
    assert!(closed(&mut c));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = start(quick_limits(), None);
    let mut c = connect(server.addr);
    send(
        &mut c,
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nHEAD /b HTTP/1.1\r\nHost: t\r\n\r\nGET /c HTTP/1.0\r\n\r\n",
    );
    assert_eq!(
        read_reply(&mut c, false).body,
        b"Get /a q=- body= tls=false"
    );
    let head = read_reply(&mut c, true);
    assert!(head.has("Content-Length: 27"), "{}", head.head);
    assert_eq!(
        read_reply(&mut c, false).body,
        b"Get /c q=- body= tls=false"
    );
    // HTTP/1.0 without keep-alive: closed, and nothing (no HEAD body) was left in between.
    assert!(closed(&mut c));
}

#[test]
fn expect_continue_gets_100_before_the_body() {
    let server = start(quick_limits(), None);
    let mut c = connect(server.addr);
    send(
        &mut c,
        b"PUT /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    );
    assert_eq!(read_reply(&mut c, false).status, 100);
    send(&mut c, b"abc");
    assert_eq!(
        read_reply(&mut c, false).body,
        b"Put /x q=- body=abc tls=false"
    );
}

#[test]
fn malformed_request_line_gets_400_and_close() {
    let server = start(quick_limits(), None);
    let mut c = connect(server.addr);
    send(&mut c, b"GARBAGE\r\n\r\n");
    let r = read_reply(&mut c, false);
    assert_eq!(r.status, 400);
    assert!(r.has("Connection: close"));
    assert!(closed(&mut c));
}

#[test]
fn oversized_headers_get_431() {
    let server = start(quick_limits(), None);
    let mut c = connect(server.addr);
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    raw.resize(20 * 1024, b'a');
    raw.extend_from_slice(b"\r\n\r\n");
    send(&mut c, &raw);
    let r = read_reply(&mut c, false);
    assert_eq!(r.status, 431);
    assert!(closed(&mut c));
}

#[test]
fn oversized_body_gets_413_without_sending_it() {
    let limits = ServerLimits {
        parse: Limits {
            max_body: 100,
            ..Limits::default()
        },
        ..quick_limits()
    };
    let server = start(limits, None);
    let mut c = connect(server.addr);
    send(
        &mut c,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n",
    );
    assert_eq!(read_reply(&mut c, false).status, 413);
    assert!(closed(&mut c));
}

#[test]
fn unknown_transfer_encoding_gets_501() {
    let server = start(quick_limits(), None);
    let mut c = connect(server.addr);
    send(
        &mut c,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    let r = read_reply(&mut c, false);
    assert_eq!(r.status, 501);
    assert!(closed(&mut c));
}

#[test]
fn slowloris_partial_head_is_closed_after_header_timeout() {
    let server = start(quick_limits(), None);
    let mut c = connect(server.addr);
    let started = Instant::now();
    send(&mut c, b"GET / HTTP/1.1\r\nHost: t\r\n");
    let r = read_reply(&mut c, false);
    assert_eq!(r.status, 408);
    assert!(closed(&mut c));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed within 8 s"
    );
}

#[test]
fn slowloris_dripping_bytes_does_not_extend_the_deadline() {
    let server = start(quick_limits(), None);
    let mut c = connect(server.addr);
    let mut writer = c.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    // One byte every 100 ms of a header that never ends; stops when the server has closed.
    let drip = std::thread::spawn(move || {
        let _ = writer.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline && writer.write_all(b"a").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let r = read_reply(&mut c, false);
    assert_eq!(r.status, 408);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed within 8 s"
    );
    drop(c);
    let _ = drip.join();
}

#[test]
fn idle_keep_alive_connection_is_closed_silently() {
    let limits = ServerLimits {
        idle_timeout: Duration::from_secs(1),
        ..quick_limits()
    };
    let server = start(limits, None);
    let mut c = connect(server.addr);
    send(&mut c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_reply(&mut c, false).status, 200);
    let started = Instant::now();
    assert!(closed(&mut c), "closed without a response");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn connection_cap_answers_503() {
    let limits = ServerLimits {
        max_connections: 1,
        ..quick_limits()
    };
    let server = start(limits, None);
    let mut first = connect(server.addr);
    send(&mut first, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_reply(&mut first, false).status, 200);

    let mut second = connect(server.addr);
    let r = read_reply(&mut second, false);
    assert_eq!(r.status, 503);
    assert!(r.has("Connection: close"));
    assert!(closed(&mut second));

    // The slot comes back once the first connection is gone.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = connect(server.addr);
        send(&mut c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        if read_reply(&mut c, false).status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never released");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn closes_after_max_requests_per_connection() {
    let limits = ServerLimits {
        max_requests_per_connection: 2,
        ..quick_limits()
    };
    let server = start(limits, None);
    let mut c = connect(server.addr);
    send(&mut c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(read_reply(&mut c, false).has("Connection: keep-alive"));
    send(&mut c, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(read_reply(&mut c, false).has("Connection: close"));
    assert!(closed(&mut c));
}

// ---- TLS ----

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for 127.0.0.1 (it is its own trust anchor).
fn self_signed(dir: &std::path::Path) -> crate::config::TlsFiles {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    crate::config::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

#[test]
fn serves_over_tls_and_bounds_the_handshake() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let dir = std::env::temp_dir().join(format!("portcullis-http-tls-{}", std::process::id()));
    let files = self_signed(&dir);
    let config = crate::net::tls::server_config(&files).unwrap_or_else(|e| panic!("{e}"));
    let server = start(quick_limits(), Some(config));

    let mut roots = rustls::RootCertStore::empty();
    let cert = CertificateDer::from_pem_file(&files.cert).unwrap_or_else(|e| panic!("{e}"));
    roots.add(cert).unwrap_or_else(|e| panic!("{e}"));
    let client = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
    let conn =
        rustls::ClientConnection::new(Arc::new(client), name).unwrap_or_else(|e| panic!("{e}"));
    let mut tls = rustls::StreamOwned::new(conn, connect(server.addr));
    tls.write_all(b"GET /secure HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = Vec::new();
    // The server sends close_notify, so this ends cleanly.
    tls.read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("Get /secure q=- body= tls=true"), "{reply}");

    // A client that never starts the handshake is dropped after header_timeout.
    let mut silent = connect(server.addr);
    let started = Instant::now();
    assert!(closed(&mut silent));
    assert!(started.elapsed() < Duration::from_secs(8));
    let _ = std::fs::remove_dir_all(&dir);
}
