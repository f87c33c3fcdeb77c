//! SSH (RFC 4251–4254, OpenSSH PROTOCOL): the gateway's own server and client halves.
//!
//! Like `proto::pg`, everything here is sans-IO: byte buffers in, byte buffers and events out; no
//! socket, clock or global randomness inside. Time and random bytes are passed in by the caller.
//!
//! - [`wire`]: RFC 4251 §5 data types (cursor reader that cannot panic, writer).
//! - [`msg`]: transport message numbers and disconnect reason codes (RFC 4253 §11–12).
//! - [`cipher`]: the AEAD packet ciphers (chacha20-poly1305@openssh.com, aes*-gcm@openssh.com).
//! - [`packet`]: the binary packet protocol (RFC 4253 §6): sealer and incremental opener.
//! - [`hostkey`]: the `ssh-ed25519` host key and signature blobs, SHA256 fingerprints.
//! - [`kex`]: KEXINIT, algorithm negotiation, curve25519-sha256, exchange hash, key derivation.
//! - [`version`]: the identification-string exchange (RFC 4253 §4.2).
//! - [`transport`]: the transport state machine for both roles (RFC 4253, strict kex, RFC 8308).
//! - [`keys`]: public keys (wire blob, authorized_keys line, fingerprint) and signature verification.
//! - [`keyfile`]: OpenSSH `openssh-key-v1` private key files: parse, sign, generate, load (0600).
//! - [`userauth`]: RFC 4252 user authentication: codec, server and client state machines.
//! - [`sftp`]: SFTP v3 stream parser for audit, with a read-only filter.
//! - [`connection`]: RFC 4254 connection protocol messages (+ OpenSSH extensions), typed codec.
//! - [`channel`]: one relayed channel's two legs: ordering, flow control, EOF/CLOSE handshake.
//! - [`filter`]: per-channel data filters in the relay's data path (SFTP audit and read-only).
//! - [`mask_filter`]: the filter that masks a session channel's output for the client.
//! - [`relay`]: the client ↔ upstream connection relay: channel table, decisions, events.
//! - [`relay_script`]: byte-coded operation scripts over a relay (fuzz target, seed replay).

pub mod channel;
pub mod cipher;
pub mod connection;
pub mod filter;
pub mod hostkey;
pub mod kex;
pub mod keyfile;
pub mod keys;
pub mod mask_filter;
pub mod msg;
pub mod packet;
pub mod relay;
pub mod relay_script;
pub mod sftp;
pub mod transport;
pub mod userauth;
pub mod version;
pub mod wire;
