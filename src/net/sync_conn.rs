//! A non-blocking socket, plain or TLS, driven by a relay worker thread that waits in epoll
//! (`pg::proxy::worker`).
//!
//! Why not async here: a relayed statement is one small read and one small write each way. Through
//! async-io that costs about 15 system calls per query (the reactor re-arms a one-shot epoll
//! registration after every would-block read, and polling's epoll backend re-arms its timerfd and
//! clears its eventfd on every wait), against 6 for pgbouncer. A worker waiting in epoll does what
//! pgbouncer does: one wait, one `recv`, one `send` per direction. The handshake, authentication
//! and everything else stay async.
//!
//! Plain sockets are read and written with rustix's direct system calls rather than through std
//! (libc): libc's `recv` and `send` are thread-cancellation points, and each call flips the
//! thread's cancellation state twice around the system call (~2% of a relay thread's CPU under
//! `pgbench -c 32`, perf).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use rustix::io::Errno;
use rustix::net::{self, RecvFlags, SendFlags};
use smol::Async;

use super::stream::Stream;

/// A good size for the `scratch` buffer of [`SyncConn::read_into`].
pub const READ_CHUNK: usize = 64 * 1024;

/// One leg of a relayed session.
pub enum SyncConn {
    Plain(TcpStream),
    Tls {
        sock: TcpStream,
        tls: Box<rustls::Connection>,
    },
}

/// What one read attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Readable {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The peer closed (for TLS: close_notify, or the TCP stream ended without it).
    Eof,
}

/// Takes the socket out of async-io's reactor. The fd stays non-blocking.
fn detach(tcp: smol::net::TcpStream) -> io::Result<TcpStream> {
    let shared: Arc<Async<TcpStream>> = tcp.into();
    match Arc::try_unwrap(shared) {
        Ok(owned) => owned.into_inner(),
        // Someone else still holds a handle: work on a duplicate of the fd; the registration is
        // only re-armed when that other handle is polled, so the two never compete.
        Err(shared) => shared.get_ref().try_clone(),
    }
}

impl SyncConn {
    /// The TCP socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            SyncConn::Plain(sock) | SyncConn::Tls { sock, .. } => sock,
        }
    }

    /// Converts a connected (and, for TLS, handshaken) async stream.
    ///
    /// # Errors
    /// The stream was detached, or the socket could not be taken out of the reactor.
    pub fn from_stream(stream: Stream) -> io::Result<SyncConn> {
        match stream {
            Stream::Plain(tcp) => Ok(SyncConn::Plain(detach(tcp)?)),
            Stream::TlsServer(s) => {
                let (tcp, conn) = s.into_inner();
                Ok(SyncConn::Tls {
                    sock: detach(tcp)?,
                    tls: Box::new(rustls::Connection::Server(conn)),
                })
            }
            Stream::TlsClient(s) => {
                let (tcp, conn) = s.into_inner();
                Ok(SyncConn::Tls {
                    sock: detach(tcp)?,
                    tls: Box::new(rustls::Connection::Client(conn)),
                })
            }
            Stream::Detached => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "stream detached for TLS upgrade",
            )),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            SyncConn::Plain(s) | SyncConn::Tls { sock: s, .. } => s.as_fd(),
        }
    }

    /// Reads what is available now (one `recv`), appending plaintext to `buf`. `scratch` is
    /// where the bytes land first (reused across calls, so nothing is zeroed per read).
    ///
    /// # Errors
    /// Socket errors, and TLS errors (after which an alert is queued for [`flush`](Self::flush)).
    pub fn read_into(&mut self, buf: &mut Vec<u8>, scratch: &mut [u8]) -> io::Result<Readable> {
        match self {
            SyncConn::Plain(sock) => match net::recv(&*sock, &mut *scratch, RecvFlags::empty()) {
                Ok((0, _)) => Ok(Readable::Eof),
                Ok((n, _)) => {
                    buf.extend_from_slice(scratch.get(..n).unwrap_or_default());
                    Ok(Readable::Data(n))
                }
                Err(Errno::AGAIN | Errno::INTR) => Ok(Readable::WouldBlock),
                Err(e) => Err(e.into()),
            },
            SyncConn::Tls { sock, tls } => {
                let tcp_eof = match tls.read_tls(sock) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
                    Err(e) => return Err(e),
                };
                if let Err(e) = tls.process_new_packets() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                let start = buf.len();
                loop {
                    match tls.reader().read(scratch) {
                        Ok(0) => {
                            return Ok(if buf.len() > start {
                                Readable::Data(buf.len() - start)
                            } else {
                                Readable::Eof
                            })
                        }
                        Ok(n) => buf.extend_from_slice(&scratch[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // The TCP stream ended without close_notify: for a proxy, a close.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            return Ok(if buf.len() > start {
                                Readable::Data(buf.len() - start)
                            } else {
                                Readable::Eof
                            })
                        }
                        Err(e) => return Err(e),
                    }
                }
                if buf.len() > start {
                    Ok(Readable::Data(buf.len() - start))
                } else if tcp_eof {
                    Ok(Readable::Eof)
                } else {
                    Ok(Readable::WouldBlock)
                }
            }
        }
    }

    /// Writes as much of `pending` as the socket takes now, removing what was written. Returns
    /// true when nothing is left to write (for TLS: nothing buffered in rustls either).
    ///
    /// # Errors
    /// Socket errors.
    pub fn flush(&mut self, pending: &mut Vec<u8>) -> io::Result<bool> {
        match self {
            SyncConn::Plain(sock) => {
                let mut written = 0;
                let result = loop {
                    if written == pending.len() {
                        break Ok(());
                    }
                    match net::send(&*sock, &pending[written..], SendFlags::NOSIGNAL) {
                        Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => written += n,
                        Err(Errno::INTR) => {}
                        Err(Errno::AGAIN) => break Ok(()),
                        Err(e) => break Err(e.into()),
                    }
                };
                pending.drain(..written);
                result.map(|()| pending.is_empty())
            }
            SyncConn::Tls { sock, tls } => {
                loop {
                    // rustls takes plaintext up to its buffer limit; the rest stays in `pending`.
                    if !pending.is_empty() {
                        let n = tls.writer().write(pending)?;
                        pending.drain(..n);
                    }
                    if !tls.wants_write() {
                        if pending.is_empty() {
                            return Ok(true);
                        }
                        continue;
                    }
                    match tls.write_tls(sock) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// True when bytes are waiting to go out (ours or rustls').
    pub fn wants_write(&self, pending: &[u8]) -> bool {
        match self {
            SyncConn::Plain(_) => !pending.is_empty(),
            SyncConn::Tls { tls, .. } => !pending.is_empty() || tls.wants_write(),
        }
    }

    /// Sends TLS close_notify (best effort; the caller flushes) — plain sockets need nothing.
    pub fn close_notify(&mut self) {
        if let SyncConn::Tls { tls, .. } = self {
            tls.send_close_notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_round_trip_and_eof() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client.set_nonblocking(true).unwrap();
        let mut a = SyncConn::Plain(client);
        let mut b = SyncConn::Plain(server);
        let mut buf = Vec::new();
        let mut scratch = vec![0u8; READ_CHUNK];
        assert_eq!(
            b.read_into(&mut buf, &mut scratch).unwrap(),
            Readable::WouldBlock
        );
        let mut pending = b"hello".to_vec();
        assert!(a.flush(&mut pending).unwrap());
        assert!(pending.is_empty());
        let mut got = Vec::new();
        for _ in 0..1000 {
            if let Readable::Data(_) = b.read_into(&mut got, &mut scratch).unwrap() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, b"hello");
        drop(a);
        let mut eof = false;
        for _ in 0..1000 {
            if b.read_into(&mut got, &mut scratch).unwrap() == Readable::Eof {
                eof = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(eof);
    }
}
