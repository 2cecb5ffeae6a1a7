#!/usr/bin/env bash
# bench/run-pubsub.sh — the pub/sub matrix of docs/BENCHMARKS.md.
#
# Builds wsgate-bench, the pub/sub baselines, Centrifugo (the version pinned
# in bench/centrifugo/go.mod) and the wsgate server into a temporary
# directory, then for each server (started fresh for every run, pinned to
# one core, the generator pinned to another) runs `wsgate-bench pubsub`:
#   highest lossless deliveries/s with N=1,000 × 64 B, N=10,000 × 64 B and
#   N=10,000 × 1 KiB (RUNS times each), p99 publish-to-receive latency at
#   50,000 deliveries/s with N=10,000, server RSS per idle subscribed
#   connection (IDLE_N), connect+subscribe cycles/s and server CPU per cycle.
# Prints the Markdown tables on stdout and writes every report and the
# medians as JSON.
#
# Usage: bench/run-pubsub.sh [options]  (each option also has an env variable)
#   --servers "a b c"     servers to run (SERVERS; default: centrifugo
#                         gorilla-hub gws-broadcast nbio-hub wsgate, wsgate
#                         only when its build has the hub)
#   --runs N              runs per case, median shown (RUNS; 3)
#   --step D              duration of each rate step (STEP; 5s)
#   --warmup D            warmup before the steps (WARMUP; 2s)
#   --latency-duration D  measured time of the p99 case (LATENCY_DURATION; 10s)
#   --publish client|api  where publications come from (PUBLISH; client)
#   --max-lag D           a step fails when its p99 exceeds this (MAX_LAG; 1s)
#   --precision F         bisect until within this fraction (PRECISION; 0.1)
#   --idle-n N            idle subscribed connections (IDLE_N; 19000)
#   --idle-hold D         how long they are held (IDLE_HOLD; 5s)
#   --connect-duration D  measured time per connect run (CONNECT_DURATION; 5s)
#   --out FILE            JSON results (OUT; bench/results/pubsub-<timestamp>.json)
#   --quick               smoke test: 1 run, 2s steps, coarse search, 2,000 idle
#   --server-cpu N / --gen-cpu N   cores to pin to (SERVER_CPU 0, GEN_CPU 1)
# The wsgate server (with the hub: /connection/websocket and /api/publish on
# one port) runs as
#   $WSGATE_BIN $WSGATE_ARGS
# WSGATE_BIN defaults to a build of ./cmd/wsgate; WSGATE_ADDR (127.0.0.1:9010)
# is where it listens; WSGATE_ARGS defaults to
#   -addr $WSGATE_ADDR -config bench/wsgate-pubsub.json -api-key $API_KEY
#   -heartbeat=0 -ping-interval=0 -max-conns=0 -log-level=warn
# where the config file grants what Centrifugo's (bench/centrifugo/config.json)
# does: anonymous connect, subscribe and client publish on channels without
# a namespace. API_KEY (bench) is the HTTP API key every server is given.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALL_SERVERS="centrifugo gorilla-hub gws-broadcast nbio-hub wsgate"
SERVERS=${SERVERS:-$ALL_SERVERS}
RUNS=${RUNS:-3}
STEP=${STEP:-5s}
WARMUP=${WARMUP:-2s}
LATENCY_DURATION=${LATENCY_DURATION:-10s}
LATENCY_RATE=${LATENCY_RATE:-50000}
PUBLISH=${PUBLISH:-client}
MAX_LAG=${MAX_LAG:-1s}
PRECISION=${PRECISION:-0.1}
MAX_STEPS=${MAX_STEPS:-12}
N_SMALL=${N_SMALL:-1000}
N_LARGE=${N_LARGE:-10000}
IDLE_N=${IDLE_N:-19000}
IDLE_RATE=${IDLE_RATE:-5000}
IDLE_HOLD=${IDLE_HOLD:-5s}
CONNECT_DURATION=${CONNECT_DURATION:-5s}
CONNECT_C=${CONNECT_C:-64}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
API_KEY=${API_KEY:-bench}
WSGATE_ADDR=${WSGATE_ADDR:-127.0.0.1:9010}
WSGATE_BIN=${WSGATE_BIN:-}
WSGATE_ARGS=${WSGATE_ARGS:-}
OUT=${OUT:-}

while [ $# -gt 0 ]; do
	case "$1" in
	--servers) SERVERS=$2; shift ;;
	--runs) RUNS=$2; shift ;;
	--step) STEP=$2; shift ;;
	--warmup) WARMUP=$2; shift ;;
	--latency-duration) LATENCY_DURATION=$2; shift ;;
	--publish) PUBLISH=$2; shift ;;
	--max-lag) MAX_LAG=$2; shift ;;
	--precision) PRECISION=$2; shift ;;
	--idle-n) IDLE_N=$2; shift ;;
	--idle-hold) IDLE_HOLD=$2; shift ;;
	--connect-duration) CONNECT_DURATION=$2; shift ;;
	--out) OUT=$2; shift ;;
	--server-cpu) SERVER_CPU=$2; shift ;;
	--gen-cpu) GEN_CPU=$2; shift ;;
	--quick) RUNS=1 STEP=2s WARMUP=1s LATENCY_DURATION=3s PRECISION=0.25 MAX_STEPS=6 IDLE_N=2000 IDLE_HOLD=2s CONNECT_DURATION=2s ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "run-pubsub.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done
DEFAULT_WSGATE_ARGS="-addr $WSGATE_ADDR -config $ROOT/bench/wsgate-pubsub.json -api-key $API_KEY -heartbeat=0 -ping-interval=0 -max-conns=0 -log-level=warn"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v taskset >/dev/null || die "taskset (util-linux) is required"
command -v go >/dev/null || die "go is required"
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 CPUs: server and generator will share a core"

# File descriptors: the generator and each server hold max(IDLE_N, N_LARGE) sockets.
most=$((IDLE_N > N_LARGE ? IDLE_N : N_LARGE))
need=$((most + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || true
fi
limit=$(ulimit -n)
if [ "$limit" != unlimited ] && [ "$limit" -lt "$need" ]; then
	[ "$IDLE_N" -lt $((limit - 200)) ] || IDLE_N=$((limit - 200))
	[ "$N_LARGE" -lt $((limit - 200)) ] || N_LARGE=$((limit - 200))
	log "warning: ulimit -n is $limit and cannot be raised: idle $IDLE_N, large N $N_LARGE"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-pubsub.XXXXXX")
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
[ -n "$OUT" ] || OUT="bench/results/pubsub-$(date +%Y%m%dT%H%M%S).json"
mkdir -p "$(dirname "$OUT")"

# ---- build ----------------------------------------------------------------
log "building into $TMP"
go build -o "$TMP/wsgate-bench" ./cmd/wsgate-bench
if [ -z "$WSGATE_BIN" ]; then
	go build -o "$TMP/wsgate" ./cmd/wsgate
	WSGATE_BIN=$TMP/wsgate
fi
(
	cd bench
	go build -o "$TMP/tabulate" ./tabulate
	for s in gorilla-hub gws-broadcast nbio-hub; do
		go build -o "$TMP/$s" "./servers/$s"
	done
)
case " $SERVERS " in
*" centrifugo "*)
	# Centrifugo has a module of its own: its dependencies (an older
	# centrifugal/protocol among them) must not meet wsgate's.
	log "building Centrifugo (first time: a few minutes)"
	(cd bench/centrifugo && CGO_ENABLED=0 go build -o "$TMP/centrifugo" \
		-ldflags "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=$(go list -m -f '{{.Version}}' github.com/centrifugal/centrifugo/v6 | sed 's/^v//')" \
		github.com/centrifugal/centrifugo/v6)
	;;
esac
if [ -z "$WSGATE_ARGS" ]; then
	WSGATE_ARGS=$DEFAULT_WSGATE_ARGS
	case " $SERVERS " in
	*" wsgate "*)
		help=$("$WSGATE_BIN" -h 2>&1 || true)
		case "$help" in
		*-allow-anonymous*) ;;
		*)
			log "wsgate: this build has no hub (no -allow-anonymous flag): skipped"
			SERVERS=$(echo " $SERVERS " | sed 's/ wsgate / /')
			;;
		esac
		;;
	esac
fi

# ---- servers --------------------------------------------------------------
addr_of() {
	case "$1" in
	centrifugo) echo 127.0.0.1:9020 ;; # bench/centrifugo/config.json
	gorilla-hub) echo 127.0.0.1:9021 ;; gws-broadcast) echo 127.0.0.1:9022 ;; nbio-hub) echo 127.0.0.1:9023 ;;
	wsgate) echo "$WSGATE_ADDR" ;;
	*) die "unknown server $1" ;;
	esac
}

SERVER_PID=
start_server() { # name
	local name=$1 addr port cmd
	addr=$(addr_of "$name")
	port=${addr##*:}
	case "$name" in
	centrifugo) cmd=(env CENTRIFUGO_HTTP_API_KEY="$API_KEY" "$TMP/centrifugo" --config "$ROOT/bench/centrifugo/config.json") ;;
	wsgate) read -r -a cmd <<<"$WSGATE_BIN $WSGATE_ARGS" ;;
	*) cmd=("$TMP/$name" -addr "$addr" -api-key "$API_KEY") ;;
	esac
	taskset -c "$SERVER_CPU" "${cmd[@]}" >>"$TMP/$name.log" 2>&1 &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	local i
	for i in $(seq 100); do
		if (exec 3<>"/dev/tcp/${addr%:*}/$port") 2>/dev/null; then
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
	local i
	for i in $(seq 100); do # Centrifugo drains for a while on SIGTERM
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=
	sleep 0.5 # let the sockets of the last run drain
}

REPORTS=$TMP/reports.json
: >"$REPORTS"

bench() { # server case [flags…]: one run on a fresh server
	local name=$1 cas=$2
	shift 2
	local addr
	addr=$(addr_of "$name")
	start_server "$name"
	log "$name $cas $*"
	local rc=0
	taskset -c "$GEN_CPU" "$TMP/wsgate-bench" pubsub -json -label "$name $cas" -pid "$SERVER_PID" \
		-publish "$PUBLISH" -api-key "$API_KEY" "$@" "ws://$addr/connection/websocket" >>"$REPORTS" 2>"$TMP/last.txt" || rc=$?
	grep -E '^ +(\*?step|throughput|held|server|generator|errors|latency|note) ' "$TMP/last.txt" | sed 's/^/    /' >&2 || true
	[ "$rc" -eq 0 ] || log "warning: $name $cas: wsgate-bench exited with status $rc"
	[ "$rc" -ne 130 ] || exit 130
	stop_server
}

max_case() { # server N size first-rate
	bench "$1" "pubsub-max-n$2-s$3" -measure max -n "$2" -size "$3" -deliveries "$4" \
		-duration "$STEP" -warmup "$WARMUP" -max-lag "$MAX_LAG" -precision "$PRECISION" -max-steps "$MAX_STEPS"
}

started=$(date +%s)
for name in $SERVERS; do
	for i in $(seq "$RUNS"); do
		max_case "$name" "$N_SMALL" 64 50000
		max_case "$name" "$N_LARGE" 64 25000
		max_case "$name" "$N_LARGE" 1024 25000
		bench "$name" "pubsub-p99-n$N_LARGE-r$LATENCY_RATE" -measure rate -n "$N_LARGE" -size 64 \
			-deliveries "$LATENCY_RATE" -duration "$LATENCY_DURATION" -warmup "$WARMUP" -max-lag "$MAX_LAG"
		bench "$name" "pubsub-idle-n$IDLE_N" -measure idle -n "$IDLE_N" -rate "$IDLE_RATE" -hold "$IDLE_HOLD"
		bench "$name" pubsub-connect -measure connect -c "$CONNECT_C" -duration "$CONNECT_DURATION" -warmup 1s
	done
done

log "matrix done in $(($(date +%s) - started))s"
"$TMP/tabulate" -in "$REPORTS" -json "$OUT"
log "results written to $OUT"
