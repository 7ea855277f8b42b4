#!/usr/bin/env bash
# What tracing costs (issue 15), one run: `meridian dev --nodes 3 --insecure` with tracing off
# and with tracing on (spans exported over OTLP to simulations/otlp-sink, sampled at RATIO), in
# turn, ROUNDS times each, `meridian bench` against each (puts and sequential gets). Prints the
# median of each mode and its ratio to off per workload and client count, and the spans the
# sink received.
# Usage: simulations/bench-tracing.sh [--seconds S] [--rounds R] [--clients 1,256] [--ratio 0.01]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=6; rounds=3; clients=1,256; ratio=0.01
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --ratio) ratio=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -p meridian -p meridian-otlp-sink
M=target/release/meridian
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
sink_addr=127.0.0.1:4399
target/release/meridian-otlp-sink "$sink_addr" >"$out/sink.out" 2>"$out/sink.log" &
sink=$!
port=7650
. simulations/dev-bench.sh
for r in $(seq 1 "$rounds"); do
  for mode in off on; do
    port=$((port + 2)) # each node's HTTP listener takes the gRPC port + 1
    echo "== round $r"
    if [ "$mode" = on ]; then
      export MERIDIAN_TELEMETRY__OTLP_ENDPOINT="http://$sink_addr"
      export MERIDIAN_TELEMETRY__SAMPLE_RATIO="$ratio"
    fi
    dev_bench mode "$mode" "$M" "$port" --insecure
    unset MERIDIAN_TELEMETRY__OTLP_ENDPOINT MERIDIAN_TELEMETRY__SAMPLE_RATIO
  done
done
sleep 2
kill -INT "$sink"; wait "$sink" || true
echo "the sink received $(tail -1 "$out/sink.out")"
python3 - "$out/results.jsonl" "$ratio" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(r): return (r["workload"], r["clients"])
print(f"\nmedian over rounds; on = spans exported, sampled at {sys.argv[2]}; ratio = on / off")
print(f'{"workload":<8} {"clients":>7} {"off ops/s":>10} {"on ops/s":>10} {"ratio":>6} {"off p99 us":>11} {"on p99 us":>10}')
for k in sorted({key(r) for r in rows}):
    by = {m: [r for r in rows if key(r) == k and r["mode"] == m] for m in ("off", "on")}
    if not all(by.values()): continue
    ops = {m: statistics.median(x["ops_per_sec"] for x in by[m]) for m in by}
    p99 = {m: statistics.median(x["p99_us"] for x in by[m]) for m in by}
    print(f'{k[0]:<8} {k[1]:>7} {ops["off"]:>10.0f} {ops["on"]:>10.0f} {ops["on"]/ops["off"]:>6.2f} {p99["off"]:>11.0f} {p99["on"]:>10.0f}')
PY
