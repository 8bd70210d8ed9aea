#!/usr/bin/env bash
# cargo deny's advisory check, offline: against a copy of the RustSec
# advisory database (https://github.com/rustsec/advisory-db, CC0-1.0) kept
# in deny/advisory-db.tar.gz, because the machines this project builds on
# reach the package registries but not GitHub. Where GitHub is reachable,
# plain `cargo deny check advisories` fetches the current database instead.
#
#   deny/advisories.sh
#
# Snapshot: advisory-db commit bf5c0d245a92671908518d7e765914d437954ed6
# (2026-08-21). Refresh it from a clone of advisory-db:
#   git -C advisory-db archive --format=tar HEAD crates rust LICENSE.txt | gzip -9n > deny/advisory-db.tar.gz
# and update the commit above.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
work=$(mktemp -d /tmp/twoway-advisories.XXXXXX)
trap 'rm -rf "$work"' EXIT

# cargo-deny opens the database as a git repository, in a folder named after
# its URL's hash (advisory-db-3157b0e258782691 for the default URL).
db=$work/dbs/advisory-db-3157b0e258782691
mkdir -p "$db"
tar -xzf "$here/advisory-db.tar.gz" -C "$db"
git -C "$db" init -q
git -C "$db" -c user.name=twoway -c user.email=twoway@localhost add -A
git -C "$db" -c user.name=twoway -c user.email=twoway@localhost commit -qm "advisory-db snapshot bf5c0d2"

# The project's deny.toml, with the database's location added.
sed "s|^\[advisories\]|[advisories]\ndb-path = \"$work/dbs\"|" "$root/deny.toml" >"$work/deny.toml"
cd "$root"
cargo deny --offline --config "$work/deny.toml" check advisories
