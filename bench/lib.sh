# Shell helpers shared by the bench/*.sh scripts. Source it after `cd` to the repository root:
#
#   source bench/lib.sh
#   bench_tmpdir portcullis-bench       # TMP=<new dir>, removed on exit with everything below
#   sshd ... & bench_track_pid $!        # stopped (TERM, then KILL after 5 s) on exit
#   BENCH_CLEANUP+=(stop_my_daemon)      # extra cleanup functions, run after the tracked pids
#
# Nothing here prints to stdout except the functions whose output is their value (free_port,
# ratio, now, ...): progress goes to stderr through `log`.

# Progress and diagnostics, on stderr so that stdout stays the report.
log() { printf '%s\n' "$*" >&2; }

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    log "no free port"; exit 1
}

# a / b with two decimals, or n/a when either is n/a or b is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

# Wall clock in seconds with nanoseconds, for timing a run: t0=$(now); ...; elapsed "$t0".
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
}

BENCH_PIDS=()    # processes this script started, stopped in reverse order on exit
BENCH_CLEANUP=() # functions run on exit after the processes are stopped, before TMP is removed
TMP=

bench_track_pid() { BENCH_PIDS+=("$1"); }

bench_cleanup() {
    set +e
    local i
    for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
        [[ -n ${BENCH_PIDS[i]} ]] && stop_pid "${BENCH_PIDS[i]}"
    done
    local hook
    for hook in "${BENCH_CLEANUP[@]}"; do "$hook"; done
    [[ -n $TMP ]] && rm -rf "$TMP"
}

# bench_tmpdir PREFIX: creates TMP under $TMPDIR (or /tmp) and installs the exit/interrupt traps.
bench_tmpdir() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# wait_for_ready LOG PID: waits up to 15 s for the gateway started as PID to print
# "portcullis: ready" into LOG. Fails if it does not, or exits first.
wait_for_ready() {
    local log_file=$1 pid=$2
    for _ in $(seq 1 150); do
        if grep -q '^portcullis: ready' "$log_file"; then return 0; fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
