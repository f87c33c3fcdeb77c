//! Hostile clients against the gateway's SSH listener, over raw TCP (and, for the cases after
//! key exchange, the crate's own transport as the client): garbage instead of a banner, an
//! oversized banner, a flood of lines before it, a client that stalls in the handshake, an
//! oversized packet length, random bytes after the banner, a corrupted packet after key
//! exchange, a password flood on one connection, the connection cap (and the reason an `ssh`
//! over it prints), and a flood of 200 hostile
//! connections with a bound on the gateway's memory.
//!
//! Every case checks two things, like `pg_hostile.rs` does for PostgreSQL: the hostile client
//! is cut off within a bounded wait, and the gateway keeps serving (it runs, and a normal `ssh`
//! exec through it works, during the attack where the attack leaves room for it).
//!
//! Requirements: those of `ssh_gateway.rs` (root, sshd).
#![allow(clippy::unwrap_used)]

mod common;
mod ssh_rig;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{describe, stdout};
use portcullis::proto::ssh::keyfile;
use portcullis::proto::ssh::keys::PublicKey;
use portcullis::proto::ssh::transport::{Event, Role, Transport, TransportConfig};
use portcullis::proto::ssh::wire::Writer;
use ring::rand::SystemRandom;
use ssh_rig::{require_sshd, Rig};

/// Longest wait for the gateway to cut off a client it can judge at once (a bound, not a
/// timing assertion).
const CUT_WAIT: Duration = Duration::from_secs(10);
/// The handshake timeout these tests configure.
const HANDSHAKE: &str = "2s";

fn rig(max_connections: usize) -> Rig {
    Rig::start_with(
        // A long upstream_timeout: the client's handshake time must not include it.
        &format!(
            "handshake_timeout = \"{HANDSHAKE}\"\nupstream_timeout = \"30s\"\nmax_connections = {max_connections}"
        ),
        "",
        None,
    )
}

fn connect(rig: &Rig) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", rig.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// Reads until the gateway closes the connection (EOF or reset) or `limit` passes. Returns what
/// was read and whether it was closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                assert!(got.len() < 1 << 20, "the gateway keeps talking");
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Sends `bytes` (a write error means the gateway already closed: fine) and expects the
/// connection to be closed within [`CUT_WAIT`].
fn assert_cut(rig: &Rig, bytes: &[u8], what: &str) {
    let mut s = connect(rig);
    let _ = s.write_all(bytes);
    let (got, closed) = read_until_closed(&mut s, CUT_WAIT);
    assert!(
        closed,
        "{what}: still open after {CUT_WAIT:?}; got {:?}\n{}",
        String::from_utf8_lossy(&got),
        rig.gw.log()
    );
}

/// The gateway runs and a normal ssh exec through it works.
fn assert_serves(rig: &mut Rig, after: &str) {
    assert!(
        rig.gw.is_running(),
        "gateway died after {after}; log:\n{}",
        rig.gw.log()
    );
    let out = rig.ssh("echo still-serving");
    assert!(
        out.status.success() && stdout(&out) == "still-serving\n",
        "ssh through the gateway failed after {after}: {}\n{}",
        describe(&out),
        rig.gw.log()
    );
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

const BANNER: &[u8] = b"SSH-2.0-hostile_0.1\r\n";

/// An unencrypted packet (before key exchange) declaring `length`, then a little filler.
fn oversized_packet() -> Vec<u8> {
    let mut b = BANNER.to_vec();
    b.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
    b.extend_from_slice(&[4, 20]);
    b.extend_from_slice(&[0u8; 2048]);
    b
}

/// The hostile inputs a client can send without a key exchange, by name.
fn plain_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut pre_banner_flood = Vec::new();
    for i in 0..5000 {
        pre_banner_flood.extend_from_slice(format!("line {i} before the banner\r\n").as_bytes());
    }
    let mut long_banner = b"SSH-2.0-".to_vec();
    long_banner.extend(std::iter::repeat_n(b'a', 100 * 1024));
    let mut random_after_banner = BANNER.to_vec();
    random_after_banner.extend(random_bytes(7, 64 * 1024));
    vec![
        ("garbage instead of a banner", random_bytes(1, 16 * 1024)),
        (
            "an HTTP request instead of a banner",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("a 100 KiB banner line", long_banner),
        ("5000 lines before the banner", pre_banner_flood),
        ("a wrong protocol version", b"SSH-1.5-old\r\n".to_vec()),
        ("an oversized packet length", oversized_packet()),
        ("random bytes after the banner", random_after_banner),
    ]
}

#[test]
fn malformed_banners_and_packets_are_cut_off() {
    require_sshd();
    let mut rig = rig(1024);
    for (what, bytes) in plain_cases() {
        assert_cut(&rig, &bytes, what);
        assert_serves(&mut rig, what);
    }
}

#[test]
fn stalled_handshakes_are_dropped_after_handshake_timeout() {
    require_sshd();
    let mut rig = rig(1024);
    // Twenty clients that stall: silent, banner only, banner and half a packet.
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = connect(&rig);
            match i % 3 {
                0 => {}
                1 => s.write_all(BANNER).unwrap(),
                _ => {
                    s.write_all(BANNER).unwrap();
                    s.write_all(&[0, 0, 1, 0, 10]).unwrap();
                }
            }
            s
        })
        .collect();
    // While they hang on, a normal client is served.
    assert_serves(&mut rig, "20 stalled handshakes (during)");
    for (i, s) in stalled.iter_mut().enumerate() {
        let (_, closed) = read_until_closed(s, Duration::from_secs(20));
        assert!(
            closed,
            "stalled client {i} still connected; log:\n{}",
            rig.gw.log()
        );
    }
    let log = rig.gw.log();
    assert!(
        log.contains("handshake not finished within handshake_timeout"),
        "{log}"
    );
    assert_serves(&mut rig, "20 stalled handshakes (after)");
}

/// The crate's own client transport, connected to the gateway and past key exchange with
/// `ssh-userauth` accepted.
struct RawClient {
    stream: TcpStream,
    transport: Transport,
}

impl RawClient {
    fn connect(rig: &Rig) -> RawClient {
        let key_path = rig.gw.dir.join("data").join("ssh_host_ed25519_key");
        let key = keyfile::load_private_key_file(&key_path, &SystemRandom::new()).unwrap();
        let PublicKey::Ed25519(pinned_host_key) = key.public_key().clone() else {
            panic!("the gateway's host key is not ed25519");
        };
        let transport = Transport::new(
            Role::Client { pinned_host_key },
            TransportConfig::default(),
            Box::new(SystemRandom::new()),
            Instant::now(),
        )
        .unwrap();
        let mut c = RawClient {
            stream: connect(rig),
            transport,
        };
        loop {
            match c.next_event().expect("closed during key exchange") {
                Event::Ready { .. } => c.transport.request_service("ssh-userauth").unwrap(),
                Event::ServiceAccepted(_) => return c,
                _ => {}
            }
        }
    }

    fn flush(&mut self) {
        let n = self.transport.pending_output().len();
        if n > 0 {
            let _ = self.stream.write_all(self.transport.pending_output());
            self.transport.consume_output(n);
        }
    }

    /// The next event, or None once the gateway closed the connection (or sent DISCONNECT).
    fn next_event(&mut self) -> Option<Event> {
        let deadline = Instant::now() + CUT_WAIT;
        let mut buf = [0u8; 16 * 1024];
        loop {
            self.flush();
            assert!(Instant::now() < deadline, "no event within {CUT_WAIT:?}");
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(_) => return None,
            };
            self.transport.feed(&buf[..n]);
            let events = self.transport.process(Instant::now()).ok()?;
            if let Some(e) = events.into_iter().next() {
                if matches!(e, Event::Disconnected { .. }) {
                    return None;
                }
                return Some(e);
            }
        }
    }
}

/// USERAUTH_REQUEST (50) for `password` (RFC 4252 §8).
fn password_request(user: &str, password: &str) -> Vec<u8> {
    let mut w = Writer::message(50);
    w.string(user.as_bytes())
        .string(b"ssh-connection")
        .string(b"password")
        .bool(false)
        .string(password.as_bytes());
    w.into_bytes()
}

#[test]
fn corrupted_packet_after_key_exchange_is_cut_off() {
    require_sshd();
    let mut rig = rig(1024);
    let mut c = RawClient::connect(&rig);
    c.transport
        .send_payload(password_request("web", "pct_x"), Instant::now())
        .unwrap();
    // Flip one bit in the middle of the sealed packet: its tag no longer verifies.
    let mut sealed = c.transport.pending_output().to_vec();
    let n = sealed.len();
    c.transport.consume_output(n);
    sealed[n / 2] ^= 0x01;
    c.stream.write_all(&sealed).unwrap();
    let (_, closed) = read_until_closed(&mut c.stream, CUT_WAIT);
    assert!(
        closed,
        "a packet with a bad tag was not fatal\n{}",
        rig.gw.log()
    );
    let log = rig.gw.log();
    assert!(log.contains("authentication tag does not verify"), "{log}");
    assert_serves(&mut rig, "a corrupted packet after key exchange");
}

#[test]
fn password_flood_on_one_connection_stops_at_the_attempt_limit() {
    require_sshd();
    let mut rig = rig(1024);
    let mut c = RawClient::connect(&rig);
    let mut failures = 0;
    let mut cut = false;
    for i in 0..30 {
        let wrong = format!("pct_{}", "A".repeat(40 + i));
        c.transport
            .send_payload(password_request("web", &wrong), Instant::now())
            .unwrap();
        match c.next_event() {
            None => {
                cut = true;
                break;
            }
            Some(Event::Payload(p)) if p.first() == Some(&51) => failures += 1,
            Some(other) => panic!("unexpected answer to a wrong password: {other:?}"),
        }
    }
    assert!(
        cut,
        "30 wrong passwords on one connection and still connected"
    );
    // Six failed attempts at most, like OpenSSH's MaxAuthTries: five USERAUTH_FAILURE, and
    // the sixth is answered with DISCONNECT (too many authentication failures).
    assert_eq!(failures, 5, "failures answered before the cut");
    assert_serves(&mut rig, "a password flood");
}

#[test]
fn max_connections_caps_ssh_connections() {
    require_sshd();
    let mut rig = Rig::start_with("handshake_timeout = \"60s\"\nmax_connections = 4", "", None);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&rig);
            let mut banner = [0u8; 8];
            s.set_read_timeout(Some(CUT_WAIT)).unwrap();
            s.read_exact(&mut banner).unwrap();
            assert_eq!(&banner, b"SSH-2.0-", "a connection under the cap is served");
            s
        })
        .collect();
    // The fifth gets our identification string and a DISCONNECT saying why, then is closed.
    let refusal = "portcullis: too many connections (max_connections = 4)";
    // Like ssh, it sends its identification string without waiting for ours.
    let mut fifth = connect(&rig);
    fifth.write_all(b"SSH-2.0-hostile\r\n").unwrap();
    let (got, closed) = read_until_closed(&mut fifth, CUT_WAIT);
    assert!(closed, "over the cap: not closed, got {got:?}");
    assert!(
        got.starts_with(b"SSH-2.0-portcullis_"),
        "over the cap: no identification string first: {got:?}"
    );
    assert!(
        got.windows(refusal.len()).any(|w| w == refusal.as_bytes()),
        "over the cap: no reason in {got:?}"
    );
    // A real ssh client prints the reason on its stderr. It sends KEXINIT after reading our
    // identification string: if the gateway closed the socket with that unread, the kernel would
    // reset the connection and ssh would end with `Broken pipe` or `Connection reset` instead.
    let out = rig.ssh("echo over-the-cap");
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "Received disconnect from 127.0.0.1 port {}:12: {refusal}",
            rig.port
        )),
        "ssh over the cap did not print the reason\n{}",
        describe(&out)
    );
    assert!(
        rig.gw
            .log()
            .contains("refused: too many connections (max_connections = 4)"),
        "the refusal is not logged\n{}",
        rig.gw.log()
    );
    held.clear();
    thread::sleep(Duration::from_millis(300));
    assert_serves(&mut rig, "the connection cap was reached");
}

fn rss_kib(rig: &Rig) -> u64 {
    let path = format!("/proc/{}/status", rig.gw.pid());
    let status = std::fs::read_to_string(&path).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {path}"))
}

#[test]
fn two_hundred_hostile_connections_leave_memory_bounded() {
    require_sshd();
    let mut rig = rig(1024);
    // Warm up: one real session, so lazily allocated state is counted in `before`.
    assert_serves(&mut rig, "warm-up");
    let before = rss_kib(&rig);
    let cases = plain_cases();
    let port = rig.port;
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let cases = cases.clone();
            thread::spawn(move || {
                let mut cut = 0;
                for i in 0..25u64 {
                    let (_, bytes) = &cases[usize::try_from((w * 25 + i) % 7).unwrap()];
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let _ = s.write_all(bytes);
                    if read_until_closed(&mut s, CUT_WAIT).1 {
                        cut += 1;
                    }
                }
                cut
            })
        })
        .collect();
    // Meanwhile, a normal client is served.
    assert_serves(&mut rig, "hostile connections (during)");
    let cut: u32 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        cut,
        200,
        "some hostile connections were not cut off\n{}",
        rig.gw.log()
    );
    let after = rss_kib(&rig);
    eprintln!("gateway VmRSS: {before} KiB before, {after} KiB after 200 hostile SSH connections");
    assert!(
        after < before + 64 * 1024,
        "gateway RSS grew from {before} KiB to {after} KiB over 200 hostile connections"
    );
    assert_serves(&mut rig, "200 hostile connections (after)");
}
