#!/usr/bin/env bash
# Two builds of meridian side by side, one run: `OLD dev --nodes 3` and `NEW dev --nodes 3` in
# turn, ROUNDS times each, `meridian bench` (puts and sequential gets; each build benches
# itself) against each. Prints the median of each build and NEW / OLD per workload and client
# count. For what a change costs (e.g. metrics, issue 15): build OLD at the commit before it,
# copy the binary aside, build NEW.
# Usage: simulations/bench-builds.sh OLD_BINARY NEW_BINARY [--seconds S] [--rounds R]
#          [--clients 1,16,256] [-- DEV_ARGS...]   (DEV_ARGS default: --insecure)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [--seconds S] [--rounds R] [--clients C] [-- DEV_ARGS]" >&2; exit 2; }
old=$1; new=$2; shift 2
seconds=6; rounds=2; clients=1,16,256; dev_args=(--insecure)
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --) shift; dev_args=("$@"); break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
port=7650
. "$(dirname "$0")/dev-bench.sh"
for r in $(seq 1 "$rounds"); do
  echo "== round $r"
  port=$((port + 2)) # each node's HTTP listener takes the gRPC port + 1
  dev_bench build old "$old" "$port" "${dev_args[@]}"
  port=$((port + 2))
  dev_bench build new "$new" "$port" "${dev_args[@]}"
done
sleep 1
python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(r): return (r["workload"], r["clients"])
print("\nmedian over rounds; ratio = new / old")
print(f'{"workload":<8} {"clients":>7} {"ops/s old":>10} {"ops/s new":>10} {"ratio":>6} {"p99 us old":>11} {"p99 us new":>11}')
for k in sorted({key(r) for r in rows}):
    by = {b: [r for r in rows if key(r) == k and r["build"] == b] for b in ("old", "new")}
    if not all(by.values()): continue
    ops = {b: statistics.median(x["ops_per_sec"] for x in by[b]) for b in by}
    p99 = {b: statistics.median(x["p99_us"] for x in by[b]) for b in by}
    print(f'{k[0]:<8} {k[1]:>7} {ops["old"]:>10.0f} {ops["new"]:>10.0f} {ops["new"]/ops["old"]:>6.2f} {p99["old"]:>11.0f} {p99["new"]:>11.0f}')
PY
