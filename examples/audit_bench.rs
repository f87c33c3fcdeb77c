//! The audit writer's cost per statement event, alone: no network, no PostgreSQL.
//!
//! Two producer threads queue statement events built like the PostgreSQL gateway's (same fields,
//! the session's names and a prepared statement's fields encoded once) at a steady rate, in small
//! bursts as a busy relay does; the writer thread's CPU time (user and system, from
//! /proc/self/task/*/stat) is divided by the number of events. Run with
//! `cargo run --release --example audit_bench -- [EVENTS] [RATE_PER_S]` (defaults 200000,
//! 20000). Linux only (reads /proc).

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::audit::{self, Encoded, Event};
use portcullis::store::Store;

fn writer_ticks() -> Option<(u64, u64)> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() != "audit-writer" {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        return Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?));
    }
    None
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let dir = std::env::temp_dir().join(format!("portcullis-audit-bench-{}", std::process::id()));
    let store = Store::open(&dir).expect("open the store");
    let (audit, writer) = audit::start(store, Duration::from_secs(1)).expect("start the writer");
    // The thread names itself as it starts.
    let mut before = writer_ticks();
    for _ in 0..100 {
        if before.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        before = writer_ticks();
    }
    let before = before.expect("find the audit-writer thread");
    let started = Instant::now();
    let producers = 2u64;
    let burst = 50u64;
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let audit = audit.clone();
            std::thread::spawn(move || {
                // Built as the gateway builds them (`Session::completion_event`): the session's
                // names and the statement's own fields encoded once, each event encoded as it
                // is made.
                let ids = Encoded::of(
                    &Event::new("")
                        .str("session", format!("ses_{p:016x}"))
                        .str("identity", "ci-deploy")
                        .str("target", "bench")
                        .str("token", "tok_0123456789ab"),
                );
                let text: Arc<str> = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;".into();
                let statement = Encoded::of(
                    &Event::new("")
                        .str("protocol", "extended")
                        .shared("text", &text)
                        .names("kinds", ["select"])
                        .list("tables", vec!["public.pgbench_accounts".to_string()])
                        .names("flags", [])
                        .str("decision", "allow")
                        .opt_str("rule", Some("ci-reads")),
                );
                let per_thread = events / producers;
                let interval =
                    Duration::from_secs_f64(burst as f64 * producers as f64 / rate as f64);
                let t0 = Instant::now();
                let mut sent = 0u64;
                while sent < per_thread {
                    for _ in 0..burst.min(per_thread - sent) {
                        let ev = Event::with_room("statement", 64 + ids.len() + statement.len())
                            .encoded(&ids)
                            .encoded(&statement)
                            .encoded_bool(portcullis::audit_key!("executed"), true)
                            .encoded_uint(portcullis::audit_key!("duration_us"), 180)
                            .encoded_uint(portcullis::audit_key!("rows"), 1);
                        smol::block_on(audit.record(ev)).expect("record");
                        sent += 1;
                    }
                    let due = t0 + interval * u32::try_from(sent / burst).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("producer");
    }
    let after_queue = writer_ticks().expect("writer ticks");
    drop(audit);
    writer.shutdown();
    let elapsed = started.elapsed();
    let tick_us = 1e6 / 100.0; // USER_HZ is 100 on Linux
    let (u, s) = (after_queue.0 - before.0, after_queue.1 - before.1);
    println!(
        "{events} events at {rate}/s in {:.2} s: writer user {:.2} us/event, system {:.2} us/event",
        elapsed.as_secs_f64(),
        u as f64 * tick_us / events as f64,
        s as f64 * tick_us / events as f64
    );
    let _ = std::fs::remove_dir_all(dir);
}
