//! PostgreSQL message codec. STUB.
