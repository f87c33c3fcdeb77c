//! SSH (RFC 4251–4254, OpenSSH PROTOCOL): the gateway's own server and client halves.
//!
//! Like `proto::pg`, everything here is sans-IO: byte buffers in, byte buffers and events out; no
//! socket, clock or global randomness inside. Time and random bytes are passed in by the caller.
//!
//! - [`wire`]: RFC 4251 §5 data types (cursor reader that cannot panic, writer).
//! - [`sftp`]: SFTP v3 stream parser for audit, with a read-only filter.

pub mod sftp;
pub mod wire;
