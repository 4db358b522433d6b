#!/usr/bin/env bash
# verfs benchmark: metadata at scale. For stores of 100k and 1M small files (and 10M with --big,
# built through the engine API), prints open + `ls` of a small directory, `stat`, `cat` of a small
# file (wall and peak RSS, medians), status / gc / fsck (time, peak RSS), snapshot create (time,
# new metadata bytes), snapshot diff after a 1% change, mount RSS after a `find` of the whole tree,
# put of the tree (files/s, peak RSS) and durable commits/s with 1/2/4/8 processes.
#
#   bench/scale.sh [--sizes 100000,1000000] [--big] [--runs 5] [--baseline BIN] [--skip-mount]
#
# --baseline BIN runs the same steps with another verfs binary (e.g. a build of the version-2
# format) on its own stores from the same trees, and prints its figures beside these.
# Trees are generated once into target/scale-data (tmpfs is faster: set SCALE_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=100000,1000000 BIG=0 RUNS=5 BASE="" MOUNT=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES=$2; shift 2 ;;
    --big) BIG=1; shift ;;
    --runs) RUNS=$2; shift 2 ;;
    --baseline) BASE=$(realpath "$2"); shift 2 ;;
    --skip-mount) MOUNT=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v /usr/bin/time >/dev/null || { apt-get install -y -q time >/dev/null; }
cargo build --release -q -p verfs-cli --bin verfs
cargo build --release -q -p verfs-engine --example commit_bench --example synth_store --example lookup_pages
V=$PWD/target/release/verfs
CB=$PWD/target/release/examples/commit_bench
SYNTH=$PWD/target/release/examples/synth_store
PAGES=$PWD/target/release/examples/lookup_pages
DATA=${SCALE_DATA:-$PWD/target/scale-data}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/verfs-scale.XXXXXX")
MNT=""
cleanup() {
  if [ -n "$MNT" ] && mountpoint -q "$MNT"; then fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$DATA"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# timed CMD... -> "secs maxrss_mib" (the command's stdout is discarded)
timed() {
  /usr/bin/time -f '%e %M' -o "$WORK/t" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; return 1; }
  awk '{printf "%s %.1f\n", $1, $2/1024}' "$WORK/t"
}
# med RUNS CMD... -> "median_ms median_rss_mib"
med() {
  local n=$1; shift; local ts=() rs=()
  for _ in $(seq "$n"); do read -r s m < <(timed "$@"); ts+=("$s"); rs+=("$m"); done
  echo "$(printf '%s\n' "${ts[@]}" | median | awk '{printf "%.0f", $1*1000}') $(printf '%s\n' "${rs[@]}" | median)"
}

# gen DIR DIRS PREFIX: DIRS directories d00000.. of 1000 small files with distinct contents.
gen() {
  local dir=$1
  [ -f "$dir/.done" ] && return
  rm -rf "$dir"; mkdir -p "$dir"
  python3 - "$dir" "$2" "$3" <<'EOF2'
import os, sys
root, dirs, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for d in range(dirs):
    dp = os.path.join(root, "d%05d" % d)
    os.mkdir(dp)
    for f in range(1000):
        with open(os.path.join(dp, "f%04d" % f), "w") as fh:
            fh.write("%s %d of directory %d: %s\n" % (prefix, f, d, os.urandom(8).hex()))
open(os.path.join(root, ".done"), "w").close()
EOF2
}
# The tree of N files (rounded up to whole directories), and the 1% change: its first N/100000
# directories with new contents.
gen_tree() { gen "$DATA/tree-$1" $(( ($1 + 999) / 1000 )) file; }
gen_change() { local n=$(( $1 / 100000 )); gen "$DATA/change-$1" $(( n > 0 ? n : 1 )) changed; }

meta_bytes() { du -sb --exclude=packs "$1" | cut -f1; }

# run_set BIN STORE N TREE -> prints "key value" lines into $WORK/res-<tag>
run_set() {
  local bin=$1 s=$2 n=$3 tag=$4 out=$WORK/res-$4
  : > "$out"
  if [ "$n" -le 1000000 ]; then
    # The put is repeated too (each into a new store; the last one is kept for the steps below).
    local ts=() rs=()
    for _ in $(seq "$RUNS"); do
      rm -rf "$s"; "$bin" init "$s" >/dev/null 2>&1; sync
      read -r t m < <(timed "$bin" -s "$s" put "$DATA/tree-$n" /t); ts+=("$t"); rs+=("$m")
    done
    t=$(printf '%s\n' "${ts[@]}" | median); m=$(printf '%s\n' "${rs[@]}" | median)
    echo "put_files_s $(awk -v n="$n" -v t="$t" 'BEGIN{printf "%.0f", n/t}')" >> "$out"
    echo "put_rss $m" >> "$out"
  else
    rm -rf "$s"; "$bin" init "$s" >/dev/null 2>&1
    read -r t m < <(timed "$SYNTH" "$s" "$n")
    echo "put_files_s $(awk -v n="$n" -v t="$t" 'BEGIN{printf "%.0f", n/t}') (engine API)" >> "$out"
    echo "put_rss $m" >> "$out"
  fi
  sync
  read -r a b < <(med "$RUNS" "$bin" -s "$s" ls /t/d00001); echo "ls_ms $a" >> "$out"; echo "ls_rss $b" >> "$out"
  read -r a b < <(med "$RUNS" "$bin" -s "$s" stat /t/d00001/f0001); echo "stat_ms $a" >> "$out"; echo "stat_rss $b" >> "$out"
  read -r a b < <(med "$RUNS" "$bin" -s "$s" cat /t/d00001/f0001); echo "cat_ms $a" >> "$out"; echo "cat_rss $b" >> "$out"
  "$bin" -s "$s" checkpoint >/dev/null 2>&1 || true
  read -r a b < <(med "$RUNS" "$bin" -s "$s" ls /t/d00001); echo "ls_ckpt_ms $a" >> "$out"; echo "ls_ckpt_rss $b" >> "$out"
  read -r a b < <(med 1 "$bin" -s "$s" status); echo "status_ms $a" >> "$out"; echo "status_rss $b" >> "$out"
  if [ "$bin" = "$V" ]; then
    "$PAGES" "$s" /t/d00001/f0001 | tr ' ' '\n' | sed 's/=/ /' | sed 's/^/pages_/' >> "$out"
  fi
  local before; before=$(meta_bytes "$s")
  read -r a b < <(med 1 "$bin" -s "$s" snapshot create s1); echo "snap_ms $a" >> "$out"
  echo "snap_bytes $(( $(meta_bytes "$s") - before ))" >> "$out"
  before=$(meta_bytes "$s")
  read -r a b < <(med 1 "$bin" -s "$s" snapshot create s1b); echo "snap_again_ms $a" >> "$out"
  echo "snap_again_bytes $(( $(meta_bytes "$s") - before ))" >> "$out"
  if [ "$n" -le 1000000 ]; then
    "$bin" -s "$s" put "$DATA/change-$n/." /t >/dev/null 2>&1
    "$bin" -s "$s" snapshot create s2 >/dev/null 2>&1
    if "$bin" -s "$s" snapshot diff s1 s2 >/dev/null 2>&1; then
      read -r a b < <(med 1 "$bin" -s "$s" snapshot diff s1 s2); echo "diff_ms $a" >> "$out"
      echo "diff_lines $("$bin" -s "$s" snapshot diff s1 s2 | wc -l)" >> "$out"
    fi
  fi
  read -r a b < <(med 1 "$bin" -s "$s" gc); echo "gc_ms $a" >> "$out"; echo "gc_rss $b" >> "$out"
  read -r a b < <(med 1 "$bin" -s "$s" fsck); echo "fsck_ms $a" >> "$out"; echo "fsck_rss $b" >> "$out"
  if [ "$MOUNT" = 1 ]; then
    MNT=$WORK/mnt; mkdir -p "$MNT"
    "$bin" -s "$s" mount "$MNT" >/dev/null 2>&1 & local mpid=$!
    for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
    local found; found=$(find "$MNT/t" | wc -l)
    sleep 1
    local dpid; dpid=$(pgrep -f -n "mount $MNT" || echo "$mpid")
    echo "mount_rss $(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$dpid/status") (find saw $found)" >> "$out"
    fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"; wait "$mpid" 2>/dev/null || true; MNT=""
  fi
  rm -rf "$s"
}

commits() { # durable commits/s with P processes on an empty store (this build only)
  local p=$1 rates=()
  for _ in $(seq 3); do
    local s=$WORK/cstore; rm -rf "$s" "$WORK/go"; "$V" init "$s" >/dev/null 2>&1
    local pids=()
    for i in $(seq "$p"); do "$CB" "$s" "$i" 300 "$WORK/go" > "$WORK/cb$i" & pids+=($!); done
    sleep 0.5; local start; start=$(date +%s.%N); touch "$WORK/go"
    for q in "${pids[@]}"; do wait "$q"; done
    local end; end=$(date +%s.%N)
    rates+=("$(awk -v n=$((p * 300)) -v a="$start" -v b="$end" 'BEGIN{printf "%.0f", n/(b-a)}')")
  done
  printf '%s\n' "${rates[@]}" | median
}

get() { awk -v k="$2" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$WORK/res-$1"; }

echo "verfs scale bench: $(nproc) cores, runs=$RUNS, $(date -u +%Y-%m-%dT%H:%MZ)"
sizes=${SIZES//,/ }
[ "$BIG" = 1 ] && sizes="$sizes 10000000"
for n in $sizes; do
  if [ "$n" -le 1000000 ]; then gen_tree "$n"; gen_change "$n"; fi
  run_set "$V" "$WORK/store" "$n" "new-$n" >/dev/null
  [ -n "$BASE" ] && [ "$n" -le 1000000 ] && run_set "$BASE" "$WORK/bstore" "$n" "base-$n" >/dev/null
  echo
  printf '%-44s %22s %22s\n' "$n files (median of $RUNS where repeated)" "this build" "${BASE:+baseline}"
  for k in put_files_s:files/s put_rss:MiB ls_ms:ms ls_rss:MiB stat_ms:ms stat_rss:MiB cat_ms:ms \
           cat_rss:MiB ls_ckpt_ms:ms ls_ckpt_rss:MiB status_ms:ms status_rss:MiB pages_stat_pages:pages \
           pages_ls_pages:pages pages_entries:entries pages_depth:levels snap_ms:ms \
           snap_bytes:B snap_again_ms:ms snap_again_bytes:B diff_ms:ms diff_lines:lines gc_ms:ms \
           gc_rss:MiB fsck_ms:ms fsck_rss:MiB mount_rss:MiB; do
    key=${k%%:*} unit=${k##*:}
    a=$(get "new-$n" "$key"); b=""
    [ -n "$BASE" ] && [ -f "$WORK/res-base-$n" ] && b=$(get "base-$n" "$key")
    [ -z "$a$b" ] && continue
    printf '%-44s %22s %22s\n' "$key ($unit)" "${a:--}" "${b:--}"
  done
done
echo
for p in 1 2 4 8; do
  printf '%-44s %22s\n' "durable commits/s, $p process(es)" "$(commits "$p")"
done
