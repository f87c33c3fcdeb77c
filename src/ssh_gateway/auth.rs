//! Both logins of an SSH session: the client's to the gateway (public key of an identity, or a
//! token as password / keyboard-interactive answer; the user name is the target's name) and the
//! gateway's to the target (pinned host key; the target's `key_file` or password).
//!
//! The client's USERAUTH_SUCCESS is sent only once the upstream login succeeded, so a client
//! never holds an authenticated connection the gateway can't serve, and nothing the client sends
//! after authenticating has to be buffered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ring::rand::SystemRandom;
use smol::future::FutureExt;
use smol::net::TcpStream;

use super::conn::{Conn, ConnError};
use crate::config::{Identity, SshUpstreamAuth, Target};
use crate::identity::tokens::TokenInfo;
use crate::proto::ssh::cipher::CipherAlgorithm;
use crate::proto::ssh::keyfile;
use crate::proto::ssh::msg::DisconnectReason;
use crate::proto::ssh::transport::{Event, Role, Transport, TransportConfig};
use crate::proto::ssh::userauth::{
    AuthMethod, ClientAuth, ClientStep, Credential, PasswordCheck, PublicKeyCheck, Secret,
    ServerAuth, ServerAuthConfig, ServerStep, SERVICE_USERAUTH,
};
use crate::server::{lock, now_unix, Gateway};

/// The token scope that opens target sessions.
const CONNECT_SCOPE: &str = "connect";

/// Who logged in, and how.
pub(super) struct Login {
    pub identity: Identity,
    pub method: AuthMethod,
    /// The token used (password / keyboard-interactive logins).
    pub token: Option<TokenInfo>,
    /// The key's fingerprint (public key logins).
    pub key_fingerprint: Option<String>,
}

/// Why a login did not complete. The client has been told (DISCONNECT) when it matters.
pub(super) enum Refused {
    /// The client went away or broke the protocol; nothing to log beyond a line.
    Gone(String),
    /// Logged and audited.
    Failed(String),
}

/// The end of the client's handshake time (`handshake_timeout`): the caller's timer reads it;
/// the upstream login moves it by the time it took, so the client's key exchange and
/// authentication get the whole `handshake_timeout` and a slow target does not count against
/// it (the upstream login has its own `upstream_timeout`).
pub(super) struct HandshakeDeadline(std::sync::Mutex<Instant>);

impl HandshakeDeadline {
    pub fn new(at: Instant) -> HandshakeDeadline {
        HandshakeDeadline(std::sync::Mutex::new(at))
    }

    pub fn get(&self) -> Instant {
        *lock(&self.0)
    }

    fn set(&self, at: Instant) {
        *lock(&self.0) = at;
    }
}

/// Runs the client's side until it is authenticated and the upstream connection is logged in.
pub(super) async fn accept(
    gw: &Arc<Gateway>,
    down: &mut Conn,
    target: &Target,
    peer: SocketAddr,
    deadline: &HandshakeDeadline,
) -> Result<(Login, Conn), Refused> {
    let gone = |e: ConnError| Refused::Gone(e.to_string());
    let session_id = loop {
        match down.next_event().await.map_err(gone)? {
            Event::Ready { session_id } => break session_id,
            Event::Disconnected { .. } => return Err(Refused::Gone("client disconnected".into())),
            _ => {}
        }
    };
    match down.next_event().await.map_err(gone)? {
        Event::ServiceRequest(name) if name == SERVICE_USERAUTH => {
            down.transport
                .accept_service(SERVICE_USERAUTH)
                .map_err(|e| Refused::Gone(e.to_string()))?;
        }
        other => {
            down.close(
                DisconnectReason::ServiceNotAvailable,
                "expected ssh-userauth",
            )
            .await;
            return Err(Refused::Gone(format!(
                "unexpected first request: {other:?}"
            )));
        }
    }

    let mut auth = ServerAuth::new(&session_id, ServerAuthConfig::default());
    loop {
        let payload = match down.next_event().await.map_err(gone)? {
            Event::Payload(p) => p,
            Event::Disconnected { .. } => return Err(Refused::Gone("client disconnected".into())),
            _ => continue,
        };
        let mut step = match auth.handle(&payload) {
            Ok(step) => step,
            Err(e) => {
                let d = crate::proto::ssh::userauth::Disconnect::from(&e);
                down.close(DisconnectReason::from_code(d.reason), d.description)
                    .await;
                return Err(Refused::Gone(format!("authentication: {e}")));
            }
        };
        // Answer checks until the state machine has something to send.
        let mut up = None;
        let mut chosen: Option<Login> = None;
        let step = loop {
            step = match step {
                ServerStep::CheckPublicKey(check) => match check_key(gw, target, &check) {
                    Some(_) if check.is_query() => check.accept(),
                    Some(identity) => {
                        match connect_or_refuse(gw, down, target, &identity, deadline).await? {
                            Some(conn) => {
                                up = Some(conn);
                                chosen = Some(Login {
                                    key_fingerprint: Some(check.key().fingerprint()),
                                    identity,
                                    method: AuthMethod::PublicKey,
                                    token: None,
                                });
                                check.accept()
                            }
                            None => return Err(Refused::Failed("upstream login failed".into())),
                        }
                    }
                    None => {
                        failure_delay(gw, peer).await;
                        check.reject()
                    }
                },
                ServerStep::CheckPassword(check) => match check_token(gw, target, &check).await {
                    Some((identity, token)) => {
                        match connect_or_refuse(gw, down, target, &identity, deadline).await? {
                            Some(conn) => {
                                up = Some(conn);
                                chosen = Some(Login {
                                    method: check.method(),
                                    identity,
                                    token: Some(token),
                                    key_fingerprint: None,
                                });
                                check.accept()
                            }
                            None => return Err(Refused::Failed("upstream login failed".into())),
                        }
                    }
                    None => {
                        failure_delay(gw, peer).await;
                        check.reject()
                    }
                },
                other => break other,
            };
        };
        match step {
            ServerStep::Reply { auth: next, reply } => {
                send(down, reply).await?;
                auth = next;
            }
            ServerStep::Authenticated { reply, outcome } => {
                let (Some(login), Some(up)) = (chosen, up) else {
                    return Err(Refused::Failed("authenticated without a login".into()));
                };
                debug_assert!(matches!(
                    (&outcome.credential, login.method),
                    (Credential::PublicKey(_), AuthMethod::PublicKey)
                        | (
                            Credential::Secret(_),
                            AuthMethod::Password | AuthMethod::KeyboardInteractive
                        )
                ));
                send(down, reply).await?;
                lock(&gw.failures).clear(peer.ip());
                return Ok((login, up));
            }
            ServerStep::Disconnect(d) => {
                down.close(DisconnectReason::from_code(d.reason), d.description)
                    .await;
                return Err(Refused::Failed(d.description.into()));
            }
            ServerStep::CheckPublicKey(_) | ServerStep::CheckPassword(_) => {
                return Err(Refused::Failed("unanswered check".into()))
            }
        }
    }
}

async fn send(down: &mut Conn, payload: Vec<u8>) -> Result<(), Refused> {
    down.transport
        .send_payload(payload, Instant::now())
        .map_err(|e| Refused::Gone(e.to_string()))?;
    down.flush().await.map_err(|e| Refused::Gone(e.to_string()))
}

/// Slows down guessing from one address (the same table as the PostgreSQL listener).
async fn failure_delay(gw: &Gateway, peer: SocketAddr) {
    let delay = lock(&gw.failures).record(peer.ip(), Instant::now());
    if !delay.is_zero() {
        smol::Timer::after(delay).await;
    }
}

/// The identity whose `ssh_keys` hold the key, if the user name is this target's name.
fn check_key(gw: &Gateway, target: &Target, check: &PublicKeyCheck) -> Option<Identity> {
    if check.user() != target.name {
        return None;
    }
    let loaded = gw.loaded();
    let policy = &loaded.policy;
    let owner = policy
        .identities
        .iter()
        .find(|i| i.ssh_keys.contains(check.key()))?;
    policy.active_identity(&owner.name).cloned()
}

/// The token's identity, if the secret is a live connect token bound to this target (one use is
/// consumed).
async fn check_token(
    gw: &Arc<Gateway>,
    target: &Target,
    check: &PasswordCheck,
) -> Option<(Identity, TokenInfo)> {
    if check.user() != target.name {
        return None;
    }
    let tokens = gw.tokens.clone();
    let secret = check.secret().expose().to_owned();
    let target_name = target.name.clone();
    let found = smol::unblock(move || {
        let now = now_unix();
        let info = tokens.find_bearer(&secret, CONNECT_SCOPE, now).ok()??;
        // The token opens one target: the one its user name (and listener) names.
        if info.target != target_name {
            return None;
        }
        tokens.consume(&info.id, now).ok()?.ok()
    })
    .await?;
    let loaded = gw.loaded();
    let identity = loaded.policy.active_identity(&found.identity)?.clone();
    Some((identity, found))
}

/// Connects upstream within the gateway's `upstream_timeout`; on failure tells the client why
/// (DISCONNECT) and audits it, returning None.
async fn connect_or_refuse(
    gw: &Arc<Gateway>,
    down: &mut Conn,
    target: &Target,
    identity: &Identity,
    deadline: &HandshakeDeadline,
) -> Result<Option<Conn>, Refused> {
    let timeout = gw.loaded().policy.gateway.upstream_timeout;
    let started = Instant::now();
    let client_deadline = deadline.get();
    // The client's clock stops while the target is being logged in to.
    deadline.set(client_deadline + timeout + std::time::Duration::from_secs(1));
    let keepalive = gw.loaded().policy.gateway.tcp_keepalive;
    let result = async { connect_upstream(target, keepalive).await }
        .or(async {
            smol::Timer::after(timeout).await;
            Err(format!("timed out after {}s", timeout.as_secs()))
        })
        .await;
    deadline.set(client_deadline + started.elapsed());
    match result {
        Ok(conn) => Ok(Some(conn)),
        Err(e) => {
            gw.metrics
                .target(&target.name)
                .upstream_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            super::log(&format!(
                "target {}: upstream {}:{}: {e}",
                target.name, target.upstream_host, target.upstream_port
            ));
            let _ = gw
                .audit
                .record(
                    crate::audit::Event::new("upstream_failed")
                        .str("identity", identity.name.clone())
                        .str("target", target.name.clone())
                        .str("error", e.clone()),
                )
                .await;
            down.close(
                DisconnectReason::ByApplication,
                &format!("portcullis: could not connect to target {:?}", target.name),
            )
            .await;
            Ok(None)
        }
    }
}

/// Connects to the target's sshd and logs in as its `user`.
///
/// # Errors
/// A message for the log and audit (never the secret).
pub(super) async fn connect_upstream(
    target: &Target,
    keepalive: Option<std::time::Duration>,
) -> Result<Conn, String> {
    let ssh = target.ssh.as_ref().ok_or("not an SSH target")?;
    let addr = (target.upstream_host.as_str(), target.upstream_port);
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Best effort: a socket without them still works (see `net::tcp`).
    let _ = crate::net::tcp::tune(&tcp, keepalive);
    let transport = Transport::new(
        Role::Client {
            pinned_host_key: ssh.host_key,
        },
        // Our side of this connection chooses the cipher: the one this CPU runs fastest (the
        // client's leg keeps the client's choice). A relay pays two cipher passes per byte;
        // AES-GCM in hardware makes the upstream one ~3x cheaper than ChaCha20-Poly1305.
        TransportConfig {
            ciphers: CipherAlgorithm::fastest_first(),
            ..TransportConfig::default()
        },
        Box::new(SystemRandom::new()),
        Instant::now(),
    )
    .map_err(|e| e.to_string())?;
    let mut up = Conn::new(tcp, transport);
    let describe = |e: ConnError| match e {
        ConnError::Transport(crate::proto::ssh::transport::TransportError::HostKeyMismatch {
            ..
        }) => "the target's host key is not the pinned `host_key` (refused)".to_owned(),
        other => other.to_string(),
    };
    let session_id = loop {
        match up.next_event().await.map_err(describe)? {
            Event::Ready { session_id } => break session_id,
            Event::Disconnected { description, .. } => {
                return Err(format!("target disconnected: {description}"))
            }
            _ => {}
        }
    };
    up.transport
        .request_service(SERVICE_USERAUTH)
        .map_err(|e| e.to_string())?;
    loop {
        match up.next_event().await.map_err(describe)? {
            Event::ServiceAccepted(_) => break,
            Event::Disconnected { description, .. } => {
                return Err(format!("target disconnected: {description}"))
            }
            _ => {}
        }
    }
    let rng = SystemRandom::new();
    let (mut client, payload) = match &ssh.auth {
        SshUpstreamAuth::KeyFile(path) => {
            let key = keyfile::load_private_key_file(path, &rng).map_err(|e| e.to_string())?;
            let algs: Option<Vec<String>> = up.transport.server_sig_algs().map(<[String]>::to_vec);
            let algs_ref: Option<Vec<&str>> = algs
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect());
            ClientAuth::publickey(&session_id, &target.user, &key, algs_ref.as_deref(), &rng)
                .map_err(|e| e.to_string())?
        }
        SshUpstreamAuth::Password(source) => {
            let secret = crate::proto::pg::upstream::load_secret(source)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let password = Secret::new(String::from_utf8_lossy(&secret).into_owned());
            ClientAuth::password(&target.user, &password)
        }
    };
    up.transport
        .send_payload(payload, Instant::now())
        .map_err(|e| e.to_string())?;
    loop {
        let payload = match up.next_event().await.map_err(describe)? {
            Event::Payload(p) => p,
            Event::Disconnected { description, .. } => {
                return Err(format!("target disconnected: {description}"))
            }
            _ => continue,
        };
        client = match client.handle(&payload).map_err(|e| e.to_string())? {
            ClientStep::Banner { auth, .. } => auth,
            ClientStep::Success => return Ok(up),
            ClientStep::Refused(r) => {
                return Err(format!(
                    "the target refused the gateway's login as {:?}: {r}",
                    target.user
                ))
            }
        };
    }
}
