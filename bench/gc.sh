#!/usr/bin/env bash
# verfs benchmark: snapshots and garbage collection. Medians of N runs:
#   snapshot creation time of a store of 10,000 and 100,000 tiny files (`verfs snapshot create`,
#     wall time, with the barrier and write times it reports), s
#   one GC pass (`verfs gc`) on a store of the gen-dataset tree with half of its top-level
#     directories deleted (`verfs rm -r`): bytes reclaimed, seconds, MB/s reclaimed, peak RSS
#   read latency through a mount, p50 / p99 of open+read+close of small files: idle, versus while
#     the first pass of a `verfs gc --worker` reclaims the other half of the dataset (the loop
#     stops when that pass reports; the number of reads it got in is printed); the worker's peak
#     RSS (VmHWM)
#
#   bench/gc.sh [--size-mb 1024] [--runs 3] [--files 2000] [--snap-files "10000 100000"]
#
# Needs fuse3, python3 and /usr/bin/time; root for drop_caches (else the latency rows may include
# the page cache: each loop reads files no earlier loop read, so it matters little). The dataset
# comes from ../shared/bench/gen-dataset and is cached in target/bench-data (shared with
# bench/ingest.sh and bench/mount.sh; BENCH_DATA overrides the folder). The binary is built in
# $CARGO_TARGET_DIR (default target). Every step that could hang runs under `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
CMDLINE="$(printf '%q ' "$0" "$@")"
SIZE=1024 RUNS=3 NFILES=2000 SNAP_FILES="10000 100000"
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) SIZE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --files) NFILES=$2; shift 2 ;;
    --snap-files) SNAP_FILES=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
T=${STEP_TIMEOUT:-900} # seconds, for every step that could hang
GEN=${GEN_DATASET:-../shared/bench/gen-dataset}
[ -x "$GEN" ] || { echo "bench: $GEN not found (set GEN_DATASET)" >&2; exit 2; }
command -v fusermount3 >/dev/null || { echo "bench: fusermount3 not found (install fuse3)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time not found (apt-get install time)" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
timeout 3600 cargo build --release -q -p verfs-cli --bin verfs
V=$(realpath "$CARGO_TARGET_DIR/release/verfs")
DATA=${BENCH_DATA:-$PWD/target/bench-data}/$SIZE
if [ ! -f "$DATA/base/.dataset-root" ]; then # same layout as bench/ingest.sh, which shares the cache
  rm -rf "$DATA"; mkdir -p "$DATA"
  timeout "$T" "$GEN" gen "$DATA/base" --size-mb "$SIZE" >/dev/null
  timeout "$T" "$GEN" gen "$DATA/mut" --size-mb "$SIZE" >/dev/null
  timeout "$T" "$GEN" mutate "$DATA/mut" --round 1 >/dev/null
fi
LOGICAL=$(du -sb --apparent-size "$DATA/base" | cut -f1)
# Half of the top-level directories (every other one, by name) go before the timed pass; the
# other half while the worker runs beside the read loop.
mapfile -t TOP < <(cd "$DATA/base" && find . -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | LC_ALL=C sort)
HALF1=() HALF2=()
for i in "${!TOP[@]}"; do
  if [ $((i % 2)) = 1 ]; then HALF1+=("${TOP[$i]}"); else HALF2+=("${TOP[$i]}"); fi
done
HALF1_BYTES=0
for d in "${HALF1[@]}"; do HALF1_BYTES=$((HALF1_BYTES + $(du -sb --apparent-size "$DATA/base/$d" | cut -f1))); done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gbench-XXXXXX")
MP=$WORK/mnt S= DPID= DLOG= WPID=
mkdir -p "$MP"
mounted() { grep -qF " $1 fuse" /proc/mounts; }
alive() { [ -r "/proc/$1/stat" ] && ! awk '{sub(/.*\) /, ""); exit $1 == "Z" ? 0 : 1}' "/proc/$1/stat"; }
umount_verfs() { # flush and unmount; on failure detach lazily and end the daemon we started
  mounted "$MP" || return 0
  timeout 120 "$V" -s "$S" umount "$MP" || {
    echo "bench: verfs umount $MP failed; detaching lazily" >&2
    timeout 30 fusermount3 -uz "$MP" || true
  }
  if [ -n "$DPID" ]; then
    for _ in $(seq 100); do alive "$DPID" || break; sleep 0.1; done
    if alive "$DPID"; then echo "bench: mount daemon $DPID still running; SIGTERM" >&2; kill "$DPID" || true; fi
  fi
  DPID=
}
stop_worker() { # SIGTERM the gc worker we started; it must stop within 60 s
  [ -n "$WPID" ] || return 0
  if alive "$WPID"; then kill -TERM "$WPID" || true; fi
  for _ in $(seq 600); do alive "$WPID" || break; sleep 0.1; done
  if alive "$WPID"; then echo "bench: gc worker $WPID ignored SIGTERM; SIGKILL" >&2; kill -KILL "$WPID" || true; fi
  wait "$WPID" 2>/dev/null || true
  WPID=
}
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "$DLOG" ] && [ -s "$DLOG" ]; then
    echo "bench: failed (exit $rc); mount daemon log $DLOG:" >&2; tail -n 20 "$DLOG" >&2
  fi
  stop_worker || true
  umount_verfs || true
  if grep -qF " $WORK/" /proc/mounts; then # never rm -rf through a live mount
    echo "bench: something is still mounted under $WORK; not removing it" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'; }
DROP_OK=1
drop_caches() {
  timeout 120 sync
  if [ "$DROP_OK" = 1 ] && ! { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    DROP_OK=0
    echo "bench: cannot write /proc/sys/vm/drop_caches; latency rows may include the page cache" >&2
  fi
}
jfield() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$1"; }
set_gc_interval() { # set_gc_interval STORE MS
  sed -i '/^\[gc\]/,/^\[/ s/^interval_ms = .*/interval_ms = '"$2"'/' "$1/config.toml"
  grep -q "^interval_ms = $2\$" "$1/config.toml" || { echo "bench: could not set [gc] interval_ms" >&2; exit 1; }
}

# Tiny files, cheaply: N files of ~40 bytes (distinct) in directories of 1000.
cat > "$WORK/tiny.py" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(sub)
    with open(os.path.join(sub, "f%06d" % i), "wb") as f:
        f.write(b"tiny file %d of %d\n" % (i, n))
EOF
# Small files for the read loop: 4-16 KiB, distinct, incompressible.
cat > "$WORK/small.py" <<'EOF'
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    sub = os.path.join(d, "d%03d" % (i // 500))
    if i % 500 == 0:
        os.makedirs(sub)
    with open(os.path.join(sub, "s%06d" % i), "wb") as f:
        f.write(rng.randbytes(rng.randrange(4096, 16384)))
EOF
# open+read+close of every file listed on stdin, or until the file STOP (optional argument) is
# not empty any more; prints "p50_ms p99_ms count secs".
cat > "$WORK/lat.py" <<'EOF'
import os, sys, time
paths = [l.rstrip("\n") for l in sys.stdin if l.strip()]
stop = sys.argv[1] if len(sys.argv) > 1 else None
lat = []
t0 = time.perf_counter()
for p in paths:
    if stop and os.path.exists(stop) and os.path.getsize(stop) > 0:
        break
    t = time.perf_counter()
    with open(p, "rb") as f:
        while f.read(1 << 16):
            pass
    lat.append(time.perf_counter() - t)
total = time.perf_counter() - t0
lat = sorted(lat) or [float("nan")]
q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))] * 1000
print("%.3f %.3f %d %.3f" % (q(0.50), q(0.99), len(lat), total))
EOF

echo "command: $CMDLINE(CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(df --output=fstype "$WORK" | tail -1) on $(df --output=source "$WORK" | tail -1) under $WORK"
echo "verfs gc bench: dataset $SIZE MiB ($LOGICAL bytes logical; deleted before the timed pass: ${HALF1[*]}, $HALF1_BYTES bytes logical; during the read loop: ${HALF2[*]}), $NFILES small files read per loop, snapshots of $SNAP_FILES tiny files, $RUNS runs"

declare -A R # R[metric] = space-separated values, one per run
add() { R[$1]="${R[$1]:-} $2"; }
med() { printf '%s\n' ${R[$1]} | median; }

# 1. Snapshot creation: one store per size, a new snapshot per run (the previous one deleted).
for N in $SNAP_FILES; do
  S=$WORK/snap$N
  timeout 60 "$V" init "$S" 2>/dev/null
  rm -rf "$WORK/tiny"; timeout "$T" python3 "$WORK/tiny.py" "$WORK/tiny" "$N"
  t0=$(now)
  timeout "$T" "$V" -s "$S" put "$WORK/tiny" /t
  add "put$N" "$(since "$t0")"
  rm -rf "$WORK/tiny"
  for r in $(seq "$RUNS"); do
    t0=$(now)
    out=$(timeout "$T" "$V" -s "$S" --json snapshot create "s$r")
    add "snap$N" "$(since "$t0")"
    add "snapbar$N" "$(jfield barrier_ms <<<"$out")"
    add "snapwr$N" "$(jfield write_ms <<<"$out")"
    [ "$r" = 1 ] || timeout "$T" "$V" -s "$S" snapshot delete "s$((r - 1))" 2>/dev/null
  done
  timeout "$T" "$V" -s "$S" fsck >"$WORK/fsck.err" 2>&1 || { echo "bench: fsck of the snapshot store failed:" >&2; cat "$WORK/fsck.err" >&2; exit 1; }
  rm -rf "$S"
done

# 2 and 3: per run, a fresh store with the dataset and the small files.
for r in $(seq "$RUNS"); do
  S=$WORK/store
  timeout 60 "$V" init "$S" 2>/dev/null
  timeout "$T" "$V" -s "$S" put "$DATA/base" /data
  rm -rf "$WORK/small"; timeout "$T" python3 "$WORK/small.py" "$WORK/small" $((2 * NFILES + 500))
  timeout "$T" "$V" -s "$S" put "$WORK/small" /small
  (cd "$WORK/small" && find . -type f | LC_ALL=C sort) > "$WORK/small.list"
  rm -rf "$WORK/small"
  # 2. one pass after half the dataset is deleted
  for d in "${HALF1[@]}"; do timeout "$T" "$V" -s "$S" rm -r "/data/$d"; done
  sync
  before=$(du -sb "$S/packs" | cut -f1)
  /usr/bin/time -f '%e %M' -o "$WORK/time" timeout "$T" "$V" -s "$S" --json gc > "$WORK/gc.json"
  read -r secs rss < "$WORK/time"
  after=$(du -sb "$S/packs" | cut -f1)
  rec=$(jfield bytes_reclaimed < "$WORK/gc.json")
  add gcsecs "$secs"; add gcrec "$rec"; add gcrss "$(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}')"
  add gcrate "$(awk -v b="$rec" -v s="$secs" 'BEGIN{printf "%.1f", b/1e6/(s > 0 ? s : 0.001)}')"
  add gcdu "$((before - after))"
  add gcpacks "$(python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["packs_rewritten"] + r["packs_deleted"])' < "$WORK/gc.json")"
  # 3. read latency through a mount: idle, then while a worker reclaims the other half
  out=$(TMPDIR=$WORK timeout 60 "$V" -s "$S" mount "$MP" -d 2>&1) || { echo "bench: mount failed: $out" >&2; exit 1; }
  DPID=$(sed -n 's/.*daemon pid \([0-9][0-9]*\).*/\1/p' <<<"$out")
  DLOG=$(sed -n 's/.*, log \([^)]*\)).*/\1/p' <<<"$out")
  [ -n "$DPID" ] && mounted "$MP" || { echo "bench: unexpected mount output: $out" >&2; exit 1; }
  # 500 files to warm the daemon up (pack readers, metadata), then two disjoint sets: no read
  # of the measured loops is served from a cache that an earlier loop filled
  sed "s|^\.|$MP/small|" "$WORK/small.list" > "$WORK/all.list"
  head -n 500 "$WORK/all.list" > "$WORK/warm.list"
  sed -n "501,$((500 + NFILES))p" "$WORK/all.list" > "$WORK/idle.list"
  tail -n "$NFILES" "$WORK/all.list" > "$WORK/busy.list"
  timeout "$T" python3 "$WORK/lat.py" < "$WORK/warm.list" > /dev/null
  drop_caches
  read -r p50 p99 cnt loop < <(timeout "$T" python3 "$WORK/lat.py" < "$WORK/idle.list")
  add idle50 "$p50"; add idle99 "$p99"
  for d in "${HALF2[@]}"; do timeout "$T" "$V" -s "$S" rm -r "/data/$d"; done
  set_gc_interval "$S" 200
  drop_caches
  : > "$WORK/worker.json"
  "$V" -s "$S" --json gc --worker > "$WORK/worker.json" 2> "$WORK/worker.err" & WPID=$!
  # reads only while the worker's first pass runs (it prints its report at the end of it)
  read -r p50 p99 cnt loop < <(timeout "$T" python3 "$WORK/lat.py" "$WORK/worker.json" < "$WORK/busy.list")
  add busy50 "$p50"; add busy99 "$p99"; add busyloop "$loop"; add busyn "$cnt"
  # the worker's first pass, to see how much of the loop it overlapped
  for _ in $(seq $((T * 10))); do [ -s "$WORK/worker.json" ] && break; alive "$WPID" || break; sleep 0.1; done
  add wpass "$(awk '{printf "%.3f", $0 / 1000}' < <(head -n1 "$WORK/worker.json" | jfield millis))"
  add wrec "$(head -n1 "$WORK/worker.json" | jfield bytes_reclaimed)"
  add whwm "$(awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$WPID/status")"
  stop_worker
  if grep -q "pass failed" "$WORK/worker.err"; then echo "bench: a worker pass failed:" >&2; cat "$WORK/worker.err" >&2; exit 1; fi
  umount_verfs
  timeout "$T" "$V" -s "$S" fsck >"$WORK/fsck.err" 2>&1 || { echo "bench: fsck after the runs failed:" >&2; cat "$WORK/fsck.err" >&2; exit 1; }
  echo "run $r/$RUNS: pass $secs s reclaimed $rec bytes (du -$((before - after))); latency idle/busy p50 $(med idle50)/$p50 ms" >&2
  rm -rf "$S"
done

echo
printf '%-58s %12s  %s\n' "measure (median of $RUNS)" "value" "unit"
for N in $SNAP_FILES; do
  printf '%-58s %12s  %s\n' "put $N tiny files (set-up, not a GC number)" "$(med "put$N")" s
  printf '%-58s %12s  %s\n' "snapshot create, $N files (wall)" "$(med "snap$N")" s
  printf '%-58s %12s  %s\n' "  of which barrier (2PC) / write" "$(med "snapbar$N")/$(med "snapwr$N")" ms
done
printf '%-58s %12s  %s\n' "gc pass, ${HALF1[*]} deleted: time" "$(med gcsecs)" s
printf '%-58s %12s  %s\n' "gc pass: bytes reclaimed (report)" "$(med gcrec)" bytes
printf '%-58s %12s  %s\n' "gc pass: du -sb packs shrank by" "$(med gcdu)" bytes
printf '%-58s %12s  %s\n' "gc pass: packs rewritten + deleted" "$(med gcpacks)" packs
printf '%-58s %12s  %s\n' "gc pass: reclaim rate" "$(med gcrate)" MB/s
printf '%-58s %12s  %s\n' "gc pass: peak RSS (/usr/bin/time)" "$(med gcrss)" MiB
printf '%-58s %12s  %s\n' "read $NFILES small files via mount, idle: p50 / p99" "$(med idle50) / $(med idle99)" ms
printf '%-58s %12s  %s\n' "same, during a gc --worker pass (${HALF2[*]}): p50 / p99" "$(med busy50) / $(med busy99)" ms
printf '%-58s %12s  %s\n' "  reads done during that pass" "$(med busyn)" reads
printf '%-58s %12s  %s\n' "  read loop / worker's first pass" "$(med busyloop) / $(med wpass)" s
printf '%-58s %12s  %s\n' "  worker's first pass reclaimed" "$(med wrec)" bytes
printf '%-58s %12s  %s\n' "gc worker peak RSS (VmHWM)" "$(med whwm)" MiB
echo "all runs: $(for k in $(printf '%s\n' "${!R[@]}" | LC_ALL=C sort); do printf '%s[%s] ' "$k" "${R[$k]# }"; done)"
[ "$DROP_OK" = 1 ] || echo "note: drop_caches was not writable; the latency rows may include the page cache"
