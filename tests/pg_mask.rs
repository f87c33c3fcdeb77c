//! Masking end to end: real psql and a real binary-results driver (psycopg 3, tests/python/)
//! read a real PostgreSQL cluster seeded with PII through `portcullis serve`.
//!
//! One policy: target `db` (default allow) for `alice` (no mask) and `ci-bot` (role `ci`), with a
//! `[[mask]]` for `role:ci`: columns `*.ssn` and `*.pin` masked whole, detectors email, card and
//! aws_key, strategy redact. What ci-bot sees must never hold a raw value; what alice sees must be
//! exactly what the cluster sends.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    describe, free_port, gateway_conninfo, run_with_timeout, stderr, stdout, Gateway, PgCluster,
    COMMAND_TIMEOUT,
};

// ---------------------------------------------------------------------------------------------
// Data and policy
// ---------------------------------------------------------------------------------------------

const SEED_SQL: &str = "create table people (id int primary key, email text unique, ssn text, \
         card text, note text, pin int);\n\
     insert into people values\n\
     (1, 'alice.smith@example.com', '123-45-6789', '4111 1111 1111 1111', \
         'call me at work, or mail alice.smith@example.com', 4821),\n\
     (2, 'bob.jones@example.net', '219-09-9999', '5500-0000-0000-0004', \
         'deploy key AKIAIOSFODNN7EXAMPLE leaked in ticket 5521', 9930),\n\
     (3, 'carol@example.org', '078-05-1120', '340000000000009', \
         'no personal data here, just a note', 1234);\n\
     create table staff (id int primary key, salary int);\n\
     insert into staff values (1, 91000);\n\
     create table bonus (id int primary key, salary int);\n\
     insert into bonus values (1, 500);";

/// Every raw sensitive value of the seed, as it could appear in any output.
const RAW_PII: [&str; 11] = [
    "alice.smith@example.com",
    "bob.jones@example.net",
    "carol@example.org",
    "123-45-6789",
    "219-09-9999",
    "078-05-1120",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "340000000000009",
    "AKIAIOSFODNN7EXAMPLE",
    "AKIA",
];

/// ci-bot's view of `select * from people order by id` (psql -At).
const MASKED_ROWS: [&str; 3] = [
    "1|[redacted:email]|[redacted]|[redacted:card]|call me at work, or mail [redacted:email]|[redacted]",
    "2|[redacted:email]|[redacted]|[redacted:card]|deploy key [redacted:aws_key] leaked in ticket 5521|[redacted]",
    "3|[redacted:email]|[redacted]|[redacted:card]|no personal data here, just a note|[redacted]",
];

/// alice's (and the cluster's) view of the same query.
const RAW_ROWS: [&str; 3] = [
    "1|alice.smith@example.com|123-45-6789|4111 1111 1111 1111|call me at work, or mail alice.smith@example.com|4821",
    "2|bob.jones@example.net|219-09-9999|5500-0000-0000-0004|deploy key AKIAIOSFODNN7EXAMPLE leaked in ticket 5521|9930",
    "3|carol@example.org|078-05-1120|340000000000009|no personal data here, just a note|1234",
];

const PASSWORD_FILE: &str = "upstream.pw";

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn policy(pg: &PgCluster, port: u16) -> String {
    format!(
        "[gateway]\n\
         data_dir = \"./data\"\n\
         public_url = \"http://127.0.0.1:8443\"\n\
         max_token_ttl = \"24h\"\n\
         audit_flush_interval = \"50ms\"\n\n\
         [[identity]]\n\
         name = \"alice\"\n\
         kind = \"human\"\n\
         roles = [\"dba\"]\n\n\
         [[identity]]\n\
         name = \"carol\"\n\
         kind = \"human\"\n\
         roles = [\"analyst\"]\n\n\
         [[identity]]\n\
         name = \"ci-bot\"\n\
         kind = \"service\"\n\
         owner = \"alice\"\n\
         roles = [\"ci\"]\n\
         max_ttl = \"1h\"\n\n\
         [[target]]\n\
         name = \"db\"\n\
         listen = \"127.0.0.1:{port}\"\n\
         upstream = {upstream}\n\
         database = \"postgres\"\n\
         user = \"postgres\"\n\
         password_file = \"{PASSWORD_FILE}\"\n\
         upstream_tls = \"verify-full\"\n\
         upstream_ca = {ca}\n\
         default = \"allow\"\n\n\
         [[rule]]\n\
         name = \"ci-may-insert-people\"\n\
         who = [\"role:ci\"]\n\
         sql = [\"insert\"]\n\
         tables = [\"people\"]\n\
         action = \"allow\"\n\n\
         [[rule]]\n\
         name = \"ci-may-copy-out\"\n\
         who = [\"role:ci\"]\n\
         sql = [\"copy_to\"]\n\
         action = \"allow\"\n\n\
         [[mask]]\n\
         targets = [\"db\"]\n\
         who = [\"role:ci\"]\n\
         columns = [\"*.ssn\", \"*.pin\", \"public.staff.salary\"]\n\
         detectors = [\"email\", \"card\", \"aws_key\"]\n\
         strategy = \"redact\"\n\n\
         [[mask]]\n\
         targets = [\"db\"]\n\
         who = [\"role:analyst\"]\n\
         detectors = [\"email\", \"card\", \"aws_key\"]\n\
         strategy = \"redact\"\n",
        upstream = toml_str(&pg.addr()),
        ca = toml_str(&pg.ca_cert.to_string_lossy()),
    )
}

// ---------------------------------------------------------------------------------------------
// One cluster + one gateway
// ---------------------------------------------------------------------------------------------

/// Field order matters: the gateway is dropped (killed) before the cluster.
struct Env {
    gw: Gateway,
    pg: PgCluster,
    port: u16,
}

impl Env {
    fn start() -> Env {
        let pg = PgCluster::start();
        let out = pg.psql("postgres", SEED_SQL);
        assert!(out.status.success(), "seeding failed:\n{}", describe(&out));
        let port = free_port();
        let gw = Gateway::builder(&policy(&pg, port))
            .secret(PASSWORD_FILE, &pg.password)
            .start();
        Env { gw, pg, port }
    }

    fn token(&self, identity: &str) -> String {
        self.gw.token(identity, "db", &[])
    }

    /// psql through `db` (no TLS to the gateway) with `-v VERBOSITY=verbose` and `args`.
    fn psql(&self, identity: &str, args: &[&str]) -> Output {
        let token = self.token(identity);
        let mut all = vec!["-v", "VERBOSITY=verbose"];
        all.extend_from_slice(args);
        self.gw
            .psql_via_args(self.port, identity, "db", &token, "disable", &all, None)
    }

    /// psql directly against the cluster (superuser) with the same `-v VERBOSITY=verbose`.
    fn psql_direct(&self, args: &[&str]) -> Output {
        let mut all = vec!["-v", "VERBOSITY=verbose"];
        all.extend_from_slice(args);
        self.pg.psql_args("postgres", &all, None)
    }

    fn conninfo(&self, identity: &str) -> String {
        gateway_conninfo(self.port, identity, "db", "disable")
    }

    fn audit(&self) -> Vec<String> {
        let out = self.gw.cli(&["audit", "export"]);
        assert!(
            out.status.success(),
            "audit export failed:\n{}",
            describe(&out)
        );
        stdout(&out).lines().map(str::to_string).collect()
    }

    /// Polls `audit export` (bounded) until the lines satisfy `pred`; returns them.
    fn wait_audit(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.audit();
            if pred(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no audit event {what} after 10s; audit:\n{}",
                lines.join("\n")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions and small parsers
// ---------------------------------------------------------------------------------------------

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", describe(out));
}

/// No raw sensitive value of the seed anywhere in `text`.
fn assert_no_raw_pii(text: &str, what: &str) {
    for raw in RAW_PII {
        assert!(
            !text.contains(raw),
            "{what}: raw value {raw:?} came through:\n{text}"
        );
    }
    // Card numbers written with other separators, and the digits of the SSNs alone.
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    for raw in ["4111111111111111", "5500000000000004", "123456789"] {
        assert!(
            !digits.contains(raw),
            "{what}: the digits of {raw} came through:\n{text}"
        );
    }
}

fn lines(out: &Output) -> Vec<String> {
    stdout(out).lines().map(str::to_string).collect()
}

/// The value of top-level `"key":` in a compact JSON line: strings unescaped (no `\u`), other
/// values (numbers, null, arrays) as written.
fn field(line: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":");
    let start = line.find(&needle)? + needle.len();
    let rest = &line[start..];
    if let Some(s) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
        None
    } else if rest.starts_with('[') {
        rest.find(']').map(|end| rest[..=end].to_string())
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].to_string())
    }
}

fn kind_is(line: &str, kind: &str) -> bool {
    field(line, "kind").as_deref() == Some(kind)
}

// ---------------------------------------------------------------------------------------------
// psql
// ---------------------------------------------------------------------------------------------

#[test]
fn masked_columns_and_detector_hits_in_psql_results() {
    let env = Env::start();
    let query = "select * from people order by id";

    let masked = env.psql("ci-bot", &["-At", "-c", query]);
    assert_ok(&masked, "ci-bot's select");
    assert_no_raw_pii(&stdout(&masked), "ci-bot's select");
    assert_eq!(
        lines(&masked),
        MASKED_ROWS,
        "ci-bot's rows: ssn/pin columns [redacted], hits [redacted:NAME], the rest untouched"
    );

    let raw = env.psql("alice", &["-At", "-c", query]);
    assert_ok(&raw, "alice's select");
    assert_eq!(lines(&raw), RAW_ROWS, "alice has no mask rule");

    // A masked column stays masked whatever the value's type or an expression around the table.
    let pins = env.psql(
        "ci-bot",
        &["-At", "-c", "select pin, ssn from people where id = 1"],
    );
    assert_ok(&pins, "ci-bot's select pin, ssn");
    assert_eq!(stdout(&pins), "[redacted]|[redacted]\n");
}

#[test]
fn columns_are_masked_by_their_source_table_whatever_the_query_calls_them() {
    let env = Env::start();
    // Renamed columns: RowDescription says `x` and `y`, the catalog says people.ssn / people.pin.
    let aliased = env.psql(
        "ci-bot",
        &[
            "-At",
            "-c",
            "select ssn as x, pin as y, id from people where id = 1",
        ],
    );
    assert_ok(&aliased, "ci-bot's aliased select");
    assert_eq!(stdout(&aliased), "[redacted]|[redacted]|1\n");

    // `public.staff.salary` masks staff's column, renamed or not, and not bonus.salary.
    let query = "select s.salary as pay, b.salary from staff s join bonus b using (id)";
    let joined = env.psql("ci-bot", &["-At", "-c", query]);
    assert_ok(&joined, "ci-bot's join");
    assert_eq!(stdout(&joined), "[redacted]|500\n");
    let raw = env.psql("alice", &["-At", "-c", query]);
    assert_ok(&raw, "alice's join");
    assert_eq!(stdout(&raw), "91000|500\n", "alice has no mask rule");

    // An expression has no source table: a `table.column` glob still matches its label.
    let expr = env.psql("ci-bot", &["-At", "-c", "select 7 as salary"]);
    assert_ok(&expr, "ci-bot's expression");
    assert_eq!(stdout(&expr), "[redacted]\n");
}

#[test]
fn unmasked_sessions_are_byte_for_byte_identical() {
    let env = Env::start();
    let cases: [&[&str]; 5] = [
        &["-At", "-c", "select * from people order by id"],
        // Aligned output with headers, footers and NULLs.
        &[
            "-c",
            "select id, email, note, null::text as nothing from people order by id",
        ],
        &["-At", "-c", "copy people to stdout"],
        &[
            "-At",
            "-c",
            "select 'mail bob.jones@example.net, key AKIAIOSFODNN7EXAMPLE, card 4111 1111 1111 1111'",
        ],
        // An error whose detail carries a value: relayed as the cluster wrote it.
        &[
            "-c",
            "insert into people values (9, 'carol@example.org', '123-45-6789', '', '', 1)",
        ],
    ];
    for args in cases {
        let via = env.psql("alice", args);
        let direct = env.psql_direct(args);
        assert_eq!(
            (via.status.code(), stdout(&via), stderr(&via)),
            (direct.status.code(), stdout(&direct), stderr(&direct)),
            "psql {args:?}: through the gateway as alice vs directly"
        );
    }
    // The error case really produced the unique violation with its raw value.
    let direct = env.psql_direct(cases[4]);
    assert!(
        stderr(&direct).contains("23505") && stderr(&direct).contains("carol@example.org"),
        "expected a raw unique violation directly:\n{}",
        describe(&direct)
    );
}

#[test]
fn unique_violation_detail_is_masked() {
    let env = Env::start();
    let out = env.psql(
        "ci-bot",
        &[
            "-c",
            "insert into people values (9, 'bob.jones@example.net', '123-45-6789', '', 'dup', 1)",
        ],
    );
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("23505"),
        "expected a unique violation (23505):\n{}",
        describe(&out)
    );
    assert!(
        !err.contains("bob.jones@example.net") && err.contains("[redacted:email]"),
        "the unique violation's detail must be masked:\n{}",
        describe(&out)
    );
    assert_eq!(
        env.pg.query_scalar("select count(*) from people"),
        "3",
        "the insert must not have happened"
    );
}

#[test]
fn copy_to_stdout_is_refused_where_columns_are_masked() {
    // COPY output carries no column names, so masked columns (ssn, pin) could not be found in it:
    // the gateway refuses COPY TO for such sessions instead of leaking them.
    let env = Env::start();
    for sql in [
        "copy people to stdout",
        "copy (select ssn, pin from people) to stdout",
    ] {
        let out = env.psql("ci-bot", &["-At", "-v", "VERBOSITY=verbose", "-c", sql]);
        assert!(!out.status.success(), "{sql} ran:\n{}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains("42501")
                && err.contains("COPY TO is not available where columns are masked"),
            "{sql}:\n{}",
            describe(&out)
        );
        let text = stdout(&out);
        assert_no_raw_pii(&text, sql);
        for pin in ["4821", "9930"] {
            assert!(!text.contains(pin), "pin {pin} came through {sql}:\n{text}");
        }
    }
    // alice (no mask rule) copies as usual.
    let out = env.psql("alice", &["-At", "-c", "copy people to stdout"]);
    assert_ok(&out, "alice's copy to stdout");
    assert_eq!(stdout(&out).lines().count(), 3);
}

#[test]
fn copy_to_stdout_is_masked_by_detectors() {
    // carol's rule names no columns, only detectors: COPY TO runs, and its rows are scanned.
    let env = Env::start();
    let out = env.psql("carol", &["-At", "-c", "copy people to stdout"]);
    assert_ok(&out, "carol's copy to stdout");
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    for raw in [
        "alice.smith@example.com",
        "bob.jones@example.net",
        "carol@example.org",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "340000000000009",
        "AKIAIOSFODNN7EXAMPLE",
    ] {
        assert!(!text.contains(raw), "{raw} came through COPY:\n{text}");
    }
    assert!(
        text.contains("[redacted:email]") && text.contains("[redacted:aws_key]"),
        "{text}"
    );
    // Values no detector of hers looks for are untouched (the rule names no columns).
    assert!(
        text.contains("123-45-6789") && text.contains("no personal data here"),
        "{text}"
    );
}

#[test]
fn notification_payload_is_masked() {
    let env = Env::start();
    let script = "listen ch; notify ch, 'contact bob@example.com';";
    let out = env.psql("ci-bot", &["-c", script]);
    assert_ok(&out, "ci-bot's listen/notify");
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("Asynchronous notification \"ch\""))
        .unwrap_or_else(|| panic!("no notification line:\n{}", describe(&out)));
    assert!(
        line.contains("with payload \"contact [redacted:email]\""),
        "payload not masked: {line}"
    );
    assert!(!text.contains("bob@example.com"), "raw payload:\n{text}");

    // alice's identical script gets the raw payload.
    let out = env.psql("alice", &["-c", script]);
    assert_ok(&out, "alice's listen/notify");
    assert!(
        stdout(&out).contains("with payload \"contact bob@example.com\""),
        "alice's payload:\n{}",
        describe(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// A binary-results driver
// ---------------------------------------------------------------------------------------------

/// `python3 tests/python/binary_select.py CONNINFO` with PGPASSWORD: one JSON line per row.
/// Fails (never skips) when python3 or psycopg 3 is missing.
fn binary_select(env: &Env, identity: &str) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/binary_select.py");
    let probe = run_with_timeout(
        Command::new("python3").args(["-c", "import psycopg"]),
        None,
        COMMAND_TIMEOUT,
    );
    assert!(
        probe.status.success(),
        "psycopg 3 is not importable by python3: run .ci/run or \
         `python3 -m pip install \"psycopg[binary]\"`\n{}",
        describe(&probe)
    );
    let token = env.token(identity);
    let mut cmd = Command::new("python3");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGPASSFILE", "/dev/null")
        .env("PGPASSWORD", &token)
        .arg(&script)
        .arg(env.conninfo(identity));
    let out = run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT);
    assert_ok(&out, &format!("binary_select.py as {identity}"));
    let rows = lines(&out);
    assert_eq!(rows.len(), 3, "three rows:\n{}", describe(&out));
    for row in &rows {
        assert_eq!(
            field(row, "formats").as_deref(),
            Some("[1,1,1,1]"),
            "every column must come in binary format: {row}"
        );
    }
    rows
}

#[test]
fn binary_results_are_masked_or_nulled() {
    let env = Env::start();

    let masked = binary_select(&env, "ci-bot");
    assert_no_raw_pii(&masked.join("\n"), "ci-bot's binary select");
    for (row, id) in masked.iter().zip(1..) {
        let f = |k| field(row, k);
        assert_eq!(f("id"), Some(id.to_string()), "id (int4, unmasked): {row}");
        assert_eq!(
            f("email").as_deref(),
            Some("[redacted:email]"),
            "email (text in binary, scanned): {row}"
        );
        assert_eq!(
            f("ssn").as_deref(),
            Some("[redacted]"),
            "ssn (text in binary, masked column): {row}"
        );
        assert_eq!(
            f("pin").as_deref(),
            Some("null"),
            "pin (int4 in binary, masked column) must be NULL: {row}"
        );
    }

    let raw = binary_select(&env, "alice");
    let want = [
        ("1", "alice.smith@example.com", "123-45-6789", "4821"),
        ("2", "bob.jones@example.net", "219-09-9999", "9930"),
        ("3", "carol@example.org", "078-05-1120", "1234"),
    ];
    for (row, (id, email, ssn, pin)) in raw.iter().zip(want) {
        let f = |k| field(row, k);
        assert_eq!(
            (f("id"), f("email"), f("ssn"), f("pin")),
            (
                Some(id.to_string()),
                Some(email.to_string()),
                Some(ssn.to_string()),
                Some(pin.to_string())
            ),
            "alice's raw row: {row}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------------

#[test]
fn audit_keeps_only_masked_values() {
    let env = Env::start();
    let out = env.psql("ci-bot", &["-At", "-c", "select 'x carol@example.org'"]);
    assert_ok(&out, "ci-bot's select with an email literal");
    assert_eq!(stdout(&out), "x [redacted:email]\n");

    let lines = env.wait_audit("statement (select 'x ...')", |lines| {
        lines.iter().any(|l| {
            kind_is(l, "statement") && field(l, "text").is_some_and(|t| t.starts_with("select 'x "))
        })
    });
    let event = lines
        .iter()
        .find(|l| {
            kind_is(l, "statement") && field(l, "text").is_some_and(|t| t.starts_with("select 'x "))
        })
        .map(String::as_str)
        .unwrap_or_default();
    assert_eq!(
        field(event, "text").as_deref(),
        Some("select 'x [redacted:email]'"),
        "the statement event's text must be masked: {event}"
    );
    let all = lines.join("\n");
    assert!(
        !all.contains("carol@example.org"),
        "the raw email is in the audit log:\n{all}"
    );
}
