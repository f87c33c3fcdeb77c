//! The decision engine: (policy, identity, target, classified statement) -> allow | approve | block.
//! Pure and cheap: no I/O, no allocation on the way to a decision (only the returned strings).
//!
//! # Semantics
//!
//! * **Read-only first.** If the session is read-only ([`session_read_only`]) and the statement
//!   carries `LIFTS_READ_ONLY`, it is blocked with rule `"read_only"`, whatever the rules say.
//! * **Each kind separately.** A statement may have several kinds (`WITH d AS (DELETE ...) SELECT`
//!   is `delete` and `select`). Each kind is decided on its own; the statement gets the most
//!   restrictive decision (`allow < approve < block`; on a tie, the first kind in [`StmtKind::ALL`]
//!   order). An empty kind set counts as `{unknown}`. The kinds come from the `kinds` argument, not
//!   from `stmt.kinds` (the proxy substitutes the kinds recorded at `PREPARE` for `EXECUTE`).
//! * **Applicable rules.** For one kind, a rule applies when all of these hold:
//!   - its `targets` is empty or names the target;
//!   - an entry of its `who` matches the identity (`"*"`, the identity's name, `"role:R"` held);
//!   - its `sql` contains the kind — or `sql` is empty, which matches every kind, except that an
//!     empty `sql` on an **allow** rule does not match `unknown` (allowing what the classifier did not
//!     understand must be written out as `sql = ["unknown"]`);
//!   - its `flags` is empty or the statement carries one of them;
//!   - its `tables` is empty, or: for an allow rule, the statement names at least one table and every
//!     one matches some glob; for approve/block rules, some table matches some glob;
//!   - its `match` regex is absent or finds a match in the statement text;
//!   - it has no SSH-only condition (`commands`, `programs`, command flags), which no statement
//!     can meet.
//!
//!   The most restrictive applicable rule decides; among equals, the first in the file. If no rule
//!   applies, the target's `default` decides.
//! * **Unknown is fail-closed.** For the kind `unknown`, unless an applicable rule names `unknown` in
//!   its `sql` explicitly, the decision is block (with a blocking rule's message if one applies),
//!   even when the target's default is allow or an approve rule with an empty `sql` applies.
//! * **Table globs.** `*` matches any run of characters, `.` included (`public.*`, `*.users`,
//!   `audit_*`). A schema-qualified table is matched as written. An unqualified table `t` matches a
//!   glob that matches `t` or `public.t`; for approve/block rules also one whose part after its
//!   last `.` matches `t`, because `t` may live in another schema on the search_path (fail closed).
//!   Globs are normalized at load time as the classifier reports names: unquoted parts lower-case.

use crate::config::{Action, Identity, Policy, Rule, Target};
use crate::policy::kinds::{Flags, KindSet, Statement, StmtKind};

/// The outcome for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The deciding rule's name; `None` when the target's default or the fail-closed rule for
    /// `unknown` decided; `Some("read_only")` for a refused attempt to lift a read-only session.
    pub rule: Option<String>,
    /// For approve/block: what to tell the client. `None` for allow.
    pub message: Option<String>,
}

/// The rule name reported when a read-only session refuses a statement.
pub const READ_ONLY_RULE: &str = "read_only";

const KIND_COUNT: usize = StmtKind::ALL.len();

/// What decided one kind.
#[derive(Clone, Copy)]
enum Outcome<'p> {
    Rule(&'p Rule),
    Default,
    FailClosed,
}

/// Decides `stmt` (whose kinds are `kinds`, whose text is `text`) for `identity` on `target`.
/// See the module documentation for the semantics.
pub fn decide(
    policy: &Policy,
    identity: &Identity,
    target: &Target,
    stmt: &Statement,
    kinds: KindSet,
    text: &str,
) -> Decision {
    if stmt.flags.intersects(Flags::LIFTS_READ_ONLY) && session_read_only(target, identity) {
        return Decision {
            action: Action::Block,
            rule: Some(READ_ONLY_RULE.to_owned()),
            message: Some(format!(
                "the session of '{}' on target '{}' is read-only; statements that make it writable are refused",
                identity.name, target.name
            )),
        };
    }
    let kinds = if kinds.is_empty() {
        KindSet::one(StmtKind::Unknown)
    } else {
        kinds
    };

    // Per kind: the most restrictive applicable rule so far (first in file order on ties).
    let mut best: [Option<(Action, &Rule)>; KIND_COUNT] = [None; KIND_COUNT];
    let mut unknown_named = false;
    for rule in &policy.rules {
        if !rule_targets(rule, target) || !rule.who.iter().any(|w| w.matches(identity)) {
            continue;
        }
        // `commands`, `programs` and command flags are conditions no SQL statement meets.
        if rule.is_ssh_only() {
            continue;
        }
        if !kinds.iter().any(|k| sql_matches(rule, k)) {
            continue;
        }
        if rule.flags != Flags::empty() && !stmt.flags.intersects(rule.flags) {
            continue;
        }
        if !tables_match(rule, &stmt.tables) {
            continue;
        }
        if let Some((_, re)) = &rule.pattern {
            if !re.is_match(text) {
                continue;
            }
        }
        for kind in kinds.iter().filter(|k| sql_matches(rule, *k)) {
            let slot = &mut best[kind as usize];
            if slot.is_none_or(|(a, _)| rule.action > a) {
                *slot = Some((rule.action, rule));
            }
            if kind == StmtKind::Unknown && rule.sql.contains(&StmtKind::Unknown) {
                unknown_named = true;
            }
        }
    }

    let mut result: Option<(Action, StmtKind, Outcome)> = None;
    for kind in kinds.iter() {
        let (action, outcome) = match best[kind as usize] {
            Some((Action::Block, rule)) => (Action::Block, Outcome::Rule(rule)),
            _ if kind == StmtKind::Unknown && !unknown_named => {
                (Action::Block, Outcome::FailClosed)
            }
            Some((action, rule)) => (action, Outcome::Rule(rule)),
            None => (target.default, Outcome::Default),
        };
        if result.is_none_or(|(a, _, _)| action > a) {
            result = Some((action, kind, outcome));
        }
    }
    let (action, kind, outcome) =
        result.unwrap_or((Action::Block, StmtKind::Unknown, Outcome::FailClosed));

    match outcome {
        Outcome::Rule(rule) => {
            let message = match action {
                Action::Allow => None,
                Action::Approve => Some(
                    rule.message
                        .clone()
                        .unwrap_or_else(|| format!("requires approval (rule '{}')", rule.name)),
                ),
                Action::Block => Some(
                    rule.message
                        .clone()
                        .unwrap_or_else(|| format!("blocked by rule '{}'", rule.name)),
                ),
            };
            Decision {
                action,
                rule: Some(rule.name.clone()),
                message,
            }
        }
        Outcome::Default => Decision {
            action,
            rule: None,
            message: (action != Action::Allow).then(|| {
                format!(
                    "no rule allows {kind} on target '{}' for '{}' (default: {})",
                    target.name,
                    identity.name,
                    action.as_str()
                )
            }),
        },
        Outcome::FailClosed => Decision {
            action: Action::Block,
            rule: None,
            message: Some(
                "statement not understood by the gateway's classifier; blocked".to_owned(),
            ),
        },
    }
}

/// Whether sessions of `identity` on `target` are read-only on the server.
pub fn session_read_only(target: &Target, identity: &Identity) -> bool {
    target.read_only || target.read_only_for.iter().any(|w| w.matches(identity))
}

fn rule_targets(rule: &Rule, target: &Target) -> bool {
    rule.targets.is_empty() || rule.targets.contains(&target.name)
}

fn sql_matches(rule: &Rule, kind: StmtKind) -> bool {
    if rule.sql.is_empty() {
        kind != StmtKind::Unknown || rule.action != Action::Allow
    } else {
        rule.sql.contains(&kind)
    }
}

fn tables_match(rule: &Rule, tables: &[String]) -> bool {
    if rule.tables.is_empty() {
        return true;
    }
    if rule.action == Action::Allow {
        !tables.is_empty()
            && tables
                .iter()
                .all(|t| rule.tables.iter().any(|g| table_matches(g, t, false)))
    } else {
        tables
            .iter()
            .any(|t| rule.tables.iter().any(|g| table_matches(g, t, true)))
    }
}

/// Whether `glob` matches `table` (see the module documentation); `wide` for approve/block rules.
fn table_matches(glob: &str, table: &str, wide: bool) -> bool {
    let (g, t) = (glob.as_bytes(), table.as_bytes());
    if table.contains('.') {
        return glob_match(g, b"", t);
    }
    if glob_match(g, b"", t) || glob_match(g, b"public.", t) {
        return true;
    }
    wide && glob
        .rsplit_once('.')
        .is_some_and(|(_, last)| glob_match(last.as_bytes(), b"", t))
}

/// Wildcard match of `glob` (`*` = any run of bytes) against the concatenation `a ++ b`, without
/// building it. Iterative with one backtrack point: O(len(glob) * len(name)) at worst.
fn glob_match(glob: &[u8], a: &[u8], b: &[u8]) -> bool {
    let n = a.len() + b.len();
    let at = |i: usize| {
        if i < a.len() {
            a.get(i)
        } else {
            b.get(i - a.len())
        }
    };
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n {
        match glob.get(gi) {
            Some(b'*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(c) if Some(c) == at(ni) => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    glob.get(gi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    const HEAD: &str = r#"
[gateway]
data_dir = "/tmp/portcullis-engine-test"

[[identity]]
name = "alice"
roles = ["dba"]

[[identity]]
name = "bob"
roles = ["dev"]

[[identity]]
name = "ci"
kind = "service"
owner = "alice"
roles = ["ci"]
max_ttl = "15m"

[[target]]
name = "db"
listen = "127.0.0.1:7001"
upstream = "127.0.0.1:5432"
database = "app"
user = "app"
upstream_tls = "disable"
read_only_for = ["role:ci"]

[[target]]
name = "open"
listen = "127.0.0.1:7002"
upstream = "127.0.0.1:5432"
database = "app"
user = "app"
upstream_tls = "disable"
default = "allow"
"#;

    fn policy(rules: &str) -> Policy {
        let text = format!("{HEAD}\n{rules}");
        match parse(&text, Path::new("/tmp/engine-test.toml")) {
            Ok(p) => p,
            Err(e) => panic!("test policy does not parse:\n{e}"),
        }
    }

    fn stmt(kinds: &[StmtKind], tables: &[&str], flags: Flags) -> Statement {
        let mut set = KindSet::empty();
        for k in kinds {
            set.insert(*k);
        }
        Statement {
            kinds: set,
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            flags,
            span: 0..0,
            prepared: None,
        }
    }

    /// Decides `s` for `who` on `target` with the statement's own kinds and text "".
    fn run(p: &Policy, who: &str, target: &str, s: &Statement) -> Decision {
        run_text(p, who, target, s, "")
    }

    fn run_text(p: &Policy, who: &str, target: &str, s: &Statement, text: &str) -> Decision {
        let (Some(i), Some(t)) = (p.identity(who), p.target(target)) else {
            panic!("no identity {who} or target {target}");
        };
        decide(p, i, t, s, s.kinds, text)
    }

    fn sel(tables: &[&str]) -> Statement {
        stmt(&[StmtKind::Select], tables, Flags::empty())
    }

    #[test]
    fn most_restrictive_rule_wins_whatever_the_order() {
        let p = policy(
            r#"
[[rule]]
name = "all"
who = ["*"]
action = "allow"
[[rule]]
name = "deletes-blocked"
who = ["*"]
sql = ["delete"]
action = "block"
[[rule]]
name = "deletes-approved"
who = ["*"]
sql = ["delete"]
action = "approve"
approvers = ["role:dba"]
"#,
        );
        let d = run(
            &p,
            "bob",
            "db",
            &stmt(&[StmtKind::Delete], &["t"], Flags::empty()),
        );
        assert_eq!(d.action, Action::Block);
        assert_eq!(d.rule.as_deref(), Some("deletes-blocked"));
        assert_eq!(
            d.message.as_deref(),
            Some("blocked by rule 'deletes-blocked'")
        );
        let d = run(&p, "bob", "db", &sel(&["t"]));
        assert_eq!(
            d,
            Decision {
                action: Action::Allow,
                rule: Some("all".into()),
                message: None
            }
        );
    }

    #[test]
    fn approve_beats_allow_and_ties_go_to_the_first_rule() {
        let p = policy(
            r#"
[[rule]]
name = "writes-allowed"
who = ["*"]
sql = ["update"]
action = "allow"
[[rule]]
name = "first-approve"
who = ["*"]
sql = ["update"]
action = "approve"
approvers = ["alice"]
message = "ask a dba"
[[rule]]
name = "second-approve"
who = ["*"]
sql = ["update"]
action = "approve"
approvers = ["alice"]
"#,
        );
        let d = run(
            &p,
            "bob",
            "db",
            &stmt(&[StmtKind::Update], &["t"], Flags::empty()),
        );
        assert_eq!(d.action, Action::Approve);
        assert_eq!(d.rule.as_deref(), Some("first-approve"));
        assert_eq!(d.message.as_deref(), Some("ask a dba"));
    }

    #[test]
    fn default_message_names_kind_target_and_identity() {
        let p = policy("");
        let d = run(&p, "bob", "db", &sel(&["t"]));
        assert_eq!(d.action, Action::Block);
        assert_eq!(d.rule, None);
        assert_eq!(
            d.message.as_deref(),
            Some("no rule allows select on target 'db' for 'bob' (default: block)")
        );
        let d = run(&p, "bob", "open", &sel(&["t"]));
        assert_eq!(
            d,
            Decision {
                action: Action::Allow,
                rule: None,
                message: None
            }
        );
    }

    #[test]
    fn unknown_is_blocked_even_with_default_allow_and_catch_all_rules() {
        let p = policy(
            r#"
[[rule]]
name = "all"
who = ["*"]
action = "allow"
[[rule]]
name = "approve-all"
targets = ["open"]
who = ["bob"]
action = "approve"
approvers = ["alice"]
"#,
        );
        let unknown = stmt(&[StmtKind::Unknown], &[], Flags::empty());
        for (who, target) in [("alice", "db"), ("alice", "open"), ("bob", "open")] {
            let d = run(&p, who, target, &unknown);
            assert_eq!(d.action, Action::Block, "{who} on {target}");
            assert_eq!(d.rule, None);
            assert_eq!(
                d.message.as_deref(),
                Some("statement not understood by the gateway's classifier; blocked")
            );
        }
        // An empty kind set is unknown.
        let d = run(&p, "alice", "open", &stmt(&[], &[], Flags::empty()));
        assert_eq!(d.action, Action::Block);
    }

    #[test]
    fn unknown_allowed_only_when_named_explicitly() {
        let p = policy(
            r#"
[[rule]]
name = "dba-anything"
who = ["role:dba"]
sql = ["unknown", "select"]
action = "allow"
[[rule]]
name = "block-all-for-bob"
who = ["bob"]
action = "block"
message = "no"
"#,
        );
        let unknown = stmt(&[StmtKind::Unknown], &[], Flags::empty());
        let d = run(&p, "alice", "db", &unknown);
        assert_eq!(d.action, Action::Allow);
        assert_eq!(d.rule.as_deref(), Some("dba-anything"));
        // A block rule with an empty `sql` applies to unknown and gives its own message.
        let d = run(&p, "bob", "db", &unknown);
        assert_eq!(d.action, Action::Block);
        assert_eq!(d.rule.as_deref(), Some("block-all-for-bob"));
        assert_eq!(d.message.as_deref(), Some("no"));
    }

    #[test]
    fn cte_with_delete_and_select_gets_the_delete_decision() {
        let p = policy(
            r#"
[[rule]]
name = "reads"
who = ["*"]
sql = ["select"]
action = "allow"
[[rule]]
name = "deletes"
who = ["*"]
sql = ["delete"]
action = "approve"
approvers = ["alice"]
"#,
        );
        let cte = stmt(
            &[StmtKind::Delete, StmtKind::Select],
            &["t"],
            Flags::MODIFYING_CTE,
        );
        let d = run(&p, "bob", "db", &cte);
        assert_eq!(d.action, Action::Approve);
        assert_eq!(d.rule.as_deref(), Some("deletes"));
        assert_eq!(
            d.message.as_deref(),
            Some("requires approval (rule 'deletes')")
        );
        // The kinds argument wins over stmt.kinds (EXECUTE of a prepared DELETE).
        let exec = stmt(&[], &[], Flags::empty());
        let i = p.identity("bob").unwrap_or_else(|| panic!("bob"));
        let t = p.target("db").unwrap_or_else(|| panic!("db"));
        let d = decide(&p, i, t, &exec, KindSet::one(StmtKind::Select), "EXECUTE q");
        assert_eq!(d.action, Action::Allow);
        let d = decide(&p, i, t, &exec, KindSet::one(StmtKind::Delete), "EXECUTE q");
        assert_eq!(d.action, Action::Approve);
        // Selects allowed, inserts not: the CTE is blocked by the default, naming the insert.
        let cte = stmt(
            &[StmtKind::Insert, StmtKind::Select],
            &["t"],
            Flags::MODIFYING_CTE,
        );
        let d = run(&p, "bob", "db", &cte);
        assert_eq!(d.action, Action::Block);
        assert_eq!(
            d.message.as_deref(),
            Some("no rule allows insert on target 'db' for 'bob' (default: block)")
        );
    }

    #[test]
    fn allow_tables_must_cover_every_table_and_at_least_one() {
        let p = policy(
            r#"
[[rule]]
name = "reports"
who = ["*"]
sql = ["select"]
tables = ["reports.*", "public.lookup_*"]
action = "allow"
"#,
        );
        assert_eq!(
            run(&p, "bob", "db", &sel(&["reports.daily"])).action,
            Action::Allow
        );
        assert_eq!(
            run(&p, "bob", "db", &sel(&["reports.daily", "lookup_country"])).action,
            Action::Allow
        );
        assert_eq!(
            run(&p, "bob", "db", &sel(&["reports.daily", "users"])).action,
            Action::Block
        );
        assert_eq!(run(&p, "bob", "db", &sel(&[])).action, Action::Block);
        // An unqualified name is not matched by another schema's glob on allow rules.
        assert_eq!(run(&p, "bob", "db", &sel(&["daily"])).action, Action::Block);
    }

    #[test]
    fn block_tables_match_any_table_and_unqualified_names_fail_closed() {
        let p = policy(
            r#"
[[rule]]
name = "all"
who = ["*"]
action = "allow"
[[rule]]
name = "secrets"
who = ["*"]
tables = ["vault.key*", "*.passwords", "Public.AUDIT_*"]
action = "block"
[[rule]]
name = "whole-schema"
targets = ["open"]
who = ["*"]
tables = ["private.*"]
action = "block"
"#,
        );
        let blocked = |tables: &[&str]| run(&p, "bob", "db", &sel(tables)).action == Action::Block;
        assert!(blocked(&["orders", "vault.keys"]));
        assert!(
            blocked(&["passwords"]),
            "unqualified name, schema glob part matches"
        );
        assert!(blocked(&["app.passwords"]));
        assert!(
            blocked(&["audit_log"]),
            "unqualified name matches public.audit_*"
        );
        assert!(
            blocked(&["keys"]),
            "keys may be vault.keys on the search_path"
        );
        assert!(!blocked(&["orders"]));
        assert!(!blocked(&["vault.other"]));
        assert!(
            !blocked(&["other.audit_log"]),
            "glob was lower-cased, schema differs"
        );
        assert!(!blocked(&[]));
        // A whole-schema glob blocks every unqualified name: any of them may resolve into it.
        let on_open = |tables: &[&str]| run(&p, "bob", "open", &sel(tables)).action;
        assert_eq!(on_open(&["orders"]), Action::Block);
        assert_eq!(on_open(&["public.orders"]), Action::Allow);
    }

    #[test]
    fn unqualified_name_matches_public_glob_on_allow() {
        let p = policy(
            r#"
[[rule]]
name = "public-reads"
who = ["*"]
sql = ["select"]
tables = ["public.*"]
action = "allow"
"#,
        );
        assert_eq!(run(&p, "bob", "db", &sel(&["users"])).action, Action::Allow);
        assert_eq!(
            run(&p, "bob", "db", &sel(&["public.users"])).action,
            Action::Allow
        );
        assert_eq!(
            run(&p, "bob", "db", &sel(&["private.users"])).action,
            Action::Block
        );
    }

    #[test]
    fn flags_condition_needs_any_listed_flag() {
        let p = policy(
            r#"
[[rule]]
name = "writes"
who = ["*"]
sql = ["update", "delete"]
action = "allow"
[[rule]]
name = "no-mass-delete"
who = ["*"]
sql = ["update", "delete"]
flags = ["no_where", "modifying_cte"]
action = "block"
"#,
        );
        let del = |f| run(&p, "bob", "db", &stmt(&[StmtKind::Delete], &["t"], f)).action;
        assert_eq!(del(Flags::empty()), Action::Allow);
        assert_eq!(del(Flags::NO_WHERE), Action::Block);
        assert_eq!(
            del(Flags::MODIFYING_CTE.union(Flags::LOCKING_READ)),
            Action::Block
        );
        assert_eq!(del(Flags::LOCKING_READ), Action::Allow);
    }

    #[test]
    fn match_regex_applies_to_statement_text() {
        let p = policy(
            r#"
[[rule]]
name = "reads"
who = ["*"]
sql = ["select"]
action = "allow"
[[rule]]
name = "no-pg-sleep"
who = ["*"]
match = '(?i)\bpg_sleep\s*\('
action = "block"
message = "pg_sleep is not allowed"
"#,
        );
        let s = sel(&[]);
        let d = run_text(&p, "bob", "db", &s, "SELECT PG_SLEEP (10)");
        assert_eq!(d.action, Action::Block);
        assert_eq!(d.message.as_deref(), Some("pg_sleep is not allowed"));
        assert_eq!(
            run_text(&p, "bob", "db", &s, "SELECT 1").action,
            Action::Allow
        );
    }

    #[test]
    fn read_only_session_refuses_lifting_statements() {
        let p = policy(
            r#"
[[rule]]
name = "all"
who = ["*"]
sql = ["set", "transaction"]
action = "allow"
"#,
        );
        let lift = stmt(&[StmtKind::Set], &[], Flags::LIFTS_READ_ONLY);
        let d = run(&p, "ci", "db", &lift);
        assert_eq!(d.action, Action::Block);
        assert_eq!(d.rule.as_deref(), Some(READ_ONLY_RULE));
        assert!(d
            .message
            .as_deref()
            .is_some_and(|m| m.contains("read-only")));
        // Not read-only for bob on db, nor for anyone on open.
        assert_eq!(run(&p, "bob", "db", &lift).action, Action::Allow);
        assert_eq!(run(&p, "ci", "open", &lift).action, Action::Allow);
        assert_eq!(
            run(&p, "ci", "db", &stmt(&[StmtKind::Set], &[], Flags::empty())).action,
            Action::Allow
        );
    }

    #[test]
    fn who_matches_roles_identities_and_anyone() {
        let p = policy(
            r#"
[[rule]]
name = "by-role"
who = ["role:dba"]
sql = ["ddl"]
action = "allow"
[[rule]]
name = "by-name"
who = ["bob"]
sql = ["insert"]
action = "allow"
[[rule]]
name = "anyone"
who = ["*"]
sql = ["show"]
action = "allow"
"#,
        );
        let k = |who, kind| run(&p, who, "db", &stmt(&[kind], &[], Flags::empty())).action;
        assert_eq!(k("alice", StmtKind::Ddl), Action::Allow);
        assert_eq!(k("bob", StmtKind::Ddl), Action::Block);
        assert_eq!(k("bob", StmtKind::Insert), Action::Allow);
        assert_eq!(k("alice", StmtKind::Insert), Action::Block);
        assert_eq!(k("ci", StmtKind::Show), Action::Allow);
    }

    #[test]
    fn rules_apply_only_to_their_targets() {
        let p = policy(
            r#"
[[rule]]
name = "open-only"
targets = ["open"]
who = ["*"]
sql = ["truncate"]
action = "block"
"#,
        );
        let t = stmt(&[StmtKind::Truncate], &["t"], Flags::empty());
        assert_eq!(
            run(&p, "bob", "open", &t).rule.as_deref(),
            Some("open-only")
        );
        let d = run(&p, "bob", "db", &t);
        assert_eq!((d.action, d.rule), (Action::Block, None));
    }

    #[test]
    fn glob_star_spans_dots_and_backtracks() {
        assert!(glob_match(b"*", b"", b""));
        assert!(glob_match(b"*.users", b"public.", b"users"));
        assert!(glob_match(b"a*b*c", b"", b"axxbyybzc"));
        assert!(glob_match(b"*x*", b"ab", b"cxd"));
        assert!(!glob_match(b"a*b", b"", b"acbc"));
        assert!(!glob_match(b"public.*", b"", b"publicx"));
        assert!(glob_match(b"**", b"", b"anything.at.all"));
    }
}
