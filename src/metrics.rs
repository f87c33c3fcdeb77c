//! Counters for `/metrics` (Prometheus text exposition format 0.0.4). Lock-free on the data path:
//! each target's counters are atomics behind an `Arc` that a session looks up once. The ones
//! bumped for every statement ([`Counter`], [`Histogram`]) are sharded per thread, so relay
//! threads never fight over a cache line on the per-query path; a scrape sums the shards.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds (seconds) of the latency and wait-time histogram buckets.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Shards of a per-statement counter: more than the relay threads of a usual bastion; threads
/// beyond that share shards (still correct, only slower).
const SHARDS: usize = 8;

/// A value on a cache line of its own (128 bytes: adjacent-line prefetch pairs 64-byte lines).
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// A monotonic counter, sharded per thread.
#[derive(Default)]
pub struct Counter {
    shards: [Padded<AtomicU64>; SHARDS],
}

impl Counter {
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of the shards.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

#[derive(Default)]
struct HistogramShard {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A latency histogram, sharded per thread.
#[derive(Default)]
pub struct Histogram {
    shards: [Padded<HistogramShard>; SHARDS],
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let shard = &self.shards[shard()].0;
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            shard.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        shard.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        shard.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Summed over the shards: (count in each bucket, count, sum of microseconds).
    fn totals(&self) -> ([u64; BUCKETS.len()], u64, u64) {
        let mut counts = [0u64; BUCKETS.len()];
        let (mut count, mut sum) = (0u64, 0u64);
        for s in &self.shards {
            for (total, c) in counts.iter_mut().zip(&s.0.counts) {
                *total = total.wrapping_add(c.load(Ordering::Relaxed));
            }
            count = count.wrapping_add(s.0.count.load(Ordering::Relaxed));
            sum = sum.wrapping_add(s.0.sum_micros.load(Ordering::Relaxed));
        }
        (counts, count, sum)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let (counts, count, sum_micros) = self.totals();
        let mut cumulative = 0u64;
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in BUCKETS.iter().zip(counts) {
            cumulative = cumulative.wrapping_add(c);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = sum_micros as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Counters of one target.
#[derive(Default)]
pub struct TargetMetrics {
    pub sessions_total: AtomicU64,
    pub sessions_open: AtomicI64,
    pub auth_failures: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// Sessions served by an upstream connection kept from an earlier one (`upstream_pool`).
    pub upstream_reused: AtomicU64,
    pub statements_allowed: Counter,
    pub statements_blocked: Counter,
    pub statements_held: Counter,
    /// Time from forwarding a statement to its completion upstream.
    pub statement_latency: Histogram,
}

/// What busy polling (`[gateway] relay_busy_poll_us`) did, over every relay worker: each worker
/// adds to these once per poll, never per statement.
#[derive(Default)]
pub struct BusyPollStats {
    /// Polls that found a socket ready within the budget.
    pub found: AtomicU64,
    /// Polls that used the whole budget and found nothing (the worker then slept).
    pub missed: AtomicU64,
    /// Pauses after misses in a row (a worker stops polling for a second).
    pub pauses: AtomicU64,
    /// Time spent polling, in µs: about the CPU time busy polling cost.
    pub micros: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    targets: RwLock<BTreeMap<String, Arc<TargetMetrics>>>,
    /// Shared with the relay workers, which count into it.
    pub busy_poll: Arc<BusyPollStats>,
    pub approvals_approved: AtomicU64,
    pub approvals_denied: AtomicU64,
    pub approvals_timed_out: AtomicU64,
    pub approvals_abandoned: AtomicU64,
    /// Time a held statement waited for its decision.
    pub approval_wait: Histogram,
}

/// A counter with an `outcome` label: its HELP and TYPE lines, then one line per outcome.
fn by_outcome(out: &mut String, name: &str, help: &str, values: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (outcome, v) in values {
        let _ = writeln!(
            out,
            "{name}{{outcome=\"{outcome}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

/// A metric without labels: its HELP and TYPE lines and its one sample.
fn single(out: &mut String, name: &str, help: &str, kind: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Label values may hold only what names in the policy allow, but escape anyway.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The counters of `target`, created on first use.
    pub fn target(&self, target: &str) -> Arc<TargetMetrics> {
        if let Some(t) = self
            .targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
        {
            return t.clone();
        }
        let mut map = self.targets.write().unwrap_or_else(|p| p.into_inner());
        map.entry(target.to_string()).or_default().clone()
    }

    /// The exposition text. `pending_approvals` comes from the approval broker, `pool_kept` (the
    /// upstream connections each target keeps now; a target it leaves out keeps none) from
    /// `UpstreamPool::kept_per_target`.
    pub fn render(&self, pending_approvals: usize, pool_kept: &HashMap<String, usize>) -> String {
        let mut out = String::with_capacity(4096);
        let targets = self
            .targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let counter = |out: &mut String,
                       name: &str,
                       help: &str,
                       kind: &str,
                       get: &dyn Fn(&str, &TargetMetrics) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (t, m) in &targets {
                let _ = writeln!(out, "{name}{{target=\"{}\"}} {}", label(t), get(t, m));
            }
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        counter(
            &mut out,
            "portcullis_sessions_total",
            "Client sessions opened (authenticated).",
            "counter",
            &|_, m| load(&m.sessions_total),
        );
        counter(
            &mut out,
            "portcullis_sessions_open",
            "Client sessions open now.",
            "gauge",
            &|_, m| m.sessions_open.load(Ordering::Relaxed).to_string(),
        );
        counter(
            &mut out,
            "portcullis_auth_failures_total",
            "Failed client authentications.",
            "counter",
            &|_, m| load(&m.auth_failures),
        );
        counter(
            &mut out,
            "portcullis_upstream_errors_total",
            "Failed upstream connections.",
            "counter",
            &|_, m| load(&m.upstream_errors),
        );
        counter(
            &mut out,
            "portcullis_upstream_reused_total",
            "Sessions served by an upstream connection kept from an earlier session (upstream_pool).",
            "counter",
            &|_, m| load(&m.upstream_reused),
        );
        counter(
            &mut out,
            "portcullis_upstream_pool_kept",
            "Upstream connections kept for later sessions now (upstream_pool).",
            "gauge",
            &|t, _| pool_kept.get(t).copied().unwrap_or(0).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_statements_total Statements by decision."
        );
        let _ = writeln!(out, "# TYPE portcullis_statements_total counter");
        for (t, m) in &targets {
            let t = label(t);
            for (decision, v) in [
                ("allow", &m.statements_allowed),
                ("block", &m.statements_blocked),
                ("approve", &m.statements_held),
            ] {
                let _ = writeln!(
                    out,
                    "portcullis_statements_total{{target=\"{t}\",decision=\"{decision}\"}} {}",
                    v.get()
                );
            }
        }
        let _ = writeln!(out, "# HELP portcullis_statement_duration_seconds Time from forwarding a statement to its completion upstream.");
        let _ = writeln!(
            out,
            "# TYPE portcullis_statement_duration_seconds histogram"
        );
        for (t, m) in &targets {
            m.statement_latency.render(
                &mut out,
                "portcullis_statement_duration_seconds",
                &format!("target=\"{}\"", label(t)),
            );
        }
        single(
            &mut out,
            "portcullis_approvals_pending",
            "Statements waiting for approval now.",
            "gauge",
            pending_approvals,
        );
        by_outcome(
            &mut out,
            "portcullis_approvals_total",
            "Approval requests by outcome.",
            &[
                ("approved", &self.approvals_approved),
                ("denied", &self.approvals_denied),
                ("timed_out", &self.approvals_timed_out),
                ("abandoned", &self.approvals_abandoned),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_approval_wait_seconds Time held statements waited for a decision."
        );
        let _ = writeln!(out, "# TYPE portcullis_approval_wait_seconds histogram");
        self.approval_wait
            .render(&mut out, "portcullis_approval_wait_seconds", "");
        self.render_busy_poll(&mut out);
        out
    }

    fn render_busy_poll(&self, out: &mut String) {
        let b = &self.busy_poll;
        by_outcome(
            out,
            "portcullis_relay_busy_polls_total",
            "Busy polls of relay workers (relay_busy_poll_us) by outcome.",
            &[("found", &b.found), ("missed", &b.missed)],
        );
        single(
            out,
            "portcullis_relay_busy_poll_pauses_total",
            "Times a relay worker stopped busy polling for a second after polls in a row found nothing.",
            "counter",
            b.pauses.load(Ordering::Relaxed),
        );
        let micros = b.micros.load(Ordering::Relaxed);
        single(
            out,
            "portcullis_relay_busy_poll_seconds_total",
            "Time relay workers spent busy polling (about the CPU time it cost).",
            "counter",
            format_args!("{}.{:06}", micros / 1_000_000, micros % 1_000_000),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histogram() {
        let m = Metrics::default();
        let t = m.target("app-db");
        t.statements_allowed.add(3);
        t.upstream_reused.fetch_add(5, Ordering::Relaxed);
        t.statement_latency.observe(Duration::from_micros(50));
        // From other threads: their shards are summed in.
        std::thread::scope(|scope| {
            scope.spawn(|| t.statement_latency.observe(Duration::from_millis(3)));
            for _ in 0..SHARDS + 1 {
                scope.spawn(|| t.statements_allowed.add(1));
            }
        });
        m.target("bastion");
        let kept = HashMap::from([("app-db".to_string(), 3)]);
        let text = m.render(2, &kept);
        assert!(
            text.contains("portcullis_statements_total{target=\"app-db\",decision=\"allow\"} 12")
        );
        assert!(text.contains("portcullis_upstream_reused_total{target=\"app-db\"} 5\n"));
        assert!(text.contains("# TYPE portcullis_upstream_pool_kept gauge\n"));
        assert!(text.contains("portcullis_upstream_pool_kept{target=\"app-db\"} 3\n"));
        // A target the pool leaves out keeps none.
        assert!(text.contains("portcullis_upstream_pool_kept{target=\"bastion\"} 0\n"));
        assert!(text.contains(
            "portcullis_statement_duration_seconds_bucket{target=\"app-db\",le=\"0.0001\"} 1"
        ));
        assert!(text.contains(
            "portcullis_statement_duration_seconds_bucket{target=\"app-db\",le=\"0.005\"} 2"
        ));
        assert!(text.contains("portcullis_statement_duration_seconds_count{target=\"app-db\"} 2"));
        assert!(text.contains("portcullis_approvals_pending 2"));
        m.approvals_denied.fetch_add(4, Ordering::Relaxed);
        let text = m.render(2, &kept);
        assert!(text.contains("# TYPE portcullis_approvals_total counter\n"));
        assert!(text.contains("portcullis_approvals_total{outcome=\"denied\"} 4\n"));
        assert!(text.contains("portcullis_approvals_total{outcome=\"approved\"} 0\n"));
        assert!(text.contains("portcullis_approval_wait_seconds_bucket{le=\"+Inf\"} 0"));
    }

    #[test]
    fn renders_busy_poll_counters() {
        let m = Metrics::default();
        m.busy_poll.found.fetch_add(7, Ordering::Relaxed);
        m.busy_poll.missed.fetch_add(3, Ordering::Relaxed);
        m.busy_poll.pauses.fetch_add(1, Ordering::Relaxed);
        m.busy_poll.micros.fetch_add(2_000_050, Ordering::Relaxed);
        let text = m.render(0, &HashMap::new());
        assert!(text.contains("portcullis_relay_busy_polls_total{outcome=\"found\"} 7\n"));
        assert!(text.contains("portcullis_relay_busy_polls_total{outcome=\"missed\"} 3\n"));
        assert!(text.contains("portcullis_relay_busy_poll_pauses_total 1\n"));
        assert!(text.contains("portcullis_relay_busy_poll_seconds_total 2.000050\n"));
    }

    #[test]
    fn same_target_same_counters() {
        let m = Metrics::default();
        m.target("a").sessions_total.fetch_add(1, Ordering::Relaxed);
        assert_eq!(m.target("a").sessions_total.load(Ordering::Relaxed), 1);
    }
}
