#!/bin/sh
# Fuzzes manifest parsing and validation (fuzz/fuzz_targets/parse_manifest.rs)
# for SECONDS (default 600) with cargo-fuzz on the nightly toolchain, one
# job. The corpus starts from fuzz/seeds/ (the examples of pods/ and
# manifests of the tests) and grows in fuzz/corpus/ (not committed); a
# crash leaves its input in fuzz/artifacts/ and makes this script fail.
# Not part of CI: it takes minutes and needs nightly.
#   scripts/fuzz.sh [SECONDS]
set -eu
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-600}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/parse_manifest
cp fuzz/seeds/* fuzz/corpus/parse_manifest/
cd fuzz
exec cargo +nightly fuzz run parse_manifest corpus/parse_manifest -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048
