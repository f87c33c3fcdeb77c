//! Identities and tokens. STUB.
