#!/usr/bin/env bash
# Meridian vs etcd 3.4, side by side on this machine (3 members each on loopback, fsync on).
# Usage: simulations/bench-vs-etcd.sh [bench-peers args, e.g. --seconds 10 --clients 1,16,256]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --locked -p meridian
cargo run --release --manifest-path simulations/bench-peers/Cargo.toml -- \
  --meridian-bin target/release/meridian "$@"
