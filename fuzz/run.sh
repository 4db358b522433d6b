#!/usr/bin/env bash
# Run every fuzz target (or the ones named) for a time budget each, one after the other.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, all targets)
#   FUZZ_ENGINE=libfuzzer|stable fuzz/run.sh ...      (default: libfuzzer when available)
#
# libfuzzer: needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); coverage-
# guided, corpus kept in fuzz/corpus/<target>. stable: the blind mutation runner in
# src/bin/stable_fuzz.rs, runs with the stable toolchain alone. Either way a crashing input is
# saved under fuzz/artifacts/<target>/ and the script exits 1; replay one with
#   cargo run --release --bin stable-fuzz -- TARGET --replay FILE
# Scratch files of the targets go to a private directory on /dev/shm (tmpfs) when it exists.
set -u
cd "$(dirname "$0")"
secs=${1:-60}
shift || true

engine=${FUZZ_ENGINE:-auto}
if [ "$engine" = auto ]; then
    if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
        engine=libfuzzer
    else
        engine=stable
    fi
fi

cargo build --release --quiet --bin stable-fuzz || exit 2
runner=target/release/stable-fuzz
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <("$runner" --list); fi

base=/dev/shm; [ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$base/verfs-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if [ "$engine" = libfuzzer ]; then
    cargo +nightly fuzz build -O || exit 2
fi

failed=0
summary=()
for t in "${targets[@]}"; do
    echo "=== $t ($engine, ${secs}s)"
    log="$scratch/$t.log"
    if [ "$engine" = libfuzzer ]; then
        mkdir -p "corpus/$t" "artifacts/$t"
        "$runner" "$t" --write-seeds "corpus/$t"
        TMPDIR="$scratch" cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
            -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="artifacts/$t/" >"$log" 2>&1
        rc=$?
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        line="$t: ${execs:-?} execs in ${secs}s, ${cov:-cov: ?}, rc $rc"
    else
        TMPDIR="$scratch" "$runner" "$t" "$secs" "artifacts/$t" >"$log" 2>&1
        rc=$?
        line=$(tail -1 "$log")
    fi
    if [ $rc -ne 0 ]; then
        failed=1
        grep -E 'panicked|CRASH|ERROR|SUMMARY' "$log" | head -5
        line="$line  <-- CRASH, see fuzz/artifacts/$t/"
    fi
    echo "$line"
    summary+=("$line")
done
echo
echo "=== summary ($engine, ${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
