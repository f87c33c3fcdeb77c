//! Refusing a connection with a message the client gets to read: used for connections over
//! `max_connections` (PostgreSQL's FATAL 53300, SSH's DISCONNECT 12).
//!
//! A client sends its first bytes (a StartupMessage or SSLRequest, an SSH identification string
//! and KEXINIT) without waiting for ours, so those are unread in our socket when we close it, and
//! Linux answers a close with unread data with a reset, which makes the client drop our message
//! unread (`Connection reset by peer`). So after the write, our side is shut down and the client's
//! bytes are read and thrown away until it closes, bounded by [`LINGER`], [`DRAIN_BYTES`] and
//! [`MAX_LINGERING`]; a real client closes within milliseconds. Nothing it sends is parsed.

use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

/// Longest time the refusal may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time a refused connection is kept open for the client to read the refusal.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read (and discarded) from a refused client while it lingers: its first messages
/// fit many times over.
const DRAIN_BYTES: usize = 16 * 1024;
/// Most refused connections lingering at once; beyond this the socket is closed at once, so a
/// flood over the cap can't hold more than this many sockets open.
const MAX_LINGERING: usize = 64;
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Writes `refusal`, shuts our side down, then reads and discards what the client still sends
/// until it closes (bounded; see the module docs).
pub async fn refuse(mut tcp: TcpStream, refusal: &[u8]) {
    let written = async { tcp.write_all(refusal).await.is_ok() }
        .or(async {
            smol::Timer::after(WRITE_TIMEOUT).await;
            false
        })
        .await;
    if !written || tcp.shutdown(Shutdown::Write).is_err() {
        return;
    }
    // Released on drop, so a task cancelled mid-linger (shutdown) gives its slot back.
    struct Lingering;
    impl Drop for Lingering {
        fn drop(&mut self) {
            LINGERING.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let lingering = Lingering;
    if LINGERING.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
        return;
    }
    let mut scratch = [0u8; 2048];
    async {
        let mut drained = 0;
        while drained < DRAIN_BYTES {
            match tcp.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
    .or(async {
        smol::Timer::after(LINGER).await;
    })
    .await;
    drop(lingering);
}
