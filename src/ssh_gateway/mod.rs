//! The SSH gateway: accepts OpenSSH clients on an SSH target's listener, authenticates them as
//! identities (public key or token; the SSH user name is the target's name), logs in to the
//! target's sshd with the gateway's own credential, and relays the connection protocol between
//! the two with every exec, shell, subsystem and forwarding request decided by the policy.
//!
//! The protocol work is sans-IO in `proto::ssh`; this module is the async shell around it: one
//! smol task per client connection drives both transports (see `session.rs`).
//!
//! - `host_key`: the gateway's own host key (`data_dir/ssh_host_ed25519_key`).
//! - `conn`: one transport and its socket.
//! - `auth`: the client's login and the gateway's login upstream.
//! - `session`: the relay loop, decisions, approvals, audit.
//! - `sftp_audit`: which SFTP operations are audited.
//! - `observe`: the recording hook.
//! - `recording`: asciicast recordings of shells and pty execs, fail closed.

mod auth;
mod conn;
pub mod host_key;
mod observe;
mod recording;
mod session;
mod sftp_audit;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::SecureRandom;
use smol::future::FutureExt;
use smol::net::TcpStream;

use crate::audit::Event;
use crate::proto::ssh::msg::{self, DisconnectReason};
use crate::proto::ssh::packet::PacketSealer;
use crate::proto::ssh::transport::{Role, Transport, TransportConfig, DEFAULT_KEX_TIMEOUT};
use crate::proto::ssh::version::our_version;
use crate::proto::ssh::wire::Writer;
use crate::server::{lock, Gateway, SessionEntry};
use auth::Refused;
use conn::Conn;

pub(crate) fn log(msg: &str) {
    eprintln!("portcullis: {msg}");
}

/// Entry point for one accepted TCP connection on an SSH target's listener.
pub async fn handle_connection(
    gw: Arc<Gateway>,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let loaded = gw.loaded();
    let Some(target) = loaded
        .policy
        .targets
        .iter()
        .find(|t| t.listen == local && t.ssh.is_some())
        .cloned()
    else {
        return;
    };
    let Some(host_key) = gw.ssh_host_key.clone() else {
        log("SSH connection refused: the gateway has no SSH host key");
        return;
    };
    let max = loaded.policy.gateway.max_connections;
    let handshake_timeout = loaded.policy.gateway.handshake_timeout;
    drop(loaded);
    if gw.connections.fetch_add(1, Ordering::AcqRel) >= max {
        gw.connections.fetch_sub(1, Ordering::AcqRel);
        log(&format!(
            "ssh {peer} -> {}: refused: too many connections (max_connections = {max})",
            target.name
        ));
        refuse_over_capacity(tcp, max).await;
        return;
    }
    let _guard = ConnectionGuard(gw.clone());

    let rng = ring::rand::SystemRandom::new();
    let pair = match host_key.key_pair(&rng) {
        Ok(p) => p,
        Err(e) => {
            log(&e);
            return;
        }
    };
    let transport = match Transport::new(
        Role::Server { host_key: pair },
        client_transport_config(handshake_timeout),
        Box::new(rng),
        Instant::now(),
    ) {
        Ok(t) => t,
        Err(e) => {
            log(&format!("SSH transport: {e}"));
            return;
        }
    };
    let mut down = Conn::new(tcp, transport);

    // `handshake_timeout` covers the client's part: version exchange, key exchange and user
    // authentication. The upstream login happens inside, within its own `upstream_timeout`, and
    // moves the deadline by the time it took.
    let deadline = auth::HandshakeDeadline::new(Instant::now() + handshake_timeout);
    let accepted = async { Some(auth::accept(&gw, &mut down, &target, peer, &deadline).await) }
        .or(async {
            loop {
                smol::Timer::at(deadline.get()).await;
                if Instant::now() >= deadline.get() {
                    return None;
                }
            }
        })
        .await;
    let (login, up) = match accepted {
        None => {
            log(&format!(
                "ssh {peer} -> {}: handshake not finished within handshake_timeout ({}s); closed",
                target.name,
                handshake_timeout.as_secs_f32()
            ));
            down.close(
                DisconnectReason::ByApplication,
                "portcullis: handshake_timeout: key exchange and authentication took too long",
            )
            .await;
            return;
        }
        Some(Err(Refused::Gone(why))) => {
            if !why.contains("closed by peer") {
                log(&format!("ssh {peer} -> {}: {why}", target.name));
            }
            return;
        }
        Some(Err(Refused::Failed(why))) => {
            log(&format!("ssh {peer} -> {}: {why}", target.name));
            return;
        }
        Some(Ok(pair)) => pair,
    };

    let session_id = gw.random_hex(8);
    let pid = gw.allocate_pid();
    let (kill_tx, kill_rx) = smol::channel::bounded::<String>(1);
    let (hold_cancel_tx, _hold_cancel_rx) = smol::channel::bounded::<()>(1);
    lock(&gw.sessions).insert(
        pid,
        SessionEntry {
            identity: login.identity.name.clone(),
            target: target.name.clone(),
            token_id: login
                .token
                .as_ref()
                .map(|t| t.id.clone())
                .unwrap_or_default(),
            cancel_secret: [0; 4],
            upstream_pid: 0,
            upstream_secret: Vec::new(),
            kill: kill_tx,
            hold_cancel: hold_cancel_tx,
            cancel_forwarded: Arc::default(),
        },
    );
    let _unregister = Unregister(gw.clone(), pid);

    let opened = gw
        .audit
        .record(
            Event::new("session_opened")
                .str("session", session_id.clone())
                .str("protocol", "ssh")
                .str("identity", login.identity.name.clone())
                .str("target", target.name.clone())
                .str("client", peer.to_string())
                .str("method", login.method.name())
                .opt_str("token", login.token.as_ref().map(|t| t.id.clone()))
                .opt_str("origin", login.token.as_ref().map(|t| t.origin.clone()))
                .opt_str("key", login.key_fingerprint.clone())
                // Client to server on each leg (both directions use the same on OpenSSH's
                // default lists): the client's leg is the client's choice, the upstream leg ours.
                .opt_str(
                    "client_cipher",
                    down.transport
                        .negotiated()
                        .map(|n| n.cipher_client_to_server.name()),
                )
                .opt_str(
                    "upstream_cipher",
                    up.transport
                        .negotiated()
                        .map(|n| n.cipher_client_to_server.name()),
                ),
        )
        .await;
    let mut down = down;
    let mut up = up;
    if opened.is_err() {
        down.close(
            DisconnectReason::ByApplication,
            "portcullis: audit log unavailable",
        )
        .await;
        up.close(DisconnectReason::ByApplication, "").await;
        return;
    }
    let counters = gw.metrics.target(&target.name);
    counters.sessions_total.fetch_add(1, Ordering::Relaxed);
    counters.sessions_open.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let identity = login.identity.name.clone();
    let mut session =
        session::Session::new(gw.clone(), session_id.clone(), target.clone(), login, peer);
    let ending = session.run(down, up, kill_rx).await;
    counters.sessions_open.fetch_sub(1, Ordering::Relaxed);
    let _ = gw
        .audit
        .record(
            Event::new("session_closed")
                .str("session", session_id)
                .str("protocol", "ssh")
                .str("identity", identity)
                .str("target", target.name.clone())
                .str("reason", ending.reason)
                .uint(
                    "duration_ms",
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                ),
        )
        .await;
}

/// The client leg's transport settings.
///
/// The first key exchange is part of the handshake: the outer `handshake_timeout` deadline in
/// [`handle_connection`] ends it (with its own message) when that is shorter than the transport's
/// 30 s bound. A later key exchange (a rekey, by either side, every hour or gigabyte) gets no more
/// time than the whole handshake had, and at most 30 s: the session's data waits while it runs.
fn client_transport_config(handshake_timeout: Duration) -> TransportConfig {
    TransportConfig {
        rekey_timeout: handshake_timeout.min(DEFAULT_KEX_TIMEOUT),
        ..TransportConfig::default()
    }
}

/// Tells a client over `max_connections` why it is refused, in a form OpenSSH's `ssh` prints.
///
/// RFC 4253 §4.2 lets a server send lines before its identification string, but OpenSSH's client
/// only shows them with `-v`; an `SSH_MSG_DISCONNECT` right after our identification string (an
/// unencrypted packet, before any KEXINIT; RFC 4253 §11.1: "this message ... MUST be able to be
/// processed" at any time) is printed as `Received disconnect from HOST port PORT:12:
/// portcullis: too many connections (max_connections = N)`.
///
/// The client sends its identification string and KEXINIT without waiting for ours: see
/// `net::refuse` for why the refusal then lingers.
async fn refuse_over_capacity(tcp: TcpStream, max: usize) {
    let Some(refusal) = over_capacity_refusal(max, &ring::rand::SystemRandom::new()) else {
        return;
    };
    crate::net::refuse::refuse(tcp, &refusal).await;
}

/// Our identification string followed by an unencrypted `SSH_MSG_DISCONNECT` with reason
/// `SSH_DISCONNECT_TOO_MANY_CONNECTIONS` (12), or `None` if the random padding can't be drawn.
fn over_capacity_refusal(max: usize, rng: &dyn SecureRandom) -> Option<Vec<u8>> {
    let mut out = format!("{}\r\n", our_version()).into_bytes();
    let description = format!("portcullis: too many connections (max_connections = {max})");
    // RFC 4253 §11.1: "uint32 reason code / string description in ISO-10646 UTF-8 encoding /
    // string language tag".
    let mut w = Writer::message(msg::DISCONNECT);
    w.u32(DisconnectReason::TooManyConnections.code())
        .string(description.as_bytes())
        .string(b"");
    PacketSealer::new()
        .seal(w.as_bytes(), rng, &mut out)
        .ok()
        .map(|()| out)
}

struct ConnectionGuard(Arc<Gateway>);
impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Unregister(Arc<Gateway>, i32);
impl Drop for Unregister {
    fn drop(&mut self) {
        lock(&self.0.sessions).remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ssh::packet::PacketOpener;
    use crate::proto::ssh::transport::{Event, TransportError};
    use crate::proto::ssh::version::{scan, Scan};
    use crate::proto::ssh::wire::Reader;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// Moves bytes both ways until neither side has more to say; returns both sides' events.
    fn pump(a: &mut Transport, b: &mut Transport, now: Instant) -> (Vec<Event>, Vec<Event>) {
        let (mut a_events, mut b_events) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            let to_b = a.pending_output().to_vec();
            a.consume_output(to_b.len());
            b.feed(&to_b);
            b_events.extend(b.process(now).unwrap());
            let to_a = b.pending_output().to_vec();
            b.consume_output(to_a.len());
            a.feed(&to_a);
            a_events.extend(a.process(now).unwrap());
            if a.pending_output().is_empty() && b.pending_output().is_empty() {
                break;
            }
        }
        (a_events, b_events)
    }

    #[test]
    fn client_leg_rekey_times_out_after_handshake_timeout_capped_at_30s() {
        assert_eq!(
            client_transport_config(Duration::from_secs(600)).rekey_timeout,
            Duration::from_secs(30)
        );
        let handshake_timeout = Duration::from_secs(2);
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let pinned_host_key: [u8; 32] = key.public_key().as_ref().try_into().unwrap();
        let now = Instant::now();
        let mut server = Transport::new(
            Role::Server { host_key: key },
            client_transport_config(handshake_timeout),
            Box::new(rng.clone()),
            now,
        )
        .unwrap();
        let mut client = Transport::new(
            Role::Client { pinned_host_key },
            TransportConfig::default(),
            Box::new(rng),
            now,
        )
        .unwrap();
        let (server_events, _) = pump(&mut server, &mut client, now);
        assert!(
            server_events
                .iter()
                .any(|e| matches!(e, Event::Ready { .. })),
            "no first key exchange: {server_events:?}"
        );
        // The gateway starts a rekey that the client never answers.
        server.start_rekey(now).unwrap();
        assert_eq!(server.poll_timeout(), Some(now + handshake_timeout));
        server
            .handle_timeout(now + handshake_timeout - Duration::from_millis(1))
            .unwrap();
        assert_eq!(
            server.handle_timeout(now + handshake_timeout),
            Err(TransportError::KexTimeout)
        );
    }

    #[test]
    fn over_capacity_refusal_is_identification_then_plain_disconnect() {
        let bytes = over_capacity_refusal(7, &ring::rand::SystemRandom::new()).unwrap();
        let Ok(Scan::Identification { version, consumed }) = scan(&bytes, true) else {
            panic!("no identification string first: {bytes:?}");
        };
        assert_eq!(version, our_version().into_bytes());
        let packet = PacketOpener::new()
            .open(&bytes[consumed..])
            .unwrap()
            .unwrap();
        assert_eq!(consumed + packet.consumed, bytes.len(), "trailing bytes");
        let mut r = Reader::new(&packet.payload);
        assert_eq!(r.u8().unwrap(), msg::DISCONNECT);
        assert_eq!(r.u32().unwrap(), 12, "SSH_DISCONNECT_TOO_MANY_CONNECTIONS");
        assert_eq!(
            r.utf8().unwrap(),
            "portcullis: too many connections (max_connections = 7)"
        );
        assert_eq!(r.string().unwrap(), b"");
        r.finish().unwrap();
    }
}
