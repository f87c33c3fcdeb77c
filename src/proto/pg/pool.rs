//! Upstream connections kept for the next session (`upstream_pool` on a target).
//!
//! Every session used to open its own upstream connection, so PostgreSQL started a new backend
//! for each one: a fork, authentication, empty catalog caches, and a page fault for every shared
//! buffer the new process maps. CI jobs and agents connect in loops; pgbouncer's session mode
//! keeps its server connections for exactly this reason.
//!
//! A connection is only kept when its session ended cleanly: the client sent Terminate while
//! nothing was in flight and the server was idle outside a transaction, no cancel was forwarded
//! during the session, and `DISCARD ALL` then succeeded without the server reporting a changed
//! parameter (see [`reset`]; a session that changed a reported parameter, such as
//! `application_name`, `TimeZone` or its role, is not kept). `DISCARD ALL` drops what a session
//! can leave behind: settings (custom ones too), prepared statements, cursors, temporary tables,
//! `LISTEN`s, advisory locks, sequence state and cached plans. It does not unload a
//! library a session `LOAD`ed, which is why pooling is off unless a target asks for it.
//!
//! A kept connection serves only a session with the same key: the target, whether the session is
//! read-only, and the startup parameters passed upstream (so the parameters the client is shown
//! are the ones the server has). Kept connections are closed after the target's
//! `upstream_pool_idle` (60 s unless set) unused, once they are `upstream_pool_lifetime` (1 h
//! unless set) old, when a reload changes the policy, and when the server has closed them
//! (checked when one is taken).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::codec;
use crate::net::sync_conn::SyncConn;
use crate::server::lock;

/// Which sessions a kept connection may serve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub target: String,
    pub read_only: bool,
    /// The startup parameters passed upstream, in the order they were sent.
    pub startup: Vec<(String, String)>,
}

/// An upstream connection, reset and waiting for a session.
pub(crate) struct Idle {
    pub conn: SyncConn,
    /// ParameterStatus values the server reported when the connection was opened.
    pub params: Vec<(String, String)>,
    pub pid: i32,
    pub secret: Vec<u8>,
    pub tls: bool,
    /// When the connection was opened (it keeps this through every reuse).
    pub opened: Instant,
    /// When it is closed if no session has taken it (set by [`UpstreamPool::put`]).
    until: Instant,
}

impl Idle {
    pub fn new(
        conn: SyncConn,
        params: Vec<(String, String)>,
        pid: i32,
        secret: Vec<u8>,
        opened: Instant,
    ) -> Idle {
        let tls = matches!(conn, SyncConn::Tls { .. });
        Idle {
            conn,
            params,
            pid,
            secret,
            tls,
            opened,
            until: opened,
        }
    }
}

/// A target's `upstream_pool_idle` and `upstream_pool_lifetime`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolLimits {
    pub idle: Duration,
    pub lifetime: Duration,
}

/// The kept connections of every target.
#[derive(Default)]
pub(crate) struct UpstreamPool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

impl UpstreamPool {
    /// The most recently kept live connection for `key`, if any. Connections past their
    /// deadline (idle limit or lifetime) and connections the server has closed (or written to)
    /// are dropped on the way.
    pub fn take(&self, key: &PoolKey, now: Instant) -> Option<Idle> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some(conn) = list.pop() {
            if now < conn.until && waiting_quietly(&conn.conn) {
                found = Some(conn);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keeps `conn` for `key`, for `limits.idle` at most and until it is `limits.lifetime` old,
    /// if fewer than `cap` are kept for its target, whatever their keys (otherwise it is closed).
    pub fn put(&self, key: PoolKey, mut conn: Idle, cap: usize, limits: PoolLimits) {
        let now = Instant::now();
        conn.until = (now + limits.idle).min(conn.opened + limits.lifetime);
        if conn.until <= now {
            return;
        }
        let mut idle = lock(&self.idle);
        drop_expired(&mut idle, now);
        let kept: usize = idle
            .iter()
            .filter(|(k, _)| k.target == key.target)
            .map(|(_, list)| list.len())
            .sum();
        if kept < cap {
            idle.entry(key).or_default().push(conn);
        }
    }

    /// Closes the connections past their deadline (idle limit or lifetime).
    pub fn prune(&self, now: Instant) {
        drop_expired(&mut lock(&self.idle), now);
    }

    /// Closes every kept connection (the policy changed).
    pub fn clear(&self) {
        lock(&self.idle).clear();
    }

    /// Live kept connections per target at `now`, for `/metrics`: those past their deadline are
    /// not counted, pruned yet or not. Targets with none are left out.
    pub fn kept_per_target(&self, now: Instant) -> HashMap<String, usize> {
        let idle = lock(&self.idle);
        let mut kept: HashMap<String, usize> = HashMap::new();
        for (key, list) in idle.iter() {
            let live = list.iter().filter(|c| now < c.until).count();
            if live > 0 {
                *kept.entry(key.target.clone()).or_default() += live;
            }
        }
        kept
    }

    /// Kept connections, all targets.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.idle).values().map(Vec::len).sum()
    }
}

/// Closes the connections past their deadline at `now`, and forgets empty keys.
fn drop_expired(idle: &mut HashMap<PoolKey, Vec<Idle>>, now: Instant) {
    idle.retain(|_, list| {
        list.retain(|c| now < c.until);
        !list.is_empty()
    });
}

/// A kept connection is usable while the server has sent nothing on it: a server that closed it
/// (idle timeout, restart, `pg_terminate_backend`) has sent an error or end of file.
fn waiting_quietly(conn: &SyncConn) -> bool {
    let mut byte = [0u8; 1];
    matches!(conn.socket().peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Runs `DISCARD ALL` on a connection whose session ended cleanly, with blocking I/O bounded by
/// `timeout` (call it off the async threads). Gives the connection back, non-blocking again, only
/// if the server answered exactly `CommandComplete "DISCARD ALL"` then `ReadyForQuery` idle, with
/// nothing else but notices and nothing after; anything else (an error, a changed parameter,
/// a timeout) closes it.
pub(crate) fn reset(conn: SyncConn, timeout: Duration, max_body: usize) -> Option<SyncConn> {
    // The socket timeouts bound each read; this bounds the whole answer (a server sending
    // notices without end).
    let deadline = Instant::now() + timeout;
    let mut conn = conn;
    let ok = match &mut conn {
        SyncConn::Plain(sock) => {
            blocking(sock, Some(timeout)).is_ok() && discard_all(sock, max_body, deadline)
        }
        SyncConn::Tls { sock, tls } => match tls.as_mut() {
            rustls::Connection::Client(client) => {
                blocking(sock, Some(timeout)).is_ok()
                    && discard_all(&mut rustls::Stream::new(client, sock), max_body, deadline)
            }
            // Upstream connections are always the client side.
            rustls::Connection::Server(_) => false,
        },
    };
    (ok && blocking(conn.socket(), None).is_ok()).then_some(conn)
}

/// Blocking with read and write timeouts (`Some`), or non-blocking without them (`None`).
fn blocking(sock: &TcpStream, timeout: Option<Duration>) -> io::Result<()> {
    sock.set_read_timeout(timeout)?;
    sock.set_write_timeout(timeout)?;
    sock.set_nonblocking(timeout.is_none())
}

fn discard_all<S: Read + Write>(stream: &mut S, max_body: usize, deadline: Instant) -> bool {
    let mut query = Vec::with_capacity(32);
    codec::encode_query(&mut query, "DISCARD ALL");
    if stream
        .write_all(&query)
        .and_then(|()| stream.flush())
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let mut discarded = false;
    loop {
        while let Ok(Some(frame)) = codec::split_frame(&buf, max_body) {
            match (frame.tag, frame.body) {
                (b'C', b"DISCARD ALL\0") if !discarded => discarded = true,
                (b'N', _) => {}
                (b'Z', b"I") => return discarded && frame.len == buf.len(),
                _ => return false,
            }
            buf.drain(..frame.len);
        }
        if codec::split_frame(&buf, max_body).is_err() || Instant::now() > deadline {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn key(target: &str) -> PoolKey {
        PoolKey {
            target: target.into(),
            read_only: false,
            startup: vec![("application_name".into(), "t".into())],
        }
    }

    /// A connected socket pair: (the side a pool keeps, the "server" side).
    fn pair() -> (SyncConn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        client.set_nonblocking(true).expect("nonblocking");
        (SyncConn::Plain(client), server)
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn idle(conn: SyncConn, pid: i32) -> Idle {
        Idle::new(
            conn,
            vec![("server_version".into(), "15".into())],
            pid,
            vec![1, 2, 3, 4],
            Instant::now(),
        )
    }

    /// Kept `idle` unused at most, an hour old at most.
    fn limits(idle: Duration) -> PoolLimits {
        PoolLimits {
            idle,
            lifetime: 60 * MINUTE,
        }
    }

    #[test]
    fn a_kept_connection_serves_only_its_own_key() {
        let pool = UpstreamPool::default();
        let (conn, _server) = pair();
        pool.put(key("a"), idle(conn, 7), 4, limits(MINUTE));
        assert!(pool.take(&key("b"), Instant::now()).is_none());
        let mut read_only = key("a");
        read_only.read_only = true;
        assert!(pool.take(&read_only, Instant::now()).is_none());
        let got = pool.take(&key("a"), Instant::now()).expect("kept");
        assert_eq!(got.pid, 7);
        assert!(pool.take(&key("a"), Instant::now()).is_none(), "taken once");
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn no_more_than_the_cap_is_kept() {
        let pool = UpstreamPool::default();
        let mut servers = Vec::new();
        for pid in 0..5 {
            let (conn, server) = pair();
            servers.push(server);
            pool.put(key("a"), idle(conn, pid), 3, limits(MINUTE));
        }
        assert_eq!(pool.len(), 3);
        let mut other_params = key("a");
        other_params.startup.push(("TimeZone".into(), "UTC".into()));
        pool.put(other_params, idle(pair().0, 8), 3, limits(MINUTE));
        assert_eq!(pool.len(), 3, "the cap is per target, whatever the key");
        pool.put(key("b"), idle(pair().0, 9), 3, limits(MINUTE));
        assert_eq!(pool.len(), 4, "another target has a cap of its own");
    }

    #[test]
    fn a_connection_the_server_closed_or_wrote_to_is_not_handed_out() {
        let pool = UpstreamPool::default();
        let (closed, server) = pair();
        drop(server);
        let (talked, mut server2) = pair();
        server2.write_all(b"E").expect("write");
        let (live, _server3) = pair();
        pool.put(key("a"), idle(live, 1), 8, limits(MINUTE));
        pool.put(key("a"), idle(talked, 2), 8, limits(MINUTE));
        pool.put(key("a"), idle(closed, 3), 8, limits(MINUTE));
        // Give the kernel a moment to deliver the FIN and the byte.
        std::thread::sleep(Duration::from_millis(50));
        let got = pool.take(&key("a"), Instant::now()).expect("the live one");
        assert_eq!(got.pid, 1);
        assert_eq!(pool.len(), 0, "the dead ones were dropped");
    }

    #[test]
    fn connections_past_the_idle_limit_are_closed() {
        let pool = UpstreamPool::default();
        let (conn, _server) = pair();
        pool.put(key("a"), idle(conn, 1), 8, limits(MINUTE));
        let later = Instant::now() + MINUTE + Duration::from_secs(1);
        assert!(pool.take(&key("a"), later).is_none());
        let (conn, _server) = pair();
        pool.put(key("a"), idle(conn, 2), 8, limits(MINUTE));
        pool.prune(later);
        assert_eq!(pool.len(), 0);
        // Each connection keeps the limit it was put with (a target's `upstream_pool_idle`).
        let (short, _s1) = pair();
        let (long, _s2) = pair();
        pool.put(key("a"), idle(short, 4), 8, limits(Duration::from_secs(5)));
        pool.put(key("a"), idle(long, 5), 8, limits(10 * MINUTE));
        pool.prune(Instant::now() + MINUTE);
        assert_eq!(pool.len(), 1, "the 5 s one is closed, the 10 min one kept");
        let got = pool
            .take(&key("a"), Instant::now() + 9 * MINUTE)
            .expect("still kept");
        assert_eq!(got.pid, 5);
        let (conn, _server) = pair();
        pool.put(key("b"), idle(conn, 3), 8, limits(MINUTE));
        pool.clear();
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn kept_per_target_counts_only_live_connections() {
        let pool = UpstreamPool::default();
        let mut read_only = key("a");
        read_only.read_only = true;
        let (c1, _s1) = pair();
        let (c2, _s2) = pair();
        let (c3, _s3) = pair();
        pool.put(key("a"), idle(c1, 1), 8, limits(MINUTE));
        // Another key of the same target counts for the target.
        pool.put(read_only, idle(c2, 2), 8, limits(10 * MINUTE));
        pool.put(key("b"), idle(c3, 3), 8, limits(MINUTE));
        let now = pool.kept_per_target(Instant::now());
        assert_eq!(now.get("a"), Some(&2));
        assert_eq!(now.get("b"), Some(&1));
        // Past the idle limit of two of them, before any prune: only the live one is counted,
        // and a target with none is left out.
        let later = pool.kept_per_target(Instant::now() + 2 * MINUTE);
        assert_eq!(later.get("a"), Some(&1));
        assert_eq!(later.get("b"), None);
    }

    #[test]
    fn connections_past_their_lifetime_are_not_kept() {
        let pool = UpstreamPool::default();
        let lifetime = PoolLimits {
            idle: 10 * MINUTE,
            lifetime: MINUTE,
        };
        // Past its lifetime when its session ends: closed instead of kept.
        let (conn, _s1) = pair();
        let old = idle(conn, 1);
        std::thread::sleep(Duration::from_millis(10));
        let short_lived = PoolLimits {
            idle: 10 * MINUTE,
            lifetime: Duration::from_millis(5),
        };
        pool.put(key("a"), old, 8, short_lived);
        assert_eq!(pool.len(), 0);
        // Opened now: kept, but only until it is a minute old, whatever the idle limit.
        let (conn, _s2) = pair();
        pool.put(key("a"), idle(conn, 2), 8, lifetime);
        assert_eq!(pool.len(), 1);
        assert!(pool.take(&key("a"), Instant::now() + 2 * MINUTE).is_none());
        assert_eq!(pool.len(), 0);
    }

    /// A fake server answering one Query with `answer`, then closing unless `stay` (the reset
    /// must not wait for more than the answer).
    fn reset_against(answer: &'static [u8], stay: bool) -> (Option<SyncConn>, Option<TcpStream>) {
        let (conn, mut server) = pair();
        let replier = std::thread::spawn(move || {
            let mut got = [0u8; 17];
            server.read_exact(&mut got).expect("query");
            assert_eq!(&got, b"Q\0\0\0\x10DISCARD ALL\0");
            server.write_all(answer).expect("answer");
            stay.then_some(server)
        });
        let out = reset(conn, Duration::from_secs(5), 1 << 20);
        (out, replier.join().expect("replier"))
    }

    #[test]
    fn reset_keeps_the_connection_only_on_exactly_the_expected_answer() {
        let ok: &[u8] = b"C\0\0\0\x10DISCARD ALL\0Z\0\0\0\x05I";
        let (kept, _server) = reset_against(ok, true);
        let kept = kept.expect("kept");
        // A peek that would block: the socket is non-blocking again and nothing is left unread.
        assert!(waiting_quietly(&kept), "non-blocking again");
        let with_notice: &[u8] = b"N\0\0\0\x05\0C\0\0\0\x10DISCARD ALL\0Z\0\0\0\x05I";
        assert!(reset_against(with_notice, false).0.is_some());
        for bad in [
            &b"E\0\0\0\x05\0Z\0\0\0\x05I"[..],
            b"S\0\0\0\x08a\0b\0C\0\0\0\x10DISCARD ALL\0Z\0\0\0\x05I",
            b"C\0\0\0\x10DISCARD ALL\0Z\0\0\0\x05T",
            b"C\0\0\0\x10DISCARD ALL\0Z\0\0\0\x05IZ\0\0\0\x05I",
            b"Z\0\0\0\x05I",
            b"C\0\0\0\x10DISCARD ALL\0",
        ] {
            assert!(reset_against(bad, false).0.is_none(), "{bad:?}");
        }
    }

    #[test]
    fn reset_gives_up_on_a_server_that_sends_notices_without_end() {
        let (conn, mut server) = pair();
        let talker = std::thread::spawn(move || {
            let mut got = [0u8; 17];
            server.read_exact(&mut got).expect("query");
            // Until the gateway gives up and closes the connection.
            while server.write_all(b"N\0\0\0\x05\0").is_ok() {}
        });
        assert!(reset(conn, Duration::from_millis(300), 1 << 20).is_none());
        talker.join().expect("talker");
    }
}
