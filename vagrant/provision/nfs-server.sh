#!/bin/sh
# The lab's NFS server: exports /exports to the lab network.
#   nfs-server.sh [NETWORK]   (default 192.168.100.0/24)
set -eu
net=${1:-192.168.100.0/24}
if ! command -v exportfs >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nfs-kernel-server
fi
install -d -m 0777 /exports
grep -q '^/exports ' /etc/exports 2>/dev/null || echo "/exports $net(rw,sync,no_subtree_check,no_root_squash)" >> /etc/exports
systemctl enable --now nfs-server
exportfs -ra
echo "NFS server ready: $(exportfs -v | head -1)"
