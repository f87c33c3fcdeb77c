//! The admin control socket: how the CLI's `token issue|list|revoke` and `audit export` reach the
//! running gateway, which holds the redb file lock.
//!
//! The socket is `data_dir/control.sock`, mode 0600 inside the 0700 data directory: the file
//! system permission is the authentication. When no gateway listens (connect fails with ENOENT or
//! ECONNREFUSED) the CLI opens the store itself and calls [`execute`] directly.
//!
//! # Wire format (version 1)
//!
//! One request per connection. Every message is a sequence of `\n`-terminated lines; fields within
//! a line are separated by TAB; inside a field `\` is written `\\`, TAB `\t`, LF `\n`, CR `\r`
//! (any other escape is an error). The client writes one line and shuts down its write half; the
//! server answers and closes.
//!
//! ```text
//! request:  PCTL1 token-issue  <identity> <target> <scope> <ttl_secs> <uses or empty> <origin>
//!           PCTL1 token-list
//!           PCTL1 token-revoke <id>
//!           PCTL1 audit-export <since_seq>
//! response: PCTL1 issued  <id> <secret> <expires_at>
//!           PCTL1 tokens  <n>          then n lines: token <id> <identity> <target> <scope>
//!                                      <created_at> <expires_at> <uses_left or empty> <used>
//!                                      <origin> <0|1 revoked>
//!           PCTL1 revoked 0 | PCTL1 revoked 1 + one token line
//!           PCTL1 lines   <n>          then n lines: line <audit line>
//!           PCTL1 error   <message>
//! ```
//!
//! Bounds: a request is at most [`MAX_REQUEST`] bytes and must arrive within [`READ_TIMEOUT`]; a
//! response at most [`MAX_RESPONSE`] bytes. `audit-export` answers at most [`EXPORT_MAX_LINES`]
//! lines with seq > since: ask again from the last line's seq (`audit::line_seq`) until none come.
//! Connections are served one at a time.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::unix::{UnixListener, UnixStream};

use crate::audit::{self, Audit, Event};
use crate::config::{IdentityKind, Policy};
use crate::identity::{IssuedToken, TokenInfo, Tokens};

/// The socket's file name in the data directory.
pub const SOCKET_FILE: &str = "control.sock";
/// Largest request accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest response the client accepts.
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Time a client has to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client waits for an answer (issuing waits for two fsyncs).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most audit lines per `audit-export` answer.
pub const EXPORT_MAX_LINES: usize = 10_000;
/// About the most bytes of audit lines per answer.
pub const EXPORT_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Longest scope name.
const MAX_SCOPE_LEN: usize = 64;
/// The scopes a token may have: `connect` opens sessions to a target; `approve` authenticates an
/// approver to the HTTP API (`Authorization: Bearer pct_...`) and web page.
pub const SCOPES: [&str; 2] = ["connect", "approve"];
/// What an `approve` token stores as its target (it opens no target).
pub const NO_TARGET: &str = "-";

const MAGIC: &str = "PCTL1";

/// What the CLI asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    TokenIssue {
        identity: String,
        target: String,
        scope: String,
        ttl_secs: u64,
        uses: Option<u32>,
        origin: String,
    },
    TokenList,
    TokenRevoke {
        id: String,
    },
    AuditExport {
        since: u64,
    },
}

/// What the gateway answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Issued(IssuedToken),
    Tokens(Vec<TokenInfo>),
    Revoked(Option<TokenInfo>),
    Lines(Vec<String>),
    Error(String),
}

/// Runs one request: the socket server and the CLI's offline path share this.
///
/// Policy checks for `TokenIssue`: the identity exists; the scope is `connect` or `approve`
/// ([`SCOPES`]); for `connect` the target exists; for `approve` (bearer tokens of the approvals
/// HTTP API and web page) the target is empty or `-` (stored as `-`) and `uses` is not given (a
/// bearer token serves a session of requests); 1 <= ttl <= `gateway.max_token_ttl` and, for service identities, <= their `max_ttl`
/// (the error names the cap); `uses` >= 1 when given; origin at most 512 characters. Each issue and
/// revoke is audited durably (`token_issued` / `token_revoked`, never the secret); a token whose
/// audit event cannot be written is revoked again and the answer is an error.
pub fn execute(
    policy: &Policy,
    tokens: &Tokens,
    audit: &Audit,
    req: Request,
    now: u64,
) -> Response {
    execute_inner(policy, tokens, audit, req, now).0
}

/// `execute`, plus the id of a token that was revoked (for `on_revoke`, even when the audit failed).
fn execute_inner(
    policy: &Policy,
    tokens: &Tokens,
    audit: &Audit,
    req: Request,
    now: u64,
) -> (Response, Option<String>) {
    match req {
        Request::TokenIssue {
            identity,
            target,
            scope,
            ttl_secs,
            uses,
            origin,
        } => (
            issue(
                policy, tokens, audit, &identity, &target, &scope, ttl_secs, uses, &origin, now,
            )
            .unwrap_or_else(Response::Error),
            None,
        ),
        Request::TokenList => (
            tokens
                .list()
                .map_or_else(|e| Response::Error(e.to_string()), Response::Tokens),
            None,
        ),
        Request::TokenRevoke { id } => match tokens.revoke(&id) {
            Err(e) => (Response::Error(e.to_string()), None),
            Ok(None) => (Response::Revoked(None), None),
            Ok(Some(info)) => {
                let ev = Event::new("token_revoked")
                    .str("token_id", info.id.as_str())
                    .str("identity", info.identity.as_str())
                    .str("target", info.target.as_str());
                let resp = match audit.record_blocking(ev) {
                    Ok(_) => Response::Revoked(Some(info.clone())),
                    Err(e) => Response::Error(format!(
                        "token {} is revoked, but its audit event could not be written: {e}",
                        info.id
                    )),
                };
                (resp, Some(info.id))
            }
        },
        Request::AuditExport { since } => (
            audit::export_lines(tokens.store(), since, EXPORT_MAX_LINES, EXPORT_MAX_BYTES)
                .map_or_else(|e| Response::Error(e.to_string()), Response::Lines),
            None,
        ),
    }
}

fn bad_name(s: &str, max: usize) -> bool {
    s.is_empty() || s.len() > max || s.chars().any(char::is_control)
}

#[allow(clippy::too_many_arguments)] // the fields of one request
fn issue(
    policy: &Policy,
    tokens: &Tokens,
    audit: &Audit,
    identity: &str,
    target: &str,
    scope: &str,
    ttl_secs: u64,
    uses: Option<u32>,
    origin: &str,
    now: u64,
) -> Result<Response, String> {
    let source = policy.source.display();
    let Some(ident) = policy.active_identity(identity) else {
        return Err(format!("unknown or disabled identity {identity:?} (not in {source}, or a service whose owner left)"));
    };
    if bad_name(scope, MAX_SCOPE_LEN) {
        return Err("scope must be 1 to 64 characters, without control characters".into());
    }
    if !SCOPES.contains(&scope) {
        return Err(format!(
            "unknown scope {scope:?}; use \"connect\" (sessions to a target) or \"approve\" (the approvals API and page)"
        ));
    }
    if scope == "connect" && policy.target(target).is_none() {
        return Err(format!("unknown target {target:?} (not in {source})"));
    }
    let target = if scope == "approve" {
        if !(target.is_empty() || target == NO_TARGET) {
            return Err(format!(
                "approve tokens open no target; leave the target empty or \"{NO_TARGET}\" (got {target:?})"
            ));
        }
        if uses.is_some() {
            return Err("approve tokens can't have --uses".into());
        }
        NO_TARGET
    } else {
        target
    };
    if bad_name(target, crate::identity::tokens::MAX_NAME_LEN) {
        return Err("target must be 1 to 256 bytes, without control characters".into());
    }
    if ttl_secs == 0 {
        return Err("ttl must be at least 1s".into());
    }
    let max = policy.gateway.max_token_ttl.as_secs();
    if ttl_secs > max {
        return Err(format!(
            "ttl {} exceeds the gateway's cap of {} (gateway.max_token_ttl)",
            human(ttl_secs),
            human(max)
        ));
    }
    if ident.kind == IdentityKind::Service {
        if let Some(cap) = ident.max_ttl.map(|d| d.as_secs()) {
            if ttl_secs > cap {
                return Err(format!(
                    "ttl {} exceeds the cap of {} for service identity {} (its max_ttl)",
                    human(ttl_secs),
                    human(cap),
                    ident.name
                ));
            }
        }
    }
    if uses == Some(0) {
        return Err("uses must be at least 1".into());
    }
    if origin.chars().count() > crate::identity::tokens::MAX_ORIGIN_LEN {
        return Err("origin must be at most 512 characters".into());
    }
    let tok = tokens
        .issue(
            identity,
            target,
            scope,
            Duration::from_secs(ttl_secs),
            uses,
            origin,
            now,
        )
        .map_err(|e| e.to_string())?;
    let ev = Event::new("token_issued")
        .str("token_id", tok.id.as_str())
        .str("identity", identity)
        .str("target", target)
        .str("scope", scope)
        .uint("expires_at", tok.expires_at)
        .opt_uint("uses", uses.map(u64::from))
        .str("origin", origin);
    if let Err(e) = audit.record_blocking(ev) {
        // Fail closed: a token nobody can trace must not work.
        let _ = tokens.revoke(&tok.id);
        return Err(format!("token not issued: {e}"));
    }
    Ok(Response::Issued(tok))
}

/// `90` -> `1m30s`, `86400` -> `1d`.
fn human(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ]
    .iter()
    .filter(|(v, _)| *v > 0)
    .map(|(v, unit)| format!("{v}{unit}"))
    .collect()
}

// ---- wire format ----

/// A message that does not follow the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError(&'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed control message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

fn escape(out: &mut String, field: &str) {
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(field: &str) -> Result<String, WireError> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('\\') => '\\',
            Some('t') => '\t',
            Some('n') => '\n',
            Some('r') => '\r',
            _ => return Err(WireError("bad escape")),
        });
    }
    Ok(out)
}

fn push_line(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        escape(out, f);
    }
    out.push('\n');
}

/// The lines of a message, each split into unescaped fields.
fn split(msg: &[u8]) -> Result<Vec<Vec<String>>, WireError> {
    let text = std::str::from_utf8(msg).map_err(|_| WireError("not UTF-8"))?;
    let body = text
        .strip_suffix('\n')
        .ok_or(WireError("missing final newline"))?;
    body.split('\n')
        .map(|line| line.split('\t').map(unescape).collect())
        .collect()
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, WireError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WireError("bad number"));
    }
    s.parse().map_err(|_| WireError("number out of range"))
}

fn opt_num(s: &str) -> Result<Option<u32>, WireError> {
    if s.is_empty() {
        Ok(None)
    } else {
        num(s).map(Some)
    }
}

fn encode_request(req: &Request) -> String {
    let mut out = String::new();
    match req {
        Request::TokenIssue {
            identity,
            target,
            scope,
            ttl_secs,
            uses,
            origin,
        } => push_line(
            &mut out,
            &[
                MAGIC,
                "token-issue",
                identity,
                target,
                scope,
                &ttl_secs.to_string(),
                &uses.map(|u| u.to_string()).unwrap_or_default(),
                origin,
            ],
        ),
        Request::TokenList => push_line(&mut out, &[MAGIC, "token-list"]),
        Request::TokenRevoke { id } => push_line(&mut out, &[MAGIC, "token-revoke", id]),
        Request::AuditExport { since } => {
            push_line(&mut out, &[MAGIC, "audit-export", &since.to_string()]);
        }
    }
    out
}

fn decode_request(msg: &[u8]) -> Result<Request, WireError> {
    let lines = split(msg)?;
    let [line] = lines.as_slice() else {
        return Err(WireError("a request is one line"));
    };
    let fields: Vec<&str> = line.iter().map(String::as_str).collect();
    match fields.as_slice() {
        [MAGIC, "token-issue", identity, target, scope, ttl, uses, origin] => {
            Ok(Request::TokenIssue {
                identity: (*identity).to_string(),
                target: (*target).to_string(),
                scope: (*scope).to_string(),
                ttl_secs: num(ttl)?,
                uses: opt_num(uses)?,
                origin: (*origin).to_string(),
            })
        }
        [MAGIC, "token-list"] => Ok(Request::TokenList),
        [MAGIC, "token-revoke", id] => Ok(Request::TokenRevoke {
            id: (*id).to_string(),
        }),
        [MAGIC, "audit-export", since] => Ok(Request::AuditExport { since: num(since)? }),
        [MAGIC, ..] => Err(WireError("unknown request or wrong field count")),
        _ => Err(WireError("not a version 1 control request")),
    }
}

fn push_token(out: &mut String, t: &TokenInfo) {
    push_line(
        out,
        &[
            "token",
            &t.id,
            &t.identity,
            &t.target,
            &t.scope,
            &t.created_at.to_string(),
            &t.expires_at.to_string(),
            &t.uses_left.map(|u| u.to_string()).unwrap_or_default(),
            &t.used.to_string(),
            &t.origin,
            if t.revoked { "1" } else { "0" },
        ],
    );
}

fn decode_token(fields: &[String]) -> Result<TokenInfo, WireError> {
    let f: Vec<&str> = fields.iter().map(String::as_str).collect();
    let ["token", id, identity, target, scope, created, expires, uses_left, used, origin, revoked] =
        f.as_slice()
    else {
        return Err(WireError("bad token line"));
    };
    Ok(TokenInfo {
        id: (*id).to_string(),
        identity: (*identity).to_string(),
        target: (*target).to_string(),
        scope: (*scope).to_string(),
        created_at: num(created)?,
        expires_at: num(expires)?,
        uses_left: opt_num(uses_left)?,
        used: num(used)?,
        origin: (*origin).to_string(),
        revoked: match *revoked {
            "0" => false,
            "1" => true,
            _ => return Err(WireError("bad revoked flag")),
        },
    })
}

fn encode_response(resp: &Response) -> String {
    let mut out = String::new();
    match resp {
        Response::Issued(t) => push_line(
            &mut out,
            &[MAGIC, "issued", &t.id, &t.secret, &t.expires_at.to_string()],
        ),
        Response::Tokens(list) => {
            push_line(&mut out, &[MAGIC, "tokens", &list.len().to_string()]);
            for t in list {
                push_token(&mut out, t);
            }
        }
        Response::Revoked(None) => push_line(&mut out, &[MAGIC, "revoked", "0"]),
        Response::Revoked(Some(t)) => {
            push_line(&mut out, &[MAGIC, "revoked", "1"]);
            push_token(&mut out, t);
        }
        Response::Lines(lines) => {
            push_line(&mut out, &[MAGIC, "lines", &lines.len().to_string()]);
            for l in lines {
                push_line(&mut out, &["line", l]);
            }
        }
        Response::Error(msg) => push_line(&mut out, &[MAGIC, "error", msg]),
    }
    out
}

fn decode_response(msg: &[u8]) -> Result<Response, WireError> {
    let lines = split(msg)?;
    let Some((head, rest)) = lines.split_first() else {
        return Err(WireError("empty response"));
    };
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let count = |n: &str| -> Result<(), WireError> {
        if num::<usize>(n)? == rest.len() {
            Ok(())
        } else {
            Err(WireError("line count differs from the header"))
        }
    };
    let no_rest = || {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(WireError("unexpected extra lines"))
        }
    };
    match head.as_slice() {
        [MAGIC, "issued", id, secret, expires] => {
            no_rest()?;
            Ok(Response::Issued(IssuedToken {
                id: (*id).to_string(),
                secret: (*secret).to_string(),
                expires_at: num(expires)?,
            }))
        }
        [MAGIC, "tokens", n] => {
            count(n)?;
            Ok(Response::Tokens(
                rest.iter()
                    .map(|l| decode_token(l))
                    .collect::<Result<_, _>>()?,
            ))
        }
        [MAGIC, "revoked", "0"] => no_rest().map(|()| Response::Revoked(None)),
        [MAGIC, "revoked", "1"] => match rest {
            [t] => Ok(Response::Revoked(Some(decode_token(t)?))),
            _ => Err(WireError("revoked needs one token line")),
        },
        [MAGIC, "lines", n] => {
            count(n)?;
            rest.iter()
                .map(|l| match l.as_slice() {
                    [tag, text] if tag == "line" => Ok(text.clone()),
                    _ => Err(WireError("bad audit line")),
                })
                .collect::<Result<_, _>>()
                .map(Response::Lines)
        }
        [MAGIC, "error", msg] => no_rest().map(|()| Response::Error((*msg).to_string())),
        [MAGIC, ..] => Err(WireError("unknown response")),
        _ => Err(WireError("not a version 1 control response")),
    }
}

// ---- client ----

/// Sends one request to the gateway listening at `data_dir/control.sock`. `Ok(None)` when no
/// gateway listens there (no socket, or a stale one): the caller opens the store itself.
///
/// # Errors
/// I/O errors talking to a listening gateway (including timeouts), or a malformed answer
/// (`InvalidData`).
pub fn request(data_dir: &Path, req: &Request) -> Result<Option<Response>, io::Error> {
    let path = data_dir.join(SOCKET_FILE);
    let mut s = match StdUnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    s.write_all(encode_request(req).as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_RESPONSE)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    (&mut s).take(limit).read_to_end(&mut buf)?;
    if buf.len() > MAX_RESPONSE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control response too large",
        ));
    }
    decode_response(&buf)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

// ---- server ----

/// The running control socket server.
pub struct ControlServer {
    stop: smol::channel::Sender<()>,
    handle: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting (a request in progress finishes), joins the thread, removes the socket file.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.close();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Clears a socket file left by a crashed gateway; refuses if a gateway still listens there.
fn clear_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; remove it", path.display()),
        ));
    }
    match StdUnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is in use: another portcullis gateway is running with this data directory",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Starts the control socket at `data_dir/control.sock` on its own thread. Each request is run
/// with the policy `current_policy()` returns at that moment; after a revoke, `on_revoke(id)` is
/// called so the gateway can close that token's sessions. One connection at a time.
///
/// # Errors
/// Another gateway listens on the socket (`AddrInUse`), the path is not a socket, or binding fails.
pub fn serve(
    data_dir: &Path,
    current_policy: Arc<dyn Fn() -> Arc<Policy> + Send + Sync>,
    tokens: Arc<Tokens>,
    audit: Audit,
    on_revoke: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<ControlServer, io::Error> {
    let path = data_dir.join(SOCKET_FILE);
    clear_stale_socket(&path)?;
    let std_listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let listener = UnixListener::try_from(std_listener)?;
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let handle = std::thread::Builder::new()
        .name("control-socket".into())
        .spawn(move || {
            smol::block_on(accept_loop(
                listener,
                stopped,
                current_policy,
                tokens,
                audit,
                on_revoke,
            ));
        })?;
    Ok(ControlServer {
        stop,
        handle: Some(handle),
        path,
    })
}

async fn accept_loop(
    listener: UnixListener,
    stopped: smol::channel::Receiver<()>,
    current_policy: Arc<dyn Fn() -> Arc<Policy> + Send + Sync>,
    tokens: Arc<Tokens>,
    audit: Audit,
    on_revoke: Arc<dyn Fn(&str) + Send + Sync>,
) {
    loop {
        let accepted = smol::future::or(async { Some(listener.accept().await) }, async {
            let _ = stopped.recv().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok((stream, _))) => stream,
            Some(Err(_)) => {
                // EMFILE and friends: don't spin.
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = handle_connection(stream, &*current_policy, &tokens, &audit, &*on_revoke).await;
    }
}

async fn with_timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    smol::future::or(f, async {
        smol::Timer::after(d).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "control client too slow",
        ))
    })
    .await
}

async fn read_request(stream: &mut UnixStream) -> io::Result<Result<Vec<u8>, WireError>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Ok(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return Ok(Err(WireError("request too large")));
        }
        if buf.contains(&b'\n') {
            return Ok(Ok(buf));
        }
    }
}

async fn handle_connection(
    mut stream: UnixStream,
    current_policy: &(dyn Fn() -> Arc<Policy> + Send + Sync),
    tokens: &Tokens,
    audit: &Audit,
    on_revoke: &(dyn Fn(&str) + Send + Sync),
) -> io::Result<()> {
    let raw = with_timeout(READ_TIMEOUT, read_request(&mut stream)).await?;
    let response = match raw.and_then(|buf| decode_request(&buf)) {
        Err(e) => Response::Error(e.to_string()),
        Ok(req) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let policy = current_policy();
            let (resp, revoked) = execute_inner(&policy, tokens, audit, req, now);
            if let Some(id) = revoked {
                on_revoke(&id);
            }
            resp
        }
    };
    let out = encode_response(&response);
    with_timeout(WRITE_TIMEOUT, async {
        stream.write_all(out.as_bytes()).await?;
        stream.flush().await
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use crate::audit::AuditWriter;
    use crate::config::{Action, Gateway, Identity, SecretSource, Target, TargetKind, UpstreamTls};
    use crate::store::{test_dir, Store};
    use std::sync::Mutex;

    fn policy(data_dir: &Path) -> Policy {
        let ident = |name: &str, kind, max_ttl| Identity {
            name: name.into(),
            kind,
            owner: (kind == IdentityKind::Service).then(|| "alice".to_string()),
            roles: vec![],
            max_ttl,
            ssh_keys: vec![],
        };
        Policy {
            gateway: Gateway {
                data_dir: data_dir.to_path_buf(),
                public_url: None,
                max_connections: 16,
                handshake_timeout: Duration::from_secs(10),
                upstream_timeout: Duration::from_secs(10),
                idle_timeout: None,
                tcp_keepalive: None,
                max_message_size: 1 << 20,
                max_token_ttl: Duration::from_secs(86_400),
                audit_flush_interval: Duration::from_millis(50),
                audit_queue: crate::audit::QUEUE_CAPACITY,
                audit_retention: None,
                http: None,
                webhooks: vec![],
                webhook_ca: None,
                relay_busy_poll_us: 0,
            },
            identities: vec![
                ident("alice", IdentityKind::Human, None),
                ident("ci", IdentityKind::Service, Some(Duration::from_secs(900))),
            ],
            targets: vec![Target {
                name: "app-db".into(),
                kind: TargetKind::Postgres,
                listen: "127.0.0.1:6432".parse().unwrap(),
                upstream_host: "127.0.0.1".into(),
                upstream_port: 5432,
                database: "app".into(),
                user: "app".into(),
                secret: SecretSource::None,
                upstream_tls: UpstreamTls::Disable,
                upstream_ca: None,
                tls: None,
                require_tls: false,
                client_auth: crate::config::ClientAuth::Scram,
                default: Action::Block,
                read_only: false,
                read_only_for: vec![],
                upstream_pool: 0,
                upstream_pool_idle: Duration::from_secs(60),
                upstream_pool_lifetime: Duration::from_secs(3600),
                ssh: None,
            }],
            rules: vec![],
            masks: vec![],
            source: "/etc/portcullis/portcullis.toml".into(),
        }
    }

    struct Fixture {
        dir: PathBuf,
        policy: Arc<Policy>,
        tokens: Arc<Tokens>,
        audit: Audit,
        writer: Option<AuditWriter>,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let dir = test_dir(name);
            let store = Store::open(&dir).unwrap();
            let (audit, writer) = audit::start(store.clone(), Duration::from_millis(50)).unwrap();
            Fixture {
                policy: Arc::new(policy(&dir)),
                tokens: Arc::new(Tokens::new(store).unwrap()),
                audit,
                writer: Some(writer),
                dir,
            }
        }
        fn run(&self, req: Request) -> Response {
            execute(&self.policy, &self.tokens, &self.audit, req, 1000)
        }
        fn audit_lines(&self) -> Vec<String> {
            audit::export_lines(self.tokens.store(), 0, 1000, usize::MAX).unwrap()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            if let Some(w) = self.writer.take() {
                w.shutdown();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn issue_req(identity: &str, target: &str, scope: &str, ttl: u64) -> Request {
        Request::TokenIssue {
            identity: identity.into(),
            target: target.into(),
            scope: scope.into(),
            ttl_secs: ttl,
            uses: None,
            origin: "test".into(),
        }
    }

    fn error_of(r: Response) -> String {
        match r {
            Response::Error(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn issue_is_audited_without_the_secret() {
        let f = Fixture::new("ctl-issue");
        let Response::Issued(tok) = f.run(Request::TokenIssue {
            identity: "alice".into(),
            target: "app-db".into(),
            scope: "connect".into(),
            ttl_secs: 3600,
            uses: Some(2),
            origin: "laptop\tmux".into(),
        }) else {
            panic!("not issued")
        };
        assert_eq!(tok.expires_at, 4600);
        let lines = f.audit_lines();
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert!(l.contains("\"kind\":\"token_issued\""), "{l}");
        assert!(l.contains(&format!("\"token_id\":\"{}\"", tok.id)), "{l}");
        assert!(l.contains("\"identity\":\"alice\",\"target\":\"app-db\",\"scope\":\"connect\""));
        assert!(
            l.contains("\"expires_at\":4600,\"uses\":2,\"origin\":\"laptop\\tmux\""),
            "{l}"
        );
        assert!(
            !l.contains(&tok.secret) && !l.contains(&tok.secret[4..]),
            "secret in audit: {l}"
        );
    }

    #[test]
    fn issue_checks_the_policy() {
        let f = Fixture::new("ctl-policy");
        let e = error_of(f.run(issue_req("mallory", "app-db", "connect", 60)));
        assert!(
            e.contains("unknown or disabled identity \"mallory\"") && e.contains("portcullis.toml"),
            "{e}"
        );
        let e = error_of(f.run(issue_req("alice", "nope", "connect", 60)));
        assert!(e.contains("unknown target \"nope\""), "{e}");
        // Approve tokens name no target; other scopes are unknown.
        assert!(matches!(
            f.run(issue_req("alice", "", "approve", 60)),
            Response::Issued(_)
        ));
        let e = error_of(f.run(issue_req("alice", "app-db", "approve", 60)));
        assert!(e.contains("approve tokens open no target"), "{e}");
        let e = error_of(f.run(issue_req("alice", "app-db", "admin", 60)));
        assert!(e.contains("unknown scope \"admin\""), "{e}");
        let e = error_of(f.run(issue_req("mallory", "-", "approve", 60)));
        assert!(e.contains("unknown or disabled identity"), "{e}");
        let mut r = issue_req("alice", "-", "approve", 60);
        if let Request::TokenIssue { uses, .. } = &mut r {
            *uses = Some(1);
        }
        assert_eq!(error_of(f.run(r)), "approve tokens can't have --uses");
        let e = error_of(f.run(issue_req("alice", "app-db", "connect", 86_401)));
        assert_eq!(
            e,
            "ttl 1d1s exceeds the gateway's cap of 1d (gateway.max_token_ttl)"
        );
        let e = error_of(f.run(issue_req("ci", "app-db", "connect", 3600)));
        assert_eq!(
            e,
            "ttl 1h exceeds the cap of 15m for service identity ci (its max_ttl)"
        );
        assert!(matches!(
            f.run(issue_req("ci", "app-db", "connect", 900)),
            Response::Issued(_)
        ));
        let e = error_of(f.run(issue_req("alice", "app-db", "connect", 0)));
        assert!(e.contains("at least 1s"), "{e}");
        let mut r = issue_req("alice", "app-db", "connect", 60);
        if let Request::TokenIssue { uses, .. } = &mut r {
            *uses = Some(0);
        }
        assert_eq!(error_of(f.run(r)), "uses must be at least 1");
        let mut r = issue_req("alice", "app-db", "connect", 60);
        if let Request::TokenIssue { origin, .. } = &mut r {
            *origin = "é".repeat(513);
        }
        assert!(error_of(f.run(r)).contains("512"));
        let mut r = issue_req("alice", "app-db", "connect", 60);
        if let Request::TokenIssue { origin, .. } = &mut r {
            *origin = "é".repeat(512);
        }
        assert!(matches!(f.run(r), Response::Issued(_)));
        assert!(error_of(f.run(issue_req("alice", "x", "", 60))).contains("scope"));
        // Only the three successful issues were audited.
        assert_eq!(f.audit_lines().len(), 3);
    }

    #[test]
    fn revoke_list_and_export_through_execute() {
        let f = Fixture::new("ctl-revoke");
        let Response::Issued(tok) = f.run(issue_req("alice", "app-db", "connect", 60)) else {
            panic!()
        };
        let Response::Tokens(list) = f.run(Request::TokenList) else {
            panic!()
        };
        assert_eq!(list.len(), 1);
        assert!(!list[0].revoked);
        let Response::Revoked(Some(info)) = f.run(Request::TokenRevoke { id: tok.id.clone() })
        else {
            panic!()
        };
        assert!(info.revoked);
        assert_eq!(
            f.run(Request::TokenRevoke {
                id: "tok_nope".into()
            }),
            Response::Revoked(None)
        );
        let Response::Lines(lines) = f.run(Request::AuditExport { since: 0 }) else {
            panic!()
        };
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].contains("\"kind\":\"token_revoked\",\"token_id\""),
            "{}",
            lines[1]
        );
        let Response::Lines(lines) = f.run(Request::AuditExport { since: 1 }) else {
            panic!()
        };
        assert_eq!(lines.len(), 1);
    }

    #[test]
    fn issue_fails_closed_when_the_audit_is_down() {
        let mut f = Fixture::new("ctl-audit-down");
        if let Some(w) = f.writer.take() {
            w.shutdown();
        }
        let e = error_of(f.run(issue_req("alice", "app-db", "connect", 60)));
        assert!(e.starts_with("token not issued"), "{e}");
        let list = f.tokens.list().unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].revoked, "an unaudited token must not work");
    }

    fn info(id: &str, uses: Option<u32>, origin: &str) -> TokenInfo {
        TokenInfo {
            id: id.into(),
            identity: "alice".into(),
            target: "db".into(),
            scope: "connect".into(),
            created_at: 1,
            expires_at: 2,
            uses_left: uses,
            used: 3,
            origin: origin.into(),
            revoked: true,
        }
    }

    #[test]
    fn round_trip_every_message_with_hostile_fields() {
        let nasty = "tab\there\nnewline\\back\\\\slash\r\\t literal é";
        let requests = [
            Request::TokenIssue {
                identity: nasty.into(),
                target: "".into(),
                scope: "connect".into(),
                ttl_secs: u64::MAX,
                uses: Some(u32::MAX),
                origin: nasty.into(),
            },
            issue_req("a", "b", "c", 5),
            Request::TokenList,
            Request::TokenRevoke { id: nasty.into() },
            Request::AuditExport { since: 42 },
        ];
        for r in requests {
            let wire = encode_request(&r);
            assert_eq!(wire.matches('\n').count(), 1, "{wire:?}");
            assert_eq!(decode_request(wire.as_bytes()), Ok(r));
        }
        let responses = [
            Response::Issued(IssuedToken {
                id: "tok_1".into(),
                secret: "pct_x".into(),
                expires_at: 9,
            }),
            Response::Tokens(vec![]),
            Response::Tokens(vec![info("a", None, nasty), info("b", Some(0), "")]),
            Response::Revoked(None),
            Response::Revoked(Some(info("c", Some(1), nasty))),
            Response::Lines(vec![]),
            Response::Lines(vec!["{\"seq\":1}".into(), nasty.into(), String::new()]),
            Response::Error(nasty.into()),
        ];
        for r in responses {
            let wire = encode_response(&r);
            assert_eq!(decode_response(wire.as_bytes()), Ok(r));
        }
    }

    #[test]
    fn rejects_malformed_messages() {
        let bad_requests: [&[u8]; 10] = [
            b"",
            b"PCTL1\ttoken-list",
            b"PCTL2\ttoken-list\n",
            b"PCTL1\ttoken-list\textra\n",
            b"PCTL1\ttoken-list\nPCTL1\ttoken-list\n",
            b"PCTL1\taudit-export\t-1\n",
            b"PCTL1\taudit-export\t99999999999999999999999\n",
            b"PCTL1\ttoken-revoke\tbad\\qescape\n",
            b"PCTL1\ttoken-issue\ta\tb\tc\t60\t0x1\to\n",
            b"PCTL1\ttoken-revoke\t\xff\n",
        ];
        for b in bad_requests {
            assert!(
                decode_request(b).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let bad_responses: [&[u8]; 6] = [
            b"PCTL1\ttokens\t2\n",
            b"PCTL1\ttokens\t18446744073709551615\n",
            b"PCTL1\trevoked\t1\n",
            b"PCTL1\tlines\t1\nnotline\tx\n",
            b"PCTL1\terror\tmsg\nextra\n",
            b"PCTL1\tissued\tid\tsecret\n",
        ];
        for b in bad_responses {
            assert!(
                decode_response(b).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(90), "1m30s");
        assert_eq!(human(900), "15m");
        assert_eq!(human(86_400 * 3 + 3600 + 1), "3d1h1s");
    }

    fn serve_fixture(f: &Fixture, revoked: Arc<Mutex<Vec<String>>>) -> io::Result<ControlServer> {
        let policy = f.policy.clone();
        serve(
            &f.dir,
            Arc::new(move || policy.clone()),
            f.tokens.clone(),
            f.audit.clone(),
            Arc::new(move |id: &str| revoked.lock().unwrap().push(id.to_string())),
        )
    }

    #[test]
    fn socket_serves_requests_and_reports_revocations() {
        let f = Fixture::new("ctl-socket");
        assert_eq!(
            request(&f.dir, &Request::TokenList).unwrap(),
            None,
            "no gateway yet"
        );
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let server = serve_fixture(&f, revoked.clone()).unwrap();
        let mode = std::fs::metadata(server.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        let Some(Response::Issued(tok)) =
            request(&f.dir, &issue_req("alice", "app-db", "connect", 60)).unwrap()
        else {
            panic!()
        };
        let Some(Response::Tokens(list)) = request(&f.dir, &Request::TokenList).unwrap() else {
            panic!()
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, tok.id);
        let Some(Response::Revoked(Some(_))) =
            request(&f.dir, &Request::TokenRevoke { id: tok.id.clone() }).unwrap()
        else {
            panic!()
        };
        assert_eq!(*revoked.lock().unwrap(), vec![tok.id.clone()]);
        let Some(Response::Lines(lines)) =
            request(&f.dir, &Request::AuditExport { since: 0 }).unwrap()
        else {
            panic!()
        };
        assert_eq!(lines.len(), 2);
        let Some(Response::Error(e)) =
            request(&f.dir, &issue_req("alice", "app-db", "connect", 999_999)).unwrap()
        else {
            panic!()
        };
        assert!(e.contains("gateway.max_token_ttl"), "{e}");

        // Garbage and oversized requests get an error; the server carries on.
        let path = server.path().to_path_buf();
        let mut s = StdUnixStream::connect(&path).unwrap();
        s.write_all(&vec![b'x'; MAX_REQUEST + 10]).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("PCTL1\terror\tmalformed control message: request too large"),
            "{answer}"
        );
        let mut s = StdUnixStream::connect(&path).unwrap();
        s.write_all(b"hello\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("PCTL1\terror\t"), "{answer}");
        assert!(matches!(
            request(&f.dir, &Request::TokenList).unwrap(),
            Some(Response::Tokens(_))
        ));

        server.shutdown();
        assert!(!path.exists(), "socket file removed on shutdown");
        assert_eq!(request(&f.dir, &Request::TokenList).unwrap(), None);
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let f = Fixture::new("ctl-stale");
        let path = f.dir.join(SOCKET_FILE);
        // A crashed gateway leaves the file behind: bind, then drop the listener.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert_eq!(
            request(&f.dir, &Request::TokenList).unwrap(),
            None,
            "stale = no gateway"
        );
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let server = serve_fixture(&f, revoked.clone()).unwrap();
        let err = serve_fixture(&f, revoked.clone()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            err.to_string().contains("another portcullis gateway"),
            "{err}"
        );
        assert!(matches!(
            request(&f.dir, &Request::TokenList).unwrap(),
            Some(Response::Tokens(_))
        ));
        server.shutdown();
        // A regular file in the way is not deleted.
        std::fs::write(&path, b"not a socket").unwrap();
        let err = serve_fixture(&f, revoked).err().unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
    }

    #[test]
    fn a_silent_client_does_not_hold_the_server_forever() {
        let f = Fixture::new("ctl-slow");
        let server = serve_fixture(&f, Arc::new(Mutex::new(Vec::new()))).unwrap();
        let silent = StdUnixStream::connect(server.path()).unwrap();
        let started = std::time::Instant::now();
        // Served after the silent one times out.
        assert!(matches!(
            request(&f.dir, &Request::TokenList).unwrap(),
            Some(Response::Tokens(_))
        ));
        assert!(started.elapsed() < READ_TIMEOUT + Duration::from_secs(3));
        drop(silent);
        server.shutdown();
    }
}
