//! A `Waker` that wakes a thread blocked in `poll(2)` or `epoll_wait(2)`: it writes one byte to a
//! socket pair whose other end is in the poll set. The PostgreSQL relay workers use it to learn of
//! new sessions and of woken futures (a durable audit record, an approval, a kill order) without
//! an executor.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

struct Signal {
    tx: UnixStream,
    /// Set by a wake, cleared by [`WakePipe::drain`]: at most one byte is in flight, and while
    /// it is set a wake writes nothing (the poller has yet to look).
    raised: AtomicBool,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            // A full pipe (impossible with one byte in flight) or a closed reader both mean the
            // poller will notice anyway.
            let _ = (&self.tx).write(&[1]);
        }
    }
}

/// The reading end, owned by the polling thread.
pub struct WakePipe {
    rx: UnixStream,
    signal: Arc<Signal>,
}

impl WakePipe {
    /// # Errors
    /// The socket pair could not be created.
    pub fn new() -> std::io::Result<WakePipe> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(WakePipe {
            rx,
            signal: Arc::new(Signal {
                tx,
                raised: AtomicBool::new(false),
            }),
        })
    }

    pub fn waker(&self) -> Waker {
        Waker::from(self.signal.clone())
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Consumes the wake-up; call before looking at what the wakes were about (polling the
    /// futures, reading the queues), so a wake during that is kept.
    ///
    /// Reads the byte, then lowers the flag. In that order: a wake that still finds the flag up
    /// writes nothing and counts on the look that follows, which happens; lowering it first
    /// would let a wake in between write a byte that the read then swallows, leaving the flag up
    /// with no byte in flight, and no wake would ever reach the poller again.
    pub fn drain(&self) {
        self.drain_with(|| ());
    }

    /// [`WakePipe::drain`], running `between` between its two steps (where a racing wake does
    /// harm if the steps are in the wrong order; the tests put one there).
    fn drain_with(&self, between: impl FnOnce()) {
        let mut sink = [0u8; 16];
        while let Ok(n) = (&self.rx).read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        between();
        // An RMW, so that it reads the wakers' swaps: what they did before waking happens
        // before the poller's look that follows.
        self.signal.raised.swap(false, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A byte is waiting (what the poller's wait would see).
    fn pending(pipe: &WakePipe) -> bool {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&pipe.rx, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).unwrap() == 1
    }

    #[test]
    fn wake_makes_the_fd_readable_once() {
        let pipe = WakePipe::new().unwrap();
        let waker = pipe.waker();
        waker.wake_by_ref();
        waker.wake_by_ref();
        let mut b = [0u8; 4];
        assert_eq!((&pipe.rx).read(&mut b).unwrap(), 1);
        assert!(!pending(&pipe), "two wakes before a look write one byte");
        pipe.drain();
        waker.wake();
        assert_eq!((&pipe.rx).read(&mut b).unwrap(), 1);
    }

    #[test]
    fn a_wake_racing_the_drain_is_never_lost() {
        // The poller woke (flag up, one byte in flight) and drains; something is queued and
        // woken between the two steps of the drain.
        let pipe = WakePipe::new().unwrap();
        let waker = pipe.waker();
        let queue = Mutex::new(Vec::new());
        waker.wake_by_ref();
        pipe.drain_with(|| {
            queue.lock().unwrap().push(7);
            waker.wake_by_ref();
        });
        // The poller now looks at its queue: the push is there or a byte says so.
        let seen = !std::mem::take(&mut *queue.lock().unwrap()).is_empty();
        assert!(
            seen || pending(&pipe),
            "the push was neither seen nor signalled"
        );
        if pending(&pipe) {
            pipe.drain();
        }
        // Later, a wake on a quiet gateway must still reach the poller: the flag was not left
        // up with nothing in flight.
        waker.wake_by_ref();
        assert!(
            pending(&pipe),
            "a wake after the poller looked left no byte"
        );
    }
}
