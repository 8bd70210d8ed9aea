#!/usr/bin/env bash
# Install twoway on a Debian machine (server or client), as root:
#
#   sudo scripts/install.sh                 build release binaries, install everything
#   sudo scripts/install.sh --no-build      install binaries already in target/release
#   sudo scripts/install.sh --uninstall     remove binaries, units and docs again
#
# What it installs (running it again changes nothing that is already right):
#   /usr/local/bin/twoway-server, /usr/local/bin/twoway            (0755)
#   /etc/systemd/system/twoway-server.service, twoway@.service     (0644)
#   /usr/local/share/doc/twoway/{OPERATIONS,CONFIG,STATUS,NETWORKING}.md (0644)
#   the system user and group `twoway` (the units run as it)
#   /etc/twoway, root:twoway 0750: created if missing; files in it are never
#   written or replaced. If the folder exists, only its owner and mode are set.
#
# --uninstall stops and disables the units (when systemd runs), then removes
# the binaries, units and docs. It never removes /etc/twoway, /var/lib/twoway
# or the `twoway` user (files there belong to it).
#
# Options:
#   --no-build        do not run `cargo build --release --bins`
#   --bin-dir DIR     take the binaries from DIR (implies --no-build;
#                     default target/release; also TWOWAY_BIN_DIR=DIR)
#   --prefix DIR      install under DIR instead of / (for packaging and tests):
#                     no systemctl, and the user is created in DIR/etc/passwd
#                     only if DIR/etc/passwd exists; root is not required
#   --uninstall       remove instead of install
#   -h, --help        this text
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

build=1
uninstall=0
prefix=""
bin_dir=${TWOWAY_BIN_DIR:-}
[[ -n $bin_dir ]] && build=0

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}
die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case $1 in
    --no-build) build=0 ;;
    --bin-dir)
        [[ $# -ge 2 ]] || die "--bin-dir needs a folder"
        bin_dir=$2
        build=0
        shift
        ;;
    --prefix)
        [[ $# -ge 2 ]] || die "--prefix needs a folder"
        prefix=$2
        shift
        ;;
    --uninstall) uninstall=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "install.sh: unknown option '$1'" >&2
        usage >&2
        exit 2
        ;;
    esac
    shift
done

if [[ -n $prefix ]]; then
    mkdir -p -- "$prefix"
    prefix=$(cd -- "$prefix" && pwd)
    [[ $prefix == / ]] && prefix=""
fi
if [[ -z $prefix && $(id -u) -ne 0 ]]; then
    die "run as root (sudo $0 $*), or use --prefix DIR"
fi

user=twoway
bindir=$prefix/usr/local/bin
unitdir=$prefix/etc/systemd/system
docdir=$prefix/usr/local/share/doc/twoway
# OPERATIONS.md links to the others by relative path.
docs=(OPERATIONS.md CONFIG.md STATUS.md NETWORKING.md)
confdir=$prefix/etc/twoway
binaries=(twoway-server twoway)
units=(twoway-server.service twoway@.service)

# systemctl only for a real install on a machine where systemd runs.
systemd_running() {
    [[ -z $prefix && -d /run/systemd/system ]]
}

# The group id of `twoway` in the target's /etc/group, empty if none.
group_id() {
    [[ -r $prefix/etc/group ]] || return 0
    awk -F: -v g="$user" '$1 == g { print $3; exit }' "$prefix/etc/group"
}

do_uninstall() {
    local u unit
    if systemd_running; then
        # Stop the server and every client instance before their units go.
        mapfile -t running < <(systemctl list-units --all --plain --no-legend \
            'twoway-server.service' 'twoway@*.service' | awk '{ print $1 }')
        for unit in "${running[@]}"; do
            [[ -n $unit ]] || continue
            echo "stopping $unit"
            systemctl disable --now "$unit" || true
        done
        systemctl disable twoway-server.service 2>/dev/null || true
    fi
    # `enable` links of units that were not loaded (e.g. a stopped twoway@NAME).
    if [[ -d $unitdir ]]; then
        find "$unitdir" -mindepth 2 -maxdepth 2 -type l -path '*.wants/*' \
            \( -name twoway-server.service -o -name 'twoway@*.service' \) \
            -print -delete | sed 's/^/removed link /'
    fi
    for b in "${binaries[@]}"; do
        if [[ -e $bindir/$b ]]; then
            rm -f -- "$bindir/$b"
            echo "removed $bindir/$b"
        fi
    done
    for u in "${units[@]}"; do
        if [[ -e $unitdir/$u ]]; then
            rm -f -- "$unitdir/$u"
            echo "removed $unitdir/$u"
        fi
    done
    for d in "${docs[@]}"; do
        if [[ -e $docdir/$d ]]; then
            rm -f -- "$docdir/$d"
            echo "removed $docdir/$d"
        fi
    done
    rmdir -- "$docdir" 2>/dev/null || true
    if systemd_running; then
        systemctl daemon-reload
    fi
    echo
    echo "Kept: $confdir (keys, certificates, configuration), $prefix/var/lib/twoway (leases)"
    echo "and the '$user' user. Remove them by hand if you no longer need them."
}

ensure_user() {
    if [[ ! -e $prefix/etc/passwd ]]; then
        echo "note: $prefix/etc/passwd does not exist; not creating the '$user' user"
        return
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "note: not root; not creating the '$user' user and group"
        return
    fi
    local -a at=()
    [[ -n $prefix ]] && at=(--prefix "$prefix")
    if [[ -z $(group_id) ]]; then
        groupadd "${at[@]}" --system "$user"
        echo "created group $user"
    fi
    if ! awk -F: -v u="$user" '$1 == u { found = 1 } END { exit !found }' "$prefix/etc/passwd"; then
        useradd "${at[@]}" --system --gid "$user" --no-create-home \
            --home-dir /var/lib/twoway --shell /usr/sbin/nologin \
            --comment "twoway VPN" "$user"
        echo "created user $user"
    fi
}

# /etc/twoway: root:twoway 0750. Never touches the files inside.
ensure_confdir() {
    local gid
    gid=$(group_id)
    if [[ ! -d $confdir ]]; then
        install -d -m 0750 -- "$confdir"
        echo "created $confdir"
    fi
    chmod 0750 -- "$confdir"
    if [[ -n $gid ]]; then
        if [[ $(id -u) -eq 0 ]]; then
            chown "0:$gid" -- "$confdir"
        else
            echo "note: not root; set the owner of $confdir to root:$user yourself"
        fi
    fi
}

# Keys the services read must be readable by the group; say so, do not change them.
check_keys() {
    local gid key mode group
    gid=$(group_id)
    [[ -n $gid ]] || return 0
    shopt -s nullglob
    for key in "$confdir"/*.key; do
        [[ $(basename "$key") == ca.key ]] && continue
        mode=$(stat -c %a -- "$key")
        owner=$(stat -c %U -- "$key")
        if [[ $owner != "$user" || $(((8#$mode >> 6) & 4)) -eq 0 ]]; then
            echo "warning: $key is not owned and readable by user $user (owner $owner, mode $mode);" \
                "the service cannot read it. If it is a key a unit uses:"
            echo "    chown $user $key && chmod 0400 $key"
        fi
    done
    shopt -u nullglob
}

do_install() {
    local src b u
    if [[ $build -eq 1 ]]; then
        command -v cargo >/dev/null || die "cargo not found; install Rust, or use --no-build / --bin-dir DIR"
        echo "building release binaries (cargo build --release --bins)"
        (cd "$repo" && cargo build --release --bins)
    fi
    src=${bin_dir:-$repo/target/release}
    for b in "${binaries[@]}"; do
        [[ -x $src/$b ]] || die "$src/$b not found; build it (cargo build --release --bins) or pass --bin-dir DIR"
    done
    for u in "${units[@]}"; do
        [[ -r $repo/systemd/$u ]] || die "$repo/systemd/$u not found"
    done

    ensure_user
    for b in "${binaries[@]}"; do
        install -D -m 0755 -- "$src/$b" "$bindir/$b"
        echo "installed $bindir/$b"
    done
    for u in "${units[@]}"; do
        install -D -m 0644 -- "$repo/systemd/$u" "$unitdir/$u"
        echo "installed $unitdir/$u"
    done
    for d in "${docs[@]}"; do
        if [[ -r $repo/docs/$d ]]; then
            install -D -m 0644 -- "$repo/docs/$d" "$docdir/$d"
            echo "installed $docdir/$d"
        fi
    done
    ensure_confdir
    check_keys

    if systemd_running; then
        systemctl daemon-reload
        echo "systemd: daemon-reload done"
    elif [[ -z $prefix ]]; then
        echo "note: systemd is not running here; units installed but not loaded"
    fi
    command -v ip >/dev/null || echo "warning: 'ip' (iproute2) not found; the client needs it: apt-get install iproute2"

    local init="twoway-server pki init --dir /etc/twoway --name vpn.example.com --ip 203.0.113.10"
    [[ -e $confdir/ca.pem ]] && init="(done: $confdir/ca.pem exists)"
    cat <<EOF

Next steps (docs: $docdir/OPERATIONS.md):

On the server:
  1. $init
  2. chown $user /etc/twoway/server.key && chmod 0400 /etc/twoway/server.key
  3. review /etc/twoway/server.toml and /etc/twoway/policy.toml (routes behind the server)
  4. twoway-server check --config /etc/twoway/server.toml
  5. systemctl enable --now twoway-server
  6. enable forwarding and NAT or routes for the tunnel network (see OPERATIONS.md)
  7. twoway-server pki issue --dir /etc/twoway alice --out /root/alice
     and copy alice.toml, alice.pem, alice.key and ca.pem to the laptop's /etc/twoway

On a client (this script installs the client too):
  chown $user /etc/twoway/alice.key && chmod 0400 /etc/twoway/alice.key
  systemctl enable --now twoway@alice
EOF
}

if [[ $uninstall -eq 1 ]]; then
    do_uninstall
else
    do_install
fi
