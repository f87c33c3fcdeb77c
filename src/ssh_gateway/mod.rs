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
use std::time::Instant;

use smol::future::FutureExt;
use smol::net::TcpStream;

use crate::audit::Event;
use crate::proto::ssh::msg::DisconnectReason;
use crate::proto::ssh::transport::{Role, Transport, TransportConfig};
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
        TransportConfig::default(),
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
