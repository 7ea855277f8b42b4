#!/usr/bin/env bash
# The default comparison (issue 5), from a fresh checkout, as root:
#   simulations/compare.sh [SCENARIO]   (default: simulations/scenarios/default.toml)
# 1. Meridian's five deployment modes (a ensemble, b observers, c no sync, d Meridian, e closed
#    timestamps) as real processes under the WAN emulator;
# 2. the same scenario in the deterministic simulation, every history checked;
# 3. etcd 3.4 (a cluster spanning the regions) and ZooKeeper 3.8 (voters spanning the regions;
#    voters in one region with observers) under the same emulator, same workload stream;
# then one table (markdown, stdout) and one chart. Results land in target/compare/.
# Installs etcd-server, zookeeper and protobuf-compiler (etcd-client's build needs protoc).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-simulations/scenarios/default.toml}
out=target/compare
mkdir -p "$out"
need=()
command -v etcd >/dev/null || need+=(etcd-server)
[ -e /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo build --release --locked -p meridian
cargo build --release --manifest-path simulations/bench-peers/Cargo.toml --bin geo
target/release/meridian sim run "$scenario" --json "$out/meridian.json" --svg "$out/meridian.svg"
target/release/meridian sim run "$scenario" --deterministic \
  --json "$out/simulated.json" --svg "$out/simulated.svg" 2> "$out/simulated.log"
simulations/bench-peers/target/release/geo --scenario "$scenario" --json "$out/peers.json" \
  --compare "$out/meridian.json" --simulated "$out/simulated.json" --svg "$out/comparison.svg" \
  | tee "$out/comparison.md"
