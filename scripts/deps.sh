#!/bin/sh
# Installs what building and running kubelet-lite needs on Debian 12, as
# root: containerd and runc (the runtime), protobuf-compiler (the gRPC
# client's build), busybox-static (the example and test image), plus the
# packages given as arguments; then checks that every command named with
# --need-cmd exists.
#   scripts/deps.sh [PACKAGE...] [--need-cmd COMMAND...]
#
# When anything is missing, every package (the base ones and the
# arguments) goes to ONE `apt-get install`, which is idempotent for those
# already there. Installing the missing ones alone is not enough: apt may
# remove an installed package to satisfy them (on some images Debian's
# qemu-system-x86 removes a newer qemu-utils, taking qemu-img away), while a
# single call has to keep every package named. The --need-cmd check then
# catches what package states cannot show.
set -eu
pkgs="containerd runc protobuf-compiler busybox-static ca-certificates curl"
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

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
for c in $cmds; do
    command -v "$c" >/dev/null 2>&1 || missing="$missing (command $c)"
done
if [ -n "$missing" ]; then
    echo "missing:$missing; installing: $pkgs"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
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
