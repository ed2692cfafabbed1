#!/bin/sh
# Installs what building and running kubelet-lite needs on Debian 12, as
# root: containerd and runc (the runtime), protobuf-compiler (the gRPC
# client's build), busybox-static (the example and test image).
# Extra package names may be given as arguments.
set -eu
missing() {
    for p in containerd runc protobuf-compiler busybox-static ca-certificates curl "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf ' %s' "$p"
    done
}
need=$(missing "$@")
if [ -n "$need" ]; then
    echo "installing:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
    # Installing one package can remove another that was there: Debian's
    # qemu-system-x86 takes away a newer backported qemu-utils (and with it
    # qemu-img). Install again whatever is missing now.
    again=$(missing "$@")
    if [ -n "$again" ]; then
        echo "installing again:$again"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $again >/dev/null
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    echo "Rust installed in ~/.cargo/bin; add it to PATH" >&2
fi
