//! The decision engine: (identity, target, statement) -> allow | approve | block.
pub mod command;
pub mod engine;
pub mod kinds;
pub mod sql;
pub mod ssh;

pub use engine::{decide, session_read_only, Decision};
