//! Holding a statement for approval: submit it to the broker, tell the client it waits, wait for
//! the decision (or the rule's timeout, a cancel from the client, or the client going away), then
//! forward it or refuse it in place.
//!
//! A simple-protocol query string is held whole (it runs as one). An extended-protocol statement
//! is held at each Execute, with the parameters bound to it: an approval is for exactly that
//! statement with exactly those values, once. A rule with `grant` lets the same statement text by
//! the same identity on the same target through without asking again until the window ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::channel::Receiver;

use super::{Judged, Session, Verdict};
use crate::approval::{self, ApprovalRequest, NewRequest, Outcome};
use crate::proto::pg::codec;
use crate::proto::pg::pipeline::{Classified, HoldRule};
use crate::server::now_unix;

/// A statement waiting for its decision.
pub(crate) struct Hold {
    pub(super) request: ApprovalRequest,
    pub(super) outcome: Receiver<Outcome>,
    /// When the rule's timeout ends the wait.
    pub(super) deadline: Instant,
    timeout: Duration,
    then: Then,
    /// How to refuse in place: a marker Parse (extended protocol) or Query (+ its sync point).
    as_parse: bool,
    sync: bool,
}

/// What to forward once approved.
enum Then {
    Query { text: String, judged: Vec<Judged> },
    Execute { info: Arc<Classified> },
}

/// How a wait ended.
pub(super) enum Waited {
    Outcome(Outcome),
    TimedOut,
    /// The client sent a CancelRequest (psql's Ctrl-C).
    Cancelled,
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

impl Session {
    /// The rule's timeout and required approvals, from the policy in force now.
    fn approve_rule(&self, name: &str) -> (Duration, u32) {
        let loaded = self.gw.loaded();
        loaded
            .policy
            .rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| (r.timeout, r.approvals))
            .unwrap_or((Duration::from_secs(600), 1))
    }

    pub(super) async fn hold_query(&self, text: String, judged: Vec<Judged>) -> Verdict {
        let rule = judged
            .iter()
            .find(|j| j.decision.action == crate::config::Action::Approve)
            .and_then(|j| j.decision.rule.clone())
            .unwrap_or_default();
        let then = Then::Query {
            text: text.clone(),
            judged,
        };
        self.submit(text, Vec::new(), rule, then, false, true).await
    }

    pub(super) async fn hold_execute(
        &self,
        info: Arc<Classified>,
        params: Vec<Option<Vec<u8>>>,
        rule: HoldRule,
    ) -> Verdict {
        let text = info.text.to_string();
        self.submit(text, params, rule.rule, Then::Execute { info }, true, false)
            .await
    }

    async fn submit(
        &self,
        text: String,
        params: Vec<Option<Vec<u8>>>,
        rule: String,
        then: Then,
        as_parse: bool,
        sync: bool,
    ) -> Verdict {
        let now = now_unix();
        let fingerprint = approval::fingerprint(&text);
        if let Some(grant) =
            self.gw
                .broker
                .active_grant(&self.identity.name, &self.target.name, &fingerprint, now)
        {
            let label = format!("{rule} (grant {})", grant.id);
            return self.approved(then, Some(label)).await;
        }
        let (timeout, required) = self.approve_rule(&rule);
        let new = NewRequest {
            requester: self.identity.name.clone(),
            origin: self.origin.clone(),
            target: self.target.name.clone(),
            session: self.id.clone(),
            hash: approval::exact_hash(&text, &params),
            params: approval::display_params(&params),
            text,
            rule: rule.clone(),
            expires_at: now.saturating_add(timeout.as_secs().max(1)),
            required,
        };
        let broker = self.gw.broker.clone();
        match smol::unblock(move || broker.submit(new, now)).await {
            Ok((request, outcome)) => {
                self.counters.statements_held.add(1);
                let public_url = self.gw.loaded().policy.gateway.public_url.clone();
                self.gw.notifier.notify(crate::approval::notify::payload(
                    &request,
                    public_url.as_deref(),
                ));
                Verdict::Hold(Box::new(Hold {
                    request,
                    outcome,
                    deadline: Instant::now() + timeout,
                    timeout,
                    then,
                    as_parse,
                    sync,
                }))
            }
            Err(e) => self.refuse(
                Some(&rule),
                &format!("this statement needs approval, but it could not be held: {e}"),
                as_parse,
                sync,
            ),
        }
    }

    /// The NoticeResponse a client sees while its statement waits.
    pub(super) fn held_notice(&self, hold: &Hold) -> Vec<u8> {
        let id = &hold.request.id;
        let base = self
            .gw
            .loaded()
            .policy
            .gateway
            .public_url
            .clone()
            .unwrap_or_default();
        let link = if base.is_empty() {
            String::new()
        } else {
            format!(" {}/requests/{id}", base.trim_end_matches('/'))
        };
        let message = format!(
            "portcullis: statement held for approval (request {id}, rule {}); waiting up to {}",
            hold.request.rule,
            human(hold.timeout)
        );
        let detail = format!(
            "Approve at{link} or with: portcullis approvals approve {id}",
            link = if link.is_empty() {
                " the gateway's approval page".to_string()
            } else {
                link
            }
        );
        let mut out = Vec::new();
        codec::encode_notice(&mut out, "00000", &message, Some(&detail));
        out
    }

    /// After the wait: forward, or refuse in place.
    pub(super) async fn resume(&self, hold: Hold, waited: Waited) -> Verdict {
        let Hold {
            request,
            outcome,
            timeout,
            then,
            as_parse,
            sync,
            ..
        } = *Box::new(hold);
        let id = request.id.clone();
        let rule = request.rule.clone();
        let metrics = &self.gw.metrics;
        let waited_for = Duration::from_secs(now_unix().saturating_sub(request.created_at));
        metrics.approval_wait.observe(waited_for);
        let waited = match waited {
            // The approver may have said yes in the same instant the timer fired.
            Waited::TimedOut => match self.gw.broker.expire(&id, now_unix()) {
                Some(_) => Waited::TimedOut,
                None => outcome
                    .try_recv()
                    .map(Waited::Outcome)
                    .unwrap_or(Waited::TimedOut),
            },
            other => other,
        };
        let (code, message) = match waited {
            Waited::Outcome(Outcome::Approved) => {
                metrics.approvals_approved.fetch_add(1, Ordering::Relaxed);
                return self
                    .approved(then, Some(format!("{rule} (approved: {id})")))
                    .await;
            }
            Waited::Outcome(Outcome::Denied { by, reason }) => {
                metrics.approvals_denied.fetch_add(1, Ordering::Relaxed);
                (
                    "42501",
                    format!("request {id} was denied by {by}: {reason}"),
                )
            }
            Waited::Outcome(Outcome::TimedOut) | Waited::TimedOut => {
                metrics.approvals_timed_out.fetch_add(1, Ordering::Relaxed);
                (
                    "42501",
                    format!("approval request {id} timed out after {}", human(timeout)),
                )
            }
            Waited::Outcome(Outcome::Abandoned) => {
                metrics.approvals_abandoned.fetch_add(1, Ordering::Relaxed);
                ("42501", format!("approval request {id} was abandoned"))
            }
            Waited::Cancelled => {
                self.gw.broker.abandon(&id, now_unix());
                metrics.approvals_abandoned.fetch_add(1, Ordering::Relaxed);
                (
                    "57014",
                    format!(
                        "canceling statement due to user request (approval request {id} withdrawn)"
                    ),
                )
            }
        };
        let ev = self
            .base_event("statement_refused")
            .str("text", self.audit_text(&request.text))
            .str("decision", "approve")
            .str("rule", rule.clone())
            .str("approval", id)
            .str("message", message.clone());
        let _ = self.gw.audit.record(ev).await;
        self.bump(|s| s.blocked += 1);
        self.refuse_with(code, Some(&rule), &message, as_parse, sync)
    }

    async fn approved(&self, then: Then, label: Option<String>) -> Verdict {
        match then {
            Then::Query { text, mut judged } => {
                for j in judged.iter_mut() {
                    if j.decision.action == crate::config::Action::Approve {
                        j.decision.rule = label.clone();
                    }
                }
                self.admit_query(text, judged).await
            }
            Then::Execute { info } => {
                let info = Arc::new(Classified {
                    text: info.text.clone(),
                    kinds: info.kinds,
                    tables: info.tables.clone(),
                    flags: info.flags,
                    rule: label,
                    protocol: info.protocol,
                    hold: None,
                    audit: std::sync::OnceLock::new(),
                });
                self.admit_execute(info).await
            }
        }
    }
}
