#!/bin/sh
# The end of a node's provisioning: waits until every pod of the static pod
# directory has started (phase Running, or Succeeded for a pod that ran to
# completion), so that `vagrant up` returns with the pods up. Under software
# emulation the first image import and starts take a minute or two.
#   wait-pods.sh [SECONDS]     (default 600; exits 1 when they are not up)
set -eu
limit=${1:-600}
want=$(cat /etc/kubernetes/manifests/*.yaml | grep -c '^kind: Pod$')
end=$(( $(date +%s) + limit ))
while :; do
    # /pods is compact JSON; "phase" appears once per pod, in its status.
    # The agent makes its token at first start; root may read it.
    token=$(cat /var/lib/kubelet-lite/http-token 2>/dev/null) || token=""
    phases=$(curl -sf -H "Authorization: Bearer $token" localhost:10255/pods | grep -o '"phase":"[A-Za-z]*"' | cut -d'"' -f4) || phases=""
    up=$(printf '%s\n' "$phases" | grep -c -E '^(Running|Succeeded)$') || up=0
    if [ "$up" -ge "$want" ]; then
        echo "$(hostname): $up of $want pods started (GET localhost:10255/pods)"
        exit 0
    fi
    if [ "$(date +%s)" -ge "$end" ]; then
        echo "$(hostname): after ${limit}s, $up of $want pods started; see journalctl -u kubelet-lite" >&2
        exit 1
    fi
    sleep 3
done
