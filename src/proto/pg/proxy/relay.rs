//! The relay of one session, as a state machine a worker thread drives (see `worker.rs`).
//!
//! The worker waits in epoll on the sockets of many sessions and calls [`SessionRelay::advance`]
//! when one of them is ready, woken, or due (see `net::sync_conn` for why this is not async).
//! Everything the relay decides goes through the same `Session` methods as before: each client
//! message is classified and judged (`on_client_message`), each upstream message is tracked by
//! the sans-IO `Pipeline`. Those methods are async (a write waits for its durable audit record, a
//! held statement for its approval); their futures are polled here with the session's waker and,
//! when they can't finish at once, the relay parks that direction until the waker fires.
//!
//! Writes never block: each direction has a pending buffer, written as the socket takes it; a
//! side is not read while the buffer towards its peer is over [`MAX_PENDING`], so a slow reader
//! slows its writer down instead of growing our memory. Pending buffers only ever hold whole
//! protocol messages, so a FATAL error can always be appended at the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smol::future::FutureExt;

use super::hold::{self, Hold};
use super::{fatal, Ending, QueryNow, Session, Verdict};
use crate::approval::Outcome;
use crate::net::sync_conn::{Readable, SyncConn};
use crate::proto::pg::catalog::TableColumns;
use crate::proto::pg::codec;
use crate::proto::pg::pipeline::Completion;
use crate::server::{lock, now_unix};

/// Bytes waiting for one peer before the other peer is no longer read.
const MAX_PENDING: usize = 1 << 20;

/// How long the last words (a FATAL error, a Terminate) may take to go out when the session ends.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// Progress passes per `advance` (each pass may unblock the next; the bound keeps one busy
/// session from starving the others on its worker).
const MAX_PASSES: usize = 8;

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;
/// A future that can be finished on another thread (see [`AuditLeftover`]).
type SendFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Statement records a relay had not queued when its session ended: the one waiting for room in
/// a full audit queue, the completions behind it, and the statements upstream had not answered
/// yet (recorded as unanswered). The worker hands them to the session's task (with the
/// [`Ending`]), which writes them before the `session_closed` record: a session that ends while
/// the audit writer is behind (a slow or full disk), or while a statement runs, loses no
/// statement record, and the worker never waits.
#[derive(Default)]
pub(crate) struct AuditLeftover {
    waiting: Option<SendFuture<()>>,
    done: Vec<Completion>,
}

impl AuditLeftover {
    /// Queues what is left, in order, waiting for room as long as it takes.
    pub(crate) async fn finish(self, session: &Session) {
        if let Some(waiting) = self.waiting {
            waiting.await;
        }
        for c in self.done {
            session.audit_record(session.completion_event(c)).await;
        }
    }
}

/// Tables resolved for a RowDescription (`None`: the lookup failed).
type Resolved = Option<Vec<(u32, Arc<TableColumns>)>>;

/// The two legs of a session, with what each has sent that was read but not handled yet.
pub(crate) struct Legs {
    pub client: SyncConn,
    pub client_buf: Vec<u8>,
    pub up: SyncConn,
    pub up_buf: Vec<u8>,
}

/// A statement waiting for its approval, and the message that carried it.
struct Held {
    hold: Option<Box<Hold>>,
    deadline: Instant,
    tag: u8,
    frame: Vec<u8>,
    /// The decision or a CancelRequest, whichever comes first.
    wait: LocalFuture<hold::Waited>,
}

/// A client message whose verdict is being worked out (audit, approval submission, resume).
struct Judging {
    tag: u8,
    /// The verdict, and the message it is about (owned by the future while it runs).
    verdict: LocalFuture<(Verdict, Vec<u8>)>,
}

/// Client messages whose handling in `Session::on_client_message` has no await point (Bind,
/// Sync, Close, Describe, Flush, CopyData/CopyDone/CopyFail): the extended protocol's and COPY's
/// hot path, handled without boxing a future or copying the message. Keep in sync with that
/// function: a message listed here that did wait would end the session with an internal error.
/// An Execute joins them when `Session::read_only_execute` finds that its statement can neither
/// write nor be held (the read-only prepared statement, run again and again), and a Query when
/// `Session::query_now` finds every statement in it allowed and unable to write.
fn never_waits(tag: u8) -> bool {
    matches!(tag, b'B' | b'S' | b'C' | b'D' | b'H' | b'd' | b'c' | b'f')
}

/// What the worker should watch for this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Interest {
    pub client_read: bool,
    pub client_write: bool,
    pub up_read: bool,
    pub up_write: bool,
}

pub(crate) struct SessionRelay {
    session: Arc<Session>,
    legs: Legs,
    to_up: Vec<u8>,
    to_client: Vec<u8>,
    judging: Option<Judging>,
    held: Option<Held>,
    /// Upstream answers wait while their result columns' tables are resolved.
    resolving: Option<(Vec<u32>, LocalFuture<Resolved>)>,
    /// Completed statements to audit, in order; the first one's record may be in flight.
    done: Vec<Completion>,
    auditing: Option<SendFuture<()>>,
    /// Mask rules name columns: RowDescriptions need their source tables resolved.
    names_columns: bool,
    killed: LocalFuture<String>,
    idle: Option<Duration>,
    idle_deadline: Option<Instant>,
    client_eof: bool,
    up_eof: bool,
    /// The session is over; its last words are being written until this deadline.
    closing: Option<(Ending, Instant)>,
    /// The client ended the session with Terminate while the upstream connection was idle and
    /// empty: the Terminate was not passed on, the connection may serve another session.
    upstream_reusable: bool,
}

impl SessionRelay {
    pub fn new(
        session: Arc<Session>,
        legs: Legs,
        idle: Option<Duration>,
        kill: smol::channel::Receiver<String>,
        now: Instant,
    ) -> SessionRelay {
        let names_columns = lock(&session.pipeline).masks_columns();
        SessionRelay {
            session,
            legs,
            to_up: Vec::with_capacity(16 * 1024),
            to_client: Vec::with_capacity(16 * 1024),
            judging: None,
            held: None,
            resolving: None,
            done: Vec::new(),
            auditing: None,
            names_columns,
            killed: Box::pin(async move {
                kill.recv()
                    .await
                    .unwrap_or_else(|_| "gateway shutting down".into())
            }),
            idle,
            idle_deadline: idle.map(|d| now + d),
            client_eof: false,
            up_eof: false,
            closing: None,
            upstream_reusable: false,
        }
    }

    pub fn client_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.legs.client.fd()
    }

    pub fn up_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.legs.up.fd()
    }

    /// Whether each leg (client, upstream) has reached its end and should no longer be watched.
    pub fn legs_gone(&self) -> (bool, bool) {
        (self.client_eof, self.up_eof)
    }

    /// What to wait for next.
    pub fn interest(&self) -> Interest {
        if self.closing.is_some() {
            return Interest {
                client_write: self.legs.client.wants_write(&self.to_client),
                up_write: self.legs.up.wants_write(&self.to_up),
                ..Interest::default()
            };
        }
        // A buffer over the cap is still read while it holds no whole message: one message may
        // be up to `max_message_size`, and nothing can be handled until it is complete.
        let max_body = self.session.max_body;
        let room = |buf: &[u8]| {
            buf.len() < MAX_PENDING || matches!(codec::split_frame(buf, max_body), Ok(None))
        };
        let client_read = !self.client_eof
            && if self.held.is_some() {
                // Keep reading to see the client leave; buffer what it pipelines, up to a cap.
                self.legs.client_buf.len() <= max_body
            } else {
                self.to_up.len() < MAX_PENDING && room(&self.legs.client_buf)
            };
        Interest {
            client_read,
            client_write: self.legs.client.wants_write(&self.to_client),
            up_read: !self.up_eof
                && self.auditing.is_none()
                && self.to_client.len() < MAX_PENDING
                && room(&self.legs.up_buf),
            up_write: self.legs.up.wants_write(&self.to_up),
        }
    }

    /// When `advance` must run even if nothing happens.
    pub fn deadline(&self) -> Option<Instant> {
        if let Some((_, d)) = &self.closing {
            return Some(*d);
        }
        match &self.held {
            Some(h) => Some(h.deadline),
            None => self.idle_deadline,
        }
    }

    /// Reads what the client sent (the socket was reported readable or hung up).
    pub fn read_client(&mut self, scratch: &mut [u8], now: Instant) {
        if self.client_eof || self.closing.is_some() {
            return;
        }
        match self
            .legs
            .client
            .read_into(&mut self.legs.client_buf, scratch)
        {
            Ok(Readable::Data(_)) => {
                if self.held.is_none() {
                    self.idle_deadline = self.idle.map(|d| now + d);
                }
            }
            Ok(Readable::WouldBlock) => {}
            Ok(Readable::Eof) => self.client_eof = true,
            Err(e) => {
                if self.held.is_some() {
                    self.client_eof = true;
                } else {
                    self.close(Ending::Quiet(format!("client read: {e}")), now);
                }
            }
        }
    }

    /// Reads what upstream sent.
    pub fn read_up(&mut self, scratch: &mut [u8], now: Instant) {
        if self.up_eof || self.closing.is_some() {
            return;
        }
        match self.legs.up.read_into(&mut self.legs.up_buf, scratch) {
            Ok(Readable::Data(_)) | Ok(Readable::WouldBlock) => {}
            // Handle what came before the close, then stop.
            Ok(Readable::Eof) => self.up_eof = true,
            Err(e) => self.close(Ending::Quiet(format!("upstream read: {e}")), now),
        }
    }

    /// Does everything that can be done now except writing: what is to go out waits in the
    /// pending buffers for [`SessionRelay::flush`]. Returns the ending once the session is over
    /// and its last words are out (or their time is up).
    ///
    /// `woken`: a future of this session was woken (or the session is new). Only then is the kill
    /// order polled: its waker fires when it comes, so socket readiness never needs to look.
    pub fn advance(&mut self, cx: &mut Context<'_>, now: Instant, woken: bool) -> Option<Ending> {
        if self.closing.is_none() && woken {
            // A kill wins over everything else that is ready.
            if let Poll::Ready(reason) = self.killed.as_mut().poll(cx) {
                self.close(fatal("57P01", format!("session terminated: {reason}")), now);
            }
        }
        if self.closing.is_none() {
            let mut result = Ok(true);
            for _ in 0..MAX_PASSES {
                result = self.pass(cx, now);
                if !matches!(result, Ok(true)) {
                    break;
                }
            }
            match result {
                // Out of passes with work left: come back after the other sessions.
                Ok(true) => cx.waker().wake_by_ref(),
                Ok(false) => {}
                Err(ending) => self.close(ending, now),
            }
        }
        if self.closing.is_some() {
            // The session may end below without a `flush`: what completed is audited first.
            self.poll_audit(cx);
        }
        self.finish_closing(now)
    }

    /// Writes what `advance` left pending to both peers, as far as their sockets take it, then
    /// audits the statements that completed. Returns the ending if a write failed and the
    /// session is over.
    ///
    /// Separate from `advance` so a worker writes only after it has handled every session that
    /// was ready: each write wakes a peer (pgbench, a backend), and a burst of writes lets a
    /// client process find several answers per wake-up instead of being woken for each, and
    /// keeps the woken peers from preempting this thread between two sessions' work.
    ///
    /// Completed statements are audited after the writes: their records (encoding, the queue)
    /// are not on the way of the answer to the client, which was waiting for it. Nothing the
    /// client or upstream sees depends on them; only reading upstream waits while a record waits
    /// for room in a full audit queue (see `interest`).
    pub fn flush(&mut self, cx: &mut Context<'_>, now: Instant) -> Option<Ending> {
        if self.closing.is_none() {
            if let Err(ending) = self.flush_up().and_then(|()| self.flush_client()) {
                self.close(ending, now);
            }
        }
        self.poll_audit(cx);
        self.finish_closing(now)
    }

    /// Ends the session: its last words are queued.
    fn close(&mut self, ending: Ending, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        if let Ending::Fatal { code, message } = &ending {
            codec::encode_error(
                &mut self.to_client,
                "FATAL",
                code,
                &format!("portcullis: {message}"),
                None,
                None,
            );
        }
        self.closing = Some((ending, now + FINAL_FLUSH));
    }

    /// Writes what is still pending to both sides (a side that fails is done with).
    fn finish_closing(&mut self, now: Instant) -> Option<Ending> {
        let (_, deadline) = self.closing.as_ref()?;
        let client_done = !matches!(self.legs.client.flush(&mut self.to_client), Ok(false));
        let up_done = !matches!(self.legs.up.flush(&mut self.to_up), Ok(false));
        if !(client_done && up_done) && now < *deadline {
            return None;
        }
        self.closing.take().map(|(e, _)| e)
    }

    /// One round of work; true if something moved that may let more happen.
    fn pass(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<bool, Ending> {
        let mut moved = false;
        moved |= self.poll_held(cx, now)?;
        moved |= self.poll_judging(cx)?;
        if self.judging.is_none() && self.held.is_none() {
            moved |= self.upward(cx)?;
        }
        moved |= self.downward(cx)?;
        if self.up_eof && self.legs.up_buf.is_empty() && self.resolving.is_none() {
            return Err(Ending::Quiet("upstream closed".into()));
        }
        if self.client_eof && self.judging.is_none() {
            return Err(self.client_left());
        }
        if self.held.is_none() && self.idle_deadline.is_some_and(|d| now >= d) {
            return Err(fatal("57P05", "session idle for too long (idle_timeout)"));
        }
        Ok(moved)
    }

    /// The client closed its connection: quietly, or while a statement waited for approval.
    fn client_left(&mut self) -> Ending {
        match self.held.take().and_then(|h| h.hold) {
            Some(hold) => {
                let id = hold.request.id.clone();
                let gw = &self.session.gw;
                gw.broker.abandon(&id, now_unix());
                gw.metrics
                    .approvals_abandoned
                    .fetch_add(1, Ordering::Relaxed);
                Ending::Quiet(format!("client left while {id} waited for approval"))
            }
            None => Ending::Quiet("client closed".into()),
        }
    }

    /// Handles complete client messages in order until one needs to wait (its verdict isn't
    /// ready, or it is held for approval).
    fn upward(&mut self, cx: &mut Context<'_>) -> Result<bool, Ending> {
        let mut pos = 0;
        let mut moved = false;
        let result = loop {
            let buf = &self.legs.client_buf;
            let frame = match codec::split_frame(&buf[pos..], self.session.max_body) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => break Err(fatal("08P01", format!("invalid message from client: {e}"))),
            };
            let (tag, len) = (frame.tag, frame.len);
            moved = true;
            // A Query that can't write is admitted at once; one that must wait comes back judged.
            let mut judged = None;
            let mut in_place = None;
            if tag == b'Q' {
                match self.session.query_now(&buf[pos..pos + len]) {
                    QueryNow::Done(verdict) => in_place = Some(verdict),
                    QueryNow::Later(text, j) => judged = Some((text, j)),
                }
            } else if let Some(info) = self.session.read_only_execute(tag, &buf[pos..pos + len]) {
                in_place = Some(self.session.admit_now(info));
            }
            if in_place.is_some() || never_waits(tag) {
                // Handled in place: no boxed future, no copy of the message.
                let polled = match in_place {
                    Some(verdict) => Poll::Ready(verdict),
                    None => {
                        std::pin::pin!(self.session.on_client_message(tag, &buf[pos..pos + len]))
                            .poll(cx)
                    }
                };
                let step = match polled {
                    Poll::Ready(Verdict::Forward) => {
                        self.to_up.extend_from_slice(&buf[pos..pos + len]);
                        Ok(())
                    }
                    Poll::Ready(Verdict::Replace(bytes)) => {
                        self.to_up.extend_from_slice(&bytes);
                        Ok(())
                    }
                    Poll::Ready(Verdict::Fatal(msg)) => Err(fatal("08P01", msg)),
                    Poll::Ready(Verdict::Hold(_)) | Poll::Pending => Err(fatal(
                        "08P01",
                        format!("internal: message {:?} had to wait", char::from(tag)),
                    )),
                };
                pos += len;
                if let Err(e) = step {
                    break Err(e);
                }
                continue;
            }
            let whole = buf[pos..pos + len].to_vec();
            pos += len;
            let session = self.session.clone();
            let mut verdict: LocalFuture<(Verdict, Vec<u8>)> = match judged {
                Some((text, judged)) => {
                    Box::pin(async move { (session.query_judged(text, judged).await, whole) })
                }
                None => Box::pin(async move {
                    let v = session.on_client_message(tag, &whole).await;
                    (v, whole)
                }),
            };
            match verdict.as_mut().poll(cx) {
                Poll::Ready((v, whole)) => {
                    if tag == b'X' && self.may_keep_upstream() {
                        self.upstream_reusable = true;
                        break Err(Ending::Quiet("client terminated".into()));
                    }
                    if let Err(e) = self.carry_out(v, tag, whole, cx) {
                        break Err(e);
                    }
                    if tag == b'X' {
                        break Err(Ending::Quiet("client terminated".into()));
                    }
                    if self.held.is_some() {
                        break Ok(());
                    }
                }
                Poll::Pending => {
                    self.judging = Some(Judging { tag, verdict });
                    break Ok(());
                }
            }
        };
        self.legs.client_buf.drain(..pos);
        result.map(|()| moved)
    }

    /// Carries out a verdict on one client message (a hold starts the wait).
    fn carry_out(
        &mut self,
        verdict: Verdict,
        tag: u8,
        frame: Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Result<(), Ending> {
        match verdict {
            Verdict::Forward => self.to_up.extend_from_slice(&frame),
            Verdict::Replace(bytes) => self.to_up.extend_from_slice(&bytes),
            Verdict::Fatal(msg) => return Err(fatal("08P01", msg)),
            Verdict::Hold(hold) => self.hold(hold, tag, frame, cx),
        }
        Ok(())
    }

    /// Starts waiting for an approval: the client is told it waits.
    fn hold(&mut self, hold: Box<Hold>, tag: u8, frame: Vec<u8>, cx: &mut Context<'_>) {
        let session = &self.session;
        self.to_client
            .extend_from_slice(&session.held_notice(&hold));
        // A CancelRequest sent before this hold is not for it.
        while session.hold_cancel.try_recv().is_ok() {}
        let outcome = hold.outcome.clone();
        let cancel = session.hold_cancel.clone();
        let wait: LocalFuture<hold::Waited> = Box::pin(async move {
            let decided =
                async { hold::Waited::Outcome(outcome.recv().await.unwrap_or(Outcome::Abandoned)) };
            let cancelled = async {
                let _ = cancel.recv().await;
                hold::Waited::Cancelled
            };
            decided.or(cancelled).await
        });
        // The wait is first polled on the next pass (which registers the waker); make sure
        // there is one.
        cx.waker().wake_by_ref();
        self.held = Some(Held {
            deadline: hold.deadline,
            hold: Some(hold),
            tag,
            frame,
            wait,
        });
    }

    /// The held statement's wait ended (decision, cancel or timeout): resume it.
    fn poll_held(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<bool, Ending> {
        let Some(held) = self.held.as_mut() else {
            return Ok(false);
        };
        let waited = match held.wait.as_mut().poll(cx) {
            Poll::Ready(w) => w,
            Poll::Pending if now >= held.deadline => hold::Waited::TimedOut,
            Poll::Pending => return Ok(false),
        };
        let Some(mut held) = self.held.take() else {
            return Ok(false);
        };
        let Some(hold) = held.hold.take() else {
            return Err(fatal("08P01", "internal: hold resumed twice"));
        };
        let session = self.session.clone();
        let frame = std::mem::take(&mut held.frame);
        self.judging = Some(Judging {
            tag: held.tag,
            verdict: Box::pin(async move { (session.resume(*hold, waited).await, frame) }),
        });
        Ok(true)
    }

    fn poll_judging(&mut self, cx: &mut Context<'_>) -> Result<bool, Ending> {
        let Some(judging) = self.judging.as_mut() else {
            return Ok(false);
        };
        let Poll::Ready((verdict, frame)) = judging.verdict.as_mut().poll(cx) else {
            return Ok(false);
        };
        let tag = judging.tag;
        self.judging = None;
        if let (Verdict::Hold(_), true) = (&verdict, self.held.is_some()) {
            return Err(fatal("08P01", "internal: nested hold"));
        }
        self.carry_out(verdict, tag, frame, cx)?;
        if tag == b'X' {
            return Err(Ending::Quiet("client terminated".into()));
        }
        Ok(true)
    }

    /// Handles complete upstream messages (after resolving result tables if rules need them) and
    /// sends the client what it should see.
    fn downward(&mut self, cx: &mut Context<'_>) -> Result<bool, Ending> {
        let mut moved = false;
        if self.names_columns {
            moved |= self.resolve_tables(cx);
            if self.resolving.is_some() {
                return Ok(moved);
            }
        }
        if !self.legs.up_buf.is_empty() {
            let session = &self.session;
            let now = Instant::now();
            let mut pos = 0;
            let result = {
                let mut pipeline = lock(&session.pipeline);
                loop {
                    let buf = &self.legs.up_buf;
                    match codec::split_frame(&buf[pos..], session.max_body) {
                        Ok(Some(frame)) => {
                            let len = frame.len;
                            let r = pipeline.on_backend(
                                &buf[pos..pos + len],
                                now,
                                &mut self.to_client,
                                &mut self.done,
                            );
                            if let Err(e) = r {
                                break Err(fatal("08P01", format!("upstream protocol error: {e}")));
                            }
                            pos += len;
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => {
                            break Err(fatal(
                                "08P01",
                                format!("upstream sent an invalid message: {e}"),
                            ))
                        }
                    }
                }
            };
            self.legs.up_buf.drain(..pos);
            result?;
            moved |= pos > 0;
        }
        Ok(moved)
    }

    /// Resolves the source tables of the RowDescriptions waiting in the upstream buffer (through
    /// the gateway's catalog cache, else its own upstream query). A table that can't be resolved
    /// is remembered as such, and its columns are masked whole (fail closed).
    fn resolve_tables(&mut self, cx: &mut Context<'_>) -> bool {
        let session = self.session.clone();
        if self.resolving.is_none() {
            let mut needed: Vec<u32> = Vec::new();
            let mut pos = 0;
            let pipeline = lock(&session.pipeline);
            let buf = &self.legs.up_buf;
            while let Ok(Some(frame)) = codec::split_frame(&buf[pos..], session.max_body) {
                if frame.tag == b'T' {
                    for oid in pipeline.mask_missing_tables(&buf[pos..pos + frame.len]) {
                        if !needed.contains(&oid) {
                            needed.push(oid);
                        }
                    }
                }
                pos += frame.len;
            }
            drop(pipeline);
            if needed.is_empty() {
                return false;
            }
            let lookup_oids = needed.clone();
            let s = session.clone();
            let lookup: LocalFuture<Resolved> = Box::pin(async move {
                let gw = &s.gw;
                let loaded = gw.loaded();
                let tls = loaded.upstream_tls.get(&s.target.name).cloned().flatten();
                let timeout = loaded.policy.gateway.upstream_timeout;
                let nonce = gw.random_hex(18);
                let lookup = gw
                    .catalog
                    .resolve(&s.target, tls, &lookup_oids, s.max_body, &nonce);
                let answer = async { Some(lookup.await) }
                    .or(async {
                        smol::Timer::after(timeout).await;
                        None
                    })
                    .await;
                match answer {
                    Some(Ok(found)) => Some(found),
                    Some(Err(e)) => {
                        super::log(&format!(
                            "session {}: cannot resolve result columns' tables \
                                 (masking them whole): {e}",
                            s.id
                        ));
                        None
                    }
                    None => {
                        super::log(&format!(
                            "session {}: resolving result columns' tables timed out \
                                 (masking them whole)",
                            s.id
                        ));
                        None
                    }
                }
            });
            self.resolving = Some((needed, lookup));
        }
        let Some((_, lookup)) = self.resolving.as_mut() else {
            return false;
        };
        let Poll::Ready(found) = lookup.as_mut().poll(cx) else {
            return false;
        };
        let Some((needed, _)) = self.resolving.take() else {
            return false;
        };
        let found = found.unwrap_or_default();
        let mut pipeline = lock(&session.pipeline);
        for oid in needed {
            let table = found
                .iter()
                .find(|(o, _)| *o == oid)
                .map(|(_, t)| t.clone());
            pipeline.mask_learn_table(oid, table);
        }
        true
    }

    /// Whether the upstream connection could serve another session once this client is gone:
    /// the target keeps connections, and the server is idle outside a transaction with nothing
    /// in flight, nothing unread and nothing unsent.
    fn may_keep_upstream(&self) -> bool {
        if !self.session.keeps_upstream() {
            return false;
        }
        let idle = {
            let p = lock(&self.session.pipeline);
            p.in_flight() == 0 && p.txn_status == b'I'
        };
        idle && self.held.is_none()
            && self.resolving.is_none()
            && self.closing.is_none()
            && !self.up_eof
            && !self.legs.up.wants_write(&self.to_up)
            && self.legs.up_buf.is_empty()
    }

    /// Hands the upstream connection to the session (`Session::keep_upstream`) if it ended so
    /// that another session may use it (see `may_keep_upstream`); otherwise it closes here.
    pub fn hand_back_upstream(self) {
        if self.upstream_reusable {
            self.session.keep_upstream(self.legs.up);
        }
    }

    /// What is left to audit, for the session's task to finish once this relay is gone: the
    /// completions not yet queued, then the statements upstream never answered.
    pub fn take_audit_leftover(&mut self, now: Instant) -> AuditLeftover {
        lock(&self.session.pipeline).abandon(now, &mut self.done);
        AuditLeftover {
            waiting: self.auditing.take(),
            done: std::mem::take(&mut self.done),
        }
    }

    /// Audits completed statements in order. A record waits only for room in the audit queue;
    /// while it waits, upstream is not read (back-pressure rather than dropping).
    fn poll_audit(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(record) = self.auditing.as_mut() {
                if record.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.auditing = None;
            }
            if self.done.is_empty() {
                return;
            }
            let c = self.done.remove(0);
            let ev = self.session.completion_event(c);
            // Queued in place when the audit queue has room; a future only when it is full.
            if let Err(ev) = self.session.try_audit_record(ev) {
                let session = self.session.clone();
                self.auditing = Some(Box::pin(async move { session.audit_record(ev).await }));
            }
        }
    }

    fn flush_up(&mut self) -> Result<(), Ending> {
        if self.legs.up.wants_write(&self.to_up) {
            if let Err(e) = self.legs.up.flush(&mut self.to_up) {
                return Err(Ending::Quiet(format!("upstream write: {e}")));
            }
        }
        Ok(())
    }

    fn flush_client(&mut self) -> Result<(), Ending> {
        if self.legs.client.wants_write(&self.to_client) {
            if let Err(e) = self.legs.client.flush(&mut self.to_client) {
                return Err(Ending::Quiet(format!("client write: {e}")));
            }
        }
        Ok(())
    }
}
