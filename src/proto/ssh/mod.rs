//! SSH (RFC 4251–4254, OpenSSH PROTOCOL): the gateway's own server and client halves.
//!
//! Like `proto::pg`, everything here is sans-IO: byte buffers in, byte buffers and events out; no
//! socket, clock or global randomness inside. Time and random bytes are passed in by the caller.
//!
//! - [`wire`]: RFC 4251 §5 data types (cursor reader that cannot panic, writer).
//! - [`connection`]: RFC 4254 connection protocol messages (+ OpenSSH extensions), typed codec.
//! - [`channel`]: one relayed channel's two legs: ordering, flow control, EOF/CLOSE handshake.
//! - [`relay`]: the client ↔ upstream connection relay: channel table, decisions, events.
//! - [`relay_script`]: byte-coded operation scripts over a relay (fuzz target, seed replay).

pub mod channel;
pub mod connection;
pub mod relay;
pub mod relay_script;
pub mod wire;
