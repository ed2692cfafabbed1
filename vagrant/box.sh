#!/bin/bash
# Builds a Vagrant box for the libvirt provider from the VM lab's Debian 12
# image (tests/lab/image.sh, cached in KL_LAB_CACHE, default
# /var/cache/kubelet-lite-lab): a bootable qcow2 disk with containerd, runc,
# the NFS client and server, rsync and sudo, where Vagrant logs in as root
# with the lab's own key (kept inside the box; the box is for local labs).
#   vagrant/box.sh [OUT]     (as root; default OUT: kubelet-lite-bookworm.box)
#   vagrant box add --name kubelet-lite/bookworm OUT
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-kubelet-lite-bookworm.box}")
cache=${KL_LAB_CACHE:-/var/cache/kubelet-lite-lab}

"$repo/scripts/deps.sh" debootstrap qemu-utils grub-pc-bin fdisk --need-cmd qemu-img \
    --need-cmd debootstrap --need-cmd ssh-keygen --need-cmd grub-mkimage --need-cmd sfdisk \
    --need-cmd mkfs.ext4 >/dev/null
"$repo/tests/lab/image.sh" "$cache"

dir=$(mktemp -d /tmp/kl-box.XXXXXX)
trap 'rm -rf "$dir"' EXIT
qemu-img convert -c -f raw -O qcow2 "$cache/base.raw" "$dir/box.img"
install -m 0600 "$cache/id_ed25519" "$dir/id_ed25519"
cat > "$dir/metadata.json" <<'JSON'
{"provider": "libvirt", "format": "qcow2", "virtual_size": 4}
JSON
cat > "$dir/Vagrantfile" <<'RUBY'
# Defaults of the kubelet-lite lab box: root over ssh with the box's key.
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.ssh.private_key_path = File.join(__dir__, "id_ed25519")
  config.ssh.insert_key = false
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
  end
end
RUBY
tar -C "$dir" -czf "$out.tmp" metadata.json Vagrantfile id_ed25519 box.img
mv "$out.tmp" "$out"
echo "box: $out ($(du -h "$out" | cut -f1))"
