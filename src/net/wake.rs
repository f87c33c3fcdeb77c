//! A `Waker` that wakes a thread blocked in `poll(2)`: it writes one byte to a socket pair whose
//! other end is in the poll set. Lets a session thread poll the few futures it needs (a kill
//! order, an approval decision) without an executor.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

struct Signal {
    tx: UnixStream,
    /// Set by a wake, cleared by [`WakePipe::drain`]: at most one byte is in flight.
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

    /// Consumes the wake-up; call before polling the futures, so a wake during the poll is kept.
    pub fn drain(&self) {
        self.signal.raised.store(false, Ordering::Release);
        let mut sink = [0u8; 16];
        while let Ok(n) = (&self.rx).read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_makes_the_fd_readable_once() {
        let pipe = WakePipe::new().unwrap();
        let waker = pipe.waker();
        waker.wake_by_ref();
        waker.wake_by_ref();
        let mut b = [0u8; 4];
        assert_eq!((&pipe.rx).read(&mut b).unwrap(), 1);
        pipe.drain();
        waker.wake();
        assert_eq!((&pipe.rx).read(&mut b).unwrap(), 1);
    }
}
