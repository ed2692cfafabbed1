#!/bin/sh
# Installs what building and running kubelet-lite needs on Debian 12, as
# root: containerd and runc (the runtime), containernetworking-plugins (the
# CNI plugins of the default pod network), protobuf-compiler (the gRPC
# client's build), busybox-static (the example and test image), plus the
# packages given as arguments; then checks that every command named with
# --need-cmd exists.
#   scripts/deps.sh [PACKAGE...] [--need-cmd COMMAND...]
#
# The missing packages are installed, then whatever is missing after that
# again: apt may remove an installed package to satisfy others (on some
# images Debian's qemu-system-x86 removes a newer backported qemu-utils,
# taking qemu-img away). The --need-cmd check then catches what package
# states cannot show.
set -eu
pkgs="containerd runc containernetworking-plugins protobuf-compiler busybox-static ca-certificates curl"
cmds=""
while [ $# -gt 0 ]; do
    case $1 in
    --need-cmd)
        [ $# -ge 2 ] || { echo "deps.sh: --need-cmd needs a command name" >&2; exit 2; }
        cmds="$cmds $2"
        shift 2
        ;;
    --need-cmd=*) cmds="$cmds ${1#--need-cmd=}"; shift ;;
    -*) echo "deps.sh: unknown option $1" >&2; exit 2 ;;
    *) pkgs="$pkgs $1"; shift ;;
    esac
done

missing() {
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf ' %s' "$p"
    done
}
need=$(missing)
if [ -n "$need" ]; then
    echo "installing:$need"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
    # Installing one package can remove another that was there: Debian's
    # qemu-system-x86 takes away a newer backported qemu-utils (and with it
    # qemu-img). Install again whatever is missing now.
    again=$(missing)
    if [ -n "$again" ]; then
        echo "installing again:$again"
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $again >/dev/null
    fi
fi
absent=""
for c in $cmds; do
    command -v "$c" >/dev/null 2>&1 || absent="$absent $c"
done
if [ -n "$absent" ]; then
    echo "deps.sh: command(s) not found after installing the packages:$absent" >&2
    echo "deps.sh: packages: $pkgs" >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    echo "Rust installed in ~/.cargo/bin; add it to PATH" >&2
fi
