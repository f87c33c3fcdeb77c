//! The audit log: every session, statement and decision as a JSON event, hash-chained, in the store.
//!
//! Producers hold a cloneable [`Audit`] and queue [`Event`]s on a bounded channel; one writer thread
//! (see `writer.rs`) appends them with group commit. [`Audit::record_durable`] returns once the
//! event is on disk (use it before forwarding anything that may write); [`Audit::record`] returns
//! once the event is queued, and the event is durable within the flush interval. Neither drops
//! events: a full queue makes producers wait.
//!
//! Stored line (also the export format, one per line):
//! `{"seq":N,"ts":"2026-11-27T09:30:00.123Z","kind":"...", ...fields..., "prev":"<hex SHA-256 of the
//! previous line>"}`; the first line's `prev` is 64 zeros. See `chain.rs` for what verify checks.

mod chain;
mod format;
mod writer;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use smol::channel::{self, Receiver, Sender};

use crate::store::{Store, StoreError};
use writer::{Job, Stats};

pub use chain::{export, export_lines, verify, Broken, Problem, VerifyReport};
pub use format::{line_seq, rfc3339_millis, MAX_LIST_ITEMS, MAX_STR_BYTES};
pub use writer::MAX_BATCH;

/// Events queued at most by default (`[gateway] audit_queue`); producers wait beyond this
/// (back-pressure).
pub const QUEUE_CAPACITY: usize = 65_536;

/// A field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Null,
    List(Vec<String>),
    /// A string shared by many events (a session's id, identity, target): no copy per event.
    Shared(Arc<str>),
    /// A list of names known at compile time (statement kinds, flags): no allocation per item.
    Names(Vec<&'static str>),
    /// Fields encoded once and spliced into every line that carries them (the field's own name
    /// is not written): see [`Encoded`].
    Encoded(Encoded),
}

/// Fields already encoded as they appear in a line (`"k":v,"k2":v2`), shared by many events: a
/// session's names, a prepared statement's text and classification. Encoding them once moves
/// the escaping and the allocations out of the per-statement path; the line is byte for byte
/// what the same fields given one by one would make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(Arc<str>);

impl Encoded {
    /// The fields of `ev` (its kind is ignored), encoded.
    pub fn of(ev: &Event) -> Encoded {
        let mut out = String::with_capacity(256);
        out.push_str(ev.encoded_fields());
        format::push_fields(&mut out, &ev.fields);
        Encoded(out.into())
    }

    /// The encoded fields, each preceded by a comma (empty if there are none).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Bytes of the encoded fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A field name for the `encoded_*` methods of [`Event`], written as `,"name":` into the line
/// without a look at run time: [`audit_key!`](crate::audit_key) renders and checks it when the
/// program is compiled (plain ASCII that needs no escape, and not a name the line itself uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    name: &'static str,
    rendered: &'static str,
}

impl Key {
    /// Use [`audit_key!`](crate::audit_key), which calls this in a constant: a bad name is a
    /// compile error. Panics unless `name` is 1 to 64 bytes of `a-z`, `0-9` and `_`, not `seq`,
    /// `ts`, `kind` or `prev`, and `rendered` is `,"name":`.
    #[doc(hidden)]
    pub const fn checked(name: &'static str, rendered: &'static str) -> Key {
        assert!(
            format::is_plain_key(name),
            "an audit key is 1 to 64 bytes of a-z, 0-9 and _, and not seq, ts, kind or prev"
        );
        assert!(
            format::renders_key(name, rendered),
            "a key renders as ,\"name\":"
        );
        Key { name, rendered }
    }

    /// The field's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The [`Key`] `name`, checked when the program is compiled: `audit_key!("rows")`.
#[macro_export]
macro_rules! audit_key {
    ($name:literal) => {{
        const KEY: $crate::audit::Key =
            $crate::audit::Key::checked($name, concat!(",\"", $name, "\":"));
        KEY
    }};
}

/// One audit event: a kind (`"session_start"`, `"statement"`, `"token_issued"`, ...) and named
/// fields, written in order. Field names `seq`, `ts`, `kind` and `prev` are taken by the line and
/// get a leading `_`. Strings longer than [`MAX_STR_BYTES`] are cut and marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: &'static str,
    /// Fields encoded as they were added ([`Event::encoded`], [`Event::encoded_uint`], ...),
    /// written before `fields`.
    encoded: String,
    pub fields: Vec<(&'static str, Value)>,
}

impl Event {
    pub fn new(kind: &'static str) -> Event {
        Event {
            kind,
            encoded: String::new(),
            fields: Vec::new(),
        }
    }
    /// An event whose fields are all encoded as they are added, with room for `bytes` of them:
    /// one allocation, and nothing shared with the audit writer's thread (a hot path's event).
    pub fn with_room(kind: &'static str, bytes: usize) -> Event {
        Event {
            kind,
            encoded: String::with_capacity(bytes),
            fields: Vec::new(),
        }
    }
    /// Fields encoded earlier (see [`Encoded`]), copied into this event. Encoded fields come
    /// before the others: after a plain field (`str`, `uint`, ...) this one is kept as a field
    /// too, so the line's order is always the order of the calls.
    pub fn encoded(mut self, v: &Encoded) -> Event {
        if self.fields.is_empty() {
            self.encoded.push_str(v.as_str());
        } else {
            self.fields.push(("", Value::Encoded(v.clone())));
        }
        self
    }
    /// [`Event::uint`], encoded at once (see [`Event::encoded`] for the order).
    pub fn encoded_uint(self, k: Key, v: u64) -> Event {
        self.encode_now(k, Value::UInt(v))
    }
    /// [`Event::bool`], encoded at once (see [`Event::encoded`] for the order).
    pub fn encoded_bool(self, k: Key, v: bool) -> Event {
        self.encode_now(k, Value::Bool(v))
    }
    /// [`Event::str`], encoded at once from a borrowed string (see [`Event::encoded`] for the
    /// order).
    pub fn encoded_str(mut self, k: Key, v: &str) -> Event {
        if !self.fields.is_empty() {
            return self.str(k.name, v);
        }
        self.encoded.push_str(k.rendered);
        format::push_str_value(&mut self.encoded, v);
        self
    }
    /// [`Event::opt_str`], encoded at once (see [`Event::encoded`] for the order).
    pub fn encoded_opt_str(self, k: Key, v: Option<&str>) -> Event {
        match v {
            Some(v) => self.encoded_str(k, v),
            None => self.encode_now(k, Value::Null),
        }
    }
    /// [`Event::names`], encoded at once (see [`Event::encoded`] for the order).
    pub fn encoded_names(mut self, k: Key, v: impl IntoIterator<Item = &'static str>) -> Event {
        if !self.fields.is_empty() {
            return self.names(k.name, v);
        }
        self.encoded.push_str(k.rendered);
        format::push_list_iter(&mut self.encoded, v);
        self
    }
    /// [`Event::list`], encoded at once from borrowed items (see [`Event::encoded`] for the
    /// order).
    pub fn encoded_list(mut self, k: Key, v: &[String]) -> Event {
        if !self.fields.is_empty() {
            return self.list(k.name, v.to_vec());
        }
        self.encoded.push_str(k.rendered);
        format::push_list_iter(&mut self.encoded, v.iter().map(String::as_str));
        self
    }
    fn encode_now(mut self, k: Key, v: Value) -> Event {
        if self.fields.is_empty() {
            self.encoded.push_str(k.rendered);
            format::push_value(&mut self.encoded, &v);
        } else {
            self.fields.push((k.name, v));
        }
        self
    }
    /// The fields encoded as they were added.
    pub(crate) fn encoded_fields(&self) -> &str {
        &self.encoded
    }
    pub fn str(mut self, k: &'static str, v: impl Into<String>) -> Event {
        self.fields.push((k, Value::Str(v.into())));
        self
    }
    pub fn uint(mut self, k: &'static str, v: u64) -> Event {
        self.fields.push((k, Value::UInt(v)));
        self
    }
    pub fn int(mut self, k: &'static str, v: i64) -> Event {
        self.fields.push((k, Value::Int(v)));
        self
    }
    pub fn bool(mut self, k: &'static str, v: bool) -> Event {
        self.fields.push((k, Value::Bool(v)));
        self
    }
    pub fn list(mut self, k: &'static str, v: Vec<String>) -> Event {
        self.fields.push((k, Value::List(v)));
        self
    }
    /// `null` when `None`.
    pub fn opt_str(mut self, k: &'static str, v: Option<impl Into<String>>) -> Event {
        self.fields
            .push((k, v.map_or(Value::Null, |s| Value::Str(s.into()))));
        self
    }
    /// A string shared with other events (see [`Value::Shared`]).
    pub fn shared(mut self, k: &'static str, v: &Arc<str>) -> Event {
        self.fields.push((k, Value::Shared(Arc::clone(v))));
        self
    }
    /// A list of static names (see [`Value::Names`]).
    pub fn names(mut self, k: &'static str, v: impl IntoIterator<Item = &'static str>) -> Event {
        self.fields.push((k, Value::Names(v.into_iter().collect())));
        self
    }
    /// `null` when `None`.
    pub fn opt_uint(mut self, k: &'static str, v: Option<u64>) -> Event {
        self.fields.push((k, v.map_or(Value::Null, Value::UInt)));
        self
    }
}

/// Why an event could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditError {
    /// The writer has stopped (shutdown, or it died).
    Closed,
    /// The commit that held the event failed; the event is not in the log.
    Commit(String),
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::Closed => f.write_str("the audit log is closed"),
            AuditError::Commit(e) => write!(f, "the audit log could not be written: {e}"),
        }
    }
}

impl std::error::Error for AuditError {}

/// The producers' handle: clone it freely.
#[derive(Clone)]
pub struct Audit {
    tx: Sender<Job>,
    stats: Arc<Stats>,
    /// The writer thread, unparked when a durable record is queued (see `writer::run`).
    writer: std::thread::Thread,
}

impl fmt::Debug for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audit")
            .field("queued", &self.tx.len())
            .finish_non_exhaustive()
    }
}

impl Audit {
    /// Queues `ev` and waits until a `Durability::Immediate` commit holding it has returned.
    /// Returns its sequence number.
    ///
    /// # Errors
    /// [`AuditError::Commit`] if that commit failed (don't run what the event describes), or
    /// [`AuditError::Closed`].
    pub async fn record_durable(&self, ev: Event) -> Result<u64, AuditError> {
        let (reply, answer) = channel::bounded(1);
        self.tx
            .send(Job {
                ev,
                reply: Some(reply),
                ts_ms: Some(writer::now_ms()),
            })
            .await
            .map_err(|_| AuditError::Closed)?;
        self.writer.unpark();
        answer.recv().await.map_err(|_| AuditError::Closed)?
    }

    /// Queues `ev`; it is durable within the flush interval. Waits only for queue space.
    ///
    /// # Errors
    /// [`AuditError::Closed`].
    pub async fn record(&self, ev: Event) -> Result<(), AuditError> {
        self.tx
            .send(Job {
                ev,
                reply: None,
                ts_ms: Some(writer::now_ms()),
            })
            .await
            .map_err(|_| AuditError::Closed)
    }

    /// [`record`](Self::record) without waiting: queues `ev` if the queue has room, else gives it
    /// back (the caller then waits with `record`). An event for a closed log is dropped, as
    /// `record` would report and callers ignore.
    ///
    /// # Errors
    /// The event itself, when the queue is full.
    pub fn try_record(&self, ev: Event) -> Result<(), Event> {
        match self.tx.try_send(Job {
            ev,
            reply: None,
            ts_ms: Some(writer::now_ms()),
        }) {
            Ok(()) | Err(channel::TrySendError::Closed(_)) => Ok(()),
            Err(channel::TrySendError::Full(job)) => Err(job.ev),
        }
    }

    /// [`record_durable`](Self::record_durable) for threads and the CLI (blocks this thread).
    ///
    /// # Errors
    /// As `record_durable`.
    pub fn record_blocking(&self, ev: Event) -> Result<u64, AuditError> {
        let (reply, answer) = channel::bounded(1);
        self.tx
            .send_blocking(Job {
                ev,
                reply: Some(reply),
                ts_ms: Some(writer::now_ms()),
            })
            .map_err(|_| AuditError::Closed)?;
        self.writer.unpark();
        answer.recv_blocking().map_err(|_| AuditError::Closed)?
    }

    /// Failed audit commits since start (for metrics; each failed durable record was also
    /// reported to its caller).
    pub fn commit_failures(&self) -> u64 {
        self.stats.commit_failures.load(Ordering::Relaxed)
    }
}

/// The writer thread. [`shutdown`](Self::shutdown) (or drop) writes what is queued and joins it.
pub struct AuditWriter {
    rx: Receiver<Job>,
    handle: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Stops accepting events, writes everything already queued (durably), joins the thread.
    pub fn shutdown(self) {
        drop(self);
    }

    fn stop(&mut self) {
        self.rx.close();
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the writer thread with the default queue ([`QUEUE_CAPACITY`]) and no retention (every
/// event is kept); see [`start_with`].
///
/// # Errors
/// As [`start_with`].
pub fn start(
    store: Arc<Store>,
    flush_interval: Duration,
) -> Result<(Audit, AuditWriter), StoreError> {
    start_with(store, flush_interval, QUEUE_CAPACITY, None)
}

/// Starts the writer thread. `flush_interval` bounds how long a `record()`ed event may stay
/// non-durable; `queue` is how many events may wait for the writer (at least one); with
/// `retention`, events older than that are deleted (see `writer::run`).
///
/// # Errors
/// The store's audit head is corrupt, or the thread cannot be spawned.
pub fn start_with(
    store: Arc<Store>,
    flush_interval: Duration,
    queue: usize,
    retention: Option<Duration>,
) -> Result<(Audit, AuditWriter), StoreError> {
    // Fail now, not at the first event, if the head is unreadable.
    {
        use redb::ReadableDatabase;
        let txn = store.db().begin_read()?;
        let meta = txn.open_table(crate::store::tables::META)?;
        let head = meta.get(crate::store::tables::META_AUDIT_HEAD)?;
        chain::decode_head(head.as_ref().map(|v| v.value()))?;
    }
    let (tx, rx) = channel::bounded(queue.max(1));
    let stats = Arc::new(Stats {
        commits: AtomicU64::new(0),
        commit_failures: AtomicU64::new(0),
    });
    let thread_rx = rx.clone();
    let thread_stats = stats.clone();
    let handle = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer::run(store, thread_rx, flush_interval, thread_stats, retention))
        .map_err(|source| StoreError::Io {
            path: "audit writer thread".into(),
            source,
        })?;
    let writer = handle.thread().clone();
    Ok((
        Audit { tx, stats, writer },
        AuditWriter {
            rx,
            handle: Some(handle),
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests;
