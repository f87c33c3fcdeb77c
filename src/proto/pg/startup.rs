//! The client side of a connection up to authentication: SSLRequest/GSSENCRequest negotiation,
//! CancelRequest, StartupMessage checks, and token authentication with SCRAM-SHA-256.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_rustls::TlsAcceptor;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;

use super::codec::{self, CodecError, StartupRequest};
use super::conn::{Conn, Message, ReadError};
use super::scram;
use crate::audit::Event;
use crate::config::{ClientAuth, Identity, Target};
use crate::identity::tokens::{TokenInfo, SCRAM_ITERATIONS};
use crate::net::stream::Stream;
use crate::server::{lock, now_unix, Gateway, Loaded};

/// Startup parameters a client may set; they are passed upstream. Everything else is refused:
/// `options` could set any server setting, `replication` opens a replication connection,
/// `search_path` would change which table an unqualified name means to the policy,
/// `standard_conforming_strings` would change how the gateway must lex SQL.
pub const ALLOWED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "extra_float_digits",
    "IntervalStyle",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "bytea_output",
    "geqo",
    "fallback_application_name",
];

/// Why the client handshake ended without a session.
#[derive(Debug)]
pub enum Refusal {
    /// The client went away or sent bytes we can't parse; nothing more to say to it.
    Gone(String),
    /// Tell the client (FATAL with this SQLSTATE and message) and close.
    Fatal {
        code: &'static str,
        message: String,
        log: String,
    },
    /// A cancel request was handled; close quietly.
    Cancelled,
}

/// A client that proved it holds a valid token for `identity` on `target`.
pub struct Accepted {
    pub conn: Conn,
    pub identity: Identity,
    pub target: Target,
    pub token: TokenInfo,
    pub params: Vec<(String, String)>,
    pub tls: bool,
    pub loaded: Arc<Loaded>,
}

fn fatal(code: &'static str, message: impl Into<String>, log: impl Into<String>) -> Refusal {
    Refusal::Fatal {
        code,
        message: message.into(),
        log: log.into(),
    }
}

impl From<ReadError> for Refusal {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Codec(c) => fatal(
                "08P01",
                format!("invalid startup packet: {c}"),
                c.to_string(),
            ),
            other => Refusal::Gone(other.to_string()),
        }
    }
}

enum Startup {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: Vec<u8>,
    },
    Params {
        major: u16,
        minor: u16,
        params: Vec<(String, String)>,
    },
}

async fn read_startup(conn: &mut Conn) -> Result<Startup, Refusal> {
    loop {
        match codec::parse_startup(&conn.buf) {
            Ok(Some((req, used))) => {
                let owned = match req {
                    StartupRequest::SslRequest => Startup::Ssl,
                    StartupRequest::GssEncRequest => Startup::GssEnc,
                    StartupRequest::Cancel { pid, secret } => Startup::Cancel {
                        pid,
                        secret: secret.to_vec(),
                    },
                    StartupRequest::Startup {
                        major,
                        minor,
                        params,
                    } => Startup::Params {
                        major,
                        minor,
                        params: params
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    },
                };
                conn.buf.drain(..used);
                return Ok(owned);
            }
            Ok(None) => conn.fill().await?,
            Err(e) => return Err(ReadError::Codec(e).into()),
        }
    }
}

/// Run the handshake on a fresh TCP connection accepted on `local` (a target's listen address).
/// A refusal with a message has already been sent to the client when this returns.
pub async fn accept(
    gw: &Gateway,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Accepted, Refusal> {
    let mut conn = Conn::new(Stream::Plain(tcp));
    match accept_on(gw, &mut conn, peer, local).await {
        Ok(parts) => Ok(Accepted { conn, ..parts }),
        Err(Refusal::Fatal { code, message, log }) => {
            let mut out = Vec::new();
            codec::encode_error(&mut out, "FATAL", code, &message, None, None);
            let _ = conn.send(&out).await;
            Err(Refusal::Fatal { code, message, log })
        }
        Err(other) => Err(other),
    }
}

async fn accept_on(
    gw: &Gateway,
    conn: &mut Conn,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Accepted, Refusal> {
    let loaded = gw.loaded();
    let listener_target = loaded
        .policy
        .targets
        .iter()
        .find(|t| t.listen == local)
        .cloned();

    // SSLRequest / GSSENCRequest may come first (GSSENC then SSL is legal), then the StartupMessage.
    let (major, minor, params) = loop {
        match read_startup(conn).await? {
            Startup::GssEnc => conn
                .send(b"N")
                .await
                .map_err(|e| Refusal::Gone(e.to_string()))?,
            Startup::Ssl => {
                if conn.stream.is_tls() {
                    return Err(fatal(
                        "08P01",
                        "SSLRequest after TLS was established",
                        "second SSLRequest",
                    ));
                }
                let server_tls = listener_target
                    .as_ref()
                    .and_then(|t| loaded.server_tls.get(&t.name))
                    .cloned();
                let Some(cfg) = server_tls else {
                    conn.send(b"N")
                        .await
                        .map_err(|e| Refusal::Gone(e.to_string()))?;
                    continue;
                };
                // Bytes sent after SSLRequest but before the TLS handshake would be read as if
                // they had come over TLS (CVE-2021-3935 class). Refuse them.
                if !conn.buf.is_empty() {
                    return Err(fatal(
                        "08P01",
                        "unexpected data after SSLRequest",
                        "plaintext after SSLRequest",
                    ));
                }
                let Stream::Plain(mut tcp) = std::mem::replace(&mut conn.stream, Stream::Detached)
                else {
                    return Err(Refusal::Gone("internal: stream state".into()));
                };
                tcp.write_all(b"S")
                    .await
                    .map_err(|e| Refusal::Gone(e.to_string()))?;
                let tls = TlsAcceptor::from(cfg)
                    .accept(tcp)
                    .await
                    .map_err(|e| Refusal::Gone(format!("TLS handshake: {e}")))?;
                conn.stream = Stream::TlsServer(Box::new(tls));
            }
            Startup::Cancel { pid, secret } => {
                handle_cancel(gw, pid, &secret).await;
                return Err(Refusal::Cancelled);
            }
            Startup::Params {
                major,
                minor,
                params,
            } => break (major, minor, params),
        }
    };
    if major != 3 {
        return Err(fatal(
            "0A000",
            format!("unsupported frontend protocol {major}.{minor}: the gateway speaks 3.0"),
            "protocol version",
        ));
    }

    let mut user = None;
    let mut database = None;
    let mut passed = Vec::new();
    let mut unrecognized_pq = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "user" => user = Some(v),
            "database" => database = Some(v),
            _ if k.starts_with("_pq_.") => unrecognized_pq.push(k),
            _ if ALLOWED_PARAMS.iter().any(|a| a.eq_ignore_ascii_case(&k)) => {
                if k.eq_ignore_ascii_case("client_encoding")
                    && !super::pipeline::encoding_is_safe(&v)
                {
                    return Err(fatal(
                        "0A000",
                        format!(
                            "client_encoding {v:?} is not supported through the gateway; use UTF8"
                        ),
                        "unsafe client_encoding",
                    ));
                }
                passed.push((k, v));
            }
            _ => {
                return Err(fatal(
                    "0A000",
                    format!("startup parameter {k:?} is not allowed through the gateway"),
                    format!("refused startup parameter {k}"),
                ))
            }
        }
    }
    // A 3.x client with protocol extensions we don't know: say we speak 3.0 and none of them.
    if minor > 0 || !unrecognized_pq.is_empty() {
        let mut out = Vec::new();
        encode_negotiate_protocol_version(&mut out, 0, &unrecognized_pq);
        conn.send(&out)
            .await
            .map_err(|e| Refusal::Gone(e.to_string()))?;
    }
    let Some(user) = user else {
        return Err(fatal(
            "28000",
            "no user name specified: use the identity name as user",
            "no user",
        ));
    };
    let database = database.unwrap_or_else(|| user.clone());
    let tls = conn.stream.is_tls();
    if let Some(t) = &listener_target {
        if t.require_tls && !tls {
            return Err(fatal(
                "28000",
                format!("target {:?} requires TLS (sslmode=require)", t.name),
                "TLS required",
            ));
        }
    }

    // Look up identity and target. Whatever is wrong, the client sees the same authentication
    // failure after a full SCRAM exchange, so names can't be probed.
    let policy = &loaded.policy;
    let identity = policy.active_identity(&user).cloned();
    let listener_name = listener_target.as_ref().map(|t| t.name.clone());
    let target = listener_target.filter(|t| t.name == database);
    let valid = identity.is_some() && target.is_some();

    let cleartext = target
        .as_ref()
        .is_some_and(|t| t.client_auth == ClientAuth::Password)
        && tls;
    let token = if cleartext {
        authenticate_password(gw, conn, &user, &database, valid).await?
    } else {
        authenticate_scram(gw, conn, &user, &database, valid).await?
    };
    let (Some(identity), Some(target), Some(token)) = (identity, target, token) else {
        if let Some(name) = &listener_name {
            gw.metrics
                .target(name)
                .auth_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let delay = lock(&gw.failures).record(peer.ip(), Instant::now());
        let _ = gw
            .audit
            .record(
                Event::new("auth_failed")
                    .str("client", peer.to_string())
                    .str("user", user.clone())
                    .str("database", database.clone())
                    .bool("tls", tls)
                    .str(
                        "reason",
                        if valid {
                            "no live token matched"
                        } else {
                            "unknown identity or target"
                        },
                    ),
            )
            .await;
        if !delay.is_zero() {
            smol::Timer::after(delay).await;
        }
        return Err(fatal(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
            "authentication failed",
        ));
    };
    lock(&gw.failures).clear(peer.ip());
    Ok(Accepted {
        conn: Conn::new(Stream::Detached),
        identity,
        target,
        token,
        params: passed,
        tls,
        loaded,
    })
}

/// SCRAM-SHA-256 with the token as the password. Returns the consumed token, or None.
async fn authenticate_scram(
    gw: &Gateway,
    conn: &mut Conn,
    user: &str,
    database: &str,
    valid: bool,
) -> Result<Option<TokenInfo>, Refusal> {
    let mut out = Vec::with_capacity(128);
    codec::encode_auth_sasl(&mut out, &["SCRAM-SHA-256"]);
    let msg = ask(conn, &out, "SASLInitialResponse").await?;
    let (mechanism, data) =
        codec::decode_sasl_initial(&msg.body).map_err(|e| Refusal::from(ReadError::Codec(e)))?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(fatal(
            "28000",
            format!("SASL mechanism {mechanism:?} not supported; use SCRAM-SHA-256"),
            "mechanism",
        ));
    }
    let data = data.ok_or_else(|| fatal("08P01", "SASLInitialResponse without data", "no data"))?;
    let salt = gw.tokens.scram_salt(user, database);
    let nonce = gw.random_hex(18);
    let (awaiting, server_first) = scram::server_first(data, &salt, SCRAM_ITERATIONS, &nonce)
        .map_err(|e| fatal("08P01", format!("malformed SCRAM message: {e}"), "scram"))?;
    out.clear();
    codec::encode_auth_sasl_continue(&mut out, &server_first);
    let msg = ask(conn, &out, "SASLResponse").await?;
    let now = now_unix();
    let candidates = if valid {
        let tokens = gw.tokens.clone();
        let (u, d) = (user.to_string(), database.to_string());
        smol::unblock(move || tokens.candidates(&u, &d, "connect", now))
            .await
            .map_err(|e| {
                fatal(
                    "58000",
                    "the gateway's token store is unavailable",
                    e.to_string(),
                )
            })?
    } else {
        Vec::new()
    };
    let verifiers: Vec<scram::ScramVerifier> = candidates
        .iter()
        .map(|(_, v)| scram::ScramVerifier {
            stored_key: v.stored_key,
            server_key: v.server_key,
        })
        .collect();
    let (index, server_final) = match awaiting.finish(&msg.body, &verifiers) {
        Ok(found) => found,
        Err(_) => return Ok(None),
    };
    let Some((token_id, _)) = candidates.get(index) else {
        return Ok(None);
    };
    let Some(info) = consume(gw, token_id.clone(), now).await? else {
        return Ok(None);
    };
    out.clear();
    codec::encode_auth_sasl_final(&mut out, &server_final);
    conn.send(&out)
        .await
        .map_err(|e| Refusal::Gone(e.to_string()))?;
    Ok(Some(info))
}

/// Send an authentication request and read the client's answer, which must be a 'p' message
/// (PasswordMessage, SASLInitialResponse and SASLResponse share the tag). Bounded: 8 KiB.
async fn ask(conn: &mut Conn, request: &[u8], expected: &str) -> Result<Message, Refusal> {
    conn.send(request)
        .await
        .map_err(|e| Refusal::Gone(e.to_string()))?;
    let msg = conn.read_message(8192).await?;
    if msg.tag != b'p' {
        return Err(fatal(
            "08P01",
            format!("expected {expected}"),
            "protocol violation during auth",
        ));
    }
    Ok(msg)
}

/// Cleartext password (the token) over TLS, for drivers without SCRAM (`client_auth = "password"`).
async fn authenticate_password(
    gw: &Gateway,
    conn: &mut Conn,
    user: &str,
    database: &str,
    valid: bool,
) -> Result<Option<TokenInfo>, Refusal> {
    let mut out = Vec::with_capacity(16);
    codec::encode_auth_cleartext(&mut out);
    let msg = ask(conn, &out, "PasswordMessage").await?;
    let secret = codec::decode_password(&msg.body)
        .map_err(|e| Refusal::from(ReadError::Codec(e)))?
        .to_string();
    let now = now_unix();
    let tokens = gw.tokens.clone();
    let (u, d) = (user.to_string(), database.to_string());
    // Always derive (PBKDF2) so the answer's timing doesn't say whether the names exist.
    let found = smol::unblock(move || tokens.find_by_secret(&u, &d, "connect", &secret, now))
        .await
        .map_err(|e| {
            fatal(
                "58000",
                "the gateway's token store is unavailable",
                e.to_string(),
            )
        })?;
    let Some(id) = found.filter(|_| valid) else {
        return Ok(None);
    };
    consume(gw, id, now).await
}

/// Spend one use of the token, re-checking expiry and revocation in the same transaction.
async fn consume(gw: &Gateway, id: String, now: u64) -> Result<Option<TokenInfo>, Refusal> {
    let tokens = gw.tokens.clone();
    let consumed = smol::unblock(move || tokens.consume(&id, now))
        .await
        .map_err(|e| {
            fatal(
                "58000",
                "the gateway's token store is unavailable",
                e.to_string(),
            )
        })?;
    Ok(consumed.ok())
}

async fn handle_cancel(gw: &Gateway, pid: i32, secret: &[u8]) {
    let found = {
        let sessions = lock(&gw.sessions);
        sessions.get(&pid).and_then(|s| {
            scram::ct_eq(&s.cancel_secret, secret).then(|| {
                // A statement waiting for approval is cancelled at the gateway; a running one
                // upstream. Both are told: only one of them is in progress.
                let _ = s.hold_cancel.try_send(());
                s.cancel_forwarded.store(true, Ordering::Release);
                (s.target.clone(), s.upstream_pid, s.upstream_secret.clone())
            })
        })
    };
    let Some((target_name, upid, usecret)) = found else {
        return;
    };
    let loaded = gw.loaded();
    let Some(target) = loaded.policy.target(&target_name) else {
        return;
    };
    let tls = loaded.upstream_tls.get(&target_name).cloned().flatten();
    let _ = super::upstream::cancel(target, tls, upid, &usecret).await;
}

/// NegotiateProtocolVersion ('v'): newest minor version supported, then the options not recognised.
fn encode_negotiate_protocol_version(out: &mut Vec<u8>, minor: i32, unrecognized: &[String]) {
    let start = out.len();
    out.push(b'v');
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&minor.to_be_bytes());
    out.extend_from_slice(&i32::try_from(unrecognized.len()).unwrap_or(0).to_be_bytes());
    for name in unrecognized {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    let len = u32::try_from(out.len() - start - 1).unwrap_or(0);
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

impl From<CodecError> for Refusal {
    fn from(e: CodecError) -> Self {
        ReadError::Codec(e).into()
    }
}
