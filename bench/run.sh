#!/usr/bin/env bash
# bench/run.sh — the benchmark matrix of docs/BENCHMARKS.md.
#
# Builds the baseline servers, the wsgate server and wsgate-bench into a
# temporary directory, then for each server (started fresh for every run,
# pinned to one core, the generator pinned to another) measures:
#   echo 100 conns × 64 B and echo 1,000 conns × 1 KiB (RUNS times each),
#   idle connections (server RSS per connection), connects per second,
# plus the generator's raw ceiling against tcpecho. Prints the Markdown
# tables on stdout and writes every report and the medians as JSON.
#
# Usage: bench/run.sh [options]        (each option also has an env variable)
#   --servers "a b c"   servers to run (SERVERS; default: all)
#   --runs N            runs per echo/connect case, median shown (RUNS; 3)
#   --duration D        measured time per echo run (DURATION; 10s)
#   --warmup D          warmup before each echo run (WARMUP; 2s)
#   --connect-duration D  measured time per connect run (CONNECT_DURATION; 5s)
#   --idle-n N          idle connections (IDLE_N; 19000)
#   --idle-hold D       how long they are held (IDLE_HOLD; 5s)
#   --out FILE          JSON results (OUT; bench/results/<timestamp>.json)
#   --quick             smoke test: 1 run, 2s, 2,000 idle connections
#   --server-cpu N / --gen-cpu N   cores to pin to (SERVER_CPU 0, GEN_CPU 1)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALL_SERVERS="tutorial gorilla gws nbio wsgate epollref"
SERVERS=${SERVERS:-$ALL_SERVERS}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECT_DURATION=${CONNECT_DURATION:-5s}
CONNECT_C=${CONNECT_C:-64}
IDLE_N=${IDLE_N:-19000}
IDLE_RATE=${IDLE_RATE:-5000}
IDLE_HOLD=${IDLE_HOLD:-5s}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
OUT=${OUT:-}

while [ $# -gt 0 ]; do
	case "$1" in
	--servers) SERVERS=$2; shift ;;
	--runs) RUNS=$2; shift ;;
	--duration) DURATION=$2; shift ;;
	--warmup) WARMUP=$2; shift ;;
	--connect-duration) CONNECT_DURATION=$2; shift ;;
	--idle-n) IDLE_N=$2; shift ;;
	--idle-hold) IDLE_HOLD=$2; shift ;;
	--out) OUT=$2; shift ;;
	--server-cpu) SERVER_CPU=$2; shift ;;
	--gen-cpu) GEN_CPU=$2; shift ;;
	--quick) RUNS=1 DURATION=2s WARMUP=1s CONNECT_DURATION=2s IDLE_N=2000 IDLE_HOLD=2s ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v taskset >/dev/null || die "taskset (util-linux) is required"
command -v go >/dev/null || die "go is required"
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs: server and generator will share a core"

# File descriptors: the generator and each server hold IDLE_N sockets.
need=$((IDLE_N + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || true
fi
limit=$(ulimit -n)
if [ "$limit" != unlimited ] && [ "$limit" -lt "$need" ]; then
	IDLE_N=$((limit - 200))
	log "warning: ulimit -n is $limit and cannot be raised: idle test lowered to $IDLE_N connections"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-bench.XXXXXX")
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
[ -n "$OUT" ] || OUT="bench/results/$(date +%Y%m%dT%H%M%S).json"
mkdir -p "$(dirname "$OUT")"

# ---- build ----------------------------------------------------------------
log "building into $TMP"
go build -o "$TMP/wsgate-bench" ./cmd/wsgate-bench
go build -o "$TMP/wsgate" ./cmd/wsgate
# The baselines and tabulate live in the bench module (bench/go.mod).
(
	cd bench
	go build -o "$TMP/tabulate" ./tabulate
	for s in tutorial gorilla gws nbio epollref tcpecho; do
		go build -o "$TMP/$s" "./servers/$s"
	done
)

# ---- servers --------------------------------------------------------------
port_of() {
	case "$1" in
	tutorial) echo 9001 ;; gorilla) echo 9002 ;; gws) echo 9003 ;; nbio) echo 9004 ;;
	epollref) echo 9005 ;; tcpecho) echo 9006 ;; wsgate) echo 9010 ;;
	*) die "unknown server $1" ;;
	esac
}

SERVER_PID=
start_server() { # name
	local name=$1 port addr
	port=$(port_of "$name")
	addr=127.0.0.1:$port
	local args=(-addr "$addr")
	if [ "$name" = wsgate ]; then
		# Like the baselines: no application heartbeat, no protocol pings,
		# no connection limit, no per-connection log lines.
		args+=(-heartbeat=0 -ping-interval=0 -max-conns=0) # the default log level: targets hold at the defaults
	fi
	taskset -c "$SERVER_CPU" "$TMP/$name" "${args[@]}" >>"$TMP/$name.log" 2>&1 &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	local i
	for i in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited at start: $(tail -5 "$TMP/$name.log")"
		sleep 0.1
	done
	die "$name does not accept on $addr after 10s"
}

stop_server() {
	[ -n "$SERVER_PID" ] || return 0
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=
	sleep 0.5 # let the sockets of the last run drain
}

REPORTS=$TMP/reports.json
: >"$REPORTS"

bench() { # server case mode [flags…]: one run on a fresh server
	local name=$1 cas=$2 mode=$3
	shift 3
	local port
	port=$(port_of "$name")
	start_server "$name"
	log "$name $cas $*"
	local rc=0
	taskset -c "$GEN_CPU" "$TMP/wsgate-bench" "$mode" -json -label "$name $cas" -pid "$SERVER_PID" \
		"$@" "ws://127.0.0.1:$port/ws" >>"$REPORTS" 2>"$TMP/last.txt" || rc=$?
	grep -E 'throughput|held|server|generator|errors' "$TMP/last.txt" | sed 's/^/    /' >&2 || true
	[ "$rc" -eq 0 ] || log "warning: $name $cas: wsgate-bench exited with status $rc"
	[ "$rc" -ne 130 ] || exit 130
	stop_server
}

started=$(date +%s)
for name in $SERVERS; do
	for i in $(seq "$RUNS"); do
		bench "$name" echo-100x64 echo -c 100 -size 64 -binary -duration "$DURATION" -warmup "$WARMUP"
		bench "$name" echo-1000x1k echo -c 1000 -size 1024 -binary -duration "$DURATION" -warmup "$WARMUP"
	done
	bench "$name" idle idle -n "$IDLE_N" -rate "$IDLE_RATE" -hold "$IDLE_HOLD"
	for i in $(seq "$RUNS"); do
		bench "$name" connect connect -c "$CONNECT_C" -size 64 -binary -duration "$CONNECT_DURATION" -warmup 1s
	done
done

# The generator's own ceiling: raw frames against a byte echo.
for i in $(seq "$RUNS"); do
	bench tcpecho echo-100x64 echo -raw -c 100 -size 64 -binary -duration "$DURATION" -warmup "$WARMUP"
	bench tcpecho echo-1000x1k echo -raw -c 1000 -size 1024 -binary -duration "$DURATION" -warmup "$WARMUP"
done

log "matrix done in $(($(date +%s) - started))s"
"$TMP/tabulate" -in "$REPORTS" -json "$OUT"
log "results written to $OUT"
