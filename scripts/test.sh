#!/bin/sh
# Sets up a Debian 12 machine (as root) and runs every test: unit tests and
# the integration tests, which start their own containerd, build a busybox
# image, and run the agent against real runc, namespaces, mounts and cgroups.
set -eu
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# docker-registry, skopeo and apache2-utils (htpasswd): the registry pull
# tests (tests/images.rs) run a private registry and seed it.
scripts/deps.sh prometheus openssl docker-registry skopeo apache2-utils \
    --need-cmd docker-registry --need-cmd skopeo --need-cmd htpasswd
cargo build --locked --all-targets
cargo test --locked -- --test-threads="${TEST_THREADS:-4}"
