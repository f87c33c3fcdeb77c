//! The audit writer: ONE std thread owns every audit write, with group commit.
//!
//! Loop: block for the first queued event, drain whatever else is queued (up to [`MAX_BATCH`]),
//! append the batch to the chain in one write transaction, commit, answer the batch's durable
//! waiters. A batch with a durable waiter commits with `Durability::Immediate`. A batch of only
//! `record()` events commits with `Durability::None` (visible to readers at once, one fdatasync
//! saved), and the writer makes sure an `Immediate` commit follows within the flush interval: the
//! next batch, or a flush of its own when idle.
//!
//! Failure: a failed commit answers its durable waiters with an error (the caller fails closed and
//! does not run the statement; its event is not retried) and keeps its `record()` events for the
//! next attempt, so those are delayed, not dropped. The chain head is re-read inside each write
//! transaction, so a failed commit leaves no gap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Durability, ReadableTable};
use smol::channel::{Receiver, Sender, TryRecvError};

use super::chain::{
    decode_head, encode_head, prune, sha256, Pruned, RowBuilder, BLOCK_MAX_BYTES, BLOCK_MAX_LINES,
};
use super::format::{push_line, rfc3339_millis};
use super::{AuditError, Event};
use crate::store::tables::{AUDIT, META, META_AUDIT_HEAD};
use crate::store::{Store, StoreError};

/// Most events in one write transaction.
pub const MAX_BATCH: usize = 4096;
/// How long a batch of only lazily-committed events waits for more before it is written.
/// Each commit costs ~170 us of writer CPU whatever its size (redb page allocation and writes,
/// measured with `examples/audit_bench.rs`); at 20,000 statements/s a 5 ms linger made that
/// ~1.8 us per statement, 20 ms makes it ~0.4. Events carry the time they were queued, so the
/// linger only delays when they become visible to readers, never their timestamps.
const LINGER: Duration = Duration::from_millis(20);
/// A lazy batch this large is written at once.
const LINGER_BATCH: usize = 1024;
/// Pause before retrying after a failed commit (so a full disk is not a busy loop).
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// How often old events are looked for when `[gateway] audit_retention` is set, at most (see
/// [`prune_every`]).
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);
/// Rows deleted per transaction (up to 256 events each): a pass never holds the writer for long
/// while events wait.
const PRUNE_ROWS: usize = 64;

/// The period of pruning passes for a retention: four per retention period, at most
/// [`PRUNE_INTERVAL`] apart, so nothing stays much past its retention.
fn prune_every(keep: Duration) -> Duration {
    (keep / 4).min(PRUNE_INTERVAL)
}

/// One queued event.
pub(crate) struct Job {
    pub(crate) ev: Event,
    /// Set for durable records: answered once the commit holding the event returns.
    pub(crate) reply: Option<Sender<Result<u64, AuditError>>>,
    /// Unix milliseconds when the event was queued (kept across retries); stamped on the first
    /// write attempt if a producer left it unset.
    pub(crate) ts_ms: Option<u64>,
}

pub(crate) struct Stats {
    /// Successful audit commits (batches and flushes).
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
}

/// Waits for the first job of a batch, or `deadline` (a flush or a retry is due). Returns whether
/// the channel is closed and empty.
///
/// Without a deadline it blocks on the channel, until `prune_at` at most (an idle log's old
/// events are still deleted on time). With one, it parks in short steps instead of a timed wait
/// on the channel (which would be a reactor round with timer syscalls per batch); durable
/// records unpark it.
fn wait_first(
    rx: &Receiver<Job>,
    deadline: Option<Instant>,
    prune_at: Option<Instant>,
    batch: &mut Vec<Job>,
) -> bool {
    let Some(at) = deadline else {
        let received = match (prune_at, rx.try_recv()) {
            (_, Ok(j)) => Some(Ok(j)),
            (_, Err(TryRecvError::Closed)) => return true,
            (None, Err(TryRecvError::Empty)) => Some(rx.recv_blocking()),
            // Nothing queued, retention on: a timer, only for a wait that finds the queue
            // empty. Such a wait follows an Immediate commit (this path has no flush pending),
            // whose fdatasync dwarfs the timer's few system calls.
            (Some(t), Err(TryRecvError::Empty)) => {
                smol::block_on(smol::future::or(async { Some(rx.recv().await) }, async {
                    smol::Timer::at(t).await;
                    None
                }))
            }
        };
        return match received {
            Some(Ok(j)) => {
                batch.push(j);
                false
            }
            Some(Err(_)) => true,
            // Time to prune: the loop does it.
            None => false,
        };
    };
    loop {
        match rx.try_recv() {
            Ok(j) => {
                batch.push(j);
                return false;
            }
            Err(TryRecvError::Closed) => return true,
            Err(TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= at {
            return false;
        }
        std::thread::park_timeout((at - now).min(LINGER));
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn run(
    store: Arc<Store>,
    rx: Receiver<Job>,
    flush_interval: Duration,
    stats: Arc<Stats>,
    retention: Option<Duration>,
) {
    // Record events a failed commit left unwritten.
    let mut carry: Vec<Job> = Vec::new();
    let mut scratch = Scratch::default();
    // When the oldest commit not yet followed by an Immediate one happened.
    let mut unsynced_since: Option<Instant> = None;
    let mut failed_at: Option<Instant> = None;
    // With retention: when old events are next looked for (at start, then every
    // `prune_every`, idle or not).
    let mut next_prune = retention.map(|_| Instant::now());
    loop {
        if let (Some(keep), Some(at)) = (retention, next_prune) {
            if Instant::now() >= at {
                next_prune = Some(prune_pass(&store, &rx, keep, &mut carry));
            }
        }
        let deadline = match (failed_at, unsynced_since) {
            (Some(t), _) => Some(t + RETRY_DELAY),
            (None, Some(t)) => Some(t + flush_interval),
            (None, None) => None,
        };
        let mut batch = std::mem::take(&mut carry);
        let closed = if batch.is_empty() {
            wait_first(&rx, deadline, next_prune, &mut batch)
        } else {
            false
        };
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // A batch of reads only waits a moment for company: at low concurrency every statement
        // would otherwise cost its own commit, and that CPU is taken from the data path. The
        // writer parks instead of listening on the channel, so producers of reads queue without
        // waking anyone; a durable record unparks it at once (`Audit::record_durable`).
        if !closed
            && !batch.is_empty()
            && batch.len() < LINGER_BATCH
            && batch.iter().all(|j| j.reply.is_none())
        {
            std::thread::park_timeout(LINGER);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
        }
        let overdue = unsynced_since.is_some_and(|t| t.elapsed() >= flush_interval);
        let durable = closed || overdue || batch.iter().any(|j| j.reply.is_some());

        if batch.is_empty() {
            if durable && unsynced_since.is_some() {
                match sync(&store) {
                    Ok(()) => {
                        stats.commits.fetch_add(1, Ordering::Relaxed);
                        unsynced_since = None;
                    }
                    Err(_) => {
                        stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                        unsynced_since = Some(Instant::now());
                    }
                }
            }
            failed_at = None;
            if closed {
                return;
            }
            continue;
        }

        for j in &mut batch {
            j.ts_ms.get_or_insert_with(now_ms);
        }
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        match append(&store, &batch, durability, &mut scratch) {
            Ok(first_seq) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                failed_at = None;
                if durable {
                    unsynced_since = None;
                } else {
                    unsynced_since.get_or_insert_with(Instant::now);
                }
                for (seq, job) in (first_seq..).zip(batch) {
                    if let Some(reply) = job.reply {
                        let _ = reply.try_send(Ok(seq));
                    }
                }
            }
            Err(e) => {
                stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                failed_at = Some(Instant::now());
                let msg = e.to_string();
                for job in batch {
                    match job.reply {
                        Some(reply) => {
                            let _ = reply.try_send(Err(AuditError::Commit(msg.clone())));
                        }
                        None => carry.push(job),
                    }
                }
            }
        }
        if closed {
            // Shutting down: one last try for what a failed commit left.
            if !carry.is_empty() {
                let _ = append(&store, &carry, Durability::Immediate, &mut scratch);
            }
            return;
        }
    }
}

/// Deletes events older than `keep`, [`PRUNE_ROWS`] rows per transaction, while no event waits
/// (the queue goes first: a long backlog is finished on later passes), and records what it did
/// as an `audit_pruned` event (queued in `carry` if that commit fails). Returns when to look
/// again.
fn prune_pass(store: &Store, rx: &Receiver<Job>, keep: Duration, carry: &mut Vec<Job>) -> Instant {
    let now = now_ms();
    let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
    let cutoff = rfc3339_millis(now.saturating_sub(keep_ms));
    let mut total = Pruned::default();
    let every = prune_every(keep);
    let mut next = Instant::now() + every;
    loop {
        match prune(store, &cutoff, PRUNE_ROWS) {
            Ok(step) => {
                total.rows += step.rows;
                total.events += step.events;
                total.through_seq = step.through_seq;
                if step.rows < PRUNE_ROWS {
                    break;
                }
                if !rx.is_empty() {
                    next = Instant::now();
                    break;
                }
            }
            Err(e) => {
                eprintln!(
                    "portcullis: audit retention: pruning failed (retried in {}s): {e}",
                    every.as_secs()
                );
                break;
            }
        }
    }
    if total.rows > 0 {
        let job = Job {
            ev: Event::new("audit_pruned")
                .uint("through_seq", total.through_seq)
                .uint("events", total.events)
                .str("older_than", cutoff),
            reply: None,
            ts_ms: Some(now_ms()),
        };
        let mut scratch = Scratch::default();
        if append(
            store,
            std::slice::from_ref(&job),
            Durability::Immediate,
            &mut scratch,
        )
        .is_err()
        {
            carry.push(job);
        }
    }
    next
}

/// The writer's buffers for one line and one row, kept from batch to batch: a row grows to
/// [`BLOCK_MAX_BYTES`], and a fresh one per batch went through a dozen reallocations and copies
/// of it. Small: callgrind on `examples/audit_bench` counts ~35 instructions per event fewer.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) row: RowBuilder,
    pub(super) line: String,
}

/// Appends the batch to the chain in one transaction. Returns the first event's sequence number.
pub(super) fn append(
    store: &Store,
    batch: &[Job],
    durability: Durability,
    scratch: &mut Scratch,
) -> Result<u64, StoreError> {
    let mut txn = store.db().begin_write()?;
    txn.set_durability(durability)?;
    let first;
    {
        let mut meta = txn.open_table(META)?;
        let mut audit = txn.open_table(AUDIT)?;
        let head = meta.get(META_AUDIT_HEAD)?.map(|v| v.value().to_vec());
        let (mut seq, mut prev) = decode_head(head.as_deref())?;
        first = seq
            .checked_add(1)
            .ok_or(StoreError::Corrupt("audit head (seq overflow)"))?;
        // One row per block of consecutive lines (see chain.rs), keyed by its first seq.
        let Scratch { row, line: text } = scratch;
        // Left over by a failed attempt.
        row.clear();
        for job in batch {
            seq += 1;
            text.clear();
            push_line(text, seq, job.ts_ms.unwrap_or(0), &job.ev, &prev);
            let hash = sha256(text.as_bytes());
            prev = hash;
            row.push(&hash, text);
            if row.lines() as usize >= BLOCK_MAX_LINES || row.line_bytes() >= BLOCK_MAX_BYTES {
                store_row(&mut audit, seq, row)?;
            }
        }
        store_row(&mut audit, seq, row)?;
        meta.insert(META_AUDIT_HEAD, encode_head(seq, &prev).as_slice())?;
    }
    txn.commit()?;
    Ok(first)
}

/// Stores `row` (consecutive lines, the last one numbered `last_seq`) and empties it.
fn store_row(
    audit: &mut redb::Table<u64, &[u8]>,
    last_seq: u64,
    row: &mut RowBuilder,
) -> Result<(), StoreError> {
    let len = u64::from(row.lines());
    if len == 0 {
        return Ok(());
    }
    let first = last_seq - (len - 1);
    audit.insert(first, row.finish())?;
    row.clear();
    Ok(())
}

/// An `Immediate` commit that makes earlier `Durability::None` commits durable (rewrites the head).
fn sync(store: &Store) -> Result<(), StoreError> {
    let mut txn = store.db().begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut meta = txn.open_table(META)?;
        let head = meta.get(META_AUDIT_HEAD)?.map(|v| v.value().to_vec());
        if let Some(head) = head {
            meta.insert(META_AUDIT_HEAD, head.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}
