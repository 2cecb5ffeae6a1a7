#!/usr/bin/env bash
# bench/tls.sh — what a TLS connection costs: wsgate, gws and gorilla over
# TLS with one generated certificate, and wsgate without TLS for reference,
# in one run (docs/operations.md, "TLS"; docs/BENCHMARKS.md).
#
# For each server (started fresh per case, pinned to SERVER_CPU; the
# generator on GEN_CPU): echo 100 connections × 64 B, echo 1,000 × 1 KiB,
# and IDLE_N idle connections (server RSS per connection). Prints a Markdown
# table; the JSON reports stay in $OUT_DIR.
#
# Usage: bench/tls.sh   (env: DURATION 5s, WARMUP 1s, IDLE_N 5000,
#        SERVER_CPU 0, GEN_CPU 1, OUT_DIR a temporary directory)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
IDLE_N=${IDLE_N:-5000}
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

run() { # label name tls mode args...
	local label=$1 name=$2 tls=$3 mode=$4; shift 4
	local scheme=ws; [ "$tls" = 1 ] && scheme=wss
	start "$name" "$tls"
	taskset -c "$GEN_CPU" "$TMP/wsgate-bench" "$mode" "$@" -pid "$PID" -label "$label" -json \
		-tls-ca "$TMP/cert.pem" "$scheme://127.0.0.1:9443/ws" >"$OUT_DIR/$label-$mode-$*.json" 2>/dev/null || true
	stop
	cat "$OUT_DIR/$label-$mode-$*.json"
}

field() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

printf '| server | echo 100 × 64 B msg/s | p99 ms | per server CPU-s | echo 1,000 × 1 KiB msg/s | p99 ms | per server CPU-s | RSS per idle conn KiB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n'
for spec in "wsgate-plain wsgate 0" "wsgate-tls wsgate 1" "gws-tls gws 1" "gorilla-tls gorilla 1"; do
	set -- $spec
	log "$1"
	a=$(run "$1" "$2" "$3" echo -c 100 -size 64 -binary -duration "$DURATION" -warmup "$WARMUP")
	b=$(run "$1" "$2" "$3" echo -c 1000 -size 1024 -binary -duration "$DURATION" -warmup "$WARMUP")
	c=$(run "$1" "$2" "$3" idle -n "$IDLE_N" -rate 2000 -hold 3s)
	printf '| %s | %.0f | %.2f | %.0f | %.0f | %.2f | %.0f | %.1f |\n' "$1" \
		"$(echo "$a" | field 'r["msgs_per_sec"]')" "$(echo "$a" | field 'r["latency_us"]["p99"]/1000')" "$(echo "$a" | field 'r.get("per_server_cpu_sec",0)')" \
		"$(echo "$b" | field 'r["msgs_per_sec"]')" "$(echo "$b" | field 'r["latency_us"]["p99"]/1000')" "$(echo "$b" | field 'r.get("per_server_cpu_sec",0)')" \
		"$(echo "$c" | field 'r["server"]["rss_per_conn_kib"]')"
done
