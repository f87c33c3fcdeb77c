#!/usr/bin/env bash
# Masking benchmark, in two parts. Run as root or any user that can reach the PostgreSQL below.
#
# 1. Detector scan: throughput of the 20-detector scan ("all" = 14 built-ins, plus 6 custom) on
#    ~MiB of generated result-like data, one core, per DataRow cell and as a COPY stream
#    (examples/mask_bench.rs).
# 2. Through the gateway: a table `big` of ROWS rows (default 1M; realistic text, an e-mail in
#    every row, card numbers / e-mails / AWS keys in ~2% of the notes) in database `maskbench` of
#    the PostgreSQL at PGHOST_DIRECT:PGPORT_DIRECT (default 127.0.0.1:5432, trust auth, user
#    postgres; created and seeded if missing, reused if already seeded). The release gateway
#    serves two targets on free ports: `masked` (a [[mask]] with 20 detectors and the masked
#    columns ssn and pin) and `plain` (no mask). `psql -At -c "select * from big" > /dev/null`
#    is timed directly, through `plain` and through `masked` (best of RUNS, default 2): rows/s,
#    the ratios, and the gateway's CPU time per run. Then the gateway's peak RSS (VmHWM) is read
#    after those 1M-row queries and again after the 1M-row query ran 10 times in one session
#    through `masked` ("10M rows"): it must stay flat.
#
# Usage: bench/mask.sh [--scan-only] [MiB]
#   MiB              MiB of data for part 1 (default 64)
#   --scan-only      part 1 only: no PostgreSQL, no gateway (nothing else on the machine is touched)
#   SKIP_BUILD=1     use the existing target/release/portcullis (and mask_bench example)
#   ROWS=N           rows in `big` (default 1000000; a different count re-seeds)
#   RUNS=N           timed runs per path, best kept (default 2)
#   SKIP_DETECTORS=1 skip part 1
#
# Prints the results and writes them to bench/results/mask-<date>.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SCAN_ONLY=
if [[ ${1:-} == --scan-only ]]; then
    SCAN_ONLY=1
    shift
fi
MIB=${1:-64}
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-2}
DB_HOST=${PGHOST_DIRECT:-127.0.0.1}
DB_PORT=${PGPORT_DIRECT:-5432}
DB=maskbench
PORTCULLIS=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
# Bump when the generator below changes: a table seeded by another version is re-seeded.
SEED_MARK="portcullis bench/mask.sh seed v1 rows=$ROWS"

unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSSLMODE PGSERVICE PGOPTIONS || true

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_tmpdir portcullis-maskbench
GATEWAY_PID=

# Results go to stdout and to the results file.
REPORT=$TMP/report.txt
say() { printf '%s\n' "$*" | tee -a "$REPORT"; }

say "portcullis bench/mask.sh"
say "date: $(date -Is)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')  cpus: $(nproc)  load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- part 1: detector scan ------------------------------------------------------------------
if [[ ${SKIP_DETECTORS:-} != 1 ]]; then
    say ""
    say "== detector scan (examples/mask_bench.rs, ${MIB} MiB, one core) =="
    if [[ ${SKIP_BUILD:-} == 1 && -x target/release/examples/mask_bench ]]; then
        target/release/examples/mask_bench "$MIB" 2>&1 | tee -a "$REPORT"
    else
        cargo run --quiet --release --example mask_bench -- "$MIB" 2>&1 | tee -a "$REPORT"
    fi
fi

if [[ -n $SCAN_ONLY ]]; then
    OUT_DIR=$ROOT/bench/results
    mkdir -p "$OUT_DIR"
    OUT=$OUT_DIR/mask-scan-$(date +%Y%m%d-%H%M%S).txt
    say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    cp "$REPORT" "$OUT"
    log "written to ${OUT#"$ROOT"/}"
    exit 0
fi

# ---- part 2: the database -------------------------------------------------------------------
psql_direct() { psql -X -q -At -h "$DB_HOST" -p "$DB_PORT" -U postgres "$@"; }

if ! psql_direct -d postgres -c 'select 1' >/dev/null; then
    log "cannot reach PostgreSQL at $DB_HOST:$DB_PORT as postgres (trust auth expected)"
    exit 1
fi
if [[ $(psql_direct -d postgres -c "select count(*) from pg_database where datname = '$DB'") != 1 ]]; then
    log "creating database $DB"
    psql_direct -d postgres -c "create database $DB" >/dev/null
fi
mark=$(psql_direct -d "$DB" -c "select obj_description('public.big'::regclass, 'pg_class')" 2>/dev/null || true)
if [[ $mark != "$SEED_MARK" ]]; then
    log "seeding $DB.big with $ROWS rows"
    t0=$(date +%s.%N)
    psql_direct -d "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
drop table if exists big;
create table big as
select i::int as id,
       (array['Alice','Bob','Carol','David','Eve','Frank','Grace','Heidi','Ivan','Judy',
              'Mallory','Niaj','Olivia','Peggy','Rupert','Sybil','Trent','Victor','Walter','Zoe'])[1 + i % 20]
         || ' ' ||
       (array['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Muller',
              'Martinez','Lopez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin'])[1 + (i / 20) % 18]
         as name,
       'user' || i || '@' || (array['example.com','mail.example.org','corp.example.net','example.co.uk'])[1 + i % 4]
         as email,
       lpad((1 + i % 665)::text, 3, '0') || '-' || lpad((1 + i % 99)::text, 2, '0') || '-'
         || lpad((1 + i % 9999)::text, 4, '0') as ssn,
       round(((i * 7919) % 100000) / 100.0, 2) as amount,
       timestamptz '2026-01-01 00:00:00+00' + i * interval '7 seconds' as created_at,
       (array['new','paid','shipped','delivered','refunded'])[1 + i % 5] as status,
       case i % 50
         when 7 then 'customer asked to send the invoice to billing' || i || '@example.com instead'
         when 19 then 'paid by card 4111 1111 1111 1111, confirmed by support'
         when 33 then 'deploy log mentions key AKIAIOSFODNN7EXAMPLE, rotated'
         else (array['the order was shipped to the customer after payment was confirmed',
                     'customer called about a late delivery, apologized and offered a refund',
                     'address updated at the request of the customer, no other change',
                     'gift wrapping requested; note added to the packing slip for the warehouse'])[1 + i % 4]
              || ' (ticket ' || (100000 + i % 900000) || ')'
       end as note,
       ((i * 31) % 10000)::int as pin
  from generate_series(1::bigint, $ROWS) as i;
alter table big add primary key (id);
analyze big;
comment on table big is '$SEED_MARK';
SQL
    log "seeded in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
else
    log "reusing $DB.big ($ROWS rows)"
fi
table_size=$(psql_direct -d "$DB" -c "select pg_size_pretty(pg_table_size('big'))")
text_bytes=$(psql_direct -d "$DB" -c "select sum(octet_length(b::text)) from big b")

# ---- part 2: the gateway --------------------------------------------------------------------
if [[ ${SKIP_BUILD:-} != 1 ]]; then
    log "cargo build --release"
    cargo build --release >&2
fi
[[ -x $PORTCULLIS ]] || { log "no $PORTCULLIS (build it, or unset SKIP_BUILD)"; exit 1; }

GW=$TMP/gateway
mkdir -p "$GW"
chmod 700 "$GW"
MASKED_PORT=$(free_port)
PLAIN_PORT=$(free_port)
while [[ $PLAIN_PORT == "$MASKED_PORT" ]]; do PLAIN_PORT=$(free_port); done
target_toml() {
    cat <<TOML
[[target]]
name = "$1"
listen = "127.0.0.1:$2"
upstream = "$DB_HOST:$DB_PORT"
database = "$DB"
user = "postgres"
upstream_tls = "disable"
default = "allow"

TOML
}
{
    cat <<TOML
# generated by bench/mask.sh
[gateway]
data_dir = "data"
public_url = "http://127.0.0.1:8443"

[[identity]]
name = "bench"
roles = ["bench"]

TOML
    target_toml masked "$MASKED_PORT"
    target_toml plain "$PLAIN_PORT"
    cat <<'TOML'
# 20 detectors: the 14 built-ins ("all") and 6 custom ones (the same as examples/mask_bench.rs).
[[mask]]
targets = ["masked"]
who = ["*"]
columns = ["*.ssn", "*.pin"]
detectors = ["all"]
custom = [
    { name = "employee_id", pattern = '\bEMP-[0-9]{6}\b' },
    { name = "order_ref", pattern = '\bORD-[A-Z]{2}[0-9]{8}\b' },
    { name = "passport", pattern = '\b[A-Z][0-9]{8}\b' },
    { name = "api_token", pattern = '\btok_[a-z0-9]{24}\b' },
    { name = "license", pattern = '\bLIC-[0-9]{4}-[0-9]{4}\b' },
    { name = "internal_host", pattern = '\b[a-z]{2,12}\.corp\.internal\b' },
]
strategy = "redact"
TOML
} >"$GW/portcullis.toml"
chmod 600 "$GW/portcullis.toml"
"$PORTCULLIS" check --config "$GW/portcullis.toml" >&2

"$PORTCULLIS" serve --config "$GW/portcullis.toml" >"$GW/serve.log" 2>&1 &
GATEWAY_PID=$!
bench_track_pid "$GATEWAY_PID"
if ! wait_for_ready "$GW/serve.log" "$GATEWAY_PID"; then
    log "portcullis serve did not become ready; log:"
    sed 's/^/  | /' "$GW/serve.log" >&2
    exit 1
fi
token_for() {
    "$PORTCULLIS" token issue --config "$GW/portcullis.toml" --identity bench --target "$1" \
        --ttl 1h --origin bench/mask.sh
}
MASKED_TOKEN=$(token_for masked)
PLAIN_TOKEN=$(token_for plain)

# psql_path PATH ARGS...: psql on one of the three paths.
psql_path() {
    local path=$1
    shift
    case $path in
    # No TLS on any path: psql would otherwise negotiate TLS with the server directly, while the
    # gateway paths are plaintext on both sides.
    direct) psql -X -q -At -v ON_ERROR_STOP=1 \
        "host=$DB_HOST port=$DB_PORT dbname=$DB user=postgres sslmode=disable" "$@" ;;
    plain) PGPASSWORD=$PLAIN_TOKEN psql -X -q -At -v ON_ERROR_STOP=1 \
        "host=127.0.0.1 port=$PLAIN_PORT dbname=plain user=bench sslmode=disable" "$@" ;;
    masked) PGPASSWORD=$MASKED_TOKEN psql -X -q -At -v ON_ERROR_STOP=1 \
        "host=127.0.0.1 port=$MASKED_PORT dbname=masked user=bench sslmode=disable" "$@" ;;
    esac
}

# Sanity: the masked target masks, the plain one doesn't.
sample="select email, ssn, pin, note from big where id in (7, 19) order by id"
say ""
say "== through the gateway: $ROWS rows, table $table_size, $((text_bytes / 1048576)) MiB as text =="
say "sample via masked: $(psql_path masked -c "$sample" | tr '\n' ' ')"
say "sample via plain:  $(psql_path plain -c "$sample" | tr '\n' ' ')"
if ! psql_path masked -c "$sample" | grep -q '\[redacted\]'; then
    log "the masked target did not mask: the numbers below would be meaningless"
    exit 1
fi

gateway_cpu() { # utime + stime of the gateway, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$GATEWAY_PID/stat"
}
vm_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$GATEWAY_PID/status"; }
TICKS=$(getconf CLK_TCK)
QUERY="select * from big"

# time_path PATH -> "seconds gateway_cpu_seconds" (best of RUNS by wall time)
time_path() {
    local path=$1 best= best_cpu= t0 t1 c0 c1 dt dc
    for _ in $(seq 1 "$RUNS"); do
        c0=$(gateway_cpu)
        t0=$(date +%s.%N)
        psql_path "$path" -c "$QUERY" >/dev/null
        t1=$(date +%s.%N)
        c1=$(gateway_cpu)
        dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        dc=$(awk -v a="$c0" -v b="$c1" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
        if [[ -z $best ]] || awk -v a="$dt" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$dt best_cpu=$dc
        fi
    done
    echo "$best $best_cpu"
}

hwm_start=$(vm_hwm)
log "timing $QUERY: direct, plain, masked (best of $RUNS each)"
read -r d_s d_cpu < <(time_path direct)
read -r p_s p_cpu < <(time_path plain)
read -r m_s m_cpu < <(time_path masked)
hwm_1m=$(vm_hwm)

log "10 x $QUERY in one session through masked"
script=$TMP/ten.sql
for _ in $(seq 1 10); do printf '%s;\n' "$QUERY"; done >"$script"
c0=$(gateway_cpu)
t0=$(date +%s.%N)
psql_path masked -f "$script" >/dev/null
t1=$(date +%s.%N)
c1=$(gateway_cpu)
ten_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
ten_cpu=$(awk -v a="$c0" -v b="$c1" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')
hwm_10m=$(vm_hwm)

rps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
d_rps=$(rps "$ROWS" "$d_s")
p_rps=$(rps "$ROWS" "$p_s")
m_rps=$(rps "$ROWS" "$m_s")
ten_rps=$(rps "$((ROWS * 10))" "$ten_s")

say ""
say "psql -At -c \"$QUERY\" > /dev/null, best of $RUNS (wall time; gateway CPU = its user+system time)"
say "$(printf '%-28s %10s %12s %16s' path seconds rows/s "gateway CPU s")"
say "$(printf '%-28s %10s %12s %16s' direct "$d_s" "$d_rps" -)"
say "$(printf '%-28s %10s %12s %16s' "gateway, masking off" "$p_s" "$p_rps" "$p_cpu")"
say "$(printf '%-28s %10s %12s %16s' "gateway, masking on (20)" "$m_s" "$m_rps" "$m_cpu")"
say "$(printf '%-28s %10s %12s %16s' "masking on, 10x one session" "$ten_s" "$ten_rps" "$ten_cpu")"
say ""
say "ratios (rows/s): masking off / direct $(ratio "$p_rps" "$d_rps"), masking on / direct $(ratio "$m_rps" "$d_rps"), masking on / masking off $(ratio "$m_rps" "$p_rps")"
say "gateway CPU per 1M rows: masking off $(awk -v c="$p_cpu" -v n="$ROWS" 'BEGIN { printf "%.2f", c * 1e6 / n }') s, masking on $(awk -v c="$m_cpu" -v n="$ROWS" 'BEGIN { printf "%.2f", c * 1e6 / n }') s"
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (wall times are noisy on a shared machine; gateway CPU is steadier)"
say "gateway peak RSS (VmHWM): at start $hwm_start kB, after the $ROWS-row queries $hwm_1m kB, after $((ROWS * 10)) more rows in one session $hwm_10m kB"

OUT_DIR=$ROOT/bench/results
mkdir -p "$OUT_DIR"
OUT=$OUT_DIR/mask-$(date +%Y%m%d-%H%M%S).txt
cp "$REPORT" "$OUT"
log "written to ${OUT#"$ROOT"/}"
