#!/bin/sh
# Sets up a Debian 12 machine (as root), installs kubelet-lite with the
# busybox image, drops the examples of pods/ into the static pod directory
# and runs the agent: under systemd when systemd runs the machine, else in
# the foreground (Ctrl-C stops the agent; the pods keep running).
set -eu
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/deps.sh
cargo build --locked --release
install -d /var/lib/kubelet-lite/images /etc/kubernetes/manifests
tests/images/busybox-oci.sh /var/lib/kubelet-lite/images/busybox.tar
cp pods/*.yaml /etc/kubernetes/manifests/
if [ -d /run/systemd/system ]; then
    systemctl enable --now containerd
    systemd/install.sh target/release/kubelet-lite
    echo "pods:    kubelet-lite get pods -A; kubelet-lite describe pod NAME; kubelet-lite events -A"
    echo "logs:    kubelet-lite logs NAME -f; journalctl -u kubelet-lite -f"
    exit 0
fi
# No systemd: start containerd unless one already listens.
if [ ! -S /run/containerd/containerd.sock ]; then
    mkdir -p /var/log/kubelet-lite
    nohup containerd >/var/log/kubelet-lite/containerd.log 2>&1 &
    for _ in $(seq 50); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
fi
install -m 0755 target/release/kubelet-lite /usr/local/bin/kubelet-lite
echo "running the agent in the foreground; in another shell:"
echo "  kubelet-lite get pods -A; kubelet-lite describe pod NAME; kubelet-lite events -A"
echo "  kubelet-lite logs NAME -f; kubelet-lite top pods -A"
exec /usr/local/bin/kubelet-lite
