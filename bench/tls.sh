#!/usr/bin/env bash
# bench/tls.sh — what a TLS connection costs: wsgate, gws and gorilla over
# TLS with one generated certificate, and wsgate without TLS for reference,
# in one run (docs/operations.md, "TLS"; docs/BENCHMARKS.md).
#
# For each server (started fresh per case, pinned to SERVER_CPU; the
# generator on GEN_CPU): echo 100 connections × 64 B, echo 1,000 × 1 KiB,
# and IDLE_N idle connections (server RSS per connection), ROUNDS times.
# Prints a Markdown table of medians and ranges; the JSON reports stay in
# $OUT_DIR.
#
# Usage: bench/tls.sh   (env: DURATION 5s, WARMUP 1s, IDLE_N 5000, ROUNDS 3,
#        SERVER_CPU 0, GEN_CPU 1, OUT_DIR a temporary directory)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
IDLE_N=${IDLE_N:-5000}
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-tls.XXXXXX")
OUT_DIR=${OUT_DIR:-$TMP}
PID=
cleanup() {
	[ -z "$PID" ] || { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
	[ "$OUT_DIR" = "$TMP" ] || rm -rf "$TMP"
}
trap cleanup EXIT
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cd "$ROOT"
ulimit -n $(( (IDLE_N > 1000 ? IDLE_N : 1000) + 500 )) 2>/dev/null || true
log "building into $TMP"
go build -o "$TMP/wsgate-bench" ./cmd/wsgate-bench
go build -o "$TMP/wsgate" ./cmd/wsgate
(cd bench && go build -o "$TMP/gws" ./servers/gws && go build -o "$TMP/gorilla" ./servers/gorilla)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
	-keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

start() { # name tls(0|1)
	local name=$1 tls=$2 args=(-addr 127.0.0.1:9443)
	if [ "$name" = wsgate ]; then
		args+=(-heartbeat=0 -ping-interval=0 -max-conns=0 -log-level=warn -metrics=false)
	fi
	[ "$tls" = 1 ] && args+=(-tls-cert "$TMP/cert.pem" -tls-key "$TMP/key.pem")
	taskset -c "$SERVER_CPU" "$TMP/$name" "${args[@]}" >>"$TMP/$name.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do
		(exec 3<>/dev/tcp/127.0.0.1/9443) 2>/dev/null && return 0
		sleep 0.1
	done
	log "$name did not start: $(tail -3 "$TMP/$name.log")"; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

run() { # round label name tls mode args...
	local round=$1 label=$2 name=$3 tls=$4 mode=$5; shift 5
	local scheme=ws; [ "$tls" = 1 ] && scheme=wss
	start "$name" "$tls"
	taskset -c "$GEN_CPU" "$TMP/wsgate-bench" "$mode" "$@" -pid "$PID" -label "$label" -json \
		-tls-ca "$TMP/cert.pem" "$scheme://127.0.0.1:9443/ws" >"$OUT_DIR/r$round-$label-$mode.json" 2>/dev/null || true
	stop
}

# Rounds alternate the servers, so that a slow minute on the shared machine
# does not fall on one server only; the table gives medians and ranges.
SPECS=("wsgate-plain wsgate 0" "wsgate-tls wsgate 1" "gws-tls gws 1" "gorilla-tls gorilla 1")
for round in $(seq "$ROUNDS"); do
	for spec in "${SPECS[@]}"; do
		set -- $spec
		log "round $round: $1"
		run "$round" "$1" "$2" "$3" echo -c 100 -size 64 -binary -duration "$DURATION" -warmup "$WARMUP"
		mv "$OUT_DIR/r$round-$1-echo.json" "$OUT_DIR/r$round-$1-echo64.json"
		run "$round" "$1" "$2" "$3" echo -c 1000 -size 1024 -binary -duration "$DURATION" -warmup "$WARMUP"
		mv "$OUT_DIR/r$round-$1-echo.json" "$OUT_DIR/r$round-$1-echo1k.json"
		run "$round" "$1" "$2" "$3" idle -n "$IDLE_N" -rate 2000 -hold 3s
	done
done

python3 - "$OUT_DIR" "$ROUNDS" ${SPECS[@]%% *} <<'PY'
import json, statistics, sys
out, rounds, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def vals(label, case, get):
    v = []
    for r in range(1, rounds + 1):
        try:
            v.append(get(json.load(open(f"{out}/r{r}-{label}-{case}.json"))))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return v
def cell(v, fmt):
    if not v:
        return "–"
    m = statistics.median(v)
    if len(v) == 1:
        return fmt(m)
    return f"{fmt(m)} ({fmt(min(v))}–{fmt(max(v))})"
k = lambda x: f"{x/1000:.0f}k"
ms = lambda x: f"{x:.1f}"
kib = lambda x: f"{x:.1f}"
print(f"Medians of {rounds} rounds (range in parentheses).\n")
print("| server | echo 100 × 64 B msgs/s | p99 ms | msgs per server CPU-s | echo 1,000 × 1 KiB msgs/s | p99 ms | msgs per server CPU-s | RSS per idle conn KiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for l in labels:
    row = [l]
    for case in ("echo64", "echo1k"):
        row.append(cell(vals(l, case, lambda r: r["msgs_per_sec"]), k))
        row.append(cell(vals(l, case, lambda r: r["latency_us"]["p99"] / 1000), ms))
        row.append(cell(vals(l, case, lambda r: r["per_server_cpu_sec"]), k))
    row.append(cell(vals(l, "idle", lambda r: r["server"]["rss_per_conn_kib"]), kib))
    print("| " + " | ".join(row) + " |")
PY
