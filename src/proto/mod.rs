//! Protocol implementations. Each core is sans-IO: bytes in, bytes and events out.
pub mod pg;
pub mod ssh;
