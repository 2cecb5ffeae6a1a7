#!/usr/bin/env bash
# bench/idle.sh — memory per idle connection (docs/BENCHMARKS.md, "Memory
# per connection" and "1,000,000 connections on one machine").
#
# For each server (started fresh for every run, pinned to one core, the
# generator pinned to another) it opens N connections and holds them, and
# reports the server's RSS growth and the kernel's slab growth per
# connection, in three cases:
#   mem-plain    connections that never carried a message, at 5,000,
#                10,000 and 19,000 connections (the scaling points);
#   mem-traffic  each connection first sends 2 messages of 32 KiB in 4
#                fragments, each fragment written in two pieces 2 ms apart
#                (the server reassembles across reads), has them echoed,
#                then idles;
#   mem-deflate  permessage-deflate offered as browsers do (client context
#                takeover allowed), then 2 compressed 4 KiB messages, then
#                idle; servers run with compression on.
# Prints the Markdown tables on stdout and writes every report as JSON.
#
# Usage: bench/idle.sh [options]       (each option also has an env variable)
#   --runs N            runs per case, median shown (RUNS; 3)
#   --hold D            how long connections are held (HOLD; 5s)
#   --out FILE          JSON results (OUT; bench/results/idle-<timestamp>.json)
#   --quick             smoke test: 1 run, 2,000 connections, 2s hold
#   --server-cpu N / --gen-cpu N   cores to pin to (SERVER_CPU 0, GEN_CPU 1)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
HOLD=${HOLD:-5s}
RATE=${RATE:-5000}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
OUT=${OUT:-}
SCALE_NS="5000 10000 19000"
BIG_N=19000

while [ $# -gt 0 ]; do
	case "$1" in
	--runs) RUNS=$2; shift ;;
	--hold) HOLD=$2; shift ;;
	--out) OUT=$2; shift ;;
	--server-cpu) SERVER_CPU=$2; shift ;;
	--gen-cpu) GEN_CPU=$2; shift ;;
	--quick) RUNS=1 HOLD=2s SCALE_NS="1000 2000" BIG_N=2000 ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "idle.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v taskset >/dev/null || die "taskset (util-linux) is required"
command -v go >/dev/null || die "go is required"
need=$((BIG_N + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || die "ulimit -n is $(ulimit -n): $need file descriptors are needed"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-idle.XXXXXX")
SERVER_PID=
cleanup() {
	[ -z "$SERVER_PID" ] || { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; } || true
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
[ -n "$OUT" ] || OUT="bench/results/idle-$(date +%Y%m%dT%H%M%S).json"
mkdir -p "$(dirname "$OUT")"

log "building into $TMP"
go build -o "$TMP/wsgate-bench" ./cmd/wsgate-bench
go build -o "$TMP/wsgate" ./cmd/wsgate
(
	cd bench
	go build -o "$TMP/tabulate" ./tabulate
	for s in gorilla gws nbio; do
		go build -o "$TMP/$s" "./servers/$s"
	done
)

port_of() {
	case "$1" in
	gorilla) echo 9002 ;; gws) echo 9003 ;; nbio) echo 9004 ;; wsgate) echo 9010 ;;
	*) die "unknown server $1" ;;
	esac
}

start_server() { # name compress
	local name=$1 compress=$2 port
	port=$(port_of "$name")
	local args=(-addr "127.0.0.1:$port")
	if [ "$name" = wsgate ]; then
		# As in bench/run.sh: no heartbeat, no pings, no connection limit.
		args+=(-heartbeat=0 -ping-interval=0 -max-conns=0)
		[ "$compress" = 0 ] || args+=(-compression)
	elif [ "$compress" = 1 ]; then
		args+=(-compress)
	fi
	taskset -c "$SERVER_CPU" "$TMP/$name" "${args[@]}" >>"$TMP/$name.log" 2>&1 &
	SERVER_PID=$!
	local i
	for i in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || die "$name exited at start: $(tail -5 "$TMP/$name.log")"
		sleep 0.1
	done
	die "$name does not accept on port $port after 10s"
}

stop_server() {
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=
	sleep 2 # let the sockets of the last run go, so the next slab figure starts clean
}

REPORTS=$TMP/reports.json
: >"$REPORTS"

run() { # server case compress n [flags…]
	local name=$1 cas=$2 compress=$3 n=$4
	shift 4
	start_server "$name" "$compress"
	log "$name $cas -n $n $*"
	local rc=0
	taskset -c "$GEN_CPU" "$TMP/wsgate-bench" idle -json -label "$name $cas" -pid "$SERVER_PID" \
		-n "$n" -rate "$RATE" -hold "$HOLD" "$@" "ws://127.0.0.1:$(port_of "$name")/ws" >>"$REPORTS" 2>"$TMP/last.txt" || rc=$?
	grep -E 'held|kernel|server|errors' "$TMP/last.txt" | sed 's/^/    /' >&2 || true
	[ "$rc" -eq 0 ] || log "warning: $name $cas: wsgate-bench exited with status $rc"
	[ "$rc" -ne 130 ] || exit 130
	stop_server
}

started=$(date +%s)
for i in $(seq "$RUNS"); do
	for name in wsgate nbio; do
		for n in $SCALE_NS; do
			run "$name" "mem-plain-n$n" 0 "$n"
		done
	done
	for name in gorilla gws; do
		run "$name" "mem-plain-n$BIG_N" 0 "$BIG_N"
	done
	for name in wsgate nbio gorilla gws; do
		run "$name" "mem-traffic-n$BIG_N" 0 "$BIG_N" -traffic 2 -size 32768 -fragments 4 -binary
	done
	# nbio's echo server has no compression switch; gorilla and gws do.
	for name in wsgate gorilla gws; do
		run "$name" "mem-deflate-n$BIG_N" 1 "$BIG_N" -compress -traffic 2 -size 4096 -fragments 2
	done
done
log "done in $(($(date +%s) - started))s"
"$TMP/tabulate" -in "$REPORTS" -json "$OUT"
log "results written to $OUT"
