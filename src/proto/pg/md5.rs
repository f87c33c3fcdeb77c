//! MD5 for PostgreSQL md5 auth. STUB.
