//! Identities and tokens: the gateway mints short-lived tokens bound to an identity, a target and
//! an origin, and keeps only their SCRAM verifiers.
pub mod tokens;

pub use tokens::{IssuedToken, TokenFailure, TokenInfo, Tokens, Verifier, SCRAM_ITERATIONS};
