#!/bin/bash
# The VM lab: cgroup v2, NFS and systemd, which the development machines'
# kernel does not offer. Boots an NFS server and two nodes under QEMU
# (software emulation), provisions them with the same scripts as the
# Vagrantfile (vagrant/provision/), and checks over ssh:
#   - the service is active (Type=notify: READY=1 was sent) and
#     `systemd-analyze verify` finds nothing to say about its unit;
#   - cgroup v2 limits land in cpu.max, memory.max, cpu.weight; an OOM kill
#     is reported as OOMKilled; containers get memory.oom.group=1, so a
#     child's OOM kill takes its parent shell too;
#   - a pod on node 1 writes to an NFS PersistentVolume, a pod on node 2
#     reads it; deleting and re-creating the writer keeps the data;
#   - `systemctl restart kubelet-lite` leaves the containers untouched;
#   - the metrics endpoints answer from the host;
#   - with the NFS server stopped, a new NFS pod waits with FailedMount and
#     the agent keeps answering;
#   - with cgroupDriver: systemd, pods get kubepods.slice slices and runc
#     scopes with their limits.
# On failure: the serial consoles and the agents' journals are printed.
# Usage (root): tests/lab/run.sh      KL_LAB_CACHE: image cache directory
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${KL_LAB_CACHE:-/var/cache/kubelet-lite-lab}
work=$(mktemp -d /tmp/kl-lab.XXXXXX)
pids=()
# shellcheck source=tests/lab/lib.sh
. "$repo/tests/lab/lib.sh"

cleanup() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "=== lab FAILED (exit $rc): diagnostics ==="
        for vm in nfs node1 node2; do
            [ -f "$work/$vm.serial" ] || continue
            echo "--- $vm: serial console (tail) ---"
            tail -40 "$work/$vm.serial" | tr -d '\r'
            [ "$vm" = nfs ] && continue
            echo "--- $vm: kubelet-lite journal (tail) ---"
            ssh_vm "$vm" journalctl -u kubelet-lite --no-pager -n 60 2>/dev/null || true
        done
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT


step "dependencies"
# One apt call for all of them, then every tool this lab (and image.sh) runs
# must be there: see scripts/deps.sh.
"$repo/scripts/deps.sh" qemu-system-x86 debootstrap openssh-client qemu-utils python3 grub-pc-bin fdisk \
    --need-cmd qemu-system-x86_64 --need-cmd qemu-img --need-cmd debootstrap --need-cmd ssh \
    --need-cmd scp --need-cmd ssh-keygen --need-cmd python3 --need-cmd grub-mkimage \
    --need-cmd sfdisk --need-cmd mkfs.ext4 >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
step "building the agent (release)"
(cd "$repo" && cargo build --locked --release -q)
step "guest image"
"$repo/tests/lab/image.sh" "$cache"

declare -A ip sshport mport
ip=([nfs]=192.168.100.10 [node1]=192.168.100.11 [node2]=192.168.100.12)
mcast=$(( 20000 + RANDOM % 20000 ))
i=0
for vm in nfs node1 node2; do
    i=$((i + 1))
    sshport[$vm]=$(free_port)
    mport[$vm]=$(free_port)
    qemu-img create -q -f qcow2 -b "$cache/base.raw" -F raw "$work/$vm.qcow2"
    qemu-system-x86_64 -name "$vm" -machine q35 -accel tcg,thread=multi,tb-size=256 -cpu max -m 1024 -smp 1 \
        -display none -serial "file:$work/$vm.serial" -monitor none \
        -kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
        -append "root=/dev/vda1 rw console=ttyS0 net.ifnames=0 kl.hostname=$vm kl.ip=${ip[$vm]}" \
        -drive "file=$work/$vm.qcow2,if=virtio,format=qcow2" \
        -netdev "user,id=u,hostfwd=tcp:127.0.0.1:${sshport[$vm]}-:22,hostfwd=tcp:127.0.0.1:${mport[$vm]}-:10255" \
        -device "virtio-net-pci,netdev=u,mac=52:54:00:00:01:0$i" \
        -netdev "socket,id=l,mcast=230.0.0.1:$mcast,localaddr=127.0.0.1" \
        -device "virtio-net-pci,netdev=l,mac=52:54:00:00:02:0$i" &
    pids+=($!)
done
step "booting nfs, node1, node2 (software emulation)"

ssh_vm() {
    local vm=$1; shift
    ssh -q -i "$cache/id_ed25519" -p "${sshport[$vm]}" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=10 -o BatchMode=yes root@127.0.0.1 "$@"
}
for vm in nfs node1 node2; do
    wait_for 300 "ssh to $vm" ssh_vm "$vm" true
done
step "all three guests answer ssh"

# What the guests need from the repository, and the binary.
tar -C "$repo" -czf "$work/src.tgz" pods systemd vagrant tests/images
cp "$repo/target/release/kubelet-lite" "$work/kubelet-lite"
for vm in nfs node1 node2; do
    scp -q -i "$cache/id_ed25519" -P "${sshport[$vm]}" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        "$work/src.tgz" "$work/kubelet-lite" root@127.0.0.1:/root/
    ssh_vm "$vm" 'mkdir -p /root/src && tar -C /root/src -xzf /root/src.tgz && mv /root/kubelet-lite /root/src/'
done
ssh_vm nfs sh /root/src/vagrant/provision/nfs-server.sh
for vm in node1 node2; do ssh_vm "$vm" sh /root/src/vagrant/provision/node.sh /root/src; done
step "provisioned"

# 1. The service: active means READY=1 arrived (Type=notify).
for vm in node1 node2; do
    state=$(ssh_vm "$vm" systemctl show -p ActiveState,SubState,Type --value kubelet-lite | tr '\n' ' ')
    echo "$vm: kubelet-lite $state"
    case "$state" in "notify active running"*) ;; *) echo "service not ready on $vm"; exit 1 ;; esac
    ssh_vm "$vm" test -f /sys/fs/cgroup/cgroup.controllers
done
# The installed unit, as systemd itself reads it: nothing to say.
verify=$(ssh_vm node1 systemd-analyze verify /etc/systemd/system/kubelet-lite.service 2>&1)
[ -z "$verify" ] || { echo "systemd-analyze verify: $verify"; exit 1; }
step "check 1: services active and READY, unit verified, cgroup v2 in the guests"

# 2. cgroup v2 limits and OOM.
# /pods needs the token the agent made (root-only file on the guest).
pods_json() { ssh_vm "$1" 'curl -sf -H "Authorization: Bearer $(cat /var/lib/kubelet-lite/http-token)" localhost:10255/pods'; }
field() { # - POD EXPR: evaluates EXPR (Python, `p` is the pod) on /pods JSON from stdin
    NAME=$2 EXPR=$3 python3 -c 'import json, os, sys
d = json.load(sys.stdin)
m = [p for p in d["items"] if p["metadata"]["name"] == os.environ["NAME"]]
print(eval(os.environ["EXPR"], {"p": m[0]}) if m else "")'
}
ssh_vm node1 "cat > /etc/kubernetes/manifests/limits.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: limits}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: spin
    image: busybox
    command: [sh, -c, 'while :; do :; done']
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 200m, memory: 64Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: fill
    image: busybox
    command: [dd, if=/dev/zero, of=/dev/shm/fill, bs=1M, count=100]
    resources:
      limits: {memory: 32Mi}
---
# The shell forks dd, whose 100M buffer is past the limit. With
# memory.oom.group=1 the OOM killer takes the shell too: "survived" is
# never written and the container ends instead of sleeping on.
apiVersion: v1
kind: Pod
metadata: {name: oomgroup}
spec:
  restartPolicy: Never
  containers:
  - name: parent
    image: busybox
    command: [sh, -c, 'dd if=/dev/zero of=/dev/null bs=100M count=1; echo survived; exec sleep 3600']
    resources:
      limits: {memory: 32Mi}
YAML
running() { [ "$(pods_json "$1" | field - "$2" "p['status']['phase']")" = Running ]; }
wait_for 300 "limits pod running" running node1 limits-node1
uid=$(pods_json node1 | field - limits-node1 "p['metadata']['uid']")
cg=/sys/fs/cgroup/kubepods/burstable/pod$uid
cid=$(pods_json node1 | field - limits-node1 "p['status']['containerStatuses'][0]['containerID'].split('//')[1]")
got=$(ssh_vm node1 "cat $cg/cpu.max $cg/memory.max $cg/cpu.weight $cg/$cid/cpu.max $cg/$cid/memory.max $cg/$cid/cpu.weight $cg/$cid/memory.oom.group" | tr '\n' '|')
echo "node1 cgroup v2: $got"
[ "$got" = "20000 100000|67108864|4|20000 100000|67108864|4|1|" ] || { echo "unexpected cgroup values"; exit 1; }
oom_reason() { [ "$(pods_json node1 | field - oom-node1 "p['status']['containerStatuses'][0]['state'].get('terminated',{}).get('reason','')")" = OOMKilled ]; }
wait_for 300 "OOMKilled reported" oom_reason
group_killed() { [ "$(pods_json node1 | field - oomgroup-node1 "p['status']['containerStatuses'][0]['state'].get('terminated',{}).get('reason','')")" = OOMKilled ]; }
wait_for 300 "the whole oomgroup container OOMKilled (parent shell included)" group_killed
glog=$(ssh_vm node1 "cat /var/log/pods/default_oomgroup-node1_*/parent/0.log")
grep -q survived <<<"$glog" && { echo "the parent shell outlived the OOM kill: $glog"; exit 1; }
gid=$(pods_json node1 | field - oomgroup-node1 "p['status']['containerStatuses'][0]['containerID'].split('//')[1]")
ssh_vm node1 "ctr -n kubelet-lite tasks ls" | grep "^$gid .*RUNNING" && { echo "oomgroup task still running"; exit 1; }
step "check 2: cpu.max, memory.max, cpu.weight, memory.oom.group on v2; OOMKilled, whole container"

# 3. NFS: writer on node1, reader on node2, through the same PV.
ssh_vm node1 sh /root/src/vagrant/provision/pods.sh /root/src "${ip[nfs]}" writer
ssh_vm node2 sh /root/src/vagrant/provision/pods.sh /root/src "${ip[nfs]}" reader
reader_sees() {
    local log
    log=$(ssh_vm node2 "cat /var/log/pods/default_nfs-reader-node2_*/reader/0.log")
    grep -q "nfs-writer-node1 " <<<"$log"
}
wait_for 400 "node2 reads what node1 wrote over NFS" reader_sees
ssh_vm nfs "cat /exports/log.txt" | tail -2
old=$(ssh_vm nfs "wc -l < /exports/log.txt")
ssh_vm node1 "mv /etc/kubernetes/manifests/nfs-writer.yaml /root/"
gone() { [ -z "$(pods_json node1 | field - nfs-writer-node1 "p['metadata']['name']")" ]; }
wait_for 120 "writer removed" gone
ssh_vm node1 "mv /root/nfs-writer.yaml /etc/kubernetes/manifests/"
grown() { [ "$(ssh_vm nfs 'wc -l < /exports/log.txt')" -gt "$old" ]; }
wait_for 300 "writer re-created and appending to the same data" grown
step "check 3: NFS PV shared between nodes; data survives pod re-creation"

# 4. Restarting the service leaves containers alone.
# Once nothing is being started any more (the emulated guest is slow):
running_tasks() { ssh_vm node1 "ctr -n kubelet-lite tasks ls" | grep RUNNING | sort; }
settled() {
    local a b
    a=$(ssh_vm node1 "ctr -n kubelet-lite tasks ls")
    grep -q CREATED <<<"$a" && return 1
    sleep 5
    b=$(ssh_vm node1 "ctr -n kubelet-lite tasks ls")
    [ "$a" = "$b" ]
}
wait_for 300 "node1's containers settled" settled
before=$(running_tasks)
ssh_vm node1 systemctl restart kubelet-lite
wait_for 120 "agent back" ssh_vm node1 curl -sf localhost:10255/healthz
sleep 5
after=$(running_tasks)
[ "$before" = "$after" ] || { echo "tasks changed across the restart:"; echo "$before"; echo "$after"; exit 1; }
step "check 4: systemctl restart kept every container ($(echo "$after" | grep -c RUNNING) running)"

# 5. Metrics from the host, with each node's token.
# (Whole bodies first: with pipefail, grep -q closing the pipe fails curl.)
auth() { echo "Authorization: Bearer $(ssh_vm "$1" cat /var/lib/kubelet-lite/http-token)"; }
cadvisor=$(curl -sf -H "$(auth node1)" "127.0.0.1:${mport[node1]}/metrics/cadvisor")
grep -q '^container_cpu_usage_seconds_total{container="spin"' <<<"$cadvisor"
grep -q '^container_spec_cpu_quota{container="spin".*} 20000$' <<<"$cadvisor"
# Cross-check with the cgroup v2 file (periods tick at 10/s: small slack).
periods_metric=$(grep '^container_cpu_cfs_periods_total{container="spin"' <<<"$cadvisor" | awk '{print $NF}')
periods_file=$(ssh_vm node1 "grep nr_periods $cg/$cid/cpu.stat" | awk '{print $2}')
echo "cfs periods: metric $periods_metric, cpu.stat $periods_file"
python3 -c "import sys; sys.exit(0 if 0 <= $periods_file - $periods_metric < 200 else 1)"
resource=$(curl -sf -H "$(auth node2)" "127.0.0.1:${mport[node2]}/metrics/resource")
grep -q '^node_memory_working_set_bytes' <<<"$resource"
curl -sf -H "$(auth node1)" "127.0.0.1:${mport[node1]}/stats/summary" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["pods"]'
step "check 5: metrics reachable from the host"

# 6. A dead NFS server: FailedMount, and the agent keeps answering.
ssh_vm nfs systemctl stop nfs-server
sed 's/NFS_SERVER/'"${ip[nfs]}"'/; s/nfs-writer/nfs-late/; s/name: shared$/name: shared-late/; s/claimName: shared$/claimName: shared-late/; s/name: shared-nfs$/name: late-nfs/' \
    "$repo/vagrant/pods/nfs-writer.yaml" | ssh_vm node2 "cat > /etc/kubernetes/manifests/nfs-late.yaml"
failed_mount() { [ "$(pods_json node2 | field - nfs-late-node2 "p['status'].get('reason','')")" = FailedMount ]; }
wait_for 300 "FailedMount with the NFS server down" failed_mount
pods_json node2 | field - nfs-late-node2 "p['status']['message']"
ssh_vm node2 curl -sf --max-time 5 localhost:10255/healthz >/dev/null
step "check 6: dead NFS server gives FailedMount, agent responsive"
# 7. The systemd cgroup driver (node2): slices named as the kubelet's, the
# containers' scopes made by runc through systemd, the limits in place.
ssh_vm node2 "printf 'cgroupDriver: systemd\n' >> /etc/kubelet-lite/config.yaml && systemctl restart kubelet-lite"
wait_for 120 "agent back with the systemd driver" ssh_vm node2 curl -sf localhost:10255/healthz
ssh_vm node2 "cat > /etc/kubernetes/manifests/sysd.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: sysd}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: spin
    image: busybox
    command: [sh, -c, 'while :; do :; done']
    resources:
      limits: {cpu: 200m, memory: 64Mi}
YAML
wait_for 300 "systemd-driver pod running" running node2 sysd-node2
uid=$(pods_json node2 | field - sysd-node2 "p['metadata']['uid']")
cid=$(pods_json node2 | field - sysd-node2 "p['status']['containerStatuses'][0]['containerID'].split('//')[1]")
slice=/sys/fs/cgroup/kubepods.slice/kubepods-pod$uid.slice
got=$(ssh_vm node2 "cat $slice/cpu.max $slice/memory.max $slice/kubelet-lite-$cid.scope/cpu.max $slice/kubelet-lite-$cid.scope/memory.max; systemctl is-active kubepods-pod$uid.slice" | tr '\n' '|')
echo "node2 systemd driver: $got"
[ "$got" = "20000 100000|67108864|20000 100000|67108864|active|" ] || { echo "unexpected values with the systemd driver"; exit 1; }
step "check 7: systemd cgroup driver (kubepods.slice, runc scopes, limits)"

# Pod networking across nodes: a pod on node1 reaches a hostPort of a pod
# on node2 (CNI bridge + portmap from Debian's containernetworking-plugins).
ssh_vm node2 "cat > /etc/kubernetes/manifests/web.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: httpd
    image: busybox
    command: [sh, -c, 'mkdir -p /www && echo hello-from-node2 > /www/index.html && exec httpd -f -p 8080 -h /www']
    ports:
    - {containerPort: 8080, hostPort: 18080}
YAML
wait_for 300 "web pod running on node2" running node2 web-node2
pod_ip=$(pods_json node2 | field - web-node2 "p['status']['podIP']")
echo "web-node2 pod IP: $pod_ip"
ssh_vm node1 "cat > /etc/kubernetes/manifests/client.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: wget
    image: busybox
    command: [sh, -c, 'while :; do wget -qO- http://${ip[node2]}:18080/ || echo fetch failed; sleep 1; done']
YAML
wait_for 300 "client pod running on node1" running node1 client-node1
reached() { ssh_vm node1 "cat /var/log/pods/default_client-node1_*/wget/0.log" | grep -q hello-from-node2; }
wait_for 120 "node1's pod reaching node2's hostPort" reached
step "check 8: a pod on node1 reaches a hostPort on node2 (pod IP $pod_ip)"
echo "lab passed in $(( $(date +%s) - t0 ))s"
