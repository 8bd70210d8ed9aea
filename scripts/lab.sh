#!/usr/bin/env bash
# Build or remove a small network-namespace topology for trying twoway by hand,
# for scripts/demo.sh and for benchmarks:
#
#   PREFIX-cli  198.18.1.1 ──── 198.18.1.2  PREFIX-srv  198.19.0.1 ──── 198.19.0.2  PREFIX-lan
#   (a laptop; no route to 198.19.0.0/24)   (VPN server, ip_forward=1)   (corporate host, default via 198.19.0.1)
#
# Usage: scripts/lab.sh up|down [PREFIX]     (as root; default PREFIX: tw)
#
# Every address is in 198.18.0.0/15, reserved for benchmarking, so nothing here
# can clash with a real network. `down` deletes the namespaces, which removes
# their veth and TUN devices; it also stops any process still running inside
# them (a twoway server or client you left behind). `up` on an existing lab
# fails; run `down` first.
set -euo pipefail

usage() {
    echo "usage: $0 up|down [PREFIX]   (default PREFIX: tw)" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
action=$1
prefix=${2:-tw}
[[ $prefix =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "$0: bad prefix '$prefix'" >&2; exit 2; }
cli=$prefix-cli
srv=$prefix-srv
lan=$prefix-lan

if [[ $(id -u) -ne 0 ]]; then
    echo "$0: needs root (network namespaces); try: sudo $0 $*" >&2
    exit 1
fi

ns_exists() {
    ip netns list | awk '{print $1}' | grep -qxF -- "$1"
}

lab_down() {
    local ns pids pid
    for ns in "$cli" "$srv" "$lan"; do
        ns_exists "$ns" || continue
        pids=$(ip netns pids "$ns" || true)
        if [[ -n $pids ]]; then
            echo "stopping processes in $ns: $pids"
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            for _ in $(seq 50); do
                [[ -z $(ip netns pids "$ns" || true) ]] && break
                sleep 0.1
            done
            for pid in $(ip netns pids "$ns" || true); do
                kill -KILL "$pid" 2>/dev/null || true
            done
        fi
        ip netns del "$ns"
        echo "deleted namespace $ns"
    done
}

lab_up() {
    local ns
    for ns in "$cli" "$srv" "$lan"; do
        if ns_exists "$ns"; then
            echo "$0: namespace $ns already exists; run: $0 down $prefix" >&2
            exit 1
        fi
    done
    # If anything below fails, do not leave half a lab behind.
    trap 'echo "$0: setup failed, removing the partial lab" >&2; lab_down' ERR

    for ns in "$cli" "$srv" "$lan"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    # Pairs are created inside the namespaces, so no name touches the host.
    ip -n "$cli" link add eth0 type veth peer name cli netns "$srv"
    ip -n "$srv" link add lan type veth peer name eth0 netns "$lan"

    ip -n "$cli" addr add 198.18.1.1/24 dev eth0
    ip -n "$srv" addr add 198.18.1.2/24 dev cli
    ip -n "$srv" addr add 198.19.0.1/24 dev lan
    ip -n "$lan" addr add 198.19.0.2/24 dev eth0
    ip -n "$cli" link set eth0 up
    ip -n "$srv" link set cli up
    ip -n "$srv" link set lan up
    ip -n "$lan" link set eth0 up
    ip -n "$lan" route add default via 198.19.0.1
    ip netns exec "$srv" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
    trap - ERR

    cat <<EOT
lab '$prefix' is up:
  $cli  eth0 198.18.1.1/24                  (laptop: reaches 198.19.0.0/24 only through the tunnel)
  $srv  cli 198.18.1.2/24, lan 198.19.0.1/24 (VPN server, forwarding on)
  $lan  eth0 198.19.0.2/24, default via 198.19.0.1
run a command inside one:  ip netns exec $srv <command>
remove it:                 $0 down $prefix
EOT
}

case $action in
    up) lab_up ;;
    down) lab_down ;;
    *) usage ;;
esac
