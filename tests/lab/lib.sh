# shellcheck shell=bash
# Helpers of the lab scripts (sourced). LAB_NAME prefixes the step lines.
t0=$(date +%s)

# step TEXT: a progress line with the seconds since the start.
step() { echo "[${LAB_NAME:-lab} +$(( $(date +%s) - t0 ))s] $*"; }

# wait_for SECONDS DESCRIPTION COMMAND...: runs COMMAND until it succeeds,
# failing with DESCRIPTION after SECONDS.
wait_for() {
    local limit=$1 what=$2; shift 2
    local end=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || { echo "timed out after ${limit}s: $what"; return 1; }
        sleep 2
    done
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# port_free PORT: whether PORT on 127.0.0.1 can be bound now.
port_free() { python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null; }
