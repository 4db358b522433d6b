#!/usr/bin/env bash
# verfs benchmark: the FUSE mount versus a plain host directory on the filesystem of the work dir.
# Medians of N runs (each run on a fresh store and a fresh mount, so no run dedups against an
# earlier one):
#   sequential write of an incompressible file (dd bs=1M conv=fsync), MB/s
#   sequential read of that file after dropping the page cache (dd bs=1M), MB/s
#   cp -a of the gen-dataset tree + sync, MB/s of logical bytes
#   10,000 small files (~100 bytes): create, stat, rename, unlink, ops/s per phase
#   peak memory (VmHWM) of the mount daemon at the end of the run, MiB
#
#   bench/mount.sh [--file-mb 2048] [--size-mb 1024] [--runs 3] [--files 10000]
#
# Needs root (drop_caches) and fuse3. The dataset comes from ../shared/bench/gen-dataset and is
# cached in target/bench-data (shared with bench/ingest.sh). The binary is built in
# $CARGO_TARGET_DIR (default target). Every step that could hang runs under `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."
CMDLINE="$(printf '%q ' "$0" "$@")"
FILE_MB=2048 SIZE=1024 RUNS=3 NFILES=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --file-mb) FILE_MB=$2; shift 2 ;;
    --size-mb) SIZE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --files) NFILES=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
T=${STEP_TIMEOUT:-600} # seconds, for every step that could hang
GEN=${GEN_DATASET:-../shared/bench/gen-dataset}
[ -x "$GEN" ] || { echo "bench: $GEN not found (set GEN_DATASET)" >&2; exit 2; }
command -v fusermount3 >/dev/null || { echo "bench: fusermount3 not found (install fuse3)" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
timeout 1800 cargo build --release -q -p verfs-cli --bin verfs
V=$(realpath "$CARGO_TARGET_DIR/release/verfs")
DATA=$PWD/target/bench-data/$SIZE
if [ ! -f "$DATA/base/.dataset-root" ]; then # same layout as bench/ingest.sh, which shares the cache
  rm -rf "$DATA"; mkdir -p "$DATA"
  timeout "$T" "$GEN" gen "$DATA/base" --size-mb "$SIZE" >/dev/null
  timeout "$T" "$GEN" gen "$DATA/mut" --size-mb "$SIZE" >/dev/null
  timeout "$T" "$GEN" mutate "$DATA/mut" --round 1 >/dev/null
fi
LOGICAL=$(du -sb --apparent-size "$DATA/base" | cut -f1)
FILE_BYTES=$((FILE_MB * 1048576))

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mbench-XXXXXX")
MP=$WORK/mnt HOST=$WORK/host S= DPID= DLOG=
mkdir -p "$MP" "$HOST"
mounted() { grep -qF " $1 fuse" /proc/mounts; }
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
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -s "$DLOG" ]; then
    echo "bench: failed (exit $rc); mount daemon log $DLOG:" >&2; tail -n 20 "$DLOG" >&2
  fi
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
mbps() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.1f", n/1e6/s}'; } # mbps BYTES SECS
alive() { [ -r "/proc/$1/stat" ] && ! awk '{sub(/.*\) /, ""); exit $1 == "Z" ? 0 : 1}' "/proc/$1/stat"; }
DROP_OK=1
drop_caches() {
  timeout 120 sync
  if [ "$DROP_OK" = 1 ] && ! { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    DROP_OK=0
    echo "bench: cannot write /proc/sys/vm/drop_caches; read numbers include the page cache" >&2
  fi
}
warm() { timeout "$T" sh -c 'find "$1" -type f -print0 | xargs -0 cat > /dev/null' _ "$1"; }

cat > "$WORK/small.py" <<'EOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
names = [os.path.join(d, "f%05d" % i) for i in range(n)]
data = [os.urandom(100) for _ in range(n)]  # distinct contents: nothing to dedup
rates = []
t = time.perf_counter()
for p, b in zip(names, data):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b)
    os.close(fd)
rates.append(n / (time.perf_counter() - t))
t = time.perf_counter()
for p in names:
    if os.stat(p).st_size != 100:
        sys.exit("%s: wrong size" % p)
rates.append(n / (time.perf_counter() - t))
t = time.perf_counter()
for p in names:
    os.rename(p, p + ".r")
rates.append(n / (time.perf_counter() - t))
t = time.perf_counter()
for p in names:
    os.unlink(p + ".r")
rates.append(n / (time.perf_counter() - t))
if os.listdir(d):
    sys.exit("%s: not empty after unlink" % d)
os.rmdir(d)
print(" ".join("%.1f" % r for r in rates))
EOF

# Incompressible source for the sequential write: AES-CTR of zeros (deterministic, fast).
SRC=$WORK/src.bin
if command -v openssl >/dev/null; then
  head -c "$FILE_BYTES" /dev/zero | timeout "$T" openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass pass:verfs-mbench > "$SRC"
else
  timeout "$T" head -c "$FILE_BYTES" /dev/urandom > "$SRC"
fi
[ "$(stat -c %s "$SRC")" = "$FILE_BYTES" ] || { echo "bench: could not make $SRC" >&2; exit 1; }

echo "command: $CMDLINE(CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(df --output=fstype "$WORK" | tail -1) on $(df --output=source "$WORK" | tail -1) under $WORK"
echo "verfs mount vs host dir: file $FILE_MB MiB, dataset $SIZE MiB ($LOGICAL bytes logical), $NFILES small files, $RUNS runs"

declare -A R # R[metric,target] = space-separated values, one per run
add() { R[$1,$2]="${R[$1,$2]:-} $3"; }

for r in $(seq "$RUNS"); do
  S=$WORK/store
  timeout 60 "$V" init "$S" 2>/dev/null
  # TMPDIR: the daemon keeps its log in the work dir (removed with it)
  out=$(TMPDIR=$WORK timeout 60 "$V" -s "$S" mount "$MP" -d 2>&1) || { echo "bench: mount failed: $out" >&2; exit 1; }
  DPID=$(sed -n 's/.*daemon pid \([0-9][0-9]*\).*/\1/p' <<<"$out")
  DLOG=$(sed -n 's/.*, log \([^)]*\)).*/\1/p' <<<"$out")
  [ -n "$DPID" ] && mounted "$MP" || { echo "bench: unexpected mount output: $out" >&2; exit 1; }
  echo "run $r/$RUNS: $out" >&2

  for tgt in host verfs; do
    if [ $tgt = host ]; then D=$HOST; else D=$MP; fi
    # a. sequential write (source file warm in the page cache, as for both targets)
    timeout "$T" cat "$SRC" > /dev/null
    t0=$(now)
    timeout "$T" dd if="$SRC" of="$D/big" bs=1M conv=fsync status=none
    add write $tgt "$(mbps "$FILE_BYTES" "$(since "$t0")")"
    [ "$(stat -c %s "$D/big")" = "$FILE_BYTES" ] || { echo "bench: $tgt: written file has the wrong size" >&2; exit 1; }
    # b. sequential read, cold
    drop_caches
    t0=$(now)
    timeout "$T" dd if="$D/big" of=/dev/null bs=1M status=none
    add read $tgt "$(mbps "$FILE_BYTES" "$(since "$t0")")"
    if [ "$r" = 1 ]; then # content check, once (not timed)
      timeout "$T" cmp "$SRC" "$D/big" || { echo "bench: $tgt: read back different content!" >&2; exit 1; }
    fi
    timeout "$T" rm -f "$D/big"
    # c. cp -a of the dataset + sync (source warm)
    warm "$DATA/base"
    t0=$(now)
    timeout "$T" cp -a "$DATA/base" "$D/tree"
    timeout "$T" sync
    add cp $tgt "$(mbps "$LOGICAL" "$(since "$t0")")"
    # d. small files
    out=$(timeout "$T" python3 "$WORK/small.py" "$D/small" "$NFILES") || { echo "bench: $tgt: small-file phase failed" >&2; exit 1; }
    read -r c s n u <<<"$out"
    add create $tgt "$c"; add stat $tgt "$s"; add rename $tgt "$n"; add unlink $tgt "$u"
  done
  if [ "$r" = 1 ]; then # the tree through the mount is the same as the source (not timed)
    timeout "$T" diff -r --no-dereference "$DATA/base" "$MP/tree" >/dev/null || { echo "bench: cp -a tree differs through the mount!" >&2; exit 1; }
  fi
  # e. peak memory of the mount daemon
  add hwm verfs "$(awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$DPID/status")"
  timeout "$T" rm -rf "$HOST/tree"
  umount_verfs
  timeout "$T" rm -rf "$S"
done

med() { printf '%s\n' ${R[$1,$2]} | median; }
row() { # row LABEL METRIC UNIT
  local h v
  h=$(med "$2" host) v=$(med "$2" verfs)
  printf '%-36s %12s %12s %8s  %s\n' "$1" "$h" "$v" "$(awk -v a="$v" -v b="$h" 'BEGIN{printf "%.3f", a/b}')" "$3"
}
echo
printf '%-36s %12s %12s %8s  %s\n' "operation (median of $RUNS)" "host" "verfs" "v/host" "unit"
row "seq write ${FILE_MB} MiB (dd conv=fsync)" write MB/s
row "seq read ${FILE_MB} MiB (cold cache)" read MB/s
row "cp -a ${SIZE} MiB dataset + sync" cp MB/s
row "create $NFILES x 100 B" create ops/s
row "stat $NFILES" stat ops/s
row "rename $NFILES" rename ops/s
row "unlink $NFILES" unlink ops/s
printf '%-36s %12s %12s %8s  %s\n' "mount daemon peak RSS (VmHWM)" "-" "$(med hwm verfs)" "-" MiB
echo "all runs: $(for k in write read cp create stat rename unlink; do printf '%s host[%s] verfs[%s]; ' "$k" "${R[$k,host]# }" "${R[$k,verfs]# }"; done)hwm[${R[hwm,verfs]# }]"
[ "$DROP_OK" = 1 ] || echo "note: drop_caches was not writable; the read rows include the page cache"
