//! The broker: pending requests and their waiters, decisions, grants; persisted in redb.
//!
//! Two locks. `ops` serializes transitions, so a check, its audit event, its commit and the
//! waiter's notification happen as one step (two approvers voting at once can't both be counted
//! as the last vote; an approval and a timeout can't both win). `mem` guards the in-memory view
//! and is held only for short copies, so readers (`get`, `list`, `active_grant`) never wait for a
//! disk write.
//!
//! Methods that change state block the calling thread for one durable audit record and one redb
//! commit (a few milliseconds); async callers may wrap them in `smol::unblock`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{Durability, ReadableDatabase, ReadableTable};
use ring::rand::{SecureRandom, SystemRandom};
use smol::channel::{self, Receiver, Sender};

use super::record::{decode_grant, decode_request, encode_grant, encode_request, StoredGrant};
use super::{
    cap, fingerprint, hex, ApprovalRequest, DecideError, Grant, NewRequest, Outcome, State,
    MAX_DECIDED_BYTES, MAX_DECIDED_IN_MEMORY, MAX_GRANTS, MAX_NAME_BYTES, MAX_ORIGIN_BYTES,
    MAX_PARAMS_SHOWN, MAX_PARAM_BYTES, MAX_PENDING, MAX_PENDING_BYTES, MAX_REASON_BYTES,
    MAX_REQUIRED, MAX_TEXT_BYTES,
};
use crate::audit::{Audit, Event};
use crate::config::{Action, Identity, Policy};
use crate::store::tables::{APPROVALS, APPROVALS_PENDING, APPROVAL_IDS, GRANTS};
use crate::store::{Store, StoreError};

/// Reason recorded for requests found pending at start.
const RESTART_REASON: &str = "the gateway restarted while the request was pending";
/// Reason recorded when the client went away.
const ABANDON_REASON: &str = "the client disconnected while waiting";
/// Reason recorded at the deadline.
const TIMEOUT_REASON: &str = "no decision before the rule's timeout";
/// Deny reason when the approver gave none.
const NO_REASON: &str = "no reason given";

fn log(msg: &str) {
    eprintln!("portcullis: {msg}");
}

/// A poisoned lock only means another thread panicked while holding it; the data is still the
/// last consistent state we wrote (every update is a single assignment), so go on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// (identity, target, fingerprint)
type GrantKey = (String, String, String);

/// The in-memory view.
struct Mem {
    /// Every pending request and the newest decided ones, by sequence number.
    requests: BTreeMap<u64, ApprovalRequest>,
    ids: HashMap<String, u64>,
    /// Sequence numbers of the decided requests in `requests`.
    decided: BTreeSet<u64>,
    decided_bytes: usize,
    pending_bytes: usize,
    /// One per pending request whose waiter may still listen.
    waiters: HashMap<u64, Sender<Outcome>>,
    /// Live (not revoked) grants; expired ones are dropped lazily.
    grants: HashMap<GrantKey, Grant>,
    next_seq: u64,
    /// [`MAX_DECIDED_IN_MEMORY`] (smaller in tests).
    max_decided: usize,
}

impl Mem {
    fn new() -> Mem {
        Mem {
            requests: BTreeMap::new(),
            ids: HashMap::new(),
            decided: BTreeSet::new(),
            decided_bytes: 0,
            pending_bytes: 0,
            waiters: HashMap::new(),
            grants: HashMap::new(),
            next_seq: 1,
            max_decided: MAX_DECIDED_IN_MEMORY,
        }
    }

    fn pending(&self) -> usize {
        self.requests.len().saturating_sub(self.decided.len())
    }

    fn insert_pending(&mut self, seq: u64, req: ApprovalRequest) {
        self.pending_bytes = self.pending_bytes.saturating_add(req.text.len());
        self.ids.insert(req.id.clone(), seq);
        self.requests.insert(seq, req);
    }

    /// Stores a decided request (a pending one becoming final, or history loaded at start) and
    /// evicts the oldest decided ones past the caps.
    fn insert_decided(&mut self, seq: u64, req: ApprovalRequest) {
        if let Some(old) = self.requests.get(&seq) {
            if !self.decided.contains(&seq) {
                self.pending_bytes = self.pending_bytes.saturating_sub(old.text.len());
            }
        }
        if self.decided.insert(seq) {
            self.decided_bytes = self.decided_bytes.saturating_add(req.text.len());
        }
        self.ids.insert(req.id.clone(), seq);
        self.requests.insert(seq, req);
        while self.decided.len() > self.max_decided || self.decided_bytes > MAX_DECIDED_BYTES {
            let Some(oldest) = self.decided.pop_first() else {
                break;
            };
            if let Some(r) = self.requests.remove(&oldest) {
                self.decided_bytes = self.decided_bytes.saturating_sub(r.text.len());
                self.ids.remove(&r.id);
            }
        }
    }

    fn add_grant(&mut self, g: Grant, now: u64) {
        self.grants.retain(|_, g| now < g.expires_at);
        let key = (g.identity.clone(), g.target.clone(), g.fingerprint.clone());
        self.grants.insert(key, g);
        while self.grants.len() > MAX_GRANTS {
            let soonest = self
                .grants
                .iter()
                .min_by_key(|(_, g)| g.expires_at)
                .map(|(k, _)| k.clone());
            match soonest {
                Some(k) => self.grants.remove(&k),
                None => break,
            };
        }
    }
}

/// Pending approval requests, decisions and grants. Share it as `Arc<Broker>`.
pub struct Broker {
    store: Arc<Store>,
    audit: Audit,
    rng: SystemRandom,
    /// Serializes state transitions (see the module doc).
    ops: Mutex<()>,
    mem: Mutex<Mem>,
    /// [`MAX_PENDING`] (smaller in tests).
    max_pending: usize,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("pending", &self.pending_count())
            .finish_non_exhaustive()
    }
}

/// The fields every approval event carries.
fn event(kind: &'static str, r: &ApprovalRequest) -> Event {
    Event::new(kind)
        .str("id", r.id.as_str())
        .str("requester", r.requester.as_str())
        .str("target", r.target.as_str())
        .str("rule", r.rule.as_str())
}

fn ended_event(r: &ApprovalRequest) -> Event {
    let kind = match r.state {
        State::TimedOut => "approval_timed_out",
        _ => "approval_abandoned",
    };
    event(kind, r)
        .str("session", r.session.as_str())
        .opt_str("reason", r.reason.clone())
        .uint(
            "waited_secs",
            r.decided_at.unwrap_or(0).saturating_sub(r.created_at),
        )
}

fn audit_error(e: crate::audit::AuditError) -> StoreError {
    StoreError::Db(format!("the audit log could not be written: {e}"))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn bad_name(s: &str) -> bool {
    s.is_empty() || s.len() > MAX_NAME_BYTES
}

impl Broker {
    /// Opens the broker over `store`: creates its tables, turns every request still pending (its
    /// connection died with the previous process) into `Abandoned` (audited, then stored), and
    /// loads the newest decided requests and the live grants.
    ///
    /// # Errors
    /// Store errors; a corrupt record; the audit log can't be written (the gateway should not
    /// start without it).
    pub fn open(store: Arc<Store>, audit: Audit, now: u64) -> Result<Broker, StoreError> {
        let mut txn = store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut stale = Vec::new();
        {
            let approvals = txn.open_table(APPROVALS)?;
            txn.open_table(APPROVAL_IDS)?;
            txn.open_table(GRANTS)?;
            let pending = txn.open_table(APPROVALS_PENDING)?;
            for row in pending.iter()? {
                let seq = row?.0.value();
                match approvals.get(seq)? {
                    Some(v) => stale.push((seq, decode_request(v.value())?)),
                    None => return Err(StoreError::Corrupt("approval pending index")),
                }
            }
        }
        txn.commit()?;

        // Audit first (the last event durable, which makes the earlier ones durable too: the
        // writer commits in order), then store.
        let last = stale.len().saturating_sub(1);
        for (i, (_, r)) in stale.iter_mut().enumerate() {
            r.state = State::Abandoned;
            r.decided_at = Some(now);
            r.reason = Some(RESTART_REASON.to_string());
            let ev = ended_event(r);
            if i == last {
                audit.record_blocking(ev).map_err(audit_error)?;
            } else {
                smol::block_on(audit.record(ev)).map_err(audit_error)?;
            }
        }
        if !stale.is_empty() {
            let mut txn = store.db().begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut approvals = txn.open_table(APPROVALS)?;
                let mut pending = txn.open_table(APPROVALS_PENDING)?;
                for (seq, r) in &stale {
                    approvals.insert(*seq, encode_request(r).as_slice())?;
                    pending.remove(*seq)?;
                }
            }
            txn.commit()?;
        }

        let mut mem = Mem::new();
        let txn = store.db().begin_read()?;
        let approvals = txn.open_table(APPROVALS)?;
        mem.next_seq = approvals
            .last()?
            .map_or(1, |(k, _)| k.value().saturating_add(1));
        let mut newest = Vec::new();
        let mut bytes = 0usize;
        for row in approvals.iter()?.rev() {
            let (k, v) = row?;
            let r = decode_request(v.value())?;
            bytes = bytes.saturating_add(r.text.len());
            if newest.len() >= MAX_DECIDED_IN_MEMORY || bytes > MAX_DECIDED_BYTES {
                break;
            }
            newest.push((k.value(), r));
        }
        for (seq, r) in newest.into_iter().rev() {
            mem.insert_decided(seq, r);
        }
        let grants = txn.open_table(GRANTS)?;
        let mut live = Vec::new();
        for row in grants.iter()? {
            let g = decode_grant(row?.1.value())?;
            if g.revoked.is_none() && now < g.grant.expires_at {
                live.push(g.grant);
            }
        }
        live.sort_by_key(|g| g.created_at);
        for g in live {
            mem.add_grant(g, now);
        }
        drop(approvals);
        drop(grants);
        drop(txn);

        Ok(Broker {
            store,
            audit,
            rng: SystemRandom::new(),
            ops: Mutex::new(()),
            mem: Mutex::new(mem),
            max_pending: MAX_PENDING,
        })
    }

    /// Smaller memory bounds, so tests can reach them.
    #[cfg(test)]
    pub(super) fn with_limits(mut self, max_pending: usize, max_decided: usize) -> Broker {
        self.max_pending = max_pending;
        lock(&self.mem).max_decided = max_decided;
        self
    }

    /// Holds a statement: records the request (audited `approval_requested` durably, then stored)
    /// and returns it with the channel its [`Outcome`] will arrive on (exactly one message, unless
    /// the broker is dropped first). The broker computes the `fingerprint`; it cuts the origin,
    /// the displayed parameters, and clamps `required` to 1..=10.
    ///
    /// # Errors
    /// `InvalidInput` for an empty or overlong requester, target or rule, a statement longer than
    /// [`MAX_TEXT_BYTES`](super::MAX_TEXT_BYTES), a `hash` that is not 64 lowercase hex digits,
    /// or when [`MAX_PENDING`](super::MAX_PENDING) requests (or
    /// [`MAX_PENDING_BYTES`](super::MAX_PENDING_BYTES) of text) are already pending; `Db` when
    /// the audit log can't be written; other store errors. The caller refuses the statement.
    pub fn submit(
        &self,
        req: NewRequest,
        now: u64,
    ) -> Result<(ApprovalRequest, Receiver<Outcome>), StoreError> {
        if bad_name(&req.requester) || bad_name(&req.target) || bad_name(&req.rule) {
            return Err(StoreError::InvalidInput(
                "requester, target and rule must be 1 to 256 bytes",
            ));
        }
        if req.text.len() > MAX_TEXT_BYTES {
            return Err(StoreError::InvalidInput(
                "the statement is longer than 1 MiB, too long to show an approver; it can't be approved",
            ));
        }
        if !is_hex64(&req.hash) {
            return Err(StoreError::InvalidInput(
                "the statement hash must be 64 lowercase hex digits (approval::exact_hash)",
            ));
        }
        let params = req
            .params
            .iter()
            .take(MAX_PARAMS_SHOWN)
            .map(|p| p.as_deref().map(|s| cap(s, MAX_PARAM_BYTES)))
            .collect();

        let _ops = lock(&self.ops);
        let seq = {
            let mem = lock(&self.mem);
            if mem.pending() >= self.max_pending {
                return Err(StoreError::InvalidInput(
                    "too many approval requests are pending (10,000); approvers must decide some first",
                ));
            }
            if mem.pending_bytes.saturating_add(req.text.len()) > MAX_PENDING_BYTES {
                return Err(StoreError::InvalidInput(
                    "the statements pending approval already take 256 MiB; approvers must decide some first",
                ));
            }
            mem.next_seq
        };
        let id = self.new_id("apr_", |id| self.id_taken(id))?;
        let r = ApprovalRequest {
            id,
            requester: req.requester,
            origin: cap(&req.origin, MAX_ORIGIN_BYTES),
            target: req.target,
            session: cap(&req.session, MAX_NAME_BYTES),
            fingerprint: fingerprint(&req.text),
            text: req.text,
            params,
            hash: req.hash,
            rule: req.rule,
            created_at: now,
            expires_at: req.expires_at,
            state: State::Pending,
            required: req.required.clamp(1, MAX_REQUIRED),
            approvals: Vec::new(),
            decided_by: None,
            reason: None,
            decided_at: None,
        };
        let ev = event("approval_requested", &r)
            .str("origin", r.origin.as_str())
            .str("session", r.session.as_str())
            .str("text", r.text.as_str())
            .uint("params", u64::try_from(r.params.len()).unwrap_or(u64::MAX))
            .str("hash", r.hash.as_str())
            .str("fingerprint", r.fingerprint.as_str())
            .uint("required", u64::from(r.required))
            .uint("expires_at", r.expires_at);
        self.audit.record_blocking(ev).map_err(audit_error)?;
        self.persist(seq, &r, None)?;

        let (tx, rx) = channel::bounded(1);
        let mut mem = lock(&self.mem);
        mem.next_seq = seq.saturating_add(1);
        mem.insert_pending(seq, r.clone());
        mem.waiters.insert(seq, tx);
        Ok((r, rx))
    }

    /// An approver's answer. The approver must be an active identity of `policy` matching the
    /// `approvers` of the request's rule in `policy` (the rule must still exist and still be an
    /// `approve` rule), and not the requester. Approving adds one vote per approver; when the
    /// votes reach `required` the request is approved and, if the rule has `grant`, a [`Grant`]
    /// is created for (requester, target, fingerprint) until `now + grant`. Denying (also by an
    /// approver who approved before) ends the request at once. A request past its deadline is
    /// timed out instead. Each step is audited durably (`approval_vote`, `approval_approved`,
    /// `approval_denied`, `grant_created`), then stored, then the waiter is told.
    ///
    /// # Errors
    /// See [`DecideError`]; on every error nothing changed.
    pub fn decide(
        &self,
        id: &str,
        approver: &Identity,
        approve: bool,
        reason: Option<String>,
        policy: &Policy,
        now: u64,
    ) -> Result<ApprovalRequest, DecideError> {
        let _ops = lock(&self.ops);
        let found = {
            let mem = lock(&self.mem);
            mem.ids
                .get(id)
                .and_then(|seq| mem.requests.get(seq).map(|r| (*seq, r.clone())))
        };
        let (seq, mut r) = match found {
            Some(f) => f,
            None => {
                return Err(match self.load(id) {
                    Ok(Some((_, r))) => DecideError::NotPending(r.state),
                    Ok(None) => DecideError::NotFound,
                    Err(e) => DecideError::Store(e),
                })
            }
        };
        if r.state != State::Pending {
            return Err(DecideError::NotPending(r.state));
        }
        if now >= r.expires_at {
            self.end(seq, r, State::TimedOut, TIMEOUT_REASON, now);
            return Err(DecideError::NotPending(State::TimedOut));
        }
        if approver.name == r.requester {
            return Err(DecideError::SelfApproval);
        }
        let rule = policy
            .rules
            .iter()
            .find(|rule| rule.name == r.rule && rule.action == Action::Approve)
            .ok_or(DecideError::NotAnApprover)?;
        let current = policy
            .active_identity(&approver.name)
            .ok_or(DecideError::NotAnApprover)?;
        if !rule.approvers.iter().any(|w| w.matches(current)) {
            return Err(DecideError::NotAnApprover);
        }
        let name = current.name.clone();
        let reason = reason
            .map(|s| cap(s.trim(), MAX_REASON_BYTES))
            .filter(|s| !s.is_empty());

        let mut events = Vec::new();
        let mut grant = None;
        let outcome;
        if approve {
            if r.approvals.iter().any(|(who, _)| *who == name) {
                return Err(DecideError::AlreadyApproved);
            }
            r.approvals.push((name.clone(), now));
            let votes = u32::try_from(r.approvals.len()).unwrap_or(u32::MAX);
            events.push(
                event("approval_vote", &r)
                    .str("approver", name.as_str())
                    .uint("votes", u64::from(votes))
                    .uint("required", u64::from(r.required)),
            );
            if votes >= r.required {
                r.state = State::Approved;
                r.decided_by = Some(name.clone());
                r.decided_at = Some(now);
                r.reason = reason;
                let approvers: Vec<String> = r.approvals.iter().map(|(w, _)| w.clone()).collect();
                events.push(
                    event("approval_approved", &r)
                        .str("approver", name.as_str())
                        .list("approvers", approvers.clone())
                        .str("hash", r.hash.as_str())
                        .uint("waited_secs", now.saturating_sub(r.created_at)),
                );
                if let Some(window) = rule.grant {
                    let g = Grant {
                        id: self.new_id("grt_", |id| self.grant_taken(id))?,
                        identity: r.requester.clone(),
                        target: r.target.clone(),
                        fingerprint: r.fingerprint.clone(),
                        text: r.text.clone(),
                        rule: r.rule.clone(),
                        granted_by: approvers.clone(),
                        created_at: now,
                        expires_at: now.saturating_add(window.as_secs()),
                    };
                    events.push(
                        Event::new("grant_created")
                            .str("grant_id", g.id.as_str())
                            .str("id", r.id.as_str())
                            .str("requester", g.identity.as_str())
                            .str("target", g.target.as_str())
                            .str("rule", g.rule.as_str())
                            .str("fingerprint", g.fingerprint.as_str())
                            .list("approvers", approvers)
                            .uint("expires_at", g.expires_at),
                    );
                    grant = Some(StoredGrant {
                        grant: g,
                        request: r.id.clone(),
                        revoked: None,
                    });
                }
                outcome = Some(Outcome::Approved);
            } else {
                outcome = None;
            }
        } else {
            r.state = State::Denied;
            r.decided_by = Some(name.clone());
            r.decided_at = Some(now);
            r.reason = reason;
            events.push(
                event("approval_denied", &r)
                    .str("approver", name.as_str())
                    .opt_str("reason", r.reason.clone()),
            );
            outcome = Some(Outcome::Denied {
                by: name,
                reason: r.reason.clone().unwrap_or_else(|| NO_REASON.to_string()),
            });
        }

        for ev in events {
            self.audit.record_blocking(ev).map_err(DecideError::Audit)?;
        }
        self.persist(seq, &r, grant.as_ref())?;
        self.publish(seq, &r, outcome, grant.map(|g| g.grant), now);
        Ok(r)
    }

    /// Pending -> `TimedOut` (the proxy calls it at the deadline), audited `approval_timed_out`;
    /// the waiter gets [`Outcome::TimedOut`]. `None` if the request is not pending (then it was
    /// decided first: its outcome is already on the waiter's channel).
    pub fn expire(&self, id: &str, now: u64) -> Option<ApprovalRequest> {
        let _ops = lock(&self.ops);
        let (seq, r) = self.pending(id)?;
        Some(self.end(seq, r, State::TimedOut, TIMEOUT_REASON, now))
    }

    /// Pending -> `Abandoned` (the client went away), audited `approval_abandoned`. `None` if the
    /// request is not pending.
    pub fn abandon(&self, id: &str, now: u64) -> Option<ApprovalRequest> {
        let _ops = lock(&self.ops);
        let (seq, r) = self.pending(id)?;
        Some(self.end(seq, r, State::Abandoned, ABANDON_REASON, now))
    }

    /// Times out every pending request whose deadline is at or before `now` (housekeeping, in
    /// case a waiter died without calling [`expire`](Self::expire)). Returns them.
    pub fn expire_due(&self, now: u64) -> Vec<ApprovalRequest> {
        let due: Vec<String> = {
            let mem = lock(&self.mem);
            mem.requests
                .values()
                .filter(|r| r.state == State::Pending && r.expires_at <= now)
                .map(|r| r.id.clone())
                .collect()
        };
        due.iter().filter_map(|id| self.expire(id, now)).collect()
    }

    /// The request, from memory or (for old history) from redb. Store errors read as `None`.
    pub fn get(&self, id: &str) -> Option<ApprovalRequest> {
        {
            let mem = lock(&self.mem);
            if let Some(r) = mem.ids.get(id).and_then(|seq| mem.requests.get(seq)) {
                return Some(r.clone());
            }
        }
        match self.load(id) {
            Ok(found) => found.map(|(_, r)| r),
            Err(e) => {
                log(&format!("approval request {id}: {e}"));
                None
            }
        }
    }

    /// Requests in memory (every pending one, the newest decided ones), newest first, optionally
    /// only those in `state`, at most `limit`.
    pub fn list(&self, state: Option<State>, limit: usize) -> Vec<ApprovalRequest> {
        let mem = lock(&self.mem);
        mem.requests
            .values()
            .rev()
            .filter(|r| state.is_none_or(|s| r.state == s))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The live grant for this identity, target and statement fingerprint, if any.
    pub fn active_grant(
        &self,
        identity: &str,
        target: &str,
        fingerprint: &str,
        now: u64,
    ) -> Option<Grant> {
        let mem = lock(&self.mem);
        let key = (
            identity.to_string(),
            target.to_string(),
            fingerprint.to_string(),
        );
        mem.grants.get(&key).filter(|g| now < g.expires_at).cloned()
    }

    /// Live grants, newest first.
    pub fn grants(&self, now: u64) -> Vec<Grant> {
        let mem = lock(&self.mem);
        let mut out: Vec<Grant> = mem
            .grants
            .values()
            .filter(|g| now < g.expires_at)
            .cloned()
            .collect();
        out.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        out
    }

    /// Ends a live grant at once, audited `grant_revoked` with `by`. `None` if no live grant has
    /// this id. Revoking only makes things stricter, so a failed audit or store write is logged
    /// and the grant is still dropped from memory (a store failure means it could come back after
    /// a restart, until it expires).
    pub fn revoke_grant(&self, id: &str, by: &str, now: u64) -> Option<Grant> {
        let _ops = lock(&self.ops);
        let g = {
            let mut mem = lock(&self.mem);
            let key = mem
                .grants
                .iter()
                .find(|(_, g)| g.id == id && now < g.expires_at)
                .map(|(k, _)| k.clone())?;
            mem.grants.remove(&key)?
        };
        let ev = Event::new("grant_revoked")
            .str("grant_id", g.id.as_str())
            .str("requester", g.identity.as_str())
            .str("target", g.target.as_str())
            .str("rule", g.rule.as_str())
            .str("fingerprint", g.fingerprint.as_str())
            .str("by", by);
        if let Err(e) = self.audit.record_blocking(ev) {
            log(&format!(
                "grant {id} revoked, but its audit event failed: {e}"
            ));
        }
        if let Err(e) = self.store_revocation(id, by, now) {
            log(&format!(
                "grant {id} revoked, but the store write failed: {e}"
            ));
        }
        Some(g)
    }

    /// Requests waiting for a decision.
    pub fn pending_count(&self) -> usize {
        lock(&self.mem).pending()
    }

    // --- internals -------------------------------------------------------------------------

    /// The pending request with this id (in memory: every pending request is).
    fn pending(&self, id: &str) -> Option<(u64, ApprovalRequest)> {
        let mem = lock(&self.mem);
        let seq = *mem.ids.get(id)?;
        mem.requests
            .get(&seq)
            .filter(|r| r.state == State::Pending)
            .map(|r| (seq, r.clone()))
    }

    /// Ends a pending request for a reason of the gateway's (timeout, client gone). Both make the
    /// statement not run, so a failed audit or store write is logged, not fatal.
    fn end(
        &self,
        seq: u64,
        mut r: ApprovalRequest,
        state: State,
        reason: &str,
        now: u64,
    ) -> ApprovalRequest {
        r.state = state;
        r.decided_at = Some(now);
        r.reason = Some(reason.to_string());
        if let Err(e) = self.audit.record_blocking(ended_event(&r)) {
            log(&format!(
                "approval request {}: audit event failed: {e}",
                r.id
            ));
        }
        if let Err(e) = self.persist(seq, &r, None) {
            log(&format!(
                "approval request {}: store write failed: {e}",
                r.id
            ));
        }
        let outcome = match state {
            State::TimedOut => Outcome::TimedOut,
            _ => Outcome::Abandoned,
        };
        self.publish(seq, &r, Some(outcome), None, now);
        r
    }

    /// Updates memory and, when the request ended, tells its waiter.
    fn publish(
        &self,
        seq: u64,
        r: &ApprovalRequest,
        outcome: Option<Outcome>,
        grant: Option<Grant>,
        now: u64,
    ) {
        let mut mem = lock(&self.mem);
        if let Some(g) = grant {
            mem.add_grant(g, now);
        }
        if r.state == State::Pending {
            if let Some(slot) = mem.requests.get_mut(&seq) {
                *slot = r.clone();
            }
            return;
        }
        mem.insert_decided(seq, r.clone());
        if let (Some(tx), Some(o)) = (mem.waiters.remove(&seq), outcome) {
            // The waiter may have gone (its receiver dropped): nothing to tell.
            let _ = tx.try_send(o);
        }
    }

    /// Writes the request (and a new grant) in one `Immediate` transaction.
    fn persist(
        &self,
        seq: u64,
        r: &ApprovalRequest,
        grant: Option<&StoredGrant>,
    ) -> Result<(), StoreError> {
        let mut txn = self.store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut approvals = txn.open_table(APPROVALS)?;
            approvals.insert(seq, encode_request(r).as_slice())?;
            let mut ids = txn.open_table(APPROVAL_IDS)?;
            ids.insert(r.id.as_str(), seq)?;
            let mut pending = txn.open_table(APPROVALS_PENDING)?;
            if r.state == State::Pending {
                pending.insert(seq, r.expires_at)?;
            } else {
                pending.remove(seq)?;
            }
            if let Some(g) = grant {
                let mut grants = txn.open_table(GRANTS)?;
                grants.insert(g.grant.id.as_str(), encode_grant(g).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn store_revocation(&self, id: &str, by: &str, now: u64) -> Result<(), StoreError> {
        let mut txn = self.store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut grants = txn.open_table(GRANTS)?;
            let found = grants.get(id)?.map(|v| decode_grant(v.value()));
            if let Some(g) = found {
                let mut g = g?;
                g.revoked = Some((by.to_string(), now));
                grants.insert(id, encode_grant(&g).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A request from redb by id.
    fn load(&self, id: &str) -> Result<Option<(u64, ApprovalRequest)>, StoreError> {
        let txn = self.store.db().begin_read()?;
        let ids = txn.open_table(APPROVAL_IDS)?;
        let Some(seq) = ids.get(id)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let approvals = txn.open_table(APPROVALS)?;
        let Some(r) = approvals.get(seq)?.map(|v| decode_request(v.value())) else {
            return Err(StoreError::Corrupt("approval id index"));
        };
        Ok(Some((seq, r?)))
    }

    fn id_taken(&self, id: &str) -> Result<bool, StoreError> {
        if lock(&self.mem).ids.contains_key(id) {
            return Ok(true);
        }
        let txn = self.store.db().begin_read()?;
        Ok(txn.open_table(APPROVAL_IDS)?.get(id)?.is_some())
    }

    fn grant_taken(&self, id: &str) -> Result<bool, StoreError> {
        let txn = self.store.db().begin_read()?;
        Ok(txn.open_table(GRANTS)?.get(id)?.is_some())
    }

    /// `prefix` + 12 hex characters (48 random bits), not `taken`.
    fn new_id(
        &self,
        prefix: &str,
        taken: impl Fn(&str) -> Result<bool, StoreError>,
    ) -> Result<String, StoreError> {
        for _ in 0..8 {
            let mut b = [0u8; 6];
            self.rng.fill(&mut b).map_err(|_| StoreError::Random)?;
            let id = format!("{prefix}{}", hex(&b));
            if !taken(&id)? {
                return Ok(id);
            }
        }
        Err(StoreError::Random)
    }
}
