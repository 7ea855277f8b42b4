# Sourced by bench-security.sh and bench-builds.sh: one `meridian dev --nodes 3` and one
# `meridian bench` against it, its JSON result lines tagged and appended to
# $out/results.jsonl. Needs $out, $clients and $seconds set. Optional $dev_pin and $bench_pin
# prefix the dev and the bench commands (e.g. `taskset -c 0`: each on its own core).
# Usage: dev_bench FIELD LABEL BINARY PORT [DEV_ARGS...]   (tags each line {"FIELD":"LABEL",…})
dev_bench() {
  local field=$1 label=$2 bin=$3 port=$4
  shift 4
  local tag="$label-$port"
  ${dev_pin:-} "$bin" dev --nodes 3 --port "$port" --data-dir "$out/data-$tag" \
    --ready-file "$out/ready-$tag" "$@" >"$out/dev-$tag.log" 2>&1 &
  local dev=$!
  for _ in $(seq 1 600); do [ -f "$out/ready-$tag" ] && break; sleep 0.1; done
  [ -f "$out/ready-$tag" ] || {
    echo "dev ($label) never became ready" >&2
    cat "$out/dev-$tag.log" >&2
    exit 1
  }
  echo "== $label (port $port)"
  ${bench_pin:-} "$bin" --endpoint "127.0.1.1:$port" bench --clients "$clients" --seconds "$seconds" \
    2> >(grep '^{' | sed "s/^{/{\"$field\":\"$label\",/" >>"$out/results.jsonl")
  kill -INT "$dev"
  wait "$dev" || true
}
