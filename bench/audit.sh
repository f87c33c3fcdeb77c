#!/usr/bin/env bash
# The audit writer's CPU per statement event, alone (no network, no PostgreSQL): two producer
# threads queue statement events shaped like the PostgreSQL gateway's at a steady rate and the
# writer thread's CPU time is divided by the events (examples/audit_bench.rs). This is the part
# of the gateway's per-statement cost that pgbouncer does not have.
#
#   EVENTS=200000  events per run
#   RATE=20000     events per second (the PostgreSQL bench's order of magnitude on 2 cores)
#   RUNS=3         runs, each printed
#   SKIP_BUILD=1   reuse target/release/examples/audit_bench
#
# Prints one line per run and writes them to bench/results/audit-<date>.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-200000}
RATE=${RATE:-20000}
RUNS=${RUNS:-3}
if [[ ${SKIP_BUILD:-} != 1 ]]; then
    cargo build --release --example audit_bench >&2
fi
mkdir -p bench/results
out=bench/results/audit-$(date -u +%Y%m%d-%H%M%S).txt
{
    echo "# bash bench/audit.sh  EVENTS=$EVENTS RATE=$RATE  $(date -u +%FT%TZ)  commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)  load $(cut -d' ' -f1-3 /proc/loadavg)"
    for _ in $(seq 1 "$RUNS"); do
        target/release/examples/audit_bench "$EVENTS" "$RATE"
    done
} | tee "$out"
