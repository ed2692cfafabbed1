#!/bin/sh
# Every performance figure of the README in one run, as root on Debian 12:
# pod start-up (against raw containerd, raw containerd + one CNI ADD, and
# podman kube play), scrape cost and idle cost, and the scale figures at
# SCALE_PODS pods (default 100; the kubelet's maxPods is 110). Baselines
# are measured in the same run on the same machine; the figures are ratios
# to them. podman is optional: install it (apt-get install podman catatonit) for the
# peer's column.
#   scripts/bench.sh            all benches
#   BENCH_ROUNDS=30 SCALE_PODS=110 scripts/bench.sh
set -eu
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/deps.sh
cargo build --locked --release
echo "== machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), containerd $(containerd --version | awk '{print $3}')"
for b in startup scrape scale; do
    echo "== cargo bench --bench $b"
    cargo bench --locked --bench "$b"
done
