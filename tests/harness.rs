//! Proves the real-peer harness itself: a throwaway cluster with TLS, SCRAM and MD5 roles.

mod common;

use common::{describe, run_psql, stderr, PgCluster};

#[test]
fn starts_cluster_with_tls_and_scram() {
    let pg = PgCluster::start();

    // verify-full TLS as the superuser with its password.
    let out = pg.psql_args("postgres", &["-Atq", "-c", "select 1"], None);
    assert!(out.status.success(), "select 1 failed:\n{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");

    // The connection really is TLS, and the superuser's secret is SCRAM.
    assert_eq!(
        pg.query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()"),
        "t"
    );
    assert_eq!(
        pg.query_scalar(
            "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'postgres'"
        ),
        "t"
    );

    // A wrong password is refused.
    let out = run_psql(
        &pg.conninfo("postgres", "postgres"),
        Some("wrong"),
        &["-c", "select 1"],
        None,
    );
    assert!(
        !out.status.success(),
        "wrong password accepted:\n{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("password authentication failed"),
        "unexpected error:\n{}",
        describe(&out)
    );

    // md5_user has an md5 secret and logs in with it (over TLS and in plaintext).
    assert_eq!(
        pg.query_scalar("select rolpassword like 'md5%' from pg_authid where rolname = 'md5_user'"),
        "t"
    );
    for sslmode in ["verify-full", "disable"] {
        let conninfo = format!(
            "host=127.0.0.1 port={} user=md5_user dbname=postgres sslmode={sslmode} sslrootcert={}",
            pg.port,
            pg.ca_cert.display()
        );
        let out = run_psql(
            &conninfo,
            Some(&pg.md5_password),
            &["-Atq", "-c", "select current_user"],
            None,
        );
        assert!(
            out.status.success(),
            "md5_user ({sslmode}) failed:\n{}",
            describe(&out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "md5_user\n");
        let out = run_psql(&conninfo, Some("wrong"), &["-c", "select 1"], None);
        assert!(
            !out.status.success(),
            "md5_user wrong password accepted ({sslmode})"
        );
    }
}

#[test]
fn plaintext_superuser_login_uses_scram() {
    let pg = PgCluster::start();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        pg.port
    );
    let out = run_psql(
        &conninfo,
        Some(&pg.password),
        &[
            "-Atq",
            "-c",
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        ],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "f\n");
    // The server asked for SCRAM: libpq refuses md5 when told SCRAM only is acceptable.
    let strict = format!("{conninfo} require_auth=scram-sha-256");
    let out = run_psql(&strict, Some(&pg.password), &["-c", "select 1"], None);
    // require_auth exists from libpq 16; on older libpq the option is unknown and psql fails.
    if !stderr(&out).contains("invalid connection option") {
        assert!(out.status.success(), "{}", describe(&out));
    }
}

#[test]
fn creates_databases_and_copies_through_stdin() {
    let pg = PgCluster::start();
    pg.create_database("harness db");
    let db = "harness db";
    let out = pg.psql(db, "create table t (a int, b text)");
    assert!(out.status.success(), "{}", describe(&out));
    let out = pg.psql_args(db, &["-c", "copy t from stdin"], Some(b"1\tone\n2\ttwo\n"));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        pg.query_scalar_in(db, "select string_agg(b, ',' order by a) from t"),
        "one,two"
    );
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..50).map(|_| common::free_port()).collect();
    let mut dedup = ports.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), ports.len());
    // Bind right after asking: other processes on the machine may take a port later, which no
    // harness can prevent (the cluster start retries for that reason).
    for _ in 0..5 {
        let p = common::free_port();
        std::net::TcpListener::bind(("127.0.0.1", p)).expect("free_port returned a bound port");
    }
}

#[test]
fn gateway_binary_is_built() {
    // The gateway may not exist yet; the harness must at least point at the built binary.
    assert!(std::path::Path::new(common::gateway_exe()).exists());
}

#[test]
fn rustls_verifies_the_cluster_certificate() {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::io::{Read, Write};
    use std::sync::Arc;

    let pg = PgCluster::start();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pg.ca_cert).expect("reading CA") {
        roots.add(cert.expect("CA PEM")).expect("adding CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let config = Arc::new(config);

    for name in ["127.0.0.1", "localhost"] {
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", pg.port)).expect("connect");
        // SSLRequest: length 8, code 80877103.
        sock.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .expect("SSLRequest");
        let mut answer = [0u8; 1];
        sock.read_exact(&mut answer).expect("SSLRequest answer");
        assert_eq!(answer[0], b'S', "server refused TLS");
        let server_name = ServerName::try_from(name).expect("name").to_owned();
        let mut conn =
            rustls::ClientConnection::new(config.clone(), server_name).expect("client conn");
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .unwrap_or_else(|e| panic!("TLS handshake as {name}: {e}"));
        }
    }
}

#[test]
#[should_panic(expected = "gateway exited before ready")]
fn gateway_start_panics_with_log_when_serve_exits() {
    let _gw = common::Gateway::start("this is not = a valid = policy");
}

#[test]
fn gateway_log_captures_output_of_a_failed_serve() {
    let gw = common::Gateway::builder("[gateway]\nno_such_key = 1\n")
        .no_wait()
        .start();
    let stopped = gw.wait_exit(std::time::Duration::from_secs(15));
    assert!(stopped.status.is_some());
    assert!(!stopped.log.trim().is_empty(), "serve printed nothing");
}
