//! SSH (RFC 4251–4254, OpenSSH PROTOCOL): the gateway's own server and client halves.
//!
//! Like `proto::pg`, everything here is sans-IO: byte buffers in, byte buffers and events out; no
//! socket, clock or global randomness inside. Time and random bytes are passed in by the caller.
//!
//! - [`wire`]: RFC 4251 §5 data types (cursor reader that cannot panic, writer).
//! - [`keys`]: public keys (wire blob, authorized_keys line, fingerprint) and signature verification.
//! - [`keyfile`]: OpenSSH `openssh-key-v1` private key files: parse, sign, generate, load (0600).
//! - [`userauth`]: RFC 4252 user authentication: codec, server and client state machines.

pub mod keyfile;
pub mod keys;
pub mod userauth;
pub mod wire;
