//! Sockets, TLS and the stream type both protocol legs use.
pub mod stream;
pub mod tls;
