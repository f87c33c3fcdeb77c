//! Worker threads that relay PostgreSQL sessions: each waits in epoll on the sockets of the
//! sessions it was given and drives their [`SessionRelay`]s.
//!
//! Why not the async runtime: see `net::sync_conn`. Why not one thread per session: under load a
//! thread per session pays two context switches per query; a worker handles every session that is
//! ready when it wakes, as pgbouncer's event loop does. Sessions are handed to workers round-robin
//! once authenticated; they never move.
//!
//! Futures a relay polls (a statement's durable audit record, an approval wait, a kill order) are
//! woken through a per-session waker that queues the session on its worker and wakes the
//! worker's `WakePipe`, which is in the epoll set.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::Timespec;

use super::relay::{AuditLeftover, Interest, Legs, SessionRelay};
use super::{Ending, Session};
use crate::net::sync_conn::READ_CHUNK;
use crate::net::wake::WakePipe;
use crate::server::lock;

/// The epoll token of a worker's wake socket (session tokens are `slot << 1 | leg`).
const WAKE: u64 = u64::MAX;

/// A session handed to a worker.
pub(crate) struct NewSession {
    pub session: Arc<Session>,
    pub legs: Legs,
    pub idle: Option<Duration>,
    pub kill: smol::channel::Receiver<String>,
    /// Told how the session ended, with the statement records still to be queued.
    pub ended: smol::channel::Sender<(Ending, AuditLeftover)>,
}

/// What wakers share with their worker.
struct Shared {
    /// Sessions whose futures were woken, by slot.
    ready: Mutex<Vec<usize>>,
    /// Wakes the worker (its wake pipe is in the epoll set).
    wake: Waker,
}

impl Shared {
    /// Called after queuing a session or a slot: makes sure the worker looks at its queues.
    fn raise(&self) {
        self.wake.wake_by_ref();
    }
}

struct SessionWaker {
    slot: usize,
    shared: Arc<Shared>,
}

impl Wake for SessionWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.shared.ready).push(self.slot);
        self.shared.raise();
    }
}

struct Handle {
    inbox: mpsc::Sender<NewSession>,
    shared: Arc<Shared>,
}

/// The pool of relay workers.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` (at least one) worker threads.
    ///
    /// # Errors
    /// A thread, epoll instance or socket pair could not be created.
    pub fn start(n: usize) -> io::Result<Workers> {
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            let pipe = WakePipe::new()?;
            epoll::add(&epoll, pipe.fd(), EventData::new_u64(WAKE), EventFlags::IN)?;
            let shared = Arc::new(Shared {
                ready: Mutex::new(Vec::new()),
                wake: pipe.waker(),
            });
            let (inbox, sessions) = mpsc::channel();
            let worker_shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("pg-relay-{i}"))
                .spawn(move || Worker::new(epoll, pipe, sessions, worker_shared).run())?;
            handles.push(Handle { inbox, shared });
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands a session to the next worker.
    ///
    /// # Errors
    /// The worker is gone (it only stops if its epoll instance fails).
    pub(crate) fn submit(&self, session: NewSession) -> Result<(), String> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let handle = &self.handles[i];
        handle
            .inbox
            .send(session)
            .map_err(|_| format!("relay worker {i} has stopped"))?;
        handle.shared.raise();
        Ok(())
    }
}

struct Slot {
    relay: SessionRelay,
    ended: smol::channel::Sender<(Ending, AuditLeftover)>,
    waker: Waker,
    /// What epoll watches now, per leg (`None`: the leg is no longer registered).
    client: Option<Interest>,
    up: Option<Interest>,
    /// The earliest timer queued for this slot.
    scheduled: Option<Instant>,
    /// A future of this session was woken since its last advance.
    woken: bool,
}

struct Worker {
    epoll: OwnedFd,
    pipe: WakePipe,
    sessions: mpsc::Receiver<NewSession>,
    shared: Arc<Shared>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    todo: Vec<usize>,
    scratch: Vec<u8>,
}

fn client_flags(i: &Interest) -> EventFlags {
    let mut f = EventFlags::empty();
    if i.client_read {
        f |= EventFlags::IN | EventFlags::RDHUP;
    }
    if i.client_write {
        f |= EventFlags::OUT;
    }
    f
}

fn up_flags(i: &Interest) -> EventFlags {
    let mut f = EventFlags::empty();
    if i.up_read {
        f |= EventFlags::IN | EventFlags::RDHUP;
    }
    if i.up_write {
        f |= EventFlags::OUT;
    }
    f
}

impl Worker {
    fn new(
        epoll: OwnedFd,
        pipe: WakePipe,
        sessions: mpsc::Receiver<NewSession>,
        shared: Arc<Shared>,
    ) -> Worker {
        Worker {
            epoll,
            pipe,
            sessions,
            shared,
            slots: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            todo: Vec::new(),
            scratch: vec![0u8; READ_CHUNK],
        }
    }

    fn run(mut self) {
        let empty = epoll::Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        };
        let mut events = vec![empty; 256];
        loop {
            let timeout = self.timers.peek().map(|Reverse((at, _))| {
                let left = at.saturating_duration_since(Instant::now());
                // Round up, so a timer is never seen as "not yet due" after the wait.
                let left = left + Duration::from_micros(999);
                Timespec {
                    tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            });
            let n = match epoll::wait(&self.epoll, &mut events[..], timeout.as_ref()) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => 0,
                Err(e) => {
                    eprintln!("portcullis: relay worker stopped: epoll: {e}");
                    return;
                }
            };
            let now = Instant::now();
            for ev in events.iter().take(n) {
                // epoll_event is packed: copy the fields out rather than borrow them.
                let (flags, data) = (ev.flags, ev.data.u64());
                if data == WAKE {
                    self.woken(now);
                    continue;
                }
                let Ok(slot) = usize::try_from(data >> 1) else {
                    continue;
                };
                let up_leg = data & 1 == 1;
                let Some(Some(s)) = self.slots.get_mut(slot) else {
                    continue;
                };
                let readable = flags.intersects(
                    EventFlags::IN | EventFlags::HUP | EventFlags::ERR | EventFlags::RDHUP,
                );
                if readable {
                    if up_leg {
                        s.relay.read_up(&mut self.scratch, now);
                    } else {
                        s.relay.read_client(&mut self.scratch, now);
                    }
                }
                self.todo.push(slot);
            }
            while let Some(Reverse((at, slot))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                if let Some(Some(s)) = self.slots.get_mut(slot) {
                    if s.scheduled == Some(at) {
                        s.scheduled = None;
                        self.todo.push(slot);
                    }
                }
            }
            let mut todo = std::mem::take(&mut self.todo);
            todo.sort_unstable();
            todo.dedup();
            // Every ready session's work first, then every write (see `SessionRelay::flush`).
            for &slot in &todo {
                self.advance(slot, now);
            }
            for slot in todo.drain(..) {
                self.settle(slot, now);
            }
            self.todo = todo;
        }
    }

    /// The wake socket fired: new sessions, woken futures.
    fn woken(&mut self, now: Instant) {
        self.pipe.drain();
        while let Ok(new) = self.sessions.try_recv() {
            self.add(new, now);
        }
        let ready = std::mem::take(&mut *lock(&self.shared.ready));
        for slot in ready {
            if let Some(Some(s)) = self.slots.get_mut(slot) {
                s.woken = true;
                self.todo.push(slot);
            }
        }
    }

    fn add(&mut self, new: NewSession, now: Instant) {
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let waker = Waker::from(Arc::new(SessionWaker {
            slot,
            shared: self.shared.clone(),
        }));
        let relay = SessionRelay::new(new.session, new.legs, new.idle, new.kill, now);
        let token = u64::try_from(slot).unwrap_or(u64::MAX >> 2) << 1;
        let interest = relay.interest();
        let registered = epoll::add(
            &self.epoll,
            relay.client_fd(),
            EventData::new_u64(token),
            client_flags(&interest),
        )
        .and_then(|()| {
            epoll::add(
                &self.epoll,
                relay.up_fd(),
                EventData::new_u64(token | 1),
                up_flags(&interest),
            )
        });
        if let Err(e) = registered {
            let _ = epoll::delete(&self.epoll, relay.client_fd());
            let _ = new.ended.try_send((
                Ending::Quiet(format!("cannot watch the session's sockets: {e}")),
                AuditLeftover::default(),
            ));
            self.free.push(slot);
            return;
        }
        self.slots[slot] = Some(Slot {
            relay,
            ended: new.ended,
            waker,
            client: Some(interest),
            up: Some(interest),
            scheduled: None,
            woken: true,
        });
        // Bytes read during the handshake may already hold messages.
        self.todo.push(slot);
    }

    fn advance(&mut self, slot: usize, now: Instant) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        let mut cx = Context::from_waker(&s.waker);
        let woken = std::mem::take(&mut s.woken);
        if let Some(ending) = s.relay.advance(&mut cx, now, woken) {
            self.end(slot, ending);
        }
    }

    /// The session is over: its sockets leave the epoll set, its slot is freed.
    fn end(&mut self, slot: usize, ending: Ending) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        if s.client.is_some() {
            let _ = epoll::delete(&self.epoll, s.relay.client_fd());
        }
        if s.up.is_some() {
            let _ = epoll::delete(&self.epoll, s.relay.up_fd());
        }
        let leftover = s.relay.take_audit_leftover(Instant::now());
        if let Some(s) = self.slots[slot].take() {
            // Handed over before the session's task hears of the end, which is when it looks.
            s.relay.hand_back_upstream();
            let _ = s.ended.try_send((ending, leftover));
        }
        self.free.push(slot);
    }

    /// After `advance`: writes what the session has pending, then makes epoll and the timers
    /// watch what it waits for now.
    fn settle(&mut self, slot: usize, now: Instant) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        let mut cx = Context::from_waker(&s.waker);
        if let Some(ending) = s.relay.flush(&mut cx, now) {
            self.end(slot, ending);
            return;
        }
        let interest = s.relay.interest();
        let token = u64::try_from(slot).unwrap_or(u64::MAX >> 2) << 1;
        // A leg at end of file stays readable for ever in level-triggered epoll: unregister it.
        let (client_gone, up_gone) = s.relay.legs_gone();
        if client_gone {
            if s.client.take().is_some() {
                let _ = epoll::delete(&self.epoll, s.relay.client_fd());
            }
        } else if s
            .client
            .is_some_and(|old| client_flags(&old) != client_flags(&interest))
        {
            let _ = epoll::modify(
                &self.epoll,
                s.relay.client_fd(),
                EventData::new_u64(token),
                client_flags(&interest),
            );
            s.client = Some(interest);
        }
        if up_gone {
            if s.up.take().is_some() {
                let _ = epoll::delete(&self.epoll, s.relay.up_fd());
            }
        } else if s
            .up
            .is_some_and(|old| up_flags(&old) != up_flags(&interest))
        {
            let _ = epoll::modify(
                &self.epoll,
                s.relay.up_fd(),
                EventData::new_u64(token | 1),
                up_flags(&interest),
            );
            s.up = Some(interest);
        }
        if let Some(due) = s.relay.deadline() {
            if s.scheduled.is_none_or(|at| due < at) {
                s.scheduled = Some(due);
                self.timers.push(Reverse((due, slot)));
            }
        }
    }
}
