//! Real browser: Debian's headless Chromium, driven by playwright-core (tests/browser/approve.mjs),
//! signs in to the approvals page with alice's approver token, sees ci-bot's held INSERT, clicks
//! "Approve", and the psql that was waiting gets its statement run. Checked against the database.
//!
//! Needs `/usr/bin/chromium` (Debian package `chromium`) and `tests/browser/node_modules`
//! (`npm ci --prefix tests/browser`); `.ci/run` installs both. When they are missing the test
//! fails and says so: it never passes without having driven a browser.
//!
//! Set `PORTCULLIS_SCREENSHOT=/path/page.png` to keep the screenshot of the page with the pending
//! request (docs/approvals.png is made that way, with `PORTCULLIS_SCREENSHOT_VIEWPORT=480x400`: the
//! full-page screenshot grows to the content's height).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    describe, free_port, gateway_conninfo, psql_command, run_with_timeout, stderr, stdout, Gateway,
    PgCluster,
};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The statement ci-bot runs; the approve rule holds it.
const STATEMENT: &str = "insert into t values (7)";
/// How long to wait for the held request to show up in the API.
const REQUEST_WAIT: Duration = Duration::from_secs(20);
/// Bound on the whole browser run (approve.mjs has its own 20 s step timeouts and a watchdog).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);
/// How long psql may take to finish once the request is approved.
const PSQL_FINISH: Duration = Duration::from_secs(30);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails (never skips) when the browser or the driver is not installed.
fn require_browser_tools() {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (Debian package `chromium`)"));
    }
    let driver = browser_dir().join("node_modules/playwright-core/package.json");
    if !driver.exists() {
        missing.push(format!(
            "{} (npm package playwright-core)",
            driver.display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => missing.push(format!("a working node ({})", describe(&out))),
        Err(e) => missing.push(format!("node on PATH ({e})")),
    }
    assert!(
        missing.is_empty(),
        "the real-browser test needs {}.\nRun `bash .ci/run` (as root), or install them by hand: \
         `apt-get install chromium` and `npm ci --prefix tests/browser`.",
        missing.join(", ")
    );
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client for the JSON API (std only; the gateway is on loopback, plain HTTP)
// ---------------------------------------------------------------------------------------------

/// GET `path` with a bearer token; returns (status, body). `Connection: close`, bounded.
fn http_get(addr: SocketAddr, path: &str, bearer: &str) -> Result<(u16, String), String> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let limit = Some(Duration::from_secs(10));
    tcp.set_read_timeout(limit)
        .and_then(|()| tcp.set_write_timeout(limit))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    tcp.take(4 << 20)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:"))
    {
        return Err(format!("unexpected chunked answer: {head:?}"));
    }
    Ok((status, body.to_string()))
}

/// The `"id":"apr_..."` values in a /api/requests answer (ids are `apr_` + alphanumerics).
fn request_ids(json: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find("\"id\":\"apr_") {
        let tail = &rest[at + "\"id\":\"".len()..];
        let end = tail
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(tail.len());
        ids.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    ids
}

/// Polls GET /api/requests?state=pending until exactly one request is pending; returns its id.
fn wait_for_pending_request(
    addr: SocketAddr,
    token: &str,
    psql: &mut Child,
    gw: &Gateway,
) -> String {
    let deadline = Instant::now() + REQUEST_WAIT;
    loop {
        if let Ok(Some(status)) = psql.try_wait() {
            panic!("psql exited ({status}) before its statement was held");
        }
        let last = match http_get(addr, "/api/requests?state=pending", token) {
            Ok((200, body)) => {
                let ids = request_ids(&body);
                match ids.as_slice() {
                    [one] => {
                        assert!(
                            body.contains("\"requester\":\"ci-bot\"")
                                && body.contains(&format!("\"text\":\"{STATEMENT}\"")),
                            "the pending request is not ci-bot's {STATEMENT:?}: {body}"
                        );
                        return one.clone();
                    }
                    [] => body,
                    many => panic!("expected one pending request, got {many:?}: {body}"),
                }
            }
            Ok((status, body)) => format!("HTTP {status}: {body}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!(
                "no pending request after {REQUEST_WAIT:?}; last answer: {last}\n--- log ---\n{}",
                gw.log()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

fn policy(pg: &PgCluster, db_port: u16, http_port: u16) -> String {
    format!(
        "[gateway]\n\
         data_dir = \"./data\"\n\
         public_url = \"http://127.0.0.1:{http_port}\"\n\
         http = {{ listen = \"127.0.0.1:{http_port}\" }}\n\
         audit_flush_interval = \"50ms\"\n\n\
         [[identity]]\n\
         name = \"alice\"\n\
         kind = \"human\"\n\
         roles = [\"dba\"]\n\n\
         [[identity]]\n\
         name = \"ci-bot\"\n\
         kind = \"service\"\n\
         owner = \"alice\"\n\
         roles = [\"ci\"]\n\
         max_ttl = \"1h\"\n\n\
         [[target]]\n\
         name = \"db\"\n\
         listen = \"127.0.0.1:{db_port}\"\n\
         upstream = \"{upstream}\"\n\
         database = \"postgres\"\n\
         user = \"postgres\"\n\
         password_file = \"upstream.pw\"\n\
         upstream_tls = \"disable\"\n\
         default = \"block\"\n\n\
         [[rule]]\n\
         name = \"reads\"\n\
         who = [\"role:ci\", \"role:dba\"]\n\
         sql = [\"select\", \"show\", \"transaction\", \"set\"]\n\
         action = \"allow\"\n\n\
         [[rule]]\n\
         name = \"ci-writes-need-a-dba\"\n\
         who = [\"role:ci\"]\n\
         sql = [\"insert\", \"update\", \"delete\"]\n\
         action = \"approve\"\n\
         approvers = [\"role:dba\"]\n\
         timeout = \"5m\"\n",
        upstream = pg.addr(),
    )
}

#[test]
fn a_browser_approval_lets_the_waiting_psql_statement_run() {
    require_browser_tools();

    let pg = PgCluster::start();
    let setup = pg.psql("postgres", "create table t (id int primary key)");
    assert!(setup.status.success(), "setup:\n{}", describe(&setup));

    let db_port = free_port();
    let http_port = free_port();
    let gw = Gateway::builder(&policy(&pg, db_port, http_port))
        .secret("upstream.pw", &pg.password)
        .start();
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));

    let ci_token = gw.token("ci-bot", "db", &["--ttl", "10m"]);
    let approver = {
        let out = gw.cli(&[
            "token",
            "issue",
            "--identity",
            "alice",
            "--scope",
            "approve",
            "--ttl",
            "1h",
        ]);
        assert!(out.status.success(), "approver token:\n{}", describe(&out));
        stdout(&out).trim().to_string()
    };

    // ci-bot's psql: the INSERT is held, so psql waits (it prints the NOTICE on stderr).
    let psql = psql_command(
        &gateway_conninfo(db_port, "ci-bot", "db", "disable"),
        Some(&ci_token),
    )
    .args(["-c", STATEMENT])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("spawning psql: {e}"));
    let mut psql = KillOnDrop(Some(psql));

    let id = wait_for_pending_request(http, &approver, psql.child(), &gw);
    assert_eq!(
        pg.query_scalar("select count(*) from t where id = 7"),
        "0",
        "the held statement ran before it was approved"
    );

    // The browser does the approving.
    let screenshot = std::env::var_os("PORTCULLIS_SCREENSHOT");
    let viewport = std::env::var("PORTCULLIS_SCREENSHOT_VIEWPORT").unwrap_or("1024x768".into());
    let mut node = Command::new("node");
    node.current_dir(browser_dir())
        .arg("approve.mjs")
        .arg("--url")
        .arg(format!("http://127.0.0.1:{http_port}/"))
        .arg("--request")
        .arg(&id)
        .arg("--statement")
        .arg(STATEMENT)
        .arg("--viewport")
        .arg(&viewport)
        .env("PORTCULLIS_TOKEN", &approver);
    if let Some(path) = &screenshot {
        node.arg("--screenshot").arg(path);
    }
    let browser = run_with_timeout(&mut node, None, BROWSER_TIMEOUT);
    assert!(
        browser.status.success(),
        "the browser approval failed:\n{}\n--- gateway log ---\n{}",
        describe(&browser),
        gw.log()
    );
    assert!(
        stdout(&browser).contains(&format!("approved {id}")),
        "approve.mjs said:\n{}",
        describe(&browser)
    );

    // The waiting psql gets its statement run and exits 0.
    let out = psql.wait_output(PSQL_FINISH);
    assert!(
        out.status.success(),
        "psql did not succeed after the approval:\n{}\n--- gateway log ---\n{}",
        describe(&out),
        gw.log()
    );
    assert!(
        stderr(&out).contains(&id),
        "psql should have shown the hold notice naming {id}:\n{}",
        describe(&out)
    );
    assert_eq!(stdout(&out).trim(), "INSERT 0 1", "{}", describe(&out));
    assert_eq!(
        pg.query_scalar("select count(*) from t where id = 7"),
        "1",
        "the approved statement did not reach the database"
    );

    // And the API agrees on who approved it.
    let (status, body) = http_get(http, &format!("/api/requests/{id}"), &approver)
        .unwrap_or_else(|e| panic!("GET /api/requests/{id}: {e}"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"state\":\"approved\"") && body.contains("\"by\":\"alice\""),
        "the request is not recorded as approved by alice: {body}"
    );
}

/// A spawned psql killed if the test panics before it finished.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut Child {
        self.0
            .as_mut()
            .unwrap_or_else(|| panic!("psql already reaped"))
    }

    /// Waits (bounded) for psql to exit and collects its output; kills it at the deadline.
    fn wait_output(&mut self, timeout: Duration) -> Output {
        let mut child = self
            .0
            .take()
            .unwrap_or_else(|| panic!("psql already reaped"));
        let deadline = Instant::now() + timeout;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill(); // no-op if it exited
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for psql: {e}"))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
