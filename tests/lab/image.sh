#!/bin/bash
# Builds the lab's Debian 12 guest image with debootstrap, into CACHE:
#   base.raw (ext4, 4 GB sparse), vmlinuz, initrd.img, id_ed25519(.pub)
# Rebuilt only when this script changes. The Debian mirror is the one this
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
    --include=systemd,systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,openssh-server,containerd,runc,nfs-kernel-server,nfs-common,iproute2,ca-certificates,busybox-static,kmod,procps,curl,python3 \
    bookworm "$root" "$mirror" > "$cache/debootstrap.log" 2>&1 \
    || { tail -30 "$cache/debootstrap.log" >&2; exit 1; }

[ -f "$cache/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$cache/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$cache/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
echo "/dev/vda / ext4 defaults 0 1" > "$root/etc/fstab"
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
chroot "$root" systemctl enable systemd-networkd kl-lab-net ssh >/dev/null 2>&1
# The NFS server runs only where provisioning enables it.
chroot "$root" systemctl disable nfs-server >/dev/null 2>&1 || true
rm -f "$root/etc/resolv.conf"
echo "nameserver 10.0.2.3" > "$root/etc/resolv.conf"
chroot "$root" apt-get clean
cp "$(ls "$root"/boot/vmlinuz-* | tail -1)" "$cache/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | tail -1)" "$cache/initrd.img"
rm -f "$cache/base.raw"
truncate -s 4G "$cache/base.raw"
mkfs.ext4 -q -F -L root -d "$root" "$cache/base.raw"
echo "$stamp" > "$cache/stamp"
echo "lab image: built in $cache"
