//! One client session: handshake, upstream connection, then the relay loop that inspects every
//! statement on its way up and tracks every answer on its way down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use smol::future::FutureExt;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;

use super::codec::{self, Frontend};
use super::mask::{MaskPlan, MaskRule};
use super::pipeline::{Classified, Completion, HoldRule, Pipeline};
use super::pool::{self, Idle, PoolKey};
use super::startup::{self, Accepted, Refusal};
use super::upstream;

mod hold;
mod relay;
mod worker;
use crate::audit::{Encoded, Event};
use crate::audit_key;
use crate::config::{Action, Identity, Target};
use crate::net::stream::Stream;
use crate::net::sync_conn::SyncConn;
use crate::policy::kinds::{Flags, KindSet, PreparedRef, Statement, StmtKind};
use crate::policy::{self, sql};
use crate::server::{lock, Gateway, Loaded, SessionEntry};
pub use worker::Workers;

/// Statements (and synchronisation points) a client may have in flight before the gateway stops
/// reading from it.
const MAX_IN_FLIGHT: usize = 100_000;
/// Prepared statements and portals a session may hold at once.
const MAX_PREPARED: usize = 10_000;

fn log(msg: &str) {
    eprintln!("portcullis: {msg}");
}

/// Entry point for one accepted TCP connection on a target's listener.
pub async fn handle_connection(
    gw: Arc<Gateway>,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let max = gw.loaded().policy.gateway.max_connections;
    if gw.connections.fetch_add(1, Ordering::AcqRel) >= max {
        gw.connections.fetch_sub(1, Ordering::AcqRel);
        let mut out = Vec::new();
        codec::encode_error(
            &mut out,
            "FATAL",
            "53300",
            "too many connections to the gateway",
            None,
            None,
        );
        // The client's StartupMessage or SSLRequest is on its way: linger so it reads this.
        crate::net::refuse::refuse(tcp, &out).await;
        return;
    }
    let _guard = ConnectionGuard(gw.clone());

    let timeout = gw.loaded().policy.gateway.handshake_timeout;
    let handshake = async { Some(startup::accept(&gw, tcp, peer, local).await) }
        .or(async {
            smol::Timer::after(timeout).await;
            None
        })
        .await;
    let accepted = match handshake {
        None => {
            // The client never finished; it gets nothing more than a closed socket.
            return;
        }
        Some(Err(Refusal::Cancelled)) | Some(Err(Refusal::Gone(_))) => return,
        Some(Err(Refusal::Fatal { log: detail, .. })) => {
            log(&format!("refused {peer}: {detail}"));
            return;
        }
        Some(Ok(a)) => a,
    };
    run_session(gw, accepted, peer).await;
}

struct ConnectionGuard(Arc<Gateway>);
impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn send_fatal(stream: &mut Stream, code: &str, message: &str) {
    let mut out = Vec::new();
    codec::encode_error(&mut out, "FATAL", code, message, None, None);
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
}

async fn run_session(gw: Arc<Gateway>, accepted: Accepted, peer: SocketAddr) {
    let Accepted {
        mut conn,
        identity,
        target,
        token,
        params,
        tls,
        loaded,
    } = accepted;
    let session_id = gw.random_hex(8);
    let read_only = policy::session_read_only(&target, &identity);
    let gwcfg = loaded.policy.gateway.clone();
    let upstream_tls = loaded.upstream_tls.get(&target.name).cloned().flatten();
    let cancel_tls = upstream_tls.clone();
    let nonce = gw.random_hex(18);
    let generation = gw.policy_generation();
    let pool_key = (target.upstream_pool > 0).then(|| PoolKey {
        target: target.name.clone(),
        read_only,
        startup: params.clone(),
    });
    let kept = pool_key
        .as_ref()
        .and_then(|key| gw.upstream_pool.take(key, Instant::now()));
    let up = match kept {
        Some(kept) => UpLeg::kept(kept),
        None => {
            let connect = upstream::connect(
                &target,
                upstream_tls,
                &params,
                read_only,
                gwcfg.max_message_size,
                &nonce,
                gwcfg.tcp_keepalive,
            );
            let opened = async { Some(connect.await) }
                .or(async {
                    smol::Timer::after(gwcfg.upstream_timeout).await;
                    None
                })
                .await;
            match opened {
                Some(Ok(up)) => UpLeg::opened(up),
                Some(Err(e)) => {
                    gw.metrics
                        .target(&target.name)
                        .upstream_errors
                        .fetch_add(1, Ordering::Relaxed);
                    log(&format!(
                        "session {session_id}: upstream {}:{}: {e}",
                        target.upstream_host, target.upstream_port
                    ));
                    let _ = gw
                        .audit
                        .record(
                            Event::new("upstream_failed")
                                .str("session", session_id.clone())
                                .str("identity", identity.name.clone())
                                .str("target", target.name.clone())
                                .str("error", e.to_string()),
                        )
                        .await;
                    send_fatal(
                        &mut conn.stream,
                        "08006",
                        &format!("portcullis: could not connect to target {:?}", target.name),
                    )
                    .await;
                    return;
                }
                None => {
                    gw.metrics
                        .target(&target.name)
                        .upstream_errors
                        .fetch_add(1, Ordering::Relaxed);
                    send_fatal(
                        &mut conn.stream,
                        "08006",
                        &format!(
                            "portcullis: timed out connecting to target {:?}",
                            target.name
                        ),
                    )
                    .await;
                    return;
                }
            }
        }
    };

    // Our own backend key: the client never learns the upstream one.
    let pid = gw.allocate_pid();
    let cancel_secret: [u8; 4] = gw.random_bytes();
    let (kill_tx, kill_rx) = smol::channel::bounded::<String>(1);
    let (hold_cancel_tx, hold_cancel_rx) = smol::channel::bounded::<()>(1);
    let cancel_forwarded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    lock(&gw.sessions).insert(
        pid,
        SessionEntry {
            identity: identity.name.clone(),
            target: target.name.clone(),
            token_id: token.id.clone(),
            cancel_secret,
            upstream_pid: up.pid,
            upstream_secret: up.secret.clone(),
            kill: kill_tx,
            hold_cancel: hold_cancel_tx,
            cancel_forwarded: cancel_forwarded.clone(),
        },
    );
    let _unregister = Unregister(gw.clone(), pid);

    let mut hello = Vec::with_capacity(512);
    codec::encode_auth_ok(&mut hello);
    for (k, v) in &up.params {
        codec::encode_parameter_status(&mut hello, k, v);
    }
    codec::encode_backend_key_data(&mut hello, pid, &cancel_secret);
    codec::encode_ready_for_query(&mut hello, b'I');
    if conn.send(&hello).await.is_err() {
        return;
    }

    let opened = gw
        .audit
        .record(
            Event::new("session_opened")
                .str("session", session_id.clone())
                .str("identity", identity.name.clone())
                .str("token", token.id.clone())
                .str("origin", token.origin.clone())
                .str("client", peer.to_string())
                .str("target", target.name.clone())
                .bool("tls", tls)
                .bool("upstream_tls", up.tls)
                .bool("upstream_reused", up.reused)
                .bool("read_only", read_only),
        )
        .await;
    if opened.is_err() {
        send_fatal(
            &mut conn.stream,
            "58000",
            "portcullis: audit log unavailable",
        )
        .await;
        return;
    }

    // Mask plan: every [[mask]] rule for this target and identity.
    let mask_rules: Vec<MaskRule> = loaded
        .policy
        .masks
        .iter()
        .zip(&loaded.maskers)
        .filter(|(m, _)| {
            (m.targets.is_empty() || m.targets.contains(&target.name))
                && m.who.iter().any(|w| w.matches(&identity))
        })
        .map(|(m, masker)| MaskRule {
            columns: m.columns.clone(),
            masker: masker.clone(),
        })
        .collect();
    let masked = !mask_rules.is_empty();
    let mut pipeline = Pipeline::new(MAX_IN_FLIGHT);
    if masked {
        pipeline.set_mask(MaskPlan::new(mask_rules));
    }
    let started = Instant::now();
    let counters = gw.metrics.target(&target.name);
    counters.sessions_total.fetch_add(1, Ordering::Relaxed);
    counters.sessions_open.fetch_add(1, Ordering::Relaxed);
    if up.reused {
        counters.upstream_reused.fetch_add(1, Ordering::Relaxed);
    }
    let _open = OpenGauge(counters.clone());
    let audit_ids = AuditIds(Encoded::of(
        &Event::new("")
            .str("session", session_id.as_str())
            .str("identity", identity.name.as_str())
            .str("target", target.name.as_str())
            .str("token", token.id.as_str()),
    ));
    let session = Session {
        gw: gw.clone(),
        audit_ids,
        id: session_id.clone(),
        identity,
        target,
        read_only,
        pipeline: Mutex::new(pipeline),
        tables: Mutex::new(Tables::default()),
        stats: Mutex::new(Stats::default()),
        counters,
        origin: if token.origin.is_empty() {
            format!("client {peer}")
        } else {
            format!("{} (client {peer})", token.origin)
        },
        hold_cancel: hold_cancel_rx,
        policy: Mutex::new(None),
        max_body: gwcfg.max_message_size,
        reuse_upstream: pool_key.is_some(),
        kept_upstream: Mutex::new(None),
    };

    let legs = match (SyncConn::from_stream(conn.stream), up.conn) {
        (Ok(client), Ok(upc)) => relay::Legs {
            client,
            client_buf: conn.buf,
            up: upc,
            up_buf: up.buf,
        },
        (Err(e), _) | (_, Err(e)) => {
            log(&format!(
                "session {session_id}: cannot take over the sockets: {e}"
            ));
            return;
        }
    };
    let session = Arc::new(session);
    // A relay worker drives the session from here (see `worker`); this task waits for its end.
    let (ended_tx, ended_rx) = smol::channel::bounded::<(Ending, relay::AuditLeftover)>(1);
    let submitted = gw.pg_workers.submit(worker::NewSession {
        session: session.clone(),
        legs,
        idle: gwcfg.idle_timeout,
        kill: kill_rx,
        ended: ended_tx,
    });
    let (ending, leftover) = match submitted {
        Ok(()) => ended_rx.recv().await.unwrap_or_else(|_| {
            (
                Ending::Quiet("relay worker stopped".into()),
                relay::AuditLeftover::default(),
            )
        }),
        Err(e) => (Ending::Quiet(e), relay::AuditLeftover::default()),
    };
    let stats = *lock(&session.stats);
    let reason = match ending {
        Ending::Quiet(reason) => reason,
        Ending::Fatal { code, message } => {
            if code == "57P01" {
                // Closing our socket doesn't stop a statement already running upstream (the
                // server notices only when it next writes); cancel it.
                let cancel = upstream::cancel(&session.target, cancel_tls, up.pid, &up.secret);
                let _ = async { Some(cancel.await) }
                    .or(async {
                        smol::Timer::after(gwcfg.upstream_timeout).await;
                        None
                    })
                    .await;
            }
            message
        }
    };
    // Statements the relay could not queue before it ended are recorded before the session's
    // end (after a kill's upstream cancel above: a full audit queue must not delay that).
    leftover.finish(&session).await;
    let _ = gw
        .audit
        .record(
            Event::new("session_closed")
                .str("session", session_id)
                .str("identity", session.identity.name.clone())
                .str("target", session.target.name.clone())
                .str("reason", reason)
                .uint("statements", stats.statements)
                .uint("blocked", stats.blocked)
                .uint(
                    "duration_ms",
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                ),
        )
        .await;
    // The relay hands the upstream connection back only after a clean Terminate (see
    // `SessionRelay::may_keep_upstream`); a forwarded cancel or a reload since the start (the
    // target's settings may have changed) closes it instead.
    let kept = lock(&session.kept_upstream).take();
    if let (Some(key), Some(conn)) = (pool_key, kept) {
        if !cancel_forwarded.load(Ordering::Acquire) && gw.policy_generation() == generation {
            let (timeout, max_body) = (gwcfg.upstream_timeout, gwcfg.max_message_size);
            if let Some(conn) = smol::unblock(move || pool::reset(conn, timeout, max_body)).await {
                if gw.policy_generation() == generation {
                    gw.upstream_pool.put(
                        key,
                        Idle::new(conn, up.params, up.pid, up.secret, up.opened),
                        session.target.upstream_pool,
                        pool::PoolLimits {
                            idle: session.target.upstream_pool_idle,
                            lifetime: session.target.upstream_pool_lifetime,
                        },
                    );
                }
            }
        }
    }
}

/// The upstream side of a session: a new connection, or one kept from an earlier session.
struct UpLeg {
    conn: std::io::Result<SyncConn>,
    /// Bytes read from the server and not handled yet (none for a kept connection).
    buf: Vec<u8>,
    /// ParameterStatus values the server reported when the connection was opened.
    params: Vec<(String, String)>,
    pid: i32,
    secret: Vec<u8>,
    tls: bool,
    reused: bool,
    /// When the upstream connection was opened (for `upstream_pool_lifetime`).
    opened: Instant,
}

impl UpLeg {
    fn kept(kept: Idle) -> UpLeg {
        UpLeg {
            conn: Ok(kept.conn),
            buf: Vec::new(),
            params: kept.params,
            pid: kept.pid,
            secret: kept.secret,
            tls: kept.tls,
            reused: true,
            opened: kept.opened,
        }
    }

    fn opened(up: upstream::Upstream) -> UpLeg {
        let tls = up.conn.stream.is_tls();
        UpLeg {
            conn: SyncConn::from_stream(up.conn.stream),
            buf: up.conn.buf,
            params: up.params,
            pid: up.pid,
            secret: up.secret,
            tls,
            reused: false,
            opened: Instant::now(),
        }
    }
}

/// Decrements the open-sessions gauge however the session ends.
struct OpenGauge(Arc<crate::metrics::TargetMetrics>);
impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.sessions_open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Unregister(Arc<Gateway>, i32);
impl Drop for Unregister {
    fn drop(&mut self) {
        lock(&self.0.sessions).remove(&self.1);
    }
}

#[derive(Default, Clone, Copy)]
struct Stats {
    statements: u64,
    blocked: u64,
}

/// How a relay ended: quietly (a side closed), or with a FATAL error the client is told.
pub(crate) enum Ending {
    Quiet(String),
    Fatal { code: &'static str, message: String },
}

fn fatal(code: &'static str, message: impl Into<String>) -> Ending {
    Ending::Fatal {
        code,
        message: message.into(),
    }
}

/// What happens to one client message.
enum Verdict {
    Forward,
    /// Replace with this (a marker message) — the statement was refused.
    Replace(Vec<u8>),
    /// Stop the session with a FATAL error.
    Fatal(String),
    /// Wait for an approval, then decide (see `hold.rs`).
    Hold(Box<hold::Hold>),
}

/// The session's names (`session`, `identity`, `target`, `token`), encoded once for all its
/// audit events.
struct AuditIds(Encoded);

pub(crate) struct Session {
    gw: Arc<Gateway>,
    id: String,
    identity: Identity,
    target: Target,
    /// The session's names as every audit event carries them, allocated once.
    audit_ids: AuditIds,
    read_only: bool,
    pipeline: Mutex<Pipeline>,
    tables: Mutex<Tables>,
    stats: Mutex<Stats>,
    max_body: usize,
    counters: Arc<crate::metrics::TargetMetrics>,
    /// Who or what asked, for approval requests: the token's origin and the client address.
    origin: String,
    /// A CancelRequest for this session while a statement waits for approval.
    hold_cancel: smol::channel::Receiver<()>,
    /// The policy statements are judged by, and where this session's identity and target are
    /// in it (see `Gateway::loaded_cached`).
    policy: Mutex<Option<(u64, Arc<Loaded>, PolicyPlace)>>,
    /// The target keeps upstream connections for later sessions (`upstream_pool`).
    reuse_upstream: bool,
    /// The upstream connection, handed back by the relay when the session ended so that
    /// another session may use it (see `pool`).
    kept_upstream: Mutex<Option<SyncConn>>,
}

impl Session {
    pub(crate) fn keeps_upstream(&self) -> bool {
        self.reuse_upstream
    }

    pub(crate) fn keep_upstream(&self, conn: SyncConn) {
        *lock(&self.kept_upstream) = Some(conn);
    }
}

/// Where a session's identity (if still active) and target sit in one policy generation: found
/// by name once per generation, not per statement (a name search is linear in the policy).
struct PolicyPlace {
    identity: Option<usize>,
    target: Option<usize>,
}

/// A bound portal: the statement, and for held statements the parameters an approval covers.
struct Portal {
    info: Arc<Classified>,
    params: Option<Vec<Option<Vec<u8>>>>,
}

/// Portal name -> the statement it was bound from. The unnamed portal, which nearly every client
/// binds for every execution, has a slot of its own: no hashing on the per-query path.
#[derive(Default)]
struct Portals {
    unnamed: Option<Portal>,
    named: HashMap<String, Portal>,
}

impl Portals {
    fn get(&self, name: &str) -> Option<&Portal> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(name)
        }
    }

    fn insert(&mut self, name: &str, portal: Portal) {
        if name.is_empty() {
            self.unnamed = Some(portal);
        } else {
            self.named.insert(name.to_string(), portal);
        }
    }

    fn remove(&mut self, name: &str) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.named.remove(name);
        }
    }

    fn len(&self) -> usize {
        self.named.len() + usize::from(self.unnamed.is_some())
    }
}

/// What an SQL-level `PREPARE name AS ...` will do when executed.
struct SqlPrepared {
    kinds: KindSet,
    tables: Vec<String>,
    flags: Flags,
}

/// Per-session statement tables; mutated only between awaits.
#[derive(Default)]
struct Tables {
    /// Extended protocol: prepared statement name -> classification (decided at Parse).
    prepared: HashMap<String, Arc<Classified>>,
    /// Portal name -> the statement it was bound from.
    portals: Portals,
    /// SQL-level PREPARE name -> kinds and tables of the inner statement.
    sql_prepared: HashMap<String, SqlPrepared>,
    markers: u64,
    /// A statement in the current extended-protocol batch may change how SQL must be lexed.
    batch_lexer_check: bool,
}

/// Kinds that can't change how the server lexes later statements. A batch holding anything else
/// makes the lexer untrusted until the batch's ReadyForQuery (see `Pipeline::lexer_trusted`).
fn lexer_safe(kinds: KindSet, flags: Flags) -> bool {
    !flags.contains(Flags::LIFTS_READ_ONLY)
        && kinds.iter().all(|k| {
            matches!(
                k,
                StmtKind::Select
                    | StmtKind::Insert
                    | StmtKind::Update
                    | StmtKind::Delete
                    | StmtKind::Merge
                    | StmtKind::Show
                    | StmtKind::Explain
                    | StmtKind::Empty
                    | StmtKind::Transaction
                    | StmtKind::CopyFrom
                    | StmtKind::CopyTo
                    | StmtKind::Listen
                    | StmtKind::Notify
                    | StmtKind::Lock
                    | StmtKind::Truncate
            )
        })
}

impl Session {
    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.stats));
    }

    /// Statement text as the audit may keep it: with detector hits masked when a mask rule
    /// applies to the session.
    fn audit_text(&self, text: &str) -> String {
        lock(&self.pipeline)
            .mask_for_audit(text)
            .unwrap_or_else(|| text.to_string())
    }

    /// [`Session::audit_text`] for a classified statement's text: shared, not copied, when
    /// nothing is masked (every Execute of a prepared statement audits the same text).
    fn audit_text_shared(&self, text: &Arc<str>) -> Arc<str> {
        match lock(&self.pipeline).mask_for_audit(text) {
            Some(masked) => masked.into(),
            None => Arc::clone(text),
        }
    }

    fn base_event(&self, kind: &'static str) -> Event {
        Event::new(kind).encoded(&self.audit_ids.0)
    }

    /// The `statement` event of a completed statement (and its latency, observed).
    pub(super) fn completion_event(&self, c: Completion) -> Event {
        if c.executed && c.answered {
            self.counters.statement_latency.observe(c.elapsed);
        }
        let info = &c.info;
        // A prepared statement's own fields are the same for every execution: encoded once and
        // kept on it. A simple-protocol one runs once: encoded straight into its event.
        let fields = (info.protocol == "extended").then(|| {
            info.audit
                .get_or_init(|| Encoded::of(&self.statement_fields(Event::new(""), info)))
        });
        // Room for the whole event, so it is one allocation: the session's names, the
        // statement's fields (their text plus at most ~200 bytes of names and lists, which the
        // audit format caps), and the outcome (executed, duration, rows: under 64 bytes).
        let own = fields.map_or(256 + info.text.len(), |f| f.as_str().len());
        let room = self.audit_ids.0.as_str().len() + own + 64;
        let ev = Event::with_room("statement", room).encoded(&self.audit_ids.0);
        let ev = match fields {
            Some(fields) => ev.encoded(fields),
            None => self.statement_fields(ev, info),
        };
        // Unanswered (the session ended first): whether it ran is not known, so no `executed`.
        let ev = if c.answered {
            ev.encoded_bool(audit_key!("executed"), c.executed)
        } else {
            ev.encoded_bool(audit_key!("answered"), false)
        };
        let mut ev = ev.encoded_uint(
            audit_key!("duration_us"),
            u64::try_from(c.elapsed.as_micros()).unwrap_or(u64::MAX),
        );
        if let Some(rows) = c.rows {
            ev = ev.encoded_uint(audit_key!("rows"), rows);
        }
        if let Some((code, msg)) = c.error {
            ev = ev.str("error_code", code).str("error", msg);
        }
        ev
    }

    /// The fields a completed statement's event has of its own (the audit format caps long
    /// strings itself, and marks them).
    fn statement_fields(&self, ev: Event, info: &Classified) -> Event {
        let masked = lock(&self.pipeline).mask_for_audit(&info.text);
        ev.encoded_str(audit_key!("protocol"), info.protocol)
            .encoded_str(audit_key!("text"), masked.as_deref().unwrap_or(&info.text))
            .encoded_names(audit_key!("kinds"), info.kinds.iter().map(StmtKind::as_str))
            .encoded_list(audit_key!("tables"), &info.tables)
            .encoded_names(audit_key!("flags"), info.flags.names())
            .encoded_str(audit_key!("decision"), "allow")
            .encoded_opt_str(audit_key!("rule"), info.rule.as_deref())
    }

    /// Queues `ev` if the audit queue has room (the common case: no future, no wait). Gives it
    /// back when the queue is full, for [`Session::audit_record`] to wait with.
    pub(super) fn try_audit_record(&self, ev: Event) -> Result<(), Event> {
        self.gw.audit.try_record(ev)
    }

    /// Queues `ev`, waiting for room: if the audit writer falls behind, the session waits rather
    /// than dropping the event (back-pressure).
    pub(super) async fn audit_record(&self, ev: Event) {
        let _ = self.gw.audit.record(ev).await;
    }

    /// Classify `text` as the server will see it. When the lexer can't be trusted (the session
    /// changed standard_conforming_strings or client_encoding), every statement is Unknown.
    fn classify(&self, text: &str) -> Vec<Statement> {
        if !lock(&self.pipeline).lexer_trusted() {
            return vec![Statement::unknown(0..text.len())];
        }
        sql::classify(text)
    }

    /// What a statement really does: EXECUTE of an SQL-level prepared statement also does what was
    /// prepared (its kinds, tables and flags are merged in); an unknown name is Unknown.
    fn resolve(&self, stmt: &mut Statement) {
        if let Some(PreparedRef::Execute(name)) = &stmt.prepared {
            match lock(&self.tables).sql_prepared.get(name) {
                Some(p) => {
                    stmt.kinds = stmt.kinds.union(p.kinds);
                    stmt.flags = stmt.flags.union(p.flags);
                    stmt.tables.extend(p.tables.iter().cloned());
                }
                None => stmt.kinds.insert(StmtKind::Unknown),
            }
        }
    }

    fn next_marker(&self) -> String {
        let n = self.tables_mut(|t| {
            t.markers += 1;
            t.markers
        });
        format!("PORTCULLIS_BLOCKED_{}_{}", self.id, n)
    }

    fn tables_mut<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> R {
        f(&mut lock(&self.tables))
    }

    /// The ErrorResponse a refused statement gets.
    fn refusal_error(&self, code: &str, rule: Option<&str>, message: &str) -> Vec<u8> {
        let text = format!("portcullis: {message}");
        let detail = rule.map(|r| format!("rule: {r}"));
        let mut out = Vec::new();
        codec::encode_error(&mut out, "ERROR", code, &text, detail.as_deref(), None);
        out
    }

    /// The statement of `frame` (tag `tag`) when it is an Execute that needs no wait: its portal
    /// was bound through the gateway, and its statement is neither held for approval nor able to
    /// write (those wait for an approval or a durable audit record). The relay then admits it in
    /// place with [`Session::admit_now`], like Bind and Sync (see `relay::never_waits`), decoding
    /// the message and looking the portal up once.
    pub(super) fn read_only_execute(&self, tag: u8, frame: &[u8]) -> Option<Arc<Classified>> {
        if tag != b'E' {
            return None;
        }
        let body = frame.get(5..).unwrap_or_default();
        let Ok(Frontend::Execute { portal, .. }) = codec::decode_frontend(tag, body) else {
            return None;
        };
        lock(&self.tables)
            .portals
            .get(portal)
            .filter(|p| p.info.hold.is_none() && !p.info.kinds.may_write())
            .map(|p| p.info.clone())
    }

    async fn on_client_message(&self, tag: u8, frame: &[u8]) -> Verdict {
        // split_frame guarantees the 5-byte header.
        let body = frame.get(5..).unwrap_or_default();
        if tag == b'B' {
            return self.on_bind(body);
        }
        let msg = match codec::decode_frontend(tag, body) {
            Ok(m) => m,
            Err(e) => return Verdict::Fatal(format!("invalid message from client: {e}")),
        };
        match msg {
            Frontend::Query { sql } => self.on_query(sql.to_string()).await,
            Frontend::Parse { name, sql, .. } => {
                self.on_parse(name.to_string(), sql.to_string()).await
            }
            // Decoded by `on_bind`, above.
            Frontend::Bind { .. } => Verdict::Fatal("internal: Bind decoded twice".into()),
            Frontend::Execute { portal, .. } => self.on_execute(portal).await,
            Frontend::Close { kind, name } => {
                self.tables_mut(|t| {
                    if kind == b'S' {
                        t.prepared.remove(name);
                    } else {
                        t.portals.remove(name);
                    }
                });
                Verdict::Forward
            }
            Frontend::Sync => {
                let check = self.tables_mut(|t| std::mem::take(&mut t.batch_lexer_check));
                match lock(&self.pipeline).push_sync(check) {
                    Ok(()) => Verdict::Forward,
                    Err(e) => Verdict::Fatal(e.to_string()),
                }
            }
            Frontend::FunctionCall { oid } => self.on_function_call(oid).await,
            Frontend::Describe { .. } | Frontend::Flush | Frontend::Terminate => Verdict::Forward,
            Frontend::CopyData(_) | Frontend::CopyDone | Frontend::CopyFail { .. } => {
                Verdict::Forward
            }
            Frontend::Password(_) => {
                Verdict::Fatal("unexpected password message after authentication".into())
            }
            Frontend::Unknown(t) => {
                Verdict::Fatal(format!("unsupported message type {:?}", char::from(t)))
            }
        }
    }
}

/// What [`Session::query_now`] made of a Query message.
enum QueryNow {
    /// Handled: what to do with the message.
    Done(Verdict),
    /// It must wait (a write's durable intent, an approval, a refusal's record): its text and
    /// judgement, for [`Session::query_judged`].
    Later(String, Vec<Judged>),
}

/// One statement with what the policy said about it.
struct Judged {
    /// Resolved: an EXECUTE carries what its PREPARE does.
    stmt: Statement,
    decision: policy::Decision,
}

impl Session {
    /// Decide every statement of `text` with the current policy. `Err` ends the session (the
    /// identity or target was removed from the policy).
    fn judge(&self, text: &str, stmts: Vec<Statement>) -> Result<Vec<Judged>, String> {
        let mut cache = lock(&self.policy);
        let (loaded, place) = self.gw.loaded_cached(&mut cache, |loaded| {
            let p = &loaded.policy;
            let name = &self.identity.name;
            PolicyPlace {
                identity: p
                    .active_identity(name)
                    .and_then(|_| p.identities.iter().position(|i| &i.name == name)),
                target: p.targets.iter().position(|t| t.name == self.target.name),
            }
        });
        let policy = &loaded.policy;
        let identity = place
            .identity
            .and_then(|i| policy.identities.get(i))
            .ok_or("identity removed from the policy")?;
        let target = place
            .target
            .and_then(|i| policy.targets.get(i))
            .ok_or("target removed from the policy")?;
        Ok(stmts
            .into_iter()
            .map(|mut stmt| {
                self.resolve(&mut stmt);
                let piece = text.get(stmt.span.clone()).unwrap_or(text);
                let mut decision =
                    policy::decide(policy, identity, target, &stmt, stmt.kinds, piece);
                // COPY output has no column names: masked columns could not be found in it.
                if stmt.kinds.contains(StmtKind::CopyTo)
                    && decision.action == Action::Allow
                    && lock(&self.pipeline).masks_columns()
                {
                    decision = policy::Decision {
                        action: Action::Block,
                        rule: Some("mask".into()),
                        message: Some(
                            "COPY TO is not available where columns are masked; use SELECT".into(),
                        ),
                    };
                }
                // The upstream session was opened read-only at connect time; keep refusing what
                // would lift it even if a reload changed the policy since.
                if self.read_only && stmt.flags.contains(Flags::LIFTS_READ_ONLY) && decision.action == Action::Allow {
                    decision = policy::Decision {
                        action: Action::Block,
                        rule: Some("read_only".into()),
                        message: Some("this session is read-only; statements that would make it writable are refused".into()),
                    };
                }
                Judged { stmt, decision }
            })
            .collect())
    }

    /// The first refused statement of a batch, if any.
    fn first_refusal(judged: &[Judged]) -> Option<&Judged> {
        judged.iter().find(|j| j.decision.action != Action::Allow)
    }

    async fn audit_refusal(&self, text: &str, judged: &[Judged], protocol: &'static str) {
        for j in judged.iter().filter(|j| j.decision.action != Action::Allow) {
            let piece = text.get(j.stmt.span.clone()).unwrap_or(text);
            let ev = self
                .base_event("statement_refused")
                .str("protocol", protocol)
                .str("text", self.audit_text(piece))
                .names("kinds", j.stmt.kinds.iter().map(StmtKind::as_str))
                .list("tables", j.stmt.tables.clone())
                .names("flags", j.stmt.flags.names())
                .str("decision", j.decision.action.as_str())
                .opt_str("rule", j.decision.rule.clone())
                .opt_str("message", j.decision.message.clone());
            let _ = self.gw.audit.record(ev).await;
            self.bump(|s| s.blocked += 1);
            let counter = match j.decision.action {
                Action::Approve => &self.counters.statements_held,
                _ => &self.counters.statements_blocked,
            };
            counter.add(1);
        }
    }

    /// Make the audit event of a statement that may write durable before it is forwarded.
    async fn audit_intent(&self, info: &Classified) -> bool {
        let ev = self
            .base_event("statement_intent")
            .str("protocol", info.protocol)
            .shared("text", &self.audit_text_shared(&info.text))
            .names("kinds", info.kinds.iter().map(StmtKind::as_str))
            .list("tables", info.tables.clone())
            .opt_str("rule", info.rule.clone());
        self.gw.audit.record_durable(ev).await.is_ok()
    }

    /// Replace a refused message: the marker goes upstream and its syntax error comes back as ours.
    fn refuse(&self, rule: Option<&str>, message: &str, as_parse: bool, sync: bool) -> Verdict {
        self.refuse_with("42501", rule, message, as_parse, sync)
    }

    /// Replace a refused message with a marker whose syntax error comes back as `code`/`message`.
    fn refuse_with(
        &self,
        code: &str,
        rule: Option<&str>,
        message: &str,
        as_parse: bool,
        sync: bool,
    ) -> Verdict {
        let marker = self.next_marker();
        let error = self.refusal_error(code, rule, message);
        let mut bytes = Vec::with_capacity(64);
        if as_parse {
            codec::encode_parse(&mut bytes, "", &marker, &[]);
        } else {
            codec::encode_query(&mut bytes, &marker);
        }
        let mut p = lock(&self.pipeline);
        if let Err(e) = p.push_blocked(marker, error) {
            return Verdict::Fatal(e.to_string());
        }
        if sync {
            if let Err(e) = p.push_sync(false) {
                return Verdict::Fatal(e.to_string());
            }
        }
        Verdict::Replace(bytes)
    }

    fn refusal_of(j: &Judged) -> (Action, Option<String>, String) {
        let message = j
            .decision
            .message
            .clone()
            .unwrap_or_else(|| "statement refused by policy".into());
        (j.decision.action, j.decision.rule.clone(), message)
    }

    async fn on_query(&self, text: String) -> Verdict {
        let stmts = self.classify(&text);
        let judged = match self.judge(&text, stmts) {
            Ok(j) => j,
            Err(e) => return Verdict::Fatal(e),
        };
        self.query_judged(text, judged).await
    }

    /// A simple-protocol Query, handled in place when it can be: the relay's path for every
    /// Query message. A query whose statements are all allowed and none can write needs no
    /// wait (no durable intent, no approval, no refusal record), so it is admitted here without
    /// boxing a future or copying the message; anything else comes back judged, for
    /// [`Session::query_judged`] to finish.
    fn query_now(&self, frame: &[u8]) -> QueryNow {
        // split_frame guarantees the 5-byte header.
        let body = frame.get(5..).unwrap_or_default();
        let text = match codec::decode_frontend(b'Q', body) {
            Ok(Frontend::Query { sql }) => sql,
            Ok(_) => return QueryNow::Done(Verdict::Fatal("internal: not a Query".into())),
            Err(e) => {
                return QueryNow::Done(Verdict::Fatal(format!("invalid message from client: {e}")))
            }
        };
        let stmts = self.classify(text);
        let judged = match self.judge(text, stmts) {
            Ok(j) => j,
            Err(e) => return QueryNow::Done(Verdict::Fatal(e)),
        };
        let waits = judged
            .iter()
            .any(|j| j.decision.action != Action::Allow || j.stmt.kinds.may_write());
        if waits {
            return QueryNow::Later(text.to_string(), judged);
        }
        let (infos, lexer_check) = self.query_infos(text, judged);
        self.push_query(infos, lexer_check)
            .map_or_else(QueryNow::Done, |()| QueryNow::Done(Verdict::Forward))
    }

    /// The rest of a judged Query: a hold for approval, a refusal, or durable intents for what
    /// may write, then admission.
    async fn query_judged(&self, text: String, judged: Vec<Judged>) -> Verdict {
        if let Some(j) = Self::first_refusal(&judged) {
            if judged.iter().all(|j| j.decision.action != Action::Block) {
                // Only `approve` refusals: hold the whole query string for a human.
                return self.hold_query(text, judged).await;
            }
            let (_, rule, message) = Self::refusal_of(j);
            self.audit_refusal(&text, &judged, "simple").await;
            return self.refuse(rule.as_deref(), &message, false, true);
        }
        self.admit_query(text, judged).await
    }

    /// Forward an allowed (or approved) query string: durable intent events for what may write,
    /// then one pipeline entry per statement.
    async fn admit_query(&self, text: String, judged: Vec<Judged>) -> Verdict {
        let (infos, lexer_check) = self.query_infos(&text, judged);
        for info in infos.iter().filter(|i| i.kinds.may_write()) {
            if !self.audit_intent(info).await {
                return self.refuse(
                    None,
                    "the audit log is unavailable; statements that may write are refused",
                    false,
                    true,
                );
            }
        }
        match self.push_query(infos, lexer_check) {
            Ok(()) => Verdict::Forward,
            Err(v) => v,
        }
    }

    /// The pipeline entries of an allowed query's statements (SQL-level PREPARE and DEALLOCATE
    /// are noted on the way), and whether the batch may change how later SQL is lexed.
    fn query_infos(&self, text: &str, judged: Vec<Judged>) -> (Vec<Arc<Classified>>, bool) {
        let mut lexer_check = false;
        let mut infos = Vec::with_capacity(judged.len());
        for j in judged {
            lexer_check |= !lexer_safe(j.stmt.kinds, j.stmt.flags);
            self.tables_mut(|t| match &j.stmt.prepared {
                Some(PreparedRef::Define(name)) if t.sql_prepared.len() < MAX_PREPARED => {
                    let p = SqlPrepared {
                        kinds: j.stmt.kinds,
                        tables: j.stmt.tables.clone(),
                        flags: j.stmt.flags,
                    };
                    t.sql_prepared.insert(name.clone(), p);
                }
                Some(PreparedRef::Deallocate(Some(name))) => {
                    t.sql_prepared.remove(name);
                }
                Some(PreparedRef::Deallocate(None)) => t.sql_prepared.clear(),
                _ => {}
            });
            let piece = text.get(j.stmt.span.clone()).unwrap_or(text);
            infos.push(Arc::new(Classified {
                text: piece.into(),
                kinds: j.stmt.kinds,
                tables: j.stmt.tables,
                flags: j.stmt.flags,
                rule: j.decision.rule,
                protocol: "simple",
                hold: None,
                audit: std::sync::OnceLock::new(),
            }));
        }
        (infos, lexer_check)
    }

    /// Counts the statements of an admitted query and queues them (and the query's Sync) for
    /// their completions. `Err`: the verdict that ends the session.
    fn push_query(&self, infos: Vec<Arc<Classified>>, lexer_check: bool) -> Result<(), Verdict> {
        let now = Instant::now();
        let mut p = lock(&self.pipeline);
        for info in infos {
            self.bump(|s| s.statements += 1);
            self.counters.statements_allowed.add(1);
            p.push_stmt(info, now)
                .map_err(|e| Verdict::Fatal(e.to_string()))?;
        }
        p.push_sync(lexer_check)
            .map_err(|e| Verdict::Fatal(e.to_string()))
    }

    async fn on_parse(&self, name: String, text: String) -> Verdict {
        let stmts = self.classify(&text);
        let judged = match self.judge(&text, stmts) {
            Ok(j) => j,
            Err(e) => return Verdict::Fatal(e),
        };
        let mut hold = None;
        if let Some(j) = Self::first_refusal(&judged) {
            if judged.iter().all(|j| j.decision.action != Action::Block) {
                // Parsing runs nothing: let it through, and hold each Execute for approval of
                // the statement with its parameters.
                let (_, rule, message) = Self::refusal_of(j);
                hold = Some(HoldRule {
                    rule: rule.unwrap_or_default(),
                    message,
                });
            } else {
                let (_, rule, message) = Self::refusal_of(j);
                self.audit_refusal(&text, &judged, "extended").await;
                return self.refuse(rule.as_deref(), &message, true, false);
            }
        }
        if lock(&self.tables).prepared.len() >= MAX_PREPARED
            && !lock(&self.tables).prepared.contains_key(&name)
        {
            return self.refuse(
                None,
                "too many prepared statements in this session",
                true,
                false,
            );
        }
        // PostgreSQL refuses several commands in one Parse; merge them anyway, fail-closed.
        let mut kinds = KindSet::empty();
        let mut tables = Vec::new();
        let mut flags = Flags::empty();
        let mut rule = None;
        for j in judged {
            kinds = kinds.union(j.stmt.kinds);
            flags = flags.union(j.stmt.flags);
            tables.extend(j.stmt.tables);
            rule = rule.or(j.decision.rule);
        }
        let info = Arc::new(Classified {
            text: text.into(),
            kinds,
            tables,
            flags,
            rule,
            protocol: "extended",
            hold,
            audit: std::sync::OnceLock::new(),
        });
        self.tables_mut(|t| {
            t.batch_lexer_check |= !lexer_safe(kinds, flags);
            t.prepared.insert(name, info);
        });
        Verdict::Forward
    }

    /// A Bind: the portal now runs the statement (its parameters are kept only when an approval
    /// must cover them, so the common Bind is checked without collecting them).
    fn on_bind(&self, body: &[u8]) -> Verdict {
        let (portal, statement) = match codec::decode_bind_names(body) {
            Ok(names) => names,
            Err(e) => return Verdict::Fatal(format!("invalid message from client: {e}")),
        };
        self.tables_mut(|t| {
            let info = t.prepared.get(statement).cloned().or_else(|| {
                // A statement made with SQL-level PREPARE can be bound too.
                t.sql_prepared.get(statement).map(|p| {
                    Arc::new(Classified {
                        text: format!("EXECUTE {statement} -- bound through the extended protocol")
                            .into(),
                        kinds: p.kinds,
                        tables: p.tables.clone(),
                        flags: p.flags,
                        rule: None,
                        protocol: "extended",
                        hold: None,
                        audit: std::sync::OnceLock::new(),
                    })
                })
            });
            match info {
                Some(info) if t.portals.len() < MAX_PREPARED || t.portals.get(portal).is_some() => {
                    let params = match &info.hold {
                        None => None,
                        Some(_) => match codec::decode_frontend(b'B', body) {
                            Ok(Frontend::Bind { params, .. }) => Some(
                                params
                                    .values
                                    .iter()
                                    .map(|v| v.map(<[u8]>::to_vec))
                                    .collect(),
                            ),
                            // decode_bind_names accepted it: the full decode can't refuse it.
                            _ => {
                                return Verdict::Fatal("internal: Bind decoded differently".into())
                            }
                        },
                    };
                    t.portals.insert(portal, Portal { info, params });
                }
                _ => t.portals.remove(portal),
            }
            Verdict::Forward
        })
    }

    async fn on_execute(&self, portal: &str) -> Verdict {
        let found = lock(&self.tables)
            .portals
            .get(portal)
            .map(|p| (p.info.clone(), p.params.clone()));
        let Some((info, params)) = found else {
            // Every portal the gateway allowed was seen at Bind; an unknown one (a cursor made by
            // DECLARE, or a Bind of an unknown statement) is refused rather than run unseen.
            return self.refuse(
                None,
                &format!("portal {portal:?} was not prepared through the gateway"),
                true,
                false,
            );
        };
        if let Some(rule) = &info.hold {
            let rule = rule.clone();
            return self
                .hold_execute(info, params.unwrap_or_default(), rule)
                .await;
        }
        self.admit_execute(info).await
    }

    async fn admit_execute(&self, info: Arc<Classified>) -> Verdict {
        if info.kinds.may_write() && !self.audit_intent(&info).await {
            return self.refuse(
                None,
                "the audit log is unavailable; statements that may write are refused",
                true,
                false,
            );
        }
        self.admit_now(info)
    }

    /// Counts an allowed statement and queues it for its completion; nothing here waits.
    fn admit_now(&self, info: Arc<Classified>) -> Verdict {
        self.bump(|s| s.statements += 1);
        self.counters.statements_allowed.add(1);
        match lock(&self.pipeline).push_stmt(info, Instant::now()) {
            Ok(()) => Verdict::Forward,
            Err(e) => Verdict::Fatal(e.to_string()),
        }
    }

    async fn on_function_call(&self, oid: u32) -> Verdict {
        let text = format!("-- function call (fast-path) oid {oid}");
        let stmt = Statement {
            kinds: KindSet::one(StmtKind::FastPath),
            tables: Vec::new(),
            flags: Flags::empty(),
            span: 0..text.len(),
            prepared: None,
        };
        let judged = match self.judge(&text, vec![stmt]) {
            Ok(j) => j,
            Err(e) => return Verdict::Fatal(e),
        };
        if let Some(j) = Self::first_refusal(&judged) {
            let (_, rule, message) = Self::refusal_of(j);
            self.audit_refusal(&text, &judged, "fastpath").await;
            return self.refuse(rule.as_deref(), &message, false, true);
        }
        let rule = judged.into_iter().next().and_then(|j| j.decision.rule);
        let info = Arc::new(Classified {
            text: text.into(),
            kinds: KindSet::one(StmtKind::FastPath),
            tables: Vec::new(),
            flags: Flags::empty(),
            rule,
            protocol: "fastpath",
            hold: None,
            audit: std::sync::OnceLock::new(),
        });
        if !self.audit_intent(&info).await {
            return self.refuse(
                None,
                "the audit log is unavailable; statements that may write are refused",
                false,
                true,
            );
        }
        self.bump(|s| s.statements += 1);
        self.counters.statements_allowed.add(1);
        let mut p = lock(&self.pipeline);
        if let Err(e) = p
            .push_stmt(info, Instant::now())
            .and_then(|_| p.push_sync(true))
        {
            return Verdict::Fatal(e.to_string());
        }
        Verdict::Forward
    }
}
