#!/bin/bash
# Builds the lab's Debian 12 guest image with debootstrap, into CACHE:
#   base.raw     a bootable 4 GB sparse disk: an MBR with GRUB, one ext4
#                partition (root, /dev/vda1) from 1 MiB on
#   vmlinuz, initrd.img   its kernel, for QEMU's direct kernel boot
#   id_ed25519(.pub)      root's ssh key
# No loop device or mount is needed. Rebuilt only when this script changes. The Debian mirror is the one this
# machine's apt uses; none is written in the repository.
set -euo pipefail
cache=$1
stamp=$(sha256sum "$0" | cut -c1-16)
if [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$stamp" ] && [ -f "$cache/base.raw" ]; then
    echo "lab image: cached in $cache"
    exit 0
fi
mkdir -p "$cache"
rm -f "$cache/stamp"
mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }

root=$(mktemp -d /tmp/kl-lab-root.XXXXXX)
trap 'umount -R "$root/proc" "$root/sys" "$root/dev" 2>/dev/null || true; rm -rf "$root"' EXIT
echo "lab image: debootstrap bookworm from $mirror (a few minutes)"
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,openssh-server,containerd,runc,nfs-kernel-server,nfs-common,iproute2,ca-certificates,busybox-static,containernetworking-plugins,iptables,kmod,procps,curl,python3,rsync,sudo \
    bookworm "$root" "$mirror" > "$cache/debootstrap.log" 2>&1 \
    || { tail -30 "$cache/debootstrap.log" >&2; exit 1; }

[ -f "$cache/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$cache/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$cache/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
echo "LABEL=root / ext4 defaults 0 1" > "$root/etc/fstab"
echo lab > "$root/etc/hostname"
cat > "$root/etc/systemd/network/10-eth0.network" <<'NET'
[Match]
Name=eth0
[Network]
DHCP=ipv4
NET
# Hostname and lab address from the kernel command line (kl.hostname=,
# kl.ip=), before the network comes up.
cat > "$root/usr/local/sbin/kl-lab-net" <<'SH'
#!/bin/sh
for word in $(cat /proc/cmdline); do
    case "$word" in
        kl.hostname=*) h=${word#kl.hostname=} ;;
        kl.ip=*) ip=${word#kl.ip=} ;;
    esac
done
if [ -n "${h:-}" ]; then echo "$h" > /etc/hostname; hostname "$h"; fi
if [ -n "${ip:-}" ]; then
    mkdir -p /run/systemd/network
    printf '[Match]\nName=eth1\n[Network]\nAddress=%s/24\n' "$ip" > /run/systemd/network/20-eth1.network
fi
SH
chmod +x "$root/usr/local/sbin/kl-lab-net"
cat > "$root/etc/systemd/system/kl-lab-net.service" <<'UNIT'
[Unit]
Description=Lab hostname and address from the kernel command line
DefaultDependencies=no
Before=network-pre.target systemd-networkd.service
Wants=network-pre.target
After=local-fs.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kl-lab-net
[Install]
WantedBy=sysinit.target
UNIT
# Every guest is its own machine: a machine-id made at first boot (DHCP
# client identifiers derive from it) and its own ssh host key (ed25519
# only: an RSA key takes a minute to make under emulation).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
echo "HostKey /etc/ssh/ssh_host_ed25519_key" > "$root/etc/ssh/sshd_config.d/kl-lab.conf"
cat > "$root/etc/systemd/system/kl-ssh-host-keys.service" <<'UNIT'
[Unit]
Description=ssh host key of this guest
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable systemd-networkd kl-lab-net kl-ssh-host-keys ssh >/dev/null 2>&1
# The NFS server runs only where provisioning enables it.
chroot "$root" systemctl disable nfs-server >/dev/null 2>&1 || true
rm -f "$root/etc/resolv.conf"
echo "nameserver 10.0.2.3" > "$root/etc/resolv.conf"
chroot "$root" apt-get clean
kernel=$(cd "$root/boot" && ls vmlinuz-* | tail -1)
initrd=initrd.img-${kernel#vmlinuz-}
cp "$root/boot/$kernel" "$cache/vmlinuz"
cp "$root/boot/$initrd" "$cache/initrd.img"
# GRUB reads this from the root partition when the disk boots on its own
# (the Vagrant box); the QEMU lab boots the kernel directly instead.
install -d "$root/boot/grub"
cat > "$root/boot/grub/grub.cfg" <<CFG
set timeout=0
linux /boot/$kernel root=/dev/vda1 rw console=tty0 console=ttyS0 net.ifnames=0
initrd /boot/$initrd
boot
CFG
disk=$cache/base.raw.new
rm -f "$disk"
truncate -s 4G "$disk"
echo 'label: dos
start=2048, type=83, bootable' | sfdisk -q "$disk"
mkfs.ext4 -q -F -L root -d "$root" -E offset=1048576 "$disk" $(( 4 * 1024 * 1024 - 1024 ))k
# The MBR: GRUB's boot sector (its first 440 bytes, before the partition
# table) loads the core image from sector 1, which grub-mkimage makes
# self-describing (its length is in its first sector).
grub-mkimage -O i386-pc -o "$cache/core.img" -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux boot configfile
[ "$(stat -c %s "$cache/core.img")" -lt $(( 2047 * 512 )) ] || { echo "GRUB core image too large" >&2; exit 1; }
dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$cache/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
rm -f "$cache/core.img"
mv "$disk" "$cache/base.raw"
echo "$stamp" > "$cache/stamp"
echo "lab image: built in $cache"
