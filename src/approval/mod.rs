//! Just-in-time approval of exact statements.
//!
//! A statement that matches an `approve` rule is not forwarded: the proxy [`Broker::submit`]s an
//! [`ApprovalRequest`] and waits on the returned channel for an [`Outcome`]. Approvers answer
//! through the HTTP API, web page or CLI, which call [`Broker::decide`]; the proxy calls
//! [`Broker::expire`] at the rule's deadline and [`Broker::abandon`] when its client goes away.
//!
//! * An approval is for exactly one statement: [`exact_hash`] covers the text and every bound
//!   parameter, and the request is answered once. A rule with `grant = "15m"` also creates a
//!   [`Grant`]: the same statement text ([`fingerprint`]) by the same identity on the same target
//!   runs without asking again until the window ends ([`Broker::active_grant`]).
//! * The requester never approves its own request; approvers must match the rule's `approvers`
//!   (looked up in the current policy at decision time); a rule may require N distinct approvals;
//!   one deny by an eligible approver ends the request.
//! * Every transition is an audit event, durable before the waiter is told (and, for a request,
//!   before it is stored). Requests and grants live in redb and survive a restart; a request still
//!   pending when the gateway stopped is abandoned at the next start (its connection is gone).
//! * Memory is bounded: at most [`MAX_PENDING`] pending requests (and [`MAX_PENDING_BYTES`] of
//!   their text), the newest [`MAX_DECIDED_IN_MEMORY`] decided ones (and at most
//!   [`MAX_DECIDED_BYTES`] of text) for lists; every request stays in redb.
//!
//! Time is passed in (`now`, unix seconds) so every rule here is testable without a clock.

mod broker;
pub mod notify;
mod record;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests;

use std::fmt;

use ring::digest;

pub use broker::Broker;

use crate::audit::AuditError;
use crate::store::StoreError;

/// Most requests pending at once; [`Broker::submit`] refuses more.
pub const MAX_PENDING: usize = 10_000;
/// Most bytes of statement text over all pending requests; [`Broker::submit`] refuses more.
pub const MAX_PENDING_BYTES: usize = 256 << 20;
/// Decided requests kept in memory for lists (the newest; all stay in redb).
pub const MAX_DECIDED_IN_MEMORY: usize = 10_000;
/// Most bytes of statement text over the decided requests kept in memory.
pub const MAX_DECIDED_BYTES: usize = 64 << 20;
/// Longest statement text that can be held for approval (an approver must be able to read it).
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Bound parameters shown per request; more are counted in the hash but not kept for display.
pub const MAX_PARAMS_SHOWN: usize = 64;
/// Longest displayed parameter value, in bytes; longer ones are cut and end with `…`.
pub const MAX_PARAM_BYTES: usize = 1024;
/// Longest identity, target, rule or session name kept with a request.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest origin, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 512;
/// Longest deny reason kept, in bytes; longer ones are cut.
pub const MAX_REASON_BYTES: usize = 1000;
/// Most approvals a rule may require (validation enforces the same).
pub const MAX_REQUIRED: u32 = 10;
/// Live grants kept; past this the one ending soonest is dropped (its statement asks again).
pub const MAX_GRANTS: usize = 10_000;

/// Where a request is in its life. Only `Pending` moves; the others are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Approved,
    Denied,
    TimedOut,
    Abandoned,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::TimedOut => "timed_out",
            State::Abandoned => "abandoned",
        }
    }

    /// The inverse of [`as_str`](Self::as_str) (for API filters).
    pub fn from_name(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Approved,
            State::Denied,
            State::TimedOut,
            State::Abandoned,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    fn code(self) -> u8 {
        match self {
            State::Pending => 0,
            State::Approved => 1,
            State::Denied => 2,
            State::TimedOut => 3,
            State::Abandoned => 4,
        }
    }

    fn from_code(c: u8) -> Option<State> {
        match c {
            0 => Some(State::Pending),
            1 => Some(State::Approved),
            2 => Some(State::Denied),
            3 => Some(State::TimedOut),
            4 => Some(State::Abandoned),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One held statement and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// `apr_` + 12 hex characters.
    pub id: String,
    /// The identity whose statement is held.
    pub requester: String,
    /// Who or what asked (the token's origin, the client address).
    pub origin: String,
    pub target: String,
    /// The session the statement belongs to (for display and audit).
    pub session: String,
    /// The exact statement text.
    pub text: String,
    /// Bound parameters as text, for display only (capped: [`MAX_PARAMS_SHOWN`],
    /// [`MAX_PARAM_BYTES`]); `None` is SQL NULL.
    pub params: Vec<Option<String>>,
    /// [`exact_hash`] of the text and the full parameters: what the approval is for.
    pub hash: String,
    /// [`fingerprint`] of the text: what a grant matches.
    pub fingerprint: String,
    /// The `approve` rule that held the statement.
    pub rule: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the request times out at this second.
    pub expires_at: u64,
    pub state: State,
    /// Distinct approvals needed (the rule's `approvals` when the request was made).
    pub required: u32,
    /// (approver identity, unix seconds) of each approval so far, in order.
    pub approvals: Vec<(String, u64)>,
    /// Who ended the request (the last approver, or the one who denied).
    pub decided_by: Option<String>,
    /// The deny reason, or why the gateway ended the request.
    pub reason: Option<String>,
    /// Unix seconds of the final state.
    pub decided_at: Option<u64>,
}

/// What the proxy knows when it holds a statement ([`Broker::submit`] adds the id, time, state
/// and [`fingerprint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub requester: String,
    pub origin: String,
    pub target: String,
    pub session: String,
    pub text: String,
    /// For display: [`display_params`] of the bound parameters (capped again on submit).
    pub params: Vec<Option<String>>,
    /// [`exact_hash`] of the text and the raw parameters (64 hex characters).
    pub hash: String,
    pub rule: String,
    /// Unix seconds (`now` + the rule's `timeout`).
    pub expires_at: u64,
    /// The rule's `approvals` (clamped to 1..=[`MAX_REQUIRED`]).
    pub required: u32,
}

/// A window in which one statement text by one identity on one target runs without approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `grt_` + 12 hex characters.
    pub id: String,
    pub identity: String,
    pub target: String,
    pub fingerprint: String,
    /// The statement text it was granted for (for display).
    pub text: String,
    pub rule: String,
    /// The approvers whose approval created it.
    pub granted_by: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the grant no longer applies from this second on.
    pub expires_at: u64,
}

/// What a waiting proxy is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    /// `reason` is the approver's, or "no reason given".
    Denied {
        by: String,
        reason: String,
    },
    TimedOut,
    Abandoned,
}

/// Why a decision was refused. The `Display` text is meant for API answers.
#[derive(Debug)]
#[non_exhaustive]
pub enum DecideError {
    /// No request has this id.
    NotFound,
    /// The request was already decided (or timed out, or was abandoned).
    NotPending(State),
    /// The approver is the requester.
    SelfApproval,
    /// The approver does not match the rule's `approvers`, is disabled, or the rule no longer
    /// exists or no longer asks for approval.
    NotAnApprover,
    /// This approver already approved this request.
    AlreadyApproved,
    /// The decision could not be stored; nothing changed.
    Store(StoreError),
    /// The decision could not be written to the audit log; nothing changed.
    Audit(AuditError),
}

impl DecideError {
    /// The HTTP status an API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            DecideError::NotFound => 404,
            DecideError::NotPending(_) | DecideError::AlreadyApproved => 409,
            DecideError::SelfApproval | DecideError::NotAnApprover => 403,
            DecideError::Store(_) | DecideError::Audit(_) => 500,
        }
    }
}

impl fmt::Display for DecideError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecideError::NotFound => f.write_str("no approval request has this id"),
            DecideError::NotPending(s) => write!(
                f,
                "this request is no longer pending (it is {}); nothing was changed",
                s.as_str().replace('_', " ")
            ),
            DecideError::SelfApproval => {
                f.write_str("you made this request, so you can't approve or deny it; ask another approver")
            }
            DecideError::NotAnApprover => f.write_str(
                "you are not an approver of this request's rule (or the rule no longer exists or no longer asks for approval)",
            ),
            DecideError::AlreadyApproved => f.write_str(
                "you already approved this request; it needs approvals from other approvers",
            ),
            DecideError::Store(e) => write!(f, "the decision could not be stored: {e}"),
            DecideError::Audit(e) => {
                write!(f, "the decision could not be written to the audit log: {e}")
            }
        }
    }
}

impl std::error::Error for DecideError {}

impl From<StoreError> for DecideError {
    fn from(e: StoreError) -> DecideError {
        DecideError::Store(e)
    }
}

/// Hex SHA-256 of the statement text alone: what a [`Grant`] matches.
pub fn fingerprint(text: &str) -> String {
    hex(digest::digest(&digest::SHA256, text.as_bytes()).as_ref())
}

/// Hex SHA-256 of the text and the bound parameters, every part length-prefixed so no two
/// different (text, params) give the same input: `"portcullis-exact-v1\0"`, u64 BE text length,
/// text, u32 BE parameter count, then per parameter `0` (NULL) or `1`, u64 BE length, bytes.
pub fn exact_hash(text: &str, params: &[Option<Vec<u8>>]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"portcullis-exact-v1\0");
    ctx.update(&len64(text.len()).to_be_bytes());
    ctx.update(text.as_bytes());
    ctx.update(
        &u32::try_from(params.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for p in params {
        match p {
            None => ctx.update(&[0]),
            Some(v) => {
                ctx.update(&[1]);
                ctx.update(&len64(v.len()).to_be_bytes());
                ctx.update(v);
            }
        }
    }
    hex(ctx.finish().as_ref())
}

/// Bound parameters as display text: UTF-8 values as they are, others as `\x` + hex (PostgreSQL's
/// bytea output), each cut at [`MAX_PARAM_BYTES`] (ending with `…`), at most
/// [`MAX_PARAMS_SHOWN`] of them.
pub fn display_params(params: &[Option<Vec<u8>>]) -> Vec<Option<String>> {
    params
        .iter()
        .take(MAX_PARAMS_SHOWN)
        .map(|p| {
            p.as_ref().map(|v| match std::str::from_utf8(v) {
                Ok(s) => cap(s, MAX_PARAM_BYTES),
                Err(_) => {
                    let shown = &v[..v.len().min(MAX_PARAM_BYTES / 2)];
                    let mut s = format!("\\x{}", hex(shown));
                    if shown.len() < v.len() {
                        s.push('…');
                    }
                    s
                }
            })
        })
        .collect()
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` appended when cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}
