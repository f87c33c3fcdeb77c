//! PostgreSQL frontend/backend protocol v3.
pub mod codec;
pub mod md5;
pub mod scram;
