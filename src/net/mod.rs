//! Sockets, TLS and the stream types the protocol legs use.
pub mod refuse;
pub mod stream;
pub mod sync_conn;
pub mod tcp;
pub mod tls;
pub mod wake;
