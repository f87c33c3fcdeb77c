//! The relay loop of one session, on the session's own thread.
//!
//! One thread per session waits in `poll(2)` on the client socket, the upstream socket and a wake
//! pipe (see `net::sync_conn` for why this is not async). Everything the loop decides goes through
//! the same `Session` methods as before: each client message is classified and judged
//! (`on_client_message`), each upstream message is tracked by the sans-IO `Pipeline`. The few
//! things that arrive from other tasks — a kill order, an approval decision, a CancelRequest while
//! a statement is held — are futures polled with a waker that writes to the wake pipe.
//!
//! Writes never block the loop: each direction has a pending buffer, written as the socket takes
//! it; a side is not read while the buffer towards its peer is over [`MAX_PENDING`], so a slow
//! reader slows its writer down instead of growing our memory. Pending buffers only ever hold
//! whole protocol messages, so a FATAL error can always be appended at the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use smol::future::block_on;
use smol::future::FutureExt;

use super::hold::{self, Hold};
use super::{fatal, Ending, Session, Verdict};
use crate::approval::Outcome;
use crate::net::sync_conn::{Readable, SyncConn, READ_CHUNK};
use crate::net::wake::WakePipe;
use crate::proto::pg::codec;
use crate::proto::pg::pipeline::Completion;
use crate::server::now_unix;

/// Bytes waiting for one peer before the other peer is no longer read.
const MAX_PENDING: usize = 1 << 20;

/// How long the last words (a FATAL error, a Terminate) may take to go out when the session ends.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The two legs of a session, with what each has sent that was read but not handled yet.
pub(super) struct Legs {
    pub client: SyncConn,
    pub client_buf: Vec<u8>,
    pub up: SyncConn,
    pub up_buf: Vec<u8>,
}

/// A statement waiting for its approval, and the message that carried it.
struct Held {
    hold: Box<Hold>,
    tag: u8,
    frame: Vec<u8>,
    /// The decision or a CancelRequest, whichever comes first.
    wait: BoxFuture<hold::Waited>,
}

struct Relay<'s> {
    session: &'s Session,
    legs: Legs,
    to_up: Vec<u8>,
    to_client: Vec<u8>,
    held: Option<Held>,
    done: Vec<Completion>,
    /// Mask rules name columns: RowDescriptions need their source tables resolved.
    names_columns: bool,
}

/// Runs the session until one side leaves or it is stopped; the last words (a FATAL error, a
/// Terminate) are written before returning.
pub(super) fn run(
    session: &Session,
    legs: Legs,
    idle: Option<Duration>,
    kill: smol::channel::Receiver<String>,
) -> Ending {
    let mut relay = Relay {
        session,
        legs,
        to_up: Vec::with_capacity(16 * 1024),
        to_client: Vec::with_capacity(64 * 1024),
        held: None,
        done: Vec::new(),
        names_columns: crate::server::lock(&session.pipeline).masks_columns(),
    };
    let ending = match WakePipe::new() {
        Ok(pipe) => relay.run(&pipe, idle, kill),
        Err(e) => Ending::Quiet(format!("cannot create the session's wake pipe: {e}")),
    };
    relay.last_words(&ending);
    ending
}

impl Relay<'_> {
    fn run(
        &mut self,
        pipe: &WakePipe,
        idle: Option<Duration>,
        kill: smol::channel::Receiver<String>,
    ) -> Ending {
        let waker = pipe.waker();
        let mut cx = Context::from_waker(&waker);
        let mut killed: BoxFuture<String> = Box::pin(async move {
            kill.recv()
                .await
                .unwrap_or_else(|_| "gateway shutting down".into())
        });
        let mut woken = true;
        let mut scratch = vec![0u8; READ_CHUNK];
        let mut idle_deadline = idle.map(|d| Instant::now() + d);
        let mut client_eof = false;
        let mut up_eof = false;
        loop {
            if woken {
                woken = false;
                pipe.drain();
                // A kill wins over everything else that is ready.
                if let Poll::Ready(reason) = killed.as_mut().poll(&mut cx) {
                    return fatal("57P01", format!("session terminated: {reason}"));
                }
                let decided = match self.held.as_mut() {
                    Some(h) => match h.wait.as_mut().poll(&mut cx) {
                        Poll::Ready(w) => Some(w),
                        Poll::Pending => None,
                    },
                    None => None,
                };
                if let Some(waited) = decided {
                    if let Err(e) = self.resume(waited) {
                        return e;
                    }
                }
            }
            let timed_out = self
                .held
                .as_ref()
                .is_some_and(|h| Instant::now() >= h.hold.deadline);
            if timed_out {
                if let Err(e) = self.resume(hold::Waited::TimedOut) {
                    return e;
                }
            }
            if self.held.is_none() {
                if let Err(e) = self.upward() {
                    return e;
                }
                if self.held.is_some() {
                    // A hold just began: its future must be polled once to register the waker.
                    woken = true;
                    continue;
                }
            }
            if let Err(e) = self.downward() {
                return e;
            }
            if up_eof {
                return Ending::Quiet("upstream closed".into());
            }
            if client_eof {
                return self.client_left();
            }

            // Wait for something to do.
            let read_client = match &self.held {
                None => self.to_up.len() < MAX_PENDING,
                // Keep reading to see the client leave; buffer what it pipelines, up to a cap.
                Some(_) => self.legs.client_buf.len() <= self.session.max_body,
            };
            let read_up = self.to_client.len() < MAX_PENDING;
            let mut client_flags = PollFlags::empty();
            if read_client {
                client_flags |= PollFlags::IN;
            }
            if self.legs.client.wants_write(&self.to_client) {
                client_flags |= PollFlags::OUT;
            }
            let mut up_flags = PollFlags::empty();
            if read_up {
                up_flags |= PollFlags::IN;
            }
            if self.legs.up.wants_write(&self.to_up) {
                up_flags |= PollFlags::OUT;
            }
            let deadline = match &self.held {
                Some(h) => Some(h.hold.deadline),
                None => idle_deadline,
            };
            let timeout = deadline.map(|d| {
                let left = d.saturating_duration_since(Instant::now());
                Timespec {
                    tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            });
            let mut fds = [
                PollFd::from_borrowed_fd(self.legs.client.fd(), client_flags),
                PollFd::from_borrowed_fd(self.legs.up.fd(), up_flags),
                PollFd::from_borrowed_fd(pipe.fd(), PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Ending::Quiet(format!("poll: {e}")),
            }
            let ready = |f: &PollFd<'_>| f.revents().contains(PollFlags::IN);
            // Hang-ups and errors are reported even for a side we chose not to read; read it
            // anyway (the peer can send nothing more), or the poll would spin.
            let broken = |f: &PollFd<'_>| f.revents().intersects(PollFlags::HUP | PollFlags::ERR);
            let client_ready = (ready(&fds[0]) && read_client) || broken(&fds[0]);
            let up_ready = (ready(&fds[1]) && read_up) || broken(&fds[1]);
            woken |= ready(&fds[2]);

            if client_ready {
                match self
                    .legs
                    .client
                    .read_into(&mut self.legs.client_buf, &mut scratch)
                {
                    Ok(Readable::Data(_)) => {
                        if self.held.is_none() {
                            idle_deadline = idle.map(|d| Instant::now() + d);
                        }
                    }
                    Ok(Readable::WouldBlock) => {}
                    Ok(Readable::Eof) => client_eof = true,
                    Err(e) => {
                        if self.held.is_some() {
                            client_eof = true;
                        } else {
                            return Ending::Quiet(format!("client read: {e}"));
                        }
                    }
                }
            }
            if up_ready {
                match self.legs.up.read_into(&mut self.legs.up_buf, &mut scratch) {
                    Ok(Readable::Data(_)) | Ok(Readable::WouldBlock) => {}
                    // Handle what came before the close, then stop.
                    Ok(Readable::Eof) => up_eof = true,
                    Err(e) => return Ending::Quiet(format!("upstream read: {e}")),
                }
            }
            if self.held.is_none()
                && !client_eof
                && idle_deadline.is_some_and(|d| Instant::now() >= d)
            {
                return fatal("57P05", "session idle for too long (idle_timeout)");
            }
        }
    }

    /// The client closed its connection: quietly, or while a statement waited for approval.
    fn client_left(&mut self) -> Ending {
        match self.held.take() {
            Some(h) => {
                let id = h.hold.request.id.clone();
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

    /// Handles every complete client message, in order, until one is held for approval.
    fn upward(&mut self) -> Result<(), Ending> {
        let session = self.session;
        let mut pos = 0;
        let result = loop {
            let buf = &self.legs.client_buf;
            let frame = match codec::split_frame(&buf[pos..], session.max_body) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => break Err(fatal("08P01", format!("invalid message from client: {e}"))),
            };
            let (tag, len) = (frame.tag, frame.len);
            let whole = &buf[pos..pos + len];
            let verdict = block_on(session.on_client_message(tag, whole));
            if let Verdict::Hold(hold) = verdict {
                let frame = whole.to_vec();
                pos += len;
                self.hold(hold, tag, frame);
                break Ok(());
            }
            if let Err(e) = apply(verdict, whole, &mut self.to_up) {
                break Err(e);
            }
            pos += len;
            if tag == b'X' {
                break Err(Ending::Quiet("client terminated".into()));
            }
        };
        self.legs.client_buf.drain(..pos);
        if result.is_ok() {
            self.flush_up()?;
        }
        result
    }

    /// Starts waiting for an approval: what was decided before the held message goes up now, the
    /// client is told it waits.
    fn hold(&mut self, hold: Box<Hold>, tag: u8, frame: Vec<u8>) {
        let session = self.session;
        self.to_client
            .extend_from_slice(&session.held_notice(&hold));
        // A CancelRequest sent before this hold is not for it.
        while session.hold_cancel.try_recv().is_ok() {}
        let outcome = hold.outcome.clone();
        let cancel = session.hold_cancel.clone();
        let wait: BoxFuture<hold::Waited> = Box::pin(async move {
            let decided =
                async { hold::Waited::Outcome(outcome.recv().await.unwrap_or(Outcome::Abandoned)) };
            let cancelled = async {
                let _ = cancel.recv().await;
                hold::Waited::Cancelled
            };
            decided.or(cancelled).await
        });
        self.held = Some(Held {
            hold,
            tag,
            frame,
            wait,
        });
    }

    /// The held statement's wait ended: forward it or refuse it in place, then carry on.
    fn resume(&mut self, waited: hold::Waited) -> Result<(), Ending> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let verdict = block_on(self.session.resume(*held.hold, waited));
        if let Verdict::Hold(_) = verdict {
            return Err(fatal("08P01", "internal: nested hold"));
        }
        apply(verdict, &held.frame, &mut self.to_up)?;
        if held.tag == b'X' {
            return Err(Ending::Quiet("client terminated".into()));
        }
        Ok(())
    }

    /// Handles every complete upstream message, sends the client what it should see, then audits
    /// what completed.
    fn downward(&mut self) -> Result<(), Ending> {
        if !self.legs.up_buf.is_empty() {
            let session = self.session;
            if self.names_columns {
                self.resolve_tables();
            }
            let now = Instant::now();
            let mut pos = 0;
            let result = {
                let mut pipeline = crate::server::lock(&session.pipeline);
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
        }
        self.flush_client()?;
        for c in self.done.drain(..) {
            block_on(self.session.audit_completion(c));
        }
        Ok(())
    }

    /// Resolves the source tables of the RowDescriptions waiting in the upstream buffer (through
    /// the gateway's catalog cache, else its own upstream query) before they are handled. A table
    /// that can't be resolved is remembered as such, and its columns are masked (fail closed).
    fn resolve_tables(&mut self) {
        let session = self.session;
        let mut needed: Vec<u32> = Vec::new();
        let mut pos = 0;
        {
            let pipeline = crate::server::lock(&session.pipeline);
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
        }
        if needed.is_empty() {
            return;
        }
        let gw = &session.gw;
        let loaded = gw.loaded();
        let tls = loaded
            .upstream_tls
            .get(&session.target.name)
            .cloned()
            .flatten();
        let timeout = loaded.policy.gateway.upstream_timeout;
        let nonce = gw.random_hex(18);
        let lookup = gw
            .catalog
            .resolve(&session.target, tls, &needed, session.max_body, &nonce);
        let answer = block_on(async { Some(lookup.await) }.or(async {
            smol::Timer::after(timeout).await;
            None
        }));
        let found = match answer {
            Some(Ok(found)) => found,
            Some(Err(e)) => {
                super::log(&format!(
                    "session {}: cannot resolve result columns' tables (masking them whole): {e}",
                    session.id
                ));
                Vec::new()
            }
            None => {
                super::log(&format!(
                    "session {}: resolving result columns' tables timed out (masking them whole)",
                    session.id
                ));
                Vec::new()
            }
        };
        let mut pipeline = crate::server::lock(&session.pipeline);
        for oid in needed {
            let table = found
                .iter()
                .find(|(o, _)| *o == oid)
                .map(|(_, t)| t.clone());
            pipeline.mask_learn_table(oid, table);
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

    /// What goes out after the loop: a FATAL error to the client, or the client's Terminate to
    /// upstream; bounded in time.
    fn last_words(&mut self, ending: &Ending) {
        match ending {
            Ending::Fatal { code, message } => {
                codec::encode_error(
                    &mut self.to_client,
                    "FATAL",
                    code,
                    &format!("portcullis: {message}"),
                    None,
                    None,
                );
                flush_within(&mut self.legs.client, &mut self.to_client, FINAL_FLUSH);
            }
            Ending::Quiet(_) => {
                flush_within(&mut self.legs.up, &mut self.to_up, FINAL_FLUSH);
            }
        }
    }
}

/// Carries out a verdict on one client message.
fn apply(verdict: Verdict, whole: &[u8], to_up: &mut Vec<u8>) -> Result<(), Ending> {
    match verdict {
        Verdict::Forward => to_up.extend_from_slice(whole),
        Verdict::Replace(bytes) => to_up.extend_from_slice(&bytes),
        Verdict::Fatal(msg) => return Err(fatal("08P01", msg)),
        Verdict::Hold(_) => return Err(fatal("08P01", "internal: nested hold")),
    }
    Ok(())
}

/// Writes `pending` out, waiting for the socket at most `limit` in all. Errors end it silently:
/// the session is over either way.
fn flush_within(conn: &mut SyncConn, pending: &mut Vec<u8>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match conn.flush(pending) {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let timeout = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::from_borrowed_fd(conn.fd(), PollFlags::OUT)];
        if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
            return;
        }
    }
}
