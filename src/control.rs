//! Control socket. STUB.
