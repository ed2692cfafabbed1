#!/bin/sh
# Installs what building and running kubelet-lite needs on Debian 12, as
# root: containerd and runc (the runtime), protobuf-compiler (the gRPC
# client's build), busybox-static (the example and test image).
# Extra package names may be given as arguments.
set -eu
need=""
for p in containerd runc protobuf-compiler busybox-static ca-certificates curl "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    echo "installing:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    echo "Rust installed in ~/.cargo/bin; add it to PATH" >&2
fi
