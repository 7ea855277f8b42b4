#!/usr/bin/env bash
# Security on vs off (issue 14), one run: `meridian dev --nodes 3` with mTLS and tokens (the
# default) and with `--insecure`, alternately, ROUNDS times each, `meridian bench` against each
# (puts and sequential gets at 1, 16 and 256 clients). Prints each run and the median ratio
# secure/insecure per workload and client count. The CLI picks up the secure dev's token and CA.
# Usage: simulations/bench-security.sh [--seconds S] [--rounds R] [--clients 1,16,256]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=6; rounds=2; clients=1,16,256
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -p meridian
M=target/release/meridian
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
port=7600
run() { # mode round
  local mode=$1 r=$2 extra=()
  [ "$mode" = insecure ] && extra=(--insecure)
  port=$((port + 1))
  "$M" dev --nodes 3 --port "$port" --data-dir "$out/data-$mode-$r" \
    --ready-file "$out/ready-$mode-$r" "${extra[@]}" >"$out/dev-$mode-$r.log" 2>&1 &
  local dev=$!
  for _ in $(seq 1 600); do [ -f "$out/ready-$mode-$r" ] && break; sleep 0.1; done
  [ -f "$out/ready-$mode-$r" ] || { echo "dev ($mode) never became ready" >&2; cat "$out/dev-$mode-$r.log" >&2; exit 1; }
  echo "== $mode, round $r (port $port)"
  "$M" --endpoint "127.0.1.1:$port" bench --clients "$clients" --seconds "$seconds" \
    2> >(grep '^{' | sed "s/^{/{\"mode\":\"$mode\",/" >>"$out/results.jsonl")
  kill -INT "$dev"; wait "$dev" || true
}
for r in $(seq 1 "$rounds"); do run secure "$r"; run insecure "$r"; done
sleep 1
python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(r): return (r["workload"], r["clients"])
print("\nmedian over rounds; ratio = secure / insecure")
print(f'{"workload":<8} {"clients":>7} {"ops/s secure":>13} {"ops/s insecure":>15} {"ratio":>6} {"p99 secure us":>14} {"p99 insecure us":>16} {"ratio":>6}')
for k in sorted({key(r) for r in rows}, key=lambda k: (k[0], k[1])):
    s = [r for r in rows if key(r) == k and r["mode"] == "secure"]
    i = [r for r in rows if key(r) == k and r["mode"] == "insecure"]
    if not s or not i: continue
    ops = lambda xs: statistics.median(x["ops_per_sec"] for x in xs)
    p99 = lambda xs: statistics.median(x["p99_us"] for x in xs)
    print(f'{k[0]:<8} {k[1]:>7} {ops(s):>13.0f} {ops(i):>15.0f} {ops(s)/ops(i):>6.2f} {p99(s):>14.0f} {p99(i):>16.0f} {p99(s)/p99(i):>6.2f}')
PY
