//! Every redb table of the store, in one place.
//!
//! Values are hand-encoded byte strings that start with a version byte (see `codec.rs`), so a
//! format change is a new version byte, not a silent misread. Keys are plain `&str` / `u64`.

use redb::TableDefinition;

/// Small gateway-wide values, keyed by the `META_*` names below.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Token records keyed by token id (`tok_` + 12 hex). The value holds identity, target, scope,
/// times, use counters, origin, the revoked flag and the SCRAM verifier (never the secret).
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// Index of `TOKENS` by `identity \0 target \0 id` -> `created_at` (unix secs), so authentication
/// reads only the tokens of one identity and target. Maintained in the same transaction as `TOKENS`.
pub const TOKEN_INDEX: TableDefinition<&str, u64> = TableDefinition::new("token_index");

/// Bearer-token index: `HMAC-SHA256(gateway_key, "bearer\0" || secret)` (32 bytes) -> token id, so
/// a token presented without identity (approvals API) is found in O(1). Maintained with `TOKENS`
/// (issue, purge); the key is also kept in the token record so purge can delete the row.
pub const BEARER_INDEX: TableDefinition<&[u8], &str> = TableDefinition::new("bearer_index");

/// The hash-chained audit log: sequence number (from 1, no gaps) -> version byte, SHA-256 of the
/// line (32 bytes), the JSON line. Written only by the audit writer thread.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Approval requests (`approval/record.rs`) keyed by a sequence number from 1, in submission order,
/// so the newest are read first at start. Every request stays here after it is decided.
pub const APPROVALS: TableDefinition<u64, &[u8]> = TableDefinition::new("approvals");

/// Index of `APPROVALS` by request id (`apr_` + 12 hex) -> sequence number. Written with it.
pub const APPROVAL_IDS: TableDefinition<&str, u64> = TableDefinition::new("approval_ids");

/// The pending subset of `APPROVALS`: sequence number -> `expires_at` (unix secs). A row is removed
/// in the transaction that decides the request; rows found at start belong to requests whose
/// connection died with the previous process, and are abandoned.
pub const APPROVALS_PENDING: TableDefinition<u64, u64> = TableDefinition::new("approvals_pending");

/// Grants (`approval/record.rs`) keyed by grant id (`grt_` + 12 hex): identity, target, statement
/// fingerprint, window, approvers, and the revocation once revoked. Expired grants stay as history.
pub const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");

/// `META` key: the 32 random bytes of the gateway key (derives per-identity/target SCRAM salts).
pub const META_GATEWAY_KEY: &str = "gateway_key";

/// `META` key: the head of the audit chain (last sequence number and the hash of its line), written
/// in the same transaction as the events, so a truncated log is detected by `audit::verify`.
pub const META_AUDIT_HEAD: &str = "audit_head";

/// `META` key: where the stored chain starts once old events were pruned (`[gateway]
/// audit_retention`): the last pruned sequence number and the hash of its line, in the head's
/// encoding. Written in the transaction that deletes the rows; absent until the first prune.
pub const META_AUDIT_BASE: &str = "audit_base";

/// `META` key: the store schema version (one byte), checked on open.
pub const META_SCHEMA: &str = "schema";
