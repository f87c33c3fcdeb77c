#!/usr/bin/env bash
# pgbench select-only through three paths, side by side: direct to PostgreSQL, through pgbouncer
# (session pooling), and through portcullis (keeping upstream connections too, `upstream_pool`, and
# busy polling for a lone session, `relay_busy_poll_us`).
# Run as root (pgbouncer is started as `postgres`).
#
#   DURATION=10           seconds per pgbench run (default 10)
#   ROUNDS=1              rounds per cell, the three paths interleaved; the table shows medians
#   PGHOST_DIRECT=127.0.0.1 PGPORT_DIRECT=5432   the PostgreSQL under test (trust auth expected)
#   BENCH_PG_PASSWORD=... password of user postgres, if the server is not on trust
#   SKIP_BUILD=1          use the existing target/release/portcullis (PORTCULLIS_BIN overrides the path)
#   FORCE_INIT=1          re-run `pgbench -i -s 10` even if the data is there
#
# Prints TPS (and ratios: of the medians, and per round), the machine's busy CPU per transaction,
# the proxy process's own CPU and context switches per transaction and the added latency at one
# client, and writes them to bench/results/pg-<date>.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
DB_HOST=${PGHOST_DIRECT:-127.0.0.1}
DB_PORT=${PGPORT_DIRECT:-5432}
SCALE=10
CLIENTS=(1 8 32)
MODES=(simple prepared)
PORTCULLIS=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}

# Keep pgbench's environment to exactly what we pass.
unset PGHOST PGPORT PGUSER PGDATABASE PGPASSWORD PGSSLMODE PGSERVICE PGOPTIONS || true

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_tmpdir portcullis-bench
chmod 755 "$TMP"
PGBOUNCER_PIDFILE=$TMP/pgbouncer/pgbouncer.pid
GATEWAY_PID=
stop_pgbouncer() {
    if [[ -s $PGBOUNCER_PIDFILE ]]; then
        stop_pid "$(cat "$PGBOUNCER_PIDFILE")"
    fi
}
BENCH_CLEANUP+=(stop_pgbouncer)

direct_env=()
if [[ -n ${BENCH_PG_PASSWORD:-} ]]; then direct_env=(PGPASSWORD="$BENCH_PG_PASSWORD"); fi
psql_direct() { env "${direct_env[@]}" psql -X -q -At -h "$DB_HOST" -p "$DB_PORT" -U postgres "$@"; }

# ---- the database ---------------------------------------------------------------------------
if ! psql_direct -d postgres -c 'select 1' >/dev/null; then
    log "cannot reach PostgreSQL at $DB_HOST:$DB_PORT as postgres (trust auth, or set BENCH_PG_PASSWORD)"
    exit 1
fi
if [[ $(psql_direct -d postgres -c "select count(*) from pg_database where datname = 'bench'") != 1 ]]; then
    log "creating database bench"
    psql_direct -d postgres -c 'create database bench' >/dev/null
fi
branches=$(psql_direct -d bench -c 'select count(*) from pgbench_branches' 2>/dev/null || echo 0)
if [[ ${FORCE_INIT:-} == 1 || $branches != "$SCALE" ]]; then
    log "pgbench -i -s $SCALE bench"
    env "${direct_env[@]}" pgbench -i -q -s "$SCALE" -h "$DB_HOST" -p "$DB_PORT" -U postgres bench >&2
fi

# ---- connection headroom --------------------------------------------------------------------
# pgbouncer keeps a server connection for each client it has served and portcullis keeps its
# upstream ones (`upstream_pool`), so while direct runs at the most clients, both proxies may
# still hold as many: three times the largest client count, on top of what is already connected.
max_clients=$(printf '%s\n' "${CLIENTS[@]}" | sort -n | tail -1)
need=$((3 * max_clients))
server_max=$(psql_direct -d postgres -c 'show max_connections')
in_use=$(psql_direct -d postgres -c "select count(*) - 1 from pg_stat_activity where backend_type = 'client backend'")
if ((server_max - in_use < need)); then
    log "PostgreSQL at $DB_HOST:$DB_PORT allows $server_max connections and $in_use are in use; this run needs up to $need"
    log "(direct, pgbouncer and portcullis at $max_clients clients each): close some, or raise max_connections"
    exit 1
fi

# ---- pgbouncer (session mode) ---------------------------------------------------------------
PGBOUNCER_PORT=
PGBOUNCER_PASSWORD=bench-$RANDOM$RANDOM
if PGBOUNCER_EXE=$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null); then
    PGBOUNCER_PORT=$(free_port)
    mkdir -p "$TMP/pgbouncer"
    server_password=
    if [[ -n ${BENCH_PG_PASSWORD:-} ]]; then server_password=" password=$BENCH_PG_PASSWORD"; fi
    cat >"$TMP/pgbouncer/pgbouncer.ini" <<INI
[databases]
bench = host=$DB_HOST port=$DB_PORT dbname=bench user=postgres$server_password

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $TMP/pgbouncer/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 40
ignore_startup_parameters = extra_float_digits
logfile = $TMP/pgbouncer/pgbouncer.log
pidfile = $PGBOUNCER_PIDFILE
INI
    printf '"postgres" "%s"\n' "$PGBOUNCER_PASSWORD" >"$TMP/pgbouncer/userlist.txt"
    chmod 600 "$TMP/pgbouncer/userlist.txt" "$TMP/pgbouncer/pgbouncer.ini"
    if [[ $(id -u) == 0 ]]; then
        chown -R postgres:postgres "$TMP/pgbouncer"
        runuser -u postgres -- "$PGBOUNCER_EXE" -d "$TMP/pgbouncer/pgbouncer.ini" >&2 || true
    else
        "$PGBOUNCER_EXE" -d "$TMP/pgbouncer/pgbouncer.ini" >&2 || true
    fi
    for _ in $(seq 1 50); do
        PGPASSWORD=$PGBOUNCER_PASSWORD psql -X -q -At -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres \
            -d bench -c 'select 1' >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! PGPASSWORD=$PGBOUNCER_PASSWORD psql -X -q -At -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres \
        -d bench -c 'select 1' >/dev/null; then
        log "pgbouncer did not come up; log:"; cat "$TMP/pgbouncer/pgbouncer.log" >&2 || true
        PGBOUNCER_PORT=
    fi
else
    log "pgbouncer not installed: its column will be n/a"
fi

# ---- portcullis -----------------------------------------------------------------------------
GATEWAY_PORT=
TOKEN=
start_portcullis() {
    if [[ ${SKIP_BUILD:-} != 1 ]]; then
        log "cargo build --release"
        if ! cargo build --release >&2; then
            log "portcullis did not build: its column will be n/a"
            return
        fi
    fi
    if [[ ! -x $PORTCULLIS ]]; then
        log "no $PORTCULLIS: its column will be n/a"
        return
    fi
    local gw=$TMP/portcullis port
    mkdir -p "$gw"
    chmod 700 "$gw"
    port=$(free_port)
    local password_line=
    if [[ -n ${BENCH_PG_PASSWORD:-} ]]; then
        (umask 077; printf '%s' "$BENCH_PG_PASSWORD" >"$gw/upstream.pass")
        password_line='password_file = "upstream.pass"'
    fi
    cat >"$gw/portcullis.toml" <<TOML
# generated by bench/pg.sh
[gateway]
data_dir = "data"
public_url = "http://127.0.0.1:8443"
max_connections = 1024
# A lone busy session (the 1-client cells) is polled for before its relay thread sleeps; the
# proxy CPU column shows what that costs. The budget must cover a round trip through PostgreSQL
# (a statement's answer is polled for too): 50 µs did on an Intel VM, where one select took ~65
# µs; on an AMD EPYC VM it takes ~170 µs and 50 µs polls mostly missed (README "Busy polling").
relay_busy_poll_us = 200

[[identity]]
name = "bench"
roles = ["ci"]

[[target]]
name = "bench"
kind = "postgres"
listen = "127.0.0.1:$port"
upstream = "$DB_HOST:$DB_PORT"
database = "bench"
user = "postgres"
$password_line
upstream_tls = "disable"
default = "block"
# As pgbouncer's pool above (default_pool_size = 40): later sessions get warm backends.
upstream_pool = 40

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
TOML
    chmod 600 "$gw/portcullis.toml"
    # In its own session, as pgbouncer (-d) and a systemd service are: with the kernel's
    # autogroup scheduling (sched_autogroup_enabled=1) a process started from this script would
    # otherwise share one CPU group with pgbench while pgbouncer got a group of its own.
    setsid "$PORTCULLIS" serve --config "$gw/portcullis.toml" >"$gw/serve.log" 2>&1 &
    GATEWAY_PID=$!
    bench_track_pid "$GATEWAY_PID"
    if ! wait_for_ready "$gw/serve.log" "$GATEWAY_PID"; then
        log "portcullis serve did not become ready: its column will be n/a; log:"
        sed 's/^/  | /' "$gw/serve.log" >&2
        return
    fi
    local token
    if ! token=$("$PORTCULLIS" token issue --config "$gw/portcullis.toml" --identity bench \
        --target bench --ttl 1h --origin bench/pg.sh); then
        log "portcullis token issue failed: its column will be n/a"
        return
    fi
    TOKEN=$token
    GATEWAY_PORT=$port
}
start_portcullis

# ---- runs -----------------------------------------------------------------------------------
# Busy CPU time of the whole machine so far, in clock ticks (user+nice+system+irq+softirq+steal
# from /proc/stat): every process a run wakes (pgbench, the backends, the proxy) is counted.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Page faults of the whole machine so far (/proc/vmstat pgfault). A PostgreSQL backend that is
# new maps each shared buffer it reads with a fault of its own; pgbouncer's pooled server
# connections were mapped by earlier runs: this count shows how much of a path's work that is.
fault_count() { awk '$1 == "pgfault" { print $2; exit }' /proc/vmstat; }
TICKS_PER_S=$(getconf CLK_TCK)

# User + system CPU time in a /proc stat FILE (a process's or a thread's), in clock ticks; empty
# if it is gone.
stat_ticks() { awk '{ print $14 + $15 }' "$1" 2>/dev/null; }

# CPU time (user + system, all threads) of process PID so far, in clock ticks; empty if gone.
proc_ticks() { stat_ticks "/proc/$1/stat"; }

# CPU time (user + system) of process PID's threads named NAME so far, in clock ticks; empty if
# there are none.
thread_ticks() {
    local pid=$1 name=$2 task total= comm ticks
    for task in /proc/"$pid"/task/*; do
        comm=$(cat "$task/comm" 2>/dev/null) || continue
        [[ $comm == "$name" ]] || continue
        ticks=$(stat_ticks "$task/stat")
        total=$(( ${total:-0} + ${ticks:-0} ))
    done
    echo "$total"
}

# us_per_tx TRANSACTIONS TICKS_BEFORE TICKS_AFTER: the CPU time between the two readings per
# transaction, in µs; n/a without transactions or a reading.
us_per_tx() {
    awk -v t="${1:-0}" -v a="${2:-}" -v b="${3:-}" -v hz="$TICKS_PER_S" \
        'BEGIN { if (t > 0 && a != "" && b != "") printf "%.1f", (b - a) / hz * 1e6 / t; else print "n/a" }'
}

# Context switches of process PID's threads so far: "voluntary involuntary" (a thread that
# sleeps for its sockets, a thread preempted), summed over /proc/PID/task/*/status; empty if gone.
ctx_switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '$1 == "voluntary_ctxt_switches:" { v += $2; n = 1 } $1 == "nonvoluntary_ctxt_switches:" { i += $2 }
             END { if (n) print v, i }'
}

# per_tx TRANSACTIONS BEFORE AFTER: the count between the two readings per transaction (two
# decimals), n/a without transactions or a reading.
per_tx() {
    awk -v t="${1:-0}" -v a="${2:-}" -v b="${3:-}" \
        'BEGIN { if (t > 0 && a != "" && b != "") printf "%.2f", (b - a) / t; else print "n/a" }'
}

# The proxy process of a path (nothing for direct).
proxy_pid() {
    case $1 in
    pgbouncer) if [[ -s $PGBOUNCER_PIDFILE ]]; then cat "$PGBOUNCER_PIDFILE"; fi ;;
    portcullis) echo "$GATEWAY_PID" ;;
    esac
}

# run_pgbench PATH MODE CLIENTS -> "tps latency_ms cpu_us proxy_us writer_us faults vol invol" or
# n/a for each; cpu_us is the machine's busy CPU time per transaction, proxy_us the proxy
# process's own, writer_us the part of it spent by portcullis's audit writer thread, in µs;
# faults the machine's page faults per transaction; vol and invol the proxy's voluntary and
# involuntary context switches per transaction.
run_pgbench() {
    local path=$1 mode=$2 clients=$3 jobs out
    jobs=$((clients < 2 ? clients : 2))
    local args=(-n -S -M "$mode" -c "$clients" -j "$jobs" -T "$DURATION")
    local ticks_before ticks_after pid proxy_before proxy_after writer_before= writer_after=
    local faults_before faults_after cs_before=() cs_after=()
    pid=$(proxy_pid "$path")
    proxy_before=
    if [[ -n $pid ]]; then
        proxy_before=$(proc_ticks "$pid")
        read -r -a cs_before <<<"$(ctx_switches "$pid")"
    fi
    if [[ $path == portcullis && -n $pid ]]; then writer_before=$(thread_ticks "$pid" audit-writer); fi
    faults_before=$(fault_count)
    ticks_before=$(busy_ticks)
    case $path in
    # A failed run keeps its output: it is shown below, and has no "tps = " line to read.
    direct) out=$(env "${direct_env[@]}" pgbench "${args[@]}" -h "$DB_HOST" -p "$DB_PORT" -U postgres bench 2>&1) || true ;;
    pgbouncer)
        [[ -n $PGBOUNCER_PORT ]] || { echo "n/a n/a n/a n/a n/a n/a n/a n/a"; return; }
        out=$(PGPASSWORD=$PGBOUNCER_PASSWORD pgbench "${args[@]}" -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres bench 2>&1) || true ;;
    portcullis)
        [[ -n $GATEWAY_PORT ]] || { echo "n/a n/a n/a n/a n/a n/a n/a n/a"; return; }
        out=$(PGPASSWORD=$TOKEN pgbench "${args[@]}" -h 127.0.0.1 -p "$GATEWAY_PORT" -U bench bench 2>&1) || true ;;
    esac
    ticks_after=$(busy_ticks)
    faults_after=$(fault_count)
    proxy_after=
    if [[ -n $pid ]]; then
        proxy_after=$(proc_ticks "$pid")
        read -r -a cs_after <<<"$(ctx_switches "$pid")"
    fi
    if [[ -n $writer_before ]]; then writer_after=$(thread_ticks "$pid" audit-writer); fi
    local tps lat txns cpu proxy writer faults vol invol
    tps=$(awk '/^tps = / {print $3; exit}' <<<"$out")
    lat=$(awk '/^latency average = / {print $4; exit}' <<<"$out")
    txns=$(awk '/^number of transactions actually processed: / {print $NF; exit}' <<<"$out")
    cpu=$(us_per_tx "$txns" "$ticks_before" "$ticks_after")
    proxy=$(us_per_tx "$txns" "$proxy_before" "$proxy_after")
    writer=$(us_per_tx "$txns" "$writer_before" "$writer_after")
    faults=$(per_tx "$txns" "$faults_before" "$faults_after")
    vol=$(per_tx "$txns" "${cs_before[0]:-}" "${cs_after[0]:-}")
    invol=$(per_tx "$txns" "${cs_before[1]:-}" "${cs_after[1]:-}")
    if [[ -z $tps ]]; then
        log "pgbench via $path ($mode, $clients clients) failed:"
        if [[ -n $out ]]; then sed 's/^/  | /' <<<"$out" | tail -5 >&2; fi
    fi
    echo "${tps:-n/a} ${lat:-n/a} ${cpu} ${proxy} ${writer} ${faults} ${vol} ${invol}"
}

fmt_tps() { awk -v a="$1" 'BEGIN { if (a == "n/a") print "n/a"; else printf "%.0f", a }'; }
# fmt_rounds TPS...: each round's TPS, a failed round as n/a.
fmt_rounds() { local v; for v in "$@"; do printf '%s ' "$(fmt_tps "$v")"; done; }
added_us() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else printf "%+.0f", (a - b) * 1000 }'; }

# median VALUES...: the middle value (the lower middle for an even count); n/a values are
# ignored, n/a if all are.
median() {
    printf '%s\n' "$@" | grep -v '^n/a$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else print v[int((NR + 1) / 2)] }'
}

declare -A LAT
rows=() cpu_rows=() proxy_rows=() fault_rows=() switch_rows=()
PATHS=(direct pgbouncer portcullis)
for mode in "${MODES[@]}"; do
    for c in "${CLIENTS[@]}"; do
        log "running $mode, $c clients, ${DURATION}s each, $ROUNDS round(s)"
        d_all=() b_all=() p_all=() dl_all=() bl_all=() pl_all=() dc_all=() bc_all=() pc_all=()
        bx_all=() px_all=() pw_all=() paired=() df_all=() bf_all=() pf_all=()
        bv_all=() bi_all=() pv_all=() pi_all=()
        # Rounds interleave the three paths, so a slow spell of the machine hits all of them, and
        # each round starts with the next path, so none always runs first (on a cold cache, or
        # right after another path's backends exit).
        for round in $(seq 1 "$ROUNDS"); do
            for k in 0 1 2; do
                path=${PATHS[$(((round - 1 + k) % 3))]}
                read -r tps lat cpu proxy writer faults vol invol < <(run_pgbench "$path" "$mode" "$c")
                case $path in
                direct) d_all+=("$tps") dl_all+=("$lat") dc_all+=("$cpu") df_all+=("$faults") ;;
                pgbouncer) b_all+=("$tps") bl_all+=("$lat") bc_all+=("$cpu") bx_all+=("$proxy") bf_all+=("$faults")
                    bv_all+=("$vol") bi_all+=("$invol") ;;
                portcullis) p_all+=("$tps") pl_all+=("$lat") pc_all+=("$cpu") px_all+=("$proxy") pw_all+=("$writer") pf_all+=("$faults")
                    pv_all+=("$vol") pi_all+=("$invol") ;;
                esac
            done
            # The same round's two proxies ran minutes apart at most: their ratio is less
            # exposed to the machine's slow spells than the ratio of medians.
            paired+=("$(ratio "${p_all[-1]}" "${b_all[-1]}")")
        done
        d_tps=$(median "${d_all[@]}") b_tps=$(median "${b_all[@]}") p_tps=$(median "${p_all[@]}")
        d_cpu=$(median "${dc_all[@]}") b_cpu=$(median "${bc_all[@]}") p_cpu=$(median "${pc_all[@]}")
        bx=$(median "${bx_all[@]}") px=$(median "${px_all[@]}") pw=$(median "${pw_all[@]}")
        proxy_rows+=("$(printf '%-9s %7s %14s %15s %22s %20s' "$mode" "$c" "$bx" "$px" \
            "$(awk -v a="$px" -v b="$bx" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else printf "%+.1f", a - b }')" "$pw")")
        switch_rows+=("$(printf '%-9s %7s %16s %18s %17s %19s' "$mode" "$c" "$(median "${bv_all[@]}")" \
            "$(median "${bi_all[@]}")" "$(median "${pv_all[@]}")" "$(median "${pi_all[@]}")")")
        fault_rows+=("$(printf '%-9s %7s %12s %14s %15s' "$mode" "$c" "$(median "${df_all[@]}")" \
            "$(median "${bf_all[@]}")" "$(median "${pf_all[@]}")")")
        cpu_rows+=("$(printf '%-9s %7s %12s %14s %15s %22s' "$mode" "$c" "$d_cpu" "$b_cpu" "$p_cpu" \
            "$(awk -v a="$p_cpu" -v b="$b_cpu" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else printf "%+.1f", a - b }')")")
        rows+=("$(printf '%-9s %7s %12s %14s %15s %18s %21s' "$mode" "$c" "$(fmt_tps "$d_tps")" \
            "$(fmt_tps "$b_tps")" "$(fmt_tps "$p_tps")" "$(ratio "$p_tps" "$d_tps")" "$(ratio "$p_tps" "$b_tps")")")
        if [[ $ROUNDS -gt 1 ]]; then
            rows+=("$(printf '  rounds: direct %s | pgbouncer %s | portcullis %s | portcullis/pgbouncer per round %s(median %s)' \
                "$(fmt_rounds "${d_all[@]}")" "$(fmt_rounds "${b_all[@]}")" "$(fmt_rounds "${p_all[@]}")" \
                "$(printf '%s ' "${paired[@]}")" "$(median "${paired[@]}")")")
        fi
        if [[ $c == 1 ]]; then
            LAT[$mode]="$(median "${dl_all[@]}") $(median "${bl_all[@]}") $(median "${pl_all[@]}")"
        fi
    done
done

OUT_DIR=$ROOT/bench/results
mkdir -p "$OUT_DIR"
OUT=$OUT_DIR/pg-$(date +%Y%m%d-%H%M%S).txt
{
    echo "portcullis bench/pg.sh — pgbench -S (select-only), scale $SCALE, ${DURATION}s per run, median of $ROUNDS interleaved round(s)"
    echo "date: $(date -Is)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')  cpus: $(nproc)"
    echo "server: $(psql_direct -d postgres -c 'show server_version')  pgbouncer: $( [[ -n $PGBOUNCER_PORT ]] && "$PGBOUNCER_EXE" --version 2>/dev/null | head -1 || echo n/a)  portcullis: $( [[ -n $GATEWAY_PORT ]] && echo "$PORTCULLIS" || echo n/a)"
    echo
    printf '%-9s %7s %12s %14s %15s %18s %21s\n' mode clients "direct TPS" "pgbouncer TPS" "portcullis TPS" "portcullis/direct" "portcullis/pgbouncer"
    printf '%s\n' "${rows[@]}"
    echo
    echo "machine CPU per transaction, µs (all processes: pgbench, backends, proxy; /proc/stat busy time ÷ transactions; median):"
    printf '%-9s %7s %12s %14s %15s %22s\n' mode clients direct pgbouncer portcullis "portcullis-pgbouncer"
    printf '%s\n' "${cpu_rows[@]}"
    echo
    echo "page faults per transaction (whole machine, /proc/vmstat pgfault; median): new PostgreSQL backends"
    echo "fault on each shared buffer they map; pgbouncer's pooled server connections were mapped by earlier runs:"
    printf '%-9s %7s %12s %14s %15s\n' mode clients direct pgbouncer portcullis
    printf '%s\n' "${fault_rows[@]}"
    echo
    echo "proxy process CPU per transaction, µs (user + system time of all its threads ÷ transactions; median):"
    printf '%-9s %7s %14s %15s %22s %20s\n' mode clients pgbouncer portcullis "portcullis-pgbouncer" "of it audit writer"
    printf '%s\n' "${proxy_rows[@]}"
    echo
    echo "proxy context switches per transaction (all its threads, /proc/PID/task/*/status; median): a thread"
    echo "that sleeps until its sockets are ready (voluntary), or is preempted by a thread it woke (involuntary):"
    printf '%-9s %7s %16s %18s %17s %19s\n' mode clients "pgbouncer vol" "pgbouncer invol" "portcullis vol" "portcullis invol"
    printf '%s\n' "${switch_rows[@]}"
    echo
    echo "latency at 1 client (pgbench \"latency average\"):"
    printf '%-9s %12s %14s %15s %22s %22s\n' mode "direct ms" "pgbouncer ms" "portcullis ms" "portcullis-direct µs" "pgbouncer-direct µs"
    for mode in "${MODES[@]}"; do
        read -r d b p <<<"${LAT[$mode]}"
        printf '%-9s %12s %14s %15s %22s %22s\n' "$mode" "$d" "$b" "$p" "$(added_us "$p" "$d")" "$(added_us "$b" "$d")"
    done
} | tee "$OUT"
log "written to ${OUT#"$ROOT"/}"
