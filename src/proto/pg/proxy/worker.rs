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
//!
//! Busy polling (`[gateway] relay_busy_poll_us`, off by default): a worker that serves a single
//! active session polls its epoll set without blocking for a moment before it sleeps. With one
//! client, every statement is two hand-offs through the gateway (the query up, the answer down),
//! and each one finds the worker asleep: waking a sleeping thread, on a virtual machine an idle
//! virtual CPU, is most of the latency the gateway adds. A worker with several active sessions
//! never polls: it is woken often anyway, and its CPU is better left to the others. Between two
//! polls it yields the CPU to whatever else is runnable there, and after [`SPIN_MISSES`] polls in
//! a row that found nothing it stops for [`SPIN_BACKOFF`], so a session whose statements take
//! longer than the budget costs almost nothing. What the polls found, and the time they took,
//! is counted for `/metrics` ([`BusyPollStats`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::Timespec;

use super::relay::{AuditLeftover, Interest, Legs, SessionRelay};
use super::{Ending, Session};
use crate::metrics::BusyPollStats;
use crate::net::sync_conn::READ_CHUNK;
use crate::net::wake::WakePipe;
use crate::server::lock;

/// The epoll token of a worker's wake socket (session tokens are `slot << 1 | leg`).
const WAKE: u64 = u64::MAX;

/// Busy polls in a row that found nothing before a worker stops polling for [`SPIN_BACKOFF`].
const SPIN_MISSES: u32 = 8;
/// How long a worker does not busy poll after [`SPIN_MISSES`] polls found nothing.
const SPIN_BACKOFF: Duration = Duration::from_secs(1);
/// The window over which a worker counts its active sessions (it busy polls only while that
/// count, in this window or the one before, is one).
const ACTIVE_WINDOW: Duration = Duration::from_millis(10);

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
    /// `[gateway] relay_busy_poll_us`, shared by every worker (a reload changes it).
    busy_poll_us: Arc<AtomicU32>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads; they count their busy polls into `stats`.
    ///
    /// # Errors
    /// A thread, epoll instance or socket pair could not be created.
    pub fn start(n: usize, busy_poll_us: u32, stats: Arc<BusyPollStats>) -> io::Result<Workers> {
        let busy_poll = Arc::new(AtomicU32::new(busy_poll_us));
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
            let activity = Activity::new(busy_poll.clone(), stats.clone(), Instant::now());
            std::thread::Builder::new()
                .name(format!("pg-relay-{i}"))
                .spawn(move || {
                    Worker::new(epoll, pipe, sessions, worker_shared, activity).run();
                })?;
            handles.push(Handle { inbox, shared });
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            busy_poll_us: busy_poll,
        })
    }

    /// Sets how long a worker with one active session polls before it sleeps (0: never).
    pub fn set_busy_poll(&self, us: u32) {
        self.busy_poll_us.store(us, Ordering::Relaxed);
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
    /// The activity window in which this session was last counted (`Activity::window`).
    counted_in: u64,
}

/// How many sessions a worker handled lately, and its busy polls' record (see the module doc).
struct Activity {
    budget_us: Arc<AtomicU32>,
    /// The `/metrics` counters of busy polling.
    stats: Arc<BusyPollStats>,
    /// Numbers the windows of [`ACTIVE_WINDOW`].
    window: u64,
    window_start: Instant,
    /// Sessions handled in this window, and in the one before.
    active: usize,
    active_before: usize,
    /// The last round handled at least one session (a round of only expired timers does not
    /// start a poll).
    worked: bool,
    misses: u32,
    paused_until: Option<Instant>,
}

impl Activity {
    fn new(budget_us: Arc<AtomicU32>, stats: Arc<BusyPollStats>, now: Instant) -> Activity {
        Activity {
            budget_us,
            stats,
            window: 1,
            window_start: now,
            active: 0,
            active_before: 0,
            worked: false,
            misses: 0,
            paused_until: None,
        }
    }

    /// Counts a session as active in the current window (`counted_in`: its `Slot::counted_in`).
    fn saw(&mut self, counted_in: &mut u64) {
        if *counted_in != self.window {
            *counted_in = self.window;
            self.active += 1;
        }
    }

    /// Ends a round: a new window starts when the current one is over.
    fn round_done(&mut self, handled: usize, now: Instant) {
        self.worked = handled > 0;
        if now.saturating_duration_since(self.window_start) >= ACTIVE_WINDOW {
            self.window += 1;
            self.window_start = now;
            self.active_before = self.active;
            self.active = 0;
        }
    }

    /// How long to poll before sleeping now: never when it is off, after an idle round, with
    /// more than one active session, or while paused after misses.
    fn budget(&self) -> Option<Duration> {
        let us = self.budget_us.load(Ordering::Relaxed);
        if us == 0 || !self.worked || self.active.max(self.active_before) != 1 {
            return None;
        }
        let paused = self.paused_until.is_some_and(|t| Instant::now() < t);
        (!paused).then(|| Duration::from_micros(u64::from(us)))
    }

    /// Records whether a poll, which took `spent`, found something.
    fn polled(&mut self, found: bool, spent: Duration, now: Instant) {
        let micros = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
        self.stats.micros.fetch_add(micros, Ordering::Relaxed);
        if found {
            self.stats.found.fetch_add(1, Ordering::Relaxed);
            self.misses = 0;
            return;
        }
        self.stats.missed.fetch_add(1, Ordering::Relaxed);
        self.misses += 1;
        if self.misses >= SPIN_MISSES {
            self.stats.pauses.fetch_add(1, Ordering::Relaxed);
            self.misses = 0;
            self.paused_until = Some(now + SPIN_BACKOFF);
        }
    }
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
    activity: Activity,
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
        activity: Activity,
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
            activity,
        }
    }

    /// Polls the epoll set without blocking, yielding the CPU between polls, for at most
    /// `budget`. Returns how many events it found (0: none, or the poll failed; the blocking wait
    /// that follows reports a failure).
    fn busy_poll(&mut self, events: &mut [epoll::Event], budget: Duration) -> usize {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let start = Instant::now();
        let found = loop {
            match epoll::wait(&self.epoll, &mut *events, Some(&zero)) {
                Ok(n) if n > 0 => break n,
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => break 0,
            }
            if start.elapsed() >= budget {
                break 0;
            }
            std::thread::yield_now();
        };
        let now = Instant::now();
        self.activity
            .polled(found > 0, now.saturating_duration_since(start), now);
        found
    }

    /// How long the blocking wait may last: until the earliest timer (none: no limit).
    fn next_timeout(&self) -> Option<Timespec> {
        self.timers.peek().map(|Reverse((at, _))| {
            let left = at.saturating_duration_since(Instant::now());
            // Round up, so a timer is never seen as "not yet due" after the wait.
            let left = left + Duration::from_micros(999);
            Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        })
    }

    fn run(mut self) {
        let empty = epoll::Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        };
        let mut events = vec![empty; 256];
        loop {
            let polled = match self.activity.budget() {
                Some(budget) => self.busy_poll(&mut events, budget),
                None => 0,
            };
            let waited = if polled > 0 {
                Ok(polled)
            } else {
                epoll::wait(&self.epoll, &mut events[..], self.next_timeout().as_ref())
            };
            let n = match waited {
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
            self.activity.round_done(todo.len(), now);
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
            counted_in: 0,
        });
        // Bytes read during the handshake may already hold messages.
        self.todo.push(slot);
    }

    fn advance(&mut self, slot: usize, now: Instant) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        self.activity.saw(&mut s.counted_in);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(us: u32) -> (Activity, Instant) {
        let now = Instant::now();
        let stats = Arc::new(BusyPollStats::default());
        (Activity::new(Arc::new(AtomicU32::new(us)), stats, now), now)
    }

    #[test]
    fn a_lone_active_session_is_polled_for_and_a_crowd_is_not() {
        let (mut a, now) = activity(50);
        assert_eq!(a.budget(), None, "nothing handled yet");
        let (mut s1, mut s2) = (0, 0);
        a.saw(&mut s1);
        a.saw(&mut s1);
        a.round_done(1, now);
        assert_eq!(a.budget(), Some(Duration::from_micros(50)));
        // A second session in the same window: no polling.
        a.saw(&mut s2);
        a.round_done(1, now);
        assert_eq!(a.budget(), None);
        // The next window has only one, but the one before had two.
        let later = now + ACTIVE_WINDOW;
        a.round_done(0, later);
        a.saw(&mut s1);
        a.round_done(1, later + Duration::from_millis(1));
        assert_eq!(a.budget(), None);
        // A window later the crowd is gone.
        let much_later = later + ACTIVE_WINDOW;
        a.saw(&mut s1);
        a.round_done(1, much_later);
        a.saw(&mut s1);
        a.round_done(1, much_later + Duration::from_millis(1));
        assert_eq!(a.budget(), Some(Duration::from_micros(50)));
        // A round that handled nothing (timers only) starts no poll.
        a.round_done(0, much_later + Duration::from_millis(2));
        assert_eq!(a.budget(), None);
    }

    #[test]
    fn polling_is_off_at_zero_and_follows_a_reload() {
        let (mut a, now) = activity(0);
        let mut s = 0;
        a.saw(&mut s);
        a.round_done(1, now);
        assert_eq!(a.budget(), None);
        a.budget_us.store(200, Ordering::Relaxed);
        assert_eq!(a.budget(), Some(Duration::from_micros(200)));
    }

    #[test]
    fn polls_that_keep_finding_nothing_pause_polling() {
        let (mut a, now) = activity(50);
        let mut s = 0;
        a.saw(&mut s);
        a.round_done(1, now);
        for _ in 0..SPIN_MISSES - 1 {
            a.polled(false, Duration::from_micros(50), now);
            assert!(a.budget().is_some());
        }
        // A hit starts the count again.
        a.polled(true, Duration::from_micros(20), now);
        for _ in 0..SPIN_MISSES - 1 {
            a.polled(false, Duration::from_micros(50), now);
        }
        assert!(a.budget().is_some());
        a.polled(false, Duration::from_micros(50), Instant::now());
        assert_eq!(
            a.budget(),
            None,
            "paused after {SPIN_MISSES} misses in a row"
        );
        assert!(a.paused_until.is_some_and(|t| t > Instant::now()));
        // Each poll was counted, with the time it took.
        let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(count(&a.stats.found), 1);
        assert_eq!(count(&a.stats.missed), u64::from(2 * SPIN_MISSES - 1));
        assert_eq!(count(&a.stats.pauses), 1);
        assert_eq!(
            count(&a.stats.micros),
            20 + 50 * u64::from(2 * SPIN_MISSES - 1)
        );
    }
}
