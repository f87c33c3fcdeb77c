//! PostgreSQL lexer and statement classifier. Pure functions, no I/O.
//!
//! [`classify`] splits one Query message (or one Parse text) into statements and says what each one
//! does ([`Statement`]). The gateway allows or blocks on that answer, so the classifier is built to be
//! hard to fool rather than to be a full SQL parser:
//!
//! - The lexer follows PostgreSQL's `scan.l` where it decides token *boundaries*: nested block
//!   comments, `--` comments, `''`-doubled strings, `E''` backslash escapes, `U&''`/`U&""`, `B''`/`X''`,
//!   dollar quotes with PostgreSQL's tag rules (`$1` is a parameter), `""`-doubled identifiers, and
//!   bytes >= 0x80 as identifier characters (so a non-breaking space does not separate keywords).
//! - A plain `'...'` literal that would end elsewhere with `standard_conforming_strings = off` (the
//!   session can turn it off) makes the rest of the input one `Unknown` statement: we never guess which
//!   reading the server uses.
//! - Statements are split at `;` at parenthesis depth 0 (and not inside a `BEGIN ATOMIC ... END` body
//!   of `CREATE FUNCTION/PROCEDURE`). The server parses the whole string before it runs any of it, so
//!   splitting more than the server does can only add kinds, never hide one.
//! - Anything unterminated, unbalanced, nested deeper than [`MAX_DEPTH`], or not recognised is
//!   `StmtKind::Unknown`, which the policy treats as the most restrictive kind.
//!
//! Cost: one pass to lex into a token vector (one allocation per call), one pass to split, and a walk
//! per statement that visits each token a bounded number of times. Recursion follows parentheses and
//! nested statements only, both capped at [`MAX_DEPTH`].
//!
//! Known limits (best effort, documented rather than hidden):
//! - Tables are names found after FROM/JOIN/USING/INTO/UPDATE/TABLE/TRUNCATE/LOCK/COPY and in DDL
//!   targets; CTE names are reported as tables too (they may shadow real ones).
//! - Function calls stay `Select`: what a function does can't be seen from the text.
//! - `DISCARD ALL` is `Maintenance` + `SetRole` (it runs `SET SESSION AUTHORIZATION DEFAULT`) and
//!   deallocates every prepared statement, but it does *not* carry `LIFTS_READ_ONLY`: it resets
//!   settings to the session's defaults, which is where a read-only session starts.

use super::kinds::{Flags, KindSet, PreparedRef, Statement, StmtKind};

/// Deepest parenthesis nesting, and deepest statement nesting (`EXPLAIN PREPARE ...`, CTE bodies),
/// that is classified; anything deeper is `Unknown`.
pub const MAX_DEPTH: usize = 64;
/// Most tables reported for one statement.
pub const MAX_TABLES: usize = 64;
/// PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
const MAX_IDENT: usize = 63;

/// Split `sql` (one Query message or one Parse text) into statements and classify each.
/// Never panics; what it can't fully understand is `StmtKind::Unknown`.
///
/// Each statement's `span` runs from its first token to its last (comments and whitespace around it
/// and the separating `;` are outside). An input with no statement at all (only whitespace, comments
/// or semicolons) gives one `Empty` statement spanning the whole input.
pub fn classify(sql: &str) -> Vec<Statement> {
    TOKENS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut toks) => {
            let out = classify_with(sql, &mut toks);
            // A huge statement's buffer is not kept for the thread's life.
            if toks.capacity() > MAX_KEPT_TOKENS {
                *toks = Vec::new();
            }
            out
        }
        // Not reached (nothing here calls classify again); a fresh buffer keeps it correct.
        Err(_) => classify_with(sql, &mut Vec::new()),
    })
}

/// Most tokens whose buffer [`classify`] keeps for the next statement (128 KiB of tokens).
const MAX_KEPT_TOKENS: usize = 4096;

thread_local! {
    /// [`classify`]'s token buffer, kept from statement to statement on each thread: one
    /// allocation and free less per statement on the relay's path.
    static TOKENS: std::cell::RefCell<Vec<Tok>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn classify_with(sql: &str, toks: &mut Vec<Tok>) -> Vec<Statement> {
    toks.clear();
    toks.reserve(sql.len() / 4 + 4);
    lex(sql.as_bytes(), toks);
    let mut out = Vec::with_capacity(1);
    split(sql, toks, &mut out);
    if out.is_empty() {
        out.push(Statement {
            kinds: KindSet::one(StmtKind::Empty),
            tables: Vec::new(),
            flags: Flags::empty(),
            span: 0..sql.len(),
            prepared: None,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum T {
    /// Unquoted identifier or keyword (compared ASCII-case-insensitively).
    Ident,
    /// `"..."`
    QIdent,
    /// `U&"..."`
    UIdent,
    /// Any string literal: `'..'`, `E'..'`, `U&'..'`, `B'..'`, `X'..'`, `N'..'`, `$tag$..$tag$`.
    Str,
    Num,
    /// `$1`
    Param,
    Op,
    Open,
    Close,
    Comma,
    Dot,
    Semi,
    /// Unterminated or invalid: the statement holding it is `Unknown`.
    Bad,
}

#[derive(Clone, Copy, Debug)]
struct Tok {
    t: T,
    start: usize,
    end: usize,
    /// For `Open`: index of the matching `Close` (set by `split`); otherwise 0.
    close: usize,
}

fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Characters of a dollar-quote tag after the first.
fn is_tag_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

fn is_ident_cont(b: u8) -> bool {
    is_tag_cont(b) || b == b'$'
}

fn is_op_char(b: u8) -> bool {
    matches!(
        b,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

/// End (exclusive) of a quoted run starting with the quote at `i`, where a doubled quote stands for
/// one and, if `backslash`, a backslash escapes the next byte. `None` if unterminated.
fn quoted_end(s: &[u8], i: usize, q: u8, backslash: bool) -> Option<usize> {
    let mut j = i + 1;
    while j < s.len() {
        let c = at(s, j);
        if backslash && c == b'\\' {
            j += 2;
        } else if c == q {
            if at(s, j + 1) == q {
                j += 2;
            } else {
                return Some(j + 1);
            }
        } else {
            j += 1;
        }
    }
    None
}

/// End of a literal whose backslashes are literal with `standard_conforming_strings = on`. If it
/// would end elsewhere with the setting off, the two readings disagree and we refuse to pick one.
fn plain_string_end(s: &[u8], i: usize) -> Option<usize> {
    let end = quoted_end(s, i, b'\'', false)?;
    let body = s.get(i..end)?;
    if body.contains(&b'\\') && quoted_end(s, i, b'\'', true) != Some(end) {
        return None;
    }
    Some(end)
}

/// End of a (possibly nested) block comment starting with `/*` at `i`.
fn block_comment_end(s: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = i;
    while j < s.len() {
        let (a, b) = (at(s, j), at(s, j + 1));
        if a == b'/' && b == b'*' {
            depth += 1;
            j += 2;
        } else if a == b'*' && b == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return Some(j);
            }
        } else {
            j += 1;
        }
    }
    None
}

/// At a `$`: a parameter, a dollar-quoted string, or a lone `$` operator.
fn dollar(s: &[u8], i: usize) -> (T, usize) {
    let n = s.len();
    if at(s, i + 1).is_ascii_digit() {
        let mut j = i + 1;
        while at(s, j).is_ascii_digit() {
            j += 1;
        }
        return (T::Param, j);
    }
    let mut j = i + 1;
    if is_ident_start(at(s, j)) {
        j += 1;
        while j < n && is_tag_cont(at(s, j)) {
            j += 1;
        }
    }
    if at(s, j) != b'$' {
        // `$abc` without a closing `$`: PostgreSQL throws back all but the `$`.
        return (T::Op, i + 1);
    }
    let tag = match s.get(i..=j) {
        Some(tag) => tag,
        None => return (T::Bad, n),
    };
    // Look for the closing tag only where a `$` is. A comparison started at one `$` fails at the
    // next `$` at the latest (tags hold no `$`), so the search stays linear even for huge tags.
    let body = j + 1;
    let mut k = body;
    while k < n {
        if at(s, k) == b'$' && s.get(k..).is_some_and(|rest| rest.starts_with(tag)) {
            return (T::Str, k + tag.len());
        }
        k += 1;
    }
    (T::Bad, n)
}

fn number_end(s: &[u8], i: usize) -> usize {
    let digits = |mut j: usize| {
        while at(s, j).is_ascii_digit() || at(s, j) == b'_' {
            j += 1;
        }
        j
    };
    let mut j = digits(i);
    if at(s, j) == b'.' && at(s, j + 1) != b'.' {
        j = digits(j + 1);
    }
    if matches!(at(s, j), b'e' | b'E') {
        let k = if matches!(at(s, j + 1), b'+' | b'-') {
            j + 2
        } else {
            j + 1
        };
        if at(s, k).is_ascii_digit() {
            j = digits(k);
        }
    }
    j
}

/// Lex `s` into `out`. An unterminated string, identifier or comment becomes one `Bad` token that
/// runs to the end of the input.
fn lex(s: &[u8], out: &mut Vec<Tok>) {
    let n = s.len();
    let mut i = 0;
    while i < n {
        let b = at(s, i);
        let (t, end) = match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if at(s, i + 1) == b'-' => {
                while i < n && !matches!(at(s, i), b'\n' | b'\r') {
                    i += 1;
                }
                continue;
            }
            b'/' if at(s, i + 1) == b'*' => match block_comment_end(s, i) {
                Some(e) => {
                    i = e;
                    continue;
                }
                None => (T::Bad, n),
            },
            b'\'' => plain_string_end(s, i).map_or((T::Bad, n), |e| (T::Str, e)),
            b'"' => match quoted_end(s, i, b'"', false) {
                Some(e) if e == i + 2 => (T::Bad, e), // zero-length delimited identifier
                Some(e) => (T::QIdent, e),
                None => (T::Bad, n),
            },
            b'$' => dollar(s, i),
            b'(' => (T::Open, i + 1),
            b')' => (T::Close, i + 1),
            b',' => (T::Comma, i + 1),
            b';' => (T::Semi, i + 1),
            b'.' if at(s, i + 1).is_ascii_digit() => (T::Num, number_end(s, i)),
            b'.' => (T::Dot, i + 1),
            b'0'..=b'9' => (T::Num, number_end(s, i)),
            // The server reads the query as a C string and rejects a message with bytes after its
            // NUL: nothing after one can be trusted to mean what it says.
            0 => (T::Bad, n),
            _ if is_ident_start(b) => prefixed_or_ident(s, i),
            _ if is_op_char(b) => {
                let mut j = i + 1;
                while j < n
                    && is_op_char(at(s, j))
                    && !matches!((at(s, j), at(s, j + 1)), (b'/', b'*') | (b'-', b'-'))
                {
                    j += 1;
                }
                (T::Op, j)
            }
            _ => (T::Op, i + 1), // `:` `[` `]` and PostgreSQL's "other" characters
        };
        out.push(Tok {
            t,
            start: i,
            end,
            close: 0,
        });
        i = end.max(i + 1);
    }
}

/// An identifier, or a literal with a letter prefix: `E''`, `B''`, `X''`, `N''`, `U&''`, `U&""`.
fn prefixed_or_ident(s: &[u8], i: usize) -> (T, usize) {
    let n = s.len();
    let (b, next) = (at(s, i), at(s, i + 1));
    if next == b'\'' {
        match b {
            b'e' | b'E' => {
                return quoted_end(s, i + 1, b'\'', true).map_or((T::Bad, n), |e| (T::Str, e))
            }
            b'n' | b'N' => return plain_string_end(s, i + 1).map_or((T::Bad, n), |e| (T::Str, e)),
            b'b' | b'B' | b'x' | b'X' => {
                // Bit strings never hold a backslash; refusing one keeps us clear of how the
                // literal would split with standard_conforming_strings off.
                return match quoted_end(s, i + 1, b'\'', false) {
                    Some(e) if !s.get(i..e).is_some_and(|l| l.contains(&b'\\')) => (T::Str, e),
                    _ => (T::Bad, n),
                };
            }
            _ => {}
        }
    }
    if matches!(b, b'u' | b'U') && next == b'&' {
        match at(s, i + 2) {
            // With standard_conforming_strings off the server rejects U&'' outright.
            b'\'' => {
                return quoted_end(s, i + 2, b'\'', false).map_or((T::Bad, n), |e| (T::Str, e))
            }
            b'"' => {
                return match quoted_end(s, i + 2, b'"', false) {
                    Some(e) if e == i + 4 => (T::Bad, e),
                    Some(e) => (T::UIdent, e),
                    None => (T::Bad, n),
                }
            }
            _ => {}
        }
    }
    let mut j = i + 1;
    while j < n && is_ident_cont(at(s, j)) {
        j += 1;
    }
    (T::Ident, j)
}

// ---------------------------------------------------------------------------------------------
// Splitting

fn eq_kw(sql: &str, t: &Tok, w: &str) -> bool {
    t.t == T::Ident
        && sql
            .get(t.start..t.end)
            .is_some_and(|s| s.eq_ignore_ascii_case(w))
}

/// Whether the statement starting at token `lo` is `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.
fn is_routine(sql: &str, toks: &[Tok], lo: usize) -> bool {
    let kw = |i: usize, w: &str| toks.get(i).is_some_and(|t| eq_kw(sql, t, w));
    if !kw(lo, "create") {
        return false;
    }
    let i = if kw(lo + 1, "or") && kw(lo + 2, "replace") {
        lo + 3
    } else {
        lo + 1
    };
    kw(i, "function") || kw(i, "procedure")
}

fn split(sql: &str, toks: &mut [Tok], out: &mut Vec<Statement>) {
    let mut lo = 0;
    let mut depth = 0usize;
    let mut stack = [0usize; MAX_DEPTH];
    let mut broken = false;
    // Open CASE/BEGIN ATOMIC blocks inside a CREATE FUNCTION/PROCEDURE body.
    let mut body = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let Some(&tok) = toks.get(i) else { break };
        match tok.t {
            T::Semi if depth == 0 && body == 0 => {
                finish(sql, toks, lo..i, broken, out);
                lo = i + 1;
                broken = false;
            }
            // The server never splits inside parentheses: only a rule's action list may hold `;`
            // there. Anywhere else it is a syntax error; refuse it up front.
            T::Semi if depth > 0 && !toks.get(lo).is_some_and(|t| eq_kw(sql, t, "create")) => {
                broken = true;
            }
            T::Open => {
                match stack.get_mut(depth) {
                    Some(slot) => *slot = i,
                    None => broken = true,
                }
                depth += 1;
            }
            T::Close if depth == 0 => broken = true,
            T::Close => {
                depth -= 1;
                if let Some(&open) = stack.get(depth) {
                    if let Some(t) = toks.get_mut(open) {
                        t.close = i;
                    }
                }
            }
            T::Bad => broken = true,
            T::Ident if body > 0 => {
                if eq_kw(sql, &tok, "case") {
                    body += 1;
                } else if eq_kw(sql, &tok, "end") {
                    body -= 1;
                }
            }
            T::Ident
                if depth == 0
                    && eq_kw(sql, &tok, "begin")
                    && toks.get(i + 1).is_some_and(|t| eq_kw(sql, t, "atomic"))
                    && is_routine(sql, toks, lo) =>
            {
                body = 1;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let end = toks.len();
    finish(sql, toks, lo..end, broken || depth != 0 || body != 0, out);
}

fn finish(
    sql: &str,
    toks: &[Tok],
    range: std::ops::Range<usize>,
    broken: bool,
    out: &mut Vec<Statement>,
) {
    if range.start >= range.end {
        return; // empty statement
    }
    let (Some(first), Some(last)) = (
        toks.get(range.start),
        range.end.checked_sub(1).and_then(|l| toks.get(l)),
    ) else {
        return;
    };
    let span = first.start..last.end;
    if broken {
        out.push(Statement::unknown(span));
        return;
    }
    let mut cx = Cx {
        src: sql,
        toks,
        kinds: KindSet::empty(),
        flags: Flags::empty(),
        tables: Vec::new(),
        prepared: None,
        nest: 0,
    };
    cx.scan_set_config(range.start, range.end);
    cx.stmt(range.start, range.end, Ctx::Top);
    if cx.kinds.is_empty() && !matches!(cx.prepared, Some(PreparedRef::Execute(_))) {
        cx.unknown();
    }
    out.push(Statement {
        kinds: cx.kinds,
        tables: cx.tables,
        flags: cx.flags,
        span,
        prepared: cx.prepared,
    });
}

// ---------------------------------------------------------------------------------------------
// Classifier

/// Which statements may appear where a nested statement is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// A whole statement of the Query message.
    Top,
    /// CTE bodies and main statements, PREPARE, COPY (...), DECLARE, subqueries:
    /// SELECT/VALUES/TABLE/WITH/INSERT/UPDATE/DELETE/MERGE.
    Query,
    /// After EXPLAIN: `Query` plus EXECUTE, DECLARE, CREATE TABLE AS / MATERIALIZED VIEW, REFRESH.
    Explain,
}

/// A keyword lower-cased into a stack buffer, so matching allocates nothing. Words longer than the
/// buffer are no keyword we look for.
struct Word {
    buf: [u8; 24],
    len: usize,
}

impl Word {
    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

struct Cx<'a> {
    src: &'a str,
    toks: &'a [Tok],
    kinds: KindSet,
    flags: Flags,
    tables: Vec<String>,
    prepared: Option<PreparedRef>,
    nest: usize,
}

impl<'a> Cx<'a> {
    // --- token access ---

    fn ty(&self, i: usize, hi: usize) -> Option<T> {
        if i < hi {
            self.toks.get(i).map(|t| t.t)
        } else {
            None
        }
    }

    fn raw(&self, i: usize) -> &'a str {
        self.toks
            .get(i)
            .and_then(|t| self.src.get(t.start..t.end))
            .unwrap_or("")
    }

    fn kw(&self, i: usize, hi: usize, w: &str) -> bool {
        self.ty(i, hi) == Some(T::Ident) && self.raw(i).eq_ignore_ascii_case(w)
    }

    /// The lower-cased text of an unquoted identifier at `i` (empty for anything else).
    fn word(&self, i: usize, hi: usize) -> Word {
        let mut w = Word {
            buf: [0; 24],
            len: 0,
        };
        if self.ty(i, hi) == Some(T::Ident) {
            let raw = self.raw(i).as_bytes();
            if raw.len() <= w.buf.len() {
                for (d, s) in w.buf.iter_mut().zip(raw) {
                    *d = s.to_ascii_lowercase();
                }
                w.len = raw.len();
            }
        }
        w
    }

    fn is_name(&self, i: usize, hi: usize) -> bool {
        matches!(self.ty(i, hi), Some(T::Ident | T::QIdent | T::UIdent))
    }

    /// The matching `)` of the `(` at `i`, inside `..hi`; `None` (and `Unknown`) if it isn't one.
    fn close(&mut self, i: usize, hi: usize) -> Option<usize> {
        match self.toks.get(i) {
            Some(t) if t.t == T::Open && t.close > i && t.close < hi => Some(t.close),
            _ => {
                self.unknown();
                None
            }
        }
    }

    /// First top-level unquoted keyword `w` in `lo..hi`.
    fn find_kw(&mut self, lo: usize, hi: usize, w: &str) -> Option<usize> {
        let mut i = lo;
        while i < hi {
            if self.ty(i, hi) == Some(T::Open) {
                i = self.close(i, hi)? + 1;
                continue;
            }
            if self.kw(i, hi, w) {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    // --- results ---

    fn kind(&mut self, k: StmtKind) {
        self.kinds.insert(k);
    }

    fn unknown(&mut self) {
        self.kinds.insert(StmtKind::Unknown);
    }

    fn add_table(&mut self, name: String) {
        if self.tables.len() < MAX_TABLES && !self.tables.contains(&name) {
            self.tables.push(name);
        }
    }

    // --- names ---

    /// Append the value of the identifier at `i` (folded, unquoted, decoded, truncated as
    /// PostgreSQL does) to `out`, and return the index after it. `None` if it isn't an identifier or
    /// can't be decoded.
    fn push_ident(&self, out: &mut String, i: usize, hi: usize) -> Option<usize> {
        let from = out.len();
        let raw = self.raw(i);
        let next = match self.ty(i, hi)? {
            T::Ident => {
                out.push_str(raw);
                if let Some(appended) = out.get_mut(from..) {
                    appended.make_ascii_lowercase();
                }
                i + 1
            }
            T::QIdent => {
                let body = raw.get(1..raw.len().checked_sub(1)?)?;
                // ORMs quote every name: the common one has no doubled quote to undo, and is
                // copied without building a new string.
                if body.contains('"') {
                    out.push_str(&body.replace("\"\"", "\""));
                } else {
                    out.push_str(body);
                }
                i + 1
            }
            T::UIdent => {
                let body = raw.get(3..raw.len().checked_sub(1)?)?.replace("\"\"", "\"");
                let (esc, next) =
                    if self.kw(i + 1, hi, "uescape") && self.ty(i + 2, hi) == Some(T::Str) {
                        (uescape_char(self.raw(i + 2))?, i + 3)
                    } else {
                        ('\\', i + 1)
                    };
                decode_unicode_escapes(&body, esc, out)?;
                next
            }
            _ => return None,
        };
        if out.len() - from > MAX_IDENT {
            let mut cut = from + MAX_IDENT;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        Some(next)
    }

    /// A possibly qualified name (`a`, `s.t`, `"My Schema".t`, `db.s.t`) joined with `.`.
    fn qualified_name(&mut self, i: usize, hi: usize) -> Option<(String, usize)> {
        let mut name = String::with_capacity(self.raw(i).len());
        let mut j = i;
        for part in 0..3 {
            if part > 0 {
                if self.ty(j, hi) != Some(T::Dot) || !self.is_name(j + 1, hi) {
                    break;
                }
                name.push('.');
                j += 1;
            }
            match self.push_ident(&mut name, j, hi) {
                Some(next) => j = next,
                None => {
                    self.unknown();
                    return None;
                }
            }
        }
        Some((name, j))
    }

    /// The value of a single (unqualified) name at `i`, lower-cased for comparison.
    fn name_lower(&mut self, i: usize, hi: usize) -> Option<String> {
        let mut s = String::new();
        self.push_ident(&mut s, i, hi)?;
        s.make_ascii_lowercase();
        Some(s)
    }

    // --- statement dispatch ---

    fn stmt(&mut self, lo: usize, hi: usize, ctx: Ctx) {
        if lo >= hi || self.nest >= MAX_DEPTH {
            self.unknown();
            return;
        }
        self.nest += 1;
        self.dispatch(lo, hi, ctx);
        self.nest -= 1;
    }

    fn dispatch(&mut self, lo: usize, hi: usize, ctx: Ctx) {
        use StmtKind as K;
        match self.ty(lo, hi) {
            Some(T::Open) => return self.select(lo, hi),
            Some(T::Ident) => {}
            _ => return self.unknown(),
        }
        let w = self.word(lo, hi);
        match w.as_bytes() {
            b"select" | b"values" | b"table" => return self.select(lo, hi),
            b"with" => return self.with(lo, hi),
            b"insert" => return self.insert(lo, hi),
            b"update" => return self.update(lo, hi),
            b"delete" => return self.delete(lo, hi),
            b"merge" => return self.merge(lo, hi),
            _ => {}
        }
        match (ctx, w.as_bytes()) {
            (Ctx::Query, _) => self.unknown(),
            (_, b"execute") => self.execute(lo, hi),
            (_, b"declare") => self.declare(lo, hi),
            (_, b"create") => self.create(lo, hi),
            (_, b"refresh") => self.refresh(lo, hi),
            (Ctx::Explain, _) => self.unknown(),
            (_, b"explain") => self.explain(lo, hi),
            (_, b"prepare") => self.prepare(lo, hi),
            (_, b"deallocate") => self.deallocate(lo, hi),
            (_, b"copy") => self.copy(lo, hi),
            (_, b"truncate") => {
                self.kind(K::Truncate);
                let i = if self.kw(lo + 1, hi, "table") {
                    lo + 2
                } else {
                    lo + 1
                };
                self.name_list(i, hi);
            }
            (_, b"lock") => {
                self.kind(K::Lock);
                let i = if self.kw(lo + 1, hi, "table") {
                    lo + 2
                } else {
                    lo + 1
                };
                self.name_list(i, hi);
            }
            (_, b"do" | b"call") => self.kind(K::Call),
            (_, b"begin" | b"start") => {
                if w.as_bytes() == b"start" && !self.kw(lo + 1, hi, "transaction") {
                    return self.unknown();
                }
                self.kind(K::Transaction);
                self.read_write(lo, hi);
            }
            (_, b"commit" | b"end" | b"rollback" | b"abort" | b"savepoint" | b"release") => {
                self.kind(K::Transaction)
            }
            (_, b"set") => self.set(lo, hi),
            (_, b"reset") => self.reset(lo, hi),
            (_, b"show") => self.kind(K::Show),
            (_, b"grant" | b"revoke" | b"reassign") => self.kind(K::Dcl),
            (_, b"alter") => self.alter(lo, hi),
            (_, b"drop") => self.drop(lo, hi),
            (_, b"comment" | b"reindex" | b"cluster") => self.kind(K::Ddl),
            (_, b"security") if self.kw(lo + 1, hi, "label") => self.kind(K::Ddl),
            (_, b"import") if self.kw(lo + 1, hi, "foreign") => self.kind(K::Ddl),
            (_, b"listen" | b"unlisten") => self.kind(K::Listen),
            (_, b"notify") => self.kind(K::Notify),
            (_, b"vacuum" | b"analyze" | b"analyse" | b"checkpoint" | b"load") => {
                self.kind(K::Maintenance)
            }
            (_, b"discard") => {
                self.kind(K::Maintenance);
                if self.kw(lo + 1, hi, "all") {
                    // DISCARD ALL = CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL;
                    // DEALLOCATE ALL; ... (PostgreSQL docs). Not LIFTS_READ_ONLY: see module doc.
                    self.kind(K::SetRole);
                    self.prepared = Some(PreparedRef::Deallocate(None));
                }
            }
            (_, b"fetch" | b"move" | b"close") => self.kind(K::Select),
            _ => self.unknown(),
        }
    }

    // --- queries ---

    /// SELECT / VALUES / TABLE x / ( ... ) and set operations of them.
    fn select(&mut self, lo: usize, hi: usize) {
        self.kind(StmtKind::Select);
        let i = if self.kw(lo, hi, "table") {
            self.table_ref(lo + 1, hi)
        } else {
            lo
        };
        self.walk(i, hi, true, false);
    }

    /// Walk one parenthesis level of a query. With `query`, FROM/JOIN/USING lists give tables, INTO is
    /// SELECT INTO and FOR UPDATE/SHARE a locking read; without, only nested groups are looked at.
    /// Returns whether a WHERE was seen at this level.
    fn walk(&mut self, lo: usize, hi: usize, query: bool, start_in_from: bool) -> bool {
        let mut i = lo;
        let mut in_from = start_in_from;
        let mut saw_where = false;
        if start_in_from {
            i = self.table_ref(i, hi);
        }
        while i < hi {
            match self.ty(i, hi) {
                Some(T::Open) => {
                    let Some(c) = self.close(i, hi) else {
                        return saw_where;
                    };
                    self.group(i + 1, c);
                    i = c + 1;
                    continue;
                }
                Some(T::Comma) if query && in_from => {
                    i = self.table_ref(i + 1, hi);
                    continue;
                }
                Some(T::Ident) if query => {
                    let w = self.word(i, hi);
                    match w.as_bytes() {
                        b"from" | b"join" => {
                            in_from = true;
                            i = self.table_ref(i + 1, hi);
                            continue;
                        }
                        // DELETE ... USING, MERGE ... USING; `JOIN ... USING (cols)` is a group.
                        b"using" if self.ty(i + 1, hi) != Some(T::Open) => {
                            let next = self.table_ref(i + 1, hi);
                            in_from = next > i + 1;
                            i = next;
                            continue;
                        }
                        b"into" => {
                            in_from = false;
                            i = self.select_into(i + 1, hi);
                            continue;
                        }
                        b"for" => {
                            in_from = false;
                            if self.kw(i + 1, hi, "update")
                                || self.kw(i + 1, hi, "share")
                                || self.kw(i + 1, hi, "no")
                                || self.kw(i + 1, hi, "key")
                            {
                                self.flags.insert(Flags::LOCKING_READ);
                            }
                        }
                        b"where" => {
                            in_from = false;
                            saw_where = true;
                        }
                        b"do" => {
                            in_from = false;
                            if self.kw(i + 1, hi, "update") {
                                self.kind(StmtKind::Update); // ON CONFLICT DO UPDATE
                            }
                        }
                        b"group" | b"having" | b"window" | b"order" | b"limit" | b"offset"
                        | b"fetch" | b"union" | b"intersect" | b"except" | b"returning"
                        | b"set" | b"values" | b"when" | b"then" => in_from = false,
                        b"select" => {
                            in_from = false;
                            self.kind(StmtKind::Select); // INSERT ... SELECT reads
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            i += 1;
        }
        saw_where
    }

    /// The inside of a parenthesised group: a nested statement, or an expression/list to search for
    /// nested groups.
    fn group(&mut self, lo: usize, hi: usize) {
        if lo >= hi {
            return;
        }
        let w = self.word(lo, hi);
        match w.as_bytes() {
            b"select" | b"values" | b"table" | b"with" | b"insert" | b"update" | b"delete"
            | b"merge" => self.stmt(lo, hi, Ctx::Query),
            _ => {
                self.walk(lo, hi, false, false);
            }
        }
    }

    fn is_query_start(&self, i: usize, hi: usize) -> bool {
        let w = self.word(i, hi);
        matches!(w.as_bytes(), b"select" | b"values" | b"table" | b"with")
    }

    /// One FROM item at `i`: `[ONLY|LATERAL] name`, `( query )`, `( joined tables )`, or a function
    /// call (not a table). Returns where the caller's walk continues.
    fn table_ref(&mut self, mut i: usize, hi: usize) -> usize {
        while self.kw(i, hi, "only") || self.kw(i, hi, "lateral") {
            i += 1;
        }
        match self.ty(i, hi) {
            Some(T::Open) => {
                let Some(c) = self.close(i, hi) else {
                    return hi;
                };
                if self.is_query_start(i + 1, c) {
                    self.stmt(i + 1, c, Ctx::Query);
                } else if i + 1 < c {
                    self.walk(i + 1, c, true, true);
                }
                c + 1
            }
            Some(T::Ident | T::QIdent | T::UIdent) => {
                if self.ty(i, hi) == Some(T::Ident) && is_clause_word(self.word(i, hi).as_bytes()) {
                    return i;
                }
                let Some((name, j)) = self.qualified_name(i, hi) else {
                    return hi;
                };
                let call = self.ty(j, hi) == Some(T::Open)
                    || (self.kw(i, hi, "rows") && self.kw(j, hi, "from"));
                if !call {
                    self.add_table(name);
                }
                j
            }
            _ => i,
        }
    }

    /// `INTO [TEMP|TEMPORARY|UNLOGGED] [TABLE] name` of a SELECT: creates a table.
    fn select_into(&mut self, mut i: usize, hi: usize) -> usize {
        self.kind(StmtKind::Ddl);
        self.flags.insert(Flags::SELECT_INTO);
        while matches!(
            self.word(i, hi).as_bytes(),
            b"temp" | b"temporary" | b"unlogged" | b"table"
        ) {
            i += 1;
        }
        self.table_ref(i, hi)
    }

    /// `[ONLY] a [*], [ONLY] b ...` (TRUNCATE, LOCK, DROP TABLE).
    fn name_list(&mut self, mut i: usize, hi: usize) {
        loop {
            let next = self.table_ref(i, hi);
            if next == i {
                break;
            }
            i = next;
            if self.ty(i, hi) == Some(T::Op) && self.raw(i) == "*" {
                i += 1;
            }
            if self.ty(i, hi) != Some(T::Comma) {
                break;
            }
            i += 1;
        }
    }

    /// `WITH [RECURSIVE] name [(cols)] AS [[NOT] MATERIALIZED] (body) [SEARCH ...] [CYCLE ...], ... main`
    fn with(&mut self, lo: usize, hi: usize) {
        let mut i = lo + 1;
        if self.kw(i, hi, "recursive") {
            i += 1;
        }
        loop {
            if !self.is_name(i, hi) {
                return self.unknown();
            }
            i += 1;
            if self.ty(i, hi) == Some(T::Open) {
                let Some(c) = self.close(i, hi) else { return };
                i = c + 1;
            }
            if !self.kw(i, hi, "as") {
                return self.unknown();
            }
            i += 1;
            if self.kw(i, hi, "not") {
                i += 1;
            }
            if self.kw(i, hi, "materialized") {
                i += 1;
            }
            let Some(c) = (if self.ty(i, hi) == Some(T::Open) {
                self.close(i, hi)
            } else {
                None
            }) else {
                return self.unknown();
            };
            let outer = self.kinds;
            self.kinds = KindSet::empty();
            self.stmt(i + 1, c, Ctx::Query);
            let body = self.kinds;
            self.kinds = outer.union(body);
            if [
                StmtKind::Insert,
                StmtKind::Update,
                StmtKind::Delete,
                StmtKind::Merge,
            ]
            .iter()
            .any(|k| body.contains(*k))
            {
                self.flags.insert(Flags::MODIFYING_CTE);
            }
            i = c + 1;
            // SEARCH {BREADTH|DEPTH} FIRST BY cols SET col / CYCLE cols SET col [TO v DEFAULT v] USING col
            if self.kw(i, hi, "search") {
                match self.find_kw(i, hi, "set") {
                    Some(s) => i = s + 2,
                    None => return self.unknown(),
                }
            }
            if self.kw(i, hi, "cycle") {
                match self.find_kw(i, hi, "using") {
                    Some(u) => i = u + 2,
                    None => return self.unknown(),
                }
            }
            if self.ty(i, hi) == Some(T::Comma) {
                i += 1;
                continue;
            }
            return self.stmt(i, hi, Ctx::Query);
        }
    }

    fn insert(&mut self, lo: usize, hi: usize) {
        self.kind(StmtKind::Insert);
        if !self.kw(lo + 1, hi, "into") {
            return self.unknown();
        }
        let i = self.target(lo + 2, hi);
        self.walk(i, hi, true, false);
    }

    fn update(&mut self, lo: usize, hi: usize) {
        self.kind(StmtKind::Update);
        let i = self.target(lo + 1, hi);
        if !self.walk(i, hi, true, false) {
            self.flags.insert(Flags::NO_WHERE);
        }
    }

    fn delete(&mut self, lo: usize, hi: usize) {
        self.kind(StmtKind::Delete);
        if !self.kw(lo + 1, hi, "from") {
            return self.unknown();
        }
        let i = self.target(lo + 2, hi);
        if !self.walk(i, hi, true, false) {
            self.flags.insert(Flags::NO_WHERE);
        }
    }

    fn merge(&mut self, lo: usize, hi: usize) {
        self.kind(StmtKind::Merge);
        if !self.kw(lo + 1, hi, "into") {
            return self.unknown();
        }
        let i = self.target(lo + 2, hi);
        self.walk(i, hi, true, false);
    }

    /// The table an INSERT/UPDATE/DELETE/MERGE writes: `[ONLY] name`. Anything else is `Unknown`.
    fn target(&mut self, mut i: usize, hi: usize) -> usize {
        if self.kw(i, hi, "only") {
            i += 1;
        }
        if !self.is_name(i, hi) {
            self.unknown();
            return hi;
        }
        match self.qualified_name(i, hi) {
            Some((name, j)) => {
                self.add_table(name);
                j
            }
            None => hi,
        }
    }

    // --- other statements ---

    fn copy(&mut self, lo: usize, hi: usize) {
        use StmtKind as K;
        let mut i = lo + 1;
        if self.kw(i, hi, "binary") {
            i += 1;
        }
        if self.ty(i, hi) == Some(T::Open) {
            let Some(c) = self.close(i, hi) else { return };
            // COPY (query) TO: the kinds of the query, except that reading is the COPY itself.
            let had_select = self.kinds.contains(K::Select);
            let outer = self.kinds;
            self.kinds = KindSet::empty();
            self.stmt(i + 1, c, Ctx::Query);
            let mut inner = KindSet::empty();
            for k in self.kinds.iter().filter(|k| *k != K::Select || had_select) {
                inner.insert(k);
            }
            self.kinds = outer.union(inner);
            i = c + 1;
        } else if self.is_name(i, hi) {
            let Some((name, j)) = self.qualified_name(i, hi) else {
                return;
            };
            self.add_table(name);
            i = j;
            if self.ty(i, hi) == Some(T::Open) {
                let Some(c) = self.close(i, hi) else { return };
                i = c + 1;
            }
        } else {
            return self.unknown();
        }
        let from = if self.kw(i, hi, "from") {
            true
        } else if self.kw(i, hi, "to") {
            false
        } else {
            return self.unknown();
        };
        i += 1;
        if self.kw(i, hi, "program") {
            self.kind(K::CopyProgram);
        } else if self.kw(i, hi, "stdin")
            || self.kw(i, hi, "stdout")
            || self.ty(i, hi) == Some(T::Str)
        {
            self.kind(if from { K::CopyFrom } else { K::CopyTo });
        } else {
            self.unknown();
        }
    }

    fn explain(&mut self, lo: usize, hi: usize) {
        let mut i = lo + 1;
        let mut analyze = false;
        if self.ty(i, hi) == Some(T::Open) {
            let Some(c) = self.close(i, hi) else { return };
            analyze = self.explain_options(i + 1, c);
            i = c + 1;
        } else {
            while matches!(
                self.word(i, hi).as_bytes(),
                b"analyze" | b"analyse" | b"verbose"
            ) {
                analyze |= self.word(i, hi).as_bytes() != b"verbose";
                i += 1;
            }
        }
        if analyze {
            self.flags.insert(Flags::EXPLAIN_ANALYZE);
            return self.stmt(i, hi, Ctx::Explain);
        }
        // Without ANALYZE nothing runs: keep the tables, not the kinds (but keep Unknown).
        let (kinds, flags) = (self.kinds, self.flags);
        self.stmt(i, hi, Ctx::Explain);
        let inner_unknown = self.kinds.contains(StmtKind::Unknown);
        let lifts = self.flags.contains(Flags::LIFTS_READ_ONLY);
        self.kinds = kinds;
        self.flags = flags;
        self.kind(StmtKind::Explain);
        if inner_unknown {
            self.unknown();
        }
        if lifts {
            self.flags.insert(Flags::LIFTS_READ_ONLY);
        }
        self.prepared = None;
    }

    /// Whether an EXPLAIN option list turns ANALYZE on. Any ANALYZE option whose value is not
    /// plainly false (`false`, `off`, `0`) counts: we would rather over-report.
    fn explain_options(&mut self, lo: usize, hi: usize) -> bool {
        let mut analyze = false;
        let mut i = lo;
        while i < hi {
            let start = i;
            while i < hi && self.ty(i, hi) != Some(T::Comma) {
                if self.ty(i, hi) == Some(T::Open) {
                    match self.close(i, hi) {
                        Some(c) => i = c,
                        None => return true,
                    }
                }
                i += 1;
            }
            let is_analyze = self
                .name_lower(start, hi)
                .is_some_and(|n| n == "analyze" || n == "analyse");
            if is_analyze {
                let off = i == start + 2 && {
                    let v = self.raw(start + 1).to_ascii_lowercase();
                    matches!(
                        v.as_str(),
                        "false" | "off" | "0" | "'false'" | "'off'" | "\"false\"" | "\"off\""
                    )
                };
                analyze |= i == start + 1 || !off;
            }
            i += 1;
        }
        analyze
    }

    /// `PREPARE name [(types)] AS stmt`, or `PREPARE TRANSACTION 'id'`.
    fn prepare(&mut self, lo: usize, hi: usize) {
        if self.kw(lo + 1, hi, "transaction") && self.ty(lo + 2, hi) == Some(T::Str) {
            return self.kind(StmtKind::Transaction);
        }
        let mut name = String::new();
        let Some(mut i) = self.push_ident(&mut name, lo + 1, hi) else {
            return self.unknown();
        };
        if self.ty(i, hi) == Some(T::Open) {
            let Some(c) = self.close(i, hi) else { return };
            i = c + 1;
        }
        if !self.kw(i, hi, "as") {
            return self.unknown();
        }
        self.prepared = Some(PreparedRef::Define(name));
        self.stmt(i + 1, hi, Ctx::Query);
    }

    /// `EXECUTE name [(args)]`: the proxy supplies the kinds recorded at PREPARE.
    fn execute(&mut self, lo: usize, hi: usize) {
        let mut name = String::new();
        let Some(mut i) = self.push_ident(&mut name, lo + 1, hi) else {
            return self.unknown();
        };
        self.prepared = Some(PreparedRef::Execute(name));
        if self.ty(i, hi) == Some(T::Open) {
            let Some(c) = self.close(i, hi) else { return };
            self.group(i + 1, c);
            i = c + 1;
        }
        if i < hi {
            self.unknown();
        }
    }

    fn deallocate(&mut self, lo: usize, hi: usize) {
        self.kind(StmtKind::Deallocate);
        let i = if self.kw(lo + 1, hi, "prepare") {
            lo + 2
        } else {
            lo + 1
        };
        if self.kw(i, hi, "all") && i + 1 == hi {
            self.prepared = Some(PreparedRef::Deallocate(None));
            return;
        }
        let mut name = String::new();
        match self.push_ident(&mut name, i, hi) {
            Some(next) if next == hi => self.prepared = Some(PreparedRef::Deallocate(Some(name))),
            _ => self.unknown(),
        }
    }

    /// `DECLARE name ... CURSOR ... FOR query`: the query's kinds.
    fn declare(&mut self, lo: usize, hi: usize) {
        let Some(cursor) = self.find_kw(lo + 1, hi, "cursor") else {
            return self.unknown();
        };
        let Some(for_) = self.find_kw(cursor + 1, hi, "for") else {
            return self.unknown();
        };
        self.stmt(for_ + 1, hi, Ctx::Query);
    }

    /// `BEGIN|START TRANSACTION|SET TRANSACTION|SET SESSION CHARACTERISTICS ... READ WRITE`.
    fn read_write(&mut self, lo: usize, hi: usize) {
        if (lo..hi).any(|i| self.kw(i, hi, "read") && self.kw(i + 1, hi, "write")) {
            self.flags.insert(Flags::LIFTS_READ_ONLY);
        }
    }

    /// `SET [SESSION|LOCAL] ...`
    fn set(&mut self, lo: usize, hi: usize) {
        use StmtKind as K;
        let mut i = lo + 1;
        if self.kw(i, hi, "local")
            || (self.kw(i, hi, "session")
                && !self.kw(i + 1, hi, "authorization")
                && !self.kw(i + 1, hi, "characteristics"))
        {
            i += 1;
        }
        if self.kw(i, hi, "session") && self.kw(i + 1, hi, "authorization") {
            return self.kind(K::SetRole);
        }
        if self.kw(i, hi, "session") && self.kw(i + 1, hi, "characteristics") {
            self.kind(K::Set);
            return self.read_write(i, hi);
        }
        if self.kw(i, hi, "transaction") {
            self.kind(K::Transaction);
            return self.read_write(i, hi);
        }
        if self.kw(i, hi, "time") && self.kw(i + 1, hi, "zone") {
            return self.kind(K::Set);
        }
        self.setting(i, hi);
    }

    /// `RESET ...`
    fn reset(&mut self, lo: usize, hi: usize) {
        use StmtKind as K;
        let i = lo + 1;
        if self.kw(i, hi, "all") {
            self.kind(K::SetRole);
            self.flags.insert(Flags::LIFTS_READ_ONLY);
        } else if self.kw(i, hi, "session") && self.kw(i + 1, hi, "authorization") {
            self.kind(K::SetRole);
        } else if (self.kw(i, hi, "time") && self.kw(i + 1, hi, "zone"))
            || self.kw(i, hi, "transaction")
        {
            self.kind(K::Set);
        } else {
            self.setting(i, hi);
        }
    }

    /// The setting named at `i` of a SET or RESET. Setting names are case-insensitive in the server
    /// whether quoted or not. `SET ROLE x` is `SET role = x`, and SET SESSION AUTHORIZATION sets
    /// `session_authorization`, so both spellings are `SetRole`.
    fn setting(&mut self, i: usize, hi: usize) {
        use StmtKind as K;
        let Some((mut name, _)) = self.qualified_name(i, hi) else {
            return self.unknown();
        };
        name.make_ascii_lowercase();
        match name.as_str() {
            "role" | "session_authorization" => self.kind(K::SetRole),
            "transaction_read_only" | "default_transaction_read_only" => {
                self.kind(K::Set);
                self.flags.insert(Flags::LIFTS_READ_ONLY);
            }
            _ => self.kind(K::Set),
        }
    }

    fn create(&mut self, lo: usize, hi: usize) {
        use StmtKind as K;
        let mut i = lo + 1;
        if self.kw(i, hi, "or") && self.kw(i + 1, hi, "replace") {
            i += 2;
        }
        while matches!(
            self.word(i, hi).as_bytes(),
            b"temp"
                | b"temporary"
                | b"unlogged"
                | b"global"
                | b"local"
                | b"unique"
                | b"trusted"
                | b"procedural"
                | b"recursive"
                | b"constraint"
                | b"default"
        ) {
            i += 1;
        }
        let w = self.word(i, hi);
        match w.as_bytes() {
            b"role" | b"group" => return self.kind(K::Dcl),
            b"user" if !self.kw(i + 1, hi, "mapping") => return self.kind(K::Dcl),
            b"" => return self.unknown(),
            _ => {}
        }
        self.kind(K::Ddl);
        match w.as_bytes() {
            b"table" | b"sequence" => self.relation_as(i + 1, hi),
            b"view" => self.relation_as(i + 1, hi),
            b"foreign" | b"materialized"
                if self.kw(i + 1, hi, "table") || self.kw(i + 1, hi, "view") =>
            {
                self.relation_as(i + 2, hi)
            }
            b"index" | b"trigger" | b"policy" => {
                if let Some(on) = self.find_kw(i + 1, hi, "on") {
                    self.target(on + 1, hi);
                }
            }
            // CREATE SCHEMA may hold GRANT elements.
            b"schema" if self.find_kw(i + 1, hi, "grant").is_some() => self.kind(K::Dcl),
            _ => {}
        }
    }

    /// `[IF NOT EXISTS] name ... [AS query | AS EXECUTE name]` of CREATE TABLE/VIEW/... .
    fn relation_as(&mut self, mut i: usize, hi: usize) {
        if self.kw(i, hi, "if") && self.kw(i + 1, hi, "not") && self.kw(i + 2, hi, "exists") {
            i += 3;
        }
        if !self.is_name(i, hi) {
            return self.unknown();
        }
        let Some((name, j)) = self.qualified_name(i, hi) else {
            return;
        };
        self.add_table(name);
        let Some(as_) = self.find_kw(j, hi, "as") else {
            return;
        };
        if self.kw(as_ + 1, hi, "execute") {
            let mut name = String::new();
            match self.push_ident(&mut name, as_ + 2, hi) {
                Some(_) => self.prepared = Some(PreparedRef::Execute(name)),
                None => self.unknown(),
            }
        } else {
            self.stmt(as_ + 1, hi, Ctx::Query);
        }
    }

    fn alter(&mut self, lo: usize, hi: usize) {
        use StmtKind as K;
        let i = lo + 1;
        let w = self.word(i, hi);
        match w.as_bytes() {
            b"role" | b"group" => return self.kind(K::Dcl),
            b"user" if !self.kw(i + 1, hi, "mapping") => return self.kind(K::Dcl),
            b"default" if self.kw(i + 1, hi, "privileges") => return self.kind(K::Dcl),
            b"" => return self.unknown(),
            _ => {}
        }
        self.kind(K::Ddl);
        if let Some(at) = self.relation_after(w.as_bytes(), i, hi) {
            self.table_ref(at, hi);
        }
    }

    /// Where the relation name starts in `ALTER|DROP <w> [IF EXISTS] name` for table-like
    /// objects (`w` is the word at `i`); `None` for other objects.
    fn relation_after(&self, w: &[u8], i: usize, hi: usize) -> Option<usize> {
        let at = match w {
            b"table" | b"view" | b"sequence" => i + 1,
            b"foreign" | b"materialized"
                if self.kw(i + 1, hi, "table") || self.kw(i + 1, hi, "view") =>
            {
                i + 2
            }
            _ => return None,
        };
        if self.kw(at, hi, "if") && self.kw(at + 1, hi, "exists") {
            Some(at + 2)
        } else {
            Some(at)
        }
    }

    fn drop(&mut self, lo: usize, hi: usize) {
        use StmtKind as K;
        let i = lo + 1;
        let w = self.word(i, hi);
        match w.as_bytes() {
            b"role" | b"group" | b"owned" => return self.kind(K::Dcl),
            b"user" if !self.kw(i + 1, hi, "mapping") => return self.kind(K::Dcl),
            b"" => return self.unknown(),
            _ => {}
        }
        self.kind(K::Ddl);
        if let Some(at) = self.relation_after(w.as_bytes(), i, hi) {
            self.name_list(at, hi);
        }
    }

    /// `REFRESH MATERIALIZED VIEW [CONCURRENTLY] name`
    fn refresh(&mut self, lo: usize, hi: usize) {
        self.kind(StmtKind::Ddl);
        let mut i = lo + 1;
        while matches!(
            self.word(i, hi).as_bytes(),
            b"materialized" | b"view" | b"concurrently"
        ) {
            i += 1;
        }
        self.table_ref(i, hi);
    }

    /// Any identifier `set_config` (quoted or not) tries to change settings, maybe
    /// `transaction_read_only`: flag it. If the setting's name isn't a plain literal other than
    /// `role` / `session_authorization`, it may also change the role.
    fn scan_set_config(&mut self, lo: usize, hi: usize) {
        for i in lo..hi {
            let hit = match self.ty(i, hi) {
                Some(T::Ident) => self.raw(i).eq_ignore_ascii_case("set_config"),
                Some(T::QIdent | T::UIdent) => {
                    self.name_lower(i, hi).is_some_and(|n| n == "set_config")
                }
                _ => false,
            };
            if !hit {
                continue;
            }
            self.flags.insert(Flags::LIFTS_READ_ONLY);
            let next = if self.ty(i, hi) == Some(T::UIdent) && self.kw(i + 1, hi, "uescape") {
                i + 3
            } else {
                i + 1
            };
            if self.ty(next, hi) != Some(T::Open) {
                continue;
            }
            let lit = self.raw(next + 1);
            let harmless = self.ty(next + 1, hi) == Some(T::Str)
                && self.ty(next + 2, hi) == Some(T::Comma)
                && lit.len() >= 2
                && lit.starts_with('\'')
                && !lit.get(1..lit.len() - 1).is_some_and(|b| b.contains('\''))
                && !lit.eq_ignore_ascii_case("'role'")
                && !lit.eq_ignore_ascii_case("'session_authorization'");
            if !harmless {
                self.kind(StmtKind::SetRole);
            }
        }
    }
}

/// Keywords that end a FROM item rather than name a table.
fn is_clause_word(w: &[u8]) -> bool {
    matches!(
        w,
        b"select"
            | b"where"
            | b"group"
            | b"having"
            | b"window"
            | b"order"
            | b"limit"
            | b"offset"
            | b"fetch"
            | b"for"
            | b"union"
            | b"intersect"
            | b"except"
            | b"returning"
            | b"set"
            | b"values"
            | b"on"
            | b"using"
            | b"join"
            | b"natural"
            | b"cross"
            | b"left"
            | b"right"
            | b"full"
            | b"inner"
            | b"when"
            | b"into"
            | b"default"
    )
}

/// The escape character of `UESCAPE 'c'`: one character, not a hex digit, `+`, quote or space.
fn uescape_char(lit: &str) -> Option<char> {
    let inner = lit.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut chars = inner.chars();
    let c = chars.next()?;
    let bad = chars.next().is_some()
        || c.is_ascii_hexdigit()
        || matches!(c, '+' | '\'' | '"')
        || c.is_whitespace();
    if bad {
        None
    } else {
        Some(c)
    }
}

/// Decode `\XXXX`, `\+XXXXXX` and `\\` (with `esc` for `\`) as U&"..." does. Surrogates and bad
/// escapes are refused (`None`) rather than guessed.
fn decode_unicode_escapes(body: &str, esc: char, out: &mut String) -> Option<()> {
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != esc {
            out.push(c);
            continue;
        }
        let mut rest = chars.clone();
        match rest.next()? {
            e if e == esc => {
                out.push(esc);
                chars = rest;
            }
            '+' => {
                let hex: String = rest.by_ref().take(6).collect();
                out.push(hex_char(&hex, 6)?);
                chars = rest;
            }
            _ => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(hex_char(&hex, 4)?);
            }
        }
    }
    Some(())
}

fn hex_char(hex: &str, len: usize) -> Option<char> {
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u32::from_str_radix(hex, 16).ok()?;
    if v == 0 {
        return None;
    }
    char::from_u32(v)
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
