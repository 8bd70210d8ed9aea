#!/usr/bin/env bash
# The systemd units under a real systemd: a Debian bookworm container booted
# with systemd-nspawn, the project installed into it from its .deb, then the
# server and a client on loopback inside it, driven with systemctl:
#
#   tests/systemd/run.sh                 build the .deb (scripts/package.sh --profile dev), then test
#   tests/systemd/run.sh --deb FILE      test this package
#
# Options:
#   --deb FILE     the package to install (default: built into a temporary folder)
#   --cache DIR    where the debootstrapped bookworm is kept between runs
#                  (default /var/cache/twoway-nspawn/bookworm; made on first use)
#   --mirror URL   Debian mirror for debootstrap (default: the deb.debian.org
#                  entry of apt's sources, else http://deb.debian.org/debian)
#   -h, --help     this text
#
# What is checked, in the booted container (PID 1 is its systemd):
#   - `systemctl start twoway-server` returns (Type=notify: READY=1 was sent)
#     and the server runs as user twoway with CAP_NET_ADMIN only;
#   - `systemctl reload twoway-server` works and the server stays active;
#   - `twoway-server status --json` lists no session;
#   - `systemctl start twoway@alice` returns (READY=1: the tunnel is up),
#     `twoway status --json alice` says up, the server lists alice;
#   - `systemctl stop twoway@alice twoway-server`: both stop with status 0;
#   - the journal of both units holds no warning, neither systemd's
#     (`journalctl -p warning`) nor twoway's (its WARN/ERROR lines, which come
#     through stdout at priority info): a default setup (`pki init` and
#     `pki issue --inline`, as the README says) logs none.
# On failure the container's journal for both units (and its boot log) is printed.
#
# Needs root, debootstrap and systemd-nspawn (Debian: debootstrap,
# systemd-container), nsenter (util-linux), /dev/net/tun, and the Debian
# mirror for the first run (about a minute; later runs reuse --cache). The
# container has its own network namespace with only lo (--private-network),
# is not registered with machined (--register=no: the host's PID 1 need not be
# systemd), and everything it leaves (the overlay, the folder) is removed on
# exit, whatever happened.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

deb=""
cache=/var/cache/twoway-nspawn/bookworm
mirror=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --deb) deb=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

t0=$SECONDS
say() { printf '[systemd %3ds] %s\n' "$((SECONDS - t0))" "$*"; }
die() { printf '[systemd %3ds] FAILED: %s\n' "$((SECONDS - t0))" "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, mounts, systemd-nspawn)"
for tool in debootstrap systemd-nspawn nsenter mount umount jq; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install debootstrap systemd-container util-linux jq)"
done
[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing (modprobe tun)"

work=$(mktemp -d /tmp/twoway-nspawn.XXXXXX)
root=$work/root
machine=twoway-test-$$ # nspawn's lock and propagation folders are named after it
# nspawn makes /run/systemd/nspawn (locks, propagate) when the host's systemd
# has not: removed at the end if it was not there before (and is empty).
nspawn_run_made=0
[[ -d /run/systemd/nspawn ]] || nspawn_run_made=1
nspawn_pid=""
overlay=0
booted=0

cleanup() {
    local rc=$?
    set +e
    if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # SIGTERM asks nspawn to power the container off; then wait for it.
        kill -TERM "$nspawn_pid" 2>/dev/null
        for _ in $(seq 1 300); do
            kill -0 "$nspawn_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$nspawn_pid" 2>/dev/null; then
            echo "run.sh: the container did not power off in 30 s; killing it" >&2
            kill -KILL "$nspawn_pid" 2>/dev/null
        fi
        wait "$nspawn_pid" 2>/dev/null
    fi
    if [[ $overlay -eq 1 ]]; then
        umount "$root" || umount -l "$root"
    fi
    rm -rf --one-file-system "$work"
    if [[ $nspawn_run_made -eq 1 ]]; then
        rmdir /run/systemd/nspawn/locks /run/systemd/nspawn/propagate /run/systemd/nspawn 2>/dev/null
    fi
    if [[ $rc -ne 0 ]]; then
        echo "run.sh: FAILED (exit $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. the package ---------------------------------------------------------
if [[ -z $deb ]]; then
    say "building the package (scripts/package.sh --profile dev)"
    mkdir -p "$work/deb"
    bash "$repo/scripts/package.sh" --profile dev --out "$work/deb" >"$work/package.log" 2>&1 ||
        { cat "$work/package.log" >&2; die "scripts/package.sh failed"; }
    deb=$(find "$work/deb" -name '*.deb' | head -1)
fi
[[ -f $deb ]] || die "no package at $deb"
say "package: $deb"

# --- 2. bookworm, debootstrapped once ----------------------------------------
if [[ -z $mirror ]]; then
    mirror=$(grep -rhoE 'https?://deb\.debian\.org/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
        head -1 | tr -d ' ' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi
mkdir -p "$(dirname "$cache")"
# minbase (dpkg, apt, bash, coreutils...) and what booting and the package's
# Depends need: systemd as PID 1, dbus for systemctl, and adduser, iproute2,
# procps (/bin/kill for ExecReload) that dpkg -i will not fetch.
include=systemd,systemd-sysv,dbus,iproute2,adduser,procps
exec 9>"$cache.lock"
flock 9 # one debootstrap at a time; the others wait and reuse it
if [[ ! -x $cache/lib/systemd/systemd || $(cat "$cache/.twoway-complete" 2>/dev/null) != "$include" ]]; then
    say "debootstrap bookworm into $cache from $mirror (once; later runs reuse it)"
    rm -rf --one-file-system "$cache.tmp"
    debootstrap --variant=minbase --include="$include" \
        bookworm "$cache.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    rm -rf "$cache.tmp/var/cache/apt/archives/"*.deb
    echo "$include" >"$cache.tmp/.twoway-complete"
    rm -rf --one-file-system "$cache"
    mv "$cache.tmp" "$cache"
    say "debootstrap done"
else
    say "reusing $cache"
fi
exec 9>&-

# --- 3. a fresh copy: an overlay on the cached tree ----------------------------
mkdir -p "$root" "$work/upper" "$work/ovl"
if mount -t overlay overlay -o "lowerdir=$cache,upperdir=$work/upper,workdir=$work/ovl" "$root" 2>/dev/null; then
    overlay=1
else
    say "overlayfs unavailable; copying the tree"
    cp -a "$cache/." "$root/"
fi
# The container has no network of its own to reach: nothing in it resolves.
echo twoway-test >"$root/etc/hostname"
rm -f "$root/etc/machine-id"
: >"$root/etc/machine-id" # systemd makes one at boot (transient)

# Commands in the container before boot (no init; its own namespaces).
ct_run() {
    systemd-nspawn -q -D "$root" --machine="$machine" --register=no --keep-unit --private-network --console=pipe "$@" </dev/null
}

cp "$deb" "$root/root/twoway.deb"
say "dpkg -i the package in the container"
ct_run dpkg -i /root/twoway.deb >"$work/dpkg.log" 2>&1 ||
    { cat "$work/dpkg.log" >&2; die "dpkg -i failed"; }
rm -f "$root/root/twoway.deb"

say "a default setup: pki init, pki issue alice --inline (README, Deploy on real machines)"
ct_run bash -euxc '
    twoway-server pki init --dir /etc/twoway --name vpn.test --ip 127.0.0.1
    chown twoway /etc/twoway/server.key
    chmod 0400 /etc/twoway/server.key
    twoway-server check --config /etc/twoway/server.toml
    twoway-server pki issue --dir /etc/twoway alice --out /tmp/alice --inline
    install -o twoway -g root -m 0600 /tmp/alice/alice.toml /etc/twoway/alice.toml
    rm -rf /tmp/alice
' >"$work/setup.log" 2>&1 || { cat "$work/setup.log" >&2; die "setup failed"; }

# --- 4. boot ---------------------------------------------------------------------
# /dev/net/tun as a Debian machine has it (0666, from systemd's static nodes):
# the units run as user twoway, with CAP_NET_ADMIN but no CAP_DAC_OVERRIDE, so
# a 0600 root node (as on some hosts) would refuse them. A node of our own,
# not the host's, gets that mode.
mknod -m 0666 "$work/tun" c 10 200
say "booting the container (systemd-nspawn -b --private-network)"
systemd-nspawn -q -D "$root" --machine="$machine" -b --register=no --keep-unit --private-network \
    --bind="$work/tun:/dev/net/tun" --capability=CAP_NET_ADMIN \
    --console=read-only >"$work/boot.log" 2>&1 </dev/null &
nspawn_pid=$!

# The container's PID 1 is a child of systemd-nspawn.
leader=""
for _ in $(seq 1 200); do
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/boot.log" >&2; die "systemd-nspawn exited"; }
    for c in $(cat "/proc/$nspawn_pid/task/"*/children 2>/dev/null); do
        if [[ $(cat "/proc/$c/comm" 2>/dev/null) == systemd ]]; then leader=$c; fi
    done
    [[ -n $leader ]] && break
    sleep 0.1
done
[[ -n $leader ]] || { cat "$work/boot.log" >&2; die "no systemd in the container after 20 s"; }
booted=1

# Run a command in the booted container: all of its namespaces, its root.
ns_opts=(--mount --uts --ipc --net --pid --root --wd)
if [[ $(readlink "/proc/$leader/ns/cgroup") != $(readlink /proc/self/ns/cgroup) ]]; then
    ns_opts+=(--cgroup)
fi
ct() {
    nsenter --target "$leader" "${ns_opts[@]}" -- \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@" </dev/null
}

journal() {
    echo "----- journal of the units -----" >&2
    ct journalctl --no-pager -o short-precise -u twoway-server -u twoway@alice >&2 || true
    echo "----- the rest of the journal (warnings) -----" >&2
    ct journalctl --no-pager -o short-precise -p warning >&2 || true
    echo "----- console -----" >&2
    tail -50 "$work/boot.log" >&2 || true
}
fail() {
    [[ $booted -eq 1 ]] && journal
    die "$*"
}

state=""
for _ in $(seq 1 120); do
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 0.5
done
case $state in
running) say "container up: system running" ;;
degraded)
    say "container up: system degraded (units that failed, not ours):"
    ct systemctl --no-legend --failed || true
    ;;
*) fail "the container's systemd did not finish booting in 60 s (state: ${state:-none})" ;;
esac

# --- 5. the checks -----------------------------------------------------------------
main_pid() { ct systemctl show -P MainPID "$1"; }
# /proc/PID/status of a process in the container, seen from the host (same kernel;
# the PID is the container's, so read it inside).
proc_field() { ct sh -c "sed -n 's/^$2:[[:space:]]*//p' /proc/$1/status"; }

say "systemctl start twoway-server (Type=notify: returns after READY=1)"
ct timeout 60 systemctl start twoway-server || fail "systemctl start twoway-server failed"
[[ $(ct systemctl is-active twoway-server) == active ]] || fail "twoway-server is not active"
pid=$(main_pid twoway-server)
uid=$(proc_field "$pid" Uid | awk '{print $2}')
twoway_uid=$(ct id -u twoway)
[[ $uid == "$twoway_uid" ]] || fail "the server runs as uid $uid, not twoway ($twoway_uid)"
capeff=$(proc_field "$pid" CapEff)
[[ $capeff == 0000000000001000 ]] || fail "the server's effective capabilities are $capeff, not CAP_NET_ADMIN only"
say "  active, pid $pid, uid $uid (twoway), CapEff $capeff (CAP_NET_ADMIN only)"
ct systemctl show -P StatusText twoway-server | sed 's/^/  status text: /'
sock=$(ct stat -c '%a %U:%G' /run/twoway/server.sock)
[[ $sock == "660 twoway:twoway" ]] || fail "control socket /run/twoway/server.sock is $sock, not 660 twoway:twoway"

say "systemctl reload twoway-server"
ct timeout 30 systemctl reload twoway-server || fail "systemctl reload twoway-server failed"
[[ $(ct systemctl is-active twoway-server) == active ]] || fail "twoway-server is not active after reload"
[[ $(main_pid twoway-server) == "$pid" ]] || fail "the server restarted on reload"

say "twoway-server status --json: no session"
st=$(ct twoway-server status --json) || fail "twoway-server status --json failed: $st"
jq -e '.sessions | length == 0' >/dev/null <<<"$st" || fail "sessions before any client: $st"

say "systemctl start twoway@alice (Type=notify: returns when the tunnel is up)"
ct timeout 70 systemctl start twoway@alice || fail "systemctl start twoway@alice failed"
[[ $(ct systemctl is-active twoway@alice) == active ]] || fail "twoway@alice is not active"
cpid=$(main_pid twoway@alice)
cuid=$(proc_field "$cpid" Uid | awk '{print $2}')
ccap=$(proc_field "$cpid" CapEff)
[[ $cuid == "$twoway_uid" && $ccap == 0000000000001000 ]] ||
    fail "the client runs as uid $cuid with CapEff $ccap, not as twoway with CAP_NET_ADMIN only"
cst=$(ct twoway status --json alice) || fail "twoway status --json alice failed: $cst"
jq -e '.state == "up"' >/dev/null <<<"$cst" || fail "client status: $cst"
say "  alice is up: $(jq -c '{state, address}' <<<"$cst")"
sock=$(ct stat -c '%a %U:%G' /run/twoway/alice.sock)
[[ $sock == "660 twoway:twoway" ]] || fail "control socket /run/twoway/alice.sock is $sock, not 660 twoway:twoway"
st=$(ct twoway-server status --json) || fail "twoway-server status --json failed: $st"
jq -e '[.sessions[] | .identity] == ["alice"]' >/dev/null <<<"$st" || fail "server sessions: $st"
say "  the server lists alice: $(jq -c '[.sessions[] | {identity, address}]' <<<"$st")"

say "systemctl stop twoway@alice twoway-server"
ct timeout 40 systemctl stop twoway@alice twoway-server || fail "systemctl stop failed"
for u in twoway@alice twoway-server; do
    a=$(ct systemctl is-active "$u" || true)
    r=$(ct systemctl show -P Result "$u")
    s=$(ct systemctl show -P ExecMainStatus "$u")
    [[ $a == inactive && $r == success && $s == 0 ]] ||
        fail "$u after stop: $a, result $r, exit status $s"
done
say "  both inactive, result success, exit status 0"

# Two ways to see a warning: systemd's own (priority warning or worse, e.g. a
# failed ExecReload), and twoway's log lines, which reach the journal through
# stdout at priority info, so their level is in the text (" WARN ", " ERROR ").
say "no warning in the units' journal (journalctl -p warning, and twoway's WARN/ERROR lines)"
warnings=$(ct journalctl --no-pager -q -p warning -u twoway-server -u twoway@alice)
warnings+=$(ct journalctl --no-pager -q -u twoway-server -u twoway@alice | grep -E ' (WARN|ERROR) ' || true)
if [[ -n $warnings ]]; then
    printf '%s\n' "$warnings" >&2
    fail "the units logged warnings (above) with a default setup"
fi
ct journalctl --no-pager -q -o cat -u twoway-server -u twoway@alice | sed 's/^/  | /'

say "PASSED (the container is powered off and removed next)"
