#!/usr/bin/env bash
# Measure twoway side by side with the plain routed network and OpenVPN over
# TCP and UDP, on a clean, a lossy and a lossy-WAN link, in one run on one
# machine, in network namespaces (scripts/lab.sh):
#
#   PREFIX-cli 198.18.1.1 ── 198.18.1.2 PREFIX-srv 198.19.0.1 ── 198.19.0.2 PREFIX-lan
#   (iperf3/ping clients)    (VPN servers, forwarding)          (iperf3 server)
#
#   sudo scripts/bench.sh [--reps N] [--secs S] [--out DIR] [--systems LIST]
#                         [--links LIST] [--quick] [--no-build] [--cpu-rate RATE]
#                         [--prefix P]
#
# Systems: plain (a temporary route in cli via srv, no VPN); twoway (default
# client config: transport "auto", data over UDP when it gets through);
# twoway-tcp (the same with transport = "tcp" in the client config; the server
# stays auto; its outer TCP runs tunnel.congestion = "auto", BBR here);
# twoway-tcp-cubic (twoway-tcp with congestion = "cubic" on both ends; only
# when named in --systems); openvpn-tcp and openvpn-udp (OpenVPN 2.6 over TCP or UDP with
# mutual certificates, Debian's defaults, no tcp-nodelay, otherwise alike).
# For twoway, `twoway status --json` gives the transport right after the start
# (the default system waits up to 10 s for "udp") and at the end (udp, or tcp
# where auto found the path clean and busy); both are in the tables and the
# JSON.
#
# Links (one pass each, in the order given):
#   clean  the lab's veth as it is
#   lossy  1 % random loss each way: nftables `numgen random mod 100 < 1 drop`
#          on ingress of both public veth ends (this kernel has no netem), as
#          the lab measured; sub-ms RTT; offloads untouched, so a GSO/GRO
#          aggregate crossing the veth is dropped as one packet
#   wan    cli ── veth ── PREFIX-wan ── veth ── srv, with twoway-wan (a
#          userspace AF_PACKET bridge, tests/src/bin/twoway-wan.rs) in the
#          middle: 15 ms each way (30 ms RTT), 1 % random loss each way,
#          500 Mbit/s token bucket each way, drop-tail queue of 2 x BDP;
#          offloads off on the four veth ends; same addresses as clean
#
# For each link, each system and each repetition (interleaved: rep 1 runs
# every system, then rep 2 ...; every VPN is started afresh each time):
# on the clean link
#   - ping cli -> lan while idle (avg, p99)
#   - iperf3 TCP 1 stream up (cli -> lan), with the CPU time (utime+stime) of
#     the VPN's server and client processes read from /proc before and after,
#     divided by the GB received (or a separate rate-limited run: --cpu-rate)
#   - iperf3 TCP 4 streams up, 1 stream down (-R)
#   - ping cli -> lan while a 1-stream upload runs (avg, p99)
# on the lossy and wan links
#   - iperf3 TCP 1 stream down (-R)
#   - iperf3 TCP 1 stream up with pings beside it: its throughput is the
#     1-stream upload, the pings give avg and p99 (as the lab measured)
# and reports the medians: one Markdown table per link on stdout and in
# DIR/bench-STAMP.md (copy: DIR/bench.md), every raw value in
# DIR/bench-STAMP.json (copy: DIR/bench.json), and the logs and iperf3 JSON
# in DIR/bench-STAMP-logs/. DIR defaults to target/bench.
#
# Options:
#   --reps N         repetitions (default 2)
#   --secs S         seconds per iperf3 run (default 10, at least 2)
#   --systems LIST   comma-separated subset of
#                    plain,twoway,twoway-tcp,openvpn-tcp,openvpn-udp (default:
#                    these) and twoway-tcp-cubic
#   --links LIST     comma-separated subset of clean,lossy,wan (default: all)
#   --quick          a smoke run: 1 repetition, 3 s
#   --no-build       use the binaries in target/release as they are
#   --bin-dir DIR    use DIR/twoway-server and DIR/twoway (implies --no-build;
#                    also TWOWAY_BIN_DIR)
#   --cpu-rate RATE  measure CPU/GB in its own 1-stream run limited to RATE
#                    (iperf3 -b, e.g. 200M, the rate of the published peer
#                    figures) instead of during the unlimited 1-stream upload
#   --prefix P       namespace prefix (default twb)
#   --out DIR        where to write the results (default target/bench)
#
# Run time: about 1 min per system and repetition on the clean link and 30 s
# on each of the others (at --secs 10), plus the build: the default run
# (5 systems, 3 links, 2 repetitions) takes about 20-25 minutes.
#
# It installs what it lacks (iperf3, openvpn, openssl, iputils-ping) with
# apt-get. Every address is in 198.18.0.0/15; nothing outside the namespaces
# and a temporary folder is touched, and everything is removed on exit, also
# on failure or Ctrl-C. Exit status: 0 all measured; 1 a setup step failed;
# 2 usage; 3 the run finished but some measurements failed (listed in the
# output).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
helper=$here/bench/report.py
all_systems=plain,twoway,twoway-tcp,openvpn-tcp,openvpn-udp
all_links=clean,lossy,wan
# The lossy link and the WAN (the bridge's settings, each way).
loss_pct=1
wan_delay_ms=15
wan_loss_pct=1
wan_rate_mbit=500

reps=2
links=$all_links
secs=10
out=
systems=$all_systems
build=1
bin_dir=${TWOWAY_BIN_DIR:-}
bin_note=
cpu_rate=
prefix=twb

usage() { # [EXIT]
    sed -n '/^#   sudo/,/^#   --out/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}
die() {
    printf 'bench: FAILED: %s\n' "$*" >&2
    exit 1
}
log() {
    printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) reps=${2:-}; shift 2 || usage ;;
        --secs) secs=${2:-}; shift 2 || usage ;;
        --out) out=${2:-}; shift 2 || usage ;;
        --systems) systems=${2:-}; shift 2 || usage ;;
        --links) links=${2:-}; shift 2 || usage ;;
        --quick) reps=1; secs=3; shift ;;
        --no-build) build=; shift ;;
        --bin-dir) bin_dir=${2:-}; shift 2 || usage ;;
        --cpu-rate) cpu_rate=${2:-}; shift 2 || usage ;;
        --prefix) prefix=${2:-}; shift 2 || usage ;;
        -h | --help) usage 0 ;;
        *) echo "bench: unknown argument '$1'" >&2; usage ;;
    esac
done
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "bench: --reps wants a positive integer" >&2; exit 2; }
[[ $secs =~ ^[0-9]+$ && $secs -ge 2 ]] || { echo "bench: --secs wants an integer >= 2" >&2; exit 2; }
[[ -z $cpu_rate || $cpu_rate =~ ^[0-9]+[KMG]?$ ]] || { echo "bench: --cpu-rate wants e.g. 200M" >&2; exit 2; }
[[ $prefix =~ ^[A-Za-z0-9_.-]{1,8}$ ]] || { echo "bench: bad --prefix '$prefix'" >&2; exit 2; }
IFS=, read -r -a sys_list <<<"$systems"
[[ ${#sys_list[@]} -gt 0 ]] || { echo "bench: --systems is empty" >&2; exit 2; }
declare -A seen=()
for s in "${sys_list[@]}"; do
    [[ ,$all_systems,twoway-tcp-cubic, == *,"$s",* ]] || { echo "bench: unknown system '$s' (known: $all_systems,twoway-tcp-cubic)" >&2; exit 2; }
    [[ -z ${seen[$s]:-} ]] || { echo "bench: system '$s' given twice" >&2; exit 2; }
    seen[$s]=1
done
want() { [[ -n ${seen[$1]:-} ]]; }
want_twoway() { want twoway || want twoway-tcp || want twoway-tcp-cubic; }
want_openvpn() { want openvpn-tcp || want openvpn-udp; }
IFS=, read -r -a link_list <<<"$links"
[[ ${#link_list[@]} -gt 0 ]] || { echo "bench: --links is empty" >&2; exit 2; }
declare -A seen_link=()
for l in "${link_list[@]}"; do
    [[ ,$all_links, == *,"$l",* ]] || { echo "bench: unknown link '$l' (known: $all_links)" >&2; exit 2; }
    [[ -z ${seen_link[$l]:-} ]] || { echo "bench: link '$l' given twice" >&2; exit 2; }
    seen_link[$l]=1
done
want_link() { [[ -n ${seen_link[$1]:-} ]]; }
[[ -n $bin_dir ]] && build=
out=${out:-$root/target/bench}

if [[ $(id -u) -ne 0 ]]; then
    echo "bench: needs root (network namespaces, TUN devices); try: sudo $0 $*" >&2
    exit 1
fi

cli=$prefix-cli
srv=$prefix-srv
lan=$prefix-lan
wan=$prefix-wan
lan_host=198.19.0.2
corp_net=198.19.0.0/24
srv_addr=198.18.1.2
iperf_port=5201
tw_port=4433
ovpn_port=1194
# Pings per ping measurement, at 0.1 s: 20, or more for longer runs.
ping_count=$((secs > 4 ? (secs - 2) * 10 : 20))
# The upload that loads the link while pinging outlasts the pings.
load_secs=$((ping_count / 10 + 2))
((load_secs < secs)) && load_secs=$secs
started=$(date +%s)
stamp=$(date +%Y%m%d-%H%M%S)

# --------------------------------------------------------------------------
# State for the cleanup, which runs on every exit.
tmp=
out_created=
lab_up=
iperf_pid=
plain_route=
tw_server_pid=
tw_client_up=
ovpn_server_pid=
ovpn_client_pid=
wan_ns=
wan_pid=
cur_link=clean
failures=0

# Whether a process runs (a zombie does not).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}
# Waits up to $2 seconds for process $1 to end.
gone_within() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        alive "$1" || return 0
        sleep 0.1
    done
    return 1
}
# Stops one process we started: TERM, up to 5 s, then KILL.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    if ! gone_within "$pid" 5; then
        echo "bench: PID $pid ignored SIGTERM for 5 s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# PIDs of the processes in namespace $1 whose command name is $2.
ns_pids_named() {
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && echo "$pid"
    done
    return 0
}

stop_twoway() {
    local pid pids
    if [[ -n $tw_client_up ]]; then
        pids=$(ns_pids_named "$cli" twoway)
        if ! timeout -k 2 20 ip netns exec "$cli" "$twoway" down --config "$tw_cfg" \
            >>"$tmp/logs/twoway-down.log" 2>&1; then
            echo "bench: 'twoway down' failed (see twoway-down.log); stopping the client by PID" >&2
        fi
        for pid in $pids; do
            gone_within "$pid" 5 || stop_pid "$pid"
        done
        tw_client_up=
    fi
    stop_pid "$tw_server_pid"
    tw_server_pid=
}

stop_openvpn() {
    stop_pid "$ovpn_client_pid"
    ovpn_client_pid=
    stop_pid "$ovpn_server_pid"
    ovpn_server_pid=
}

stop_plain() {
    if [[ -n $plain_route ]]; then
        ip -n "$cli" route del "$corp_net" via "$srv_addr" 2>/dev/null || true
        plain_route=
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ -n $tmp ]] && stop_twoway
    stop_openvpn
    stop_plain
    stop_pid "$iperf_pid"
    stop_pid "$wan_pid"
    [[ -n $wan_ns ]] && ip netns del "$wan" 2>/dev/null
    if [[ -n $tmp && -d $tmp/logs ]]; then
        cp "$tmp"/twoway/*.log "$tmp/logs/" 2>/dev/null
        mkdir -p "$out/bench-$stamp-logs" && cp -r "$tmp/logs/." "$out/bench-$stamp-logs/"
    fi
    # Under sudo, what we wrote belongs to the user who ran it (and nothing else is touched).
    if [[ -n ${SUDO_UID:-} && -n $out && -d $out ]]; then
        [[ -n $out_created ]] && chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$out"
        chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$out/bench-$stamp"* "$out/bench.md" "$out/bench.json" 2>/dev/null
    fi
    # lab.sh down also stops whatever still runs inside the namespaces.
    [[ -n $lab_up ]] && "$here/lab.sh" down "$prefix" >/dev/null
    [[ -n $tmp ]] && rm -rf "$tmp"
    if [[ $rc -ne 0 && $rc -ne 3 ]]; then
        echo "bench: stopped (exit $rc); namespaces, processes and the temporary folder are removed" >&2
        [[ -d $out/bench-$stamp-logs ]] && echo "bench: logs kept in $out/bench-$stamp-logs" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls "$@" every 0.1 s for up to $1 seconds; gives up at once if "$@"
# returns 2 (what it waits for can no longer happen).
wait_until() {
    local secs=$1 i rc
    shift
    for ((i = 0; i < secs * 10; i++)); do
        if "$@"; then return 0; else rc=$?; fi
        [[ $rc -eq 2 ]] && return 2
        sleep 0.1
    done
    return 1
}
listening() { # NS PORT [PID that must stay alive]
    [[ -z ${3:-} ]] || alive "$3" || return 2
    [[ -n $(ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null) ]]
}
listening_udp() { # NS PORT [PID that must stay alive]
    [[ -z ${3:-} ]] || alive "$3" || return 2
    [[ -n $(ip netns exec "$1" ss -Hlun "sport = :$2" 2>/dev/null) ]]
}
pings() { # reachable through whatever route cli has now
    ip netns exec "$cli" ping -n -c 1 -W 1 "$lan_host" >/dev/null 2>&1
}
# The device cli uses to reach the lan host (empty if none).
route_dev() {
    ip -n "$cli" route get "$lan_host" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1
}

# --------------------------------------------------------------------------
log "checking tools"
declare -A pkg_of=([iperf3]=iperf3 [openssl]=openssl [ping]=iputils-ping [python3]=python3
    [ss]=iproute2 [ip]=iproute2 [timeout]=coreutils)
want_openvpn && pkg_of[openvpn]=openvpn
want_link lossy && pkg_of[nft]=nftables
want_link wan && pkg_of[ethtool]=ethtool
missing=()
for cmd in "${!pkg_of[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_of[$cmd]}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} (apt-get update, then install)"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
fi
[[ -r $helper ]] || die "helper $helper is missing"

if want_twoway || want_link wan; then
    if [[ -n $bin_dir ]]; then
        bin_dir=$(cd "$bin_dir" && pwd) || die "--bin-dir: no such folder"
        log "using the twoway binaries in $bin_dir"
        bin_note="binaries from $bin_dir"
    elif [[ -n $build ]]; then
        log "building the release binaries (cargo build --release --bins)"
        if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
            # As the user who ran sudo, with their toolchain, so target/ stays theirs.
            sudo -u "$SUDO_USER" -H bash -lc "cd '$root' && cargo build --release --bins" >&2 ||
                die "cargo build --release --bins failed"
        else
            (cd "$root" && cargo build --release --bins) >&2 || die "cargo build --release --bins failed"
        fi
    fi
    if [[ -z $bin_note ]]; then
        bin_note="release binaries as found in target/release (--no-build)"
        [[ -n $build ]] && bin_note="release binaries built now"
    fi
    bin_dir=${bin_dir:-${CARGO_TARGET_DIR:-$root/target}/release}
    server=$bin_dir/twoway-server
    twoway=$bin_dir/twoway
    wan_bin=$bin_dir/twoway-wan
    if want_twoway; then
        [[ -x $server && -x $twoway ]] ||
            die "twoway binaries not found in $bin_dir (build them, or drop --no-build)"
    fi
    if want_link wan; then
        [[ -x $wan_bin ]] || die "the WAN bridge $wan_bin is missing (cargo build --release --bin twoway-wan)"
    fi
fi

[[ -d $out ]] || out_created=1
mkdir -p "$out" || die "cannot create the output folder $out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d /tmp/twoway-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$tmp"
mkdir -p "$tmp/logs/iperf3" "$tmp/logs/ping"
records=$tmp/records.tsv
meta=$tmp/meta.tsv
: >"$records"
: >"$meta"

record() { # REP SYSTEM KEY VALUE (on the current link)
    printf '%s\t%s\t%s\t%s\t%s\n' "$cur_link" "$1" "$2" "$3" "$4" >>"$records"
}
# A failed measurement: recorded, reported at the end, and the run goes on.
fail_step() { # REP SYSTEM MESSAGE
    failures=$((failures + 1))
    printf 'bench: %s link, rep %s, %s: FAILED: %s\n' "$cur_link" "$1" "$2" "$3" >&2
    record "$1" "$2" error "$3"
}
setmeta() {
    printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | tr '\t\n' '  ')" >>"$meta"
}

# --------------------------------------------------------------------------
log "creating the lab (scripts/lab.sh up $prefix)"
for ns in "$cli" "$srv" "$lan" "$wan"; do
    if ip netns list | awk '{print $1}' | grep -qxF -- "$ns"; then
        die "namespace $ns already exists (another bench running, or left over: scripts/lab.sh down $prefix)"
    fi
done
lab_up=1
"$here/lab.sh" up "$prefix" >"$tmp/logs/lab.log" 2>&1 || { cat "$tmp/logs/lab.log" >&2; die "scripts/lab.sh up $prefix failed"; }
pings && die "cli reaches $lan_host without a tunnel or route; the lab is wrong"

start_iperf_server() {
    ip netns exec "$lan" iperf3 -s -B "$lan_host" -p "$iperf_port" >>"$tmp/logs/iperf3-server.log" 2>&1 &
    iperf_pid=$!
    wait_until 10 listening "$lan" "$iperf_port" || die "the iperf3 server in $lan does not listen after 10 s"
}
restart_iperf_server() {
    stop_pid "$iperf_pid"
    iperf_pid=
    start_iperf_server
}
start_iperf_server

# --------------------------------------------------------------------------
# One-time preparation of each VPN: certificates and configuration.
tw_dir=$tmp/twoway
tw_cfg=$tw_dir/pki/bench.toml
if want_twoway; then
    log "twoway: PKI and configuration in $tw_dir"
    mkdir -p "$tw_dir"
    pki=$tw_dir/pki
    "$server" pki init --dir "$pki" --name vpn.bench --ip "$srv_addr" >"$tmp/logs/twoway-pki.log" 2>&1 ||
        { cat "$tmp/logs/twoway-pki.log" >&2; die "twoway-server pki init failed"; }
    sed -i \
        -e "s|^listen *=.*|listen = \"0.0.0.0:$tw_port\"|" \
        -e "s|^socket *=.*|socket = \"$tw_dir/server.sock\"|" \
        -e "s|^dir *=.*|dir = \"$tw_dir/state\"|" \
        -e "s|^network *=.*|network = \"198.18.77.0/24\"|" \
        -e "s|^pool *=.*|pool = \"198.18.77.128/25\"|" \
        -e "/^network6 *=/d" \
        "$pki/server.toml"
    for line in "listen = \"0.0.0.0:$tw_port\"" "socket = \"$tw_dir/server.sock\"" "dir = \"$tw_dir/state\"" \
        'network = "198.18.77.0/24"' 'pool = "198.18.77.128/25"'; do
        grep -qxF "$line" "$pki/server.toml" || die "could not set '$line' in twoway's server.toml"
    done
    printf '[defaults]\nroutes = ["%s"]\n' "$corp_net" >"$pki/policy.toml"
    "$server" check --config "$pki/server.toml" >>"$tmp/logs/twoway-pki.log" 2>&1 ||
        { cat "$tmp/logs/twoway-pki.log" >&2; die "twoway-server check rejects the bench configuration"; }
    "$server" pki issue --dir "$pki" bench >>"$tmp/logs/twoway-pki.log" 2>&1 ||
        { cat "$tmp/logs/twoway-pki.log" >&2; die "twoway-server pki issue failed"; }
    sed -i \
        -e "s|^socket *=.*|socket = \"$tw_dir/bench.sock\"|" \
        -e "s|^server *=.*|server = \"$srv_addr:$tw_port\"|" \
        "$pki/bench.toml"
    grep -qxF "socket = \"$tw_dir/bench.sock\"" "$pki/bench.toml" || die "could not set the socket in bench.toml"
    grep -qxF "server = \"$srv_addr:$tw_port\"" "$pki/bench.toml" || die "could not set the server in bench.toml"
    # twoway-tcp: the same client with transport = "tcp" (a top-level key,
    # so it goes before the first [table]).
    { echo 'transport = "tcp"'; cat "$pki/bench.toml"; } >"$pki/bench-tcp.toml"
    grep -q '^transport *=' "$pki/bench.toml" && die "bench.toml already sets transport; the bench expects the default (auto)"
    # twoway-tcp-cubic: twoway-tcp with tunnel.congestion = "cubic" on both
    # ends instead of "auto" (which runs BBR when TCP carries data because
    # UDP is not used), to weigh the two.
    sed '/^\[tunnel\]/a congestion = "cubic"' "$pki/server.toml" >"$pki/server-cubic.toml"
    if grep -q '^\[tunnel\]' "$pki/bench-tcp.toml"; then
        sed '/^\[tunnel\]/a congestion = "cubic"' "$pki/bench-tcp.toml" >"$pki/bench-tcp-cubic.toml"
    else
        { cat "$pki/bench-tcp.toml"; printf '\n[tunnel]\ncongestion = "cubic"\n'; } >"$pki/bench-tcp-cubic.toml"
    fi
    grep -q '^congestion = "cubic"' "$pki/server-cubic.toml" || die "could not set congestion in server-cubic.toml"
    cp "$pki/server.toml" "$pki/server-cubic.toml" "$pki/policy.toml" "$pki/bench.toml" "$pki/bench-tcp.toml" \
        "$pki/bench-tcp-cubic.toml" "$tmp/logs/" 2>/dev/null || true
fi

ovpn_dir=$tmp/openvpn
# Debian's defaults plus what mutual certificates over TCP need; no tcp-nodelay.
ovpn_common="dev tun
topology subnet
dh none
tls-version-min 1.3
data-ciphers AES-256-GCM
keepalive 10 120
verb 3"
if want_openvpn; then
    log "openvpn: PKI (openssl, ECDSA P-256) and configuration in $ovpn_dir"
    mkdir -p "$ovpn_dir"
    ovpn_pki() { # each step checked: errexit does not apply inside an || list
        local who eku
        cd "$ovpn_dir" || return 1
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key || return 1
        openssl req -x509 -new -key ca.key -sha256 -days 2 -subj /CN=bench-ca -out ca.pem \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign || return 1
        for who in server client; do
            eku=serverAuth
            [[ $who == client ]] && eku=clientAuth
            openssl ecparam -name prime256v1 -genkey -noout -out "$who.key" || return 1
            openssl req -new -key "$who.key" -subj "/CN=bench-$who" -out "$who.csr" || return 1
            printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n' "$eku" >"$who.ext"
            openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
                -extfile "$who.ext" -out "$who.pem" || return 1
            openssl verify -CAfile ca.pem "$who.pem" || return 1
        done
        chmod 600 ./*.key
    }
    (ovpn_pki) >"$tmp/logs/openvpn-pki.log" 2>&1 ||
        { cat "$tmp/logs/openvpn-pki.log" >&2; die "generating OpenVPN's certificates with openssl failed"; }
    # The same server and client over TCP and over UDP.
    for proto in tcp udp; do
        server_proto=tcp-server client_proto=tcp-client
        [[ $proto == udp ]] && server_proto=udp client_proto=udp
        cat >"$ovpn_dir/server-$proto.conf" <<EOT
proto $server_proto
local $srv_addr
port $ovpn_port
server 198.18.88.0 255.255.255.0
push "route ${corp_net%/*} 255.255.255.0"
ca $ovpn_dir/ca.pem
cert $ovpn_dir/server.pem
key $ovpn_dir/server.key
remote-cert-tls client
$ovpn_common
EOT
        cat >"$ovpn_dir/client-$proto.conf" <<EOT
client
proto $client_proto
remote $srv_addr $ovpn_port
nobind
connect-retry 1
ca $ovpn_dir/ca.pem
cert $ovpn_dir/client.pem
key $ovpn_dir/client.key
remote-cert-tls server
verify-x509-name bench-server name
$ovpn_common
EOT
        cp "$ovpn_dir/server-$proto.conf" "$ovpn_dir/client-$proto.conf" "$tmp/logs/"
    done
fi

# --------------------------------------------------------------------------
# Links. The lab starts clean: cli's eth0 and srv's cli are one veth pair.
loss_table=bench_loss
srv_reachable() { ip netns exec "$cli" ping -n -c 1 -W 1 "$srv_addr" >/dev/null 2>&1; }
loss_on() { # random loss on ingress of both public veth ends
    local ns dev
    for nd in "$cli eth0" "$srv cli"; do
        read -r ns dev <<<"$nd"
        ip netns exec "$ns" nft -f - <<EOT || return 1
table netdev $loss_table {
    chain ingress {
        type filter hook ingress device "$dev" priority 0; policy accept;
        numgen random mod 100 < $loss_pct counter drop
    }
}
EOT
    done
}
loss_off() {
    ip netns exec "$cli" nft list table netdev "$loss_table" >>"$tmp/logs/lossy-nft.txt" 2>&1
    ip netns exec "$srv" nft list table netdev "$loss_table" >>"$tmp/logs/lossy-nft.txt" 2>&1
    ip netns exec "$cli" nft delete table netdev "$loss_table" 2>/dev/null
    ip netns exec "$srv" nft delete table netdev "$loss_table" 2>/dev/null
    return 0
}
offloads_off() { # NS DEV
    ip netns exec "$1" ethtool -K "$2" gro off gso off tso off tx off rx off >>"$tmp/logs/wan.log" 2>&1 ||
        { echo "ethtool -K $2 in $1 failed" >>"$tmp/logs/wan.log"; return 1; }
}
# cli eth0 ── tocli PREFIX-wan tosrv ── cli srv, with the bridge between.
wan_on() {
    local nd ns dev bound
    ip netns add "$wan" || return 1
    wan_ns=1
    ip -n "$wan" link set lo up
    ip netns exec "$wan" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$cli" link del eth0 || return 1 # removes srv's end too
    ip -n "$cli" link add eth0 type veth peer name tocli netns "$wan" || return 1
    ip -n "$srv" link add cli type veth peer name tosrv netns "$wan" || return 1
    ip -n "$cli" addr add 198.18.1.1/24 dev eth0 || return 1
    ip -n "$srv" addr add "$srv_addr/24" dev cli || return 1
    for nd in "$cli eth0" "$wan tocli" "$wan tosrv" "$srv cli"; do
        read -r ns dev <<<"$nd"
        offloads_off "$ns" "$dev" || return 1
        ip -n "$ns" link set "$dev" up || return 1
    done
    # A time bound for the bridge: the whole pass with room to spare.
    bound=$((reps * ${#sys_list[@]} * (2 * secs + load_secs + 120) + 300))
    ip netns exec "$wan" "$wan_bin" --a tocli --b tosrv --delay-ms "$wan_delay_ms" --loss-pct "$wan_loss_pct" \
        --rate-mbit "$wan_rate_mbit" --duration "$bound" >"$tmp/logs/wan-bridge.json" 2>"$tmp/logs/wan-bridge.log" &
    wan_pid=$!
    wait_until 10 srv_reachable || { echo "no ping from cli to srv through the WAN bridge in 10 s" >>"$tmp/logs/wan.log"; return 1; }
    alive "$wan_pid"
}
wan_off() { # back to the direct pair
    stop_pid "$wan_pid"
    wan_pid=
    ip netns del "$wan" 2>/dev/null
    wan_ns=
    ip -n "$cli" link del eth0 2>/dev/null
    ip -n "$cli" link add eth0 type veth peer name cli netns "$srv" || return 1
    ip -n "$cli" addr add 198.18.1.1/24 dev eth0 || return 1
    ip -n "$srv" addr add "$srv_addr/24" dev cli || return 1
    ip -n "$cli" link set eth0 up && ip -n "$srv" link set cli up || return 1
    wait_until 10 srv_reachable
}
link_on() { # LINK
    case $1 in
        clean) wait_until 10 srv_reachable ;;
        lossy) loss_on ;;
        wan) wan_on ;;
    esac
}
link_off() { # LINK
    case $1 in
        clean) : ;;
        lossy) loss_off ;;
        wan) wan_off ;;
    esac
}

# --------------------------------------------------------------------------
# Per system: start (fresh for each repetition), the PIDs whose CPU time
# counts, stop. A start failure returns 1 with a message in $start_msg.
start_msg=
tw_session=
ovpn_session=
nope() { start_msg=$*; return 1; }
start_plain() {
    ip -n "$cli" route add "$corp_net" via "$srv_addr" >>"$tmp/logs/plain.log" 2>&1 ||
        { nope "ip route add $corp_net via $srv_addr in $cli failed"; return 1; }
    plain_route=1
    wait_until 5 pings || { nope "no ping reply from $lan_host over the plain route"; return 1; }
}
pids_plain() { :; }

start_twoway() { start_twoway_with "$1" "$tw_dir/pki/bench.toml"; }
start_twoway-tcp() { start_twoway_with "$1" "$tw_dir/pki/bench-tcp.toml"; }
start_twoway-tcp-cubic() { start_twoway_with "$1" "$tw_dir/pki/bench-tcp-cubic.toml" "$tw_dir/pki/server-cubic.toml"; }
start_twoway_with() { # REP CLIENT_CONFIG [SERVER_CONFIG]
    local rep=$1 rc=0 tag
    tw_cfg=$2
    tag=$cur_link-$(basename "$tw_cfg" .toml)-rep$rep
    ip netns exec "$srv" "$server" run --config "${3:-$tw_dir/pki/server.toml}" \
        >>"$tmp/logs/twoway-server-$tag.log" 2>&1 &
    tw_server_pid=$!
    wait_until 10 listening "$srv" "$tw_port" "$tw_server_pid" || rc=$?
    if [[ $rc -eq 2 ]]; then
        nope "twoway-server exited at start: $(tail -n 2 "$tmp/logs/twoway-server-$tag.log" | tr '\n' ' ')"
        return 1
    elif [[ $rc -ne 0 ]]; then
        nope "twoway-server does not listen on :$tw_port after 10 s"
        return 1
    fi
    tw_client_up=1
    timeout -k 2 40 ip netns exec "$cli" "$twoway" up --config "$tw_cfg" --detach \
        >"$tmp/logs/twoway-up-$tag.log" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        nope "twoway up --detach failed (exit $rc): $(tail -n 3 "$tmp/logs/twoway-up-$tag.log" | tr '\n' ' ')"
        return 1
    fi
    [[ -n $(ns_pids_named "$cli" twoway) ]] || { nope "no twoway client process in $cli after 'twoway up --detach'"; return 1; }
    [[ $(route_dev) != eth0 && -n $(route_dev) ]] ||
        { nope "cli has no route to $lan_host through the tunnel (route: '$(route_dev)')"; return 1; }
    wait_until 10 pings || { nope "tunnel up (dev $(route_dev)) but no ping reply from $lan_host through it in 10 s"; return 1; }
    [[ -n $tw_session ]] ||
        tw_session=$(grep -ho 'session up .*' "$tmp/logs/twoway-server-$tag.log" | head -n 1 | sed 's/\x1b\[[0-9;]*m//g')
}
pids_twoway() {
    echo "$tw_server_pid"
    ns_pids_named "$cli" twoway
}
pids_twoway-tcp() { pids_twoway; }
pids_twoway-tcp-cubic() { pids_twoway; }
# The transport the running twoway client reports (udp, tcp; "?" if unknown).
tw_transport() {
    timeout -k 2 10 ip netns exec "$cli" "$twoway" status --config "$tw_cfg" --json 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin).get("transport") or "?")' 2>/dev/null || echo "?"
}
tw_on_udp() { [[ $(tw_transport) == udp ]]; }

start_openvpn-tcp() { start_openvpn_with "$1" tcp; }
start_openvpn-udp() { start_openvpn_with "$1" udp; }
start_openvpn_with() { # REP tcp|udp
    local rep=$1 proto=$2 slog clog check=listening
    slog=$tmp/logs/openvpn-$proto-server-$cur_link-rep$rep.log
    clog=$tmp/logs/openvpn-$proto-client-$cur_link-rep$rep.log
    [[ $proto == udp ]] && check=listening_udp
    ip netns exec "$srv" openvpn --config "$ovpn_dir/server-$proto.conf" --log "$slog" >/dev/null 2>&1 &
    ovpn_server_pid=$!
    if ! wait_until 10 "$check" "$srv" "$ovpn_port" "$ovpn_server_pid"; then
        nope "the OpenVPN server does not listen on $proto :$ovpn_port (see ${slog##*/}): $(tail -n 2 "$slog" 2>/dev/null | tr '\n' ' ')"
        return 1
    fi
    ip netns exec "$cli" openvpn --config "$ovpn_dir/client-$proto.conf" --log "$clog" >/dev/null 2>&1 &
    ovpn_client_pid=$!
    if ! wait_until 30 ovpn_ready "$clog"; then
        nope "the OpenVPN client did not complete its start in 30 s (or exited): $(tail -n 2 "$clog" 2>/dev/null | tr '\n' ' ')"
        return 1
    fi
    [[ $(route_dev) != eth0 && -n $(route_dev) ]] ||
        { nope "cli has no route to $lan_host through OpenVPN (route: '$(route_dev)')"; return 1; }
    wait_until 10 pings || { nope "OpenVPN up but no ping reply from $lan_host in 10 s"; return 1; }
    [[ -n $ovpn_session ]] || ovpn_session=$(grep -ho 'Control Channel: .*\|Data Channel: .*' \
        "$clog" | head -n 2 | tr '\n' ';' | sed 's/;$//; s/;/; /')
}
ovpn_ready() { # CLIENT_LOG
    alive "$ovpn_client_pid" || return 2
    grep -qs 'Initialization Sequence Completed' "$1" || return 1 # (grep says 2 while there is no log yet)
}
pids_openvpn-tcp() {
    echo "$ovpn_server_pid"
    echo "$ovpn_client_pid"
}
pids_openvpn-udp() { pids_openvpn-tcp; }

stop_system() {
    case $1 in
        plain) stop_plain ;;
        twoway | twoway-tcp | twoway-tcp-cubic) stop_twoway ;;
        openvpn-tcp | openvpn-udp) stop_openvpn ;;
    esac
}

# --------------------------------------------------------------------------
# Measurements. Each records its values or a failure and returns 0/1.
# iperf_client FILE SECONDS ARGS...: one iperf3 client run in cli, JSON to FILE.
iperf_client() {
    local file=$1 t=$2
    shift 2
    timeout -k 5 $((t + 30)) ip netns exec "$cli" \
        iperf3 -c "$lan_host" -p "$iperf_port" --connect-timeout 5000 -J -t "$t" "$@" >"$file" 2>&1
}
# run_iperf NAME REP SYS ARGS...: a measured run of $secs seconds; leaves
# "MBIT BYTES RETRANS" in $iperf_result, or records the failure.
iperf_result=
run_iperf() {
    local name=$1 rep=$2 sys=$3 file rc=0 parsed
    shift 3
    file=$tmp/logs/iperf3/$cur_link-rep$rep-$sys-$name.json
    iperf_client "$file" "$secs" "$@" || rc=$?
    if ! parsed=$(python3 "$helper" iperf "$file" 2>&1) || [[ $rc -ne 0 ]]; then
        fail_step "$rep" "$sys" "iperf3 $name ($*): exit $rc: ${parsed:-no output}"
        restart_iperf_server # a client killed midway can leave the server busy
        return 1
    fi
    iperf_result=$parsed
}

# One iperf3 run, its throughput and retransmits recorded as NAME_mbps and
# NAME_retransmits; a failed run is recorded as failed by run_iperf.
measure_iperf() { # NAME REP SYS IPERF_ARGS...
    local name=$1 rep=$2 sys=$3 mbps bytes retrans
    run_iperf "$@" || return 0
    read -r mbps bytes retrans <<<"$iperf_result"
    record "$rep" "$sys" "${name}_mbps" "$mbps"
    record "$rep" "$sys" "${name}_retransmits" "$retrans"
}

measure_ping() { # KIND REP SYS
    local kind=$1 rep=$2 sys=$3 file parsed avg p99 sent received
    file=$tmp/logs/ping/$cur_link-rep$rep-$sys-$kind.txt
    timeout -k 2 $((ping_count / 10 + 10)) ip netns exec "$cli" \
        ping -n -c "$ping_count" -i 0.1 -W 1 "$lan_host" >"$file" 2>&1 || true
    if ! parsed=$(python3 "$helper" ping "$file" 2>&1); then
        fail_step "$rep" "$sys" "ping $kind: $parsed"
        return 1
    fi
    read -r avg p99 sent received <<<"$parsed"
    record "$rep" "$sys" "ping_${kind}_avg" "$avg"
    record "$rep" "$sys" "ping_${kind}_p99" "$p99"
    record "$rep" "$sys" "ping_${kind}_lost" "$((sent - received))"
    [[ $sent -eq $received || $cur_link != clean ]] ||
        echo "bench: rep $rep, $sys: ping $kind lost $((sent - received)) of $sent" >&2
}

cpu_ticks() { # PIDS...
    python3 "$helper" cpu "$@"
}

measure_system() { # SYS REP
    local sys=$1 rep=$2 pid pid_desc comm pids=()
    log "$cur_link link, rep $rep/$reps: $sys: starting"
    start_msg=
    if ! "start_$sys" "$rep"; then
        fail_step "$rep" "$sys" "start: ${start_msg:-failed}"
        stop_system "$sys"
        return 0
    fi
    record "$rep" "$sys" route_dev "$(route_dev)" # a string: kept in the raw data only
    mapfile -t pids < <("pids_$sys")
    pid_desc=
    for pid in "${pids[@]}"; do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || comm=gone
        pid_desc+="${pid_desc:+ }$pid=$comm"
    done
    log "$cur_link link, rep $rep/$reps: $sys: up (route dev $(route_dev)${pid_desc:+, VPN PIDs $pid_desc}); measuring"
    check_transport "$sys" "$rep" start

    if [[ $cur_link != clean ]]; then
        measure_lossy "$sys" "$rep"
    else
        measure_clean "$sys" "$rep"
    fi

    check_transport "$sys" "$rep" end
    for pid in "${pids[@]}"; do
        alive "$pid" || fail_step "$rep" "$sys" "VPN process $pid had ended before the measurements were over (VPN PIDs: $pid_desc)"
    done
    stop_system "$sys"
    log "$cur_link link, rep $rep/$reps: $sys: done"
}

# Records the transport twoway reports (transport_start / transport_end).
# The default system must be on UDP at the start (waits up to 10 s for it);
# at the end it may be on either (auto moves a clean, busy path to the TLS
# connection); twoway-tcp on TCP.
check_transport() { # SYS REP start|end
    local sys=$1 rep=$2 when=$3 t
    case $sys in
        twoway)
            [[ $when == start ]] && wait_until 10 tw_on_udp
            t=$(tw_transport)
            [[ $when == end || $t == udp ]] || fail_step "$rep" "$sys" "twoway (transport auto) reports transport '$t' at the $when, not udp"
            ;;
        twoway-tcp | twoway-tcp-cubic)
            t=$(tw_transport)
            [[ $t == tcp ]] || fail_step "$rep" "$sys" "twoway with transport = \"tcp\" reports transport '$t' at the $when"
            ;;
        *) return 0 ;;
    esac
    record "$rep" "$sys" "transport_$when" "$t"
    log "$cur_link link, rep $rep/$reps: $sys: transport at the $when: $t"
}

# The lossy and wan links: 1 stream down, then 1 stream up with pings beside
# it (its throughput is the upload figure).
measure_lossy() { # SYS REP
    local sys=$1 rep=$2
    measure_iperf down1 "$rep" "$sys" -R
    sleep 1
    loaded_ping "$sys" "$rep" up1
}

# Ping while a 1-stream upload runs (started 1 s ahead of the pings); the
# upload's throughput is recorded as KEY_mbps.
loaded_ping() { # SYS REP KEY
    local sys=$1 rep=$2 key=$3 load_file load_pid rc=0 parsed='' mbps bytes retrans
    load_file=$tmp/logs/iperf3/$cur_link-rep$rep-$sys-load.json
    iperf_client "$load_file" "$load_secs" &
    load_pid=$!
    sleep 1
    measure_ping load "$rep" "$sys" || true
    wait "$load_pid" || rc=$?
    if [[ $rc -eq 0 ]] && parsed=$(python3 "$helper" iperf "$load_file" 2>&1); then
        read -r mbps bytes retrans <<<"$parsed"
        record "$rep" "$sys" "${key}_mbps" "$mbps"
        record "$rep" "$sys" "${key}_retransmits" "$retrans"
    else
        fail_step "$rep" "$sys" "the iperf3 upload during the loaded ping failed (exit $rc): ${parsed:-}"
        restart_iperf_server
    fi
}

# The clean link: today's full set.
measure_clean() { # SYS REP (uses the caller's pids)
    local sys=$1 rep=$2 t0='' t1='' mbps bytes retrans cpu_args=() cpu_s per_gb
    measure_ping idle "$rep" "$sys" || true

    # 1 stream up; the CPU time of the VPN processes is read around it
    # (or around a separate rate-limited run with --cpu-rate).
    [[ ${#pids[@]} -gt 0 && -z $cpu_rate ]] && { t0=$(cpu_ticks "${pids[@]}") || t0=; }
    if run_iperf up1 "$rep" "$sys"; then
        read -r mbps bytes retrans <<<"$iperf_result"
        record "$rep" "$sys" up1_mbps "$mbps"
        record "$rep" "$sys" up1_bytes "$bytes"
        record "$rep" "$sys" up1_retransmits "$retrans"
        if [[ -n $t0 ]]; then
            if t1=$(cpu_ticks "${pids[@]}"); then
                cpu_args=("$t0" "$t1" "$bytes")
            else
                fail_step "$rep" "$sys" "CPU: a VPN process ended during the upload: $t1"
            fi
        fi
    fi
    if [[ ${#pids[@]} -gt 0 && -n $cpu_rate ]]; then
        sleep 1
        t0=$(cpu_ticks "${pids[@]}") || t0=
        if [[ -n $t0 ]] && run_iperf "cpu-$cpu_rate" "$rep" "$sys" -b "$cpu_rate"; then
            read -r mbps bytes retrans <<<"$iperf_result"
            if t1=$(cpu_ticks "${pids[@]}"); then
                cpu_args=("$t0" "$t1" "$bytes")
            else
                fail_step "$rep" "$sys" "CPU: a VPN process ended during the rate-limited upload: $t1"
            fi
        fi
    fi
    if [[ ${#cpu_args[@]} -eq 3 ]]; then
        read -r cpu_s per_gb < <(awk -v a="${cpu_args[0]}" -v b="${cpu_args[1]}" -v n="${cpu_args[2]}" -v hz="$clk_tck" \
            'BEGIN { s = (b - a) / hz; printf "%.3f %.3f\n", s, s / (n / 1e9) }')
        record "$rep" "$sys" cpu_s "$cpu_s"
        record "$rep" "$sys" cpu_bytes "${cpu_args[2]}"
        record "$rep" "$sys" cpu_s_per_gb "$per_gb"
    elif [[ ${#pids[@]} -gt 0 ]]; then
        fail_step "$rep" "$sys" "CPU s/GB: not measured (the upload or reading /proc failed)"
    fi

    sleep 1
    measure_iperf up4 "$rep" "$sys" -P 4
    sleep 1
    measure_iperf down1 "$rep" "$sys" -R
    sleep 1
    loaded_ping "$sys" "$rep" load
}

# --------------------------------------------------------------------------
clk_tck=$(getconf CLK_TCK)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
setmeta nproc "$(nproc)"
setmeta cpu_model "${cpu_model:-unknown}"
setmeta kernel "$(uname -r)"
setmeta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
setmeta hostname "$(hostname)"
setmeta systems "$systems"
setmeta links "$links"
setmeta wan_delay_ms "$wan_delay_ms"
setmeta lossy_link "$loss_pct % random loss each way (nftables numgen on ingress of both public veth ends, offloads as they are), sub-ms RTT"
setmeta wan_link "twoway-wan bridge: $wan_delay_ms ms each way, $wan_loss_pct % random loss each way, $wan_rate_mbit Mbit/s token bucket each way, queue 2 x BDP; offloads off on the four veth ends"
setmeta tcp_cc "$(ip netns exec "$cli" sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null || echo '?')"
setmeta reps "$reps"
setmeta secs "$secs"
setmeta ping_count "$ping_count"
setmeta load_secs "$load_secs"
setmeta iperf3 "$(iperf3 --version 2>/dev/null | head -n 1 | awk '{print $1" "$2}')"
if [[ -n $cpu_rate ]]; then
    setmeta cpu_basis "during a separate 1-stream upload limited to ${cpu_rate}bit/s"
else
    setmeta cpu_basis "during the unlimited 1-stream upload"
fi
rev=$(git -c safe.directory="$root" -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -c safe.directory="$root" -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]] && rev="$rev+uncommitted"
want_twoway && rev="$rev, $bin_note"
setmeta twoway_rev "$rev"
if want_openvpn; then
    setmeta openvpn_version "$(openvpn --version 2>/dev/null | head -n 1 | awk '{print $1" "$2}')"
    setmeta openvpn_options "proto tcp-server/tcp-client or udp, $(tr '\n' ',' <<<"$ovpn_common" | sed 's/,$//; s/,/, /g'), push route, remote-cert-tls, ECDSA P-256 certificates; no tcp-nodelay, no sndbuf/rcvbuf/txqueuelen/mssfix changes"
fi

printf '## Machine\n\n%s CPUs, %s, kernel %s, %s\n\n' "$(nproc)" "${cpu_model:-unknown}" "$(uname -r)" "$(date -u '+%Y-%m-%d %H:%M UTC')"
log "measuring ${sys_list[*]}: $reps repetition(s), $secs s per iperf3 run"
for link in "${link_list[@]}"; do
    cur_link=$link
    log "$link link: setting up"
    link_on "$link" || die "setting up the $link link failed (see the logs: wan.log, wan-bridge.log)"
    for ((rep = 1; rep <= reps; rep++)); do
        for sys in "${sys_list[@]}"; do
            measure_system "$sys" "$rep"
            sleep 1
        done
    done
    link_off "$link" || die "taking down the $link link failed"
    if [[ $link == wan ]]; then
        setmeta wan_bridge_stats "$(cat "$tmp/logs/wan-bridge.json" 2>/dev/null)"
        [[ -s $tmp/logs/wan-bridge.json ]] || fail_step 0 wan-bridge "the WAN bridge printed no counters: $(tail -n 2 "$tmp/logs/wan-bridge.log" | tr '\n' ' ')"
    fi
done

want_twoway && setmeta twoway_session "${tw_session:-never came up}"
want_openvpn && setmeta openvpn_session "${ovpn_session:-never came up}"
log "writing the results to $out"
python3 "$helper" report --records "$records" --meta "$meta" \
    --md "$out/bench-$stamp.md" --json "$out/bench-$stamp.json" ||
    die "building the report failed (records in $tmp/records.tsv)"
cp "$records" "$tmp/logs/records.tsv"
cp "$out/bench-$stamp.md" "$out/bench.md"
cp "$out/bench-$stamp.json" "$out/bench.json"
elapsed=$(($(date +%s) - started))
echo
echo "Written: $out/bench-$stamp.md, $out/bench-$stamp.json (copies: bench.md, bench.json), logs in $out/bench-$stamp-logs/"
echo "Took $((elapsed / 60)) min $((elapsed % 60)) s."
if [[ $failures -gt 0 ]]; then
    echo "bench: $failures measurement step(s) failed; see 'Failed steps' above" >&2
    exit 3
fi
