#!/bin/sh
# Installs kubelet-lite as a systemd service.
#   systemd/install.sh [BINARY]
# BINARY defaults to target/release/kubelet-lite. Existing configuration in
# /etc/kubelet-lite/config.yaml is kept.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/kubelet-lite}
[ -x "$bin" ] || { echo "no binary at $bin (cargo build --release first)" >&2; exit 1; }

install -m 0755 "$bin" /usr/local/bin/kubelet-lite.new
mv /usr/local/bin/kubelet-lite.new /usr/local/bin/kubelet-lite
install -d -m 0755 /etc/kubelet-lite /etc/kubernetes/manifests /var/lib/kubelet-lite/images /var/log/pods
if [ ! -e /etc/kubelet-lite/config.yaml ]; then
    cat > /etc/kubelet-lite/config.yaml <<'YAML'
# kubelet-lite configuration. Every key is optional; `kubelet-lite config`
# prints the effective values. See README.md.
# staticPodPath: /etc/kubernetes/manifests
# listenAddress: 127.0.0.1:10255
# HTTP clients send the token the agent makes at first start:
#   curl -H "Authorization: Bearer $(cat /var/lib/kubelet-lite/http-token)" ...
# Off loopback, serve HTTPS:
# tlsCertFile: /etc/kubelet-lite/tls.crt
# tlsPrivateKeyFile: /etc/kubelet-lite/tls.key
YAML
fi
install -m 0644 "$here/kubelet-lite.service" /etc/systemd/system/kubelet-lite.service
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable kubelet-lite.service
    # restart, not start: an upgrade takes effect, pods keep running.
    systemctl restart kubelet-lite.service
    echo "kubelet-lite installed and started: journalctl -u kubelet-lite -f"
else
    echo "kubelet-lite installed; systemd is not running here, start it by hand:"
    echo "  /usr/local/bin/kubelet-lite --config /etc/kubelet-lite/config.yaml"
fi
