#!/usr/bin/env bash
# Build the Debian package of twoway into target/debian/:
#
#   scripts/package.sh                       release build (LTO), then target/debian/twoway_VERSION_ARCH.deb
#   scripts/package.sh --profile dev         from debug binaries (quick; what CI checks the layout with)
#   scripts/package.sh --config-doc FILE     the config reference to turn into twoway-config(5)
#                                            (default docs/CONFIG.md; the build fails without it)
#   scripts/package.sh --lintian             also run lintian on the result; fail on any tag
#                                            that is not overridden (and explained) below
#
# Options:
#   --profile NAME     cargo profile for the binaries: release (default) or dev
#   --config-doc FILE  Markdown reference of every config key (pandoc makes the man page)
#   --out DIR          where the .deb goes (default target/debian)
#   --no-build         take the binaries already built for the profile
#   --lintian          run lintian on the package
#   -h, --help         this text
#
# Needs: cargo, dpkg-deb and dpkg-shlibdeps (dpkg-dev), pandoc, gzip, strip
# (binutils); lintian for --lintian. CARGO_TARGET_DIR is honoured.
#
# Why dpkg-deb and not cargo-deb: everything that goes into the package is
# generated here anyway (man pages and completions from the binaries' clap
# definitions, the config page from Markdown, example configs written by the
# built `pki init`/`pki issue`), and the maintainer scripts are hand-written;
# cargo-deb would add a tool that takes minutes to compile on CI's 2 cores and
# would still need this script around it. dpkg-deb and dpkg-shlibdeps are in
# every Debian's dpkg/dpkg-dev, and each line below says what the package holds.
#
# Why one package (`twoway`, client and server together): as Debian's openvpn,
# wireguard-tools and nebula, one package per VPN. The client and the server
# share the `twoway` system user, /etc/twoway, the config reference and the
# docs; split in two, each of those would need a third, common package or
# files that two packages own. The server costs a laptop a few MB of disk and
# nothing else: no unit is enabled or started on install (a server needs its
# PKI first, `twoway-server pki init`), so a laptop runs no server.
#
# What it holds (all root:root unless said):
#   /usr/bin/twoway, /usr/bin/twoway-server          stripped (debug info removed)
#   /lib/systemd/system/twoway-server.service         systemd/ with /usr/bin paths
#   /lib/systemd/system/twoway@.service               (Debian 12 keeps units under /lib)
#   /usr/share/man/man1/twoway*.1.gz                  clap_mangen, from the clap definitions
#   /usr/share/man/man5/twoway-config.5.gz            pandoc, from --config-doc
#   /usr/share/bash-completion/completions/twoway{,-server}
#   /usr/share/zsh/vendor-completions/_twoway{,-server}
#   /usr/share/fish/vendor_completions.d/twoway{,-server}.fish
#   /usr/share/doc/twoway/                            README, OPERATIONS, NETWORKING, PROTOCOL, CONFIG,
#                                                     changelog.gz (CHANGELOG.md), copyright
#   /usr/share/doc/twoway/examples/                   server.toml, policy.toml, client.toml
#                                                     (written by the built `pki init` / `pki issue`)
#   /etc/twoway/                                      not shipped: postinst makes it root:twoway 0750
#   /usr/share/lintian/overrides/twoway               the lintian tags explained below
#
# /etc/twoway holds no conffiles: everything in it (server.toml, policy.toml,
# keys, certificates, client configs) is written by `twoway-server pki ...`
# or copied there by the admin, and `pki init` refuses a folder that already
# has a server.toml. dpkg never removes files it did not ship, so `dpkg -r`
# and `dpkg -P` both keep the keys and configs (purge removes /etc/twoway only
# when it is empty, and /var/lib/twoway, the server's leases). The `twoway`
# user stays after a purge, as Debian's policy advises for system users:
# files on the machine may still belong to it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

profile=release
config_doc=$repo/docs/CONFIG.md
out=""
build=1
lintian=0

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}
die() {
    echo "package.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case $1 in
    --profile)
        [[ $# -ge 2 ]] || die "--profile needs a name (release or dev)"
        profile=$2
        shift
        ;;
    --config-doc)
        [[ $# -ge 2 ]] || die "--config-doc needs a file"
        config_doc=$2
        shift
        ;;
    --out)
        [[ $# -ge 2 ]] || die "--out needs a folder"
        out=$2
        shift
        ;;
    --no-build) build=0 ;;
    --lintian) lintian=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "package.sh: unknown option '$1'" >&2
        usage >&2
        exit 2
        ;;
    esac
    shift
done

case $profile in
release) profile_dir=release ;;
dev | debug)
    profile=dev
    profile_dir=debug
    ;;
*) die "--profile must be release or dev, not '$profile'" ;;
esac

# Everything the build needs, checked before the long compile.
[[ -f $config_doc ]] || die "config reference '$config_doc' not found: it becomes the man page twoway-config(5). Pass --config-doc FILE (a Markdown reference of every config key)"
for tool in cargo dpkg-deb dpkg-shlibdeps pandoc gzip strip; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install dpkg-dev pandoc binutils gzip; cargo from rustup)"
done
if [[ $lintian -eq 1 ]]; then
    command -v lintian >/dev/null || die "'lintian' not found (apt-get install lintian)"
fi

cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
bins=$target/$profile_dir
out=${out:-$repo/target/debian}
mkdir -p -- "$out"
out=$(cd -- "$out" && pwd)

if [[ $build -eq 1 ]]; then
    echo "package.sh: cargo build --profile $profile (twoway, twoway-server, twoway-xtask)"
    cargo build --locked --profile "$profile" -p twoway-client -p twoway-server -p twoway-xtask --bins
fi
for b in twoway twoway-server twoway-xtask; do
    [[ -x $bins/$b ]] || die "$bins/$b not found; build it (cargo build --profile $profile --bins) or drop --no-build"
done

# The version the binary itself reports (`twoway 0.1.0`), which is the
# workspace's.
version=$("$bins/twoway" --version | awk '{ print $2 }')
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "cannot read the version from '$bins/twoway --version'"
# The Debian revision: this script is the packaging; bump it when only the packaging changes.
debversion=$version-1
arch=$(dpkg --print-architecture)
pkg=twoway
deb=$out/${pkg}_${debversion}_${arch}.deb

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
root=$work/root
doc=$root/usr/share/doc/$pkg

# --- binaries -----------------------------------------------------------------
install -d -m 0755 "$root/usr/bin"
for b in twoway twoway-server; do
    install -m 0755 "$bins/$b" "$root/usr/bin/$b"
    # What dh_strip does: symbols and debug info out, .comment and .note out.
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/$b"
done

# --- systemd units: the files in systemd/, with the packaged paths -------------
install -d -m 0755 "$root/lib/systemd/system"
for u in twoway-server.service twoway@.service; do
    sed -e 's#/usr/local/bin/#/usr/bin/#g' \
        -e 's#^Documentation=file:///usr/local/share/doc/twoway/OPERATIONS.md#Documentation=man:__MAN__ file:///usr/share/doc/twoway/OPERATIONS.md#' \
        -e 's#Install with scripts/install.sh, which also creates#The Debian package (or scripts/install.sh) creates#' \
        -e 's#Install with scripts/install.sh, which creates#The Debian package (or scripts/install.sh) creates#' \
        -e 's#created by scripts/install.sh#created on install#' \
        "systemd/$u" >"$work/$u"
    case $u in
    twoway-server.service) sed -i 's#__MAN__#twoway-server(1)#' "$work/$u" ;;
    *) sed -i 's#__MAN__#twoway(1)#' "$work/$u" ;;
    esac
    if grep -q '/usr/local' "$work/$u"; then
        die "systemd/$u still names /usr/local after the path rewrite: $(grep -n /usr/local "$work/$u")"
    fi
    install -m 0644 "$work/$u" "$root/lib/systemd/system/$u"
done

# --- man pages ----------------------------------------------------------------
"$bins/twoway-xtask" man "$work/man1"
install -d -m 0755 "$root/usr/share/man/man1" "$root/usr/share/man/man5"
for page in "$work"/man1/*.1; do
    gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
    chmod 0644 "$root/usr/share/man/man1/$(basename "$page").gz"
done

# twoway-config(5): a NAME line for whatis/apropos, the reference as the
# DESCRIPTION, then FILES and SEE ALSO. When the reference has one top-level heading (its title), that
# line is dropped and every other heading moves up a level, so its sections
# become the page's sections (code blocks are left as they are).
h1=$(awk '/^```/ { f = !f; next } !f && /^# / { n++ } END { print n + 0 }' "$config_doc")
# A man page is read in a terminal: the reference's tables (key, type,
# default, meaning) become definition lists, KEY (TYPE; default: X) and the
# meaning below it, which groff wraps at any width (long cells in a table
# column cannot be broken: lintian's groff-message warnings).
table_to_list() {
    perl -ne '
        BEGIN { $fence = 0; @hdr = () }
        if (/^```/) { $fence = !$fence; print; next }
        if (!$fence && /^\|/) {
            chomp(my $l = $_);
            next if $l =~ /^[-|\s:]+$/;
            $l =~ s/^\|\s*//; $l =~ s/\s*\|\s*$//;
            my @c = split /\s*(?<!\\)\|\s*/, $l, -1;
            if (!@hdr) { @hdr = @c; next }
            my $term = shift @c; my $meaning = pop @c;
            my @mid = map { ($hdr[$_ + 1] eq "type" ? "" : "$hdr[$_ + 1]: ") . $c[$_] } 0 .. $#c;
            print "$term (", join("; ", @mid), ")\n:   $meaning\n\n";
            next;
        }
        @hdr = ();
        print;'
}
{
    printf '# NAME\n\ntwoway-config - configuration files of twoway(1) and twoway-server(1)\n\n'
    printf '# DESCRIPTION\n\n'
    awk -v shift="$([[ $h1 -eq 1 ]] && echo 1 || echo 0)" '
        /^```/ { fence = !fence; print; next }
        !fence && shift && /^# / && !title { title = 1; next }
        !fence && shift && /^##+ / { sub(/^#/, "") }
        { print }' "$config_doc" | table_to_list
    printf '\n# FILES\n\n'
    printf '/etc/twoway/server.toml, /etc/twoway/policy.toml\n: the server and its policy (written by `twoway-server pki init`)\n\n'
    printf '/etc/twoway/NAME.toml\n: a client configuration (written by `twoway-server pki issue NAME`); `twoway up NAME` reads it\n\n'
    printf '/usr/share/doc/twoway/examples/\n: an example of each\n\n'
    printf '# SEE ALSO\n\ntwoway(1), twoway-server(1), /usr/share/doc/twoway/OPERATIONS.md\n'
} >"$work/config.md"
# Tables: --columns=20 makes pandoc give every table relative column widths
# (cells wrap) instead of their natural width, and pandoc sizes them for 70
# characters, which with the page's indent and tbl's gaps overflows an
# 80-column terminal (groff: "table wider than line width"); the perl line
# scales each table's widths to fit 66 characters gaps included.
pandoc --standalone --from markdown --to man --columns=20 --wrap=none \
    --metadata title=TWOWAY-CONFIG --metadata section=5 \
    --metadata header="twoway manual" --metadata footer="twoway $version" \
    --output "$work/twoway-config.pandoc.5" "$work/config.md"
perl -pe 'if (/^(lw\([\d.]+n\)\s*)+\.$/) {
        my @w = /lw\(([\d.]+)n\)/g; my $sum = 0; $sum += $_ for @w;
        my $f = (66 - 3 * (@w - 1)) / $sum; $f = 1 if $f > 1;
        s/lw\(([\d.]+)n\)/sprintf("lw(%.1fn)", $1 * $f)/ge }' \
    "$work/twoway-config.pandoc.5" >"$work/twoway-config.5"
gzip -9n <"$work/twoway-config.5" >"$root/usr/share/man/man5/twoway-config.5.gz"
chmod 0644 "$root/usr/share/man/man5/twoway-config.5.gz"

# --- shell completions (clap_complete, from the same definitions) ------------
"$bins/twoway-xtask" completions "$work/completions"
install -D -m 0644 "$work/completions/bash/twoway" "$root/usr/share/bash-completion/completions/twoway"
install -D -m 0644 "$work/completions/bash/twoway-server" "$root/usr/share/bash-completion/completions/twoway-server"
install -D -m 0644 "$work/completions/zsh/_twoway" "$root/usr/share/zsh/vendor-completions/_twoway"
install -D -m 0644 "$work/completions/zsh/_twoway-server" "$root/usr/share/zsh/vendor-completions/_twoway-server"
install -D -m 0644 "$work/completions/fish/twoway.fish" "$root/usr/share/fish/vendor_completions.d/twoway.fish"
install -D -m 0644 "$work/completions/fish/twoway-server.fish" "$root/usr/share/fish/vendor_completions.d/twoway-server.fish"

# --- docs and examples ----------------------------------------------------------
install -d -m 0755 "$doc" "$doc/examples"
install -m 0644 README.md docs/OPERATIONS.md docs/NETWORKING.md docs/PROTOCOL.md "$doc/"
install -m 0644 "$config_doc" "$doc/CONFIG.md"
gzip -9n <CHANGELOG.md >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
# The examples are what the built binaries write, so they cannot drift.
"$root/usr/bin/twoway-server" pki init --dir "$work/pki" --name vpn.example.com --ip 203.0.113.10 >/dev/null
"$root/usr/bin/twoway-server" pki issue --dir "$work/pki" alice --out "$work/alice" >/dev/null
install -m 0644 "$work/pki/server.toml" "$work/pki/policy.toml" "$doc/examples/"
install -m 0644 "$work/alice/alice.toml" "$doc/examples/client.toml"

# A Debian changelog for the packaging itself (changelog.gz is the project's),
# dated by the last commit (or SOURCE_DATE_EPOCH) so rebuilds are the same.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
date_rfc=$(date -u -R -d "@$epoch")
year=$(date -u +%Y -d "@$epoch")
maintainer="twoway maintainers <twoway@example.invalid>"
cat >"$work/changelog.Debian" <<EOF
$pkg ($debversion) unstable; urgency=medium

  * Built from the twoway source tree by scripts/package.sh; see
    changelog.gz for the changes of twoway itself.

 -- $maintainer  $date_rfc
EOF
gzip -9n <"$work/changelog.Debian" >"$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: twoway
Comment: The binaries link statically the Rust crates listed in the source
 tree's Cargo.lock; `cargo deny check licenses` (deny.toml) admits only
 Apache-2.0, MIT, ISC, BSD-3-Clause and Unicode-3.0 for them.

Files: *
Copyright: $year the twoway authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this file except in compliance with the License.
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
 License for the specific language governing permissions and limitations
 under the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
chmod 0644 "$doc/copyright"

# --- lintian overrides: each tag that stays, and why ----------------------------
install -d -m 0755 "$root/usr/share/lintian/overrides"
cat >"$root/usr/share/lintian/overrides/$pkg" <<'EOF'
# The package is built from the project's tree for admins, not uploaded to
# Debian: there is no ITP bug for its first changelog entry to close.
twoway: initial-upload-closes-no-bugs
EOF
chmod 0644 "$root/usr/share/lintian/overrides/$pkg"

# --- control area ---------------------------------------------------------------
install -d -m 0755 "$root/DEBIAN"
# Shared-library dependencies of the binaries (libc only: aws-lc is built in).
mkdir -p "$work/shlibs/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$root/usr/bin/twoway" "$root/usr/bin/twoway-server" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[[ -n $shlibs ]] || die "dpkg-shlibdeps found no library dependencies for the binaries"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)

# procps: /bin/kill, which twoway-server.service's ExecReload runs (procps is
# Priority: important, but a minbase system or a container may lack it).
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $shlibs, adduser, iproute2, procps
Section: net
Priority: optional
Homepage: https://example.invalid/twoway
Description: remote-access VPN with mutual TLS 1.3 (client and server)
 twoway connects laptops, servers and scripts to a twoway server. Both sides
 prove who they are with X.509 certificates over TLS 1.3; IP packets then
 flow between a TUN device on each side, over a UDP channel keyed from the
 TLS session, or over the TLS connection where UDP does not get through.
 .
 This package holds the client (twoway, the unit twoway@NAME.service) and the
 server (twoway-server with its certificate authority, the unit
 twoway-server.service). No unit is enabled on install.
EOF

cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# twoway postinst: the `twoway` system user and group (the units run as it),
# /etc/twoway root:twoway 0750, systemd told about the units.
set -e

if [ "$1" = configure ]; then
    # Idempotent: adduser leaves an existing system user and group alone.
    adduser --system --group --quiet --home /var/lib/twoway --no-create-home \
        --shell /usr/sbin/nologin --gecos "twoway VPN" twoway
    # /etc/twoway is not in the package (lintian wants shipped folders
    # 0755, and dpkg would take an empty one away with the package): on the
    # first install it is made, or set, root:twoway 0750 (the units read
    # their keys through the group; files inside keep their modes). Upgrades
    # leave it as the admin has it, and so does a dpkg-statoverride.
    if [ -z "$2" ] && ! dpkg-statoverride --list /etc/twoway >/dev/null 2>&1; then
        mkdir -p /etc/twoway
        chown root:twoway /etc/twoway
        chmod 0750 /etc/twoway
    fi
fi

if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    # An upgrade restarts what was running; nothing is started on a first install.
    if [ "$1" = configure ] && [ -n "$2" ]; then
        deb-systemd-invoke try-restart twoway-server.service 'twoway@*.service' >/dev/null || true
    fi
fi

exit 0
EOF

cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# twoway prerm: on removal, stop the server and every client instance (each
# client says Bye and removes its routes) while their binaries still exist.
set -e

if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop twoway-server.service 'twoway@*.service' >/dev/null 2>&1 || true
fi

exit 0
EOF

cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# twoway postrm. remove: systemd forgets the units. purge: the server's
# leases (/var/lib/twoway) and the enable links go; /etc/twoway stays unless
# empty (keys and configs are the admin's, never shipped by the package),
# and so does the `twoway` user (files may still belong to it).
set -e

if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi

if [ "$1" = purge ]; then
    rm -rf /var/lib/twoway
    for dir in /etc/systemd/system/*.wants; do
        [ -d "$dir" ] || continue
        rm -f "$dir/twoway-server.service" "$dir"/twoway@*.service
    done
    if [ -d /etc/twoway ]; then
        rmdir /etc/twoway 2>/dev/null ||
            echo "twoway: /etc/twoway is not empty (keys, certificates, configs): kept" >&2
    fi
fi

exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

rm -f -- "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "package.sh: built $deb"
for b in twoway twoway-server; do
    printf '  %-14s %s bytes (stripped; %s bytes as built)\n' "$b" \
        "$(stat -c %s "$root/usr/bin/$b")" "$(stat -c %s "$bins/$b")"
done
printf '  %-14s %s bytes\n' "package" "$(stat -c %s "$deb")"

if [[ $lintian -eq 1 ]]; then
    echo "package.sh: lintian $deb"
    # --fail-on warning: errors and warnings fail; info tags are printed.
    lintian --info --fail-on error,warning "$deb"
fi
