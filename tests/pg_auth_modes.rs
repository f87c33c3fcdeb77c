//! Authentication paths beyond the default: cleartext token over TLS (`client_auth = "password"`),
//! MD5 upstream, and the service side: systemd readiness and a store already in use.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{describe, free_port, stderr, stdout, unique_temp_dir, Gateway, PgCluster};

const PASSWORD_FILE: &str = "pg.pass";

fn policy(pg: &PgCluster, port: u16, data_dir: &str, target_extra: &str, user: &str) -> String {
    format!(
        r#"[gateway]
data_dir = "{data_dir}"

[[identity]]
name = "alice"
roles = ["dba"]

[[target]]
name = "db"
listen = "127.0.0.1:{port}"
upstream = "{upstream}"
database = "postgres"
user = "{user}"
password_file = "{PASSWORD_FILE}"
upstream_tls = "disable"
default = "allow"
{target_extra}
"#,
        upstream = pg.addr(),
    )
}

#[test]
fn cleartext_token_over_tls_when_the_target_asks_for_it() {
    let pg = PgCluster::start();
    let port = free_port();
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}\nclient_auth = \"password\"\n",
        pg.tls.server_cert.display(),
        pg.tls.server_key.display()
    );
    let gw = Gateway::builder(&policy(&pg, port, "data", &tls, "postgres"))
        .secret(PASSWORD_FILE, &pg.password)
        .start();
    let token = gw.token("alice", "db", &[]);
    let out = gw.psql_via(
        port,
        "alice",
        "db",
        &token,
        "require",
        "select current_user",
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout(&out)
            .lines()
            .find(|l| l.trim() == "postgres")
            .map(str::trim),
        Some("postgres")
    );
    // require_tls is on by default with tls: a plaintext client never gets to send the token.
    let out = gw.psql_via(port, "alice", "db", &token, "disable", "select 1");
    assert!(
        !out.status.success() && stderr(&out).contains("requires TLS"),
        "{}",
        describe(&out)
    );
    // A wrong token over the cleartext path gets the same answer as over SCRAM.
    let out = gw.psql_via(
        port,
        "alice",
        "db",
        "pct_wrongwrongwrongwrongwrongwrongwrongwrongwro",
        "require",
        "select 1",
    );
    assert!(
        stderr(&out).contains("password authentication failed for user \"alice\""),
        "{}",
        describe(&out)
    );
}

#[test]
fn upstream_md5_authentication_with_the_gateway_held_password() {
    let pg = PgCluster::start();
    let port = free_port();
    let gw = Gateway::builder(&policy(&pg, port, "data", "", "md5_user"))
        .secret(PASSWORD_FILE, &pg.md5_password)
        .start();
    let token = gw.token("alice", "db", &[]);
    let out = gw.psql_via(
        port,
        "alice",
        "db",
        &token,
        "disable",
        "select current_user",
    );
    assert!(
        out.status.success(),
        "{}\n--- gateway ---\n{}",
        describe(&out),
        gw.log()
    );
    assert!(stdout(&out).contains("md5_user"), "{}", describe(&out));
    // The role really authenticates with MD5 on this cluster.
    assert_eq!(
        pg.query_scalar("select rolpassword like 'md5%' from pg_authid where rolname = 'md5_user'"),
        "t"
    );
}

#[test]
fn tells_systemd_it_is_ready_and_refuses_a_store_in_use() {
    let pg = PgCluster::start();
    let dir = unique_temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let data = dir.join("data");
    let data = data.to_string_lossy();
    let port = free_port();
    let gw = Gateway::builder(&policy(&pg, port, &data, "", "postgres"))
        .secret(PASSWORD_FILE, &pg.password)
        .env("NOTIFY_SOCKET", &sock_path.to_string_lossy())
        .start();
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("no sd_notify message from the gateway");
    assert_eq!(&buf[..n], b"READY=1");

    // A second gateway on the same store must not start, and must say why.
    let second = Gateway::builder(&policy(&pg, free_port(), &data, "", "postgres"))
        .secret(PASSWORD_FILE, &pg.password)
        .no_wait()
        .start();
    let stopped = second.wait_exit(Duration::from_secs(20));
    assert!(
        stopped.status.is_some_and(|s| !s.success()),
        "second gateway: {:?}\n{}",
        stopped.status,
        stopped.log
    );
    assert!(
        stopped.log.contains("in use by another portcullis process"),
        "{}",
        stopped.log
    );
    // The first keeps serving.
    let token = gw.token("alice", "db", &[]);
    let out = gw.psql_via(port, "alice", "db", &token, "disable", "select 1");
    assert!(out.status.success(), "{}", describe(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
