//! Webhook notifications: a held statement makes the gateway POST a JSON payload (with a
//! Slack-compatible `text`) over HTTPS, verified against the CA the policy names; a webhook that
//! doesn't answer never holds up the statement or the session.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{describe, free_port, Gateway, PgCluster};
use portcullis::http::parse::Request;
use portcullis::http::response::Response;
use portcullis::http::server::{serve, Handler, ServerLimits};
use portcullis::net::tls::server_config;

const PASSWORD_FILE: &str = "pg.pass";

fn policy(pg: &PgCluster, db_port: u16, http_port: u16, hooks: &[String]) -> String {
    let hooks: Vec<String> = hooks.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        r#"[gateway]
data_dir = "data"
public_url = "http://127.0.0.1:{http_port}"
http = {{ listen = "127.0.0.1:{http_port}" }}
webhooks = [{hooks}]
webhook_ca = "{ca}"

[[identity]]
name = "alice"
roles = ["dba"]

[[identity]]
name = "ci-bot"
kind = "service"
owner = "alice"
roles = ["ci"]
max_ttl = "1h"

[[target]]
name = "db"
listen = "127.0.0.1:{db_port}"
upstream = "{upstream}"
database = "postgres"
user = "postgres"
password_file = "{PASSWORD_FILE}"
upstream_tls = "disable"
default = "allow"

[[rule]]
name = "ci-writes"
who = ["role:ci"]
sql = ["insert"]
action = "approve"
approvers = ["role:dba"]
timeout = "2s"
"#,
        hooks = hooks.join(", "),
        ca = pg.tls.ca_cert.display(),
        upstream = pg.addr(),
    )
}

/// An HTTPS receiver on 127.0.0.1 with the cluster's certificate; records each POST body.
fn start_receiver(pg: &PgCluster, port: u16) -> Arc<Mutex<Vec<(String, String)>>> {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let files = portcullis::config::TlsFiles {
        cert: pg.tls.server_cert.clone(),
        key: pg.tls.server_key.clone(),
    };
    let tls = server_config(&files).expect("receiver TLS config");
    let record = seen.clone();
    let handler: Handler = Arc::new(move |req: Request, _peer: SocketAddr, _tls: bool| {
        let record = record.clone();
        Box::pin(async move {
            let ct = req.header("content-type").unwrap_or_default().to_string();
            record
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((ct, String::from_utf8_lossy(&req.body).into_owned()));
            Response::text(200, "ok")
        })
    });
    std::thread::spawn(move || {
        let ex = Arc::new(smol::Executor::new());
        let listener = smol::block_on(smol::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("bind receiver");
        smol::block_on(ex.run(serve(
            listener,
            Some(tls),
            handler,
            ServerLimits::default(),
            ex.clone(),
        )));
    });
    seen
}

#[test]
fn held_statement_is_announced_by_webhook_over_https() {
    let pg = PgCluster::start();
    let hook_port = free_port();
    let seen = start_receiver(&pg, hook_port);
    // A second webhook nobody listens on: deliveries to it fail and are retried in the
    // background; the statement and the first webhook must not wait for it.
    let dead = format!("https://127.0.0.1:{}/dead", free_port());
    let live = format!("https://127.0.0.1:{hook_port}/hook");
    let (db_port, http_port) = (free_port(), free_port());
    let gw = Gateway::builder(&policy(&pg, db_port, http_port, &[dead, live]))
        .secret(PASSWORD_FILE, &pg.password)
        .start();
    let token = gw.token("ci-bot", "db", &[]);

    // The insert is held, nobody approves, it times out after 2 s: the client gets its answer.
    let out = gw.psql_via(
        db_port,
        "ci-bot",
        "db",
        &token,
        "disable",
        "insert into probe_missing values (1)",
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("statement held for approval") && err.contains("timed out"),
        "{}",
        describe(&out)
    );

    // The live webhook got the payload (bounded wait: the dead one is tried first, and fails fast
    // with a refused connection).
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        if let Some(x) = seen.lock().unwrap().first().cloned() {
            break x;
        }
        assert!(
            Instant::now() < deadline,
            "no webhook delivery\n--- gateway log ---\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(got.0, "application/json");
    assert!(got.1.starts_with("{\"text\":\"portcullis: ci-bot wants to run on db (rule ci-writes): insert into probe_missing values (1)"), "{}", got.1);
    assert!(
        got.1.contains(&format!(
            "\"url\":\"http://127.0.0.1:{http_port}/requests/apr_"
        )),
        "{}",
        got.1
    );
    assert!(
        gw.log().contains("webhook 127.0.0.1"),
        "the dead webhook's failure is logged:\n{}",
        gw.log()
    );
}
