//! Per-statement cost of the SQL inspection on the relay's path: `policy::sql::classify` and
//! `policy::decide` against the policy bench/pg.sh uses, one core, best of 3.
//!
//! `cargo run --release --example classify_bench [iterations]`

use std::path::Path;
use std::time::Instant;

use portcullis::policy::{decide, sql};

const POLICY: &str = r#"
[gateway]
data_dir = "data"
public_url = "http://127.0.0.1:8443"

[[identity]]
name = "bench"
roles = ["ci"]

[[target]]
name = "bench"
kind = "postgres"
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"
database = "bench"
user = "postgres"
upstream_tls = "disable"
default = "block"

[[rule]]
name = "no-mass-change"
who = ["*"]
sql = ["update", "delete"]
flags = ["no_where"]
action = "block"
message = "UPDATE/DELETE without WHERE is not allowed through the gateway"

[[rule]]
name = "no-schema-changes-from-ci"
who = ["role:ci"]
sql = ["ddl", "dcl", "copy_program", "unknown"]
action = "block"
message = "CI jobs may not change the schema"

[[rule]]
name = "bench-reads"
targets = ["bench"]
who = ["role:ci"]
sql = ["select", "transaction", "set", "show"]
action = "allow"
"#;

/// Statements as clients send them: pgbench's select-only and TPC-B-like scripts, an ORM-style
/// query, a short transaction control statement.
const STATEMENTS: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
    "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 4242;",
    "SELECT \"users\".\"id\", \"users\".\"email\", \"users\".\"created_at\" FROM \"users\" \
     WHERE \"users\".\"tenant_id\" = $1 AND \"users\".\"deleted_at\" IS NULL \
     ORDER BY \"users\".\"created_at\" DESC LIMIT 50",
    "BEGIN",
];

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let policy = match portcullis::config::parse(POLICY, Path::new("classify_bench.toml")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench policy: {e}");
            std::process::exit(1);
        }
    };
    let (Some(identity), Some(target)) = (policy.active_identity("bench"), policy.target("bench"))
    else {
        eprintln!("bench policy: identity or target missing");
        std::process::exit(1);
    };
    for text in STATEMENTS {
        let mut classify_ns = f64::MAX;
        let mut decide_ns = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let mut kept = 0usize;
            for _ in 0..n {
                kept += sql::classify(std::hint::black_box(text)).len();
            }
            classify_ns = classify_ns.min(t.elapsed().as_nanos() as f64 / f64::from(n));
            std::hint::black_box(kept);
            let stmts = sql::classify(text);
            let t = Instant::now();
            for _ in 0..n {
                for s in &stmts {
                    std::hint::black_box(decide(&policy, identity, target, s, s.kinds, text));
                }
            }
            decide_ns = decide_ns.min(t.elapsed().as_nanos() as f64 / f64::from(n));
        }
        let short: String = text.chars().take(48).collect();
        println!("{classify_ns:7.0} ns classify  {decide_ns:6.0} ns decide   {short}");
    }
}
