//! End to end approvals: real psql and pgbench hold statements in `portcullis serve` in front of
//! a real PostgreSQL cluster, and approvers decide through the gateway's HTTP API (spoken here
//! with a tiny std-only HTTP/1.1 client) or the `portcullis approvals` CLI. Every test checks the
//! database itself: a statement that was not approved must never have run. No timing asserts:
//! every wait is bounded and polls.

mod common;

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{
    describe, free_port, gateway_conninfo, gateway_exe, psql_command, run_with_timeout, stderr,
    stdout, unique_temp_dir, Gateway, PgCluster, COMMAND_TIMEOUT,
};

/// Longest any poll in this file waits for the gateway or a client to get somewhere.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// A minimal JSON reader (the API answers JSON; the tests add no crates)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    /// Numbers are kept as written.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at {} in {text:?}", p.i));
        }
        Ok(v)
    }

    /// `self[key]` for an object; `Null` when absent or not an object.
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or(&Json::Null),
            _ => &Json::Null,
        }
    }

    /// The string value of `key` ("" when absent or not a string).
    fn s(&self, key: &str) -> &str {
        match self.get(key) {
            Json::Str(s) => s,
            _ => "",
        }
    }

    fn arr(&self, key: &str) -> &[Json] {
        match self.get(key) {
            Json::Arr(v) => v,
            _ => &[],
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            None => Err("unexpected end".into()),
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let Json::Str(k) = self.value()? else {
                        return Err(format!("object key expected at {}", self.i));
                    };
                    self.ws();
                    if !self.eat(":") {
                        return Err(format!("':' expected at {}", self.i));
                    }
                    let v = self.value()?;
                    fields.push((k, v));
                    self.ws();
                    if self.eat("}") {
                        return Ok(Json::Obj(fields));
                    }
                    if !self.eat(",") {
                        return Err(format!("',' or '}}' expected at {}", self.i));
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    if self.eat("]") {
                        return Ok(Json::Arr(items));
                    }
                    if !self.eat(",") {
                        return Err(format!("',' or ']' expected at {}", self.i));
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut out: Vec<u8> = Vec::new();
                loop {
                    let Some(&b) = self.s.get(self.i) else {
                        return Err("unterminated string".into());
                    };
                    self.i += 1;
                    match b {
                        b'"' => {
                            return String::from_utf8(out)
                                .map(Json::Str)
                                .map_err(|e| e.to_string())
                        }
                        b'\\' => {
                            let Some(&e) = self.s.get(self.i) else {
                                return Err("unterminated escape".into());
                            };
                            self.i += 1;
                            match e {
                                b'n' => out.push(b'\n'),
                                b't' => out.push(b'\t'),
                                b'r' => out.push(b'\r'),
                                b'b' => out.push(8),
                                b'f' => out.push(12),
                                b'u' => {
                                    let hex = self
                                        .s
                                        .get(self.i..self.i + 4)
                                        .and_then(|h| std::str::from_utf8(h).ok())
                                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                                        .ok_or("bad \\u escape")?;
                                    self.i += 4;
                                    // Surrogates are not needed by these tests: keep a marker.
                                    let c = char::from_u32(hex).unwrap_or('\u{fffd}');
                                    let mut buf = [0u8; 4];
                                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                                }
                                other => out.push(other),
                            }
                        }
                        other => out.push(other),
                    }
                }
            }
            Some(_) if self.eat("null") => Ok(Json::Null),
            Some(_) if self.eat("true") => Ok(Json::Bool(true)),
            Some(_) if self.eat("false") => Ok(Json::Bool(false)),
            Some(_) => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                {
                    self.i += 1;
                }
                if start == self.i {
                    return Err(format!("unexpected byte at {start}"));
                }
                Ok(Json::Num(
                    String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client (one request per connection, `Connection: close`, read to EOF)
// ---------------------------------------------------------------------------------------------

struct HttpAnswer {
    status: u16,
    /// The header block, lines joined with "\n" (for Set-Cookie and friends).
    head: String,
    body: String,
}

impl HttpAnswer {
    fn json(&self) -> Json {
        Json::parse(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The value of the first header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `raw` bytes to 127.0.0.1:`port` and reads the answer to EOF (bounded).
fn http_raw(port: u16, raw: &[u8]) -> HttpAnswer {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to the HTTP endpoint on {port}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    s.write_all(raw)
        .unwrap_or_else(|e| panic!("writing the HTTP request: {e}"));
    let mut buf = Vec::new();
    // A reset after a complete answer (the server closing with unread input) is fine.
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete HTTP answer to {raw:?}: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {text:?}"));
    HttpAnswer {
        status,
        head: head.replace("\r\n", "\n"),
        body: body.to_string(),
    }
}

/// One HTTP request with `Connection: close`; `headers` are full `Name: value` lines.
fn http(port: u16, method: &str, path: &str, headers: &[String], body: &str) -> HttpAnswer {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    http_raw(port, req.as_bytes())
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// application/x-www-form-urlencoded value.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// What the tests vary in the policy (rule `ci-writes`, and where state lives).
#[derive(Clone)]
struct Opts {
    timeout: &'static str,
    approvals: u32,
    grant: Option<&'static str>,
    /// An absolute data_dir (for the restart test); default `./data` next to the policy.
    data_dir: Option<PathBuf>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            // Long enough never to fire in a test that does not want it to.
            timeout: "5m",
            approvals: 1,
            grant: None,
            data_dir: None,
        }
    }
}

const PASSWORD_FILE: &str = "upstream.pw";

/// alice and bob are DBAs and approvers; ci-bot is a service (owner alice) whose writes need a
/// DBA's approval (rule `ci-writes`); alice's own writes to `guarded` need approval too (rule
/// `guarded-writes`), so she can be a requester.
fn policy(pg: &PgCluster, db_port: u16, http_port: u16, o: &Opts) -> String {
    let data_dir = match &o.data_dir {
        Some(d) => d.to_string_lossy().into_owned(),
        None => "./data".into(),
    };
    let grant = o
        .grant
        .map(|g| format!("grant = \"{g}\"\n"))
        .unwrap_or_default();
    format!(
        "[gateway]\n\
         data_dir = \"{data_dir}\"\n\
         public_url = \"http://127.0.0.1:{http_port}\"\n\
         http = {{ listen = \"127.0.0.1:{http_port}\" }}\n\
         audit_flush_interval = \"50ms\"\n\n\
         [[identity]]\nname = \"alice\"\nkind = \"human\"\nroles = [\"dba\", \"approver\"]\n\n\
         [[identity]]\nname = \"bob\"\nkind = \"human\"\nroles = [\"dba\", \"approver\"]\n\n\
         [[identity]]\nname = \"ci-bot\"\nkind = \"service\"\nowner = \"alice\"\n\
         roles = [\"ci\"]\nmax_ttl = \"1h\"\n\n\
         [[target]]\n\
         name = \"db\"\n\
         listen = \"127.0.0.1:{db_port}\"\n\
         upstream = \"{upstream}\"\n\
         database = \"postgres\"\n\
         user = \"postgres\"\n\
         password_file = \"{PASSWORD_FILE}\"\n\
         upstream_tls = \"disable\"\n\
         default = \"block\"\n\n\
         [[rule]]\n\
         name = \"reads\"\n\
         who = [\"role:ci\", \"role:dba\"]\n\
         sql = [\"select\", \"show\", \"explain\", \"transaction\", \"set\"]\n\
         action = \"allow\"\n\n\
         [[rule]]\n\
         name = \"ci-writes\"\n\
         who = [\"role:ci\"]\n\
         sql = [\"insert\", \"update\", \"delete\"]\n\
         action = \"approve\"\n\
         approvers = [\"role:dba\"]\n\
         approvals = {approvals}\n\
         timeout = \"{timeout}\"\n\
         {grant}\n\
         [[rule]]\n\
         name = \"guarded-writes\"\n\
         who = [\"alice\"]\n\
         sql = [\"insert\", \"update\", \"delete\"]\n\
         tables = [\"guarded\"]\n\
         action = \"approve\"\n\
         approvers = [\"role:dba\"]\n\n\
         [[rule]]\n\
         name = \"dba-all\"\n\
         who = [\"role:dba\"]\n\
         action = \"allow\"\n",
        upstream = pg.addr(),
        approvals = o.approvals,
        timeout = o.timeout,
    )
}

// ---------------------------------------------------------------------------------------------
// One cluster + one gateway with its HTTP endpoint
// ---------------------------------------------------------------------------------------------

/// Field order matters: the gateway is dropped (killed) before the cluster.
struct Env {
    gw: Gateway,
    pg: PgCluster,
    policy: String,
    db_port: u16,
    http_port: u16,
    /// Approver tokens (`--scope approve`).
    alice_api: String,
    bob_api: String,
    /// A connect token for ci-bot on `db`.
    ci_token: String,
}

impl Env {
    fn start(o: Opts) -> Env {
        let pg = PgCluster::start();
        let out = pg.psql(
            "postgres",
            "create table t (id int); create table guarded (id int);",
        );
        assert!(out.status.success(), "setup failed:\n{}", describe(&out));
        let (db_port, http_port) = (free_port(), free_port());
        let policy = policy(&pg, db_port, http_port, &o);
        let gw = start_gateway(&pg, &policy);
        wait_http(http_port, &gw);
        let alice_api = approver_token(&gw, "alice");
        let bob_api = approver_token(&gw, "bob");
        let ci_token = gw.token("ci-bot", "db", &["--ttl", "30m"]);
        Env {
            gw,
            pg,
            policy,
            db_port,
            http_port,
            alice_api,
            bob_api,
            ci_token,
        }
    }

    /// psql as `identity` running `sql`, spawned (it may wait for an approval).
    fn spawn_psql(&self, identity: &str, token: &str, sql: &str) -> Client {
        let conninfo = gateway_conninfo(self.db_port, identity, "db", "disable");
        let mut cmd = psql_command(&conninfo, Some(token));
        cmd.args(["-v", "VERBOSITY=verbose", "-At", "-c", sql]);
        Client::spawn(cmd)
    }

    /// psql as ci-bot running `sql`, spawned.
    fn ci(&self, sql: &str) -> Client {
        self.spawn_psql("ci-bot", &self.ci_token, sql)
    }

    /// How many rows of `t` have this id, read directly from the cluster.
    fn t_count(&self, id: i32) -> String {
        self.pg
            .query_scalar(&format!("select count(*) from t where id = {id}"))
    }

    fn get(&self, token: &str, path: &str) -> HttpAnswer {
        http(self.http_port, "GET", path, &[bearer(token)], "")
    }

    fn post(&self, token: &str, path: &str, body: &str) -> HttpAnswer {
        http(self.http_port, "POST", path, &[bearer(token)], body)
    }

    /// GET /api/requests/ID as JSON (asserting 200).
    fn request(&self, id: &str) -> Json {
        let a = self.get(&self.bob_api, &format!("/api/requests/{id}"));
        assert_eq!(a.status, 200, "GET request {id}: {}", a.body);
        a.json()
    }

    /// Requests in `state` (pending, all, ...).
    fn requests(&self, state: &str) -> Vec<Json> {
        let a = self.get(&self.bob_api, &format!("/api/requests?state={state}"));
        assert_eq!(a.status, 200, "GET requests: {}", a.body);
        a.json().arr("requests").to_vec()
    }

    /// Polls (bounded) until a pending request with exactly this text exists; returns it.
    /// `client` is the process that should be waiting (its stderr goes into a failure message).
    fn wait_pending(&self, text: &str, client: &Client) -> Json {
        let deadline = Instant::now() + WAIT;
        loop {
            let list = self.requests("pending");
            if let Some(r) = list.iter().find(|r| r.s("text") == text) {
                return r.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no pending request for {text:?} after {WAIT:?}; pending: {list:?}\n\
                     --- client stderr ---\n{}\n--- gateway log ---\n{}",
                    client.stderr_now(),
                    self.gw.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls (bounded) until request `id` is in `state`; returns it.
    fn wait_state(&self, id: &str, state: &str) -> Json {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.request(id);
            if r.s("state") == state {
                return r;
            }
            if Instant::now() >= deadline {
                panic!(
                    "request {id} still {:?}, not {state:?}, after {WAIT:?}: {r:?}\n\
                     --- gateway log ---\n{}",
                    r.s("state"),
                    self.gw.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `portcullis approvals --url ... <args>` with `token` in PORTCULLIS_TOKEN.
    fn approvals_cli(&self, token: &str, args: &[&str]) -> Output {
        let url = format!("http://127.0.0.1:{}", self.http_port);
        let mut cmd = Command::new(gateway_exe());
        cmd.args(["approvals", "--url", &url])
            .args(args)
            .env("PORTCULLIS_TOKEN", token)
            .current_dir(&self.gw.dir);
        run_with_timeout(&mut cmd, None, COMMAND_TIMEOUT)
    }

    /// `portcullis audit export` as lines.
    fn audit(&self) -> String {
        let out = self.gw.cli(&["audit", "export"]);
        assert!(
            out.status.success(),
            "audit export failed:\n{}",
            describe(&out)
        );
        stdout(&out)
    }

    /// Polls (bounded) until the audit log has a `kind` event mentioning request `id`.
    fn wait_audit(&self, kind: &str, id: &str) {
        let deadline = Instant::now() + WAIT;
        let kind_field = format!("\"kind\":\"{kind}\"");
        loop {
            let audit = self.audit();
            if audit
                .lines()
                .any(|l| l.contains(&kind_field) && l.contains(id))
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!("no {kind} audit event for {id} after {WAIT:?}; audit:\n{audit}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_gateway(pg: &PgCluster, policy: &str) -> Gateway {
    Gateway::builder(policy)
        .secret(PASSWORD_FILE, &pg.password)
        .start()
}

/// Waits (bounded) until /healthz answers 200.
fn wait_http(port: u16, gw: &Gateway) {
    let deadline = Instant::now() + WAIT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let a = http(port, "GET", "/healthz", &[], "");
            assert_eq!(a.status, 200, "/healthz: {}", a.body);
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "HTTP endpoint not up on {port} after {WAIT:?}; log:\n{}",
                gw.log()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `portcullis token issue --identity NAME --scope approve --ttl 1h`.
fn approver_token(gw: &Gateway, identity: &str) -> String {
    let out = gw.cli(&[
        "token",
        "issue",
        "--identity",
        identity,
        "--scope",
        "approve",
        "--ttl",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "approver token for {identity}:\n{}",
        describe(&out)
    );
    let t = stdout(&out).trim().to_string();
    assert!(t.starts_with("pct_"), "not a token: {t:?}");
    t
}

// ---------------------------------------------------------------------------------------------
// A spawned client whose stderr can be read while it waits
// ---------------------------------------------------------------------------------------------

/// A running psql/pgbench; stderr and stdout are collected by threads so they can be looked at
/// before the process ends. Killed on drop.
struct Client {
    child: Option<Child>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    out: Arc<Mutex<Vec<u8>>>,
}

fn collect(mut r: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl Client {
    fn spawn(mut cmd: Command) -> Client {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let err = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(e) = child.stderr.take() {
            readers.push(collect(e, err.clone()));
        }
        if let Some(o) = child.stdout.take() {
            readers.push(collect(o, out.clone()));
        }
        Client {
            child: Some(child),
            err,
            readers,
            out,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits (bounded) until stderr contains `needle`; returns stderr.
    fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let e = self.stderr_now();
            if e.contains(needle) {
                return e;
            }
            if Instant::now() >= deadline {
                panic!("{needle:?} not on the client's stderr after {WAIT:?}:\n{e}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Is it still running?
    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits (bounded) for the exit; panics if it is still running after [`WAIT`].
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            let Some(child) = self.child.as_mut() else {
                panic!("client already reaped");
            };
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => panic!(
                    "client still running after {WAIT:?}; stderr so far:\n{}",
                    self.stderr_now()
                ),
                Err(e) => panic!("waiting for the client: {e}"),
            }
        };
        self.child = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let take = |b: &Arc<Mutex<Vec<u8>>>| {
            std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()))
        };
        Output {
            status,
            stdout: take(&self.out),
            stderr: take(&self.err),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
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
    assert!(
        out.status.success(),
        "kill -{sig} {pid}:\n{}",
        describe(&out)
    );
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", describe(out));
}

/// The held notice for request `id` of `rule`, as psql prints it.
fn notice(id: &str, rule: &str) -> String {
    format!("portcullis: statement held for approval (request {id}, rule {rule})")
}

/// Approves `id` as the holder of `token` through the API; asserts 200 and returns the request.
fn api_approve(env: &Env, token: &str, id: &str) -> Json {
    let a = env.post(token, &format!("/api/requests/{id}/approve"), "");
    assert_eq!(
        a.status,
        200,
        "approve {id}: {}\n--- gateway log ---\n{}",
        a.body,
        env.gw.log()
    );
    a.json()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn held_insert_runs_after_api_approval() {
    let env = Env::start(Opts::default());
    let sql = "insert into t values (99)";
    let client = env.ci(sql);

    let r = env.wait_pending(sql, &client);
    let id = r.s("id").to_string();
    assert!(id.starts_with("apr_"), "request id {id:?}");
    assert_eq!(r.s("requester"), "ci-bot", "{r:?}");
    assert_eq!(r.s("rule"), "ci-writes", "{r:?}");
    assert_eq!(r.s("target"), "db", "{r:?}");
    assert!(r.arr("approvals").is_empty(), "{r:?}");

    let err = client.wait_stderr(&notice(&id, "ci-writes"));
    assert!(
        err.contains(&format!("http://127.0.0.1:{}/requests/{id}", env.http_port))
            && err.contains(&format!("portcullis approvals approve {id}")),
        "the notice's DETAIL should say where and how to approve:\n{err}"
    );
    assert_eq!(env.t_count(99), "0", "the held insert ran before approval");

    let decided = api_approve(&env, &env.bob_api, &id);
    assert_eq!(decided.s("state"), "approved", "{decided:?}");
    let out = client.finish();
    assert_ok(&out, "the approved insert");
    assert!(stdout(&out).contains("INSERT 0 1"), "{}", describe(&out));
    assert_eq!(env.t_count(99), "1", "the approved insert did not run");

    let r = env.request(&id);
    assert_eq!(r.s("state"), "approved", "{r:?}");
    assert_eq!(r.s("decided_by"), "bob", "{r:?}");
    let voters: Vec<&str> = r.arr("approvals").iter().map(|a| a.s("by")).collect();
    assert_eq!(voters, ["bob"], "{r:?}");
    env.wait_audit("approval_requested", &id);
    env.wait_audit("approval_approved", &id);
}

#[test]
fn held_statement_runs_after_cli_approval() {
    let env = Env::start(Opts::default());
    let sql = "update t set id = 5 where id = 4";
    env.pg.query_scalar("insert into t values (4) returning id");
    let client = env.ci(sql);
    let r = env.wait_pending(sql, &client);
    let id = r.s("id").to_string();
    client.wait_stderr(&notice(&id, "ci-writes"));

    let list = env.approvals_cli(&env.alice_api, &["list"]);
    assert_ok(&list, "approvals list");
    let first = stdout(&list).lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with(&id) && first.contains("pending") && first.contains("ci-bot"),
        "approvals list should show {id} first:\n{}",
        describe(&list)
    );
    let show = env.approvals_cli(&env.alice_api, &["show", &id]);
    assert_ok(&show, "approvals show");
    assert!(stdout(&show).contains(sql), "{}", describe(&show));
    assert_eq!(env.t_count(5), "0", "the held update ran before approval");

    let approve = env.approvals_cli(&env.alice_api, &["approve", &id]);
    assert_ok(&approve, "approvals approve");
    let out = client.finish();
    assert_ok(&out, "the approved update");
    assert_eq!(env.t_count(5), "1", "the approved update did not run");
    assert_eq!(env.t_count(4), "0");
    let r = env.request(&id);
    assert_eq!(
        (r.s("state"), r.s("decided_by")),
        ("approved", "alice"),
        "{r:?}"
    );

    // Deciding again is refused with 409 and the CLI says so.
    let again = env.approvals_cli(&env.bob_api, &["approve", &id]);
    assert!(
        !again.status.success() && stderr(&again).contains("409"),
        "approving a decided request again:\n{}",
        describe(&again)
    );
}

#[test]
fn deny_gives_the_reason_and_nothing_runs() {
    let env = Env::start(Opts::default());
    let sql = "insert into t values (99)";
    let client = env.ci(sql);
    let id = env.wait_pending(sql, &client).s("id").to_string();
    client.wait_stderr(&notice(&id, "ci-writes"));

    let a = env.post(
        &env.bob_api,
        &format!("/api/requests/{id}/deny"),
        &format!("reason={}", form_encode("not today")),
    );
    assert_eq!(a.status, 200, "deny: {}", a.body);
    let out = client.finish();
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("42501")
            && err.contains(&format!("request {id} was denied by bob: not today")),
        "psql should fail with 42501 and the reason:\n{}",
        describe(&out)
    );
    assert_eq!(env.t_count(99), "0", "a denied insert ran");
    let r = env.request(&id);
    assert_eq!(
        (r.s("state"), r.s("decided_by"), r.s("reason")),
        ("denied", "bob", "not today"),
        "{r:?}"
    );
    env.wait_audit("approval_denied", &id);
}

#[test]
fn timeout_refuses_and_nothing_runs() {
    let env = Env::start(Opts {
        timeout: "3s",
        ..Opts::default()
    });
    let sql = "insert into t values (99)";
    let client = env.ci(sql);
    let id = env.wait_pending(sql, &client).s("id").to_string();
    let out = client.finish();
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("42501")
            && err.contains(&format!("approval request {id} timed out")),
        "psql should fail with a timeout:\n{}",
        describe(&out)
    );
    assert_eq!(env.t_count(99), "0", "a timed-out insert ran");
    env.wait_state(&id, "timed_out");
    // Too late to approve now.
    let a = env.post(&env.bob_api, &format!("/api/requests/{id}/approve"), "");
    assert_eq!(a.status, 409, "approving a timed-out request: {}", a.body);
    assert_eq!(env.t_count(99), "0");
}

#[test]
fn self_approval_is_refused() {
    let env = Env::start(Opts::default());
    let alice = env.gw.token("alice", "db", &["--ttl", "30m"]);
    let sql = "insert into guarded values (1)";
    let client = env.spawn_psql("alice", &alice, sql);
    let r = env.wait_pending(sql, &client);
    let id = r.s("id").to_string();
    assert_eq!(
        (r.s("requester"), r.s("rule")),
        ("alice", "guarded-writes"),
        "{r:?}"
    );

    let a = env.post(&env.alice_api, &format!("/api/requests/{id}/approve"), "");
    assert_eq!(a.status, 403, "self-approval: {}", a.body);
    assert!(
        a.json()
            .s("error")
            .contains("you made this request, so you can't approve or deny it"),
        "{}",
        a.body
    );
    // Nor deny it.
    let a = env.post(
        &env.alice_api,
        &format!("/api/requests/{id}/deny"),
        "reason=mine",
    );
    assert_eq!(a.status, 403, "self-denial: {}", a.body);
    let cli = env.approvals_cli(&env.alice_api, &["approve", &id]);
    assert!(
        !cli.status.success() && stderr(&cli).contains("403"),
        "self-approval through the CLI:\n{}",
        describe(&cli)
    );
    assert_eq!(env.request(&id).s("state"), "pending");
    assert_eq!(
        env.pg.query_scalar("select count(*) from guarded"),
        "0",
        "a self-approved insert ran"
    );

    api_approve(&env, &env.bob_api, &id);
    assert_ok(&client.finish(), "alice's insert approved by bob");
    assert_eq!(env.pg.query_scalar("select count(*) from guarded"), "1");
    assert_eq!(env.request(&id).s("decided_by"), "bob");
}

#[test]
fn two_approvals_required() {
    let env = Env::start(Opts {
        approvals: 2,
        ..Opts::default()
    });
    let sql = "insert into t values (99)";
    let client = env.ci(sql);
    let r = env.wait_pending(sql, &client);
    let id = r.s("id").to_string();
    assert_eq!(r.get("required"), &Json::Num("2".into()), "{r:?}");

    let after_bob = api_approve(&env, &env.bob_api, &id);
    assert_eq!(after_bob.s("state"), "pending", "{after_bob:?}");
    // The same approver twice doesn't count twice.
    let a = env.post(&env.bob_api, &format!("/api/requests/{id}/approve"), "");
    assert_eq!(a.status, 409, "bob approving twice: {}", a.body);
    let r = env.request(&id);
    assert_eq!(r.s("state"), "pending", "{r:?}");
    assert_eq!(r.arr("approvals").len(), 1, "{r:?}");
    assert_eq!(env.t_count(99), "0", "ran after one of two approvals");
    let mut client = client;
    assert!(client.running(), "psql ended after one of two approvals");

    api_approve(&env, &env.alice_api, &id);
    assert_ok(&client.finish(), "the insert after two approvals");
    assert_eq!(env.t_count(99), "1");
    let r = env.request(&id);
    let mut voters: Vec<&str> = r.arr("approvals").iter().map(|a| a.s("by")).collect();
    voters.sort_unstable();
    assert_eq!((r.s("state"), voters), ("approved", vec!["alice", "bob"]));
}

#[test]
fn grant_window_lets_the_same_statement_through_and_a_changed_one_waits() {
    let env = Env::start(Opts {
        grant: Some("5m"),
        ..Opts::default()
    });
    let sql = "insert into t values (10)";
    let client = env.ci(sql);
    let id = env.wait_pending(sql, &client).s("id").to_string();
    api_approve(&env, &env.bob_api, &id);
    assert_ok(&client.finish(), "the first, approved insert");
    assert_eq!(env.t_count(10), "1");

    // The same text runs at once, without a notice.
    let out = env.ci(sql).finish();
    assert_ok(&out, "the same insert inside the grant window");
    assert!(
        !stderr(&out).contains("held for approval"),
        "the granted statement was held:\n{}",
        describe(&out)
    );
    assert_eq!(env.t_count(10), "2", "the granted statement did not run");

    let grants = env.get(&env.bob_api, "/api/grants");
    assert_eq!(grants.status, 200, "{}", grants.body);
    let grants = grants.json();
    let grant = grants
        .arr("grants")
        .iter()
        .find(|g| g.s("text") == sql)
        .unwrap_or_else(|| panic!("no grant for {sql:?}: {grants:?}"))
        .clone();
    assert_eq!(
        (grant.s("identity"), grant.s("target")),
        ("ci-bot", "db"),
        "{grant:?}"
    );

    // A changed statement asks again.
    let other = "insert into t values (11)";
    let client = env.ci(other);
    let id2 = env.wait_pending(other, &client).s("id").to_string();
    client.wait_stderr(&notice(&id2, "ci-writes"));
    assert_eq!(
        env.t_count(11),
        "0",
        "a changed statement ran under the grant"
    );
    let a = env.post(
        &env.bob_api,
        &format!("/api/requests/{id2}/deny"),
        "reason=no",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!client.finish().status.success());
    assert_eq!(env.t_count(11), "0");

    // Revoked: the first text is held again.
    let a = env.post(
        &env.alice_api,
        &format!("/api/grants/{}/revoke", grant.s("id")),
        "",
    );
    assert_eq!(a.status, 200, "revoke grant: {}", a.body);
    let grants = env.get(&env.bob_api, "/api/grants").json();
    assert!(
        grants.arr("grants").iter().all(|g| g.s("text") != sql),
        "the revoked grant is still listed: {grants:?}"
    );
    let client = env.ci(sql);
    let id3 = env.wait_pending(sql, &client).s("id").to_string();
    assert_ne!(id3, id);
    client.wait_stderr(&notice(&id3, "ci-writes"));
    assert_eq!(env.t_count(10), "2", "ran after the grant was revoked");
    drop(client);
    env.wait_state(&id3, "abandoned");
    assert_eq!(env.t_count(10), "2");
}

#[test]
fn extended_protocol_execute_is_held_with_parameters() {
    let env = Env::start(Opts::default());
    let script = env.gw.dir.join("insert.sql");
    fs::write(&script, "\\set v 7\ninsert into t values (:v);\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
    let mut cmd = Command::new("pgbench");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGSSLMODE", "disable")
        .env("PGPASSWORD", &env.ci_token)
        .args(["-h", "127.0.0.1", "-p", &env.db_port.to_string()])
        .args(["-U", "ci-bot", "-M", "extended", "-n", "-t", "1", "-f"])
        .arg(&script)
        .arg("db");
    let client = Client::spawn(cmd);

    let sql = "insert into t values ($1);";
    let r = {
        // pgbench may or may not keep the trailing ';' in the text it sends.
        let deadline = Instant::now() + WAIT;
        loop {
            let list = env.requests("pending");
            if let Some(r) = list
                .iter()
                .find(|r| r.s("text").trim_end_matches(';') == sql.trim_end_matches(';'))
            {
                break r.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no pending request for pgbench's insert: {list:?}\n--- pgbench ---\n{}",
                    client.stderr_now()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    };
    let id = r.s("id").to_string();
    assert_eq!(
        r.arr("params"),
        [Json::Str("7".into())],
        "the bound parameters: {r:?}"
    );
    assert_eq!(r.s("requester"), "ci-bot");
    assert_eq!(env.t_count(7), "0", "the held Execute ran before approval");

    api_approve(&env, &env.bob_api, &id);
    let out = client.finish();
    assert_ok(&out, "pgbench after approval");
    assert!(
        stdout(&out).contains("number of failed transactions: 0"),
        "{}",
        describe(&out)
    );
    assert_eq!(env.t_count(7), "1", "the approved Execute did not run");
}

#[test]
fn cancel_withdraws_a_held_statement() {
    let env = Env::start(Opts::default());
    let sql = "insert into t values (99)";
    let client = env.ci(sql);
    let id = env.wait_pending(sql, &client).s("id").to_string();
    client.wait_stderr(&notice(&id, "ci-writes"));

    kill("INT", client.pid());
    let out = client.finish();
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("canceling statement due to user request")
            && err.contains(&format!("approval request {id} withdrawn")),
        "psql after SIGINT:\n{}",
        describe(&out)
    );
    let r = env.wait_state(&id, "abandoned");
    assert!(r.get("decided_by") == &Json::Null, "{r:?}");
    // Withdrawn means withdrawn: a late approval is refused and nothing runs.
    let a = env.post(&env.bob_api, &format!("/api/requests/{id}/approve"), "");
    assert_eq!(a.status, 409, "approving a withdrawn request: {}", a.body);
    assert_eq!(env.t_count(99), "0", "a cancelled insert ran");
}

#[test]
fn client_disconnect_abandons_the_request() {
    let env = Env::start(Opts::default());
    let sql = "insert into t values (99)";
    let client = env.ci(sql);
    let id = env.wait_pending(sql, &client).s("id").to_string();
    client.wait_stderr(&notice(&id, "ci-writes"));

    kill("KILL", client.pid());
    let out = client.finish();
    assert!(!out.status.success(), "{}", describe(&out));
    env.wait_state(&id, "abandoned");
    env.wait_audit("approval_abandoned", &id);
    let a = env.post(&env.bob_api, &format!("/api/requests/{id}/approve"), "");
    assert_eq!(a.status, 409, "approving an abandoned request: {}", a.body);
    assert_eq!(env.t_count(99), "0", "an abandoned insert ran");
}

/// Removes a directory on drop (the restart test's own data_dir).
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if std::env::var_os("PORTCULLIS_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn restart_keeps_history_and_abandons_pending() {
    // The harness removes a gateway's dir when it stops, so the state lives in a dir of ours
    // that both gateway runs name by its absolute path.
    let state = DirGuard(unique_temp_dir("apr-state"));
    let env = Env::start(Opts {
        data_dir: Some(state.0.join("data")),
        ..Opts::default()
    });

    let decided_sql = "insert into t values (50)";
    let client = env.ci(decided_sql);
    let decided = env.wait_pending(decided_sql, &client).s("id").to_string();
    api_approve(&env, &env.bob_api, &decided);
    assert_ok(&client.finish(), "the approved insert");

    let pending_sql = "insert into t values (51)";
    let waiting = env.ci(pending_sql);
    let pending = env.wait_pending(pending_sql, &waiting).s("id").to_string();
    waiting.wait_stderr(&notice(&pending, "ci-writes"));

    let Env {
        gw,
        pg,
        policy,
        http_port,
        bob_api,
        ..
    } = env;
    let stopped = gw.stop();
    // The waiting psql loses its connection.
    let out = waiting.finish();
    assert!(
        !out.status.success(),
        "psql survived the gateway:\n{}\n--- gateway log ---\n{}",
        describe(&out),
        stopped.log
    );
    assert_eq!(
        pg.query_scalar("select count(*) from t where id = 51"),
        "0",
        "the pending insert ran when the gateway stopped"
    );

    let gw2 = start_gateway(&pg, &policy);
    wait_http(http_port, &gw2);
    // Tokens live in the same store, so bob's approver token still works.
    let a = http(
        http_port,
        "GET",
        "/api/requests?state=all",
        &[bearer(&bob_api)],
        "",
    );
    assert_eq!(a.status, 200, "{}\n--- log ---\n{}", a.body, gw2.log());
    let all = a.json();
    let find = |id: &str| {
        all.arr("requests")
            .iter()
            .find(|r| r.s("id") == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed after the restart: {all:?}"))
    };
    let d = find(&decided);
    assert_eq!(
        (d.s("state"), d.s("decided_by"), d.s("text")),
        ("approved", "bob", decided_sql),
        "{d:?}"
    );
    let p = find(&pending);
    assert_eq!(p.s("state"), "abandoned", "{p:?}");
    assert_eq!(p.s("text"), pending_sql);
    let a = http(
        http_port,
        "POST",
        &format!("/api/requests/{pending}/approve"),
        &[bearer(&bob_api)],
        "",
    );
    assert_eq!(
        a.status, 409,
        "approving a request abandoned by a restart: {}",
        a.body
    );
    assert_eq!(pg.query_scalar("select count(*) from t where id = 50"), "1");
    assert_eq!(pg.query_scalar("select count(*) from t where id = 51"), "0");
    drop(gw2);
    drop(pg);
    drop(state);
}

#[test]
fn http_endpoint_refuses_bad_auth_and_csrf() {
    let env = Env::start(Opts::default());
    let port = env.http_port;

    let a = http(port, "GET", "/api/requests", &[], "");
    assert_eq!(a.status, 401, "no token: {}", a.body);
    let a = env.get(
        "pct_thisisnotatokenthisisnotatokenthisisnotatoken",
        "/api/requests",
    );
    assert_eq!(a.status, 401, "wrong token: {}", a.body);
    let a = env.get(&env.ci_token, "/api/requests");
    assert_eq!(a.status, 401, "a connect-scope token as bearer: {}", a.body);
    let alice_connect = env.gw.token("alice", "db", &[]);
    let a = env.get(&alice_connect, "/api/requests");
    assert_eq!(a.status, 401, "an approver's connect token: {}", a.body);

    let sql = "insert into t values (99)";
    let client = env.ci(sql);
    let id = env.wait_pending(sql, &client).s("id").to_string();

    // Unauthenticated and wrongly authenticated approvals change nothing.
    let a = http(
        port,
        "POST",
        &format!("/api/requests/{id}/approve"),
        &[],
        "",
    );
    assert_eq!(a.status, 401, "{}", a.body);
    let a = env.post(&env.ci_token, &format!("/api/requests/{id}/approve"), "");
    assert_eq!(a.status, 401, "{}", a.body);

    // Log in to the web page with bob's approver token.
    let login = http(
        port,
        "POST",
        "/login",
        &[],
        &format!("token={}", form_encode(&env.bob_api)),
    );
    let cookie = login
        .header("Set-Cookie")
        .and_then(|c| c.split(';').next())
        .filter(|c| c.starts_with("portcullis_session="))
        .unwrap_or_else(|| {
            panic!(
                "no session cookie from /login: {} {}",
                login.status, login.head
            )
        })
        .to_string();
    assert!((300..400).contains(&login.status), "login: {}", login.head);
    let cookie_header = format!("Cookie: {cookie}");
    let page = http(port, "GET", "/", std::slice::from_ref(&cookie_header), "");
    assert!(
        page.status == 200 && page.body.contains(&id) && page.body.contains(sql),
        "the logged-in page should list {id}: {} {}",
        page.status,
        page.body
    );

    let form_path = format!("/requests/{id}/approve");
    let a = http(
        port,
        "POST",
        &form_path,
        std::slice::from_ref(&cookie_header),
        "",
    );
    assert_eq!(a.status, 403, "form post without csrf: {}", a.body);
    let a = http(
        port,
        "POST",
        &form_path,
        std::slice::from_ref(&cookie_header),
        "csrf=0123456789abcdef",
    );
    assert_eq!(a.status, 403, "form post with a wrong csrf: {}", a.body);
    assert_eq!(env.request(&id).s("state"), "pending");
    assert_eq!(env.t_count(99), "0", "a CSRF-less post approved the insert");

    // Plumbing and hostile input.
    let a = http(port, "GET", "/healthz", &[], "");
    assert_eq!((a.status, a.body.trim()), (200, "ok"));
    let a = http(port, "GET", "/metrics", &[], "");
    assert!(
        a.status == 200 && a.body.contains("portcullis_approvals_pending"),
        "/metrics: {} {}",
        a.status,
        a.body
    );
    assert!(
        a.body
            .lines()
            .any(|l| l.starts_with("portcullis_approvals_pending") && l.trim_end().ends_with(" 1")),
        "one request is pending:\n{}",
        a.body
    );
    let a = http(port, "GET", "/no/such/route", &[], "");
    assert_eq!(a.status, 404, "{}", a.body);
    let a = env.get(&env.bob_api, "/api/nothing-here");
    assert_eq!(a.status, 404, "{}", a.body);
    let a = env.get(&env.bob_api, "/api/requests/apr_000000000000");
    assert_eq!(a.status, 404, "{}", a.body);
    for (garbage, want) in [
        (&b"THIS IS NOT HTTP\r\n\r\n"[..], 400),
        (b"GET\r\n\r\n", 400),
        (b"GET  /healthz  HTTP/1.1\r\n\r\n", 400),
        (b"GET healthz HTTP/1.1\r\n\r\n", 400),
        (b"\x00\x01\x02\x03\r\n\r\n", 400),
        // Well formed, but a version nobody speaks.
        (b"GET /healthz HTTP/9.9\r\n\r\n", 505),
    ] {
        let a = http_raw(port, garbage);
        assert_eq!(
            a.status,
            want,
            "malformed request line {:?}: {} {}",
            String::from_utf8_lossy(garbage),
            a.head,
            a.body
        );
        let ok = http(port, "GET", "/healthz", &[], "");
        assert_eq!(
            ok.status,
            200,
            "the endpoint stopped serving after {:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    assert_eq!(env.request(&id).s("state"), "pending");

    // The same session with the page's csrf works (so the 403s were about the csrf alone).
    let page = http(port, "GET", "/", std::slice::from_ref(&cookie_header), "");
    let csrf = page
        .body
        .split("name=csrf value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no csrf input on the page: {}", page.body))
        .to_string();
    let a = http(
        port,
        "POST",
        &format!("/requests/{id}/deny"),
        std::slice::from_ref(&cookie_header),
        &format!(
            "csrf={}&reason={}",
            form_encode(&csrf),
            form_encode("csrf ok")
        ),
    );
    assert!(
        (300..400).contains(&a.status),
        "deny with csrf: {} {}",
        a.head,
        a.body
    );
    let out = client.finish();
    assert!(
        !out.status.success() && stderr(&out).contains("denied by bob: csrf ok"),
        "{}",
        describe(&out)
    );
    assert_eq!(env.t_count(99), "0");
}
