//! Shell command line splitter and classifier for SSH exec requests. Pure functions, no I/O.
//!
//! An SSH `exec` request carries one string that the target's login shell runs as `$SHELL -c
//! STRING`. [`classify`] reads that string the way bash does and lists every *simple command* it
//! would run ([`SimpleCommand`]), so that policy rules written as regexes over a command
//! (`'^systemctl restart app$'`) or as program names (`rm`) can decide on each of them. Like
//! `policy::sql`, it is built to be hard to fool rather than to be a whole shell:
//!
//! - Words are produced de-quoted, as the program receives them in argv: `sys"temctl" restart 'app'`
//!   is `systemctl restart app`. Each command also gets a [`SimpleCommand::normalized`] form (argv
//!   joined by single spaces, quoted only where needed) for rules to match.
//! - What can't be known from the text is flagged, not guessed: parameter and arithmetic expansion,
//!   command and process substitution, `$"…"` make a command [`CommandFlags::DYNAMIC`]; unquoted
//!   glob and brace patterns [`CommandFlags::GLOB`]; a leading `~` [`CommandFlags::TILDE`]. Commands
//!   inside `$(…)`, backquotes and `<(…)` are listed too (recursively).
//! - Wrappers are looked through: `sudo`, `doas`, `env`, `nohup`, `timeout`, `nice`, `ionice`,
//!   `stdbuf`, `setsid`, `chroot`, `busybox`, `exec`, `command`, `builtin`, the `time` program,
//!   `xargs` and `find -exec` list the command they run as well (flag
//!   [`CommandFlags::VIA_WRAPPER`]); `sh`/`bash`/`dash`/`ash -c STRING`, `su -c STRING` and `eval`
//!   parse the string recursively. `source`/`.`, a shell reading a script or stdin, and shells whose
//!   syntax differs from bash (`zsh`, `ksh`, `fish`, `csh`) are `DYNAMIC`.
//! - `if`/`while`/`until`/`for` and `( )`/`{ }` groups are parsed (their commands listed);
//!   `case`, `select`, `coproc`, `function`, `name()` definitions, `[[ ]]`, `(( ))`, array
//!   assignments and here-documents whose body would be expanded are *not*: the whole line is then
//!   [`CommandLine::unknown`], which the policy treats as the most restrictive outcome.
//! - Anything unterminated, not valid bash syntax, containing NUL, longer than [`MAX_INPUT`], nested
//!   deeper than [`MAX_DEPTH`] or with more than [`MAX_COMMANDS`] commands is unknown.
//!
//! Cost: each string is scanned once, left to right, by a recursive-descent parser with one token
//! of lookahead; `$(…)` is parsed in place. Strings parsed again after de-quoting (backquotes,
//! `sh -c`, `eval`) are charged against a budget of [`WORK_FACTOR`] times the input length, so the
//! total work is linear in the input whatever its nesting.
//!
//! Assumptions the gateway relies on (documented rather than hidden):
//! - The login shell is bash (or a POSIX sh whose reading of these constructs is the same).
//!   dash reads `$'…'` as a literal `$` followed by a single-quoted string; both readings name a
//!   program only bash can find on disk, so the difference does not widen what runs.
//! - Aliases are not expanded (bash does not expand them in `-c` strings unless a startup file
//!   turns `expand_aliases` on), and no function shadows a program name: the target's startup files
//!   are trusted.
//! - Programs that run other programs in ways not listed above (`watch`, `ssh`, `parallel`,
//!   `systemd-run`, interpreters with `-c`/`-e`, …) are listed only as themselves: rules should
//!   name them in program lists.

use std::fmt;

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
#[path = "command_wrappers.rs"]
mod wrappers;

/// Longest command line classified; longer ones are unknown.
pub const MAX_INPUT: usize = 64 * 1024;
/// Deepest nesting of groups, substitutions, wrappers and re-parsed strings.
pub const MAX_DEPTH: usize = 24;
/// Most simple commands listed for one line.
pub const MAX_COMMANDS: usize = 256;
/// Total bytes scanned, over all re-parsed strings, is at most this many times the input length
/// (plus a small constant).
pub const WORK_FACTOR: usize = 8;

/// Facts about one simple command that rules can match on (`flags = ["writes_file"]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CommandFlags(u32);

impl CommandFlags {
    /// Some part of the command is only known at run time: a word holds `$VAR`, `${…}`, `$(…)`,
    /// backquotes, `$((…))`, `<(…)`, `$"…"`; the program name is a glob or starts with `~`; or
    /// the command runs code the line does not contain (`eval`, `source`, `xargs`, `find -exec`,
    /// a shell reading a script or stdin). The policy should treat it as most restrictive unless
    /// a rule explicitly allows dynamic commands.
    pub const DYNAMIC: CommandFlags = CommandFlags(1 << 0);
    /// An unquoted `*`, `?`, `[…]` or brace expansion (`{a,b}`, `{1..3}`) in a word.
    pub const GLOB: CommandFlags = CommandFlags(1 << 1);
    /// An unquoted `~` that the shell expands to a home directory.
    pub const TILDE: CommandFlags = CommandFlags(1 << 2);
    /// A redirection writes a file (`>`, `>>`, `>|`, `<>`, `&>`, `&>>`, `>&file`), other than
    /// `/dev/null`, `/dev/stdout`, `/dev/stderr`.
    pub const WRITES_FILE: CommandFlags = CommandFlags(1 << 3);
    /// A redirection reads a file (`<`).
    pub const READS_FILE: CommandFlags = CommandFlags(1 << 4);
    /// Environment assignments before the command (`FOO=bar cmd`, `env FOO=bar cmd`, `sudo
    /// FOO=bar cmd`): `PATH=` or `LD_PRELOAD=` change what runs.
    pub const ENV_ASSIGN: CommandFlags = CommandFlags(1 << 5);
    /// Runs in the background (`cmd &`).
    pub const BACKGROUND: CommandFlags = CommandFlags(1 << 6);
    /// Inside a `( … )` subshell.
    pub const IN_SUBSHELL: CommandFlags = CommandFlags(1 << 7);
    /// Inside a command substitution `$(…)` / backquotes or a process substitution `<(…)`.
    pub const SUBSTITUTION: CommandFlags = CommandFlags(1 << 8);
    /// A word is a process substitution `<(…)` / `>(…)` (also `DYNAMIC`).
    pub const PROCESS_SUBST: CommandFlags = CommandFlags(1 << 9);
    /// Run by a wrapper (`sudo`, `env`, `sh -c`, …); [`SimpleCommand::wrapper`] names it. The
    /// wrapper itself is listed just before.
    pub const VIA_WRAPPER: CommandFlags = CommandFlags(1 << 10);
    /// Part of a pipeline of two or more commands.
    pub const PIPED: CommandFlags = CommandFlags(1 << 11);

    /// Policy names, in bit order.
    pub const NAMES: [(&'static str, CommandFlags); 12] = [
        ("dynamic", CommandFlags::DYNAMIC),
        ("glob", CommandFlags::GLOB),
        ("tilde", CommandFlags::TILDE),
        ("writes_file", CommandFlags::WRITES_FILE),
        ("reads_file", CommandFlags::READS_FILE),
        ("env_assign", CommandFlags::ENV_ASSIGN),
        ("background", CommandFlags::BACKGROUND),
        ("in_subshell", CommandFlags::IN_SUBSHELL),
        ("substitution", CommandFlags::SUBSTITUTION),
        ("process_subst", CommandFlags::PROCESS_SUBST),
        ("via_wrapper", CommandFlags::VIA_WRAPPER),
        ("piped", CommandFlags::PIPED),
    ];

    pub const fn empty() -> CommandFlags {
        CommandFlags(0)
    }
    pub fn insert(&mut self, other: CommandFlags) {
        self.0 |= other.0;
    }
    pub fn contains(self, other: CommandFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn intersects(self, other: CommandFlags) -> bool {
        self.0 & other.0 != 0
    }
    pub fn union(self, other: CommandFlags) -> CommandFlags {
        CommandFlags(self.0 | other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn from_name(name: &str) -> Option<CommandFlags> {
        CommandFlags::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        CommandFlags::NAMES
            .into_iter()
            .filter(move |(_, f)| self.contains(*f))
            .map(|(n, _)| n)
    }
}

impl std::ops::BitOr for CommandFlags {
    type Output = CommandFlags;
    fn bitor(self, other: CommandFlags) -> CommandFlags {
        self.union(other)
    }
}

/// Why a command line is not fully understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unknown {
    /// Longer than [`MAX_INPUT`].
    TooLong,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More than [`MAX_COMMANDS`] simple commands.
    TooManyCommands,
    /// Re-parsed strings exceeded the work budget ([`WORK_FACTOR`]).
    TooMuchWork,
    /// A NUL byte, in the input or produced by `$'\0'` (bash truncates there; we don't guess).
    NulByte,
    /// Not UTF-8 (the raw request, or bytes produced by `$'\xff'`).
    NotUtf8,
    /// A quote, substitution, group, here-document or escape is not closed.
    Unterminated,
    /// A token bash would reject here.
    Syntax,
    /// A construct the classifier does not analyse (named).
    Unsupported(&'static str),
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unknown::TooLong => write!(f, "command line longer than {MAX_INPUT} bytes"),
            Unknown::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
            Unknown::TooManyCommands => write!(f, "more than {MAX_COMMANDS} commands"),
            Unknown::TooMuchWork => f.write_str("nested command strings too large"),
            Unknown::NulByte => f.write_str("NUL byte in the command line"),
            Unknown::NotUtf8 => f.write_str("command line is not UTF-8"),
            Unknown::Unterminated => f.write_str("unterminated quote, substitution or group"),
            Unknown::Syntax => f.write_str("shell syntax error"),
            Unknown::Unsupported(what) => write!(f, "not analysed: {what}"),
        }
    }
}

impl std::error::Error for Unknown {}

/// The redirection operator, as written (`n` is the optional file descriptor number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirOp {
    /// `n<file`
    In,
    /// `n>file`
    Out,
    /// `n>>file`
    Append,
    /// `n>|file`
    Clobber,
    /// `n<>file` (opens read-write: counts as writing).
    ReadWrite,
    /// `&>file`
    OutErr,
    /// `&>>file`
    AppendOutErr,
    /// `n<&m`, `n<&-`
    DupIn,
    /// `n>&m`, `n>&-`, or `>&file` (= `&>file`)
    DupOut,
    /// `<<DELIM` / `<<-DELIM`: the target is the delimiter; the body is data.
    HereDoc,
    /// `<<<word`: the target is the word.
    HereString,
}

/// One redirection of a simple command (or of the group it is in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirection {
    pub fd: Option<u32>,
    pub op: RedirOp,
    /// The file (de-quoted), the fd for duplications, the delimiter for here-documents.
    pub target: String,
    /// Whether a file is written (see [`CommandFlags::WRITES_FILE`]).
    pub writes: bool,
}

/// `NAME=value` before a command (or given to `env` / `sudo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub name: String,
    /// De-quoted; dynamic parts as written.
    pub value: String,
}

/// One simple command the shell would run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleCommand {
    /// De-quoted words, as the program receives them; parts only known at run time (`$HOME`,
    /// `$(date)`, `*`) as written in the source (the command is then flagged).
    pub argv: Vec<String>,
    /// Basename of `argv[0]` (`/usr/bin/rm` → `rm`); `argv[0]` is the path as written. Empty for
    /// a command with only assignments or redirections.
    pub program: String,
    /// What `commands = [...]` rules match: assignments then argv, joined by single spaces, each
    /// word quoted only if it needs to be (`'a b'`, `$'\n'` for control characters), expansions
    /// as written. Redirections are not part of it (see `redirections` and the flags).
    pub normalized: String,
    pub assignments: Vec<Assignment>,
    pub redirections: Vec<Redirection>,
    pub flags: CommandFlags,
    /// For commands run by a wrapper: the wrapper's program (`sudo`, `sh`, `xargs`, …).
    pub wrapper: Option<String>,
}

/// The classification of one command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// Every simple command found, in the order the shell would start them (substitutions
    /// before the command that uses them; a wrapper before what it wraps). When `unknown` is set
    /// these are the commands found before the classifier gave up.
    pub commands: Vec<SimpleCommand>,
    /// Set when the line is not fully understood: the policy must treat it as most restrictive.
    pub unknown: Option<Unknown>,
}

impl CommandLine {
    fn failed(reason: Unknown) -> CommandLine {
        CommandLine {
            commands: Vec::new(),
            unknown: Some(reason),
        }
    }

    /// Whether every command was understood.
    pub fn is_known(&self) -> bool {
        self.unknown.is_none()
    }

    /// The union of all commands' flags.
    pub fn flags(&self) -> CommandFlags {
        self.commands
            .iter()
            .fold(CommandFlags::empty(), |a, c| a.union(c.flags))
    }
}

/// Classify the raw bytes of an exec request: non-UTF-8 is unknown.
pub fn classify_bytes(line: &[u8]) -> CommandLine {
    match std::str::from_utf8(line) {
        Ok(s) => classify(s),
        Err(_) => CommandLine::failed(Unknown::NotUtf8),
    }
}

/// Split a shell command line into the simple commands bash would run. Never panics; see the
/// module documentation for what is listed, flagged, and refused as unknown.
pub fn classify(line: &str) -> CommandLine {
    classify_counting(line).0
}

/// [`classify`], also returning the number of bytes scanned over all (re-)parsed strings.
fn classify_counting(line: &str) -> (CommandLine, usize) {
    if line.len() > MAX_INPUT {
        return (CommandLine::failed(Unknown::TooLong), 0);
    }
    let mut ctx = Ctx {
        commands: Vec::new(),
        rendered_assignments: Vec::new(),
        env_changed: false,
        work: 0,
        budget: WORK_FACTOR * line.len() + 4096,
    };
    let result = Parser::new(line, 0, Inherit::default(), &mut ctx).and_then(|mut p| p.program());
    let work = ctx.work;
    (
        CommandLine {
            commands: ctx.commands,
            unknown: result.err(),
        },
        work,
    )
}

// ---------------------------------------------------------------------------------------------
// Words

/// A piece of a word: literal text (quoted for the normalized form only if needed), or text kept
/// as written (expansions, unquoted glob characters, `~`).
#[derive(Clone, Debug)]
struct Seg {
    raw: bool,
    text: String,
}

/// One shell word after quote removal.
#[derive(Clone, Debug, Default)]
struct Arg {
    text: String,
    segs: Vec<Seg>,
    dynamic: bool,
    glob: bool,
    tilde: bool,
    proc_subst: bool,
    /// Any quoting or escaping was used (a quoted word is never a reserved word).
    quoted: bool,
    /// Byte index of the `=` of an unquoted `NAME=` prefix.
    assign_eq: Option<usize>,
}

impl Arg {
    /// An unquoted word with no expansion, equal to `s` (a reserved word).
    fn is_plain(&self, s: &str) -> bool {
        !self.quoted && !self.dynamic && self.text == s
    }

    /// Whether the value is known statically.
    fn is_static(&self) -> bool {
        !self.dynamic && !self.glob && !self.tilde && !self.proc_subst
    }
}

/// Builds an [`Arg`] byte by byte while lexing.
#[derive(Default)]
struct WordBuf {
    segs: Vec<(bool, Vec<u8>)>,
    dynamic: bool,
    glob: bool,
    tilde: bool,
    proc_subst: bool,
    quoted: bool,
    assign_eq: Option<usize>,
    len: usize,
    /// Every byte so far was an unquoted name character (so a `=` now makes an assignment).
    name_prefix: bool,
    /// The last byte was an unquoted `=` or `:` (where `~` expands in assignments), or none yet.
    tilde_ok: bool,
    bracket_open: bool,
    brace_open: bool,
    brace_sep: bool,
}

impl WordBuf {
    fn new() -> WordBuf {
        WordBuf {
            name_prefix: true,
            tilde_ok: true,
            ..WordBuf::default()
        }
    }

    fn push(&mut self, raw: bool, bytes: &[u8]) {
        match self.segs.last_mut() {
            Some((r, v)) if *r == raw && !raw => v.extend_from_slice(bytes),
            _ => self.segs.push((raw, bytes.to_vec())),
        }
        self.len += bytes.len();
    }

    /// A quoted or escaped literal byte.
    fn quoted_byte(&mut self, b: u8) {
        self.quoted = true;
        self.name_prefix = false;
        self.tilde_ok = false;
        self.push(false, &[b]);
    }

    /// An expansion kept as written.
    fn expansion(&mut self, src: &str) {
        self.dynamic = true;
        self.name_prefix = false;
        self.tilde_ok = false;
        self.push(true, src.as_bytes());
    }

    fn finish(self) -> Result<Arg, Unknown> {
        let mut arg = Arg {
            dynamic: self.dynamic,
            glob: self.glob,
            tilde: self.tilde,
            proc_subst: self.proc_subst,
            quoted: self.quoted,
            assign_eq: self.assign_eq,
            ..Arg::default()
        };
        for (raw, bytes) in self.segs {
            let text = String::from_utf8(bytes).map_err(|_| Unknown::NotUtf8)?;
            arg.text.push_str(&text);
            arg.segs.push(Seg { raw, text });
        }
        Ok(arg)
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(|&c| is_name_start(c))
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Semi,
    Amp,
    AndAnd,
    OrOr,
    Pipe,
    PipeAmp,
    LParen,
    RParen,
    Newline,
    /// `;;`, `;&`, `;;&`: only valid inside `case`, which is not analysed.
    CaseSep,
    /// A redirection operator with its fd number; `true` for `<<-` (strips leading tabs).
    Redir(Option<u32>, RedirOp, bool),
}

#[derive(Debug)]
enum Tok {
    Word(Arg),
    Op(Op),
    Eof,
}

/// What the next token is, without borrowing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peek {
    Eof,
    Op(Op),
    /// An unquoted reserved word (at command position it is a keyword).
    Reserved(&'static str),
    Word,
}

const RESERVED: [&str; 20] = [
    "!", "{", "}", "if", "then", "elif", "else", "fi", "while", "until", "for", "do", "done",
    "case", "esac", "select", "function", "coproc", "time", "[[",
];

/// Reserved words that close a list (`parse_list` stops before them).
const CLOSERS: [&str; 8] = ["}", "then", "elif", "else", "fi", "do", "done", "esac"];

// ---------------------------------------------------------------------------------------------
// Parser

/// State shared by a line's parser and every parser of a string nested in it.
struct Ctx {
    commands: Vec<SimpleCommand>,
    /// For each command, its assignments in normalized form (what a wrapped command inherits).
    rendered_assignments: Vec<Vec<String>>,
    /// A command changed the shell's variables (`PATH=/tmp; ls`, `export PATH=…`): every
    /// command after it runs in a changed environment.
    env_changed: bool,
    work: usize,
    budget: usize,
}

/// What commands found by a parser inherit from where the parsed string came from.
#[derive(Clone, Debug, Default)]
struct Inherit {
    flags: CommandFlags,
    wrapper: Option<String>,
    redirections: Vec<Redirection>,
}

struct PendingHereDoc {
    delim: Vec<u8>,
    strip_tabs: bool,
    quoted: bool,
}

type R<T> = Result<T, Unknown>;

struct Parser<'a, 'c> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    depth: usize,
    inherit: Inherit,
    peeked: Option<Tok>,
    heredocs: Vec<PendingHereDoc>,
    ctx: &'c mut Ctx,
}

impl<'a, 'c> Parser<'a, 'c> {
    fn new(s: &'a str, depth: usize, inherit: Inherit, ctx: &'c mut Ctx) -> R<Parser<'a, 'c>> {
        if depth > MAX_DEPTH {
            return Err(Unknown::TooDeep);
        }
        ctx.work = ctx.work.saturating_add(s.len());
        if ctx.work > ctx.budget {
            return Err(Unknown::TooMuchWork);
        }
        if s.as_bytes().contains(&0) {
            return Err(Unknown::NulByte);
        }
        Ok(Parser {
            s,
            b: s.as_bytes(),
            i: 0,
            depth,
            inherit,
            peeked: None,
            heredocs: Vec::new(),
            ctx,
        })
    }

    /// A whole string: a list, then the end.
    fn program(&mut self) -> R<()> {
        self.list(true)?;
        match self.peek_kind()? {
            Peek::Eof if self.heredocs.is_empty() => Ok(()),
            Peek::Eof => Err(Unknown::Unterminated),
            _ => Err(Unknown::Syntax),
        }
    }

    /// Parses a string found inside this one (backquotes, `sh -c`, `eval`) with its own parser.
    fn nested(&mut self, s: &str, inherit: Inherit) -> R<()> {
        Parser::new(s, self.depth + 1, inherit, self.ctx)?.program()
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Unknown::TooDeep)
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn at(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.s.get(from..to).unwrap_or("")
    }

    // --- tokens ---

    fn peek(&mut self) -> R<&Tok> {
        let t = match self.peeked.take() {
            Some(t) => t,
            None => self.lex()?,
        };
        Ok(self.peeked.insert(t))
    }

    fn peek_kind(&mut self) -> R<Peek> {
        Ok(match self.peek()? {
            Tok::Eof => Peek::Eof,
            Tok::Op(op) => Peek::Op(*op),
            Tok::Word(w) => RESERVED
                .iter()
                .find(|r| w.is_plain(r))
                .map_or(Peek::Word, |r| Peek::Reserved(r)),
        })
    }

    fn next(&mut self) -> R<Tok> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex(),
        }
    }

    fn expect_reserved(&mut self, word: &str) -> R<()> {
        match self.peek_kind()? {
            Peek::Reserved(r) if r == word => {
                self.next()?;
                Ok(())
            }
            Peek::Eof => Err(Unknown::Unterminated),
            _ => Err(Unknown::Syntax),
        }
    }

    fn expect_rparen(&mut self) -> R<()> {
        match self.next()? {
            Tok::Op(Op::RParen) => Ok(()),
            Tok::Eof => Err(Unknown::Unterminated),
            _ => Err(Unknown::Syntax),
        }
    }

    fn skip_newlines(&mut self) -> R<()> {
        while self.peek_kind()? == Peek::Op(Op::Newline) {
            self.next()?;
        }
        Ok(())
    }

    fn is_stop(p: Peek) -> bool {
        match p {
            Peek::Eof | Peek::Op(Op::RParen) => true,
            Peek::Reserved(r) => CLOSERS.contains(&r),
            _ => false,
        }
    }

    /// Skips blanks and `\<newline>` between tokens (bash removes a backslash-newline pair before
    /// it splits words: "A <backslash>-<newline> pair is treated as a line continuation").
    fn skip_blanks(&mut self) {
        loop {
            match (self.at(0), self.at(1)) {
                (b' ' | b'\t', _) => self.i += 1,
                (b'\\', b'\n') => self.i += 2,
                _ => return,
            }
        }
    }

    fn lex(&mut self) -> R<Tok> {
        self.skip_blanks();
        if self.at_end() {
            return Ok(Tok::Eof);
        }
        let c = self.at(0);
        if c == b'#' {
            // "a word beginning with # causes that word and all remaining characters on that line
            // to be ignored" (bash(1), COMMENTS); a continuation does not extend a comment.
            while !self.at_end() && self.at(0) != b'\n' {
                self.i += 1;
            }
            return self.lex();
        }
        let op = |len: usize, op: Op| (len, op);
        let (len, op) = match (c, self.at(1), self.at(2)) {
            (b'\n', _, _) => {
                self.i += 1;
                self.read_heredoc_bodies()?;
                return Ok(Tok::Op(Op::Newline));
            }
            (b';', b';', b'&') => op(3, Op::CaseSep),
            (b';', b';' | b'&', _) => op(2, Op::CaseSep),
            (b';', _, _) => op(1, Op::Semi),
            (b'&', b'&', _) => op(2, Op::AndAnd),
            (b'&', b'>', b'>') => op(3, Op::Redir(None, RedirOp::AppendOutErr, false)),
            (b'&', b'>', _) => op(2, Op::Redir(None, RedirOp::OutErr, false)),
            (b'&', _, _) => op(1, Op::Amp),
            (b'|', b'|', _) => op(2, Op::OrOr),
            (b'|', b'&', _) => op(2, Op::PipeAmp),
            (b'|', _, _) => op(1, Op::Pipe),
            (b'(', _, _) => op(1, Op::LParen),
            (b')', _, _) => op(1, Op::RParen),
            (b'<' | b'>', b'(', _) => return Ok(Tok::Word(self.word()?)),
            (b'<' | b'>', _, _) => {
                let (len, r, strip) = redir_op(c, self.at(1), self.at(2));
                op(len, Op::Redir(None, r, strip))
            }
            (b'0'..=b'9', _, _) => {
                if let Some(t) = self.fd_redirection()? {
                    return Ok(t);
                }
                return Ok(Tok::Word(self.word()?));
            }
            (b'{', _, _) if self.named_fd_redirection() => {
                return Err(Unknown::Unsupported("{varname} redirection"))
            }
            _ => return Ok(Tok::Word(self.word()?)),
        };
        self.i += len;
        self.no_continued_operator()?;
        Ok(Tok::Op(op))
    }

    /// A `\<newline>` right after an operator, followed by what could extend it (`&\<newline>&`
    /// is `&&` for bash): refused rather than joined.
    fn no_continued_operator(&self) -> R<()> {
        if self.at(0) == b'\\'
            && self.at(1) == b'\n'
            && matches!(self.at(2), b'&' | b'|' | b';' | b'<' | b'>' | b'-' | b'(')
        {
            return Err(Unknown::Unsupported("line continuation inside an operator"));
        }
        Ok(())
    }

    /// At a digit: `2>file`, `10<&0` (digits directly followed by `<` or `>`), or `None`.
    fn fd_redirection(&mut self) -> R<Option<Tok>> {
        let mut j = self.i;
        while self.b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let c = self.b.get(j).copied().unwrap_or(0);
        if c != b'<' && c != b'>' {
            return Ok(None);
        }
        let n = self.b.get(j + 1).copied().unwrap_or(0);
        if n == b'(' {
            return Err(Unknown::Unsupported("process substitution after a number"));
        }
        let fd: u32 = self
            .slice(self.i, j)
            .parse()
            .map_err(|_| Unknown::Unsupported("file descriptor number too large"))?;
        let (len, op, strip) = redir_op(c, n, self.b.get(j + 2).copied().unwrap_or(0));
        self.i = j + len;
        self.no_continued_operator()?;
        Ok(Some(Tok::Op(Op::Redir(Some(fd), op, strip))))
    }

    /// `{name}>file` (bash allocates a descriptor and stores it in `name`).
    fn named_fd_redirection(&self) -> bool {
        let rest = self.b.get(self.i + 1..).unwrap_or(&[]);
        let name_len = rest
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        name_len > 0
            && rest.get(name_len) == Some(&b'}')
            && matches!(rest.get(name_len + 1), Some(b'<' | b'>'))
    }

    /// Reads the bodies of the here-documents started on the line just ended.
    fn read_heredoc_bodies(&mut self) -> R<()> {
        for hd in std::mem::take(&mut self.heredocs) {
            loop {
                if self.at_end() {
                    return Err(Unknown::Unterminated);
                }
                let rest = self.b.get(self.i..).unwrap_or(&[]);
                let line_len = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                let line = rest.get(..line_len).unwrap_or(&[]);
                self.i += (line_len + 1).min(rest.len());
                let content = if hd.strip_tabs {
                    let tabs = line.iter().take_while(|&&c| c == b'\t').count();
                    line.get(tabs..).unwrap_or(&[])
                } else {
                    line
                };
                if content == hd.delim.as_slice() {
                    break;
                }
                // "If word is unquoted, all lines of the here-document are subjected to parameter
                // expansion, command substitution, and arithmetic expansion" (bash(1)).
                if !hd.quoted && line.iter().any(|c| matches!(c, b'$' | b'`' | b'\\')) {
                    return Err(Unknown::Unsupported("expansion in a here-document"));
                }
            }
        }
        Ok(())
    }

    // --- words ---

    /// Lexes one word starting at the cursor (which is not at a blank or an operator, except
    /// `<(` / `>(`).
    fn word(&mut self) -> R<Arg> {
        let mut w = WordBuf::new();
        let mut first = true;
        let mut continued = false;
        loop {
            let c = self.at(0);
            if self.at_end() {
                break;
            }
            match c {
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' => break,
                b'<' | b'>' => {
                    if self.at(1) != b'(' {
                        break;
                    }
                    if !first {
                        return Err(Unknown::Unsupported("process substitution inside a word"));
                    }
                    let start = self.i;
                    self.i += 2;
                    self.substitution()?;
                    w.expansion(self.slice(start, self.i));
                    w.proc_subst = true;
                }
                b'\\' => match self.at(1) {
                    b'\n' => {
                        self.i += 2;
                        continued = true;
                    }
                    _ if self.i + 1 >= self.b.len() => return Err(Unknown::Unterminated),
                    n => {
                        w.quoted_byte(n);
                        self.i += 2;
                    }
                },
                b'\'' => {
                    self.i += 1;
                    let rest = self.b.get(self.i..).unwrap_or(&[]);
                    let len = rest
                        .iter()
                        .position(|&c| c == b'\'')
                        .ok_or(Unknown::Unterminated)?;
                    w.quoted = true;
                    w.name_prefix = false;
                    w.tilde_ok = false;
                    w.push(false, rest.get(..len).unwrap_or(&[]));
                    self.i += len + 1;
                }
                b'"' => {
                    self.i += 1;
                    self.double_quoted(&mut w)?;
                }
                b'$' => self.dollar(&mut w, false)?,
                b'`' => self.backquoted(&mut w, false)?,
                _ => {
                    self.unquoted_byte(&mut w, c);
                    self.i += 1;
                }
            }
            first = false;
        }
        let arg = w.finish()?;
        // `2\<newline>>f` is `2>f` for bash.
        if continued
            && matches!(self.at(0), b'<' | b'>')
            && !arg.text.is_empty()
            && arg.text.bytes().all(|c| c.is_ascii_digit())
        {
            return Err(Unknown::Unsupported("line continuation inside an operator"));
        }
        // `a[i]=v` is an array assignment for bash, a command name for us: refuse.
        if arg.assign_eq.is_none() && !arg.quoted {
            if let Some((name, rest)) = arg.text.split_once('[') {
                if is_name(name) && rest.contains("]=") {
                    return Err(Unknown::Unsupported("array assignment"));
                }
            }
        }
        Ok(arg)
    }

    fn unquoted_byte(&mut self, w: &mut WordBuf, c: u8) {
        let was_tilde_ok = w.tilde_ok;
        w.tilde_ok = false;
        let raw = match c {
            b'*' | b'?' => {
                w.glob = true;
                true
            }
            b'[' => {
                w.bracket_open = true;
                true
            }
            b']' => {
                w.glob |= w.bracket_open;
                true
            }
            b'{' => {
                w.brace_open = true;
                true
            }
            b'}' => {
                w.glob |= w.brace_open && w.brace_sep;
                true
            }
            b',' => {
                w.brace_sep |= w.brace_open;
                false
            }
            b'.' => {
                w.brace_sep |= w.brace_open && self.at(1) == b'.';
                false
            }
            b'~' if was_tilde_ok => {
                w.tilde = true;
                true
            }
            b'=' | b':' => {
                w.tilde_ok = true;
                false
            }
            _ => false,
        };
        if w.name_prefix {
            if c == b'=' && w.len > 0 {
                w.assign_eq = Some(w.len);
            } else if c == b'+' && self.at(1) == b'=' && w.len > 0 {
                // `NAME+=value` appends; the `=` follows.
            } else if !(is_name_start(c) || (c.is_ascii_digit() && w.len > 0)) {
                w.name_prefix = false;
            }
            if c == b'=' {
                w.name_prefix = false;
            }
        }
        w.push(raw, &[c]);
    }

    /// After an opening `"`: up to and including the closing one.
    fn double_quoted(&mut self, w: &mut WordBuf) -> R<()> {
        w.quoted = true;
        w.name_prefix = false;
        w.tilde_ok = false;
        loop {
            if self.at_end() {
                return Err(Unknown::Unterminated);
            }
            match self.at(0) {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                // "The backslash retains its special meaning only when followed by one of the
                // following characters: $, `, ", \, or <newline>" (bash(1), QUOTING).
                b'\\' => match self.at(1) {
                    b'$' | b'`' | b'"' | b'\\' => {
                        w.push(false, &[self.at(1)]);
                        self.i += 2;
                    }
                    b'\n' => self.i += 2,
                    _ => {
                        w.push(false, b"\\");
                        self.i += 1;
                    }
                },
                b'$' if matches!(self.at(1), b'\'' | b'"') => {
                    w.push(false, b"$");
                    self.i += 1;
                }
                b'$' => self.dollar(w, true)?,
                b'`' => self.backquoted(w, true)?,
                c => {
                    w.push(false, &[c]);
                    self.i += 1;
                }
            }
        }
    }

    /// At `$`: an expansion, ANSI-C or locale quoting, or a literal `$`.
    fn dollar(&mut self, w: &mut WordBuf, in_dq: bool) -> R<()> {
        let start = self.i;
        if self.at(1) == b'\\' && self.at(2) == b'\n' {
            // `$\<newline>HOME` is `$HOME` for bash.
            return Err(Unknown::Unsupported("line continuation after $"));
        }
        match self.at(1) {
            b'\'' if !in_dq => {
                self.i += 2;
                self.ansi_c(w)
            }
            b'"' if !in_dq => {
                // `$"…"` is translated through the locale's message catalog.
                self.i += 2;
                self.double_quoted(w)?;
                w.dynamic = true;
                Ok(())
            }
            b'(' if self.at(2) == b'(' => {
                self.arithmetic()?;
                w.expansion(self.slice(start, self.i));
                Ok(())
            }
            b'(' => {
                self.i += 2;
                self.substitution()?;
                w.expansion(self.slice(start, self.i));
                Ok(())
            }
            b'{' => {
                let rest = self.b.get(self.i + 2..).unwrap_or(&[]);
                let len = rest
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or(Unknown::Unterminated)?;
                let body = rest.get(..len).unwrap_or(&[]);
                if body.is_empty()
                    || body
                        .iter()
                        .any(|c| matches!(c, b'$' | b'`' | b'\'' | b'"' | b'\\' | b'{' | b'\n'))
                {
                    return Err(Unknown::Unsupported("complex parameter expansion"));
                }
                self.i += len + 3;
                w.expansion(self.slice(start, self.i));
                Ok(())
            }
            c if is_name_start(c) => {
                self.i += 1;
                while self.at(0).is_ascii_alphanumeric() || self.at(0) == b'_' {
                    self.i += 1;
                }
                w.expansion(self.slice(start, self.i));
                Ok(())
            }
            b'0'..=b'9' | b'@' | b'*' | b'#' | b'?' | b'$' | b'!' | b'-' => {
                self.i += 2;
                w.expansion(self.slice(start, self.i));
                Ok(())
            }
            _ => {
                if in_dq {
                    w.push(false, b"$");
                } else {
                    self.unquoted_byte(w, b'$');
                }
                self.i += 1;
                Ok(())
            }
        }
    }

    /// At `$((`: to the matching `))`. Anything that could run a command inside is refused.
    fn arithmetic(&mut self) -> R<()> {
        let mut j = self.i + 3;
        let mut depth = 0usize;
        loop {
            match self.b.get(j).copied() {
                None => return Err(Unknown::Unterminated),
                Some(b'(') => depth += 1,
                Some(b')') if depth > 0 => depth -= 1,
                Some(b')') => {
                    // `$((a) )` is a command substitution of a subshell for bash, not arithmetic.
                    if self.b.get(j + 1) != Some(&b')') {
                        return Err(Unknown::Unsupported("$(( that is not arithmetic"));
                    }
                    self.i = j + 2;
                    return Ok(());
                }
                Some(b'`' | b'\'' | b'"' | b'\\') => {
                    return Err(Unknown::Unsupported(
                        "quoting or substitution in arithmetic",
                    ))
                }
                Some(b'$') if matches!(self.b.get(j + 1), Some(b'(' | b'{')) => {
                    return Err(Unknown::Unsupported("substitution in arithmetic"))
                }
                Some(_) => {}
            }
            j += 1;
        }
    }

    /// After `$(`, `<(` or `>(`: the inner list and the closing `)`.
    fn substitution(&mut self) -> R<()> {
        self.enter()?;
        let saved = self.inherit.flags;
        self.inherit.flags.insert(CommandFlags::SUBSTITUTION);
        // Here-documents started outside can't have their body inside.
        let outer_heredocs = std::mem::take(&mut self.heredocs);
        self.list(true)?;
        if !self.heredocs.is_empty() {
            return Err(Unknown::Unsupported("here-document inside a substitution"));
        }
        self.heredocs = outer_heredocs;
        self.expect_rparen()?;
        self.inherit.flags = saved;
        self.leave();
        Ok(())
    }

    /// At a backquote: "backslash retains its literal meaning except when followed by $, `, or
    /// \" (bash(1), Command Substitution); the de-escaped text is parsed as a command string.
    fn backquoted(&mut self, w: &mut WordBuf, in_dq: bool) -> R<()> {
        if !self.heredocs.is_empty() {
            return Err(Unknown::Unsupported(
                "backquotes on a line with a here-document",
            ));
        }
        let start = self.i;
        self.i += 1;
        let mut inner = Vec::new();
        loop {
            match (self.b.get(self.i).copied(), self.at(1)) {
                (None, _) => return Err(Unknown::Unterminated),
                (Some(b'`'), _) => {
                    self.i += 1;
                    break;
                }
                (Some(b'\\'), n @ (b'$' | b'`' | b'\\')) => {
                    inner.push(n);
                    self.i += 2;
                }
                (Some(b'\\'), b'"') if in_dq => {
                    return Err(Unknown::Unsupported(
                        "escaped double quote in quoted backquotes",
                    ))
                }
                (Some(c), _) => {
                    inner.push(c);
                    self.i += 1;
                }
            }
        }
        let inner = String::from_utf8(inner).map_err(|_| Unknown::NotUtf8)?;
        let mut inherit = self.inherit.clone();
        inherit.flags.insert(CommandFlags::SUBSTITUTION);
        self.nested(&inner, inherit)?;
        w.expansion(self.slice(start, self.i));
        Ok(())
    }

    /// After `$'`: decode ANSI-C escapes (bash(1), QUOTING) up to the closing `'`.
    fn ansi_c(&mut self, w: &mut WordBuf) -> R<()> {
        w.quoted = true;
        w.name_prefix = false;
        w.tilde_ok = false;
        loop {
            let c = self.b.get(self.i).copied().ok_or(Unknown::Unterminated)?;
            self.i += 1;
            match c {
                b'\'' => return Ok(()),
                b'\\' => {
                    let e = self.b.get(self.i).copied().ok_or(Unknown::Unterminated)?;
                    self.i += 1;
                    let byte = match e {
                        b'a' => 7,
                        b'b' => 8,
                        b'e' | b'E' => 0x1b,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'v' => 0x0b,
                        b'\\' | b'\'' | b'"' | b'?' => e,
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.at(0) {
                                    d @ b'0'..=b'7' => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.i += 1;
                                    }
                                    _ => break,
                                }
                            }
                            u8::try_from(v & 0xff).unwrap_or(0)
                        }
                        b'x' => match self.hex_digits(2) {
                            Some(v) => u8::try_from(v).unwrap_or(0),
                            None => {
                                w.push(false, b"\\x");
                                continue;
                            }
                        },
                        b'u' | b'U' => {
                            let max = if e == b'u' { 4 } else { 8 };
                            match self.hex_digits(max) {
                                Some(v) => {
                                    let ch = char::from_u32(v)
                                        .ok_or(Unknown::Unsupported("invalid \\u escape"))?;
                                    if ch == '\0' {
                                        return Err(Unknown::NulByte);
                                    }
                                    let mut buf = [0u8; 4];
                                    w.push(false, ch.encode_utf8(&mut buf).as_bytes());
                                    continue;
                                }
                                None => {
                                    w.push(false, &[b'\\', e]);
                                    continue;
                                }
                            }
                        }
                        b'c' => return Err(Unknown::Unsupported("\\c escape")),
                        other => {
                            w.push(false, &[b'\\', other]);
                            continue;
                        }
                    };
                    if byte == 0 {
                        return Err(Unknown::NulByte);
                    }
                    w.push(false, &[byte]);
                }
                c => w.push(false, &[c]),
            }
        }
    }

    /// Up to `max` hex digits at the cursor; `None` if there is none.
    fn hex_digits(&mut self, max: usize) -> Option<u32> {
        let mut v = 0u32;
        let mut n = 0;
        while n < max {
            match char::from(self.at(0)).to_digit(16) {
                Some(d) => {
                    v = v * 16 + d;
                    self.i += 1;
                    n += 1;
                }
                None => break,
            }
        }
        (n > 0).then_some(v)
    }

    // --- grammar ---

    /// A list of and-or lists separated by `;`, `&` or newlines, up to a closer (`)`, `}`, `fi`,
    /// `done`, …) or the end, which is left unread. Returns the number of and-or lists.
    fn list(&mut self, allow_empty: bool) -> R<usize> {
        let mut n = 0;
        loop {
            self.skip_newlines()?;
            if Self::is_stop(self.peek_kind()?) {
                break;
            }
            let start = self.ctx.commands.len();
            self.and_or()?;
            n += 1;
            match self.peek_kind()? {
                Peek::Op(Op::Semi | Op::Newline) => {
                    self.next()?;
                }
                Peek::Op(Op::Amp) => {
                    self.next()?;
                    self.mark(start, CommandFlags::BACKGROUND);
                }
                p if Self::is_stop(p) => break,
                _ => return Err(Unknown::Syntax),
            }
        }
        if n == 0 && !allow_empty {
            return Err(Unknown::Syntax);
        }
        Ok(n)
    }

    fn mark(&mut self, start: usize, flags: CommandFlags) {
        for c in self.ctx.commands.iter_mut().skip(start) {
            c.flags.insert(flags);
        }
    }

    fn and_or(&mut self) -> R<()> {
        self.pipeline()?;
        while matches!(self.peek_kind()?, Peek::Op(Op::AndAnd | Op::OrOr)) {
            self.next()?;
            self.skip_newlines()?;
            self.pipeline()?;
        }
        Ok(())
    }

    fn pipeline(&mut self) -> R<()> {
        // `! pipeline` and `time [-p] pipeline`.
        loop {
            match self.peek_kind()? {
                Peek::Reserved("!") => {
                    self.next()?;
                }
                Peek::Reserved("time") => {
                    self.next()?;
                    if matches!(self.peek()?, Tok::Word(w) if w.is_plain("-p")) {
                        self.next()?;
                    }
                }
                _ => break,
            }
        }
        let start = self.ctx.commands.len();
        self.command()?;
        let mut n = 1;
        while matches!(self.peek_kind()?, Peek::Op(Op::Pipe | Op::PipeAmp)) {
            self.next()?;
            self.skip_newlines()?;
            self.command()?;
            n += 1;
        }
        if n > 1 {
            self.mark(start, CommandFlags::PIPED);
        }
        Ok(())
    }

    fn command(&mut self) -> R<()> {
        self.enter()?;
        let start = self.ctx.commands.len();
        let compound = match self.peek_kind()? {
            Peek::Op(Op::LParen) => {
                if self.at(0) == b'(' {
                    return Err(Unknown::Unsupported("(( arithmetic command ))"));
                }
                self.next()?;
                let saved = self.inherit.flags;
                self.inherit.flags.insert(CommandFlags::IN_SUBSHELL);
                self.list(false)?;
                self.expect_rparen()?;
                self.inherit.flags = saved;
                true
            }
            Peek::Reserved("{") => {
                self.next()?;
                self.list(false)?;
                self.expect_reserved("}")?;
                true
            }
            Peek::Reserved("if") => {
                self.next()?;
                self.if_rest()?;
                true
            }
            Peek::Reserved("while" | "until") => {
                self.next()?;
                self.list(false)?;
                self.do_group()?;
                true
            }
            Peek::Reserved("for") => {
                self.next()?;
                self.for_rest()?;
                true
            }
            Peek::Reserved(
                r @ ("case" | "select" | "function" | "coproc" | "[[" | "!" | "time"),
            ) => return Err(Unknown::Unsupported(r)),
            Peek::Reserved(r) if CLOSERS.contains(&r) => return Err(Unknown::Syntax),
            Peek::Reserved(_) | Peek::Op(Op::Redir(..)) | Peek::Word => {
                self.simple()?;
                false
            }
            Peek::Eof => return Err(Unknown::Unterminated),
            Peek::Op(_) => return Err(Unknown::Syntax),
        };
        if compound {
            // Redirections after a compound command apply to every command in it.
            while let Peek::Op(Op::Redir(fd, op, strip)) = self.peek_kind()? {
                self.next()?;
                let (redir, flags) = self.redirection(fd, op, strip)?;
                for c in self.ctx.commands.iter_mut().skip(start) {
                    c.redirections.push(redir.clone());
                    c.flags.insert(flags);
                }
            }
        }
        self.leave();
        Ok(())
    }

    /// After `if`.
    fn if_rest(&mut self) -> R<()> {
        self.list(false)?;
        self.expect_reserved("then")?;
        self.list(false)?;
        loop {
            match self.peek_kind()? {
                Peek::Reserved("elif") => {
                    self.next()?;
                    self.list(false)?;
                    self.expect_reserved("then")?;
                    self.list(false)?;
                }
                Peek::Reserved("else") => {
                    self.next()?;
                    self.list(false)?;
                    return self.expect_reserved("fi");
                }
                _ => return self.expect_reserved("fi"),
            }
        }
    }

    /// `do list done`
    fn do_group(&mut self) -> R<()> {
        self.expect_reserved("do")?;
        self.list(false)?;
        self.expect_reserved("done")
    }

    /// After `for`: `NAME [in WORDS] ; do list done`.
    fn for_rest(&mut self) -> R<()> {
        match self.next()? {
            Tok::Word(w) if !w.quoted && !w.dynamic && is_name(&w.text) => {}
            Tok::Op(Op::LParen) => return Err(Unknown::Unsupported("for (( ))")),
            _ => return Err(Unknown::Syntax),
        }
        self.skip_newlines()?;
        match self.peek()? {
            Tok::Word(w) if w.is_plain("in") => {
                self.next()?;
                // The words are expanded (their substitutions were listed while lexing them).
                while let Tok::Word(_) = self.peek()? {
                    self.next()?;
                }
                match self.next()? {
                    Tok::Op(Op::Semi | Op::Newline) => {}
                    _ => return Err(Unknown::Syntax),
                }
            }
            Tok::Op(Op::Semi) => {
                self.next()?;
            }
            _ => {}
        }
        self.skip_newlines()?;
        self.do_group()
    }

    /// A simple command: assignments, words and redirections in any order after the first word.
    fn simple(&mut self) -> R<()> {
        let mut argv: Vec<Arg> = Vec::new();
        let mut assigns: Vec<Arg> = Vec::new();
        let mut redirs = Vec::new();
        let mut flags = CommandFlags::empty();
        loop {
            match self.peek_kind()? {
                Peek::Word | Peek::Reserved(_) => {
                    let Tok::Word(w) = self.next()? else {
                        return Err(Unknown::Syntax);
                    };
                    if argv.is_empty() && w.assign_eq.is_some() {
                        assigns.push(w);
                    } else {
                        argv.push(w);
                    }
                }
                Peek::Op(Op::Redir(fd, op, strip)) => {
                    self.next()?;
                    let (r, f) = self.redirection(fd, op, strip)?;
                    redirs.push(r);
                    flags.insert(f);
                }
                Peek::Op(Op::LParen) if argv.len() == 1 && assigns.is_empty() => {
                    return Err(Unknown::Unsupported("function definition"))
                }
                Peek::Op(Op::LParen) => return Err(Unknown::Syntax),
                _ => break,
            }
        }
        if argv.is_empty() && assigns.is_empty() && redirs.is_empty() {
            return Err(Unknown::Syntax);
        }
        let env: Vec<Assignment> = assigns.iter().map(assignment_of).collect();
        for a in &assigns {
            flags.insert(assignment_flags(a));
        }
        let rendered: Vec<String> = assigns.iter().map(render_assignment).collect();
        redirs.extend(self.inherit.redirections.iter().cloned());
        self.emit(&argv, env, rendered, redirs, flags, None)
    }

    /// Parses the target of a redirection whose operator was just read.
    fn redirection(
        &mut self,
        fd: Option<u32>,
        op: RedirOp,
        strip_tabs: bool,
    ) -> R<(Redirection, CommandFlags)> {
        let w = match self.next()? {
            Tok::Word(w) => w,
            Tok::Eof => return Err(Unknown::Unterminated),
            Tok::Op(_) => return Err(Unknown::Syntax),
        };
        let mut flags = CommandFlags::empty();
        if !w.is_static() {
            flags.insert(CommandFlags::DYNAMIC);
        }
        let harmless =
            w.is_static() && matches!(w.text.as_str(), "/dev/null" | "/dev/stdout" | "/dev/stderr");
        // bash opens a network connection for these names itself.
        if w.text.starts_with("/dev/tcp/") || w.text.starts_with("/dev/udp/") {
            flags.insert(CommandFlags::DYNAMIC);
        }
        let is_fd = w.is_static()
            && !w.text.is_empty()
            && (w.text == "-"
                || w.text
                    .trim_end_matches('-')
                    .bytes()
                    .all(|c| c.is_ascii_digit()));
        let writes = match op {
            RedirOp::HereDoc => {
                if w.dynamic || w.text.contains('\n') {
                    return Err(Unknown::Unsupported(
                        "here-document delimiter with expansion",
                    ));
                }
                self.heredocs.push(PendingHereDoc {
                    delim: w.text.as_bytes().to_vec(),
                    strip_tabs,
                    quoted: w.quoted,
                });
                false
            }
            RedirOp::HereString => false,
            RedirOp::In => {
                flags.insert(CommandFlags::READS_FILE);
                false
            }
            RedirOp::DupIn => {
                if !is_fd {
                    flags.insert(CommandFlags::READS_FILE);
                }
                false
            }
            RedirOp::DupOut => !is_fd && !harmless,
            RedirOp::Out
            | RedirOp::Append
            | RedirOp::Clobber
            | RedirOp::ReadWrite
            | RedirOp::OutErr
            | RedirOp::AppendOutErr => !harmless,
        };
        if writes {
            flags.insert(CommandFlags::WRITES_FILE);
        }
        if w.glob {
            flags.insert(CommandFlags::GLOB);
        }
        Ok((
            Redirection {
                fd,
                op,
                target: w.text,
                writes,
            },
            flags,
        ))
    }
}

/// `(length, operator, strips tabs)` for a redirection starting with `c` (`<` or `>`).
fn redir_op(c: u8, n: u8, n2: u8) -> (usize, RedirOp, bool) {
    match (c, n, n2) {
        (b'<', b'<', b'<') => (3, RedirOp::HereString, false),
        (b'<', b'<', b'-') => (3, RedirOp::HereDoc, true),
        (b'<', b'<', _) => (2, RedirOp::HereDoc, false),
        (b'<', b'&', _) => (2, RedirOp::DupIn, false),
        (b'<', b'>', _) => (2, RedirOp::ReadWrite, false),
        (b'<', _, _) => (1, RedirOp::In, false),
        (_, b'>', _) => (2, RedirOp::Append, false),
        (_, b'&', _) => (2, RedirOp::DupOut, false),
        (_, b'|', _) => (2, RedirOp::Clobber, false),
        _ => (1, RedirOp::Out, false),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Parser<'_, '_> {
    /// Lists one simple command, then what it wraps.
    fn emit(
        &mut self,
        argv: &[Arg],
        assignments: Vec<Assignment>,
        rendered_assignments: Vec<String>,
        redirections: Vec<Redirection>,
        flags: CommandFlags,
        wrapper: Option<String>,
    ) -> R<()> {
        let mut flags = flags.union(self.inherit.flags);
        let wrapper = wrapper.or_else(|| self.inherit.wrapper.clone());
        if self.ctx.env_changed {
            flags.insert(CommandFlags::ENV_ASSIGN);
        }
        if argv.is_empty() && !assignments.is_empty() {
            self.ctx.env_changed = true;
        }
        for a in argv {
            if a.dynamic {
                flags.insert(CommandFlags::DYNAMIC);
            }
            if a.glob {
                flags.insert(CommandFlags::GLOB);
            }
            if a.tilde {
                flags.insert(CommandFlags::TILDE);
            }
            if a.proc_subst {
                flags.insert(CommandFlags::PROCESS_SUBST.union(CommandFlags::DYNAMIC));
            }
        }
        if argv.first().is_some_and(|a| !a.is_static()) {
            flags.insert(CommandFlags::DYNAMIC);
        }
        // bash runs `fg`/`bg` for a command name starting with `%` (a job spec), quoted or not.
        if argv.first().is_some_and(|a| a.text.starts_with('%')) {
            return Err(Unknown::Unsupported("job specification"));
        }
        let mut normalized = rendered_assignments.join(" ");
        for (k, a) in argv.iter().enumerate() {
            if !normalized.is_empty() {
                normalized.push(' ');
            }
            normalized.push_str(&render_word(a, k == 0));
        }
        if self.ctx.commands.len() >= MAX_COMMANDS {
            return Err(Unknown::TooManyCommands);
        }
        let cmd = SimpleCommand {
            argv: argv.iter().map(|a| a.text.clone()).collect(),
            program: argv
                .first()
                .map(|a| basename(&a.text).to_owned())
                .unwrap_or_default(),
            normalized,
            assignments,
            redirections,
            flags,
            wrapper,
        };
        self.ctx.commands.push(cmd);
        self.ctx.rendered_assignments.push(rendered_assignments);
        let index = self.ctx.commands.len() - 1;
        self.enter()?;
        self.unwrap(argv, index)?;
        self.leave();
        Ok(())
    }

    fn flag_command(&mut self, index: usize, flags: CommandFlags) {
        if let Some(c) = self.ctx.commands.get_mut(index) {
            c.flags.insert(flags);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Normalized form

/// Characters that never need quoting in a word.
fn is_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'-' | b'.' | b'/' | b':' | b',' | b'+' | b'=' | b'@' | b'%'
        )
        || b >= 0x80
}

/// Quotes a literal so the shell reads it back as the same text.
fn quote_into(out: &mut String, text: &str, force: bool) {
    if !force && text.bytes().all(is_safe) {
        out.push_str(text);
    } else if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        out.push_str("$'");
        for ch in text.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    out.push_str(&format!("\\x{:02x}", u32::from(c)));
                }
                c => out.push(c),
            }
        }
        out.push('\'');
    } else {
        out.push('\'');
        out.push_str(&text.replace('\'', "'\\''"));
        out.push('\'');
    }
}

fn render_segs(out: &mut String, segs: &[Seg], force_first: bool) {
    for (k, seg) in segs.iter().enumerate() {
        if seg.raw {
            out.push_str(&seg.text);
        } else if !seg.text.is_empty() {
            quote_into(out, &seg.text, force_first && k == 0);
        }
    }
}

/// The normalized form of one word; `program` for `argv[0]`, where a reserved word or a
/// `NAME=` prefix must stay quoted to keep its meaning.
fn render_word(a: &Arg, program: bool) -> String {
    let mut out = String::new();
    let force = program
        && (RESERVED.contains(&a.text.as_str())
            || a.text.split_once('=').is_some_and(|(n, _)| is_name(n)));
    render_segs(&mut out, &a.segs, force);
    if out.is_empty() {
        out.push_str("''");
    }
    out
}

/// `NAME=value`, with the value quoted as needed.
fn render_assignment(a: &Arg) -> String {
    let mut out = String::new();
    if let Some(Seg { raw: false, text }) = a.segs.first() {
        if let Some((name, value)) = text.split_once('=') {
            out.push_str(name);
            out.push('=');
            quote_into(&mut out, value, false);
            if value.is_empty() && a.segs.len() == 1 {
                out.push_str("''");
            }
            render_segs(&mut out, a.segs.get(1..).unwrap_or(&[]), false);
            return out;
        }
    }
    render_word(a, false)
}

/// Flags for an assignment word (no glob or brace expansion happens in assignments).
fn assignment_flags(a: &Arg) -> CommandFlags {
    let mut f = CommandFlags::ENV_ASSIGN;
    if a.dynamic || a.proc_subst {
        f.insert(CommandFlags::DYNAMIC);
    }
    if a.tilde {
        f.insert(CommandFlags::TILDE);
    }
    f
}

fn assignment_of(a: &Arg) -> Assignment {
    let (name, value) = a.text.split_once('=').unwrap_or((&a.text, ""));
    Assignment {
        // `NAME+=value` appends to NAME.
        name: name.strip_suffix('+').unwrap_or(name).to_owned(),
        value: value.to_owned(),
    }
}
