#!/usr/bin/env bash
# The proxy example against HAProxy, both in front of the same two h2c backends (the example
# backend), loaded by the same h2load: requests per second, syscalls and socket writes per
# request, and user-space instructions per request. See docs/throughput.md for a run.
#
#   scripts/proxy_bench.sh rps [THREADS...]      req/s, ROUNDS rounds, side by side (default 1 2)
#   scripts/proxy_bench.sh syscalls [THREADS...] syscalls, writes (to backends / to clients)
#                                                and CPU time per request (perf tracepoints)
#   scripts/proxy_bench.sh instr [THREADS...]    user-space instructions per request (callgrind:
#                                                (I(N2) - I(N1)) / (N2 - N1), start-up cancels)
#
# Environment: ROUNDS (3), N (30000 requests per h2load run), CONNS (8), STREAMS (16):
# `h2load -n N -c CONNS -m STREAMS`, the load of issue 14; N1/N2 (10000/20000) for `instr`;
# RUNTIMES ("multi per-core"): the proxy's --runtime values to measure; BASE_PROXY=path to
# an older proxy binary (run without --runtime) to measure beside; HAPROXY=0 to leave
# HAProxy out; FORWARDFOR=0: HAProxy without `option forwardfor` (the proxy always adds
# x-forwarded-for); BARE=1 to measure examples/bare_forwarder.rs beside (hyper's h2 server
# and raw h2 clients, nothing else: the floor under the proxy; one thread whatever THREADS
# says); PROXY_BIN: the proxy binary to measure (default: the one built here).
#
# Installs nothing. Needs h2load (Debian/Ubuntu: `apt-get install nghttp2-client`), haproxy
# 2.6 or later (`apt-get install haproxy`), curl; `syscalls` needs perf with access to the
# syscall tracepoints (`apt-get install linux-perf` or linux-tools-$(uname -r), run as root
# or with kernel.perf_event_paranoid <= 1); `instr` needs valgrind (`apt-get install
# valgrind`). Wall-clock figures on a shared machine move between runs: compare only
# figures from one run. The counts (syscalls, writes, instructions) do not drift.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-rps}
shift || true
THREADS=("$@")
[ ${#THREADS[@]} -eq 0 ] && THREADS=(1 2)
ROUNDS=${ROUNDS:-3}
N=${N:-30000}
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-16}
N1=${N1:-10000}
N2=${N2:-20000}
read -r -a RUNTIMES <<<"${RUNTIMES-multi per-core}"
E=${CARGO_TARGET_DIR:-target}/release/examples
PROXY=${PROXY_BIN:-$E/proxy}
B1=19101 B2=19102 HP=28101
cargo build --release --example proxy --example backend --example bare_forwarder >&2
W=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

"$E/backend" --listen 127.0.0.1:$B1 --name b1 >"$W/b1.log" 2>&1 &
PIDS+=($!)
"$E/backend" --listen 127.0.0.1:$B2 --name b2 >"$W/b2.log" 2>&1 &
PIDS+=($!)

haproxy_cfg() {
    cat >"$W/haproxy.cfg" <<EOF
global
    nbthread $1
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$HP proto h2
    default_backend be
backend be
    balance roundrobin
    # The proxy example appends x-forwarded-for to every request; so does HAProxy here
    # (FORWARDFOR=0 leaves it out, as runs before 2026-11-30 did).
    $( [ "${FORWARDFOR:-1}" != 0 ] && echo "option forwardfor" || true )
    server b1 127.0.0.1:$B1 proto h2
    server b2 127.0.0.1:$B2 proto h2
EOF
}

# Waits until PORT answers a request (an h2c GET through to a backend).
wait_ready() {
    for _ in $(seq 300); do
        curl -sS -o /dev/null --max-time 2 --http2-prior-knowledge "http://127.0.0.1:$1/" \
            2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    return 1
}

# Starts target NAME with THREADS threads (under the command prefix in $WRAP, if any);
# sets PID.
start() {
    local name=$1 t=$2
    case $name in
        haproxy)
            haproxy_cfg "$t"
            $WRAP haproxy -db -f "$W/haproxy.cfg" >"$W/$name.log" 2>&1 &
            ;;
        bare)
            $WRAP "$E/bare_forwarder" --listen 127.0.0.1:"$(port bare)" --backend 127.0.0.1:$B1 \
                --backend 127.0.0.1:$B2 >"$W/$name.log" 2>&1 &
            ;;
        base)
            $WRAP "$BASE_PROXY" --listen 127.0.0.1:"$(port base)" --backend 127.0.0.1:$B1 \
                --backend 127.0.0.1:$B2 --threads "$t" >"$W/$name.log" 2>&1 &
            ;;
        *)
            $WRAP "$PROXY" --listen 127.0.0.1:"$(port "$name")" --backend 127.0.0.1:$B1 \
                --backend 127.0.0.1:$B2 --threads "$t" --runtime "$name" >"$W/$name.log" 2>&1 &
            ;;
    esac
    PID=$!
    wait_ready "$(port "$name")"
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Each target has its own port, so that `rps` can run them all at once.
port() {
    case $1 in
        haproxy) echo $HP ;;
        base) echo 18100 ;;
        bare) echo 18104 ;;
        multi) echo 18101 ;;
        *) echo 18102 ;;
    esac
}

targets() {
    local t=()
    [ -n "${BASE_PROXY:-}" ] && t+=(base)
    [ "${BARE:-0}" != 0 ] && t+=(bare)
    t+=("${RUNTIMES[@]}")
    [ "${HAPROXY:-1}" != 0 ] && t+=(haproxy)
    echo "${t[@]}"
}

# h2load's req/s for N requests to PORT (and its failures on stderr).
load() {
    local out
    out=$(h2load -n "$1" -c "$CONNS" -m "$STREAMS" -t 1 "http://127.0.0.1:$2/" 2>&1)
    local failed
    failed=$(echo "$out" | awk '/^requests:/ {print $10}')
    [ "$failed" = 0 ] || echo "  ($failed of $1 requests failed on port $2)" >&2
    echo "$out" | awk '/^finished in/ {print $4}'
}

WRAP=
case $MODE in
rps)
    echo "h2load -n $N -c $CONNS -m $STREAMS; req/s per round, then best and median of $ROUNDS"
    echo "(every target runs at once, idle but the one loaded; each round loads them in turn)"
    for t in "${THREADS[@]}"; do
        names=$(targets)
        declare -A pid=() rs=()
        for name in $names; do
            start "$name" "$t"
            pid[$name]=$PID
            load 2000 "$(port "$name")" >/dev/null # warm-up: connections open, caches warm
        done
        for _ in $(seq "$ROUNDS"); do
            for name in $names; do rs[$name]="${rs[$name]:-} $(load "$N" "$(port "$name")")"; done
        done
        for name in $names; do
            stop "${pid[$name]}"
            echo "${rs[$name]}" | tr ' ' '\n' | grep . | sort -g | awk -v n="$name" -v t="$t" \
                '{ v[NR] = $1; all = all " " $1 } END {
                    printf "threads %d  %-9s best %9.0f  median %9.0f  (sorted:%s)\n",
                        t, n, v[NR], v[int((NR + 1) / 2)], all }'
        done
        unset pid rs
    done
    ;;
syscalls)
    hex() { printf '%04X' "$1"; }
    echo "per request, h2load -n $N -c $CONNS -m $STREAMS (after a 2000-request warm-up)"
    printf '| threads | target | syscalls | writes to backends | writes to clients | other writes | CPU µs |\n|---|---|---|---|---|---|---|\n'
    for t in "${THREADS[@]}"; do
        for name in $(targets); do
            start "$name" "$t"
            load 2000 "$(port "$name")" >/dev/null
            # Socket inodes whose remote end is a backend; then their fds in this process.
            inodes=$(awk -v a=":$(hex $B1)" -v b=":$(hex $B2)" \
                'NR > 1 && (substr($3, length($3) - 4) == a || substr($3, length($3) - 4) == b) \
                 { print $10 }' /proc/net/tcp | sort -u)
            bfds= ofds="0 1 2"
            for fd in /proc/"$PID"/fd/*; do
                l=$(readlink "$fd" 2>/dev/null) || continue
                case $l in socket:*) ;; *) ofds="$ofds ${fd##*/}"; continue ;; esac
                for i in $inodes; do [ "$l" = "socket:[$i]" ] && bfds="$bfds ${fd##*/}"; done
            done
            cpu0=$(awk '{ print $14 + $15 }' /proc/"$PID"/stat)
            perf record -q -o "$W/perf.data" -p "$PID" -e raw_syscalls:sys_enter \
                -e syscalls:sys_enter_write -e syscalls:sys_enter_writev \
                -e syscalls:sys_enter_sendto -e syscalls:sys_enter_sendmsg 2>/dev/null &
            rec=$!
            sleep 1
            load "$N" "$(port "$name")" >/dev/null
            kill -INT $rec
            wait $rec 2>/dev/null || true
            cpu1=$(awk '{ print $14 + $15 }' /proc/"$PID"/stat)
            stop "$PID"
            hz=$(getconf CLK_TCK)
            perf script -i "$W/perf.data" -F event,trace 2>/dev/null | awk \
                -v bfds="$bfds" -v ofds="$ofds" -v n="$N" -v cpu=$((cpu1 - cpu0)) -v hz="$hz" -v t="$t" \
                -v name="$name" '
                function hex(s,   i, v) {
                    v = 0
                    for (i = 1; i <= length(s); i++)
                        v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
                    return v
                }
                BEGIN {
                    split(bfds, f, " "); for (i in f) back[f[i]] = 1
                    split(ofds, f, " "); for (i in f) other[f[i]] = 1
                }
                /raw_syscalls:sys_enter/ { sys++; next }
                /sys_enter_(write|writev|sendto|sendmsg)/ {
                    match($0, /fd: 0x[0-9a-f]+/)
                    fd = hex(substr($0, RSTART + 6, RLENGTH - 6))
                    if (fd in back) b++
                    else if (fd in other) o++
                    else c++
                }
                END {
                    printf "| %d | %s | %.3f | %.3f | %.3f | %.3f | %.1f |\n", t, name,
                        sys / n, b / n, c / n, o / n, cpu * 1e6 / hz / n }'
        done
    done
    echo "(perf's own start and stop fall inside the window: a few hundred syscalls, < 0.01 per request;"
    echo " other writes: to eventfds (wake-ups between threads), pipes and stdio.)"
    ;;
instr)
    echo "user-space instructions per request: (I($N2) - I($N1)) / $((N2 - N1)), callgrind"
    printf '| threads | target | instructions per request |\n|---|---|---|\n'
    WRAP="valgrind --tool=callgrind --callgrind-out-file=/dev/null"
    for t in "${THREADS[@]}"; do
        for name in $(targets); do
            c=()
            for n in "$N1" "$N2"; do
                start "$name" "$t"
                load "$n" "$(port "$name")" >/dev/null
                stop "$PID"
                c+=("$(sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' "$W/$name.log")")
            done
            awk -v a="${c[0]}" -v b="${c[1]}" -v n="$((N2 - N1))" -v t="$t" -v name="$name" \
                'BEGIN { printf "| %d | %s | %.0f |\n", t, name, (b - a) / n }'
        done
    done
    echo "(the curl request that checks the target is up is in both runs and cancels out)"
    ;;
*)
    echo "usage: $0 rps|syscalls|instr [THREADS...]" >&2
    exit 2
    ;;
esac
