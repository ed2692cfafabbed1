#!/bin/sh
# A lab node: containerd, runc, the NFS client and the CNI plugins (pod
# networking), the busybox image, and
# kubelet-lite as a systemd service (systemd/install.sh), listening on all
# addresses so that the host can scrape it (with the token the agent makes
# in /var/lib/kubelet-lite/http-token).
#   node.sh SRC     SRC: the repository, with the kubelet-lite binary in it
set -eu
src=$1
need=""
for p in containerd runc nfs-common busybox-static containernetworking-plugins iptables; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
if [ -n "$need" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need
fi
systemctl enable --now containerd
install -d /etc/kubelet-lite /etc/kubernetes/manifests /var/lib/kubelet-lite/images
cat > /etc/kubelet-lite/config.yaml <<'YAML'
# Lab node: the endpoints are reachable from the lab network and the host.
# Plain HTTP on a non-loopback address must be asked for: the lab's network
# is host-only (a production node sets tlsCertFile/tlsPrivateKeyFile).
# Clients still need the token, /var/lib/kubelet-lite/http-token (root).
listenAddress: 0.0.0.0:10255
allowInsecureRemote: true
YAML
sh "$src/tests/images/busybox-oci.sh" /var/lib/kubelet-lite/images/busybox.tar
sh "$src/systemd/install.sh" "$src/kubelet-lite"
