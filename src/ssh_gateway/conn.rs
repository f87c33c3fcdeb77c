//! One SSH connection leg: a TCP socket and the sans-IO [`Transport`] that speaks over it, with
//! the small async helpers the handshake phases use (flush, next event). The relay phase polls the
//! socket directly (see `session.rs`).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::Instant;

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;

use crate::proto::ssh::msg::DisconnectReason;
use crate::proto::ssh::transport::{Event, Transport, TransportError};

/// Bytes read from the socket at once.
pub(super) const READ_CHUNK: usize = 256 * 1024;

/// Why a leg ended.
#[derive(Debug)]
pub(super) enum ConnError {
    Io(io::Error),
    /// The peer closed the TCP connection.
    Eof,
    Transport(TransportError),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "socket error: {e}"),
            ConnError::Eof => f.write_str("connection closed by peer"),
            ConnError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<TransportError> for ConnError {
    fn from(e: TransportError) -> Self {
        ConnError::Transport(e)
    }
}

pub(super) struct Conn {
    pub stream: TcpStream,
    pub transport: Transport,
    pub buf: Box<[u8]>,
    events: VecDeque<Event>,
}

impl Conn {
    pub fn new(stream: TcpStream, transport: Transport) -> Conn {
        Conn {
            stream,
            transport,
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            events: VecDeque::new(),
        }
    }

    /// Writes everything the transport has queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.transport.pending_output().is_empty() {
            let n = self.stream.write(self.transport.pending_output()).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.transport.consume_output(n);
        }
        self.stream.flush().await
    }

    /// Feeds received bytes and queues the events they produce.
    pub fn feed(&mut self, n: usize) -> Result<(), ConnError> {
        let bytes = self.buf.get(..n).unwrap_or_default();
        self.transport.feed(bytes);
        let events = self.transport.process(Instant::now())?;
        self.events.extend(events);
        Ok(())
    }

    /// Events decoded but not yet taken.
    pub fn take_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.events.drain(..)
    }

    /// The next transport event, for the handshake phases: flushes, then reads until one
    /// arrives, acting on the transport's timers (key exchange deadline) meanwhile.
    pub async fn next_event(&mut self) -> Result<Event, ConnError> {
        loop {
            self.flush().await?;
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            let deadline = self.transport.poll_timeout();
            let read = async { Some(self.stream.read(&mut self.buf).await) };
            let timer = async {
                match deadline {
                    Some(at) => Timer::at(at).await,
                    None => Timer::never().await,
                };
                None
            };
            match smol::future::or(read, timer).await {
                Some(Ok(0)) => return Err(ConnError::Eof),
                Some(Ok(n)) => self.feed(n)?,
                Some(Err(e)) => return Err(e.into()),
                None => self.transport.handle_timeout(Instant::now())?,
            }
        }
    }

    /// Sends DISCONNECT and writes what is queued, ignoring errors (the connection ends anyway).
    pub async fn close(&mut self, reason: DisconnectReason, description: &str) {
        self.transport.disconnect(reason, description);
        let _ = smol::future::or(async { self.flush().await }, async {
            Timer::after(std::time::Duration::from_secs(2)).await;
            Ok(())
        })
        .await;
    }
}
