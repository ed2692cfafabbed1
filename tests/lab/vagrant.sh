#!/bin/bash
# The Vagrant lab as a user brings it up: builds the libvirt box from the VM
# lab's image (vagrant/box.sh), runs `vagrant up` on vagrant/Vagrantfile (an
# NFS server and two nodes) with vagrant-libvirt under QEMU, and checks from
# the host that
#   - each node's kubelet-lite service is active and all its pods (the
#     examples of pods/ and its NFS pod) are Running or Succeeded;
#   - node 2's nfs-reader reads what node 1's nfs-writer wrote to the NFS
#     PersistentVolume;
#   - each node's endpoints answer on its forwarded port on the host.
# It leaves nothing behind: the machines are destroyed, the box, its libvirt
# volume and networks removed, and the libvirt daemons stopped if it started
# them. On failure: vagrant's output, the guests' consoles and the agents'
# journals.
# Usage (root): tests/lab/vagrant.sh     KL_LAB_CACHE: image cache directory
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /var/tmp/kl-vagrant.XXXXXX)
chmod 0755 "$work" # QEMU (user libvirt-qemu) writes the consoles here
LAB_NAME=vagrant
# shellcheck source=tests/lab/lib.sh
. "$repo/tests/lab/lib.sh"
virsh() { command virsh -q -c qemu:///system "$@"; }

id=kl$$
box=kubelet-lite-test/bookworm-$id
export VAGRANT_HOME=$work/home VAGRANT_DOTFILE_PATH=$work/dot
# No calls home (version checkpoint, box updates): the lab is offline.
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export KL_BOX=$box KL_LIBVIRT_DRIVER=qemu KL_LIBVIRT_PREFIX=${id}_ KL_CONSOLE_DIR=$work
daemons=()
had_pool=yes
had_chains=yes

# Removes what libvirtd adds to the firewall when it starts, if it was not
# there before this run.
drop_libvirt_chains() {
    local t c
    for t in filter nat mangle; do
        for c in $(iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^LIBVIRT_/ {print $2}'); do
            iptables -t "$t" -S | awk -v c="$c" '$1 == "-A" && $NF == c' | while read -r _ rest; do
                eval "iptables -t $t -D $rest" || true
            done
            iptables -t "$t" -F "$c" && iptables -t "$t" -X "$c" || true
        done
    done
}

cleanup() {
    local rc=$?
    set +e
    if [ $rc -ne 0 ]; then
        echo "=== vagrant lab FAILED (exit $rc): diagnostics ==="
        echo "--- vagrant output (tail) ---"
        tail -40 "$work/vagrant.log" 2>/dev/null
        if [ -s "$work/libvirtd.log" ]; then
            echo "--- libvirtd (errors, tail) ---"
            grep ' error : ' "$work/libvirtd.log" | grep -v -e GDBus -e DMI -e dmidecode | tail -10
        fi
        for vm in nfs node1 node2; do
            if [ -f "$work/$vm.console" ]; then
                echo "--- $vm: console (tail) ---"
                tail -30 "$work/$vm.console" | tr -d '\r'
            fi
            [ "$vm" = nfs ] && continue
            echo "--- $vm: kubelet-lite journal (tail) ---"
            (cd "$repo/vagrant" && timeout 60 vagrant ssh "$vm" -c 'journalctl -u kubelet-lite --no-pager -n 60' 2>/dev/null)
        done
    fi
    (cd "$repo/vagrant" && timeout 600 vagrant destroy -f >>"$work/vagrant.log" 2>&1)
    for dom in $(virsh list --all --name 2>/dev/null | grep "^${id}_"); do
        virsh destroy "$dom" >/dev/null 2>&1
        virsh undefine "$dom" --remove-all-storage >/dev/null 2>&1
    done
    for vol in $(virsh vol-list default 2>/dev/null | awk '{print $1}' | grep -F "$(echo "$box" | sed 's|/|-VAGRANTSLASH-|')"); do
        virsh vol-delete --pool default "$vol" >/dev/null
    done
    if [ "$had_pool" = no ]; then
        virsh pool-destroy default >/dev/null 2>&1
        virsh pool-undefine default >/dev/null 2>&1
    fi
    if [ ${#daemons[@]} -gt 0 ]; then
        # Networks this run's libvirtd made (vagrant destroy removes them
        # unless it failed half way).
        for net in $(virsh net-list --name 2>/dev/null | grep -e '^vagrant'); do
            virsh net-destroy "$net" >/dev/null 2>&1
            virsh net-undefine "$net" >/dev/null 2>&1
        done
        for p in "${daemons[@]}"; do kill "$p" 2>/dev/null; done
        for p in "${daemons[@]}"; do wait "$p" 2>/dev/null; done
        [ "$had_chains" = yes ] || drop_libvirt_chains
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT

step "dependencies"
"$repo/scripts/deps.sh" vagrant vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu \
    libvirt-clients dnsmasq-base qemu-system-x86 qemu-utils debootstrap grub-pc-bin fdisk rsync \
    openssh-client python3 iptables \
    --need-cmd vagrant --need-cmd virsh --need-cmd libvirtd --need-cmd virtlogd \
    --need-cmd qemu-system-x86_64 --need-cmd qemu-img --need-cmd debootstrap --need-cmd rsync \
    --need-cmd ssh --need-cmd ssh-keygen --need-cmd python3 --need-cmd iptables \
    --need-cmd grub-mkimage --need-cmd sfdisk --need-cmd mkfs.ext4 >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
step "building the agent (release)"
(cd "$repo" && cargo build --locked --release -q)

# libvirt: the machine's daemons if they run, else our own for this run.
if ! virsh version >/dev/null 2>&1; then
    iptables -S 2>/dev/null | grep -q -- '-N LIBVIRT_' || had_chains=no
    virtlogd >>"$work/libvirtd.log" 2>&1 & daemons+=($!)
    libvirtd >>"$work/libvirtd.log" 2>&1 & daemons+=($!)
    for _ in $(seq 60); do virsh version >/dev/null 2>&1 && break; sleep 1; done
    virsh version >/dev/null
    step "started libvirtd and virtlogd (pids ${daemons[*]})"
fi
virsh pool-info default >/dev/null 2>&1 || had_pool=no

step "box (from the lab image)"
"$repo/vagrant/box.sh" "$work/kl.box" | tail -1
vagrant box add -f --name "$box" "$work/kl.box" >/dev/null
rm -f "$work/kl.box"

while :; do
    base=$(free_port)
    port_free $((base + 1)) && port_free $((base + 2)) && break
done
export KL_PORT_BASE=$base

step "vagrant up (NFS server and two nodes, QEMU software emulation)"
# Progress bars rewrite one line with \r: keep whole lines only, timed.
if ! (cd "$repo/vagrant" && timeout 1800 vagrant up --provider=libvirt 2>&1) \
    | stdbuf -oL tr '\r' '\n' | grep --line-buffered -v -e 'Progress:' -e '^\s*$' \
    | while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done >"$work/vagrant.log"; then
    echo "vagrant up failed"
    exit 1
fi
grep -q 'Running provisioner' "$work/vagrant.log"
# The timeline of the bring-up: where the time goes.
grep -E 'Creating image|Starting domain|Machine booted and ready|Running provisioner|pods started' "$work/vagrant.log" || true
step "vagrant up done"

vssh() { (cd "$repo/vagrant" && vagrant ssh "$1" -c "$2" -- -q 2>/dev/null); }

# 1. Every node: the service is active, every pod of its directory runs
# (a Job-like pod may have Succeeded), seen through the forwarded port.
expected=$(cat "$repo"/pods/*.yaml | grep -c '^kind: Pod$')
expected=$((expected + 1)) # and its NFS pod
# The endpoints need each node's token (a root-only file the agent made at
# start, before it told systemd it was ready).
declare -A auth
pods_ok() { # NODE PORT: all expected pods Running/Succeeded
    curl -sf -H "${auth[$1]}" "127.0.0.1:$2/pods" | EXPECTED=$expected python3 -c '
import json, os, sys
items = json.load(sys.stdin)["items"]
phases = {p["metadata"]["name"]: p["status"].get("phase") for p in items}
print(phases)
sys.exit(0 if len(phases) == int(os.environ["EXPECTED"])
         and all(ph in ("Running", "Succeeded") for ph in phases.values()) else 1)'
}
for i in 1 2; do
    state=$(vssh "node$i" 'systemctl show -p ActiveState,SubState,Type --value kubelet-lite' | tr -d '\r' | tr '\n' ' ')
    echo "node$i: kubelet-lite $state"
    case "$state" in "notify active running"*) ;; *) echo "service not ready on node$i"; exit 1 ;; esac
    auth[node$i]="Authorization: Bearer $(vssh "node$i" 'sudo cat /var/lib/kubelet-lite/http-token' | tr -d '\r\n')"
    wait_for 600 "node$i: all pods running" pods_ok "node$i" $((base + i))
    echo "node$i: $(pods_ok "node$i" $((base + i)))"
done
step "check 1: both nodes' services active, their pods running"

# 2. NFS across nodes.
reader_sees() {
    local log
    log=$(vssh node2 'sudo cat /var/log/pods/default_nfs-reader-node2_*/reader/0.log')
    grep -q 'nfs-writer-node1 ' <<<"$log"
}
wait_for 300 "node2 reads what node1 wrote over NFS" reader_sees
vssh node2 'sudo tail -n 2 /var/log/pods/default_nfs-reader-node2_*/reader/0.log'
step "check 2: node2's reader sees node1's writes through the NFS PersistentVolume"

# 3. Metrics on the host's forwarded ports.
for i in 1 2; do
    cadvisor=$(curl -sf -H "${auth[node$i]}" "127.0.0.1:$((base + i))/metrics/cadvisor")
    role=$([ "$i" = 1 ] && echo writer || echo reader)
    grep -q "^container_cpu_usage_seconds_total{container=\"$role\"" <<<"$cadvisor"
    resource=$(curl -sf -H "${auth[node$i]}" "127.0.0.1:$((base + i))/metrics/resource")
    grep -q '^node_memory_working_set_bytes' <<<"$resource"
done
step "check 3: metrics of both nodes on the host (127.0.0.1:$((base + 1)), :$((base + 2)))"
echo "vagrant lab passed in $(( $(date +%s) - t0 ))s"
