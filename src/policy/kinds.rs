//! What the SQL classifier says about one statement. Shared by the classifier (`sql.rs`), the
//! policy engine (rule matching) and the proxy (audit, read-only enforcement).

use std::fmt;
use std::ops::Range;

/// The kind of work a statement does. A statement may have several kinds: a data-modifying CTE
/// (`WITH d AS (DELETE ...) SELECT ...`) is both `Delete` and `Select`; the policy decides each kind
/// and the most restrictive decision wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum StmtKind {
    /// SELECT, VALUES, TABLE, and SELECT's read forms (FOR UPDATE is flagged, not a kind).
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Truncate,
    /// COPY ... FROM STDIN / FROM 'file'
    CopyFrom,
    /// COPY ... TO STDOUT / TO 'file'
    CopyTo,
    /// COPY ... FROM PROGRAM / TO PROGRAM: runs a shell command on the database host.
    CopyProgram,
    /// CREATE / ALTER / DROP / COMMENT / SECURITY LABEL / REINDEX / CLUSTER / REFRESH MATERIALIZED VIEW,
    /// and SELECT ... INTO (creates a table).
    Ddl,
    /// GRANT, REVOKE, CREATE/ALTER/DROP ROLE|USER|GROUP, ALTER DEFAULT PRIVILEGES, REASSIGN/DROP OWNED.
    Dcl,
    /// BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE, PREPARE TRANSACTION,
    /// COMMIT PREPARED, ROLLBACK PREPARED, SET TRANSACTION.
    Transaction,
    /// SET / RESET of ordinary settings.
    Set,
    /// SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE, RESET SESSION AUTHORIZATION, RESET ALL.
    SetRole,
    /// SHOW
    Show,
    /// EXPLAIN without ANALYZE (the inner statement does not run). EXPLAIN ANALYZE is classified by its
    /// inner statement, with the `EXPLAIN_ANALYZE` flag.
    Explain,
    /// DO blocks, CALL of procedures: their effect can't be seen from the text.
    Call,
    /// LISTEN / UNLISTEN
    Listen,
    /// NOTIFY
    Notify,
    /// LOCK TABLE
    Lock,
    /// VACUUM, ANALYZE, CHECKPOINT, LOAD, DISCARD
    Maintenance,
    /// DEALLOCATE (SQL-level) and Close of prepared statements.
    Deallocate,
    /// A function-call ('F') protocol message.
    FastPath,
    /// An empty query (only whitespace, comments or semicolons).
    Empty,
    /// Anything not fully understood. The policy treats it as the most restrictive kind.
    Unknown,
}

impl StmtKind {
    pub const ALL: [StmtKind; 25] = [
        StmtKind::Select,
        StmtKind::Insert,
        StmtKind::Update,
        StmtKind::Delete,
        StmtKind::Merge,
        StmtKind::Truncate,
        StmtKind::CopyFrom,
        StmtKind::CopyTo,
        StmtKind::CopyProgram,
        StmtKind::Ddl,
        StmtKind::Dcl,
        StmtKind::Transaction,
        StmtKind::Set,
        StmtKind::SetRole,
        StmtKind::Show,
        StmtKind::Explain,
        StmtKind::Call,
        StmtKind::Listen,
        StmtKind::Notify,
        StmtKind::Lock,
        StmtKind::Maintenance,
        StmtKind::Deallocate,
        StmtKind::FastPath,
        StmtKind::Empty,
        StmtKind::Unknown,
    ];

    /// The name used in the policy file (`sql = ["select", ...]`) and in audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            StmtKind::Select => "select",
            StmtKind::Insert => "insert",
            StmtKind::Update => "update",
            StmtKind::Delete => "delete",
            StmtKind::Merge => "merge",
            StmtKind::Truncate => "truncate",
            StmtKind::CopyFrom => "copy_from",
            StmtKind::CopyTo => "copy_to",
            StmtKind::CopyProgram => "copy_program",
            StmtKind::Ddl => "ddl",
            StmtKind::Dcl => "dcl",
            StmtKind::Transaction => "transaction",
            StmtKind::Set => "set",
            StmtKind::SetRole => "set_role",
            StmtKind::Show => "show",
            StmtKind::Explain => "explain",
            StmtKind::Call => "call",
            StmtKind::Listen => "listen",
            StmtKind::Notify => "notify",
            StmtKind::Lock => "lock",
            StmtKind::Maintenance => "maintenance",
            StmtKind::Deallocate => "deallocate",
            StmtKind::FastPath => "fastpath",
            StmtKind::Empty => "empty",
            StmtKind::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<StmtKind> {
        StmtKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// Whether a statement of this kind may change data or the schema, so that its audit event must
    /// be durable before it is forwarded. `Select` is counted as a read even though a called function
    /// could write; read-only sessions (`read_only` on a target) close that gap on the server side.
    pub const fn may_write(self) -> bool {
        !matches!(
            self,
            StmtKind::Select
                | StmtKind::CopyTo
                | StmtKind::Transaction
                | StmtKind::Set
                | StmtKind::Show
                | StmtKind::Explain
                | StmtKind::Listen
                | StmtKind::Deallocate
                | StmtKind::Empty
        )
    }
}

impl fmt::Display for StmtKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A small set of kinds, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u32);

impl KindSet {
    pub const fn empty() -> KindSet {
        KindSet(0)
    }
    pub fn one(kind: StmtKind) -> KindSet {
        let mut s = KindSet(0);
        s.insert(kind);
        s
    }
    pub fn insert(&mut self, kind: StmtKind) {
        self.0 |= 1 << (kind as u8);
    }
    pub fn contains(self, kind: StmtKind) -> bool {
        self.0 & (1 << (kind as u8)) != 0
    }
    pub fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The kinds in the set, in [`StmtKind::ALL`] order (bit `i` is `ALL[i]`): one step per kind
    /// in the set, not per kind there is (this runs several times per statement and rule).
    pub fn iter(self) -> impl Iterator<Item = StmtKind> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            let at = bits.trailing_zeros();
            bits &= bits.wrapping_sub(1);
            StmtKind::ALL.get(usize::try_from(at).ok()?).copied()
        })
    }
    pub fn may_write(self) -> bool {
        self.0 & KindSet::WRITES.0 != 0
    }
    /// Every kind that [`StmtKind::may_write`].
    const WRITES: KindSet = {
        let mut set = 0u32;
        let mut i = 0;
        while i < StmtKind::ALL.len() {
            if StmtKind::ALL[i].may_write() {
                set |= 1 << (StmtKind::ALL[i] as u8);
            }
            i += 1;
        }
        KindSet(set)
    };
}

// `KindSet::iter` reads bit `i` as `StmtKind::ALL[i]`; and a set's bits fit its u32.
const _: () = {
    let mut i = 0;
    while i < StmtKind::ALL.len() {
        assert!(StmtKind::ALL[i] as usize == i);
        i += 1;
    }
    assert!(StmtKind::ALL.len() <= 32);
};

/// Facts about a statement that rules can match on (`flags = ["no_where"]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u32);

impl Flags {
    /// UPDATE or DELETE without a WHERE clause (touches every row).
    pub const NO_WHERE: Flags = Flags(1 << 0);
    /// SELECT ... INTO: creates a table (also kind `Ddl`).
    pub const SELECT_INTO: Flags = Flags(1 << 1);
    /// Tries to make the session or transaction writable again: SET/RESET (default_)transaction_read_only,
    /// SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE, BEGIN/START TRANSACTION/SET TRANSACTION
    /// READ WRITE, any call of set_config(), RESET ALL. Refused on read-only sessions.
    pub const LIFTS_READ_ONLY: Flags = Flags(1 << 2);
    /// A WITH clause holds INSERT/UPDATE/DELETE/MERGE.
    pub const MODIFYING_CTE: Flags = Flags(1 << 3);
    /// EXPLAIN ANALYZE: the inner statement runs.
    pub const EXPLAIN_ANALYZE: Flags = Flags(1 << 4);
    /// SELECT ... FOR UPDATE / FOR SHARE / FOR NO KEY UPDATE / FOR KEY SHARE.
    pub const LOCKING_READ: Flags = Flags(1 << 5);

    pub const NAMES: [(&'static str, Flags); 6] = [
        ("no_where", Flags::NO_WHERE),
        ("select_into", Flags::SELECT_INTO),
        ("lifts_read_only", Flags::LIFTS_READ_ONLY),
        ("modifying_cte", Flags::MODIFYING_CTE),
        ("explain_analyze", Flags::EXPLAIN_ANALYZE),
        ("locking_read", Flags::LOCKING_READ),
    ];

    pub const fn empty() -> Flags {
        Flags(0)
    }
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }
    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    pub fn from_name(name: &str) -> Option<Flags> {
        Flags::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Flags::NAMES
            .into_iter()
            .filter(move |(_, f)| self.contains(*f))
            .map(|(n, _)| n)
    }
}

/// A reference to an SQL-level prepared statement, which the proxy resolves with its per-session
/// table of `PREPARE`d statements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreparedRef {
    /// `PREPARE name AS <inner>`: the statement's kinds are the inner statement's kinds.
    Define(String),
    /// `EXECUTE name(...)`: kinds are empty; the proxy takes the kinds recorded for `name`, or
    /// `Unknown` when there is none.
    Execute(String),
    /// `DEALLOCATE [PREPARE] name`, or `None` for `DEALLOCATE ALL`.
    Deallocate(Option<String>),
}

/// One classified statement of a query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub kinds: KindSet,
    /// Tables the statement reads or writes, best effort, lower-cased unless quoted, schema-qualified
    /// when written so (`public.users`, `"Mixed"."Case"`→`Mixed.Case`).
    pub tables: Vec<String>,
    pub flags: Flags,
    /// Byte range of this statement in the query string (without the trailing `;`).
    pub span: Range<usize>,
    pub prepared: Option<PreparedRef>,
}

impl Statement {
    /// A statement the classifier gave up on.
    pub fn unknown(span: Range<usize>) -> Statement {
        Statement {
            kinds: KindSet::one(StmtKind::Unknown),
            tables: Vec::new(),
            flags: Flags::empty(),
            span,
            prepared: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_sets_list_their_kinds_in_order_and_know_writes() {
        // Every single kind, every pair, and a few larger sets.
        let mut sets: Vec<Vec<StmtKind>> = StmtKind::ALL.iter().map(|k| vec![*k]).collect();
        for a in StmtKind::ALL {
            for b in StmtKind::ALL {
                if (a as u8) < (b as u8) {
                    sets.push(vec![a, b]);
                }
            }
        }
        sets.push(StmtKind::ALL.to_vec());
        sets.push(StmtKind::ALL.iter().copied().step_by(3).collect());
        sets.push(Vec::new());
        for kinds in sets {
            let mut set = KindSet::empty();
            for k in &kinds {
                set.insert(*k);
            }
            assert_eq!(set.iter().collect::<Vec<_>>(), kinds);
            assert_eq!(
                set.may_write(),
                kinds.iter().any(|k| k.may_write()),
                "{kinds:?}"
            );
        }
    }

    #[test]
    fn kind_names_round_trip() {
        for k in StmtKind::ALL {
            assert_eq!(StmtKind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(StmtKind::from_name("selectx"), None);
    }

    #[test]
    fn kind_set_holds_each_kind() {
        let mut s = KindSet::empty();
        s.insert(StmtKind::Delete);
        s.insert(StmtKind::Unknown);
        assert!(s.contains(StmtKind::Delete) && s.contains(StmtKind::Unknown));
        assert!(!s.contains(StmtKind::Select));
        assert_eq!(s.iter().count(), 2);
    }
}
