#!/usr/bin/env bash
# Security on vs off (issue 14), one run: `meridian dev --nodes 3` with mTLS and tokens (the
# default), with tokens only (`--no-tls`) and with `--insecure`, in turn, ROUNDS times each,
# `meridian bench` against each (puts and sequential gets at 1, 16 and 256 clients). Prints the
# median of each mode and its ratio to insecure per workload and client count. The CLI picks up
# the dev's token and CA.
# Usage: simulations/bench-security.sh [--seconds S] [--rounds R] [--clients 1,16,256]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=6; rounds=2; clients=1,16,256; dev_pin=; bench_pin=
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --pin) dev_pin="taskset -c 0"; bench_pin="taskset -c 1"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -p meridian
M=target/release/meridian
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
port=7600
. simulations/dev-bench.sh
run() { # mode round
  local mode=$1 r=$2 extra=()
  [ "$mode" = insecure ] && extra=(--insecure)
  [ "$mode" = tokens ] && extra=(--no-tls)
  port=$((port + 2)) # each node's HTTP listener takes the gRPC port + 1
  echo "== round $r"
  dev_bench mode "$mode" "$M" "$port" "${extra[@]}"
}
for r in $(seq 1 "$rounds"); do run secure "$r"; run tokens "$r"; run insecure "$r"; done
sleep 1
python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(r): return (r["workload"], r["clients"])
modes = ["secure", "tokens", "insecure"]
print("\nmedian over rounds; secure = mTLS + tokens, tokens = --no-tls; ratio = mode / insecure")
print(f'{"workload":<8} {"clients":>7} ' + " ".join(f'{m + " ops/s":>15}' for m in modes)
      + f' {"secure":>7} {"tokens":>7} ' + " ".join(f'{m + " p99 us":>16}' for m in modes))
for k in sorted({key(r) for r in rows}):
    by = {m: [r for r in rows if key(r) == k and r["mode"] == m] for m in modes}
    if not all(by.values()): continue
    ops = {m: statistics.median(x["ops_per_sec"] for x in by[m]) for m in modes}
    p99 = {m: statistics.median(x["p99_us"] for x in by[m]) for m in modes}
    print(f'{k[0]:<8} {k[1]:>7} ' + " ".join(f'{ops[m]:>15.0f}' for m in modes)
          + f' {ops["secure"]/ops["insecure"]:>7.2f} {ops["tokens"]/ops["insecure"]:>7.2f} '
          + " ".join(f'{p99[m]:>16.0f}' for m in modes))
PY
