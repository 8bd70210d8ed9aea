#!/usr/bin/env bash
# A guided tour of twoway on one machine, in network namespaces:
#
#   sudo scripts/demo.sh
#
# It builds the release binaries, creates a small lab (scripts/lab.sh: a
# laptop, a VPN server and a corporate host), makes a PKI, starts the server,
# connects the laptop, pings the corporate host through the tunnel, shows the
# status on both sides, and takes everything down again. Nothing outside the
# namespaces and a temporary folder is touched; every address is in
# 198.18.0.0/15, which is reserved for tests like this one.
#
# Environment: TWOWAY_LAB_PREFIX (default tw) names the lab namespaces;
# TWOWAY_BIN_DIR=DIR skips the build and uses DIR/twoway-server and DIR/twoway.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
prefix=${TWOWAY_LAB_PREFIX:-tw}
cli=$prefix-cli
srv=$prefix-srv
corp_net=198.19.0.0/24
lan_host=198.19.0.2

total=13
n=0
step() {
    n=$((n + 1))
    printf '\n\033[1m==> [%d/%d] %s\033[0m\n' "$n" "$total" "$1"
    shift
    local line
    for line in "$@"; do printf '    %s\n' "$line"; done
}
# Show a command, then run it. (No pipe: `twoway up --detach` leaves a
# background process that would hold a pipe open.)
show() {
    printf '    $ %s\n' "$*"
    "$@"
}
die() {
    printf '\n\033[1;31mdemo failed: %s\033[0m\n' "$*" >&2
    exit 1
}

if [[ $(id -u) -ne 0 ]]; then
    echo "The demo creates network namespaces and TUN devices, so it needs root:" >&2
    echo "  sudo $0" >&2
    exit 1
fi

tmp=
server_pid=
lab_up=
client_up=
cleanup() {
    local rc=$?
    trap - EXIT
    set +e
    if [[ $rc -ne 0 && -n $tmp && -s $tmp/server.log ]]; then
        echo "--- last lines of the server log ($tmp/server.log) ---" >&2
        tail -n 40 "$tmp/server.log" >&2
    fi
    if [[ -n $client_up ]]; then
        ip netns exec "$cli" "$twoway" down --config "$tmp/pki/laptop.toml" >/dev/null 2>&1
    fi
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    # lab.sh down also stops anything still running inside the namespaces.
    [[ -n $lab_up ]] && "$here/lab.sh" down "$prefix" >/dev/null
    [[ -n $tmp ]] && rm -rf "$tmp"
    if [[ $rc -eq 0 ]]; then
        printf '\n\033[1mDemo finished; everything it created has been removed.\033[0m\n'
    else
        echo "(cleaned up: namespaces, processes and the temporary folder are gone)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------
step "Building the release binaries" \
    "twoway-server (the VPN server and its PKI tool) and twoway (the client)."
if [[ -n ${TWOWAY_BIN_DIR:-} ]]; then
    bin_dir=$(cd "$TWOWAY_BIN_DIR" && pwd)
    echo "    TWOWAY_BIN_DIR is set: using the binaries in $bin_dir"
elif [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
    # Build as the user who ran sudo, with their toolchain, so target/ stays theirs.
    show sudo -u "$SUDO_USER" -H bash -lc "cd '$root' && cargo build --release --bins" ||
        die "cargo build failed"
    bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
else
    (cd "$root" && show cargo build --release --bins) || die "cargo build failed"
    bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
fi
server=$bin_dir/twoway-server
twoway=$bin_dir/twoway
[[ -x $server && -x $twoway ]] || die "binaries not found in $bin_dir"

# --------------------------------------------------------------------------
step "Creating the lab (scripts/lab.sh up $prefix)" \
    "$cli: a laptop at 198.18.1.1, with no route to the corporate network" \
    "$srv: the VPN server at 198.18.1.2, forwarding to the corporate network" \
    "$prefix-lan: a corporate host at $lan_host"
"$here/lab.sh" up "$prefix"
lab_up=1
show ip netns exec "$cli" ping -c 1 -W 1 "$lan_host" &&
    die "the laptop reaches $lan_host without a tunnel; the lab is wrong"
echo "    (as expected: the laptop cannot reach the corporate network yet)"

# --------------------------------------------------------------------------
tmp=$(mktemp -d /tmp/twoway-demo.XXXXXX)
pki=$tmp/pki
step "Creating a PKI in $pki" \
    "A new CA, a server certificate for vpn.demo (and 198.18.1.2), an empty" \
    "revocation list, and an example server.toml and policy.toml."
show "$server" pki init --dir "$pki" --name vpn.demo --ip 198.18.1.2 || die "pki init failed"
show ls "$pki"

# --------------------------------------------------------------------------
step "Adjusting server.toml for the demo" \
    "Control socket and state in the temporary folder; tunnel addresses" \
    "198.18.77.0/24, laptops get addresses from the pool 198.18.77.128/25."
sed -i \
    -e "s|^socket *=.*|socket = \"$tmp/server.sock\"|" \
    -e "s|^dir *=.*|dir = \"$tmp/state\"|" \
    -e "s|^network *=.*|network = \"198.18.77.0/24\"|" \
    -e "s|^pool *=.*|pool = \"198.18.77.128/25\"|" \
    -e "/^network6 *=/d" \
    "$pki/server.toml"
for want in "socket = \"$tmp/server.sock\"" "dir = \"$tmp/state\"" \
    'network = "198.18.77.0/24"' 'pool = "198.18.77.128/25"'; do
    grep -qxF "$want" "$pki/server.toml" || die "could not set '$want' in server.toml"
done
show grep -E '^(listen|network|pool|socket|dir) *=' "$pki/server.toml"

# --------------------------------------------------------------------------
step "Writing the policy" \
    "Every client gets a route to the corporate network $corp_net."
cat >"$pki/policy.toml" <<EOT
# Who gets what. Reloadable with: twoway-server reload
[defaults]
routes = ["$corp_net"]
EOT
sed 's/^/      /' "$pki/policy.toml"
show "$server" check --config "$pki/server.toml" || die "the server configuration does not check out"

# --------------------------------------------------------------------------
step "Issuing a certificate for the client 'laptop'" \
    "pki issue also writes laptop.toml, a client config ready for 'twoway up'."
show "$server" pki issue --dir "$pki" laptop || die "pki issue failed"
sed -i \
    -e "s|^socket *=.*|socket = \"$tmp/laptop.sock\"|" \
    -e "s|^server *=.*|server = \"198.18.1.2:4433\"|" \
    "$pki/laptop.toml"
grep -qxF "socket = \"$tmp/laptop.sock\"" "$pki/laptop.toml" || die "could not set the socket in laptop.toml"
sed 's/^/      /' "$pki/laptop.toml"

# --------------------------------------------------------------------------
step "Starting the server in $srv" \
    "Its log goes to $tmp/server.log."
echo "    \$ ip netns exec $srv $server run --config $pki/server.toml &"
ip netns exec "$srv" "$server" run --config "$pki/server.toml" >"$tmp/server.log" 2>&1 &
server_pid=$!
listening=
for _ in $(seq 100); do
    kill -0 "$server_pid" 2>/dev/null || die "the server exited"
    if [[ -n $(ip netns exec "$srv" ss -Hltn 'sport = :4433') ]]; then
        listening=1
        break
    fi
    sleep 0.1
done
[[ -n $listening ]] || die "the server does not listen on port 4433 after 10 s"
echo "    the server (pid $server_pid) listens on 198.18.1.2:4433"

# --------------------------------------------------------------------------
step "Connecting the laptop (twoway up --detach)" \
    "Mutual TLS 1.3: the laptop checks the server's certificate, the server" \
    "checks the laptop's and assigns it an address and routes."
show ip netns exec "$cli" "$twoway" up --config "$pki/laptop.toml" --detach || die "twoway up failed"
client_up=1

# --------------------------------------------------------------------------
step "The laptop's addresses and routes now" \
    "A TUN device with an address from 198.18.77.128/25 and a route to $corp_net."
show ip -n "$cli" -br addr
show ip -n "$cli" route

# --------------------------------------------------------------------------
step "Pinging the corporate host $lan_host through the tunnel"
show ip netns exec "$cli" ping -c 3 -W 2 "$lan_host" || die "no reply through the tunnel"

# --------------------------------------------------------------------------
step "Status on both sides" \
    "twoway status --json on the laptop, twoway-server status on the server."
show ip netns exec "$cli" "$twoway" status --json --config "$pki/laptop.toml" || die "twoway status failed"
show "$server" status --config "$pki/server.toml" || die "twoway-server status failed"

# --------------------------------------------------------------------------
step "Disconnecting (twoway down)" \
    "The TUN device and the route go away with it."
show ip netns exec "$cli" "$twoway" down --config "$pki/laptop.toml" || die "twoway down failed"
client_up=
show ip -n "$cli" route

# --------------------------------------------------------------------------
step "Stopping the server and removing the lab"
kill -TERM "$server_pid"
server_status=0
wait "$server_pid" || server_status=$?
server_pid=
[[ $server_status -eq 0 ]] || die "the server exited with status $server_status on SIGTERM"
echo "    the server stopped cleanly"
lab_up=
"$here/lab.sh" down "$prefix"
