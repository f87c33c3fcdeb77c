//! Hostile clients over raw TCP against a running gateway: malformed startup packets, protocol
//! violations during authentication, plaintext injected after SSLRequest, oversized and malformed
//! frames after authentication, slow and half-open clients, connection limits, and a flood of
//! garbage connections with a bound on the gateway's memory.
//!
//! Every case checks two things: the hostile client gets a clean outcome (a FATAL ErrorResponse
//! and/or a closed socket, within a bounded wait), and the gateway keeps serving (it is still
//! running and a normal psql with a valid token runs `select 1`).
//!
//! The client side is hand-built PostgreSQL v3 bytes on a `std::net::TcpStream`; the SCRAM client
//! for the cases after authentication is the crate's own (`portcullis::proto::pg::scram`).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{describe, free_port, random_hex, stdout, Gateway, PgCluster};
use portcullis::proto::pg::scram;

const IDENTITY: &str = "alice";
const TARGET: &str = "appdb";
/// Longest wait for the gateway to answer or close after a hostile exchange that it can judge at
/// once (bounded wait, not a timing assertion).
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Largest backend message body the raw client accepts (the gateway never sends more here).
const MAX_BACKEND_BODY: usize = 1 << 20;

/// "The protocol version number" for 3.0: 3 << 16.
const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;

// ---------------------------------------------------------------------------------------------
// Fixture: one cluster and one gateway in front of it
// ---------------------------------------------------------------------------------------------

/// `[gateway]` settings a test wants.
struct Limits {
    handshake_timeout: &'static str,
    max_message_size: &'static str,
    max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: "2s",
            max_message_size: "1MiB",
            max_connections: 1024,
        }
    }
}

/// Fields drop in order: the gateway stops before the cluster.
struct Fixture {
    gw: Gateway,
    pg: PgCluster,
    port: u16,
    token: String,
}

impl Fixture {
    /// A cluster and a gateway with target `appdb` (TLS offered but not required, default allow)
    /// for identity `alice`, and an unlimited-use token for alice on appdb.
    fn start(limits: Limits) -> Fixture {
        let pg = PgCluster::start();
        let port = free_port();
        let policy = format!(
            r#"
[gateway]
data_dir = "./data"
handshake_timeout = "{hs}"
max_message_size = "{mms}"
max_connections = {mc}

[[identity]]
name = "{IDENTITY}"
roles = ["dba"]

[[target]]
name = "{TARGET}"
listen = "127.0.0.1:{port}"
upstream = "{upstream}"
database = "postgres"
user = "postgres"
password_file = "upstream.pw"
upstream_tls = "verify-full"
upstream_ca = "{ca}"
tls = {{ cert = "{cert}", key = "{key}" }}
require_tls = false
default = "allow"
"#,
            hs = limits.handshake_timeout,
            mms = limits.max_message_size,
            mc = limits.max_connections,
            upstream = pg.addr(),
            ca = pg.ca_cert.display(),
            cert = pg.tls.server_cert.display(),
            key = pg.tls.server_key.display(),
        );
        let gw = Gateway::builder(&policy)
            .secret("upstream.pw", &pg.password)
            .start();
        let token = gw.token(IDENTITY, TARGET, &["--ttl", "10m"]);
        Fixture {
            gw,
            pg,
            port,
            token,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// psql through the gateway (verify-full TLS) with the valid token.
    fn psql(&self, sql: &str) -> std::process::Output {
        let sslmode = format!("verify-full sslrootcert={}", self.pg.ca_cert.display());
        self.gw.psql_via_args(
            self.port,
            IDENTITY,
            TARGET,
            &self.token,
            &sslmode,
            &["-At", "-c", sql],
            None,
        )
    }

    /// The gateway survived `after`: the process runs and a normal client gets `select 1`.
    fn assert_serves(&mut self, after: &str) {
        assert!(
            self.gw.is_running(),
            "gateway process died after {after}; log:\n{}",
            self.gw.log()
        );
        let out = self.psql("select 1");
        assert!(
            out.status.success() && stdout(&out) == "1\n",
            "psql select 1 through the gateway failed after {after}:\n{}\n--- gateway log ---\n{}",
            describe(&out),
            self.gw.log()
        );
    }

    fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.gw.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {path}:\n{status}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Frontend encoders
// ---------------------------------------------------------------------------------------------

/// Startup-phase packet: Int32 length (including itself), Int32 code, body.
fn startup_packet(code: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(8 + body.len())
        .unwrap_or_else(|_| panic!("startup packet body of {} bytes", body.len()));
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// StartupMessage 3.0 with these parameters.
fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    startup_packet(PROTOCOL_3_0, &body)
}

/// The StartupMessage a client of alice on appdb sends.
fn alice_startup() -> Vec<u8> {
    startup_message(&[
        ("user", IDENTITY),
        ("database", TARGET),
        ("application_name", "pg_hostile"),
    ])
}

fn ssl_request() -> Vec<u8> {
    startup_packet(SSL_REQUEST_CODE, &[])
}

/// Tagged frame: Byte1 tag, Int32 length (body + 4), body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 4)
        .unwrap_or_else(|_| panic!("frame body of {} bytes", body.len()));
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A frame header with an arbitrary length field, followed by `body` as is.
fn raw_frame(tag: u8, declared_len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&declared_len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Query ('Q'): the SQL text, NUL-terminated.
fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frame(b'Q', &body)
}

/// SASLInitialResponse ('p'): mechanism, Int32 data length (-1 for none), data.
fn sasl_initial(mechanism: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    match data {
        Some(d) => {
            let len =
                i32::try_from(d.len()).unwrap_or_else(|_| panic!("SASL data of {} bytes", d.len()));
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(d);
        }
        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    frame(b'p', &body)
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failing garbage case can be replayed.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Raw client: reading backend messages with bounded waits
// ---------------------------------------------------------------------------------------------

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to the gateway at {addr}: {e}"));
    let _ = s.set_nodelay(true);
    s
}

/// Writes everything; the gateway may already have closed (EPIPE / ECONNRESET), which is the
/// reading side's business.
fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

/// What a read ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Orderly close (read returned 0).
    Eof,
    /// ECONNRESET / ECONNABORTED: the gateway closed with our bytes unread.
    Reset,
    /// Nothing within the wait.
    TimedOut,
}

/// Fills `buf` completely, or says why not.
fn read_full(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), Stop> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::TimedOut);
        }
        s.set_read_timeout(Some(left))
            .unwrap_or_else(|e| panic!("setting a read timeout: {e}"));
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(Stop::Eof),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return Err(Stop::Reset)
            }
            Err(e) => panic!("reading from the gateway: {e}"),
        }
    }
    Ok(())
}

/// One backend message (tag, body), or why none came.
fn read_message(s: &mut TcpStream, deadline: Instant) -> Result<(u8, Vec<u8>), Stop> {
    let mut header = [0u8; 5];
    read_full(s, &mut header, deadline)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!(
        (4..=MAX_BACKEND_BODY + 4).contains(&len),
        "gateway sent a frame with tag {:?} and length {len}",
        char::from(header[0])
    );
    let mut body = vec![0u8; len - 4];
    read_full(s, &mut body, deadline)?;
    Ok((header[0], body))
}

/// Everything the gateway sent until it closed (or the wait ran out).
#[derive(Debug)]
struct Ending {
    messages: Vec<(u8, Vec<u8>)>,
    stop: Stop,
}

impl Ending {
    fn errors(&self) -> Vec<PgError> {
        self.messages
            .iter()
            .filter(|(t, _)| *t == b'E')
            .map(|(_, b)| PgError::parse(b))
            .collect()
    }

    fn closed(&self) -> bool {
        self.stop != Stop::TimedOut
    }

    fn tags(&self) -> String {
        self.messages.iter().map(|(t, _)| char::from(*t)).collect()
    }
}

fn read_until_closed(s: &mut TcpStream, wait: Duration) -> Ending {
    let deadline = Instant::now() + wait;
    let mut messages = Vec::new();
    loop {
        match read_message(s, deadline) {
            Ok(m) => messages.push(m),
            Err(stop) => return Ending { messages, stop },
        }
    }
}

/// The fields of an ErrorResponse that the tests look at.
#[derive(Debug, Clone, Default)]
struct PgError {
    /// S: "ERROR, FATAL, or PANIC ... or a localized translation".
    severity: String,
    /// V: the same, never localized.
    severity_v: String,
    /// C: SQLSTATE.
    code: String,
    /// M: the message.
    message: String,
}

impl PgError {
    /// Error and Notice Message Fields: (Byte1 type, String value)*, then a zero byte.
    fn parse(body: &[u8]) -> PgError {
        let mut e = PgError::default();
        let mut rest = body;
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail
                .iter()
                .position(|&b| b == 0)
                .unwrap_or_else(|| panic!("ErrorResponse field without NUL: {body:?}"));
            let value = String::from_utf8_lossy(&tail[..end]).into_owned();
            match kind {
                b'S' => e.severity = value,
                b'V' => e.severity_v = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                _ => {}
            }
            rest = &tail[end + 1..];
        }
        e
    }

    fn is_fatal(&self) -> bool {
        self.severity == "FATAL" && self.severity_v == "FATAL"
    }
}

/// The client got exactly one FATAL ErrorResponse with one of `codes` (after any messages in
/// `allowed_before`, e.g. the AuthenticationSASL that preceded the violation) and then the socket
/// closed.
fn assert_fatal_then_closed(
    end: &Ending,
    allowed_before: &[u8],
    codes: &[&str],
    case: &str,
    gw: &Gateway,
) {
    let context = || {
        format!(
            "case: {case}\nreceived tags {:?}, then {:?}\nerrors: {:?}\n--- gateway log ---\n{}",
            end.tags(),
            end.stop,
            end.errors(),
            gw.log()
        )
    };
    let (last, before) = end
        .messages
        .split_last()
        .unwrap_or_else(|| panic!("expected a FATAL ErrorResponse, got nothing\n{}", context()));
    assert_eq!(
        last.0,
        b'E',
        "the last message is not an ErrorResponse\n{}",
        context()
    );
    assert!(
        before.iter().all(|(t, _)| allowed_before.contains(t)),
        "unexpected messages before the error\n{}",
        context()
    );
    let err = PgError::parse(&last.1);
    assert!(
        err.is_fatal(),
        "severity is not FATAL: {err:?}\n{}",
        context()
    );
    assert!(
        codes.contains(&err.code.as_str()),
        "SQLSTATE {} is not one of {codes:?}\n{}",
        err.code,
        context()
    );
    assert!(
        end.closed(),
        "the gateway did not close the connection within {ANSWER_WAIT:?}\n{}",
        context()
    );
}

/// The client was refused cleanly, for inputs where the gateway may reset the connection (it
/// closes with our bytes unread, so its FATAL can be lost): the socket closed within the wait,
/// and whatever came before is FATAL ErrorResponses (nothing else: no authentication request).
fn assert_refused(end: &Ending, case: &str, gw: &Gateway) {
    let context = || {
        format!(
            "case: {case}\nreceived tags {:?}, then {:?}\nerrors: {:?}\n--- gateway log ---\n{}",
            end.tags(),
            end.stop,
            end.errors(),
            gw.log()
        )
    };
    assert!(
        end.closed(),
        "the gateway did not close the connection within {ANSWER_WAIT:?}\n{}",
        context()
    );
    assert!(
        end.messages.iter().all(|(t, _)| *t == b'E'),
        "the gateway answered something other than an error\n{}",
        context()
    );
    assert!(
        end.errors().iter().all(PgError::is_fatal),
        "non-FATAL error\n{}",
        context()
    );
}

/// Sends `bytes` on a fresh connection (optionally closing our write side) and collects the answer.
fn exchange(addr: SocketAddr, bytes: &[u8], then_shutdown: bool) -> Ending {
    let mut s = connect(addr);
    send(&mut s, bytes);
    if then_shutdown {
        let _ = s.shutdown(Shutdown::Write);
    }
    read_until_closed(&mut s, ANSWER_WAIT)
}

/// Connects as alice on appdb and reads the AuthenticationSASL request offering SCRAM-SHA-256.
fn begin_auth(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    send(&mut s, &alice_startup());
    let deadline = Instant::now() + ANSWER_WAIT;
    let (tag, body) = read_message(&mut s, deadline)
        .unwrap_or_else(|stop| panic!("no authentication request after StartupMessage: {stop:?}"));
    assert_eq!(
        tag,
        b'R',
        "expected AuthenticationSASL, got {:?}: {body:?}",
        char::from(tag)
    );
    assert_eq!(
        &body[..4],
        &10u32.to_be_bytes(),
        "expected AuthenticationSASL (10): {body:?}"
    );
    assert!(
        body.windows(14).any(|w| w == b"SCRAM-SHA-256\0"),
        "SCRAM-SHA-256 not offered: {body:?}"
    );
    s
}

/// Reads an Authentication message of `code` and returns its data.
fn expect_auth(s: &mut TcpStream, code: u32, what: &str) -> Vec<u8> {
    let (tag, body) = read_message(s, Instant::now() + ANSWER_WAIT)
        .unwrap_or_else(|stop| panic!("no {what}: {stop:?}"));
    if tag == b'E' {
        panic!(
            "ErrorResponse instead of {what}: {:?}",
            PgError::parse(&body)
        );
    }
    assert_eq!(tag, b'R', "expected {what}, got {:?}", char::from(tag));
    assert_eq!(
        &body[..4],
        &code.to_be_bytes(),
        "expected {what} ({code}): {body:?}"
    );
    body[4..].to_vec()
}

/// Begins SCRAM with `password` and returns the stream after AuthenticationSASLContinue, with the
/// client-final-message (carrying the proof) ready to send.
fn scram_until_final(
    addr: SocketAddr,
    password: &str,
) -> (TcpStream, scram::ScramClientAwaitingFinal, Vec<u8>) {
    let mut s = begin_auth(addr);
    let (client, first) = scram::client_first(password.as_bytes(), &random_hex(2));
    send(&mut s, &sasl_initial(scram::MECHANISM, Some(&first)));
    let server_first = expect_auth(&mut s, 11, "AuthenticationSASLContinue");
    let (awaiting, client_final) = client
        .handle_server_first(&server_first, scram::MAX_UPSTREAM_ITERATIONS)
        .unwrap_or_else(|e| panic!("server-first-message refused by the SCRAM client: {e}"));
    (s, awaiting, client_final)
}

/// A fully authenticated session (SCRAM with the token) that has seen ReadyForQuery.
fn authenticate(addr: SocketAddr, token: &str) -> TcpStream {
    let (mut s, awaiting, client_final) = scram_until_final(addr, token);
    send(&mut s, &frame(b'p', &client_final));
    let server_final = expect_auth(&mut s, 12, "AuthenticationSASLFinal");
    awaiting
        .handle_server_final(&server_final)
        .unwrap_or_else(|e| panic!("the gateway's SCRAM server signature is wrong: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (tag, body) = read_message(&mut s, deadline)
            .unwrap_or_else(|stop| panic!("session not ready after authentication: {stop:?}"));
        match tag {
            b'Z' => return s,
            b'E' => panic!("error after authentication: {:?}", PgError::parse(&body)),
            _ => {}
        }
    }
}

fn table_count(pg: &PgCluster, like: &str) -> String {
    pg.query_scalar(&format!(
        "select count(*) from pg_class where relname like '{like}'"
    ))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Cases 1 and 7 and the memory bound: malformed startup packets, plaintext after SSLRequest,
/// then a flood of 200 garbage connections.
#[test]
fn malformed_startup_packets_are_refused_and_memory_stays_bounded() {
    let mut fx = Fixture::start(Limits::default());
    let addr = fx.addr();

    // Declared length 0x7fffffff: refused from the length alone, nothing buffered.
    let mut huge = 0x7fff_ffffu32.to_be_bytes().to_vec();
    huge.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    let end = exchange(addr, &huge, false);
    assert_fatal_then_closed(&end, &[], &["08P01"], "startup length 0x7fffffff", &fx.gw);

    // Declared length 3 (smaller than the length field itself).
    let mut tiny = 3u32.to_be_bytes().to_vec();
    tiny.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    let end = exchange(addr, &tiny, false);
    assert_fatal_then_closed(&end, &[], &["08P01"], "startup length 3", &fx.gw);

    // Negative length.
    let mut negative = (-8i32).to_be_bytes().to_vec();
    negative.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    let end = exchange(addr, &negative, false);
    assert_fatal_then_closed(&end, &[], &["08P01"], "startup length -8", &fx.gw);

    // Length 8 with request codes that mean nothing: 1234.5775 and protocol 2.0.
    for code in [(1234 << 16) | 5775, 2 << 16, 0] {
        let end = exchange(addr, &startup_packet(code, &[]), false);
        assert_fatal_then_closed(
            &end,
            &[],
            &["08P01", "0A000"],
            &format!("length 8, request code {code}"),
            &fx.gw,
        );
    }

    // A truncated StartupMessage, then the client closes its side: closed quietly.
    let startup = alice_startup();
    let end = exchange(addr, &startup[..startup.len() / 2], true);
    assert!(
        end.messages.is_empty() && end.closed(),
        "truncated startup then close: expected a quiet close, got tags {:?} then {:?}\n{}",
        end.tags(),
        end.stop,
        fx.gw.log()
    );

    // 10 KB+ of garbage: an HTTP request, random bytes, all-ones, all-zeros.
    let mut http = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: pg_hostile\r\n".to_vec();
    http.resize(12 * 1024, b'A');
    let garbage_inputs: Vec<(String, Vec<u8>)> = vec![
        ("HTTP request".into(), http),
        ("random seed 1".into(), garbage(1, 12 * 1024)),
        ("random seed 2".into(), garbage(2, 16 * 1024)),
        ("random seed 3".into(), garbage(3, 10 * 1024 + 1)),
        ("0xff bytes".into(), vec![0xff; 12 * 1024]),
        ("zero bytes".into(), vec![0; 12 * 1024]),
    ];
    for (name, bytes) in &garbage_inputs {
        let end = exchange(addr, bytes, false);
        assert_refused(&end, &format!("garbage: {name}"), &fx.gw);
    }
    fx.assert_serves("malformed startup packets");

    // Case 7: SSLRequest and a plaintext StartupMessage in the same write, on a TLS target. The
    // plaintext must never be read as if it had come over TLS: either the gateway refuses the
    // bytes (FATAL 08P01 in plaintext), or, had they arrived after its check, the TLS handshake
    // fails on them. Never a plaintext authentication request.
    for (name, injected) in [
        ("startup message", alice_startup()),
        ("query", query("create table pwned_tls()")),
    ] {
        let mut bytes = ssl_request();
        bytes.extend_from_slice(&injected);
        let mut s = connect(addr);
        send(&mut s, &bytes);
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut first = [0u8; 1];
        let case = format!("SSLRequest + plaintext {name} in one write");
        match read_full(&mut s, &mut first, deadline) {
            Ok(()) if first[0] == b'E' => {
                // Put the tag back in front of the rest of the frame.
                let mut rest = [0u8; 4];
                read_full(&mut s, &mut rest, deadline).unwrap_or_else(|stop| {
                    panic!(
                        "{case}: truncated ErrorResponse ({stop:?})\n{}",
                        fx.gw.log()
                    )
                });
                let len = u32::from_be_bytes(rest) as usize;
                assert!(
                    (4..=MAX_BACKEND_BODY).contains(&len),
                    "{case}: bad length {len}"
                );
                let mut body = vec![0u8; len - 4];
                read_full(&mut s, &mut body, deadline)
                    .unwrap_or_else(|stop| panic!("{case}: truncated ErrorResponse ({stop:?})"));
                let mut end = read_until_closed(&mut s, ANSWER_WAIT);
                end.messages.insert(0, (b'E', body));
                assert_fatal_then_closed(&end, &[], &["08P01"], &case, &fx.gw);
            }
            Ok(()) if first[0] == b'S' => {
                eprintln!("{case}: the gateway answered 'S' (the plaintext came after its check)");
                // The TLS handshake saw the plaintext: it may send a TLS alert, then closes.
                let mut rest = Vec::new();
                let mut chunk = [0u8; 4096];
                let stop = loop {
                    match read_full(&mut s, &mut chunk[..1], deadline) {
                        Ok(()) => rest.push(chunk[0]),
                        Err(stop) => break stop,
                    }
                };
                assert_ne!(
                    stop,
                    Stop::TimedOut,
                    "{case}: not closed after 'S'\n{}",
                    fx.gw.log()
                );
                assert!(
                    rest.first().is_none_or(|&b| b == 0x15),
                    "{case}: after 'S' the gateway sent {rest:?}, not a TLS alert\n{}",
                    fx.gw.log()
                );
            }
            Ok(()) => panic!(
                "{case}: gateway answered {:?} instead of refusing\n{}",
                char::from(first[0]),
                fx.gw.log()
            ),
            Err(stop) => panic!("{case}: no answer ({stop:?})\n{}", fx.gw.log()),
        }
    }
    assert_eq!(table_count(&fx.pg, "pwned%"), "0", "injected query ran");
    fx.assert_serves("plaintext after SSLRequest");

    // Memory: 200 garbage connections, 8 at a time, must not grow the gateway's RSS without bound.
    let before = fx.rss_kib();
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            thread::spawn(move || {
                let mut refused = 0;
                for i in 0..25u64 {
                    let bytes = match i % 3 {
                        0 => garbage(w * 1000 + i + 10, 16 * 1024),
                        1 => {
                            // A plausible header declaring a big packet, then filler.
                            let mut b = 20_000u32.to_be_bytes().to_vec();
                            b.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
                            b.resize(8 * 1024, b'x');
                            b
                        }
                        _ => vec![0xff; 4 * 1024],
                    };
                    let end = exchange(addr, &bytes, false);
                    if end.closed() && end.messages.iter().all(|(t, _)| *t == b'E') {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let refused: u32 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        refused,
        200,
        "some garbage connections were not refused cleanly\n{}",
        fx.gw.log()
    );
    let after = fx.rss_kib();
    eprintln!("gateway VmRSS: {before} KiB before, {after} KiB after 200 garbage connections");
    assert!(
        after < before + 64 * 1024,
        "gateway RSS grew from {before} KiB to {after} KiB over 200 garbage connections"
    );
    fx.assert_serves("200 garbage connections");
}

/// Cases 2, 3 and 4: protocol violations during authentication.
#[test]
fn violations_during_authentication_are_fatal_and_run_nothing() {
    let mut fx = Fixture::start(Limits::default());
    let addr = fx.addr();

    // 2. A second StartupMessage where the SASLInitialResponse belongs.
    let mut s = begin_auth(addr);
    send(&mut s, &alice_startup());
    let end = read_until_closed(&mut s, ANSWER_WAIT);
    assert_fatal_then_closed(
        &end,
        &[],
        &["08P01"],
        "second StartupMessage during auth",
        &fx.gw,
    );

    // 3a. StartupMessage and a Query in one write: the Query arrives instead of the SASL answer.
    let mut bytes = alice_startup();
    bytes.extend_from_slice(&query("create table pwned_a()"));
    let end = exchange(addr, &bytes, false);
    assert_fatal_then_closed(
        &end,
        b"R",
        &["08P01"],
        "Query pipelined after StartupMessage",
        &fx.gw,
    );

    // 3b. A Query after SASLInitialResponse, instead of the client-final-message.
    let mut s = begin_auth(addr);
    let (_client, first) = scram::client_first(fx.token.as_bytes(), &random_hex(2));
    send(&mut s, &sasl_initial(scram::MECHANISM, Some(&first)));
    let _server_first = expect_auth(&mut s, 11, "AuthenticationSASLContinue");
    send(&mut s, &query("create table pwned_b()"));
    let end = read_until_closed(&mut s, ANSWER_WAIT);
    assert_fatal_then_closed(
        &end,
        &[],
        &["08P01"],
        "Query instead of SASLResponse",
        &fx.gw,
    );

    // 3c. A Query as the very first bytes (read as a startup packet of length 0x51......).
    let end = exchange(addr, &query("create table pwned_c()"), false);
    assert_fatal_then_closed(&end, &[], &["08P01"], "Query before StartupMessage", &fx.gw);

    // 3d. The whole login pipelined with a wrong proof and a Query behind it.
    let (mut s, _awaiting, client_final) = scram_until_final(addr, "pct_not_the_token");
    let mut bytes = frame(b'p', &client_final);
    bytes.extend_from_slice(&query("create table pwned_d()"));
    send(&mut s, &bytes);
    let end = read_until_closed(&mut s, ANSWER_WAIT);
    assert_refused(&end, "wrong proof with a Query behind it", &fx.gw);

    // 4a. SASLInitialResponse naming a mechanism the gateway did not offer.
    for mechanism in ["PLAIN", "SCRAM-SHA-256-PLUS", ""] {
        let mut s = begin_auth(addr);
        send(&mut s, &sasl_initial(mechanism, Some(b"\0alice\0secret")));
        let end = read_until_closed(&mut s, ANSWER_WAIT);
        assert_fatal_then_closed(
            &end,
            &[],
            &["28000", "08P01"],
            &format!("SASL mechanism {mechanism:?}"),
            &fx.gw,
        );
    }

    // 4b. Garbage where the client-first-message belongs.
    let bad_first: [(&str, Option<Vec<u8>>); 6] = [
        ("random bytes", Some(garbage(7, 200))),
        ("no gs2 header", Some(b"n=,r=abc".to_vec())),
        (
            "channel binding requested",
            Some(b"p=tls-server-end-point,,n=,r=abc".to_vec()),
        ),
        (
            "authorization identity",
            Some(b"n,a=postgres,n=,r=abc".to_vec()),
        ),
        ("8 KiB of 'a'", Some(vec![b'a'; 8000])),
        ("no data (-1)", None),
    ];
    for (name, data) in &bad_first {
        let mut s = begin_auth(addr);
        send(&mut s, &sasl_initial(scram::MECHANISM, data.as_deref()));
        let end = read_until_closed(&mut s, ANSWER_WAIT);
        assert_fatal_then_closed(
            &end,
            &[],
            &["08P01", "28000"],
            &format!("client-first: {name}"),
            &fx.gw,
        );
    }
    // A data length larger than the frame.
    let mut s = begin_auth(addr);
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&1000i32.to_be_bytes());
    body.extend_from_slice(b"n,,n=,r=abc");
    send(&mut s, &frame(b'p', &body));
    let end = read_until_closed(&mut s, ANSWER_WAIT);
    assert_fatal_then_closed(
        &end,
        &[],
        &["08P01"],
        "SASL data length beyond the frame",
        &fx.gw,
    );

    // 4c. The right token, but the client-final-message carries a forged proof.
    let (mut s, _awaiting, client_final) = scram_until_final(addr, &fx.token);
    let text = String::from_utf8(client_final).unwrap();
    let (without_proof, _) = text.rsplit_once(",p=").unwrap();
    let forged = format!("{without_proof},p={}", scram::base64_encode(&[0u8; 32]));
    send(&mut s, &frame(b'p', forged.as_bytes()));
    let end = read_until_closed(&mut s, ANSWER_WAIT);
    assert_fatal_then_closed(
        &end,
        &[],
        &["28P01"],
        "client-final with a forged proof",
        &fx.gw,
    );
    let err = end.errors().pop().unwrap();
    assert_eq!(
        err.message,
        format!("password authentication failed for user \"{IDENTITY}\"")
    );

    // A garbage client-final-message.
    let (mut s, _awaiting, _client_final) = scram_until_final(addr, &fx.token);
    send(&mut s, &frame(b'p', &garbage(9, 300)));
    let end = read_until_closed(&mut s, ANSWER_WAIT);
    assert_fatal_then_closed(
        &end,
        &[],
        &["28P01", "08P01"],
        "garbage client-final",
        &fx.gw,
    );

    // Nothing ran, and that is not because the policy forbids it: alice may create tables.
    assert_eq!(
        table_count(&fx.pg, "pwned%"),
        "0",
        "a query sent before authentication ran"
    );
    let out = fx.psql("create table allowed_control()");
    assert!(
        out.status.success(),
        "control statement refused:\n{}",
        describe(&out)
    );
    assert_eq!(table_count(&fx.pg, "allowed_control"), "1");
    fx.assert_serves("violations during authentication");
}

/// Cases 5 and 8: a slow client and 50 half-open connections. A normal client works meanwhile;
/// all of them are disconnected after the handshake timeout (2 s; bounded wait of 15 s).
#[test]
fn slow_and_half_open_clients_are_dropped_after_the_handshake_timeout() {
    let mut fx = Fixture::start(Limits::default());
    let addr = fx.addr();
    let startup = alice_startup();

    // The slow client: half a StartupMessage, then nothing.
    let mut slow = connect(addr);
    send(&mut slow, &startup[..startup.len() / 2]);

    // 50 more that never finish: silent, half a startup, an SSLRequest left hanging (answered
    // 'S', no TLS handshake), or a whole startup with no answer to the SASL request.
    let mut half_open: Vec<(String, TcpStream)> = (0..50)
        .map(|i| {
            let mut s = connect(addr);
            let kind = match i % 4 {
                0 => "silent",
                1 => {
                    send(&mut s, &startup[..7]);
                    "7 bytes of startup"
                }
                2 => {
                    send(&mut s, &ssl_request());
                    "SSLRequest, no handshake"
                }
                _ => {
                    send(&mut s, &startup);
                    "startup, no SASL answer"
                }
            };
            (format!("half-open #{i} ({kind})"), s)
        })
        .collect();

    // Meanwhile a normal client gets through.
    let out = fx.psql("select 1");
    assert!(
        out.status.success() && stdout(&out) == "1\n",
        "psql failed while 51 handshakes were pending:\n{}\n{}",
        describe(&out),
        fx.gw.log()
    );

    // All are closed by the gateway within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(15);
    half_open.push(("slow client".into(), slow));
    for (name, s) in &mut half_open {
        let mut got = Vec::new();
        let stop = loop {
            let mut b = [0u8; 1];
            match read_full(s, &mut b, deadline) {
                Ok(()) => got.push(b[0]),
                Err(stop) => break stop,
            }
        };
        assert_ne!(
            stop,
            Stop::TimedOut,
            "{name}: still open 15 s after connecting (handshake_timeout is 2s)\n{}",
            fx.gw.log()
        );
        // What they may have seen: 'S' for the SSLRequest, AuthenticationSASL for the full startup.
        assert!(
            got.is_empty() || got == b"S" || got.first() == Some(&b'R'),
            "{name}: unexpected bytes before the close: {got:?}"
        );
    }
    drop(half_open);
    fx.assert_serves("51 handshake timeouts");
}

/// Hostile frames a client sends after a successful login: oversized declarations (the limit is
/// max_message_size = 1 MiB), unknown message types, length fields below 4.
fn post_auth_cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // Only the header and a little of the body are sent.
        (
            "Query declaring 2 MiB",
            raw_frame(b'Q', (2 << 20) + 4, b"create table pwned_big()"),
        ),
        (
            "Query declaring 0x7fffffff",
            raw_frame(b'Q', 0x7fff_ffff, b"create table pwned_huge()"),
        ),
        ("unknown message type 'z'", frame(b'z', b"hello\0")),
        ("unknown message type 0x00", frame(0, &[])),
        ("unknown message type 0xff", frame(0xff, b"x")),
        (
            "Query with length 3",
            raw_frame(b'Q', 3, b"create table pwned_short()\0"),
        ),
        ("Query with length 0", raw_frame(b'Q', 0, &[])),
        ("Query with length -1", raw_frame(b'Q', u32::MAX, &[])),
        ("Sync with length 2", raw_frame(b'S', 2, &[])),
    ]
}

/// Logs in with the raw client and checks that a query works (so the hostile cases below start
/// from a real session).
fn control_session(fx: &Fixture) {
    let mut s = authenticate(fx.addr(), &fx.token);
    send(&mut s, &query("select 1"));
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut tags = String::new();
    loop {
        let (tag, body) = read_message(&mut s, deadline)
            .unwrap_or_else(|stop| panic!("control query: {stop:?}\n{}", fx.gw.log()));
        tags.push(char::from(tag));
        if tag == b'E' {
            panic!("control query failed: {:?}", PgError::parse(&body));
        }
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags, "TDCZ", "control query answer");
    send(&mut s, &frame(b'X', &[]));
}

/// Case 6: hostile frames after a successful SCRAM login with the token end the session with
/// FATAL 08P01 (as PostgreSQL does), nothing of them is forwarded, and the gateway keeps serving.
#[test]
fn hostile_frames_after_authentication_get_fatal_08p01() {
    let mut fx = Fixture::start(Limits::default());
    control_session(&fx);
    for (name, bytes) in &post_auth_cases() {
        let mut s = authenticate(fx.addr(), &fx.token);
        send(&mut s, bytes);
        let end = read_until_closed(&mut s, ANSWER_WAIT);
        assert_fatal_then_closed(&end, &[], &["08P01"], name, &fx.gw);
    }
    assert_eq!(
        table_count(&fx.pg, "pwned%"),
        "0",
        "part of a bad frame ran"
    );
    fx.assert_serves("hostile frames after authentication");
}

/// Case 9: with max_connections = 3, a 4th connection is refused with 53300 while 3 handshakes
/// are pending; once they close, clients get in again.
#[test]
fn max_connections_refuses_the_extra_client_and_recovers() {
    let mut fx = Fixture::start(Limits {
        handshake_timeout: "30s",
        max_connections: 3,
        ..Limits::default()
    });
    let addr = fx.addr();

    // Three pending handshakes. A GSSENCRequest is answered 'N' by the connection's own task, so
    // once we have the 'N' the gateway has counted the connection.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut s = connect(addr);
            send(&mut s, &startup_packet(GSSENC_REQUEST_CODE, &[]));
            let mut answer = [0u8; 1];
            read_full(&mut s, &mut answer, Instant::now() + ANSWER_WAIT)
                .unwrap_or_else(|stop| panic!("held #{i}: no answer to GSSENCRequest: {stop:?}"));
            assert_eq!(answer, *b"N", "held #{i}: GSSENCRequest answer");
            s
        })
        .collect();

    // The 4th is refused at once, before it sends anything.
    let mut fourth = connect(addr);
    let end = read_until_closed(&mut fourth, ANSWER_WAIT);
    assert_fatal_then_closed(
        &end,
        &[],
        &["53300"],
        "4th connection over max_connections = 3",
        &fx.gw,
    );
    let err = end.errors().pop().unwrap();
    assert!(err.message.contains("too many connections"), "{err:?}");

    // psql is refused the same way (without TLS: libpq reports an error answer to its
    // SSLRequest only as "server sent an error response during SSL exchange").
    let out = fx.gw.psql_via_args(
        fx.port,
        IDENTITY,
        TARGET,
        &fx.token,
        "disable",
        &["-At", "-c", "select 1"],
        None,
    );
    assert!(
        !out.status.success(),
        "psql got in over max_connections:\n{}",
        describe(&out)
    );
    assert!(
        describe(&out).contains("too many connections"),
        "psql refused for another reason:\n{}",
        describe(&out)
    );

    // A client that sends its StartupMessage before reading anything, as libpq does, still reads
    // the refusal: the gateway drains what it sent instead of closing on unread bytes (Linux
    // would answer that close with a reset, and the client would lose the message). Several
    // times, since the old close lost the race only sometimes.
    for i in 0..10 {
        let mut eager = connect(addr);
        send(&mut eager, &alice_startup());
        let end = read_until_closed(&mut eager, ANSWER_WAIT);
        assert_fatal_then_closed(
            &end,
            &[],
            &["53300"],
            &format!("eager client #{i} over max_connections = 3"),
            &fx.gw,
        );
    }

    // One of the held connections still works: finish its handshake and log in.
    let mut s = held.pop().unwrap();
    send(&mut s, &alice_startup());
    let (tag, _) = read_message(&mut s, Instant::now() + ANSWER_WAIT).unwrap();
    assert_eq!(tag, b'R', "held connection no longer served");

    // Close them all; the slots come back (bounded wait for the gateway to notice).
    drop(s);
    for s in held.drain(..) {
        let _ = s.shutdown(Shutdown::Both);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = fx.psql("select 1");
        if out.status.success() && stdout(&out) == "1\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "psql still refused 15 s after the held connections closed:\n{}\n{}",
            describe(&out),
            fx.gw.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    fx.assert_serves("max_connections");
}
