//! PostgreSQL frontend/backend protocol v3.
pub mod catalog;
pub mod codec;
pub mod conn;
pub mod mask;
pub mod md5;
pub mod pipeline;
pub(crate) mod pool;
pub mod proxy;
pub mod scram;
pub mod startup;
pub mod upstream;
