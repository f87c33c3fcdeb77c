//! The gateway's own connection to the target server: TCP, optional TLS, startup, and
//! authentication with the secret the gateway holds (SCRAM-SHA-256, MD5 or cleartext).

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsConnector;
use rustls::ClientConfig;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use super::codec::{self, Auth, Backend};
use super::conn::{Conn, ReadError};
use super::md5;
use super::scram;
use crate::config::{SecretSource, Target, UpstreamTls};
use crate::net::stream::Stream;
use crate::net::tls;

/// Why the upstream leg could not be set up. Never carries the secret.
#[derive(Debug)]
pub enum UpstreamError {
    Connect(io::Error),
    Tls(String),
    /// `upstream_tls` requires TLS and the server answered 'N' to SSLRequest.
    TlsRefused,
    Read(ReadError),
    /// The server sent an ErrorResponse (SQLSTATE, message).
    Server(String, String),
    /// The server asked for an authentication method the gateway won't use.
    UnsupportedAuth(String),
    Secret(String),
    Scram(String),
    Protocol(&'static str),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Tls(e) => write!(f, "TLS: {e}"),
            UpstreamError::TlsRefused => {
                f.write_str("the server does not accept TLS but upstream_tls requires it")
            }
            UpstreamError::Read(e) => write!(f, "{e}"),
            UpstreamError::Server(code, msg) => write!(f, "server error {code}: {msg}"),
            UpstreamError::UnsupportedAuth(m) => write!(f, "unsupported authentication: {m}"),
            UpstreamError::Secret(e) => write!(f, "secret: {e}"),
            UpstreamError::Scram(e) => write!(f, "SCRAM: {e}"),
            UpstreamError::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

impl From<ReadError> for UpstreamError {
    fn from(e: ReadError) -> Self {
        UpstreamError::Read(e)
    }
}

impl From<io::Error> for UpstreamError {
    fn from(e: io::Error) -> Self {
        UpstreamError::Read(ReadError::Io(e))
    }
}

/// An authenticated upstream session, ready for queries.
pub struct Upstream {
    pub conn: Conn,
    /// ParameterStatus values the server reported during startup, in order.
    pub params: Vec<(String, String)>,
    pub pid: i32,
    pub secret: Vec<u8>,
}

/// Read the upstream secret now (files are read at each connect, so a rotated secret is used
/// without a reload).
pub fn load_secret(source: &SecretSource) -> Result<Option<Vec<u8>>, UpstreamError> {
    match source {
        SecretSource::None => Ok(None),
        SecretSource::File(path) => {
            let mut bytes = std::fs::read(path)
                .map_err(|e| UpstreamError::Secret(format!("{}: {e}", path.display())))?;
            while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                bytes.pop();
            }
            Ok(Some(bytes))
        }
        SecretSource::Env(var) => std::env::var(var)
            .map(|v| Some(v.into_bytes()))
            .map_err(|_| UpstreamError::Secret(format!("environment variable {var} is not set"))),
    }
}

async fn open_stream(
    target: &Target,
    tls_config: Option<Arc<ClientConfig>>,
    keepalive: Option<Duration>,
) -> Result<Stream, UpstreamError> {
    let tcp = TcpStream::connect((target.upstream_host.as_str(), target.upstream_port))
        .await
        .map_err(UpstreamError::Connect)?;
    // Best effort: a socket without them still works (see `net::tcp`).
    let _ = crate::net::tcp::tune(&tcp, keepalive);
    let Some(config) = tls_config else {
        return Ok(Stream::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut req = Vec::with_capacity(8);
    codec::encode_ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {}
        b'N' => return Err(UpstreamError::TlsRefused),
        _ => return Err(UpstreamError::Protocol("unexpected answer to SSLRequest")),
    }
    let name =
        tls::server_name(&target.upstream_host).map_err(|e| UpstreamError::Tls(e.to_string()))?;
    let stream = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| UpstreamError::Tls(e.to_string()))?;
    Ok(Stream::TlsClient(Box::new(stream)))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Connect and authenticate. `params` are the client's allowed startup parameters; `read_only`
/// makes every transaction of the session read-only on the server (`default_transaction_read_only`
/// set at startup is also the value RESET and DISCARD ALL return to).
pub async fn connect(
    target: &Target,
    tls_config: Option<Arc<ClientConfig>>,
    params: &[(String, String)],
    read_only: bool,
    max_body: usize,
    nonce: &str,
    keepalive: Option<Duration>,
) -> Result<Upstream, UpstreamError> {
    let secret = load_secret(&target.secret)?;
    let stream = open_stream(target, tls_config, keepalive).await?;
    let encrypted = stream.is_tls();
    let mut conn = Conn::new(stream);

    let mut startup: Vec<(&str, &str)> = vec![
        ("user", target.user.as_str()),
        ("database", target.database.as_str()),
    ];
    for (k, v) in params {
        startup.push((k.as_str(), v.as_str()));
    }
    if read_only {
        startup.push(("default_transaction_read_only", "on"));
    }
    let mut out = Vec::with_capacity(256);
    codec::encode_startup(&mut out, &startup);
    conn.send(&out).await?;

    // Authentication exchange.
    let mut scram_state: Option<scram::ScramClientAwaitingFinal> = None;
    let mut scram_first: Option<scram::ScramClientAwaitingFirst> = None;
    loop {
        let msg = conn.read_message(max_body).await?;
        match codec::decode_backend(msg.tag, &msg.body)
            .map_err(|e| UpstreamError::Read(ReadError::Codec(e)))?
        {
            Backend::Authentication(Auth::Ok) => break,
            Backend::Authentication(Auth::CleartextPassword) => {
                // Never put the secret on an unencrypted wire beyond this host.
                if !encrypted && !is_loopback(&target.upstream_host) {
                    return Err(UpstreamError::UnsupportedAuth(
                        "server asks for a cleartext password over an unencrypted connection; set upstream_tls".into(),
                    ));
                }
                let pw = secret.as_deref().ok_or_else(|| {
                    UpstreamError::Secret(
                        "server asks for a password but the target has none".into(),
                    )
                })?;
                out.clear();
                codec::encode_password(&mut out, pw);
                conn.send(&out).await?;
            }
            Backend::Authentication(Auth::Md5Password { salt }) => {
                let pw = secret.as_deref().ok_or_else(|| {
                    UpstreamError::Secret(
                        "server asks for a password but the target has none".into(),
                    )
                })?;
                let response = md5::md5_password_response(&target.user, pw, salt);
                out.clear();
                codec::encode_password(&mut out, response.as_bytes());
                conn.send(&out).await?;
            }
            Backend::Authentication(Auth::Sasl { mechanisms }) => {
                if !mechanisms.contains(&"SCRAM-SHA-256") {
                    return Err(UpstreamError::UnsupportedAuth(format!(
                        "SASL mechanisms {mechanisms:?}"
                    )));
                }
                let pw = secret.as_deref().ok_or_else(|| {
                    UpstreamError::Secret(
                        "server asks for a password but the target has none".into(),
                    )
                })?;
                let (state, first) = scram::client_first(pw, nonce);
                scram_first = Some(state);
                out.clear();
                codec::encode_sasl_initial(&mut out, "SCRAM-SHA-256", &first);
                conn.send(&out).await?;
            }
            Backend::Authentication(Auth::SaslContinue(data)) => {
                let state = scram_first
                    .take()
                    .ok_or(UpstreamError::Protocol("SASLContinue without SASL"))?;
                let (next, client_final) = state
                    .handle_server_first(data, scram::MAX_UPSTREAM_ITERATIONS)
                    .map_err(|e| UpstreamError::Scram(e.to_string()))?;
                scram_state = Some(next);
                out.clear();
                codec::encode_sasl_response(&mut out, &client_final);
                conn.send(&out).await?;
            }
            Backend::Authentication(Auth::SaslFinal(data)) => {
                let state = scram_state
                    .take()
                    .ok_or(UpstreamError::Protocol("SASLFinal without SASLContinue"))?;
                state
                    .handle_server_final(data)
                    .map_err(|e| UpstreamError::Scram(e.to_string()))?;
            }
            Backend::Authentication(other) => {
                return Err(UpstreamError::UnsupportedAuth(format!("{other:?}")));
            }
            Backend::ErrorResponse(fields) => {
                return Err(UpstreamError::Server(
                    fields.get(b'C').unwrap_or("").to_string(),
                    fields.get(b'M').unwrap_or("").to_string(),
                ));
            }
            Backend::NoticeResponse(_) => {}
            _ => {
                return Err(UpstreamError::Protocol(
                    "unexpected message during authentication",
                ))
            }
        }
    }
    if scram_state.is_some() {
        // AuthenticationOk before the server proved it knows the secret: refuse (a server that
        // skips SASLFinal could be an impostor).
        return Err(UpstreamError::Protocol(
            "server skipped SCRAM final message",
        ));
    }

    // Startup parameters and the backend key, up to ReadyForQuery.
    let mut upstream_params = Vec::new();
    let mut key: Option<(i32, Vec<u8>)> = None;
    loop {
        let msg = conn.read_message(max_body).await?;
        match codec::decode_backend(msg.tag, &msg.body)
            .map_err(|e| UpstreamError::Read(ReadError::Codec(e)))?
        {
            Backend::ParameterStatus { name, value } => {
                upstream_params.push((name.to_string(), value.to_string()))
            }
            Backend::BackendKeyData { pid, secret } => key = Some((pid, secret.to_vec())),
            Backend::ReadyForQuery { .. } => break,
            Backend::NoticeResponse(_) => {}
            Backend::NegotiateProtocolVersion { .. } => {}
            Backend::ErrorResponse(fields) => {
                return Err(UpstreamError::Server(
                    fields.get(b'C').unwrap_or("").to_string(),
                    fields.get(b'M').unwrap_or("").to_string(),
                ));
            }
            _ => {
                return Err(UpstreamError::Protocol(
                    "unexpected message before ReadyForQuery",
                ))
            }
        }
    }
    let (pid, secret) = key.unwrap_or((0, Vec::new()));
    Ok(Upstream {
        conn,
        params: upstream_params,
        pid,
        secret,
    })
}

/// Forward a cancel request to the upstream backend. Fire and forget: PostgreSQL answers nothing.
pub async fn cancel(
    target: &Target,
    tls_config: Option<Arc<ClientConfig>>,
    pid: i32,
    secret: &[u8],
) -> Result<(), UpstreamError> {
    // One write and done: no keepalive needed.
    let mut stream = open_stream(target, tls_config, None).await?;
    let mut out = Vec::with_capacity(16);
    codec::encode_cancel_request(&mut out, pid, secret);
    stream.write_all(&out).await?;
    stream.flush().await?;
    // Wait for the server to close, so the cancel is delivered before we drop the socket.
    let mut sink = [0u8; 64];
    let _ = stream.read(&mut sink).await;
    Ok(())
}

/// What `upstream_tls` needs from the loaded policy.
pub fn wants_tls(mode: UpstreamTls) -> bool {
    mode != UpstreamTls::Disable
}
