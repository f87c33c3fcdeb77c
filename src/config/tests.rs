//! Policy parsing and validation: every check with its reported position.

use super::*;
use std::path::PathBuf;
use std::time::Duration;

#[path = "tests_ssh.rs"]
mod ssh;

/// Two lines; snippets appended after it start at line 3.
const GW: &str = "[gateway]\ndata_dir = \"/tmp/portcullis-test\"\n";

/// Lines 3..=7 define a human "alice" and a target "db"; snippets after it start at line 18.
const BASE: &str = r#"[gateway]
data_dir = "/tmp/portcullis-test"
[[identity]]
name = "alice"
roles = ["dba"]
[[target]]
name = "db"
listen = "127.0.0.1:6432"
upstream = "db.internal:5432"
database = "app"
user = "app"
upstream_tls = "disable"
[[rule]]
name = "r0"
who = ["alice"]
action = "allow"

"#;

fn src() -> &'static Path {
    Path::new("/etc/portcullis/policy.toml")
}

fn ok(text: &str) -> Policy {
    match parse(text, src()) {
        Ok(p) => p,
        Err(e) => panic!("expected the policy to parse:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, src()) {
        Ok(_) => panic!("expected problems, the policy parsed:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// Asserts that parsing `text` reports exactly one problem, at `line:col`, containing `needle`.
#[track_caller]
fn one_problem(text: &str, line: usize, col: usize, needle: &str) {
    let ps = problems(text);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!((ps[0].line, ps[0].col), (line, col), "{:?}", ps[0].message);
    assert!(
        ps[0].message.contains(needle),
        "{:?} does not contain {needle:?}",
        ps[0].message
    );
}

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

#[cfg(unix)]
fn write_file(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::write(path, "secret\n")
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
    {
        panic!("cannot write {}: {e}", path.display());
    }
}

#[test]
fn example_policy_parses_with_documented_values() {
    let p = ok(include_str!("../../policy.example.toml"));
    assert_eq!(
        p.gateway.data_dir,
        Path::new("/etc/portcullis/./portcullis-data")
    );
    assert_eq!(
        p.gateway.public_url.as_deref(),
        Some("http://127.0.0.1:8443")
    );
    assert_eq!(p.gateway.max_message_size, 64 << 20);
    assert_eq!(p.gateway.audit_flush_interval, Duration::from_millis(200));
    assert_eq!(p.gateway.idle_timeout, None);
    assert_eq!(p.identities.len(), 2);
    let ci = p
        .identity("ci-nightly")
        .unwrap_or_else(|| panic!("ci-nightly"));
    assert_eq!(ci.kind, IdentityKind::Service);
    assert_eq!(ci.owner.as_deref(), Some("alice"));
    assert_eq!(ci.max_ttl, Some(Duration::from_secs(900)));
    let t = p.target("app-db").unwrap_or_else(|| panic!("app-db"));
    assert_eq!(
        (t.upstream_host.as_str(), t.upstream_port),
        ("127.0.0.1", 5432)
    );
    assert_eq!(t.secret, SecretSource::None);
    assert_eq!(t.upstream_tls, UpstreamTls::Disable);
    assert!(!t.require_tls && t.tls.is_none());
    assert_eq!(t.default, Action::Block);
    assert!(t.read_only_for.is_empty());
    let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "reads",
            "writes-need-a-dba",
            "no-mass-delete",
            "dba-all",
            "no-schema-changes-from-ci"
        ]
    );
    let approve = &p.rules[1];
    assert_eq!(approve.approvers, vec![Who::Role("dba".into())]);
    assert_eq!(approve.timeout, Duration::from_secs(600));
    assert_eq!((approve.approvals, approve.grant), (1, None));
    let http = p.gateway.http.as_ref().unwrap_or_else(|| panic!("http"));
    assert_eq!(http.listen.to_string(), "127.0.0.1:8443");
    assert!(http.tls.is_none() && !http.allow_plain_http);
    assert!(p.gateway.webhooks.is_empty());
    assert_eq!(p.rules[2].flags, crate::policy::kinds::Flags::NO_WHERE);
    let m = &p.masks[0];
    assert_eq!(p.masks.len(), 1);
    assert_eq!(
        (m.targets.as_slice(), m.who.as_slice()),
        (&["app-db".to_owned()][..], &[Who::Role("ci".into())][..])
    );
    assert_eq!(m.columns, ["*.email", "users.ssn", "*password*"]);
    assert_eq!(m.detectors, ["email", "card", "aws_key"]);
    assert_eq!(
        m.custom,
        [("employee_id".to_owned(), "EMP-[0-9]{6}".to_owned())]
    );
    assert_eq!(m.strategy, crate::mask::Strategy::Partial { keep: 4 });
}

#[test]
fn example_commented_match_rule_parses_when_uncommented() {
    let text = include_str!("../../policy.example.toml");
    let start = text
        .find("# [[rule]]\n# name = \"no-sleeping\"")
        .unwrap_or_else(|| panic!("block"));
    let end = start + text[start..].find("\n\n").unwrap_or_else(|| panic!("end"));
    let block: String = text[start..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let p = ok(&format!("{}{}{}", &text[..start], block, &text[end..]));
    let rule = p
        .rules
        .iter()
        .find(|r| r.name == "no-sleeping")
        .unwrap_or_else(|| panic!("rule"));
    let (src, re) = rule.pattern.as_ref().unwrap_or_else(|| panic!("pattern"));
    assert_eq!(src, r"(?i)\bpg_sleep\s*\(");
    assert!(re.is_match("select PG_SLEEP(1)"));
}

#[test]
fn defaults_fill_every_optional_gateway_key() {
    let p = ok(GW);
    let g = &p.gateway;
    assert_eq!(g.data_dir, Path::new("/tmp/portcullis-test"));
    assert_eq!(g.max_connections, 1024);
    assert_eq!(g.handshake_timeout, Duration::from_secs(10));
    assert_eq!(g.upstream_timeout, Duration::from_secs(10));
    assert_eq!(g.max_message_size, 64 << 20);
    assert_eq!(g.max_token_ttl, Duration::from_secs(86_400));
    assert_eq!(g.audit_flush_interval, Duration::from_millis(200));
    assert_eq!(g.audit_queue, 65_536);
    assert_eq!(g.tcp_keepalive, Some(Duration::from_secs(60)));
    assert_eq!(g.audit_retention, None);
    assert_eq!(g.relay_busy_poll_us, 0);
    assert_eq!(g.public_url, None);
    assert_eq!(p.source, src());
}

#[test]
fn relative_data_dir_is_relative_to_the_policy_file() {
    let p = ok("[gateway]\ndata_dir = \"state\"\n");
    assert_eq!(p.gateway.data_dir, Path::new("/etc/portcullis/state"));
}

#[test]
fn rejects_unknown_key_naming_it_and_the_valid_keys() {
    one_problem(
        &format!("{GW}max_conections = 5\n"),
        3,
        1,
        "unknown key `max_conections`",
    );
    let ps = problems(&format!("{GW}[[identity]]\nname = \"a\"\n  rolez = []\n"));
    assert_eq!((ps[0].line, ps[0].col), (5, 3));
    assert!(ps[0].message.contains("`roles`"), "{}", ps[0].message);
}

#[test]
fn rejects_unknown_top_level_table() {
    one_problem(
        &format!("{GW}[[targets]]\nname = \"x\"\n"),
        3,
        3,
        "unknown key `targets`",
    );
}

#[test]
fn reports_syntax_error_position() {
    one_problem(&format!("{GW}max_connections = = 5\n"), 3, 19, "");
    let ps = problems("[gateway\ndata_dir = \"x\"\n");
    assert_eq!((ps[0].line, ps[0].col), (1, 9), "{ps:?}");
}

#[test]
fn reports_wrong_value_type_at_the_value() {
    one_problem(
        &format!("{GW}max_connections = \"many\"\n"),
        3,
        19,
        "invalid type",
    );
    one_problem(
        &format!("{GW}handshake_timeout = 10\n"),
        3,
        21,
        "quote the value",
    );
}

#[test]
fn rejects_bad_duration_at_the_value() {
    one_problem(
        &format!("{GW}handshake_timeout = \"10 seconds\"\n"),
        3,
        21,
        "is not a duration",
    );
    one_problem(
        &format!("{GW}upstream_timeout = \"0s\"\n"),
        3,
        20,
        "longer than zero",
    );
    assert_eq!(
        ok(&format!("{GW}audit_flush_interval = \"0ms\"\n"))
            .gateway
            .audit_flush_interval,
        Duration::ZERO
    );
    assert_eq!(
        ok(&format!("{GW}idle_timeout = \"1h30m\"\n"))
            .gateway
            .idle_timeout,
        Some(Duration::from_secs(5400))
    );
}

#[test]
fn parses_and_rejects_sizes() {
    assert_eq!(
        ok(&format!("{GW}max_message_size = \"512KiB\"\n"))
            .gateway
            .max_message_size,
        512 << 10
    );
    assert_eq!(
        ok(&format!("{GW}max_message_size = 100000\n"))
            .gateway
            .max_message_size,
        100_000
    );
    one_problem(
        &format!("{GW}max_message_size = \"64MB\"\n"),
        3,
        20,
        "\"64MiB\"",
    );
    one_problem(&format!("{GW}max_message_size = \"2GiB\"\n"), 3, 20, "1GiB");
    one_problem(
        &format!("{GW}max_message_size = 0\n"),
        3,
        20,
        "between 1 byte",
    );
}

#[test]
fn rejects_missing_gateway_and_data_dir() {
    one_problem("", 1, 1, "[gateway] table is missing");
    one_problem(
        "[gateway]\npublic_url = \"https://x\"\n",
        1,
        1,
        "missing `data_dir`",
    );
    one_problem(
        "[gateway]\ndata_dir = \"/x\"\npublic_url = \"ftp://x\"\n",
        3,
        14,
        "http(s) URL",
    );
    one_problem(
        "[gateway]\ndata_dir = \"/x\"\nmax_connections = 0\n",
        3,
        19,
        "between 1 and",
    );
    one_problem(
        "[gateway]\ndata_dir = \"/x\"\naudit_queue = 0\n",
        3,
        15,
        "`audit_queue` must be a number of events between 1 and 1048576",
    );
    one_problem(
        "[gateway]\ndata_dir = \"/x\"\naudit_queue = 2000000\n",
        3,
        15,
        "between 1 and 1048576",
    );
}

#[test]
fn tcp_keepalive_takes_a_duration_and_zero_turns_it_off() {
    let p = ok(&format!("{GW}tcp_keepalive = \"2m\"\n"));
    assert_eq!(p.gateway.tcp_keepalive, Some(Duration::from_secs(120)));
    let p = ok(&format!("{GW}tcp_keepalive = \"0s\"\n"));
    assert_eq!(p.gateway.tcp_keepalive, None);
    one_problem(
        "[gateway]\ndata_dir = \"/x\"\ntcp_keepalive = \"10h\"\n",
        3,
        17,
        "`tcp_keepalive` must be at most \"32767s\"",
    );
    one_problem(
        "[gateway]\ndata_dir = \"/x\"\ntcp_keepalive = \"soon\"\n",
        3,
        17,
        "`tcp_keepalive` = \"soon\" is not a duration",
    );
}

#[test]
fn audit_retention_is_at_least_an_hour() {
    let p = ok(&format!("{GW}audit_retention = \"90d\"\n"));
    assert_eq!(
        p.gateway.audit_retention,
        Some(Duration::from_secs(90 * 86_400))
    );
    let p = ok(&format!("{GW}audit_retention = \"1h\"\n"));
    assert_eq!(p.gateway.audit_retention, Some(Duration::from_secs(3600)));
    one_problem(
        "[gateway]\ndata_dir = \"/x\"\naudit_retention = \"1s\"\n",
        3,
        19,
        "`audit_retention` must be at least 1h",
    );
    one_problem(
        "[gateway]\ndata_dir = \"/x\"\naudit_retention = \"0s\"\n",
        3,
        19,
        "`audit_retention` must be longer than zero",
    );
}

#[test]
fn relay_busy_poll_is_off_by_default_and_at_most_a_millisecond() {
    let p = ok(&format!("{GW}relay_busy_poll_us = 50\n"));
    assert_eq!(p.gateway.relay_busy_poll_us, 50);
    let p = ok(&format!("{GW}relay_busy_poll_us = 0\n"));
    assert_eq!(p.gateway.relay_busy_poll_us, 0);
    let p = ok(&format!("{GW}relay_busy_poll_us = 1000\n"));
    assert_eq!(p.gateway.relay_busy_poll_us, 1000);
    for bad in ["1001", "-1", "5000000000"] {
        one_problem(
            &format!("[gateway]\ndata_dir = \"/x\"\nrelay_busy_poll_us = {bad}\n"),
            3,
            22,
            "`relay_busy_poll_us` must be a number of microseconds between 0 (off) and 1000",
        );
    }
}

#[test]
fn audit_queue_sets_how_many_events_may_wait_for_the_writer() {
    let p = ok(&format!("{GW}audit_queue = 1024\n"));
    assert_eq!(p.gateway.audit_queue, 1024);
}

#[test]
fn collects_every_problem_not_only_the_first() {
    let text = format!(
        "{GW}handshake_timeout = \"x\"\nupstream_timeout = \"y\"\n[[identity]]\nname = \"bad name\"\n"
    );
    let ps = problems(&text);
    let at: Vec<(usize, usize)> = ps.iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(at, [(3, 21), (4, 20), (6, 8)], "{ps:#?}");
}

#[test]
fn display_prints_path_line_col_per_problem() {
    let text = format!("{GW}handshake_timeout = \"x\"\nupstream_timeout = \"y\"\n");
    let e = match parse(&text, src()) {
        Err(e) => e,
        Ok(_) => panic!("parsed"),
    };
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(lines[0].starts_with("/etc/portcullis/policy.toml:3:21: `handshake_timeout` = \"x\" is not a duration; write e.g."), "{shown}");
    assert!(
        lines[1].starts_with("/etc/portcullis/policy.toml:4:20: "),
        "{shown}"
    );
}

#[test]
fn caps_the_number_of_problems_shown() {
    let mut text = GW.to_owned();
    for i in 0..60 {
        text.push_str(&format!(
            "[[identity]]\nname = \"a\"\nroles = [\"bad role {i}\"]\n"
        ));
    }
    let e = match parse(&text, src()) {
        Err(e) => e,
        Ok(_) => panic!("parsed"),
    };
    assert_eq!(e.problems().len(), MAX_PROBLEMS);
    assert!(e
        .to_string()
        .ends_with("more problem(s) not shown; fix the ones above first"));
}

#[test]
fn load_reports_unreadable_file_without_position() {
    let e = match load(Path::new("/nonexistent/portcullis.toml")) {
        Err(e) => e,
        Ok(_) => panic!("loaded"),
    };
    assert_eq!((e.problems()[0].line, e.problems()[0].col), (0, 0));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/portcullis.toml: cannot read the policy file"));
}

#[test]
fn load_reads_and_parses_a_file() {
    let dir = temp_dir("load");
    let path = dir.join("policy.toml");
    if let Err(e) = std::fs::write(&path, "[gateway]\ndata_dir = \"data\"\n") {
        panic!("{e}");
    }
    let p = match load(&path) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(p.gateway.data_dir, dir.join("data"));
    assert_eq!(p.source, path);
}

// --- identities ---

#[test]
fn rejects_duplicate_and_malformed_names() {
    one_problem(
        &format!("{GW}[[identity]]\nname = \"a\"\n[[identity]]\nname = \"a\"\n"),
        6,
        8,
        "defined twice",
    );
    one_problem(&format!("{GW}[[identity]]\nname = \"\"\n"), 4, 8, "empty");
    one_problem(
        &format!("{GW}[[identity]]\nname = \"a b\"\n"),
        4,
        8,
        "characters other than",
    );
    one_problem(
        &format!("{GW}[[identity]]\nname = \"{}\"\n", "x".repeat(64)),
        4,
        8,
        "63 bytes",
    );
    one_problem(
        &format!("{GW}[[identity]]\nroles = []\n"),
        3,
        1,
        "missing `name`",
    );
    one_problem(
        &format!("{GW}[[identity]]\nname = \"a\"\nroles = [\"role:dba\"]\n"),
        5,
        10,
        "bare role name",
    );
    one_problem(
        &format!("{GW}[[identity]]\nname = \"a\"\nkind = \"robot\"\n"),
        5,
        8,
        "\"human\" or \"service\"",
    );
}

#[test]
fn service_identity_needs_a_human_owner_and_max_ttl() {
    let ps = problems(&format!(
        "{GW}[[identity]]\nname = \"svc\"\nkind = \"service\"\n"
    ));
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert!(ps.iter().all(|p| (p.line, p.col) == (3, 1)));
    assert!(ps[0].message.contains("needs an `owner`"));
    assert!(ps[1].message.contains("needs `max_ttl`"));

    let svc = "[[identity]]\nname = \"svc\"\nkind = \"service\"\nmax_ttl = \"15m\"\n";
    // An owner missing from the file has left: valid, but the service is disabled.
    let p = ok(&format!("{GW}{svc}owner = \"nobody\"\n"));
    assert!(p.active_identity("svc").is_none());
    assert_eq!(p.orphaned_services().len(), 1);
    // The owner may not be a service itself, and may be defined after the service.
    one_problem(
        &format!("{GW}{svc}owner = \"svc2\"\n[[identity]]\nname = \"svc2\"\nkind = \"service\"\nowner = \"bob\"\nmax_ttl = \"1m\"\n[[identity]]\nname = \"bob\"\n"),
        7,
        9,
        "not a human identity",
    );
    let p = ok(&format!(
        "{GW}{svc}owner = \"bob\"\n[[identity]]\nname = \"bob\"\n"
    ));
    assert_eq!(p.identities[0].owner.as_deref(), Some("bob"));
    one_problem(
        &format!("{GW}[[identity]]\nname = \"svc\"\nkind = \"service\"\nowner = \"bob\"\nmax_ttl = \"2d\"\n[[identity]]\nname = \"bob\"\n"),
        7,
        11,
        "longer than the gateway's `max_token_ttl`",
    );
}

#[test]
fn human_identity_may_not_have_an_owner() {
    one_problem(
        &format!("{GW}[[identity]]\nname = \"a\"\n[[identity]]\nname = \"b\"\nowner = \"a\"\n"),
        7,
        9,
        "human identity has no `owner`",
    );
}

// --- targets ---

/// A target "t" at lines 3.., with `extra` lines appended from line 9.
fn target(extra: &str) -> String {
    format!("{GW}[[target]]\nname = \"t\"\nlisten = \"127.0.0.1:7000\"\nupstream = \"h:5432\"\ndatabase = \"d\"\nuser = \"u\"\n{extra}")
}

#[test]
fn target_defaults() {
    let p = ok(&target(""));
    let t = &p.targets[0];
    assert_eq!(t.kind, TargetKind::Postgres);
    assert_eq!(t.upstream_tls, UpstreamTls::Require);
    assert_eq!(t.default, Action::Block);
    assert_eq!(t.secret, SecretSource::None);
    assert!(!t.read_only && !t.require_tls && t.read_only_for.is_empty());
}

#[test]
fn rejects_missing_target_keys_all_at_once() {
    let ps = problems(&format!("{GW}[[target]]\nname = \"t\"\n"));
    let keys: Vec<bool> = ["listen", "upstream", "database", "user"]
        .iter()
        .zip(&ps)
        .map(|(k, p)| p.message.contains(&format!("missing `{k}`")) && (p.line, p.col) == (3, 1))
        .collect();
    assert_eq!(keys, [true; 4], "{ps:#?}");
}

#[test]
fn rejects_bad_listen_and_shared_listen() {
    one_problem(
        &format!("{GW}[[target]]\nname = \"t\"\nlisten = \"localhost:7000\"\nupstream = \"h:1\"\ndatabase = \"d\"\nuser = \"u\"\n"),
        5,
        10,
        "not an IP address and port",
    );
    let two = format!(
        "{}[[target]]\nname = \"t2\"\nlisten = \"0.0.0.0:7000\"\nupstream = \"h:1\"\ndatabase = \"d\"\nuser = \"u\"\n",
        target("")
    );
    one_problem(&two, 11, 10, "already used by target \"t\"");
    // Port 0 ("any free port") is refused: clients need a fixed port.
    let zero = target("").replace(":7000", ":0");
    one_problem(&zero, 5, 10, "listen port 0 is not allowed");
}

#[test]
fn parses_upstream_host_port_forms() {
    use super::validate::parse_host_port;
    assert_eq!(
        parse_host_port("db.internal:5432"),
        Ok(("db.internal".into(), 5432))
    );
    assert_eq!(
        parse_host_port("10.0.0.1:5432"),
        Ok(("10.0.0.1".into(), 5432))
    );
    assert_eq!(parse_host_port("[::1]:5432"), Ok(("::1".into(), 5432)));
    for bad in [
        "db", ":5432", "db:", "db:0", "db:65536", "db:+5", "::1:5432", "[::1]", "[nope]:1", "a b:1",
    ] {
        assert!(parse_host_port(bad).is_err(), "{bad}");
    }
    let p = ok(&target("").replace("h:5432", "[fd00::5]:6543"));
    assert_eq!(
        (
            p.targets[0].upstream_host.as_str(),
            p.targets[0].upstream_port
        ),
        ("fd00::5", 6543)
    );
    one_problem(&target("").replace("h:5432", "::1:5432"), 6, 12, "brackets");
}

#[test]
fn rejects_empty_database_and_user() {
    let ps = problems(&target("").replace("\"d\"", "\"\"").replace("\"u\"", "\"\""));
    let at: Vec<(usize, usize)> = ps.iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(at, [(7, 12), (8, 8)], "{ps:#?}");
}

#[test]
fn password_file_and_env_are_mutually_exclusive() {
    one_problem(
        &target("password_file = \"/x\"\npassword_env = \"PW\"\n"),
        10,
        16,
        "keep only one",
    );
    let p = ok(&target("password_env = \"APP_PW\"\n"));
    assert_eq!(p.targets[0].secret, SecretSource::Env("APP_PW".into()));
    one_problem(
        &target("password_env = \"1PW\"\n"),
        9,
        16,
        "environment variable name",
    );
}

#[cfg(unix)]
#[test]
fn password_file_must_exist_and_be_private() {
    let dir = temp_dir("secret");
    let source = dir.join("policy.toml");
    let text = target("password_file = \"secret\"\n");

    let e = match parse(&text, &source) {
        Err(e) => e,
        Ok(_) => panic!("missing file accepted"),
    };
    assert_eq!((e.problems()[0].line, e.problems()[0].col), (9, 17));
    assert!(e.problems()[0].message.contains("cannot use"), "{e}");

    write_file(&dir.join("secret"), 0o644);
    let e = match parse(&text, &source) {
        Err(e) => e,
        Ok(_) => panic!("group-readable file accepted"),
    };
    let expected = format!("run `chmod 600 {}`", dir.join("secret").display());
    assert!(e.problems()[0].message.contains(&expected), "{e}");
    assert!(e.problems()[0].message.contains("mode 644"), "{e}");

    write_file(&dir.join("secret"), 0o600);
    let p = match parse(&text, &source) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(p.targets[0].secret, SecretSource::File(dir.join("secret")));
}

#[test]
fn rejects_bad_upstream_tls_and_misplaced_ca() {
    one_problem(
        &target("upstream_tls = \"prefer\"\n"),
        9,
        16,
        "\"disable\", \"require\" or \"verify-full\"",
    );
    one_problem(
        &target("upstream_tls = \"require\"\nupstream_ca = \"/etc/ssl/ca.pem\"\n"),
        10,
        15,
        "only used with `upstream_tls = \"verify-full\"`",
    );
    let p = ok(&target("upstream_tls = \"verify-full\"\n"));
    assert_eq!(p.targets[0].upstream_tls, UpstreamTls::VerifyFull);
    assert_eq!(p.targets[0].upstream_ca, None);
}

#[cfg(unix)]
#[test]
fn tls_files_must_exist_and_require_tls_follows() {
    let dir = temp_dir("tls");
    let source = dir.join("policy.toml");
    let with_tls = target("tls = { cert = \"cert.pem\", key = \"key.pem\" }\n");
    let ps = match parse(&with_tls, &source) {
        Err(e) => e.problems().to_vec(),
        Ok(_) => panic!("missing tls files accepted"),
    };
    let at: Vec<(usize, usize)> = ps.iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(at, [(9, 16), (9, 34)], "{ps:#?}");

    write_file(&dir.join("cert.pem"), 0o644);
    write_file(&dir.join("key.pem"), 0o600);
    write_file(&dir.join("ca.pem"), 0o644);
    let p = match parse(&with_tls, &source) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let t = &p.targets[0];
    assert!(t.require_tls, "require_tls defaults to true with tls");
    let files = t.tls.as_ref().unwrap_or_else(|| panic!("tls"));
    assert_eq!(
        (files.cert.clone(), files.key.clone()),
        (dir.join("cert.pem"), dir.join("key.pem"))
    );

    let optional = format!(
        "{with_tls}require_tls = false\nupstream_tls = \"verify-full\"\nupstream_ca = \"ca.pem\"\n"
    );
    let p = match parse(&optional, &source) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert!(!p.targets[0].require_tls);
    assert_eq!(p.targets[0].upstream_ca, Some(dir.join("ca.pem")));

    let ps = match parse(
        &target("tls = { cert = \"/\", key = \"key.pem\" }\n"),
        &source,
    ) {
        Err(e) => e.problems().to_vec(),
        Ok(_) => panic!("a directory accepted as a certificate"),
    };
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!((ps[0].line, ps[0].col), (9, 16));
    assert!(ps[0].message.contains("not a regular file"));
}

#[test]
fn require_tls_without_tls_is_an_error() {
    one_problem(&target("require_tls = true\n"), 9, 15, "needs `tls =");
    assert!(!ok(&target("require_tls = false\n")).targets[0].require_tls);
}

#[test]
fn rejects_bad_default_and_read_only_for() {
    one_problem(
        &target("default = \"deny\"\n"),
        9,
        11,
        "\"allow\", \"approve\" or \"block\"",
    );
    one_problem(
        &target("read_only_for = [\"*\", \"nobody\"]\n"),
        9,
        23,
        "not a defined identity",
    );
    let p = ok(&target(
        "default = \"approve\"\nread_only = true\nread_only_for = [\"*\", \"role:x\"]\n",
    ));
    let t = &p.targets[0];
    assert_eq!(t.default, Action::Approve);
    assert!(t.read_only);
    assert_eq!(t.read_only_for, vec![Who::Anyone, Who::Role("x".into())]);
}

#[test]
fn upstream_pool_is_off_by_default_and_bounded() {
    assert_eq!(ok(&target("")).targets[0].upstream_pool, 0);
    assert_eq!(
        ok(&target("upstream_pool = 16\n")).targets[0].upstream_pool,
        16
    );
    assert_eq!(
        ok(&target("upstream_pool = 0\n")).targets[0].upstream_pool,
        0
    );
    one_problem(
        &target("upstream_pool = 1025\n"),
        9,
        17,
        "`upstream_pool` must be between 0 (off) and 1024",
    );
    one_problem(
        &target("upstream_pool = -1\n"),
        9,
        17,
        "`upstream_pool` must be between 0 (off) and 1024",
    );
}

#[test]
fn upstream_pool_idle_defaults_to_a_minute_and_is_bounded() {
    let minute = std::time::Duration::from_secs(60);
    assert_eq!(ok(&target("")).targets[0].upstream_pool_idle, minute);
    assert_eq!(
        ok(&target("upstream_pool = 4\nupstream_pool_idle = \"10m\"\n")).targets[0]
            .upstream_pool_idle,
        10 * minute
    );
    one_problem(
        &target("upstream_pool_idle = \"25h\"\n"),
        9,
        22,
        "`upstream_pool_idle` must be at most \"24h\"",
    );
    one_problem(
        &target("upstream_pool_idle = \"0s\"\n"),
        9,
        22,
        "`upstream_pool_idle` must be longer than zero",
    );
    one_problem(
        &target("upstream_pool_idle = \"soon\"\n"),
        9,
        22,
        "is not a duration",
    );
}

#[test]
fn upstream_pool_lifetime_defaults_to_an_hour_and_is_bounded() {
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(ok(&target("")).targets[0].upstream_pool_lifetime, hour);
    assert_eq!(
        ok(&target("upstream_pool_lifetime = \"15m\"\n")).targets[0].upstream_pool_lifetime,
        hour / 4
    );
    one_problem(
        &target("upstream_pool_lifetime = \"2d\"\n"),
        9,
        26,
        "`upstream_pool_lifetime` must be at most \"24h\"",
    );
    one_problem(
        &target("upstream_pool_lifetime = \"0s\"\n"),
        9,
        26,
        "`upstream_pool_lifetime` must be longer than zero",
    );
}

#[test]
fn rejects_unsupported_target_kind() {
    one_problem(
        &target("kind = \"mysql\"\n"),
        9,
        8,
        "use \"postgres\" or \"ssh\"",
    );
}

// --- rules ---

#[test]
fn rule_defaults_and_normalized_globs() {
    let p = ok(&format!(
        "{BASE}[[rule]]\nname = \"r\"\nwho = [\"*\", \"alice\", \"role:ops\"]\ntargets = [\"db\"]\nsql = [\"select\", \"select\", \"copy_to\"]\ntables = [\"Public.Users\", '\"Mixed\".T*']\nflags = [\"no_where\", \"locking_read\"]\naction = \"approve\"\napprovers = [\"role:dba\"]\n"
    ));
    let r = &p.rules[1];
    assert_eq!(
        r.who,
        vec![
            Who::Anyone,
            Who::Identity("alice".into()),
            Who::Role("ops".into())
        ]
    );
    assert_eq!(r.targets, ["db"]);
    assert_eq!(
        r.sql,
        [
            crate::policy::kinds::StmtKind::Select,
            crate::policy::kinds::StmtKind::CopyTo
        ]
    );
    assert_eq!(r.tables, ["public.users", "Mixed.t*"]);
    use crate::policy::kinds::Flags;
    assert_eq!(r.flags, Flags::NO_WHERE.union(Flags::LOCKING_READ));
    assert_eq!(r.timeout, Duration::from_secs(600));
    assert_eq!(r.message, None);
    assert!(r.pattern.is_none());
}

#[test]
fn rejects_rule_without_who_or_action() {
    let ps = problems(&format!("{BASE}[[rule]]\nname = \"r\"\n"));
    let at: Vec<(usize, usize)> = ps.iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(at, [(18, 1), (18, 1)], "{ps:#?}");
    assert!(ps[0].message.contains("missing `who`"));
    assert!(ps[1].message.contains("missing `action`"));
    one_problem(
        &format!("{BASE}[[rule]]\nname = \"r\"\nwho = []\naction = \"allow\"\n"),
        20,
        7,
        "`who` is empty",
    );
}

#[test]
fn rejects_unknown_identity_and_target_in_rule() {
    let ps = problems(&format!(
        "{BASE}[[rule]]\nname = \"r\"\ntargets = [\"db\", \"dbx\"]\nwho = [\"alice\", \"alcie\", \"role:\"]\naction = \"allow\"\n"
    ));
    let at: Vec<(usize, usize)> = ps.iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(at, [(20, 18), (21, 17), (21, 26)], "{ps:#?}");
    assert!(ps[0].message.contains("not a defined [[target]]"));
    assert!(ps[1]
        .message
        .contains("\"alcie\" is not a defined identity"));
    assert!(ps[2].message.contains("role:NAME"));
}

#[test]
fn rejects_duplicate_and_reserved_rule_names() {
    one_problem(
        &format!("{BASE}[[rule]]\nname = \"r0\"\nwho = [\"*\"]\naction = \"allow\"\n"),
        19,
        8,
        "defined twice",
    );
    one_problem(
        &format!("{BASE}[[rule]]\nname = \"read_only\"\nwho = [\"*\"]\naction = \"allow\"\n"),
        19,
        8,
        "reserved",
    );
}

#[test]
fn rejects_unknown_sql_kind_listing_valid_ones() {
    one_problem(
        &format!("{BASE}[[rule]]\nname = \"r\"\nwho = [\"*\"]\nsql = [\"select\", \"selcet\"]\naction = \"allow\"\n"),
        21,
        18,
        "valid kinds: select, insert,",
    );
}

#[test]
fn rejects_unknown_flag_listing_valid_ones() {
    one_problem(
        &format!("{BASE}[[rule]]\nname = \"r\"\nwho = [\"*\"]\nflags = [\"nowhere\"]\naction = \"block\"\n"),
        21,
        10,
        "valid flags: no_where,",
    );
}

#[test]
fn rejects_bad_regex_with_the_regex_error() {
    one_problem(
        &format!("{BASE}[[rule]]\nname = \"r\"\nwho = [\"*\"]\nmatch = 'pg_sleep('\naction = \"block\"\n"),
        21,
        9,
        "not a valid regular expression",
    );
}

#[test]
fn rejects_bad_table_globs() {
    let ps = problems(&format!(
        "{BASE}[[rule]]\nname = \"r\"\nwho = [\"*\"]\ntables = [\"\", \"a b\", '\"open', \"ok.*\"]\naction = \"block\"\n"
    ));
    let at: Vec<(usize, usize)> = ps.iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(at, [(21, 11), (21, 15), (21, 22)], "{ps:#?}");
    assert!(ps[0].message.contains("is empty"));
    assert!(ps[2].message.contains("unclosed"));
}

#[test]
fn approvers_and_timeout_only_with_approve() {
    let rule = "[[rule]]\nname = \"r\"\nwho = [\"*\"]\n";
    one_problem(
        &format!("{BASE}{rule}action = \"approve\"\n"),
        18,
        1,
        "no `approvers`",
    );
    one_problem(
        &format!("{BASE}{rule}action = \"block\"\napprovers = [\"alice\"]\n"),
        22,
        13,
        "only used with `action = \"approve\"`",
    );
    one_problem(
        &format!("{BASE}{rule}action = \"allow\"\ntimeout = \"5m\"\n"),
        22,
        11,
        "only used with `action = \"approve\"`",
    );
    one_problem(
        &format!("{BASE}{rule}action = \"approve\"\napprovers = [\"ghost\"]\n"),
        22,
        14,
        "not a defined identity",
    );
    one_problem(
        &format!("{BASE}{rule}action = \"approve\"\napprovers = [\"alice\"]\ntimeout = \"soon\"\n"),
        23,
        11,
        "not a duration",
    );
    one_problem(
        &format!("{BASE}{rule}action = \"maybe\"\n"),
        21,
        10,
        "not an action",
    );
    let p = ok(&format!("{BASE}{rule}action = \"approve\"\napprovers = [\"alice\"]\ntimeout = \"30s\"\nmessage = \"wait\"\n"));
    assert_eq!(p.rules[1].timeout, Duration::from_secs(30));
    assert_eq!(p.rules[1].message.as_deref(), Some("wait"));
}

#[test]
fn column_counts_characters_not_bytes() {
    one_problem(&format!("{GW}[[identity]]\nname = \"éé\" x\n"), 4, 13, "");
}

#[test]
fn wrong_table_shape_is_reported_in_policy_terms() {
    for text in [
        "[[gateway]]\ndata_dir = \"/x\"\n",
        &format!("{GW}[identity]\nname = \"a\"\n"),
    ] {
        let ps = problems(text);
        assert!(ps[0].message.contains("write [gateway] once"), "{ps:#?}");
    }
    let ps = problems("gateway = 5\n");
    assert!(ps[0].message.contains("expected a table"), "{ps:#?}");
    let ps = problems(&format!("{GW}max_connections = 1.5\n"));
    assert!(ps[0].message.contains("expected an integer"), "{ps:#?}");
}

#[test]
fn a_bad_target_is_reported_once_not_at_each_rule() {
    let text = format!(
        "{GW}[[target]]\nname = \"t\"\n[[rule]]\nname = \"r\"\ntargets = [\"t\"]\nwho = [\"*\"]\naction = \"allow\"\n"
    );
    let ps = problems(&text);
    assert!(ps.iter().all(|p| (p.line, p.col) == (3, 1)), "{ps:#?}");
}

#[test]
fn approvals_and_grant_default_and_parse() {
    let rule =
        "[[rule]]\nname = \"r\"\nwho = [\"*\"]\naction = \"approve\"\napprovers = [\"alice\"]\n";
    let p = ok(&format!("{BASE}{rule}"));
    assert_eq!((p.rules[1].approvals, p.rules[1].grant), (1, None));
    let p = ok(&format!("{BASE}{rule}approvals = 2\ngrant = \"15m\"\n"));
    assert_eq!(p.rules[1].approvals, 2);
    assert_eq!(p.rules[1].grant, Some(Duration::from_secs(900)));
    let p = ok(&format!("{BASE}{rule}approvals = 10\n"));
    assert_eq!(p.rules[1].approvals, 10);
    // Rules that don't approve get the neutral values.
    assert_eq!((p.rules[0].approvals, p.rules[0].grant), (1, None));
}

#[test]
fn rejects_approvals_out_of_range_and_on_other_actions() {
    let rule = "[[rule]]\nname = \"r\"\nwho = [\"*\"]\n";
    let approve = format!("{rule}action = \"approve\"\napprovers = [\"alice\"]\n");
    one_problem(
        &format!("{BASE}{approve}approvals = 0\n"),
        23,
        13,
        "`approvals` must be between 1 and 10",
    );
    one_problem(
        &format!("{BASE}{approve}approvals = 11\n"),
        23,
        13,
        "between 1 and 10",
    );
    one_problem(
        &format!("{BASE}{approve}approvals = -1\n"),
        23,
        13,
        "between 1 and 10",
    );
    one_problem(
        &format!("{BASE}{approve}approvals = \"two\"\n"),
        23,
        13,
        "invalid type",
    );
    one_problem(
        &format!("{BASE}{rule}action = \"block\"\napprovals = 2\n"),
        22,
        13,
        "`approvals` is only used with `action = \"approve\"`",
    );
}

#[test]
fn rejects_bad_grant_and_grant_on_other_actions() {
    let rule = "[[rule]]\nname = \"r\"\nwho = [\"*\"]\n";
    let approve = format!("{rule}action = \"approve\"\napprovers = [\"alice\"]\n");
    one_problem(
        &format!("{BASE}{approve}grant = \"a while\"\n"),
        23,
        9,
        "`grant` = \"a while\" is not a duration",
    );
    one_problem(
        &format!("{BASE}{approve}grant = \"0s\"\n"),
        23,
        9,
        "`grant` must be longer than zero",
    );
    one_problem(
        &format!("{BASE}{rule}action = \"allow\"\ngrant = \"15m\"\n"),
        22,
        9,
        "`grant` is only used with `action = \"approve\"`",
    );
}

#[test]
fn http_defaults_off_and_parses_loopback_plain_http() {
    let p = ok(GW);
    assert!(p.gateway.http.is_none() && p.gateway.webhooks.is_empty());
    let p = ok(&format!("{GW}http = {{ listen = \"127.0.0.1:8443\" }}\n"));
    let h = p.gateway.http.unwrap_or_else(|| panic!("http"));
    assert_eq!(
        h.listen,
        "127.0.0.1:8443".parse().unwrap_or_else(|_| panic!())
    );
    assert!(h.tls.is_none() && !h.allow_plain_http);
    let p = ok(&format!("{GW}http = {{ listen = \"[::1]:8443\" }}\n"));
    assert!(p.gateway.http.is_some());
}

#[test]
fn plain_http_off_loopback_needs_allow_plain_http() {
    one_problem(
        &format!("{GW}http = {{ listen = \"0.0.0.0:8443\" }}\n"),
        3,
        19,
        "not a loopback address",
    );
    let ps = problems(&format!("{GW}http = {{ listen = \"10.0.0.5:8443\" }}\n"));
    assert!(
        ps[0].message.contains("allow_plain_http = true") && ps[0].message.contains("tls"),
        "{:?}",
        ps[0].message
    );
    let p = ok(&format!(
        "{GW}http = {{ listen = \"0.0.0.0:8443\", allow_plain_http = true }}\n"
    ));
    let h = p.gateway.http.unwrap_or_else(|| panic!("http"));
    assert!(h.allow_plain_http && h.tls.is_none());
}

#[test]
fn rejects_bad_or_missing_http_listen_and_unknown_http_keys() {
    one_problem(
        &format!("{GW}http = {{ listen = \"localhost:8443\" }}\n"),
        3,
        19,
        "http listen = \"localhost:8443\" is not an IP address and port",
    );
    one_problem(
        &format!("{GW}http = {{ allow_plain_http = true }}\n"),
        3,
        8,
        "`http` is missing `listen`",
    );
    one_problem(
        &format!("{GW}http = {{ listen = \"127.0.0.1:8443\", port = 1 }}\n"),
        3,
        37,
        "unknown key `port`",
    );
    one_problem(
        &format!("{GW}http = {{ listen = \"127.0.0.1:8443\", allow_plain_http = \"yes\" }}\n"),
        3,
        56,
        "invalid type",
    );
}

#[test]
fn http_listen_may_not_share_a_target_port() {
    let text = BASE.replacen(
        "data_dir = \"/tmp/portcullis-test\"\n",
        "data_dir = \"/tmp/portcullis-test\"\nhttp = { listen = \"127.0.0.1:6432\" }\n",
        1,
    );
    one_problem(&text, 3, 19, "already used by target \"db\"");
}

#[cfg(unix)]
#[test]
fn http_tls_files_must_exist_and_allow_any_address() {
    let dir = temp_dir("http-tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    write_file(&cert, 0o644);
    write_file(&key, 0o600);
    let p = ok(&format!(
        "{GW}http = {{ listen = \"0.0.0.0:8443\", tls = {{ cert = {:?}, key = {:?} }} }}\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let h = p.gateway.http.unwrap_or_else(|| panic!("http"));
    let tls = h.tls.unwrap_or_else(|| panic!("tls"));
    assert_eq!((tls.cert, tls.key), (cert.clone(), key.clone()));

    let missing = dir.join("nope.pem");
    let ps = problems(&format!(
        "{GW}http = {{ listen = \"0.0.0.0:8443\", tls = {{ cert = {:?}, key = {:?} }} }}\n",
        missing.display().to_string(),
        key.display().to_string()
    ));
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!((ps[0].line, ps[0].col), (3, 50));
    assert!(
        ps[0].message.contains("`http.tls.cert`: cannot use"),
        "{}",
        ps[0].message
    );
    one_problem(
        &format!(
            "{GW}http = {{ listen = \"0.0.0.0:8443\", tls = {{ cert = {:?} }} }}\n",
            cert.display().to_string()
        ),
        3,
        41,
        "`http.tls` is missing `key`",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn webhooks_parse_as_https_urls() {
    let p = ok(&format!(
        "{GW}webhooks = [\"https://hooks.example.com/services/T0/B0/x\", \"https://10.0.0.1:8443/hook?a=b\", \"https://[::1]:9/\", \"https://h\"]\n"
    ));
    assert_eq!(
        p.gateway.webhooks,
        [
            "https://hooks.example.com/services/T0/B0/x",
            "https://10.0.0.1:8443/hook?a=b",
            "https://[::1]:9/",
            "https://h"
        ]
    );
}

#[test]
fn rejects_webhooks_that_are_not_plain_https_urls() {
    for (url, needle) in [
        ("http://hooks.example.com/x", "is not an https:// URL"),
        ("hooks.example.com/x", "is not an https:// URL"),
        ("https:///x", "has no host"),
        ("https://user:pw@hooks.example.com/x", "has credentials"),
        ("https://hooks.example.com:0/x", "bad host or port"),
        ("https://hooks.example.com:99999/x", "bad host or port"),
        ("https://hooks example.com/x", "has spaces"),
        ("https://hooks.exämple.com/x", "non-ASCII"),
        ("https://[::1/x", "bad host or port"),
        ("https://ho$t/x", "bad host"),
    ] {
        one_problem(&format!("{GW}webhooks = [{url:?}]\n"), 3, 13, needle);
    }
    one_problem(
        &format!("{GW}webhooks = [\"https://a/\", \"ftp://b/\"]\n"),
        3,
        27,
        "is not an https:// URL",
    );
    let long = format!("https://h/{}", "a".repeat(2048));
    one_problem(
        &format!("{GW}webhooks = [{long:?}]\n"),
        3,
        13,
        "longer than 2048",
    );
    let many: Vec<String> = (0..17).map(|i| format!("\"https://h{i}/\"")).collect();
    one_problem(
        &format!("{GW}webhooks = [{}]\n", many.join(", ")),
        3,
        12,
        "more than 16 URLs",
    );
}

// --- [[mask]] ---

fn mask(snippet: &str) -> String {
    format!("{BASE}[[mask]]\n{snippet}")
}

#[test]
fn mask_rule_parses_with_defaults_and_all_expanded() {
    let p = ok(&mask(
        "who = [\"role:dba\"]\ncolumns = [\"*.Email\", \"users.ssn\", \"*password*\"]\ndetectors = [\"email\", \"all\", \"card\"]\n",
    ));
    let m = &p.masks[0];
    assert!(m.targets.is_empty());
    assert_eq!(m.who, vec![Who::Role("dba".into())]);
    assert_eq!(m.columns, ["*.email", "users.ssn", "*password*"]);
    let all: Vec<String> = crate::mask::detectors().map(str::to_owned).collect();
    assert_eq!(m.detectors.len(), all.len());
    assert!(all.iter().all(|d| m.detectors.contains(d)));
    assert_eq!(m.strategy, crate::mask::Strategy::Redact);
    assert!(m.has_detectors());
    let alice = p.identity("alice").unwrap_or_else(|| panic!("alice"));
    assert_eq!(p.masks_for("db", alice).count(), 1);
}

#[test]
fn mask_rule_with_custom_detectors_and_partial_keep() {
    let p = ok(&mask(
        "targets = [\"db\"]\nwho = [\"alice\"]\ncustom = [{ name = \"employee_id\", pattern = 'EMP-[0-9]{6}' }]\nstrategy = \"partial\"\nkeep = 2\n",
    ));
    let m = &p.masks[0];
    assert_eq!(m.targets, ["db"]);
    assert!(m.detectors.is_empty());
    assert_eq!(
        m.custom,
        [("employee_id".to_owned(), "EMP-[0-9]{6}".to_owned())]
    );
    assert_eq!(m.strategy, crate::mask::Strategy::Partial { keep: 2 });
    let p = ok(&mask(
        "who = [\"*\"]\ndetectors = [\"ssn\"]\nstrategy = \"partial\"\n",
    ));
    assert_eq!(
        p.masks[0].strategy,
        crate::mask::Strategy::Partial { keep: 4 }
    );
    let p = ok(&mask(
        "who = [\"*\"]\ncolumns = [\"ssn\"]\nstrategy = \"hash\"\n",
    ));
    assert_eq!(p.masks[0].strategy, crate::mask::Strategy::Hash);
    assert!(!p.masks[0].has_detectors());
}

#[test]
fn rejects_unknown_detector_listing_valid_names() {
    one_problem(
        &mask("who = [\"*\"]\ndetectors = [\"email\", \"emial\"]\n"),
        20,
        23,
        "unknown detector \"emial\"; valid detectors: all, private_key, jwt",
    );
}

#[test]
fn rejects_bad_and_unbounded_custom_patterns_at_the_pattern() {
    one_problem(
        &mask("who = [\"*\"]\ncustom = [{ name = \"emp\", pattern = 'EMP-[0-9' }]\n"),
        20,
        37,
        "not a valid regular expression",
    );
    one_problem(
        &mask("who = [\"*\"]\ncustom = [{ name = \"emp\", pattern = 'EMP-[0-9]+' }]\n"),
        20,
        37,
        "bounded length",
    );
    one_problem(
        &mask("who = [\"*\"]\ncustom = [{ name = \"emp\", pattern = '[0-9]*' }]\n"),
        20,
        37,
        "empty string",
    );
    one_problem(
        &mask("who = [\"*\"]\ncustom = [{ name = \"email\", pattern = 'x' }]\n"),
        20,
        20,
        "custom detector name \"email\"",
    );
    one_problem(
        &mask("who = [\"*\"]\ncustom = [{ name = \"e\" }]\n"),
        20,
        11,
        "missing `pattern`",
    );
    one_problem(
        &mask("who = [\"*\"]\ncustom = [{ name = \"e\", pattern = 'a' }, { name = \"e\", pattern = 'b' }]\n"),
        20,
        51,
        "defined twice",
    );
}

#[test]
fn rejects_mask_without_who_or_anything_to_mask() {
    let ps = problems(&mask("strategy = \"redact\"\n"));
    let at: Vec<(usize, usize)> = ps.iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(at, [(18, 1), (18, 1)], "{ps:#?}");
    assert!(ps[0].message.contains("missing `who`"), "{ps:#?}");
    assert!(ps[1].message.contains("masks nothing"), "{ps:#?}");
    one_problem(
        &mask("who = []\ncolumns = [\"x\"]\n"),
        19,
        7,
        "`who` is empty",
    );
    one_problem(
        &mask("who = [\"bob\"]\ncolumns = [\"x\"]\n"),
        19,
        8,
        "not a defined identity",
    );
    one_problem(
        &mask("targets = [\"nope\"]\nwho = [\"*\"]\ncolumns = [\"x\"]\n"),
        19,
        12,
        "mask target \"nope\"",
    );
}

#[test]
fn rejects_bad_strategy_keep_and_column_globs() {
    one_problem(
        &mask("who = [\"*\"]\ncolumns = [\"x\"]\nstrategy = \"blur\"\n"),
        21,
        12,
        "use \"redact\", \"partial\" or \"hash\"",
    );
    one_problem(
        &mask("who = [\"*\"]\ncolumns = [\"x\"]\nkeep = 3\n"),
        21,
        8,
        "only used with `strategy = \"partial\"`",
    );
    one_problem(
        &mask("who = [\"*\"]\ncolumns = [\"x\"]\nstrategy = \"partial\"\nkeep = 65\n"),
        22,
        8,
        "between 0 and 64",
    );
    one_problem(
        &mask("who = [\"*\"]\ncolumns = [\"a.b.c.d\"]\n"),
        20,
        12,
        "is not COLUMN, TABLE.COLUMN",
    );
    one_problem(
        &mask("who = [\"*\"]\ncolumns = [\"x\", \"us ers\"]\n"),
        20,
        17,
        "has characters other than",
    );
    one_problem(
        &mask("who = [\"*\"]\ncolumns = [\"x\"]\nshape = 1\n"),
        21,
        1,
        "unknown key `shape`",
    );
}

#[test]
fn start_only_changes_names_the_keys_a_reload_cannot_apply() {
    let old = ok(&format!("{GW}idle_timeout = \"1h\"\n"));
    let same = ok(&format!(
        "{GW}idle_timeout = \"2h\"\ntcp_keepalive = \"5s\"\n"
    ));
    assert!(old.gateway.start_only_changes(&same.gateway).is_empty());
    let new = ok(&format!(
        "{GW}audit_queue = 10\naudit_retention = \"30d\"\nhttp = {{ listen = \"127.0.0.1:9999\" }}\n"
    ));
    assert_eq!(
        old.gateway.start_only_changes(&new.gateway),
        ["audit_queue", "audit_retention", "http"]
    );
}
