//! redb store. STUB.
