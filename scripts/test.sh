#!/bin/sh
# Sets up a Debian 12 machine (as root) and runs every test: unit tests and
# the integration tests, which start their own containerd, build a busybox
# image, and run the agent against real runc, namespaces, mounts and cgroups.
set -eu
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/deps.sh prometheus openssl
cargo build --locked --all-targets
cargo test --locked -- --test-threads="${TEST_THREADS:-4}"
