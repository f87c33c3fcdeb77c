//! End to end: real psql and pgbench talk to a real PostgreSQL cluster through `portcullis
//! serve`. Each test starts its own cluster and gateway and checks what the database itself says
//! afterwards (a refused statement must leave the data as it was), never the timing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    describe, free_port, gateway_conninfo, make_tls_files, psql_command, run_with_timeout, stderr,
    stdout, unique_temp_dir, write_file_mode, Gateway, PgCluster, COMMAND_TIMEOUT,
};

// ---------------------------------------------------------------------------------------------
// Policy builder
// ---------------------------------------------------------------------------------------------

/// How a target reaches the cluster.
#[derive(Clone)]
enum Upstream {
    Disable,
    Require,
    /// verify-full against this CA certificate.
    VerifyFull(PathBuf),
    /// verify-full against the cluster's own CA (resolved by [`PolicySpec::new`]).
    VerifyFullClusterCa,
}

impl Upstream {
    fn toml(&self) -> String {
        match self {
            Upstream::Disable => "upstream_tls = \"disable\"\n".into(),
            Upstream::Require => "upstream_tls = \"require\"\n".into(),
            Upstream::VerifyFullClusterCa => unreachable!("resolved by PolicySpec::new"),
            Upstream::VerifyFull(ca) => format!(
                "upstream_tls = \"verify-full\"\nupstream_ca = {}\n",
                toml_str(&ca.to_string_lossy())
            ),
        }
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What goes into the policy file; [`PolicySpec::render`] writes it.
#[derive(Clone)]
struct PolicySpec {
    /// `host:port` of the cluster.
    upstream_addr: String,
    /// The cluster's server certificate and key, reused for the gateway's client-side TLS.
    tls_cert: PathBuf,
    tls_key: PathBuf,
    /// The main target `db`.
    upstream: Upstream,
    /// Whether the identity `ci-bot` exists (a reload test removes it).
    with_ci_bot: bool,
    /// Whether rule `ci-may-probe` exists (a reload test removes it).
    ci_may_probe: bool,
    /// Where `db` listens (a fixed port, so a re-rendered policy keeps it).
    db_port: u16,
    /// Extra targets: (name, upstream, listen port), same cluster, same rules.
    extra_targets: Vec<(String, Upstream, u16)>,
    /// `[gateway] audit_queue`, when not the default.
    audit_queue: Option<usize>,
    /// `[gateway] tcp_keepalive`, when not the default.
    tcp_keepalive: Option<&'static str>,
    /// `upstream_pool` of every target, when set.
    upstream_pool: Option<usize>,
    /// `upstream_pool_idle` of every target, when set.
    upstream_pool_idle: Option<&'static str>,
    /// `upstream_pool_lifetime` of every target, when set.
    upstream_pool_lifetime: Option<&'static str>,
    /// `[gateway] relay_busy_poll_us`, when set.
    relay_busy_poll_us: Option<u32>,
    /// `[gateway] http` on this loopback port (plain HTTP: /metrics), when set.
    http_port: Option<u16>,
}

/// The password file every target uses, written next to the policy.
const PASSWORD_FILE: &str = "upstream.pw";

impl PolicySpec {
    fn new(pg: &PgCluster, upstream: Upstream) -> PolicySpec {
        let upstream = match upstream {
            Upstream::VerifyFullClusterCa => Upstream::VerifyFull(pg.ca_cert.clone()),
            other => other,
        };
        PolicySpec {
            upstream_addr: pg.addr(),
            tls_cert: pg.tls.server_cert.clone(),
            tls_key: pg.tls.server_key.clone(),
            upstream,
            with_ci_bot: true,
            ci_may_probe: true,
            db_port: free_port(),
            extra_targets: Vec::new(),
            audit_queue: None,
            tcp_keepalive: None,
            upstream_pool: None,
            upstream_pool_idle: None,
            upstream_pool_lifetime: None,
            relay_busy_poll_us: None,
            http_port: None,
        }
    }

    fn target_toml(&self, name: &str, upstream: &Upstream, port: u16) -> String {
        let mut pool = self
            .upstream_pool
            .map(|n| format!("upstream_pool = {n}\n"))
            .unwrap_or_default();
        if let Some(idle) = self.upstream_pool_idle {
            pool.push_str(&format!("upstream_pool_idle = {}\n", toml_str(idle)));
        }
        if let Some(lifetime) = self.upstream_pool_lifetime {
            pool.push_str(&format!(
                "upstream_pool_lifetime = {}\n",
                toml_str(lifetime)
            ));
        }
        format!(
            "[[target]]\n\
             name = {name}\n\
             listen = \"127.0.0.1:{port}\"\n\
             upstream = {upstream_addr}\n\
             database = \"postgres\"\n\
             user = \"postgres\"\n\
             password_file = \"{PASSWORD_FILE}\"\n\
             {upstream_tls}\
             tls = {{ cert = {cert}, key = {key} }}\n\
             require_tls = false\n\
             default = \"block\"\n\
             read_only_for = [\"role:reader\"]\n\
             {pool}\n",
            name = toml_str(name),
            upstream_addr = toml_str(&self.upstream_addr),
            upstream_tls = upstream.toml(),
            cert = toml_str(&self.tls_cert.to_string_lossy()),
            key = toml_str(&self.tls_key.to_string_lossy()),
        )
    }

    fn render(&self) -> String {
        let mut p = String::from(
            "[gateway]\n\
             data_dir = \"./data\"\n\
             public_url = \"http://127.0.0.1:8443\"\n\
             max_token_ttl = \"24h\"\n\
             audit_flush_interval = \"50ms\"\n",
        );
        if let Some(n) = self.audit_queue {
            p.push_str(&format!("audit_queue = {n}\n"));
        }
        if let Some(d) = self.tcp_keepalive {
            p.push_str(&format!("tcp_keepalive = {}\n", toml_str(d)));
        }
        if let Some(us) = self.relay_busy_poll_us {
            p.push_str(&format!("relay_busy_poll_us = {us}\n"));
        }
        if let Some(port) = self.http_port {
            p.push_str(&format!("http = {{ listen = \"127.0.0.1:{port}\" }}\n"));
        }
        p.push_str(
            "\n\
             [[identity]]\n\
             name = \"alice\"\n\
             kind = \"human\"\n\
             roles = [\"dba\"]\n\n\
             [[identity]]\n\
             name = \"rita\"\n\
             kind = \"human\"\n\
             roles = [\"reader\"]\n\n",
        );
        if self.with_ci_bot {
            p.push_str(
                "[[identity]]\n\
                 name = \"ci-bot\"\n\
                 kind = \"service\"\n\
                 owner = \"alice\"\n\
                 roles = [\"ci\"]\n\
                 max_ttl = \"1h\"\n\n",
            );
        }
        p.push_str(&self.target_toml("db", &self.upstream, self.db_port));
        for (name, upstream, port) in &self.extra_targets {
            p.push_str(&self.target_toml(name, upstream, *port));
        }
        p.push_str(
            "[[rule]]\n\
             name = \"reads\"\n\
             who = [\"role:ci\", \"role:dba\", \"role:reader\"]\n\
             sql = [\"select\", \"show\", \"explain\", \"transaction\", \"set\"]\n\
             action = \"allow\"\n\n",
        );
        if self.ci_may_probe {
            p.push_str(
                "[[rule]]\n\
                 name = \"ci-may-probe\"\n\
                 who = [\"role:ci\"]\n\
                 sql = [\"insert\"]\n\
                 tables = [\"audit_probe\"]\n\
                 action = \"allow\"\n\n",
            );
        }
        p.push_str(
            "[[rule]]\n\
             name = \"readers-may-try-writes\"\n\
             who = [\"role:reader\"]\n\
             sql = [\"insert\", \"update\"]\n\
             action = \"allow\"\n\n\
             [[rule]]\n\
             name = \"no-mass-delete\"\n\
             who = [\"*\"]\n\
             sql = [\"update\", \"delete\"]\n\
             flags = [\"no_where\"]\n\
             action = \"block\"\n\
             message = \"UPDATE/DELETE without WHERE is not allowed through the gateway\"\n\n\
             [[rule]]\n\
             name = \"dba-all\"\n\
             who = [\"role:dba\"]\n\
             action = \"allow\"\n\n\
             [[rule]]\n\
             name = \"no-schema-changes-from-ci\"\n\
             who = [\"role:ci\"]\n\
             sql = [\"ddl\", \"dcl\", \"copy_program\", \"unknown\"]\n\
             action = \"block\"\n\
             message = \"CI jobs may not change the schema; open a migration PR\"\n",
        );
        p
    }
}

// ---------------------------------------------------------------------------------------------
// One cluster + one gateway
// ---------------------------------------------------------------------------------------------

/// A cluster with tables `t` (3 rows) and `audit_probe` (empty), and a gateway in front of it.
/// Field order matters: the gateway is dropped (killed) before the cluster.
struct Env {
    gw: Gateway,
    pg: PgCluster,
    spec: PolicySpec,
    /// Where target `db` listens.
    port: u16,
}

const SETUP_SQL: &str = "create table t (id int primary key, note text);\n\
     insert into t values (1, 'one'), (2, 'two'), (3, 'three');\n\
     create table audit_probe (x int);";

fn start_cluster() -> PgCluster {
    let pg = PgCluster::start();
    let out = pg.psql("postgres", SETUP_SQL);
    assert!(out.status.success(), "setup failed:\n{}", describe(&out));
    pg
}

fn start_gateway(pg: &PgCluster, spec: &PolicySpec) -> Gateway {
    Gateway::builder(&spec.render())
        .secret(PASSWORD_FILE, &pg.password)
        .start()
}

impl Env {
    /// Rewrites the policy file, sends SIGHUP and waits (bounded) for the gateway to log
    /// `logged` ("policy reloaded", or "reload refused" for a bad file).
    fn reload(&self, policy: &str, logged: &str) {
        rewrite_policy(&self.gw, policy);
        self.gw.sighup();
        self.gw.wait_for_log(logged, Duration::from_secs(10));
    }

    fn start(upstream: Upstream) -> Env {
        let pg = start_cluster();
        let spec = PolicySpec::new(&pg, upstream);
        Env::start_with(pg, spec)
    }

    fn start_with(pg: PgCluster, spec: PolicySpec) -> Env {
        let gw = start_gateway(&pg, &spec);
        let port = spec.db_port;
        Env { gw, pg, spec, port }
    }

    /// A token with unlimited uses, 10 minutes.
    fn token(&self, identity: &str) -> String {
        self.gw.token(identity, "db", &[])
    }

    /// psql through target `db` with `-v VERBOSITY=verbose` (SQLSTATEs in messages) and `args`.
    fn psql(&self, identity: &str, token: &str, sslmode: &str, args: &[&str]) -> Output {
        self.psql_in(identity, token, sslmode, args, None)
    }

    fn psql_in(
        &self,
        identity: &str,
        token: &str,
        sslmode: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Output {
        let mut all = vec!["-v", "VERBOSITY=verbose"];
        all.extend_from_slice(args);
        self.gw
            .psql_via_args(self.port, identity, "db", token, sslmode, &all, stdin)
    }

    /// `psql -At -c sql` through `db` without TLS.
    fn sql(&self, identity: &str, token: &str, sql: &str) -> Output {
        self.psql(identity, token, "disable", &["-At", "-c", sql])
    }

    /// The rows of table `t` as `id|note` lines, read directly from the cluster.
    fn t_rows(&self) -> String {
        self.pg.query_scalar(
            "select coalesce(string_agg(id || '|' || note, ',' order by id), '') from t",
        )
    }

    /// The number of rows in `audit_probe`, read directly from the cluster.
    fn probe_count(&self) -> String {
        self.pg.query_scalar("select count(*) from audit_probe")
    }

    /// `portcullis audit export` as lines; panics if it fails.
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
            if Instant::now() >= deadline {
                panic!(
                    "no audit event {what} after 10s; audit:\n{}",
                    lines.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `token issue`: returns (secret, id).
fn issue(gw: &Gateway, identity: &str, target: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["token", "issue", "--identity", identity, "--target", target];
    args.extend_from_slice(extra);
    let out = gw.cli(&args);
    assert!(
        out.status.success(),
        "token issue failed:\n{}",
        describe(&out)
    );
    let secret = stdout(&out).trim().to_string();
    let err = stderr(&out);
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .unwrap_or_else(|| panic!("no tok_ id in token issue's stderr:\n{err}"))
        .trim_end_matches(',')
        .to_string();
    assert!(secret.starts_with("pct_"), "not a token: {secret:?}");
    (secret, id)
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", describe(out));
}

/// psql failed with a gateway refusal: SQLSTATE 42501, `portcullis:` message, `rule: NAME`.
fn assert_refused(out: &Output, rule: &str, what: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success()
            && err.contains("42501")
            && err.contains("portcullis:")
            && err.contains(&format!("rule: {rule}")),
        "{what}: expected a 42501 refusal by rule {rule}, got:\n{}",
        describe(out)
    );
}

/// [`assert_refused`], or with `default:KIND`, refused by the target's default (no rule names
/// itself; the message says which kind no rule allows).
fn assert_refused_by(out: &Output, rule: &str, what: &str) {
    match rule.strip_prefix("default:") {
        None => assert_refused(out, rule, what),
        Some(kind) => {
            let err = stderr(out);
            assert!(
                !out.status.success()
                    && err.contains("42501")
                    && err.contains(&format!("portcullis: no rule allows {kind} ")),
                "{what}: expected a 42501 refusal by the default for {kind}, got:\n{}",
                describe(out)
            );
        }
    }
}

/// The connection was refused with the one authentication failure message.
fn assert_auth_failed(out: &Output, identity: &str, what: &str) {
    let want = format!("password authentication failed for user \"{identity}\"");
    assert!(
        !out.status.success() && stderr(out).contains(&want),
        "{what}: expected {want:?}, got:\n{}",
        describe(out)
    );
}

// ---------------------------------------------------------------------------------------------
// Audit lines (JSON objects written by the gateway; no serde_json here)
// ---------------------------------------------------------------------------------------------

/// The value of top-level `"key":` in a JSON line: strings unescaped, other values as written.
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
                '\\' => match chars.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    other => out.push(other),
                },
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

fn seq(line: &str) -> u64 {
    field(line, "seq")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {line}"))
}

// ---------------------------------------------------------------------------------------------
// Other clients
// ---------------------------------------------------------------------------------------------

/// pgbench through a gateway target, without TLS; `args` go before the database name.
fn pgbench(port: u16, identity: &str, target: &str, token: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("pgbench");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGSSLMODE", "disable")
        .env("PGPASSWORD", token)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", identity])
        .args(args)
        .arg(target);
    run_with_timeout(&mut cmd, None, Duration::from_secs(120))
}

/// Polls (bounded) until `sql` on the cluster returns `want`.
fn wait_for_scalar(pg: &PgCluster, sql: &str, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = pg.query_scalar(sql);
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{what}: {sql:?} still returns {got:?}, not {want:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A spawned psql (stdout/stderr piped) and how to wait for it; killed on drop.
struct Spawned {
    child: Option<std::process::Child>,
}

impl Spawned {
    fn psql(conninfo: &str, token: &str, args: &[&str]) -> Spawned {
        let mut cmd = psql_command(conninfo, Some(token));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning psql: {e}"));
        Spawned { child: Some(child) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits (bounded) for exit; None if it did not exit in time (then it is killed on drop).
    /// The output is small, so the pipes can't fill up meanwhile.
    fn wait(mut self, timeout: Duration) -> Option<Output> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(_)) => return self.child.take()?.wait_with_output().ok(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kill(sig: &str, pid: u32) {
    let out = run_with_timeout(
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string()),
        None,
        COMMAND_TIMEOUT,
    );
    assert_ok(&out, &format!("kill -{sig} {pid}"));
}

/// Rewrites the gateway's policy file (mode 0600).
fn rewrite_policy(gw: &Gateway, text: &str) {
    write_file_mode(&gw.config, text.as_bytes(), 0o600);
}

fn write_script(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, sql).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn psql_connects_with_token_over_tls_and_plain() {
    let env = Env::start(Upstream::VerifyFullClusterCa);
    let token = env.token("alice");
    let ca = env.pg.ca_cert.to_string_lossy().into_owned();
    let verify_full = format!("verify-full sslrootcert={}", common::cq(&ca));

    for (sslmode, tls) in [
        ("require", true),
        (verify_full.as_str(), true),
        ("disable", false),
    ] {
        let out = env.psql(
            "alice",
            &token,
            sslmode,
            &[
                "-At",
                "-c",
                "select current_user, count(*) from t",
                "-c",
                "\\conninfo",
            ],
        );
        assert_ok(&out, &format!("psql sslmode={sslmode}"));
        let text = stdout(&out);
        // The gateway logs in upstream as the target's user, whoever the identity is.
        assert!(
            text.contains("postgres|3"),
            "sslmode={sslmode}: unexpected output:\n{text}"
        );
        assert_eq!(
            text.contains("SSL connection"),
            tls,
            "sslmode={sslmode}: \\conninfo doesn't match the expected TLS state:\n{text}"
        );
    }

    // The audit says the same about the client leg, and that the upstream leg was TLS.
    let lines = env.wait_audit("3 session_opened", |ls| {
        ls.iter().filter(|l| kind_is(l, "session_opened")).count() >= 3
    });
    let opened: Vec<&String> = lines
        .iter()
        .filter(|l| kind_is(l, "session_opened"))
        .collect();
    assert_eq!(opened.len(), 3, "audit:\n{}", lines.join("\n"));
    let tls: Vec<String> = opened.iter().filter_map(|l| field(l, "tls")).collect();
    assert_eq!(
        tls,
        ["true", "true", "false"],
        "audit:\n{}",
        lines.join("\n")
    );
    for l in &opened {
        assert_eq!(field(l, "upstream_tls").as_deref(), Some("true"), "{l}");
        assert_eq!(field(l, "identity").as_deref(), Some("alice"), "{l}");
    }
}

#[test]
fn refuses_used_up_expired_revoked_and_wrong_tokens() {
    let env = Env::start(Upstream::Require);

    // Issue all tokens first so the expired one has time to expire meanwhile.
    let (short, _) = issue(&env.gw, "ci-bot", "db", &["--ttl", "1s"]);
    let (once, _) = issue(&env.gw, "ci-bot", "db", &["--uses", "1"]);
    let (revoked, revoked_id) = issue(&env.gw, "ci-bot", "db", &[]);

    let out = env.sql("ci-bot", &once, "select 1");
    assert_ok(&out, "first use of a --uses 1 token");
    assert_eq!(stdout(&out), "1\n");

    let out = env.gw.cli(&["token", "revoke", &revoked_id]);
    assert_ok(&out, "token revoke");

    thread::sleep(Duration::from_secs(2)); // the --ttl 1s token is now expired

    let made_up = format!("pct_{}", common::random_hex(2));
    let cases = [
        ("used-up token", once.as_str()),
        ("expired token", short.as_str()),
        ("revoked token", revoked.as_str()),
        ("made-up token", made_up.as_str()),
    ];
    let mut messages = Vec::new();
    for (what, token) in cases {
        let out = env.sql("ci-bot", token, "select 1");
        assert_auth_failed(&out, "ci-bot", what);
        // Same words for every reason.
        let line = stderr(&out)
            .lines()
            .find(|l| l.contains("password authentication failed"))
            .unwrap_or_default()
            .to_string();
        messages.push(line);
    }
    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "different failure messages leak the reason: {messages:#?}"
    );
}

#[test]
fn service_identity_cannot_get_token_longer_than_max_ttl() {
    let pg = PgCluster::start();
    let spec = PolicySpec::new(&pg, Upstream::Disable);
    let gw = start_gateway(&pg, &spec);

    let out = gw.cli(&[
        "token",
        "issue",
        "--identity",
        "ci-bot",
        "--target",
        "db",
        "--ttl",
        "2h",
    ]);
    assert!(
        !out.status.success(),
        "2h token for ci-bot (max_ttl 1h) issued:\n{}",
        describe(&out)
    );
    assert!(
        stdout(&out).trim().is_empty(),
        "a secret was printed:\n{}",
        describe(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("max_ttl") && err.contains("1h") && err.contains("ci-bot"),
        "message doesn't name the cap:\n{err}"
    );

    // At the cap is fine.
    gw.token("ci-bot", "db", &["--ttl", "1h"]);
}

const T_ROWS: &str = "1|one,2|two,3|three";

#[test]
fn blocked_statements_do_not_run_simple_protocol() {
    let env = Env::start(Upstream::Require);
    let token = env.token("ci-bot");

    let cases: &[(&str, &str)] = &[
        ("drop table t", "no-schema-changes-from-ci"),
        ("DrOp/**/ TABLE t", "no-schema-changes-from-ci"),
        // Nothing of a multi-statement string runs when one part is refused.
        ("select 1; drop table t", "no-schema-changes-from-ci"),
        (
            "insert into audit_probe values (1); drop table t",
            "no-schema-changes-from-ci",
        ),
        (
            "insert into audit_probe values (1); delete from t",
            "no-mass-delete",
        ),
        // Deletes are not allowed for ci: no rule applies, the target's default blocks.
        (
            "with d as (delete from t returning *) select * from d",
            "no-mass-delete",
        ),
        (
            "with d as (delete from t where id = 1 returning *) select * from d",
            "default:delete",
        ),
        (
            "explain analyze delete from t where id = 1",
            "default:delete",
        ),
        (
            "prepare p as delete from t where true; execute p",
            "default:delete",
        ),
        ("delete from t where id = 1", "default:delete"),
        ("delete from t", "no-mass-delete"),
        ("update t set note = 'x'", "no-mass-delete"),
        ("copy t to program 'id'", "no-schema-changes-from-ci"),
        ("frobnicate the database", "no-schema-changes-from-ci"),
    ];
    for (sql, rule) in cases {
        let out = env.sql("ci-bot", &token, sql);
        assert_refused_by(&out, rule, sql);
        assert!(
            !stdout(&out).contains('1'),
            "{sql:?}: something ran:\n{}",
            describe(&out)
        );
        assert_eq!(env.t_rows(), T_ROWS, "{sql:?} changed t");
        assert_eq!(env.probe_count(), "0", "{sql:?}: part of the string ran");
    }

    // A PREPARE of a blocked statement is refused by itself and never reaches the server: in
    // the same session the server has no prepared statement, and EXECUTE of a name the gateway
    // doesn't know is refused (it can't tell what would run).
    let out = env.psql(
        "ci-bot",
        &token,
        "disable",
        &[
            "-At",
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "prepare p as delete from t where id = 1",
            "-c",
            "select count(*) from pg_prepared_statements",
            "-c",
            "execute p",
        ],
    );
    let err = stderr(&out);
    assert!(
        stdout(&out) == "0\n" && err.matches("42501").count() == 2,
        "prepare not refused, or the statement exists upstream:\n{}",
        describe(&out)
    );
    assert_eq!(env.t_rows(), T_ROWS);

    // The session continues after a refusal, and what is allowed runs.
    let out = env.psql(
        "ci-bot",
        &token,
        "disable",
        &[
            "-At",
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "drop table t",
            "-c",
            "insert into audit_probe values (1)",
            "-c",
            "select count(*) from t",
        ],
    );
    assert!(
        stdout(&out).ends_with("3\n"),
        "session did not continue:\n{}",
        describe(&out)
    );
    assert_eq!(env.probe_count(), "1");
    assert_eq!(env.t_rows(), T_ROWS);
}

#[test]
fn blocked_statements_do_not_run_extended_protocol() {
    let env = Env::start(Upstream::Disable);
    let token = env.token("ci-bot");

    let blocked = [
        ("delete.sql", "delete from t;\n", "no-mass-delete"),
        ("drop.sql", "drop table t;\n", "no-schema-changes-from-ci"),
        (
            "cte.sql",
            "with d as (delete from t where id > 0 returning *) select count(*) from d;\n",
            "default:delete",
        ),
        (
            "explain.sql",
            "explain analyze delete from t where id = 1;\n",
            "default:delete",
        ),
        // pgbench sends each statement of a script on its own: the insert runs, in a
        // transaction the refusal aborts.
        (
            "txn.sql",
            "begin;\ninsert into audit_probe values (1);\ndrop table t;\ncommit;\n",
            "no-schema-changes-from-ci",
        ),
    ];
    for (name, sql, rule) in blocked {
        let script = write_script(&env.gw.dir, name, sql);
        for mode in ["extended", "prepared"] {
            let out = pgbench(
                env.port,
                "ci-bot",
                "db",
                &token,
                &["-n", "-t", "1", "-M", mode, "-f", &script.to_string_lossy()],
            );
            let err = stderr(&out);
            let by = match rule.strip_prefix("default:") {
                Some(kind) => format!("portcullis: no rule allows {kind} "),
                None => format!("rule: {rule}"),
            };
            assert!(
                !out.status.success() && err.contains("portcullis:") && err.contains(&by),
                "pgbench -M {mode} {sql:?}: expected a refusal ({by}), got:\n{}",
                describe(&out)
            );
            assert_eq!(env.t_rows(), T_ROWS, "pgbench -M {mode} {sql:?} changed t");
            assert_eq!(env.probe_count(), "0", "pgbench -M {mode} {sql:?}");
        }
    }

    let script = write_script(
        &env.gw.dir,
        "select.sql",
        "select count(*) from t where id = 2;\n",
    );
    for mode in ["extended", "prepared"] {
        let out = pgbench(
            env.port,
            "ci-bot",
            "db",
            &token,
            &["-n", "-t", "5", "-M", mode, "-f", &script.to_string_lossy()],
        );
        assert_ok(&out, &format!("pgbench -M {mode} select"));
        let text = stdout(&out);
        assert!(
            text.contains("number of transactions actually processed: 5/5")
                && text.contains("number of failed transactions: 0"),
            "pgbench -M {mode} select:\n{}",
            describe(&out)
        );
    }
}

#[test]
fn refused_statement_aborts_the_transaction_like_a_server_error() {
    let env = Env::start(Upstream::Require);
    let token = env.token("ci-bot");
    let script = "begin;\n\
                  insert into audit_probe values (42);\n\
                  drop table t;\n\
                  select 'after the refusal';\n\
                  commit;\n";
    let out = env.psql_in(
        "ci-bot",
        &token,
        "require",
        &["-v", "ON_ERROR_STOP=0", "-f", "-"],
        Some(script.as_bytes()),
    );
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(
        err.contains("42501"),
        "drop not refused:\n{}",
        describe(&out)
    );
    // The next statement meets the server's own aborted-transaction error...
    assert!(
        err.contains("25P02"),
        "transaction not aborted:\n{}",
        describe(&out)
    );
    assert!(
        !text.contains("after the refusal"),
        "ran in an aborted transaction:\n{text}"
    );
    // ...and COMMIT turns into ROLLBACK.
    assert!(
        text.lines().any(|l| l.trim() == "ROLLBACK"),
        "commit did not report ROLLBACK:\n{}",
        describe(&out)
    );
    assert_eq!(env.probe_count(), "0", "the insert was committed");
    assert_eq!(env.t_rows(), T_ROWS);

    // The session is usable again afterwards.
    let script = "begin;\ninsert into audit_probe values (7);\ncommit;\n";
    let out = env.psql_in(
        "ci-bot",
        &token,
        "require",
        &["-f", "-"],
        Some(script.as_bytes()),
    );
    assert_ok(&out, "a clean transaction");
    assert_eq!(env.probe_count(), "1");
}

#[test]
fn read_only_session_refuses_writes_and_lifting() {
    let env = Env::start(Upstream::Require);
    let token = env.token("rita");

    let out = env.sql("rita", &token, "show default_transaction_read_only");
    assert_ok(&out, "show");
    assert_eq!(stdout(&out), "on\n");

    // The write is allowed by policy and refused by the server itself.
    for sql in [
        "insert into audit_probe values (1)",
        "update t set note = 'x' where id = 1",
    ] {
        let out = env.sql("rita", &token, sql);
        let err = stderr(&out);
        assert!(
            !out.status.success() && err.contains("25006") && err.contains("read-only transaction"),
            "{sql:?}: expected the server's read-only error, got:\n{}",
            describe(&out)
        );
    }

    // Lifting the read-only mode is refused by the gateway.
    let lifts = [
        "set default_transaction_read_only = off",
        "SET SESSION default_transaction_read_only TO off",
        "set transaction_read_only = off",
        "select set_config('default_transaction_read_only', 'off', false)",
        "begin read write",
        "reset all",
    ];
    for sql in lifts {
        let out = env.sql("rita", &token, sql);
        assert_refused(&out, "read_only", sql);
    }

    // Not even when combined in one session with a write afterwards.
    let out = env.psql(
        "rita",
        &token,
        "disable",
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "set default_transaction_read_only = off",
            "-c",
            "insert into audit_probe values (1)",
        ],
    );
    assert!(stderr(&out).contains("25006"), "{}", describe(&out));
    assert_eq!(env.probe_count(), "0");
    assert_eq!(env.t_rows(), T_ROWS);
}

#[test]
fn messages_larger_than_the_relay_buffers_pass_both_ways() {
    // A 3 MB DataRow down and a 3 MB Query up: larger than the relay's 1 MiB pending buffers,
    // within max_message_size; each must be read whole before it can be handled.
    let env = Env::start(Upstream::Require);
    let token = env.token("alice");
    let out = env.gw.psql_via_args(
        env.port,
        "alice",
        "db",
        &token,
        "disable",
        &["-At", "-c", "select repeat('x', 3000000)"],
        None,
    );
    assert_ok(&out, "3 MB result");
    assert_eq!(stdout(&out).trim_end().len(), 3_000_000);
    let big = format!("select length('{}')", "y".repeat(3_000_000));
    let out = env.gw.psql_via_stdin(
        env.port,
        "alice",
        "db",
        &token,
        "require",
        "",
        big.as_bytes(),
    );
    assert_ok(&out, "3 MB query");
    assert!(stdout(&out).contains("3000000"), "{}", describe(&out));
}

#[test]
fn copy_in_and_out_work() {
    let env = Env::start(Upstream::Require);
    let token = env.token("alice");

    // SQL COPY FROM STDIN: the rows come from psql's stdin.
    let out = env.gw.psql_via_stdin(
        env.port,
        "alice",
        "db",
        &token,
        "require",
        "copy t (id, note) from stdin",
        b"10\tten\n11\televen\n",
    );
    assert_ok(&out, "copy from stdin");
    assert!(stdout(&out).contains("COPY 2"), "{}", describe(&out));

    // psql's \copy with inline data in a script, over plain TCP this time.
    let script = "\\copy t (id, note) from stdin\n12\ttwelve\n13\tthirteen\n\\.\nselect 'done';\n";
    let out = env.gw.psql_via_stdin(
        env.port,
        "alice",
        "db",
        &token,
        "disable",
        "",
        script.as_bytes(),
    );
    assert_ok(&out, "\\copy from stdin");
    assert!(stdout(&out).contains("done"), "{}", describe(&out));

    assert_eq!(
        env.t_rows(),
        "1|one,2|two,3|three,10|ten,11|eleven,12|twelve,13|thirteen"
    );

    let out = env.psql(
        "alice",
        &token,
        "require",
        &[
            "-c",
            "copy (select * from t where id >= 10 order by id) to stdout",
        ],
    );
    assert_ok(&out, "copy to stdout");
    assert_eq!(
        stdout(&out),
        "10\tten\n11\televen\n12\ttwelve\n13\tthirteen\n"
    );

    let out = env.psql("alice", &token, "disable", &["-c", "\\copy t to stdout"]);
    assert_ok(&out, "\\copy to stdout");
    assert_eq!(stdout(&out).lines().count(), 7, "{}", describe(&out));
}

/// psql running `select pg_sleep(60)` through target `db`, returned once the sleep is active
/// upstream.
fn sleep_through_gateway(env: &Env, identity: &str, token: &str, sslmode: &str) -> Spawned {
    let conninfo = gateway_conninfo(env.port, identity, "db", sslmode);
    let sleeper = Spawned::psql(&conninfo, token, &["-c", "select pg_sleep(60)"]);
    wait_for_scalar(
        &env.pg,
        "select count(*) from pg_stat_activity \
         where query = 'select pg_sleep(60)' and state = 'active'",
        "1",
        "the sleep never showed up",
    );
    sleeper
}

#[test]
fn psql_cancel_reaches_the_upstream_backend() {
    let env = Env::start(Upstream::Require);
    let token = env.token("alice");

    for sslmode in ["require", "disable"] {
        let sleeper = sleep_through_gateway(&env, "alice", &token, sslmode);
        kill("INT", sleeper.pid());
        let out = sleeper
            .wait(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("sslmode={sslmode}: psql still running 20s after SIGINT"));
        assert!(
            !out.status.success()
                && stderr(&out).contains("canceling statement due to user request"),
            "sslmode={sslmode}: the cancel did not reach the backend:\n{}",
            describe(&out)
        );
        wait_for_scalar(
            &env.pg,
            "select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'",
            "0",
            "the sleep is still running",
        );
    }
}

#[test]
fn client_and_upstream_connections_get_tcp_keepalive() {
    let pg = start_cluster();
    let mut spec = PolicySpec::new(&pg, Upstream::Disable);
    spec.tcp_keepalive = Some("7s");
    let env = Env::start_with(pg, spec);
    let token = env.token("alice");
    let sleeper = sleep_through_gateway(&env, "alice", &token, "disable");
    // 7s is 700 ticks.
    common::assert_keepalive_on_both_legs(env.gw.pid(), env.port, env.pg.port, 700);
    kill("TERM", sleeper.pid());
    let _ = sleeper.wait(Duration::from_secs(20));
}

#[test]
fn pgbench_init_and_select_only_run_through_the_gateway() {
    let env = Env::start(Upstream::Require);
    let token = env.token("alice");

    let out = pgbench(env.port, "alice", "db", &token, &["-i", "-s", "1", "-q"]);
    assert_ok(&out, "pgbench -i -s 1");
    assert_eq!(
        env.pg.query_scalar("select count(*) from pgbench_accounts"),
        "100000"
    );

    for extra in [&["-M", "simple"][..], &["-M", "prepared"][..]] {
        let mut args = vec!["-S", "-T", "2", "-c", "4", "-j", "2"];
        args.extend_from_slice(extra);
        let out = pgbench(env.port, "alice", "db", &token, &args);
        assert_ok(&out, &format!("pgbench {args:?}"));
        let text = stdout(&out);
        assert!(
            text.contains("number of failed transactions: 0"),
            "pgbench {args:?}:\n{}",
            describe(&out)
        );
        assert!(
            !text.contains("actually processed: 0/"),
            "nothing ran:\n{text}"
        );
    }

    // The TPC-B script through the extended protocol: reads run without waiting, but each
    // UPDATE/INSERT Execute still waits for its durable intent record before it is forwarded.
    let out = pgbench(
        env.port,
        "alice",
        "db",
        &token,
        &["-M", "prepared", "-t", "5", "-c", "1"],
    );
    assert_ok(&out, "pgbench -M prepared -t 5 (TPC-B)");
    assert!(
        stdout(&out).contains("number of failed transactions: 0"),
        "{}",
        describe(&out)
    );
    let lines = env.wait_audit("intents of the TPC-B updates", |ls| {
        ls.iter()
            .filter(|l| {
                kind_is(l, "statement")
                    && field(l, "text")
                        .is_some_and(|t| t.starts_with("INSERT INTO pgbench_history"))
            })
            .count()
            >= 5
    });
    let all = lines.join("\n");
    let writes: Vec<&String> = lines
        .iter()
        .filter(|l| {
            kind_is(l, "statement")
                && field(l, "text").is_some_and(|t| t.starts_with("UPDATE pgbench_accounts"))
        })
        .collect();
    assert_eq!(writes.len(), 5, "{all}");
    let intents: Vec<&String> = lines
        .iter()
        .filter(|l| {
            kind_is(l, "statement_intent")
                && field(l, "text").is_some_and(|t| t.starts_with("UPDATE pgbench_accounts"))
        })
        .collect();
    assert_eq!(intents.len(), 5, "one intent per execution:\n{all}");
    for (intent, write) in intents.iter().zip(&writes) {
        assert!(
            seq(intent) < seq(write),
            "intent after the statement:\n{all}"
        );
    }
    // The reads of the same script got no intent.
    assert!(
        !lines.iter().any(|l| kind_is(l, "statement_intent")
            && field(l, "text").is_some_and(|t| t.starts_with("SELECT abalance"))),
        "a read got an intent:\n{all}"
    );
}

#[test]
fn audit_records_statements_with_identity() {
    let env = Env::start(Upstream::Require);
    let token = env.token("ci-bot");

    let out = env.sql("ci-bot", &token, "select id from t where id < 3");
    assert_ok(&out, "select");
    let out = env.sql("ci-bot", &token, "insert into audit_probe values (5), (6)");
    assert_ok(&out, "insert");
    let out = env.sql("ci-bot", &token, "drop table t");
    assert_refused(&out, "no-schema-changes-from-ci", "drop");

    let lines = env.wait_audit("statement, intent and refusal", |ls| {
        ls.iter().any(|l| kind_is(l, "statement_refused"))
            && ls.iter().filter(|l| kind_is(l, "statement")).count() >= 2
    });
    let all = lines.join("\n");
    let find = |kind: &str, text: &str| -> &String {
        lines
            .iter()
            .find(|l| kind_is(l, kind) && field(l, "text").as_deref() == Some(text))
            .unwrap_or_else(|| panic!("no {kind} event for {text:?}; audit:\n{all}"))
    };

    let select = find("statement", "select id from t where id < 3");
    assert_eq!(
        field(select, "identity").as_deref(),
        Some("ci-bot"),
        "{select}"
    );
    assert_eq!(field(select, "target").as_deref(), Some("db"), "{select}");
    assert_eq!(field(select, "rows").as_deref(), Some("2"), "{select}");
    assert_eq!(
        field(select, "executed").as_deref(),
        Some("true"),
        "{select}"
    );
    assert_eq!(field(select, "rule").as_deref(), Some("reads"), "{select}");

    let insert = find("statement", "insert into audit_probe values (5), (6)");
    assert_eq!(
        field(insert, "identity").as_deref(),
        Some("ci-bot"),
        "{insert}"
    );
    assert_eq!(field(insert, "rows").as_deref(), Some("2"), "{insert}");
    let intent = find(
        "statement_intent",
        "insert into audit_probe values (5), (6)",
    );
    assert!(
        seq(intent) < seq(insert),
        "intent after the statement:\n{intent}\n{insert}"
    );
    assert_eq!(field(intent, "session"), field(insert, "session"));
    // A read needs no intent.
    assert!(
        !lines.iter().any(|l| kind_is(l, "statement_intent")
            && field(l, "text").as_deref() == Some("select id from t where id < 3")),
        "a select got an intent event:\n{all}"
    );

    let refused = find("statement_refused", "drop table t");
    assert_eq!(
        field(refused, "identity").as_deref(),
        Some("ci-bot"),
        "{refused}"
    );
    assert_eq!(
        field(refused, "decision").as_deref(),
        Some("block"),
        "{refused}"
    );
    assert_eq!(
        field(refused, "rule").as_deref(),
        Some("no-schema-changes-from-ci"),
        "{refused}"
    );
    assert!(
        !lines.iter().any(|l| kind_is(l, "statement") && field(l, "text").as_deref() == Some("drop table t")),
        "a refused statement was recorded as executed:\n{all}"
    );
}

/// Sessions that end while their statement records wait for room in a full audit queue still
/// get every one of them recorded, before their `session_closed` record. With a queue of one
/// event and the writer lingering over each batch of reads, nearly every statement of the psql
/// scripts finds the queue full, so a session's last records are usually still waiting when its
/// psql says Terminate (three sessions at once, so at least one is caught that way).
#[test]
fn statement_records_waiting_for_a_full_audit_queue_survive_the_session_end() {
    let pg = start_cluster();
    let mut spec = PolicySpec::new(&pg, Upstream::Disable);
    spec.audit_queue = Some(1);
    let env = Env::start_with(pg, spec);
    let token = env.token("ci-bot");

    const SESSIONS: usize = 3;
    const N: usize = 60;
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..SESSIONS)
            .map(|k| {
                let (env, token) = (&env, &token);
                scope.spawn(move || {
                    let script: String =
                        (1..=N).map(|i| format!("select {i} as s{k};\n")).collect();
                    let args = ["-At", "-f", "-"];
                    env.psql_in("ci-bot", token, "disable", &args, Some(script.as_bytes()))
                })
            })
            .collect();
        for run in runs {
            let out = run
                .join()
                .unwrap_or_else(|_| panic!("psql thread panicked"));
            assert_ok(&out, "a script");
            assert_eq!(stdout(&out).lines().count(), N, "{}", describe(&out));
        }
    });

    let lines = env.wait_audit("three session_closed", |ls| {
        ls.iter().filter(|l| kind_is(l, "session_closed")).count() == SESSIONS
    });
    let all = lines.join("\n");
    // Per script: its session, which statements have a record, and the last record's seq.
    let mut sessions: Vec<Option<String>> = vec![None; SESSIONS];
    let mut seen = vec![vec![false; N + 1]; SESSIONS];
    let mut last_seq = [0; SESSIONS];
    for l in lines.iter().filter(|l| kind_is(l, "statement")) {
        let Some((i, k)) = field(l, "text").and_then(|t| {
            let (i, k) = t.strip_prefix("select ")?.split_once(" as s")?;
            Some((i.parse::<usize>().ok()?, k.parse::<usize>().ok()?))
        }) else {
            continue;
        };
        assert!(
            k < SESSIONS && (1..=N).contains(&i),
            "unexpected statement: {l}"
        );
        let session = field(l, "session");
        assert!(
            sessions[k].is_none() || sessions[k] == session,
            "script {k} recorded under two sessions; audit:\n{all}"
        );
        sessions[k] = session;
        assert!(
            !seen[k][i],
            "statement {i} of script {k} recorded twice; audit:\n{all}"
        );
        seen[k][i] = true;
        last_seq[k] = seq(l);
    }
    for k in 0..SESSIONS {
        let missing: Vec<usize> = (1..=N).filter(|&i| !seen[k][i]).collect();
        assert!(
            missing.is_empty(),
            "script {k}: statements without a record: {missing:?}; audit:\n{all}"
        );
        let closed = lines
            .iter()
            .find(|l| kind_is(l, "session_closed") && field(l, "session") == sessions[k])
            .unwrap_or_else(|| panic!("script {k}: no session_closed; audit:\n{all}"));
        assert!(
            last_seq[k] < seq(closed),
            "script {k}: a statement recorded after its session's end; audit:\n{all}"
        );
    }
}

/// A statement forwarded upstream whose session ends before the server answers (here the client
/// is killed mid-query) is still recorded, as unanswered and without `executed` (whether it ran is
/// not known), before the session's `session_closed`.
#[test]
fn a_statement_still_running_when_its_session_ends_is_recorded_as_unanswered() {
    let env = Env::start(Upstream::Disable);
    let token = env.token("ci-bot");
    let conninfo = gateway_conninfo(env.port, "ci-bot", "db", "disable");
    let sql = "select pg_sleep(30), 'in flight'";
    let psql = Spawned::psql(&conninfo, &token, &["-c", sql]);
    wait_for_scalar(
        &env.pg,
        "select count(*) from pg_stat_activity where query like 'select pg_sleep(30)%' and state = 'active'",
        "1",
        "the sleep never started upstream",
    );
    kill("KILL", psql.pid());
    let lines = env.wait_audit("session_closed", |ls| {
        ls.iter().any(|l| kind_is(l, "session_closed"))
    });
    let all = lines.join("\n");
    let stmt = lines
        .iter()
        .find(|l| kind_is(l, "statement") && field(l, "text").as_deref() == Some(sql))
        .unwrap_or_else(|| panic!("no statement record for the killed query; audit:\n{all}"));
    assert_eq!(field(stmt, "answered").as_deref(), Some("false"), "{stmt}");
    assert_eq!(field(stmt, "executed"), None, "{stmt}");
    assert_eq!(field(stmt, "rule").as_deref(), Some("reads"), "{stmt}");
    let closed = lines
        .iter()
        .find(|l| kind_is(l, "session_closed"))
        .unwrap_or_else(|| panic!("no session_closed; audit:\n{all}"));
    assert_eq!(field(stmt, "session"), field(closed, "session"), "{all}");
    assert!(
        seq(stmt) < seq(closed),
        "recorded after the session's end:\n{all}"
    );
    drop(psql);
}

#[test]
fn a_reload_says_which_changed_gateway_keys_wait_for_the_next_start() {
    let env = Env::start(Upstream::Disable);
    let mut changed = env.spec.clone();
    changed.audit_queue = Some(128);
    changed.tcp_keepalive = Some("30s");
    env.reload(&changed.render(), "policy reloaded");
    let log = env
        .gw
        .wait_for_log("read at start only", Duration::from_secs(10));
    let line = log
        .lines()
        .find(|l| l.contains("read at start only"))
        .unwrap_or_default();
    // audit_queue sizes the audit writer's queue, made at start; tcp_keepalive is read per
    // connection, so a reload applies it.
    assert!(line.ends_with(": audit_queue"), "{line}");
    let reloaded = env.wait_audit("policy_reloaded", |lines| {
        lines.iter().any(|l| kind_is(l, "policy_reloaded"))
    });
    let event = reloaded
        .iter()
        .find(|l| kind_is(l, "policy_reloaded"))
        .unwrap_or_else(|| panic!("no policy_reloaded event"));
    assert!(
        event.contains("\"at_next_start\":[\"audit_queue\"]"),
        "{event}"
    );
    // The same file again: the running audit queue is still the one the gateway started with,
    // so it is named again. Then the original file: nothing waits for a restart, nothing is
    // said. (`reload` would see the first reload's log line: wait for the events instead.)
    let reloads = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| kind_is(l, "policy_reloaded"))
            .cloned()
            .collect()
    };
    rewrite_policy(&env.gw, &changed.render());
    env.gw.sighup();
    let all = env.wait_audit("second policy_reloaded", |lines| reloads(lines).len() == 2);
    let events = reloads(&all);
    assert!(
        events[1].contains("\"at_next_start\":[\"audit_queue\"]"),
        "{}",
        events[1]
    );
    rewrite_policy(&env.gw, &env.spec.render());
    env.gw.sighup();
    let all = env.wait_audit("third policy_reloaded", |lines| reloads(lines).len() == 3);
    let events = reloads(&all);
    assert!(!events[2].contains("at_next_start"), "{}", events[2]);
}

#[test]
fn sighup_reload_removes_identity_and_closes_its_session() {
    let env = Env::start(Upstream::Require);
    let ci_token = env.token("ci-bot");
    let alice_token = env.token("alice");

    let conninfo = gateway_conninfo(env.port, "ci-bot", "db", "require");
    let sleeper = Spawned::psql(&conninfo, &ci_token, &["-c", "select pg_sleep(30)"]);
    wait_for_scalar(
        &env.pg,
        "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
        "1",
        "ci-bot's session never started its query",
    );

    let mut without = env.spec.clone();
    without.with_ci_bot = false;
    env.reload(&without.render(), "policy reloaded");

    let out = sleeper.wait(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "ci-bot's session still open 20s after the reload; log:\n{}",
            env.gw.log()
        )
    });
    assert!(
        !out.status.success(),
        "ci-bot's query completed:\n{}",
        describe(&out)
    );
    // The client is told why (FATAL 57P01), and the audit says so too.
    assert!(
        stderr(&out).contains("session terminated")
            && stderr(&out).contains("removed from the policy"),
        "no FATAL telling the client why:\n{}",
        describe(&out)
    );
    let lines = env.wait_audit("session_closed of ci-bot", |ls| {
        ls.iter().any(|l| {
            kind_is(l, "session_closed") && field(l, "identity").as_deref() == Some("ci-bot")
        })
    });
    let closed = lines
        .iter()
        .find(|l| kind_is(l, "session_closed") && field(l, "identity").as_deref() == Some("ci-bot"))
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        field(closed, "reason").is_some_and(|r| r.contains("removed from the policy")),
        "{closed}"
    );

    let out = env.sql("ci-bot", &ci_token, "select 1");
    assert_auth_failed(&out, "ci-bot", "removed identity");
    let out = env.sql("alice", &alice_token, "select count(*) from t");
    assert_ok(&out, "alice after the reload");

    // A broken file is refused; the previous policy keeps serving.
    env.reload("[gateway\nthis is not a policy\n", "reload refused");
    let out = env.sql("alice", &alice_token, "select count(*) from t");
    assert_ok(&out, "alice after a refused reload");
    assert_eq!(stdout(&out), "3\n");
    let out = env.sql("ci-bot", &ci_token, "select 1");
    assert_auth_failed(&out, "ci-bot", "still removed after a refused reload");
}

#[test]
fn a_reloaded_rule_applies_to_the_next_statement_of_an_open_session() {
    let env = Env::start(Upstream::Require);
    let ci_token = env.token("ci-bot");
    let out = env.sql("ci-bot", &ci_token, "insert into audit_probe values (1)");
    assert_ok(&out, "ci-bot's probe while ci-may-probe exists");
    assert_eq!(env.probe_count(), "1");

    // A direct session holds an advisory lock, so ci-bot's session stops between two statements
    // (psql sends each -c as its own Query): the reload happens in between.
    let direct = env.pg.conninfo("postgres", "postgres");
    let holder = Spawned::psql(
        &direct,
        &env.pg.password,
        &[
            "-c",
            "select pg_advisory_lock(4242)",
            "-c",
            "select pg_sleep(60)",
        ],
    );
    let held = "select count(*) from pg_locks where locktype = 'advisory' and granted";
    wait_for_scalar(&env.pg, held, "1", "the direct session never took the lock");
    let conninfo = gateway_conninfo(env.port, "ci-bot", "db", "disable");
    let ci = Spawned::psql(
        &conninfo,
        &ci_token,
        &[
            "-c",
            "select pg_advisory_lock(4242)",
            "-c",
            "insert into audit_probe values (2)",
        ],
    );
    let waiting = "select count(*) from pg_locks where locktype = 'advisory' and not granted";
    wait_for_scalar(
        &env.pg,
        waiting,
        "1",
        "ci-bot's session never waited for the lock",
    );

    let mut without = env.spec.clone();
    without.ci_may_probe = false;
    env.reload(&without.render(), "policy reloaded");
    // The lock goes with the direct session; ci-bot's insert comes next, under the new policy.
    let out = env.pg.psql(
        "postgres",
        "select pg_terminate_backend(pid) from pg_stat_activity where query = 'select pg_sleep(60)'",
    );
    assert_ok(&out, "ending the direct session");
    let out = ci
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("ci-bot's psql still running 20s after the lock was released"));
    assert!(
        stderr(&out).contains("portcullis:"),
        "the insert after the reload was not refused by the gateway:\n{}",
        describe(&out)
    );
    assert_eq!(
        env.probe_count(),
        "1",
        "the insert after the reload reached the database:\n{}",
        describe(&out)
    );
    drop(holder);
}

#[test]
fn unsafe_startup_parameters_are_refused() {
    let env = Env::start(Upstream::Require);
    let token = env.token("alice");

    let cases = [
        ("options='-c search_path=x'", "options"),
        ("replication=database", "replication"),
    ];
    for (extra, param) in cases {
        let sslmode = format!("disable {extra}");
        let out = env.psql(
            "alice",
            &token,
            &sslmode,
            &["-At", "-c", "show search_path"],
        );
        let err = stderr(&out);
        assert!(
            !out.status.success()
                && err.contains(&format!("startup parameter \"{param}\" is not allowed")),
            "{extra}: expected a refusal naming {param}, got:\n{}",
            describe(&out)
        );
    }

    // Allowed parameters pass through.
    let out = env.psql(
        "alice",
        &token,
        "disable application_name=probe",
        &["-At", "-c", "show application_name"],
    );
    assert_ok(&out, "application_name");
    assert_eq!(stdout(&out), "probe\n");
}

#[test]
fn upstream_verify_full_with_wrong_ca_fails_cleanly() {
    let pg = start_cluster();
    let other = unique_temp_dir("other-ca");
    let other_tls = make_tls_files(&other);
    let mut spec = PolicySpec::new(&pg, Upstream::VerifyFullClusterCa);
    let bad_port = free_port();
    spec.extra_targets.push((
        "badca".into(),
        Upstream::VerifyFull(other_tls.ca_cert.clone()),
        bad_port,
    ));
    let env = Env::start_with(pg, spec);

    let (bad_token, _) = issue(&env.gw, "alice", "badca", &[]);
    let out = env.gw.psql_via(
        bad_port, "alice", "badca", &bad_token, "disable", "select 1",
    );
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("FATAL")
            && err.contains("could not connect to target"),
        "expected a clean FATAL, got:\n{}",
        describe(&out)
    );

    // The gateway is still up and the good target works.
    let token = env.token("alice");
    let out = env.sql("alice", &token, "select count(*) from t");
    assert_ok(&out, "the good target");
    assert_eq!(stdout(&out), "3\n");
    let _ = fs::remove_dir_all(&other);
}

/// A session the gateway ends (identity removed by a reload, token revoked) must not leave its
/// query running on the server: the client is gone, nobody would see the result, and the
/// identity is no longer allowed to do anything.
#[test]
fn ended_sessions_stop_their_running_query_upstream() {
    let env = Env::start(Upstream::Require);
    let (ci_token, _) = issue(&env.gw, "ci-bot", "db", &[]);
    let (alice_token, alice_id) = issue(&env.gw, "alice", "db", &[]);
    let active = |n: u32| {
        format!(
            "select count(*) from pg_stat_activity where query = 'select pg_sleep(4{n})' and state = 'active'"
        )
    };

    // Token revoke.
    let conninfo = gateway_conninfo(env.port, "alice", "db", "disable");
    let alice = Spawned::psql(&conninfo, &alice_token, &["-c", "select pg_sleep(41)"]);
    wait_for_scalar(&env.pg, &active(1), "1", "alice's sleep never started");
    assert_ok(&env.gw.cli(&["token", "revoke", &alice_id]), "token revoke");
    let out = alice
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("alice's session still open 20s after revoke"));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("session terminated: token revoked"),
        "{}",
        describe(&out)
    );
    wait_for_scalar(
        &env.pg,
        &active(1),
        "0",
        "revoked token's query still runs upstream",
    );

    // Identity removed by a reload.
    let conninfo = gateway_conninfo(env.port, "ci-bot", "db", "disable");
    let ci = Spawned::psql(&conninfo, &ci_token, &["-c", "select pg_sleep(42)"]);
    wait_for_scalar(&env.pg, &active(2), "1", "ci-bot's sleep never started");
    let mut without = env.spec.clone();
    without.with_ci_bot = false;
    env.reload(&without.render(), "policy reloaded");
    let out = ci
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("ci-bot's session still open 20s after the reload"));
    assert!(!out.status.success(), "{}", describe(&out));
    wait_for_scalar(
        &env.pg,
        &active(2),
        "0",
        "removed identity's query still runs upstream",
    );
}

// ---------------------------------------------------------------------------------------------
// Upstream connections kept for the next session (`upstream_pool`)
// ---------------------------------------------------------------------------------------------

/// `select pg_backend_pid()` then `statements`, in one session of its own through the gateway,
/// as `identity`: the backend's pid.
fn backend_pid_then(env: &Env, identity: &str, token: &str, statements: &[&str]) -> String {
    let mut args = vec!["-At", "-c", "select pg_backend_pid()"];
    for sql in statements {
        args.extend(["-c", sql]);
    }
    let out = env.psql(identity, token, "require", &args);
    assert_ok(&out, &format!("a session running {statements:?}"));
    let pid = stdout(&out).lines().next().unwrap_or_default().to_string();
    assert!(!pid.is_empty(), "no pid:\n{}", describe(&out));
    pid
}

/// `select pg_backend_pid()` alone: see [`backend_pid_then`].
fn backend_pid(env: &Env, identity: &str, token: &str) -> String {
    backend_pid_then(env, identity, token, &[])
}

#[test]
fn a_kept_upstream_connection_serves_the_next_session_reset() {
    let pg = start_cluster();
    let mut spec = PolicySpec::new(&pg, Upstream::VerifyFullClusterCa);
    spec.upstream_pool = Some(2);
    let env = Env::start_with(pg, spec);
    let alice = env.token("alice");
    let ci = env.token("ci-bot");

    // A session leaves state behind: settings (one a custom one, as row-level security policies
    // read a tenant from), a prepared statement, a temporary table, an advisory lock, a LISTEN.
    // The next session, another identity, gets the same backend (upstream TLS: the reset runs
    // through rustls) and none of that.
    let first_pid = backend_pid_then(
        &env,
        "alice",
        &alice,
        &[
            "set search_path = pg_catalog",
            "set work_mem = '7MB'",
            "set app.tenant = 'alice-only'",
            "prepare leftover as select 1",
            "create temp table scratch (x int)",
            "select pg_advisory_lock(4242)",
            "listen somewhere",
        ],
    );

    let second = env.psql(
        "ci-bot",
        &ci,
        "require",
        &[
            "-At",
            "-c",
            "select pg_backend_pid(), current_setting('search_path'), current_setting('work_mem'), \
             coalesce(current_setting('app.tenant', true), 'unset'), \
             (select count(*) from pg_prepared_statements), \
             (select count(*) from pg_locks where locktype = 'advisory'), \
             (select count(*) from pg_listening_channels()), \
             (select count(*) from pg_class where relname = 'scratch')",
        ],
    );
    assert_ok(&second, "the second session");
    assert_eq!(
        stdout(&second).trim(),
        format!("{first_pid}|\"$user\", public|4MB||0|0|0|0"),
        "the second session should reuse the backend with nothing left of the first"
    );

    // A session that ends inside a transaction does not leave its connection: the server rolls
    // the transaction back when it closes, and the next session gets a new backend. (`before`
    // is the kept backend, which the session with the open transaction then takes.)
    let before = backend_pid(&env, "alice", &alice);
    let open = backend_pid_then(
        &env,
        "alice",
        &alice,
        &["begin", "insert into audit_probe values (77)"],
    );
    assert_eq!(open, before, "the session took the kept connection");
    wait_for_scalar(
        &env.pg,
        &format!("select count(*) from pg_stat_activity where pid = {before}"),
        "0",
        "the backend of the session left in a transaction to exit",
    );
    assert_eq!(
        env.pg
            .query_scalar("select count(*) from audit_probe where x = 77"),
        "0",
        "the open transaction was rolled back"
    );
    let after = backend_pid(&env, "alice", &alice);
    assert_ne!(
        after, before,
        "a connection left in a transaction must not be reused"
    );

    // A kept connection the server closed while it waited is not handed out.
    let kept = backend_pid(&env, "alice", &alice);
    assert_eq!(kept, after, "the connection is kept between sessions");
    let killed = env
        .pg
        .query_scalar(&format!("select pg_terminate_backend({kept})"));
    assert_eq!(killed, "t");
    wait_for_scalar(
        &env.pg,
        &format!("select count(*) from pg_stat_activity where pid = {kept}"),
        "0",
        "the terminated backend to exit",
    );
    let fresh = backend_pid(&env, "alice", &alice);
    assert_ne!(fresh, kept, "a closed connection must not be reused");

    // SET ROLE changes a parameter the server reports (is_superuser); DISCARD ALL changes it
    // back and the server says so, which the gateway takes as a reason not to keep the
    // connection: the parameters a later client would be shown must be the server's.
    let role_pid = backend_pid_then(&env, "alice", &alice, &["set role pg_read_all_data"]);
    assert_eq!(role_pid, fresh, "the kept connection was used");
    let after_role = backend_pid(&env, "alice", &alice);
    assert_ne!(
        after_role, role_pid,
        "a connection whose reset changed a parameter must not be kept"
    );

    // The audit says which sessions got a kept connection.
    let lines = env.wait_audit("session_opened events", |ls| {
        ls.iter().filter(|l| kind_is(l, "session_opened")).count() >= 9
    });
    let reused: Vec<String> = lines
        .iter()
        .filter(|l| kind_is(l, "session_opened"))
        .filter_map(|l| field(l, "upstream_reused"))
        .collect();
    assert_eq!(
        reused,
        ["false", "true", "true", "true", "false", "true", "false", "true", "false"],
        "audit:\n{}",
        lines.join("\n")
    );
}

/// A worker busy polls while it serves one session, and stops after polls that find nothing (a
/// statement slower than the budget): neither may lose, reorder or hold up a message. The longest
/// budget, so the polls overlap as much as they can with the traffic.
#[test]
fn busy_polling_relays_a_lone_session_and_a_crowd_unchanged() {
    let pg = start_cluster();
    let mut spec = PolicySpec::new(&pg, Upstream::Disable);
    spec.relay_busy_poll_us = Some(1000);
    let http_port = free_port();
    spec.http_port = Some(http_port);
    let env = Env::start_with(pg, spec);
    let token = env.token("alice");
    let before = BusyPolls::scrape(http_port);
    assert_eq!(before.found + before.missed, 0, "no session yet, no poll");

    let out = pgbench(env.port, "alice", "db", &token, &["-i", "-s", "1", "-q"]);
    assert_ok(&out, "pgbench -i -s 1");
    // One client: its worker polls between the query and the answer and between the answer and
    // the next query (a local server answers a primary-key select well within 1 ms, so polls
    // find it). Then four clients, over both workers.
    let before_one = BusyPolls::scrape(http_port);
    let args = ["-S", "-t", "300", "-c", "1", "-M", "simple"];
    assert_ok(
        &pgbench(env.port, "alice", "db", &token, &args),
        "pgbench -c 1",
    );
    let after_one = BusyPolls::scrape(http_port);
    assert!(
        after_one.found > before_one.found && after_one.micros > before_one.micros,
        "a lone busy session is polled for: {before_one:?} then {after_one:?}"
    );
    for clients in ["1", "4"] {
        for mode in ["simple", "prepared"] {
            let args = ["-S", "-t", "300", "-c", clients, "-M", mode];
            let out = pgbench(env.port, "alice", "db", &token, &args);
            assert_ok(&out, &format!("pgbench {args:?}"));
            let text = stdout(&out);
            let want = format!(
                "number of transactions actually processed: {}/",
                300 * clients.parse::<u32>().unwrap()
            );
            assert!(text.contains(&want), "pgbench {args:?}:\n{text}");
            assert!(
                text.contains("number of failed transactions: 0"),
                "pgbench {args:?}:\n{}",
                describe(&out)
            );
        }
    }

    // Statements slower than the budget: each poll misses, the worker backs off, and the
    // answers still come in order, as does a refusal between them (the session goes on after
    // it: psql must not stop at the error).
    let mut script = String::from("\\set ON_ERROR_STOP 0\n");
    for word in [
        "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    ] {
        script.push_str(&format!("select '{word}', pg_sleep(0.01);\n"));
    }
    script.push_str(
        "delete from pgbench_accounts;\nselect 'after', count(*) from pgbench_branches;\n",
    );
    let out = env.psql_in(
        "alice",
        &token,
        "disable",
        &["-At"],
        Some(script.as_bytes()),
    );
    let text = stdout(&out);
    let order: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        order,
        [
            "first|", "second|", "third|", "fourth|", "fifth|", "sixth|", "seventh|", "eighth|",
            "ninth|", "after|1"
        ],
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("42501"), "{}", describe(&out));
    assert_eq!(
        env.pg.query_scalar("select count(*) from pgbench_accounts"),
        "100000"
    );
    // Each 10 ms statement outlasted the 1 ms budget: polls that found nothing.
    let after_slow = BusyPolls::scrape(http_port);
    assert!(
        after_slow.missed > after_one.missed,
        "slow statements: {after_one:?} then {after_slow:?}"
    );
}

/// The busy-poll counters of `/metrics`.
#[derive(Debug)]
struct BusyPolls {
    found: u64,
    missed: u64,
    micros: u64,
}

/// `GET /metrics` from the gateway's HTTP endpoint: the response, headers and all.
fn scrape_metrics(http_port: u16) -> String {
    use std::io::{Read, Write};
    assert!(
        common::wait_for_port(http_port, Duration::from_secs(10)),
        "no HTTP endpoint on {http_port}"
    );
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", http_port)).expect("connect");
    conn.set_read_timeout(Some(COMMAND_TIMEOUT))
        .expect("timeout");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read /metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "/metrics: {text}");
    text
}

/// The value of the sample `name` (with its labels) in a `/metrics` text.
fn metric_value(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"));
    line[name.len()..].trim().parse().expect("a number")
}

impl BusyPolls {
    fn scrape(http_port: u16) -> BusyPolls {
        let text = scrape_metrics(http_port);
        let value = |name: &str| metric_value(&text, name);
        BusyPolls {
            found: value("portcullis_relay_busy_polls_total{outcome=\"found\"}") as u64,
            missed: value("portcullis_relay_busy_polls_total{outcome=\"missed\"}") as u64,
            micros: (value("portcullis_relay_busy_poll_seconds_total") * 1e6) as u64,
        }
    }
}

#[test]
fn a_kept_upstream_connection_is_closed_after_upstream_pool_idle() {
    let pg = start_cluster();
    let mut spec = PolicySpec::new(&pg, Upstream::Disable);
    spec.upstream_pool = Some(2);
    spec.upstream_pool_idle = Some("1s");
    let http_port = free_port();
    spec.http_port = Some(http_port);
    let env = Env::start_with(pg, spec);
    let alice = env.token("alice");
    let kept = "portcullis_upstream_pool_kept{target=\"db\"}";
    let first = backend_pid(&env, "alice", &alice);
    assert_eq!(
        backend_pid(&env, "alice", &alice),
        first,
        "taken again within the idle limit"
    );
    // The session's end hands the connection back after a DISCARD ALL: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&scrape_metrics(http_port), kept) != 1.0 {
        assert!(Instant::now() < deadline, "the connection was not kept");
        thread::sleep(Duration::from_millis(50));
    }
    // Unused for longer than the limit: no longer counted (pruned or not), closed, and the next
    // session gets a new backend.
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(metric_value(&scrape_metrics(http_port), kept), 0.0);
    assert_ne!(backend_pid(&env, "alice", &alice), first);
    // Of the three sessions, one was served by a kept connection.
    let reused = "portcullis_upstream_reused_total{target=\"db\"}";
    assert_eq!(metric_value(&scrape_metrics(http_port), reused), 1.0);
    let gone = format!("select count(*) from pg_stat_activity where pid = {first}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.pg.query_scalar(&gone) != "0" {
        assert!(
            Instant::now() < deadline,
            "backend {first} still there after its connection passed upstream_pool_idle"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_busy_upstream_connection_is_replaced_after_upstream_pool_lifetime() {
    let pg = start_cluster();
    let mut spec = PolicySpec::new(&pg, Upstream::Disable);
    spec.upstream_pool = Some(2);
    spec.upstream_pool_idle = Some("60s");
    spec.upstream_pool_lifetime = Some("3s");
    let env = Env::start_with(pg, spec);
    let alice = env.token("alice");
    // Sessions back to back: the connection never waits long, so only its age retires it.
    let mut pids = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        pids.push(backend_pid(&env, "alice", &alice));
    }
    assert_eq!(pids[0], pids[1], "reused while young: {pids:?}");
    let first = pids[0].clone();
    assert!(
        pids.iter().any(|p| *p != first),
        "still the first backend after its lifetime: {pids:?}"
    );
}

#[test]
fn without_upstream_pool_every_session_gets_its_own_backend() {
    let env = Env::start(Upstream::Disable);
    let alice = env.token("alice");
    let first = backend_pid(&env, "alice", &alice);
    let second = backend_pid(&env, "alice", &alice);
    assert_ne!(first, second);
}
