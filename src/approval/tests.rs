//! Broker behaviour over a real store and audit writer in temp dirs, with time passed in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::record::{decode_grant, decode_request, encode_grant, encode_request, StoredGrant};
use super::*;
use crate::audit::{self, Audit, AuditWriter};
use crate::config::{self, Policy};
use crate::store::{test_dir, Store};

const POLICY: &str = r#"
[gateway]
data_dir = "/tmp/portcullis-approval-test"
[[identity]]
name = "alice"
roles = ["dba"]
[[identity]]
name = "bob"
roles = ["dba"]
[[identity]]
name = "carol"
roles = ["dba"]
[[identity]]
name = "ci"
roles = ["ci"]
[[identity]]
name = "ci2"
roles = ["ci"]
[[target]]
name = "db"
listen = "127.0.0.1:6432"
upstream = "db.internal:5432"
database = "app"
user = "app"
upstream_tls = "disable"
[[rule]]
name = "writes"
who = ["*"]
sql = ["insert"]
action = "approve"
approvers = ["role:dba"]
[[rule]]
name = "two-keys"
who = ["*"]
sql = ["delete"]
action = "approve"
approvers = ["role:dba"]
approvals = 2
[[rule]]
name = "windowed"
who = ["*"]
sql = ["update"]
action = "approve"
approvers = ["role:dba"]
grant = "15m"
"#;

fn policy() -> Policy {
    policy_from(POLICY)
}

fn policy_from(text: &str) -> Policy {
    match config::parse(text, Path::new("/etc/portcullis/portcullis.toml")) {
        Ok(p) => p,
        Err(e) => panic!("test policy: {e}"),
    }
}

/// A store, an audit writer and a broker in a temp dir; `restart` reopens all three.
struct Fx {
    dir: PathBuf,
    store: Option<Arc<Store>>,
    audit: Option<Audit>,
    writer: Option<AuditWriter>,
    broker: Option<Broker>,
    policy: Policy,
}

impl Fx {
    fn new(name: &str) -> Fx {
        let mut fx = Fx {
            dir: test_dir(name),
            store: None,
            audit: None,
            writer: None,
            broker: None,
            policy: policy(),
        };
        fx.start(1000);
        fx
    }

    fn start(&mut self, now: u64) {
        let store = Store::open(&self.dir).unwrap();
        let (audit, writer) = audit::start(store.clone(), Duration::from_millis(10)).unwrap();
        self.broker = Some(Broker::open(store.clone(), audit.clone(), now).unwrap());
        self.store = Some(store);
        self.audit = Some(audit);
        self.writer = Some(writer);
    }

    fn stop(&mut self) {
        self.broker = None;
        self.audit = None;
        if let Some(w) = self.writer.take() {
            w.shutdown();
        }
        self.store = None;
    }

    fn restart(&mut self, now: u64) {
        self.stop();
        self.start(now);
    }

    fn b(&self) -> &Broker {
        self.broker.as_ref().unwrap()
    }

    fn who(&self, name: &str) -> config::Identity {
        self.policy.identity(name).unwrap().clone()
    }

    fn submit(
        &self,
        requester: &str,
        rule: &str,
        text: &str,
        now: u64,
    ) -> (ApprovalRequest, smol::channel::Receiver<Outcome>) {
        self.b()
            .submit(new_request(requester, rule, text, now + 600), now)
            .unwrap()
    }

    fn decide(
        &self,
        id: &str,
        approver: &str,
        approve: bool,
        reason: Option<&str>,
        now: u64,
    ) -> Result<ApprovalRequest, DecideError> {
        self.b().decide(
            id,
            &self.who(approver),
            approve,
            reason.map(str::to_string),
            &self.policy,
            now,
        )
    }

    /// The kinds of all audit events so far.
    fn audit_kinds(&self) -> Vec<String> {
        let lines = audit::export_lines(self.store.as_ref().unwrap(), 0, 10_000, 1 << 24).unwrap();
        lines
            .iter()
            .map(|l| {
                let start = l.find("\"kind\":\"").unwrap() + 8;
                let end = start + l[start..].find('"').unwrap();
                l[start..end].to_string()
            })
            .collect()
    }

    fn audit_lines(&self) -> Vec<String> {
        audit::export_lines(self.store.as_ref().unwrap(), 0, 10_000, 1 << 24).unwrap()
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn new_request(requester: &str, rule: &str, text: &str, expires_at: u64) -> NewRequest {
    let raw = vec![Some(b"42".to_vec()), None];
    NewRequest {
        requester: requester.into(),
        origin: "10.0.0.7:51234 job 17".into(),
        target: "db".into(),
        session: "s-1".into(),
        text: text.into(),
        params: display_params(&raw),
        hash: exact_hash(text, &raw),
        rule: rule.into(),
        expires_at,
        required: policy()
            .rules
            .iter()
            .find(|r| r.name == rule)
            .map_or(1, |r| r.approvals),
    }
}

const INSERT: &str = "INSERT INTO t VALUES ($1, $2)";

#[test]
fn approval_by_another_approver_releases_the_waiter() {
    let fx = Fx::new("apr-approve");
    let (r, rx) = fx.submit("ci", "writes", INSERT, 1000);
    assert!(r.id.starts_with("apr_") && r.id.len() == 16, "{}", r.id);
    assert!(r.id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.state, State::Pending);
    assert_eq!(r.fingerprint, fingerprint(INSERT));
    assert_eq!(r.params, vec![Some("42".to_string()), None]);
    assert_eq!((r.created_at, r.expires_at, r.required), (1000, 1600, 1));
    assert_eq!(fx.b().pending_count(), 1);
    assert!(rx.try_recv().is_err(), "nothing decided yet");

    let done = fx.decide(&r.id, "bob", true, None, 1010).unwrap();
    assert_eq!(done.state, State::Approved);
    assert_eq!(done.approvals, vec![("bob".to_string(), 1010)]);
    assert_eq!(
        (done.decided_by.as_deref(), done.decided_at),
        (Some("bob"), Some(1010))
    );
    assert_eq!(rx.try_recv().unwrap(), Outcome::Approved);
    assert_eq!(fx.b().pending_count(), 0);
    assert_eq!(fx.b().get(&r.id).unwrap(), done);
    assert_eq!(
        fx.audit_kinds(),
        ["approval_requested", "approval_vote", "approval_approved"]
    );
    let lines = fx.audit_lines();
    assert!(
        lines[0].contains(&format!(
            "\"id\":\"{}\",\"requester\":\"ci\",\"target\":\"db\",\"rule\":\"writes\"",
            r.id
        )),
        "{}",
        lines[0]
    );
    assert!(lines[2].contains("\"approver\":\"bob\""), "{}", lines[2]);
    // Decided requests can't be decided again.
    assert!(matches!(
        fx.decide(&r.id, "carol", false, None, 1020),
        Err(DecideError::NotPending(State::Approved))
    ));
    assert!(matches!(
        fx.decide("apr_000000000000", "carol", true, None, 1020),
        Err(DecideError::NotFound)
    ));
}

#[test]
fn requester_can_never_decide_its_own_request() {
    let fx = Fx::new("apr-self");
    let (r, rx) = fx.submit("alice", "writes", INSERT, 1000);
    for approve in [true, false] {
        let e = fx.decide(&r.id, "alice", approve, None, 1001).unwrap_err();
        assert!(matches!(e, DecideError::SelfApproval), "{e:?}");
        assert_eq!(e.http_status(), 403);
        assert!(e.to_string().contains("you made this request"), "{e}");
    }
    assert_eq!(fx.b().get(&r.id).unwrap().state, State::Pending);
    assert!(rx.try_recv().is_err());
    assert_eq!(fx.audit_kinds(), ["approval_requested"]);
}

#[test]
fn only_approvers_of_the_current_rule_may_decide() {
    let mut fx = Fx::new("apr-non-approver");
    let (r, rx) = fx.submit("ci", "writes", INSERT, 1000);
    let e = fx.decide(&r.id, "ci2", true, None, 1001).unwrap_err();
    assert!(matches!(e, DecideError::NotAnApprover), "{e:?}");
    assert!(e.to_string().contains("not an approver"), "{e}");

    // The rule turned into a block rule, then vanished: nobody can approve any more.
    let blocking = POLICY.replacen(
        "sql = [\"insert\"]\naction = \"approve\"\napprovers = [\"role:dba\"]",
        "sql = [\"insert\"]\naction = \"block\"",
        1,
    );
    assert_ne!(blocking, POLICY);
    fx.policy = policy_from(&blocking);
    assert!(matches!(
        fx.decide(&r.id, "bob", true, None, 1002),
        Err(DecideError::NotAnApprover)
    ));
    fx.policy = policy_from(&blocking.replacen("name = \"writes\"", "name = \"renamed\"", 1));
    assert!(matches!(
        fx.decide(&r.id, "bob", true, None, 1002),
        Err(DecideError::NotAnApprover)
    ));
    // Bob lost the role.
    let demoted = POLICY.replacen(
        "name = \"bob\"\nroles = [\"dba\"]",
        "name = \"bob\"\nroles = []",
        1,
    );
    assert_ne!(demoted, POLICY);
    fx.policy = policy_from(&demoted);
    let bob = policy().identity("bob").unwrap().clone();
    assert!(matches!(
        fx.b().decide(&r.id, &bob, true, None, &fx.policy, 1003),
        Err(DecideError::NotAnApprover)
    ));
    assert!(rx.try_recv().is_err());
    assert_eq!(fx.b().pending_count(), 1);
}

#[test]
fn a_rule_can_require_several_distinct_approvals() {
    let fx = Fx::new("apr-two-keys");
    let (r, rx) = fx.submit("ci", "two-keys", "DELETE FROM t WHERE id = 1", 1000);
    assert_eq!(r.required, 2);
    let one = fx.decide(&r.id, "bob", true, None, 1001).unwrap();
    assert_eq!(one.state, State::Pending);
    assert_eq!(one.approvals.len(), 1);
    assert!(rx.try_recv().is_err());
    let e = fx.decide(&r.id, "bob", true, None, 1002).unwrap_err();
    assert!(matches!(e, DecideError::AlreadyApproved), "{e:?}");
    assert_eq!(e.http_status(), 409);
    let two = fx.decide(&r.id, "carol", true, None, 1003).unwrap();
    assert_eq!(two.state, State::Approved);
    assert_eq!(
        two.approvals,
        vec![("bob".to_string(), 1001), ("carol".to_string(), 1003)]
    );
    assert_eq!(rx.try_recv().unwrap(), Outcome::Approved);
    assert_eq!(
        fx.audit_kinds(),
        [
            "approval_requested",
            "approval_vote",
            "approval_vote",
            "approval_approved"
        ]
    );
}

#[test]
fn one_deny_ends_the_request_with_its_reason() {
    let fx = Fx::new("apr-deny");
    let (r, rx) = fx.submit("ci", "two-keys", "DELETE FROM t", 1000);
    fx.decide(&r.id, "bob", true, None, 1001).unwrap();
    // Bob changes his mind: a deny is always allowed to an approver.
    let d = fx
        .decide(&r.id, "bob", false, Some("  not during the sale  "), 1002)
        .unwrap();
    assert_eq!(d.state, State::Denied);
    assert_eq!(d.reason.as_deref(), Some("not during the sale"));
    assert_eq!(
        rx.try_recv().unwrap(),
        Outcome::Denied {
            by: "bob".into(),
            reason: "not during the sale".into()
        }
    );
    assert!(matches!(
        fx.decide(&r.id, "carol", true, None, 1003),
        Err(DecideError::NotPending(State::Denied))
    ));
    let (r2, rx2) = fx.submit("ci", "writes", INSERT, 1010);
    fx.decide(&r2.id, "carol", false, Some(""), 1011).unwrap();
    assert_eq!(
        rx2.try_recv().unwrap(),
        Outcome::Denied {
            by: "carol".into(),
            reason: "no reason given".into()
        }
    );
    let kinds = fx.audit_kinds();
    assert_eq!(kinds[2], "approval_denied");
    assert!(fx.audit_lines()[2].contains("\"reason\":\"not during the sale\""));
}

#[test]
fn expire_times_out_a_pending_request_once() {
    let fx = Fx::new("apr-expire");
    let (r, rx) = fx.submit("ci", "writes", INSERT, 1000);
    let t = fx.b().expire(&r.id, 1600).unwrap();
    assert_eq!(t.state, State::TimedOut);
    assert_eq!(t.decided_at, Some(1600));
    assert_eq!(rx.try_recv().unwrap(), Outcome::TimedOut);
    assert_eq!(fx.b().expire(&r.id, 1601), None);
    assert!(matches!(
        fx.decide(&r.id, "bob", true, None, 1602),
        Err(DecideError::NotPending(State::TimedOut))
    ));
    assert!(fx.audit_lines()[1].contains("\"kind\":\"approval_timed_out\""));
    assert!(fx.audit_lines()[1].contains("\"waited_secs\":600"));

    // A vote that arrives after the deadline times the request out instead.
    let (r, rx) = fx.submit("ci", "writes", INSERT, 2000);
    assert!(matches!(
        fx.decide(&r.id, "bob", true, None, 2600),
        Err(DecideError::NotPending(State::TimedOut))
    ));
    assert_eq!(rx.try_recv().unwrap(), Outcome::TimedOut);

    // Housekeeping finds what no waiter expired.
    let (r, _rx) = fx.submit("ci", "writes", INSERT, 3000);
    let (keep, _rx2) = fx.submit("ci", "writes", INSERT, 3100);
    let due = fx.b().expire_due(3600);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, r.id);
    assert_eq!(fx.b().get(&keep.id).unwrap().state, State::Pending);
}

#[test]
fn abandon_marks_a_request_whose_client_left() {
    let fx = Fx::new("apr-abandon");
    let (r, rx) = fx.submit("ci", "writes", INSERT, 1000);
    drop(rx);
    let a = fx.b().abandon(&r.id, 1005).unwrap();
    assert_eq!(a.state, State::Abandoned);
    assert_eq!(fx.b().abandon(&r.id, 1006), None);
    assert_eq!(fx.b().pending_count(), 0);
    assert!(fx.audit_lines()[1].contains("\"kind\":\"approval_abandoned\""));
    // An approver arriving late is told so.
    let e = fx.decide(&r.id, "bob", true, None, 1007).unwrap_err();
    assert_eq!(
        e.to_string(),
        "this request is no longer pending (it is abandoned); nothing was changed"
    );
}

#[test]
fn restart_abandons_pending_requests_and_keeps_history() {
    let mut fx = Fx::new("apr-restart");
    let (done, _rx) = fx.submit("ci", "writes", INSERT, 1000);
    fx.decide(&done.id, "bob", true, None, 1001).unwrap();
    let (open, rx) = fx.submit("ci", "writes", "INSERT INTO u VALUES (1)", 1002);
    fx.restart(1100);
    // The old waiter's channel is closed: the broker that held its sender is gone.
    assert!(rx.recv_blocking().is_err());
    let a = fx.b().get(&open.id).unwrap();
    assert_eq!(a.state, State::Abandoned);
    assert_eq!(a.decided_at, Some(1100));
    assert!(a.reason.as_deref().unwrap().contains("restarted"));
    let d = fx.b().get(&done.id).unwrap();
    assert_eq!(
        (d.state, d.decided_by.as_deref()),
        (State::Approved, Some("bob"))
    );
    assert_eq!(fx.b().pending_count(), 0);
    let (newer, _rx) = fx.submit("ci", "writes", INSERT, 1200);
    let ids: Vec<String> = fx.b().list(None, 10).into_iter().map(|r| r.id).collect();
    assert_eq!(ids, [newer.id.clone(), open.id.clone(), done.id.clone()]);
    assert!(fx.audit_kinds().contains(&"approval_abandoned".to_string()));
    // A second restart changes nothing more.
    fx.restart(1300);
    assert_eq!(fx.b().get(&open.id).unwrap().decided_at, Some(1100));
    assert_eq!(fx.b().get(&newer.id).unwrap().state, State::Abandoned);
    assert_eq!(
        fx.audit_kinds()
            .iter()
            .filter(|k| *k == "approval_abandoned")
            .count(),
        2
    );
}

#[test]
fn list_filters_by_state_newest_first_with_a_limit() {
    let fx = Fx::new("apr-list");
    let mut ids = Vec::new();
    for i in 0..4 {
        let (r, _rx) = fx.submit("ci", "writes", INSERT, 1000 + i);
        ids.push(r.id);
    }
    fx.decide(&ids[1], "bob", false, None, 1010).unwrap();
    let pending: Vec<String> = fx
        .b()
        .list(Some(State::Pending), 10)
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(pending, [ids[3].clone(), ids[2].clone(), ids[0].clone()]);
    assert_eq!(fx.b().list(Some(State::Denied), 10)[0].id, ids[1]);
    assert_eq!(fx.b().list(None, 2).len(), 2);
    assert!(fx.b().list(Some(State::Approved), 10).is_empty());
    assert_eq!(State::from_name("timed_out"), Some(State::TimedOut));
    assert_eq!(State::from_name("nope"), None);
}

#[test]
fn grant_lets_the_same_text_by_the_same_identity_and_target_through_until_it_ends() {
    let mut fx = Fx::new("apr-grant");
    let text = "UPDATE t SET a = 1 WHERE id = 7";
    let (r, rx) = fx.submit("ci", "windowed", text, 1000);
    assert_eq!(fx.b().grants(1000), vec![]);
    fx.decide(&r.id, "bob", true, None, 1010).unwrap();
    assert_eq!(rx.try_recv().unwrap(), Outcome::Approved);
    let fp = fingerprint(text);
    let g = fx.b().active_grant("ci", "db", &fp, 1011).unwrap();
    assert!(g.id.starts_with("grt_") && g.id.len() == 16, "{}", g.id);
    assert_eq!(
        (g.identity.as_str(), g.target.as_str(), g.rule.as_str()),
        ("ci", "db", "windowed")
    );
    assert_eq!((g.created_at, g.expires_at), (1010, 1010 + 900));
    assert_eq!(g.granted_by, ["bob"]);
    assert_eq!(g.text, text);
    // Another identity, target or text: no grant. At the end of the window: none.
    assert_eq!(fx.b().active_grant("ci2", "db", &fp, 1011), None);
    assert_eq!(fx.b().active_grant("ci", "db2", &fp, 1011), None);
    let changed = fingerprint("UPDATE t SET a = 2 WHERE id = 7");
    assert_eq!(fx.b().active_grant("ci", "db", &changed, 1011), None);
    assert!(fx.b().active_grant("ci", "db", &fp, 1909).is_some());
    assert_eq!(fx.b().active_grant("ci", "db", &fp, 1910), None);
    assert_eq!(fx.b().grants(1011), vec![g.clone()]);
    assert!(fx.audit_kinds().contains(&"grant_created".to_string()));
    // Rules without `grant` create none.
    let (w, _rx) = fx.submit("ci", "writes", INSERT, 1020);
    fx.decide(&w.id, "bob", true, None, 1021).unwrap();
    assert_eq!(fx.b().grants(1022).len(), 1);
    // Grants survive a restart (while live).
    fx.restart(1500);
    assert_eq!(fx.b().active_grant("ci", "db", &fp, 1501), Some(g));
    fx.restart(2000);
    assert!(fx.b().grants(2000).is_empty());
}

#[test]
fn revoked_grant_stops_applying_and_stays_revoked() {
    let mut fx = Fx::new("apr-revoke");
    let text = "UPDATE t SET a = 1";
    let (r, _rx) = fx.submit("ci", "windowed", text, 1000);
    fx.decide(&r.id, "bob", true, None, 1001).unwrap();
    let g = fx.b().grants(1002).pop().unwrap();
    assert_eq!(fx.b().revoke_grant(&g.id, "alice", 1003), Some(g.clone()));
    assert_eq!(
        fx.b().active_grant("ci", "db", &fingerprint(text), 1004),
        None
    );
    assert_eq!(fx.b().revoke_grant(&g.id, "alice", 1005), None);
    assert_eq!(fx.b().revoke_grant("grt_000000000000", "alice", 1005), None);
    let last = fx.audit_lines().pop().unwrap();
    assert!(
        last.contains("\"kind\":\"grant_revoked\"") && last.contains("\"by\":\"alice\""),
        "{last}"
    );
    fx.restart(1010);
    assert!(fx.b().grants(1010).is_empty());
}

#[test]
fn pending_requests_and_decided_history_in_memory_are_bounded() {
    let mut fx = Fx::new("apr-bounds");
    let b = fx.broker.take().unwrap().with_limits(2, 2);
    fx.broker = Some(b);
    let (a, _ra) = fx.submit("ci", "writes", INSERT, 1000);
    let (b, _rb) = fx.submit("ci", "writes", INSERT, 1001);
    let full = fx
        .b()
        .submit(new_request("ci", "writes", INSERT, 2000), 1002)
        .unwrap_err();
    assert!(
        full.to_string()
            .contains("too many approval requests are pending"),
        "{full}"
    );
    fx.decide(&a.id, "bob", false, None, 1003).unwrap();
    fx.decide(&b.id, "bob", false, None, 1004).unwrap();
    let (c, _rc) = fx.submit("ci", "writes", INSERT, 1005);
    fx.decide(&c.id, "bob", false, None, 1006).unwrap();
    // Only the newest two decided stay in memory; the oldest is still in redb.
    let listed: Vec<String> = fx.b().list(None, 10).into_iter().map(|r| r.id).collect();
    assert_eq!(listed, [c.id.clone(), b.id.clone()]);
    assert_eq!(fx.b().get(&a.id).unwrap().state, State::Denied);
    assert!(matches!(
        fx.decide(&a.id, "bob", true, None, 1007),
        Err(DecideError::NotPending(State::Denied))
    ));
}

#[test]
fn submit_refuses_what_it_cannot_hold() {
    let fx = Fx::new("apr-input");
    let ok = new_request("ci", "writes", INSERT, 2000);
    let mut long = ok.clone();
    long.text = "x".repeat(MAX_TEXT_BYTES + 1);
    let mut bad_hash = ok.clone();
    bad_hash.hash = "ABC".into();
    let mut upper = ok.clone();
    upper.hash = ok.hash.to_uppercase();
    let mut nobody = ok.clone();
    nobody.requester = String::new();
    for r in [long, bad_hash, upper, nobody] {
        let e = fx.b().submit(r, 1000).unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput(_)), "{e:?}");
    }
    assert_eq!(fx.b().pending_count(), 0);
    assert!(fx.audit_kinds().is_empty());
    // Display values are capped on submit, required is clamped.
    let mut big = ok;
    big.params = vec![Some("y".repeat(5000)); 100];
    big.required = 99;
    big.origin = "o".repeat(600);
    let (r, _rx) = fx.b().submit(big, 1000).unwrap();
    assert_eq!(r.params.len(), MAX_PARAMS_SHOWN);
    assert!(r.params[0].as_ref().unwrap().ends_with('…'));
    assert!(r.params[0].as_ref().unwrap().len() <= MAX_PARAM_BYTES + 3);
    assert_eq!(r.required, MAX_REQUIRED);
    assert!(r.origin.len() <= MAX_ORIGIN_BYTES + 3);
}

#[test]
fn exact_hash_separates_text_and_parameters() {
    let h = |t: &str, p: &[Option<&[u8]>]| {
        let p: Vec<Option<Vec<u8>>> = p.iter().map(|v| v.map(<[u8]>::to_vec)).collect();
        exact_hash(t, &p)
    };
    let all = [
        h("q", &[Some(b"ab"), Some(b"c")]),
        h("q", &[Some(b"a"), Some(b"bc")]),
        h("q", &[None]),
        h("q", &[Some(b"")]),
        h("q", &[]),
        h("q", &[None, None]),
        h("q1", &[]),
        h("q", &[Some(b"1")]),
    ];
    for (i, a) in all.iter().enumerate() {
        assert!(is_hex(a), "{a}");
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(h("q", &[Some(b"1")]), h("q", &[Some(b"1")]));
    // The text is length-prefixed too: a parameter can't be smuggled into it.
    assert_ne!(h("ab", &[]), h("a", &[Some(b"b")]));
}

fn is_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn fingerprint_is_the_sha256_of_the_text() {
    // FIPS 180-2 example.
    assert_eq!(
        fingerprint("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn display_params_shows_text_hex_and_cuts() {
    let shown = display_params(&[
        Some("héllo".as_bytes().to_vec()),
        None,
        Some(vec![0xff, 0x00]),
        Some("é".repeat(600).into_bytes()),
    ]);
    assert_eq!(shown[0].as_deref(), Some("héllo"));
    assert_eq!(shown[1], None);
    assert_eq!(shown[2].as_deref(), Some("\\xff00"));
    let cut = shown[3].as_deref().unwrap();
    assert!(cut.ends_with('…') && cut.len() <= MAX_PARAM_BYTES + 3);
    let many = display_params(&vec![None; 200]);
    assert_eq!(many.len(), MAX_PARAMS_SHOWN);
}

fn sample_request() -> ApprovalRequest {
    ApprovalRequest {
        id: "apr_0123456789ab".into(),
        requester: "ci".into(),
        origin: "o".into(),
        target: "db".into(),
        session: "s".into(),
        text: "INSERT".into(),
        params: vec![Some("1".into()), None],
        hash: "h".into(),
        fingerprint: "f".into(),
        rule: "writes".into(),
        created_at: 1,
        expires_at: 2,
        state: State::Denied,
        required: 2,
        approvals: vec![("bob".into(), 3)],
        decided_by: Some("carol".into()),
        reason: Some("no".into()),
        decided_at: Some(4),
    }
}

#[test]
fn request_record_round_trips_and_every_truncation_is_corrupt() {
    let r = sample_request();
    let e = encode_request(&r);
    assert_eq!(decode_request(&e).unwrap(), r);
    for cut in 0..e.len() {
        assert!(decode_request(&e[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = e.clone();
    trailing.push(0);
    assert!(decode_request(&trailing).is_err());
}

#[test]
fn request_record_refuses_a_huge_count_without_allocating() {
    let mut r = sample_request();
    r.params.clear();
    let mut e = encode_request(&r);
    // The parameter count follows version + six length-prefixed strings.
    let mut at = 1;
    for _ in 0..6 {
        let len = u32::from_be_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
        at += 4 + usize::try_from(len).unwrap();
    }
    e[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_request(&e), Err(StoreError::Corrupt(_))));
}

#[test]
fn grant_record_round_trips_and_every_truncation_is_corrupt() {
    let g = StoredGrant {
        grant: Grant {
            id: "grt_0123456789ab".into(),
            identity: "ci".into(),
            target: "db".into(),
            fingerprint: "f".into(),
            text: "UPDATE".into(),
            rule: "windowed".into(),
            granted_by: vec!["bob".into(), "carol".into()],
            created_at: 1,
            expires_at: 2,
        },
        request: "apr_0123456789ab".into(),
        revoked: Some(("alice".into(), 3)),
    };
    let e = encode_grant(&g);
    assert_eq!(decode_grant(&e).unwrap(), g);
    for cut in 0..e.len() {
        assert!(decode_grant(&e[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn broker_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Broker>();
}
