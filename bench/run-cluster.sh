#!/usr/bin/env bash
# bench/run-cluster.sh — the cluster figures of docs/cluster.md.
#
# Builds wsgate, wsgate-bench and nats-server (the version in go.mod) into a
# temporary directory, then for each setup, with and without history:
#   single     one wsgate node on the in-memory broker (the baseline);
#   nats3      three wsgate nodes, each on its own server of an external
#              NATS cluster of three (-broker-replicas 3);
#   embedded3  three wsgate nodes with -cluster-embedded, routed together;
# runs `wsgate-bench pubsub` with the publisher on node 1 and the
# subscribers on nodes 2 and 3 (on node 1 for single), so that every
# delivery crosses nodes, and -node-pids on every process:
#   cost     40 subscribers, 500 publications/s: CPU per publication of the
#            publishing node, the receiving nodes and the NATS servers;
#   latency  1,000 subscribers, 50 publications/s (50,000 deliveries/s):
#            publish-to-receive p50/p99, and CPU per delivery;
#   max      1,000 subscribers, rate doubled then bisected: deliveries/s.
# and, first, the RSS per idle subscribed connection on one node (IDLE_N).
# Prints a Markdown table, writes every report as JSON lines (OUT) and
# keeps the processes' logs beside them (OUT.logs/).
#
# Usage: bench/run-cluster.sh [options]  (each option also has an env variable)
#   --setups "a b"        setups to run (SETUPS; single nats3 embedded3)
#   --history "0 1"       without (0) and with (1) history (HISTORY; 0 1)
#   --duration D          measured time of cost and latency (DURATION; 10s)
#   --step D              duration of each max step (STEP; 5s)
#   --warmup D            warmup before each case (WARMUP; 2s)
#   --idle-n N            idle subscribed connections, 0 to skip (IDLE_N; 10000)
#   --out FILE            JSON lines (OUT; bench/results/cluster-<timestamp>.jsonl)
#   --quick               smoke test: 2s cases, 1s steps, no idle case
# Every process shares the machine's cores (no pinning: seven processes on
# two cores cannot be kept apart), so read the figures with the load
# average that each case prints.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SETUPS=${SETUPS:-single nats3 embedded3}
HISTORY=${HISTORY:-0 1}
DURATION=${DURATION:-10s}
STEP=${STEP:-5s}
WARMUP=${WARMUP:-2s}
IDLE_N=${IDLE_N:-10000}
OUT=${OUT:-}

while [ $# -gt 0 ]; do
	case "$1" in
	--setups) SETUPS=$2; shift ;;
	--history) HISTORY=$2; shift ;;
	--duration) DURATION=$2; shift ;;
	--step) STEP=$2; shift ;;
	--warmup) WARMUP=$2; shift ;;
	--idle-n) IDLE_N=$2; shift ;;
	--out) OUT=$2; shift ;;
	--quick) DURATION=2s STEP=1s WARMUP=1s IDLE_N=0 ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "run-cluster.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v go >/dev/null || die "go is required"
command -v jq >/dev/null || die "jq is required"
need=$((IDLE_N + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$need" 2>/dev/null || die "ulimit -n is below $need: lower --idle-n"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-cluster.XXXXXX")
PIDS=()
stop_all() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
}
LOGS=
# The processes' logs are kept beside the reports (OUT.logs/).
trap 'stop_all; [ -z "$LOGS" ] || cp -r "$TMP"/*-h* "$LOGS" 2>/dev/null; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
[ -n "$OUT" ] || OUT="bench/results/cluster-$(date +%Y%m%dT%H%M%S).jsonl"
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
LOGS=$OUT.logs
mkdir -p "$LOGS"

log "building into $TMP"
go build -o "$TMP/wsgate" ./cmd/wsgate
go build -o "$TMP/wsgate-bench" ./cmd/wsgate-bench
go build -o "$TMP/nats-server" github.com/nats-io/nats-server/v2

# Node i listens on 127.0.0.1:558i; nats3's NATS servers on 428i (routes
# 628i), embedded3's routes on 629i.
URL() { echo "ws://127.0.0.1:558$1/connection/websocket"; }

start() { # setup history
	local setup=$1 h=$2 dir=$TMP/$1-h$2 i
	mkdir -p "$dir"
	local args=(-config "$ROOT/bench/wsgate-pubsub.json" -api-key bench -heartbeat=0 -ping-interval=0 -max-conns=0 -log-level=warn)
	[ "$h" = 0 ] || args+=(-history-size 100 -history-ttl 5m)
	case $setup in
	single)
		"$TMP/wsgate" -addr 127.0.0.1:5581 "${args[@]}" 2>>"$dir/node1.log" &
		PIDS+=($!)
		;;
	nats3)
		for i in 1 2 3; do
			cat >"$dir/n$i.conf" <<-EOF
				server_name: n$i
				listen: 127.0.0.1:428$i
				jetstream { store_dir: "$dir/nats$i" }
				cluster {
				  name: bench
				  listen: 127.0.0.1:628$i
				  routes: [nats-route://127.0.0.1:6281, nats-route://127.0.0.1:6282, nats-route://127.0.0.1:6283]
				}
			EOF
			"$TMP/nats-server" -c "$dir/n$i.conf" 2>>"$dir/nats$i.log" &
			PIDS+=($!)
		done
		for i in 1 2 3; do
			"$TMP/wsgate" -addr "127.0.0.1:558$i" -broker "nats://127.0.0.1:428$i" -broker-replicas 3 "${args[@]}" 2>>"$dir/node$i.log" &
			PIDS+=($!)
		done
		;;
	embedded3)
		for i in 1 2 3; do
			"$TMP/wsgate" -addr "127.0.0.1:558$i" -cluster-embedded -cluster-addr "127.0.0.1:629$i" \
				-cluster-routes 127.0.0.1:6291,127.0.0.1:6292,127.0.0.1:6293 -cluster-store-dir "$dir/store$i" \
				"${args[@]}" 2>>"$dir/node$i.log" &
			PIDS+=($!)
		done
		;;
	*) die "unknown setup $setup" ;;
	esac
	local nodes=3 n ok
	[ "$setup" != single ] || nodes=1
	for i in $(seq 600); do
		ok=1
		for n in $(seq "$nodes"); do
			curl -sf "http://127.0.0.1:558$n/readyz" >/dev/null 2>&1 || ok=0
		done
		[ "$ok" = 0 ] || return 0
		sleep 0.1
	done
	die "$setup is not ready after 60s: $(tail -3 "$dir"/*.log)"
}

bench() { # label subscriber-URLs [flags…]
	local label=$1 subs=$2 rc=0
	shift 2
	local pids
	pids=$(IFS=,; echo "${PIDS[*]}")
	log "$label: load $(cut -d' ' -f1-3 /proc/loadavg)"
	"$TMP/wsgate-bench" pubsub -json -label "$label" -size 64 -publish client -publish-url "$(URL 1)" \
		-node-pids "$pids" "$@" "$subs" >>"$OUT" 2>"$TMP/last.txt" || rc=$?
	grep -E '^ +(\*?step|throughput|latency|errors|generator|server|held| +pid) ' "$TMP/last.txt" | sed 's/^/    /' >&2 || true
	[ "$rc" -eq 0 ] || log "warning: $label: wsgate-bench exited with status $rc"
	[ "$rc" -ne 130 ] || exit 130
}

started=$(date +%s)
for setup in $SETUPS; do
	for h in $HISTORY; do
		start "$setup" "$h"
		subs="$(URL 2),$(URL 3)"
		[ "$setup" != single ] || subs=$(URL 1)
		label="$setup history=$h"
		if [ "$IDLE_N" -gt 0 ] && [ "$h" = 1 ]; then
			# One node's RSS per idle subscribed connection (the last node),
			# first, while its heap holds nothing else.
			log "$label idle: load $(cut -d' ' -f1-3 /proc/loadavg)"
			"$TMP/wsgate-bench" pubsub -json -label "$label idle" -measure idle -n "$IDLE_N" -rate 5000 -hold 5s \
				-pid "${PIDS[${#PIDS[@]}-1]}" "${subs##*,}" >>"$OUT" 2>"$TMP/last.txt" || true
			grep -E '^ +(held|server|errors) ' "$TMP/last.txt" | sed 's/^/    /' >&2 || true
			sleep 2
		fi
		bench "$label cost" "$subs" -measure rate -n 40 -deliveries 20000 -duration "$DURATION" -warmup "$WARMUP"
		bench "$label latency" "$subs" -measure rate -n 1000 -deliveries 50000 -duration "$DURATION" -warmup "$WARMUP"
		bench "$label max" "$subs" -measure max -n 1000 -deliveries 25000 -duration "$STEP" -warmup "$WARMUP" \
			-max-lag 1s -precision 0.2 -max-steps 8
		stop_all
		sleep 1
	done
done
log "done in $(($(date +%s) - started))s; reports in $OUT"

# One row per case: the best step, and each process's CPU per publication
# (for nats3: the three NATS servers, then nodes 1 to 3; otherwise nodes 1
# to 3).
echo "| case | subscribers | publications/s | deliveries/s | p50 | p99 | CPU µs per publication, per process |"
echo "|---|---|---|---|---|---|---|"
jq -r 'select(.pubsub.best >= 0 and .pubsub.measure != "idle") | .pubsub as $p | $p.steps[$p.best] as $s |
	"| \(.label) | \($s.subscribers) | \($s.published_per_sec | round) | \($s.deliveries_per_sec | round) | \(($s.latency_us.p50 // 0) / 1000 | . * 100 | round / 100) ms | \(($s.latency_us.p99 // 0) / 1000 | . * 100 | round / 100) ms | \([$s.nodes[]?.cpu_us_per_publication | round | tostring] | join(" / ")) |"' "$OUT"
jq -r 'select(.pubsub.measure == "idle") | "| \(.label) | \(.held) held | | | | | \(.server.rss_per_conn_kib // 0 | . * 100 | round / 100) KiB RSS per connection |"' "$OUT"
