#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and fails if any
# of them finds a crash (a panic, a sanitizer report, a timeout or running
# out of memory on one input):
#
#   scripts/fuzz.sh [SECONDS]          (per target; default 60)
#   FUZZ_TARGETS="frame config" scripts/fuzz.sh 30
#
# Targets: frame (the frame decoder over a stream cut into arbitrary reads),
# message (each control message type, with a round trip), config (server.toml,
# policy.toml and a client config from arbitrary UTF-8, with validation),
# ip_header (IP source/destination and offload header validation), datagram
# (the UDP datagram decoder with fixed keys: sequences of sealed, replayed,
# altered and arbitrary datagrams against a model of the replay window),
# secure_stream (the TLS stream after a real handshake, as the server reads
# it: data, foreign bytes beneath TLS, close_notify and cuts), train (the
# collector of large TCP packets sent as tagged segments over UDP), path (the
# UDP path's challenges, echoes and rechecks from several addresses against a
# model of what may move the path).
#
# cargo-fuzz is installed from crates.io if missing. It needs nightly compiler
# flags (libFuzzer instrumentation, AddressSanitizer); with only a stable
# toolchain, RUSTC_BOOTSTRAP=1 lets stable accept them. The corpus grows in
# fuzz/corpus/TARGET (not committed; seeds are in fuzz/seeds/TARGET), crash
# inputs land in fuzz/artifacts/TARGET; replay one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...   (in fuzz/)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
secs=${1:-60}
[[ $secs =~ ^[0-9]+$ && $secs -ge 1 ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
read -r -a targets <<<"${FUZZ_TARGETS:-frame message config ip_header datagram secure_stream train path}"

if [[ -f $HOME/.cargo/env ]] && ! command -v cargo >/dev/null; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cd "$root/fuzz"
echo "==> building the fuzz targets (release, AddressSanitizer, debug assertions)"
cargo fuzz build --debug-assertions

logs=$(mktemp -d /tmp/twoway-fuzz.XXXXXX)
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "==> fuzzing $t for $secs s"
    rc=0
    # -timeout: one input taking longer than 10 s is a hang; -rss_limit_mb: a
    # parser that wants more memory than that for one input is a finding too.
    cargo fuzz run --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$logs/$t.log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    if [[ $rc -ne 0 ]]; then
        failed+=("$t")
        summary+=("$(printf '%-10s FAILED (exit %s) after %s runs; see fuzz/artifacts/%s' "$t" "$rc" "${execs:-?}" "$t")")
        echo "--- $t: last lines of the fuzzer output ---" >&2
        tail -n 40 "$logs/$t.log" >&2
    else
        summary+=("$(printf '%-10s ok  %12s runs in %s s, corpus %s inputs' "$t" "${execs:-?}" "$secs" "$corpus")")
    fi
done

echo
echo "==> summary"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
