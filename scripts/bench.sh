#!/bin/sh
# Every performance figure of the README in one run, as root on Debian 12:
# pod start-up (against raw containerd, raw containerd + one CNI ADD, and
# podman kube play), the scrape cost and idle cost, and the scale table of
# the README (start-up of SCALE_PODS two-container pods against raw
# containerd and podman, RSS through deletion and churn, scrape, stop and
# SIGKILL recovery, each with its target), then the scale table again with
# the pods on a CNI bridge (the default podNetwork) against raw containerd
# plus one CNI ADD per pod. Baselines are measured in the
# same run on the same machine; the figures to compare are the ratios to
# them. podman is optional: install it (apt-get install podman catatonit)
# for the peer's column.
#   scripts/bench.sh                      all of it, at 110 pods (maxPods)
#   BENCH_ROUNDS=30 SCALE_PODS=50 scripts/bench.sh
set -eu
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/deps.sh
cargo build --locked --release
pods=${SCALE_PODS:-110}
echo "== machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), containerd $(containerd --version | awk '{print $3}'), $(date -u +%Y-%m-%d)"
echo "== cargo bench --bench startup"
cargo bench --locked --bench startup
echo "== cargo bench --bench scrape ($pods two-container pods)"
BENCH_PODS=$pods BENCH_CONTAINERS=2 cargo bench --locked --bench scrape
echo "== cargo bench --bench scale ($pods two-container pods)"
SCALE_PODS=$pods cargo bench --locked --bench scale
echo "== cargo bench --bench scale ($pods two-container pods on a CNI bridge, one cycle)"
SCALE_CNI=1 SCALE_CYCLES=1 SCALE_PODS=$pods cargo bench --locked --bench scale
