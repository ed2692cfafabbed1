#!/bin/sh
# The long churn soak: 1000 create/edit/delete operations over mixed pods,
# then checks that nothing leaked and RSS stayed within 2x (tests/soak.rs;
# CI runs 100). As root, on a machine set up by scripts/test.sh.
# SOAK_OPS and SOAK_SEED override the count and the generator's seed.
set -eu
cd "$(dirname "$0")/.."
SOAK_OPS="${SOAK_OPS:-1000}" cargo test --locked --test soak -- --nocapture
