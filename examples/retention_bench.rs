//! What `[gateway] audit_retention` costs the first time it meets a large audit log: fills a store
//! with EVENTS statement events, then starts the writer with a retention every one of them is
//! older than, and measures how long an event queued at that moment waits to be durable (the
//! pruning yields to waiting events) and how long the whole pruning takes.
//!
//! `cargo run --release --example retention_bench -- [EVENTS]` (default 1000000). Writes about
//! 550 bytes per event to a directory under the system's temp dir, removed at the end.

use std::time::{Duration, Instant};

use portcullis::audit::{self, Event, QUEUE_CAPACITY};
use portcullis::store::Store;

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn statement(i: u64) -> Event {
    Event::new("statement")
        .str("session", "ses_0123456789abcdef")
        .str("identity", "ci-deploy")
        .str("target", "bench")
        .str("protocol", "simple")
        .str(
            "text",
            format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i};"),
        )
        .list("tables", vec!["public.pgbench_accounts".to_string()])
        .str("decision", "allow")
        .bool("executed", true)
        .uint("duration_us", 90)
        .uint("rows", 1)
}

fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir =
        std::env::temp_dir().join(format!("portcullis-retention-bench-{}", std::process::id()));
    let store = Store::open(&dir).expect("open the store");

    let filled = Instant::now();
    {
        let (audit, writer) =
            audit::start(store.clone(), Duration::from_secs(1)).expect("start the writer");
        for i in 0..events {
            let mut ev = statement(i);
            // A full queue gives the event back: wait for room, as a relay would.
            while let Err(back) = audit.try_record(ev) {
                ev = back;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        writer.shutdown();
    }
    let fill_s = filled.elapsed().as_secs_f64();
    let bytes = dir_bytes(&dir);
    std::thread::sleep(Duration::from_millis(20));

    let started = Instant::now();
    let (audit, writer) = audit::start_with(
        store.clone(),
        Duration::from_secs(1),
        QUEUE_CAPACITY,
        Some(Duration::from_millis(10)),
    )
    .expect("start the writer with retention");
    audit
        .record_blocking(Event::new("probe"))
        .expect("the probe event");
    let probe_ms = started.elapsed().as_secs_f64() * 1e3;
    // Shutting down lets the writer finish the pass it yielded, then stop.
    writer.shutdown();
    let prune_s = started.elapsed().as_secs_f64();
    let report = audit::verify(&store).expect("verify");

    println!("events written:           {events} in {fill_s:.1} s");
    println!(
        "store size:               {:.0} MiB ({:.0} bytes per event)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / events as f64
    );
    println!("an event queued at start: durable after {probe_ms:.1} ms");
    println!(
        "pruning all of them:      {prune_s:.2} s ({:.0} events/s)",
        events as f64 / prune_s
    );
    println!(
        "after:                    {} (store file {:.0} MiB)",
        report,
        dir_bytes(&dir) as f64 / (1 << 20) as f64
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
