#!/usr/bin/env bash
# Where a put's time goes on the leader, from its own trace spans: bench-peers' 1-client puts
# with every request traced into meridian-otlp-sink, then the medians of the steps between the
# request span, raft.propose, raft.append (the leader's log write and fsync) and raft.apply.
# Usage: simulations/put-breakdown.sh [--seconds S] [--clients N]   (needs python3; the run goes
# through simulations/bench-vs-etcd.sh, which installs etcd and protoc and builds Meridian)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=5
clients=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds S] [--clients N]" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -p meridian-otlp-sink
out=$(mktemp -d)
sink=
trap '[ -n "$sink" ] && kill "$sink" 2>/dev/null; rm -rf "$out"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/meridian-otlp-sink "127.0.0.1:$port" --spans "$out/spans.jsonl" > "$out/sink.log" 2>&1 &
sink=$!
MERIDIAN_TELEMETRY__OTLP_ENDPOINT="http://127.0.0.1:$port" MERIDIAN_TELEMETRY__SAMPLE_RATIO=0.5 \
  simulations/bench-vs-etcd.sh --clients "$clients" --ops put --seconds "$seconds"
# The nodes flush their spans when they stop; give the sink a moment, then stop it.
sleep 2
kill -INT "$sink"; wait "$sink" || true
python3 - "$out/spans.jsonl" <<'PY'
import collections, json, sys
traces = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s = json.loads(line)
    traces[s["trace"]].append(s)
wanted = ("meridian.v1.Kv/Put", "raft.propose", "raft.append", "raft.apply")
steps = collections.defaultdict(list)
skipped = 0
for spans in traces.values():
    names = [s["name"] for s in spans]
    # Only puts served by the leader they reached: one span of each step, nothing forwarded.
    if sorted(names) != sorted(wanted):
        skipped += 1
        continue
    t = {s["name"]: (s["start_ns"], s["end_ns"]) for s in spans}
    (s0, s1), (p0, p1) = t["meridian.v1.Kv/Put"], t["raft.propose"]
    (a0, a1), (y0, y1) = t["raft.append"], t["raft.apply"]
    for name, ns in [
        ("request span (server side, whole)", s1 - s0),
        ("request -> proposal (router)", p0 - s0),
        ("proposal -> leader's log write starts", a0 - p0),
        ("leader's log write + fsync", a1 - a0),
        ("proposal -> commit (apply starts)", y0 - p0),
        ("leader's fsync done -> commit", y0 - a1),
        ("apply", y1 - y0),
        ("applied -> proposal answered", p1 - y1),
        ("proposal answered -> request ends", s1 - p1),
    ]:
        steps[name].append(ns)
n = len(steps.get("apply", []))
if n == 0:
    sys.exit(f"no put was traced on the leader ({skipped} traces, all forwarded or incomplete)")
print(f"\n{n} traced puts on the leader ({skipped} other traces left out: forwarded or incomplete)")
for name, v in steps.items():
    v.sort()
    print(f"{name:40} p50 {v[len(v)//2]/1e3:7.0f} us   p90 {v[int(len(v)*0.9)]/1e3:7.0f} us")
PY
