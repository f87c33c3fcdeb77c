//! A byte stream with a read buffer, for the handshake phases where the gateway reads one message
//! at a time. Bounded: a frame larger than the caller's cap is an error before any allocation.

use std::io;

use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::codec::{self, CodecError};
use crate::net::stream::Stream;

/// Why a handshake-phase read failed.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// The peer closed the connection.
    Closed,
    Codec(CodecError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Closed => f.write_str("connection closed by peer"),
            ReadError::Codec(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<CodecError> for ReadError {
    fn from(e: CodecError) -> Self {
        ReadError::Codec(e)
    }
}

pub struct Conn {
    pub stream: Stream,
    /// Bytes read but not consumed yet.
    pub buf: Vec<u8>,
}

/// One tagged message, owned.
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Conn {
    pub fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(8192),
        }
    }

    /// Read at least one more byte into the buffer.
    pub async fn fill(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Read one complete tagged message of at most `max_body` bytes.
    pub async fn read_message(&mut self, max_body: usize) -> Result<Message, ReadError> {
        loop {
            if let Some(frame) = codec::split_frame(&self.buf, max_body)? {
                let msg = Message {
                    tag: frame.tag,
                    body: frame.body.to_vec(),
                };
                let len = frame.len;
                self.buf.drain(..len);
                return Ok(msg);
            }
            self.fill().await?;
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}
