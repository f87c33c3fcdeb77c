//! Audit log. STUB.
