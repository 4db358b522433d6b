#!/usr/bin/env bash
# verfs benchmark: ingest throughput, peak memory, stored/logical ratio, incremental put, get with
# sha256 check, and metadata commits/s with 1, 2, 4, 8 concurrent processes. Medians of 3 runs.
#
#   bench/ingest.sh [--size-mb 1024] [--runs 3] [--commits 300]
#
# The dataset comes from ../shared/bench/gen-dataset and is cached in target/bench-data.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=1024 RUNS=3 COMMITS=300
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) SIZE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --commits) COMMITS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
GEN=${GEN_DATASET:-../shared/bench/gen-dataset}
[ -x "$GEN" ] || { echo "bench: $GEN not found (set GEN_DATASET)" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { apt-get install -y -q time >/dev/null; }

cargo build --release -q -p verfs-cli --bin verfs
cargo build --release -q -p verfs-engine --example commit_bench
V=$PWD/target/release/verfs
CB=$PWD/target/release/examples/commit_bench
DATA=$PWD/target/bench-data/$SIZE
if [ ! -f "$DATA/base/.dataset-root" ]; then
  rm -rf "$DATA"; mkdir -p "$DATA"
  "$GEN" gen "$DATA/base" --size-mb "$SIZE" >/dev/null
  "$GEN" gen "$DATA/mut" --size-mb "$SIZE" >/dev/null
  "$GEN" mutate "$DATA/mut" --round 1 >/dev/null
fi
LOGICAL=$(du -sb --apparent-size "$DATA/base" | cut -f1)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/verfs-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() { # timed OUTFILE CMD... -> "secs maxrss_kib"
  local out=$1; shift
  /usr/bin/time -f '%e %M' -o "$out" "$@" >/dev/null
  cat "$out"
}

echo "verfs bench: dataset $SIZE MiB ($LOGICAL bytes logical), $RUNS runs, $(nproc) cores"
put_s=() put_rss=() ratio=() inc_s=() get_s=() cp_s=()
for r in $(seq "$RUNS"); do
  S=$WORK/store$r
  "$V" init "$S" 2>/dev/null; sync
  read -r s m < <(timed "$WORK/t" "$V" -s "$S" put "$DATA/base" /data)
  put_s+=("$s"); put_rss+=("$m")
  stored=$(du -sb "$S/packs" | cut -f1)
  ratio+=("$(awk -v a="$stored" -v b="$LOGICAL" 'BEGIN{printf "%.4f", a/b}')")
  read -r s m < <(timed "$WORK/t" "$V" -s "$S" put "$DATA/mut/." /data)
  inc_s+=("$s")
  rm -rf "$WORK/out"
  read -r s m < <(timed "$WORK/t" "$V" -s "$S" get /data "$WORK/out")
  get_s+=("$s")
  # An incremental put adds and replaces but never deletes, so check every source file's sha256.
  [ -f "$DATA/mut.sum" ] || (cd "$DATA/mut" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$DATA/mut.sum"
  (cd "$WORK/out" && sha256sum -c --quiet "$DATA/mut.sum") || { echo "bench: get returned different content!" >&2; exit 1; }
  rm -rf "$WORK/out" "$WORK/cp"
  read -r s m < <(timed "$WORK/t" sh -c "cp -a '$DATA/base' '$WORK/cp' && sync")
  cp_s+=("$s")
  rm -rf "$WORK/cp" "$S"
done
mb=$(awk -v b="$LOGICAL" 'BEGIN{print b/1e6}')
ps=$(printf '%s\n' "${put_s[@]}" | median)
cs=$(printf '%s\n' "${cp_s[@]}" | median)
printf '%-34s %10s %10s\n' "measure (median of $RUNS)" "value" "unit"
printf '%-34s %10.1f %10s\n' "put ingest" "$(awk -v m="$mb" -v s="$ps" 'BEGIN{print m/s}')" "MB/s"
printf '%-34s %10.1f %10s\n' "put peak RSS" "$(printf '%s\n' "${put_rss[@]}" | median | awk '{print $1/1024}')" "MiB"
printf '%-34s %10.3f %10s\n' "stored / logical bytes" "$(printf '%s\n' "${ratio[@]}" | median)" "ratio"
printf '%-34s %10.1f %10s\n' "incremental put (after mutate)" "$(awk -v m="$mb" -v s="$(printf '%s\n' "${inc_s[@]}" | median)" 'BEGIN{print m/s}')" "MB/s"
printf '%-34s %10.1f %10s\n' "get + sha256 verified" "$(awk -v m="$mb" -v s="$(printf '%s\n' "${get_s[@]}" | median)" 'BEGIN{print m/s}')" "MB/s"
printf '%-34s %10.1f %10s\n' "cp -a + sync (host fs)" "$(awk -v m="$mb" -v s="$cs" 'BEGIN{print m/s}')" "MB/s"
printf '%-34s %10.2f %10s\n' "put vs cp -a+sync" "$(awk -v a="$cs" -v b="$ps" 'BEGIN{print a/b}')" "x"

for P in 1 2 4 8; do
  rates=()
  for r in $(seq "$RUNS"); do
    S=$WORK/cstore; rm -rf "$S" "$WORK/go"; "$V" init "$S" 2>/dev/null
    pids=()
    for i in $(seq "$P"); do
      "$CB" "$S" "$i" "$COMMITS" "$WORK/go" > "$WORK/cb$i" & pids+=($!)
    done
    sleep 0.5; start=$(date +%s.%N); touch "$WORK/go"
    for p in "${pids[@]}"; do wait "$p"; done
    end=$(date +%s.%N)
    rates+=("$(awk -v n=$((P * COMMITS)) -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", n/(b-a)}')")
  done
  printf '%-34s %10.1f %10s\n' "durable commits, $P process(es)" "$(printf '%s\n' "${rates[@]}" | median)" "commits/s"
done
