//! Sans-IO tracking of what the upstream server still owes the client.
//!
//! The gateway forwards client messages in order and keeps, for each one that will produce a
//! response it cares about, an [`Item`] in a queue: a statement that will complete (CommandComplete,
//! EmptyQueryResponse, PortalSuspended, FunctionCallResponse, or an ErrorResponse), a blocked
//! statement whose place was taken by a harmless syntax error (see below), or a synchronisation point
//! (a Query, Sync or FunctionCall) that ends with ReadyForQuery.
//!
//! **Why blocked statements go upstream as a syntax error.** A client may pipeline messages; the
//! answer to a blocked statement must come back exactly where the server would have put it, and the
//! server must enter the same state it would have for a failed statement (an aborted transaction, or
//! skipping extended-protocol messages until Sync). So the gateway replaces the blocked Query or Parse
//! with one whose text is a unique, unparsable marker (`PORTCULLIS_BLOCKED_<n>`). Nothing can run: the
//! server fails at parse time. When its ErrorResponse comes back (a syntax error naming the marker),
//! the pipeline swaps it for the gateway's own ErrorResponse (SQLSTATE 42501 with the rule's message).
//!
//! No I/O and no clock: the caller passes `now` and gets bytes and completions back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{self, Backend, CodecError};
use super::mask::{MaskFailure, MaskPlan};
use crate::policy::kinds::{Flags, KindSet};

/// What the gateway learned about one statement, shared between the prepared-statement tables and
/// the in-flight queue.
#[derive(Debug)]
pub struct Classified {
    /// Shared with every audit event about the statement (one per Execute of a prepared one).
    pub text: Arc<str>,
    pub kinds: KindSet,
    pub tables: Vec<String>,
    pub flags: Flags,
    /// The rule that allowed it (None: the target's default).
    pub rule: Option<String>,
    /// "simple", "extended" or "fastpath".
    pub protocol: &'static str,
    /// Extended protocol: the statement was parsed under an `approve` rule, so each Execute
    /// waits for an approval of the statement with its bound parameters.
    pub hold: Option<HoldRule>,
    /// The statement's fields of its `statement` audit events, encoded at its first completion
    /// and shared by the rest (every Execute of a prepared statement).
    pub audit: std::sync::OnceLock<crate::audit::Encoded>,
}

/// The `approve` rule that holds a statement.
#[derive(Debug, Clone)]
pub struct HoldRule {
    pub rule: String,
    pub message: String,
}

#[derive(Debug)]
enum Item {
    Stmt {
        info: Arc<Classified>,
        started: Instant,
    },
    Blocked {
        marker: String,
        error: Vec<u8>,
    },
    Sync {
        lexer_check: bool,
    },
}

/// A statement the upstream server finished (or skipped).
#[derive(Debug)]
pub struct Completion {
    pub info: Arc<Classified>,
    pub elapsed: Duration,
    pub rows: Option<u64>,
    /// `Some((sqlstate, message))` when the server answered with an error.
    pub error: Option<(String, String)>,
    /// False when the server skipped it because an earlier message of the same batch failed.
    pub executed: bool,
    /// False when the session ended before the server answered it: it was forwarded and may have
    /// run, in part or whole (the client may even have had some of its rows).
    pub answered: bool,
}

impl Completion {
    /// A statement the server gave no outcome for: skipped after an earlier error of its batch
    /// (`answered`: the server's answer said so), or still waiting when the session ended.
    fn without_outcome(
        info: Arc<Classified>,
        started: Instant,
        now: Instant,
        answered: bool,
    ) -> Self {
        Completion {
            info,
            elapsed: now.saturating_duration_since(started),
            rows: None,
            error: None,
            executed: false,
            answered,
        }
    }
}

/// Session facts that decide whether the gateway's SQL lexer reads statements the way the server
/// does. Both are GUC_REPORT parameters, so the server tells us when they change.
#[derive(Debug)]
struct LexerFacts {
    standard_conforming_strings: bool,
    client_encoding_safe: bool,
    /// Synchronisation points still in flight after a statement that may have changed either fact.
    pending_checks: u32,
}

#[derive(Debug)]
pub struct Pipeline {
    items: VecDeque<Item>,
    /// Transaction status of the last ReadyForQuery: b'I', b'T' or b'E'.
    pub txn_status: u8,
    lexer: LexerFacts,
    /// Cap on queued items: a client that pipelines without ever reading is stopped here.
    max_items: usize,
    /// Masking of answers, when a `[[mask]]` rule applies to the session.
    mask: Option<MaskPlan>,
}

/// Encodings in which every byte below 0x80 is ASCII and never part of a multi-byte character, so
/// quotes and backslashes mean the same to the gateway's lexer and to the server. (SJIS, BIG5, GBK,
/// GB18030, UHC and JOHAB are not: a trailing byte can be 0x5C.)
pub fn encoding_is_safe(name: &str) -> bool {
    let n = name.to_ascii_uppercase().replace(['_', '-'], "");
    matches!(
        n.as_str(),
        "UTF8"
            | "UNICODE"
            | "SQLASCII"
            | "KOI8R"
            | "KOI8U"
            | "EUCJP"
            | "EUCKR"
            | "EUCCN"
            | "EUCTW"
            | "MULEINTERNAL"
    ) || n.starts_with("LATIN")
        || n.starts_with("WIN12")
        || n.starts_with("ISO8859")
        || n == "WIN866"
        || n == "WIN874"
}

#[derive(Debug, PartialEq, Eq)]
pub enum PipelineError {
    Codec(CodecError),
    /// The client has too many unanswered messages in flight.
    TooManyInFlight(usize),
    /// An answer could not be masked (the session ends rather than relay it raw).
    Mask(MaskFailure),
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::Codec(e) => write!(f, "upstream sent a malformed message: {e}"),
            PipelineError::TooManyInFlight(n) => write!(f, "more than {n} statements in flight"),
            PipelineError::Mask(MaskFailure::BinaryCopy) => {
                f.write_str("binary COPY output of a masked session can't be masked; use text COPY")
            }
            PipelineError::Mask(MaskFailure::CopyWithMaskedColumns) => {
                f.write_str("COPY TO of a session with masked columns can't be masked; use SELECT")
            }
            PipelineError::Mask(MaskFailure::Codec(e)) => {
                write!(f, "upstream sent a malformed message: {e}")
            }
        }
    }
}

impl Pipeline {
    pub fn new(max_items: usize) -> Pipeline {
        Pipeline {
            items: VecDeque::new(),
            txn_status: b'I',
            lexer: LexerFacts {
                standard_conforming_strings: true,
                client_encoding_safe: true,
                pending_checks: 0,
            },
            max_items,
            mask: None,
        }
    }

    /// Mask this session's answers with `plan`.
    pub fn set_mask(&mut self, plan: MaskPlan) {
        self.mask = Some(plan);
    }

    /// Whether the session's mask rules name columns (COPY TO is then refused).
    pub fn masks_columns(&self) -> bool {
        self.mask.as_ref().is_some_and(MaskPlan::names_columns)
    }

    /// Table OIDs in a RowDescription frame whose source the mask plan still needs (see
    /// `MaskPlan::missing_tables`); empty without a plan or for a malformed frame (which the
    /// plan refuses when it processes it).
    pub fn mask_missing_tables(&self, frame: &[u8]) -> Vec<u32> {
        match &self.mask {
            Some(plan) => plan
                .missing_tables(frame.get(5..).unwrap_or_default())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Tells the mask plan where table `oid` comes from (`None`: unresolvable).
    pub fn mask_learn_table(&mut self, oid: u32, table: Option<Arc<super::catalog::TableColumns>>) {
        if let Some(plan) = self.mask.as_mut() {
            plan.learn_table(oid, table);
        }
    }

    /// Detector hits in `text` masked, for audit events of a masked session.
    pub fn mask_for_audit(&self, text: &str) -> Option<String> {
        let plan = self.mask.as_ref()?;
        plan.scan(text.as_bytes())
            .map(|m| String::from_utf8_lossy(&m).into_owned())
    }

    /// Relay one frame, through the mask plan when there is one.
    fn emit(&mut self, tag: u8, frame: &[u8], out: &mut Vec<u8>) -> Result<(), PipelineError> {
        match self.mask.as_mut() {
            Some(plan) if MaskPlan::wants(tag) => {
                plan.process(tag, frame, out).map_err(PipelineError::Mask)
            }
            _ => {
                out.extend_from_slice(frame);
                Ok(())
            }
        }
    }

    fn push(&mut self, item: Item) -> Result<(), PipelineError> {
        if self.items.len() >= self.max_items {
            return Err(PipelineError::TooManyInFlight(self.max_items));
        }
        self.items.push_back(item);
        Ok(())
    }

    pub fn push_stmt(&mut self, info: Arc<Classified>, now: Instant) -> Result<(), PipelineError> {
        self.push(Item::Stmt { info, started: now })
    }

    /// `error` is the complete ErrorResponse frame to show instead of the marker's syntax error.
    pub fn push_blocked(&mut self, marker: String, error: Vec<u8>) -> Result<(), PipelineError> {
        self.push(Item::Blocked { marker, error })
    }

    /// A Query, Sync or FunctionCall went upstream. `lexer_check`: a statement in this batch may
    /// have changed standard_conforming_strings or client_encoding; until its ReadyForQuery arrives
    /// (after any ParameterStatus it causes) the lexer is not trusted.
    pub fn push_sync(&mut self, lexer_check: bool) -> Result<(), PipelineError> {
        if lexer_check {
            self.lexer.pending_checks += 1;
        }
        self.push(Item::Sync { lexer_check })
    }

    /// Whether the gateway's lexer reads SQL text the way the server will. When false, the proxy
    /// must treat every statement as `unknown` (fail closed).
    pub fn lexer_trusted(&self) -> bool {
        self.lexer.standard_conforming_strings
            && self.lexer.client_encoding_safe
            && self.lexer.pending_checks == 0
    }

    pub fn in_flight(&self) -> usize {
        self.items.len()
    }

    /// Process one complete backend frame (`frame` = tag + length + body). Appends to `out` what the
    /// client must receive and to `done` the statements that finished.
    pub fn on_backend(
        &mut self,
        frame: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
        done: &mut Vec<Completion>,
    ) -> Result<(), PipelineError> {
        let (tag, body) = match frame.split_first() {
            Some((t, rest)) if rest.len() >= 4 => (*t, &rest[4..]),
            _ => return Err(PipelineError::Codec(CodecError::TooShort)),
        };
        // Fast path: row data and most other messages are relayed without decoding (masked
        // first when the session has a mask plan).
        if !matches!(tag, b'C' | b'E' | b'I' | b's' | b'V' | b'Z' | b'S') {
            return self.emit(tag, frame, out);
        }
        match tag {
            b'V' => {
                // FunctionCallResponse: decoded by tag only.
                self.complete_front(now, None, None, done);
                out.extend_from_slice(frame);
                return Ok(());
            }
            b'I' | b's' => {
                self.complete_front(now, None, None, done);
                out.extend_from_slice(frame);
                return Ok(());
            }
            _ => {}
        }
        let decoded = match codec::decode_backend(tag, body) {
            Ok(d) => d,
            // Server text is in the client's encoding, which need not be UTF-8 (LATIN1 error
            // messages, say). Such a message is still relayed; only its meaning for the queue is
            // taken from the tag.
            Err(CodecError::InvalidUtf8) if tag != b'Z' => {
                match tag {
                    b'C' => self.complete_front(now, None, None, done),
                    b'E' => {
                        let unreadable =
                            Some(("".to_string(), "(error text not UTF-8)".to_string()));
                        self.complete_front(now, None, unreadable, done);
                        self.skip_to_sync(now, done);
                    }
                    _ => {}
                }
                return self.emit(tag, frame, out);
            }
            Err(e) => return Err(PipelineError::Codec(e)),
        };
        match decoded {
            Backend::CommandComplete { tag: command } => {
                self.complete_front(now, codec::command_rows(command), None, done);
                out.extend_from_slice(frame);
            }
            Backend::ErrorResponse(fields) => {
                let message = fields.get(b'M').unwrap_or("");
                let code = fields.get(b'C').unwrap_or("");
                // Is this the answer to one of our markers? Only the first item up to the next
                // synchronisation point can have caused it.
                let swapped = match self.front_before_sync() {
                    Some(Item::Blocked { marker, .. }) => {
                        code == "42601" && message.contains(marker.as_str())
                    }
                    _ => false,
                };
                if swapped {
                    if let Some(Item::Blocked { error, .. }) = self.items.pop_front() {
                        out.extend_from_slice(&error);
                    }
                } else {
                    // The audit gets the masked text too.
                    let message = self
                        .mask_for_audit(message)
                        .unwrap_or_else(|| message.to_string());
                    let code = code.to_string();
                    self.complete_front(now, None, Some((code, message)), done);
                    self.emit(tag, frame, out)?;
                }
                // After an error the server skips the rest of the batch (extended protocol) or of the
                // query string (simple protocol) up to the synchronisation point.
                self.skip_to_sync(now, done);
            }
            Backend::ReadyForQuery { status } => {
                self.txn_status = status;
                self.skip_to_sync(now, done);
                if let Some(Item::Sync { lexer_check }) = self.items.pop_front() {
                    if lexer_check {
                        self.lexer.pending_checks = self.lexer.pending_checks.saturating_sub(1);
                    }
                }
                out.extend_from_slice(frame);
            }
            Backend::ParameterStatus { name, value } => {
                if name.eq_ignore_ascii_case("standard_conforming_strings") {
                    self.lexer.standard_conforming_strings = value.eq_ignore_ascii_case("on");
                } else if name.eq_ignore_ascii_case("client_encoding") {
                    self.lexer.client_encoding_safe = encoding_is_safe(value);
                }
                out.extend_from_slice(frame);
            }
            _ => out.extend_from_slice(frame),
        }
        Ok(())
    }

    fn front_before_sync(&self) -> Option<&Item> {
        self.items
            .front()
            .filter(|i| !matches!(i, Item::Sync { .. }))
    }

    /// The front statement finished (successfully, or with `error`).
    fn complete_front(
        &mut self,
        now: Instant,
        rows: Option<u64>,
        error: Option<(String, String)>,
        done: &mut Vec<Completion>,
    ) {
        if let Some(Item::Stmt { .. }) = self.items.front() {
            if let Some(Item::Stmt { info, started }) = self.items.pop_front() {
                done.push(Completion {
                    info,
                    elapsed: now.saturating_duration_since(started),
                    rows,
                    error,
                    executed: true,
                    answered: true,
                });
            }
        }
    }

    /// Drop every item before the next synchronisation point: the server won't answer them.
    fn skip_to_sync(&mut self, now: Instant, done: &mut Vec<Completion>) {
        while let Some(item) = self.items.front() {
            if matches!(item, Item::Sync { .. }) {
                break;
            }
            if let Some(Item::Stmt { info, started }) = self.items.pop_front() {
                done.push(Completion::without_outcome(info, started, now, true));
            }
        }
    }

    /// The session is over: every statement still waiting for its answer goes to `done`, in
    /// order, as unanswered (it was forwarded, so it has to be audited even though no outcome
    /// will come). The queue is left empty.
    pub fn abandon(&mut self, now: Instant, done: &mut Vec<Completion>) {
        for item in self.items.drain(..) {
            if let Item::Stmt { info, started } = item {
                done.push(Completion::without_outcome(info, started, now, false));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::kinds::StmtKind;

    fn info(text: &str) -> Arc<Classified> {
        Arc::new(Classified {
            text: text.into(),
            kinds: KindSet::one(StmtKind::Select),
            tables: vec![],
            flags: Flags::empty(),
            rule: None,
            protocol: "simple",
            hold: None,
            audit: std::sync::OnceLock::new(),
        })
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(
            &u32::try_from(body.len() + 4)
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        v.extend_from_slice(body);
        v
    }

    fn error_frame(code: &str, msg: &str) -> Vec<u8> {
        let mut out = Vec::new();
        codec::encode_error(&mut out, "ERROR", code, msg, None, None);
        out
    }

    #[test]
    fn completes_statements_in_order_with_rows() {
        let mut p = Pipeline::new(16);
        let t = Instant::now();
        p.push_stmt(info("select 1"), t).unwrap();
        p.push_stmt(info("select 2"), t).unwrap();
        p.push_sync(false).unwrap();
        let (mut out, mut done) = (Vec::new(), Vec::new());
        p.on_backend(&frame(b'C', b"SELECT 1\0"), t, &mut out, &mut done)
            .unwrap();
        p.on_backend(&frame(b'C', b"SELECT 3\0"), t, &mut out, &mut done)
            .unwrap();
        p.on_backend(&frame(b'Z', b"T"), t, &mut out, &mut done)
            .unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(&*done[0].info.text, "select 1");
        assert_eq!(done[1].rows, Some(3));
        assert_eq!(p.txn_status, b'T');
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn abandon_hands_over_every_unanswered_statement_in_order() {
        let mut p = Pipeline::new(16);
        let t = Instant::now();
        p.push_stmt(info("select 1"), t).unwrap();
        p.push_sync(false).unwrap();
        p.push_stmt(info("select 2"), t).unwrap();
        p.push_blocked("PORTCULLIS_BLOCKED_3".into(), error_frame("42501", "no"))
            .unwrap();
        p.push_stmt(info("select 4"), t).unwrap();
        p.push_sync(false).unwrap();
        let (mut out, mut done) = (Vec::new(), Vec::new());
        // The first statement is answered; the session ends before the rest are.
        p.on_backend(&frame(b'C', b"SELECT 1\0"), t, &mut out, &mut done)
            .unwrap();
        p.abandon(t + Duration::from_millis(5), &mut done);
        let texts: Vec<&str> = done.iter().map(|c| &*c.info.text).collect();
        assert_eq!(texts, ["select 1", "select 2", "select 4"]);
        assert!(done[0].answered && done[0].executed);
        assert!(done[1..].iter().all(|c| !c.answered && c.rows.is_none()));
        assert_eq!(done[2].elapsed, Duration::from_millis(5));
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn swaps_marker_error_for_the_gateway_error() {
        let mut p = Pipeline::new(16);
        let t = Instant::now();
        let ours = error_frame("42501", "blocked by rule 'x'");
        p.push_blocked("PORTCULLIS_BLOCKED_7".into(), ours.clone())
            .unwrap();
        p.push_sync(false).unwrap();
        let (mut out, mut done) = (Vec::new(), Vec::new());
        let theirs = error_frame("42601", "syntax error at or near \"PORTCULLIS_BLOCKED_7\"");
        p.on_backend(&theirs, t, &mut out, &mut done).unwrap();
        assert_eq!(out, ours);
        p.on_backend(&frame(b'Z', b"E"), t, &mut out, &mut done)
            .unwrap();
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn does_not_swap_a_natural_error() {
        let mut p = Pipeline::new(16);
        let t = Instant::now();
        p.push_stmt(info("select x"), t).unwrap();
        p.push_blocked("PORTCULLIS_BLOCKED_1".into(), error_frame("42501", "no"))
            .unwrap();
        p.push_sync(false).unwrap();
        let (mut out, mut done) = (Vec::new(), Vec::new());
        let natural = error_frame("42703", "column \"x\" does not exist");
        p.on_backend(&natural, t, &mut out, &mut done).unwrap();
        assert_eq!(out, natural);
        assert_eq!(done.len(), 1);
        assert!(done[0].error.is_some());
        p.on_backend(&frame(b'Z', b"I"), t, &mut out, &mut done)
            .unwrap();
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn error_skips_the_rest_of_the_batch() {
        let mut p = Pipeline::new(16);
        let t = Instant::now();
        p.push_stmt(info("a"), t).unwrap();
        p.push_stmt(info("b"), t).unwrap();
        p.push_sync(false).unwrap();
        p.push_stmt(info("c"), t).unwrap();
        p.push_sync(false).unwrap();
        let (mut out, mut done) = (Vec::new(), Vec::new());
        p.on_backend(
            &error_frame("22012", "division by zero"),
            t,
            &mut out,
            &mut done,
        )
        .unwrap();
        assert_eq!(done.len(), 2);
        assert!(done[0].executed && !done[1].executed);
        p.on_backend(&frame(b'Z', b"I"), t, &mut out, &mut done)
            .unwrap();
        p.on_backend(&frame(b'C', b"SELECT 1\0"), t, &mut out, &mut done)
            .unwrap();
        assert_eq!(&*done[2].info.text, "c");
    }

    #[test]
    fn lexer_untrusted_until_sync_and_when_scs_off() {
        let mut p = Pipeline::new(16);
        let t = Instant::now();
        p.push_sync(true).unwrap();
        assert!(!p.lexer_trusted());
        let (mut out, mut done) = (Vec::new(), Vec::new());
        p.on_backend(
            &frame(b'S', b"standard_conforming_strings\0off\0"),
            t,
            &mut out,
            &mut done,
        )
        .unwrap();
        p.on_backend(&frame(b'Z', b"I"), t, &mut out, &mut done)
            .unwrap();
        assert!(!p.lexer_trusted());
        p.on_backend(
            &frame(b'S', b"standard_conforming_strings\0on\0"),
            t,
            &mut out,
            &mut done,
        )
        .unwrap();
        assert!(p.lexer_trusted());
        p.on_backend(
            &frame(b'S', b"client_encoding\0SJIS\0"),
            t,
            &mut out,
            &mut done,
        )
        .unwrap();
        assert!(!p.lexer_trusted());
    }

    #[test]
    fn relays_non_utf8_error_text_and_keeps_the_queue_in_step() {
        let mut p = Pipeline::new(16);
        let t = Instant::now();
        p.push_stmt(info("select 'é'"), t).unwrap();
        p.push_sync(false).unwrap();
        let (mut out, mut done) = (Vec::new(), Vec::new());
        // A LATIN1 'é' (0xE9) inside the message field.
        let latin1 = frame(b'E', b"SERROR\0C22P02\0Mbad \xe9\0\0");
        p.on_backend(&latin1, t, &mut out, &mut done).unwrap();
        assert_eq!(out, latin1);
        assert_eq!(done.len(), 1);
        assert!(done[0].error.is_some());
        p.on_backend(&frame(b'Z', b"I"), t, &mut out, &mut done)
            .unwrap();
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn refuses_unbounded_pipelining() {
        let mut p = Pipeline::new(2);
        p.push_sync(false).unwrap();
        p.push_sync(false).unwrap();
        assert_eq!(p.push_sync(false), Err(PipelineError::TooManyInFlight(2)));
    }

    #[test]
    fn safe_encodings() {
        assert!(encoding_is_safe("UTF8"));
        assert!(encoding_is_safe("utf-8"));
        assert!(encoding_is_safe("LATIN1"));
        assert!(!encoding_is_safe("SJIS"));
        assert!(!encoding_is_safe("BIG5"));
        assert!(!encoding_is_safe("GB18030"));
    }
}
