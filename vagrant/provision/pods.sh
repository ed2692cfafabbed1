#!/bin/sh
# Drops pods into a lab node's static pod directory: the examples of pods/
# and one NFS pod (writer or reader) on the shared PersistentVolume.
#   pods.sh SRC NFS_SERVER writer|reader
set -eu
src=$1 server=$2 role=$3
cp "$src"/pods/*.yaml /etc/kubernetes/manifests/
sed "s/NFS_SERVER/$server/" "$src/vagrant/pods/nfs-$role.yaml" > "/etc/kubernetes/manifests/nfs-$role.yaml"
